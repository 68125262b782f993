//! Safe AF_XDP sockets for the traffic generator and sink (`xvs-traffic`).
//!
//! - [`TxSocket`]: transmit only. Its own UMEM, bound without loading any
//!   XDP program (a generator receives nothing). Frames keep their bytes
//!   between uses, so a caller writes a template into every frame once
//!   ([`TxSocket::fill_all`]) and then patches a few fields per packet.
//! - [`RxSocket`]: receive only. Its own UMEM, bound with libxdp's default
//!   program, which redirects every frame of the queue to the socket.
//! - [`monotonic_ns`]: `CLOCK_MONOTONIC`, which every network namespace
//!   shares, so a send time written by one process is comparable with a
//!   receive time read by another.
//!
//! Neither socket shares its UMEM, and each frame is, at any time, in
//! exactly one place: the free list, a fill ring, an rx ring being read, or a
//! tx ring until its completion returns.

use std::num::NonZeroU32;

use xsk_rs::config::{BindFlags, FrameSize, LibxdpFlags, QueueSize, SocketConfig, UmemConfig};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

/// Bytes per UMEM frame: room for a 1500-byte frame and encapsulation.
pub const FRAME_SIZE: u32 = 4096;

/// Nanoseconds of `CLOCK_MONOTONIC`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out pointer for the call's duration;
    // CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// The kernel's counters for one socket.
#[derive(Clone, Copy, Debug, Default)]
pub struct XskCounters {
    pub rx_dropped: u64,
    pub rx_ring_full: u64,
    pub fill_ring_empty: u64,
    pub invalid_descs: u64,
}

fn umem(frames: u32, ring: u32) -> Result<(Umem, Vec<FrameDesc>, QueueSize), String> {
    let ring = QueueSize::new(ring).map_err(|e| format!("ring size: {e}"))?;
    let config = UmemConfig::builder()
        .frame_size(FrameSize::new(FRAME_SIZE).map_err(|e| e.to_string())?)
        .fill_queue_size(ring)
        .comp_queue_size(ring)
        .build()
        .map_err(|e| e.to_string())?;
    let count = NonZeroU32::new(frames).ok_or("no frames")?;
    let (umem, descs) = Umem::new(config, count, false)
        .map_err(|e| format!("UMEM: {e} (is the memlock limit too low? `ulimit -l`)"))?;
    Ok((umem, descs, ring))
}

type Rings = (TxQueue, RxQueue, FillQueue, CompQueue);

fn bind(
    umem: &Umem,
    ring: QueueSize,
    iface: &str,
    queue: u32,
    libxdp: LibxdpFlags,
) -> Result<Rings, String> {
    let config = SocketConfig::builder()
        .rx_queue_size(ring)
        .tx_queue_size(ring)
        .libxdp_flags(libxdp)
        .bind_flags(BindFlags::XDP_USE_NEED_WAKEUP)
        .build();
    let name = iface
        .parse()
        .map_err(|_| format!("bad interface name {iface:?}"))?;
    // SAFETY: the UMEM was created for this one socket and is not shared,
    // so the precondition about binding a shared UMEM twice does not apply.
    let (tx, rx, rings) = unsafe { Socket::new(config, umem, &name, queue) }.map_err(|e| {
        format!(
            "cannot bind an AF_XDP socket to {iface} queue {queue}: {e} \
             (needs root, a kernel with AF_XDP, and no other AF_XDP user on that queue)"
        )
    })?;
    let (fill, comp) = rings.ok_or("no fill/completion rings")?;
    Ok((tx, rx, fill, comp))
}

fn counters(rx: &RxQueue) -> XskCounters {
    match rx.fd().xdp_statistics() {
        Ok(x) => XskCounters {
            rx_dropped: x.rx_dropped(),
            rx_ring_full: x.rx_ring_full(),
            fill_ring_empty: x.rx_fill_ring_empty_descs(),
            invalid_descs: x.rx_invalid_descs() + x.tx_invalid_descs(),
        },
        Err(_) => XskCounters::default(),
    }
}

/// A transmit-only AF_XDP socket with its own UMEM.
pub struct TxSocket {
    umem: Umem,
    tx: TxQueue,
    comp: CompQueue,
    // Held so the socket stays bound; a generator never receives.
    _fill: FillQueue,
    rx: RxQueue,
    free: Vec<FrameDesc>,
    completions: Vec<FrameDesc>,
    in_flight: usize,
}

impl TxSocket {
    /// Binds queue `queue` of `iface` with `frames` frames and rings of `ring`
    /// entries, loading no XDP program.
    pub fn new(iface: &str, queue: u32, frames: u32, ring: u32) -> Result<TxSocket, String> {
        let (umem, free, size) = umem(frames, ring)?;
        let (tx, rx, fill, comp) = bind(
            &umem,
            size,
            iface,
            queue,
            LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD,
        )?;
        Ok(TxSocket {
            umem,
            tx,
            comp,
            _fill: fill,
            rx,
            free,
            completions: vec![FrameDesc::default(); ring as usize],
            in_flight: 0,
        })
    }

    /// Calls `write` once on every free frame's whole buffer.
    pub fn fill_all(&mut self, mut write: impl FnMut(&mut [u8])) {
        for d in self.free.iter_mut() {
            // SAFETY: a free frame belongs to this UMEM and to no ring.
            let mut data = unsafe { self.umem.data_mut(d) };
            let mut cursor = data.cursor();
            let cap = cursor.buf_len();
            cursor.set_pos(cap);
            write(data.contents_mut());
            data.cursor().set_pos(0);
        }
    }

    /// Takes back frames whose transmission completed.
    pub fn complete(&mut self) -> usize {
        // SAFETY: completions is scratch space the ring overwrites; the
        // frames it returns were sent by this socket and are ours again.
        let n = unsafe { self.comp.consume(&mut self.completions) };
        self.free.extend_from_slice(&self.completions[..n]);
        self.in_flight -= n;
        n
    }

    /// Sends up to `max` frames: `write` gets each frame's whole buffer
    /// (holding what was last written there) and returns the frame's
    /// length. Returns how many were queued; fewer when frames or ring
    /// room ran short.
    pub fn send(&mut self, max: usize, mut write: impl FnMut(&mut [u8]) -> usize) -> usize {
        self.complete();
        let want = max.min(self.free.len());
        let k = (self.tx.nb_free(want as u32) as usize).min(want);
        if k > 0 {
            let from = self.free.len() - k;
            for d in self.free[from..].iter_mut() {
                // SAFETY: a free frame belongs to this UMEM and to no ring.
                let mut data = unsafe { self.umem.data_mut(d) };
                let mut cursor = data.cursor();
                let cap = cursor.buf_len();
                cursor.set_pos(cap);
                let len = write(data.contents_mut()).min(cap);
                data.cursor().set_pos(len);
            }
            // SAFETY: these frames were free (no ring holds them) and belong
            // to this UMEM; they stay ours until their completion returns.
            let sent = unsafe { self.tx.produce(&self.free[from..]) };
            self.free.truncate(self.free.len() - sent);
            self.in_flight += sent;
        }
        // Copy mode sends only inside sendto(), a bounded batch per call.
        if self.in_flight > 0 {
            let _ = self.tx.wakeup();
        }
        k
    }

    /// Frames queued or being sent, not yet completed.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The kernel's counters for this socket.
    pub fn counters(&self) -> XskCounters {
        counters(&self.rx)
    }
}

/// A receive-only AF_XDP socket with its own UMEM, fed by libxdp's default
/// program (every frame of the queue).
pub struct RxSocket {
    umem: Umem,
    rx: RxQueue,
    fill: FillQueue,
    _tx: TxQueue,
    _comp: CompQueue,
    received: Vec<FrameDesc>,
    /// Frames not in the fill ring (normally none between calls).
    free: Vec<FrameDesc>,
}

impl RxSocket {
    /// Binds queue `queue` of `iface`; `batch` frames are read at a time.
    pub fn new(
        iface: &str,
        queue: u32,
        frames: u32,
        ring: u32,
        batch: usize,
    ) -> Result<RxSocket, String> {
        let (umem, free, size) = umem(frames, ring)?;
        let (tx, rx, fill, comp) = bind(&umem, size, iface, queue, LibxdpFlags::empty())?;
        let mut s = RxSocket {
            umem,
            rx,
            fill,
            _tx: tx,
            _comp: comp,
            received: vec![FrameDesc::default(); batch.max(1)],
            free,
        };
        s.refill();
        Ok(s)
    }

    fn refill(&mut self) {
        let k = (self.fill.nb_free(self.free.len() as u32) as usize).min(self.free.len());
        if k > 0 {
            let from = self.free.len() - k;
            // SAFETY: free frames belong to this UMEM and to no ring.
            let given = unsafe { self.fill.produce(&self.free[from..]) };
            self.free.truncate(self.free.len() - given);
        }
        if self.fill.needs_wakeup() {
            let _ = self.fill.wakeup(self.rx.fd_mut(), 0);
        }
    }

    /// Hands each received frame (up to one batch) to `read`, then gives
    /// the frames back to the kernel. Returns how many were read.
    pub fn recv(&mut self, mut read: impl FnMut(&[u8])) -> usize {
        // SAFETY: received is scratch space the ring overwrites.
        let n = unsafe { self.rx.consume(&mut self.received) };
        for d in &self.received[..n] {
            // SAFETY: the descriptor was just consumed from this socket's rx
            // ring: the kernel is done with the frame until it is refilled.
            let data = unsafe { self.umem.data(d) };
            read(data.contents());
        }
        self.free.extend_from_slice(&self.received[..n]);
        self.refill();
        n
    }

    /// Waits up to `timeout_ms` for a frame; true if one is ready.
    pub fn wait(&mut self, timeout_ms: i32) -> bool {
        self.rx.poll(timeout_ms).unwrap_or(false)
    }

    /// The kernel's counters for this socket.
    pub fn counters(&self) -> XskCounters {
        counters(&self.rx)
    }
}
