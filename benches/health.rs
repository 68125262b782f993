//! The health monitor at scale: 10,000 TCP checks at a 1 s interval.
//!
//! Measures, for the process that runs the [`Monitor`] alone: CPU (user +
//! system seconds per wall second, from getrusage), memory (VmRSS and
//! VmHWM), the checks done per second, and how many targets were ever
//! reported down (none should be). The targets are real listeners: the
//! bench moves itself into a network namespace of its own (`unshare -n`),
//! makes all of 198.51.100.0/24 local there (`ip route add local ... dev
//! lo`), and starts a copy of itself in it (`--serve`) that listens on 100
//! ports and accepts every connection; the checks go to 100 addresses × 100
//! ports. The namespace goes when both processes end.
//!
//! Run as root: `cargo bench --bench health` (`-- --targets N --secs S` to
//! change the scale). Without root it says so and exits.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::resource::{getrusage, setrlimit, Resource, UsageWho};
use xvs::health::{CheckKind, CheckSpec, LatencyHistogram, Monitor, Notify, Target};
use xvs::packet::L4Proto;
use xvs::service::ServiceKey;

const PORTS: u16 = 100;
const FIRST_PORT: u16 = 20000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--serve") {
        serve();
        return;
    }
    let number = |name: &str, default: u64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let targets = number("--targets", 10_000) as usize;
    let secs = number("--secs", 20);
    // Before any thread starts: every thread after this one is in the namespace.
    if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
        println!("health bench: needs root for a network namespace of its own ({e}); skipped");
        return;
    }
    ip(&["link", "set", "lo", "up"]);
    ip(&["route", "add", "local", "198.51.100.0/24", "dev", "lo"]);
    let _ = setrlimit(Resource::RLIMIT_NOFILE, 1 << 16, 1 << 16);
    let mut server = start_server();
    run(targets, secs, server.id());
    let _ = server.kill();
    let _ = server.wait();
}

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("ip");
    assert!(status.success(), "ip {}", args.join(" "));
}

fn start_server() -> Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg("--serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the listeners' process");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "listeners did not start");
    child
}

/// The listeners: 100 ports on every address, every connection accepted
/// and closed; gone when the bench's end closes our stdin.
fn serve() {
    let _ = setrlimit(Resource::RLIMIT_NOFILE, 1 << 16, 1 << 16);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for port in FIRST_PORT..FIRST_PORT + PORTS {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.set_reuseaddr(true).unwrap();
            socket
                .bind(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port))
                .unwrap();
            let listener = socket.listen(4096).unwrap();
            tokio::spawn(async move {
                loop {
                    if let Ok((stream, _)) = listener.accept().await {
                        drop(stream);
                    }
                }
            });
        }
        println!("ready");
        std::io::stdout().flush().unwrap();
        tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        })
        .await
        .unwrap();
    });
}

fn cpu_secs() -> f64 {
    let usage = getrusage(UsageWho::RUSAGE_SELF).unwrap();
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    secs(usage.user_time()) + secs(usage.system_time())
}

/// A line of /proc/self/status in kB ("VmRSS", "VmHWM").
fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The CPU seconds another process used (utime + stime from its stat).
fn process_cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // Fields 14 and 15 of stat; `fields` starts at field 3. Ticks of 1/100 s.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn run(n: usize, secs: u64, server: u32) {
    let downs = Arc::new(AtomicU64::new(0));
    let counted = downs.clone();
    let rss_before = status_kb("VmRSS");
    let monitor = Monitor::start(Box::new(move |report| {
        if !report.up {
            counted.fetch_add(1, Ordering::Relaxed);
        }
    }))
    .unwrap();
    let service = ServiceKey {
        proto: L4Proto::Tcp,
        addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
        port: 80,
    };
    let check = CheckSpec {
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        // Spreads the first checks over a second, as a daemon's start does.
        warmup: Duration::from_secs(1),
        ..CheckSpec::new(CheckKind::Tcp)
    };
    let targets: Vec<Target> = (0..n)
        .map(|i| Target {
            service,
            real: SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1 + (i / PORTS as usize) as u8)),
                FIRST_PORT + (i % PORTS as usize) as u16,
            ),
            check: check.clone(),
            notify: Notify::default(),
        })
        .collect();
    let started = Instant::now();
    monitor.set_targets(targets);
    let set_ms = started.elapsed().as_secs_f64() * 1e3;
    // Settle for a few intervals, then measure.
    std::thread::sleep(Duration::from_secs(3));
    let checks = |m: &Monitor| -> (u64, LatencyHistogram) {
        let mut all = LatencyHistogram::new();
        for s in m.status() {
            all.merge(&s.latency);
        }
        (all.count, all)
    };
    let (checks0, hist0) = checks(&monitor);
    let cpu0 = cpu_secs();
    let waited0 = runnable_secs();
    let net0 = tcp_counters();
    let server0 = process_cpu_secs(server);
    let t0 = Instant::now();
    let mut rss_max = 0;
    for _ in 0..secs {
        std::thread::sleep(Duration::from_secs(1));
        rss_max = rss_max.max(status_kb("VmRSS"));
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    let waited = runnable_secs() - waited0;
    let net: Vec<(&str, u64)> = tcp_counters()
        .into_iter()
        .zip(net0)
        .map(|((name, a), (_, b))| (name, a.saturating_sub(b)))
        .collect();
    let server_cpu = process_cpu_secs(server) - server0;
    let (checks1, hist1) = checks(&monitor);
    let done = checks1 - checks0;
    let statuses = monitor.status();
    let up = statuses.iter().filter(|s| s.up).count();
    let failed_last = statuses
        .iter()
        .filter(|s| s.last.as_ref().is_some_and(|l| !l.ok))
        .count();
    // The measured window's histogram: the end's minus the start's.
    let window: Vec<(f64, u64)> = hist1
        .buckets()
        .zip(hist0.buckets())
        .map(|((bound, a), (_, b))| (bound, a - b))
        .collect();
    let quantile = |q: f64| {
        let total = window.last().map(|b| b.1).unwrap_or(0) as f64;
        window
            .iter()
            .find(|(_, c)| *c as f64 >= q * total)
            .map(|(b, _)| *b)
            .unwrap_or(f64::NAN)
    };
    monitor.stop();
    println!("health bench: {n} TCP targets, 1 s interval, {secs} s measured");
    println!("  set_targets({n}):        {set_ms:.1} ms");
    println!("  checks/s:                {:.0}", done as f64 / wall);
    println!(
        "  monitor CPU:             {:.3} s/s ({:.1} us per check)",
        cpu / wall,
        cpu / done.max(1) as f64 * 1e6
    );
    println!(
        "  runnable, not running:   {:.3} s/s (the monitor's threads waiting for a core)",
        waited / wall
    );
    println!("  listeners' CPU:          {:.3} s/s", server_cpu / wall);
    println!(
        "  RSS:                     {} kB before, {} kB max while checking ({} kB high-water)",
        rss_before,
        rss_max,
        status_kb("VmHWM")
    );
    println!(
        "  latency (bucket bound):  p50 <= {} s, p90 <= {} s, p99 <= {} s, max <= {} s",
        quantile(0.5),
        quantile(0.9),
        quantile(0.99),
        quantile(1.0)
    );
    println!("  load average at the end: {}", load_average());
    let net: Vec<String> = net.iter().map(|(name, n)| format!("{name} {n}")).collect();
    println!("  TCP in the window:       {}", net.join(", "));
    println!(
        "  up at the end: {up}/{n}; failed last check: {failed_last}; down reports: {}",
        downs.load(Ordering::Relaxed)
    );
}

/// The machine's 1-, 5- and 15-minute load averages (other work skews the numbers).
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The seconds this process's threads spent runnable but waiting for a
/// core (the second field of each thread's schedstat).
fn runnable_secs() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum();
    ns as f64 / 1e9
}

/// The namespace's TCP counters that explain slow or failed connects:
/// connects opened, segments retransmitted, listen queue overflows.
fn tcp_counters() -> Vec<(&'static str, u64)> {
    let wanted = [
        ("Tcp", "ActiveOpens"),
        ("Tcp", "RetransSegs"),
        ("TcpExt", "ListenOverflows"),
        ("TcpExt", "ListenDrops"),
        ("TcpExt", "TCPTimeouts"),
    ];
    let mut text = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    text += &std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    wanted
        .iter()
        .map(|(group, name)| {
            let value = lines
                .windows(2)
                .filter(|w| {
                    w[0].starts_with(&format!("{group}:")) && w[1].starts_with(&format!("{group}:"))
                })
                .find_map(|w| {
                    let i = w[0].split_whitespace().position(|n| n == *name)?;
                    w[1].split_whitespace().nth(i)?.parse().ok()
                })
                .unwrap_or(0);
            (*name, value)
        })
        .collect()
}
