//! IP-in-IP encapsulation for LVS/TUN: IPv4 in IPv4 (protocol 4) and IPv6 in
//! IPv6 (next header 41), and its inverse, run by real servers.
//!
//! The outer header: source the director's tunnel address, destination the
//! real server, TTL / hop limit 64, TOS / traffic class copied from the inner
//! packet (RFC 6040's normal mode for ECN), DF copied from the inner IPv4
//! packet. IPv4 identification: 0 when DF is set (an atomic datagram, RFC 6864
//! §4.1); otherwise the caller's per-worker counter, since a non-DF outer
//! packet may be fragmented on the way. The IPv6 flow label is a hash of the
//! inner addresses and ports (RFC 6438), so ECMP on the path keeps a flow on
//! one path while spreading flows.

use std::net::{IpAddr, Ipv4Addr};

use super::checksum::{self, write_u16};
use super::frame::{Frame, NoRoom};
use super::parse::{IpVersion, Parsed, V4Flow, ETH_HEADER_LEN};

pub const IPV4_HEADER_LEN: usize = 20;
pub const IPV6_HEADER_LEN: usize = 40;
/// IP protocol number of IPv4-in-IP.
pub const PROTO_IPIP: u8 = 4;
/// IP protocol number of IPv6-in-IP.
pub const PROTO_IPV6: u8 = 41;
const OUTER_TTL: u8 = 64;

/// Why a packet could not be encapsulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncapError {
    NoRoom,
    /// Outer addresses of another family than the inner packet.
    FamilyMismatch,
}

impl From<NoRoom> for EncapError {
    fn from(_: NoRoom) -> EncapError {
        EncapError::NoRoom
    }
}

/// Bytes the outer header adds to a packet of this version.
pub fn overhead(version: IpVersion) -> usize {
    match version {
        IpVersion::V4 => IPV4_HEADER_LEN,
        IpVersion::V6 => IPV6_HEADER_LEN,
    }
}

/// Wraps the IP packet of `frame` (parsed as `p`) in an outer header from
/// `src` to `dst`. Ethernet padding after the IP packet is dropped; the
/// Ethernet header and VLAN tags stay in front.
#[inline(always)]
pub fn encapsulate(
    frame: &mut Frame<'_>,
    p: &Parsed,
    src: IpAddr,
    dst: IpAddr,
    ip_id: u16,
) -> Result<(), EncapError> {
    let n = overhead(p.version);
    match (p.version, src, dst) {
        (IpVersion::V4, IpAddr::V4(_), IpAddr::V4(_))
        | (IpVersion::V6, IpAddr::V6(_), IpAddr::V6(_)) => {}
        _ => return Err(EncapError::FamilyMismatch),
    }
    frame.truncate(p.ip_end());
    frame.insert_gap(p.l3, n)?;
    let d = frame.data_mut();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(t)) => {
            // Written as native 16- and 32-bit words at constant offsets
            // after one bounds check (the outer header and the inner one's
            // TOS byte), and summed from those words (RFC 1071 2(B)): the
            // constant ones fold away.
            let h: &mut [u8; IPV4_HEADER_LEN + 2] = (&mut d[p.l3..p.l3 + IPV4_HEADER_LEN + 2])
                .try_into()
                .unwrap();
            let df = p.dont_fragment;
            let (id, frag) = if df { (0, 0x4000u16) } else { (ip_id, 0) };
            let words = [
                u16::from_ne_bytes([0x45, h[IPV4_HEADER_LEN + 1]]),
                ((n + p.ip_len) as u16).to_be(),
                id.to_be(),
                frag.to_be(),
                u16::from_ne_bytes([OUTER_TTL, PROTO_IPIP]),
            ];
            let (s, t) = (s.octets(), t.octets());
            let sum = u64::from(u32::from_ne_bytes(s))
                + u64::from(u32::from_ne_bytes(t))
                + words.iter().map(|&w| u64::from(w)).sum::<u64>();
            for (i, w) in words.iter().enumerate() {
                h[2 * i..2 * i + 2].copy_from_slice(&w.to_ne_bytes());
            }
            let c = !checksum::fold(checksum::fold64(sum));
            h[10..12].copy_from_slice(&c.to_ne_bytes());
            h[12..16].copy_from_slice(&s);
            h[16..20].copy_from_slice(&t);
        }
        (IpAddr::V6(s), IpAddr::V6(t)) => {
            let (outer, inner) = d[p.l3..].split_at_mut(n);
            let traffic_class = (inner[0] << 4) | (inner[1] >> 4);
            let label = flow_label(p, inner);
            outer[0] = 0x60 | (traffic_class >> 4);
            outer[1] = (traffic_class << 4) | ((label >> 16) as u8 & 0x0f);
            write_u16(outer, 2, label as u16);
            write_u16(outer, 4, p.ip_len as u16);
            outer[6] = PROTO_IPV6;
            outer[7] = OUTER_TTL;
            outer[8..24].copy_from_slice(&s.octets());
            outer[24..40].copy_from_slice(&t.octets());
        }
        _ => unreachable!("families checked above"),
    }
    Ok(())
}

/// The outer IPv4 header toward one real server, what of it does not
/// depend on the packet: the addresses, and the one's complement sum of
/// the constant words (TTL and protocol, the addresses; version and IHL
/// are summed with the TOS per packet, being in the same word). Built once
/// per snapshot, so that a packet's header is five word stores and a sum
/// of its TOS, length, ID and DF words (RFC 1071 2(B): in native order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outer4 {
    /// Source then destination, as they lie in the header.
    addrs: [u8; 8],
    /// Native-order sum of the TTL/protocol word and the addresses, folded
    /// to 32 bits.
    sum: u32,
}

impl Outer4 {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr) -> Outer4 {
        let (s, t) = (src.octets(), dst.octets());
        let sum = u64::from(u32::from_ne_bytes([OUTER_TTL, PROTO_IPIP, 0, 0]))
            + u64::from(u32::from_ne_bytes(s))
            + u64::from(u32::from_ne_bytes(t));
        Outer4 {
            addrs: [s[0], s[1], s[2], s[3], t[0], t[1], t[2], t[3]],
            sum: checksum::fold64(sum),
        }
    }
}

/// What [`encapsulate4`] reads of the IPv4 packet it wraps: where its
/// header starts in the frame, its total length and its DF bit. The fast
/// path's [`V4Flow`] gives it without a [`Parsed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inner4 {
    /// Offset of the IPv4 header in the frame.
    pub l3: usize,
    /// The IPv4 total length.
    pub ip_len: usize,
    pub dont_fragment: bool,
}

impl Inner4 {
    /// The IPv4 packet `p`; `None` for IPv6.
    #[inline(always)]
    pub fn of(p: &Parsed) -> Option<Inner4> {
        (p.version == IpVersion::V4).then_some(Inner4 {
            l3: p.l3,
            ip_len: p.ip_len,
            dont_fragment: p.dont_fragment,
        })
    }

    /// The fast path's packet `f` in `frame`, the frame it was parsed
    /// from, behind an untagged Ethernet header.
    #[inline(always)]
    pub fn of_flow(f: &V4Flow, frame: &[u8]) -> Inner4 {
        Inner4 {
            l3: ETH_HEADER_LEN,
            ip_len: usize::from(f.ip_len),
            dont_fragment: f.dont_fragment(frame),
        }
    }
}

/// [`encapsulate`] of the IPv4 packet `p` with the outer header from
/// `outer`: the same header, byte for byte. Returns the frame's bytes, for
/// the caller's Ethernet header. Fails with [`NoRoom`] only where
/// `encapsulate` does, before the frame changes.
#[inline(always)]
pub fn encapsulate4<'f>(
    frame: &'f mut Frame<'_>,
    p: Inner4,
    outer: &Outer4,
    ip_id: u16,
) -> Result<&'f mut [u8], NoRoom> {
    let d = frame.open_front_gap(p.l3 + p.ip_len, p.l3, IPV4_HEADER_LEN)?;
    // The outer header and the inner one's TOS byte, checked against the
    // move's bounds (never short: the inner packet has a header).
    let Some(h) = d
        .get_mut(p.l3..)
        .and_then(|h| h.first_chunk_mut::<{ IPV4_HEADER_LEN + 2 }>())
    else {
        return Err(NoRoom);
    };
    let len = ((IPV4_HEADER_LEN + p.ip_len) as u16).to_be_bytes();
    let w0 = u32::from_ne_bytes([0x45, h[IPV4_HEADER_LEN + 1], len[0], len[1]]);
    let w1 = if p.dont_fragment {
        u32::from_ne_bytes([0, 0, 0x40, 0])
    } else {
        let id = ip_id.to_be_bytes();
        u32::from_ne_bytes([id[0], id[1], 0, 0])
    };
    let sum = u64::from(outer.sum) + u64::from(w0) + u64::from(w1);
    let c = (!checksum::fold(checksum::fold64(sum))).to_ne_bytes();
    h[0..4].copy_from_slice(&w0.to_ne_bytes());
    h[4..8].copy_from_slice(&w1.to_ne_bytes());
    h[8..12].copy_from_slice(&[OUTER_TTL, PROTO_IPIP, c[0], c[1]]);
    h[12..20].copy_from_slice(&outer.addrs);
    Ok(d)
}

/// RFC 6438 flow label: a hash of the inner addresses and ports, 20 bits, never 0.
fn flow_label(p: &Parsed, inner: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in &inner[8..40] {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    h = (h ^ (u32::from(p.sport) << 16 | u32::from(p.dport))).wrapping_mul(0x0100_0193);
    let label = (h ^ (h >> 20)) & 0x000f_ffff;
    label.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::parse::{parse, ParseError};
    use crate::pipeline::testnet::{self, verify_checksums, Pkt, SYN};

    /// Why a frame could not be decapsulated.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum DecapError {
        /// Not an IP-in-IP packet; it is left as it was.
        NotTunnelled,
        /// The outer or inner packet is malformed.
        Malformed(ParseError),
    }

    /// What a TUN real server does (`tools/ipip-decap` as an XDP program): strips
    /// the outer IP header in place, keeping the Ethernet header (and VLAN tags)
    /// in front of the inner packet. The oracle `encapsulate` is checked against;
    /// the director itself never decapsulates.
    fn decapsulate(frame: &mut Frame<'_>) -> Result<(), DecapError> {
        let p = parse(frame.data()).map_err(DecapError::Malformed)?;
        let inner_version = frame.data().get(p.l4).map(|b| b >> 4);
        match (p.version, p.proto, inner_version) {
            (IpVersion::V4, PROTO_IPIP, Some(4)) | (IpVersion::V6, PROTO_IPV6, Some(6)) => {}
            _ => return Err(DecapError::NotTunnelled),
        }
        frame.truncate(p.ip_end());
        frame.remove(p.l3, p.l4 - p.l3);
        // The inner packet must stand on its own.
        parse(frame.data()).map_err(DecapError::Malformed)?;
        Ok(())
    }

    fn roundtrip(n: &testnet::Net, head: usize) {
        let input = Pkt::tcp(n.client, 40000, n.vip, 82, SYN).bytes();
        let mut buf = vec![0u8; 512];
        buf[head..head + input.len()].copy_from_slice(&input);
        let mut f = Frame::new(&mut buf, head, input.len());
        let p = parse(f.data()).unwrap();
        encapsulate(&mut f, &p, n.int, n.rs_tun, 7).unwrap();
        let outer = parse(f.data()).unwrap();
        assert_eq!((outer.src, outer.dst), (n.int, n.rs_tun));
        assert_eq!(outer.ip_len, p.ip_len + overhead(p.version));
        assert_eq!(outer.ttl, OUTER_TTL);
        verify_checksums(f.data()).unwrap();
        decapsulate(&mut f).unwrap();
        assert_eq!(f.data(), &input[..]);
    }

    #[test]
    fn decapsulate_inverts_encapsulate() {
        for head in [0, 64] {
            roundtrip(&testnet::v4(), head);
            roundtrip(&testnet::v6(), head);
        }
    }

    #[test]
    fn the_template_writes_the_general_header() {
        let n = testnet::v4();
        let (IpAddr::V4(src), IpAddr::V4(dst)) = (n.int, n.rs_tun) else {
            unreachable!("testnet::v4 is IPv4");
        };
        let outer = Outer4::new(src, dst);
        for (df, tos, id, vlan, payload, head) in [
            (true, 0, 7, None, 9, 0),
            (false, 0xb8, 0xfffe, None, 0, 64),
            (false, 0x03, 1, Some(5), 1400, 0),
            (true, 0xff, 0, Some(7), 3, 64),
        ] {
            let mut pkt = Pkt::udp(n.client, 5301, n.vip, 7).payload(vec![0xa5; payload]);
            (pkt.df, pkt.tos, pkt.vlan) = (df, tos, vlan);
            let mut input = pkt.bytes();
            // Ethernet padding is dropped by both.
            input.extend_from_slice(&[0; 6]);
            let mut a = vec![0u8; 2048];
            a[head..head + input.len()].copy_from_slice(&input);
            let mut b = a.clone();
            let mut fa = Frame::new(&mut a, head, input.len());
            let mut fb = Frame::new(&mut b, head, input.len());
            let p = parse(fa.data()).unwrap();
            encapsulate(&mut fa, &p, n.int, n.rs_tun, id).unwrap();
            let d = encapsulate4(&mut fb, Inner4::of(&p).unwrap(), &outer, id).unwrap();
            let at = d.as_ptr();
            assert_eq!(at, fb.data().as_ptr());
            assert_eq!(fa.data(), fb.data(), "df {df} tos {tos:#x} id {id}");
            verify_checksums(fb.data()).unwrap();
        }
        // No room: refused before the frame changes.
        let input = Pkt::tcp(n.client, 40000, n.vip, 82, SYN).bytes();
        let mut tight = input.clone();
        let mut f = Frame::whole(&mut tight);
        let p = parse(f.data()).unwrap();
        assert_eq!(
            encapsulate4(&mut f, Inner4::of(&p).unwrap(), &outer, 0).map(|_| ()),
            Err(NoRoom)
        );
        assert_eq!(f.data(), &input[..]);
    }

    #[test]
    fn the_fast_path_reads_what_the_parse_does() {
        let n = testnet::v4();
        for (df, payload) in [(true, 12), (false, 12), (false, 1400), (true, 99)] {
            let mut pkt = Pkt::udp(n.client, 5301, n.vip, 7).payload(vec![0x5a; payload]);
            pkt.df = df;
            let mut input = pkt.bytes();
            input.extend_from_slice(&[0; 4]);
            let f = crate::packet::parse_flow(&input).unwrap();
            let p = parse(&input).unwrap();
            assert_eq!(Some(Inner4::of_flow(&f, &input)), Inner4::of(&p), "df {df}");
        }
        let v6 = testnet::v6();
        let input = Pkt::tcp(v6.client, 40000, v6.vip, 82, SYN).bytes();
        assert_eq!(Inner4::of(&parse(&input).unwrap()), None);
    }

    #[test]
    fn decapsulate_leaves_plain_packets_alone() {
        let n = testnet::v4();
        let input = Pkt::tcp(n.client, 40000, n.vip, 82, SYN).bytes();
        let mut buf = input.clone();
        let mut f = Frame::whole(&mut buf);
        assert_eq!(decapsulate(&mut f), Err(DecapError::NotTunnelled));
        assert_eq!(f.data(), &input[..]);
    }

    #[test]
    fn families_must_match() {
        let n = testnet::v4();
        let input = Pkt::tcp(n.client, 40000, n.vip, 82, SYN).bytes();
        let mut buf = vec![0u8; 256];
        buf[..input.len()].copy_from_slice(&input);
        let mut f = Frame::new(&mut buf, 0, input.len());
        let p = parse(f.data()).unwrap();
        let v6 = testnet::v6();
        assert_eq!(
            encapsulate(&mut f, &p, v6.int, v6.rs_tun, 0),
            Err(EncapError::FamilyMismatch)
        );
        // No room at all: refused, frame unchanged.
        let mut tight = input.clone();
        let mut f = Frame::whole(&mut tight);
        assert_eq!(
            encapsulate(&mut f, &p, n.int, n.rs_tun, 0),
            Err(EncapError::NoRoom)
        );
    }
}
