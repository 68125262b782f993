//! The Internet checksum: full computation and incremental update (RFC 1624).
//!
//! Rewrites never recompute a checksum over the payload: they adjust the stored
//! value by the difference between the old and the new bytes, which costs the
//! same for a 64-byte and a 9000-byte frame. Full computation is used where a
//! packet is built from scratch (ICMP errors, outer tunnel headers) and by tests.

/// One's complement sum of `data` as big-endian 16-bit words, added to `initial`,
/// folded to 16 bits (so that a few sums add up in a `u32` without a carry lost).
/// An odd trailing byte is padded with zero, as RFC 1071 says.
#[inline]
pub fn sum(data: &[u8], initial: u32) -> u32 {
    // The one's complement sum does not depend on byte order (RFC 1071
    // §2(B)): add the data as little-endian 32-bit words, which needs no
    // byte swap and no carry (the carries collect in the upper half of the
    // 64-bit sum; the loop vectorises), then swap the folded result once.
    let mut acc = 0u64;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    let mut pairs = rest.chunks_exact(2);
    for w in &mut pairs {
        acc += u64::from(u16::from_le_bytes([w[0], w[1]]));
    }
    if let [last] = pairs.remainder() {
        acc += u64::from(*last);
    }
    let le = fold(fold64(acc));
    u32::from(fold(fold64(
        u64::from(initial) + u64::from(le.swap_bytes()),
    )))
}

/// Folds a 64-bit one's complement sum to 32 bits with the end-around
/// carry: the upper half of `acc + acc.rotate_right(32)` is the two halves'
/// sum with its carry added back in.
#[inline]
pub fn fold64(acc: u64) -> u32 {
    (acc.wrapping_add(acc.rotate_right(32)) >> 32) as u32
}

/// Folds a 32-bit one's complement sum to 16 bits: 0 only for 0, otherwise
/// the representative in 1..=0xffff, as adding the halves with their
/// end-around carry until it fits gives. The upper half of `s +
/// s.rotate_right(16)` is that sum in one add (RFC 1071's fold, as a
/// rotate).
#[inline]
pub fn fold(s: u32) -> u16 {
    (s.wrapping_add(s.rotate_right(16)) >> 16) as u16
}

/// The checksum field value for data whose one's complement sum is `s`.
pub fn finish(s: u32) -> u16 {
    !fold(s)
}

/// Sum of the pseudo-header TCP, UDP (and ICMPv6) checksums cover, folded
/// to 16 bits.
pub fn pseudo_header_sum(src: &[u8], dst: &[u8], proto: u8, l4_len: u32) -> u32 {
    u32::from(fold(fold64(
        be_words(src) + be_words(dst) + pseudo_rest(proto, l4_len),
    )))
}

/// [`pseudo_header_sum`] over the address bytes as an IP header holds
/// them: source then destination, 8 bytes (IPv4) or 32 (IPv6).
#[inline]
pub fn pseudo_header_sum_of(addrs: &[u8], proto: u8, l4_len: u32) -> u32 {
    u32::from(fold(fold64(be_words(addrs) + pseudo_rest(proto, l4_len))))
}

#[inline]
fn pseudo_rest(proto: u8, l4_len: u32) -> u64 {
    u64::from(proto) + u64::from(l4_len >> 16) + u64::from(l4_len & 0xffff)
}

/// Big-endian 32-bit words of `data` (a multiple of 4 bytes long: addresses)
/// added up without folding; for the few fixed words of a pseudo-header,
/// where [`sum`]'s setup would cost more than the words.
#[inline]
fn be_words(data: &[u8]) -> u64 {
    data.chunks_exact(4)
        .map(|w| u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]])))
        .sum()
}

/// RFC 1624 eqn. 3: the new checksum after the 16-bit words `old` were replaced
/// by `new` (equal lengths, even): HC' = ~(~HC + ~m + m').
#[inline]
pub fn update(checksum: u16, old: &[u8], new: &[u8]) -> u16 {
    apply(checksum, delta(old, new))
}

/// The unfolded one's complement change of replacing the 16-bit words `old`
/// by `new`: Σ(~m + m'). Deltas add up, so one rewrite that changes several
/// fields computes each delta once and applies their sum to every checksum
/// that covers them.
#[inline]
pub fn delta(old: &[u8], new: &[u8]) -> u32 {
    debug_assert!(old.len() == new.len() && old.len() % 2 == 0);
    old.chunks_exact(2)
        .zip(new.chunks_exact(2))
        .map(|(o, n)| {
            u32::from(!u16::from_be_bytes([o[0], o[1]]))
                + u32::from(u16::from_be_bytes([n[0], n[1]]))
        })
        .sum()
}

/// [`delta`] of one 16-bit word.
#[inline]
pub fn delta_u16(old: u16, new: u16) -> u32 {
    u32::from(!old) + u32::from(new)
}

/// A checksum after a change whose [`delta`] is `d` (at most 2^15 words).
#[inline]
pub fn apply(checksum: u16, d: u32) -> u16 {
    !fold(u32::from(!checksum) + d)
}

/// [`update`] for a single 16-bit word.
#[inline]
pub fn update_u16(checksum: u16, old: u16, new: u16) -> u16 {
    apply(checksum, delta_u16(old, new))
}

/// Reads the 16-bit big-endian word at `at`.
#[inline]
pub fn read_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

/// Writes `v` big-endian at `at`.
#[inline]
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

    /// RFC 1071 word by word, the way it is written down.
    fn naive(data: &[u8], initial: u32) -> u16 {
        let mut s = u64::from(initial);
        for w in data.chunks(2) {
            s += u64::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
        }
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    proptest! {
        /// The wide-word sum equals the 16-bit one for any data, any length
        /// and start value (0 and 0xffff are the same one's complement
        /// number).
        #[test]
        fn sum_equals_rfc1071(
            data in proptest::collection::vec(any::<u8>(), 0..3000),
            initial in 0u32..0x4_0000,
        ) {
            let (a, b) = (fold(sum(&data, initial)), naive(&data, initial));
            prop_assert!(a == b || (a, b) == (0xffff, 0) || (a, b) == (0, 0xffff), "{a:04x} {b:04x}");
        }

        /// The rotate folds give what adding the halves with their carry
        /// until the value fits gives.
        #[test]
        fn folds_equal_repeated_addition(s in any::<u32>(), acc in any::<u64>()) {
            let mut t = u64::from(s);
            while t > 0xffff {
                t = (t & 0xffff) + (t >> 16);
            }
            prop_assert_eq!(u64::from(fold(s)), t);
            let mut t = acc;
            while t > 0xffff_ffff {
                t = (t & 0xffff_ffff) + (t >> 32);
            }
            prop_assert_eq!(u64::from(fold64(acc)), t);
        }

        #[test]
        fn sum_of_all_ones_words(len in 0usize..2000) {
            let data = vec![0xffu8; len];
            let (a, b) = (fold(sum(&data, 0xffff)), naive(&data, 0xffff));
            prop_assert!(a == b || (a, b) == (0xffff, 0) || (a, b) == (0, 0xffff));
        }

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
