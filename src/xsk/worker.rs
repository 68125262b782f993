//! One worker: a UMEM, one AF_XDP socket per director interface on the
//! worker's queue, and the loop that moves frames through the pipeline.
//!
//! Frame accounting: every frame of the UMEM is, between loop rounds, in
//! exactly one place — the worker's free list, a fill ring (given to the
//! kernel to receive into), a TX ring (given to the kernel to send, until
//! it comes back on a completion ring), or the hold queue (rewritten, waiting
//! for its next hop's MAC: [`HoldQueue`]). The worker's own counts follow
//! each ring operation, so `free + fill + tx + held == total` holds at every
//! round boundary; [`WorkerStats`] gets them at such a boundary (once a
//! millisecond while busy, on idle rounds, and at exit). A frame that leaked
//! would break the sum, which the netns tests check after long runs.
//!
//! Headroom: a received descriptor's address is its packet's first byte,
//! which every XDP mode puts XDP_PACKET_HEADROOM (256) bytes or more into
//! its chunk; the worker gives the pipeline the [`HEADROOM`] bytes in front
//! of it as the [`Frame`]'s headroom: TUN opens its outer header there
//! without moving the packet. (The steering program does not grow the
//! frame into them: in copy mode the kernel would copy those bytes too, a
//! cache line more per frame on the receiving core.) The frame then leaves
//! from wherever it starts in its chunk, through the worker's own TX ring
//! producer ([`TxRing`]); completions name that address, and
//! [`Worker::chunk`] maps it back to the chunk's own descriptor for the
//! free list and the fill rings. (xsk-rs reaches a chunk's bytes only from
//! a descriptor's address onward and cannot make a descriptor at another
//! address: the worker reaches the bytes in front of the packet through the
//! UMEM's base.)

use std::num::NonZeroU32;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hdrhistogram::Histogram;
use xsk_rs::config::{BindFlags, FrameSize, LibxdpFlags, QueueSize, SocketConfig, UmemConfig};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

use super::prog::SteeringProgram;
use super::rings::TxRing;
use super::rings::{CompRing, FillRing, RxDesc, RxRing};
use super::txring::{chunk_base, fits_chunk};
use crate::counters::{frames_conserved, summary_line, SharedCounters, FRAME_PLACES};
use crate::neigh::hold::{HoldQueue, HOLD_FRAMES, HOLD_MS};
use crate::neigh::netlink::Waker;
use crate::packet::Frame;
use crate::pipeline::{Event, Pipeline, Snapshot, PREFETCH_BATCH};
use crate::verdict::Verdict;
use crate::Millis;

/// Bytes per UMEM frame: a page, room for a 1500-byte frame plus encapsulation
/// or an ICMP error built in its place.
pub const FRAME_SIZE: u32 = 4096;
/// Bytes in front of a received packet that the worker gives the pipeline as
/// the [`Frame`]'s headroom: room for an IPv6 outer header (TUN), taken
/// from the chunk's bytes before the descriptor's address (see
/// `headroom_at`).
pub const HEADROOM: usize = 64;
// Room for the largest outer header the pipeline opens (IPv6, TUN), inside
// what every XDP mode leaves in front of a packet (256 bytes).
const _: () = assert!(HEADROOM >= 40 && HEADROOM <= 256);
/// Rounds without a frame before the worker sleeps in poll().
const IDLE_ROUNDS: u32 = 256;
/// And how long since its last frame, at least: the worker polls its rings
/// (spins) through short pauses in the traffic instead of sleeping, since a
/// sleeping worker's next frame waits for its wakeup, and on a busy core for
/// whatever runs there meanwhile (up to a scheduler slice, milliseconds).
/// Bounded, so that an idle worker still leaves its core to others.
const IDLE_SPIN: Duration = Duration::from_millis(1);
/// How long an idle worker sleeps before it looks at the stop flag again.
const IDLE_POLL_MS: i32 = 20;
/// Extra sendto() kicks per port and round while the kernel has not yet
/// taken every descriptor of a TX ring (in copy mode it takes at most
/// [`TX_KICK_FRAMES`] per call).
const TX_KICKS: u32 = 4;
/// Frames waiting unkicked in a TX ring that make a kick due at once: the
/// kernel's copy-mode budget of one sendto() (32 frames). Each call is a
/// system call and a pass over the socket's TX path, so a call carries as
/// many frames as it may rather than one short round's. (The receiving
/// peer's softirq, which veth runs on this core, runs once per frame
/// whatever the call's size: BENCHMARKS.md.)
const TX_KICK_FRAMES: u32 = 32;
/// How long the oldest unkicked frame of a TX ring may wait for more to
/// join it while every round brings frames (a round that brings none kicks
/// at once): bounds the latency coalescing adds. Short against the
/// director's one-way p50 of tens of microseconds at 90 % load; at full rate
/// (about a frame every 2 µs on veth) enough for the batch to fill first.
const TX_KICK_AFTER: Duration = Duration::from_micros(50);
/// How often the batch-latency histogram is published.
const HISTOGRAM_PUBLISH: Duration = Duration::from_secs(1);

/// How a worker is set up.
#[derive(Clone, Debug)]
pub struct WorkerSetup {
    pub index: usize,
    /// The rx/tx queue of every interface this worker owns.
    pub queue: u32,
    pub core: Option<core_affinity::CoreId>,
    /// Descriptors taken from an rx ring at a time (at least 64).
    pub batch: usize,
    /// Entries of each ring (fill, completion, rx, tx).
    pub ring_size: u32,
    /// `SO_PREFER_BUSY_POLL` with this budget, if set.
    pub busy_poll: Option<u16>,
    /// Whether each batch's connection entries are prefetched
    /// ([`Pipeline::prefetch`]) before its frames are processed
    /// (`batch_prefetch`, default off: on the development VM, whose 105 MB
    /// of L3 holds a 1M-entry table, the extra header parse and service
    /// lookup cost more than the overlapped misses save; BENCHMARKS.md).
    pub prefetch: bool,
}

/// Why a worker could not be set up.
#[derive(Debug)]
pub enum WorkerError {
    Umem(String),
    Socket {
        iface: String,
        queue: u32,
        reason: String,
    },
    Steering(super::prog::ProgError),
}

impl std::fmt::Display for WorkerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkerError::Umem(e) => write!(
                f,
                "UMEM allocation failed: {e} (is the memlock limit too low? `ulimit -l`)"
            ),
            WorkerError::Socket {
                iface,
                queue,
                reason,
            } => write!(
                f,
                "cannot bind an AF_XDP socket to {iface} queue {queue}: {reason} \
                 (needs root or CAP_NET_ADMIN+CAP_NET_RAW, a kernel with CONFIG_XDP_SOCKETS, \
                 and no other AF_XDP user on that queue)"
            ),
            WorkerError::Steering(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for WorkerError {}

/// Counters of one worker, written by it once a millisecond while it is busy
/// (and on every idle round) and read by the control plane at any time.
/// Each is declared once, in [`crate::counters`].
#[derive(Debug)]
pub struct WorkerStats {
    pub counters: SharedCounters,
    /// Frame accounting, by [`FRAME_PLACES`].
    pub frames: [AtomicU64; FRAME_PLACES.len()],
    /// The kernel's AF_XDP counters ([`crate::counters::XSK`]), summed over
    /// this worker's sockets and read once a second.
    pub xsk: [AtomicU64; 4],
    /// Busy rounds' processing time, in nanoseconds; published every second.
    pub batch_ns: Mutex<Histogram<u64>>,
}

impl Default for WorkerStats {
    fn default() -> WorkerStats {
        WorkerStats {
            counters: SharedCounters::default(),
            frames: std::array::from_fn(|_| AtomicU64::new(0)),
            xsk: std::array::from_fn(|_| AtomicU64::new(0)),
            batch_ns: Mutex::new(
                Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds"),
            ),
        }
    }
}

/// The index of the chunk that UMEM address `addr` lies in.
#[inline]
fn chunk_index(addr: usize) -> usize {
    super::txring::chunk_base(addr as u64, FRAME_SIZE.into()) as usize / FRAME_SIZE as usize
}

/// The first byte (UMEM address) of the chunk that address `addr` lies in.
#[inline]
fn chunk_start(addr: u64) -> u64 {
    chunk_base(addr, FRAME_SIZE.into())
}

/// The headroom a frame received at UMEM address `addr` gets: [`HEADROOM`],
/// or as much of it as lies in front of `addr` in its chunk (in aligned mode
/// the kernel receives at 256 bytes or more into a chunk, so all of it;
/// with less, the pipeline opens TUN's gap into the tailroom instead).
#[inline]
fn headroom_at(addr: u64) -> usize {
    ((addr - chunk_start(addr)) as usize).min(HEADROOM)
}

/// How many frames ahead of the one it processes the worker prefetches
/// packets: a received packet was written by the core that ran the
/// receive (in copy mode the kernel's copy; the NIC's DMA in zero copy), so
/// its first read misses this core's caches; enough misses in flight
/// to cover one while a frame or two is processed (about 100 ns each).
const PREFETCH_AHEAD: usize = 4;

/// Asks the CPU to bring the cache line at UMEM address `addr` in, the
/// first line of a received packet (its headers). A hint: it reads nothing
/// and faults on nothing, whatever the address.
#[inline(always)]
fn prefetch_packet(base: NonNull<u8>, addr: u64) {
    let p = base.as_ptr().wrapping_add(addr as usize);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch does not access memory as far as the program is
    // concerned: it cannot fault and changes no value.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// The bytes of the UMEM at `base` from address `addr` to the end of its
/// chunk.
///
/// # Safety
///
/// `base` must be the start of the worker's UMEM, `addr` inside it, and the
/// caller must own the chunk (on no ring, not lent out elsewhere) for as long
/// as it uses the slice.
#[inline]
unsafe fn chunk_bytes<'a>(base: NonNull<u8>, addr: u64) -> &'a mut [u8] {
    let end = chunk_start(addr) + u64::from(FRAME_SIZE);
    // SAFETY: the caller's contract: [addr, end) is inside the UMEM's one
    // mapping, which lives as long as the worker, and is the caller's alone.
    unsafe {
        std::slice::from_raw_parts_mut(base.as_ptr().add(addr as usize), (end - addr) as usize)
    }
}

impl WorkerStats {
    pub fn frames(&self) -> [u64; FRAME_PLACES.len()] {
        std::array::from_fn(|i| self.frames[i].load(Ordering::Relaxed))
    }

    pub fn xsk(&self) -> [u64; 4] {
        std::array::from_fn(|i| self.xsk[i].load(Ordering::Relaxed))
    }

    /// `free + fill + tx + held == total`: no frame lost.
    pub fn frames_conserved(&self) -> bool {
        frames_conserved(&self.frames())
    }

    /// The exit summary line of worker `index`.
    pub fn summary_line(&self, index: usize) -> String {
        summary_line(index, &self.counters.read(), &self.frames(), &self.xsk())
    }
}

/// What the control plane shares with every worker.
pub struct WorkerShared {
    pub stop: AtomicBool,
    pub snapshot: ArcSwap<Snapshot>,
}

struct PortSocket {
    /// For the file descriptor; consumed from only without `own`.
    rx: RxQueue,
    /// For the `sendto` kick; produced into only without `own`.
    tx: TxQueue,
    /// The worker's own consumer and producer of this socket's four rings,
    /// where the kernel lets a bound socket's rings be mapped (recent
    /// kernels); without them the worker goes through xsk-rs's queues, and frames
    /// are moved back to their descriptor's address before they are sent.
    own: Option<OwnRings>,
    /// Produced into only without `own`.
    fill: FillQueue,
    /// Consumed from only without `own`.
    comp: CompQueue,
    /// Frames this port's fill ring holds.
    in_fill: u64,
    /// Frames sent on this port not yet completed.
    in_tx: u64,
    /// The TX ring's frames not yet kicked.
    kick: TxKick,
}

/// The frames of one TX ring put there since its last kick (sendto()), and
/// when a kick is due: TX kick coalescing ([`TX_KICK_FRAMES`],
/// [`TX_KICK_AFTER`]).
#[derive(Clone, Copy, Debug)]
struct TxKick {
    waiting: u32,
    /// The start of the round that put the oldest of them there.
    since: Instant,
}

impl TxKick {
    fn new(now: Instant) -> TxKick {
        TxKick {
            waiting: 0,
            since: now,
        }
    }

    /// Counts `n` frames put on the ring in the round that started at `now`.
    fn add(&mut self, n: u32, now: Instant) {
        if n == 0 {
            return;
        }
        if self.waiting == 0 {
            self.since = now;
        }
        self.waiting = self.waiting.saturating_add(n);
    }

    /// Whether frames wait for a kick.
    fn any(&self) -> bool {
        self.waiting > 0
    }

    /// Whether the waiting frames are to be kicked in the round that
    /// started at `now`, `idle` if it brought no frame: once a call's worth
    /// waits, once nothing comes to join them, or once the oldest has
    /// waited [`TX_KICK_AFTER`].
    fn due(&self, now: Instant, idle: bool) -> bool {
        self.waiting > 0
            && (self.waiting >= TX_KICK_FRAMES
                || idle
                || now.saturating_duration_since(self.since) >= TX_KICK_AFTER)
    }

    /// The frames were kicked, or need no kick.
    fn clear(&mut self) {
        self.waiting = 0;
    }
}

/// One socket's rings, mapped by the worker ([`super::rings`], [`TxRing`]).
struct OwnRings {
    rx: RxRing,
    fill: FillRing,
    comp: CompRing,
    tx: TxRing,
}

impl OwnRings {
    fn map(fd: i32, size: u32) -> std::io::Result<OwnRings> {
        Ok(OwnRings {
            rx: RxRing::map(fd, size)?,
            fill: FillRing::map(fd, size)?,
            comp: CompRing::map(fd, size)?,
            tx: TxRing::map(fd, size)?,
        })
    }
}

impl PortSocket {
    fn needs_wakeup(&self) -> bool {
        match &self.own {
            Some(r) => r.tx.needs_wakeup(),
            None => self.tx.needs_wakeup(),
        }
    }

    fn tx_free_exact(&mut self) -> u32 {
        match &mut self.own {
            Some(r) => r.tx.free_exact(),
            None => self.tx.nb_free_exact(),
        }
    }
}

/// A processed frame on its way out (a TX list, the hold queue): where the
/// packet lies now in the UMEM (its first byte, inside the chunk it was
/// received in) and its length.
#[derive(Clone, Copy, Debug)]
struct OutFrame {
    addr: u64,
    len: u32,
}

/// The first byte of a worker's UMEM.
#[derive(Clone, Copy)]
struct UmemBase(NonNull<u8>);

// SAFETY: the UMEM is the worker's (its `Umem` handle moves with it), and
// the worker reaches frames through this pointer only while it owns them.
unsafe impl Send for UmemBase {}

/// A worker ready to run.
pub struct Worker {
    setup: WorkerSetup,
    umem: Umem,
    /// The UMEM's first byte: frames are reached from here by their
    /// address, `umem_len` bytes in all.
    base: UmemBase,
    umem_len: u64,
    ports: Vec<PortSocket>,
    /// Whether every port goes through its own rings (`PortSocket::own`).
    own: bool,
    /// For xsk-rs's queues (no own rings): each chunk's descriptor, by
    /// chunk index, as last received (at first, xsk-rs's own at the
    /// kernel's receive offset).
    chunks: Vec<FrameDesc>,
    /// Free chunks, by their first byte's address.
    free: Vec<u64>,
    /// Scratch descriptors for xsk-rs's queues.
    xsk_descs: Vec<FrameDesc>,
    /// Rewritten frames waiting for their next hop's MAC.
    held: HoldQueue<OutFrame>,
    held_sent: u64,
    total: u64,
    pipeline: Pipeline,
    /// Addresses whose next hop was missing, for the control plane to
    /// resolve, and the handle that wakes it to do so.
    resolve: crossbeam::channel::Sender<std::net::IpAddr>,
    wake: Waker,
    /// Where connection events go, if anyone listens (connection sync).
    conn_sink: Option<crossbeam::channel::Sender<Event>>,
    conn_events_dropped: u64,
}

impl Worker {
    /// Creates the UMEM and binds one socket per interface on `setup.queue`,
    /// registering each in that interface's steering program.
    pub fn new(
        setup: WorkerSetup,
        ifaces: &[String],
        programs: &[SteeringProgram],
        pipeline: Pipeline,
        (resolve, wake): (crossbeam::channel::Sender<std::net::IpAddr>, Waker),
    ) -> Result<Worker, WorkerError> {
        let ring = QueueSize::new(setup.ring_size).map_err(|e| WorkerError::Umem(e.to_string()))?;
        let umem_config = UmemConfig::builder()
            .frame_size(FrameSize::new(FRAME_SIZE).map_err(|e| WorkerError::Umem(e.to_string()))?)
            .fill_queue_size(ring)
            .comp_queue_size(ring)
            .build()
            .map_err(|e| WorkerError::Umem(e.to_string()))?;
        // Each port: a full fill ring, and as many again for frames in
        // flight on TX rings and in the worker's hands.
        let count = (ifaces.len() as u32 * setup.ring_size * 2).max(1);
        let count = NonZeroU32::new(count).ok_or_else(|| WorkerError::Umem("no frames".into()))?;
        let (umem, descs) =
            Umem::new(umem_config, count, false).map_err(|e| WorkerError::Umem(e.to_string()))?;
        let socket_config = SocketConfig::builder()
            .rx_queue_size(ring)
            .tx_queue_size(ring)
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            .bind_flags(BindFlags::XDP_USE_NEED_WAKEUP)
            .build();
        let mut ports = Vec::with_capacity(ifaces.len());
        for (iface, program) in ifaces.iter().zip(programs) {
            let err = |reason: String| WorkerError::Socket {
                iface: iface.clone(),
                queue: setup.queue,
                reason,
            };
            let name = iface
                .parse()
                .map_err(|_| err("bad interface name".into()))?;
            // SAFETY: xsk-rs requires XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD when a
            // shared UMEM binds an (interface, queue) pair twice; it is set
            // above. (Each pair is bound once anyway: this loop visits each
            // interface once, and the configuration refuses a queue named twice.)
            let (tx, rx, rings) = unsafe { Socket::new(socket_config, &umem, &name, setup.queue) }
                .map_err(|e| err(e.to_string()))?;
            let (fill, comp) = rings.ok_or_else(|| err("no fill/completion rings".into()))?;
            program
                .set_socket(setup.queue, rx.fd().as_raw_fd())
                .map_err(WorkerError::Steering)?;
            if let Some(budget) = setup.busy_poll {
                super::sys::prefer_busy_poll(rx.fd().as_raw_fd(), budget)
                    .map_err(|e| err(format!("busy poll: {e}")))?;
            }
            let own = match OwnRings::map(tx.fd().as_raw_fd(), setup.ring_size) {
                Ok(r) => Some(r),
                Err(e) => {
                    // (Not "worker N:" first: that starts the exit summary.)
                    tracing::warn!(
                        "cannot map the rings of {iface} for worker {} ({e}): they are used \
                         through xsk-rs, and frames that do not start at their descriptor are \
                         moved before they are sent",
                        setup.index
                    );
                    None
                }
            };
            ports.push(PortSocket {
                rx,
                tx,
                own,
                fill,
                comp,
                in_fill: 0,
                in_tx: 0,
                kick: TxKick::new(Instant::now()),
            });
        }
        // One way for all ports: the own rings on each, or none.
        let own = ports.iter().all(|p| p.own.is_some());
        if !own {
            for p in &mut ports {
                p.own = None;
            }
        }
        let total = descs.len() as u64;
        // SAFETY: a descriptor at address 0 names the UMEM's first chunk,
        // which no ring holds yet; only its start is taken. Every chunk is
        // then reached from this pointer (`chunk_bytes`), which relies on
        // xsk-rs's UMEM being one mapping, as xsk-rs documents and does
        // itself. The pointer comes from an empty slice, so this is outside
        // what Rust's provenance rules guarantee: xsk-rs gives no pointer to
        // its mapping, and mapping the UMEM ourselves would end the reliance.
        let base = unsafe { umem.data_mut(&mut FrameDesc::default()) }
            .contents_mut()
            .as_mut_ptr();
        let base = UmemBase(NonNull::new(base).ok_or_else(|| WorkerError::Umem("null".into()))?);
        let mut w = Worker {
            setup,
            umem,
            base,
            umem_len: total * u64::from(FRAME_SIZE),
            ports,
            own,
            free: descs.iter().map(|d| chunk_start(d.addr() as u64)).collect(),
            chunks: descs,
            xsk_descs: Vec::new(),
            held: HoldQueue::new(HOLD_FRAMES, HOLD_MS),
            held_sent: 0,
            total,
            pipeline,
            resolve,
            wake,
            conn_sink: None,
            conn_events_dropped: 0,
        };
        for p in 0..w.ports.len() {
            w.refill(p);
        }
        Ok(w)
    }

    /// Hands the pipeline's connection events (opened, changed, closed) to
    /// `sink`, switching them on: a bounded channel, sent to without
    /// blocking; what does not fit is counted (`conn_events_dropped`).
    pub fn with_conn_events(mut self, sink: crossbeam::channel::Sender<Event>) -> Worker {
        self.pipeline.set_conn_events(true);
        self.conn_sink = Some(sink);
        self
    }

    /// Runs until `shared.stop` is set.
    pub fn run(mut self, shared: &WorkerShared, stats: &WorkerStats) {
        if let Some(core) = self.setup.core {
            if !core_affinity::set_for_current(core) {
                tracing::warn!(
                    "worker {}: cannot pin to CPU {}; it runs unpinned",
                    self.setup.index,
                    core.id
                );
            }
        }
        let batch = self.setup.batch.max(64);
        let mut rx_descs = vec![RxDesc::default(); batch];
        // xsk-rs's queues' scratch descriptors (no own rings).
        let mut rx_xsk = vec![FrameDesc::default(); if self.own { 0 } else { batch }];
        let mut comp_descs = vec![
            FrameDesc::default();
            if self.own {
                0
            } else {
                self.setup.ring_size as usize
            }
        ];
        let mut tx_lists: Vec<Vec<OutFrame>> = (0..self.ports.len())
            .map(|_| Vec::with_capacity(batch * self.ports.len()))
            .collect();
        // The descriptors of a TX list, for xsk-rs's producer (no own ring).
        let mut tx_descs: Vec<FrameDesc> = Vec::with_capacity(batch * self.ports.len());
        let mut hist =
            Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds");
        let epoch = Instant::now();
        let mut published = epoch;
        let mut published_ms = Millis(0);
        // The start of the last round if it received frames: the next
        // round's start is its end, so each round reads the clock once.
        let mut busy_round: Option<Instant> = None;
        // Follows the shared configuration with one load per round instead
        // of ArcSwap's full protocol.
        let mut config = arc_swap::Cache::new(&shared.snapshot);
        let mut idle = 0u32;
        // The start of the last round that received frames.
        let mut last_rx = epoch;
        let mut tx_ring_full = 0u64;
        let mut bad_port = 0u64;
        while !shared.stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            if let Some(at) = busy_round.take() {
                let _ = hist.record(started.duration_since(at).as_nanos() as u64);
            }
            let now = Millis(started.duration_since(epoch).as_millis() as u64);
            let current = config.load();
            if !Arc::ptr_eq(current, self.pipeline.snapshot()) {
                self.pipeline.set_snapshot(Arc::clone(current));
                // A new snapshot may know the neighbours held frames wait for.
                self.release_held(&mut tx_lists);
            }
            self.expire_held(now);

            let mut received = 0usize;
            for p in 0..self.ports.len() {
                if self.setup.busy_poll.is_some() {
                    super::sys::busy_poll_once(self.ports[p].rx.fd().as_raw_fd());
                }
                let n = self.receive(p, &mut rx_descs, &mut rx_xsk);
                self.ports[p].in_fill -= n as u64;
                received += n;
                // A batch at a time: with `prefetch`, the connection entries
                // of its frames are brought into cache together first.
                for chunk in rx_descs[..n].chunks_mut(PREFETCH_BATCH) {
                    if self.setup.prefetch {
                        let base = self.base.0;
                        // Each frame's packet, after the headroom.
                        let frames = chunk.iter().map(|d| {
                            // SAFETY: the frame was just received on a ring of
                            // this UMEM (checked by `receive`): the kernel is
                            // done with it and only this worker reads it.
                            let data: &[u8] = unsafe { chunk_bytes(base, d.addr) };
                            &data[..(d.len as usize).min(data.len())]
                        });
                        self.pipeline.prefetch(frames);
                    }
                    let mut i = 0;
                    for d in chunk.iter().take(PREFETCH_AHEAD) {
                        prefetch_packet(self.base.0, d.addr);
                    }
                    while i < chunk.len() {
                        if let Some(d) = chunk.get(i + PREFETCH_AHEAD) {
                            prefetch_packet(self.base.0, d.addr);
                        }
                        let (verdict, out) = self.process(now, p as u8, chunk[i]);
                        self.dispatch(verdict, out, now, &mut tx_lists, &mut bad_port);
                        i += 1;
                    }
                }
            }
            for (p, list) in tx_lists.iter_mut().enumerate() {
                let port = &mut self.ports[p];
                if !list.is_empty() {
                    let sent = match &mut port.own {
                        Some(own) => {
                            debug_assert!(list.iter().all(|f| fits_chunk(
                                f.addr,
                                f.len,
                                FRAME_SIZE.into()
                            )));
                            // SAFETY: these frames came off rx rings of this UMEM,
                            // each inside its chunk (the pipeline's frame is
                            // bounded by the chunk's buffer), and are owned by
                            // the worker until their completion comes back.
                            unsafe { own.tx.produce(list.iter().map(|f| (f.addr, f.len))) }
                        }
                        None => {
                            // Without the own rings every frame was moved to
                            // its descriptor's address (`process`), whose
                            // descriptor `chunks` keeps.
                            tx_descs.clear();
                            for f in list.iter() {
                                let mut d = self.chunks[chunk_index(f.addr as usize)];
                                debug_assert_eq!(d.addr() as u64, f.addr);
                                // SAFETY: the worker owns the frame (off its rx
                                // ring, on no other): only its length is set.
                                unsafe { self.umem.data_mut(&mut d) }
                                    .cursor()
                                    .set_pos(f.len as usize);
                                tx_descs.push(d);
                            }
                            let room = port.tx.nb_free(list.len() as u32) as usize;
                            let k = room.min(list.len());
                            // SAFETY: as above.
                            unsafe { port.tx.produce(&tx_descs[..k]) }
                        }
                    };
                    port.in_tx += sent as u64;
                    tx_ring_full += (list.len() - sent) as u64;
                    for f in &list[sent..] {
                        self.free.push(chunk_start(f.addr));
                    }
                    list.clear();
                    port.kick.add(sent as u32, started);
                }
                if !port.kick.any() {
                    continue;
                }
                if !port.needs_wakeup() {
                    // The kernel sends these by itself (zero copy, its
                    // NAPI running): nothing waits on a kick.
                    port.kick.clear();
                } else if port.kick.due(started, received == 0) {
                    let _ = port.tx.wakeup();
                    port.kick.clear();
                }
            }
            let ring = self.setup.ring_size;
            for p in 0..self.ports.len() {
                let port = &mut self.ports[p];
                // In copy mode (veth, generic XDP) the kernel sends only
                // inside sendto(), at most 32 frames per call: after a kick,
                // kick again while it has not taken every descriptor, or
                // they sit in the TX ring until the next kick (latency) and
                // the ring fills at full rate (drops). Not while frames wait
                // unkicked on purpose (coalescing, above), nor for frames
                // the kernel took but has not completed yet: a kick does
                // not hurry those.
                for kick in 0..=TX_KICKS {
                    // A completion names the address the frame was sent
                    // from: the free list gets its chunk.
                    let free = &mut self.free;
                    let c = match &mut port.own {
                        Some(own) => own.comp.consume(|addr| free.push(chunk_start(addr))),
                        None => {
                            // SAFETY: every port's rings belong to this
                            // worker's one UMEM; comp_descs are scratch
                            // descriptors the ring overwrites.
                            let c = unsafe { port.comp.consume(&mut comp_descs) };
                            for d in &comp_descs[..c] {
                                free.push(chunk_start(d.addr() as u64));
                            }
                            c
                        }
                    };
                    port.in_tx -= c as u64;
                    if port.in_tx == 0
                        || kick == TX_KICKS
                        || port.kick.any()
                        || port.tx_free_exact() == ring
                        || !port.needs_wakeup()
                    {
                        break;
                    }
                    let _ = port.tx.wakeup();
                }
                self.refill(p);
            }
            self.pipeline.end_batch(now);
            self.hand_on_events();

            // Counters go out once a millisecond while busy, and on every
            // idle round, so that they are current whenever traffic pauses.
            if received == 0 || now != published_ms {
                self.publish(stats, tx_ring_full, bad_port);
                published_ms = now;
            }
            if received > 0 {
                idle = 0;
                last_rx = started;
                busy_round = Some(started);
            } else {
                idle += 1;
                if idle > IDLE_ROUNDS && started.duration_since(last_rx) >= IDLE_SPIN {
                    self.sleep_until_rx();
                }
            }
            if started.duration_since(published) >= HISTOGRAM_PUBLISH {
                self.publish_kernel_stats(stats);
                if let Ok(mut h) = stats.batch_ns.lock() {
                    let _ = h.add(&hist);
                }
                hist.reset();
                published = started;
            }
        }
        // Frames still waiting go back to the free list: nothing is sent now.
        let held: Vec<OutFrame> = self.held.drain().collect();
        self.pipeline.count_unresolved_drops(held.len() as u64);
        self.free.extend(held.iter().map(|f| chunk_start(f.addr)));
        self.publish(stats, tx_ring_full, bad_port);
        self.publish_kernel_stats(stats);
    }

    /// Puts a processed frame where its verdict says.
    fn dispatch(
        &mut self,
        verdict: Verdict,
        out: OutFrame,
        now: Millis,
        tx_lists: &mut [Vec<OutFrame>],
        bad_port: &mut u64,
    ) {
        let chunk = chunk_start(out.addr);
        match verdict {
            Verdict::Transmit { port } if usize::from(port) < tx_lists.len() => {
                tx_lists[usize::from(port)].push(out)
            }
            Verdict::Hold { port } if usize::from(port) < tx_lists.len() => {
                // Read before the next frame's `process`, which may hold
                // another: the frame's own next hop.
                let held = match self.pipeline.held_next_hop() {
                    Some(next_hop) => self.held.hold(out, port, next_hop, now).is_ok(),
                    None => false,
                };
                if !held {
                    self.free.push(chunk);
                    self.pipeline.count_unresolved_drops(1);
                }
            }
            Verdict::Transmit { .. } | Verdict::Hold { .. } => {
                *bad_port += 1;
                self.free.push(chunk);
            }
            Verdict::Drop(_) => self.free.push(chunk),
        }
    }

    /// Drains the pipeline's outbox, once per batch, without blocking:
    /// resolve requests to the control plane (a full channel only delays a
    /// resolution), connection events to their sink.
    fn hand_on_events(&mut self) {
        let mut asked = false;
        while let Some(event) = self.pipeline.poll_event() {
            match event {
                Event::Resolve(addr) => {
                    let _ = self.resolve.try_send(addr);
                    asked = true;
                }
                e => {
                    let sent = self
                        .conn_sink
                        .as_ref()
                        .is_some_and(|s| s.try_send(e).is_ok());
                    if !sent {
                        self.conn_events_dropped += 1;
                    }
                }
            }
        }
        if asked {
            self.wake.wake();
        }
    }

    /// Puts every held frame whose next hop the current snapshot resolves
    /// on its port's TX list, with the destination MAC it was waiting for.
    fn release_held(&mut self, tx_lists: &mut [Vec<OutFrame>]) {
        let (base, sent) = (self.base.0, &mut self.held_sent);
        self.held
            .release(&self.pipeline.snapshot().next_hops, |f, hop| {
                // SAFETY: a held frame came off an rx ring of this UMEM and has
                // been on no ring since: the worker alone holds it.
                let data = unsafe { chunk_bytes(base, f.addr) };
                if let Some(dst) = data.get_mut(..6) {
                    dst.copy_from_slice(&hop.dst_mac);
                }
                tx_lists[usize::from(hop.port)].push(f);
                *sent += 1;
            });
    }

    /// Drops the held frames that waited past the bound.
    fn expire_held(&mut self, now: Millis) {
        if self.held.is_empty() {
            return;
        }
        let (free, mut n) = (&mut self.free, 0u64);
        self.held.expire(now, |f| {
            free.push(chunk_start(f.addr));
            n += 1;
        });
        self.pipeline.count_unresolved_drops(n);
    }

    /// Takes up to `out.len()` received frames off port `p`'s RX ring into
    /// `out`; returns how many. `xsk` is scratch for xsk-rs's queue (no own
    /// rings), of `out`'s length.
    #[inline]
    fn receive(&mut self, p: usize, out: &mut [RxDesc], xsk: &mut [FrameDesc]) -> usize {
        let port = &mut self.ports[p];
        let n = match &mut port.own {
            Some(own) => own.rx.consume(out),
            None => {
                // SAFETY: every port's rings belong to this worker's one UMEM;
                // `xsk` are scratch descriptors the ring overwrites.
                let n = unsafe { port.rx.consume(xsk) };
                for (o, d) in out.iter_mut().zip(&xsk[..n]) {
                    // The descriptor xsk-rs sends this frame by.
                    self.chunks[chunk_index(d.addr())] = *d;
                    *o = RxDesc {
                        addr: d.addr() as u64,
                        len: d.lengths().data() as u32,
                    };
                }
                n
            }
        };
        // The kernel hands out only addresses of the UMEM it was given:
        // checked once here, since the frames' bytes are reached by them.
        for d in &out[..n] {
            assert!(d.addr < self.umem_len, "RX address outside the UMEM");
        }
        n
    }

    /// Runs one received frame through the pipeline, in place in the UMEM:
    /// up to [`HEADROOM`] bytes in front of the descriptor's address are the
    /// frame's headroom ([`headroom_at`]), the rest of its chunk its
    /// tailroom. Returns the verdict and where the frame lies now.
    #[inline]
    fn process(&mut self, now: Millis, port: u8, rx: RxDesc) -> (Verdict, OutFrame) {
        let head = headroom_at(rx.addr);
        let buf = rx.addr - head as u64;
        // SAFETY: the descriptor was just consumed from an rx ring of this
        // UMEM, its address inside it (`receive`): the kernel is done with
        // its chunk, which no one else holds, and `buf` is in the same chunk.
        let data = unsafe { chunk_bytes(self.base.0, buf) };
        let len = (rx.len as usize).min(data.len() - head);
        // The whole rest of the chunk is the frame's buffer, so that the
        // pipeline may grow the packet (TUN encapsulation, ICMP errors)
        // into the tailroom.
        let mut frame = Frame::new(data, head, len);
        let verdict = self.pipeline.process(now, port, &mut frame);
        let (mut start, flen) = (frame.start(), frame.len());
        let leaves = matches!(verdict, Verdict::Transmit { .. } | Verdict::Hold { .. });
        if leaves && start != head && !self.own {
            // xsk-rs sends from the descriptor's address only.
            // SAFETY: as above; `frame`, the other view of these bytes, is
            // no longer used.
            let data = unsafe { chunk_bytes(self.base.0, buf) };
            data.copy_within(start..start + flen, head);
            start = head;
        }
        let out = OutFrame {
            addr: buf + start as u64,
            len: flen as u32,
        };
        (verdict, out)
    }

    /// Gives the kernel free frames to receive into on port `p`.
    fn refill(&mut self, p: usize) {
        let port = &mut self.ports[p];
        let given = match &mut port.own {
            Some(own) => {
                // SAFETY: chunks on the free list belong to this UMEM and to
                // no ring; the ring takes them from the list's end.
                unsafe { own.fill.produce(&self.free) }
            }
            None => {
                let room = port.fill.nb_free(self.free.len() as u32) as usize;
                let k = room.min(self.free.len());
                if k == 0 {
                    return;
                }
                self.xsk_descs.clear();
                for &addr in &self.free[self.free.len() - k..] {
                    self.xsk_descs.push(self.chunks[chunk_index(addr as usize)]);
                }
                // SAFETY: frames on the free list belong to this UMEM and to
                // no ring.
                unsafe { port.fill.produce(&self.xsk_descs) }
            }
        };
        if given == 0 {
            return;
        }
        self.free.truncate(self.free.len() - given);
        port.in_fill += given as u64;
        let wake = match &port.own {
            Some(own) => own.fill.needs_wakeup(),
            None => port.fill.needs_wakeup(),
        };
        if wake {
            let _ = port.fill.wakeup(port.rx.fd_mut(), 0);
        }
    }

    /// Sleeps until a frame arrives on any port, or a short timeout: a
    /// millisecond while frames are held, since the snapshot that releases
    /// them wakes no socket.
    fn sleep_until_rx(&mut self) {
        let fds: Vec<i32> = self.ports.iter().map(|p| p.rx.fd().as_raw_fd()).collect();
        let timeout = if self.held.is_empty() {
            IDLE_POLL_MS
        } else {
            1
        };
        super::sys::poll_readable(&fds, timeout);
    }

    fn publish(&self, stats: &WorkerStats, tx_ring_full: u64, bad_port: u64) {
        let mut c = self.pipeline.stats().clone();
        c.tx += self.held_sent;
        c.held_sent = self.held_sent;
        c.tx_ring_full = tx_ring_full;
        c.bad_port = bad_port;
        c.conn_events_dropped = self.conn_events_dropped;
        stats.counters.publish(&c);
        let frames = [
            self.total,
            self.free.len() as u64,
            self.ports.iter().map(|p| p.in_fill).sum(),
            self.ports.iter().map(|p| p.in_tx).sum(),
            self.held.len() as u64,
        ];
        for (a, v) in stats.frames.iter().zip(frames) {
            a.store(v, Ordering::Relaxed);
        }
    }

    fn publish_kernel_stats(&self, stats: &WorkerStats) {
        let (mut dropped, mut full, mut empty, mut invalid) = (0, 0, 0, 0);
        for p in &self.ports {
            if let Ok(x) = p.rx.fd().xdp_statistics() {
                dropped += x.rx_dropped();
                full += x.rx_ring_full();
                empty += x.rx_fill_ring_empty_descs();
                invalid += x.rx_invalid_descs() + x.tx_invalid_descs();
            }
        }
        for (a, v) in stats.xsk.iter().zip([dropped, full, empty, invalid]) {
            a.store(v, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn a_frame_s_headroom_is_what_its_chunk_has_in_front_of_it() {
        let f = u64::from(FRAME_SIZE);
        for i in [0, 1, 4095] {
            // Where the kernel receives in aligned mode (256 bytes into the
            // chunk, or more with a UMEM headroom): the whole headroom.
            assert_eq!(headroom_at(i * f + 256), HEADROOM);
            assert_eq!(headroom_at(i * f + 320), HEADROOM);
            assert_eq!(headroom_at(i * f + HEADROOM as u64), HEADROOM);
            // Less in front: as much as there is, never the chunk before.
            assert_eq!(headroom_at(i * f + 20), 20);
            assert_eq!(headroom_at(i * f), 0);
        }
    }

    #[test]
    fn an_address_maps_to_its_chunk_s_index() {
        let f = FRAME_SIZE as usize;
        // What the kernel receives at (after its 256 bytes of XDP
        // headroom), where the headroom and TUN's frame start, and the
        // chunk's edges.
        for i in [0, 1, 7, 4095] {
            for off in [0, 256, 256 - HEADROOM, 256 - HEADROOM + 20, 256 + 20, f - 1] {
                assert_eq!(chunk_index(i * f + off), i, "chunk {i} offset {off}");
            }
        }
    }

    #[test]
    fn a_kick_waits_while_rounds_bring_frames_and_the_batch_is_short() {
        let t0 = Instant::now();
        let mut k = TxKick::new(t0);
        assert!(!k.any());
        assert!(!k.due(t0, true), "nothing waits: no kick even when idle");
        k.add(5, t0);
        assert!(k.any());
        assert!(!k.due(t0 + us(1), false));
        k.add(26, t0 + us(1));
        assert!(!k.due(t0 + us(2), false), "31 frames, still busy");
        k.add(1, t0 + us(2));
        assert!(k.due(t0 + us(2), false), "a call's worth waits");
        k.clear();
        assert!(!k.any());
        assert!(!k.due(t0 + us(3), true));
    }

    #[test]
    fn a_round_that_brings_nothing_kicks_what_waits() {
        let t0 = Instant::now();
        let mut k = TxKick::new(t0);
        k.add(1, t0);
        assert!(!k.due(t0, false));
        assert!(k.due(t0, true));
    }

    #[test]
    fn the_oldest_frame_bounds_the_wait() {
        let t0 = Instant::now();
        let mut k = TxKick::new(t0);
        k.add(0, t0);
        assert!(!k.any(), "adding nothing starts no wait");
        let t1 = t0 + us(7);
        k.add(1, t1);
        // Later frames do not move the oldest one's start.
        k.add(1, t1 + TX_KICK_AFTER / 2);
        assert!(!k.due(t1 + TX_KICK_AFTER - us(1), false));
        assert!(k.due(t1 + TX_KICK_AFTER, false));
        k.clear();
        // After a kick the next frame starts a new wait.
        let t2 = t1 + TX_KICK_AFTER * 3;
        k.add(1, t2);
        assert!(!k.due(t2 + us(1), false));
    }
}
