//! The daemon's side of the health checks: what it needs of the monitor
//! ([`Checks`]: the [`Monitor`], a fake in tests), the edits a report
//! makes, the targets a model has, and `xvs status`.
//!
//! # Contract
//! - A report becomes [`Edit::SetHealth`] and [`Edit::SetCheckWeight`] of
//!   its real server, applied with the other reports of the round and
//!   published once ([`super::Control::apply_edits`]); a report about a
//!   real server deleted since is dropped.
//! - After every change of the model the monitor gets the model's targets
//!   anew ([`CheckConfig::targets`]: a real server added by ipvsadm to a
//!   checked service is checked from then on), and a service of the
//!   config defined anew (after `-D`, `-C` or `-R`) gets its policy back.

use std::collections::HashMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use crate::health::{CheckConfig, LatencyHistogram, Monitor, Report, Target, TargetStatus};
use crate::service::{Edit, Health, RealId, ServiceKey, ServiceModel, ServicePolicy};

/// What the daemon needs of the health monitor.
pub trait Checks: Send {
    /// Replaces the targets (cheap; never waits on a check).
    fn set_targets(&self, targets: Vec<Target>);
    /// Every target as it stands now.
    fn status(&self) -> Vec<TargetStatus>;
    /// Check latencies per checker type since the start, targets gone
    /// included (a Prometheus histogram's totals only grow).
    fn latency_by_kind(&self) -> Vec<(&'static str, LatencyHistogram)> {
        crate::health::by_kind(&self.status())
    }
}

impl Checks for Monitor {
    fn set_targets(&self, targets: Vec<Target>) {
        Monitor::set_targets(self, targets);
    }

    fn status(&self) -> Vec<TargetStatus> {
        Monitor::status(self)
    }

    fn latency_by_kind(&self) -> Vec<(&'static str, LatencyHistogram)> {
        Monitor::latency_by_kind(self)
    }
}

/// The checks the daemon runs and the configuration they come from.
pub struct HealthChecks {
    pub checks: Box<dyn Checks>,
    pub config: CheckConfig,
    /// The config's policies, as the model holds them (sorry ports
    /// forced), to give back to a service defined anew.
    pub policies: Vec<(ServiceKey, ServicePolicy)>,
    /// The model generation the targets were last set from.
    pub seen: Option<u64>,
    /// Every (service, real server) of the model the targets were last
    /// set from: a change that keeps them (a report's health, a weight)
    /// gives the monitor nothing new.
    pub reals: Option<Vec<(ServiceKey, SocketAddr)>>,
}

/// Every (service, real server) of `model`, in its order.
pub fn real_set(model: &ServiceModel) -> Vec<(ServiceKey, SocketAddr)> {
    model
        .services()
        .iter()
        .flat_map(|s| {
            s.reals
                .iter()
                .map(move |r| (s.key, SocketAddr::new(r.addr, r.port)))
        })
        .collect()
}

/// The edits a round's reports make.
pub fn edits(reports: &[Report]) -> Vec<Edit> {
    let mut out = Vec::with_capacity(reports.len() * 2);
    for r in reports {
        let health = if r.up { Health::Up } else { Health::Down };
        out.push(Edit::SetHealth(r.service, r.real, health));
        out.push(Edit::SetCheckWeight(r.service, r.real, r.weight));
    }
    out
}

/// The policies a model has lost (its service deleted and defined anew)
/// and must be given back.
pub fn lost_policies(model: &ServiceModel, policies: &[(ServiceKey, ServicePolicy)]) -> Vec<Edit> {
    policies
        .iter()
        .filter(|(k, p)| model.service(k).is_some() && model.policy(k) != *p)
        .map(|(k, p)| Edit::SetPolicy(*k, *p))
        .collect()
}

/// `TCP 192.0.2.10:80`, as `-L` and the metrics name a service.
pub fn service_label(key: &ServiceKey) -> String {
    format!(
        "{} {}",
        key.proto.name(),
        SocketAddr::new(key.addr, key.port)
    )
}

/// One row of `xvs status`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StatusRow {
    pub service: String,
    pub real: String,
    pub check: String,
    pub up: bool,
    /// The weight the operator gave.
    pub weight: u32,
    /// The weight it schedules with now; `None`: out of the service.
    pub effective_weight: Option<u32>,
    /// Whether the service has quorum.
    pub quorum: bool,
    pub last_ok: Option<bool>,
    pub last_latency_ms: Option<f64>,
    pub reason: String,
    /// Seconds since the Unix epoch when the present state began.
    pub since: f64,
    pub transitions: u64,
}

/// Every checked real server, in the model's order (services as added,
/// real servers as added).
pub fn rows(model: &ServiceModel, statuses: &[TargetStatus]) -> Vec<StatusRow> {
    let by_target: HashMap<(ServiceKey, SocketAddr), &TargetStatus> =
        statuses.iter().map(|s| ((s.service, s.real), s)).collect();
    let effective: HashMap<RealId, u32> = model
        .view()
        .iter()
        .flat_map(|s| s.reals.iter().map(|r| (r.id, r.weight)))
        .collect();
    let mut out = Vec::new();
    for s in model.services() {
        for r in &s.reals {
            let at = SocketAddr::new(r.addr, r.port);
            let Some(st) = by_target.get(&(s.key, at)) else {
                continue;
            };
            out.push(StatusRow {
                service: service_label(&s.key),
                real: at.to_string(),
                check: st.kind.to_string(),
                up: st.up,
                weight: r.weight,
                effective_weight: effective.get(&r.id).copied(),
                quorum: model.has_quorum(&s.key),
                last_ok: st.last.as_ref().map(|l| l.ok),
                last_latency_ms: st.last.as_ref().map(|l| l.latency.as_secs_f64() * 1e3),
                reason: st
                    .last
                    .as_ref()
                    .map(|l| l.reason.clone())
                    .unwrap_or_default(),
                since: st
                    .since
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64(),
                transitions: st.transitions,
            });
        }
    }
    out
}

/// `xvs status`: a table, one real server a line, or JSON.
pub fn render(rows: &[StatusRow], json: bool, now: SystemTime) -> String {
    if json {
        let mut s = serde_json::to_string_pretty(rows).unwrap_or_else(|_| "[]".into());
        s.push('\n');
        return s;
    }
    if rows.is_empty() {
        return "no real server is checked (give checks with [[check]] in the --config \
                file, or --keepalived)\n"
            .into();
    }
    let now_secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let header = [
        "SERVICE", "REAL", "CHECK", "HEALTH", "WEIGHT", "LAST", "LATENCY", "SINCE", "TRANS",
        "REASON",
    ];
    let cells: Vec<[String; 10]> = rows
        .iter()
        .map(|r| {
            let weight = match r.effective_weight {
                Some(e) if e == r.weight => r.weight.to_string(),
                Some(e) => format!("{e}/{}", r.weight),
                None => format!("out/{}", r.weight),
            };
            [
                r.service.clone(),
                r.real.clone(),
                r.check.clone(),
                if r.up { "up" } else { "down" }.to_string()
                    + if r.quorum { "" } else { " (no quorum)" },
                weight,
                match r.last_ok {
                    Some(true) => "ok".into(),
                    Some(false) => "failed".into(),
                    None => "-".into(),
                },
                r.last_latency_ms
                    .map_or("-".into(), |ms| format!("{ms:.1}ms")),
                age(Duration::from_secs_f64((now_secs - r.since).max(0.0))),
                r.transitions.to_string(),
                if r.reason.is_empty() {
                    "-".into()
                } else {
                    r.reason.clone()
                },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, row: &[&str]| {
        for (i, (c, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                let _ = write!(out, "{c}");
            } else {
                let _ = write!(out, "{c:<w$}  ");
            }
        }
        out.push('\n');
    };
    line(&mut out, &header);
    for row in &cells {
        let row: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&mut out, &row);
    }
    out
}

/// `45s`, `12m3s`, `5h2m`, `3d4h`.
fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{CheckOutcome, LatencyHistogram};
    use crate::packet::L4Proto;
    use crate::service::{ForwardMethod, OnFailure, RealSpec, SchedulerKind, ServiceSpec};

    fn key() -> ServiceKey {
        ServiceKey {
            proto: L4Proto::Tcp,
            addr: "192.0.2.10".parse().unwrap(),
            port: 80,
        }
    }

    fn model() -> ServiceModel {
        let mut m = ServiceModel::new(8);
        m.apply(&Edit::AddService(ServiceSpec {
            key: key(),
            scheduler: SchedulerKind::Rr,
            sched_flags: Default::default(),
            persistence: None,
        }))
        .unwrap();
        for host in [2, 3] {
            m.apply(&Edit::AddReal(
                key(),
                RealSpec {
                    addr: [198, 51, 100, host].into(),
                    port: 80,
                    method: ForwardMethod::Nat,
                    weight: 3,
                    upper_threshold: 0,
                    lower_threshold: 0,
                },
            ))
            .unwrap();
        }
        m
    }

    fn status(host: u8, up: bool) -> TargetStatus {
        TargetStatus {
            service: key(),
            real: SocketAddr::from(([198, 51, 100, host], 80)),
            kind: "http",
            up,
            since: SystemTime::UNIX_EPOCH + Duration::from_secs(1000),
            transitions: if up { 0 } else { 1 },
            weight: None,
            last: Some(CheckOutcome {
                ok: up,
                latency: Duration::from_micros(1500),
                reason: if up { String::new() } else { "HTTP 500".into() },
                at: SystemTime::UNIX_EPOCH + Duration::from_secs(1000),
            }),
            latency: LatencyHistogram::new(),
        }
    }

    #[test]
    fn a_report_is_its_servers_health_and_check_weight() {
        let r = Report {
            service: key(),
            real: "198.51.100.2:80".parse().unwrap(),
            up: false,
            weight: Some(7),
            reason: "HTTP 500".into(),
        };
        let mut m = model();
        for e in edits(&[r]) {
            m.apply(&e).unwrap();
        }
        assert_eq!(m.health(RealId(0)), Health::Down);
    }

    #[test]
    fn status_shows_health_weights_and_the_last_check() {
        let mut m = model();
        m.apply(&Edit::SetHealth(
            key(),
            "198.51.100.3:80".parse().unwrap(),
            Health::Down,
        ))
        .unwrap();
        let policy = ServicePolicy {
            on_failure: OnFailure::Remove,
            ..ServicePolicy::default()
        };
        m.apply(&Edit::SetPolicy(key(), policy)).unwrap();
        let rows = rows(&m, &[status(3, false), status(2, true)]);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].real, "198.51.100.2:80", "the model's order");
        assert_eq!(rows[1].effective_weight, None, "removed");
        let text = render(
            &rows,
            false,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1075),
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("SERVICE"), "{text}");
        for want in [
            "TCP 192.0.2.10:80",
            "198.51.100.2:80",
            "http",
            "up",
            "ok",
            "1.5ms",
            "1m15s",
        ] {
            assert!(lines[1].contains(want), "{want}: {text}");
        }
        for want in ["down", "out/3", "failed", "HTTP 500"] {
            assert!(lines[2].contains(want), "{want}: {text}");
        }
        let json: serde_json::Value =
            serde_json::from_str(&render(&rows, true, SystemTime::now())).unwrap();
        assert_eq!(json[1]["reason"], "HTTP 500");
        assert_eq!(json[1]["effective_weight"], serde_json::Value::Null);
        assert_eq!(json[0]["effective_weight"], 3);
        assert!(render(&[], false, SystemTime::now()).contains("no real server is checked"));
    }

    #[test]
    fn a_service_defined_anew_gets_its_policy_back() {
        let mut m = model();
        let policy = ServicePolicy {
            quorum: 2,
            ..ServicePolicy::default()
        };
        let policies = [(key(), policy)];
        assert_eq!(
            lost_policies(&m, &policies),
            [Edit::SetPolicy(key(), policy)]
        );
        m.apply(&Edit::SetPolicy(key(), policy)).unwrap();
        assert!(lost_policies(&m, &policies).is_empty());
        m.apply(&Edit::Clear).unwrap();
        assert!(
            lost_policies(&m, &policies).is_empty(),
            "no service, no policy"
        );
    }
}
