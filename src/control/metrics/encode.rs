//! A [`Scrape`] in the Prometheus text format (version 0.0.4), through
//! `prometheus-client`, the Prometheus project's Rust client, so names,
//! escaping and TYPE/HELP lines follow the format without hand-written
//! code. Pure: the same scrape always encodes to the same text.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Scrape;
use crate::xsk::prog::SteerCounter;

pub(super) type Labels = Vec<(&'static str, String)>;

/// The families of one scrape, printed in the order they are registered.
pub(super) struct Builder {
    registry: Registry,
}

impl Builder {
    pub(super) fn counter(&mut self, name: &str, help: &str) -> Family<Labels, Counter> {
        let f = Family::<Labels, Counter>::default();
        self.registry.register(name, help, f.clone());
        f
    }

    pub(super) fn gauge(&mut self, name: &str, help: &str) -> Family<Labels, Gauge> {
        let f = Family::<Labels, Gauge>::default();
        self.registry.register(name, help, f.clone());
        f
    }

    /// Registers a metric of its own kind (a histogram of given buckets).
    pub(super) fn register(
        &mut self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        self.registry.register(name, help, metric);
    }

    pub(super) fn gauge_f64(
        &mut self,
        name: &str,
        help: &str,
    ) -> Family<Labels, Gauge<f64, AtomicU64>> {
        let f = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        self.registry.register(name, help, f.clone());
        f
    }
}

pub(super) fn set(f: &Family<Labels, Counter>, labels: Labels, v: u64) {
    f.get_or_create(&labels).inc_by(v);
}

pub(super) fn gauge(f: &Family<Labels, Gauge>, labels: Labels, v: u64) {
    f.get_or_create(&labels).set(v.min(i64::MAX as u64) as i64);
}

/// Encodes a scrape in the Prometheus text format (version 0.0.4).
pub fn encode(s: &Scrape) -> String {
    let mut b = Builder {
        registry: Registry::default(),
    };
    let svc_conns = b.counter("xvs_service_connections", "Connections scheduled");
    let svc_pkts = b.counter("xvs_service_packets", "Packets forwarded");
    let svc_bytes = b.counter("xvs_service_bytes", "Bytes forwarded");
    let real_conns = b.counter("xvs_real_connections", "Connections scheduled");
    let real_pkts = b.counter("xvs_real_packets", "Packets forwarded");
    let real_bytes = b.counter("xvs_real_bytes", "Bytes forwarded");
    let active = b.gauge("xvs_real_active_connections", "ActiveConn");
    let inactive = b.gauge("xvs_real_inactive_connections", "InActConn");
    let persistent = b.gauge("xvs_real_persistent_connections", "PersistConn (templates)");
    let weight = b.gauge("xvs_real_weight", "Configured weight (0: quiesced)");
    let effective = b.gauge(
        "xvs_real_effective_weight",
        "Weight scheduled with now: 0 while down and quiesced or out of the service",
    );
    for svc in &s.services {
        let l = || vec![("service", svc.label.clone())];
        let dir = |d: &str| {
            let mut v = l();
            v.push(("direction", d.to_string()));
            v
        };
        set(&svc_conns, l(), svc.totals.conns);
        set(&svc_pkts, dir("in"), svc.totals.inpkts);
        set(&svc_pkts, dir("out"), svc.totals.outpkts);
        set(&svc_bytes, dir("in"), svc.totals.inbytes);
        set(&svc_bytes, dir("out"), svc.totals.outbytes);
        for r in &svc.reals {
            let l = || vec![("service", svc.label.clone()), ("real", r.label.clone())];
            let dir = |d: &str| {
                let mut v = l();
                v.push(("direction", d.to_string()));
                v
            };
            set(&real_conns, l(), r.totals.conns);
            set(&real_pkts, dir("in"), r.totals.inpkts);
            set(&real_pkts, dir("out"), r.totals.outpkts);
            set(&real_bytes, dir("in"), r.totals.inbytes);
            set(&real_bytes, dir("out"), r.totals.outbytes);
            gauge(&active, l(), u64::from(r.counts.active_conns));
            gauge(&inactive, l(), u64::from(r.counts.inact_conns));
            gauge(&persistent, l(), u64::from(r.counts.persist_conns));
            gauge(&weight, l(), u64::from(r.weight));
            gauge(&effective, l(), u64::from(r.effective_weight));
        }
    }

    super::workers::encode(&mut b, &s.workers);
    super::health::encode(&mut b, &s.health);
    if let Some(m) = &s.sync {
        super::sync::encode(&mut b, m);
    }

    let t = &s.table;
    let none = Vec::new;
    gauge(
        &b.gauge("xvs_conntrack_connections", "Live connections"),
        none(),
        t.conns as u64,
    );
    gauge(
        &b.gauge("xvs_conntrack_templates", "Live persistence templates"),
        none(),
        t.templates as u64,
    );
    gauge(
        &b.gauge("xvs_conntrack_half_open", "Connections in SYN_RECV"),
        none(),
        t.half_open as u64,
    );
    gauge(
        &b.gauge("xvs_conntrack_capacity", "Slots, IPv4 and IPv6"),
        none(),
        s.table_capacity as u64,
    );
    for (name, help, v) in [
        (
            "xvs_conntrack_table_full",
            "New connections refused: table full",
            t.table_full,
        ),
        (
            "xvs_conntrack_reply_conflicts",
            "NAT reply keys already taken",
            t.reply_conflicts,
        ),
        (
            "xvs_conntrack_template_gone",
            "Connections whose template had gone",
            t.template_gone,
        ),
        (
            "xvs_conntrack_released",
            "Entries released (expiry, removal)",
            t.released,
        ),
    ] {
        set(&b.counter(name, help), none(), v);
    }
    for (i, c) in SteerCounter::ALL.iter().enumerate() {
        let help = match c {
            SteerCounter::NotForUs => {
                "Service frames left to the kernel: addressed to another host's MAC"
            }
            SteerCounter::NoSocket => "Service frames dropped: their rx queue has no socket",
        };
        let f = b.counter(&format!("xvs_steering_{}", c.name()), help);
        for (iface, counts) in &s.steering {
            set(&f, vec![("interface", iface.clone())], counts[i]);
        }
    }

    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_text::encode(&mut out, &b.registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::TableStats;
    use crate::control::metrics::{
        HealthMetrics, RealMetrics, ServiceMetrics, TargetMetrics, WorkerMetrics,
    };
    use crate::service::{RealCounts, TotalStats};

    /// One service with one real server, one worker with drops: every
    /// family has a sample.
    fn small_scrape() -> Scrape {
        Scrape {
            services: vec![ServiceMetrics {
                label: "TCP 192.0.2.10:80".into(),
                totals: TotalStats {
                    conns: 3,
                    inpkts: 30,
                    outpkts: 20,
                    inbytes: 3000,
                    outbytes: 2000,
                },
                reals: vec![RealMetrics {
                    label: "198.51.100.2:8080".into(),
                    totals: TotalStats {
                        conns: 3,
                        ..TotalStats::default()
                    },
                    counts: RealCounts {
                        active_conns: 2,
                        inact_conns: 1,
                        persist_conns: 0,
                    },
                    weight: 5,
                    effective_weight: 0,
                }],
            }],
            workers: vec![WorkerMetrics {
                counters: crate::counters::WorkerCounters {
                    rx: 100,
                    tx: 90,
                    drops: std::array::from_fn(|i| {
                        if i == crate::verdict::DropReason::TcpNotSyn as usize {
                            7
                        } else {
                            0
                        }
                    }),
                    ..crate::counters::WorkerCounters::default()
                },
                frames: [4096, 2000, 2048, 48, 0],
                batch_quantiles: vec![1e-6, 2e-6, 3e-6, 4e-6, 5e-6],
                batches: 42,
                ..WorkerMetrics::default()
            }],
            table: TableStats {
                conns: 3,
                ..TableStats::default()
            },
            table_capacity: 1000,
            health: HealthMetrics {
                targets: vec![TargetMetrics {
                    service: "TCP 192.0.2.10:80".into(),
                    real: "198.51.100.2:8080".into(),
                    check: "http",
                    up: false,
                    transitions: 3,
                }],
                latency: vec![("http", {
                    let mut h = crate::health::LatencyHistogram::new();
                    h.observe(std::time::Duration::from_millis(3));
                    h.observe(std::time::Duration::from_secs(20));
                    h
                })],
            },
            steering: vec![("eth0".into(), [4, 2])],
            sync: None,
        }
    }

    #[test]
    fn names_and_labels_are_present() {
        let text = encode(&small_scrape());
        for want in [
            "# TYPE xvs_service_connections_total counter",
            "xvs_service_connections_total{service=\"TCP 192.0.2.10:80\"} 3",
            "xvs_service_packets_total{service=\"TCP 192.0.2.10:80\",direction=\"in\"} 30",
            "xvs_service_bytes_total{service=\"TCP 192.0.2.10:80\",direction=\"out\"} 2000",
            "xvs_real_connections_total{service=\"TCP 192.0.2.10:80\",real=\"198.51.100.2:8080\"} 3",
            "xvs_real_active_connections{service=\"TCP 192.0.2.10:80\",real=\"198.51.100.2:8080\"} 2",
            "xvs_real_inactive_connections{service=\"TCP 192.0.2.10:80\",real=\"198.51.100.2:8080\"} 1",
            "xvs_real_weight{service=\"TCP 192.0.2.10:80\",real=\"198.51.100.2:8080\"} 5",
            "xvs_real_effective_weight{service=\"TCP 192.0.2.10:80\",real=\"198.51.100.2:8080\"} 0",
            "xvs_real_up{service=\"TCP 192.0.2.10:80\",real=\"198.51.100.2:8080\",check=\"http\"} 0",
            "xvs_real_transitions_total{service=\"TCP 192.0.2.10:80\",real=\"198.51.100.2:8080\",check=\"http\"} 3",
            "# TYPE xvs_health_check_duration_seconds histogram",
            "xvs_health_check_duration_seconds_bucket{check=\"http\",le=\"0.0025\"} 0",
            "xvs_health_check_duration_seconds_bucket{check=\"http\",le=\"0.005\"} 1",
            "xvs_health_check_duration_seconds_bucket{check=\"http\",le=\"10\"} 1",
            "xvs_health_check_duration_seconds_bucket{check=\"http\",le=\"+Inf\"} 2",
            "xvs_health_check_duration_seconds_count{check=\"http\"} 2",
            "xvs_worker_rx_frames_total{worker=\"0\"} 100",
            "xvs_worker_tx_frames_total{worker=\"0\"} 90",
            "xvs_worker_drops_total{worker=\"0\",reason=\"tcp_not_syn\"} 7",
            "xvs_worker_drops_total{worker=\"0\",reason=\"truncated\"} 0",
            "xvs_worker_frames{worker=\"0\",place=\"fill\"} 2048",
            "xvs_worker_batch_duration_seconds{worker=\"0\",quantile=\"0.99\"} 0.000003",
            "xvs_worker_batches{worker=\"0\"} 42",
            "xvs_worker_xsk_rx_ring_full_total{worker=\"0\"} 0",
            "xvs_conntrack_connections 3",
            "xvs_conntrack_capacity 1000",
            "xvs_conntrack_table_full_total 0",
            "xvs_steering_not_for_us_total{interface=\"eth0\"} 4",
            "xvs_steering_no_socket_total{interface=\"eth0\"} 2",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(text.ends_with("\n"), "{text}");
    }

    /// tools/grafana/xvs.json queries only what the encoder emits: a
    /// renamed metric or label fails here, not on an operator's blank panel.
    #[test]
    fn the_dashboard_queries_only_emitted_metrics_and_labels() {
        let text = encode(&small_scrape());
        let mut names = std::collections::BTreeSet::new();
        // Prometheus adds these to every series it scrapes.
        let mut labels: std::collections::BTreeSet<String> =
            ["instance", "job"].map(String::from).into();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..name_end].to_string());
            if let Some(set) = line[name_end..].strip_prefix('{') {
                for pair in set.split("\",").filter(|p| p.contains('=')) {
                    labels.insert(pair.split('=').next().unwrap().to_string());
                }
            }
        }
        let dashboard: serde_json::Value = serde_json::from_str(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tools/grafana/xvs.json"
        )))
        .expect("tools/grafana/xvs.json is JSON");
        let mut queries = Vec::new();
        collect_queries(&dashboard, &mut queries);
        assert!(queries.len() > 20, "{queries:?}");
        let mut used = 0;
        for q in &queries {
            for word in identifiers(q) {
                if word.starts_with("xvs_") {
                    used += 1;
                    assert!(names.contains(word), "{q}: {word} is not emitted:\n{text}");
                }
            }
            for label in query_labels(q) {
                assert!(labels.contains(label), "{q}: no metric has a label {label}");
            }
        }
        assert!(used > 30, "{queries:?}");
    }

    /// Every `expr` of a panel target and `query` of a template variable.
    fn collect_queries(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr", serde_json::Value::String(q)) => out.push(q.clone()),
                        ("query", serde_json::Value::String(q)) if q.contains('(') => {
                            out.push(q.clone())
                        }
                        _ => collect_queries(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| collect_queries(v, out)),
            _ => {}
        }
    }

    fn identifiers(q: &str) -> impl Iterator<Item = &str> {
        q.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
    }

    /// Label names in `{label=~"..."}` matchers, `by (...)` clauses and
    /// label_values(..., label).
    fn query_labels(q: &str) -> Vec<&str> {
        let mut out = Vec::new();
        let mut rest = q;
        while let Some(i) = rest.find(['{', '(']) {
            let open = rest.as_bytes()[i];
            let before = rest[..i].trim_end();
            rest = &rest[i + 1..];
            let close = if open == b'{' { '}' } else { ')' };
            let Some(end) = rest.find(close) else { break };
            let inside = &rest[..end];
            if open == b'{' {
                for m in inside.split(',') {
                    if let Some(op) = m.find(['=', '!']) {
                        out.push(m[..op].trim());
                    }
                }
            } else if before.ends_with(" by") || before.ends_with(" without") {
                out.extend(inside.split(',').map(str::trim));
            }
        }
        if let Some(args) = q.strip_prefix("label_values(") {
            if let Some(last) = args.trim_end_matches(')').rsplit(',').next() {
                out.push(last.trim());
            }
        }
        out
    }
}
