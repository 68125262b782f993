//! The whole sans-IO core, ns per frame, through `Pipeline::process` on the
//! test network (src/pipeline/testnet.rs), 64-byte IPv4 TCP frames unless
//! noted:
//! - `established/{nat,dr,tun}`: a data segment of an existing connection
//!   (connection lookup + state update + rewrite), one flow;
//! - `established_1k/nat`: the same over 1024 flows, round robin;
//! - `nat_reply`: a real server's answer (reply-key lookup + rewrite);
//! - `new_connection/nat`: a SYN of a new flow each time (lookup miss,
//!   scheduling, insert, rewrite), on a table that expires between batches;
//!   `new_connection/nat_events` the same with connection events on and
//!   drained every 64 frames;
//! - `pass/not_a_service`: a frame for the host (parse + service lookup).
//! - `batch64/{single,prefetch}/{dr,nat}`: 64 data segments of established
//!   flows drawn in a scattered order from 64k flows spread over a table of
//!   1M connections (the entries miss the CPU's private caches and TLB),
//!   through 64 `process` calls or one `process_batch` (the two-stage
//!   connection prefetch first); time per batch of 64.

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
    // The same with connection events on, drained as the worker drains
    // them: what an Opened event costs.
    let mut q = testnet::pipeline_with_room_for(8192);
    q.set_conn_events(true);
    c.bench_function("new_connection/nat_events", |b| {
        b.iter(|| {
            sport = sport.wrapping_add(1);
            let client = std::net::Ipv4Addr::from(0xcb00_7100 | (sport >> 16 & 0xff));
            let f = Pkt::tcp(client.into(), (sport & 0xffff) as u16 | 1, n.vip, 80, SYN).bytes();
            now += 1;
            let v = process(&mut q, &f, 0, now);
            if sport % 64 == 0 {
                q.end_batch(Millis(now));
                while let Some(e) = q.poll_event() {
                    black_box(e);
                }
            }
            v
        })
    });
    let host = Pkt::tcp(n.client, 40000, n.ext, 22, SYN).bytes();
    c.bench_function("pass/not_a_service", |b| {
        b.iter(|| process(&mut p, &host, 0, 2))
    });
}

/// Flows of the batch benches, and the table they are spread over.
const FLOWS: usize = 64 * 1024;
const TABLE: usize = 1 << 20;
const BATCH: usize = 64;

fn batch(c: &mut Criterion) {
    let n = testnet::v4();
    let mut g = c.benchmark_group("batch64");
    for (name, dport) in [("dr", 81u16), ("nat", 80)] {
        let mut p = testnet::pipeline_with_room_for(TABLE);
        let client = |k: usize| {
            let a = std::net::Ipv4Addr::from(0xcb00_7100 | (k >> 14) as u32);
            (a.into(), 1024 + (k & 0x3fff) as u16)
        };
        let mut buf = vec![0u8; 2048];
        for k in 0..FLOWS {
            let (ip, port) = client(k);
            let f = Pkt::tcp(ip, port, n.vip, dport, SYN).bytes();
            buf[..f.len()].copy_from_slice(&f);
            p.process(Millis(1), 0, &mut Frame::new(&mut buf, 0, f.len()));
        }
        assert_eq!(p.conns().stats().conns, FLOWS, "every flow opened");
        let frames: Vec<Vec<u8>> = (0..FLOWS)
            .map(|k| {
                let (ip, port) = client(k);
                Pkt::tcp(ip, port, n.vip, dport, ACK)
                    .payload(vec![0; 10])
                    .bytes()
            })
            .collect();
        // A scattered order (an odd stride visits every flow once a round).
        let order: Vec<usize> = (0..FLOWS).map(|i| i * 40_503 % FLOWS).collect();
        let mut bufs = vec![[0u8; 256]; BATCH];
        let mut next = 0usize;
        let mut fill = |bufs: &mut [[u8; 256]]| {
            let mut lens = [0usize; BATCH];
            for (b, len) in bufs.iter_mut().zip(lens.iter_mut()) {
                let f = &frames[order[next % FLOWS]];
                next += 1;
                b[..f.len()].copy_from_slice(f);
                *len = f.len();
            }
            lens
        };
        g.bench_function(format!("single/{name}"), |b| {
            b.iter(|| {
                let lens = fill(&mut bufs);
                // Built as the batch case builds them, so that only the
                // entry points differ.
                let mut frames: Vec<Frame> = bufs
                    .iter_mut()
                    .zip(lens)
                    .map(|(buf, len)| Frame::new(buf, 0, len))
                    .collect();
                for f in frames.iter_mut() {
                    black_box(p.process(Millis(2), 0, f));
                }
            })
        });
        g.bench_function(format!("prefetch/{name}"), |b| {
            b.iter(|| {
                let lens = fill(&mut bufs);
                let mut frames: Vec<Frame> = bufs
                    .iter_mut()
                    .zip(lens)
                    .map(|(buf, len)| Frame::new(buf, 0, len))
                    .collect();
                p.process_batch(Millis(2), 0, &mut frames, |_, v, hop| {
                    black_box((v, hop));
                });
            })
        });
    }
    g.finish();
}

criterion_group!(pipeline, run, batch);
criterion_main!(pipeline);
