//! Packet-core costs, ns per packet, on 64-byte frames unless noted:
//! - `copy_64`: the frame reset every other case includes (baseline);
//! - `parse/{tcp4,tcp6,udp4}`: parsing alone;
//! - `nat_forward/tcp4_64`, `nat_forward/tcp6_64`: parse + NAT client→RS rewrite
//!   (the issue's ≤ 25 ns target is `nat_forward/tcp4_64` minus `copy_64`);
//! - `nat_reply/tcp4_64`: parse + NAT RS→client rewrite;
//! - `dr/tcp4_64`: parse + MAC rewrite;
//! - `tun_encap/{headroom,memmove}_{64,1500}`: parse + IPIP encapsulation when the
//!   buffer has headroom (Ethernet header moved) versus none (packet moved);
//! - `icmp_too_big/tcp4_1500`: building a frag-needed error in place;
//! - `partial_checksum/{copy,full,partial}_{64,1500}`: a TCP frame copied in
//!   (baseline), then `complete_partial_checksum` on it when its checksum is
//!   already full (the check alone) or partial as a sender's offload leaves
//!   it (the check and the completion); the cost is the difference to `copy`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use xvs::forward::{dr, nat};
use xvs::neigh::NextHop;
use xvs::packet::{encap, icmp, parse, rewrite, Frame};
use xvs::pipeline::testnet::{self, Pkt, ACK};

const HOP: NextHop = NextHop {
    port: 1,
    src_mac: testnet::INT_MAC,
    dst_mac: testnet::RS_NAT_MAC,
};

/// [`HOP`]'s MACs as a real server's path holds them.
fn hop_macs() -> rewrite::EthAddrs {
    rewrite::eth_addrs(&HOP.src_mac, &HOP.dst_mac)
}

fn frame_64(n: &testnet::Net) -> Vec<u8> {
    // 14 + 20 + 20 + 10 = 64 bytes for IPv4 (IPv6: 84).
    Pkt::tcp(n.client, 40000, n.vip, 80, ACK)
        .payload(vec![0; 10])
        .bytes()
}

fn benches(c: &mut Criterion) {
    let (a, b) = (testnet::v4(), testnet::v6());
    let tcp4 = frame_64(&a);
    let tcp6 = frame_64(&b);
    let udp4 = Pkt::udp(a.client, 5300, a.vip, 53)
        .payload(vec![0; 18])
        .bytes();
    let reply4 = Pkt::tcp(a.rs_nat, 8080, a.client, 40000, ACK)
        .payload(vec![0; 10])
        .bytes();
    let big4 = Pkt::tcp(a.client, 40000, a.vip, 82, ACK)
        .payload(vec![0; 1446])
        .bytes();
    // 64 and 1514 bytes on the wire (a 1500-byte IP packet).
    let small4 = Pkt::tcp(a.client, 40000, a.vip, 80, ACK).payload(vec![0x5a; 10]);
    let full4 = Pkt::tcp(a.client, 40000, a.vip, 80, ACK).payload(vec![0x5a; 1460]);
    let mut buf = [0u8; 2048];

    c.bench_function("copy_64", |bch| {
        bch.iter(|| {
            buf[..tcp4.len()].copy_from_slice(black_box(&tcp4));
            black_box(&buf);
        })
    });
    let mut g = c.benchmark_group("parse");
    for (name, f) in [("tcp4", &tcp4), ("tcp6", &tcp6), ("udp4", &udp4)] {
        g.bench_function(name, |bch| bch.iter(|| black_box(parse(black_box(f)))));
    }
    g.finish();

    let mut g = c.benchmark_group("nat_forward");
    for (name, f, n) in [("tcp4_64", &tcp4, &a), ("tcp6_64", &tcp6, &b)] {
        g.bench_function(name, |bch| {
            bch.iter(|| {
                let d = &mut buf[..f.len()];
                d.copy_from_slice(f);
                if let Ok(p) = parse(d) {
                    let _ = black_box(nat::to_real(d, &p, n.rs_nat, 8080, &hop_macs()));
                }
            })
        });
    }
    g.finish();

    c.bench_function("nat_reply/tcp4_64", |bch| {
        bch.iter(|| {
            let d = &mut buf[..reply4.len()];
            d.copy_from_slice(&reply4);
            if let Ok(p) = parse(d) {
                let _ = black_box(nat::to_client(d, &p, a.vip, 80, &HOP));
            }
        })
    });
    c.bench_function("dr/tcp4_64", |bch| {
        bch.iter(|| {
            let d = &mut buf[..tcp4.len()];
            d.copy_from_slice(&tcp4);
            if parse(d).is_ok() {
                dr::to_real(d, &hop_macs());
            }
            black_box(&buf);
        })
    });

    let mut g = c.benchmark_group("tun_encap");
    for (name, f, head) in [
        ("headroom_64", &tcp4, 256),
        ("memmove_64", &tcp4, 0),
        ("headroom_1500", &big4, 256),
        ("memmove_1500", &big4, 0),
    ] {
        g.bench_function(name, |bch| {
            bch.iter(|| {
                buf[head..head + f.len()].copy_from_slice(f);
                let mut fr = Frame::new(&mut buf, head, f.len());
                if let Ok(p) = parse(fr.data()) {
                    let _ = black_box(encap::encapsulate(&mut fr, &p, a.int, a.rs_tun, 0));
                }
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("partial_checksum");
    for (size, pkt) in [("64", &small4), ("1500", &full4)] {
        let full = pkt.bytes();
        let partial = pkt.clone().partial_checksum().bytes();
        let p = parse(&full).expect("test frame");
        g.bench_function(format!("copy_{size}"), |bch| {
            bch.iter(|| {
                buf[..full.len()].copy_from_slice(black_box(&full));
                black_box(&buf);
            })
        });
        for (kind, f) in [("full", &full), ("partial", &partial)] {
            g.bench_function(format!("{kind}_{size}"), |bch| {
                bch.iter(|| {
                    let d = &mut buf[..f.len()];
                    d.copy_from_slice(black_box(f));
                    black_box(rewrite::complete_partial_checksum(d, black_box(&p)))
                })
            });
        }
    }
    g.finish();

    c.bench_function("icmp_too_big/tcp4_1500", |bch| {
        bch.iter(|| {
            buf[..big4.len()].copy_from_slice(&big4);
            let mut fr = Frame::new(&mut buf, 0, big4.len());
            if let Ok(p) = parse(fr.data()) {
                let _ = black_box(icmp::too_big(&mut fr, &p, 1480));
            }
        })
    });
}

criterion_group!(packet, benches);
criterion_main!(packet);
