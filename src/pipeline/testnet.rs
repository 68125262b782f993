//! The test network every pipeline test, bench and the fuzzer share, and a
//! packet builder that serialises through etherparse — a second
//! implementation — so expected frames never borrow xvs's own checksum code.
//!
//! ```text
//! clients 203.0.113.0/24, 2001:db8:ff::/48 ── gw 192.0.2.254 / 2001:db8::fe
//!   │ port 0 "ext"  02:00:00:00:00:01  192.0.2.1, 2001:db8::1   VIPs .10 / ::10
//! [xvs]
//!   │ port 1 "int"  02:00:00:00:00:02  198.51.100.1, 2001:db8:1::1
//! real servers .2 (NAT), .3 (DR), .4 (TUN); 2001:db8:1::2/3/4 likewise
//! ```

use std::net::IpAddr;
use std::sync::Arc;

use etherparse::{
    Icmpv4Header, Icmpv4Type, Icmpv6Header, Icmpv6Type, IpNumber, Ipv4Header, Ipv6Header,
    TcpHeader, UdpHeader,
};

use crate::conntrack::{ConnTable, Timeouts};
use crate::neigh::{NextHops, Route};
use crate::packet::{L4Proto, MacAddr};
use crate::pipeline::{PortConfig, Snapshot};
use crate::service::{
    ForwardMethod, RealId, RealLoads, RealServer, SchedFlags, SchedulerKind, ServiceKey,
    ServiceTable, VirtualService,
};

pub const EXT_MAC: MacAddr = [2, 0, 0, 0, 0, 1];
pub const INT_MAC: MacAddr = [2, 0, 0, 0, 0, 2];
pub const GW_MAC: MacAddr = [2, 0, 0, 0, 0, 0xfe];
pub const RS_NAT_MAC: MacAddr = [2, 0, 0, 0, 1, 2];
pub const RS_DR_MAC: MacAddr = [2, 0, 0, 0, 1, 3];
pub const RS_TUN_MAC: MacAddr = [2, 0, 0, 0, 1, 4];

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// Addresses of one family in the test network.
#[derive(Clone, Copy, Debug)]
pub struct Net {
    pub client: IpAddr,
    pub gw: IpAddr,
    pub ext: IpAddr,
    pub vip: IpAddr,
    pub int: IpAddr,
    pub rs_nat: IpAddr,
    pub rs_dr: IpAddr,
    pub rs_tun: IpAddr,
    /// A real server no neighbour entry exists for.
    pub rs_unknown: IpAddr,
}

pub fn v4() -> Net {
    Net {
        client: ip("203.0.113.7"),
        gw: ip("192.0.2.254"),
        ext: ip("192.0.2.1"),
        vip: ip("192.0.2.10"),
        int: ip("198.51.100.1"),
        rs_nat: ip("198.51.100.2"),
        rs_dr: ip("198.51.100.3"),
        rs_tun: ip("198.51.100.4"),
        rs_unknown: ip("198.51.100.99"),
    }
}

pub fn v6() -> Net {
    Net {
        client: ip("2001:db8:ff::7"),
        gw: ip("2001:db8::fe"),
        ext: ip("2001:db8::1"),
        vip: ip("2001:db8::10"),
        int: ip("2001:db8:1::1"),
        rs_nat: ip("2001:db8:1::2"),
        rs_dr: ip("2001:db8:1::3"),
        rs_tun: ip("2001:db8:1::4"),
        rs_unknown: ip("2001:db8:1::99"),
    }
}

/// Virtual ports of the test services: one forwarding method each.
pub const PORT_NAT: u16 = 80;
pub const PORT_DR: u16 = 81;
pub const PORT_TUN: u16 = 82;
pub const PORT_UNRESOLVED: u16 = 83;
/// NAT real servers listen on another port than the VIP's.
pub const RPORT_NAT: u16 = 8080;
pub const PORT_DNS: u16 = 53;
pub const RPORT_DNS: u16 = 5353;

fn service(
    proto: L4Proto,
    vip: IpAddr,
    port: u16,
    id: u32,
    rip: IpAddr,
    rport: u16,
    method: ForwardMethod,
) -> VirtualService {
    VirtualService {
        key: ServiceKey {
            proto,
            addr: vip,
            port,
        },
        scheduler: SchedulerKind::Rr,
        sched_flags: SchedFlags::default(),
        persistence: None,
        reals: vec![RealServer {
            id: RealId(id),
            addr: rip,
            port: rport,
            method,
            weight: 1,
            upper_threshold: 0,
            lower_threshold: 0,
        }],
    }
}

fn services(n: &Net, base: u32) -> Vec<VirtualService> {
    use ForwardMethod::*;
    vec![
        service(
            L4Proto::Tcp,
            n.vip,
            PORT_NAT,
            base,
            n.rs_nat,
            RPORT_NAT,
            Nat,
        ),
        service(L4Proto::Tcp, n.vip, PORT_DR, base + 1, n.rs_dr, PORT_DR, Dr),
        service(
            L4Proto::Tcp,
            n.vip,
            PORT_TUN,
            base + 2,
            n.rs_tun,
            PORT_TUN,
            Tun,
        ),
        service(
            L4Proto::Udp,
            n.vip,
            PORT_DNS,
            base + 3,
            n.rs_nat,
            RPORT_DNS,
            Nat,
        ),
        service(
            L4Proto::Udp,
            n.vip,
            PORT_TUN,
            base + 4,
            n.rs_tun,
            PORT_TUN,
            Tun,
        ),
        service(
            L4Proto::Tcp,
            n.vip,
            PORT_DR + 100,
            base + 5,
            n.rs_dr,
            PORT_DR + 100,
            Dr,
        ),
        service(
            L4Proto::Tcp,
            n.vip,
            PORT_UNRESOLVED,
            base + 6,
            n.rs_unknown,
            PORT_UNRESOLVED,
            Dr,
        ),
    ]
}

/// The configuration of the test network, both families.
pub fn snapshot() -> Snapshot {
    let (a, b) = (v4(), v6());
    let mut svcs = services(&a, 0);
    svcs.extend(services(&b, 16));
    let ports = vec![
        PortConfig {
            name: "ext".into(),
            mac: EXT_MAC,
            mtu: 1500,
            addrs: vec![a.ext, b.ext],
        },
        PortConfig {
            name: "int".into(),
            mac: INT_MAC,
            mtu: 1500,
            addrs: vec![a.int, b.int],
        },
    ];
    let routes = vec![
        Route {
            net: ip("0.0.0.0"),
            prefix_len: 0,
            port: 0,
            via: Some(a.gw),
        },
        Route {
            net: ip("192.0.2.0"),
            prefix_len: 24,
            port: 0,
            via: None,
        },
        Route {
            net: ip("198.51.100.0"),
            prefix_len: 24,
            port: 1,
            via: None,
        },
        Route {
            net: ip("::"),
            prefix_len: 0,
            port: 0,
            via: Some(b.gw),
        },
        Route {
            net: ip("2001:db8::"),
            prefix_len: 64,
            port: 0,
            via: None,
        },
        Route {
            net: ip("2001:db8:1::"),
            prefix_len: 64,
            port: 1,
            via: None,
        },
    ];
    let mut neighbours = Vec::new();
    for n in [a, b] {
        neighbours.extend([
            (n.gw, GW_MAC),
            (n.rs_nat, RS_NAT_MAC),
            (n.rs_dr, RS_DR_MAC),
            (n.rs_tun, RS_TUN_MAC),
        ]);
    }
    let hops = NextHops::new(vec![EXT_MAC, INT_MAC], routes, neighbours);
    Snapshot::new(ServiceTable::new(svcs), ports, hops, Default::default())
}

/// A pipeline over the test network with a fresh connection table.
pub fn pipeline() -> crate::pipeline::Pipeline {
    pipeline_with_room_for(1024)
}

/// [`pipeline`] with a connection table sized for `connections`, its
/// hashes seeded alike on every run ([`ConnTable::with_seed`]).
pub fn pipeline_with_room_for(connections: usize) -> crate::pipeline::Pipeline {
    let loads = Arc::new(RealLoads::new(64));
    // One seed for every run: the instruction counts of a lookup depend
    // on where in its bucket the flow's entry lies.
    let conns =
        Arc::new(ConnTable::new(connections, Timeouts::default(), Arc::clone(&loads)).with_seed(1));
    crate::pipeline::Pipeline::new(Arc::new(snapshot()), conns, loads, 0)
}

/// Transport part of a test packet.
#[derive(Clone, Debug)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    /// UDP sent without a checksum (IPv4 only).
    UdpNoChecksum {
        sport: u16,
        dport: u16,
    },
    /// Raw bytes after the IP header with this protocol number.
    Raw {
        proto: u8,
        bytes: Vec<u8>,
    },
}

/// A test packet, described field by field, serialised by etherparse.
#[derive(Clone, Debug)]
pub struct Pkt {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub vlan: Option<u16>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ttl: u8,
    pub df: bool,
    pub id: u16,
    pub tos: u8,
    /// IPv4 options (a multiple of 4 bytes).
    pub options: Vec<u8>,
    pub l4: L4,
    pub payload: Vec<u8>,
    /// The TCP/UDP checksum field holds only the pseudo-header sum, as a
    /// Linux sender with checksum offload (veth's default) leaves it for the
    /// device to finish.
    pub partial: bool,
}

pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const FIN: u8 = 0x01;

impl Pkt {
    pub fn tcp(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, flags: u8) -> Pkt {
        Pkt::new(
            src,
            dst,
            L4::Tcp {
                sport,
                dport,
                flags,
            },
        )
    }

    pub fn udp(src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> Pkt {
        Pkt::new(src, dst, L4::Udp { sport, dport })
    }

    pub fn new(src: IpAddr, dst: IpAddr, l4: L4) -> Pkt {
        Pkt {
            src_mac: GW_MAC,
            dst_mac: EXT_MAC,
            vlan: None,
            src,
            dst,
            ttl: 64,
            df: true,
            id: 0x1234,
            tos: 0,
            options: Vec::new(),
            l4,
            payload: b"hello xvs".to_vec(),
            partial: false,
        }
    }

    /// The same packet with the checksum a sender's offload leaves partial.
    pub fn partial_checksum(mut self) -> Pkt {
        self.partial = true;
        self
    }

    pub fn macs(mut self, src: MacAddr, dst: MacAddr) -> Pkt {
        self.src_mac = src;
        self.dst_mac = dst;
        self
    }

    pub fn ttl(mut self, ttl: u8) -> Pkt {
        self.ttl = ttl;
        self
    }

    pub fn payload(mut self, payload: Vec<u8>) -> Pkt {
        self.payload = payload;
        self
    }

    /// The IP packet (no Ethernet header).
    pub fn ip_bytes(&self) -> Vec<u8> {
        let (proto, l4) = self.l4_bytes();
        let mut out = Vec::new();
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut h = Ipv4Header::new(
                    l4.len() as u16,
                    self.ttl,
                    IpNumber(proto),
                    s.octets(),
                    d.octets(),
                )
                .expect("test packet size");
                h.dont_fragment = self.df;
                h.identification = self.id;
                h.dscp = etherparse::IpDscp::try_new(self.tos >> 2).expect("dscp");
                h.options = self.options.as_slice().try_into().expect("options");
                h.total_len = (h.header_len() + l4.len()) as u16;
                h.header_checksum = h.calc_header_checksum();
                h.write(&mut out).expect("write");
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let h = Ipv6Header {
                    traffic_class: self.tos,
                    flow_label: Default::default(),
                    payload_length: l4.len() as u16,
                    next_header: IpNumber(proto),
                    hop_limit: self.ttl,
                    source: s.octets(),
                    destination: d.octets(),
                };
                h.write(&mut out).expect("write");
            }
            _ => panic!("mixed families in a test packet"),
        }
        out.extend_from_slice(&l4);
        out
    }

    /// The whole frame.
    pub fn bytes(&self) -> Vec<u8> {
        let ip = self.ip_bytes();
        frame(
            self.src_mac,
            self.dst_mac,
            self.vlan,
            ip_ethertype(self.src),
            &ip,
        )
    }

    fn pseudo_sum_checksum(&self, proto: u8, seg: &[u8]) -> u16 {
        // Through etherparse's own checksum code, never xvs's.
        let pseudo = self.pseudo_header(proto, seg.len());
        if self.partial {
            // Linux's CHECKSUM_PARTIAL: the folded pseudo-header sum, not
            // complemented, for the device to add the segment to.
            return !pseudo.ones_complement().to_be();
        }
        pseudo.add_slice(seg).ones_complement().to_be()
    }

    fn pseudo_header(&self, proto: u8, len: usize) -> etherparse::checksum::Sum16BitWords {
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => etherparse::checksum::Sum16BitWords::new()
                .add_4bytes(s.octets())
                .add_4bytes(d.octets())
                .add_2bytes([0, proto])
                .add_2bytes((len as u16).to_be_bytes()),
            (IpAddr::V6(s), IpAddr::V6(d)) => etherparse::checksum::Sum16BitWords::new()
                .add_16bytes(s.octets())
                .add_16bytes(d.octets())
                .add_4bytes((len as u32).to_be_bytes())
                .add_4bytes([0, 0, 0, proto]),
            _ => panic!("mixed families"),
        }
    }

    fn l4_bytes(&self) -> (u8, Vec<u8>) {
        let mut out = Vec::new();
        match &self.l4 {
            L4::Tcp {
                sport,
                dport,
                flags,
            } => {
                let mut h = TcpHeader::new(*sport, *dport, 1000, 64240);
                h.fin = flags & FIN != 0;
                h.syn = flags & SYN != 0;
                h.ack = flags & ACK != 0;
                h.rst = flags & 0x04 != 0;
                if h.ack {
                    h.acknowledgment_number = 2000;
                }
                let mut seg = Vec::new();
                h.write(&mut seg).expect("write");
                seg.extend_from_slice(&self.payload);
                let c = self.pseudo_sum_checksum(6, &seg);
                seg[16..18].copy_from_slice(&c.to_be_bytes());
                (6, seg)
            }
            L4::Udp { sport, dport } | L4::UdpNoChecksum { sport, dport } => {
                let h = UdpHeader {
                    source_port: *sport,
                    destination_port: *dport,
                    length: (8 + self.payload.len()) as u16,
                    checksum: 0,
                };
                h.write(&mut out).expect("write");
                out.extend_from_slice(&self.payload);
                if let L4::Udp { .. } = self.l4 {
                    let mut c = self.pseudo_sum_checksum(17, &out);
                    if c == 0 {
                        c = 0xffff;
                    }
                    out[6..8].copy_from_slice(&c.to_be_bytes());
                }
                (17, out)
            }
            L4::Raw { proto, bytes } => (*proto, bytes.clone()),
        }
    }
}

pub fn ip_ethertype(addr: IpAddr) -> u16 {
    if addr.is_ipv4() {
        0x0800
    } else {
        0x86dd
    }
}

/// An Ethernet frame around `payload`.
pub fn frame(
    src: MacAddr,
    dst: MacAddr,
    vlan: Option<u16>,
    ethertype: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&dst);
    out.extend_from_slice(&src);
    if let Some(tag) = vlan {
        out.extend_from_slice(&0x8100u16.to_be_bytes());
        out.extend_from_slice(&tag.to_be_bytes());
    }
    out.extend_from_slice(&ethertype.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An ICMPv4 or ICMPv6 error from `src` to `dst` quoting `quoted` (an IP packet).
/// `kind` is (type, code, the 4 bytes after the checksum).
pub fn icmp_error(src: IpAddr, dst: IpAddr, kind: (u8, u8, [u8; 4]), quoted: &[u8]) -> Pkt {
    let bytes = match (src, dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => {
            let t = Icmpv4Type::Unknown {
                type_u8: kind.0,
                code_u8: kind.1,
                bytes5to8: kind.2,
            };
            let h = Icmpv4Header::with_checksum(t, quoted);
            let mut v = Vec::new();
            h.write(&mut v).expect("write");
            v.extend_from_slice(quoted);
            v
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let t = Icmpv6Type::Unknown {
                type_u8: kind.0,
                code_u8: kind.1,
                bytes5to8: kind.2,
            };
            let h = Icmpv6Header::with_checksum(t, s.octets(), d.octets(), quoted).expect("size");
            let mut v = Vec::new();
            h.write(&mut v).expect("write");
            v.extend_from_slice(quoted);
            v
        }
        _ => panic!("mixed families"),
    };
    let proto = if src.is_ipv4() { 1 } else { 58 };
    let mut p = Pkt::new(src, dst, L4::Raw { proto, bytes });
    p.payload.clear();
    p
}

/// Checks every checksum of an output frame with etherparse's code: IPv4
/// header, TCP/UDP with pseudo-header, ICMP/ICMPv6, for the outer packet and,
/// for IPIP, the inner one.
pub fn verify_checksums(frame: &[u8]) -> Result<(), String> {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let sliced = SlicedPacket::from_ethernet(frame).map_err(|e| format!("{e}"))?;
    let mut inner: Option<Vec<u8>> = None;
    match &sliced.net {
        Some(NetSlice::Ipv4(v4)) => {
            let h = v4.header().to_header();
            if h.calc_header_checksum() != h.header_checksum {
                return Err("IPv4 header checksum".into());
            }
            if h.protocol == IpNumber::IPV4 {
                inner = Some(v4.payload().payload.to_vec());
            }
        }
        Some(NetSlice::Ipv6(v6)) if v6.header().next_header() == IpNumber::IPV6 => {
            inner = Some(v6.payload().payload.to_vec());
        }
        _ => {}
    }
    let (src, dst) = match &sliced.net {
        Some(NetSlice::Ipv4(v4)) => (
            IpAddr::V4(v4.header().source_addr()),
            IpAddr::V4(v4.header().destination_addr()),
        ),
        Some(NetSlice::Ipv6(v6)) => (
            IpAddr::V6(v6.header().source_addr()),
            IpAddr::V6(v6.header().destination_addr()),
        ),
        _ => return Ok(()),
    };
    let zero_ok =
        |c: u16, want: u16| c == want || (c == 0xffff && want == 0) || (c == 0 && want == 0xffff);
    match &sliced.transport {
        Some(TransportSlice::Tcp(t)) => {
            let want = match (src, dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => t.calc_checksum_ipv4(s.octets(), d.octets()),
                (IpAddr::V6(s), IpAddr::V6(d)) => t.calc_checksum_ipv6(s.octets(), d.octets()),
                _ => unreachable!(),
            }
            .map_err(|e| format!("{e}"))?;
            if !zero_ok(t.checksum(), want) {
                return Err(format!(
                    "TCP checksum {:04x}, want {want:04x}",
                    t.checksum()
                ));
            }
        }
        Some(TransportSlice::Udp(u)) if u.checksum() != 0 || src.is_ipv6() => {
            let want = match (src, dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    u.to_header()
                        .calc_checksum_ipv4_raw(s.octets(), d.octets(), u.payload())
                }
                (IpAddr::V6(s), IpAddr::V6(d)) => {
                    u.to_header()
                        .calc_checksum_ipv6_raw(s.octets(), d.octets(), u.payload())
                }
                _ => unreachable!(),
            }
            .map_err(|e| format!("{e}"))?;
            if !zero_ok(u.checksum(), want) {
                return Err(format!(
                    "UDP checksum {:04x}, want {want:04x}",
                    u.checksum()
                ));
            }
        }
        Some(TransportSlice::Icmpv4(i)) => {
            let want = Icmpv4Header::with_checksum(i.icmp_type(), i.payload()).checksum;
            if !zero_ok(i.checksum(), want) {
                return Err("ICMP checksum".into());
            }
        }
        Some(TransportSlice::Icmpv6(i)) => {
            let (IpAddr::V6(s), IpAddr::V6(d)) = (src, dst) else {
                unreachable!()
            };
            let want =
                Icmpv6Header::with_checksum(i.icmp_type(), s.octets(), d.octets(), i.payload())
                    .map_err(|e| format!("{e}"))?
                    .checksum;
            if !zero_ok(i.checksum(), want) {
                return Err("ICMPv6 checksum".into());
            }
        }
        _ => {}
    }
    if let Some(ip) = inner {
        let ethertype = if ip.first().map(|b| b >> 4) == Some(4) {
            0x0800
        } else {
            0x86dd
        };
        verify_checksums(&frame_bytes(ethertype, &ip))?;
    }
    Ok(())
}

fn frame_bytes(ethertype: u16, ip: &[u8]) -> Vec<u8> {
    frame([0; 6], [0; 6], None, ethertype, ip)
}
