//! The Internet checksum: full computation and incremental update (RFC 1624).
//!
//! Rewrites never recompute a checksum over the payload: they adjust the stored
//! value by the difference between the old and the new bytes, which costs the
//! same for a 64-byte and a 9000-byte frame. Full computation is used where a
//! packet is built from scratch (ICMP errors, outer tunnel headers) and by tests.

/// One's complement sum of `data` as big-endian 16-bit words, added to `initial`.
/// An odd trailing byte is padded with zero, as RFC 1071 says.
pub fn sum(data: &[u8], initial: u32) -> u32 {
    let mut acc = u64::from(initial);
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        // Four words at a time; the carries land in the upper bits of `acc`.
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]))
            + u64::from(u16::from_be_bytes([c[2], c[3]]))
            + u64::from(u16::from_be_bytes([c[4], c[5]]))
            + u64::from(u16::from_be_bytes([c[6], c[7]]));
    }
    let rest = chunks.remainder();
    let mut words = rest.chunks_exact(2);
    for w in &mut words {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u64::from(u16::from_be_bytes([*last, 0]));
    }
    fold64(acc)
}

fn fold64(mut acc: u64) -> u32 {
    while acc > 0xffff_ffff {
        acc = (acc & 0xffff_ffff) + (acc >> 32);
    }
    acc as u32
}

/// Folds a 32-bit one's complement sum to 16 bits.
pub fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// The checksum field value for data whose one's complement sum is `s`.
pub fn finish(s: u32) -> u16 {
    !fold(s)
}

/// Sum of the pseudo-header TCP, UDP (and ICMPv6) checksums cover.
pub fn pseudo_header_sum(src: &[u8], dst: &[u8], proto: u8, l4_len: u32) -> u32 {
    let s = sum(src, 0);
    let s = sum(dst, s);
    s + u32::from(proto) + (l4_len >> 16) + (l4_len & 0xffff)
}

/// RFC 1624 eqn. 3: the new checksum after the 16-bit words `old` were replaced
/// by `new` (equal lengths, even): HC' = ~(~HC + ~m + m').
pub fn update(checksum: u16, old: &[u8], new: &[u8]) -> u16 {
    debug_assert!(old.len() == new.len() && old.len() % 2 == 0);
    let mut acc = u32::from(!checksum);
    for (o, n) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
        acc += u32::from(!u16::from_be_bytes([o[0], o[1]]))
            + u32::from(u16::from_be_bytes([n[0], n[1]]));
    }
    !fold(acc)
}

/// [`update`] for a single 16-bit word.
pub fn update_u16(checksum: u16, old: u16, new: u16) -> u16 {
    let acc = u32::from(!checksum) + u32::from(!old) + u32::from(new);
    !fold(acc)
}

/// Reads the 16-bit big-endian word at `at`.
pub fn read_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

/// Writes `v` big-endian at `at`.
pub fn write_u16(buf: &mut [u8], at: usize, v: u16) {
    buf[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 1071's worked example: words 0001 f203 f4f5 f6f7 sum to ddf2.
    #[test]
    fn rfc1071_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data, 0)), 0xddf2);
        assert_eq!(finish(sum(&data, 0)), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(fold(sum(&[0x12, 0x34, 0x56], 0)), 0x1234 + 0x5600);
    }

    #[test]
    fn incremental_update_matches_recomputation() {
        let mut data: Vec<u8> = (0u8..40).map(|b| b.wrapping_mul(37)).collect();
        let before = finish(sum(&data, 0));
        let old: [u8; 4] = data[12..16].try_into().unwrap();
        let new = [203, 0, 113, 99];
        data[12..16].copy_from_slice(&new);
        let after = finish(sum(&data, 0));
        let incremental = update(before, &old, &new);
        // +0 and -0 are the same one's complement number.
        assert!(incremental == after || (incremental ^ after) == 0xffff && after % 0xffff == 0);
        assert_eq!(update_u16(before, read_u16(&old, 0), read_u16(&new, 0)), {
            let mut d2 = data.clone();
            d2[12..16].copy_from_slice(&old);
            d2[12..14].copy_from_slice(&new[..2]);
            finish(sum(&d2, 0))
        });
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Rewriting any aligned words and updating incrementally gives a
        /// checksum that verifies, whatever the data.
        #[test]
        fn incremental_equals_full(
            mut data in proptest::collection::vec(any::<u8>(), 20..200),
            at in 0usize..8,
            new in proptest::array::uniform16(any::<u8>()),
        ) {
            let at = at * 2;
            let len = 16.min(data.len() - at) & !1;
            let before = finish(sum(&data, 0));
            let old = data[at..at + len].to_vec();
            data[at..at + len].copy_from_slice(&new[..len]);
            let c = update(before, &old, &new[..len]);
            // The data with its checksum appended sums to all ones (-0).
            let mut with = data.clone();
            if with.len() % 2 == 1 { with.push(0); }
            with.extend_from_slice(&c.to_be_bytes());
            prop_assert_eq!(fold(sum(&with, 0)), 0xffff);
        }
    }
}
