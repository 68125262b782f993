//! `xvs director` on real interfaces: frames from a generator namespace go
//! through the director namespace to a sink namespace, and must arrive
//! exactly as the packet core's golden tests say; the host stays usable; two
//! queues with two workers lose and duplicate nothing; frames are conserved.
//!
//! ```text
//! [gen] g0 ── d0 [director] d1 ── s0 [sink]
//! g0: 192.0.2.254, 2001:db8::fe (the clients' gateway); clients 203.0.113.0/24, 2001:db8:ff::/48
//! d0: 192.0.2.1, 2001:db8::1, VIPs 192.0.2.10, 2001:db8::10
//! d1: 198.51.100.1, 2001:db8:1::1; real servers .2 (NAT) .3 (DR) .4 (TUN), all "on" s0
//! ```
//! The sink has no addresses, so its kernel stays silent and every frame it
//! records is one the director sent. Next hops are static (`--neigh`), so
//! the test does not wait for ARP.

use std::net::IpAddr;
use std::time::Duration;

use xvs::packet::encap::PROTO_IPIP;
use xvs::packet::{parse, MacAddr, Transport};
use xvs::pipeline::testnet::{self, Net, Pkt, ACK, L4, SYN};

use crate::common::{
    mac_text, root_or_skip, summary_field, temp_path, veth, worker_summaries, DirectorProc, Netns,
    Sniffer,
};

const SERVICES: &str = "\
-A -t 192.0.2.10:80 -s rr
-a -t 192.0.2.10:80 -r 198.51.100.2:8080 -m -w 1
-A -t 192.0.2.10:81 -s rr
-a -t 192.0.2.10:81 -r 198.51.100.3:81 -g -w 1
-A -t 192.0.2.10:82 -s rr
-a -t 192.0.2.10:82 -r 198.51.100.4:82 -i -w 1
-A -t [2001:db8::10]:80 -s rr
-a -t [2001:db8::10]:80 -r [2001:db8:1::2]:8080 -m -w 1
-A -t [2001:db8::10]:81 -s rr
-a -t [2001:db8::10]:81 -r [2001:db8:1::3]:81 -g -w 1
-A -t [2001:db8::10]:82 -s rr
-a -t [2001:db8::10]:82 -r [2001:db8:1::4]:82 -i -w 1
";

struct Rig {
    gen: Netns,
    dir: Netns,
    sink: Netns,
    g0: MacAddr,
    d0: MacAddr,
    d1: MacAddr,
    s0: MacAddr,
    services: std::path::PathBuf,
}

impl Rig {
    /// The three namespaces; `queues` rx/tx queues on every veth.
    fn new(queues: u32) -> Rig {
        let (gen, dir, sink) = (Netns::new("gen"), Netns::new("dir"), Netns::new("sink"));
        if queues > 1 {
            crate::common::sh(&format!(
                "ip link add g0 netns {} numtxqueues {queues} numrxqueues {queues} type veth peer name d0 netns {} numtxqueues {queues} numrxqueues {queues}",
                gen.name, dir.name
            ));
            crate::common::sh(&format!(
                "ip link add d1 netns {} numtxqueues {queues} numrxqueues {queues} type veth peer name s0 netns {} numtxqueues {queues} numrxqueues {queues}",
                dir.name, sink.name
            ));
            for (ns, dev) in [(&gen, "g0"), (&dir, "d0"), (&dir, "d1"), (&sink, "s0")] {
                ns.ip(&format!("link set {dev} up"));
            }
        } else {
            veth(&gen, "g0", &dir, "d0");
            veth(&dir, "d1", &sink, "s0");
        }
        gen.ip("addr add 192.0.2.254/24 dev g0");
        gen.ip("addr add 2001:db8::fe/64 dev g0 nodad");
        gen.ip("addr add 203.0.113.7/32 dev lo");
        dir.ip("addr add 192.0.2.1/24 dev d0");
        dir.ip("addr add 192.0.2.10/32 dev d0");
        dir.ip("addr add 2001:db8::1/64 dev d0 nodad");
        dir.ip("addr add 2001:db8::10/128 dev d0 nodad");
        dir.ip("addr add 198.51.100.1/24 dev d1");
        dir.ip("addr add 2001:db8:1::1/64 dev d1 nodad");
        dir.ip("route add 203.0.113.0/24 via 192.0.2.254");
        dir.ip("-6 route add 2001:db8:ff::/48 via 2001:db8::fe");
        let services = temp_path("services");
        std::fs::write(&services, SERVICES).expect("services file");
        let (g0, d0, d1, s0) = (gen.mac("g0"), dir.mac("d0"), dir.mac("d1"), sink.mac("s0"));
        Rig {
            gen,
            dir,
            sink,
            g0,
            d0,
            d1,
            s0,
            services,
        }
    }

    fn start(&self, extra: &[&str]) -> DirectorProc {
        let mac = mac_text;
        let mut neigh = Vec::new();
        for a in [
            "198.51.100.2",
            "198.51.100.3",
            "198.51.100.4",
            "2001:db8:1::2",
            "2001:db8:1::3",
            "2001:db8:1::4",
        ] {
            neigh.push(format!("{a}={}@d1", mac(self.s0)));
        }
        for a in ["192.0.2.254", "2001:db8::fe"] {
            neigh.push(format!("{a}={}@d0", mac(self.g0)));
        }
        let services = self.services.display().to_string();
        let mut args: Vec<&str> = vec!["-i", "d0", "-i", "d1", "--services", &services];
        if !extra.contains(&"--conn-table-size") {
            args.extend(["--conn-table-size", "65536"]);
        }
        for n in &neigh {
            args.push("--neigh");
            args.push(n);
        }
        args.extend_from_slice(extra);
        DirectorProc::start(&self.dir, &args)
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.services);
    }
}

/// What the generator sends for one flow, and what must come out.
struct Expect {
    input: Vec<u8>,
    output: Vec<u8>,
}

fn readdress(p: Pkt, src: MacAddr, dst: MacAddr) -> Pkt {
    p.macs(src, dst)
}

fn set_dst(mut p: Pkt, addr: IpAddr, port: u16) -> Pkt {
    p.dst = addr;
    if let L4::Tcp { dport, .. } = &mut p.l4 {
        *dport = port;
    }
    p
}

/// The forward cases for one family: NAT, DR and TUN SYNs from `flows` client ports.
fn forward_cases(rig: &Rig, n: &Net, flows: u16) -> Vec<Expect> {
    let mut out = Vec::new();
    for k in 0..flows {
        // NAT: destination rewritten, TTL decremented, MACs toward the RS.
        let syn = Pkt::tcp(n.client, 40000 + k, n.vip, 80, SYN).macs(rig.g0, rig.d0);
        let want = set_dst(syn.clone(), n.rs_nat, 8080)
            .macs(rig.d1, rig.s0)
            .ttl(63);
        out.push(Expect {
            input: syn.bytes(),
            output: want.bytes(),
        });
        // DR: MACs only.
        let syn = Pkt::tcp(n.client, 41000 + k, n.vip, 81, SYN).macs(rig.g0, rig.d0);
        let want = readdress(syn.clone(), rig.d1, rig.s0);
        out.push(Expect {
            input: syn.bytes(),
            output: want.bytes(),
        });
        // TUN: the untouched packet inside an outer header from d1 to the RS.
        let syn = Pkt::tcp(n.client, 42000 + k, n.vip, 82, SYN).macs(rig.g0, rig.d0);
        let inner = syn.ip_bytes();
        let proto = if n.vip.is_ipv4() { PROTO_IPIP } else { 41 };
        let mut outer = Pkt::new(
            n.int,
            n.rs_tun,
            L4::Raw {
                proto,
                bytes: inner,
            },
        )
        .macs(rig.d1, rig.s0);
        outer.payload.clear();
        outer.id = 0;
        let mut want = outer.bytes();
        if n.vip.is_ipv6() {
            want[15] &= 0xf0;
            want[16] = 0;
            want[17] = 0;
        }
        out.push(Expect {
            input: syn.bytes(),
            output: want,
        });
    }
    out
}

/// Frames of our flows only: TCP or IP-in-IP within the test's addresses
/// (the kernels' own ARP, ND and MLD chatter is left out).
fn ours(frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    frames
        .iter()
        .filter(|f| match parse(f) {
            Ok(p) => {
                matches!(p.transport, Transport::Tcp { .. })
                    || p.proto == PROTO_IPIP
                    || p.proto == 41
            }
            Err(_) => false,
        })
        .cloned()
        .collect()
}

/// IPv6 tunnel flow labels are xvs's hash: blank them before comparing.
fn blank_flow_label(mut f: Vec<u8>) -> Vec<u8> {
    if f.len() > 20 && f[12..14] == [0x86, 0xdd] && f[20] == 41 {
        f[15] &= 0xf0;
        f[16] = 0;
        f[17] = 0;
    }
    f
}

fn sorted_hex(frames: impl IntoIterator<Item = Vec<u8>>) -> Vec<String> {
    let mut v: Vec<String> = frames
        .into_iter()
        .map(|f| {
            blank_flow_label(f)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        })
        .collect();
    v.sort();
    v
}

fn assert_clean_exit(log: &str, workers: usize) -> Vec<String> {
    let lines = worker_summaries(log);
    assert_eq!(lines.len(), workers, "worker summaries:\n{log}");
    for l in &lines {
        assert!(l.contains("conserved yes"), "frames not conserved: {l}");
        assert!(l.contains("drops []"), "unexpected drops: {l}");
        assert_eq!(summary_field(l, "rx_dropped"), Some(0), "{l}");
    }
    lines
}

#[test]
fn nat_dr_tun_frames_arrive_rewritten_exactly() {
    if !root_or_skip("nat_dr_tun_frames_arrive_rewritten_exactly") {
        return;
    }
    let rig = Rig::new(1);
    let director = rig.start(&[]);
    let sink = Sniffer::start(&rig.sink, "s0");
    let gen = Sniffer::start(&rig.gen, "g0");
    let flows = 20;
    let mut cases = forward_cases(&rig, &testnet::v4(), flows);
    cases.extend(forward_cases(&rig, &testnet::v6(), flows));
    let inputs: Vec<Vec<u8>> = cases.iter().map(|c| c.input.clone()).collect();
    rig.gen.send_frames("g0", &inputs);
    let got = sink.wait_until(Duration::from_secs(10), |f| ours(f).len() >= cases.len());
    let got = ours(&got);
    assert_eq!(got.len(), cases.len(), "frames at the sink");
    assert_eq!(
        sorted_hex(got),
        sorted_hex(cases.iter().map(|c| c.output.clone()))
    );

    // The NAT real servers answer; the answers reach the client from the VIP.
    let mut answers = Vec::new();
    let mut expect = Vec::new();
    for n in [testnet::v4(), testnet::v6()] {
        for k in 0..flows {
            let a = Pkt::tcp(n.rs_nat, 8080, n.client, 40000 + k, SYN | ACK).macs(rig.s0, rig.d1);
            let mut w = a.clone().macs(rig.d0, rig.g0).ttl(63);
            w.src = n.vip;
            if let L4::Tcp { sport, .. } = &mut w.l4 {
                *sport = 80;
            }
            answers.push(a.bytes());
            expect.push(w.bytes());
        }
    }
    rig.sink.send_frames("s0", &answers);
    let got = gen.wait_until(Duration::from_secs(10), |f| ours(f).len() >= expect.len());
    let got = ours(&got);
    assert_eq!(got.len(), expect.len(), "answers at the client side");
    assert_eq!(sorted_hex(got), sorted_hex(expect));

    // A segment of no connection is answered with a reset, not forwarded.
    let stray =
        Pkt::tcp(testnet::v4().client, 39999, testnet::v4().vip, 80, ACK).macs(rig.g0, rig.d0);
    rig.gen.send_frames("g0", &[stray.bytes()]);
    std::thread::sleep(Duration::from_millis(300));
    let log = director.stop();
    let lines = worker_summaries(&log);
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("drops []"), "{}", lines[0]);
    assert_eq!(
        summary_field(&lines[0], "resets_sent"),
        Some(1),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("conserved yes"), "{}", lines[0]);
    assert_eq!(
        summary_field(&lines[0], "new_conns"),
        Some(6 * u64::from(flows))
    );
}

#[test]
fn the_host_stays_reachable_while_xvs_runs() {
    if !root_or_skip("the_host_stays_reachable_while_xvs_runs") {
        return;
    }
    let rig = Rig::new(1);
    let director = rig.start(&[]);
    // A TCP service of the director host itself, on its own address.
    rig.dir.exec(
        "python3 -c \"import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('192.0.2.1',2222)); s.listen(4)\nwhile True:\n  c,_=s.accept(); c.sendall(b'director here'); c.close()\" >/dev/null 2>&1 &",
    );
    // ARP and ICMP to the director's address go to its kernel.
    let ping = rig
        .gen
        .try_exec("ip neigh flush dev g0; ping -c 2 -W 2 192.0.2.1");
    assert!(
        ping.status.success(),
        "ping: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    let neigh = rig.gen.exec("ip neigh show 192.0.2.1");
    assert!(neigh.contains("lladdr"), "ARP for the director: {neigh}");
    let mut got = String::new();
    for _ in 0..50 {
        let out = rig.gen.try_exec(
            "python3 -c \"import socket; s=socket.create_connection(('192.0.2.1',2222),timeout=2); print(s.recv(64).decode())\"",
        );
        got = String::from_utf8_lossy(&out.stdout).into_owned();
        if got.contains("director here") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        got.contains("director here"),
        "TCP to the director's own address: {got:?}"
    );
    let log = director.stop();
    // None of that went through xvs.
    let lines = worker_summaries(&log);
    assert_eq!(summary_field(&lines[0], "rx"), Some(0), "{log}");
}

/// Each thread of process `pid`: its name and the CPUs it may run on.
fn thread_cpus(pid: u32) -> Vec<(String, Vec<usize>)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("tasks")
        .flatten()
    {
        let dir = task.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        if let Some(list) = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        {
            let cpus = xvs::cpus::parse_list(list.trim()).expect("a CPU list");
            threads.push((comm.trim().to_string(), cpus));
        }
    }
    threads
}

#[test]
fn other_threads_stay_off_the_worker_cpus() {
    if !root_or_skip("other_threads_stay_off_the_worker_cpus") {
        return;
    }
    let mine = thread_cpus(std::process::id());
    let allowed = mine
        .iter()
        .map(|(_, c)| c.clone())
        .max_by_key(Vec::len)
        .expect("this test's own threads");
    let last = *allowed.last().expect("a CPU");
    let rig = Rig::new(1);
    let director = rig.start(&["--worker-cpus", &last.to_string()]);
    let threads = thread_cpus(director.pid());
    let log = director.log_text();
    let rest: Vec<usize> = allowed.iter().copied().filter(|&c| c != last).collect();
    assert!(threads.len() >= 2, "{threads:?}");
    for (name, cpus) in &threads {
        if name.starts_with("xvs-worker") {
            assert_eq!(cpus, &vec![last], "{name} is pinned");
        } else if rest.is_empty() {
            // One CPU only: nothing to move the others to.
            assert_eq!(cpus, &allowed, "{name}");
        } else {
            assert_eq!(cpus, &rest, "{name} stays off the worker's CPU");
        }
    }
    if !rest.is_empty() {
        let want = format!(
            "on CPU {last} (other threads on {})",
            xvs::cpus::format_list(&rest)
        );
        assert!(log.contains(&want), "{log}");
    }
    let log = director.stop();
    assert_clean_exit(&log, 1);
}

#[test]
fn two_queues_two_workers_lose_and_duplicate_nothing() {
    if root_or_skip("two_queues_two_workers_lose_and_duplicate_nothing") {
        every_frame_once_on_two_queues(&[]);
    }
}

#[test]
fn busy_polling_workers_lose_and_duplicate_nothing() {
    // Preferred busy polling leaves the queues' receive work to the
    // workers' own system calls: nothing may be left waiting.
    if root_or_skip("busy_polling_workers_lose_and_duplicate_nothing") {
        every_frame_once_on_two_queues(&["--busy-poll", "64"]);
    }
}

#[test]
fn prefetching_workers_lose_and_duplicate_nothing() {
    // --batch-prefetch parses each batch once more, ahead of processing:
    // the frames it reads must still each go out exactly once.
    if root_or_skip("prefetching_workers_lose_and_duplicate_nothing") {
        every_frame_once_on_two_queues(&["--batch-prefetch"]);
    }
}

/// 1000 SYNs of distinct flows over two queues and two workers: each
/// arrives exactly once, both workers take part, frame accounting balances.
fn every_frame_once_on_two_queues(extra: &[&str]) {
    let rig = Rig::new(2);
    let mut args = vec!["--workers", "2"];
    args.extend_from_slice(extra);
    let director = rig.start(&args);
    let sink = Sniffer::start(&rig.sink, "s0");
    let n = testnet::v4();
    let mut total = 0;
    let mut expected = Vec::new();
    // Several rounds: a longer run, whose frame accounting must still balance.
    for round in 0..5u16 {
        let mut inputs = Vec::new();
        for k in 0..200u16 {
            let syn =
                Pkt::tcp(n.client, 10000 + round * 1000 + k, n.vip, 81, SYN).macs(rig.g0, rig.d0);
            expected.push(syn.clone().macs(rig.d1, rig.s0).bytes());
            inputs.push(syn.bytes());
        }
        rig.gen.send_frames("g0", &inputs);
        total += inputs.len();
    }
    sink.wait_until(Duration::from_secs(15), |f| ours(f).len() >= total);
    // A little longer, so that a duplicate would have time to show.
    std::thread::sleep(Duration::from_millis(300));
    let got = ours(&sink.frames());
    assert_eq!(sorted_hex(got), sorted_hex(expected), "every frame once");
    let log = director.stop();
    let lines = assert_clean_exit(&log, 2);
    for l in &lines {
        assert!(
            summary_field(l, "rx").unwrap_or(0) > 0,
            "both workers got flows: {l}"
        );
    }
    let rx: u64 = lines.iter().filter_map(|l| summary_field(l, "rx")).sum();
    assert_eq!(rx, total as u64, "{log}");
}

/// Runs `xvs director ARGS` in `ns`, expecting it to refuse to start.
fn refused(ns: &Netns, args: &str) -> String {
    let out = ns.try_exec(&format!(
        "timeout 20 {} director {args} --control-socket {}",
        env!("CARGO_BIN_EXE_xvs"),
        temp_path("ctl").with_extension("sock").display()
    ));
    assert!(!out.status.success(), "xvs director {args} started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn start_stop_crash_and_clear_errors() {
    if !root_or_skip("start_stop_crash_and_clear_errors") {
        return;
    }
    let rig = Rig::new(1);
    // Errors a person understands, and nothing left attached after them.
    let e = refused(&rig.dir, "-i d0 -i eth9");
    assert!(
        e.contains("interface eth9 not found (ip link shows: lo, d0, d1)"),
        "{e}"
    );
    let e = refused(&rig.dir, "-i d0 --workers 2");
    assert!(
        e.contains("d0 has 1 rx queue(s)") && e.contains("ethtool -L d0"),
        "{e}"
    );
    let e = refused(&rig.dir, "-i d0 --worker-cpus 1000");
    assert!(
        e.contains("CPU 1000 is not one this process may run on (allowed: "),
        "{e}"
    );
    // Without root (or the capabilities), a clear refusal before anything is touched.
    let out = rig.dir.try_exec(&format!(
        "setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all {} director -i d0 --control-socket {}",
        env!("CARGO_BIN_EXE_xvs"),
        temp_path("ctl").with_extension("sock").display()
    ));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("needs root"), "{e}");
    assert!(
        !rig.dir.ip("link show d0").contains("xdp"),
        "no program left after a refused start"
    );

    // A clean stop detaches the steering programs.
    let d = rig.start(&[]);
    assert!(rig.dir.ip("link show d0").contains("prog/xdp"));
    d.stop();
    for dev in ["d0", "d1"] {
        assert!(
            !rig.dir.ip(&format!("link show {dev}")).contains("xdp"),
            "{dev} detached"
        );
    }

    // A crashed run (SIGKILL) leaves its program behind; the next start
    // replaces it, says so, and forwards.
    rig.start(&[]).crash();
    assert!(
        rig.dir.ip("link show d0").contains("prog/xdp"),
        "a crash leaves the program"
    );
    let d = rig.start(&[]);
    assert!(
        d.log_text().contains("replacing the XDP program"),
        "{}",
        d.log_text()
    );
    let sink = Sniffer::start(&rig.sink, "s0");
    let n = testnet::v4();
    let syn = Pkt::tcp(n.client, 43000, n.vip, 81, SYN).macs(rig.g0, rig.d0);
    rig.gen.send_frames("g0", &[syn.bytes()]);
    let got = sink.wait_until(Duration::from_secs(5), |f| !ours(f).is_empty());
    assert_eq!(ours(&got).len(), 1, "forwarding after the restart");
    assert_clean_exit(&d.stop(), 1);
}

/// A start that cannot succeed is refused cleanly, whenever it fails: a
/// non-zero exit with the reason, no XDP program left on any interface, no
/// control socket file left. `ulimit -v` makes a connection table of
/// 2^28 connections (~18 GiB) impossible on any machine; before it was
/// checked and allocated fallibly, that start aborted (SIGABRT) with both
/// programs attached and the socket file behind.
#[test]
fn impossible_starts_are_refused_cleanly() {
    if !root_or_skip("impossible_starts_are_refused_cleanly") {
        return;
    }
    let rig = Rig::new(1);
    let xvs = env!("CARGO_BIN_EXE_xvs");
    let limit = "ulimit -v 4194304"; // 4 GiB of address space
    let refused_cleanly = |args: &str| -> String {
        let sock = temp_path("ctl").with_extension("sock");
        let out = rig.dir.try_exec(&format!(
            "{limit}; timeout 60 {xvs} director -i d0 -i d1 {args} --control-socket {}",
            sock.display()
        ));
        let e = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "xvs director {args}: {e}");
        for dev in ["d0", "d1"] {
            assert!(
                !rig.dir.ip(&format!("-d link show {dev}")).contains("xdp"),
                "{dev} keeps an XDP program after {args}: {e}"
            );
        }
        assert!(!sock.exists(), "{} left after {args}", sock.display());
        e
    };
    // Refused by the memory check, before anything is allocated.
    let e = refused_cleanly("--conn-table-size 268435456");
    assert!(
        e.contains("conn_table_size = 268435456 needs ")
            && e.contains("more than the 4 GiB this process may map (RLIMIT_AS, ulimit -v)"),
        "{e}"
    );
    // Refused after the programs were attached (no such address to serve
    // metrics on): they come off again.
    let e = refused_cleanly("--metrics-addr 203.0.113.99:9100");
    assert!(
        e.contains("cannot serve metrics on 203.0.113.99:9100"),
        "{e}"
    );

    // --check-config sees the same, and the queues of interfaces it finds.
    let conf = temp_path("conf").with_extension("toml");
    let check = |text: &str| {
        std::fs::write(&conf, text).expect("config");
        let out = rig.dir.try_exec(&format!(
            "{limit}; {xvs} director --check-config {}",
            conf.display()
        ));
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, e) = check("interfaces = [\"d0\"]\nconn_table_size = 268435456\n");
    assert!(code == Some(1) && e.contains("RLIMIT_AS"), "{e}");
    let (code, e) = check("interfaces = [\"d0\"]\nqueues = [3]\n");
    assert!(
        code == Some(1) && e.contains("interface d0 has 1 rx queue(s); queue 3 does not exist"),
        "{e}"
    );
    let (code, e) = check("interfaces = [\"d0\", \"d1\"]\nqueues = [0]\n");
    assert_eq!(code, Some(0), "{e}");
    let _ = std::fs::remove_file(&conf);
}

#[test]
fn a_real_server_changing_its_mac_is_followed() {
    if !root_or_skip("a_real_server_changing_its_mac_is_followed") {
        return;
    }
    let rig = Rig::new(1);
    // This time the director learns the real server's MAC from the kernel.
    rig.sink.ip("addr add 198.51.100.3/24 dev s0");
    let d = DirectorProc::start(
        &rig.dir,
        &[
            "-i",
            "d0",
            "-i",
            "d1",
            "--services",
            rig.services.to_str().unwrap_or_default(),
            "--neigh",
            &format!("192.0.2.254={}@d0", mac_text(rig.g0)),
        ],
    );
    let sink = Sniffer::start(&rig.sink, "s0");
    let n = testnet::v4();
    let send = |port: u16| {
        let syn = Pkt::tcp(n.client, port, n.vip, 81, SYN).macs(rig.g0, rig.d0);
        rig.gen.send_frames("g0", &[syn.bytes()]);
    };
    let dst_mac_of_last = |want: usize| -> Option<[u8; 6]> {
        let f = sink.wait_until(Duration::from_secs(10), |f| ours(f).len() >= want);
        let f = ours(&f);
        f.get(want - 1)
            .map(|fr| fr[..6].try_into().unwrap_or([0; 6]))
    };
    // The first SYN may wait for ARP (its retransmission would go through);
    // send until one arrives.
    let mut port = 44000;
    while ours(&sink.frames()).is_empty() && port < 44050 {
        send(port);
        port += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    let before = dst_mac_of_last(1).expect("a frame reached the real server");
    assert_eq!(before, rig.s0);
    let new_mac = [0x02, 0, 0, 0, 0x0a, 0x0b];
    rig.sink.ip("link set dev s0 address 02:00:00:00:0a:0b");
    // The director's kernel learns the new MAC (the sink announces itself);
    // xvs follows without a restart.
    rig.sink
        .exec("ping -c 1 -W 1 -I s0 198.51.100.1 >/dev/null 2>&1 || true");
    let seen = ours(&sink.frames()).len();
    let mut got = None;
    for k in 0..50u16 {
        send(45000 + k);
        std::thread::sleep(Duration::from_millis(200));
        let f = ours(&sink.frames());
        if f.len() > seen {
            let last: [u8; 6] = f[f.len() - 1][..6].try_into().unwrap_or([0; 6]);
            if last == new_mac {
                got = Some(last);
                break;
            }
        }
    }
    assert_eq!(
        got,
        Some(new_mac),
        "frames follow the real server's new MAC"
    );
    d.stop();
}

/// The director's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// A flood of new connections, far more than the table holds, for a few
/// bounded rounds: the table refuses what does not fit and counts it, and
/// the director's memory stays flat (everything it needs is allocated at
/// start), round after round.
#[test]
fn memory_stays_flat_under_a_flood_of_new_connections() {
    if !root_or_skip("memory under a connection flood") {
        return;
    }
    let rig = Rig::new(1);
    // A table small enough that each round's SYNs fill it even when a
    // loaded machine lets the worker take only a part of them.
    let director = rig.start(&["--workers", "1", "--conn-table-size", "16384"]);
    let flood = || {
        let out = rig.gen.try_exec(&format!(
            "{} gen -i g0 --dst-mac {} --dst 192.0.2.10 --dport 80 --proto tcp \
             --syn-every-flow --flows 400000 --count 150000 --rate 100000 --quiet",
            env!("CARGO_BIN_EXE_xvs-traffic"),
            mac_text(rig.d0)
        ));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // The first round touches every page the table and rings will use.
    flood();
    let warm = rss_kib(director.pid());
    let mut after = Vec::new();
    for _ in 0..3 {
        flood();
        after.push(rss_kib(director.pid()));
    }
    let log = director.stop();
    let lines = worker_summaries(&log);
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("conserved yes"), "{}", lines[0]);
    // 16,384 slots (half-open ones held 2 s under a flood) and 600,000
    // SYNs at 100,000 a second: the table fills, and refusals are counted.
    let full: u64 = lines[0]
        .split_whitespace()
        .find_map(|f| f.trim_matches(['[', ']']).strip_prefix("conn_table_full="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(full > 1000, "{}", lines[0]);
    eprintln!("VmRSS: {warm} KiB after the first round, {after:?} KiB after each next");
    assert!(warm > 0, "no VmRSS for the director");
    for kib in &after {
        assert!(
            kib.saturating_sub(warm) < 4096,
            "resident memory grew from {warm} KiB to {after:?} KiB"
        );
    }
}
