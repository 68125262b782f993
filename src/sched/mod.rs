//! Schedulers: which real server a new connection goes to.
//!
//! One file per IPVS scheduler (rr, wrr, lc, wlc, sed, nq, sh, dh, mh, lblc,
//! lblcr, fo, ovf, twos); [`Scheduler`] dispatches to them with a `match` (no
//! boxing, no virtual call on the hot path).
//!
//! The contract the pipeline and the control plane rely on:
//! - [`Scheduler::new`] runs on the control plane whenever a service's real
//!   servers, weights, flags or scheduler change, and precomputes everything
//!   (wrr's weight bands, the sh/dh bucket tables, the Maglev lookup table).
//!   [`Scheduler::update`] does the same but keeps the state IPVS keeps across
//!   a real-server change (the lblc/lblcr locality tables, rr's position).
//! - [`Scheduler::tick`] gives lblc/lblcr the time their entries expire by;
//!   the control plane calls it periodically (every few seconds is plenty).
//! - [`Scheduler::schedule`] runs on the hot path for a connection's first
//!   packet only. It returns an index into `svc.reals`, or `None` when no real
//!   server can take the connection. Then the packet is dropped and counted,
//!   with no RST, as IPVS does: the client's SYN retransmission schedules
//!   again and succeeds once a server is back, where a RST would turn a
//!   moment of overload into a failed connection. It never allocates, never
//!   locks and never panics; cursors (rr's and wrr's positions, twos' draw
//!   counter) are atomics updated with relaxed ordering, one per worker
//!   stripe on a line of its own ([`Cursors`]), so that a new connection
//!   writes no line another worker writes.
//! - A real server is *available* when its weight is above 0 (weight 0 is
//!   quiescing: its connections go on, it gets no new ones), its counters exist
//!   in the [`RealLoads`], and its `overloaded` flag is clear. The flag is
//!   IPVS's `-x`/`-y` hysteresis, maintained by [`update_overload`], which the
//!   pipeline calls for a service with thresholds just before it schedules a
//!   new connection there (the counts it reads are the live ones).
//! - Connection-count schedulers read the live ActiveConn/InActConn counts
//!   (each a sum of the [`RealLoads`]' stripes in use, one per worker);
//!   IPVS's overhead is `active * 256 + inactive` (lc, wlc, lblc, lblcr, twos),
//!   sed and nq use `active + 1`.

mod dh;
mod fo;
mod lblc;
mod lblcr;
mod lc;
mod mh;
mod nq;
mod ovf;
mod rr;
mod sed;
mod sh;
mod twos;
mod wlc;
mod wrr;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::packet::{FlowKey, L4Proto};
use crate::service::counters::{stripe, STRIPES};
use crate::service::{RealLoad, RealLoads, RealServer, SchedulerKind, VirtualService};
use crate::Millis;

pub use lblc::LBLC_EXPIRATION_SECS;
pub use lblcr::LBLCR_EXPIRATION_SECS;
pub use mh::MH_DEFAULT_TABLE_SIZE;

/// A scheduler's position (or counter), one per worker stripe
/// ([`stripe`]), each on a cache line of its own. One cursor shared by
/// every worker was the one line a new connection still wrote on all of
/// them: two threads sharing rr's made 0.92× the new connections of two
/// sharing nothing (`benches/scaling.rs`), 1.01× with a cursor each. Each
/// worker then walks IPVS's sequence by itself, and since each spreads its
/// own new connections as IPVS does, all of them together spread as
/// evenly. More workers than stripes share one, still exactly (it is a
/// `fetch_add`).
#[derive(Debug, Default)]
pub(crate) struct Cursors(Box<[Cursor; STRIPES]>);

#[derive(Debug, Default)]
#[repr(align(64))]
struct Cursor(AtomicU64);

const _: () = assert!(std::mem::size_of::<Cursor>() == 64);

impl Cursors {
    /// The calling worker's cursor.
    #[inline]
    pub fn mine(&self) -> &AtomicU64 {
        &self.0[stripe()].0
    }

    /// Each stripe's position mapped by `f` (a scheduler rebuilt for changed
    /// servers going on from where each worker was).
    pub fn carried(&self, f: impl Fn(u64) -> u64) -> Cursors {
        Cursors(Box::new(std::array::from_fn(|i| {
            Cursor(AtomicU64::new(f(self.0[i].0.load(Ordering::Relaxed))))
        })))
    }

    /// Stripe `i`'s position.
    #[cfg(test)]
    pub fn at(&self, i: usize) -> u64 {
        self.0[i].0.load(Ordering::Relaxed)
    }

    /// Sets stripe `i`'s position.
    #[cfg(test)]
    pub fn set(&self, i: usize, v: u64) {
        self.0[i].0.store(v, Ordering::Relaxed)
    }
}

/// A service's scheduler with everything it precomputed for the current set
/// of real servers. Built by the control plane, shared read-only by workers.
#[derive(Debug)]
pub struct Scheduler {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Rr(rr::Rr),
    Wrr(wrr::Wrr),
    Lc,
    Wlc,
    Sed,
    Nq,
    Sh(sh::Sh),
    Dh(dh::Dh),
    Mh(mh::Mh),
    Lblc(lblc::Lblc),
    Lblcr(lblcr::Lblcr),
    Fo(fo::Fo),
    Ovf(ovf::Ovf),
    Twos(twos::Twos),
}

impl Scheduler {
    /// The scheduler `svc.scheduler` names, precomputed for `svc.reals`.
    pub fn new(svc: &VirtualService) -> Scheduler {
        let inner = match svc.scheduler {
            SchedulerKind::Rr => Inner::Rr(rr::Rr::new(&svc.reals)),
            SchedulerKind::Wrr => Inner::Wrr(wrr::Wrr::new(&svc.reals)),
            SchedulerKind::Lc => Inner::Lc,
            SchedulerKind::Wlc => Inner::Wlc,
            SchedulerKind::Sed => Inner::Sed,
            SchedulerKind::Nq => Inner::Nq,
            SchedulerKind::Sh => Inner::Sh(sh::Sh::new(&svc.reals)),
            SchedulerKind::Dh => Inner::Dh(dh::Dh::new(&svc.reals)),
            SchedulerKind::Mh => Inner::Mh(mh::Mh::new(&svc.reals)),
            SchedulerKind::Lblc => Inner::Lblc(lblc::Lblc::new(&svc.reals)),
            SchedulerKind::Lblcr => Inner::Lblcr(lblcr::Lblcr::new(&svc.reals)),
            SchedulerKind::Fo => Inner::Fo(fo::Fo::new(&svc.reals)),
            SchedulerKind::Ovf => Inner::Ovf(ovf::Ovf::new(&svc.reals)),
            SchedulerKind::Twos => Inner::Twos(twos::Twos::new(&svc.reals)),
        };
        Scheduler { inner }
    }

    /// A scheduler for the changed `svc` that keeps what IPVS keeps when real
    /// servers are added, edited or removed: the lblc/lblcr locality tables
    /// (shared with `self`, entries name servers by [`RealId`]) and rr's
    /// position (the server tried next stays next). Everything else is rebuilt as [`Scheduler::new`] does; a
    /// change of scheduler kind starts afresh.
    ///
    /// [`RealId`]: crate::service::RealId
    pub fn update(&self, svc: &VirtualService) -> Scheduler {
        let inner = match (&self.inner, svc.scheduler) {
            (Inner::Rr(old), SchedulerKind::Rr) => Inner::Rr(old.carry_over(&svc.reals)),
            (Inner::Lblc(old), SchedulerKind::Lblc) => Inner::Lblc(old.carry_over(&svc.reals)),
            (Inner::Lblcr(old), SchedulerKind::Lblcr) => Inner::Lblcr(old.carry_over(&svc.reals)),
            _ => return Scheduler::new(svc),
        };
        Scheduler { inner }
    }

    pub fn kind(&self) -> SchedulerKind {
        match &self.inner {
            Inner::Rr(_) => SchedulerKind::Rr,
            Inner::Wrr(_) => SchedulerKind::Wrr,
            Inner::Lc => SchedulerKind::Lc,
            Inner::Wlc => SchedulerKind::Wlc,
            Inner::Sed => SchedulerKind::Sed,
            Inner::Nq => SchedulerKind::Nq,
            Inner::Sh(_) => SchedulerKind::Sh,
            Inner::Dh(_) => SchedulerKind::Dh,
            Inner::Mh(_) => SchedulerKind::Mh,
            Inner::Lblc(_) => SchedulerKind::Lblc,
            Inner::Lblcr(_) => SchedulerKind::Lblcr,
            Inner::Fo(_) => SchedulerKind::Fo,
            Inner::Ovf(_) => SchedulerKind::Ovf,
            Inner::Twos(_) => SchedulerKind::Twos,
        }
    }

    /// The real server (index into `svc.reals`) for a new connection `key`
    /// (the client→virtual-service direction), or `None` if none is
    /// available. `svc` must be the service this scheduler was built for; if
    /// it is not, the answer is still an in-bounds index or `None`.
    ///
    #[inline]
    pub fn schedule(
        &self,
        svc: &VirtualService,
        key: &FlowKey,
        loads: &RealLoads,
    ) -> Option<usize> {
        match &self.inner {
            Inner::Rr(s) => s.schedule(&svc.reals, loads),
            Inner::Wrr(s) => s.schedule(&svc.reals, loads),
            Inner::Lc => lc::schedule(&svc.reals, loads),
            Inner::Wlc => wlc::schedule(&svc.reals, loads),
            Inner::Sed => sed::schedule(&svc.reals, loads),
            Inner::Nq => nq::schedule(&svc.reals, loads),
            Inner::Sh(s) => s.schedule(svc, key, loads),
            Inner::Dh(s) => s.schedule(&svc.reals, key, loads),
            Inner::Mh(s) => s.schedule(svc, key, loads),
            Inner::Lblc(s) => s.schedule(&svc.reals, key, loads),
            Inner::Lblcr(s) => s.schedule(&svc.reals, key, loads),
            Inner::Fo(s) => s.schedule(&svc.reals, loads),
            Inner::Ovf(s) => s.schedule(&svc.reals, loads),
            Inner::Twos(s) => s.schedule(&svc.reals, key, loads),
        }
    }

    /// Tells the scheduler the time. Only lblc and lblcr read it, to expire
    /// locality entries a day after their last use; their resolution is a
    /// second, so the control plane calls this from its periodic work (IPVS
    /// runs its lblc/lblcr expiry timer once a minute), not per packet.
    /// Without it entries never expire and only make room for others when
    /// their table set is full.
    pub fn tick(&self, now: Millis) {
        match &self.inner {
            Inner::Lblc(s) => s.tick(now),
            Inner::Lblcr(s) => s.tick(now),
            _ => {}
        }
    }
}

/// Re-evaluates `real`'s overload flag after its connection counts (or its
/// thresholds) changed, and returns the flag.
///
/// IPVS's hysteresis on ActiveConn + InActConn: the flag is set once the total
/// reaches the upper threshold (`-x`, 0 = none) and cleared only when the total
/// falls below the lower threshold (`-y`), or, with no lower threshold, below
/// 3/4 of the upper one. A server without an upper threshold is never
/// overloaded.
pub fn update_overload(counters: RealLoad<'_>, real: &RealServer) -> bool {
    let total = u64::from(counters.active()) + u64::from(counters.inactive());
    let upper = u64::from(real.upper_threshold);
    let lower = u64::from(real.lower_threshold);
    let flagged = counters.overloaded();
    let overloaded = if upper != 0 && total >= upper {
        true
    } else if !flagged {
        false
    } else if lower != 0 {
        total >= lower
    } else if upper != 0 {
        total * 4 >= upper * 3
    } else {
        false
    };
    if overloaded != flagged {
        counters.set_overloaded(overloaded);
    }
    overloaded
}

/// The counters of `real` if it may take a new connection: weight above 0,
/// counters present, not overloaded.
#[inline]
fn available<'a>(real: &RealServer, loads: &'a RealLoads) -> Option<RealLoad<'a>> {
    if real.weight == 0 {
        return None;
    }
    let counters = loads.get(real.id)?;
    if counters.overloaded() {
        return None;
    }
    Some(counters)
}

/// `i` if it is the index of a server in `reals` that is [`available`]: the
/// check every scheduler makes on a server it looked up by index.
#[inline]
fn usable(i: usize, reals: &[RealServer], loads: &RealLoads) -> Option<usize> {
    reals
        .get(i)
        .filter(|r| available(r, loads).is_some())
        .map(|_| i)
}

/// IPVS's `ip_vs_dest_conn_overhead`: an active connection costs 256 times an
/// inactive one.
#[inline]
fn conn_overhead(counters: RealLoad<'_>) -> u64 {
    (u64::from(counters.active()) << 8) + u64::from(counters.inactive())
}

/// Two loads `overhead / weight` compared as IPVS compares them, without
/// division: `oh1 * w2` against `oh2 * w1`. Products are taken in 128 bits
/// so no weight or count can overflow them.
#[inline]
fn cmp_load(oh1: u64, w1: u32, oh2: u64, w2: u32) -> std::cmp::Ordering {
    (u128::from(oh1) * u128::from(w2)).cmp(&(u128::from(oh2) * u128::from(w1)))
}

/// The weighted least-overhead pick shared by wlc, sed (and so nq), lblc and
/// lblcr: among `candidates` (indices into `reals`; any out of range are
/// skipped), the first available server with the smallest
/// `overhead / weight` ([`cmp_load`]).
#[inline]
fn weighted_least(
    reals: &[RealServer],
    candidates: impl IntoIterator<Item = usize>,
    loads: &RealLoads,
    overhead: impl Fn(RealLoad<'_>) -> u64,
) -> Option<usize> {
    let mut least: Option<(usize, u64, u32)> = None;
    for i in candidates {
        let Some(real) = reals.get(i) else { continue };
        let Some(counters) = available(real, loads) else {
            continue;
        };
        let doh = overhead(counters);
        match least {
            Some((_, loh, lw)) if cmp_load(loh, lw, doh, real.weight).is_le() => {}
            _ => least = Some((i, doh, real.weight)),
        }
    }
    least.map(|(i, _, _)| i)
}

/// IPVS's 32-bit fold of an address (the address itself for IPv4, the XOR of
/// its four 32-bit words for IPv6), as sh and dh hash it.
#[inline]
fn ipvs_fold(addr: &IpAddr) -> u32 {
    match addr {
        IpAddr::V4(a) => u32::from(*a),
        IpAddr::V6(a) => {
            let b = a.octets();
            let w = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
            w(0) ^ w(4) ^ w(8) ^ w(12)
        }
    }
}

/// The source port sh/mh hash when their `-port` flag is set: only TCP and
/// UDP carry one (IPVS also takes SCTP's, which xvs does not serve).
#[inline]
fn hashed_port(key: &FlowKey, port_flag: bool) -> u16 {
    match key.proto {
        L4Proto::Tcp | L4Proto::Udp if port_flag => key.sport,
        _ => 0,
    }
}

/// MurmurHash3's 64-bit finaliser: a fast bijective mix with full avalanche.
#[inline]
fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// A 64-bit hash of an address and port that uses every bit of an IPv6
/// address (IPVS's fold loses the structure of IPv6 addresses). Stable across
/// runs and builds: directors behind one ECMP router must agree on it.
#[inline]
fn addr_port_hash(addr: &IpAddr, port: u16) -> u64 {
    match addr {
        IpAddr::V4(a) => mix64((u64::from(u32::from(*a)) << 16) | u64::from(port)),
        IpAddr::V6(a) => {
            let v = u128::from(*a);
            let hi = (v >> 64) as u64;
            let lo = v as u64;
            mix64(hi ^ mix64(lo ^ (u64::from(port) << 1 | 1)))
        }
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Services, counters and keys for the scheduler tests, all from the
    //! documentation address ranges.

    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use crate::packet::{FlowKey, L4Proto};
    use crate::service::{
        ForwardMethod, RealCounts, RealId, RealLoads, RealServer, SchedFlags, SchedulerKind,
        ServiceKey, VirtualService,
    };
    use crate::Millis;

    pub const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1));

    /// Real server `i`: 192.0.2.x for the first 254, 2001:db8:1::x beyond.
    pub fn real_addr(i: usize) -> IpAddr {
        if i < 254 {
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, (i + 1) as u8))
        } else {
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, i as u16))
        }
    }

    pub fn real(i: usize, weight: u32) -> RealServer {
        RealServer {
            id: RealId(i as u32),
            addr: real_addr(i),
            port: 80,
            method: ForwardMethod::Dr,
            weight,
            upper_threshold: 0,
            lower_threshold: 0,
        }
    }

    pub fn service(kind: SchedulerKind, weights: &[u32]) -> VirtualService {
        VirtualService {
            key: ServiceKey {
                proto: L4Proto::Tcp,
                addr: VIP,
                port: 80,
            },
            scheduler: kind,
            sched_flags: SchedFlags::default(),
            persistence: None,
            reals: weights
                .iter()
                .enumerate()
                .map(|(i, &w)| real(i, w))
                .collect(),
        }
    }

    pub fn loads(n: usize) -> RealLoads {
        RealLoads::new(n.max(1))
    }

    pub fn set_conns(loads: &RealLoads, i: usize, active: u32, inactive: u32) {
        let c = loads
            .get(RealId(i as u32))
            .expect("test load table too small");
        c.set(RealCounts {
            active_conns: active,
            inact_conns: inactive,
            persist_conns: c.persistent(),
        });
    }

    pub fn set_overloaded(loads: &RealLoads, i: usize, on: bool) {
        let c = loads
            .get(RealId(i as u32))
            .expect("test load table too small");
        c.set_overloaded(on);
    }

    /// Client `n`: 198.51.100.x with a port derived from `n`.
    pub fn client_key(n: u32) -> FlowKey {
        FlowKey::new(
            L4Proto::Tcp,
            IpAddr::V4(Ipv4Addr::new(198, 51, 100, (n % 256) as u8)),
            1024 + (n / 256 % 60000) as u16,
            VIP,
            80,
        )
    }

    /// A key from a client anywhere in 2001:db8::/32, for tests that need
    /// more distinct client addresses than the IPv4 ranges hold.
    pub fn client_key_v6(bits: u128, sport: u16) -> FlowKey {
        let addr = (0x2001_0db8u128 << 96) | (bits & ((1u128 << 96) - 1));
        FlowKey::new(
            L4Proto::Tcp,
            IpAddr::V6(Ipv6Addr::from(addr)),
            sport,
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            80,
        )
    }

    /// A key from client 1 to destination address `dst`, for the schedulers
    /// that look at the destination (dh, lblc, lblcr).
    pub fn to(dst: &str) -> FlowKey {
        let mut k = client_key(1);
        k.dst = dst.parse::<IpAddr>().unwrap();
        k
    }

    /// Schedules `key` after telling `sched` the time is `now`.
    pub fn at(
        sched: &super::Scheduler,
        now: Millis,
        svc: &VirtualService,
        key: &FlowKey,
        loads: &RealLoads,
    ) -> Option<usize> {
        sched.tick(now);
        sched.schedule(svc, key, loads)
    }

    /// Runs `picks` schedules and counts the picks per real server.
    pub fn histogram(
        sched: &super::Scheduler,
        svc: &VirtualService,
        loads: &RealLoads,
        picks: u32,
    ) -> Vec<u32> {
        let mut counts = vec![0u32; svc.reals.len()];
        for n in 0..picks {
            if let Some(i) = sched.schedule(svc, &client_key(n), loads) {
                counts[i] += 1;
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use crate::service::{RealId, SchedFlags};
    use proptest::prelude::*;

    #[test]
    fn overload_hysteresis_with_lower_threshold() {
        let loads = loads(1);
        let mut r = real(0, 1);
        r.upper_threshold = 10;
        r.lower_threshold = 5;
        let c = loads.get(RealId(0)).unwrap();
        for (active, inactive, expect) in [
            (3, 6, false), // 9 < 10
            (4, 6, true),  // reaches upper
            (2, 5, true),  // 7: between, stays set
            (2, 3, true),  // 5: not below lower
            (2, 2, false), // 4 < 5: cleared
            (3, 6, false), // 9: between, stays clear
        ] {
            set_conns(&loads, 0, active, inactive);
            assert_eq!(update_overload(c, &r), expect, "{active}+{inactive}");
            assert_eq!(c.overloaded(), expect);
        }
    }

    #[test]
    fn overload_hysteresis_defaults_to_three_quarters_of_upper() {
        let loads = loads(1);
        let mut r = real(0, 1);
        r.upper_threshold = 8;
        let c = loads.get(RealId(0)).unwrap();
        for (total, expect) in [(8, true), (7, true), (6, true), (5, false), (7, false)] {
            set_conns(&loads, 0, total, 0);
            assert_eq!(update_overload(c, &r), expect, "total {total}");
        }
    }

    #[test]
    fn no_upper_threshold_clears_the_flag() {
        let loads = loads(1);
        let r = real(0, 1);
        let c = loads.get(RealId(0)).unwrap();
        set_overloaded(&loads, 0, true);
        set_conns(&loads, 0, 1000, 1000);
        assert!(!update_overload(c, &r));
    }

    #[test]
    fn every_scheduler_refuses_when_nothing_is_available() {
        for kind in SchedulerKind::ALL {
            // Empty service.
            let svc = service(kind, &[]);
            let d = loads(1);
            let s = Scheduler::new(&svc);
            assert_eq!(s.kind(), kind);
            assert_eq!(s.schedule(&svc, &client_key(1), &d), None, "{kind:?}");
            // All quiesced.
            let svc = service(kind, &[0, 0, 0]);
            let d = loads(3);
            let s = Scheduler::new(&svc);
            for n in 0..50 {
                assert_eq!(s.schedule(&svc, &client_key(n), &d), None, "{kind:?}");
            }
            // All overloaded.
            let svc = service(kind, &[1, 2, 3]);
            let s = Scheduler::new(&svc);
            for i in 0..3 {
                set_overloaded(&d, i, true);
            }
            for n in 0..50 {
                assert_eq!(s.schedule(&svc, &client_key(n), &d), None, "{kind:?}");
            }
        }
    }

    #[test]
    fn thresholds_are_honoured_by_every_scheduler() {
        // Server 0 has -x 4; once it holds 4 connections nobody sends it more
        // until it drains below 3 (3/4 of 4).
        for kind in SchedulerKind::ALL {
            let mut svc = service(kind, &[5, 1, 1]);
            svc.reals[0].upper_threshold = 4;
            svc.sched_flags.fallback = true;
            let d = loads(3);
            let s = Scheduler::new(&svc);
            set_conns(&d, 0, 4, 0);
            let c0 = d.get(RealId(0)).unwrap();
            assert!(update_overload(c0, &svc.reals[0]));
            for n in 0..200 {
                let pick = s.schedule(&svc, &client_key(n), &d);
                assert_ne!(pick, Some(0), "{kind:?} picked an overloaded server");
            }
            set_conns(&d, 0, 3, 0);
            assert!(update_overload(c0, &svc.reals[0]), "3 is not below 3");
            set_conns(&d, 0, 2, 0);
            assert!(!update_overload(c0, &svc.reals[0]));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Whatever the weights, flags and load, no scheduler hands a new
        /// connection to a quiesced (weight 0) server.
        #[test]
        fn weight_zero_is_never_picked(
            weights in proptest::collection::vec(prop_oneof![Just(0u32), 1u32..=5], 1..10),
            active in proptest::collection::vec(0u32..20, 10),
            fallback in any::<bool>(),
            port in any::<bool>(),
        ) {
            for kind in SchedulerKind::ALL {
                let mut svc = service(kind, &weights);
                svc.sched_flags = SchedFlags { fallback, port };
                let d = loads(weights.len());
                for (i, &a) in active.iter().take(weights.len()).enumerate() {
                    set_conns(&d, i, a, 0);
                }
                let s = Scheduler::new(&svc);
                let mut picked = 0;
                for n in 0..64 {
                    if let Some(i) = s.schedule(&svc, &client_key(n), &d) {
                        prop_assert!(svc.reals[i].weight > 0, "{:?} picked quiesced {}", kind, i);
                        picked += 1;
                    }
                }
                // With a server in service, only these may find none: sh and
                // mh without fallback (the hashed server may be quiesced), dh
                // (one destination, one server, no fallback in IPVS) and ovf
                // (every server may be at its weight in connections).
                let may_find_none = match kind {
                    SchedulerKind::Sh | SchedulerKind::Mh => !fallback,
                    SchedulerKind::Dh | SchedulerKind::Ovf => true,
                    _ => false,
                };
                if weights.iter().any(|&w| w > 0) && !may_find_none {
                    prop_assert!(picked > 0, "{:?} found no server in {:?}", kind, weights);
                }
            }
        }

        /// The overload flag follows IPVS's hysteresis for any walk of the
        /// connection count, and no scheduler picks a flagged server.
        #[test]
        fn thresholds_hold_for_any_count_walk(
            upper in 0u32..12,
            lower in 0u32..12,
            totals in proptest::collection::vec(0u32..16, 1..40),
        ) {
            let d = loads(2);
            let mut r = real(0, 1);
            r.upper_threshold = upper;
            r.lower_threshold = lower;
            let c = d.get(RealId(0)).unwrap();
            let mut model = false;
            for t in totals {
                set_conns(&d, 0, t / 2, t - t / 2);
                if upper != 0 && t >= upper {
                    model = true;
                } else if model {
                    let below = if lower != 0 { t < lower } else if upper != 0 { t * 4 < upper * 3 } else { true };
                    model = !below;
                }
                prop_assert_eq!(update_overload(c, &r), model, "total {}", t);
                if model {
                    for kind in SchedulerKind::ALL {
                        let mut svc = service(kind, &[1, 1]);
                        svc.reals[0] = r.clone();
                        svc.sched_flags.fallback = true;
                        let s = Scheduler::new(&svc);
                        for n in 0..8 {
                            prop_assert_ne!(s.schedule(&svc, &client_key(n), &d), Some(0), "{:?}", kind);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn concurrent_rr_and_wrr_picks_share_exactly() {
        // Every ticket of each worker's cursor is taken exactly once (by the
        // threads of its stripe, one or several), and each thread takes
        // whole periods, so they split exactly by weight however the
        // threads interleave.
        for (kind, weights, per_period) in [
            (SchedulerKind::Rr, vec![1, 1, 1, 1], vec![1, 1, 1, 1]),
            (SchedulerKind::Wrr, vec![4, 3, 2], vec![4, 3, 2]),
        ] {
            let svc = service(kind, &weights);
            let d = loads(weights.len());
            let s = Scheduler::new(&svc);
            let period: u32 = per_period.iter().sum();
            let per_thread = period * 1000;
            let counts = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..4)
                    .map(|_| scope.spawn(|| histogram(&s, &svc, &d, per_thread)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap())
                    .fold(vec![0; weights.len()], |acc, c| {
                        acc.iter().zip(c).map(|(a, b)| a + b).collect()
                    })
            });
            let want: Vec<u32> = per_period.iter().map(|p| p * 4000).collect();
            assert_eq!(counts, want, "{kind:?}");
        }
    }

    #[test]
    fn concurrent_locality_picks_stay_valid() {
        for kind in [SchedulerKind::Lblc, SchedulerKind::Lblcr] {
            let svc = service(kind, &[1, 2, 3, 4]);
            let d = loads(4);
            let s = Scheduler::new(&svc);
            std::thread::scope(|scope| {
                for t in 0..4u32 {
                    let (s, svc, d) = (&s, &svc, &d);
                    scope.spawn(move || {
                        for n in 0..5000u32 {
                            let mut key = client_key(n);
                            key.dst =
                                IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, (n % 97) as u8));
                            s.tick(Millis(u64::from(n) * 1000 * u64::from(t + 1)));
                            let i = s.schedule(svc, &key, d).expect("someone is available");
                            assert!(i < 4);
                            set_conns(d, i, n % 7, 0);
                        }
                    });
                }
            });
        }
    }

    #[test]
    fn a_foreign_service_never_yields_an_out_of_bounds_index() {
        for kind in SchedulerKind::ALL {
            let big = service(kind, &[1; 8]);
            let small = service(kind, &[1; 2]);
            let d = loads(8);
            let s = Scheduler::new(&big);
            let mut picked = 0;
            for n in 0..100 {
                if let Some(i) = s.schedule(&small, &client_key(n), &d) {
                    assert!(i < small.reals.len(), "{kind:?}");
                    picked += 1;
                }
            }
            // The answers must include indices to check; only the hash
            // schedulers (no fallback: a slot of a missing server) and ovf
            // may come back empty-handed.
            let hashing = matches!(
                kind,
                SchedulerKind::Sh | SchedulerKind::Dh | SchedulerKind::Mh | SchedulerKind::Ovf
            );
            assert!(hashing || picked > 0, "{kind:?} never answered");
        }
    }

    #[test]
    fn schedulers_can_be_shared_by_workers() {
        fn shared<T: Send + Sync>() {}
        shared::<Scheduler>();
    }

    #[test]
    fn ipvs_fold_xors_the_ipv6_words() {
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(ipvs_fold(&a), 0x2001_0db8 ^ 1);
        let b: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(ipvs_fold(&b), 0xc000_0201);
    }
}
