//! In-place header rewrites with incremental checksum updates.
//!
//! Every function here takes a frame and the [`Parsed`] offsets of that same
//! frame, so all indexing is within bounds that parsing established. IPv4
//! header checksums and TCP/UDP checksums (whose pseudo-header covers the
//! addresses) are adjusted by RFC 1624, never recomputed over the payload.

use std::net::IpAddr;

use super::checksum::{self, read_u16, write_u16};
use super::parse::{IpVersion, Parsed, Quoted, Transport, V4Flow, FLOW_HEADERS};
use super::L4Proto;

/// An Ethernet MAC address.
pub type MacAddr = [u8; 6];

/// Which end of a packet a rewrite changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Src,
    Dst,
}

/// The new address is of the other IP family than the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FamilyMismatch;

/// Sets the Ethernet source and destination MACs. Taken by reference: each
/// is copied from where it lies (a 4- and a 2-byte move), not assembled in
/// a register first.
#[inline]
pub fn set_macs(frame: &mut [u8], src: &MacAddr, dst: &MacAddr) {
    // One bounds check for the twelve bytes.
    let macs: &mut [u8; 12] = (&mut frame[..12]).try_into().unwrap();
    macs[..6].copy_from_slice(dst);
    macs[6..].copy_from_slice(src);
}

/// The destination then the source MAC, as the first 12 bytes of an
/// Ethernet header hold them: what a rewrite toward a next hop writes
/// there, made once where the hop is known in advance (a real server's
/// path in the snapshot), so that each frame gets one 12-byte copy (an 8-
/// and a 4-byte move) instead of two 6-byte ones.
pub type EthAddrs = [u8; 12];

/// `dst` then `src`, as an Ethernet header holds them.
#[inline]
pub fn eth_addrs(src: &MacAddr, dst: &MacAddr) -> EthAddrs {
    let mut macs = [0; 12];
    set_macs(&mut macs, src, dst);
    macs
}

/// Sets the Ethernet destination and source MACs to `macs`. A frame
/// shorter than the two (never one that was parsed) is left as it is.
#[inline(always)]
pub fn set_eth_addrs(frame: &mut [u8], macs: &EthAddrs) {
    if let Some(h) = frame.first_chunk_mut::<12>() {
        *h = *macs;
    }
}

/// Decrements the IPv4 TTL (fixing the header checksum) or the IPv6 hop limit.
/// Returns false, changing nothing, if the packet must not be forwarded (TTL ≤ 1).
#[inline]
pub fn decrement_ttl(frame: &mut [u8], p: &Parsed) -> bool {
    if p.ttl <= 1 {
        return false;
    }
    match p.version {
        IpVersion::V4 => {
            // TTL shares its 16-bit word with the protocol byte.
            let at = p.l3 + 8;
            let old = read_u16(frame, at);
            let new = old - 0x0100;
            write_u16(frame, at, new);
            let c = checksum::update_u16(read_u16(frame, p.l3 + 10), old, new);
            write_u16(frame, p.l3 + 10, c);
        }
        IpVersion::V6 => frame[p.l3 + 7] -= 1,
    }
    true
}

/// Offset and length of an address field in an IP header at `l3`.
fn addr_field(version: IpVersion, l3: usize, side: Side) -> (usize, usize) {
    match (version, side) {
        (IpVersion::V4, Side::Src) => (l3 + 12, 4),
        (IpVersion::V4, Side::Dst) => (l3 + 16, 4),
        (IpVersion::V6, Side::Src) => (l3 + 8, 16),
        (IpVersion::V6, Side::Dst) => (l3 + 24, 16),
    }
}

/// Where the checksum of a transport header at `l4` sits, for checksums that
/// cover the IP pseudo-header. ICMPv4's does not, so it is not listed.
fn pseudo_checksum_field(proto: L4Proto, l4: usize) -> Option<usize> {
    match proto {
        L4Proto::Tcp => Some(l4 + 16),
        L4Proto::Udp => Some(l4 + 6),
        L4Proto::Icmpv6 => Some(l4 + 2),
        L4Proto::Icmp => None,
    }
}

/// NAT's rewrite of the IP and transport headers of a TCP or UDP packet
/// routed on: the TTL (or hop limit) decremented and one end's address and
/// port replaced (the caller sets the MACs toward the next hop, from
/// wherever it holds them). Each checksum is updated once: the IPv4
/// header's by the TTL and address deltas together, the transport's by the
/// address and port deltas together. An IPv4 UDP checksum of zero (none
/// sent) stays zero, and a computed UDP checksum of zero is sent as 0xffff
/// (RFC 768).
///
/// The deltas are taken over words in the frame's own byte order and
/// applied to checksums read and written the same way (RFC 1071 §2(B),
/// RFC 1624 alike): no byte swaps but the new port's. The TTL's delta is a
/// constant, since the caller has checked that it may be decremented
/// (`p.ttl > 1`, see [`decrement_ttl`]); a packet that is not TCP or UDP
/// is left as it is.
#[inline(always)]
pub fn route_endpoint(
    frame: &mut [u8],
    p: &Parsed,
    side: Side,
    addr: IpAddr,
    port: u16,
) -> Result<(), FamilyMismatch> {
    let (csum_at, hdr_len, udp) = match p.transport {
        Transport::Tcp { .. } => (16, 18, false),
        Transport::Udp => (6, 8, true),
        _ => return Ok(()),
    };
    debug_assert!(p.ttl > 1);
    let (head, seg) = frame.split_at_mut(p.l4);
    let seg = &mut seg[..hdr_len];
    let d_addr = match (p.version, addr) {
        (IpVersion::V4, IpAddr::V4(a)) => {
            let ip: &mut [u8; 20] = (&mut head[p.l3..p.l3 + 20]).try_into().unwrap();
            let at = if side == Side::Src { 12 } else { 16 };
            let new = u32::from_ne_bytes(a.octets());
            let old = u32::from_ne_bytes([ip[at], ip[at + 1], ip[at + 2], ip[at + 3]]);
            ip[at..at + 4].copy_from_slice(&new.to_ne_bytes());
            let d_addr = add1c(!old, new);
            ip[8] -= 1;
            let c = u16::from_ne_bytes([ip[10], ip[11]]);
            ip[10..12].copy_from_slice(&apply_ne(c, d_addr, D_TTL).to_ne_bytes());
            d_addr
        }
        (IpVersion::V6, IpAddr::V6(a)) => {
            let ip: &mut [u8; 40] = (&mut head[p.l3..p.l3 + 40]).try_into().unwrap();
            let at = if side == Side::Src { 8 } else { 24 };
            let new = a.octets();
            let mut d_addr = 0u32;
            for i in (0..16).step_by(4) {
                let o = &ip[at + i..at + i + 4];
                let old = u32::from_ne_bytes([o[0], o[1], o[2], o[3]]);
                let n = u32::from_ne_bytes([new[i], new[i + 1], new[i + 2], new[i + 3]]);
                d_addr = add1c(add1c(d_addr, !old), n);
            }
            ip[at..at + 16].copy_from_slice(&new);
            ip[7] -= 1;
            d_addr
        }
        _ => return Err(FamilyMismatch),
    };
    let port_at = if side == Side::Src { 0 } else { 2 };
    let old_port = ne16(seg, port_at);
    let new_port = u16::from_ne_bytes(port.to_be_bytes());
    seg[port_at..port_at + 2].copy_from_slice(&new_port.to_ne_bytes());
    let c = ne16(seg, csum_at);
    // IPv4 UDP without checksum; IPv6 zero checksums never get this far.
    if udp && c == 0 {
        return Ok(());
    }
    let d_port = u32::from(!old_port) + u32::from(new_port);
    let mut n = apply_ne(c, d_addr, d_port);
    // 0 and 0xffff are their own byte swaps.
    if udp && n == 0 {
        n = 0xffff;
    }
    seg[csum_at..csum_at + 2].copy_from_slice(&n.to_ne_bytes());
    Ok(())
}

/// [`route_endpoint`] for the fast path's frame `f` (see [`V4Flow`]): the
/// same bytes, written at constant offsets of the frame's first
/// [`FLOW_HEADERS`] bytes. The caller has checked that the TTL may be
/// decremented (`f.ttl(frame) > 1`). A frame shorter than the headers (not one
/// `f` was parsed from) is left as it is.
#[inline(always)]
pub fn route_endpoint_v4(
    frame: &mut [u8],
    f: &V4Flow,
    side: Side,
    addr: std::net::Ipv4Addr,
    port: u16,
) {
    // Chosen once for the whole rewrite: each protocol's checksum offset
    // and zero-checksum rules are constants in its own copy.
    if f.is_udp() {
        route_endpoint_v4_of::<true>(frame, side, addr, port);
    } else {
        route_endpoint_v4_of::<false>(frame, side, addr, port);
    }
}

/// [`route_endpoint_v4`] of a UDP (`UDP`) or TCP packet.
#[inline(always)]
fn route_endpoint_v4_of<const UDP: bool>(
    frame: &mut [u8],
    side: Side,
    addr: std::net::Ipv4Addr,
    port: u16,
) {
    const L3: usize = 14;
    const L4: usize = L3 + 20;
    let Some(h) = frame.first_chunk_mut::<FLOW_HEADERS>() else {
        return;
    };
    debug_assert!(h[L3 + 8] > 1);
    let csum_at = L4 + if UDP { 6 } else { 16 };
    let at = L3 + if side == Side::Src { 12 } else { 16 };
    let new = u32::from_ne_bytes(addr.octets());
    let old = u32::from_ne_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    h[at..at + 4].copy_from_slice(&new.to_ne_bytes());
    let d_addr = add1c(!old, new);
    h[L3 + 8] -= 1;
    let c = u16::from_ne_bytes([h[L3 + 10], h[L3 + 11]]);
    h[L3 + 10..L3 + 12].copy_from_slice(&apply_ne(c, d_addr, D_TTL).to_ne_bytes());
    let port_at = L4 + if side == Side::Src { 0 } else { 2 };
    let old_port = u16::from_ne_bytes([h[port_at], h[port_at + 1]]);
    let new_port = u16::from_ne_bytes(port.to_be_bytes());
    h[port_at..port_at + 2].copy_from_slice(&new_port.to_ne_bytes());
    let c = u16::from_ne_bytes([h[csum_at], h[csum_at + 1]]);
    // IPv4 UDP without checksum.
    if UDP && c == 0 {
        return;
    }
    let d_port = u32::from(!old_port) + u32::from(new_port);
    let mut n = apply_ne(c, d_addr, d_port);
    // 0 and 0xffff are their own byte swaps.
    if UDP && n == 0 {
        n = 0xffff;
    }
    h[csum_at..csum_at + 2].copy_from_slice(&n.to_ne_bytes());
}

/// The TTL is the first byte of its 16-bit word: one less is this
/// constant change of the word, in native order.
const D_TTL: u32 = !u16::from_ne_bytes([1, 0]) as u32;

/// One's complement sum of two 32-bit words: the add's carry added back
/// in (an `add` and an `adc`), so that a delta of 32-bit words stays in
/// 32 bits and needs no 64-bit fold. 0 only for 0 and 0.
#[inline(always)]
fn add1c(a: u32, b: u32) -> u32 {
    let (s, carry) = a.overflowing_add(b);
    // No second carry: with one, `s` is at most 0xffff_fffe.
    s + u32::from(carry)
}

/// A checksum after a change whose one's complement delta is `d` (32-bit
/// words, see [`add1c`]) plus `small` (a few 16-bit words' delta, under
/// 2^31), all in the checksum's byte order.
#[inline(always)]
fn apply_ne(checksum: u16, d: u32, small: u32) -> u16 {
    !checksum::fold(add1c(d, u32::from(!checksum) + small))
}

/// Rewrites only the address of one end, for packets without ports (the outer
/// header of an ICMP error). The ICMP checksum is left to the caller.
pub fn rewrite_addr(
    frame: &mut [u8],
    p: &Parsed,
    side: Side,
    addr: IpAddr,
) -> Result<(), FamilyMismatch> {
    set_addr(frame, p.version, p.l3, side, addr, None, L4Proto::Icmp)
}

/// Rewrites one end of the packet an ICMP error quotes: its IP header
/// checksum, and its transport checksum when the quote is long enough to hold
/// it. The outer ICMP checksum is left to the caller ([`fix_icmp_checksum`]).
pub fn rewrite_quoted_endpoint(
    frame: &mut [u8],
    p: &Parsed,
    q: &Quoted,
    side: Side,
    addr: IpAddr,
    port: u16,
) -> Result<(), FamilyMismatch> {
    let csum_at = pseudo_checksum_field(q.proto, q.l4()).filter(|at| at + 2 <= q.l4() + q.l4_len());
    let port_at = q.l4() + if side == Side::Src { 0 } else { 2 };
    set_endpoint(
        frame,
        p.version,
        q.l3(),
        side,
        addr,
        port_at,
        port,
        csum_at,
        q.proto,
    )
}

/// Recomputes the ICMP (or ICMPv6, with its pseudo-header) checksum of an
/// error message from scratch; errors are rare and short, and their quoted
/// part changed in several places.
pub fn fix_icmp_checksum(frame: &mut [u8], p: &Parsed) {
    let at = p.l4 + 2;
    write_u16(frame, at, 0);
    let seg = &frame[p.l4..p.ip_end()];
    let initial = match p.version {
        IpVersion::V4 => 0,
        IpVersion::V6 => checksum::pseudo_header_sum(
            &frame[p.l3 + 8..p.l3 + 24],
            &frame[p.l3 + 24..p.l3 + 40],
            L4Proto::Icmpv6.number(),
            seg.len() as u32,
        ),
    };
    let c = checksum::finish(checksum::sum(seg, initial));
    write_u16(frame, at, c);
}

/// Writes an address, adjusting the IPv4 header checksum and the transport
/// checksum at `csum_at` (if any).
fn set_addr(
    frame: &mut [u8],
    version: IpVersion,
    l3: usize,
    side: Side,
    addr: IpAddr,
    csum_at: Option<usize>,
    proto: L4Proto,
) -> Result<(), FamilyMismatch> {
    let d = swap_addr(frame, version, l3, side, addr)?;
    if let Some(c_at) = csum_at {
        adjust_transport_checksum(frame, c_at, proto, d);
    }
    Ok(())
}

/// Writes an address and a port: one delta for the address, applied to the
/// IPv4 header checksum, and the address and port deltas together applied to
/// the transport checksum at `csum_at` (when present).
#[allow(clippy::too_many_arguments)]
#[inline]
fn set_endpoint(
    frame: &mut [u8],
    version: IpVersion,
    l3: usize,
    side: Side,
    addr: IpAddr,
    port_at: usize,
    port: u16,
    csum_at: Option<usize>,
    proto: L4Proto,
) -> Result<(), FamilyMismatch> {
    let d_addr = swap_addr(frame, version, l3, side, addr)?;
    let old_port = read_u16(frame, port_at);
    write_u16(frame, port_at, port);
    if let Some(c_at) = csum_at {
        adjust_transport_checksum(
            frame,
            c_at,
            proto,
            d_addr + checksum::delta_u16(old_port, port),
        );
    }
    Ok(())
}

/// Writes the address field and fixes the IPv4 header checksum; returns the
/// delta of the change for the checksums that cover the pseudo-header.
#[inline]
fn swap_addr(
    frame: &mut [u8],
    version: IpVersion,
    l3: usize,
    side: Side,
    addr: IpAddr,
) -> Result<u32, FamilyMismatch> {
    let (at, len) = addr_field(version, l3, side);
    let d = match (version, addr) {
        (IpVersion::V4, IpAddr::V4(a)) => {
            let new = a.octets();
            let d = checksum::delta(&frame[at..at + 4], &new);
            frame[at..at + 4].copy_from_slice(&new);
            let c = checksum::apply(read_u16(frame, l3 + 10), d);
            write_u16(frame, l3 + 10, c);
            d
        }
        (IpVersion::V6, IpAddr::V6(a)) => {
            let new = a.octets();
            let d = checksum::delta(&frame[at..at + len], &new);
            frame[at..at + len].copy_from_slice(&new);
            d
        }
        _ => return Err(FamilyMismatch),
    };
    Ok(d)
}

#[inline]
fn adjust_transport_checksum(frame: &mut [u8], at: usize, proto: L4Proto, d: u32) {
    let c = read_u16(frame, at);
    if proto == L4Proto::Udp && c == 0 {
        // IPv4 UDP without checksum; IPv6 zero checksums never get this far.
        return;
    }
    let mut n = checksum::apply(c, d);
    if proto == L4Proto::Udp && n == 0 {
        n = 0xffff;
    }
    write_u16(frame, at, n);
}

/// Completes a TCP or UDP checksum that a sender's checksum offload left
/// partial, and says whether it did.
///
/// A Linux sender whose device offloads checksums (veth by default, most
/// container and VM interfaces) stores only the folded pseudo-header sum in
/// the field and marks the skb `CHECKSUM_PARTIAL` for the device to finish.
/// XDP and AF_XDP see the bytes without that mark, so a forwarder that sends
/// them on as they are delivers a checksum every receiver rejects. A field
/// equal to the packet's own pseudo-header sum is that state; the packet's
/// sum is then taken once over the segment, and unless the field already
/// verifies as a full checksum (a 1-in-65536 coincidence) the finished value
/// is written. Any other field, a genuinely bad checksum among them, is left
/// as it is. Fragments are left too: their payload is not all here, and a
/// sender never leaves a fragmented datagram's checksum partial.
///
/// Only the pseudo-header sum is computed for a packet that needs nothing:
/// from the address words in the frame's own byte order (RFC 1071 §2(B):
/// the sum of native words is the byte swap of the sum of big-endian ones,
/// so it is compared with the field read the same way), with one bounds
/// check for the header and one for the field.
#[inline(always)]
pub fn complete_partial_checksum(frame: &mut [u8], p: &Parsed) -> bool {
    let (at, proto) = match p.transport {
        Transport::Tcp { .. } => (p.l4 + 16, 6u8),
        Transport::Udp => (p.l4 + 6, 17u8),
        _ => return false,
    };
    if p.first_fragment {
        return false;
    }
    let end = p.ip_end();
    let Some(len) = end.checked_sub(p.l4) else {
        return false;
    };
    // Protocol and length as one big-endian word pair, in native order.
    let rest = u64::from((u32::from(proto) + len as u32).to_be());
    let words = match p.version {
        IpVersion::V4 => {
            let Some(ip) = frame.get(p.l3..p.l3 + 20) else {
                return false;
            };
            ne32(ip, 12) + ne32(ip, 16)
        }
        IpVersion::V6 => {
            let Some(ip) = frame.get(p.l3..p.l3 + 40) else {
                return false;
            };
            (8..40).step_by(4).map(|i| ne32(ip, i)).sum()
        }
    };
    let Some(field) = frame.get(at..at + 2) else {
        return false;
    };
    let stored = u16::from_ne_bytes([field[0], field[1]]);
    if stored != checksum::fold(checksum::fold64(words + rest)) {
        return false;
    }
    let addrs = match p.version {
        IpVersion::V4 => p.l3 + 12..p.l3 + 20,
        IpVersion::V6 => p.l3 + 8..p.l3 + 40,
    };
    complete(frame, addrs, p.l4..end, at, proto)
}

/// [`complete_partial_checksum`] for the fast path's frame `f` (see
/// [`V4Flow`]): the pseudo-header sum from the address words at their
/// constant offsets and the length `f` carries, compared with the field
/// read the same way; the completion is the general one's.
#[inline(always)]
pub fn complete_partial_checksum_v4(frame: &mut [u8], f: &V4Flow) -> bool {
    // Chosen once: each protocol's field offset and number are constants
    // in its own copy (the number folds into the length's add).
    if f.is_udp() {
        complete_partial_checksum_v4_of::<true>(frame, f.ip_len)
    } else {
        complete_partial_checksum_v4_of::<false>(frame, f.ip_len)
    }
}

/// [`complete_partial_checksum_v4`] of a UDP (`UDP`) or TCP packet of IP
/// length `ip_len`.
#[inline(always)]
fn complete_partial_checksum_v4_of<const UDP: bool>(frame: &mut [u8], ip_len: u16) -> bool {
    const L4: usize = 34;
    let Some(h) = frame.first_chunk::<FLOW_HEADERS>() else {
        return false;
    };
    let (at, proto) = if UDP { (L4 + 6, 17u8) } else { (L4 + 16, 6u8) };
    // The IP length covers the header and the transport header.
    let len = usize::from(ip_len) - 20;
    let rest = u64::from((u32::from(proto) + len as u32).to_be());
    let words = ne32(h, 26) + ne32(h, 30);
    let stored = u16::from_ne_bytes([h[at], h[at + 1]]);
    if stored != checksum::fold(checksum::fold64(words + rest)) {
        return false;
    }
    complete(frame, 26..34, L4..L4 + len, at, proto)
}

/// [`complete_partial_checksum`] once the field at `at` holds the
/// pseudo-header sum of the addresses at `addrs`, `proto` and the length
/// of the segment at `seg`.
#[cold]
#[inline(never)]
fn complete(
    frame: &mut [u8],
    addrs: std::ops::Range<usize>,
    seg: std::ops::Range<usize>,
    at: usize,
    proto: u8,
) -> bool {
    let len = seg.len();
    let pseudo = checksum::pseudo_header_sum_of(&frame[addrs], proto, len as u32);
    // The field holds the pseudo-header sum, so the segment's own sum
    // (field included) is already pseudo-header + segment.
    let Some(segment) = frame.get(seg).map(|s| checksum::sum(s, 0)) else {
        return false;
    };
    if checksum::fold(segment + pseudo) == 0xffff {
        return false;
    }
    let mut c = checksum::finish(segment);
    if proto == 17 && c == 0 {
        c = 0xffff;
    }
    write_u16(frame, at, c);
    true
}

/// The 16-bit word at `at` of `b`, in native byte order, after one bounds
/// check.
#[inline(always)]
fn ne16(b: &[u8], at: usize) -> u16 {
    let w: &[u8; 2] = b[at..at + 2].try_into().unwrap();
    u16::from_ne_bytes(*w)
}

/// The 32-bit word at `at` of `b`, in native byte order.
#[inline(always)]
fn ne32(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]))
}

/// The UDP checksum field of a parsed UDP packet.
pub fn udp_checksum(frame: &[u8], p: &Parsed) -> u16 {
    read_u16(frame, p.l4 + 6)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: MacAddr = [0x02, 0, 0, 0, 0, 0x01];
    const DST: MacAddr = [0x02, 0, 0, 0, 0, 0x02];

    /// The 32-bit update gives the checksum the 64-bit sum folded twice
    /// gives, 0 and 0xffff alike.
    #[test]
    fn the_32_bit_update_is_the_64_bit_one() {
        let old = |c: u16, d: u64| !checksum::fold(checksum::fold64(u64::from(!c) + d));
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let edges = [0, 1, 0xffff, 0xfffe, 0xffff_ffff, 0x8000_0000];
        for i in 0..20_000 {
            let r = next();
            let (mut a, mut b) = (r as u32, (r >> 32) as u32);
            if i < 36 {
                (a, b) = (edges[i / 6], edges[i % 6]);
            }
            let c = next() as u16;
            let small = u32::from(next() as u16) + u32::from(next() as u16);
            assert_eq!(
                apply_ne(c, add1c(!a, b), small),
                old(c, u64::from(!a) + u64::from(b) + u64::from(small)),
                "{a:#x} {b:#x} {c:#x} {small:#x}"
            );
        }
    }

    #[test]
    fn eth_addrs_lie_as_the_ethernet_header_holds_them() {
        let macs = eth_addrs(&SRC, &DST);
        assert_eq!(&macs[..6], &DST);
        assert_eq!(&macs[6..], &SRC);
    }

    #[test]
    fn set_eth_addrs_writes_what_set_macs_writes() {
        let mut a = [0xaa; 20];
        let mut b = a;
        set_macs(&mut a, &SRC, &DST);
        set_eth_addrs(&mut b, &eth_addrs(&SRC, &DST));
        assert_eq!(a, b);
        // A frame too short for the two is left as it is.
        let mut short = [0xaa; 11];
        set_eth_addrs(&mut short, &eth_addrs(&SRC, &DST));
        assert_eq!(short, [0xaa; 11]);
    }
}
