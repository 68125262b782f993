//! Real-server health checks (the seed's "mon"): a front end of the model.
//!
//! What is checked is a [`Target`]: one real server of one service, with
//! the [`CheckSpec`] it inherits from its service or has of its own
//! ([`CheckConfig::targets`]). The [`Monitor`] runs every target's checks
//! concurrently, off the daemon's loop and off the workers, counts
//! failures and successes against `fall` and `rise`, and reports each
//! transition as a [`Report`]; the daemon turns a report into an
//! [`Edit::SetHealth`](crate::service::Edit::SetHealth).
//!
//! Inside: `state` counts results against `fall` and `rise` and says when
//! the next check starts (sans-IO: no clock, no sockets); `check` holds
//! the checkers (`dns` the little of DNS they need); `monitor` runs them,
//! one task per target on a two-thread tokio runtime of the monitor's own,
//! so a target that hangs holds only its own task and nothing the daemon
//! calls waits on a check. Checks leave from the host's own stack (plain
//! sockets).

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;

use crate::service::{ServiceKey, ServiceModel};

mod check;
mod dns;
mod monitor;
mod state;

pub use check::md5_hex;
pub use monitor::{by_kind, CheckOutcome, LatencyHistogram, Monitor, MonitorOptions, TargetStatus};

/// A random number, for warmup delays and DNS query ids (not for secrets).
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.finish()
}

/// How one target is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckSpec {
    pub kind: CheckKind,
    /// Between the starts of two checks (keepalived `delay_loop`).
    pub interval: Duration,
    /// Connect and response timeout of one check (`connect_timeout`).
    pub timeout: Duration,
    /// Failures in a row before up turns down (keepalived `retry`).
    pub fall: u32,
    /// Successes in a row before down turns up.
    pub rise: u32,
    /// Between a failed check and the next try while counting to `fall`.
    pub delay_before_retry: Duration,
    /// Before the first check, at most (a random part of it, as keepalived).
    pub warmup: Duration,
    /// Start down until the first success (keepalived `alpha`).
    pub start_down: bool,
    /// Check this address instead of the real server's (`connect_ip`).
    pub connect_ip: Option<IpAddr>,
    /// Check this port instead of the real server's (`connect_port`).
    pub connect_port: Option<u16>,
}

impl CheckSpec {
    /// The defaults of a check of this kind: 6 s interval, 5 s timeout
    /// (keepalived's `connect_timeout`), fall 1, rise 1, 1 s before a
    /// retry, no warmup, start up. keepalived's own `delay_loop` default
    /// is 60 s and its `retry` counts tries after the first; the
    /// keepalived.conf reader sets both as keepalived has them.
    pub fn new(kind: CheckKind) -> CheckSpec {
        CheckSpec {
            kind,
            interval: Duration::from_secs(6),
            timeout: Duration::from_secs(5),
            fall: 1,
            rise: 1,
            delay_before_retry: Duration::from_secs(1),
            warmup: Duration::ZERO,
            start_down: false,
            connect_ip: None,
            connect_port: None,
        }
    }

    /// Where a check of the real server at `real` connects to.
    pub fn endpoint(&self, real: SocketAddr) -> SocketAddr {
        SocketAddr::new(
            self.connect_ip.unwrap_or(real.ip()),
            self.connect_port.unwrap_or(real.port()),
        )
    }
}

/// What one check does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// A TCP connect (keepalived `TCP_CHECK`).
    Tcp,
    /// An HTTP GET (keepalived `HTTP_GET`).
    Http(HttpSpec),
    /// An HTTPS GET, certificates unchecked unless asked (`SSL_GET`).
    Https(HttpSpec),
    /// A datagram sent; up when an answer (matching `expect`, if given)
    /// comes back (keepalived `UDP_CHECK`).
    Udp {
        payload: Vec<u8>,
        expect: Option<Vec<u8>>,
    },
    /// A DNS query over UDP; up when the answer's rcode is one of `rcodes`
    /// (keepalived `DNS_CHECK`: type SOA for "." by default, rcode 0).
    Dns {
        name: String,
        qtype: u16,
        rcodes: Vec<u8>,
    },
    /// A command: exit 0 up, else down; with `dynamic` (keepalived
    /// `misc_dynamic`) exit codes 2..=255 also set the weight to code − 2.
    Exec { command: String, dynamic: bool },
}

impl CheckKind {
    /// The checker's name in status output and metric labels.
    pub fn name(&self) -> &'static str {
        match self {
            CheckKind::Tcp => "tcp",
            CheckKind::Http(_) => "http",
            CheckKind::Https(_) => "https",
            CheckKind::Udp { .. } => "udp",
            CheckKind::Dns { .. } => "dns",
            CheckKind::Exec { .. } => "exec",
        }
    }
}

/// An HTTP or HTTPS GET and what its answer must be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpSpec {
    pub path: String,
    /// The Host header and, for HTTPS, the SNI name (default: the address).
    pub host: Option<String>,
    /// Status codes that count as up (default 200..=299).
    pub status: Vec<RangeInclusive<u16>>,
    /// A substring the body must contain.
    pub body_contains: Option<String>,
    /// The body's MD5 as lowercase hex (keepalived `digest`).
    pub digest: Option<String>,
    /// HTTPS only: verify the certificate (off by default, as `SSL_GET`).
    pub verify_cert: bool,
}

impl HttpSpec {
    pub fn new(path: impl Into<String>) -> HttpSpec {
        HttpSpec {
            path: path.into(),
            host: None,
            status: vec![200..=299],
            body_contains: None,
            digest: None,
            verify_cert: false,
        }
    }
}

/// Commands run on a target's transitions (keepalived `notify_up` and
/// `notify_down`), each with `sh -c` on a task of its own, never in the
/// check's way, with in its environment:
/// - `XVS_REAL`: the real server, `198.51.100.1:80` (`[2001:db8::1]:80`);
/// - `XVS_SERVICE`: the service as ipvsadm names it, `TCP 192.0.2.10:80`;
/// - `XVS_STATE`: the new state, `up` or `down`;
/// - `XVS_REASON`: why, as in [`Report::reason`].
///
/// A hook still running at [`MonitorOptions::notify_timeout`] (30 s by
/// default) is killed with its whole process group. Exec checks get
/// `XVS_REAL` and `XVS_SERVICE` too.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Notify {
    pub up: Option<String>,
    pub down: Option<String>,
}

/// One real server of one service and how it is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub service: ServiceKey,
    pub real: SocketAddr,
    pub check: CheckSpec,
    pub notify: Notify,
}

/// A target's health changed (or, with `misc_dynamic`, its weight).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub service: ServiceKey,
    pub real: SocketAddr,
    pub up: bool,
    /// The weight an exec check with `dynamic` asked for.
    pub weight: Option<u32>,
    /// Why, in words: "connection refused", "HTTP 500", "timed out after
    /// 2s", "body lacks \"ok\"", "digest mismatch (...)", "exit 3",
    /// "DNS rcode 2 (SERVFAIL)"; "check succeeded" when it comes up.
    pub reason: String,
}

/// Checks as configured: per service (inherited by each of its real
/// servers, also those added later by ipvsadm) and per real server (which
/// wins over its service's).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckConfig {
    pub services: Vec<(ServiceKey, CheckSpec, Notify)>,
    pub reals: Vec<(ServiceKey, SocketAddr, CheckSpec, Notify)>,
}

impl CheckConfig {
    /// Whether the real server at `real` of `service` has a check, its own
    /// or its service's.
    pub fn checks(&self, service: &ServiceKey, real: SocketAddr) -> bool {
        self.services.iter().any(|(k, _, _)| k == service)
            || self
                .reals
                .iter()
                .any(|(k, a, _, _)| k == service && *a == real)
    }

    /// The targets of `model`'s real servers: each real server once, with
    /// its own check if it has one, else its service's; real servers with
    /// neither are not checked.
    pub fn targets(&self, model: &ServiceModel) -> Vec<Target> {
        let mut out = Vec::new();
        for service in model.services() {
            for real in &service.reals {
                let at = SocketAddr::new(real.addr, real.port);
                let own = self
                    .reals
                    .iter()
                    .find(|(k, a, _, _)| *k == service.key && *a == at)
                    .map(|(_, _, c, n)| (c, n));
                let inherited = || {
                    self.services
                        .iter()
                        .find(|(k, _, _)| *k == service.key)
                        .map(|(_, c, n)| (c, n))
                };
                if let Some((check, notify)) = own.or_else(inherited) {
                    out.push(Target {
                        service: service.key,
                        real: at,
                        check: check.clone(),
                        notify: notify.clone(),
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
