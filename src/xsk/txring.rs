//! The worker's own producer of an AF_XDP socket's TX ring, and the
//! address arithmetic of aligned UMEM chunks.
//!
//! xsk-rs's `TxQueue` sends a descriptor at the address its `FrameDesc`
//! was received at, and a `FrameDesc`'s address cannot be changed. A frame
//! the pipeline grew into its headroom (TUN's outer header) or shrank at the
//! front (decapsulation) starts elsewhere in its chunk, so the worker maps the
//! socket's TX ring a second time ([`TxRing::map`]: `XDP_MMAP_OFFSETS`, then
//! `mmap` at `XDP_PGOFF_TX_RING`) and produces into it itself, at any
//! address inside the frame's chunk: in aligned mode the kernel takes a TX
//! descriptor anywhere in its chunk as long as `addr + len` stays inside it.
//! xsk-rs's `TxQueue` of that socket is then never used to produce (its
//! cached positions would be stale), only for the `sendto` kick.
//!
//! The ring protocol is the one of the kernel's AF_XDP documentation (and
//! libxdp's `xsk_ring_prod__*`): the producer reads the consumer position
//! with acquire ordering to learn which slots the kernel is done with,
//! writes the descriptors, then publishes them with a release store of the
//! producer position; the `NEED_WAKEUP` flag is read relaxed.

use std::io;
use std::os::raw::c_int;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// The chunk an address inside a UMEM of `chunk`-byte chunks (aligned
/// mode: a power of two) belongs to, as the chunk's first byte.
#[inline]
pub fn chunk_base(addr: u64, chunk: u64) -> u64 {
    debug_assert!(chunk.is_power_of_two());
    addr & !(chunk - 1)
}

/// Whether `len` bytes at `addr` lie inside one chunk: what the kernel
/// accepts as a TX descriptor in aligned mode (and a non-empty one).
#[inline]
pub fn fits_chunk(addr: u64, len: u32, chunk: u64) -> bool {
    len > 0 && (addr & (chunk - 1)) + u64::from(len) <= chunk
}

/// One socket's TX ring, mapped by the worker and produced into by it alone.
pub struct TxRing {
    map: NonNull<libc::c_void>,
    map_len: usize,
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    descs: NonNull<libc::xdp_desc>,
    size: u32,
    /// The producer position as this side last wrote it.
    cached_prod: u32,
    /// The consumer position as last read, plus `size`: slots up to it are
    /// free.
    cached_cons: u32,
}

// SAFETY: the mapping is owned by this value alone (no copy of its
// pointers escapes), so moving it to another thread moves the only access.
unsafe impl Send for TxRing {}

impl TxRing {
    /// Maps the TX ring of the bound AF_XDP socket `fd`, of `size`
    /// descriptors (the size it was created with, a power of two). Fails
    /// where the kernel refuses to map a bound socket's ring (before Linux
    /// 6.5) or the offsets cannot be read.
    pub fn map(fd: c_int, size: u32) -> io::Result<TxRing> {
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
        let tx = off.tx;
        let desc_len = size as usize * std::mem::size_of::<libc::xdp_desc>();
        let map_len = tx.desc as usize + desc_len;
        // SAFETY: a fresh shared mapping of the socket's TX ring; the kernel
        // checks the length against the ring's and the offset names it.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                libc::XDP_PGOFF_TX_RING,
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
        let mut ring = TxRing {
            map,
            map_len,
            producer: at(tx.producer).cast(),
            consumer: at(tx.consumer).cast(),
            flags: at(tx.flags).cast(),
            descs: at(tx.desc).cast(),
            size,
            cached_prod: 0,
            cached_cons: 0,
        };
        // Nothing has produced into this ring yet, but start from where it is.
        ring.cached_prod = ring.producer().load(Ordering::Relaxed);
        ring.cached_cons = ring.consumer().load(Ordering::Acquire).wrapping_add(size);
        Ok(ring)
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: a naturally aligned u32 of the mapping, alive as long as
        // `self`, written by this side only and read by the kernel.
        unsafe { self.producer.as_ref() }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`; written by the kernel.
        unsafe { self.consumer.as_ref() }
    }

    /// Free slots, at least `want` if that many are: reads the kernel's
    /// consumer position only when the cached one shows fewer.
    #[inline]
    pub fn free(&mut self, want: u32) -> u32 {
        let free = self.cached_cons.wrapping_sub(self.cached_prod);
        if free >= want {
            return free;
        }
        self.free_exact()
    }

    /// Free slots as of now.
    #[inline]
    pub fn free_exact(&mut self) -> u32 {
        self.cached_cons = self
            .consumer()
            .load(Ordering::Acquire)
            .wrapping_add(self.size);
        self.cached_cons.wrapping_sub(self.cached_prod)
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
        let n = self.free(frames.len() as u32).min(frames.len() as u32);
        if n == 0 {
            return 0;
        }
        let mask = self.size - 1;
        for (i, (addr, len)) in frames.take(n as usize).enumerate() {
            let slot = self.cached_prod.wrapping_add(i as u32) & mask;
            // SAFETY: slot < size, the mapping holds `size` descriptors, and
            // the slots between the producer and consumer + size are this
            // side's until the producer store below publishes them.
            unsafe {
                self.descs
                    .as_ptr()
                    .add(slot as usize)
                    .write(libc::xdp_desc {
                        addr,
                        len,
                        options: 0,
                    })
            };
        }
        self.cached_prod = self.cached_prod.wrapping_add(n);
        self.producer().store(self.cached_prod, Ordering::Release);
        n as usize
    }

    /// Whether the kernel asks for a `sendto` kick to send what waits.
    #[inline]
    pub fn needs_wakeup(&self) -> bool {
        // SAFETY: as for `producer`; the flags word is written by the kernel.
        let flags = unsafe { self.flags.as_ref() };
        flags.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }
}

impl Drop for TxRing {
    fn drop(&mut self) {
        // SAFETY: the mapping `map` of `map_len` bytes was made in `map` and
        // is unmapped once; no reference into it outlives `self`.
        unsafe { libc::munmap(self.map.as_ptr(), self.map_len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_maps_to_its_chunk() {
        let c = 4096;
        assert_eq!(chunk_base(0, c), 0);
        assert_eq!(chunk_base(256, c), 0);
        assert_eq!(chunk_base(4095, c), 0);
        assert_eq!(chunk_base(4096, c), 4096);
        assert_eq!(chunk_base(3 * 4096 + 236, c), 3 * 4096);
        assert_eq!(chunk_base(3 * 4096 + 256 + 64, c), 3 * 4096);
    }

    #[test]
    fn a_descriptor_fits_its_chunk_or_not() {
        let c = 4096;
        assert!(fits_chunk(4096 + 192, 64, c));
        assert!(fits_chunk(4096, 4096, c), "the whole chunk");
        assert!(fits_chunk(4096 + 4095, 1, c), "its last byte");
        assert!(!fits_chunk(4096 + 4095, 2, c), "one byte into the next");
        assert!(!fits_chunk(4096 + 256, 0, c), "empty");
        assert!(!fits_chunk(0, 4097, c));
    }
}
