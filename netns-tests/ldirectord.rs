//! Debian's ldirectord manages a live xvs service on the seed's NAT
//! cluster, unchanged: it runs `/sbin/ipvsadm` (or `/usr/sbin/ipvsadm`, a
//! fixed path), parses `ipvsadm -L -n` and `-L -n --thresholds`, and adds,
//! removes or quiesces real servers as its checks see them.
//!
//! The fixed path is met without touching the machine's files: the tool
//! runs inside the director's network namespace in a private mount
//! namespace of its own, where a wrapper that runs this build's
//! `xvs ipvsadm` against the lab's control socket is bind-mounted over
//! `/usr/sbin/ipvsadm` (which `/sbin/ipvsadm` is on a merged-/usr system),
//! and a tmpfs covers `/run` (ldirectord's pid files).
//!
//! A real server "fails" when its rs-server process is stopped, as the
//! seed's "mon" section has it, and recovers when it is started again.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::clusters::Lab;
use crate::common::{root_or_skip, run, sh, temp_path, wait_for};

/// Long enough for a check tool to see a change on a loaded 2-core machine
/// (the checks themselves run every second).
const SEE: Duration = Duration::from_secs(60);

/// A private `/usr/sbin/ipvsadm`: a directory with the wrapper, and the
/// commands that see it there.
pub(crate) struct FixedIpvsadm {
    pub(crate) dir: PathBuf,
    wrapper: PathBuf,
    ns: String,
}

impl FixedIpvsadm {
    pub(crate) fn new(lab: &Lab) -> FixedIpvsadm {
        let dir = temp_path("classic");
        std::fs::create_dir_all(&dir).expect("tool dir");
        let wrapper = dir.join("xvs-ipvsadm");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nXVS_CONTROL_SOCKET='{}' exec '{}' ipvsadm \"$@\"\n",
                lab.socket.display(),
                env!("CARGO_BIN_EXE_xvs")
            ),
        )
        .expect("wrapper");
        sh(&format!("chmod 755 '{}'", wrapper.display()));
        FixedIpvsadm {
            dir,
            wrapper,
            ns: lab.ns("d"),
        }
    }

    /// `argv` in the director's namespace, in a mount namespace where
    /// `/usr/sbin/ipvsadm` is xvs, with the tool directory as its working
    /// directory.
    pub(crate) fn command(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args([
            "netns",
            "exec",
            &self.ns,
            "unshare",
            "--mount",
            "--propagation",
            "private",
        ])
        .args([
            "sh",
            "-ec",
            "w=$1; d=$2; shift 2; mount -t tmpfs tmpfs /run; \
                 mount --bind \"$w\" /usr/sbin/ipvsadm; cd \"$d\"; exec \"$@\"",
            "sh",
        ])
        .arg(&self.wrapper)
        .arg(&self.dir)
        .args(argv)
        .stdin(Stdio::null());
        c
    }

    /// Runs `argv` to its end; its status and what it printed.
    pub(crate) fn run(&self, argv: &[&str]) -> (bool, String) {
        let out = self.command(argv).output().expect("spawn");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

impl Drop for FixedIpvsadm {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A long-running tool (ldirectord in the foreground), stopped on drop.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then SIGKILL after 10 s; whether it exited on SIGTERM.
    fn stop(&mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.running() {
            self.stop();
        }
    }
}

/// Stops real server `i`'s (0-based) HTTP server, as a crash would.
pub(crate) fn stop_real_server(lab: &Lab, i: usize) {
    let ns = lab.ns(&format!("r{}", i + 1));
    let pids = sh(&format!("ip netns pids {ns}"));
    let mut killed = 0;
    for pid in pids.split_whitespace() {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("rs-server") {
            let _ = run(&format!("kill -KILL {pid}"));
            killed += 1;
        }
    }
    assert_eq!(killed, 1, "one rs-server in {ns}");
    assert!(
        wait_for(Duration::from_secs(5), || !sh(&format!(
            "ip netns exec {ns} ss -ltn"
        ))
        .contains(":80 ")),
        "rs-server in {ns} still listens"
    );
}

/// Starts real server `i`'s HTTP server again, as tools/lab does.
pub(crate) fn start_real_server(lab: &Lab, i: usize) {
    let ns = lab.ns(&format!("r{}", i + 1));
    sh(&format!(
        "ip netns exec {ns} setsid {}/tools/rs-server rs{} 0.0.0.0 80 >/dev/null 2>&1 < /dev/null &",
        env!("CARGO_MANIFEST_DIR"),
        i + 1
    ));
    assert!(
        wait_for(Duration::from_secs(10), || sh(&format!(
            "ip netns exec {ns} ss -ltn"
        ))
        .contains(":80 ")),
        "rs-server in {ns} does not listen"
    );
}

/// `(real, weight)` of each row of `ipvsadm -L -n`.
fn reals(lab: &Lab) -> Vec<(String, u32)> {
    lab.rows().into_iter().map(|r| (r.0, r.2)).collect()
}

fn endpoint(lab: &Lab, i: usize) -> String {
    SocketAddr::new(lab.reals[i], 80).to_string()
}

/// ldirectord.cf for the lab's service: rr over the three real servers,
/// checked every second with `checktype`.
fn ldirectord_cf(lab: &Lab, dir: &std::path::Path, checktype: &str, quiescent: &str) -> PathBuf {
    let mut cf = format!(
        "checktimeout=2\n\
         checkinterval=1\n\
         autoreload=no\n\
         quiescent={quiescent}\n\
         logfile=\"{}/ldirectord.log\"\n\
         virtual={}\n",
        dir.display(),
        lab.vip_at(80)
    );
    for i in 0..3 {
        cf += &format!("\treal={} masq 1\n", endpoint(lab, i));
    }
    cf += &format!(
        "\tservice=http\n\trequest=\"/\"\n\treceive=\"rs\"\n\tscheduler=rr\n\
         \tprotocol=tcp\n\tchecktype={checktype}\n"
    );
    let path = dir.join(format!("xvs-test-{}.cf", std::process::id()));
    std::fs::write(&path, cf).expect("ldirectord.cf");
    path
}

fn start_ldirectord(tools: &FixedIpvsadm, cf: &std::path::Path) -> Daemon {
    let log = tools.dir.join("ldirectord.out");
    let cf = cf.display().to_string();
    let child = tools
        .command(&["/usr/sbin/ldirectord", "-d", &cf, "start"])
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(Stdio::from(
            std::fs::OpenOptions::new()
                .append(true)
                .open(&log)
                .expect("log"),
        ))
        .spawn()
        .expect("ldirectord");
    Daemon { child, log }
}

/// ldirectord with `checktype` and `quiescent` on a live xvs service: the
/// three real servers come in as their checks pass and take requests; one
/// whose server stops goes (removed, or weight 0 when quiescent) while
/// the others answer every request; started again, it comes back.
fn ldirectord_manages(checktype: &str, quiescent: &str) {
    let host_ipvsadm = std::fs::read("/usr/sbin/ipvsadm").ok();
    let lab = Lab::up_with_args("nat", "on", &[]);
    let tools = FixedIpvsadm::new(&lab);
    let cf = ldirectord_cf(&lab, &tools.dir, checktype, quiescent);
    let mut ld = start_ldirectord(&tools, &cf);
    let diag = |ld: &Daemon, lab: &Lab| {
        format!(
            "ipvsadm -L -n:\n{}\nldirectord:\n{}",
            lab.ipvsadm("-L -n"),
            ld.log_text()
        )
    };

    let all: Vec<(String, u32)> = (0..3).map(|i| (endpoint(&lab, i), 1)).collect();
    let started = Instant::now();
    assert!(
        wait_for(SEE, || reals(&lab) == all),
        "ldirectord did not add the three real servers:\n{}",
        diag(&ld, &lab)
    );
    eprintln!(
        "ldirectord {checktype}: service built in {:?}",
        started.elapsed()
    );
    assert!(
        lab.ipvsadm("-L -n").contains("TCP  192.0.2.10:80 rr"),
        "{}",
        diag(&ld, &lab)
    );
    let c = lab.requests(30);
    assert_eq!(c.len(), 3, "{c:?}");

    stop_real_server(&lab, 1);
    let failed = Instant::now();
    let down: Vec<(String, u32)> = if quiescent == "yes" {
        vec![all[0].clone(), (endpoint(&lab, 1), 0), all[2].clone()]
    } else {
        vec![all[0].clone(), all[2].clone()]
    };
    assert!(
        wait_for(SEE, || reals(&lab) == down),
        "ldirectord did not take rs2 out:\n{}",
        diag(&ld, &lab)
    );
    eprintln!(
        "ldirectord {checktype}: rs2 out {:?} after its server stopped",
        failed.elapsed()
    );
    let c = lab.requests(20);
    assert_eq!(
        c,
        [("rs1".to_string(), 10), ("rs3".to_string(), 10)]
            .into_iter()
            .collect(),
        "only the live real servers answer"
    );

    start_real_server(&lab, 1);
    let back = Instant::now();
    assert!(
        wait_for(SEE, || reals(&lab) == all),
        "ldirectord did not put rs2 back:\n{}",
        diag(&ld, &lab)
    );
    eprintln!(
        "ldirectord {checktype}: rs2 back {:?} after its server started",
        back.elapsed()
    );
    let c = lab.requests(30);
    assert_eq!(c.len(), 3, "{c:?}");

    assert!(ld.running(), "ldirectord exited:\n{}", ld.log_text());
    assert!(ld.stop(), "ldirectord ignored SIGTERM:\n{}", ld.log_text());
    assert_eq!(
        std::fs::read("/usr/sbin/ipvsadm").ok(),
        host_ipvsadm,
        "the machine's own /usr/sbin/ipvsadm is as it was"
    );
}

#[test]
fn ldirectord_negotiate_removes_a_failed_real_server_and_puts_it_back() {
    if !root_or_skip("ldirectord_negotiate_removes_a_failed_real_server_and_puts_it_back") {
        return;
    }
    ldirectord_manages("negotiate", "no");
}

#[test]
fn ldirectord_connect_quiesces_a_failed_real_server_and_restores_it() {
    if !root_or_skip("ldirectord_connect_quiesces_a_failed_real_server_and_restores_it") {
        return;
    }
    ldirectord_manages("connect", "yes");
}
