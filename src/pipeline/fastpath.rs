//! The fast path against the general path: every frame, whichever path
//! [`Pipeline::process`] takes it by, gets the verdict, the bytes and the
//! counts [`Pipeline::process_general`] gives it.

use std::net::IpAddr;

use proptest::prelude::*;

use super::testnet::{self, pipeline, Pkt, ACK, FIN, PORT_DNS, PORT_DR, PORT_NAT, PORT_TUN, SYN};
use super::Pipeline;
use crate::packet::{checksum, Frame};
use crate::verdict::Verdict;
use crate::Millis;

const EXT: u8 = 0;
const INT: u8 = 1;

/// A frame and the port it arrives on.
type Arrival = (Vec<u8>, u8);

/// The frames of the test network's flows: set-up SYNs, then the frames
/// of the cases the fast path is for and of those it leaves alone.
fn frames() -> (Vec<Arrival>, Vec<Arrival>) {
    let mut setup = Vec::new();
    let mut cases = Vec::new();
    for n in [testnet::v4(), testnet::v6()] {
        for port in [PORT_NAT, PORT_DR, PORT_TUN] {
            setup.push((Pkt::tcp(n.client, 40000, n.vip, port, SYN).bytes(), EXT));
            let ack = Pkt::tcp(n.client, 40000, n.vip, port, ACK).payload(vec![7; 10]);
            cases.push((ack.bytes(), EXT));
            cases.push((ack.clone().partial_checksum().bytes(), EXT));
            cases.push((ack.clone().ttl(1).bytes(), EXT));
            cases.push((
                Pkt::tcp(n.client, 40000, n.vip, port, FIN | ACK).bytes(),
                EXT,
            ));
            cases.push((Pkt::tcp(n.client, 40001, n.vip, port, SYN).bytes(), EXT));
            cases.push((Pkt::tcp(n.client, 40002, n.vip, port, ACK).bytes(), EXT));
        }
        let reply = Pkt::tcp(n.rs_nat, testnet::RPORT_NAT, n.client, 40000, ACK)
            .macs(testnet::RS_NAT_MAC, testnet::INT_MAC)
            .payload(vec![9; 12]);
        cases.push((reply.bytes(), INT));
        cases.push((reply.clone().ttl(1).bytes(), INT));
        cases.push((reply.partial_checksum().bytes(), INT));
        let dns = Pkt::udp(n.client, 5000, n.vip, PORT_DNS).payload(vec![1; 20]);
        cases.push((dns.bytes(), EXT));
        cases.push((dns.partial_checksum().bytes(), EXT));
        // For the host (no VIP, no real server: the early drop), and to
        // the VIP on a port that is no service.
        cases.push((Pkt::tcp(n.client, 40000, n.ext, 22, ACK).bytes(), EXT));
        cases.push((Pkt::tcp(n.client, 40000, n.vip, 22, SYN).bytes(), EXT));
        cases.push((Pkt::udp(n.client, 0, n.vip, PORT_DNS).bytes(), EXT));
    }
    (setup, cases)
}

/// The verdict, a hold's next hop and the bytes that came out.
type Outcome = (Verdict, Option<IpAddr>, Vec<u8>);

fn run(p: &mut Pipeline, general: bool, now: u64, bytes: &[u8], port: u8) -> Outcome {
    let mut buf = vec![0u8; 2048];
    buf[..bytes.len()].copy_from_slice(bytes);
    let mut f = Frame::new(&mut buf, 0, bytes.len());
    let v = if general {
        p.process_general(Millis(now), port, &mut f)
    } else {
        p.process(Millis(now), port, &mut f)
    };
    let held = match v {
        Verdict::Hold { .. } => p.held_next_hop(),
        _ => None,
    };
    (v, held, f.data().to_vec())
}

/// Two pipelines with the same connections open, one driven by each path.
fn pair(setup: &[Arrival]) -> (Pipeline, Pipeline) {
    let (mut fast, mut general) = (pipeline(), pipeline());
    for (f, port) in setup {
        assert_eq!(
            run(&mut fast, false, 1, f, *port),
            run(&mut general, true, 1, f, *port)
        );
    }
    (fast, general)
}

#[test]
fn every_case_frame_gets_one_result_by_either_path() {
    let (setup, cases) = frames();
    let (mut fast, mut general) = pair(&setup);
    for (i, (f, port)) in cases.iter().enumerate() {
        let a = run(&mut fast, false, 2, f, *port);
        let b = run(&mut general, true, 2, f, *port);
        assert_eq!(a, b, "case {i}");
    }
    assert_eq!(fast.stats(), general.stats());
    assert!(
        fast.stats().tx > 10,
        "the cases are forwarded: {:?}",
        fast.stats()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    /// A case frame changed anywhere (and, for IPv4, its header checksum
    /// made right again or not), cut short or padded: the fast path and
    /// the general path give it the same verdict, bytes and counts.
    #[test]
    fn mutated_frames_get_one_result_by_either_path(
        case in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((0usize..80, any::<u8>()), 0..4),
        fix_checksum in any::<bool>(),
        cut in 0usize..48,
        pad in 0usize..4,
    ) {
        let (setup, cases) = frames();
        let (mut f, port) = case.get(&cases).clone();
        for (at, b) in edits {
            if let Some(x) = f.get_mut(at) {
                *x = b;
            }
        }
        if fix_checksum && f.len() >= 34 && f[14] >> 4 == 4 {
            let end = 14 + usize::from(f[14] & 0x0f) * 4;
            if f.len() >= end && end > 24 {
                f[24..26].fill(0);
                let c = checksum::finish(checksum::sum(&f[14..end], 0));
                f[24..26].copy_from_slice(&c.to_be_bytes());
            }
        }
        // Half the frames whole, the others cut by up to 23 bytes.
        f.truncate(f.len().saturating_sub(cut.saturating_sub(24)));
        f.resize(f.len() + pad, 0);
        let (mut fast, mut general) = pair(&setup);
        let a = run(&mut fast, false, 2, &f, port);
        let b = run(&mut general, true, 2, &f, port);
        prop_assert_eq!(a, b);
        prop_assert_eq!(fast.stats(), general.stats());
    }
}
