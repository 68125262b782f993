//! The address arithmetic of aligned UMEM chunks, for the worker's own TX
//! ring producer ([`super::rings::TxRing`]): a frame the pipeline grew into
//! its headroom (TUN's outer header) or shrank at the front
//! (decapsulation) starts elsewhere in its chunk, and is sent from there.

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
