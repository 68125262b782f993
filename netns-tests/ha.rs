//! Director high availability: only frames addressed to a director are
//! its, and two directors with keepalived's VRRP (Debian's keepalived, VRRP
//! only, tools/ha) and xvs's connection sync lose no connection when the
//! master dies, freezes or stops.
//!
//! - `only_frames_to_the_directors_macs_are_served`: in the DR lab, SYNs to
//!   the VIP sent to another host's MAC, to broadcast or to multicast open
//!   no connection and are counted (`not_for_us` in the exit summary); to
//!   the director's MAC they are served; to a VRRP virtual MAC on a macvlan
//!   over the director's interface, only once the macvlan carries the VIP
//!   (keepalived's `use_vmac` on the master; its backup keeps the macvlan
//!   up without addresses).
//! - `lvs_nat_failover` and `lvs_dr_failover`: `tools/lab up nat2|dr2`, xvs
//!   on both directors with sync, keepalived on both with
//!   tools/ha/keepalived-{nat,dr}.conf and tools/ha/xvs-notify. Three long
//!   downloads and a stream of short requests through the VIP while the
//!   master is killed (-9, xvs and keepalived), frozen (SIGSTOP, later
//!   SIGCONT) and cleanly stopped. Every download completes byte-exact;
//!   short requests fail only inside the takeover window, which is printed;
//!   the backup's `ipvsadm -L -n -c` held the downloads before each
//!   failover. A director restarted while its peer serves has the peer's
//!   connections (bulk resync) before its keepalived starts and takes the
//!   VIP back (preemption), which is the failback, checked the same way.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use xvs::packet::MacAddr;
use xvs::pipeline::testnet::{Pkt, SYN};

use crate::clusters::Lab;
use crate::common::{root_or_skip, run, sh, temp_path, wait_for, Capture, DirectorProc, Netns};

const VIP: &str = "192.0.2.10";
const CLIENT: &str = "192.0.2.100";

/// The number after `steering IFACE: not_for_us` in a director's log.
fn not_for_us(log: &str, iface: &str) -> Option<u64> {
    let pat = format!("steering {iface}: not_for_us ");
    let rest = &log[log.find(&pat)? + pat.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// Whether `ipvsadm -L -n -c` lists a connection from the client's `port`.
fn has_conn(lab: &Lab, port: u16) -> bool {
    lab.ipvsadm("-L -n -c")
        .contains(&format!("{CLIENT}:{port} "))
}

#[test]
fn only_frames_to_the_directors_macs_are_served() {
    if !root_or_skip("only_frames_to_the_directors_macs_are_served") {
        return;
    }
    let mut lab = Lab::up("dr");
    lab.configure(80, "rr", [1, 1, 1], "");
    let dir = lab.dir_ns.as_ref().expect("director namespace");
    let client = Netns::adopt(&lab.ns("c"));
    let (cmac, dmac) = (client.mac("c0"), dir.mac("d0"));
    let (vip, me) = (VIP.parse().unwrap(), CLIENT.parse().unwrap());
    let syn = |port: u16, dst: MacAddr| Pkt::tcp(me, port, vip, 80, SYN).macs(cmac, dst).bytes();
    let answers = Capture::start(&client, "c0", "tcp and src port 80");
    let send = |frames: &[Vec<u8>]| {
        client.send_frames("c0", frames);
        std::thread::sleep(Duration::from_millis(300));
    };

    // Another host's MAC (a switch flooding the other director's frames),
    // broadcast and multicast: none is the director's.
    let foreign: MacAddr = [0x02, 0, 0, 0, 0, 0x77];
    send(&[
        syn(41001, foreign),
        syn(41002, foreign),
        syn(41003, foreign),
        syn(41004, [0xff; 6]),
        syn(41005, [0x01, 0, 0x5e, 0, 0, 1]),
    ]);
    for port in 41001..=41005 {
        assert!(
            !has_conn(&lab, port),
            "a frame not for the director opened a connection from port {port}"
        );
    }
    let seen = answers
        .wait_for(".41001:", Duration::from_millis(500))
        .join("\n");
    assert!(
        !seen.contains(".4100"),
        "answered frames sent to another host:\n{seen}"
    );
    let mut passed = 5;

    // Its own MAC: served, and answered by a real server.
    send(&[syn(41010, dmac)]);
    assert!(has_conn(&lab, 41010), "{}", lab.ipvsadm("-L -n -c"));
    let seen = answers
        .wait_for(".41010: Flags [S.]", Duration::from_secs(5))
        .join("\n");
    assert!(
        seen.contains(".41010: Flags [S.]"),
        "no answer to a frame to the director's MAC:\n{seen}"
    );

    // keepalived's use_vmac: a macvlan with the virtual router MAC on d0,
    // up but without the VIP (as on a backup), then holding it (master).
    let vmac: MacAddr = [0, 0, 0x5e, 0, 1, 51];
    dir.ip("link add link d0 name vrrp.51 address 00:00:5e:00:01:33 type macvlan mode private");
    dir.ip("link set vrrp.51 up");
    std::thread::sleep(Duration::from_millis(500));
    send(&[syn(41020, vmac)]);
    assert!(
        !has_conn(&lab, 41020),
        "a virtual MAC the director does not hold was served"
    );
    passed += 1;
    dir.ip(&format!("addr del {VIP}/32 dev d0"));
    dir.ip(&format!("addr add {VIP}/32 dev vrrp.51"));
    let mut port = 41021;
    let served = wait_for(Duration::from_secs(5), || {
        send(&[syn(port, vmac)]);
        port += 1;
        if has_conn(&lab, port - 1) {
            return true;
        }
        passed += 1;
        false
    });
    assert!(served, "frames to the held virtual MAC were not served");
    let seen = answers
        .wait_for(
            &format!(".{}: Flags [S.]", port - 1),
            Duration::from_secs(5),
        )
        .join("\n");
    assert!(
        seen.contains(&format!(".{}: Flags [S.]", port - 1)),
        "{seen}"
    );

    let log = lab.stop();
    assert_eq!(not_for_us(&log, "d0"), Some(passed), "{log}");
}

// ---------------------------------------------------------------------------
// Two directors with keepalived.

/// Two-director labs this process has built.
static HA_LABS: AtomicU32 = AtomicU32::new(0);

/// Milliseconds since the epoch, the clock the client's request log uses.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

/// One director of the pair: its namespace, xvs and keepalived.
struct Node {
    /// `da` or `db`, keepalived's config id too.
    id: &'static str,
    ns: Netns,
    socket: PathBuf,
    xvs: Option<DirectorProc>,
    keepalived: Option<Child>,
    /// keepalived's pid files: main, VRRP child, checker child.
    pids: [PathBuf; 3],
}

impl Node {
    /// keepalived's processes now (main and VRRP child), from its pid files.
    fn keepalived_pids(&self) -> Vec<String> {
        self.pids[..2]
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// Signals keepalived's VRRP child and main process in one `kill`, the
    /// child first: a child that outlived its parent even briefly would
    /// say goodbye (priority 0) and make a kill look like a clean stop.
    fn signal_keepalived(&self, sig: &str) {
        let mut pids = self.keepalived_pids();
        pids.reverse();
        if !pids.is_empty() {
            let _ = run(&format!("kill -{sig} {}", pids.join(" ")));
        }
    }

    fn signal_xvs(&self, sig: &str) {
        if let Some(x) = &self.xvs {
            let _ = run(&format!("kill -{sig} {}", x.pid()));
        }
    }

    /// Whether this director holds the VIP (keepalived's master does).
    fn holds_vip(&self) -> bool {
        self.ns
            .try_exec("ip -o addr show")
            .stdout
            .windows(VIP.len() + 1)
            .any(|w| w == format!("{VIP}/").as_bytes())
    }
}

/// `tools/lab up nat2|dr2` with xvs and keepalived on both directors.
struct HaLab {
    prefix: String,
    mode: &'static str,
    work: PathBuf,
    nodes: [Node; 2],
    client: Netns,
    /// The other namespaces, deleted on drop.
    _others: Vec<Netns>,
    /// The `ipvsadm` symlink to xvs.
    bin: PathBuf,
}

impl HaLab {
    fn up(mode: &'static str) -> HaLab {
        let prefix = format!(
            "xvsh{}-{}-{}",
            &mode[..1],
            std::process::id(),
            HA_LABS.fetch_add(1, Ordering::Relaxed)
        );
        let work = temp_path("ha");
        std::fs::create_dir_all(&work).expect("work dir");
        let bin = work.join("bin");
        std::fs::create_dir_all(&bin).expect("bin dir");
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_xvs"), bin.join("ipvsadm"))
            .expect("symlink");
        // The shared sync key: random, readable by its owner only.
        let key = work.join("sync.key");
        sh(&format!(
            "umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > {}",
            key.display()
        ));
        sh(&format!(
            "{}/tools/lab up {mode} {prefix}",
            env!("CARGO_MANIFEST_DIR")
        ));
        let node = |id: &'static str| Node {
            id,
            ns: Netns::adopt(&format!("{prefix}-{id}")),
            socket: work.join(format!("{id}.sock")),
            xvs: None,
            keepalived: None,
            pids: ["main", "vrrp", "check"].map(|p| work.join(format!("{id}.{p}.pid"))),
        };
        let mut others: Vec<Netns> = ["sw", "r1", "r2", "r3"]
            .iter()
            .map(|r| Netns::adopt(&format!("{prefix}-{r}")))
            .collect();
        if mode == "nat2" {
            others.push(Netns::adopt(&format!("{prefix}-sx")));
        }
        let lab = HaLab {
            nodes: [node("da"), node("db")],
            client: Netns::adopt(&format!("{prefix}-c")),
            _others: others,
            prefix,
            mode,
            work,
            bin,
        };
        lab.write_rules();
        lab.write_config();
        for i in 0..2 {
            lab.write_notify_env(i);
            lab.write_keepalived_conf(i);
        }
        lab
    }

    fn ifaces(&self) -> &'static [&'static str] {
        if self.mode == "nat2" {
            &["-i", "d0", "-i", "d1"]
        } else {
            &["-i", "d0"]
        }
    }

    /// The address the directors sync over, of node `i`.
    fn sync_addr(&self, i: usize) -> &'static str {
        match (self.mode, i) {
            ("nat2", 0) => "198.51.100.251",
            ("nat2", _) => "198.51.100.252",
            (_, 0) => "192.0.2.1",
            _ => "192.0.2.5",
        }
    }

    fn sync_iface(&self) -> &'static str {
        if self.mode == "nat2" {
            "d1"
        } else {
            "d0"
        }
    }

    /// The env file tools/ha/xvs-notify reads on node `i`.
    fn write_notify_env(&self, i: usize) {
        let n = &self.nodes[i];
        let text = format!(
            "XVS_IPVSADM='{xvs} ipvsadm'\nXVS_CONTROL_SOCKET='{sock}'\n\
             XVS_SYNC_OPTS='--mcast-interface {iface} --syncid 1'\nXVS_NOTIFY_LOG='{log}'\n",
            xvs = env!("CARGO_BIN_EXE_xvs"),
            sock = n.socket.display(),
            iface = self.sync_iface(),
            log = self.work.join(format!("{}.notify.log", n.id)).display(),
        );
        std::fs::write(self.work.join(format!("{}.env", n.id)), text).expect("env file");
    }

    /// tools/ha/keepalived-{nat,dr}.conf with this host's paths: xvs-notify
    /// from the source tree with the node's env file, xvs from the build.
    fn write_keepalived_conf(&self, i: usize) {
        let n = &self.nodes[i];
        let src = format!(
            "{}/tools/ha/keepalived-{}.conf",
            env!("CARGO_MANIFEST_DIR"),
            &self.mode[..self.mode.len() - 1]
        );
        let text = std::fs::read_to_string(&src).expect("keepalived config");
        let env = self.work.join(format!("{}.env", n.id));
        let notify = format!("{}/tools/ha/xvs-notify", env!("CARGO_MANIFEST_DIR"));
        let text = text
            // keepalived refuses scripts under directories others may write
            // (the temporary directory) with script security on.
            .replace("    enable_script_security\n", "")
            .replace(
                "/usr/sbin/xvs ipvsadm -L -n",
                &format!(
                    "/usr/bin/env XVS_CONTROL_SOCKET={} {} ipvsadm -L -n",
                    n.socket.display(),
                    env!("CARGO_BIN_EXE_xvs")
                ),
            );
        let text = ["master", "backup", "fault", "stop"]
            .iter()
            .fold(text, |t, role| {
                t.replace(
                    &format!("\"/usr/lib/xvs/xvs-notify {role}\""),
                    &format!("\"{notify} {role} {}\"", env.display()),
                )
            });
        assert!(!text.contains("/usr/lib/xvs"), "unreplaced path in\n{text}");
        std::fs::write(self.work.join(format!("{}.conf", n.id)), text).expect("keepalived conf");
    }

    /// Starts xvs on node `i` with sync to its peer, and waits until it is
    /// ready (after its bulk resync, when a peer serves).
    fn start_xvs(&mut self, i: usize) {
        let peer = format!("{}:8848", self.sync_addr(1 - i));
        let socket = self.nodes[i].socket.display().to_string();
        let key = self.work.join("sync.key").display().to_string();
        let rules = self.work.join("rules").display().to_string();
        let config = self.work.join("xvs.toml").display().to_string();
        let mut args = self.ifaces().to_vec();
        args.extend([
            "--config",
            &config,
            "--services",
            &rules,
            "--control-socket",
            &socket,
            "--workers",
            "1",
            "--conn-table-size",
            "65536",
            "--sync-key-file",
            &key,
            "--sync-peer",
            &peer,
        ]);
        let d = DirectorProc::start(&self.nodes[i].ns, &args);
        // The backup role starts with xvs, which asks its peer for the
        // whole table before it is ready (or gives up waiting when no peer
        // answers: the first director of a pair).
        let ready = wait_for(Duration::from_secs(40), || {
            let log = d.log_text();
            log.contains("sync: resync from") || log.contains("sync: no peer answered")
        });
        assert!(
            ready,
            "{}: xvs never got ready:\n{}",
            self.nodes[i].id,
            d.log_text()
        );
        self.nodes[i].xvs = Some(d);
    }

    /// The director's log so far, of node `i`'s running xvs.
    fn xvs_log(&self, i: usize) -> String {
        self.nodes[i]
            .xvs
            .as_ref()
            .map(|x| x.log_text())
            .unwrap_or_default()
    }

    /// The TOML both directors start with: the receiving sync role, which
    /// runs all the time (tools/ha/xvs-notify adds the sending one on the
    /// master).
    fn write_config(&self) {
        let text = format!(
            "[sync]\nrole = \"backup\"\nmcast_interface = \"{}\"\nsyncid = 1\n",
            self.sync_iface()
        );
        std::fs::write(self.work.join("xvs.toml"), text).expect("xvs.toml");
    }

    /// The seed's service, in `ipvsadm -S` form, for both directors'
    /// `--services`: the same on both, as the sync needs.
    fn write_rules(&self) {
        let (method, reals) = if self.mode == "nat2" {
            ("-m", ["198.51.100.1", "198.51.100.2", "198.51.100.3"])
        } else {
            ("-g", ["192.0.2.2", "192.0.2.3", "192.0.2.4"])
        };
        let mut text = format!("-A -t {VIP}:80 -s rr\n");
        for r in reals {
            text += &format!("-a -t {VIP}:80 -r {r}:80 {method} -w 1\n");
        }
        std::fs::write(self.work.join("rules"), text).expect("rules");
    }

    fn ipvsadm(&self, i: usize, args: &str) -> String {
        let out = Command::new(self.bin.join("ipvsadm"))
            .args(args.split_whitespace())
            .env("XVS_CONTROL_SOCKET", &self.nodes[i].socket)
            .output()
            .expect("ipvsadm");
        assert!(
            out.status.success(),
            "{}: ipvsadm {args}: {}",
            self.nodes[i].id,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn start_keepalived(&mut self, i: usize) {
        let n = &self.nodes[i];
        for p in &n.pids {
            let _ = std::fs::remove_file(p);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.work.join(format!("{}.keepalived.log", n.id)))
            .expect("log");
        let conf = self.work.join(format!("{}.conf", n.id));
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &n.ns.name,
                "keepalived",
                "-n",
                "-l",
                "-D",
                "-i",
                n.id,
                "-f",
            ])
            .arg(&conf)
            .arg("-p")
            .arg(&n.pids[0])
            .arg("-r")
            .arg(&n.pids[1])
            .arg("-c")
            .arg(&n.pids[2])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("keepalived (tools/setup installs it)");
        self.nodes[i].keepalived = Some(child);
        let n = &self.nodes[i];
        assert!(
            wait_for(Duration::from_secs(10), || n.keepalived_pids().len() == 2),
            "keepalived did not start on {}:\n{}",
            n.id,
            self.keepalived_log(i)
        );
    }

    fn keepalived_log(&self, i: usize) -> String {
        std::fs::read_to_string(
            self.work
                .join(format!("{}.keepalived.log", self.nodes[i].id)),
        )
        .unwrap_or_default()
    }

    fn notify_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.work.join(format!("{}.notify.log", self.nodes[i].id)))
            .unwrap_or_default()
    }

    /// Waits until node `i` holds the VIP and, if `alone`, its peer does
    /// not. A killed keepalived leaves its addresses behind, and a frozen
    /// one keeps them: there the new master holds them beside the old.
    fn wait_master(&self, i: usize, alone: bool, within: Duration) {
        let ok = wait_for(within, || {
            self.nodes[i].holds_vip() && !(alone && self.nodes[1 - i].holds_vip())
        });
        assert!(
            ok,
            "{} did not become the only master:\n{}\n{}",
            self.nodes[i].id,
            self.keepalived_log(0),
            self.keepalived_log(1)
        );
    }

    /// Kill -9 xvs and keepalived of node `i`, as a crash or power loss.
    fn kill(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.signal_keepalived("KILL");
        if let Some(mut k) = n.keepalived.take() {
            let _ = k.kill();
            let _ = k.wait();
        }
        if let Some(x) = n.xvs.take() {
            x.crash();
        }
    }

    /// SIGTERM keepalived (it gives up the VIP at once), then xvs: the
    /// order systemd stops them in.
    fn clean_stop(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.signal_keepalived("TERM");
        if let Some(mut k) = n.keepalived.take() {
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = k.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = k.kill();
            let _ = k.wait();
        }
        if let Some(x) = n.xvs.take() {
            x.stop();
        }
    }

    fn freeze(&self, i: usize) {
        self.nodes[i].signal_keepalived("STOP");
        self.nodes[i].signal_xvs("STOP");
    }

    fn thaw(&self, i: usize) {
        self.nodes[i].signal_xvs("CONT");
        self.nodes[i].signal_keepalived("CONT");
    }

    /// Client ports of the connections to VIP:80 in node `i`'s table.
    fn conns(&self, i: usize) -> Vec<u16> {
        let pat = format!("{CLIENT}:");
        self.ipvsadm(i, "-L -n -c")
            .lines()
            .filter(|l| l.contains(&format!("{VIP}:80")))
            .filter_map(|l| {
                let f = l.split_whitespace().find(|f| f.starts_with(&pat))?;
                f[pat.len()..].parse().ok()
            })
            .collect()
    }

    /// `n` downloads (`/hold?s=SECS`: a byte a second) from the client,
    /// written as they come (`-N`: curl's output unbuffered).
    fn downloads(&self, n: usize, secs: u32) -> Vec<Download> {
        let list: Vec<Download> = (0..n)
            .map(|k| {
                let out = self.work.join(format!("dl-{}-{k}", now_ms()));
                let child = Command::new("ip")
                    .args([
                        "netns",
                        "exec",
                        &self.client.name,
                        "curl",
                        "-s",
                        "-N",
                        "-m",
                        "90",
                        "-o",
                    ])
                    .arg(&out)
                    .arg(format!("http://{VIP}/hold?s={secs}"))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("curl");
                Download { child, out, secs }
            })
            .collect();
        // Each has its connection (the first byte comes at once).
        let ok = wait_for(Duration::from_secs(5), || {
            list.iter()
                .all(|d| std::fs::metadata(&d.out).is_ok_and(|m| m.len() > 0))
        });
        assert!(ok, "the downloads did not start");
        list
    }

    /// A stream of short requests from the client (each its own
    /// connection, every 100 ms, 1 s to answer), logged with the time.
    fn stream(&self) -> Stream {
        let log = self.work.join(format!("stream-{}", now_ms()));
        let script = format!(
            "while :; do t=$(date +%s%3N); if curl -s -m 1 -o /dev/null http://{VIP}/; then r=ok; else r=fail; fi; \
             echo \"$t $r\" >> {log}; sleep 0.1; done",
            log = log.display()
        );
        let child = Command::new("ip")
            .args(["netns", "exec", &self.client.name, "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("stream");
        Stream { child, log }
    }
}

impl Drop for HaLab {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.signal_keepalived("KILL");
            if let Some(mut k) = n.keepalived.take() {
                let _ = k.kill();
                let _ = k.wait();
            }
            n.signal_xvs("CONT");
            n.xvs.take();
        }
        let _ = Command::new(format!("{}/tools/lab", env!("CARGO_MANIFEST_DIR")))
            .args(["down", &self.prefix])
            .status();
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// A background download through the VIP.
struct Download {
    child: Child,
    out: PathBuf,
    secs: u32,
}

impl Download {
    /// Waits for it; panics unless the body is byte-exact (`SECS` dots and
    /// the real server's name).
    fn finish(mut self, what: &str) {
        let status = self.child.wait().expect("curl");
        let body = std::fs::read_to_string(&self.out).unwrap_or_default();
        let _ = std::fs::remove_file(&self.out);
        let dots = ".".repeat(self.secs as usize);
        let exact = ["rs1", "rs2", "rs3"]
            .iter()
            .any(|rs| body == format!("{dots}{rs}\n"));
        assert!(
            status.success() && exact,
            "{what}: a download broke (curl {status}, {} bytes): {body:?}",
            body.len()
        );
    }
}

/// The short-request stream: results with their time.
struct Stream {
    child: Child,
    log: PathBuf,
}

impl Stream {
    /// (time in ms, answered) of every request so far.
    fn results(&self) -> Vec<(u64, bool)> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (t, r) = l.split_once(' ')?;
                Some((t.parse().ok()?, r == "ok"))
            })
            .collect()
    }

    /// Checks the requests made since `since`: every failure inside one
    /// window that opens at `event` or later and is at most `bound` long,
    /// and requests answered after it. Returns the window in ms (from the
    /// event to the first answer after the last failure).
    fn takeover_window(&self, what: &str, since: u64, event: u64, bound: Duration) -> u64 {
        let wanted = |r: &[(u64, bool)]| {
            r.iter().any(|(t, ok)| *t > event && *ok) && r.iter().rev().take(3).all(|(_, ok)| *ok)
        };
        wait_for(Duration::from_secs(15), || wanted(&self.results()));
        let r: Vec<(u64, bool)> = self
            .results()
            .into_iter()
            .filter(|(t, _)| *t >= since)
            .collect();
        let fails: Vec<u64> = r.iter().filter(|(_, ok)| !ok).map(|(t, _)| *t).collect();
        let text = || {
            r.iter()
                .map(|(t, ok)| {
                    format!(
                        "{:+} {}",
                        *t as i64 - event as i64,
                        if *ok { "ok" } else { "fail" }
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        assert!(
            wanted(&r),
            "{what}: requests not answered again: {}",
            text()
        );
        let Some(&last_fail) = fails.last() else {
            return 0;
        };
        // A request in flight when the event came may fail: it started up
        // to its 1 s timeout before.
        assert!(
            fails[0] + 1100 >= event,
            "{what}: a request failed before the failover: {}",
            text()
        );
        let back = r
            .iter()
            .find(|(t, ok)| *t > last_fail && *ok)
            .map(|(t, _)| *t)
            .unwrap_or(last_fail);
        let window = back.saturating_sub(event);
        assert!(
            Duration::from_millis(window) <= bound,
            "{what}: requests failed for {window} ms after the failover: {}",
            text()
        );
        window
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Bound on a takeover as requests see it: VRRP's 3 advertisement intervals
/// and skew (~3.6 s), then new connections on the new master; generous, as
/// the machine is shared.
const TAKEOVER: Duration = Duration::from_secs(15);
/// The long downloads' length: they outlast a failover and its window.
const HOLD_SECS: u32 = 12;

/// Waits until node `i`'s table holds every one of `ports`.
fn held(lab: &HaLab, i: usize, ports: &[u16], what: &str) {
    let ok = wait_for(Duration::from_secs(10), || {
        let have = lab.conns(i);
        ports.iter().all(|p| have.contains(p))
    });
    assert!(
        ok,
        "{what}: {}'s table lacks the downloads {ports:?}:\n{}",
        lab.nodes[i].id,
        lab.ipvsadm(i, "-L -n -c")
    );
}

/// The client ports of running downloads, from the master's table: the
/// connections the client has open to VIP:80 right now.
fn ports_of(lab: &HaLab, i: usize, n: usize) -> Vec<u16> {
    let mut ports = Vec::new();
    let ok = wait_for(Duration::from_secs(5), || {
        let out = lab
            .client
            .try_exec(&format!("ss -Htn state established dst {VIP}:80"));
        ports = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                l.split_whitespace()
                    .nth(2)?
                    .rsplit(':')
                    .next()?
                    .parse()
                    .ok()
            })
            .collect();
        ports.len() >= n
    });
    assert!(ok, "{} downloads open, want {n}: {ports:?}", ports.len());
    let have = lab.conns(i);
    assert!(
        ports.iter().all(|p| have.contains(p)),
        "the master's table lacks {ports:?}"
    );
    ports
}

/// One failover of master `m`: downloads running, the backup holds them,
/// `event` happens to the master, the backup takes over within the bound,
/// and the downloads complete.
fn failover(lab: &mut HaLab, m: usize, what: &str, alone: bool, event: impl FnOnce(&mut HaLab)) {
    let b = 1 - m;
    let downloads = lab.downloads(3, HOLD_SECS);
    let ports = ports_of(lab, m, 3);
    let stream = lab.stream();
    held(lab, b, &ports, what);
    std::thread::sleep(Duration::from_secs(1));
    let since = now_ms();
    std::thread::sleep(Duration::from_millis(500));
    let at = now_ms();
    event(lab);
    lab.wait_master(b, alone, TAKEOVER);
    let window = stream.takeover_window(what, since, at, TAKEOVER);
    eprintln!(
        "{} {what}: {} took over; short requests failed for {window} ms",
        lab.mode, lab.nodes[b].id
    );
    for d in downloads {
        d.finish(what);
    }
}

/// A director restarted while its peer `p` serves: its xvs resyncs the
/// peer's table before it is ready; only then does its keepalived start,
/// and it takes the VIP back (preemption) without losing the downloads.
fn fail_back(lab: &mut HaLab, r: usize, what: &str) {
    let p = 1 - r;
    let downloads = lab.downloads(3, HOLD_SECS);
    let ports = ports_of(lab, p, 3);
    let stream = lab.stream();
    lab.start_xvs(r);
    let log = lab.xvs_log(r);
    assert!(
        log.contains("sync: resync from") && log.contains(" done: "),
        "{what}: restarted {} got no full table from its peer:\n{log}",
        lab.nodes[r].id
    );
    // Ready means resynced: the peer's connections are there at once.
    let have = lab.conns(r);
    assert!(
        ports.iter().all(|x| have.contains(x)),
        "{what}: restarted {} is ready without the peer's connections {ports:?}:\n{}",
        lab.nodes[r].id,
        lab.ipvsadm(r, "-L -n -c")
    );
    let since = now_ms();
    std::thread::sleep(Duration::from_millis(500));
    let at = now_ms();
    lab.start_keepalived(r);
    lab.wait_master(r, true, TAKEOVER);
    let window = stream.takeover_window(what, since, at, TAKEOVER);
    eprintln!(
        "{} {what}: {} took the VIP back; short requests failed for {window} ms",
        lab.mode, lab.nodes[r].id
    );
    for d in downloads {
        d.finish(what);
    }
}

fn ha_cluster(mode: &'static str) {
    let start = Instant::now();
    let mut lab = HaLab::up(mode);
    lab.start_xvs(0);
    lab.start_xvs(1);
    lab.start_keepalived(0);
    lab.start_keepalived(1);
    lab.wait_master(0, true, TAKEOVER);
    assert!(
        wait_for(Duration::from_secs(5), || lab
            .notify_log(0)
            .contains("sync role master")),
        "xvs-notify did not make da's sync the master's:\n{}",
        lab.notify_log(0)
    );

    // (a) kill -9, then da comes back with the table and takes over again.
    failover(&mut lab, 0, "kill -9", false, |l| l.kill(0));
    assert!(
        lab.notify_log(1).contains("sync role master"),
        "{}",
        lab.notify_log(1)
    );
    fail_back(&mut lab, 0, "restart after kill -9");

    // (b) freeze, then thaw: da resumes and takes the VIP back.
    failover(&mut lab, 0, "SIGSTOP", false, |l| l.freeze(0));
    {
        let downloads = lab.downloads(3, HOLD_SECS);
        let ports = ports_of(&lab, 1, 3);
        let stream = lab.stream();
        let since = now_ms();
        std::thread::sleep(Duration::from_millis(500));
        let at = now_ms();
        lab.thaw(0);
        lab.wait_master(0, true, TAKEOVER);
        // The thawed xvs catches up with what it missed (gap repair).
        held(&lab, 0, &ports, "SIGCONT");
        let window = stream.takeover_window("SIGCONT", since, at, TAKEOVER);
        eprintln!("{mode} SIGCONT: da took the VIP back; short requests failed for {window} ms");
        for d in downloads {
            d.finish("SIGCONT");
        }
    }

    // (c) a clean stop, then back again.
    failover(&mut lab, 0, "clean stop", true, |l| l.clean_stop(0));
    fail_back(&mut lab, 0, "restart after clean stop");
    eprintln!(
        "{mode}: every failover and failback in {:?}",
        start.elapsed()
    );
}

#[test]
fn lvs_nat_failover() {
    if !root_or_skip("lvs_nat_failover") {
        return;
    }
    ha_cluster("nat2");
}

#[test]
fn lvs_dr_failover() {
    if !root_or_skip("lvs_dr_failover") {
        return;
    }
    ha_cluster("dr2");
}
