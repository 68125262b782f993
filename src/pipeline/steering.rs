//! The XDP steering program against the pipeline, frame by frame: the
//! program itself runs (`BPF_PROG_TEST_RUN` of its test entry) over every
//! golden frame, with its maps filled from the test network, so the
//! kernel-side classifier and the pipeline cannot drift apart. Per frame, in
//! the golden order through one pipeline:
//!
//! - the pipeline transmits it → the program must redirect it;
//! - the program passes it to the kernel → the pipeline must drop it as
//!   unclaimed or as unparseable (the kernel handles or drops it);
//! - the program redirects it and the pipeline calls it unclaimed → only
//!   where the answer hangs on connection state the program cannot see
//!   ([`hangs_on_connection_state`]).
//!
//! Cases of its own pin the rules about the director host's own addresses:
//! answers and ICMP errors to them stay with the kernel even when they come
//! from a NAT real server's endpoint; and the rule about destination MACs:
//! only frames to the director's own (or a held VRRP virtual MAC) are
//! redirected, the others passed and counted. Loading BPF needs root: without it the
//! tests fail, unless `XVS_NETNS_SKIP=1` asks to skip them.

use std::collections::HashSet;
use std::net::IpAddr;

use super::golden::{self, case, Case, EXT, INT};
use super::testnet::*;
use super::{DropReason, Verdict};
use crate::packet::{parse, Frame, ParseError, Transport, ETH_HEADER_LEN};
use crate::packet::{L4Proto, MacAddr};
use crate::xsk::prog::{Endpoint, LocalAddr, OwnMac, SteerCounter, Steering, SteeringProgram};
use crate::Millis;

/// True as root. Otherwise the test fails, saying why, unless
/// `XVS_NETNS_SKIP=1` asks to skip it (the netns tests' convention).
fn root_or_skip(test: &str) -> bool {
    if crate::xsk::euid() == 0 {
        return true;
    }
    if std::env::var("XVS_NETNS_SKIP").is_ok_and(|v| v == "1") {
        eprintln!("{test}: skipped (XVS_NETNS_SKIP=1)");
        return false;
    }
    panic!(
        "{test}: loading the XDP steering program needs root: run the tests as root \
         (or set XVS_NETNS_SKIP=1 to skip the tests that need it)"
    );
}

/// The director host's own addresses in the test network: every port's,
/// the VIPs (a director holds them on an interface) and loopback.
fn local_addrs() -> Vec<IpAddr> {
    let snap = snapshot();
    let mut addrs: Vec<IpAddr> = snap
        .ports
        .iter()
        .flat_map(|p| p.addrs.iter().copied())
        .collect();
    addrs.extend(snap.services.services().iter().map(|s| s.key.addr));
    addrs.extend([ip("127.0.0.1"), ip("::1")]);
    addrs
}

/// The steering program with its maps as the director would fill them for
/// the test network.
fn program() -> SteeringProgram {
    let mut prog = SteeringProgram::load_with_probe().expect("load the steering program");
    let (services, nat_reals) = crate::director::steered_endpoints(&snapshot().services);
    prog.sync_services(&services).expect("services");
    prog.sync_nat_reals(&nat_reals).expect("nat_reals");
    let local: HashSet<LocalAddr> = local_addrs().into_iter().map(LocalAddr::new).collect();
    prog.sync_local_addrs(&local).expect("local_addrs");
    // One program stands for both ports here: it answers to both MACs.
    prog.sync_own_macs(&own_macs(&[EXT_MAC, INT_MAC]))
        .expect("own_macs");
    prog
}

fn own_macs(macs: &[MacAddr]) -> HashSet<OwnMac> {
    macs.iter().copied().map(OwnMac::new).collect()
}

/// What the program does with `frame`. The kernel test-runs no frame
/// shorter than an Ethernet header; the program's first bounds check passes
/// every such frame.
fn steering(prog: &SteeringProgram, frame: &[u8]) -> Result<Steering, String> {
    if frame.len() < ETH_HEADER_LEN {
        return Ok(Steering::Pass);
    }
    prog.classify(frame)
        .map_err(|e| format!("BPF_PROG_TEST_RUN: {e}"))
}

const PARSE_ERRORS: [ParseError; 11] = [
    ParseError::NotIp,
    ParseError::Truncated,
    ParseError::BadIpHeader,
    ParseError::BadIpLength,
    ParseError::BadIpChecksum,
    ParseError::BadIpOptions,
    ParseError::SourceRoute,
    ParseError::BadExtensionHeader,
    ParseError::Fragment,
    ParseError::BadTransportHeader,
    ParseError::BadIcmpQuote,
];

fn is_parse_error(r: DropReason) -> bool {
    PARSE_ERRORS.iter().any(|&e| DropReason::from(e) == r)
}

/// Whether a frame the program redirects may be unclaimed by the pipeline
/// with reason `r`: only where the pipeline decides by its connection table,
/// which the program cannot see. That is a TCP/UDP packet from a NAT real
/// server's endpoint to an address not the director host's (an answer whose
/// connection may have expired), found to have no connection; or an ICMP
/// error quoting a packet from a service (an answer xvs may have sent), or
/// not addressed to the host and quoting a packet to a NAT real server's
/// endpoint (a packet xvs may have sent on), found to be about none. No
/// connection of xvs has the host as its client, so what is addressed to
/// the host never hangs on one.
fn hangs_on_connection_state(frame: &[u8], r: DropReason) -> bool {
    let (vips, nat_reals) = crate::director::steered_endpoints(&snapshot().services);
    let local = local_addrs();
    let Ok(p) = parse(frame) else {
        return false;
    };
    let to_host = local.contains(&p.dst);
    match (p.transport, r) {
        (Transport::Tcp { .. } | Transport::Udp, DropReason::NoConnection) => {
            !to_host
                && p.key()
                    .is_some_and(|k| nat_reals.contains(&Endpoint::new(k.proto, k.src, k.sport)))
        }
        (Transport::IcmpError(q), DropReason::IcmpNoConnection) => {
            let k = q.key(frame);
            vips.contains(&Endpoint::new(k.proto, k.src, k.sport))
                || (!to_host && nat_reals.contains(&Endpoint::new(k.proto, k.dst, k.dport)))
        }
        _ => false,
    }
}

/// Cases for the rules about the director host's own addresses, and for the
/// frames whose fate hangs on connection state, with what the program must
/// do with each. None opens a connection; ports 45000 and up are used by no
/// golden case.
fn own_address_cases(n: &Net) -> Vec<(Case, Steering)> {
    let fam = if n.vip.is_ipv4() { "IPv4" } else { "IPv6" };
    let d = |s: &str| format!("{fam}: {s}");
    let unclaimed = |r| Verdict::Drop(r);
    let (unreach, too_big) = if n.vip.is_ipv4() {
        ((3, 3, [0; 4]), (3, 4, [0, 0, 0x05, 0x00]))
    } else {
        ((1, 4, [0; 4]), (2, 0, [0, 0, 0x05, 0x00]))
    };
    let mut cases = Vec::new();

    // A health check from the director to a NAT real server's service port,
    // and what comes back from that endpoint.
    let answer = Pkt::tcp(n.rs_nat, RPORT_NAT, n.int, 45000, SYN | ACK).macs(RS_NAT_MAC, INT_MAC);
    cases.push((
        case(
            &d("TCP answer from the NAT real server's endpoint to the director's own address → kernel"),
            &answer,
            INT,
            unclaimed(DropReason::NoConnection),
            None,
        ),
        Steering::Pass,
    ));
    let answer = Pkt::udp(n.rs_nat, RPORT_DNS, n.int, 45001).macs(RS_NAT_MAC, INT_MAC);
    cases.push((
        case(
            &d("UDP answer from the NAT real server's endpoint to the director's own address → kernel"),
            &answer,
            INT,
            unclaimed(DropReason::NoConnection),
            None,
        ),
        Steering::Pass,
    ));
    // The host's traffic may leave from any of its addresses.
    let answer = Pkt::tcp(n.rs_nat, RPORT_NAT, n.ext, 45002, ACK).macs(RS_NAT_MAC, INT_MAC);
    cases.push((
        case(
            &d("TCP answer from the NAT real server's endpoint to another of the director's addresses → kernel"),
            &answer,
            INT,
            unclaimed(DropReason::NoConnection),
            None,
        ),
        Steering::Pass,
    ));
    // ICMP errors about packets the director host sent a NAT real server.
    let probe = Pkt::udp(n.int, 45001, n.rs_nat, RPORT_DNS);
    let err = icmp_error(n.rs_nat, n.int, unreach, &probe.ip_bytes()).macs(RS_NAT_MAC, INT_MAC);
    cases.push((
        case(
            &d("ICMP unreachable to the director's own address quoting director → NAT real server → kernel"),
            &err,
            INT,
            unclaimed(DropReason::IcmpNoConnection),
            None,
        ),
        Steering::Pass,
    ));
    let check = Pkt::tcp(n.int, 45000, n.rs_nat, RPORT_NAT, ACK);
    let err = icmp_error(n.rs_dr, n.int, too_big, &check.ip_bytes()).macs(RS_DR_MAC, INT_MAC);
    cases.push((
        case(
            &d("ICMP too-big to the director's own address quoting director → NAT real server's TCP port → kernel"),
            &err,
            INT,
            unclaimed(DropReason::IcmpNoConnection),
            None,
        ),
        Steering::Pass,
    ));

    // The same shapes to a client or about a service are xvs's, and with no
    // connection the pipeline finds nothing to do.
    let stale = Pkt::tcp(n.rs_nat, RPORT_NAT, n.client, 45003, ACK).macs(RS_NAT_MAC, INT_MAC);
    cases.push((
        case(
            &d("NAT answer to a client with no connection (expired) → xvs"),
            &stale,
            INT,
            unclaimed(DropReason::NoConnection),
            None,
        ),
        Steering::Redirect,
    ));
    // What xvs would have sent on for client:45004 → VIP:53.
    let sent_on = Pkt::udp(n.client, 45004, n.rs_nat, RPORT_DNS).ttl(63);
    let err =
        icmp_error(n.rs_nat, n.client, unreach, &sent_on.ip_bytes()).macs(RS_NAT_MAC, INT_MAC);
    cases.push((
        case(
            &d("ICMP unreachable to a client quoting client → NAT real server, no connection → xvs"),
            &err,
            INT,
            unclaimed(DropReason::IcmpNoConnection),
            None,
        ),
        Steering::Redirect,
    ));
    // The VIP is one of the host's addresses too: the service rule wins.
    let answered = Pkt::tcp(n.vip, PORT_NAT, n.client, 45005, ACK);
    let err = icmp_error(n.gw, n.vip, too_big, &answered.ip_bytes());
    cases.push((
        case(
            &d("ICMP too-big to the VIP quoting VIP:80 → client, no connection → xvs"),
            &err,
            EXT,
            unclaimed(DropReason::IcmpNoConnection),
            None,
        ),
        Steering::Redirect,
    ));
    cases
}

/// Runs `cases` in order through one pipeline (as the golden test does) and
/// the steering program; `want` holds what the program must do where a case
/// says so.
fn check(test: &str, cases: Vec<(Case, Option<Steering>)>) {
    if !root_or_skip(test) {
        return;
    }
    check_with(program(), cases);
}

/// [`check`] with the program `prog`.
fn check_with(prog: SteeringProgram, cases: Vec<(Case, Option<Steering>)>) {
    let mut p = pipeline();
    let mut failures = Vec::new();
    for (i, (c, want)) in cases.iter().enumerate() {
        let steered = match steering(&prog, &c.input) {
            Ok(s) => s,
            Err(e) => {
                failures.push(format!("#{i} {}: {e}", c.description));
                continue;
            }
        };
        let mut buf = vec![0u8; 4096];
        let head = 256;
        buf[head..head + c.input.len()].copy_from_slice(&c.input);
        let mut f = Frame::new(&mut buf, head, c.input.len());
        let v = p.process(Millis(1000 + i as u64), c.ingress, &mut f);
        let fail = |why: String| format!("#{i} {}: {why}", c.description);
        if want.is_some() && v != c.verdict {
            failures.push(fail(format!("pipeline {v:?}, want {:?}", c.verdict)));
            continue;
        }
        if let Some(w) = want {
            if steered != *w {
                failures.push(fail(format!("program {steered:?}, want {w:?}")));
            }
        }
        match (steered, v) {
            (Steering::Redirect, Verdict::Transmit { .. } | Verdict::Hold { .. }) => {}
            (Steering::Pass, Verdict::Transmit { .. } | Verdict::Hold { .. }) => {
                failures.push(fail(format!(
                    "the pipeline transmits ({v:?}) what the program passes to the kernel"
                )));
            }
            (Steering::Pass, Verdict::Drop(r)) => {
                if !r.is_unclaimed() && !is_parse_error(r) {
                    failures.push(fail(format!(
                        "the program passes to the kernel what the pipeline drops as {r:?}, \
                         neither unclaimed nor unparseable"
                    )));
                }
            }
            (Steering::Redirect, Verdict::Drop(r)) => {
                if r.is_unclaimed() && !hangs_on_connection_state(&c.input, r) {
                    failures.push(fail(format!(
                        "the program redirects what the pipeline leaves unclaimed ({r:?}) \
                         whatever the connections: it should pass it to the kernel"
                    )));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases disagree:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

fn unpinned(cases: Vec<Case>) -> impl Iterator<Item = (Case, Option<Steering>)> {
    cases.into_iter().map(|c| (c, None))
}

fn pinned(cases: Vec<(Case, Steering)>) -> impl Iterator<Item = (Case, Option<Steering>)> {
    cases.into_iter().map(|(c, s)| (c, Some(s)))
}

#[test]
fn steering_agrees_with_the_pipeline_ipv4() {
    let n = v4();
    let mut cases: Vec<_> = unpinned(golden::family_cases(&n)).collect();
    cases.extend(unpinned(golden::v4_only_cases()));
    cases.push((golden::icmp_in_the_other_ip(&n), None));
    cases.extend(pinned(own_address_cases(&n)));
    check("steering_agrees_with_the_pipeline_ipv4", cases);
}

/// The IPv4 cases again with more IPv4 services, NAT real servers and
/// local addresses in the program's sets than it compares inline: the test
/// network's are then looked up in the hash maps as well.
#[test]
fn steering_agrees_with_the_pipeline_ipv4_beyond_the_inline_endpoints() {
    let test = "steering_agrees_with_the_pipeline_ipv4_beyond_the_inline_endpoints";
    if !root_or_skip(test) {
        return;
    }
    let mut prog = program();
    let (mut services, mut nat_reals) = crate::director::steered_endpoints(&snapshot().services);
    // Endpoints of no test frame, UDP port 60000 of addresses the test
    // network does not use: their keys sort ahead of the test network's
    // (protocol first, then port, then address), so these fill the inline
    // slots and the test network's are found in the hash maps.
    let filler = || -> Vec<Endpoint> {
        (200..220)
            .map(|h| Endpoint::new(L4Proto::Udp, ip(&format!("203.0.113.{h}")), 60000))
            .collect()
    };
    services.extend(filler());
    nat_reals.extend(filler());
    prog.sync_services(&services).expect("services");
    prog.sync_nat_reals(&nat_reals).expect("nat_reals");
    let local: HashSet<LocalAddr> = local_addrs()
        .into_iter()
        .chain((230..250).map(|h| ip(&format!("203.0.113.{h}"))))
        .map(LocalAddr::new)
        .collect();
    prog.sync_local_addrs(&local).expect("local_addrs");
    let n = v4();
    let mut cases: Vec<_> = unpinned(golden::family_cases(&n)).collect();
    cases.extend(unpinned(golden::v4_only_cases()));
    cases.extend(pinned(own_address_cases(&n)));
    check_with(prog, cases);
}

#[test]
fn steering_agrees_with_the_pipeline_ipv6() {
    let n = v6();
    let mut cases: Vec<_> = unpinned(golden::family_cases(&n)).collect();
    cases.extend(unpinned(golden::v6_only_cases()));
    cases.push((golden::icmp_in_the_other_ip(&n), None));
    cases.extend(pinned(own_address_cases(&n)));
    check("steering_agrees_with_the_pipeline_ipv6", cases);
}

/// Frames the other rules would redirect go to xvs only when sent to one of
/// the director's unicast MACs; the others are passed and counted, and what
/// is not xvs's anyway is not counted.
#[test]
fn only_frames_to_the_directors_macs_are_redirected() {
    if !root_or_skip("only_frames_to_the_directors_macs_are_redirected") {
        return;
    }
    let mut prog = program();
    let vmac: MacAddr = [0, 0, 0x5e, 0, 1, 51];
    let other: MacAddr = [2, 0, 0, 0, 0, 0x77];
    let mut count = 0;
    for n in [v4(), v6()] {
        let syn = |dst: MacAddr| Pkt::tcp(n.client, 40000, n.vip, PORT_NAT, SYN).macs(GW_MAC, dst);
        let answer = |dst: MacAddr| {
            Pkt::tcp(n.rs_nat, RPORT_NAT, n.client, 40000, SYN | ACK).macs(RS_NAT_MAC, dst)
        };
        let multicast: MacAddr = if n.vip.is_ipv4() {
            [0x01, 0, 0x5e, 0, 0, 1]
        } else {
            [0x33, 0x33, 0, 0, 0, 1]
        };
        let cases = [
            (
                "to the VIP, the external port's MAC",
                syn(EXT_MAC),
                Steering::Redirect,
                0,
            ),
            (
                "NAT answer, the internal port's MAC",
                answer(INT_MAC),
                Steering::Redirect,
                0,
            ),
            (
                "to the VIP, another host's MAC",
                syn(other),
                Steering::Pass,
                1,
            ),
            (
                "NAT answer, another host's MAC",
                answer(other),
                Steering::Pass,
                1,
            ),
            ("to the VIP, broadcast", syn([0xff; 6]), Steering::Pass, 1),
            ("to the VIP, multicast", syn(multicast), Steering::Pass, 1),
            (
                "to the VIP, a virtual MAC not held",
                syn(vmac),
                Steering::Pass,
                1,
            ),
            (
                "not a service, another host's MAC",
                Pkt::tcp(n.client, 40000, n.ext, 22, SYN).macs(GW_MAC, other),
                Steering::Pass,
                0,
            ),
        ];
        for (what, pkt, want, counted) in cases {
            let got = prog.classify(&pkt.bytes()).expect("BPF_PROG_TEST_RUN");
            assert_eq!(got, want, "{what}");
            count += counted;
            assert_eq!(
                prog.counter(SteerCounter::NotForUs).expect("not_for_us"),
                count,
                "{what}"
            );
        }
    }
    // Held (keepalived's master): frames to the virtual MAC are xvs's.
    prog.sync_own_macs(&own_macs(&[EXT_MAC, INT_MAC, vmac]))
        .expect("own_macs");
    let syn = Pkt::tcp(v4().client, 40000, v4().vip, PORT_NAT, SYN).macs(GW_MAC, vmac);
    assert_eq!(prog.classify(&syn.bytes()).unwrap(), Steering::Redirect);
    // More MACs than the program compares inline: the rest are found in
    // the hash map, and a MAC of neither is still passed.
    let vmacs: Vec<MacAddr> = (1..=4).map(|vrid| [0, 0, 0x5e, 0, 1, vrid]).collect();
    prog.sync_own_macs(&own_macs(&[&[EXT_MAC, INT_MAC, vmac][..], &vmacs].concat()))
        .expect("own_macs");
    for dst in [EXT_MAC, INT_MAC, vmac]
        .into_iter()
        .chain(vmacs.iter().copied())
    {
        let syn = Pkt::tcp(v4().client, 40000, v4().vip, PORT_NAT, SYN).macs(GW_MAC, dst);
        assert_eq!(
            prog.classify(&syn.bytes()).unwrap(),
            Steering::Redirect,
            "{dst:x?}"
        );
    }
    let to_other = Pkt::tcp(v4().client, 40000, v4().vip, PORT_NAT, SYN).macs(GW_MAC, other);
    assert_eq!(prog.classify(&to_other.bytes()).unwrap(), Steering::Pass);
    count += 1;
    // Released again (backup): passed.
    prog.sync_own_macs(&own_macs(&[EXT_MAC, INT_MAC]))
        .expect("own_macs");
    assert_eq!(prog.classify(&syn.bytes()).unwrap(), Steering::Pass);
    for dst in vmacs {
        let syn = Pkt::tcp(v4().client, 40000, v4().vip, PORT_NAT, SYN).macs(GW_MAC, dst);
        assert_eq!(
            prog.classify(&syn.bytes()).unwrap(),
            Steering::Pass,
            "{dst:x?}"
        );
    }
    assert_eq!(prog.counter(SteerCounter::NotForUs).unwrap(), count + 5);
}
