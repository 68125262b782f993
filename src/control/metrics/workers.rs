//! The per-worker counters in the metrics and the exit summary: read from a
//! worker's shared [`WorkerStats`] into plain [`WorkerMetrics`], encoded as
//! the `xvs_worker_*` families, and written as the one line per worker the
//! director prints when it stops.
//!
//! The counters themselves are declared once, in [`crate::counters`]:
//! this file only iterates those tables, so a counter added there reaches
//! the metrics and the summary with no change here.

use super::encode::{gauge, set, Builder};
use crate::counters::{self, WorkerCounters};
use crate::verdict::DropReason;
use crate::xsk::worker::WorkerStats;

/// Batch-latency quantiles exported.
pub const QUANTILES: [f64; 5] = [0.5, 0.9, 0.99, 0.999, 1.0];

#[derive(Clone, Debug, Default)]
pub struct WorkerMetrics {
    /// Every plain counter and the drops by reason ([`crate::counters`]).
    pub counters: WorkerCounters,
    /// The kernel's AF_XDP counters, as [`counters::XSK`] names them.
    pub xsk: [u64; 4],
    /// Frames by [`counters::FRAME_PLACES`].
    pub frames: [u64; 5],
    /// Seconds at each of [`QUANTILES`].
    pub batch_quantiles: Vec<f64>,
    pub batches: u64,
}

impl WorkerMetrics {
    pub fn read(w: &WorkerStats) -> WorkerMetrics {
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
            counters: w.counters.read(),
            xsk: w.xsk(),
            frames: w.frames(),
            batch_quantiles,
            batches,
        }
    }
}

/// The `xvs_worker_*` families, one set of labels per worker (`worker="0"`),
/// named and described by the tables of [`crate::counters`].
pub(super) fn encode(b: &mut Builder, workers: &[WorkerMetrics]) {
    let plain: Vec<_> = counters::COUNTERS
        .iter()
        .map(|c| b.counter(c.name, c.help))
        .collect();
    let drops = b.counter(counters::DROPS.name, counters::DROPS.help);
    let xsk = counters::XSK.map(|c| b.counter(c.name, c.help));
    let frames = b.gauge(counters::FRAMES.name, counters::FRAMES.help);
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
        for (f, v) in plain.iter().zip(w.counters.values()) {
            set(f, l(), v);
        }
        for (reason, n) in DropReason::ALL.iter().zip(w.counters.drops) {
            set(&drops, with("reason", reason.label()), n);
        }
        for (f, v) in xsk.iter().zip(w.xsk) {
            set(f, l(), v);
        }
        for (place, v) in counters::FRAME_PLACES.iter().zip(w.frames) {
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
    w.summary_line(index)
}
