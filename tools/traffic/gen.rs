//! `xvs-traffic gen`: tagged UDP or TCP frames over many flows, at a fixed
//! rate or as fast as the socket takes them, for a duration or a count.
//!
//! One thread per queue; thread `q` of `Q` sends flows `q, q+Q, q+2Q, ...`
//! round robin, each with its own sequence numbers, so that a flow stays on
//! one queue end to end and the sink sees its packets in order unless the
//! path reorders them.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use xvs::xsk::bench::{monotonic_ns, TxSocket};

use crate::wire::{Proto, Stamp, Template, PORTS_PER_ADDR, TCP_ACK, TCP_PSH, TCP_SYN};

/// Frames per TX call.
const BATCH: usize = 64;
/// How far ahead of schedule a paced sender sleeps instead of spinning.
const SLEEP_AHEAD_NS: u64 = 30_000;

#[derive(clap::Args, Debug, Clone)]
pub struct GenArgs {
    /// Interface to send on.
    #[arg(short = 'i', long)]
    pub iface: String,
    /// Destination MAC (the next hop: the forwarder's interface).
    #[arg(long, value_parser = crate::parse_mac)]
    pub dst_mac: [u8; 6],
    /// Source MAC (default: the interface's own).
    #[arg(long, value_parser = crate::parse_mac)]
    pub src_mac: Option<[u8; 6]>,
    /// First client address; flows use further addresses of its /24 after
    /// 64512 ports each.
    #[arg(long, default_value = "192.0.2.100")]
    pub src: Ipv4Addr,
    /// Destination address (a virtual service, or the sink).
    #[arg(long)]
    pub dst: Ipv4Addr,
    #[arg(long, default_value_t = 80)]
    pub dport: u16,
    /// udp or tcp.
    #[arg(long, default_value = "udp", value_parser = parse_proto)]
    pub proto: Proto,
    /// Frame size in bytes, without the FCS (64 to 1514).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Number of flows (1 to 4194304; client port and address vary).
    #[arg(long, default_value_t = 1)]
    pub flows: u32,
    /// Packets per second in all; 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Seconds to send (default 5 unless --count is given).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Packets to send in all.
    #[arg(long)]
    pub count: Option<u64>,
    /// TCP: open every flow with a SYN before sending data (established flows).
    #[arg(long)]
    pub open: bool,
    /// TCP: every packet is a SYN of the next flow (new-flow-heavy; give
    /// enough --flows that no flow repeats within the run).
    #[arg(long)]
    pub syn_every_flow: bool,
    /// Transmit queues, one thread each (the interface needs that many).
    #[arg(long, default_value_t = 1)]
    pub queues: u32,
    /// Print one JSON object at the end instead of the table.
    #[arg(long)]
    pub json: bool,
    /// No progress lines.
    #[arg(short, long)]
    pub quiet: bool,
}

fn parse_proto(s: &str) -> Result<Proto, String> {
    match s {
        "udp" => Ok(Proto::Udp),
        "tcp" => Ok(Proto::Tcp),
        _ => Err(format!("{s:?}: expected udp or tcp")),
    }
}

/// What one sending thread did.
#[derive(Default, Clone, Copy)]
struct Sent {
    packets: u64,
    syns: u64,
    start_ns: u64,
    end_ns: u64,
    tx_invalid: u64,
}

pub fn run(a: GenArgs, stop: Arc<AtomicBool>) -> Result<(), String> {
    if a.size < a.proto.min_frame() || a.size > 1514 {
        return Err(format!(
            "--size {} out of range: {:?} frames need {} to 1514 bytes",
            a.size,
            a.proto,
            a.proto.min_frame()
        ));
    }
    if a.flows == 0 || a.flows > 1 << 22 {
        return Err("--flows must be 1 to 4194304".into());
    }
    let last = u32::from(a.src) + (a.flows - 1) / PORTS_PER_ADDR;
    if last >> 8 != u32::from(a.src) >> 8 {
        return Err(format!(
            "{} flows need client addresses up to {}, past the /24 of --src {}",
            a.flows,
            Ipv4Addr::from(last),
            a.src
        ));
    }
    if a.queues == 0 || a.queues > 64 || a.flows < a.queues {
        return Err("--queues must be 1 to 64 and at most --flows".into());
    }
    if (a.open || a.syn_every_flow) && a.proto != Proto::Tcp {
        return Err("--open and --syn-every-flow need --proto tcp".into());
    }
    let duration_ns = match (a.duration, a.count) {
        (Some(d), _) if !(0.0..=3600.0).contains(&d) => {
            return Err("--duration must be 0 to 3600 s".into())
        }
        (Some(d), _) => Some((d * 1e9) as u64),
        (None, Some(_)) => None,
        (None, None) => Some(5_000_000_000),
    };
    let src_mac = match a.src_mac {
        Some(m) => m,
        None => crate::iface_mac(&a.iface)?,
    };
    let template = Template::new(a.proto, a.size, src_mac, a.dst_mac, a.src, a.dst, a.dport);
    let progress: Arc<Vec<AtomicU64>> =
        Arc::new((0..a.queues).map(|_| AtomicU64::new(0)).collect());
    let setup = Arc::new(Mutex::new(()));
    let mut threads = Vec::new();
    for q in 0..a.queues {
        let (a, t, stop, progress, setup) = (
            a.clone(),
            template.clone(),
            Arc::clone(&stop),
            Arc::clone(&progress),
            Arc::clone(&setup),
        );
        threads.push(
            std::thread::Builder::new()
                .name(format!("gen-{q}"))
                .spawn(move || sender(q, &a, &t, duration_ns, &stop, &progress[q as usize], &setup))
                .map_err(|e| e.to_string())?,
        );
    }
    let started = monotonic_ns();
    let mut last = (started, 0u64);
    while threads.iter().any(|t| !t.is_finished()) {
        std::thread::sleep(Duration::from_millis(50));
        let now = monotonic_ns();
        if now - last.0 >= 1_000_000_000 {
            let total: u64 = progress.iter().map(|p| p.load(Ordering::Relaxed)).sum();
            if !a.quiet {
                eprintln!(
                    "gen: {:5.1} s  {:>10.0} pps  {:>12} sent",
                    (now - started) as f64 / 1e9,
                    (total - last.1) as f64 * 1e9 / (now - last.0) as f64,
                    total
                );
            }
            last = (now, total);
        }
    }
    let mut all = Vec::new();
    for t in threads {
        all.push(
            t.join()
                .map_err(|_| "a sending thread panicked".to_string())??,
        );
    }
    report(&a, &all);
    Ok(())
}

fn sender(
    q: u32,
    a: &GenArgs,
    t: &Template,
    duration_ns: Option<u64>,
    stop: &AtomicBool,
    progress: &AtomicU64,
    setup: &Mutex<()>,
) -> Result<Sent, String> {
    let mut sock = {
        let _g = setup.lock().map_err(|_| "setup lock poisoned")?;
        TxSocket::new(&a.iface, q, 4096, 2048)?
    };
    sock.fill_all(|f| t.write_fixed(f));
    let queues = a.queues;
    // Flows of this thread: q, q+Q, ...
    let my_flows = (a.flows - q).div_ceil(queues);
    let mut seqs = vec![0u32; my_flows as usize];
    let rate = a.rate / u64::from(queues) + u64::from(q < (a.rate % u64::from(queues)) as u32);
    let count = a
        .count
        .map(|c| c / u64::from(queues) + u64::from(u64::from(q) < c % u64::from(queues)));
    let mut s = Sent::default();
    let mut next = 0u32;
    // With --open, the first round over the flows is SYNs.
    let mut opening = a.open;
    let start = monotonic_ns();
    s.start_ns = start;
    loop {
        let now = monotonic_ns();
        let elapsed = now - start;
        if stop.load(Ordering::Relaxed) || duration_ns.is_some_and(|d| elapsed >= d) {
            break;
        }
        let mut want = BATCH as u64;
        if let Some(c) = count {
            if s.packets >= c {
                break;
            }
            want = want.min(c - s.packets);
        }
        if rate > 0 {
            let due = (u128::from(elapsed) * u128::from(rate) / 1_000_000_000) as u64;
            if due <= s.packets {
                let next_at = (u128::from(s.packets + 1) * 1_000_000_000 / u128::from(rate)) as u64;
                let ahead = next_at.saturating_sub(elapsed);
                if ahead > SLEEP_AHEAD_NS {
                    std::thread::sleep(Duration::from_nanos(ahead - SLEEP_AHEAD_NS / 2));
                } else {
                    sock.complete();
                }
                continue;
            }
            want = want.min(due - s.packets);
        }
        let mut syns = 0u64;
        let n = sock.send(want as usize, |f| {
            let i = next as usize;
            let flow = q + next * queues;
            let flags = if a.syn_every_flow || opening {
                syns += 1;
                TCP_SYN
            } else {
                TCP_ACK | TCP_PSH
            };
            let seq = seqs[i];
            seqs[i] = seq.wrapping_add(1);
            next += 1;
            if next == my_flows {
                next = 0;
                opening = false;
            }
            t.stamp(
                f,
                Stamp {
                    flow,
                    seq,
                    time: monotonic_ns() as u32,
                    tcp_flags: flags,
                },
            )
        });
        s.packets += n as u64;
        s.syns += syns;
        progress.store(s.packets, Ordering::Relaxed);
    }
    s.end_ns = monotonic_ns();
    // Let the last frames leave before the socket goes away.
    let deadline = monotonic_ns() + 1_000_000_000;
    while sock.in_flight() > 0 && monotonic_ns() < deadline {
        sock.send(0, |_| 0);
        std::thread::sleep(Duration::from_micros(100));
    }
    s.tx_invalid = sock.counters().invalid_descs;
    Ok(s)
}

fn report(a: &GenArgs, all: &[Sent]) {
    let packets: u64 = all.iter().map(|s| s.packets).sum();
    let syns: u64 = all.iter().map(|s| s.syns).sum();
    let invalid: u64 = all.iter().map(|s| s.tx_invalid).sum();
    let start = all.iter().map(|s| s.start_ns).min().unwrap_or(0);
    let end = all.iter().map(|s| s.end_ns).max().unwrap_or(0);
    let secs = (end.saturating_sub(start)) as f64 / 1e9;
    let pps = if secs > 0.0 {
        packets as f64 / secs
    } else {
        0.0
    };
    if a.json {
        println!(
            "{{\"tool\":\"gen\",\"proto\":\"{}\",\"size\":{},\"flows\":{},\"queues\":{},\"rate\":{},\"sent\":{},\"syns\":{},\"tx_invalid\":{},\"start_ns\":{},\"end_ns\":{},\"seconds\":{:.6},\"pps\":{:.0}}}",
            match a.proto { Proto::Udp => "udp", Proto::Tcp => "tcp" },
            a.size, a.flows, a.queues, a.rate, packets, syns, invalid, start, end, secs, pps
        );
    } else {
        println!("gen summary");
        println!(
            "  frames     {:?} {} bytes, {} flow(s), {} queue(s)",
            a.proto, a.size, a.flows, a.queues
        );
        println!("  sent       {packets} ({syns} SYN)");
        println!("  time       {secs:.3} s");
        println!(
            "  rate       {pps:.0} pps ({:.3} Mpps, {:.2} Gbit/s on the wire)",
            pps / 1e6,
            pps * (a.size + 24) as f64 * 8.0 / 1e9
        );
        println!("  tx invalid {invalid}");
    }
}
