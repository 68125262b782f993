//! The XDP steering program's cost per frame, which it pays in the receive
//! path of the interface it is attached to, before a frame reaches xvs: on
//! veth that is the sending side's core (the generator's, in `tools/bench`),
//! so every nanosecond here is taken from the traffic offered to xvs. The
//! kernel times the program's test entry (`BPF_PROG_TEST_RUN` with a
//! repeat count; the same classifier as the attached entry, without the
//! head adjustment and the redirect) with its maps filled as a director
//! fills them for the test network (src/pipeline/testnet.rs). Cases:
//! - `service`: a TCP segment to a virtual service (redirected);
//! - `nat reply`: a NAT real server's answer (redirected);
//! - `host`: a TCP segment to the director's own address (passed);
//! - `not IP`: an ARP frame, which the program passes after its first
//!   test: the floor every XDP program pays, the test run's own cost
//!   included.
//!
//! Run as root: `cargo bench --bench steer`. Prints the minimum and the
//! median over rounds of each round's mean, in nanoseconds; the minimum is
//! the one to compare on a busy machine.

use std::collections::HashSet;
use std::net::IpAddr;

use xvs::pipeline::testnet::{self, Pkt, ACK, EXT_MAC, INT_MAC};
use xvs::xsk::prog::{LocalAddr, OwnMac, SteeringProgram};

const ROUNDS: usize = 25;
const REPEAT: u32 = 20_000;

fn program() -> SteeringProgram {
    let snap = testnet::snapshot();
    let mut prog = SteeringProgram::load_with_probe().expect("load the steering program");
    let (services, nat_reals) = xvs::director::programs::steered_endpoints(&snap.services);
    prog.sync_services(&services).expect("services");
    prog.sync_nat_reals(&nat_reals).expect("nat_reals");
    let mut local: Vec<IpAddr> = snap
        .ports
        .iter()
        .flat_map(|p| p.addrs.iter().copied())
        .collect();
    local.extend(snap.services.services().iter().map(|s| s.key.addr));
    let local: HashSet<LocalAddr> = local.into_iter().map(LocalAddr::new).collect();
    prog.sync_local_addrs(&local).expect("local_addrs");
    let macs: HashSet<OwnMac> = [EXT_MAC, INT_MAC].into_iter().map(OwnMac::new).collect();
    prog.sync_own_macs(&macs).expect("own_macs");
    prog
}

fn main() {
    if xvs::xsk::euid() != 0 {
        eprintln!("steer: loading the XDP program needs root; skipped");
        return;
    }
    let n = testnet::v4();
    let arp = {
        let mut f = Pkt::tcp(n.client, 40000, n.vip, testnet::PORT_DR, ACK).bytes();
        f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        f
    };
    let cases: [(&str, Vec<u8>); 4] = [
        (
            "service",
            Pkt::tcp(n.client, 40000, n.vip, testnet::PORT_DR, ACK).bytes(),
        ),
        (
            "nat reply",
            Pkt::tcp(n.rs_nat, testnet::RPORT_NAT, n.client, 40000, ACK)
                .macs(testnet::RS_NAT_MAC, INT_MAC)
                .bytes(),
        ),
        ("host", Pkt::tcp(n.client, 40000, n.ext, 22, ACK).bytes()),
        ("not IP", arp),
    ];
    let prog = program();
    println!("| frame | verdict | min ns | median ns |");
    println!("|---|---|---:|---:|");
    for (name, frame) in &cases {
        let verdict = prog.classify(frame).expect("BPF_PROG_TEST_RUN");
        let mut ns: Vec<u128> = (0..ROUNDS)
            .map(|_| {
                prog.run_time(frame, REPEAT)
                    .expect("BPF_PROG_TEST_RUN")
                    .as_nanos()
            })
            .collect();
        ns.sort_unstable();
        println!("| {name} | {verdict:?} | {} | {} |", ns[0], ns[ROUNDS / 2]);
    }
}
