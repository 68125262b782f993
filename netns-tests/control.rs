//! The control plane on a running `xvs director`: services configured with
//! `xvs ipvsadm` and an `ipvsadm` symlink, ipvsadm's output from live
//! counters, reconfiguration under traffic without breaking connections
//! that should survive, a second director refused, the config file and the
//! metrics endpoint.
//!
//! ```text
//! [cli] c0 ── d0 [dir] d1 ── r0 [rs]
//! c0: 192.0.2.254            d0: 192.0.2.1, VIP 192.0.2.10
//!                            d1: 198.51.100.1    r0: 198.51.100.2, .3, .4 (NAT real
//!                                                    servers, default route via .1)
//! ```
//! Real servers are a small Python echo server in `rs` answering each line
//! with the address it was reached on, so a client knows its real server.
//! Clients are Python threads in `cli` holding TCP connections that
//! exchange a line every 100 ms.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use xvs::control::protocol::{Request, Response};

use crate::common::{
    mac_text, root_or_skip, summary_field, temp_path, veth, wait_for, worker_summaries,
    DirectorProc, Netns,
};

const VIP: &str = "192.0.2.10";
const SVC: &str = "192.0.2.10:80";

/// Echo server: each line comes back prefixed with the local address.
const SERVER: &str = r#"
import socket, sys, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080))
s.listen(128)
open(sys.argv[1], "w").close()
def serve(c):
    me = c.getsockname()[0].encode()
    f = c.makefile("rwb")
    try:
        for line in f:
            f.write(me + b" " + line)
            f.flush()
    except Exception:
        pass
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// Long-lived clients: `n` connections, a line every 100 ms for `secs`.
/// Prints `up I SERVER` once connection I has its first answer, then one
/// line per connection: `done I SERVER SENT RECEIVED LAST_OK_S ERROR`.
const CLIENTS: &str = r#"
import socket, sys, threading, time
vip, n, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
lock = threading.Lock()
def say(s):
    with lock:
        print(s, flush=True)
def run(i):
    server, sent, got, last, err = "-", 0, 0, 0.0, "ok"
    start = time.time()
    try:
        c = socket.create_connection((vip, 80), timeout=3)
        c.settimeout(3)
        f = c.makefile("rwb")
        while time.time() - start < secs:
            f.write(b"ping %d\n" % sent)
            f.flush()
            sent += 1
            line = f.readline()
            if not line:
                err = "closed"
                break
            if got == 0:
                server = line.split()[0].decode()
                say("up %d %s" % (i, server))
            got += 1
            last = time.time()
            time.sleep(0.1)
    except Exception as e:
        err = type(e).__name__
    say("done %d %s %d %d %.3f %s" % (i, server, sent, got, last, err))
ts = [threading.Thread(target=run, args=(i,)) for i in range(n)]
for t in ts:
    t.start()
    time.sleep(0.05)
for t in ts:
    t.join()
"#;

/// Holds 20 idle connections to the metrics endpoint at all times: each
/// one the endpoint answers or closes (at its head deadline) is replaced at
/// once. Touches argv[1] once the first 20 are open.
const IDLE_SCRAPERS: &str = r#"
import select, socket, sys
def connect():
    return socket.create_connection(("127.0.0.1", 9100))
cs = [connect() for _ in range(20)]
open(sys.argv[1], "w").close()
while True:
    ready, _, _ = select.select(cs, [], [])
    for c in ready:
        cs.remove(c)
        c.close()
        cs.append(connect())
"#;

/// One short connection: prints the real server that answered.
const ONE_SHOT: &str = r#"
import socket, sys
c = socket.create_connection((sys.argv[1], 80), timeout=3)
c.sendall(b"hello\n")
print(c.makefile("rb").readline().split()[0].decode())
"#;

struct Rig {
    cli: Netns,
    dir: Netns,
    rs: Netns,
    neigh: Vec<String>,
    tmp: PathBuf,
    socket: PathBuf,
}

impl Rig {
    fn new() -> Rig {
        let (cli, dir, rs) = (Netns::new("cli"), Netns::new("dir"), Netns::new("rs"));
        veth(&cli, "c0", &dir, "d0");
        veth(&dir, "d1", &rs, "r0");
        cli.ip("addr add 192.0.2.254/24 dev c0");
        dir.ip("addr add 192.0.2.1/24 dev d0");
        dir.ip(&format!("addr add {VIP}/32 dev d0"));
        dir.ip("addr add 198.51.100.1/24 dev d1");
        for a in ["198.51.100.2", "198.51.100.3", "198.51.100.4"] {
            rs.ip(&format!("addr add {a}/24 dev r0"));
        }
        rs.ip("route add default via 198.51.100.1");
        let mac = |ns: &Netns, dev: &str| mac_text(ns.mac(dev));
        let (c0, r0) = (mac(&cli, "c0"), mac(&rs, "r0"));
        let mut neigh = vec![format!("192.0.2.254={c0}@d0")];
        for a in ["198.51.100.2", "198.51.100.3", "198.51.100.4"] {
            neigh.push(format!("{a}={r0}@d1"));
        }
        let tmp = temp_path("control");
        std::fs::create_dir_all(&tmp).expect("temp dir");
        let socket = tmp.join("control.sock");
        Rig {
            cli,
            dir,
            rs,
            neigh,
            tmp,
            socket,
        }
    }

    fn start(&self, extra: &[&str]) -> DirectorProc {
        let socket = self.socket.display().to_string();
        let mut args: Vec<&str> = vec![
            "--workers",
            "1",
            "--conn-table-size",
            "65536",
            "--control-socket",
            &socket,
        ];
        for n in &self.neigh {
            args.push("--neigh");
            args.push(n);
        }
        args.extend_from_slice(extra);
        DirectorProc::start(&self.dir, &args)
    }

    /// `xvs ipvsadm --control-socket S ARGS`.
    fn ipvsadm(&self, args: &str) -> Output {
        self.ipvsadm_stdin(args, "")
    }

    fn ipvsadm_stdin(&self, args: &str, stdin: &str) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_xvs"))
            .arg("ipvsadm")
            .arg("--control-socket")
            .arg(&self.socket)
            .args(args.split_whitespace())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("xvs ipvsadm");
        {
            let mut input = child.stdin.take().expect("stdin");
            input.write_all(stdin.as_bytes()).expect("stdin");
        }
        child.wait_with_output().expect("xvs ipvsadm")
    }

    /// Runs ipvsadm and insists on success; returns stdout.
    fn ok(&self, args: &str) -> String {
        let out = self.ipvsadm(args);
        assert!(
            out.status.success(),
            "ipvsadm {args}: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn start_servers(&self) -> Background {
        let ready = self.tmp.join("server.ready");
        let child = spawn_in(&self.rs, SERVER, &[&ready.display().to_string()], None);
        assert!(
            wait_for(Duration::from_secs(10), || ready.exists()),
            "the real servers did not start"
        );
        Background(child)
    }

    /// The real server one new connection reaches.
    fn one_shot(&self) -> String {
        let out = self.cli.try_exec(&format!(
            "python3 -c '{}' {VIP}",
            ONE_SHOT.replace('\'', "\"")
        ));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

/// A process killed (and reaped) on drop.
struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_in(ns: &Netns, script: &str, args: &[&str], out: Option<&Path>) -> Child {
    let stdout = match out {
        Some(p) => Stdio::from(std::fs::File::create(p).expect("output file")),
        None => Stdio::null(),
    };
    Command::new("ip")
        .args(["netns", "exec", &ns.name, "python3", "-c", script])
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::null())
        .spawn()
        .expect("python3")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One finished client connection.
#[derive(Debug)]
struct Done {
    server: String,
    sent: u64,
    got: u64,
    /// When the last answer came, in seconds since the Unix epoch.
    last_ok: f64,
    error: String,
}

fn done_lines(out: &str) -> Vec<Done> {
    out.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() == 7 && w[0] == "done").then(|| Done {
                server: w[2].to_string(),
                sent: w[3].parse().unwrap_or(0),
                got: w[4].parse().unwrap_or(0),
                last_ok: w[5].parse().unwrap_or(0.0),
                error: w[6].to_string(),
            })
        })
        .collect()
}

/// The real-server lines of `ipvsadm -L -n`: (address, forward, weight,
/// active, inactive).
fn reals(list: &str) -> Vec<(String, String, u32, u32, u32)> {
    list.lines()
        .filter(|l| l.starts_with("  -> ") && !l.contains("RemoteAddress"))
        .map(|l| {
            let w: Vec<&str> = l[5..].split_whitespace().collect();
            (
                w[0].to_string(),
                w[1].to_string(),
                w[2].parse().expect("weight"),
                w[3].parse().expect("active"),
                w[4].parse().expect("inactive"),
            )
        })
        .collect()
}

#[test]
fn ipvsadm_reconfigures_a_running_director_under_traffic() {
    if !root_or_skip("control") {
        return;
    }
    let rig = Rig::new();
    // expire_nodest_conn: the deleted server's connections end at once
    // (the default keeps them for its return; see the flap test below).
    let director = rig.start(&["-i", "d0", "-i", "d1", "--expire-nodest-conn"]);
    let mode = std::fs::metadata(&rig.socket)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .expect("control socket");
    assert_eq!(mode, 0o600, "the control socket is root-only");
    let _servers = rig.start_servers();

    // Configure through `xvs ipvsadm` and through an `ipvsadm` symlink.
    rig.ok(&format!("-A -t {SVC} -s rr"));
    rig.ok(&format!("-a -t {SVC} -r 198.51.100.2:8080 -m"));
    let link = rig.tmp.join("ipvsadm");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_xvs"), &link).expect("symlink");
    let out = Command::new(&link)
        .args(["-a", "-t", SVC, "-r", "198.51.100.3:8080", "-m", "-w", "1"])
        .env("XVS_CONTROL_SOCKET", &rig.socket)
        .output()
        .expect("ipvsadm symlink");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list = rig.ok("-L -n");
    let mut lines = list.lines();
    // `--conn-table-size 65536`: 4370 + 547 buckets, printed as IPVS would.
    assert_eq!(
        lines.next(),
        Some("IP Virtual Server version 1.2.1 (size=4096)")
    );
    assert_eq!(
        lines.collect::<Vec<_>>().join("\n"),
        "Prot LocalAddress:Port Scheduler Flags\n\
         \x20 -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
         TCP  192.0.2.10:80 rr\n\
         \x20 -> 198.51.100.2:8080            Masq    1      0          0         \n\
         \x20 -> 198.51.100.3:8080            Masq    1      0          0         "
    );

    // Bad input: ipvsadm's words and statuses, nothing changes.
    let saved = rig.ok("-S -n");
    for (args, status, words) in [
        (
            format!("-a -t {SVC} -r 198.51.100.2:8080 -m"),
            255,
            "Destination already exists",
        ),
        (
            "-a -t 192.0.2.10:81 -r 198.51.100.2".to_string(),
            255,
            "Service not defined",
        ),
        (
            format!("-a -t {SVC} -r 198.51.100.9 -w 70000"),
            2,
            "illegal weight specified",
        ),
        (
            "-A -t 192.0.2.300:80".to_string(),
            2,
            "illegal virtual server address",
        ),
        ("-L -t 192.0.2.10:81".to_string(), 1, "No such service"),
    ] {
        let out = rig.ipvsadm(&args);
        assert_eq!(out.status.code(), Some(status), "ipvsadm {args}");
        assert!(text(&out.stderr).contains(words), "ipvsadm {args}: {out:?}");
    }
    // A restore with a bad line 3 applies nothing.
    let out = rig.ipvsadm_stdin(
        "-R",
        "-A -t 192.0.2.10:90 -s rr\n-a -t 192.0.2.10:90 -r 198.51.100.4:8080 -m\n-A -t 192.0.2.10:90\n",
    );
    assert_eq!(out.status.code(), Some(255));
    assert!(text(&out.stderr).contains("line 3: Service already exists"));
    // Garbage, truncated and oversized messages on the socket.
    for bad in [
        "printf 'GET / HTTP/1.0\\r\\n\\r\\n'",
        "printf 'XVS1\\000\\000\\000\\050\\000\\000'",
        "printf 'XVS1\\377\\377\\377\\377'",
    ] {
        let out = crate::common::run(&format!(
            "{bad} | timeout 10 python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(sys.stdin.buffer.read()); s.shutdown(socket.SHUT_WR); sys.stdout.buffer.write(s.recv(65536))' {}",
            rig.socket.display()
        ));
        let reply = text(&out.stdout);
        assert!(reply.contains("bad control message"), "{bad}: {out:?}");
    }
    // A whole request followed by junk, or by a second request: refused
    // whole, the answer read before any reset.
    let add = Request {
        args: "-A -t 192.0.2.10:99 -s rr"
            .split(' ')
            .map(String::from)
            .collect(),
        stdin: None,
    }
    .encode();
    for (what, bytes) in [
        ("junk", [&add[..], b"junk"].concat()),
        ("a second request", [&add[..], &add[..]].concat()),
    ] {
        let mut s = UnixStream::connect(&rig.socket).expect("control socket");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        s.write_all(&bytes).expect("request");
        s.shutdown(std::net::Shutdown::Write).expect("shutdown");
        let r = Response::read_from(&mut s).expect("answer");
        assert_eq!(r.exit_code, 255, "a request, then {what}: {r:?}");
        assert!(r.stderr.contains("bytes after the frame"), "{what}: {r:?}");
    }
    // Idle connections hold their own places, not ipvsadm's.
    let idle: Vec<UnixStream> = (0..20)
        .map(|_| UnixStream::connect(&rig.socket).expect("control socket"))
        .collect();
    let start = Instant::now();
    rig.ok("-L -n");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "with 20 idle control connections, ipvsadm -L took {:?}",
        start.elapsed()
    );
    drop(idle);
    assert_eq!(
        rig.ok("-S -n"),
        saved,
        "bad input changed the configuration"
    );

    // Long-lived connections: three to each real server (rr).
    let clients_out = rig.tmp.join("clients.out");
    let mut clients = spawn_in(&rig.cli, CLIENTS, &[VIP, "6", "9"], Some(&clients_out));
    let all_up = wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&clients_out)
            .unwrap_or_default()
            .matches("up ")
            .count()
            == 6
    });
    assert!(
        all_up,
        "clients did not connect through the director:\n{}\n{}",
        std::fs::read_to_string(&clients_out).unwrap_or_default(),
        director.log_text()
    );
    let r = reals(&rig.ok("-L -n"));
    assert_eq!(
        r.iter().map(|x| (x.3, x.4)).collect::<Vec<_>>(),
        [(3, 0), (3, 0)],
        "{r:?}"
    );

    // A second director on the same interface is refused and changes nothing.
    let other = rig.tmp.join("other.sock");
    let second = rig.dir.try_exec(&format!(
        "timeout 20 {} director -i d1 --control-socket {}",
        env!("CARGO_BIN_EXE_xvs"),
        other.display()
    ));
    assert_eq!(second.status.code(), Some(1), "{second:?}");
    assert!(
        text(&second.stderr).contains("another xvs director"),
        "{}",
        text(&second.stderr)
    );
    let second = rig.dir.try_exec(&format!(
        "timeout 20 {} director -i d0 --control-socket {}",
        env!("CARGO_BIN_EXE_xvs"),
        rig.socket.display()
    ));
    assert!(
        !second.status.success() && text(&second.stderr).contains("another xvs director"),
        "{second:?}"
    );

    // Reconfigure under traffic, letting a few exchanges pass after each
    // change.
    let pause = || std::thread::sleep(Duration::from_millis(300));
    rig.ok(&format!("-a -t {SVC} -r 198.51.100.4:8080 -m -w 1"));
    pause();
    rig.ok(&format!("-e -t {SVC} -r 198.51.100.3:8080 -m -w 0")); // quiesce
    pause();
    rig.ok(&format!("-E -t {SVC} -s wrr")); // scheduler change
    pause();
    rig.ok("--set 900 120 300");
    rig.ok("-Z");
    pause();
    // A restore of what is there, plus a new service: one transaction.
    let script = format!(
        "{}-A -u 192.0.2.10:53 -s rr\n-a -u 192.0.2.10:53 -r 198.51.100.2:53 -m\n",
        rig.ok("-S -n").replace("-A -t 192.0.2.10:80 -s wrr\n", "")
    );
    let out = rig.ipvsadm_stdin("-R", &script.replace("-a -t", "-e -t"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    rig.ok("-D -u 192.0.2.10:53");
    // Twenty more edits under traffic, timed: what a change costs a caller.
    let started = Instant::now();
    for w in 0..20 {
        rig.ok(&format!(
            "-e -t {SVC} -r 198.51.100.4:8080 -m -w {}",
            1 + w % 2
        ));
    }
    let edit_ms = started.elapsed().as_secs_f64() * 1000.0 / 20.0;
    let started = Instant::now();
    for _ in 0..20 {
        rig.ok("-L -n");
    }
    let list_ms = started.elapsed().as_secs_f64() * 1000.0 / 20.0;
    eprintln!("xvs ipvsadm round trip: -e {edit_ms:.1} ms, -L -n {list_ms:.1} ms (mean of 20)");
    // New connections avoid the quiesced server.
    std::thread::sleep(Duration::from_millis(300));
    let fresh: Vec<String> = (0..4).map(|_| rig.one_shot()).collect();
    assert!(
        fresh
            .iter()
            .all(|s| s == "198.51.100.2" || s == "198.51.100.4"),
        "new connections after quiescing .3: {fresh:?}"
    );
    let r = reals(&rig.ok("-L -n"));
    let three = r.iter().find(|x| x.0 == "198.51.100.3:8080").expect(".3");
    assert_eq!(
        (three.2, three.3),
        (0, 3),
        "quiesced, still 3 active: {r:?}"
    );
    // Delete .2: its connections go (expire_nodest_conn); the others stay.
    let deleted_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64();
    rig.ok(&format!("-d -t {SVC} -r 198.51.100.2:8080"));
    std::thread::sleep(Duration::from_millis(500));
    let stats = rig.ok("-L -n --stats --exact");
    let conns_list = rig.ok("-L -n -c");
    std::thread::sleep(Duration::from_millis(2500));
    let rates = rig.ok("-L -n --rate");

    let _ = clients.wait();
    let out = std::fs::read_to_string(&clients_out).unwrap_or_default();
    let done = done_lines(&out);
    assert_eq!(done.len(), 6, "{out}");
    for d in &done {
        match d.server.as_str() {
            // Quiesced, then edited, rescheduled around: never disturbed.
            "198.51.100.3" => assert!(
                d.error == "ok" && d.got == d.sent && d.got >= 40,
                "a connection to the quiesced server broke: {d:?}\n{out}"
            ),
            // Deleted: answered until the deletion, then not (a ping
            // already on its way may still be answered: 0.1 s between
            // pings, 0.5 s of slack).
            "198.51.100.2" => assert!(
                d.error != "ok" && d.got >= 10 && d.last_ok < deleted_at + 0.5,
                "a connection to the deleted server: {d:?} (deleted at {deleted_at:.3})"
            ),
            other => panic!("connection to {other}: {d:?}"),
        }
    }
    eprintln!(
        "clients:\n{out}\nstats after -Z:\n{stats}\nconnections:\n{conns_list}\nrates:\n{rates}"
    );

    // --stats: since -Z, the quiesced server's three connections kept
    // exchanging; no new ones reached it.
    let line = stats
        .lines()
        .find(|l| l.contains("198.51.100.3:8080"))
        .expect(".3 in --stats");
    let n: Vec<u64> = line
        .split_whitespace()
        .skip(2)
        .map(|w| w.parse().expect("number"))
        .collect();
    assert_eq!(n[0], 0, "no new connection to a quiesced server: {line}");
    assert!(n[1] > 10 && n[2] > 10 && n[3] > 0 && n[4] > 0, "{line}");
    assert!(
        conns_list.starts_with("IPVS connection entries\npro expire state       source             virtual            destination\n"),
        "{conns_list}"
    );
    assert_eq!(
        conns_list
            .lines()
            .filter(|l| l.contains("ESTABLISHED") && l.ends_with("198.51.100.3:8080"))
            .count(),
        3,
        "{conns_list}"
    );
    assert!(
        !conns_list.contains("198.51.100.2:8080"),
        "connections of the deleted server are gone: {conns_list}"
    );
    let line = rates
        .lines()
        .find(|l| l.starts_with("TCP"))
        .expect("service in --rate");
    assert!(
        line.split_whitespace().nth(3).is_some_and(|pps| pps != "0"),
        "an InPPS rate under traffic: {rates}"
    );

    // -S → -C → -R → -S through the live daemon is identical.
    let before = rig.ok("-S -n");
    rig.ok("-C");
    assert_eq!(rig.ok("-S -n"), "");
    let out = rig.ipvsadm_stdin("-R", &before);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(rig.ok("-S -n"), before);

    let log = director.stop();
    eprintln!("director:\n{log}");
    for w in worker_summaries(&log) {
        assert!(w.contains("conserved yes"), "{w}");
        // The only frames dropped were the deleted server's connections':
        // one that met its connection before the reaper's sweep
        // (`dest_gone`, which ends it), or after it, past the reset budget
        // (`tcp_not_syn`). No change dropped anything else.
        let drops = w
            .split("drops [")
            .nth(1)
            .and_then(|r| r.split(']').next())
            .unwrap_or_default();
        assert!(
            drops
                .split_whitespace()
                .all(|d| d.starts_with("tcp_not_syn=") || d.starts_with("dest_gone=")),
            "{w}"
        );
    }
    // The socket is gone with the director, and the client says so.
    let out = rig.ipvsadm("-L -n");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("cannot reach the xvs director"),
        "{out:?}"
    );
}

/// A UDP echo server on the real servers' port 5353.
const UDP_ECHO: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5353))
open(sys.argv[1], "w").close()
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(data, peer)
"#;

/// From each new source address: one UDP query (is its one answer there?)
/// and one TCP connect; prints `udp ok|lost` and `tcp ok SYN_RETRANSMITS`.
const NEW_SOURCES: &str = r#"
import socket, sys, time
vip, udp_src, tcp_src = sys.argv[1], sys.argv[2], sys.argv[3]
def syn_retrans():
    lines = [l.split() for l in open("/proc/net/netstat") if l.startswith("TcpExt:")]
    return int(lines[1][lines[0].index("TCPSynRetrans")])
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind((udp_src, 0))
u.settimeout(3)
start = time.monotonic()
u.sendto(b"first", (vip, 53))
try:
    ok = u.recvfrom(2048)[0] == b"first"
    print("udp", "ok" if ok else "wrong", "%.1f ms" % ((time.monotonic() - start) * 1000))
except socket.timeout:
    print("udp lost")
before = syn_retrans()
t = socket.socket()
t.bind((tcp_src, 0))
t.settimeout(5)
t.connect((vip, 80))
t.sendall(b"hi\n")
t.makefile("rb").readline()
print("tcp ok", syn_retrans() - before)
"#;

/// The first answers to a client the director has no MAC for yet are held
/// until the kernel resolves it, not dropped: the first UDP query from a new
/// on-link address gets its answer, and the first TCP connect from another
/// needs no SYN retransmit.
/// The model's limits are the data plane's (`xvs::limits`): 5,000 services
/// with a NAT real server each restore (the XDP `services` map held 4,096,
/// and such a restore failed with "Argument list too long"), so do as
/// many services as the model takes, and one more is refused naming the
/// limit and changes nothing.
#[test]
fn as_many_services_as_the_model_takes_fit_the_data_plane() {
    if !root_or_skip("control") {
        return;
    }
    use xvs::limits::MAX_SERVICES;
    let rig = Rig::new();
    let _director = rig.start(&["-i", "d0", "-i", "d1"]);
    let service = |i: usize| format!("192.0.2.{}:{}", i % 256, i / 256 + 1);
    let script: String = (0..5000)
        .map(|i| {
            format!(
                "-A -u {} -s rr\n-a -u {} -r 198.51.100.2:{} -m\n",
                service(i),
                service(i),
                i + 1
            )
        })
        .collect();
    let out = rig.ipvsadm_stdin("-R", &script);
    assert!(out.status.success(), "5000 services: {}", text(&out.stderr));
    let count = |saved: &str| saved.lines().filter(|l| l.starts_with("-A")).count();
    assert_eq!(count(&rig.ok("-S -n")), 5000);

    let more: String = (5000..MAX_SERVICES)
        .map(|i| format!("-A -u {}\n", service(i)))
        .collect();
    let out = rig.ipvsadm_stdin("-R", &more);
    assert!(
        out.status.success(),
        "{MAX_SERVICES} services: {}",
        text(&out.stderr)
    );
    let saved = rig.ok("-S -n");
    assert_eq!(count(&saved), MAX_SERVICES);

    let out = rig.ipvsadm(&format!("-A -u {}", service(MAX_SERVICES)));
    assert_eq!(out.status.code(), Some(255));
    assert_eq!(
        text(&out.stderr).trim(),
        format!("Memory allocation problem: xvs holds at most {MAX_SERVICES} virtual services")
    );
    assert_eq!(rig.ok("-S -n"), saved, "a refused add changes nothing");
}

#[test]
fn first_answers_to_a_new_on_link_client_are_held_until_it_is_resolved() {
    if !root_or_skip("first answers to a new client") {
        return;
    }
    let rig = Rig::new();
    let director = rig.start(&["-i", "d0", "-i", "d1"]);
    let _servers = rig.start_servers();
    let ready = rig.tmp.join("udp.ready");
    let _udp = Background(spawn_in(
        &rig.rs,
        UDP_ECHO,
        &[&ready.display().to_string()],
        None,
    ));
    assert!(wait_for(Duration::from_secs(10), || ready.exists()));
    rig.ok(&format!("-A -t {SVC} -s rr"));
    rig.ok(&format!("-a -t {SVC} -r 198.51.100.2:8080 -m"));
    rig.ok(&format!("-A -u {VIP}:53 -s rr"));
    rig.ok(&format!("-a -u {VIP}:53 -r 198.51.100.2:5353 -m"));
    // The client's ARP entry for the VIP comes from its usual address, so
    // the director's kernel learns nothing of the new ones below.
    assert_eq!(rig.one_shot(), "198.51.100.2");
    for a in ["192.0.2.201", "192.0.2.202"] {
        rig.cli.ip(&format!("addr add {a}/24 dev c0"));
    }
    let out = rig.cli.try_exec(&format!(
        "python3 -c '{}' {VIP} 192.0.2.201 192.0.2.202",
        NEW_SOURCES.replace('\'', "\"")
    ));
    let out = format!("{}{}", text(&out.stdout), text(&out.stderr));
    let log = director.stop();
    eprintln!("{out}");
    assert!(out.contains("udp ok"), "{out}\n{log}");
    assert!(out.contains("tcp ok 0"), "{out}\n{log}");
    let w = worker_summaries(&log);
    let held: u64 = w.iter().filter_map(|l| summary_field(l, "held")).sum();
    let sent: u64 = w.iter().filter_map(|l| summary_field(l, "held_sent")).sum();
    // The UDP answer and the SYN-ACK at least, each waited and went out.
    assert!(held >= 2 && sent == held, "held {held}, sent {sent}\n{log}");
    for l in &w {
        assert!(l.contains("conserved yes"), "{l}");
    }
}

/// A director restarted under a live connection knows nothing of it: the
/// client's next segment is answered with a reset (as IPVS's local stack
/// would), so the client sees the connection end at once instead of hanging
/// until its own timeout.
#[test]
fn a_segment_of_a_forgotten_connection_is_answered_with_a_reset() {
    if !root_or_skip("reset for a forgotten connection") {
        return;
    }
    let rig = Rig::new();
    let director = rig.start(&["-i", "d0", "-i", "d1"]);
    let _servers = rig.start_servers();
    let configure = || {
        rig.ok(&format!("-A -t {SVC} -s rr"));
        rig.ok(&format!("-a -t {SVC} -r 198.51.100.2:8080 -m"));
    };
    configure();
    // One exchange, then silence until `go` exists (the kernel alone would
    // answer in the gap between the two directors), then one more line.
    let go = rig.tmp.join("go");
    let script = format!(
        r#"
import os, socket, time
c = socket.create_connection(("{VIP}", 80), timeout=5)
f = c.makefile("rwb")
f.write(b"one\n"); f.flush(); f.readline()
print("up", flush=True)
while not os.path.exists("{go}"):
    time.sleep(0.05)
start = time.time()
try:
    f.write(b"two\n"); f.flush()
    line = f.readline()
    print("answer" if line else "closed", "%.2f" % (time.time() - start))
except Exception as e:
    print(type(e).__name__, "%.2f" % (time.time() - start))
"#,
        go = go.display()
    );
    let out_path = rig.tmp.join("client.out");
    let mut client = spawn_in(&rig.cli, &script, &[], Some(&out_path));
    assert!(
        wait_for(Duration::from_secs(10), || {
            std::fs::read_to_string(&out_path).is_ok_and(|o| o.contains("up"))
        }),
        "the client did not connect"
    );
    director.stop();
    let director = rig.start(&["-i", "d0", "-i", "d1"]);
    configure();
    std::fs::write(&go, "").expect("go");
    let _ = client.wait();
    let out = std::fs::read_to_string(&out_path).unwrap_or_default();
    let log = director.stop();
    assert!(
        out.contains("ConnectionResetError"),
        "the client was not reset: {out}\n{log}"
    );
    let resets: u64 = worker_summaries(&log)
        .iter()
        .filter_map(|l| summary_field(l, "resets_sent"))
        .sum();
    assert!(resets >= 1, "{log}");
}

/// ldirectord with `quiescent=no`, or an operator, deletes a failing real
/// server and adds it back: as with IPVS's default (`expire_nodest_conn=0`)
/// its established connection is kept meanwhile and carries on afterwards.
#[test]
fn a_keepalive_connection_survives_a_real_server_flap() {
    if !root_or_skip("real server flap") {
        return;
    }
    let rig = Rig::new();
    let director = rig.start(&["-i", "d0", "-i", "d1"]);
    let _servers = rig.start_servers();
    rig.ok(&format!("-A -t {SVC} -s rr"));
    rig.ok(&format!("-a -t {SVC} -r 198.51.100.2:8080 -m"));
    let out_path = rig.tmp.join("client.out");
    let mut client = spawn_in(&rig.cli, CLIENTS, &[VIP, "1", "4"], Some(&out_path));
    assert!(
        wait_for(Duration::from_secs(10), || {
            std::fs::read_to_string(&out_path).is_ok_and(|o| o.contains("up 0 198.51.100.2"))
        }),
        "the client did not connect"
    );
    std::thread::sleep(Duration::from_millis(500));
    rig.ok(&format!("-d -t {SVC} -r 198.51.100.2:8080"));
    let gone = rig.ok("-L -n");
    std::thread::sleep(Duration::from_millis(700));
    rig.ok(&format!("-a -t {SVC} -r 198.51.100.2:8080 -m"));
    let back = reals(&rig.ok("-L -n"));
    let _ = client.wait();
    let out = std::fs::read_to_string(&out_path).unwrap_or_default();
    let log = director.stop();
    assert!(!gone.contains("198.51.100.2"), "{gone}");
    // The connection counts against the server again.
    assert_eq!(
        back,
        [("198.51.100.2:8080".to_string(), "Masq".to_string(), 1, 1, 0)],
        "{out}"
    );
    let done = done_lines(&out);
    assert_eq!(done.len(), 1, "{out}");
    let d = &done[0];
    assert!(
        d.error == "ok" && d.got == d.sent && d.got >= 20,
        "the connection did not survive the flap: {d:?}\n{log}"
    );
    // Its packets while the server was gone were dropped, not forwarded.
    let dropped: u64 = worker_summaries(&log)
        .iter()
        .filter_map(|w| {
            w.split_whitespace()
                .find_map(|f| f.trim_matches(['[', ']']).strip_prefix("dest_gone="))
                .and_then(|n| n.parse::<u64>().ok())
        })
        .sum();
    assert!(dropped >= 1, "{log}");
}

#[test]
fn config_file_and_metrics_endpoint() {
    if !root_or_skip("control") {
        return;
    }
    let rig = Rig::new();
    let _servers = rig.start_servers();
    let config = rig.tmp.join("xvs.toml");
    let neigh: Vec<String> = rig.neigh.iter().map(|n| format!("{n:?}")).collect();
    std::fs::write(
        &config,
        format!(
            "interfaces = [\"d0\", \"d1\"]\n\
             neighbours = [{}]\n\
             metrics_addr = \"127.0.0.1:9100\"\n\
             services = \"\"\"\n\
             -A -t {SVC} -s rr\n\
             -a -t {SVC} -r 198.51.100.2:8080 -m -w 3\n\
             --set 600 0 0\n\
             \"\"\"\n\
             [timeouts]\n\
             udp = 40\n",
            neigh.join(", ")
        ),
    )
    .expect("config");
    let check = Command::new(env!("CARGO_BIN_EXE_xvs"))
        .args(["director", "--check-config"])
        .arg(&config)
        .output()
        .expect("check-config");
    assert!(check.status.success(), "{check:?}");
    assert!(
        text(&check.stdout).contains("ok: 2 interface(s), 1 virtual service(s), 1 real server(s)")
    );
    let bad = rig.tmp.join("bad.toml");
    std::fs::write(
        &bad,
        "services = \"\"\"\n-A -t 192.0.2.10:80\n-a -t 192.0.2.10:81 -r 198.51.100.2\n\"\"\"\n",
    )
    .expect("config");
    let check = Command::new(env!("CARGO_BIN_EXE_xvs"))
        .args(["director", "--check-config"])
        .arg(&bad)
        .output()
        .expect("check-config");
    assert_eq!(check.status.code(), Some(1));
    assert!(
        text(&check.stderr).contains("services: line 2: Service not defined"),
        "{check:?}"
    );

    let config_arg = config.display().to_string();
    let director = rig.start(&["--config", &config_arg]);
    assert_eq!(
        rig.ok("-L --timeout"),
        "Timeout (tcp tcpfin udp): 600 120 40\n"
    );
    let r = reals(&rig.ok("-L -n"));
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].0.as_str(), r[0].2), ("198.51.100.2:8080", 3));
    assert_eq!(rig.one_shot(), "198.51.100.2");

    let scrape = |path: &str| {
        text(
            &rig.dir
                .try_exec(&format!(
                    "python3 -c 'import socket; s=socket.create_connection((\"127.0.0.1\", 9100), timeout=5); s.sendall(b\"GET {path} HTTP/1.0\\r\\n\\r\\n\"); b=b\"\"\nwhile True:\n  d=s.recv(65536)\n  if not d: break\n  b+=d\nprint(b.decode())'"
                ))
                .stdout,
        )
    };
    let metrics = scrape("/metrics");
    for want in [
        "HTTP/1.1 200 OK",
        "xvs_service_connections_total{service=\"TCP 192.0.2.10:80\"} 1",
        "xvs_real_connections_total{service=\"TCP 192.0.2.10:80\",real=\"198.51.100.2:8080\"} 1",
        "xvs_real_packets_total{service=\"TCP 192.0.2.10:80\",real=\"198.51.100.2:8080\",direction=\"in\"}",
        "xvs_real_weight{service=\"TCP 192.0.2.10:80\",real=\"198.51.100.2:8080\"} 3",
        "xvs_worker_rx_frames_total{worker=\"0\"}",
        "xvs_worker_drops_total{worker=\"0\",reason=\"tcp_not_syn\"}",
        "xvs_worker_frames{worker=\"0\",place=\"total\"}",
        "xvs_worker_batch_duration_seconds{worker=\"0\",quantile=\"0.99\"}",
        "xvs_conntrack_connections",
    ] {
        assert!(metrics.contains(want), "missing {want:?}:\n{metrics}");
    }
    assert!(scrape("/").starts_with("HTTP/1.1 404"));

    // Idle clients delay no scrape (one at a time, 20 of them made a
    // scrape wait 40 s, past Prometheus' 10 s timeout).
    let ready = rig.tmp.join("idle.ready");
    let _idle = Background(spawn_in(
        &rig.dir,
        IDLE_SCRAPERS,
        &[&ready.display().to_string()],
        None,
    ));
    assert!(
        wait_for(Duration::from_secs(10), || ready.exists()),
        "the idle clients did not connect"
    );
    for _ in 0..3 {
        let start = Instant::now();
        let metrics = scrape("/metrics");
        assert!(metrics.starts_with("HTTP/1.1 200 OK"), "{metrics}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "with 20 idle connections open, a scrape took {:?}",
            start.elapsed()
        );
    }
    drop(director);
}
