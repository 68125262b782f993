//! Sans-IO scaling: N threads, each with its own `Pipeline`, over one shared
//! connection table and one set of real-server counters, as the director's
//! workers share them; frames per second of all threads together against
//! one thread alone. Two workloads on the test network
//! (src/pipeline/testnet.rs), 64-byte IPv4 TCP frames to the NAT service:
//! - `established`: each thread cycles through 1024 flows of its own, opened
//!   before the clock starts;
//! - `new`: every frame a SYN of a new flow (each thread its own clients),
//!   on a table sized so that it never fills, its pages touched first by as
//!   many other new flows.
//!
//! One clock for all threads: the time a frame is processed at is a function
//! of its index in its thread's run (1 ms per 1024 frames), the same for
//! every thread, so the table ages alike per frame however fast a thread
//! runs; each thread calls `end_batch` every 64 frames, as a worker does.
//!
//! `cargo bench --bench scaling -- [--threads 1,2] [--runs 5] [--frames N]
//! [--load established|new]` runs the thread counts interleaved (1, 2, 1, 2,
//! ...: each round every count once, so the ratios come from the same
//! machine state), prints each round, and per workload and thread count the
//! median rate, its spread and the ratio to one thread's median, and the
//! median of the rounds' own ratios; the load average before and after.
//! Each rate twice: per second of wall-clock time, and per second of the
//! threads' CPU time (what a frame costs, steadier on a shared machine,
//! where other tasks take cores from the wall-clock rate), with the share
//! of their cores the threads got.
//!
//! The control: every thread count above one runs twice a round, once
//! sharing the table and the counters (`shared`) and once with a table,
//! counters and snapshot of each thread's own (`apart`, each table of the
//! shared one's capacity, so that a thread's entries lie as far apart in
//! memory as they do shared, and meet the same caches and TLB). Apart, the
//! threads share nothing xvs writes, so what `apart` loses against N × one
//! thread is the machine's (caches, memory, cores it does not really
//! have), and `shared` against `apart` is what sharing costs xvs.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use nix::sys::resource::{getrusage, UsageWho};

use xvs::conntrack::{ConnTable, Timeouts};
use xvs::packet::Frame;
use xvs::pipeline::testnet::{self, Pkt, ACK, SYN};
use xvs::pipeline::{Pipeline, Snapshot};
use xvs::service::RealLoads;
use xvs::verdict::Verdict;
use xvs::Millis;

const FLOWS: usize = 1024;
const BATCH: u64 = 64;
const FRAMES_PER_MS: u64 = 1024;

#[derive(Clone, Copy, PartialEq)]
enum Load {
    Established,
    New,
}

/// What the threads of a run share.
#[derive(Clone, Copy, PartialEq)]
enum Share {
    /// One table, one set of counters, one snapshot: as the workers.
    Table,
    /// Nothing: each thread its own, a table of the same capacity.
    Apart,
}

/// Client address and port of flow `k` of thread `t`: disjoint per thread.
fn client(t: usize, k: u64) -> (IpAddr, u16) {
    let a = Ipv4Addr::from(0xc000_0000 + ((t as u32) << 16) + (k >> 15) as u32 % 65536);
    (a.into(), 1024 + (k & 0x7fff) as u16)
}

fn frame(t: usize, k: u64, flags: u8) -> Vec<u8> {
    let n = testnet::v4();
    let (ip, port) = client(t, k);
    Pkt::tcp(ip, port, n.vip, testnet::PORT_NAT, flags)
        .payload(vec![0; 10])
        .bytes()
}

/// CPU time the calling thread has used (user and system).
fn thread_cpu() -> Duration {
    let u = getrusage(UsageWho::RUSAGE_THREAD).expect("getrusage of this thread");
    let t =
        |v: nix::sys::time::TimeVal| Duration::new(v.tv_sec() as u64, v.tv_usec() as u32 * 1000);
    t(u.user_time()) + t(u.system_time())
}

/// One run of `threads` threads.
struct Run {
    /// Frames per second of wall-clock time, all threads together.
    rate: f64,
    /// Frames per second of CPU time of the threads, all together: what
    /// each frame costs, whether or not the threads had a core each. On a
    /// shared machine this is the steadier measure: a busy machine takes
    /// cores from the wall-clock rate, while what threads do to each other
    /// (a line handed from core to core) shows as CPU time per frame.
    cpu_rate: f64,
    /// The threads' CPU time over `threads` × the wall-clock time: 1.0 when
    /// every thread had its core throughout. Two threads ran at once at
    /// least `2 × share − 1` of the time; only then can they contend.
    share: f64,
}

/// A table of `capacity` entries, its counters and the test network.
fn state(capacity: usize) -> (Arc<Snapshot>, Arc<ConnTable>, Arc<RealLoads>) {
    let loads = Arc::new(RealLoads::new(64));
    let conns = Arc::new(ConnTable::new(capacity, Timeouts::default(), loads.clone()));
    (Arc::new(testnet::snapshot()), conns, loads)
}

/// Frames per second of `threads` threads, `frames` frames each.
fn run(load: Load, share: Share, threads: usize, frames: u64) -> Run {
    let capacity = match load {
        Load::Established => 64 * 1024,
        Load::New => (threads as u64 * frames * 4) as usize,
    };
    let shared = state(capacity);
    let start = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let shared = shared.clone();
            let start = start.clone();
            std::thread::spawn(move || {
                // Apart, the thread builds its own on its own core (so its
                // pages are its own NUMA node's, as a worker's would be).
                let (snap, conns, loads) = match share {
                    Share::Table => shared,
                    Share::Apart => state(capacity),
                };
                let mut p = Pipeline::new(snap, conns, loads, t as u16);
                let mut buf = vec![0u8; 2048];
                let mut go = |p: &mut Pipeline, f: &[u8], now: u64| {
                    buf[256..256 + f.len()].copy_from_slice(f);
                    p.process(Millis(now), 0, &mut Frame::new(&mut buf, 256, f.len()))
                };
                // Established flows are opened (and the pages touched)
                // before the clock starts; new flows are built beforehand.
                let set: Vec<Vec<u8>> = match load {
                    Load::Established => (0..FLOWS as u64)
                        .map(|k| {
                            let v = go(&mut p, &frame(t, k, SYN), 1);
                            assert!(matches!(v, Verdict::Transmit { .. }), "{v:?}");
                            frame(t, k, ACK)
                        })
                        .collect(),
                    Load::New => {
                        // As many other new flows first, untimed, so that
                        // the table's pages are touched (its allocation is
                        // lazily zeroed): the run measures the table, not
                        // the kernel's page faults.
                        for k in frames..2 * frames {
                            go(&mut p, &frame(t, k, SYN), 1);
                        }
                        (0..frames).map(|k| frame(t, k, SYN)).collect()
                    }
                };
                start.wait();
                let cpu0 = thread_cpu();
                let mut sent = 0u64;
                for i in 0..frames {
                    let now = 2 + i / FRAMES_PER_MS;
                    let f = match load {
                        Load::Established => &set[i as usize % FLOWS],
                        Load::New => &set[i as usize],
                    };
                    if let Verdict::Transmit { .. } = go(&mut p, f, now) {
                        sent += 1;
                    }
                    if i % BATCH == BATCH - 1 {
                        p.end_batch(Millis(now));
                    }
                }
                let cpu = thread_cpu() - cpu0;
                assert_eq!(sent, frames, "every frame was forwarded");
                cpu
            })
        })
        .collect();
    start.wait();
    let t0 = Instant::now();
    let cpu: Duration = handles
        .into_iter()
        .map(|h| h.join().expect("a bench thread"))
        .sum();
    let wall = t0.elapsed().as_secs_f64();
    let all = (threads as u64 * frames) as f64;
    Run {
        rate: all / wall,
        cpu_rate: all / cpu.as_secs_f64(),
        share: cpu.as_secs_f64() / (threads as f64 * wall),
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The 1-, 5- and 15-minute load averages, as /proc/loadavg has them.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn spread(v: &[f64]) -> (f64, f64) {
    (
        v.iter().cloned().fold(f64::MAX, f64::min),
        v.iter().cloned().fold(0.0, f64::max),
    )
}

fn main() {
    let mut threads = vec![1usize, 2];
    let mut runs = 5usize;
    let mut frames = 2_000_000u64;
    let mut only: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--threads" => {
                threads = args
                    .next()
                    .expect("--threads 1,2,...")
                    .split(',')
                    .map(|s| s.parse().expect("a thread count"))
                    .collect()
            }
            "--runs" => runs = args.next().and_then(|s| s.parse().ok()).expect("--runs N"),
            "--frames" => {
                frames = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("--frames N")
            }
            "--load" => only = Some(args.next().expect("--load established|new")),
            // cargo bench passes --bench; nothing else is ours.
            _ => {}
        }
    }
    println!("load average before: {}", loadavg());
    for (name, load, frames) in [
        ("established", Load::Established, frames),
        ("new", Load::New, frames / 4),
    ] {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        // Rounds: every column once, in order, so that a passing load
        // falls on every column alike and each round gives its own ratio.
        // A column: a thread count and what its threads share.
        let cols: Vec<(usize, Share)> = threads
            .iter()
            .flat_map(|&n| {
                let apart = (n > 1).then_some((n, Share::Apart));
                std::iter::once((n, Share::Table)).chain(apart)
            })
            .collect();
        let label = |&(n, s): &(usize, Share)| match s {
            Share::Table => format!("{n}"),
            Share::Apart => format!("{n} apart"),
        };
        let mut rates: Vec<Vec<f64>> = vec![Vec::new(); cols.len()];
        let mut cpu_rates: Vec<Vec<f64>> = vec![Vec::new(); cols.len()];
        let mut shares: Vec<Vec<f64>> = vec![Vec::new(); cols.len()];
        for round in 0..runs {
            let line: Vec<String> = cols
                .iter()
                .enumerate()
                .map(|(j, c)| {
                    let r = run(load, c.1, c.0, frames);
                    rates[j].push(r.rate);
                    cpu_rates[j].push(r.cpu_rate);
                    shares[j].push(r.share);
                    format!(
                        "{}: {:.3} ({:.3}/cpu-s, share {:.2})",
                        label(c),
                        r.rate / 1e6,
                        r.cpu_rate / 1e6,
                        r.share
                    )
                })
                .collect();
            println!(
                "{name} round {round} Mframes/s  {}  (load {})",
                line.join("  "),
                loadavg()
            );
        }
        let one = cols.iter().position(|&c| c == (1, Share::Table));
        // The ratio of two columns' medians and the median of the rounds'
        // own ratios, with their spread.
        let against = |v: &[Vec<f64>], j: usize, o: usize, what: &str| {
            let mut paired: Vec<f64> = v[j].iter().zip(&v[o]).map(|(a, b)| a / b).collect();
            let (plo, phi) = spread(&paired);
            format!(
                "  {:.2}x {what} (rounds' ratios: median {:.2}, {:.2}-{:.2})",
                median(&mut v[j].clone()) / median(&mut v[o].clone()),
                median(&mut paired),
                plo,
                phi
            )
        };
        // The median of a column, its spread, against one thread's, and a
        // shared column against its apart control.
        let summary = |v: &[Vec<f64>], j: usize| {
            let (lo, hi) = spread(&v[j]);
            let m = median(&mut v[j].clone());
            let mut x = match one {
                Some(o) if o != j => against(v, j, o, "one thread"),
                _ => String::new(),
            };
            let (n, s) = cols[j];
            if s == Share::Table && n > 1 {
                if let Some(a) = cols.iter().position(|&c| c == (n, Share::Apart)) {
                    x += &against(v, j, a, "apart");
                }
            }
            format!("median {:.3} ({:.3}-{:.3}){x}", m / 1e6, lo / 1e6, hi / 1e6)
        };
        for (j, c) in cols.iter().enumerate() {
            let l = label(c);
            println!(
                "{name:<12} threads {l}: wall    Mframes/s {}",
                summary(&rates, j)
            );
            println!(
                "{name:<12} threads {l}: per CPU Mframes/s {}",
                summary(&cpu_rates, j)
            );
            println!(
                "{name:<12} threads {l}: share of {} cores: median {:.2}",
                c.0,
                median(&mut shares[j].clone())
            );
        }
    }
    println!("load average after: {}", loadavg());
}
