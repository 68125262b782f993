//! Golden packets: `{description, input frame, expected verdict, expected
//! output frame}`. Each case is its own test (`golden::ipv4::<name>`, named
//! from its description by `case_name`), so a failure names its case and
//! `cargo test golden::ipv6::nat_tcp_syn` runs one alone. A case runs after
//! the cases before it in the same pipeline (later cases rely on the
//! connections earlier ones created, as a real exchange would); only it is
//! checked. Expected frames are built by etherparse from field values, and
//! every transmitted frame's checksums are checked again with etherparse's
//! code.

use super::testnet::*;
use super::{DropReason, Verdict};
use crate::packet::encap::PROTO_IPIP;
use crate::packet::{Frame, MacAddr};
use crate::Millis;

pub(super) struct Case {
    pub(super) description: String,
    pub(super) input: Vec<u8>,
    pub(super) ingress: u8,
    pub(super) verdict: Verdict,
    /// A hold's next hop (`Pipeline::held_next_hop`); None for the rest.
    held_for: Option<std::net::IpAddr>,
    /// None: the output is not compared (drops leave the frame alone).
    output: Option<Vec<u8>>,
    /// Whether a transmitted frame's checksums must verify (false only for
    /// a bad checksum that must pass through as bad).
    verify: bool,
}

pub(super) const EXT: u8 = 0;
pub(super) const INT: u8 = 1;
const TX_EXT: Verdict = Verdict::Transmit { port: EXT };
const TX_INT: Verdict = Verdict::Transmit { port: INT };

pub(super) fn case(
    description: &str,
    input: &Pkt,
    ingress: u8,
    verdict: Verdict,
    output: Option<Vec<u8>>,
) -> Case {
    Case {
        description: description.to_string(),
        input: input.bytes(),
        ingress,
        verdict,
        output,
        verify: true,
        held_for: None,
    }
}

impl Case {
    /// The case, its verdict a hold for `next_hop`.
    fn held_for(self, next_hop: std::net::IpAddr) -> Case {
        Case {
            held_for: Some(next_hop),
            ..self
        }
    }
}

fn raw(description: &str, input: Vec<u8>, verdict: Verdict) -> Case {
    Case {
        description: description.to_string(),
        input,
        ingress: EXT,
        verdict,
        output: None,
        verify: true,
        held_for: None,
    }
}

fn drop(description: &str, input: &Pkt, reason: DropReason) -> Case {
    case(description, input, EXT, Verdict::Drop(reason), None)
}

/// The reset xvs sends from `src` to `dst` (TTL 64, DF, IP ID 0, no
/// options or payload, window 0), toward the client's gateway; built with
/// etherparse's TCP header and checksum.
fn reset_pkt(
    src: std::net::IpAddr,
    sport: u16,
    dst: std::net::IpAddr,
    dport: u16,
    seq: u32,
    ack: Option<u32>,
) -> Pkt {
    use std::net::IpAddr::{V4, V6};
    let mut h = etherparse::TcpHeader::new(sport, dport, seq, 0);
    h.rst = true;
    if let Some(a) = ack {
        h.ack = true;
        h.acknowledgment_number = a;
    }
    h.checksum = match (src, dst) {
        (V4(s), V4(d)) => h.calc_checksum_ipv4_raw(s.octets(), d.octets(), &[]),
        (V6(s), V6(d)) => h.calc_checksum_ipv6_raw(s.octets(), d.octets(), &[]),
        _ => panic!("mixed families"),
    }
    .expect("small segment");
    let mut bytes = Vec::new();
    h.write(&mut bytes).expect("write");
    let mut p = Pkt::new(src, dst, L4::Raw { proto: 6, bytes }).macs(EXT_MAC, GW_MAC);
    p.payload.clear();
    p.id = 0;
    p
}

/// `p` after NAT toward a real server: destination, MACs, TTL.
fn natted(p: &Pkt, rip: std::net::IpAddr, rport: u16, src_mac: MacAddr, dst_mac: MacAddr) -> Pkt {
    let mut o = p.clone().macs(src_mac, dst_mac).ttl(p.ttl - 1);
    o.dst = rip;
    set_dport(&mut o, rport);
    o
}

fn set_dport(p: &mut Pkt, port: u16) {
    match &mut p.l4 {
        L4::Tcp { dport, .. } | L4::Udp { dport, .. } | L4::UdpNoChecksum { dport, .. } => {
            *dport = port
        }
        L4::Raw { .. } => {}
    }
}

fn set_sport(p: &mut Pkt, port: u16) {
    match &mut p.l4 {
        L4::Tcp { sport, .. } | L4::Udp { sport, .. } | L4::UdpNoChecksum { sport, .. } => {
            *sport = port
        }
        L4::Raw { .. } => {}
    }
}

/// `inner` (an IP packet) inside an outer header, as xvs must build it.
fn tunnelled(n: &Net, inner: &Pkt, id: u16) -> Vec<u8> {
    let inner_ip = inner.ip_bytes();
    let outer = if n.vip.is_ipv4() {
        let mut o = Pkt::new(
            n.int,
            n.rs_tun,
            L4::Raw {
                proto: PROTO_IPIP,
                bytes: inner_ip,
            },
        );
        o.payload.clear();
        o.df = inner.df;
        o.id = if inner.df { 0 } else { id };
        o.tos = inner.tos;
        o.bytes()
    } else {
        let mut o = Pkt::new(
            n.int,
            n.rs_tun,
            L4::Raw {
                proto: 41,
                bytes: inner_ip,
            },
        );
        o.payload.clear();
        o.tos = inner.tos;
        o.bytes()
    };
    let mut f = outer;
    f[..6].copy_from_slice(&RS_TUN_MAC);
    f[6..12].copy_from_slice(&INT_MAC);
    f
}

pub(super) fn family_cases(n: &Net) -> Vec<Case> {
    let fam = if n.vip.is_ipv4() { "IPv4" } else { "IPv6" };
    let d = |s: &str| format!("{fam}: {s}");
    let mut cases = Vec::new();

    // --- NAT, TCP, both directions.
    let syn = Pkt::tcp(n.client, 40000, n.vip, PORT_NAT, SYN);
    let out = natted(&syn, n.rs_nat, RPORT_NAT, INT_MAC, RS_NAT_MAC);
    cases.push(case(
        &d("NAT TCP SYN to VIP:80 → RIP:8080, TTL-1, MACs toward RS"),
        &syn,
        EXT,
        TX_INT,
        Some(out.bytes()),
    ));
    let synack =
        Pkt::tcp(n.rs_nat, RPORT_NAT, n.client, 40000, SYN | ACK).macs(RS_NAT_MAC, INT_MAC);
    let mut back = synack.clone().macs(EXT_MAC, GW_MAC).ttl(63);
    back.src = n.vip;
    set_sport(&mut back, PORT_NAT);
    cases.push(case(
        &d("NAT TCP SYN-ACK from RIP:8080 → from VIP:80 toward the client's gateway"),
        &synack,
        INT,
        TX_EXT,
        Some(back.bytes()),
    ));
    let ack = Pkt::tcp(n.client, 40000, n.vip, PORT_NAT, ACK).payload(vec![0xab; 700]);
    let out = natted(&ack, n.rs_nat, RPORT_NAT, INT_MAC, RS_NAT_MAC);
    cases.push(case(
        &d("NAT TCP data on the established connection"),
        &ack,
        EXT,
        TX_INT,
        Some(out.bytes()),
    ));

    // --- NAT, UDP.
    let q = Pkt::udp(n.client, 5300, n.vip, PORT_DNS);
    let out = natted(&q, n.rs_nat, RPORT_DNS, INT_MAC, RS_NAT_MAC);
    cases.push(case(
        &d("NAT UDP to VIP:53 → RIP:5353"),
        &q,
        EXT,
        TX_INT,
        Some(out.bytes()),
    ));
    let a = Pkt::udp(n.rs_nat, RPORT_DNS, n.client, 5300).macs(RS_NAT_MAC, INT_MAC);
    let mut back = a.clone().macs(EXT_MAC, GW_MAC).ttl(63);
    back.src = n.vip;
    set_sport(&mut back, PORT_DNS);
    cases.push(case(
        &d("NAT UDP answer → from VIP:53"),
        &a,
        INT,
        TX_EXT,
        Some(back.bytes()),
    ));

    // --- ICMP errors about NATed flows.
    // The real server says port unreachable about the UDP query it got.
    let quoted = natted(&q, n.rs_nat, RPORT_DNS, INT_MAC, RS_NAT_MAC);
    let unreach = if n.vip.is_ipv4() {
        (3, 3, [0; 4])
    } else {
        (1, 4, [0; 4])
    };
    let err = icmp_error(n.rs_nat, n.client, unreach, &quoted.ip_bytes()).macs(RS_NAT_MAC, INT_MAC);
    let mut want = icmp_error(
        n.vip,
        n.client,
        unreach,
        &q.clone().ttl(q.ttl - 1).ip_bytes(),
    )
    .macs(EXT_MAC, GW_MAC);
    want.ttl = 63;
    cases.push(case(&d("NAT: ICMP unreachable from the RS quoting client→RIP:5353 → from the VIP quoting client→VIP:53"), &err, INT, TX_EXT, Some(want.bytes())));
    // A router on the client's side says the NAT answer was too big.
    // Frag needed / packet too big, MTU 1280.
    let big_type = if n.vip.is_ipv4() {
        (3, 4, [0, 0, 0x05, 0x00])
    } else {
        (2, 0, [0, 0, 0x05, 0x00])
    };
    let answer = Pkt::tcp(n.vip, PORT_NAT, n.client, 40000, ACK).ttl(60);
    let err = icmp_error(n.gw, n.vip, big_type, &answer.ip_bytes());
    let mut answer_rs = answer.clone();
    answer_rs.src = n.rs_nat;
    set_sport(&mut answer_rs, RPORT_NAT);
    let mut want =
        icmp_error(n.gw, n.rs_nat, big_type, &answer_rs.ip_bytes()).macs(INT_MAC, RS_NAT_MAC);
    want.ttl = 63;
    cases.push(case(
        &d("NAT: frag-needed about VIP:80→client → to the RS, quoting RIP:8080→client"),
        &err,
        EXT,
        TX_INT,
        Some(want.bytes()),
    ));

    // --- DR: MACs only.
    let syn = Pkt::tcp(n.client, 40001, n.vip, PORT_DR, SYN);
    let out = syn.clone().macs(INT_MAC, RS_DR_MAC);
    cases.push(case(
        &d("DR TCP SYN: only the MACs change"),
        &syn,
        EXT,
        TX_INT,
        Some(out.bytes()),
    ));
    let mut vlan = Pkt::tcp(n.client, 40002, n.vip, PORT_DR, SYN);
    vlan.vlan = Some(42);
    let out = vlan.clone().macs(INT_MAC, RS_DR_MAC);
    cases.push(case(
        &d("DR with an 802.1Q tag: the tag passes through"),
        &vlan,
        EXT,
        TX_INT,
        Some(out.bytes()),
    ));
    let answer = Pkt::tcp(n.vip, PORT_DR, n.client, 40001, ACK);
    let err = icmp_error(n.gw, n.vip, big_type, &answer.ip_bytes());
    let want = err.clone().macs(INT_MAC, RS_DR_MAC);
    cases.push(case(
        &d("DR: frag-needed about the RS's answer → to the RS unchanged but MACs"),
        &err,
        EXT,
        TX_INT,
        Some(want.bytes()),
    ));

    // --- TUN.
    let syn = Pkt::tcp(n.client, 40003, n.vip, PORT_TUN, SYN);
    cases.push(case(
        &d("TUN TCP SYN: IP-in-IP to the RS, DF copied, TTL 64"),
        &syn,
        EXT,
        TX_INT,
        Some(tunnelled(n, &syn, 0)),
    ));
    let mut dgram = Pkt::udp(n.client, 5301, n.vip, PORT_TUN);
    dgram.tos = 0x28;
    if n.vip.is_ipv4() {
        dgram.df = false;
    }
    cases.push(case(
        &d("TUN UDP: TOS copied, non-DF gets the worker's IP ID"),
        &dgram,
        EXT,
        TX_INT,
        Some(tunnelled(n, &dgram, 1)),
    ));
    // An IP packet of exactly the 1500-byte MTU.
    let big = Pkt::tcp(n.client, 40003, n.vip, PORT_TUN, ACK).payload(vec![
        7;
        1500 - 20
            - if n.vip.is_ipv4() {
                20
            } else {
                40
            }
    ]);
    let quoted_len = if n.vip.is_ipv4() { 576 - 28 } else { 1280 - 48 };
    let mtu = if n.vip.is_ipv4() {
        (3, 4, [0, 0, 0x05, 0xdc - 20])
    } else {
        (2, 0, [0, 0, 0x05, 0xdc - 40])
    };
    let mut want =
        icmp_error(n.vip, n.client, mtu, &big.ip_bytes()[..quoted_len]).macs(EXT_MAC, GW_MAC);
    want.df = false;
    want.id = 0;
    want.tos = if n.vip.is_ipv4() { 0xc0 } else { 0 };
    cases.push(case(
        &d("TUN: a full-MTU DF packet cannot grow → ICMP too-big to the client, MTU 1480/1460"),
        &big,
        EXT,
        TX_EXT,
        Some(want.bytes()),
    ));
    if n.vip.is_ipv4() {
        let mut big = Pkt::udp(n.client, 5302, n.vip, PORT_TUN).payload(vec![7; 1500 - 28]);
        big.df = false;
        cases.push(drop(
            &d("TUN: a full-MTU packet without DF is dropped (no fragmentation)"),
            &big,
            DropReason::TunnelTooBig,
        ));
    }

    cases.extend(partial_checksum_cases(n));

    // --- Not ours: the steering program passes these to the kernel; one
    // that reaches the pipeline anyway is dropped as unclaimed.
    cases.push(case(
        &d("TCP to the VIP on a port that is no service → kernel"),
        &Pkt::tcp(n.client, 40004, n.vip, 22, SYN),
        EXT,
        Verdict::Drop(DropReason::NoConnection),
        None,
    ));
    cases.push(case(
        &d("TCP to the director's own address → kernel"),
        &Pkt::tcp(n.client, 40004, n.ext, 22, SYN),
        EXT,
        Verdict::Drop(DropReason::NoConnection),
        None,
    ));
    let echo = if n.vip.is_ipv4() { 8 } else { 128 };
    let ping = Pkt::new(
        n.client,
        n.vip,
        L4::Raw {
            proto: if n.vip.is_ipv4() { 1 } else { 58 },
            bytes: vec![echo, 0, 0, 0, 0, 1, 0, 1],
        },
    );
    cases.push(case(
        &d("ICMP echo to the VIP → kernel"),
        &ping,
        EXT,
        Verdict::Drop(DropReason::OtherProtocol),
        None,
    ));
    let stray = icmp_error(
        n.gw,
        n.vip,
        unreach,
        &Pkt::udp(n.vip, 999, n.client, 998).ip_bytes(),
    );
    cases.push(case(
        &d("ICMP error about no tracked flow → kernel"),
        &stray,
        EXT,
        Verdict::Drop(DropReason::IcmpNoConnection),
        None,
    ));

    // --- Bad input and policy drops.
    cases.push(drop(
        &d("TTL 1 on a NAT path"),
        &Pkt::tcp(n.client, 40005, n.vip, PORT_NAT, SYN).ttl(1),
        DropReason::TtlExpired,
    ));
    // Segments of no connection: answered with a reset, as the local stack
    // answers them on an IPVS director (RFC 793 §3.4 sequence numbers; the
    // test packets carry seq 1000, ack 2000 and 9 bytes of payload).
    cases.push(case(
        &d("TCP ACK with no connection → RST, seq = its ack, back to the client"),
        &Pkt::tcp(n.client, 40006, n.vip, PORT_NAT, ACK),
        EXT,
        TX_EXT,
        Some(reset_pkt(n.vip, PORT_NAT, n.client, 40006, 2000, None).bytes()),
    ));
    cases.push(case(
        &d("TCP FIN without ACK, no connection → RST|ACK, ack = seq + 9 + 1"),
        &Pkt::tcp(n.client, 40009, n.vip, PORT_DR, FIN),
        EXT,
        TX_EXT,
        Some(reset_pkt(n.vip, PORT_DR, n.client, 40009, 0, Some(1010)).bytes()),
    ));
    cases.push(drop(
        &d("TCP RST with no connection: never answered"),
        &Pkt::tcp(n.client, 40006, n.vip, PORT_NAT, 0x04),
        DropReason::TcpNotSyn,
    ));
    cases.push(drop(
        &d("source port 0"),
        &Pkt::tcp(n.client, 0, n.vip, PORT_NAT, SYN),
        DropReason::ZeroPort,
    ));
    let martian = if n.vip.is_ipv4() {
        ip("127.0.0.1")
    } else {
        ip("::1")
    };
    cases.push(drop(
        &d("loopback source"),
        &Pkt::tcp(martian, 40007, n.vip, PORT_NAT, SYN),
        DropReason::Martian,
    ));
    let multicast = if n.vip.is_ipv4() {
        ip("224.0.0.1")
    } else {
        ip("ff02::1")
    };
    cases.push(drop(
        &d("multicast source"),
        &Pkt::udp(multicast, 40007, n.vip, PORT_DNS),
        DropReason::Martian,
    ));
    // The real server's MAC is not known yet: the frame is rewritten but for
    // its destination MAC and held until the neighbour is resolved.
    let syn = Pkt::tcp(n.client, 40008, n.vip, PORT_UNRESOLVED, SYN);
    cases.push(
        case(
            &d("next hop without a MAC → held, rewritten but for the destination MAC"),
            &syn,
            EXT,
            Verdict::Hold { port: INT },
            Some(syn.clone().macs(INT_MAC, [0; 6]).bytes()),
        )
        .held_for(n.rs_unknown),
    );
    let short_quote = icmp_error(
        n.gw,
        n.vip,
        unreach,
        &answer.ip_bytes()[..if n.vip.is_ipv4() { 24 } else { 44 }],
    );
    cases.push(drop(
        &d("ICMP error quoting fewer than 8 transport bytes"),
        &short_quote,
        DropReason::BadIcmpQuote,
    ));
    let full = syn.bytes();
    cases.push(raw(
        &d("frame cut inside the IP header"),
        full[..14 + 10].to_vec(),
        Verdict::Drop(DropReason::Truncated),
    ));
    cases.push(raw(
        &d("frame cut inside the TCP header"),
        full[..full.len() - 9 - 10].to_vec(),
        Verdict::Drop(DropReason::Truncated),
    ));
    cases
}

/// Frames whose TCP/UDP checksum a sender's offload left partial (the
/// pseudo-header sum only): every method sends them on with the checksum
/// finished, as a receiver needs it. A genuinely bad checksum stays bad.
fn partial_checksum_cases(n: &Net) -> Vec<Case> {
    let fam = if n.vip.is_ipv4() { "IPv4" } else { "IPv6" };
    let d = |s: &str| format!("{fam}: partial checksum: {s}");
    let mut cases = Vec::new();
    // The NAT connection from client port 40000 is established by now.
    let data = Pkt::tcp(n.client, 40000, n.vip, PORT_NAT, ACK).payload(vec![0x5a; 1000]);
    let out = natted(&data, n.rs_nat, RPORT_NAT, INT_MAC, RS_NAT_MAC);
    cases.push(case(
        &d("NAT TCP data → RIP, checksum finished before the rewrite"),
        &data.clone().partial_checksum(),
        EXT,
        TX_INT,
        Some(out.bytes()),
    ));
    let answer = Pkt::tcp(n.rs_nat, RPORT_NAT, n.client, 40000, ACK)
        .macs(RS_NAT_MAC, INT_MAC)
        .payload(vec![0xa5; 1400]);
    let mut back = answer.clone().macs(EXT_MAC, GW_MAC).ttl(63);
    back.src = n.vip;
    set_sport(&mut back, PORT_NAT);
    cases.push(case(
        &d("NAT TCP answer from the RS → from the VIP"),
        &answer.clone().partial_checksum(),
        INT,
        TX_EXT,
        Some(back.bytes()),
    ));
    let q = Pkt::udp(n.client, 5310, n.vip, PORT_DNS);
    let out = natted(&q, n.rs_nat, RPORT_DNS, INT_MAC, RS_NAT_MAC);
    cases.push(case(
        &d("NAT UDP query → RIP:5353"),
        &q.clone().partial_checksum(),
        EXT,
        TX_INT,
        Some(out.bytes()),
    ));
    let syn = Pkt::tcp(n.client, 40005, n.vip, PORT_DR, SYN);
    cases.push(case(
        &d("DR TCP SYN: MACs changed, checksum finished"),
        &syn.clone().partial_checksum(),
        EXT,
        TX_INT,
        Some(syn.clone().macs(INT_MAC, RS_DR_MAC).bytes()),
    ));
    let syn = Pkt::tcp(n.client, 40006, n.vip, PORT_TUN, SYN);
    cases.push(case(
        &d("TUN TCP SYN: the inner checksum finished, then encapsulated"),
        &syn.clone().partial_checksum(),
        EXT,
        TX_INT,
        Some(tunnelled(n, &syn, 0)),
    ));
    // Neither a full checksum nor the pseudo-header sum: corrupt in
    // transit. xvs does not verify transport checksums; the receiver
    // rejects it as it would have without xvs.
    let syn = Pkt::tcp(n.client, 40007, n.vip, PORT_DR, SYN);
    let at = if n.vip.is_ipv4() {
        14 + 20 + 16
    } else {
        14 + 40 + 16
    };
    let mut bad = syn.bytes();
    bad[at] ^= 0x40;
    let mut want = syn.clone().macs(INT_MAC, RS_DR_MAC).bytes();
    want[at] ^= 0x40;
    cases.push(Case {
        description: d("DR TCP SYN with a bad checksum: sent on as bad"),
        input: bad,
        ingress: EXT,
        verdict: TX_INT,
        output: Some(want),
        verify: false,
        held_for: None,
    });
    cases
}

pub(super) fn v4_only_cases() -> Vec<Case> {
    let n = v4();
    let mut cases = Vec::new();
    let base = Pkt::tcp(n.client, 41000, n.vip, PORT_NAT, SYN);
    let bytes = base.bytes();

    let mut b = bytes.clone();
    b[14] = 0x44; // IHL 4
    cases.push(raw(
        "IPv4: IHL < 5",
        b,
        Verdict::Drop(DropReason::BadIpHeader),
    ));
    let mut b = bytes.clone();
    b[14 + 2..14 + 4].copy_from_slice(&12u16.to_be_bytes());
    cases.push(raw(
        "IPv4: total length below the header length",
        b,
        Verdict::Drop(DropReason::BadIpLength),
    ));
    let mut b = bytes.clone();
    b[14 + 2..14 + 4].copy_from_slice(&1400u16.to_be_bytes());
    cases.push(raw(
        "IPv4: total length past the frame",
        b,
        Verdict::Drop(DropReason::Truncated),
    ));
    let mut b = bytes.clone();
    b[14 + 10] ^= 0x55;
    cases.push(raw(
        "IPv4: bad header checksum",
        b,
        Verdict::Drop(DropReason::BadIpChecksum),
    ));
    let mut later = Pkt::udp(n.client, 5303, n.vip, PORT_DNS);
    later.df = false;
    let mut b = later.bytes();
    b[14 + 6..14 + 8].copy_from_slice(&0x00b9u16.to_be_bytes()); // offset 185*8
    fix_ipv4_checksum(&mut b);
    cases.push(raw(
        "IPv4: a later fragment",
        b,
        Verdict::Drop(DropReason::Fragment),
    ));

    let mut first = Pkt::udp(n.client, 5304, n.vip, PORT_DNS).payload(vec![9; 64]);
    first.df = false;
    let mut b = first.bytes();
    b[14 + 6..14 + 8].copy_from_slice(&0x2000u16.to_be_bytes()); // MF
    fix_ipv4_checksum(&mut b);
    // UDP length says 200 although the fragment carries 72 transport bytes.
    b[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&200u16.to_be_bytes());
    let mut out = b.clone();
    out[..6].copy_from_slice(&RS_NAT_MAC);
    out[6..12].copy_from_slice(&INT_MAC);
    let mut expect = first.clone();
    expect.dst = n.rs_nat;
    set_dport(&mut expect, RPORT_DNS);
    expect.ttl -= 1;
    let e = expect.bytes();
    // Same header fields as the input fragment, with NAT applied by etherparse's
    // serialiser; then the same MF bit and UDP length, checksums adjusted.
    out[14..14 + 20].copy_from_slice(&e[14..14 + 20]);
    out[14 + 6..14 + 8].copy_from_slice(&0x2000u16.to_be_bytes());
    fix_ipv4_checksum(&mut out);
    // The UDP header as etherparse builds it for the rewritten datagram, but
    // with the input's length field: xvs leaves the length alone, and the
    // input's checksum was already off by exactly that field.
    out[14 + 20..14 + 28].copy_from_slice(&e[14 + 20..14 + 28]);
    out[14 + 24..14 + 26].copy_from_slice(&200u16.to_be_bytes());
    cases.push(Case {
        description: "IPv4: a first fragment of a new flow is forwarded".into(),
        input: b,
        ingress: EXT,
        verdict: TX_INT,
        output: Some(out),
        verify: true,
        held_for: None,
    });

    let mut lsrr = base.clone();
    lsrr.options = vec![131, 7, 4, 192, 0, 2, 99, 0];
    cases.push(drop(
        "IPv4: loose source route option",
        &lsrr,
        DropReason::SourceRoute,
    ));
    let mut bad_opt = base.clone();
    bad_opt.options = vec![7, 9, 4, 0];
    cases.push(drop(
        "IPv4: option longer than the header",
        &bad_opt,
        DropReason::BadIpOptions,
    ));
    let mut rr = Pkt::tcp(n.client, 41001, n.vip, PORT_NAT, SYN);
    rr.options = vec![1, 7, 3, 4, 0, 0, 0, 0]; // NOP, record route (empty)
    let out = natted(&rr, n.rs_nat, RPORT_NAT, INT_MAC, RS_NAT_MAC);
    cases.push(case(
        "IPv4: options are kept through NAT",
        &rr,
        EXT,
        TX_INT,
        Some(out.bytes()),
    ));

    let mut nock = Pkt::new(
        n.client,
        n.vip,
        L4::UdpNoChecksum {
            sport: 5305,
            dport: PORT_DNS,
        },
    );
    nock.id = 7;
    let mut out = natted(&nock, n.rs_nat, RPORT_DNS, INT_MAC, RS_NAT_MAC);
    out.l4 = L4::UdpNoChecksum {
        sport: 5305,
        dport: RPORT_DNS,
    };
    cases.push(case(
        "IPv4: UDP without checksum stays without",
        &nock,
        EXT,
        TX_INT,
        Some(out.bytes()),
    ));

    cases.push(raw(
        "ARP → kernel",
        frame(GW_MAC, [0xff; 6], None, 0x0806, &[0; 28]),
        Verdict::Drop(DropReason::NotIp),
    ));
    cases.push(raw(
        "runt frame",
        vec![1, 2, 3],
        Verdict::Drop(DropReason::Truncated),
    ));
    cases
}

pub(super) fn v6_only_cases() -> Vec<Case> {
    let n = v6();
    let mut cases = Vec::new();
    // Hop-by-hop (PadN) and destination options in front of TCP.
    let tcp = Pkt::tcp(n.client, 42000, n.vip, PORT_NAT, SYN);
    let ip = tcp.ip_bytes();
    let with_exts = |next_after: u8, ext_routing: Option<u8>| {
        let mut b = ip[..40].to_vec();
        let mut exts = Vec::new();
        exts.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]); // hop-by-hop → dest opts
        match ext_routing {
            Some(left) => {
                exts.extend_from_slice(&[43, 0, 1, 4, 0, 0, 0, 0]); // dest opts → routing
                exts.extend_from_slice(&[next_after, 0, 0, left, 0, 0, 0, 0]);
            }
            None => exts.extend_from_slice(&[next_after, 0, 1, 4, 0, 0, 0, 0]),
        }
        b[6] = 0; // hop-by-hop first
        b.extend_from_slice(&exts);
        b.extend_from_slice(&ip[40..]);
        let pl = (b.len() - 40) as u16;
        b[4..6].copy_from_slice(&pl.to_be_bytes());
        b
    };
    let input = with_exts(6, None);
    let out_pkt = natted(&tcp, n.rs_nat, RPORT_NAT, INT_MAC, RS_NAT_MAC);
    let out_ip = out_pkt.ip_bytes();
    let mut want = out_ip[..40].to_vec();
    want[6] = 0;
    want.extend_from_slice(&input[40..56]);
    want.extend_from_slice(&out_ip[40..]);
    let pl = (want.len() - 40) as u16;
    want[4..6].copy_from_slice(&pl.to_be_bytes());
    cases.push(Case {
        description: "IPv6: NAT through hop-by-hop and destination options".into(),
        input: frame(GW_MAC, EXT_MAC, None, 0x86dd, &input),
        ingress: EXT,
        verdict: TX_INT,
        output: Some(frame(INT_MAC, RS_NAT_MAC, None, 0x86dd, &want)),
        verify: true,
        held_for: None,
    });
    let routed = with_exts(6, Some(1));
    cases.push(raw(
        "IPv6: routing header with segments left",
        frame(GW_MAC, EXT_MAC, None, 0x86dd, &routed),
        Verdict::Drop(DropReason::SourceRoute),
    ));
    let done = with_exts(6, Some(0));
    cases.push(raw(
        "IPv6: routing header with no segments left is forwarded",
        frame(GW_MAC, EXT_MAC, None, 0x86dd, &done),
        TX_INT,
    ));

    // Fragment header, offset 0 with M (first) and a later one.
    let udp = Pkt::udp(n.client, 5400, n.vip, PORT_DNS);
    let uip = udp.ip_bytes();
    let frag = |off_m: u16| {
        let mut b = uip[..40].to_vec();
        b[6] = 44;
        b.extend_from_slice(&[17, 0]);
        b.extend_from_slice(&off_m.to_be_bytes());
        b.extend_from_slice(&[0, 0, 0, 9]);
        b.extend_from_slice(&uip[40..]);
        let pl = (b.len() - 40) as u16;
        b[4..6].copy_from_slice(&pl.to_be_bytes());
        frame(GW_MAC, EXT_MAC, None, 0x86dd, &b)
    };
    cases.push(raw(
        "IPv6: a later fragment",
        frag(0x0100),
        Verdict::Drop(DropReason::Fragment),
    ));

    let nock = Pkt::new(
        n.client,
        n.vip,
        L4::UdpNoChecksum {
            sport: 5401,
            dport: PORT_DNS,
        },
    );
    cases.push(drop(
        "IPv6: UDP with checksum 0",
        &nock,
        DropReason::UdpZeroChecksum,
    ));
    // The same on the NAT answer path (client:5300 ↔ VIP:53 is open).
    let zero_answer = Pkt::new(
        n.rs_nat,
        n.client,
        L4::UdpNoChecksum {
            sport: RPORT_DNS,
            dport: 5300,
        },
    );
    cases.push(case(
        "IPv6: a NAT answer with UDP checksum 0",
        &zero_answer.macs(RS_NAT_MAC, INT_MAC),
        INT,
        Verdict::Drop(DropReason::UdpZeroChecksum),
        None,
    ));
    let mut b = tcp.bytes();
    b[14 + 4..14 + 6].copy_from_slice(&0u16.to_be_bytes());
    cases.push(raw(
        "IPv6: payload length 0 (jumbogram)",
        b,
        Verdict::Drop(DropReason::BadIpLength),
    ));
    cases
}

fn fix_ipv4_checksum(frame: &mut [u8]) {
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    frame[14 + 10..14 + 12].fill(0);
    let h = etherparse::Ipv4HeaderSlice::from_slice(&frame[14..14 + ihl]).expect("header");
    let c = h.to_header().calc_header_checksum();
    frame[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
}

/// The real server's port-unreachable about the NAT UDP query client:5300 →
/// VIP:53 of `n` (which the family cases open), as carried by the *other*
/// IP version: ICMPv6 in IPv4 (protocol 58) or ICMPv4 in IPv6 (next header
/// 1). That is no error message of either version: the pipeline must leave
/// it alone, not read it as one about the connection.
pub(super) fn icmp_in_the_other_ip(n: &Net) -> Case {
    let q = Pkt::udp(n.client, 5300, n.vip, PORT_DNS);
    let quoted = natted(&q, n.rs_nat, RPORT_DNS, INT_MAC, RS_NAT_MAC);
    let (kind, ip_len) = if n.vip.is_ipv4() {
        ((3, 3, [0; 4]), 20)
    } else {
        ((1, 4, [0; 4]), 40)
    };
    let icmp =
        icmp_error(n.rs_nat, n.client, kind, &quoted.ip_bytes()).ip_bytes()[ip_len..].to_vec();
    let input = if n.vip.is_ipv4() {
        let o = v6();
        let mut b = Pkt::udp(o.rs_nat, RPORT_DNS, o.client, 5300).ip_bytes()[..40].to_vec();
        b[6] = 1;
        b[4..6].copy_from_slice(&(icmp.len() as u16).to_be_bytes());
        b.extend_from_slice(&icmp);
        frame(RS_NAT_MAC, INT_MAC, None, 0x86dd, &b)
    } else {
        let o = v4();
        let mut b = Pkt::udp(o.rs_nat, RPORT_DNS, o.client, 5300).ip_bytes()[..20].to_vec();
        b[9] = 58;
        b[2..4].copy_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
        b.extend_from_slice(&icmp);
        let mut f = frame(RS_NAT_MAC, INT_MAC, None, 0x0800, &b);
        fix_ipv4_checksum(&mut f);
        f
    };
    Case {
        description: "an ICMP error of the other IP version's protocol number is not ours".into(),
        input,
        ingress: INT,
        verdict: Verdict::Drop(DropReason::OtherProtocol),
        output: None,
        verify: true,
        held_for: None,
    }
}

/// The name of a case's test: the first eight words of its description,
/// without the family, lowercase, joined by `_` (`cargo test
/// golden::ipv4::nat_tcp_syn` runs one).
fn case_name(description: &str) -> String {
    let d = description
        .strip_prefix("IPv4: ")
        .or_else(|| description.strip_prefix("IPv6: "))
        .unwrap_or(description);
    let lower = d.to_ascii_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(8)
        .collect();
    words.join("_")
}

/// Every IPv4 case, in the order an exchange runs them.
fn ipv4_cases() -> Vec<Case> {
    let n = v4();
    let mut cases = family_cases(&n);
    cases.extend(v4_only_cases());
    cases.push(icmp_in_the_other_ip(&n));
    cases
}

/// Every IPv6 case, in the order an exchange runs them.
fn ipv6_cases() -> Vec<Case> {
    let n = v6();
    let mut cases = family_cases(&n);
    cases.extend(v6_only_cases());
    cases.push(icmp_in_the_other_ip(&n));
    cases
}

/// Checks the case called `name`: the cases before it run first through the
/// same pipeline, unchecked, to build the connections it relies on, as the
/// exchange would have; then it runs and is compared.
fn run_case(cases: Vec<Case>, name: &str) {
    let at = cases
        .iter()
        .position(|c| case_name(&c.description) == name)
        .unwrap_or_else(|| panic!("no golden case is named {name}"));
    let mut p = pipeline();
    for (i, c) in cases.iter().enumerate().take(at) {
        send_case(&mut p, i, c);
    }
    let c = &cases[at];
    let (v, got) = send_case(&mut p, at, c);
    let held = matches!(v, Verdict::Hold { .. })
        .then(|| p.held_next_hop())
        .flatten();
    if held != c.held_for {
        panic!(
            "#{at} {}: held for {held:?}, want {:?}",
            c.description, c.held_for
        );
    }
    if let Err(e) = check(c, v, &got) {
        panic!("#{at} {}: {e}", c.description);
    }
}

/// Runs case `i` at its time (1 s + i ms), with room around the frame.
fn send_case(p: &mut super::Pipeline, i: usize, c: &Case) -> (Verdict, Vec<u8>) {
    let mut buf = vec![0u8; 4096];
    let head = 256;
    buf[head..head + c.input.len()].copy_from_slice(&c.input);
    let mut f = Frame::new(&mut buf, head, c.input.len());
    let v = p.process(Millis(1000 + i as u64), c.ingress, &mut f);
    (v, f.data().to_vec())
}

/// The case's verdict, output frame and checksums, against what came out.
fn check(c: &Case, v: Verdict, got: &[u8]) -> Result<(), String> {
    if v != c.verdict {
        return Err(format!("verdict {v:?}, want {:?}", c.verdict));
    }
    if let Some(want) = &c.output {
        let mut want = want.clone();
        // IPv6 tunnels: the flow label is xvs's hash; check it is set, then compare the rest.
        if got.len() > 20 && got[12..14] == [0x86, 0xdd] && got[14 + 6] == 41 {
            let label = [got[15] & 0x0f, got[16], got[17]];
            if label == [0, 0, 0] {
                return Err("the tunnel's flow label is not set".into());
            }
            want[15] = (want[15] & 0xf0) | label[0];
            want[16..18].copy_from_slice(&label[1..]);
        }
        if got != want {
            return Err(format!("\n   got {}\n  want {}", hex(got), hex(&want)));
        }
    }
    if let (Verdict::Transmit { .. } | Verdict::Hold { .. }, true) = (v, c.verify) {
        verify_checksums(got)?;
    }
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One test per case, named by [`case_name`], in run order.
macro_rules! golden_tests {
    ($family:ident, $cases:ident, [$($name:ident,)*]) => {
        mod $family {
            /// The tests' names, in run order.
            pub(super) const NAMES: &[&str] = &[$(stringify!($name),)*];
            $(
                #[test]
                fn $name() {
                    super::run_case(super::$cases(), stringify!($name));
                }
            )*
        }
    };
}

golden_tests!(
    ipv4,
    ipv4_cases,
    [
        nat_tcp_syn_to_vip_80_rip_8080,
        nat_tcp_syn_ack_from_rip_8080_from,
        nat_tcp_data_on_the_established_connection,
        nat_udp_to_vip_53_rip_5353,
        nat_udp_answer_from_vip_53,
        nat_icmp_unreachable_from_the_rs_quoting_client,
        nat_frag_needed_about_vip_80_client_to,
        dr_tcp_syn_only_the_macs_change,
        dr_with_an_802_1q_tag_the_tag,
        dr_frag_needed_about_the_rs_s_answer,
        tun_tcp_syn_ip_in_ip_to_the,
        tun_udp_tos_copied_non_df_gets_the,
        tun_a_full_mtu_df_packet_cannot_grow,
        tun_a_full_mtu_packet_without_df_is,
        partial_checksum_nat_tcp_data_rip_checksum_finished,
        partial_checksum_nat_tcp_answer_from_the_rs,
        partial_checksum_nat_udp_query_rip_5353,
        partial_checksum_dr_tcp_syn_macs_changed_checksum,
        partial_checksum_tun_tcp_syn_the_inner_checksum,
        partial_checksum_dr_tcp_syn_with_a_bad,
        tcp_to_the_vip_on_a_port_that,
        tcp_to_the_director_s_own_address_kernel,
        icmp_echo_to_the_vip_kernel,
        icmp_error_about_no_tracked_flow_kernel,
        ttl_1_on_a_nat_path,
        tcp_ack_with_no_connection_rst_seq_its,
        tcp_fin_without_ack_no_connection_rst_ack,
        tcp_rst_with_no_connection_never_answered,
        source_port_0,
        loopback_source,
        multicast_source,
        next_hop_without_a_mac_held_rewritten_but,
        icmp_error_quoting_fewer_than_8_transport_bytes,
        frame_cut_inside_the_ip_header,
        frame_cut_inside_the_tcp_header,
        ihl_5,
        total_length_below_the_header_length,
        total_length_past_the_frame,
        bad_header_checksum,
        a_later_fragment,
        a_first_fragment_of_a_new_flow_is,
        loose_source_route_option,
        option_longer_than_the_header,
        options_are_kept_through_nat,
        udp_without_checksum_stays_without,
        arp_kernel,
        runt_frame,
        an_icmp_error_of_the_other_ip_version,
    ]
);

golden_tests!(
    ipv6,
    ipv6_cases,
    [
        nat_tcp_syn_to_vip_80_rip_8080,
        nat_tcp_syn_ack_from_rip_8080_from,
        nat_tcp_data_on_the_established_connection,
        nat_udp_to_vip_53_rip_5353,
        nat_udp_answer_from_vip_53,
        nat_icmp_unreachable_from_the_rs_quoting_client,
        nat_frag_needed_about_vip_80_client_to,
        dr_tcp_syn_only_the_macs_change,
        dr_with_an_802_1q_tag_the_tag,
        dr_frag_needed_about_the_rs_s_answer,
        tun_tcp_syn_ip_in_ip_to_the,
        tun_udp_tos_copied_non_df_gets_the,
        tun_a_full_mtu_df_packet_cannot_grow,
        partial_checksum_nat_tcp_data_rip_checksum_finished,
        partial_checksum_nat_tcp_answer_from_the_rs,
        partial_checksum_nat_udp_query_rip_5353,
        partial_checksum_dr_tcp_syn_macs_changed_checksum,
        partial_checksum_tun_tcp_syn_the_inner_checksum,
        partial_checksum_dr_tcp_syn_with_a_bad,
        tcp_to_the_vip_on_a_port_that,
        tcp_to_the_director_s_own_address_kernel,
        icmp_echo_to_the_vip_kernel,
        icmp_error_about_no_tracked_flow_kernel,
        ttl_1_on_a_nat_path,
        tcp_ack_with_no_connection_rst_seq_its,
        tcp_fin_without_ack_no_connection_rst_ack,
        tcp_rst_with_no_connection_never_answered,
        source_port_0,
        loopback_source,
        multicast_source,
        next_hop_without_a_mac_held_rewritten_but,
        icmp_error_quoting_fewer_than_8_transport_bytes,
        frame_cut_inside_the_ip_header,
        frame_cut_inside_the_tcp_header,
        nat_through_hop_by_hop_and_destination_options,
        routing_header_with_segments_left,
        routing_header_with_no_segments_left_is_forwarded,
        a_later_fragment,
        udp_with_checksum_0,
        a_nat_answer_with_udp_checksum_0,
        payload_length_0_jumbogram,
        an_icmp_error_of_the_other_ip_version,
    ]
);

/// A case added without its test, or a test whose case is gone or renamed,
/// fails here.
#[test]
fn every_golden_case_has_its_own_test() {
    for (cases, names) in [(ipv4_cases(), ipv4::NAMES), (ipv6_cases(), ipv6::NAMES)] {
        let got: Vec<String> = cases.iter().map(|c| case_name(&c.description)).collect();
        assert_eq!(
            got, names,
            "golden_tests! lists must name every case, in order"
        );
    }
}

/// Sends one frame through `p`; the verdict and the frame as it came out.
fn send(p: &mut super::Pipeline, now: u64, pkt: &Pkt, port: u8) -> (Verdict, Vec<u8>) {
    let b = pkt.bytes();
    let mut buf = vec![0u8; 2048];
    buf[..b.len()].copy_from_slice(&b);
    let mut f = Frame::new(&mut buf, 0, b.len());
    let v = p.process(Millis(now), port, &mut f);
    (v, f.data().to_vec())
}

/// The destination address of a frame that came out.
fn dst_of(frame: &[u8]) -> Option<std::net::IpAddr> {
    crate::packet::parse(frame).map(|q| q.dst).ok()
}

/// The test network's pipeline with a second real server (the DR address,
/// reached by NAT too) on the NAT service; `edit` adjusts both servers.
fn pipeline_with_two_nat_reals(
    edit: impl FnOnce(&mut [crate::service::RealServer]),
) -> super::Pipeline {
    use crate::service::{RealId, RealServer, ServiceTable};
    let base = snapshot();
    let mut services = base.services.services().to_vec();
    let second = RealServer {
        id: RealId(40),
        addr: v4().rs_dr,
        ..services[0].reals[0].clone()
    };
    services[0].reals.push(second);
    edit(&mut services[0].reals);
    let cfg = super::Snapshot::new(
        ServiceTable::new(services),
        base.ports.clone(),
        base.next_hops.clone(),
        Default::default(),
    );
    let mut p = pipeline();
    p.set_snapshot(std::sync::Arc::new(cfg));
    p
}

#[test]
fn completed_checksums_are_counted_and_full_ones_left_alone() {
    for n in [v4(), v6()] {
        let mut p = pipeline();
        let syn = Pkt::tcp(n.client, 41000, n.vip, PORT_DR, SYN);
        let (v, out) = send(&mut p, 1000, &syn, 0);
        assert_eq!(v, Verdict::Transmit { port: 1 });
        assert_eq!(out, syn.clone().macs(INT_MAC, RS_DR_MAC).bytes());
        assert_eq!(p.stats().checksums_completed, 0);
        let (v, out) = send(&mut p, 1001, &syn.clone().partial_checksum(), 0);
        assert_eq!(v, Verdict::Transmit { port: 1 });
        assert_eq!(out, syn.clone().macs(INT_MAC, RS_DR_MAC).bytes());
        assert_eq!(p.stats().checksums_completed, 1);
    }
}

#[test]
fn a_first_fragment_keeps_its_checksum_field() {
    // A first fragment whose field happens to hold the pseudo-header sum of
    // its own (partial) length must not be "completed" over a part of the
    // datagram: senders never leave a fragmented datagram's checksum partial.
    let n = v4();
    let mut p = pipeline();
    let mut q = Pkt::tcp(n.client, 41001, n.vip, PORT_DR, SYN).payload(vec![3; 64]);
    q.df = false;
    let mut b = q.partial_checksum().bytes();
    b[14 + 6] |= 0x20; // more fragments
    fix_ipv4_checksum(&mut b);
    let field = b[14 + 20 + 16..14 + 20 + 18].to_vec();
    let mut buf = vec![0u8; 2048];
    buf[..b.len()].copy_from_slice(&b);
    let mut f = Frame::new(&mut buf, 0, b.len());
    assert_eq!(
        p.process(Millis(1000), 0, &mut f),
        Verdict::Transmit { port: 1 }
    );
    assert_eq!(&f.data()[14 + 20 + 16..14 + 20 + 18], &field[..]);
    assert_eq!(p.stats().checksums_completed, 0);
}

#[test]
fn traffic_is_counted_per_real_server() {
    let n = v4();
    let mut p = pipeline();
    let syn = Pkt::tcp(n.client, 40000, n.vip, PORT_NAT, SYN);
    assert_eq!(send(&mut p, 1, &syn, EXT).0, TX_INT);
    let ack = Pkt::tcp(n.client, 40000, n.vip, PORT_NAT, ACK).payload(vec![0; 100]);
    assert_eq!(send(&mut p, 1, &ack, EXT).0, TX_INT);
    let reply = Pkt::tcp(n.rs_nat, RPORT_NAT, n.client, 40000, SYN | ACK).macs(RS_NAT_MAC, INT_MAC);
    assert_eq!(send(&mut p, 1, &reply, INT).0, TX_EXT);
    let t = p.traffic().get(crate::service::RealId(0)).unwrap();
    let l = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(l(&t.conns), 1);
    assert_eq!(l(&t.inpkts), 2);
    assert_eq!(
        l(&t.inbytes),
        (syn.ip_bytes().len() + ack.ip_bytes().len()) as u64
    );
    assert_eq!(l(&t.outpkts), 1);
    assert_eq!(l(&t.outbytes), reply.ip_bytes().len() as u64);
}

#[test]
fn upper_threshold_sends_new_connections_elsewhere() {
    let n = v4();
    // The first server takes at most one connection.
    let mut p = pipeline_with_two_nat_reals(|reals| reals[0].upper_threshold = 1);
    let dsts: Vec<_> = (0..4u16)
        .map(|k| {
            let (v, out) = send(
                &mut p,
                1,
                &Pkt::tcp(n.client, 41000 + k, n.vip, PORT_NAT, SYN),
                EXT,
            );
            assert_eq!(v, TX_INT);
            dst_of(&out)
        })
        .collect();
    // rr alternates, but the first server is overloaded after one connection.
    assert_eq!(dsts[0], Some(n.rs_nat));
    assert!(dsts[1..].iter().all(|d| *d == Some(n.rs_dr)), "{dsts:?}");
}

/// `p`'s configuration with the NAT service's real servers replaced by
/// `reals` (the same ids mean the same servers) and `policy`.
fn with_nat_reals(
    p: &mut super::Pipeline,
    reals: Vec<crate::service::RealServer>,
    policy: super::Policy,
) {
    let c = p.snapshot().clone();
    let mut services = c.services.services().to_vec();
    services[0].reals = reals;
    let cfg = super::Snapshot::with_previous(
        crate::service::ServiceTable::new(services),
        c.ports.clone(),
        c.next_hops.clone(),
        policy,
        Some(&c),
    );
    p.set_snapshot(std::sync::Arc::new(cfg));
}

#[test]
fn a_real_server_deleted_and_added_back_keeps_its_connections() {
    let n = v4();
    let mut p = pipeline();
    let reals = p.snapshot().services.services()[0].reals.clone();
    let client = |flags: u8| Pkt::tcp(n.client, 40000, n.vip, PORT_NAT, flags);
    let from_rs =
        |flags: u8| Pkt::tcp(n.rs_nat, RPORT_NAT, n.client, 40000, flags).macs(RS_NAT_MAC, INT_MAC);
    assert_eq!(send(&mut p, 1, &client(SYN), EXT).0, TX_INT);
    assert_eq!(send(&mut p, 2, &from_rs(SYN | ACK), INT).0, TX_EXT);
    assert_eq!(send(&mut p, 3, &client(ACK), EXT).0, TX_INT);
    // ipvsadm -d: the connection's packets are dropped, the entry stays.
    with_nat_reals(&mut p, Vec::new(), Default::default());
    let dropped = Verdict::Drop(DropReason::DestGone);
    assert_eq!(send(&mut p, 4, &client(ACK), EXT).0, dropped);
    assert_eq!(send(&mut p, 5, &client(ACK), EXT).0, dropped);
    assert_eq!(p.conns().entries(Millis(5)).len(), 1);
    // Its answers still reach the client: the connection holds the real
    // server, which a later snapshot still knows as one that was.
    assert_eq!(send(&mut p, 5, &from_rs(ACK), INT).0, TX_EXT);
    // ipvsadm -a of the same server (its old id): the connection resumes.
    with_nat_reals(&mut p, reals.clone(), Default::default());
    assert_eq!(send(&mut p, 6, &client(ACK), EXT).0, TX_INT);
    assert_eq!(send(&mut p, 7, &from_rs(ACK), INT).0, TX_EXT);
    assert_eq!(p.stats().new_conns, 1);

    // With expire_nodest_conn the first packet after the deletion ends it.
    let expire = super::Policy {
        expire_nodest_conn: true,
        ..Default::default()
    };
    with_nat_reals(&mut p, Vec::new(), expire);
    assert_eq!(send(&mut p, 8, &client(ACK), EXT).0, dropped);
    assert_eq!(p.conns().entries(Millis(8)).len(), 0);
    with_nat_reals(&mut p, reals, expire);
    // The connection is gone: the client's next segment is answered with a
    // reset.
    assert_eq!(send(&mut p, 9, &client(ACK), EXT).0, TX_EXT);
    assert_eq!(p.stats().resets_sent, 1);
}

#[test]
fn resets_are_limited_per_millisecond_and_sloppy_tcp_picks_up_instead() {
    let n = v4();
    let mut p = pipeline();
    let stray = |port: u16| Pkt::tcp(n.client, port, n.vip, PORT_NAT, ACK);
    let sent: Vec<Verdict> = (0..12)
        .map(|i| send(&mut p, 5, &stray(42000 + i), EXT).0)
        .collect();
    assert!(sent[..10].iter().all(|v| *v == TX_EXT), "{sent:?}");
    assert!(
        sent[10..]
            .iter()
            .all(|v| *v == Verdict::Drop(DropReason::TcpNotSyn)),
        "{sent:?}"
    );
    // The next millisecond has a fresh budget.
    assert_eq!(send(&mut p, 6, &stray(42100), EXT).0, TX_EXT);
    assert_eq!(p.stats().resets_sent, 11);

    // sloppy_tcp: the same segment is scheduled, and the connection it
    // starts is ESTABLISHED and active (IPVS since 3.12), not CLOSE.
    let c = p.snapshot().clone();
    let sloppy = super::Policy {
        sloppy_tcp: true,
        ..Default::default()
    };
    let cfg = super::Snapshot::with_previous(
        c.services.clone(),
        c.ports.clone(),
        c.next_hops.clone(),
        sloppy,
        Some(&c),
    );
    p.set_snapshot(std::sync::Arc::new(cfg));
    let (v, out) = send(&mut p, 7, &stray(42200), EXT);
    assert_eq!(v, TX_INT);
    assert_eq!(dst_of(&out), Some(n.rs_nat));
    let entry = p
        .conns()
        .entries(Millis(7))
        .into_iter()
        .find(|e| e.client.port() == 42200)
        .expect("picked up");
    assert_eq!(entry.state, crate::conntrack::ConnState::Established);
    assert!(entry.expires_ms > 800_000, "{entry:?}");
    assert_eq!(p.stats().resets_sent, 11);
}

#[test]
fn an_answer_to_an_unresolved_client_is_held_and_the_retransmitted_syn_keeps_its_server() {
    let n = v4();
    let mut p = pipeline_with_two_nat_reals(|_| {});
    // On the external segment, no neighbour entry: a new on-link client.
    let client = ip("192.0.2.77");
    let syn = Pkt::tcp(client, 41000, n.vip, PORT_NAT, SYN);
    let (v, out) = send(&mut p, 1, &syn, EXT);
    assert_eq!(v, TX_INT);
    let server = dst_of(&out).expect("forwarded");
    let synack = Pkt::tcp(server, RPORT_NAT, client, 41000, SYN | ACK).macs(RS_NAT_MAC, INT_MAC);
    let (v, out) = send(&mut p, 2, &synack, INT);
    assert_eq!(v, Verdict::Hold { port: EXT });
    assert_eq!(p.held_next_hop(), Some(client));
    let mut want = synack.clone().macs(EXT_MAC, [0; 6]).ttl(63);
    want.src = n.vip;
    set_sport(&mut want, PORT_NAT);
    assert_eq!(out, want.bytes());
    assert_eq!(p.resolve_requests().collect::<Vec<_>>(), [client]);
    assert_eq!(p.stats().held, 1);
    // Had the answer been lost, the client's retransmitted SYN would find
    // its connection and its server, and be scheduled no second time.
    let (v, out) = send(&mut p, 1000, &syn, EXT);
    assert_eq!(v, TX_INT);
    assert_eq!(dst_of(&out), Some(server));
    assert_eq!(p.stats().new_conns, 1);
}

#[test]
fn a_syn_reusing_a_finished_connection_is_scheduled_again() {
    let n = v4();
    let mut p = pipeline_with_two_nat_reals(|_| {});
    let client = |flags: u8| Pkt::tcp(n.client, 40000, n.vip, PORT_NAT, flags);
    let from_rs =
        |flags: u8| Pkt::tcp(n.rs_nat, RPORT_NAT, n.client, 40000, flags).macs(RS_NAT_MAC, INT_MAC);
    let (_, out) = send(&mut p, 1, &client(SYN), EXT);
    let first = dst_of(&out);
    // A whole exchange: handshake, then both sides close (TIME_WAIT).
    assert_eq!(send(&mut p, 1, &from_rs(SYN | ACK), INT).0, TX_EXT);
    assert_eq!(send(&mut p, 1, &client(ACK), EXT).0, TX_INT);
    assert_eq!(send(&mut p, 1, &client(FIN | ACK), EXT).0, TX_INT);
    assert_eq!(send(&mut p, 1, &from_rs(FIN | ACK), INT).0, TX_EXT);
    assert_eq!(send(&mut p, 1, &client(ACK), EXT).0, TX_INT);
    // The same ports again: a new connection, and rr picks the other server.
    let (v, out) = send(&mut p, 1, &client(SYN), EXT);
    assert_eq!(v, TX_INT);
    assert_ne!(first, dst_of(&out), "rescheduled");
}

#[test]
fn end_batch_expires_connections_once_per_millisecond() {
    let n = v4();
    let mut p = pipeline();
    let (v, _) = send(
        &mut p,
        1000,
        &Pkt::udp(n.client, 5300, n.vip, PORT_DNS),
        EXT,
    );
    assert_eq!(v, TX_INT);
    assert_eq!(p.conns().stats().conns, 1);
    // Past the UDP timeout (300 s): the same millisecond sweeps only once,
    // later milliseconds sweep the rest of this small table.
    let later = 1000 + 301_000;
    let conns = std::sync::Arc::clone(p.conns());
    let swept = || conns.swept_buckets();
    let before = swept();
    for _ in 0..10 {
        p.end_batch(Millis(later));
    }
    assert_eq!(
        swept() - before,
        super::EXPIRE_BUDGET,
        "ten batches in one millisecond: one expiry step"
    );
    for ms in 1..10 {
        p.end_batch(Millis(later + ms));
    }
    assert_eq!(
        swept() - before,
        10 * super::EXPIRE_BUDGET,
        "one step a millisecond"
    );
    assert_eq!(p.conns().stats().conns, 0, "expired");
}

#[test]
fn workers_sharing_a_table_sweep_it_once_per_millisecond_between_them() {
    // Four pipelines over one table, as four workers: each ends a batch
    // every millisecond, and the table is swept one step a millisecond,
    // not four; a millisecond none of them has ended a batch in yet still
    // gets its step from whichever comes first.
    use crate::conntrack::{ConnTable, Timeouts};
    use std::sync::Arc;
    let loads = Arc::new(crate::service::RealLoads::new(64));
    let conns = Arc::new(ConnTable::new(1024, Timeouts::default(), loads.clone()));
    let snap = Arc::new(snapshot());
    let mut ps: Vec<super::Pipeline> = (0..4u16)
        .map(|w| super::Pipeline::new(snap.clone(), conns.clone(), loads.clone(), w))
        .collect();
    let before = conns.swept_buckets();
    for ms in 1..=10 {
        for p in &mut ps {
            p.end_batch(Millis(5000 + ms));
        }
    }
    assert_eq!(
        conns.swept_buckets() - before,
        10 * super::EXPIRE_BUDGET,
        "ten milliseconds, four workers: ten steps"
    );
    // Worker 3 alone in the next milliseconds: still a step each.
    for ms in 11..=13 {
        ps[3].end_batch(Millis(5000 + ms));
    }
    assert_eq!(conns.swept_buckets() - before, 13 * super::EXPIRE_BUDGET);
}

#[test]
fn a_new_snapshot_takes_the_next_hops_cached_under_the_old() {
    // A NAT reply's next hop is cached per snapshot: a snapshot whose
    // neighbours moved must be seen by the very next reply.
    let n = v4();
    let mut p = pipeline();
    let syn = Pkt::tcp(n.client, 40000, n.vip, PORT_NAT, SYN);
    assert_eq!(
        send(&mut p, 1000, &syn, EXT).0,
        Verdict::Transmit { port: 1 }
    );
    let synack =
        Pkt::tcp(n.rs_nat, RPORT_NAT, n.client, 40000, SYN | ACK).macs(RS_NAT_MAC, INT_MAC);
    let (v, out) = send(&mut p, 1001, &synack, INT);
    assert_eq!(v, Verdict::Transmit { port: 0 });
    assert_eq!(out[..6], GW_MAC);
    let moved: MacAddr = [2, 0, 0, 0, 0, 0xfd];
    let base = snapshot();
    let hops = crate::neigh::NextHops::new(
        vec![EXT_MAC, INT_MAC],
        base.next_hops.routes().to_vec(),
        vec![(n.gw, moved), (n.rs_nat, RS_NAT_MAC)],
    );
    let cfg = super::Snapshot::new(base.services, base.ports.clone(), hops, Default::default());
    p.set_snapshot(std::sync::Arc::new(cfg));
    let (v, out) = send(&mut p, 1002, &synack, INT);
    assert_eq!(v, Verdict::Transmit { port: 0 });
    assert_eq!(out[..6], moved);
}
