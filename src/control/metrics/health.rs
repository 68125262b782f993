//! The health checks' metrics: each checked real server's state and
//! transitions, and the check latency histogram of each checker type.
//!
//! `xvs_real_up{service,real,check}` (1 up, 0 down),
//! `xvs_real_transitions_total{service,real,check}` (up-to-down and
//! down-to-up changes since the server is checked; `sum by (check)` for a
//! checker type's), and `xvs_health_check_duration_seconds{check}`, a
//! histogram of every check's time (failed ones included, a timeout at
//! the timeout) per checker type (`tcp`, `http`, `https`, `udp`, `dns`,
//! `exec`).

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::encode::{gauge, set, Builder, Labels};
use crate::health::{LatencyHistogram, TargetStatus};

/// What a scrape shows of the health checks, as plain data.
#[derive(Clone, Debug, Default)]
pub struct HealthMetrics {
    pub targets: Vec<TargetMetrics>,
    /// The latencies of every check, per checker type.
    pub latency: Vec<(&'static str, LatencyHistogram)>,
}

/// One checked real server.
#[derive(Clone, Debug)]
pub struct TargetMetrics {
    /// `TCP 192.0.2.10:80`, as the other per-service metrics.
    pub service: String,
    pub real: String,
    pub check: &'static str,
    pub up: bool,
    pub transitions: u64,
}

impl HealthMetrics {
    /// From the monitor's status of every target and its latencies per
    /// checker type (totals since the start: targets gone included).
    pub fn from_status(
        statuses: &[TargetStatus],
        latency: Vec<(&'static str, LatencyHistogram)>,
    ) -> HealthMetrics {
        let mut targets: Vec<TargetMetrics> = statuses
            .iter()
            .map(|s| TargetMetrics {
                service: format!(
                    "{} {}",
                    s.service.proto.name(),
                    std::net::SocketAddr::new(s.service.addr, s.service.port)
                ),
                real: s.real.to_string(),
                check: s.kind,
                up: s.up,
                transitions: s.transitions,
            })
            .collect();
        // The same scrape text for the same state.
        targets.sort_by(|a, b| (&a.service, &a.real).cmp(&(&b.service, &b.real)));
        let mut latency = latency;
        latency.sort_by_key(|(kind, _)| *kind);
        HealthMetrics { targets, latency }
    }
}

/// The histograms of every checker type, one family.
#[derive(Debug)]
struct Latencies(Vec<(&'static str, LatencyHistogram)>);

impl EncodeMetric for Latencies {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (kind, h) in &self.0 {
            // The encoder adds the buckets up itself.
            let mut below = 0;
            let buckets: Vec<(f64, u64)> = h
                .buckets()
                .map(|(bound, cumulative)| {
                    let n = cumulative.saturating_sub(below);
                    below = cumulative;
                    (bound, n)
                })
                .collect();
            let labels: Labels = vec![("check", kind.to_string())];
            encoder
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(h.sum, h.count, &buckets, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Registers and fills the health families.
pub(super) fn encode(b: &mut Builder, h: &HealthMetrics) {
    let up = b.gauge("xvs_real_up", "Health check state (1 up, 0 down)");
    let transitions = b.counter(
        "xvs_real_transitions",
        "Health state changes since the real server is checked",
    );
    for t in &h.targets {
        let l = || -> Labels {
            vec![
                ("service", t.service.clone()),
                ("real", t.real.clone()),
                ("check", t.check.to_string()),
            ]
        };
        gauge(&up, l(), u64::from(t.up));
        set(&transitions, l(), t.transitions);
    }
    b.register(
        "xvs_health_check_duration_seconds",
        "Time of a health check, per checker type",
        Latencies(h.latency.clone()),
    );
}
