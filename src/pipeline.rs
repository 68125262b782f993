//! The sans-IO core: one frame in, one [`Verdict`] out.
//!
//! [`Pipeline::process`] is the one entry every caller uses: the AF_XDP worker
//! loop, the golden-packet tests, the fuzzer and the benches. It does no I/O,
//! reads no clock (the caller passes `now`), takes no lock and allocates
//! nothing. A pipeline belongs to one worker; what workers share — the
//! connection table and the real servers' counters — is lock-free, and the
//! configuration is an immutable [`Snapshot`] snapshot swapped in whole.
//!
//! The pipeline calls out to no one. What the world must learn — a next
//! hop to resolve, connections opened, changed and closed (opt-in, for
//! connection sync) — it leaves in a bounded outbox that its owner drains
//! with [`Pipeline::poll_event`] after each batch (see `outbox.rs`).
//!
//! What happens to a frame:
//! - not IP → dropped as [`DropReason::NotIp`] (ARP and the like are the
//!   kernel's: the steering program passes them, see below);
//! - TCP/UDP to a virtual service → connection lookup (for an IPv4 flow
//!   the worker forwarded lately, its flow cache: see `flow_cache.rs`), or
//!   scheduling of a new connection, then the real server's forwarding
//!   method;
//! - TCP/UDP from a NAT real server that matches a connection → rewritten to
//!   come from the VIP and routed to the client;
//! - an ICMP error quoting a tracked connection → sent where that connection
//!   goes, rewritten for NAT;
//! - anything else → dropped with an *unclaimed* reason
//!   ([`DropReason::is_unclaimed`]); anything malformed → dropped with its reason.
//!
//! Every frame that reaches xvs is either transmitted or dropped: AF_XDP
//! cannot hand a frame back to the kernel. The XDP steering program
//! (`src/xsk/steer.bpf.c`) therefore decides in the kernel what xvs would not
//! handle — the director's own traffic, ARP, other protocols — and passes it
//! there; the unclaimed reasons count what still arrives (a configuration
//! change racing a frame, a NAT answer whose connection has expired).
//!
//! Fragments: the first fragment of a datagram carries the ports and is handled
//! like any packet; later fragments carry none and are dropped and counted
//! ([`DropReason::Fragment`]). IPVS reassembles them first; xvs does not.
//! TCP segments to a service that do not open a connection and match none
//! are answered with a reset (rate-limited; past the limit dropped as
//! [`DropReason::TcpNotSyn`]), as the local stack answers them on an IPVS
//! director, unless `sloppy_tcp` is set (IPVS's sysctl of the same name),
//! which lets a director pick up connections another director started —
//! what a Maglev (mh) cluster behind ECMP needs. A reset is never answered.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::conntrack::{
    Conn, ConnRef, ConnState, ConnTable, Direction, InsertError, Opened, Probe, TemplateKey,
};
use crate::counters::WorkerCounters;
use crate::forward::{dr, nat, tun};
use crate::neigh::{NextHop, NextHops, PortId, Unresolved};
use crate::packet::{
    check_flow, parse, reset, rewrite, FlowKey, Frame, L4Proto, Parsed, Quoted, TcpFlags,
    Transport, V4Flow,
};
use crate::sched::Scheduler;
use crate::service::{
    ForwardMethod, RealId, RealLoads, RealServer, RealTraffic, ServiceIndex, ServiceKey,
    ServiceTable, VirtualService,
};
use crate::verdict::{DropReason, Verdict};
use crate::Millis;
use flow_cache::FlowCache;

/// Buckets of the connection table swept per millisecond, by whichever
/// worker ends a batch first in that millisecond.
const EXPIRE_BUDGET: usize = 64;
/// Frames whose connection entries [`Pipeline::prefetch`] brings in together.
pub const PREFETCH_BATCH: usize = 64;
/// TCP resets one worker sends per millisecond at most; segments past the
/// budget are dropped as `tcp_not_syn` (a flood of stray segments is not
/// reflected at line rate).
const RESETS_PER_MS: u32 = 10;

/// What a frame's path decided: sent by this port (held instead, where
/// `Engine::waiting` names a next hop whose MAC is not known yet), or
/// dropped. A port rather than a [`Verdict`], so that it fits a register;
/// [`Engine::verdict`] makes the verdict.
type Sent = Result<PortId, DropReason>;

/// Adds a verdict to the counters: the one place a frame's fate is counted.
fn count(stats: &mut WorkerCounters, v: Verdict) {
    match v {
        Verdict::Transmit { .. } => stats.tx += 1,
        Verdict::Hold { .. } => stats.held += 1,
        Verdict::Drop(r) => stats.drops[r as usize] += 1,
    }
}

/// One director interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortConfig {
    pub name: String,
    pub mac: crate::packet::MacAddr,
    pub mtu: u32,
    /// The director's own addresses on this port; the first of each family is
    /// the source of TUN packets leaving by it.
    pub addrs: Vec<IpAddr>,
}

/// How one real server is reached under this snapshot: precomputed on the
/// control plane so the data plane only indexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RealPath {
    hop: Result<NextHop, Unresolved>,
    /// The resolved hop's MACs as the Ethernet header holds them, what DR
    /// and NAT write with one copy (zero where `hop` is unresolved).
    macs: rewrite::EthAddrs,
    mtu: u32,
    tunnel_src: Option<IpAddr>,
    /// For an IPv4 TUN real server with a resolved next hop and an IPv4
    /// tunnel source: its frames' headers, precomputed.
    tun4: Option<tun::Template4>,
}

/// The director-wide switches IPVS keeps as sysctls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// IPVS's `sloppy_tcp`: schedule TCP flows seen first mid-connection.
    pub sloppy_tcp: bool,
    /// IPVS's `expire_nodest_conn`: a packet of a connection whose real
    /// server has been deleted ends that connection. Off (IPVS's default),
    /// such packets are dropped and the connection kept, so that it resumes
    /// if the real server is added back (ldirectord's `quiescent=no` flaps).
    pub expire_nodest_conn: bool,
}

/// An immutable configuration snapshot: services with their schedulers, the
/// director's ports and next hops.
#[derive(Debug)]
pub struct Snapshot {
    pub services: ServiceTable,
    pub ports: Vec<PortConfig>,
    pub next_hops: NextHops,
    pub policy: Policy,
    /// Shared with the snapshot before wherever the service is unchanged.
    schedulers: Vec<Arc<Scheduler>>,
    /// `paths[service][real]`, parallel to `services`.
    paths: Vec<Vec<RealPath>>,
    /// Whether any real server of the service has an upper threshold.
    has_thresholds: Vec<bool>,
    /// Every real server address of this snapshot and of those it follows,
    /// so that a frame from anywhere else is known not to be a NAT real
    /// server's answer before the connection table is asked: each NAT
    /// connection's real server is one of them (the scheduler places
    /// connections on the snapshot's servers, sync imports them only for a
    /// configured one, and a real server deleted since stays in the set of
    /// the snapshots that follow).
    real_addrs: AddrFilter,
    /// Every virtual service address of this snapshot.
    vips: AddrFilter,
}

/// A set of addresses that may hold false positives, never false
/// negatives: one mark per hash value of an address (the snapshot's real
/// server addresses, its VIPs).
#[derive(Clone, Debug)]
struct AddrFilter {
    /// One byte per hash value, non-zero where an address added has it: a
    /// test is one load, where a bit's word and mask took a dozen steps.
    marks: Box<[u8; ADDR_FILTER_SLOTS]>,
}

/// Hash values of an [`AddrFilter`]: 4096, a power of two.
const ADDR_FILTER_SLOTS: usize = 4096;

impl AddrFilter {
    fn empty() -> AddrFilter {
        AddrFilter {
            marks: Box::new([0; ADDR_FILTER_SLOTS]),
        }
    }

    /// The address's hash value, below [`ADDR_FILTER_SLOTS`].
    #[inline(always)]
    fn slot(addr: IpAddr) -> usize {
        const BITS: u32 = ADDR_FILTER_SLOTS.trailing_zeros();
        match addr {
            // A 32-bit multiply: its constant is the instruction's own
            // immediate, where the 64-bit one had to be loaded first.
            IpAddr::V4(a) => {
                (u32::from_ne_bytes(a.octets()).wrapping_mul(0x9e37_79b9) >> (32 - BITS)) as usize
            }
            IpAddr::V6(a) => {
                let b = a.to_bits();
                let folded = (b as u64) ^ ((b >> 64) as u64);
                (folded.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - BITS)) as usize
            }
        }
    }

    fn add(&mut self, addr: IpAddr) {
        self.marks[Self::slot(addr)] = 1;
    }

    /// False only for an address never added.
    #[inline(always)]
    fn may_hold(&self, addr: IpAddr) -> bool {
        self.marks[Self::slot(addr)] != 0
    }
}

impl Snapshot {
    pub fn new(
        services: ServiceTable,
        ports: Vec<PortConfig>,
        next_hops: NextHops,
        policy: Policy,
    ) -> Snapshot {
        Snapshot::with_previous(services, ports, next_hops, policy, None)
    }

    /// A snapshot following `previous`: schedulers of services that existed
    /// there carry their state over (rr's position, lblc's table), as IPVS
    /// keeps a service's scheduler across real-server changes, and the real
    /// server addresses it knew stay known (see `AddrFilter`).
    ///
    /// A service that did not change at all (most snapshots follow a change
    /// of next hops, not of services) keeps its very scheduler: a worker
    /// still on `previous` and one already on this snapshot then take their
    /// turns from one rr or wrr position, where a copy of the position made
    /// here would lose the picks made on `previous` after the copy and
    /// repeat a server.
    pub fn with_previous(
        services: ServiceTable,
        ports: Vec<PortConfig>,
        next_hops: NextHops,
        policy: Policy,
        previous: Option<&Snapshot>,
    ) -> Snapshot {
        let schedulers = services
            .services()
            .iter()
            .map(|svc| {
                let old = previous.and_then(|p| {
                    p.services
                        .find(&svc.key)
                        .map(|(i, was)| (&p.schedulers[i as usize], was))
                });
                match old {
                    Some((s, was)) if was == svc => Arc::clone(s),
                    Some((s, _)) => Arc::new(s.update(svc)),
                    None => Arc::new(Scheduler::new(svc)),
                }
            })
            .collect();
        let paths = services
            .services()
            .iter()
            .map(|s| {
                s.reals
                    .iter()
                    .map(|r| real_path(r, &ports, &next_hops))
                    .collect()
            })
            .collect();
        let has_thresholds = services
            .services()
            .iter()
            .map(|s| s.reals.iter().any(|r| r.upper_threshold > 0))
            .collect();
        let mut real_addrs = previous.map_or_else(AddrFilter::empty, |p| p.real_addrs.clone());
        for r in services.services().iter().flat_map(|s| &s.reals) {
            real_addrs.add(r.addr);
        }
        let mut vips = AddrFilter::empty();
        for s in services.services() {
            vips.add(s.key.addr);
        }
        Snapshot {
            services,
            ports,
            next_hops,
            policy,
            schedulers,
            paths,
            has_thresholds,
            real_addrs,
            vips,
        }
    }

    /// The scheduler of each service, in service order.
    pub fn schedulers(&self) -> &[Arc<Scheduler>] {
        &self.schedulers
    }
}

fn real_path(real: &RealServer, ports: &[PortConfig], hops: &NextHops) -> RealPath {
    let hop = hops.resolve(real.addr);
    let port = hop.ok().and_then(|h| ports.get(usize::from(h.port)));
    let mtu = port.map_or(1500, |p| p.mtu);
    let tunnel_src = port.and_then(|p| {
        p.addrs
            .iter()
            .copied()
            .find(|a| a.is_ipv4() == real.addr.is_ipv4())
    });
    let tun4 = match (real.method, hop, tunnel_src, real.addr) {
        (ForwardMethod::Tun, Ok(h), Some(IpAddr::V4(src)), IpAddr::V4(rip)) => {
            Some(tun::Template4::new(src, rip, &h, mtu))
        }
        _ => None,
    };
    RealPath {
        hop,
        macs: hop.map_or([0; 12], |h| rewrite::eth_addrs(&h.src_mac, &h.dst_mac)),
        mtu,
        tunnel_src,
        tun4,
    }
}

/// When and where a frame arrived.
#[derive(Clone, Copy, Debug)]
struct Rx {
    now: Millis,
    ingress: PortId,
}

/// One worker's packet processor.
pub struct Pipeline {
    snap: Arc<Snapshot>,
    engine: Engine,
}

/// The per-worker state `process` changes, apart from the configuration
/// snapshot so that the snapshot can be borrowed while the state is
/// mutated: reading it per frame never touches its reference count, which
/// every worker shares.
struct Engine {
    conns: Arc<ConnTable>,
    loads: Arc<RealLoads>,
    stats: WorkerCounters,
    /// What the pipeline tells the world: resolve requests, connection events.
    outbox: Outbox,
    /// The next hop the frame in hand was rewritten for without its MAC.
    waiting: Option<IpAddr>,
    /// The next hop of the last frame given [`Verdict::Hold`], which the
    /// caller reads after that verdict (`Pipeline::held_next_hop`).
    held: Option<IpAddr>,
    /// Next hops toward clients resolved under the current snapshot.
    hops: HopCache,
    /// The IPv4 client→VIP flows forwarded lately, under the current
    /// snapshot.
    flows: FlowCache,
    /// This worker's per-real-server traffic, read by the control plane.
    traffic: Arc<RealTraffic>,
    /// IPv4 identification of non-DF tunnel packets.
    ip_id: u16,
    /// When `end_batch` last swept a slice of the connection table.
    swept: Millis,
    /// The millisecond resets were last sent in, and how many so far.
    reset_ms: Millis,
    resets_in_ms: u32,
}

impl Pipeline {
    pub fn new(
        snap: Arc<Snapshot>,
        conns: Arc<ConnTable>,
        loads: Arc<RealLoads>,
        worker: u16,
    ) -> Pipeline {
        let traffic = Arc::new(RealTraffic::new(loads.capacity()));
        Pipeline {
            snap,
            engine: Engine {
                conns,
                loads,
                stats: WorkerCounters::default(),
                outbox: Outbox::new(),
                waiting: None,
                held: None,
                hops: HopCache::new(),
                flows: FlowCache::new(),
                traffic,
                ip_id: worker.wrapping_mul(0x1000),
                swept: Millis(0),
                reset_ms: Millis(0),
                resets_in_ms: 0,
            },
        }
    }

    /// This worker's counters (those the pipeline sees; the worker adds
    /// its own before publishing them).
    pub fn stats(&self) -> &WorkerCounters {
        &self.engine.stats
    }

    /// This worker's per-real-server traffic counters.
    pub fn traffic(&self) -> &Arc<RealTraffic> {
        &self.engine.traffic
    }

    /// Swaps in a new configuration snapshot; connections are unaffected.
    pub fn set_snapshot(&mut self, snap: Arc<Snapshot>) {
        self.snap = snap;
        self.engine.hops.clear();
        self.engine.flows.clear();
    }

    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snap
    }

    pub fn conns(&self) -> &Arc<ConnTable> {
        &self.engine.conns
    }

    /// Per-batch housekeeping: expires a slice of the connection table, at
    /// most once per millisecond of `now` for all the workers sharing it
    /// ([`ConnTable::expire_paced_with`]). The worker loop calls it after
    /// every batch; sweeping a slice per batch would cost the most exactly
    /// when batches are small, and timeouts are seconds long, so a slice per
    /// millisecond (all of a 1M-entry table in about a second, however many
    /// workers) is plenty. A worker's own millisecond check comes first, so
    /// the table's shared one is read at most once a millisecond.
    pub fn end_batch(&mut self, now: Millis) {
        let e = &mut self.engine;
        if now <= e.swept {
            return;
        }
        e.swept = now;
        if !e.outbox.conn_events() {
            e.conns.expire_paced_with(now, EXPIRE_BUDGET, |_| {});
            return;
        }
        let (outbox, stats) = (&mut e.outbox, &mut e.stats);
        e.conns.expire_paced_with(now, EXPIRE_BUDGET, |entry| {
            if entry.template {
                return;
            }
            let (c, v) = (entry.client, entry.virt);
            let closed = ConnClosed {
                key: FlowKey::new(entry.proto, c.ip(), c.port(), v.ip(), v.port()),
                real_id: entry.real_id,
            };
            if !outbox.conn(Event::Closed(closed)) {
                stats.outbox_overflow += 1;
            }
        });
    }

    /// Switches connection events (opened, state changed, closed) on or
    /// off; off by default. Their ring is allocated here, not per frame.
    pub fn set_conn_events(&mut self, on: bool) {
        self.engine.outbox.set_conn_events(on);
    }

    /// Takes the next event from the outbox: the worker drains it after
    /// each batch and hands every event on without blocking.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.engine.outbox.poll()
    }

    /// Counts frames held for a neighbour that the caller had to drop (the
    /// wait bound passed, or no room to hold them).
    pub fn count_unresolved_drops(&mut self, n: u64) {
        self.engine.stats.drops[DropReason::NeighbourUnresolved as usize] += n;
    }

    /// The next hop whose MAC the frame `process` last gave
    /// [`Verdict::Hold`] waits for, until the next frame held (None before
    /// the first): read after that verdict, it is the hold's address,
    /// kept here so that the verdict fits a register.
    pub fn held_next_hop(&self) -> Option<IpAddr> {
        self.engine.held
    }

    /// Takes the addresses whose next hop was missing since the last call,
    /// for the control plane to have the kernel resolve.
    /// Only the resolve requests: connection events stay in the outbox.
    pub fn resolve_requests(&mut self) -> impl Iterator<Item = IpAddr> + '_ {
        std::iter::from_fn(|| self.engine.outbox.poll_resolve())
    }

    /// Batch entry, first half: reads the headers of the next frames (at
    /// most [`PREFETCH_BATCH`]; the rest are ignored) and brings their
    /// connections' entries into cache in two stages — every index line
    /// ([`ConnTable::prefetch`]), then every entry they point to
    /// ([`ConnTable::prefetch_entry`]) — so that the cache misses of a
    /// large table overlap instead of queueing one per frame. Changes
    /// nothing; the caller then hands the same frames to
    /// [`Pipeline::process`] in order. Frames that do not parse, ICMP
    /// errors, and frames to no service from no real server's address
    /// (which `process` drops without a lookup) are skipped.
    pub fn prefetch<'f>(&self, frames: impl IntoIterator<Item = &'f [u8]>) {
        let conns = &*self.engine.conns;
        let mut probes = [None; PREFETCH_BATCH];
        for (slot, data) in probes.iter_mut().zip(frames) {
            let Some(key) = parse(data).ok().and_then(|p| p.key()) else {
                continue;
            };
            let skey = ServiceKey {
                proto: key.proto,
                addr: key.dst,
                port: key.dport,
            };
            let dir = if self.snap.services.find(&skey).is_some() {
                Direction::Original
            } else if self.snap.real_addrs.may_hold(key.src) {
                Direction::Reply
            } else {
                // No NAT answer (see `AddrFilter`): nothing to bring in.
                continue;
            };
            // Hashed once for both stages.
            *slot = Some(conns.probe(&key, dir));
        }
        // Each stage a tight loop of its own: the loads are plain loads, and
        // between parses they would fill the reorder buffer and queue.
        for probe in probes.iter().flatten() {
            conns.prefetch_probe(probe);
        }
        for probe in probes.iter().flatten() {
            conns.prefetch_entry_probe(probe);
        }
    }

    /// A batch of frames that arrived on `ingress`: [`Pipeline::prefetch`]
    /// for each [`PREFETCH_BATCH`] of them, then [`Pipeline::process`] for
    /// each; `verdict` gets each frame's index and verdict and, for a
    /// hold, the next hop it waits for ([`Pipeline::held_next_hop`]).
    pub fn process_batch(
        &mut self,
        now: Millis,
        ingress: PortId,
        frames: &mut [Frame<'_>],
        mut verdict: impl FnMut(usize, Verdict, Option<IpAddr>),
    ) {
        for (c, chunk) in frames.chunks_mut(PREFETCH_BATCH).enumerate() {
            self.prefetch(chunk.iter().map(|f| f.data()));
            for (i, frame) in chunk.iter_mut().enumerate() {
                let v = self.process(now, ingress, frame);
                let hop = match v {
                    Verdict::Hold { .. } => self.held_next_hop(),
                    _ => None,
                };
                verdict(c * PREFETCH_BATCH + i, v, hop);
            }
        }
    }

    /// Handles one frame that arrived on `ingress`, rewriting it in place.
    ///
    /// The common frame (see [`parse_flow`]) is read at fixed offsets and
    /// takes [`Engine::flow`]'s steps here; every other frame takes
    /// [`Engine::classify`], out of line, which parses it in full and
    /// reaches `flow` itself for TCP and UDP: both give one verdict and the
    /// same bytes for a frame either would take.
    pub fn process(&mut self, now: Millis, ingress: PortId, frame: &mut Frame<'_>) -> Verdict {
        let snap = &*self.snap;
        let e = &mut self.engine;
        e.stats.rx += 1;
        let rx = Rx { now, ingress };
        let Some(checked) = check_flow(frame.data()) else {
            let result = e.classify(snap, rx, frame);
            return e.verdict(result);
        };
        // Only a frame to a virtual service's address looks for its flow
        // and its service, only one from a NAT real server's address for
        // its connection: the two filters tell the host's own frames in a
        // few instructions, by the addresses alone, before the ports are
        // read or any path's values kept.
        let to_vip = snap.vips.may_hold(checked.dst().into());
        if !to_vip && !snap.real_addrs.may_hold(checked.src().into()) {
            return e.early_drop(DropReason::NoConnection);
        }
        let f = checked.flow();
        if to_vip {
            if let Some(result) = e.cached(rx, snap, &f, frame) {
                return e.verdict(result);
            }
            if let Some(found) = f.service(&snap.services) {
                let result = e.for_service(rx, snap, found, &f, frame);
                return e.verdict(result);
            }
            if !snap.real_addrs.may_hold(f.src()) {
                return e.verdict(Err(DropReason::NoConnection));
            }
        }
        // `flow`'s steps (an IPv4 packet has no UDP checksum to refuse).
        let result = e.nat_answer(now, snap, &f, frame);
        e.verdict(result)
    }

    /// [`Pipeline::process`] without the fast path: every frame through
    /// [`Engine::classify`], for tests holding the two paths to one result.
    #[cfg(test)]
    pub(crate) fn process_general(
        &mut self,
        now: Millis,
        ingress: PortId,
        frame: &mut Frame<'_>,
    ) -> Verdict {
        let snap = &*self.snap;
        let e = &mut self.engine;
        e.stats.rx += 1;
        let result = e.classify(snap, Rx { now, ingress }, frame);
        e.verdict(result)
    }
}

impl Engine {
    /// A packet of a flow the flow cache holds, whose connection entry the
    /// packet leaves as it is: forwarded as [`Engine::service_packet`]
    /// forwards it after the lookups it spares (the service's, the
    /// connection's, the real server's in the service), which found what
    /// the cache holds when it was filled. `None` for every other packet,
    /// which takes the lookups: a SYN (it may reuse a finished
    /// connection's ports), a flow the cache does not hold, one whose entry
    /// moved on or that the packet changes.
    #[inline(always)]
    fn cached(
        &mut self,
        rx: Rx,
        snap: &Snapshot,
        f: &V4Flow,
        frame: &mut Frame<'_>,
    ) -> Option<Sent> {
        if f.tcp_flags & TcpFlags::SYN != 0 {
            return None;
        }
        let c = *self.flows.get(f)?;
        if !self.conns.quiet_remembered(c.conn, f.flags(), rx.now) {
            return None;
        }
        let (si, ri) = (u32::from(c.si), usize::from(c.ri));
        let real = snap.services.service(si)?.reals.get(ri)?;
        let path = snap.paths.get(si as usize)?.get(ri)?;
        self.complete_checksum(f, frame);
        let sent = self.forward(snap, rx.ingress, f, real, path, frame);
        if sent.is_ok() {
            self.traffic.count_in(real.id, f.ip_len());
        }
        Some(sent)
    }

    /// The frame's verdict, counted: a transmit with its next hop known
    /// and a drop inline (a frame for the host is dropped as often as a
    /// frame of a service is sent), a hold in [`Engine::rare_verdict`].
    #[inline(always)]
    fn verdict(&mut self, result: Sent) -> Verdict {
        match result {
            Ok(port) if self.waiting.is_none() => {
                self.stats.tx += 1;
                Verdict::Transmit { port }
            }
            Err(r) if self.waiting.is_none() => {
                self.stats.drops[r as usize] += 1;
                Verdict::Drop(r)
            }
            other => self.rare_verdict(other),
        }
    }

    /// A frame dropped before any path ran, its reason a constant: no
    /// path named a next hop to wait for, as [`Engine::verdict`] would
    /// otherwise ask.
    #[inline(always)]
    fn early_drop(&mut self, r: DropReason) -> Verdict {
        debug_assert!(self.waiting.is_none());
        self.stats.drops[r as usize] += 1;
        Verdict::Drop(r)
    }

    /// A frame rewritten for a next hop without its MAC, which is held
    /// ([`Verdict::Hold`]), or dropped after all.
    #[cold]
    #[inline(never)]
    fn rare_verdict(&mut self, result: Sent) -> Verdict {
        let v = match (result, self.waiting.take()) {
            (Ok(port), Some(next_hop)) => {
                self.held = Some(next_hop);
                Verdict::Hold { port }
            }
            (Ok(port), None) => Verdict::Transmit { port },
            (Err(r), _) => Verdict::Drop(r),
        };
        count(&mut self.stats, v);
        v
    }

    /// Every frame [`parse_flow`] does not take, parsed in full; TCP and
    /// UDP go on to [`Engine::flow`] as the fast path's frames do.
    #[inline(never)]
    fn classify(&mut self, snap: &Snapshot, rx: Rx, frame: &mut Frame<'_>) -> Sent {
        // Borrowed where it lies: a move of the parse's result costs more
        // than the fields this frame reads.
        let parsed = parse(frame.data());
        let p = match &parsed {
            Ok(p) => p,
            Err(e) => return Err((*e).into()),
        };
        match p.transport {
            Transport::Tcp { .. } | Transport::Udp => {
                let Some(key) = p.key() else {
                    return Err(DropReason::OtherProtocol);
                };
                self.flow(snap, rx, &General { p, key }, frame)
            }
            Transport::IcmpError(q) => self.icmp_error(rx.now, rx.ingress, snap, p, &q, frame),
            Transport::Other => Err(DropReason::OtherProtocol),
        }
    }

    /// A TCP or UDP packet `p`, in either of its forms (the fast path's or
    /// the general one, see [`FlowPacket`]): to a virtual service, or a
    /// NAT real server's answer, or not ours.
    #[inline(always)]
    fn flow<P: FlowPacket>(
        &mut self,
        snap: &Snapshot,
        rx: Rx,
        p: &P,
        frame: &mut Frame<'_>,
    ) -> Sent {
        // RFC 8200: an IPv6 UDP checksum is never 0, service packet
        // or NAT answer alike. (A partial checksum is never 0 either: it
        // is a folded pseudo-header sum, so its completion can wait.)
        if p.is_v6_udp_without_checksum(frame.data()) {
            return Err(DropReason::UdpZeroChecksum);
        }
        if let Some(found) = p.service(&snap.services) {
            self.for_service(rx, snap, found, p, frame)
        } else {
            self.nat_reply(rx.now, snap, p, frame)
        }
    }

    /// A TCP or UDP packet `p` to the virtual service `found`: forwarded,
    /// or a TCP segment of no connection answered with a reset.
    #[inline(always)]
    fn for_service<P: FlowPacket>(
        &mut self,
        rx: Rx,
        snap: &Snapshot,
        found: (ServiceIndex, &VirtualService),
        p: &P,
        frame: &mut Frame<'_>,
    ) -> Sent {
        match self.service_packet(rx, snap, found, p, frame) {
            Err(DropReason::TcpNotSyn) => p.with_parsed(frame, |q, frame| self.reset(rx, q, frame)),
            other => other,
        }
    }

    /// Completes a checksum the sender's offload left partial, before any
    /// rewrite (incremental updates assume a full one). Only frames xvs
    /// claims pay for the check: a frame to no service and of no
    /// connection is dropped as it came.
    #[inline(always)]
    fn complete_checksum(&mut self, p: &impl FlowPacket, frame: &mut Frame<'_>) {
        if p.complete_partial_checksum(frame.data_mut()) {
            self.stats.checksums_completed += 1;
        }
    }

    /// A TCP/UDP packet `p` to the virtual service `found`.
    #[inline(always)]
    fn service_packet<P: FlowPacket>(
        &mut self,
        rx: Rx,
        snap: &Snapshot,
        found: (ServiceIndex, &VirtualService),
        p: &P,
        frame: &mut Frame<'_>,
    ) -> Sent {
        let (si, svc) = found;
        self.complete_checksum(p, frame);
        if is_martian(p.src()) {
            return Err(DropReason::Martian);
        }
        if p.sport() == 0 || p.dport() == 0 {
            return Err(DropReason::ZeroPort);
        }
        let flags = p.flags();
        let mut probe = self.conns.probe(&p.key(), Direction::Original);
        // Only the real server goes on: the entry itself is not read again.
        // The hit is one value, used where it is found and not kept in an
        // `Option` across the reuse test (which would hold it in memory).
        let (real_id, ri, real) = 'placed: {
            if let Some(c) = self.conns.find_probe(&mut probe, flags, rx.now) {
                // A SYN reusing the ports of a finished connection starts a
                // new one, scheduled afresh (IPVS's conn_reuse_mode).
                if flags.is_some_and(|f| f.is_connection_start())
                    && matches!(c.state(), ConnState::TimeWait | ConnState::Close)
                {
                    self.end_finished(c.handle(), c.dir, rx.now);
                } else {
                    let Some((ri, real)) = snap.services.real_in(si, svc, c.real_id()) else {
                        return Err(self.dest_gone(snap, c.handle(), c.dir, rx.now));
                    };
                    // An entry that expired or was released since the
                    // lookup is a miss.
                    if let Some(state) = self.conns.update_hit(&c, flags, rx.now) {
                        if state != c.state() {
                            self.changed_hit(c.handle(), c.dir, state, rx.now);
                        }
                        p.remember(&mut self.flows, &c, si, ri);
                        break 'placed (c.real_id(), ri, real);
                    }
                }
            }
            // Copies for the call, made here on the miss path: the lookup's
            // probe stays in registers, the key is made again where the
            // call needs it in memory.
            let reuse = probe;
            let (id, ri) = self.new_conn(rx.now, snap, si, svc, &reuse, &p.key(), flags)?;
            (id, ri, &svc.reals[ri])
        };
        let path = &snap.paths[si as usize][ri];
        let v = self.forward(snap, rx.ingress, p, real, path, frame)?;
        self.traffic.count_in(real_id, p.ip_len());
        Ok(v)
    }

    /// Ends the finished connection `handle` a new SYN reuses the ports
    /// of. The hit's handle by value: a reference to the hit would keep it
    /// in memory on the frame's path.
    #[cold]
    #[inline(never)]
    fn end_finished(&mut self, handle: ConnRef, dir: Direction, now: Millis) {
        let Some(c) = self.conns.hit_conn(&handle, dir) else {
            return;
        };
        if self.conns.remove(&c.handle, now) {
            self.closed(&c);
        }
    }

    /// A packet of connection `c`, whose real server is not in the service
    /// now. As IPVS: dropped without touching the entry's state or timer,
    /// so the connection resumes if the server comes back, or ended with
    /// `expire_nodest_conn`.
    #[cold]
    #[inline(never)]
    fn dest_gone(
        &mut self,
        snap: &Snapshot,
        handle: ConnRef,
        dir: Direction,
        now: Millis,
    ) -> DropReason {
        if snap.policy.expire_nodest_conn {
            if let Some(c) = self.conns.hit_conn(&handle, dir) {
                if self.conns.remove(&c.handle, now) {
                    self.closed(&c);
                }
            }
        }
        DropReason::DestGone
    }

    /// Answers a segment of no connection with a reset, back where it came
    /// from, within the per-millisecond budget.
    #[cold]
    #[inline(never)]
    fn reset(&mut self, rx: Rx, p: &Parsed, frame: &mut Frame<'_>) -> Sent {
        if rx.now != self.reset_ms {
            self.reset_ms = rx.now;
            self.resets_in_ms = 0;
        }
        if self.resets_in_ms >= RESETS_PER_MS || !reset::answer_with_reset(frame, p) {
            return Err(DropReason::TcpNotSyn);
        }
        self.resets_in_ms += 1;
        self.stats.resets_sent += 1;
        Ok(rx.ingress)
    }

    /// Places a new connection: on the persistence template's real server if
    /// the service is persistent and the client has one, else where the
    /// scheduler says. `probe` is the lookup's, reused by the insert.
    /// Returns the entry's real server (another worker's, if its entry of
    /// the key won the race) and the scheduled server's position.
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn new_conn(
        &mut self,
        now: Millis,
        snap: &Snapshot,
        si: ServiceIndex,
        svc: &VirtualService,
        probe: &Probe,
        key: &FlowKey,
        flags: Option<TcpFlags>,
    ) -> Result<(RealId, usize), DropReason> {
        if key.proto == L4Proto::Tcp
            && !flags.is_some_and(|f| f.is_connection_start())
            && !snap.policy.sloppy_tcp
        {
            return Err(DropReason::TcpNotSyn);
        }
        let mut template = None;
        let mut chosen = None;
        if let Some(persist) = svc.persistence {
            let tk = TemplateKey::for_flow(key, persist.prefix_len);
            if let Some(t) = self.conns.template(&tk, now) {
                if let Some(ri) = svc
                    .reals
                    .iter()
                    .position(|r| r.id == t.real_id && r.weight > 0)
                {
                    template = Some(t.handle);
                    chosen = Some(ri);
                }
            }
            if chosen.is_none() {
                let ri = self.schedule(snap, si, svc, key)?;
                let real = &svc.reals[ri];
                let t = self
                    .conns
                    .insert_template(
                        &tk,
                        real.id,
                        SocketAddr::new(real.addr, real.port),
                        persist.timeout_secs,
                        now,
                    )
                    .map_err(insert_drop)?;
                // Another worker may have placed this client first: follow it.
                chosen = svc.reals.iter().position(|r| r.id == t.real_id);
                template = Some(t.handle);
            }
        }
        let ri = match chosen {
            Some(ri) => ri,
            None => self.schedule(snap, si, svc, key)?,
        };
        let real = &svc.reals[ri];
        let chosen = (real.id, real.method, SocketAddr::new(real.addr, real.port));
        // The entry comes back as its handle only; its words are read
        // back for the conn event, which is usually off.
        let id = match self
            .conns
            .open_new(key, chosen, template, probe, flags, now)
        {
            Ok(Opened::New(handle, state)) => {
                if self.outbox.conn_events() {
                    self.opened(handle, state, now);
                }
                handle.real_id()
            }
            Ok(Opened::Existing(handle, state)) => {
                if let Some(state) = state {
                    if self.outbox.conn_events() {
                        self.opened(handle, state, now);
                    }
                }
                handle.real_id()
            }
            Err(e) => return Err(insert_drop(e)),
        };
        self.stats.new_conns += 1;
        self.traffic.count_conn(real.id);
        Ok((id, ri))
    }

    /// The position in `svc` of the real server the service's scheduler
    /// picks for `key` (overload flags brought up to date first where the
    /// service has thresholds). Inlined into `new_conn`'s two calls.
    #[inline(always)]
    fn schedule(
        &self,
        snap: &Snapshot,
        si: ServiceIndex,
        svc: &VirtualService,
        key: &FlowKey,
    ) -> Result<usize, DropReason> {
        // Thresholds (-x/-y): bring each real server's overload flag up to
        // date with its live counts first, as IPVS does when it binds or
        // unbinds a connection. Only services with a threshold pay for it.
        if snap.has_thresholds[si as usize] {
            for r in &svc.reals {
                if let Some(c) = self.loads.get(r.id) {
                    crate::sched::update_overload(c, r);
                }
            }
        }
        snap.schedulers[si as usize]
            .schedule(svc, key, &self.loads)
            .ok_or(DropReason::NoRealServer)
    }

    /// Applies the real server's forwarding method to a client → VIP packet
    /// (or to an ICMP error about that connection).
    #[inline(always)]
    fn forward(
        &mut self,
        snap: &Snapshot,
        ingress: PortId,
        p: &impl FlowPacket,
        real: &RealServer,
        path: &RealPath,
        frame: &mut Frame<'_>,
    ) -> Sent {
        // Borrowed from the snapshot where it is resolved, not copied out,
        // with the MACs made for it there.
        let unresolved;
        let (hop, macs) = match &path.hop {
            Ok(h) => (h, &path.macs),
            Err(Unresolved(addr)) => {
                let h = self.unresolved(snap, *addr)?;
                unresolved = (h, rewrite::eth_addrs(&h.src_mac, &h.dst_mac));
                (&unresolved.0, &unresolved.1)
            }
        };
        match real.method {
            ForwardMethod::Nat => p.nat_to_real(frame.data_mut(), real.addr, real.port, macs)?,
            ForwardMethod::Dr => dr::to_real(frame.data_mut(), macs),
            ForwardMethod::Tun => return self.tunnel(ingress, p, real, path, hop, frame),
        }
        Ok(hop.port)
    }

    /// [`Engine::forward`]'s TUN case. An IPv4 packet that fits, toward a
    /// real server with a header template, is encapsulated from the
    /// template, from what `p` read of it ([`FlowPacket::inner4`]: no
    /// [`Parsed`] made); any other (IPv6, too big, no template) takes
    /// [`Engine::tunnel_general`]. Inlined into the frame's path, the
    /// general path a cold call.
    #[inline(always)]
    fn tunnel<P: FlowPacket>(
        &mut self,
        ingress: PortId,
        p: &P,
        real: &RealServer,
        path: &RealPath,
        hop: &NextHop,
        frame: &mut Frame<'_>,
    ) -> Sent {
        if let (Some(t), Some(inner)) = (&path.tun4, p.inner4(frame.data())) {
            if t.fits(inner) {
                if !inner.dont_fragment {
                    self.ip_id = self.ip_id.wrapping_add(1);
                }
                tun::to_real4(frame, inner, t, self.ip_id)?;
                return Ok(hop.port);
            }
        }
        // The packet's `Parsed` made here, in the cold branch: the
        // template case keeps what it read in registers.
        p.with_parsed(frame, |q, frame| {
            self.tunnel_general(ingress, q, real, path, hop, frame)
        })
    }

    /// TUN by the general path: the MTU and too-big decision, either
    /// family, the tunnel source checked. Gives the same frame as
    /// [`Engine::tunnel`]'s template case for a packet that takes it.
    #[cold]
    #[inline(never)]
    fn tunnel_general(
        &mut self,
        ingress: PortId,
        p: &Parsed,
        real: &RealServer,
        path: &RealPath,
        hop: &NextHop,
        frame: &mut Frame<'_>,
    ) -> Sent {
        let src = path.tunnel_src.ok_or(DropReason::NoTunnelSource)?;
        if !p.dont_fragment {
            self.ip_id = self.ip_id.wrapping_add(1);
        }
        if tun::to_real(frame, p, src, real.addr, hop, path.mtu, self.ip_id)?
            == tun::TunOutcome::TooBig
        {
            // The frame is now an ICMP error for the sender: back where it
            // came from, with the MACs it came with, so it waits for no
            // neighbour.
            self.waiting = None;
            self.stats.icmp_too_big += 1;
            return Ok(ingress);
        }
        Ok(hop.port)
    }

    /// A TCP/UDP packet not to a service: a NAT real server's answer, or not ours.
    #[inline(always)]
    fn nat_reply(
        &mut self,
        now: Millis,
        snap: &Snapshot,
        p: &impl FlowPacket,
        frame: &mut Frame<'_>,
    ) -> Sent {
        // Not from a real server's address: no NAT connection's answer.
        if !snap.real_addrs.may_hold(p.src()) {
            return Err(DropReason::NoConnection);
        }
        self.nat_answer(now, snap, p, frame)
    }

    /// A TCP/UDP packet not to a service, from an address the real server
    /// filter holds: translated back to the client if it answers a NAT
    /// connection.
    #[inline(always)]
    fn nat_answer(
        &mut self,
        now: Millis,
        snap: &Snapshot,
        p: &impl FlowPacket,
        frame: &mut Frame<'_>,
    ) -> Sent {
        let Some(conn) = self.conns.find_reply(&p.key(), p.flags(), now) else {
            return Err(DropReason::NoConnection);
        };
        self.complete_checksum(p, frame);
        let Some(state) = self.conns.update_hit(&conn, p.flags(), now) else {
            return Err(DropReason::NoConnection);
        };
        if state != conn.state() {
            self.changed_hit(conn.handle(), conn.dir, state, now);
        }
        // Borrowed from the cache where it is there, not copied out.
        let client = conn.client().ip();
        let missed;
        let hop = match self.hops.get_ref(client) {
            Some(h) => h,
            None => {
                missed = self.hop_toward(snap, client)?;
                &missed
            }
        };
        p.nat_to_client(frame.data_mut(), conn.virt().ip(), conn.virt().port(), hop)?;
        self.traffic.count_out(conn.real_id(), p.ip_len());
        Ok(hop.port)
    }

    /// An ICMP error: forwarded where the connection it is about goes.
    fn icmp_error(
        &mut self,
        now: Millis,
        ingress: PortId,
        snap: &Snapshot,
        p: &Parsed,
        q: &Quoted,
        frame: &mut Frame<'_>,
    ) -> Sent {
        // The quoted packet travelled the other way: its reversed tuple is the
        // direction of the connection this error travels along.
        let Some(conn) = self.conns.lookup(&q.key(frame.data()).reversed(), now) else {
            return Err(DropReason::IcmpNoConnection);
        };
        match conn.dir {
            // Quote: VIP → client, an answer; the error goes to the real server.
            Direction::Original => {
                // By real server id, which stays put when services are
                // added or deleted (service indexes shift).
                let Some((si, _)) = snap.services.real(conn.real_id()) else {
                    return Err(DropReason::DestGone);
                };
                let Some(svc) = snap.services.service(si) else {
                    return Err(DropReason::DestGone);
                };
                let Some(ri) = snap.services.real_position(si, conn.real_id()) else {
                    return Err(DropReason::DestGone);
                };
                let real = &svc.reals[ri];
                let path = &snap.paths[si as usize][ri];
                match real.method {
                    ForwardMethod::Nat => {
                        let hop = self.hop(snap, path.hop)?;
                        nat::icmp_to_real(frame.data_mut(), p, q, real.addr, real.port, &hop)?;
                        Ok(hop.port)
                    }
                    ForwardMethod::Dr => {
                        let hop = self.hop(snap, path.hop)?;
                        let macs = rewrite::eth_addrs(&hop.src_mac, &hop.dst_mac);
                        dr::to_real(frame.data_mut(), &macs);
                        Ok(hop.port)
                    }
                    ForwardMethod::Tun => {
                        let hop = self.hop(snap, path.hop)?;
                        self.tunnel_general(ingress, p, real, path, &hop, frame)
                    }
                }
            }
            // Quote: client → RIP, a packet NAT sent on; the error goes to the client.
            Direction::Reply => {
                let hop = self.hop_toward(snap, conn.client().ip())?;
                nat::icmp_to_client(
                    frame.data_mut(),
                    p,
                    q,
                    conn.real().ip(),
                    conn.virt().ip(),
                    conn.virt().port(),
                    &hop,
                )?;
                Ok(hop.port)
            }
        }
    }

    /// Tells the outbox that a lookup's hit moved to `state`, if
    /// connection events are on: its entry read again by its handle
    /// (released meanwhile, it has no event: its release reports it).
    #[cold]
    #[inline(never)]
    fn changed_hit(&mut self, handle: ConnRef, dir: Direction, state: ConnState, now: Millis) {
        if self.outbox.conn_events() {
            if let Some(conn) = self.conns.hit_conn(&handle, dir) {
                self.conn_event(&conn, state, now, false);
            }
        }
    }

    /// The conn event of an entry this worker just opened, or met opened
    /// by another worker, read back from the table (released meanwhile,
    /// it has none: its release reports it). The handle by value: a
    /// reference had its fields stored on every new connection's path,
    /// ahead of the test of whether events are on.
    #[inline(never)]
    fn opened(&mut self, handle: ConnRef, state: ConnState, now: Millis) {
        if let Some(conn) = self.conns.conn(&handle) {
            self.conn_event(&conn, state, now, true);
        }
    }

    #[inline(never)]
    fn conn_event(&mut self, conn: &Conn, state: ConnState, now: Millis, opened: bool) {
        let e = ConnEvent {
            key: conn.key(),
            real_id: conn.real_id(),
            real: conn.real(),
            method: conn.method(),
            state,
            timeout_ms: self.conns.remaining_ms(&conn.handle, now).unwrap_or(0),
            template: self.conns.template_key(conn),
        };
        let e = if opened {
            Event::Opened(e)
        } else {
            Event::Changed(e)
        };
        if !self.outbox.conn(e) {
            self.stats.outbox_overflow += 1;
        }
    }

    /// Tells the outbox that this worker ended `conn`.
    fn closed(&mut self, conn: &Conn) {
        let e = Event::Closed(ConnClosed {
            key: conn.key(),
            real_id: conn.real_id(),
        });
        if self.outbox.conn_events() && !self.outbox.conn(e) {
            self.stats.outbox_overflow += 1;
        }
    }

    /// The next hop toward `addr` under `snap`, from the cache where the
    /// address was resolved before.
    #[inline]
    fn hop_toward(&mut self, snap: &Snapshot, addr: IpAddr) -> Result<NextHop, DropReason> {
        if let Some(hop) = self.hops.get(addr) {
            return Ok(hop);
        }
        let hop = snap.next_hops.resolve(addr);
        if let Ok(h) = hop {
            self.hops.put(addr, h);
        }
        self.hop(snap, hop)
    }

    /// The next hop to rewrite for. An unresolved one is asked for and, if a
    /// route says which port it is on, stands in with a blank destination
    /// MAC: the frame is then held ([`Verdict::Hold`]) rather than dropped,
    /// as the kernel queues packets on an unresolved neighbour.
    #[inline]
    fn hop(
        &mut self,
        snap: &Snapshot,
        hop: Result<NextHop, Unresolved>,
    ) -> Result<NextHop, DropReason> {
        match hop {
            Ok(h) => Ok(h),
            Err(Unresolved(addr)) => self.unresolved(snap, addr),
        }
    }

    /// [`Engine::hop`] for a next hop not resolved yet: off the fast path.
    #[cold]
    #[inline(never)]
    fn unresolved(&mut self, snap: &Snapshot, addr: IpAddr) -> Result<NextHop, DropReason> {
        if !self.outbox.resolve(addr) {
            self.stats.outbox_overflow += 1;
        }
        let port = snap
            .next_hops
            .port_toward(addr)
            .ok_or(DropReason::NeighbourUnresolved)?;
        let src_mac = snap
            .next_hops
            .port_mac(port)
            .ok_or(DropReason::NeighbourUnresolved)?;
        self.waiting = Some(addr);
        Ok(NextHop {
            port,
            src_mac,
            dst_mac: [0; 6],
        })
    }
}

/// A direct-mapped cache of resolved next hops by destination address: a
/// NAT reply or ICMP error to a client costs a route scan and a neighbour
/// search otherwise. Only resolved hops are kept (an unresolved one must
/// reach `Engine::hop` each time, which asks for it); the cache holds for
/// one snapshot, whose next hops never change, and is cleared with it.
struct HopCache {
    slots: Box<[Option<(IpAddr, NextHop)>; HOP_CACHE_SLOTS]>,
}

/// Slots of [`HopCache`], a power of two.
const HOP_CACHE_SLOTS: usize = 256;

impl HopCache {
    fn new() -> HopCache {
        HopCache {
            slots: Box::new([None; HOP_CACHE_SLOTS]),
        }
    }

    fn clear(&mut self) {
        self.slots.fill(None);
    }

    #[inline]
    fn slot(addr: IpAddr) -> usize {
        let folded = match addr {
            IpAddr::V4(a) => u64::from(a.to_bits()),
            IpAddr::V6(a) => {
                let b = a.to_bits();
                (b as u64) ^ ((b >> 64) as u64)
            }
        };
        (folded.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - HOP_CACHE_SLOTS.trailing_zeros()))
            as usize
    }

    #[inline]
    fn get(&self, addr: IpAddr) -> Option<NextHop> {
        self.get_ref(addr).copied()
    }

    #[inline]
    fn get_ref(&self, addr: IpAddr) -> Option<&NextHop> {
        match &self.slots[Self::slot(addr)] {
            Some((a, hop)) if *a == addr => Some(hop),
            _ => None,
        }
    }

    fn put(&mut self, addr: IpAddr, hop: NextHop) {
        self.slots[Self::slot(addr)] = Some((addr, hop));
    }
}

#[cold]
fn insert_drop(e: InsertError) -> DropReason {
    match e {
        InsertError::AddressFamily => DropReason::AddressFamily,
        // A reply-key clash, a template that vanished or an id out of range
        // all mean the flow cannot be tracked now.
        _ => DropReason::ConnTableFull,
    }
}

/// Source addresses no client can have.
fn is_martian(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => {
            a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.is_broadcast()
        }
        IpAddr::V6(a) => a.is_unspecified() || a.is_loopback() || a.is_multicast(),
    }
}

mod flow_cache;
mod flow_packet;
use flow_packet::{FlowPacket, General};
mod outbox;
use outbox::Outbox;
pub use outbox::{ConnClosed, ConnEvent, Event, CONN_EVENTS, RESOLVE_SLOTS};

#[doc(hidden)]
pub mod testnet;

#[cfg(test)]
mod driving;
#[cfg(test)]
mod fastpath;
#[cfg(test)]
mod golden;
#[cfg(test)]
mod snapshot_tests;
#[cfg(test)]
mod steering;

#[cfg(test)]
mod addr_filter_tests {
    use super::AddrFilter;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    fn v4(i: u32) -> IpAddr {
        Ipv4Addr::from(0xc633_6400 + i).into()
    }

    fn v6(i: u32) -> IpAddr {
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, (i >> 16) as u16, i as u16).into()
    }

    /// Every address added is held, of either family; of the addresses
    /// never added, few are (the filter exists to turn those away).
    #[test]
    fn the_real_address_filter_holds_what_was_added_and_little_else() {
        let mut f = AddrFilter::empty();
        assert!((0..1000).all(|i| !f.may_hold(v4(i)) && !f.may_hold(v6(i))));
        for i in 0..32 {
            f.add(v4(i));
            f.add(v6(i));
        }
        assert!((0..32).all(|i| f.may_hold(v4(i)) && f.may_hold(v6(i))));
        // At most 64 of 4096 marks set: about 1.6 % of other addresses of
        // each family pass, about 3 % of these pairs.
        let passed = (1000..11_000)
            .filter(|&i| f.may_hold(v4(i)) || f.may_hold(v6(i)))
            .count();
        assert!(passed < 600, "{passed} of 10,000 never added passed");
    }
}
