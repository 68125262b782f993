//! Instructions per frame of the sans-IO core, counted by callgrind
//! (gungraun): one `Pipeline::process` call on the test network
//! (src/pipeline/testnet.rs), a 64-byte IPv4 TCP frame of one flow, the copy
//! of the frame into the receive buffer included, as the worker's frame
//! arrives in a fresh buffer. Each case is the frame after its set-up (the
//! connection opened, the table warm), so only the frame's own work counts:
//! - `established::dr|nat|tun`: a data segment of an open connection;
//!   `tun_1494` the same with a 1494-byte frame (the packet TUN moves grows
//!   with it); `dr_uncached` DR's frame with the worker's flow cache
//!   emptied first, as for a flow whose slot another flow took (the
//!   lookups, and the slot filled again);
//! - `nat_reply`: the NAT real server's answer to it;
//! - `not_a_service`: a frame for the host itself (parse, service lookup,
//!   reply lookup miss);
//! - `new_connection::nat`: a SYN of a new flow (miss, scheduling, insert,
//!   rewrite), on a table already holding 1024 connections.
//!
//! The `runs` group counts the same cases as runs of 1 and of [`RUN`]
//! frames (the established and reply cases the same frame again, a new
//! connection SYNs of as many flows): the difference of the two counts over
//! `RUN - 1` is a frame's cost in a run, its copy into the buffer included
//! and the harness's call not (`tools/instructions` prints both).
//!
//! Run with `cargo bench --bench instructions` (needs valgrind and
//! `gungraun-runner` of the crate's version, see BENCHMARKS.md).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use gungraun::{library_benchmark, library_benchmark_group, main};
use xvs::packet::Frame;
use xvs::pipeline::testnet::{self, Pkt, ACK, SYN};
use xvs::pipeline::Pipeline;
use xvs::verdict::{DropReason, Verdict};
use xvs::Millis;

/// A pipeline, the frame to process and the buffer it is copied into.
struct Case {
    p: Pipeline,
    frame: Vec<u8>,
    buf: Vec<u8>,
    port: u8,
}

/// Frames in the longer run of the `runs` group.
const RUN: usize = 9;

/// A case's frames for a run of `n`: `frames[i % frames.len()]` is the
/// `i`-th.
struct Run {
    case: Box<Case>,
    frames: Vec<Vec<u8>>,
    n: usize,
}

/// Headroom in front of the frame: what the worker gives
/// ([`xvs::xsk::worker::HEADROOM`], taken from the bytes in front of every
/// packet the kernel receives into a UMEM chunk), so TUN opens its outer
/// header there without moving the packet.
const HEADROOM: usize = xvs::xsk::worker::HEADROOM;

fn process(p: &mut Pipeline, buf: &mut [u8], frame: &[u8], port: u8, now: u64) -> Verdict {
    buf[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
    let mut f = Frame::new(buf, HEADROOM, frame.len());
    p.process(Millis(now), port, &mut f)
}

fn syn(p: &mut Pipeline, buf: &mut [u8], client: IpAddr, sport: u16, dport: u16) {
    let n = testnet::v4();
    let f = Pkt::tcp(client, sport, n.vip, dport, SYN).bytes();
    let v = process(p, buf, &f, 0, 1);
    assert!(matches!(v, Verdict::Transmit { .. }), "set-up SYN: {v:?}");
}

/// A pipeline with 1024 other connections open, and the connection of the
/// measured flow on `dport` open too unless `open` is false.
fn warm(dport: u16, open: bool) -> (Pipeline, Vec<u8>) {
    let n = testnet::v4();
    let mut p = testnet::pipeline_with_room_for(8192);
    let mut buf = vec![0u8; 2048];
    for k in 0..1024u16 {
        let client = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 100));
        syn(&mut p, &mut buf, client, 20000 + k, 80);
    }
    if open {
        syn(&mut p, &mut buf, n.client, 40000, dport);
    }
    (p, buf)
}

fn established(dport: u16) -> Box<Case> {
    established_of(dport, 64)
}

/// `established` with a frame of `len` bytes.
fn established_of(dport: u16, len: usize) -> Box<Case> {
    let n = testnet::v4();
    let (mut p, mut buf) = warm(dport, true);
    let frame = Pkt::tcp(n.client, 40000, n.vip, dport, ACK)
        .payload(vec![0; len - 54])
        .bytes();
    assert_eq!(frame.len(), len);
    // Once, so that the connection is established and the frame is the
    // steady state.
    assert!(matches!(
        process(&mut p, &mut buf, &frame, 0, 2),
        Verdict::Transmit { .. }
    ));
    Box::new(Case {
        p,
        frame,
        buf,
        port: 0,
    })
}

/// `established`, the worker's flow cache emptied (by a snapshot swap,
/// the same snapshot again).
fn established_uncached(dport: u16) -> Box<Case> {
    let mut c = established(dport);
    let snap = c.p.snapshot().clone();
    c.p.set_snapshot(snap);
    c
}

fn nat_reply() -> Box<Case> {
    let n = testnet::v4();
    let (mut p, mut buf) = warm(testnet::PORT_NAT, true);
    let frame = Pkt::tcp(n.rs_nat, testnet::RPORT_NAT, n.client, 40000, ACK)
        .macs(testnet::RS_NAT_MAC, testnet::INT_MAC)
        .payload(vec![0; 10])
        .bytes();
    assert_eq!(frame.len(), 64);
    assert!(matches!(
        process(&mut p, &mut buf, &frame, 1, 2),
        Verdict::Transmit { .. }
    ));
    Box::new(Case {
        p,
        frame,
        buf,
        port: 1,
    })
}

fn not_a_service() -> Box<Case> {
    let n = testnet::v4();
    let (p, buf) = warm(testnet::PORT_NAT, false);
    let frame = Pkt::tcp(n.client, 40000, n.ext, 22, ACK)
        .payload(vec![0; 10])
        .bytes();
    assert_eq!(frame.len(), 64);
    Box::new(Case {
        p,
        frame,
        buf,
        port: 0,
    })
}

fn new_connection() -> Box<Case> {
    let n = testnet::v4();
    let (p, buf) = warm(testnet::PORT_NAT, false);
    let frame = Pkt::tcp(n.client, 40000, n.vip, testnet::PORT_NAT, SYN)
        .payload(vec![0; 10])
        .bytes();
    assert_eq!(frame.len(), 64);
    Box::new(Case {
        p,
        frame,
        buf,
        port: 0,
    })
}

// One frame through the pipeline; the case is handed back, boxed, so that
// neither its drop nor moving it is counted.
#[library_benchmark]
#[bench::dr(setup = established, args = (testnet::PORT_DR))]
#[bench::nat(setup = established, args = (testnet::PORT_NAT))]
#[bench::tun(setup = established, args = (testnet::PORT_TUN))]
// The largest frame TUN forwards at an MTU of 1500 (1480 bytes of IP).
#[bench::tun_1494(setup = established_of, args = (testnet::PORT_TUN, 1494))]
#[bench::dr_uncached(setup = established_uncached, args = (testnet::PORT_DR))]
fn established_frame(mut c: Box<Case>) -> (Verdict, Box<Case>) {
    let v = process(&mut c.p, &mut c.buf, black_box(&c.frame), c.port, 3);
    (black_box(v), c)
}

#[library_benchmark]
#[bench::nat_reply(setup = nat_reply)]
#[bench::not_a_service(setup = not_a_service)]
#[bench::new_nat_connection(setup = new_connection)]
fn other_frame(mut c: Box<Case>) -> (Verdict, Box<Case>) {
    let v = process(&mut c.p, &mut c.buf, black_box(&c.frame), c.port, 3);
    (black_box(v), c)
}

/// A case run `n` times: the same frame again.
fn run_of(case: Box<Case>, n: usize) -> Box<Run> {
    let frames = vec![case.frame.clone()];
    Box::new(Run { case, frames, n })
}

fn established_run(dport: u16, n: usize) -> Box<Run> {
    run_of(established(dport), n)
}

fn nat_reply_run(n: usize) -> Box<Run> {
    run_of(nat_reply(), n)
}

fn not_a_service_run(n: usize) -> Box<Run> {
    run_of(not_a_service(), n)
}

/// `n` SYNs of new flows, source ports 40000 on (the first is
/// `new_connection`'s frame).
fn new_connection_run(n: usize) -> Box<Run> {
    let c = testnet::v4();
    let frames = (0..n as u16)
        .map(|k| {
            Pkt::tcp(c.client, 40000 + k, c.vip, testnet::PORT_NAT, SYN)
                .payload(vec![0; 10])
                .bytes()
        })
        .collect();
    Box::new(Run {
        case: new_connection(),
        frames,
        n,
    })
}

// The cases as runs of 1 and of `RUN` frames, each frame copied in and
// processed as the single cases do.
#[library_benchmark]
#[bench::dr_1(setup = established_run, args = (testnet::PORT_DR, 1))]
#[bench::dr_run(setup = established_run, args = (testnet::PORT_DR, RUN))]
#[bench::nat_1(setup = established_run, args = (testnet::PORT_NAT, 1))]
#[bench::nat_run(setup = established_run, args = (testnet::PORT_NAT, RUN))]
#[bench::tun_1(setup = established_run, args = (testnet::PORT_TUN, 1))]
#[bench::tun_run(setup = established_run, args = (testnet::PORT_TUN, RUN))]
#[bench::nat_reply_1(setup = nat_reply_run, args = (1))]
#[bench::nat_reply_run(setup = nat_reply_run, args = (RUN))]
#[bench::not_a_service_1(setup = not_a_service_run, args = (1))]
#[bench::not_a_service_run(setup = not_a_service_run, args = (RUN))]
#[bench::new_nat_connection_1(setup = new_connection_run, args = (1))]
#[bench::new_nat_connection_run(setup = new_connection_run, args = (RUN))]
fn frame_run(mut r: Box<Run>) -> (Verdict, Box<Run>) {
    let Run { case: c, frames, n } = &mut *r;
    let mut v = Verdict::Drop(DropReason::NoConnection);
    for i in 0..*n {
        let frame = &frames[i % frames.len()];
        v = black_box(process(&mut c.p, &mut c.buf, black_box(frame), c.port, 3));
    }
    (v, r)
}

library_benchmark_group!(name = frames; benchmarks = established_frame, other_frame);
library_benchmark_group!(name = runs; benchmarks = frame_run);
main!(library_benchmark_groups = frames, runs);
