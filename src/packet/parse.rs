//! Frame parsing: Ethernet (with up to two VLAN tags), IPv4 (with options),
//! IPv6 (with extension headers), TCP, UDP, and ICMP/ICMPv6 errors with the
//! header they quote.
//!
//! [`parse`] validates everything a rewrite later relies on and returns byte
//! offsets into the frame, so rewrites index the frame without re-checking and
//! without a panic path. Nothing allocates. The header slices come from
//! etherparse; the checks it does not make (IPv4 header checksum, total length
//! against the frame, source-route options, fragment offsets) are made here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{
    EtherType, Ethernet2HeaderSlice, IpNumber, Ipv4HeaderSlice, Ipv6ExtensionSlice,
    Ipv6ExtensionsSlice, Ipv6HeaderSlice, SingleVlanHeaderSlice, TcpHeaderSlice,
};

use super::checksum;
use super::{FlowKey, L4Proto};

/// Length of an Ethernet II header without VLAN tags.
pub const ETH_HEADER_LEN: usize = 14;
/// At most this many 802.1Q / 802.1ad tags are walked.
const MAX_VLAN_TAGS: usize = 2;

/// Why a frame could not be parsed into something xvs may forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParseError {
    /// Not IPv4 or IPv6 (ARP, LLDP, ...): the kernel's business, not a drop.
    NotIp,
    /// A header is cut short by the end of the frame (or by the IP length).
    Truncated,
    /// IPv4 IHL < 5, or an IP version field that contradicts the EtherType.
    BadIpHeader,
    /// IPv4 total length shorter than its header, or an IPv6 jumbogram.
    BadIpLength,
    BadIpChecksum,
    /// IPv4 options that run past the header or have an impossible length.
    BadIpOptions,
    /// Loose or strict source routing (IPv4 options 131/137, or an IPv6 routing
    /// header with segments left): refused, as the kernel refuses them with
    /// `accept_source_route=0`.
    SourceRoute,
    /// IPv6 extension headers that are malformed or out of order.
    BadExtensionHeader,
    /// A non-first fragment: it carries no transport header to find its flow.
    Fragment,
    /// TCP data offset < 5, or UDP length inconsistent with the IP length.
    BadTransportHeader,
    /// An ICMP error whose quoted packet is too short or not IP.
    BadIcmpQuote,
}

/// IP version of a parsed packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpVersion {
    V4,
    V6,
}

/// TCP flags that drive the connection state machine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;

    pub fn fin(self) -> bool {
        self.0 & Self::FIN != 0
    }
    pub fn syn(self) -> bool {
        self.0 & Self::SYN != 0
    }
    pub fn rst(self) -> bool {
        self.0 & Self::RST != 0
    }
    pub fn ack(self) -> bool {
        self.0 & Self::ACK != 0
    }
    /// A segment that may open a connection: SYN without ACK or RST.
    pub fn is_connection_start(self) -> bool {
        self.syn() && !self.ack() && !self.rst()
    }
}

/// The packet an ICMP error quotes (the packet that caused the error): where
/// its headers are in the frame, and its protocol. Small, so that a
/// [`Parsed`] is cheap to move; its addresses and ports are read from the
/// frame by [`Quoted::key`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quoted {
    /// Offset of the quoted IP header in the frame.
    l3: u32,
    /// Offset of the quoted transport header in the frame.
    l4: u32,
    /// Quoted transport bytes present (at least 8).
    l4_len: u32,
    /// The quoted packet's IP version (the error's own).
    version: IpVersion,
    /// TCP or UDP.
    pub proto: L4Proto,
}

impl Quoted {
    /// Offset of the quoted IP header in the frame.
    pub fn l3(&self) -> usize {
        self.l3 as usize
    }

    /// Offset of the quoted transport header in the frame.
    pub fn l4(&self) -> usize {
        self.l4 as usize
    }

    /// Quoted transport bytes present (at least 8).
    pub fn l4_len(&self) -> usize {
        self.l4_len as usize
    }

    /// The quoted packet's own tuple, read from `frame`, the frame this
    /// quote was parsed from (before any rewrite of the quote): for an
    /// error about a packet the director sent to a client, `src` is the VIP
    /// and `dst` the client.
    pub fn key(&self, frame: &[u8]) -> FlowKey {
        let (l3, l4) = (self.l3(), self.l4());
        let (src, dst) = match self.version {
            IpVersion::V4 => (
                IpAddr::V4(Ipv4Addr::from(read_array::<4>(frame, l3 + 12))),
                IpAddr::V4(Ipv4Addr::from(read_array::<4>(frame, l3 + 16))),
            ),
            IpVersion::V6 => (
                IpAddr::V6(Ipv6Addr::from(read_array::<16>(frame, l3 + 8))),
                IpAddr::V6(Ipv6Addr::from(read_array::<16>(frame, l3 + 24))),
            ),
        };
        FlowKey::new(
            self.proto,
            src,
            checksum::read_u16(frame, l4),
            dst,
            checksum::read_u16(frame, l4 + 2),
        )
    }
}

/// `N` bytes of `frame` at `at`, which parsing put in bounds.
fn read_array<const N: usize>(frame: &[u8], at: usize) -> [u8; N] {
    let mut a = [0; N];
    a.copy_from_slice(&frame[at..at + N]);
    a
}

/// What follows the IP header(s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp {
        flags: TcpFlags,
    },
    Udp,
    /// ICMP destination unreachable / time exceeded / parameter problem (and
    /// ICMPv6 packet too big) about a TCP or UDP packet.
    IcmpError(Quoted),
    /// Anything else: echo, neighbour discovery, other protocols, ICMP errors
    /// about protocols xvs does not balance.
    Other,
}

/// Offsets and fields of a parsed frame. All offsets are from the frame start
/// and are guaranteed in bounds for the frame that was parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// Offset of the IP header (after Ethernet and VLAN tags).
    pub l3: usize,
    pub version: IpVersion,
    /// Offset of the transport header (after IPv4 options / IPv6 extensions).
    pub l4: usize,
    /// Length of the IP packet (frames may carry Ethernet padding after it).
    pub ip_len: usize,
    /// The final protocol number (after IPv6 extension headers).
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// IPv4 DF bit; always true for IPv6, which routers never fragment.
    pub dont_fragment: bool,
    /// The first fragment of a fragmented datagram.
    pub first_fragment: bool,
    pub transport: Transport,
}

impl Parsed {
    /// The flow this TCP or UDP packet belongs to.
    pub fn key(&self) -> Option<FlowKey> {
        let proto = match self.transport {
            Transport::Tcp { .. } => L4Proto::Tcp,
            Transport::Udp => L4Proto::Udp,
            _ => return None,
        };
        Some(FlowKey::new(
            proto, self.src, self.sport, self.dst, self.dport,
        ))
    }

    /// Where the IP packet ends in the frame.
    pub fn ip_end(&self) -> usize {
        self.l3 + self.ip_len
    }
}

/// Parses `frame`, which starts with an Ethernet header.
///
/// The fast path's frames (untagged IPv4 without options or IPv6 without
/// extension headers, carrying TCP or UDP, neither a fragment) are read
/// directly by [`parse_lean`]; every other frame, and every frame that
/// fails one of its checks, goes through [`parse_full`], so the result,
/// errors included, is the same as `parse_full`'s.
#[inline(always)]
pub fn parse(frame: &[u8]) -> Result<Parsed, ParseError> {
    match parse_lean(frame) {
        Some(p) => Ok(p),
        None => parse_full(frame),
    }
}

/// Bytes [`parse_flow`] reads at fixed offsets: Ethernet, an IPv4 header
/// without options and a TCP header's first 20 bytes (a UDP header's 8).
pub const FLOW_HEADERS: usize = ETH_HEADER_LEN + 20 + 20;

/// The fast path's frame as [`parse_flow`] found it: an untagged IPv4
/// packet without options at [`ETH_HEADER_LEN`], its transport header at
/// 34, in a frame of at least [`FLOW_HEADERS`] bytes, not a fragment,
/// carrying TCP or UDP whose header fits the IP length `ip_len`, which
/// fits the frame. Its fields are the frame's, read once; what it proves
/// lets the fast path's checks and rewrites
/// ([`rewrite::complete_partial_checksum_v4`](super::rewrite::complete_partial_checksum_v4),
/// [`rewrite::route_endpoint_v4`](super::rewrite::route_endpoint_v4)) read and write the frame
/// at constant offsets. Small enough to live in registers; the general
/// [`Parsed`] is made from it ([`V4Flow::parsed`]) only where a rare path
/// needs one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct V4Flow {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    /// The IPv4 total length.
    pub ip_len: u16,
    /// TCP or UDP.
    pub proto: L4Proto,
    /// The TCP flags byte; 0 for UDP.
    pub tcp_flags: u8,
}

// Sixteen bytes: the fast path's frame fits two registers, so a call that
// takes it passes it in them. The TTL and the DF bit are read from the
// frame where they are needed ([`V4Flow::ttl`], [`V4Flow::dont_fragment`]).
const _: () = assert!(std::mem::size_of::<V4Flow>() == 16);

impl V4Flow {
    /// Whether the packet is UDP (else TCP).
    #[inline(always)]
    pub fn is_udp(&self) -> bool {
        self.proto == L4Proto::Udp
    }

    /// The TCP flags, if it is TCP.
    #[inline(always)]
    pub fn flags(&self) -> Option<TcpFlags> {
        (!self.is_udp()).then_some(TcpFlags(self.tcp_flags))
    }

    /// The flow this packet belongs to.
    #[inline(always)]
    pub fn key(&self) -> FlowKey {
        FlowKey::new(
            self.proto,
            IpAddr::V4(self.src),
            self.sport,
            IpAddr::V4(self.dst),
            self.dport,
        )
    }

    /// The TTL of `frame`, the frame this packet was parsed from (0 for a
    /// frame too short to be one).
    #[inline(always)]
    pub fn ttl(&self, frame: &[u8]) -> u8 {
        frame.get(ETH_HEADER_LEN + 8).copied().unwrap_or(0)
    }

    /// The DF bit of `frame`, the frame this packet was parsed from: its
    /// flags are DF alone or nothing (false for a frame too short to be
    /// one).
    #[inline(always)]
    pub fn dont_fragment(&self, frame: &[u8]) -> bool {
        frame
            .get(ETH_HEADER_LEN + 6)
            .is_some_and(|flags| flags & 0x40 != 0)
    }

    /// The [`Parsed`] that [`parse`] gives `frame`, the frame this packet
    /// was parsed from.
    pub fn parsed(&self, frame: &[u8]) -> Parsed {
        Parsed {
            l3: ETH_HEADER_LEN,
            version: IpVersion::V4,
            l4: ETH_HEADER_LEN + 20,
            ip_len: usize::from(self.ip_len),
            proto: self.proto.number(),
            src: IpAddr::V4(self.src),
            dst: IpAddr::V4(self.dst),
            sport: self.sport,
            dport: self.dport,
            ttl: self.ttl(frame),
            dont_fragment: self.dont_fragment(frame),
            first_fragment: false,
            transport: match self.flags() {
                Some(flags) => Transport::Tcp { flags },
                None => Transport::Udp,
            },
        }
    }
}

/// The pipeline's common frame read straight from its bytes: an untagged
/// IPv4 packet without options, not a fragment (DF or no flags), with a
/// valid header checksum and a total length within the frame, carrying
/// TCP or UDP whose header fits that length, in a frame of at least 54
/// bytes (one bounds check, then constant offsets). `Some` only where
/// [`parse`] returns the [`Parsed`] that [`V4Flow::parsed`] makes and
/// [`Parsed::key`] the key [`V4Flow::key`] makes; every other frame (IPv6,
/// tags, options, fragments, ICMP, short frames, every failed check) is
/// `None`, for [`parse`] to take.
#[inline(always)]
pub fn parse_flow(frame: &[u8]) -> Option<V4Flow> {
    check_flow(frame).map(|c| c.flow())
}

/// A frame [`parse_flow`] takes, every check made and only its addresses
/// read so far: the pipeline tells a frame for the host by them alone, so
/// that its ports are read only for a frame that goes on.
#[derive(Clone, Copy, Debug)]
pub struct CheckedFlow<'a> {
    h: &'a [u8; FLOW_HEADERS],
    ip_len: u16,
    proto: L4Proto,
    tcp_flags: u8,
}

impl CheckedFlow<'_> {
    const L3: usize = ETH_HEADER_LEN;
    const L4: usize = Self::L3 + 20;

    /// The IPv4 address at `at` in the headers.
    #[inline(always)]
    fn addr(&self, at: usize) -> Ipv4Addr {
        let a: [u8; 4] = [self.h[at], self.h[at + 1], self.h[at + 2], self.h[at + 3]];
        Ipv4Addr::from(a)
    }

    #[inline(always)]
    pub fn src(&self) -> Ipv4Addr {
        self.addr(Self::L3 + 12)
    }

    #[inline(always)]
    pub fn dst(&self) -> Ipv4Addr {
        self.addr(Self::L3 + 16)
    }

    /// The whole flow, its ports read.
    #[inline(always)]
    pub fn flow(&self) -> V4Flow {
        let h = self.h;
        V4Flow {
            src: self.src(),
            dst: self.dst(),
            sport: u16::from_be_bytes([h[Self::L4], h[Self::L4 + 1]]),
            dport: u16::from_be_bytes([h[Self::L4 + 2], h[Self::L4 + 3]]),
            ip_len: self.ip_len,
            proto: self.proto,
            tcp_flags: self.tcp_flags,
        }
    }
}

/// [`parse_flow`]'s checks, the flow not read yet.
#[inline(always)]
pub fn check_flow(frame: &[u8]) -> Option<CheckedFlow<'_>> {
    const L3: usize = ETH_HEADER_LEN;
    const L4: usize = L3 + 20;
    let h: &[u8; FLOW_HEADERS] = frame.first_chunk()?;
    // EtherType IPv4; version 4, IHL 5: compared as a 16-bit word and a
    // byte, where the three bytes merged into one compare took seven steps.
    if u16::from_ne_bytes([h[12], h[13]]) != u16::from_ne_bytes([0x08, 0x00]) || h[L3] != 0x45 {
        return None;
    }
    let ip_len = u16::from_be_bytes([h[L3 + 2], h[L3 + 3]]);
    if frame.len() - L3 < usize::from(ip_len) {
        return None;
    }
    // Flags and fragment offset: DF alone, or nothing.
    let frag = u16::from_be_bytes([h[L3 + 6], h[L3 + 7]]);
    if frag & 0xbfff != 0 {
        return None;
    }
    let (proto, tcp_flags) = match h[L3 + 9] {
        6 => {
            // The data offset's header lies within the IP length.
            let offset = u16::from(h[L4 + 12] >> 4);
            if offset < 5 || ip_len < 20 + offset * 4 {
                return None;
            }
            (L4Proto::Tcp, h[L4 + 13])
        }
        17 => {
            let udp_len = u16::from_be_bytes([h[L4 + 4], h[L4 + 5]]);
            if udp_len < 8 || u32::from(ip_len) < 20 + u32::from(udp_len) {
                return None;
            }
            (L4Proto::Udp, 0)
        }
        _ => return None,
    };
    let ip: &[u8; 20] = h[L3..L4].try_into().ok()?;
    if !ipv4_header_verifies(ip) {
        return None;
    }
    Some(CheckedFlow {
        h,
        ip_len,
        proto,
        tcp_flags,
    })
}

/// Whether an IPv4 header without options carries a valid checksum: its
/// ten 16-bit words add up (one's complement) to 0xffff. Added as five
/// native-endian 32-bit words, whose folded sum is the same up to the
/// order of its two bytes (RFC 1071 §2(B)), which 0xffff does not see.
/// The header starts with its version byte, so the sum is not 0.
#[inline(always)]
fn ipv4_header_verifies(ip: &[u8; 20]) -> bool {
    let w = |i: usize| u64::from(u32::from_ne_bytes([ip[i], ip[i + 1], ip[i + 2], ip[i + 3]]));
    let s = w(0) + w(4) + w(8) + w(12) + w(16);
    // Folding (adding the carries back in) keeps a sum's value modulo
    // 0xffff, as 2^16 is 1 modulo 0xffff, and takes a sum that is not 0
    // to 1..=0xffff: it folds to 0xffff exactly when 0xffff divides it.
    // The remainder is a multiply and a shift, four folds a dozen steps.
    s % 0xffff == 0
}

/// The fast path's headers read with fixed offsets: `Some` only where every
/// check [`parse_full`] makes passes and it would return the same `Parsed`.
#[inline(always)]
fn parse_lean(frame: &[u8]) -> Option<Parsed> {
    const L3: usize = ETH_HEADER_LEN;
    let eth: &[u8; L3 + 1] = frame.get(..L3 + 1)?.try_into().ok()?;
    let (version, l4, ip_len, proto, src, dst, ttl, dont_fragment) =
        match (u16::from_be_bytes([eth[12], eth[13]]), eth[L3]) {
            // IPv4, IHL 5: no options.
            (0x0800, 0x45) => {
                let ip: &[u8; 20] = frame.get(L3..L3 + 20)?.try_into().ok()?;
                let ip_len = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
                if ip_len < 20 || frame.len() - L3 < ip_len {
                    return None;
                }
                if checksum::fold(checksum::sum(ip, 0)) != 0xffff {
                    return None;
                }
                // Flags and fragment offset: DF alone, or nothing.
                let dont_fragment = match [ip[6], ip[7]] {
                    [0x40, 0] => true,
                    [0, 0] => false,
                    _ => return None,
                };
                let src: [u8; 4] = ip[12..16].try_into().ok()?;
                let dst: [u8; 4] = ip[16..20].try_into().ok()?;
                (
                    IpVersion::V4,
                    L3 + 20,
                    ip_len,
                    ip[9],
                    IpAddr::V4(Ipv4Addr::from(src)),
                    IpAddr::V4(Ipv4Addr::from(dst)),
                    ip[8],
                    dont_fragment,
                )
            }
            (0x86dd, b) if b >> 4 == 6 => {
                let ip: &[u8; 40] = frame.get(L3..L3 + 40)?.try_into().ok()?;
                let payload_len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
                if payload_len == 0 || frame.len() - L3 - 40 < payload_len {
                    return None;
                }
                let src: [u8; 16] = ip[8..24].try_into().ok()?;
                let dst: [u8; 16] = ip[24..40].try_into().ok()?;
                (
                    IpVersion::V6,
                    L3 + 40,
                    40 + payload_len,
                    ip[6],
                    IpAddr::V6(Ipv6Addr::from(src)),
                    IpAddr::V6(Ipv6Addr::from(dst)),
                    ip[7],
                    true,
                )
            }
            _ => return None,
        };
    let seg = frame.get(l4..L3 + ip_len)?;
    let transport = match proto {
        6 => {
            let offset = usize::from(*seg.get(12)? >> 4) * 4;
            if offset < 20 || seg.len() < offset {
                return None;
            }
            Transport::Tcp {
                flags: TcpFlags(seg[13]),
            }
        }
        17 => {
            if seg.len() < 8 {
                return None;
            }
            let udp_len = usize::from(checksum::read_u16(seg, 4));
            if udp_len < 8 || udp_len > seg.len() {
                return None;
            }
            Transport::Udp
        }
        _ => return None,
    };
    Some(Parsed {
        l3: L3,
        version,
        l4,
        ip_len,
        proto,
        src,
        dst,
        sport: checksum::read_u16(seg, 0),
        dport: checksum::read_u16(seg, 2),
        ttl,
        dont_fragment,
        first_fragment: false,
        transport,
    })
}

/// Parses `frame` with every header xvs understands walked by etherparse
/// and checked here: VLAN tags, IPv4 options, IPv6 extension headers,
/// fragments, ICMP errors.
pub fn parse_full(frame: &[u8]) -> Result<Parsed, ParseError> {
    let eth = Ethernet2HeaderSlice::from_slice(frame).map_err(|_| ParseError::Truncated)?;
    let mut ether_type = eth.ether_type();
    let mut l3 = ETH_HEADER_LEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ether_type != EtherType::VLAN_TAGGED_FRAME
            && ether_type != EtherType::PROVIDER_BRIDGING
            && ether_type != EtherType::VLAN_DOUBLE_TAGGED_FRAME
        {
            break;
        }
        let tag =
            SingleVlanHeaderSlice::from_slice(&frame[l3..]).map_err(|_| ParseError::Truncated)?;
        ether_type = tag.ether_type();
        l3 += tag.slice().len();
    }
    match ether_type {
        EtherType::IPV4 => parse_ipv4(frame, l3),
        EtherType::IPV6 => parse_ipv6(frame, l3),
        _ => Err(ParseError::NotIp),
    }
}

/// The IPv4 part: header checks, then the transport.
#[inline(always)]
fn parse_ipv4(frame: &[u8], l3: usize) -> Result<Parsed, ParseError> {
    let ip = Ipv4HeaderSlice::from_slice(&frame[l3..]).map_err(|e| match e {
        etherparse::err::ipv4::HeaderSliceError::Len(_) => ParseError::Truncated,
        etherparse::err::ipv4::HeaderSliceError::Content(_) => ParseError::BadIpHeader,
    })?;
    let header_len = ip.slice().len();
    let ip_len = usize::from(ip.total_len());
    if ip_len < header_len {
        return Err(ParseError::BadIpLength);
    }
    if frame.len() - l3 < ip_len {
        return Err(ParseError::Truncated);
    }
    if checksum::fold(checksum::sum(ip.slice(), 0)) != 0xffff {
        return Err(ParseError::BadIpChecksum);
    }
    check_ipv4_options(ip.options())?;
    if ip.fragments_offset().value() != 0 {
        return Err(ParseError::Fragment);
    }
    let l4 = l3 + header_len;
    let mut p = Parsed {
        l3,
        version: IpVersion::V4,
        l4,
        ip_len,
        proto: ip.protocol().0,
        src: IpAddr::V4(ip.source_addr()),
        dst: IpAddr::V4(ip.destination_addr()),
        sport: 0,
        dport: 0,
        ttl: ip.ttl(),
        dont_fragment: ip.dont_fragment(),
        first_fragment: ip.more_fragments(),
        transport: Transport::Other,
    };
    parse_transport(frame, &mut p)?;
    Ok(p)
}

/// Walks IPv4 options: refuses source routing and malformed option lengths.
fn check_ipv4_options(mut opts: &[u8]) -> Result<(), ParseError> {
    const EOL: u8 = 0;
    const NOP: u8 = 1;
    const LSRR: u8 = 131;
    const SSRR: u8 = 137;
    while let Some(&kind) = opts.first() {
        match kind {
            EOL => return Ok(()),
            NOP => opts = &opts[1..],
            _ => {
                let len = usize::from(*opts.get(1).ok_or(ParseError::BadIpOptions)?);
                if len < 2 || len > opts.len() {
                    return Err(ParseError::BadIpOptions);
                }
                if kind == LSRR || kind == SSRR {
                    return Err(ParseError::SourceRoute);
                }
                opts = &opts[len..];
            }
        }
    }
    Ok(())
}

/// The IPv6 part: header, extension headers up to the transport.
fn parse_ipv6(frame: &[u8], l3: usize) -> Result<Parsed, ParseError> {
    let ip = Ipv6HeaderSlice::from_slice(&frame[l3..]).map_err(|e| match e {
        etherparse::err::ipv6::HeaderSliceError::Len(_) => ParseError::Truncated,
        etherparse::err::ipv6::HeaderSliceError::Content(_) => ParseError::BadIpHeader,
    })?;
    let payload_len = usize::from(ip.payload_length());
    if payload_len == 0 {
        // Zero means a jumbogram (RFC 2675) or nothing at all; neither is ours.
        return Err(ParseError::BadIpLength);
    }
    let ip_len = 40 + payload_len;
    if frame.len() - l3 < ip_len {
        return Err(ParseError::Truncated);
    }
    let payload = &frame[l3 + 40..l3 + ip_len];
    let (exts, proto, rest) =
        Ipv6ExtensionsSlice::from_slice(ip.next_header(), payload).map_err(|e| match e {
            etherparse::err::ipv6_exts::HeaderSliceError::Len(_) => ParseError::Truncated,
            etherparse::err::ipv6_exts::HeaderSliceError::Content(_) => {
                ParseError::BadExtensionHeader
            }
        })?;
    let mut first_fragment = false;
    for ext in exts.clone().into_iter() {
        match ext {
            // payload(): [routing type, segments left, ...]
            Ipv6ExtensionSlice::Routing(r) if r.payload().get(1).copied().unwrap_or(0) != 0 => {
                return Err(ParseError::SourceRoute);
            }
            Ipv6ExtensionSlice::Fragment(f) => {
                if f.fragment_offset().value() != 0 {
                    return Err(ParseError::Fragment);
                }
                first_fragment |= f.more_fragments();
            }
            _ => {}
        }
    }
    let mut p = Parsed {
        l3,
        version: IpVersion::V6,
        l4: l3 + ip_len - rest.len(),
        ip_len,
        proto: proto.0,
        src: IpAddr::V6(ip.source_addr()),
        dst: IpAddr::V6(ip.destination_addr()),
        sport: 0,
        dport: 0,
        ttl: ip.hop_limit(),
        dont_fragment: true,
        first_fragment,
        transport: Transport::Other,
    };
    parse_transport(frame, &mut p)?;
    Ok(p)
}

/// Fills in ports, TCP flags or the quoted packet of an ICMP error.
#[inline(always)]
fn parse_transport(frame: &[u8], p: &mut Parsed) -> Result<(), ParseError> {
    let seg = &frame[p.l4..p.ip_end()];
    match IpNumber(p.proto) {
        IpNumber::TCP => {
            let tcp = TcpHeaderSlice::from_slice(seg).map_err(|e| match e {
                etherparse::err::tcp::HeaderSliceError::Len(_) => ParseError::Truncated,
                etherparse::err::tcp::HeaderSliceError::Content(_) => {
                    ParseError::BadTransportHeader
                }
            })?;
            p.sport = tcp.source_port();
            p.dport = tcp.destination_port();
            p.transport = Transport::Tcp {
                flags: TcpFlags(seg[13]),
            };
        }
        IpNumber::UDP => {
            if seg.len() < 8 {
                return Err(ParseError::Truncated);
            }
            let udp_len = usize::from(checksum::read_u16(seg, 4));
            // A first fragment carries only part of the datagram UDP's length counts.
            if udp_len < 8 || (!p.first_fragment && udp_len > seg.len()) {
                return Err(ParseError::BadTransportHeader);
            }
            p.sport = checksum::read_u16(seg, 0);
            p.dport = checksum::read_u16(seg, 2);
            p.transport = Transport::Udp;
        }
        // ICMP belongs to IPv4 and ICMPv6 to IPv6; the other way round it is
        // no error message of either, and not ours.
        IpNumber::ICMP if p.version == IpVersion::V4 => {
            if seg.len() < 8 {
                return Err(ParseError::Truncated);
            }
            // Destination unreachable, source quench, time exceeded, parameter problem.
            if matches!(seg[0], 3 | 4 | 11 | 12) {
                p.transport = quoted(frame, p.l4 + 8, p.ip_end(), IpVersion::V4)?;
            }
        }
        IpNumber::IPV6_ICMP if p.version == IpVersion::V6 => {
            if seg.len() < 8 {
                return Err(ParseError::Truncated);
            }
            // Types below 128 are errors (unreachable, too big, time exceeded, parameter).
            if seg[0] < 128 {
                p.transport = quoted(frame, p.l4 + 8, p.ip_end(), IpVersion::V6)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Parses the packet an ICMP error quotes, found at `frame[start..end]`.
///
/// Only the quoted IP header and the first 8 transport bytes (ports) are
/// required; RFC 792 promises no more. Errors about packets that are not TCP or
/// UDP are `Transport::Other`: they cannot be about a balanced connection.
fn quoted(
    frame: &[u8],
    start: usize,
    end: usize,
    outer: IpVersion,
) -> Result<Transport, ParseError> {
    let q = &frame[start..end];
    let version = q.first().map(|b| b >> 4).ok_or(ParseError::BadIcmpQuote)?;
    let (header_len, proto) = match (outer, version) {
        (IpVersion::V4, 4) => {
            let ihl = usize::from(q[0] & 0x0f) * 4;
            if ihl < 20 || q.len() < ihl {
                return Err(ParseError::BadIcmpQuote);
            }
            (ihl, q[9])
        }
        (IpVersion::V6, 6) => {
            if q.len() < 40 {
                return Err(ParseError::BadIcmpQuote);
            }
            // Quoted extension headers are walked leniently: the quote may cut them.
            let (_, proto, rest, _) = Ipv6ExtensionsSlice::from_slice_lax(IpNumber(q[6]), &q[40..]);
            (q.len() - rest.len(), proto.0)
        }
        _ => return Err(ParseError::BadIcmpQuote),
    };
    let proto = match L4Proto::from_number(proto) {
        Some(p @ (L4Proto::Tcp | L4Proto::Udp)) => p,
        _ => return Ok(Transport::Other),
    };
    let l4_len = q.len() - header_len;
    if l4_len < 8 {
        return Err(ParseError::BadIcmpQuote);
    }
    // Offsets into one frame, which is far shorter than 4 GiB.
    Ok(Transport::IcmpError(Quoted {
        l3: start as u32,
        l4: (start + header_len) as u32,
        l4_len: l4_len as u32,
        version: outer,
        proto,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tcp_flags(p: &Parsed) -> Option<TcpFlags> {
        match p.transport {
            Transport::Tcp { flags } => Some(flags),
            _ => None,
        }
    }

    /// An untagged TCP or UDP frame of either family with a valid IPv4
    /// header checksum, the lean parser's input.
    fn frame(v6: bool, udp: bool, payload: usize) -> Vec<u8> {
        let l4_len = if udp { 8 } else { 20 } + payload;
        let mut f = vec![0u8; 14];
        f[12..14].copy_from_slice(if v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
        let proto = if udp { 17 } else { 6 };
        if v6 {
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&(l4_len as u16).to_be_bytes());
            f.extend_from_slice(&[proto, 64]);
            f.extend((0..32).map(|i| 0x20 + i as u8));
        } else {
            f.extend_from_slice(&[0x45, 0]);
            f.extend_from_slice(&(20 + l4_len as u16).to_be_bytes());
            f.extend_from_slice(&[
                0, 1, 0x40, 0, 64, proto, 0, 0, 192, 0, 2, 1, 198, 51, 100, 7,
            ]);
            let c = checksum::finish(checksum::sum(&f[14..34], 0));
            f[24..26].copy_from_slice(&c.to_be_bytes());
        }
        f.extend_from_slice(&[0x30, 0x39, 0, 80]);
        if udp {
            f.extend_from_slice(&(l4_len as u16).to_be_bytes());
            f.extend_from_slice(&[0, 0]);
        } else {
            f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
        }
        f.extend(std::iter::repeat_n(0xab, payload));
        f
    }

    #[test]
    fn lean_parse_takes_the_fast_path_frames() {
        for (v6, udp) in [(false, false), (false, true), (true, false), (true, true)] {
            let f = frame(v6, udp, 6);
            let lean = parse_lean(&f).expect("a fast-path frame");
            assert_eq!(Ok(lean), parse_full(&f));
            assert_eq!((lean.sport, lean.dport), (12345, 80));
        }
    }

    #[test]
    fn flow_parse_takes_ipv4_tcp_and_udp_with_their_keys() {
        for udp in [false, true] {
            let f = frame(false, udp, 12);
            let v = parse_flow(&f).expect("a fast-path frame");
            assert_eq!(Ok(v.parsed(&f)), parse_full(&f));
            assert_eq!(Some(v.key()), v.parsed(&f).key());
            assert_eq!(v.flags(), tcp_flags(&v.parsed(&f)));
        }
        // IPv6, and a frame shorter than the headers read at fixed offsets.
        assert_eq!(parse_flow(&frame(true, false, 12)), None);
        assert_eq!(parse_flow(&frame(false, true, 11)), None);
        assert!(parse_lean(&frame(false, true, 11)).is_some());
    }

    #[test]
    fn lean_parse_leaves_the_rest_to_the_full_parse() {
        // IPv4 options, a fragment, a VLAN tag, ICMP: not the fast path.
        let mut options = frame(false, false, 0);
        options[14] = 0x46;
        let mut fragment = frame(false, true, 0);
        fragment[20] = 0x20;
        let mut vlan = frame(false, false, 0);
        vlan.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
        let mut icmp = frame(false, true, 0);
        icmp[23] = 1;
        for f in [options, fragment, vlan, icmp] {
            assert_eq!(parse_lean(&f), None);
            assert_eq!(parse_flow(&f), None);
        }
    }

    proptest! {
        /// Whatever a fast-path frame is changed into, the lean parse
        /// either declines it or agrees with the full parse.
        #[test]
        fn lean_parse_agrees_with_the_full_parse(
            v6 in any::<bool>(),
            udp in any::<bool>(),
            payload in 0usize..24,
            edits in proptest::collection::vec((0usize..96, any::<u8>()), 0..4),
            fix_checksum in any::<bool>(),
            cut in 0usize..8,
            pad in 0usize..4,
        ) {
            let mut f = frame(v6, udp, payload);
            for (at, b) in edits {
                if let Some(x) = f.get_mut(at) {
                    *x = b;
                }
            }
            if fix_checksum && !v6 && f[14] & 0x0f == 5 {
                f[24..26].fill(0);
                let c = checksum::finish(checksum::sum(&f[14..34], 0));
                f[24..26].copy_from_slice(&c.to_be_bytes());
            }
            // Cut into the headers, or Ethernet padding after the packet.
            f.truncate(f.len().saturating_sub(cut));
            f.resize(f.len() + pad, 0);
            if let Some(lean) = parse_lean(&f) {
                prop_assert_eq!(Ok(lean), parse_full(&f));
            }
            if let Some(v) = parse_flow(&f) {
                prop_assert_eq!(Ok(v.parsed(&f)), parse_full(&f));
                prop_assert_eq!(Some(v.key()), v.parsed(&f).key());
                prop_assert_eq!(v.flags(), tcp_flags(&v.parsed(&f)));
            }
            prop_assert_eq!(parse(&f), parse_full(&f));
        }

        /// The fast path's header check agrees with the checksum module's
        /// fold on any header with a version byte, the checksum made right
        /// or left as it is.
        #[test]
        fn header_check_agrees_with_the_checksum_fold(
            mut ip in any::<[u8; 20]>(),
            version in 1u8..,
            fix in any::<bool>(),
        ) {
            ip[0] = version;
            if fix {
                ip[10..12].fill(0);
                let c = checksum::finish(checksum::sum(&ip, 0));
                ip[10..12].copy_from_slice(&c.to_be_bytes());
            }
            let folded = checksum::finish(checksum::sum(&ip, 0)) == 0;
            prop_assert_eq!(ipv4_header_verifies(&ip), folded);
            if fix {
                prop_assert!(ipv4_header_verifies(&ip));
            }
        }
    }
}
