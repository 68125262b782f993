//! The whole sans-IO core, ns per frame, through `Pipeline::process` on the
//! test network (src/pipeline/testnet.rs), 64-byte IPv4 TCP frames unless
//! noted:
//! - `established/{nat,dr,tun}`: a data segment of an existing connection
//!   (connection lookup + state update + rewrite), one flow;
//! - `established_1k/nat`: the same over 1024 flows, round robin;
//! - `nat_reply`: a real server's answer (reply-key lookup + rewrite);
//! - `new_connection/nat`: a SYN of a new flow each time (lookup miss,
//!   scheduling, insert, rewrite), on a table that expires between batches;
//! - `pass/not_a_service`: a frame for the host (parse + service lookup).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use xvs::packet::Frame;
use xvs::pipeline::testnet::{self, Pkt, ACK, SYN};
use xvs::Millis;

fn run(c: &mut Criterion) {
    let n = testnet::v4();
    // Room for the 3 + 1024 connections opened below, and more.
    let mut p = testnet::pipeline_with_room_for(8192);
    let mut buf = vec![0u8; 2048];
    let mut process = |p: &mut xvs::pipeline::Pipeline, frame: &[u8], port: u8, now: u64| {
        buf[..frame.len()].copy_from_slice(frame);
        let mut f = Frame::new(&mut buf, 0, frame.len());
        black_box(p.process(Millis(now), port, &mut f))
    };
    let data = |dport: u16, sport: u16| {
        Pkt::tcp(n.client, sport, n.vip, dport, ACK)
            .payload(vec![0; 10])
            .bytes()
    };
    // Open one connection per method (and 1024 for NAT).
    for (dport, sport) in [(80u16, 40000u16), (81, 40000), (82, 40000)] {
        process(
            &mut p,
            &Pkt::tcp(n.client, sport, n.vip, dport, SYN).bytes(),
            0,
            1,
        );
    }
    for k in 0..1024u16 {
        process(
            &mut p,
            &Pkt::tcp(n.client, 50000 + k, n.vip, 80, SYN).bytes(),
            0,
            1,
        );
    }
    // Otherwise the benches below would time drops and passes.
    assert_eq!(
        p.conns().stats().conns,
        3 + 1024,
        "the set-up SYNs opened their connections"
    );
    let mut g = c.benchmark_group("established");
    for (name, dport) in [("nat", 80u16), ("dr", 81), ("tun", 82)] {
        let f = data(dport, 40000);
        g.bench_function(name, |b| b.iter(|| process(&mut p, &f, 0, 2)));
    }
    g.finish();
    let flows: Vec<Vec<u8>> = (0..1024u16).map(|k| data(80, 50000 + k)).collect();
    let mut i = 0usize;
    c.bench_function("established_1k/nat", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            process(&mut p, &flows[i], 0, 2)
        })
    });
    let reply = Pkt::tcp(n.rs_nat, 8080, n.client, 40000, ACK)
        .macs(testnet::RS_NAT_MAC, testnet::INT_MAC)
        .payload(vec![0; 10])
        .bytes();
    c.bench_function("nat_reply", |b| b.iter(|| process(&mut p, &reply, 1, 2)));
    let mut sport = 0u32;
    let mut now = 10u64;
    c.bench_function("new_connection/nat", |b| {
        b.iter(|| {
            sport = sport.wrapping_add(1);
            // New client addresses and ports, so that every SYN is a miss.
            let client = std::net::Ipv4Addr::from(0xcb00_7100 | (sport >> 16 & 0xff));
            let f = Pkt::tcp(client.into(), (sport & 0xffff) as u16 | 1, n.vip, 80, SYN).bytes();
            now += 1;
            let v = process(&mut p, &f, 0, now);
            if sport % 64 == 0 {
                p.end_batch(Millis(now));
            }
            v
        })
    });
    let host = Pkt::tcp(n.client, 40000, n.ext, 22, SYN).bytes();
    c.bench_function("pass/not_a_service", |b| {
        b.iter(|| process(&mut p, &host, 0, 2))
    });
}

criterion_group!(pipeline, run);
criterion_main!(pipeline);
