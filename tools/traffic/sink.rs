//! `xvs-traffic sink`: receives every frame of an interface over AF_XDP,
//! counts tagged packets per flow, finds loss, reordering and duplicates,
//! and records one-way latency (send time in the tag against the receive
//! time, on the shared `CLOCK_MONOTONIC`).
//!
//! Per flow it keeps the highest sequence number seen and a 64-packet
//! window behind it (as IPsec's anti-replay check does): a packet below the
//! highest is a duplicate if its bit is set, else a reordered arrival. Loss
//! is what never arrived below each flow's highest sequence number (`gaps`);
//! loss after the last packet a flow delivered needs the sender's count,
//! which the bench takes from the generator's report.
//!
//! One thread per queue; each reads frames in batches, stamps the batch's
//! receive time once, and sleeps in poll() when its ring is empty (the sink
//! shares a core with the generator on small machines).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use xvs::xsk::bench::{monotonic_ns, RxSocket, XskCounters};

use crate::wire::{parse, Seen};

/// Flow ids the sink tracks (the generator's maximum).
const MAX_FLOWS: usize = 1 << 22;
const BATCH: usize = 64;

#[derive(clap::Args, Debug, Clone)]
pub struct SinkArgs {
    /// Interface to receive on.
    #[arg(short = 'i', long)]
    pub iface: String,
    /// Receive queues, one thread each.
    #[arg(long, default_value_t = 1)]
    pub queues: u32,
    /// Stop after this many seconds (default: on SIGINT/SIGTERM).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Stop this many seconds after the last tagged packet (once one came).
    #[arg(long)]
    pub idle_exit: Option<f64>,
    /// Print one JSON object at the end instead of the table.
    #[arg(long)]
    pub json: bool,
    /// No progress lines.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Clone, Copy, Default)]
struct FlowState {
    /// Highest sequence number seen, plus one (0: nothing yet).
    next: u32,
    unique: u32,
    /// Bit i: sequence number `next - 1 - i` arrived.
    window: u64,
}

/// What one receiving thread saw.
struct Tally {
    frames: u64,
    tagged: u64,
    unique: u64,
    duplicates: u64,
    reordered: u64,
    /// Arrived more than 64 behind its flow's highest: reordered or a
    /// duplicate, which the window cannot tell.
    late: u64,
    flows: Vec<FlowState>,
    first_ns: u64,
    last_ns: u64,
    latency: Histogram<u64>,
    xsk: XskCounters,
    /// Reads of the ring that brought frames.
    batches: u64,
    /// Times the thread slept (its voluntary context switches: in poll(),
    /// each one a wakeup that the sender's side paid for).
    sleeps: u64,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            frames: 0,
            tagged: 0,
            unique: 0,
            duplicates: 0,
            reordered: 0,
            late: 0,
            flows: Vec::new(),
            first_ns: 0,
            last_ns: 0,
            latency: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds"),
            xsk: XskCounters::default(),
            batches: 0,
            sleeps: 0,
        }
    }

    fn record(&mut self, s: Seen, now: u64) {
        self.tagged += 1;
        let latency = (now as u32).wrapping_sub(s.time);
        self.latency.saturating_record(u64::from(latency.max(1)));
        let id = s.flow as usize;
        if id >= MAX_FLOWS {
            return;
        }
        if id >= self.flows.len() {
            self.flows.resize(
                (id + 1).next_power_of_two().min(MAX_FLOWS),
                FlowState::default(),
            );
        }
        let f = &mut self.flows[id];
        // u64: a sequence number of u32::MAX (from any sender) must not overflow.
        let (seq, next) = (u64::from(s.seq), u64::from(f.next));
        if seq >= next {
            let shift = seq - next + 1;
            f.window = if shift >= 64 { 0 } else { f.window << shift } | 1;
            f.next = s.seq.saturating_add(1);
            f.unique = f.unique.saturating_add(1);
            self.unique += 1;
            return;
        }
        let behind = next - 1 - seq;
        if behind >= 64 {
            self.late += 1;
        } else if f.window & (1 << behind) != 0 {
            self.duplicates += 1;
        } else {
            f.window |= 1 << behind;
            f.unique = f.unique.saturating_add(1);
            self.unique += 1;
            self.reordered += 1;
        }
    }

    /// Packets that never arrived below each flow's highest sequence number.
    fn gaps(&self) -> u64 {
        self.flows
            .iter()
            .map(|f| u64::from(f.next) - u64::from(f.unique.min(f.next)))
            .sum()
    }

    fn flows_seen(&self) -> u64 {
        self.flows.iter().filter(|f| f.next > 0).count() as u64
    }

    fn merge(&mut self, o: Tally) {
        self.frames += o.frames;
        self.tagged += o.tagged;
        self.unique += o.unique;
        self.duplicates += o.duplicates;
        self.reordered += o.reordered;
        self.late += o.late;
        let _ = self.latency.add(&o.latency);
        if o.first_ns != 0 && (self.first_ns == 0 || o.first_ns < self.first_ns) {
            self.first_ns = o.first_ns;
        }
        self.last_ns = self.last_ns.max(o.last_ns);
        self.batches += o.batches;
        self.sleeps += o.sleeps;
        self.xsk.rx_dropped += o.xsk.rx_dropped;
        self.xsk.rx_ring_full += o.xsk.rx_ring_full;
        self.xsk.fill_ring_empty += o.xsk.fill_ring_empty;
        self.xsk.invalid_descs += o.xsk.invalid_descs;
        // Flows stay on one queue; a flow seen on two would be counted as
        // two flows' worth of gaps, which a merge by id fixes.
        if self.flows.len() < o.flows.len() {
            self.flows.resize(o.flows.len(), FlowState::default());
        }
        for (a, b) in self.flows.iter_mut().zip(o.flows) {
            if a.next == 0 {
                *a = b;
            } else if b.next > 0 {
                a.unique += b.unique;
                a.next = a.next.max(b.next);
            }
        }
    }
}

struct Progress {
    tagged: AtomicU64,
    last_ns: AtomicU64,
}

pub fn run(a: SinkArgs, stop: Arc<AtomicBool>) -> Result<(), String> {
    if a.queues == 0 || a.queues > 64 {
        return Err("--queues must be 1 to 64".into());
    }
    let progress: Arc<Vec<Progress>> = Arc::new(
        (0..a.queues)
            .map(|_| Progress {
                tagged: AtomicU64::new(0),
                last_ns: AtomicU64::new(0),
            })
            .collect(),
    );
    let setup = Arc::new(Mutex::new(()));
    let ready = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for q in 0..a.queues {
        let (iface, stop, progress, setup, ready) = (
            a.iface.clone(),
            Arc::clone(&stop),
            Arc::clone(&progress),
            Arc::clone(&setup),
            Arc::clone(&ready),
        );
        threads.push(
            std::thread::Builder::new()
                .name(format!("sink-{q}"))
                .spawn(move || receiver(&iface, q, &stop, &progress[q as usize], &setup, &ready))
                .map_err(|e| e.to_string())?,
        );
    }
    let started = monotonic_ns();
    let mut announced = false;
    let mut last = (started, 0u64);
    while threads.iter().any(|t| !t.is_finished()) {
        std::thread::sleep(Duration::from_millis(50));
        let now = monotonic_ns();
        if !announced && ready.load(Ordering::Relaxed) == u64::from(a.queues) {
            // The bench waits for this line before starting the generator.
            eprintln!("sink: ready on {} ({} queue(s))", a.iface, a.queues);
            announced = true;
        }
        if a.duration
            .is_some_and(|d| (now - started) as f64 / 1e9 >= d)
        {
            stop.store(true, Ordering::Relaxed);
        }
        let tagged: u64 = progress
            .iter()
            .map(|p| p.tagged.load(Ordering::Relaxed))
            .sum();
        let last_rx = progress
            .iter()
            .map(|p| p.last_ns.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        if let Some(idle) = a.idle_exit {
            if last_rx > 0 && (now.saturating_sub(last_rx)) as f64 / 1e9 >= idle {
                stop.store(true, Ordering::Relaxed);
            }
        }
        if now - last.0 >= 1_000_000_000 {
            if !a.quiet {
                eprintln!(
                    "sink: {:5.1} s  {:>10.0} pps  {:>12} received",
                    (now - started) as f64 / 1e9,
                    (tagged - last.1) as f64 * 1e9 / (now - last.0) as f64,
                    tagged
                );
            }
            last = (now, tagged);
        }
    }
    let mut total = Tally::new();
    for t in threads {
        total.merge(
            t.join()
                .map_err(|_| "a receiving thread panicked".to_string())??,
        );
    }
    report(&a, &total);
    Ok(())
}

fn receiver(
    iface: &str,
    q: u32,
    stop: &AtomicBool,
    progress: &Progress,
    setup: &Mutex<()>,
    ready: &AtomicU64,
) -> Result<Tally, String> {
    let mut sock = {
        let _g = setup.lock().map_err(|_| "setup lock poisoned")?;
        RxSocket::new(iface, q, 8192, 4096, BATCH)?
    };
    ready.fetch_add(1, Ordering::Relaxed);
    let mut t = Tally::new();
    let slept = voluntary_switches();
    while !stop.load(Ordering::Relaxed) {
        let now = monotonic_ns();
        let mut tagged = 0u64;
        let n = sock.recv(|frame| {
            if let Some(s) = parse(frame) {
                t.record(s, now);
                tagged += 1;
            }
        });
        t.frames += n as u64;
        t.batches += u64::from(n > 0);
        if tagged > 0 {
            if t.first_ns == 0 {
                t.first_ns = now;
            }
            t.last_ns = now;
            progress.tagged.store(t.tagged, Ordering::Relaxed);
            progress.last_ns.store(now, Ordering::Relaxed);
        }
        if n == 0 {
            sock.wait(20);
        }
    }
    t.xsk = sock.counters();
    t.sleeps = voluntary_switches().saturating_sub(slept);
    Ok(t)
}

/// The calling thread's voluntary context switches so far (0 where
/// /proc/thread-self cannot be read).
fn voluntary_switches() -> u64 {
    std::fs::read_to_string("/proc/thread-self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn report(a: &SinkArgs, t: &Tally) {
    let secs = t.last_ns.saturating_sub(t.first_ns) as f64 / 1e9;
    let pps = if secs > 0.0 {
        t.unique as f64 / secs
    } else {
        0.0
    };
    let h = &t.latency;
    let q = |p: f64| {
        if h.is_empty() {
            0
        } else {
            h.value_at_quantile(p)
        }
    };
    let gaps = t.gaps();
    if a.json {
        println!(
            "{{\"tool\":\"sink\",\"frames\":{},\"received\":{},\"unique\":{},\"duplicates\":{},\"reordered\":{},\"late\":{},\"gaps\":{},\"flows\":{},\"first_ns\":{},\"last_ns\":{},\"seconds\":{:.6},\"pps\":{:.0},\"lat_ns\":{{\"min\":{},\"p50\":{},\"p90\":{},\"p99\":{},\"p999\":{},\"max\":{},\"mean\":{:.0}}},\"xsk\":{{\"rx_dropped\":{},\"rx_ring_full\":{},\"fill_ring_empty\":{},\"invalid\":{}}},\"batches\":{},\"sleeps\":{}}}",
            t.frames, t.tagged, t.unique, t.duplicates, t.reordered, t.late, gaps, t.flows_seen(),
            t.first_ns, t.last_ns, secs, pps,
            if h.is_empty() { 0 } else { h.min() }, q(0.5), q(0.9), q(0.99), q(0.999),
            if h.is_empty() { 0 } else { h.max() }, h.mean(),
            t.xsk.rx_dropped, t.xsk.rx_ring_full, t.xsk.fill_ring_empty, t.xsk.invalid_descs,
            t.batches, t.sleeps
        );
        return;
    }
    println!("sink summary ({}, {} queue(s))", a.iface, a.queues);
    println!(
        "  frames       {} ({} tagged, {} other)",
        t.frames,
        t.tagged,
        t.frames - t.tagged
    );
    println!(
        "  unique       {} over {} flow(s)",
        t.unique,
        t.flows_seen()
    );
    println!("  rate         {pps:.0} pps over {secs:.3} s (first to last tagged packet)");
    println!("  gaps         {gaps} (lost below each flow's highest sequence number)");
    println!(
        "  reordered    {}   duplicates {}   late (>64 behind) {}",
        t.reordered, t.duplicates, t.late
    );
    println!(
        "  latency (us) min {:.1}  p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
        if h.is_empty() {
            0.0
        } else {
            h.min() as f64 / 1e3
        },
        q(0.5) as f64 / 1e3,
        q(0.9) as f64 / 1e3,
        q(0.99) as f64 / 1e3,
        q(0.999) as f64 / 1e3,
        if h.is_empty() {
            0.0
        } else {
            h.max() as f64 / 1e3
        }
    );
    println!(
        "  kernel       rx_dropped {}  rx_ring_full {}  fill_ring_empty {}  invalid {}",
        t.xsk.rx_dropped, t.xsk.rx_ring_full, t.xsk.fill_ring_empty, t.xsk.invalid_descs
    );
    println!(
        "  reads        {} with frames ({:.1} frames each), {} sleeps in poll()",
        t.batches,
        t.frames as f64 / t.batches.max(1) as f64,
        t.sleeps
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(flow: u32, seq: u32) -> Seen {
        Seen { flow, seq, time: 0 }
    }

    #[test]
    fn counts_loss_reorder_and_duplicates_per_flow() {
        let mut t = Tally::new();
        for seq in [0, 1, 3, 2, 2, 6, u32::MAX, 100] {
            t.record(seen(7, seq), 10);
        }
        t.record(seen(1, 0), 10);
        t.record(seen(u32::MAX, 0), 10);
        assert_eq!(t.tagged, 10);
        assert_eq!(t.duplicates, 1, "2 twice");
        assert_eq!(t.reordered, 1, "2 after 3");
        assert_eq!(t.late, 1, "100 after u32::MAX");
        assert_eq!(t.unique, 7);
        assert_eq!(t.flows_seen(), 2, "flow ids past MAX_FLOWS are not tracked");
    }
}
