//! The worker's own consumer of an AF_XDP socket's RX and completion rings
//! and its own producer of the fill and TX rings.
//!
//! xsk-rs hands every descriptor over as a `FrameDesc` copied out of the
//! ring through libxdp's helpers and an iterator, and takes fill entries the
//! same way: tens of instructions a frame that the worker does not need; and
//! it sends a frame only from the address it was received at. So the worker
//! maps each ring of a bound socket a second time (`XDP_MMAP_OFFSETS`, then
//! `mmap` at `XDP_PGOFF_RX_RING`, `XDP_PGOFF_TX_RING`,
//! `XDP_UMEM_PGOFF_FILL_RING`, `XDP_UMEM_PGOFF_COMPLETION_RING`) and reads
//! the descriptors straight into what it uses: an RX frame's address and
//! length, a completion's address.
//! xsk-rs's queues of such a socket are then never consumed from or
//! produced into (their cached positions would be stale), only used for
//! their file descriptor and wakeup calls.
//!
//! The ring protocol is the one of the kernel's AF_XDP documentation (and
//! libxdp's `xsk_ring_cons__*` / `xsk_ring_prod__*`): a consumer reads the
//! producer position with acquire ordering before it reads the entries up to
//! it, and hands the slots back with a release store of the consumer
//! position after it has read them; a producer reads the consumer position
//! with acquire ordering, writes entries, and publishes them with a release
//! store of the producer position. The `NEED_WAKEUP` flag is read relaxed.

use std::io;
use std::marker::PhantomData;
use std::os::raw::c_int;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// One received frame, as the RX ring names it: its address in the UMEM and
/// its length.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxDesc {
    pub addr: u64,
    pub len: u32,
}

/// Which ring of a socket to map.
#[derive(Clone, Copy, Debug)]
enum Which {
    Rx,
    Tx,
    Fill,
    Completion,
}

/// A ring of `T` entries, mapped by the worker.
struct Ring<T> {
    map: NonNull<libc::c_void>,
    map_len: usize,
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    entries: NonNull<T>,
    mask: u32,
    /// This side's own position (the consumer's or the producer's), as it
    /// last wrote it.
    cached_own: u32,
    /// The other side's position as last read: for a consumer the
    /// producer's; for a producer the consumer's plus the ring's size.
    cached_other: u32,
    _entries: PhantomData<T>,
}

// SAFETY: the mapping is owned by this value alone (no copy of its
// pointers escapes), so moving it to another thread moves the only access.
unsafe impl<T> Send for Ring<T> {}

impl<T> Ring<T> {
    fn map(fd: c_int, which: Which, size: u32) -> io::Result<Ring<T>> {
        if !size.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "ring size not a power of two",
            ));
        }
        // SAFETY: xdp_mmap_offsets is plain integers: all zeros is a value.
        let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        let mut optlen = std::mem::size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
        // SAFETY: `off` and `optlen` live across the call, and optlen says
        // how many bytes the kernel may write into `off`.
        let ret = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_XDP,
                libc::XDP_MMAP_OFFSETS,
                &mut off as *mut libc::xdp_mmap_offsets as *mut libc::c_void,
                &mut optlen,
            )
        };
        if ret != 0 {
            return Err(io::Error::last_os_error());
        }
        if optlen as usize != std::mem::size_of::<libc::xdp_mmap_offsets>() {
            // The layout without `flags` (Linux before 5.4): no NEED_WAKEUP.
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "no ring flags in XDP_MMAP_OFFSETS",
            ));
        }
        let (ring, pgoff) = match which {
            Which::Rx => (off.rx, libc::XDP_PGOFF_RX_RING),
            Which::Tx => (off.tx, libc::XDP_PGOFF_TX_RING),
            Which::Fill => (off.fr, libc::XDP_UMEM_PGOFF_FILL_RING as libc::off_t),
            Which::Completion => (off.cr, libc::XDP_UMEM_PGOFF_COMPLETION_RING as libc::off_t),
        };
        let map_len = ring.desc as usize + size as usize * std::mem::size_of::<T>();
        // SAFETY: a fresh shared mapping of one of the socket's rings; the
        // kernel checks the length against the ring's and the offset names it.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                pgoff,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let map = NonNull::new(map).ok_or_else(|| io::Error::other("mmap returned null"))?;
        let at = |o: u64| {
            // SAFETY: the kernel's offsets lie inside the mapping of
            // `map_len` bytes, which starts at the ring's page.
            unsafe { NonNull::new_unchecked(map.as_ptr().cast::<u8>().add(o as usize)) }
        };
        let mut r = Ring {
            map,
            map_len,
            producer: at(ring.producer).cast(),
            consumer: at(ring.consumer).cast(),
            flags: at(ring.flags).cast(),
            entries: at(ring.desc).cast(),
            mask: size - 1,
            cached_own: 0,
            cached_other: 0,
            _entries: PhantomData,
        };
        // Start from where the ring is: xsk-rs may have used it already.
        match which {
            Which::Rx | Which::Completion => {
                r.cached_own = r.consumer().load(Ordering::Relaxed);
                r.cached_other = r.producer().load(Ordering::Acquire);
            }
            Which::Tx | Which::Fill => {
                r.cached_own = r.producer().load(Ordering::Relaxed);
                r.cached_other = r.consumer().load(Ordering::Acquire).wrapping_add(size);
            }
        }
        Ok(r)
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: a naturally aligned u32 of the mapping, alive as long as
        // `self`, shared with the kernel.
        unsafe { self.producer.as_ref() }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { self.consumer.as_ref() }
    }

    fn needs_wakeup(&self) -> bool {
        // SAFETY: as for `producer`; the flags word is written by the kernel.
        let flags = unsafe { self.flags.as_ref() };
        flags.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    /// Consumer side: entries ready, at most `max`; reads the producer
    /// position only when the cached one shows fewer.
    #[inline]
    fn ready(&mut self, max: u32) -> u32 {
        let mut n = self.cached_other.wrapping_sub(self.cached_own);
        if n < max {
            self.cached_other = self.producer().load(Ordering::Acquire);
            n = self.cached_other.wrapping_sub(self.cached_own);
        }
        n.min(max)
    }

    /// Consumer side: the `i`th ready entry.
    ///
    /// # Safety
    ///
    /// `i` must be below what `ready` returned since the last `release`.
    #[inline]
    unsafe fn read(&self, i: u32) -> T {
        let slot = self.cached_own.wrapping_add(i) & self.mask;
        // SAFETY: slot <= mask, the mapping holds mask + 1 entries, and the
        // caller's entry lies before the producer position read with
        // acquire ordering: the kernel wrote it before publishing it, and
        // does not write it again before this side releases it.
        unsafe { self.entries.as_ptr().add(slot as usize).read() }
    }

    /// Consumer side: hands `n` read entries back to the kernel.
    #[inline]
    fn release(&mut self, n: u32) {
        if n > 0 {
            self.cached_own = self.cached_own.wrapping_add(n);
            self.consumer().store(self.cached_own, Ordering::Release);
        }
    }

    /// Producer side: free slots, at least `want` if that many are.
    #[inline]
    fn free(&mut self, want: u32) -> u32 {
        let free = self.cached_other.wrapping_sub(self.cached_own);
        if free >= want {
            return free;
        }
        self.cached_other = self
            .consumer()
            .load(Ordering::Acquire)
            .wrapping_add(self.mask + 1);
        self.cached_other.wrapping_sub(self.cached_own)
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // SAFETY: the mapping `map` of `map_len` bytes was made in `map` and
        // is unmapped once; no reference into it outlives `self`.
        unsafe { libc::munmap(self.map.as_ptr(), self.map_len) };
    }
}

/// One socket's RX ring, consumed by the worker alone.
pub struct RxRing(Ring<libc::xdp_desc>);

impl RxRing {
    /// Maps the RX ring of the bound AF_XDP socket `fd`, of `size`
    /// descriptors (its size at creation, a power of two).
    pub fn map(fd: c_int, size: u32) -> io::Result<RxRing> {
        Ring::map(fd, Which::Rx, size).map(RxRing)
    }

    /// Takes up to `out.len()` received frames off the ring into `out`, in
    /// order, and hands their slots back; returns how many.
    #[inline]
    pub fn consume(&mut self, out: &mut [RxDesc]) -> usize {
        let n = self.0.ready(out.len() as u32);
        let mut i = 0u32;
        while i < n {
            // SAFETY: i < n, what `ready` returned.
            let d = unsafe { self.0.read(i) };
            out[i as usize] = RxDesc {
                addr: d.addr,
                len: d.len,
            };
            i += 1;
        }
        self.0.release(n);
        n as usize
    }
}

/// One socket's completion ring, consumed by the worker alone.
pub struct CompRing(Ring<u64>);

impl CompRing {
    /// Maps the completion ring of the bound AF_XDP socket `fd`, of `size`
    /// entries (a power of two).
    pub fn map(fd: c_int, size: u32) -> io::Result<CompRing> {
        Ring::map(fd, Which::Completion, size).map(CompRing)
    }

    /// Takes every completion the ring holds, giving each address (the one
    /// the frame was sent from) to `done`, and hands the slots back;
    /// returns how many.
    #[inline]
    pub fn consume(&mut self, mut done: impl FnMut(u64)) -> usize {
        let n = self.0.ready(u32::MAX);
        let mut i = 0u32;
        while i < n {
            // SAFETY: i < n, what `ready` returned.
            done(unsafe { self.0.read(i) });
            i += 1;
        }
        self.0.release(n);
        n as usize
    }
}

/// One socket's fill ring, produced into by the worker alone.
pub struct FillRing(Ring<u64>);

impl FillRing {
    /// Maps the fill ring of the bound AF_XDP socket `fd`, of `size`
    /// entries (a power of two).
    pub fn map(fd: c_int, size: u32) -> io::Result<FillRing> {
        Ring::map(fd, Which::Fill, size).map(FillRing)
    }

    /// Puts as many of `addrs` (UMEM addresses of whole chunks) on the ring
    /// as it has room for, from the end of the slice backwards, and
    /// publishes them; returns how many (the last that many of `addrs`).
    ///
    /// # Safety
    ///
    /// Each address must name a chunk of the UMEM this socket is bound to
    /// that the caller owns and gives up: the kernel writes a received frame
    /// there, and nothing else may touch it until it comes back on the RX
    /// ring.
    #[inline]
    pub unsafe fn produce(&mut self, addrs: &[u64]) -> usize {
        let n = self.0.free(addrs.len() as u32).min(addrs.len() as u32);
        let from = addrs.len() - n as usize;
        let mut i = 0u32;
        while i < n {
            let slot = self.0.cached_own.wrapping_add(i) & self.0.mask;
            // SAFETY: slot <= mask, the mapping holds mask + 1 entries, and
            // the slots between the producer and consumer + size are this
            // side's until the producer store below publishes them.
            unsafe {
                self.0
                    .entries
                    .as_ptr()
                    .add(slot as usize)
                    .write(addrs[from + i as usize])
            };
            i += 1;
        }
        if n > 0 {
            self.0.cached_own = self.0.cached_own.wrapping_add(n);
            self.0
                .producer()
                .store(self.0.cached_own, Ordering::Release);
        }
        n as usize
    }

    /// Whether the kernel asks for a wakeup to use the entries it has.
    #[inline]
    pub fn needs_wakeup(&self) -> bool {
        self.0.needs_wakeup()
    }
}

/// One socket's TX ring, produced into by the worker alone: it sends a
/// frame from wherever it starts in its chunk (TUN grows it into the
/// headroom), which xsk-rs's `TxQueue` cannot, since it sends a descriptor
/// only at the address it was received at. In aligned mode the kernel
/// takes a TX descriptor anywhere in its chunk as long as `addr + len`
/// stays inside it ([`super::txring::fits_chunk`]).
pub struct TxRing(Ring<libc::xdp_desc>);

impl TxRing {
    /// Maps the TX ring of the bound AF_XDP socket `fd`, of `size`
    /// descriptors (a power of two). Fails where the kernel refuses to map
    /// a bound socket's ring (older kernels) or the offsets cannot be read.
    pub fn map(fd: c_int, size: u32) -> io::Result<TxRing> {
        Ring::map(fd, Which::Tx, size).map(TxRing)
    }

    /// Free slots as of now.
    #[inline]
    pub fn free_exact(&mut self) -> u32 {
        self.0.free(u32::MAX)
    }

    /// Puts as many of `frames` (address, length) on the ring as it has
    /// room for, in order, and publishes them; returns how many.
    ///
    /// # Safety
    ///
    /// Each frame must lie inside one chunk of the UMEM this socket is
    /// bound to, and be owned by the caller until its completion returns:
    /// the kernel reads it, and nothing else may write it meanwhile.
    #[inline]
    pub unsafe fn produce(&mut self, frames: impl ExactSizeIterator<Item = (u64, u32)>) -> usize {
        let n = self.0.free(frames.len() as u32).min(frames.len() as u32);
        if n == 0 {
            return 0;
        }
        for (i, (addr, len)) in frames.take(n as usize).enumerate() {
            let slot = self.0.cached_own.wrapping_add(i as u32) & self.0.mask;
            // SAFETY: slot <= mask, the mapping holds mask + 1 descriptors,
            // and the slots between the producer and consumer + size are
            // this side's until the producer store below publishes them.
            unsafe {
                self.0
                    .entries
                    .as_ptr()
                    .add(slot as usize)
                    .write(libc::xdp_desc {
                        addr,
                        len,
                        options: 0,
                    })
            };
        }
        self.0.cached_own = self.0.cached_own.wrapping_add(n);
        self.0
            .producer()
            .store(self.0.cached_own, Ordering::Release);
        n as usize
    }

    /// Whether the kernel asks for a `sendto` kick to send what waits.
    #[inline]
    pub fn needs_wakeup(&self) -> bool {
        self.0.needs_wakeup()
    }
}
