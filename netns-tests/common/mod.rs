//! The netns harness: namespaces that remove themselves, veth pairs, commands
//! run inside a namespace, a frame sender and a packet capture.
//!
//! Every namespace a test creates is a [`Netns`]; dropping it (also when the
//! test panics) kills what runs inside and deletes it, and with it every
//! interface inside. Names carry the process id so parallel runs never
//! collide. Addresses come only from the documentation ranges.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// True when running as root. Otherwise the test fails, saying why, unless
/// `XVS_NETNS_SKIP=1` asks to skip it: a test that silently passes without
/// running would hide that nothing was tested.
pub fn root_or_skip(test: &str) -> bool {
    let euid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
        })
        .unwrap_or_default();
    if euid == "0" {
        return true;
    }
    if std::env::var("XVS_NETNS_SKIP").is_ok_and(|v| v == "1") {
        eprintln!("{test}: skipped (XVS_NETNS_SKIP=1)");
        return false;
    }
    panic!(
        "{test}: network namespaces and XDP need root: run tools/test as root \
         (or set XVS_NETNS_SKIP=1 to skip the netns tests)"
    );
}

/// `02:00:00:00:00:01`, as `--neigh` and `ip` write a MAC address.
pub fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Polls `pred` every 50 ms until it holds or `timeout` passes; its last answer.
pub fn wait_for(timeout: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if pred() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    pred()
}

/// Runs `cmd` through `sh -c`, panicking with its output if it fails.
pub fn sh(cmd: &str) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "command failed: {cmd}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `cmd` through `sh -c` and returns its output, whatever its status.
pub fn run(cmd: &str) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .output()
        .expect("spawn sh")
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A unique path in the temporary directory.
pub fn temp_path(what: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "xvs-{what}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ))
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates `xvs-<role>-<pid>-<n>` with loopback up and no IPv6 DAD delay.
    pub fn new(role: &str) -> Netns {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("xvs-{role}-{}-{n}", std::process::id());
        sh(&format!("ip netns add {name}"));
        let ns = Netns { name };
        ns.ip("link set lo up");
        ns.exec("sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0");
        ns
    }

    /// A namespace someone else created (tools/lab), deleted on drop too.
    pub fn adopt(name: &str) -> Netns {
        Netns {
            name: name.to_string(),
        }
    }

    /// `ip <args>` inside the namespace.
    pub fn ip(&self, args: &str) -> String {
        sh(&format!("ip -n {} {args}", self.name))
    }

    fn wrap(&self, cmd: &str) -> String {
        format!(
            "ip netns exec {} sh -c '{}'",
            self.name,
            cmd.replace('\'', "'\\''")
        )
    }

    /// A shell command inside the namespace; panics if it fails.
    pub fn exec(&self, cmd: &str) -> String {
        sh(&self.wrap(cmd))
    }

    /// Like [`exec`](Self::exec) but returns the output whatever the status.
    pub fn try_exec(&self, cmd: &str) -> Output {
        run(&self.wrap(cmd))
    }

    /// The MAC address of `dev`.
    pub fn mac(&self, dev: &str) -> [u8; 6] {
        let s = self.exec(&format!("cat /sys/class/net/{dev}/address"));
        let mut mac = [0u8; 6];
        for (i, part) in s.trim().split(':').enumerate().take(6) {
            mac[i] = u8::from_str_radix(part, 16).expect("mac");
        }
        mac
    }

    /// Sends raw Ethernet frames out of `dev` through an AF_PACKET socket.
    pub fn send_frames(&self, dev: &str, frames: &[Vec<u8>]) {
        let hex: Vec<String> = frames
            .iter()
            .map(|f| f.iter().map(|b| format!("{b:02x}")).collect())
            .collect();
        let script = format!(
            "import socket,sys\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\ns.bind(('{dev}',0))\nfor h in sys.argv[1:]: s.send(bytes.fromhex(h))"
        );
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "python3", "-c", &script])
            .args(&hex)
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "sending frames: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run(&format!("ip netns pids {} | xargs -r kill -9", self.name));
        let _ = run(&format!("ip netns del {}", self.name));
    }
}

/// A veth pair between two namespaces, both ends up.
pub fn veth(a: &Netns, a_dev: &str, b: &Netns, b_dev: &str) {
    sh(&format!(
        "ip link add {a_dev} netns {} type veth peer name {b_dev} netns {}",
        a.name, b.name
    ));
    a.ip(&format!("link set {a_dev} up"));
    b.ip(&format!("link set {b_dev} up"));
}

/// A background `tcpdump` in a namespace, stopped on drop.
pub struct Capture {
    child: Child,
    path: PathBuf,
}

impl Capture {
    /// Starts capturing on `dev` with a BPF `filter`; returns once tcpdump listens.
    pub fn start(ns: &Netns, dev: &str, filter: &str) -> Capture {
        let path = temp_path("capture");
        let err = path.with_extension("err");
        let child = Command::new("ip")
            .args([
                "netns", "exec", &ns.name, "tcpdump", "-l", "-n", "-i", dev, filter,
            ])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&path).expect("capture file"))
            .stderr(std::fs::File::create(&err).expect("capture file"))
            .spawn()
            .expect("tcpdump");
        let listening = wait_for(Duration::from_secs(5), || {
            std::fs::read_to_string(&err)
                .unwrap_or_default()
                .contains("listening")
        });
        let capture = Capture { child, path };
        assert!(
            listening,
            "tcpdump on {dev} did not start: {}",
            std::fs::read_to_string(&err).unwrap_or_default()
        );
        capture
    }

    /// Waits until a captured line contains `needle` (or `timeout` passes)
    /// and returns every line captured so far.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Vec<String> {
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(&self.path).unwrap_or_default();
            if text.contains(needle) || start.elapsed() > timeout {
                return text.lines().map(str::to_owned).collect();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_file(self.path.with_extension("err"));
    }
}

/// A background AF_PACKET receiver: every frame a namespace's interface
/// receives (not those it sends), recorded as hex, one per line.
pub struct Sniffer {
    child: Child,
    path: PathBuf,
}

impl Sniffer {
    pub fn start(ns: &Netns, dev: &str) -> Sniffer {
        let path = temp_path("sniff");
        let ready = path.with_extension("ready");
        let script = format!(
            "import socket\n\
             s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW,socket.htons(3))\n\
             s.bind(('{dev}',0))\n\
             out=open('{}','w')\n\
             open('{}','w').close()\n\
             while True:\n\
             \x20 d,a=s.recvfrom(65535)\n\
             \x20 if a[2]==socket.PACKET_OUTGOING: continue\n\
             \x20 out.write(d.hex()+'\\n'); out.flush()\n",
            path.display(),
            ready.display()
        );
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "python3", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3");
        let started = wait_for(Duration::from_secs(10), || ready.exists());
        let _ = std::fs::remove_file(&ready);
        let sniffer = Sniffer { child, path };
        assert!(started, "the packet receiver on {dev} did not start");
        sniffer
    }

    /// Frames received so far.
    pub fn frames(&self) -> Vec<Vec<u8>> {
        std::fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                (0..l.len())
                    .step_by(2)
                    .map(|i| l.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
                    .collect()
            })
            .collect()
    }

    /// Waits until `pred` holds for the frames received (or `timeout`).
    pub fn wait_until(&self, timeout: Duration, pred: impl Fn(&[Vec<u8>]) -> bool) -> Vec<Vec<u8>> {
        let start = Instant::now();
        loop {
            let f = self.frames();
            if pred(&f) || start.elapsed() > timeout {
                return f;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Sniffer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `xvs director` running in a namespace, stopped (SIGTERM) on drop.
pub struct DirectorProc {
    child: Option<Child>,
    log: PathBuf,
    /// The control socket this harness chose, removed on drop.
    own_socket: PathBuf,
}

impl DirectorProc {
    /// Starts `xvs director ARGS` in `ns` and waits until it says it runs.
    pub fn start(ns: &Netns, args: &[&str]) -> DirectorProc {
        let log = temp_path("director").with_extension("log");
        // A control socket of its own unless the test names one, so that a
        // director on the host or a parallel run never meets this one.
        let own_socket = temp_path("ctl").with_extension("sock");
        let own_socket_arg = own_socket.display().to_string();
        let socket: &[&str] = if args.contains(&"--control-socket") {
            &[]
        } else {
            &["--control-socket", &own_socket_arg]
        };
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                env!("CARGO_BIN_EXE_xvs"),
                "director",
            ])
            .args(args)
            .args(socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("xvs");
        let mut d = DirectorProc {
            child: Some(child),
            log,
            own_socket,
        };
        let start = Instant::now();
        while !d.log_text().contains("directing on") {
            let exited = d
                .child
                .as_mut()
                .map(|c| matches!(c.try_wait(), Ok(Some(_))));
            assert!(
                exited != Some(true) && start.elapsed() < Duration::from_secs(20),
                "xvs director did not start:\n{}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    /// The director's process id (`ip netns exec` execs it in place).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("running")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the director (SIGKILL), as a crash would: nothing is cleaned up.
    pub fn crash(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the director (SIGTERM) and returns everything it printed.
    pub fn stop(mut self) -> String {
        self.terminate();
        self.log_text()
    }

    fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for DirectorProc {
    fn drop(&mut self) {
        self.terminate();
        let _ = std::fs::remove_file(&self.log);
        let _ = std::fs::remove_file(&self.own_socket);
    }
}

/// The `worker N: ...` summary lines a stopped director printed, as
/// (field, value) pairs: `rx`, `tx`, `conserved`, `drops`, ...
pub fn worker_summaries(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("xvs: worker "))
        .map(str::to_owned)
        .collect()
}

/// The number after `field ` in a summary line.
pub fn summary_field(line: &str, field: &str) -> Option<u64> {
    let pat = format!(" {field} ");
    let rest = &line[line.find(&pat)? + pat.len()..];
    rest.split_whitespace().next()?.parse().ok()
}
