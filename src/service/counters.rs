//! Per-real-server counters, each declared once.
//!
//! A counter set is written once, in `counter_set!`: from the one list of
//! counters come the atomic form the data plane writes and the plain value
//! the control plane copies it into (`read`), sums (`add`) and subtracts
//! (`minus`, for `-Z` baselines). Two sets, both indexed by [`RealId`] and
//! allocated once at start, so what they count outlives every
//! [`super::ServiceTable`]:
//! - [`RealLoads`] / [`RealCounts`]: ActiveConn, InActConn, PersistConn. One
//!   [`RealLoads`] is shared by every worker: connections update it as they
//!   open, change state and close, and schedulers read it. It is striped
//!   ([`stripe`]): each thread counts into a copy of its own, on lines no
//!   other worker writes, and a read sums the stripes.
//! - [`RealTrafficSlot`] / [`TotalStats`]: what `ipvsadm -L --stats` shows.
//!   Each worker writes its own [`RealTraffic`] (a load and a store, no
//!   read-modify-write on a shared line); the control plane sums the
//!   workers' tables.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use super::RealId;

/// Declares a counter set: the plain value type (`Copy`, with `add` and
/// `minus`), the atomic type with the same counters (plus any fields of its
/// own that are not counters), and `read` from the one to the other.
macro_rules! counter_set {
    (
        $(#[$plain_meta:meta])*
        pub struct $plain:ident($int:ty);
        $(#[$atomic_meta:meta])*
        pub struct $atomic:ident($cell:ty) {
            $( $(#[$extra_meta:meta])* pub $extra:ident: $extra_ty:ty, )*
        }
        counters {
            $( $(#[$meta:meta])* $field:ident, )+
        }
    ) => {
        $(#[$plain_meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $plain {
            $( $(#[$meta])* pub $field: $int, )+
        }

        $(#[$atomic_meta])*
        #[derive(Debug, Default)]
        pub struct $atomic {
            $( $(#[$meta])* pub $field: $cell, )+
            $( $(#[$extra_meta])* pub $extra: $extra_ty, )*
        }

        impl $atomic {
            /// Every counter, each read once (relaxed: each value is exact,
            /// the set is not one instant's).
            pub fn read(&self) -> $plain {
                $plain {
                    $( $field: self.$field.load(Ordering::Relaxed), )+
                }
            }
        }

        impl $plain {
            /// `self` since `base`, each counter at least 0.
            pub fn minus(&self, base: &$plain) -> $plain {
                $plain {
                    $( $field: self.$field.saturating_sub(base.$field), )+
                }
            }

            /// Adds `other`'s counts to `self`'s.
            pub fn add(&mut self, other: &$plain) {
                $( self.$field = self.$field.wrapping_add(other.$field); )+
            }
        }
    };
}

counter_set! {
    /// A real server's live connection counts, as `ipvsadm -L` shows them.
    pub struct RealCounts(u32);

    /// One stripe's share of one real server's counts: wrapping deltas (a
    /// connection may open on one stripe and close on another, leaving one
    /// at +1 and the other at -1), whose wrapping sum over the stripes is
    /// the count.
    pub struct StripeCounts(AtomicU32) {}

    counters {
        /// ActiveConn.
        active_conns,
        /// InActConn.
        inact_conns,
        /// PersistConn: persistence templates.
        persist_conns,
    }
}

counter_set! {
    /// Traffic totals since start or the last `-Z` (`ipvsadm -L --stats`),
    /// of a real server or, summed, of a service.
    pub struct TotalStats(u64);

    /// One real server's traffic counters in a worker's [`RealTraffic`].
    pub struct RealTrafficSlot(AtomicU64) {}

    counters {
        /// Connections scheduled to the real server.
        conns,
        /// Packets client → real server.
        inpkts,
        /// Packets real server → client (seen by NAT only).
        outpkts,
        /// Bytes client → real server (IP length).
        inbytes,
        /// Bytes real server → client (seen by NAT only).
        outbytes,
    }
}

/// Stripes of the shared connection counts: [`RealLoads`]' and the
/// connection table's. Up to this many threads count each on lines of its
/// own; more share them (still exact, only contended again).
pub const STRIPES: usize = 8;

/// Stripes handed out so far (see [`stripe`]); only ever grows.
static ASSIGNED: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The calling thread's stripe, below [`STRIPES`]: assigned at the thread's
/// first call, in order of first calls (0, 1, ..., wrapping), and the same
/// for the thread's life and for every striped counter set. So each of the
/// director's workers, started together, writes lines of its own; a thread
/// that writes rarely (the control plane's, sync's) may share a worker's.
#[inline]
pub fn stripe() -> usize {
    STRIPE.with(|s| match s.get() {
        usize::MAX => assign_stripe(s),
        i => i,
    })
}

#[cold]
fn assign_stripe(s: &Cell<usize>) -> usize {
    let i = ASSIGNED.fetch_add(1, Ordering::Relaxed) % STRIPES;
    s.set(i);
    i
}

/// How many stripes any thread may have written (those below this index):
/// a sum over these is the whole count. A thread takes its stripe before
/// its first write, so a stripe is never written before it counts here.
#[inline]
pub fn stripes_in_use() -> usize {
    ASSIGNED.load(Ordering::Relaxed).min(STRIPES)
}

/// A count summed from wrapping stripe deltas, read while others may be
/// changing them: read stripe by stripe, a close seen before its open
/// could make the sum briefly negative, and that shows as 0.
#[inline]
fn at_least_zero(sum: u32) -> u32 {
    if (sum as i32) < 0 {
        0
    } else {
        sum
    }
}

/// Connection counts of every real server, indexed by [`RealId`], allocated
/// once at start and shared by every worker.
///
/// Striped: the counts of a real server are [`STRIPES`] wrapping deltas,
/// each thread writing those of its [`stripe`], so that new connections on
/// different workers do not hand a real server's line from core to core. A
/// read sums the stripes in use ([`stripes_in_use`]): exact when nothing
/// moves, never below 0 while something does. The overload flag is one per
/// server, apart from the counts (read by every scheduler, written only when
/// it changes).
#[derive(Debug)]
pub struct RealLoads {
    capacity: usize,
    /// Stripe `s`'s counts of server `id` at `s * capacity + id`: each
    /// stripe's a run of lines of its own.
    stripes: Box<[StripeCounts]>,
    /// Set once a server reached its upper threshold; cleared when it drops
    /// below the lower one (IPVS's `IP_VS_DEST_F_OVERLOAD` hysteresis).
    overloaded: Box<[AtomicBool]>,
}

impl RealLoads {
    pub fn new(capacity: usize) -> RealLoads {
        RealLoads {
            capacity,
            stripes: (0..capacity * STRIPES)
                .map(|_| StripeCounts::default())
                .collect(),
            overloaded: (0..capacity).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Counters of `id`; ids come from the control plane, which never hands
    /// out one past the capacity.
    #[inline]
    pub fn get(&self, id: RealId) -> Option<RealLoad<'_>> {
        let id = id.0 as usize;
        (id < self.capacity).then_some(RealLoad { loads: self, id })
    }
}

/// One real server's connection counts in a [`RealLoads`]: the sums of its
/// stripes, and the changes a connection makes to them, counted in the
/// calling thread's stripe.
#[derive(Clone, Copy, Debug)]
pub struct RealLoad<'a> {
    loads: &'a RealLoads,
    id: usize,
}

impl<'a> RealLoad<'a> {
    #[inline]
    fn sum(&self, field: impl Fn(&StripeCounts) -> &AtomicU32) -> u32 {
        let cap = self.loads.capacity;
        let mut sum = 0u32;
        for s in 0..stripes_in_use() {
            sum = sum.wrapping_add(
                field(&self.loads.stripes[s * cap + self.id]).load(Ordering::Relaxed),
            );
        }
        at_least_zero(sum)
    }

    /// The calling thread's stripe of these counts.
    #[inline]
    fn mine(&self) -> &'a StripeCounts {
        self.on(stripe())
    }

    /// Stripe `me`'s counts (a [`stripe`] the caller looked up once),
    /// masked into range.
    #[inline]
    fn on(&self, me: usize) -> &'a StripeCounts {
        &self.loads.stripes[(me % STRIPES) * self.loads.capacity + self.id]
    }

    /// ActiveConn.
    #[inline]
    pub fn active(&self) -> u32 {
        self.sum(|c| &c.active_conns)
    }

    /// InActConn.
    #[inline]
    pub fn inactive(&self) -> u32 {
        self.sum(|c| &c.inact_conns)
    }

    /// PersistConn.
    #[inline]
    pub fn persistent(&self) -> u32 {
        self.sum(|c| &c.persist_conns)
    }

    /// Every count, each summed once (each exact when nothing moves; the
    /// set is not one instant's).
    pub fn read(&self) -> RealCounts {
        let mut sum = RealCounts::default();
        let cap = self.loads.capacity;
        for s in 0..stripes_in_use() {
            sum.add(&self.loads.stripes[s * cap + self.id].read());
        }
        RealCounts {
            active_conns: at_least_zero(sum.active_conns),
            inact_conns: at_least_zero(sum.inact_conns),
            persist_conns: at_least_zero(sum.persist_conns),
        }
    }

    /// A connection opened, active or not.
    #[inline]
    pub fn opened(&self, active: bool) {
        self.opened_on(stripe(), active)
    }

    /// [`RealLoad::opened`] counted in stripe `me`, the calling thread's
    /// [`stripe`] looked up once for all of a new connection's counts.
    #[inline]
    pub fn opened_on(&self, me: usize, active: bool) {
        let c = self.on(me);
        let n = if active {
            &c.active_conns
        } else {
            &c.inact_conns
        };
        n.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection closed that was active or not.
    #[inline]
    pub fn closed(&self, active: bool) {
        let c = self.mine();
        let n = if active {
            &c.active_conns
        } else {
            &c.inact_conns
        };
        n.fetch_sub(1, Ordering::Relaxed);
    }

    /// A connection went from inactive to active (`true`) or back.
    #[inline]
    pub fn moved(&self, to_active: bool) {
        let c = self.mine();
        let (to, from) = if to_active {
            (&c.active_conns, &c.inact_conns)
        } else {
            (&c.inact_conns, &c.active_conns)
        };
        to.fetch_add(1, Ordering::Relaxed);
        from.fetch_sub(1, Ordering::Relaxed);
    }

    /// A persistence template was created (`true`) or released.
    #[inline]
    pub fn template(&self, added: bool) {
        let c = &self.mine().persist_conns;
        if added {
            c.fetch_add(1, Ordering::Relaxed);
        } else {
            c.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The overload flag ([`crate::sched::update_overload`] keeps it).
    #[inline]
    pub fn overloaded(&self) -> bool {
        self.loads.overloaded[self.id].load(Ordering::Relaxed)
    }

    pub fn set_overloaded(&self, on: bool) {
        self.loads.overloaded[self.id].store(on, Ordering::Relaxed);
    }

    /// Sets the counts to `counts` (tests and benches that stage a load):
    /// the calling thread's stripe takes them, the others are cleared.
    pub fn set(&self, counts: RealCounts) {
        let cap = self.loads.capacity;
        let me = stripe();
        for s in 0..STRIPES {
            let c = &self.loads.stripes[s * cap + self.id];
            let v = if s == me {
                counts
            } else {
                RealCounts::default()
            };
            c.active_conns.store(v.active_conns, Ordering::Relaxed);
            c.inact_conns.store(v.inact_conns, Ordering::Relaxed);
            c.persist_conns.store(v.persist_conns, Ordering::Relaxed);
        }
    }
}

/// Per-real-server traffic of one worker, what `ipvsadm -L --stats` shows:
/// connections scheduled, and packets/bytes in (client → real server) and
/// out (real server → client, seen by NAT only). Only the worker that owns
/// the table counts into it; the control plane reads it.
#[derive(Debug)]
pub struct RealTraffic {
    slots: Box<[RealTrafficSlot]>,
}

impl RealTraffic {
    pub fn new(capacity: usize) -> RealTraffic {
        RealTraffic {
            slots: (0..capacity).map(|_| RealTrafficSlot::default()).collect(),
        }
    }

    pub fn get(&self, id: RealId) -> Option<&RealTrafficSlot> {
        self.slots.get(id.0 as usize)
    }

    /// Only the owning worker calls this: a plain load and store suffice.
    fn add(counter: &AtomicU64, n: u64) {
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// A packet of `bytes` (IP length) from a client to real server `id`.
    pub fn count_in(&self, id: RealId, bytes: usize) {
        if let Some(s) = self.get(id) {
            RealTraffic::add(&s.inpkts, 1);
            RealTraffic::add(&s.inbytes, bytes as u64);
        }
    }

    /// A packet of `bytes` from real server `id` back to its client.
    pub fn count_out(&self, id: RealId, bytes: usize) {
        if let Some(s) = self.get(id) {
            RealTraffic::add(&s.outpkts, 1);
            RealTraffic::add(&s.outbytes, bytes as u64);
        }
    }

    /// A connection scheduled to real server `id`.
    pub fn count_conn(&self, id: RealId) {
        if let Some(s) = self.get(id) {
            RealTraffic::add(&s.conns, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain value is what the atomics held; `add` and `minus` work
    /// counter by counter.
    #[test]
    fn one_declaration_gives_the_atomic_and_the_plain_form() {
        let t = RealTraffic::new(2);
        t.count_conn(RealId(1));
        t.count_in(RealId(1), 100);
        t.count_in(RealId(1), 60);
        t.count_out(RealId(1), 40);
        t.count_in(RealId(9), 1); // past the capacity: not counted
        let one = t.get(RealId(1)).unwrap().read();
        assert_eq!(
            one,
            TotalStats {
                conns: 1,
                inpkts: 2,
                outpkts: 1,
                inbytes: 160,
                outbytes: 40,
            }
        );
        assert_eq!(t.get(RealId(0)).unwrap().read(), TotalStats::default());
        let mut sum = one;
        sum.add(&one);
        assert_eq!(sum.minus(&one), one);
        assert_eq!(one.minus(&sum), TotalStats::default());

        let loads = RealLoads::new(1);
        let l = loads.get(RealId(0)).unwrap();
        l.set(RealCounts {
            active_conns: 2,
            inact_conns: 0,
            persist_conns: 1,
        });
        assert_eq!(
            l.read(),
            RealCounts {
                active_conns: 2,
                inact_conns: 0,
                persist_conns: 1,
            }
        );
        assert_eq!((l.active(), l.inactive(), l.persistent()), (2, 0, 1));
        assert!(loads.get(RealId(1)).is_none());
    }

    /// Threads count into stripes of their own; the sums are the counts,
    /// also when a connection opens on one stripe and closes on another,
    /// and a stripe that went below zero never shows.
    #[test]
    fn stripes_sum_to_the_counts() {
        let loads = RealLoads::new(3);
        let l = loads.get(RealId(2)).unwrap();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        l.opened(false);
                        l.moved(true);
                    }
                    l.template(true);
                });
            }
        });
        assert_eq!((l.active(), l.inactive(), l.persistent()), (4000, 0, 4));
        // Closed on other threads than they opened on.
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for _ in 0..1500 {
                        l.closed(true);
                    }
                    l.template(false);
                });
            }
        });
        assert_eq!(
            l.read(),
            RealCounts {
                active_conns: 1000,
                inact_conns: 0,
                persist_conns: 2,
            }
        );
        assert_eq!(loads.get(RealId(1)).unwrap().read(), RealCounts::default());
        // This thread's stripe alone below zero: the sum shows 0, not 2^32 - 1.
        let m = loads.get(RealId(0)).unwrap();
        m.closed(false);
        assert_eq!(m.inactive(), 0);
        m.opened(false);
        m.opened(false);
        assert_eq!(m.inactive(), 1);
    }
}
