//! The seed's three clusters — LVS/NAT, LVS/TUN, LVS/DR — and TUN over IPv6
//! (ip6ip6) with real Linux TCP stacks on every side, built by `tools/lab`
//! (the same topologies the demo shows) and configured by seed-style scripts
//! through an `ipvsadm` symlink to xvs.
//!
//! Per mode: every request answered; rr spreads 30 requests 10/10/10; wrr
//! and wlc follow weights; `ipvsadm -L -n` shows the Forward method and
//! ActiveConn/InActConn while long-lived connections are open and after
//! they close; a 64 MiB iperf3 transfer completes and `--stats` accounts
//! for it; in TUN and DR no answer passes the director; persistence keeps a
//! client on one real server; quiescing keeps old connections and sends new
//! ones elsewhere. TUN's transfer also crosses a tunnel MTU smaller than
//! the client's, so it only completes if PMTU discovery works. In TUN6 no
//! real server answers neighbour solicitations for the VIP it holds. In
//! both TUNs the real servers' LAN carries the requests encapsulated.
//!
//! In the NAT cluster the director host also stays a client of its own real
//! servers while the service is live: an HTTP GET to a real server's service
//! port (a health check, also from an address added while xvs runs), a TCP
//! session to another port (ssh-like), and an ICMP port unreachable from a
//! NAT real-server endpoint all reach the director's kernel.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::common::{
    root_or_skip, run, sh, summary_field, temp_path, wait_for, worker_summaries, Capture,
    DirectorProc, Netns,
};

/// Labs this process has built: each gets its own namespace prefix.
static LABS: AtomicU32 = AtomicU32::new(0);

pub(crate) struct Lab {
    pub(crate) prefix: String,
    pub(crate) mode: &'static str,
    /// A directory holding the `ipvsadm` symlink to xvs.
    pub(crate) bin: PathBuf,
    pub(crate) socket: PathBuf,
    pub(crate) vip: IpAddr,
    pub(crate) reals: [IpAddr; 3],
    pub(crate) director: Option<DirectorProc>,
    pub(crate) dir_ns: Option<Netns>,
    /// The switch namespace, held to capture on (deleted with the lab).
    pub(crate) switch: Option<Netns>,
}

impl Lab {
    pub(crate) fn up(mode: &'static str) -> Lab {
        Lab::up_with(mode, "on")
    }

    /// `tx_csum`: "on" (the kernel's default: senders' checksums arrive
    /// partial) or "off" (full checksums, as from a real NIC).
    pub(crate) fn up_with(mode: &'static str, tx_csum: &str) -> Lab {
        Lab::up_with_args(mode, tx_csum, &[])
    }

    /// The lab with `extra` arguments for its `xvs director` (a config
    /// file, checks, sync).
    pub(crate) fn up_with_args(mode: &'static str, tx_csum: &str, extra: &[&str]) -> Lab {
        let tag = if mode == "tun6" { "6" } else { &mode[..1] };
        let prefix = format!(
            "xvs{tag}-{}-{}",
            std::process::id(),
            LABS.fetch_add(1, Ordering::Relaxed)
        );
        let ips = |a: [&str; 3]| a.map(|a| a.parse().expect("address"));
        let bin = temp_path("bin");
        std::fs::create_dir_all(&bin).expect("bin dir");
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_xvs"), bin.join("ipvsadm"))
            .expect("symlink");
        let mut lab = Lab {
            prefix,
            mode,
            bin,
            socket: temp_path("ctl").with_extension("sock"),
            vip: if mode == "tun6" {
                "2001:db8:1::10"
            } else {
                "192.0.2.10"
            }
            .parse()
            .expect("VIP"),
            reals: match mode {
                "dr" => ips(["192.0.2.2", "192.0.2.3", "192.0.2.4"]),
                "tun6" => ips(["2001:db8:2::1", "2001:db8:2::2", "2001:db8:2::3"]),
                _ => ips(["198.51.100.1", "198.51.100.2", "198.51.100.3"]),
            },
            director: None,
            dir_ns: None,
            switch: None,
        };
        sh(&format!(
            "XVS_LAB_TX_CSUM={tx_csum} {}/tools/lab up {mode} {}",
            env!("CARGO_MANIFEST_DIR"),
            lab.prefix
        ));
        let ns = Netns::adopt(&format!("{}-d", lab.prefix));
        let ifaces: &[&str] = if mode == "dr" {
            &["-i", "d0"]
        } else {
            &["-i", "d0", "-i", "d1"]
        };
        let socket = lab.socket.display().to_string();
        let mut args = ifaces.to_vec();
        args.extend([
            "--control-socket",
            &socket,
            "--workers",
            "1",
            "--conn-table-size",
            "65536",
        ]);
        args.extend(extra);
        lab.director = Some(DirectorProc::start(&ns, &args));
        lab.dir_ns = Some(ns);
        lab.switch = Some(Netns::adopt(&lab.ns("sw")));
        lab
    }

    pub(crate) fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    /// VIP:port as ipvsadm and curl write it (`[2001:db8:1::10]:80`).
    pub(crate) fn vip_at(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.vip, port)
    }

    /// A seed-style script, one ipvsadm command a line, through the symlink.
    pub(crate) fn script(&self, text: &str) {
        let out = Command::new("sh")
            .arg("-ec")
            .arg(text)
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    self.bin.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env("XVS_CONTROL_SOCKET", &self.socket)
            .output()
            .expect("sh");
        assert!(
            out.status.success(),
            "script failed:\n{text}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub(crate) fn ipvsadm(&self, args: &str) -> String {
        let out = Command::new(self.bin.join("ipvsadm"))
            .args(args.split_whitespace())
            .env("XVS_CONTROL_SOCKET", &self.socket)
            .output()
            .expect("ipvsadm");
        assert!(
            out.status.success(),
            "ipvsadm {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The service with the method flag of this lab's mode.
    pub(crate) fn method(&self) -> &'static str {
        match self.mode {
            "nat" => "-m",
            "tun" | "tun6" => "-i",
            _ => "-g",
        }
    }

    pub(crate) fn forward_word(&self) -> &'static str {
        match self.mode {
            "nat" => "Masq",
            "tun" | "tun6" => "Tunnel",
            _ => "Route",
        }
    }

    /// `-C`, then one service on VIP:port with the three real servers.
    pub(crate) fn configure(&self, port: u16, sched: &str, weights: [u32; 3], extra: &str) {
        let vip = self.vip_at(port);
        let mut s = format!("ipvsadm -C\nipvsadm -A -t {vip} -s {sched} {extra}\n");
        for (r, w) in self.reals.iter().zip(weights) {
            s += &format!(
                "ipvsadm -a -t {vip} -r {} {} -w {w}\n",
                SocketAddr::new(*r, port),
                self.method()
            );
        }
        self.script(&s);
    }

    /// `n` HTTP requests from the client, one connection each; how many each
    /// real server answered.
    pub(crate) fn requests(&self, n: usize) -> BTreeMap<String, usize> {
        let out = sh(&format!(
            "ip netns exec {} sh -c 'for i in $(seq {n}); do curl -s -m 5 http://{}/ || echo FAILED; done'",
            self.ns("c"),
            self.vip_at(80)
        ));
        let mut counts = BTreeMap::new();
        for l in out.lines() {
            *counts.entry(l.trim().to_string()).or_insert(0) += 1;
        }
        assert!(
            !counts.contains_key("FAILED"),
            "unanswered requests: {counts:?}"
        );
        assert_eq!(counts.values().sum::<usize>(), n, "{counts:?}");
        counts
    }

    /// A long-lived request (`/hold?s=SECS`) in the background.
    pub(crate) fn hold(&self, secs: u32) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.ns("c"), "curl", "-s", "-m", "60"])
            .arg(format!("http://{}/hold?s={secs}", self.vip_at(80)))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("curl")
    }

    /// Rows `(real, forward, weight, active, inactive)` of `ipvsadm -L -n`.
    pub(crate) fn rows(&self) -> Vec<(String, String, u32, u32, u32)> {
        self.ipvsadm("-L -n")
            .lines()
            .filter(|l| l.trim_start().starts_with("->") && !l.contains("RemoteAddress"))
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let n = |i: usize| f.get(i).and_then(|v| v.parse().ok()).unwrap_or(u32::MAX);
                (f[1].to_string(), f[2].to_string(), n(3), n(4), n(5))
            })
            .collect()
    }

    /// TUN: a capture of the encapsulated packets on the real servers'
    /// switch, and the director's address there that they come from.
    pub(crate) fn tunnel_capture(&self) -> Option<(Capture, &'static str)> {
        let (filter, outer) = match self.mode {
            "tun" => ("ip proto 4", "198.51.100.253"),
            "tun6" => ("ip6 proto 41", "2001:db8:2::fd"),
            _ => return None,
        };
        let switch = self.switch.as_ref()?;
        Some((Capture::start(switch, "any", filter), outer))
    }

    pub(crate) fn stop(&mut self) -> String {
        self.director.take().map(|d| d.stop()).unwrap_or_default()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.director.take();
        let _ = Command::new(format!("{}/tools/lab", env!("CARGO_MANIFEST_DIR")))
            .args(["down", &self.prefix])
            .status();
        let _ = std::fs::remove_dir_all(&self.bin);
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// One `--stats` row's InBytes / OutPkts for the real `real`, exact numbers.
fn stats_row(lab: &Lab, real: IpAddr, port: u16) -> (u64, u64, u64, u64, u64) {
    let out = lab.ipvsadm("-L -n --stats --exact");
    let real = SocketAddr::new(real, port);
    let line = out
        .lines()
        .find(|l| l.contains(&real.to_string()))
        .unwrap_or_else(|| panic!("no {real} in\n{out}"));
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    (f[0], f[1], f[2], f[3], f[4])
}

/// The real servers hold the VIP on lo but, without any sysctl, answer no
/// neighbour solicitation for it: the router, asking for the VIP on their
/// LAN, gets no answer, while a real server's own address resolves there.
fn vip_unanswered_on_real_servers_lan(lab: &Lab) {
    let rt = lab.ns("rt");
    let (vip, rs1) = (lab.vip, lab.reals[0]);
    sh(&format!(
        "ip netns exec {rt} ping -6 -c1 -W2 {rs1} >/dev/null"
    ));
    sh(&format!("ip -n {rt} -6 route add {vip}/128 dev rl"));
    let _ = run(&format!("ip netns exec {rt} ping -6 -c2 -W1 {vip}"));
    let neigh = sh(&format!("ip -n {rt} -6 neigh show dev rl"));
    sh(&format!("ip -n {rt} -6 route del {vip}/128 dev rl"));
    let entry = |ip: IpAddr| {
        neigh
            .lines()
            .find(|l| l.split_whitespace().next() == Some(&ip.to_string()))
            .unwrap_or_default()
            .to_string()
    };
    assert!(entry(rs1).contains("lladdr"), "{rs1} resolves:\n{neigh}");
    assert!(
        !entry(vip).is_empty() && !entry(vip).contains("lladdr"),
        "a real server answered for the VIP:\n{neigh}"
    );
}

fn cluster(mode: &'static str) {
    let mut lab = Lab::up(mode);
    let rs = |i: usize| format!("rs{}", i + 1);
    if mode == "tun6" {
        vip_unanswered_on_real_servers_lan(&lab);
    }

    // rr: 30 requests, 10 each.
    lab.configure(80, "rr", [1, 1, 1], "");
    let tunnelled = lab.tunnel_capture();
    let c = lab.requests(30);
    assert_eq!(c, (0..3).map(|i| (rs(i), 10)).collect(), "rr");
    for (_, fwd, ..) in lab.rows() {
        assert_eq!(fwd, lab.forward_word());
    }
    if let Some((cap, outer)) = tunnelled {
        // On the real servers' LAN each request is inside a header from
        // the director to the real server (the kernels here cannot
        // decapsulate: the XDP program does).
        let last = format!("{outer} > {}: IP", lab.reals[2]);
        let text = cap.wait_for(&last, Duration::from_secs(5)).join("\n");
        for r in lab.reals {
            assert!(
                text.contains(&format!("{outer} > {r}: IP")),
                "no tunnelled request to {r}:\n{text}"
            );
        }
    }

    // wrr 3:2:1 over 30 requests: exactly 15/10/5 (whole periods of 6).
    lab.configure(80, "wrr", [3, 2, 1], "");
    let c = lab.requests(30);
    assert_eq!(
        c,
        [(rs(0), 15), (rs(1), 10), (rs(2), 5)].into_iter().collect(),
        "wrr"
    );

    // wlc 3:2:1: short connections end up inactive, and wlc evens out
    // InActConn/weight. The earlier phases' closed connections still count:
    // `-C` and the re-adds gave each real server its old id back (IPVS takes
    // its destinations back from the trash the same way), so after 90
    // connections in all the counts are 45/30/15, not the 15/10/5 of this
    // phase alone.
    lab.configure(80, "wlc", [3, 2, 1], "");
    let c = lab.requests(30);
    let rows = lab.rows();
    let per_weight: Vec<f64> = rows
        .iter()
        .map(|r| f64::from(r.4 + r.3) / f64::from(r.2))
        .collect();
    let spread = per_weight.iter().cloned().fold(f64::MIN, f64::max)
        - per_weight.iter().cloned().fold(f64::MAX, f64::min);
    assert!(
        rows.iter().map(|r| r.3 + r.4).sum::<u32>() == 90 && spread <= 1.0,
        "wlc: {c:?}, rows {rows:?}"
    );

    // Long-lived connections show as ActiveConn while open, InActConn after.
    lab.configure(80, "rr", [1, 1, 1], "");
    let holds: Vec<Child> = (0..3).map(|_| lab.hold(4)).collect();
    assert!(
        wait_for(Duration::from_secs(5), || lab
            .rows()
            .iter()
            .all(|r| r.3 == 1)),
        "ActiveConn 1 each while held: {:?}",
        lab.rows()
    );
    for h in holds {
        let out = h.wait_with_output().expect("curl");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("rs"),
            "held request answered"
        );
    }
    let rows = lab.rows();
    assert!(
        rows.iter().all(|r| r.3 == 0 && r.4 >= 1),
        "after close: {rows:?}"
    );

    // Persistence: one client stays on one real server.
    lab.configure(80, "rr", [1, 1, 1], "-p 60");
    let c = lab.requests(9);
    assert_eq!(c.len(), 1, "persistent: {c:?}");

    // Quiescing: a held connection to a real server survives its weight
    // going to 0, and new connections go to the others.
    lab.configure(80, "rr", [1, 1, 1], "");
    let held = lab.hold(4);
    std::thread::sleep(Duration::from_millis(500));
    let busy = lab
        .rows()
        .into_iter()
        .find(|r| r.3 == 1)
        .expect("one active")
        .0;
    let busy_ip = busy.parse::<SocketAddr>().expect("RemoteAddress:Port").ip();
    lab.script(&format!(
        "ipvsadm -e -t {} -r {busy} {} -w 0",
        lab.vip_at(80),
        lab.method()
    ));
    let idx = lab
        .reals
        .iter()
        .position(|r| *r == busy_ip)
        .expect("known real");
    let c = lab.requests(12);
    assert!(
        !c.contains_key(&rs(idx)),
        "quiesced {busy} got new connections: {c:?}"
    );
    let out = held.wait_with_output().expect("curl");
    assert!(
        String::from_utf8_lossy(&out.stdout).ends_with(&format!("{}\n", rs(idx))),
        "the connection to the quiesced server finished: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );

    // 64 MiB through iperf3, counted in --stats.
    lab.script(&format!(
        "ipvsadm -C\nipvsadm -A -t {vip} -s rr\nipvsadm -a -t {vip} -r {} {} -w 1",
        SocketAddr::new(lab.reals[0], 5201),
        lab.method(),
        vip = lab.vip_at(5201),
    ));
    let tunnel = matches!(mode, "tun" | "tun6");
    if tunnel {
        // The tunnel leaves 1480 bytes (IPv6: 1460) for the client's
        // 1500-byte packets: the transfer only completes if the director's
        // "fragmentation needed" / "packet too big" reaches the client and
        // PMTU discovery does its work.
        let link = sh(&format!("ip -n {} -o link show d1", lab.ns("d")));
        assert!(link.contains("mtu 1500"), "{link}");
    }
    let out = sh(&format!(
        "ip netns exec {} iperf3 -c {} -n 64M -J --connect-timeout 5000",
        lab.ns("c"),
        lab.vip
    ));
    let report: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("iperf3 JSON ({e}): {out}"));
    let end = &report["end"];
    let field = |path: &str| {
        end.pointer(path)
            .and_then(|v| v.as_u64())
            .unwrap_or_else(|| panic!("iperf3 JSON has no {path}: {out}"))
    };
    let (sent, received) = (field("/sum_sent/bytes"), field("/sum_received/bytes"));
    let retransmits = field("/sum_sent/retransmits");
    // Its last write may overshoot -n by part of a block.
    assert!(sent >= 64 << 20, "iperf3 wrote only {sent} of the 64 MiB");
    // iperf3's receiver reports less than the client wrote (63-66 of 67 MB
    // in runs here): the test ends with data still on its way, and what was
    // then in the client's send buffer may never cross the wire. Every byte it did
    // receive crossed the director, in segments of at most 1460 bytes with
    // at least 40 bytes of IP and TCP header each. Its report can come before
    // the last of them (some resent after a frag-needed in TUN) have crossed:
    // wait for them.
    let min_pkts = received.div_ceil(1460);
    let min_bytes = received + 40 * min_pkts;
    wait_for(Duration::from_secs(10), || {
        stats_row(&lab, lab.reals[0], 5201).3 >= min_bytes
    });
    let (conns, inpkts, outpkts, inbytes, outbytes) = stats_row(&lab, lab.reals[0], 5201);
    assert!(
        conns >= 2,
        "iperf3 opens a control and a data connection: {conns}"
    );
    assert!(
        inpkts >= min_pkts && inbytes >= min_bytes,
        "InPkts {inpkts} / InBytes {inbytes} cover the {received} bytes received \
         (at least {min_pkts} packets, {min_bytes} bytes)"
    );
    // Nothing counted twice: at most what was sent, its headers (IPv4 with
    // options, or IPv6, and TCP with options stay under 120 bytes), the segments
    // resent, and a few kB of iperf3's control connection.
    let max_bytes = sent + 120 * inpkts + 1500 * retransmits + (64 << 10);
    assert!(
        inbytes <= max_bytes,
        "InBytes {inbytes} over {max_bytes}: counted twice? ({inpkts} packets, \
         {retransmits} retransmits)"
    );
    if mode == "nat" {
        assert!(outpkts > 0 && outbytes > 0, "NAT answers pass the director");
    } else {
        assert_eq!(
            (outpkts, outbytes),
            (0, 0),
            "{mode}: answers bypass the director"
        );
    }

    let log = lab.stop();
    let lines = worker_summaries(&log);
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("conserved yes"), "{log}");
    if tunnel {
        assert!(
            summary_field(&lines[0], "icmp_too_big").unwrap_or(0) > 0,
            "PMTU: {log}"
        );
    }
}

/// The NAT cluster with the senders' checksum offload on (the kernel's
/// default: every TCP/UDP checksum reaches xvs partial) and off (full
/// checksums): 30 of 30 requests either way, and the completion counter
/// says which kind xvs saw.
#[test]
fn nat_cluster_with_partial_and_full_checksums() {
    if !root_or_skip("nat_cluster_with_partial_and_full_checksums") {
        return;
    }
    for tx_csum in ["on", "off"] {
        let mut lab = Lab::up_with("nat", tx_csum);
        lab.configure(80, "rr", [1, 1, 1], "");
        let counts = lab.requests(30);
        assert_eq!(counts.len(), 3, "tx checksum {tx_csum}: {counts:?}");
        let log = lab.stop();
        let completed: u64 = worker_summaries(&log)
            .iter()
            .filter_map(|l| summary_field(l, "checksums_completed"))
            .sum();
        if tx_csum == "on" {
            // Every client segment and every real-server answer: at least
            // the 30 SYNs and 30 SYN-ACKs.
            assert!(completed >= 60, "completed {completed}\n{log}");
        } else {
            assert_eq!(completed, 0, "{log}");
        }
    }
}

#[test]
fn lvs_nat_cluster() {
    if root_or_skip("lvs_nat_cluster") {
        cluster("nat");
    }
}

#[test]
fn lvs_tun_cluster() {
    if root_or_skip("lvs_tun_cluster") {
        cluster("tun");
    }
}

#[test]
fn lvs_tun6_cluster() {
    if root_or_skip("lvs_tun6_cluster") {
        cluster("tun6");
    }
}

#[test]
fn lvs_dr_cluster() {
    if root_or_skip("lvs_dr_cluster") {
        cluster("dr");
    }
}

/// An ssh-like service: a banner, then one line echoed back.
const BANNER_SERVER: &str = r#"
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 2222))
s.listen(8)
while True:
    c, _ = s.accept()
    c.settimeout(5)
    try:
        c.sendall(b"SSH-2.0-rs1\r\n")
        c.sendall(b"echo " + c.makefile("rb").readline())
    except OSError:
        pass
    c.close()
"#;

/// The ssh-like session from the director: prints the banner and the echo.
const BANNER_CLIENT: &str = r#"
import socket
c = socket.create_connection(("198.51.100.1", 2222), timeout=5)
f = c.makefile("rwb")
banner = f.readline().decode().strip()
f.write(b"hello\n"); f.flush()
print(banner, f.readline().decode().strip())
"#;

/// A UDP datagram from the director to 198.51.100.1:53, where nothing
/// listens: prints "refused" once the real server's ICMP port unreachable
/// reaches the director's kernel, "timeout" if it never does.
const UDP_PROBE: &str = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.connect(("198.51.100.1", 53))
s.send(b"anyone?")
try:
    s.recv(64)
    print("answered")
except ConnectionRefusedError:
    print("refused")
except socket.timeout:
    print("timeout")
"#;

#[test]
fn lvs_nat_director_host_reaches_its_real_servers() {
    if !root_or_skip("lvs_nat_director_host_reaches_its_real_servers") {
        return;
    }
    let mut lab = Lab::up("nat");
    let vip = lab.vip;
    // rs1..3 on their port 80 behind VIP:80, and rs1's UDP port 53 behind
    // VIP:53: each of those endpoints is a NAT real server's.
    lab.configure(80, "rr", [1, 1, 1], "");
    lab.script(&format!(
        "ipvsadm -A -u {vip}:53 -s rr\nipvsadm -a -u {vip}:53 -r 198.51.100.1:53 -m"
    ));
    let rs1 = lab.ns("r1");
    sh(&format!(
        "ip netns exec {rs1} setsid python3 -c '{}' >/dev/null 2>&1 </dev/null &",
        BANNER_SERVER.replace('\'', "\"")
    ));
    assert!(
        wait_for(Duration::from_secs(5), || sh(&format!(
            "ip netns exec {rs1} ss -ltn"
        ))
        .contains(":2222 ")),
        "the banner server on rs1 did not start"
    );

    // Clients keep fetching through the VIP meanwhile.
    let clients = Command::new("ip")
        .args(["netns", "exec", &lab.ns("c"), "sh", "-c"])
        .arg(format!(
            "for i in $(seq 30); do curl -s -m 5 http://{vip}/ || echo FAILED; sleep 0.05; done"
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("curl loop");

    let dir = lab.ns("d");
    let in_dir = |cmd: &str| {
        let out = crate::common::run(&format!("ip netns exec {dir} {cmd}"));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // A health check: the real server's own port 80, from the director.
    let checks: Vec<String> = (1..=3)
        .map(|i| in_dir(&format!("curl -s -m 5 http://198.51.100.{i}:80/")))
        .collect();
    let session = in_dir(&format!(
        "python3 -c '{}'",
        BANNER_CLIENT.replace('\'', "\"")
    ));
    let udp = in_dir(&format!("python3 -c '{}'", UDP_PROBE.replace('\'', "\"")));
    // An address added while xvs runs, on an interface that is no director
    // port: the director follows it into the steering program. Until it
    // has, rs1's answers to it still go to xvs and are dropped; the pause
    // only makes that rare, the retries make the check not depend on it. A
    // try ends before the kernel would resend its SYN (1 s), so one that
    // succeeds had no answer dropped.
    in_dir("ip addr add 203.0.113.50/32 dev lo");
    std::thread::sleep(Duration::from_millis(300));
    let mut late_tries = 0;
    let late = wait_for(Duration::from_secs(5), || {
        late_tries += 1;
        in_dir("curl -s -m 0.8 --interface 203.0.113.50 http://198.51.100.1:80/") == "rs1"
    });

    let out = clients.wait_with_output().expect("curl loop");
    let answers = String::from_utf8_lossy(&out.stdout).into_owned();
    let log = lab.stop();
    let summary = worker_summaries(&log).join("\n");
    assert_eq!(
        checks,
        ["rs1", "rs2", "rs3"],
        "HTTP GET from the director to each real server's port 80\n{summary}"
    );
    assert_eq!(
        session, "SSH-2.0-rs1 echo hello",
        "TCP session from the director to rs1:2222\n{summary}"
    );
    assert_eq!(
        udp, "refused",
        "rs1's port unreachable about the director's datagram to rs1:53\n{summary}"
    );
    assert!(
        late,
        "HTTP GET to rs1 from an address added to lo while xvs runs\n{summary}"
    );
    let served = answers.lines().filter(|l| l.starts_with("rs")).count();
    assert_eq!(
        served, 30,
        "every client request through the VIP answered:\n{answers}\n{summary}"
    );
    // None of the director's own exchanges reached xvs, but for rs1's
    // answers to the late address if they raced its update.
    let drops = |reason| summary_field(&summary.replace(['[', ']', '='], " "), reason);
    assert_eq!(drops("icmp_no_connection"), None, "{summary}");
    if late_tries == 1 {
        assert_eq!(drops("no_connection"), None, "{summary}");
    }
}
