//! The per-worker counters in the metrics and the exit summary: read from a
//! worker's shared [`WorkerStats`] into plain [`WorkerMetrics`], encoded as
//! the `xvs_worker_*` families, and written as the one line per worker the
//! director prints when it stops.
//!
//! Everything that names a worker counter outside the worker itself is in
//! this file, so a counter added to [`WorkerStats`] is added here, in three
//! places side by side.

use std::sync::atomic::{AtomicU64, Ordering};

use super::encode::{gauge, set, Builder};
use crate::verdict::DropReason;
use crate::xsk::worker::WorkerStats;

/// Batch-latency quantiles exported.
pub const QUANTILES: [f64; 5] = [0.5, 0.9, 0.99, 0.999, 1.0];

#[derive(Clone, Debug, Default)]
pub struct WorkerMetrics {
    pub rx: u64,
    pub tx: u64,
    pub new_conns: u64,
    pub tx_ring_full: u64,
    pub bad_port: u64,
    pub icmp_too_big: u64,
    pub checksums_completed: u64,
    pub resets_sent: u64,
    /// `(DropReason::label(), count)`, every reason.
    pub drops: Vec<(&'static str, u64)>,
    pub xsk_rx_dropped: u64,
    pub xsk_rx_ring_full: u64,
    pub xsk_fill_ring_empty: u64,
    pub xsk_invalid_descs: u64,
    /// total, free, fill, tx.
    /// total, free, fill, tx, held.
    pub frames: [u64; 5],
    pub held: u64,
    pub held_sent: u64,
    /// Seconds at each of [`QUANTILES`].
    pub batch_quantiles: Vec<f64>,
    pub batches: u64,
}

impl WorkerMetrics {
    pub fn read(w: &WorkerStats) -> WorkerMetrics {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (batch_quantiles, batches) = match w.batch_ns.lock() {
            Ok(h) => (
                QUANTILES
                    .iter()
                    .map(|q| h.value_at_quantile(*q) as f64 / 1e9)
                    .collect(),
                h.len(),
            ),
            Err(_) => (vec![0.0; QUANTILES.len()], 0),
        };
        WorkerMetrics {
            rx: l(&w.rx),
            tx: l(&w.tx),
            new_conns: l(&w.new_conns),
            tx_ring_full: l(&w.tx_ring_full),
            bad_port: l(&w.bad_port),
            icmp_too_big: l(&w.icmp_too_big),
            checksums_completed: l(&w.checksums_completed),
            resets_sent: l(&w.resets_sent),
            held: l(&w.held),
            held_sent: l(&w.held_sent),
            drops: DropReason::ALL
                .iter()
                .zip(w.drops.iter())
                .map(|(r, n)| (r.label(), l(n)))
                .collect(),
            xsk_rx_dropped: l(&w.xsk_rx_dropped),
            xsk_rx_ring_full: l(&w.xsk_rx_ring_full),
            xsk_fill_ring_empty: l(&w.xsk_fill_ring_empty),
            xsk_invalid_descs: l(&w.xsk_invalid_descs),
            frames: [
                l(&w.frames_total),
                l(&w.frames_free),
                l(&w.frames_fill),
                l(&w.frames_tx),
                l(&w.frames_held),
            ],
            batch_quantiles,
            batches,
        }
    }
}

/// The `xvs_worker_*` families, one set of labels per worker (`worker="0"`).
pub(super) fn encode(b: &mut Builder, workers: &[WorkerMetrics]) {
    let rx = b.counter("xvs_worker_rx_frames", "Frames received");
    let tx = b.counter("xvs_worker_tx_frames", "Frames transmitted");
    let held = b.counter(
        "xvs_worker_neighbour_held",
        "Frames held until their next hop's MAC was known",
    );
    let held_sent = b.counter(
        "xvs_worker_neighbour_held_sent",
        "Held frames sent once their next hop's MAC was known",
    );
    let new_conns = b.counter("xvs_worker_new_connections", "Connections created");
    let drops = b.counter(
        "xvs_worker_drops",
        "Frames dropped, by reason (not_ip, other_protocol, no_connection and \
         icmp_no_connection: frames that were not xvs's, which AF_XDP cannot hand back)",
    );
    let ring_full = b.counter(
        "xvs_worker_tx_ring_full",
        "Frames dropped because a TX ring was full",
    );
    let bad_port = b.counter(
        "xvs_worker_bad_port",
        "Frames dropped for a port the worker lacks",
    );
    let too_big = b.counter(
        "xvs_worker_icmp_too_big",
        "ICMP fragmentation-needed / packet-too-big sent",
    );
    let resets = b.counter(
        "xvs_worker_tcp_resets_sent",
        "TCP resets sent for segments of no connection",
    );
    let completed = b.counter(
        "xvs_worker_checksums_completed",
        "TCP/UDP checksums a sender's offload left partial, finished by xvs",
    );
    let xsk = [
        b.counter("xvs_worker_xsk_rx_dropped", "Kernel AF_XDP: rx dropped"),
        b.counter("xvs_worker_xsk_rx_ring_full", "Kernel AF_XDP: rx ring full"),
        b.counter(
            "xvs_worker_xsk_fill_ring_empty",
            "Kernel AF_XDP: fill ring empty",
        ),
        b.counter(
            "xvs_worker_xsk_invalid_descs",
            "Kernel AF_XDP: invalid descriptors",
        ),
    ];
    let frames = b.gauge(
        "xvs_worker_frames",
        "UMEM frames by place (free + fill + tx = total)",
    );
    let batch = b.gauge_f64(
        "xvs_worker_batch_duration_seconds",
        "Processing time of busy rounds, by quantile",
    );
    let batches = b.gauge("xvs_worker_batches", "Busy rounds in the latency histogram");
    for (i, w) in workers.iter().enumerate() {
        let l = || vec![("worker", i.to_string())];
        let with = |k: &'static str, v: &str| {
            let mut x = l();
            x.push((k, v.to_string()));
            x
        };
        set(&rx, l(), w.rx);
        set(&tx, l(), w.tx);
        set(&new_conns, l(), w.new_conns);
        for (reason, n) in &w.drops {
            set(&drops, with("reason", reason), *n);
        }
        set(&ring_full, l(), w.tx_ring_full);
        set(&bad_port, l(), w.bad_port);
        set(&too_big, l(), w.icmp_too_big);
        set(&completed, l(), w.checksums_completed);
        set(&resets, l(), w.resets_sent);
        for (f, v) in xsk.iter().zip([
            w.xsk_rx_dropped,
            w.xsk_rx_ring_full,
            w.xsk_fill_ring_empty,
            w.xsk_invalid_descs,
        ]) {
            set(f, l(), v);
        }
        set(&held, l(), w.held);
        set(&held_sent, l(), w.held_sent);
        for (place, v) in ["total", "free", "fill", "tx", "held"].iter().zip(w.frames) {
            gauge(&frames, with("place", place), v);
        }
        for (q, v) in QUANTILES.iter().zip(&w.batch_quantiles) {
            batch
                .get_or_create(&with("quantile", &q.to_string()))
                .set(*v);
        }
        gauge(&batches, l(), w.batches);
    }
}

/// One line per worker at exit: traffic, drops by reason, and the frame
/// accounting (which must balance once the workers have stopped).
pub fn worker_summary(index: usize, w: &WorkerStats) -> String {
    let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let drops: Vec<String> = DropReason::ALL
        .iter()
        .zip(w.drops.iter())
        .filter(|(_, n)| l(n) > 0)
        .map(|(r, n)| format!("{}={}", r.label(), l(n)))
        .collect();
    format!(
        "worker {index}: rx {} tx {} new_conns {} icmp_too_big {} checksums_completed {} resets_sent {} held {} held_sent {} tx_ring_full {} drops [{}] frames total {} free {} fill {} tx {} held {} conserved {} xsk rx_dropped {} rx_ring_full {} fill_empty {} invalid {}",
        l(&w.rx),
        l(&w.tx),
        l(&w.new_conns),
        l(&w.icmp_too_big),
        l(&w.checksums_completed),
        l(&w.resets_sent),
        l(&w.held),
        l(&w.held_sent),
        l(&w.tx_ring_full),
        drops.join(" "),
        l(&w.frames_total),
        l(&w.frames_free),
        l(&w.frames_fill),
        l(&w.frames_tx),
        l(&w.frames_held),
        if w.frames_conserved() { "yes" } else { "NO" },
        l(&w.xsk_rx_dropped),
        l(&w.xsk_rx_ring_full),
        l(&w.xsk_fill_ring_empty),
        l(&w.xsk_invalid_descs),
    )
}
