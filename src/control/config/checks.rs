//! The config file's health checks (`[[check]]`) and failure policies
//! (`[[policy]]`): TOML tables turned into a [`CheckConfig`] and
//! [`ServicePolicy`]s, every key checked.
//!
//! ```toml
//! [[check]]
//! service = "tcp 192.0.2.10:80"  # the service whose real servers it checks
//! # real = "198.51.100.2:80"     # only this one (wins over the service's)
//! type = "http"                  # tcp http https udp dns exec
//! interval = "1s"                # between checks (keepalived delay_loop)
//! timeout = "2s"                 # connect and answer (connect_timeout)
//! fall = 3                       # failures in a row before down (keepalived retry + 1)
//! rise = 2                       # successes in a row before up
//! delay_before_retry = "500ms"   # after a failure, while counting to fall
//! warmup = "0s"                  # at most this long before the first check
//! start_down = false             # down until the first success (alpha)
//! # connect_ip = "198.51.100.20"  # check another address ...
//! # connect_port = 8080           # ... or port than the real server's
//! path = "/health"               # http, https: the GET's path
//! # host = "www.example.com"      # Host header and SNI
//! status = ["200-299"]           # codes or ranges that count as up
//! # body_contains = "ok"          # the body must contain this
//! # digest = "9e107d9d372bb6826bd81d3542a419d6"  # MD5 of the body
//! # verify_cert = false           # https: check the certificate
//! # payload = "ping"              # udp: what is sent
//! # expect = "pong"               # udp: the answer must start with it
//! # name = "example.com"          # dns: the query's name (default ".")
//! # qtype = "A"                   # dns: type name or number (default SOA)
//! # rcodes = [0]                  # dns: answer codes that count as up
//! # command = "/usr/local/bin/check-web 198.51.100.2"  # exec
//! # dynamic = false               # exec: exit 2..255 sets weight code - 2
//! notify_up = "logger web up"     # run on the transition, with the
//! notify_down = "logger web down" # server, service and reason
//!
//! [[policy]]
//! service = "tcp 192.0.2.10:80"
//! on_failure = "quiesce"         # weight 0 (default), or "remove"
//! sorry_server = "198.51.100.9:80"
//! # sorry_method = "nat"          # nat, dr, tun (default: the service's
//! #                               # first real server's, else nat)
//! # sorry_weight = 1
//! quorum = 1                     # live weight the service needs
//! hysteresis = 0
//! ```
//!
//! Durations are `"300ms"`, `"2s"`, `"1.5s"`, `"1m"` or a number of
//! seconds. A service named must be one the services script (or the
//! keepalived file) defines, a real server one of its real servers; keys
//! of another check type are refused by name ("path is a key of http and
//! https checks, not of tcp").

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;

use serde::Deserialize;

use crate::health::{CheckConfig, CheckKind, CheckSpec, HttpSpec, Notify};
use crate::packet::L4Proto;
use crate::service::{ForwardMethod, OnFailure, RealSpec, ServiceKey, ServiceModel, ServicePolicy};

/// One `[[check]]` table, as written.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CheckTable {
    pub service: String,
    pub real: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
    pub interval: Option<DurationText>,
    pub timeout: Option<DurationText>,
    pub fall: Option<u32>,
    pub rise: Option<u32>,
    pub delay_before_retry: Option<DurationText>,
    pub warmup: Option<DurationText>,
    pub start_down: Option<bool>,
    pub connect_ip: Option<String>,
    pub connect_port: Option<u16>,
    pub path: Option<String>,
    pub host: Option<String>,
    pub status: Option<Vec<NumberOrText>>,
    pub body_contains: Option<String>,
    pub digest: Option<String>,
    pub verify_cert: Option<bool>,
    pub payload: Option<String>,
    pub expect: Option<String>,
    pub name: Option<String>,
    pub qtype: Option<NumberOrText>,
    pub rcodes: Option<Vec<u8>>,
    pub command: Option<String>,
    pub dynamic: Option<bool>,
    pub notify_up: Option<String>,
    pub notify_down: Option<String>,
}

/// One `[[policy]]` table, as written.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PolicyTable {
    pub service: String,
    pub on_failure: Option<String>,
    pub sorry_server: Option<String>,
    pub sorry_method: Option<String>,
    pub sorry_weight: Option<u32>,
    pub quorum: Option<u32>,
    pub hysteresis: Option<u32>,
}

/// A duration as the file gives it: text with a unit, or seconds.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum DurationText {
    Seconds(u64),
    Text(String),
}

/// A value the file may give as a number or as text (`200`, `"200-299"`,
/// `"A"`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum NumberOrText {
    Number(u64),
    Text(String),
}

/// The checks and policies of a file, resolved against the start-up
/// model.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthSettings {
    pub checks: CheckConfig,
    pub policies: Vec<(ServiceKey, ServicePolicy)>,
}

/// Turns the tables into checks and policies; `model` is the start-up
/// model, whose services and real servers they must name.
pub fn resolve(
    checks: &[CheckTable],
    policies: &[PolicyTable],
    model: &ServiceModel,
) -> Result<HealthSettings, String> {
    let mut out = HealthSettings::default();
    for (i, t) in checks.iter().enumerate() {
        let at = |e: String| format!("check {} ({}): {e}", i + 1, t.service);
        let (key, real, spec, notify) = check(t, model).map_err(at)?;
        match real {
            Some(real) => {
                if out
                    .checks
                    .reals
                    .iter()
                    .any(|(k, a, ..)| *k == key && *a == real)
                {
                    return Err(at(format!("{real} has a check already")));
                }
                out.checks.reals.push((key, real, spec, notify));
            }
            None => {
                if out.checks.services.iter().any(|(k, ..)| *k == key) {
                    return Err(at(
                        "the service has a check already (give `real` for one real server's)"
                            .into(),
                    ));
                }
                out.checks.services.push((key, spec, notify));
            }
        }
    }
    for (i, t) in policies.iter().enumerate() {
        let at = |e: String| format!("policy {} ({}): {e}", i + 1, t.service);
        let (key, policy) = policy(t, model).map_err(at)?;
        if out.policies.iter().any(|(k, _)| *k == key) {
            return Err(at("the service has a policy already".into()));
        }
        out.policies.push((key, policy));
    }
    Ok(out)
}

/// `tcp 192.0.2.10:80`, `udp [2001:db8::10]:53` (any case).
pub fn parse_service(text: &str) -> Result<ServiceKey, String> {
    let bad =
        || format!("service = {text:?}: expected \"tcp ADDRESS:PORT\" or \"udp ADDRESS:PORT\"");
    let mut words = text.split_whitespace();
    let (Some(proto), Some(addr), None) = (words.next(), words.next(), words.next()) else {
        return Err(bad());
    };
    let proto = match proto.to_ascii_lowercase().as_str() {
        "tcp" => L4Proto::Tcp,
        "udp" => L4Proto::Udp,
        _ => return Err(bad()),
    };
    let addr: SocketAddr = addr.parse().map_err(|_| bad())?;
    Ok(ServiceKey {
        proto,
        addr: addr.ip(),
        port: addr.port(),
    })
}

/// The service `text` names, which the model must have.
fn service(text: &str, model: &ServiceModel) -> Result<ServiceKey, String> {
    let key = parse_service(text)?;
    if model.service(&key).is_none() {
        return Err("no such virtual service in the services script".into());
    }
    Ok(key)
}

/// Which check types a type-specific key belongs to.
const TYPE_KEYS: &[(&str, &[&str])] = &[
    ("path", &["http", "https"]),
    ("host", &["http", "https"]),
    ("status", &["http", "https"]),
    ("body_contains", &["http", "https"]),
    ("digest", &["http", "https"]),
    ("verify_cert", &["https"]),
    ("payload", &["udp"]),
    ("expect", &["udp"]),
    ("name", &["dns"]),
    ("qtype", &["dns"]),
    ("rcodes", &["dns"]),
    ("command", &["exec"]),
    ("dynamic", &["exec"]),
];

fn check(
    t: &CheckTable,
    model: &ServiceModel,
) -> Result<(ServiceKey, Option<SocketAddr>, CheckSpec, Notify), String> {
    let key = service(&t.service, model)?;
    let real = match &t.real {
        Some(r) => {
            let at: SocketAddr = r
                .parse()
                .map_err(|_| format!("real = {r:?}: expected ADDRESS:PORT"))?;
            let known = model.service(&key).is_some_and(|s| {
                s.reals
                    .iter()
                    .any(|x| SocketAddr::new(x.addr, x.port) == at)
            });
            if !known {
                return Err(format!("real = {r:?}: not a real server of this service"));
            }
            Some(at)
        }
        None => None,
    };
    let kind_name = t.kind.as_str();
    let given = [
        ("path", t.path.is_some()),
        ("host", t.host.is_some()),
        ("status", t.status.is_some()),
        ("body_contains", t.body_contains.is_some()),
        ("digest", t.digest.is_some()),
        ("verify_cert", t.verify_cert.is_some()),
        ("payload", t.payload.is_some()),
        ("expect", t.expect.is_some()),
        ("name", t.name.is_some()),
        ("qtype", t.qtype.is_some()),
        ("rcodes", t.rcodes.is_some()),
        ("command", t.command.is_some()),
        ("dynamic", t.dynamic.is_some()),
    ];
    for (k, set) in given {
        let types = TYPE_KEYS
            .iter()
            .find(|(n, _)| *n == k)
            .map_or(&[][..], |(_, t)| *t);
        if set && !types.contains(&kind_name) {
            return Err(format!(
                "{k} is a key of {} checks, not of {kind_name}",
                types.join(" and ")
            ));
        }
    }
    let http = || -> Result<HttpSpec, String> {
        let mut h = HttpSpec::new(t.path.clone().unwrap_or_else(|| "/".into()));
        if !h.path.starts_with('/') {
            return Err(format!("path = {:?}: must start with /", h.path));
        }
        h.host = t.host.clone();
        if let Some(s) = &t.status {
            h.status = s.iter().map(status_range).collect::<Result<_, _>>()?;
            if h.status.is_empty() {
                return Err("status = []: give at least one code or range".into());
            }
        }
        h.body_contains = t.body_contains.clone();
        if let Some(d) = &t.digest {
            if d.len() != 32 || !d.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(format!("digest = {d:?}: expected an MD5 as 32 hex digits"));
            }
            h.digest = Some(d.to_ascii_lowercase());
        }
        h.verify_cert = t.verify_cert.unwrap_or(false);
        Ok(h)
    };
    let kind = match kind_name {
        "tcp" => CheckKind::Tcp,
        "http" => CheckKind::Http(http()?),
        "https" => CheckKind::Https(http()?),
        "udp" => CheckKind::Udp {
            payload: t.payload.clone().unwrap_or_default().into_bytes(),
            expect: t.expect.clone().map(String::into_bytes),
        },
        "dns" => CheckKind::Dns {
            name: t.name.clone().unwrap_or_else(|| ".".into()),
            qtype: match &t.qtype {
                None => 6,
                Some(q) => qtype(q)?,
            },
            rcodes: t.rcodes.clone().unwrap_or_else(|| vec![0]),
        },
        "exec" => CheckKind::Exec {
            command: t
                .command
                .clone()
                .filter(|c| !c.trim().is_empty())
                .ok_or("an exec check needs command = \"...\"")?,
            dynamic: t.dynamic.unwrap_or(false),
        },
        other => {
            return Err(format!(
                "type = {other:?}: expected tcp, http, https, udp, dns or exec"
            ))
        }
    };
    let mut spec = CheckSpec::new(kind);
    let d = |name: &str, v: &Option<DurationText>, into: &mut Duration| -> Result<(), String> {
        if let Some(v) = v {
            *into = duration(v).map_err(|e| format!("{name} = {e}"))?;
        }
        Ok(())
    };
    d("interval", &t.interval, &mut spec.interval)?;
    d("timeout", &t.timeout, &mut spec.timeout)?;
    d(
        "delay_before_retry",
        &t.delay_before_retry,
        &mut spec.delay_before_retry,
    )?;
    d("warmup", &t.warmup, &mut spec.warmup)?;
    for (name, v) in [("interval", spec.interval), ("timeout", spec.timeout)] {
        if v < Duration::from_millis(10) {
            return Err(format!("{name} = {v:?}: at least 10ms"));
        }
    }
    for (name, v, into) in [
        ("fall", t.fall, &mut spec.fall),
        ("rise", t.rise, &mut spec.rise),
    ] {
        match v {
            Some(0) => return Err(format!("{name} = 0: at least 1")),
            Some(n) => *into = n,
            None => {}
        }
    }
    spec.start_down = t.start_down.unwrap_or(false);
    spec.connect_ip = match &t.connect_ip {
        Some(a) => Some(
            a.parse::<IpAddr>()
                .map_err(|_| format!("connect_ip = {a:?}: not an IP address"))?,
        ),
        None => None,
    };
    spec.connect_port = t.connect_port;
    let notify = Notify {
        up: t.notify_up.clone(),
        down: t.notify_down.clone(),
    };
    Ok((key, real, spec, notify))
}

fn policy(t: &PolicyTable, model: &ServiceModel) -> Result<(ServiceKey, ServicePolicy), String> {
    let key = service(&t.service, model)?;
    let mut p = ServicePolicy {
        on_failure: match t.on_failure.as_deref() {
            None | Some("quiesce") => OnFailure::Quiesce,
            Some("remove") => OnFailure::Remove,
            Some(other) => {
                return Err(format!(
                    "on_failure = {other:?}: expected \"quiesce\" or \"remove\""
                ))
            }
        },
        ..ServicePolicy::default()
    };
    if let Some(q) = t.quorum {
        if q == 0 {
            return Err("quorum = 0: at least 1".into());
        }
        p.quorum = q;
    }
    p.hysteresis = t.hysteresis.unwrap_or(0);
    let default_method = model
        .service(&key)
        .and_then(|s| s.reals.first())
        .map_or(ForwardMethod::Nat, |r| r.method);
    p.sorry = match &t.sorry_server {
        Some(s) => {
            let at: SocketAddr = s
                .parse()
                .map_err(|_| format!("sorry_server = {s:?}: expected ADDRESS:PORT"))?;
            let method = match t.sorry_method.as_deref() {
                None => default_method,
                Some("nat") => ForwardMethod::Nat,
                Some("dr") => ForwardMethod::Dr,
                Some("tun") => ForwardMethod::Tun,
                Some(other) => {
                    return Err(format!("sorry_method = {other:?}: expected nat, dr or tun"))
                }
            };
            let weight = t.sorry_weight.unwrap_or(1);
            if weight > 65535 {
                return Err(format!("sorry_weight = {weight}: at most 65535"));
            }
            Some(RealSpec {
                addr: at.ip(),
                port: at.port(),
                method,
                weight,
                upper_threshold: 0,
                lower_threshold: 0,
            })
        }
        None => {
            for (name, set) in [
                ("sorry_method", t.sorry_method.is_some()),
                ("sorry_weight", t.sorry_weight.is_some()),
            ] {
                if set {
                    return Err(format!("{name} without sorry_server"));
                }
            }
            None
        }
    };
    Ok((key, p))
}

/// `"300ms"`, `"2s"`, `"1.5s"`, `"1m"`, or seconds as a number.
pub fn duration(v: &DurationText) -> Result<Duration, String> {
    let text = match v {
        DurationText::Seconds(s) => return Ok(Duration::from_secs(*s)),
        DurationText::Text(t) => t.trim(),
    };
    let bad = || format!("{text:?}: expected a duration such as \"300ms\", \"2s\" or \"1m\"");
    let (number, unit) = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or((text, "s"), |i| text.split_at(i));
    let n: f64 = number.parse().map_err(|_| bad())?;
    let scale = match unit.trim() {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        _ => return Err(bad()),
    };
    let secs = n * scale;
    if !secs.is_finite() || secs > 86_400.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `200`, `"200"`, `"200-299"`.
fn status_range(v: &NumberOrText) -> Result<RangeInclusive<u16>, String> {
    let code =
        |s: &str| -> Option<u16> { s.trim().parse().ok().filter(|c| (100..=599).contains(c)) };
    let r = match v {
        NumberOrText::Number(n) => u16::try_from(*n)
            .ok()
            .filter(|c| (100..=599).contains(c))
            .map(|c| c..=c),
        NumberOrText::Text(t) => match t.split_once('-') {
            Some((a, b)) => code(a)
                .zip(code(b))
                .filter(|(a, b)| a <= b)
                .map(|(a, b)| a..=b),
            None => code(t).map(|c| c..=c),
        },
    };
    r.ok_or_else(|| {
        format!("status {v:?}: expected codes 100 to 599 or ranges such as \"200-299\"")
    })
}

/// A DNS type by name or number.
fn qtype(v: &NumberOrText) -> Result<u16, String> {
    const NAMES: [(&str, u16); 9] = [
        ("A", 1),
        ("NS", 2),
        ("CNAME", 5),
        ("SOA", 6),
        ("PTR", 12),
        ("MX", 15),
        ("TXT", 16),
        ("AAAA", 28),
        ("SRV", 33),
    ];
    match v {
        NumberOrText::Number(n) => u16::try_from(*n).map_err(|_| format!("qtype = {n}: at most 65535")),
        NumberOrText::Text(t) => NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(t))
            .map(|(_, v)| *v)
            .ok_or_else(|| format!("qtype = {t:?}: expected A, AAAA, NS, CNAME, SOA, PTR, MX, TXT, SRV or a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::config::FileConfig;
    use crate::service::Edit;

    fn model() -> ServiceModel {
        let mut m = ServiceModel::new(16);
        let key = parse_service("tcp 192.0.2.10:80").unwrap();
        m.apply(&Edit::AddService(crate::service::ServiceSpec {
            key,
            scheduler: crate::service::SchedulerKind::Wlc,
            sched_flags: Default::default(),
            persistence: None,
        }))
        .unwrap();
        m.apply(&Edit::AddReal(
            key,
            RealSpec {
                addr: "198.51.100.2".parse().unwrap(),
                port: 80,
                method: ForwardMethod::Dr,
                weight: 1,
                upper_threshold: 0,
                lower_threshold: 0,
            },
        ))
        .unwrap();
        m
    }

    fn health(text: &str) -> Result<HealthSettings, String> {
        let c = FileConfig::parse(text)?;
        resolve(
            c.check.as_deref().unwrap_or(&[]),
            c.policy.as_deref().unwrap_or(&[]),
            &model(),
        )
    }

    #[test]
    fn every_key_of_a_check_and_a_policy() {
        let h = health(
            r#"
[[check]]
service = "TCP 192.0.2.10:80"
type = "http"
interval = "300ms"
timeout = 2
fall = 3
rise = 2
delay_before_retry = "0.5s"
warmup = "1m"
start_down = true
connect_ip = "198.51.100.20"
connect_port = 8080
path = "/health"
host = "www.example.com"
status = [204, "200-299"]
body_contains = "ok"
digest = "9E107D9D372BB6826BD81D3542A419D6"
notify_up = "logger up"
notify_down = "logger down"

[[check]]
service = "tcp 192.0.2.10:80"
real = "198.51.100.2:80"
type = "dns"
name = "example.com"
qtype = "aaaa"
rcodes = [0, 3]

[[policy]]
service = "tcp 192.0.2.10:80"
on_failure = "remove"
sorry_server = "198.51.100.9:80"
sorry_weight = 2
quorum = 3
hysteresis = 1
"#,
        )
        .unwrap();
        let (key, spec, notify) = &h.checks.services[0];
        assert_eq!(key.port, 80);
        assert_eq!(spec.interval, Duration::from_millis(300));
        assert_eq!(spec.timeout, Duration::from_secs(2));
        assert_eq!((spec.fall, spec.rise), (3, 2));
        assert_eq!(spec.delay_before_retry, Duration::from_millis(500));
        assert_eq!(spec.warmup, Duration::from_secs(60));
        assert!(spec.start_down);
        assert_eq!(
            spec.endpoint("198.51.100.2:80".parse().unwrap()),
            "198.51.100.20:8080".parse().unwrap()
        );
        let CheckKind::Http(http) = &spec.kind else {
            panic!("{spec:?}")
        };
        assert_eq!(http.path, "/health");
        assert_eq!(http.host.as_deref(), Some("www.example.com"));
        assert_eq!(http.status, [204..=204, 200..=299]);
        assert_eq!(
            http.digest.as_deref(),
            Some("9e107d9d372bb6826bd81d3542a419d6")
        );
        assert_eq!(notify.down.as_deref(), Some("logger down"));
        let (_, real, spec, _) = &h.checks.reals[0];
        assert_eq!(real.to_string(), "198.51.100.2:80");
        assert_eq!(
            spec.kind,
            CheckKind::Dns {
                name: "example.com".into(),
                qtype: 28,
                rcodes: vec![0, 3]
            }
        );
        let (_, p) = h.policies[0];
        assert_eq!(p.on_failure, OnFailure::Remove);
        assert_eq!((p.quorum, p.hysteresis), (3, 1));
        let sorry = p.sorry.unwrap();
        // The service's real servers are routed: so is its sorry server.
        assert_eq!((sorry.method, sorry.weight), (ForwardMethod::Dr, 2));
        // Defaults: keepalived's.
        let h = health("[[check]]\nservice = \"tcp 192.0.2.10:80\"\ntype = \"tcp\"\n").unwrap();
        assert_eq!(h.checks.services[0].1, CheckSpec::new(CheckKind::Tcp));
    }

    /// The module doc's example, and every key it shows commented out
    /// (each uncommented alone, as a type that takes it).
    #[test]
    fn the_module_doc_example_resolves() {
        let source = include_str!("checks.rs");
        let start = source.find("//! ```toml\n").expect("example") + 12;
        let end = start + source[start..].find("//! ```\n").expect("end");
        let example: String = source[start..end]
            .lines()
            .map(|l| l.strip_prefix("//!").unwrap_or(l).trim_start_matches(' '))
            .map(|l| format!("{l}\n"))
            .collect();
        let h = health(&example).expect("the documented example");
        assert_eq!(h.checks.services.len(), 1);
        assert_eq!(h.policies[0].1.sorry.map(|s| s.port), Some(80));
        let mut tried = 0;
        for line in example.lines().filter_map(|l| l.strip_prefix("# ")) {
            let Some((key, _)) = line.split_once(" = ") else {
                continue;
            };
            let ty = TYPE_KEYS
                .iter()
                .find(|(k, _)| *k == key)
                .map_or("http", |(_, t)| t[t.len() - 1]);
            let service = "service = \"tcp 192.0.2.10:80\"";
            let table = if key.starts_with("sorry") {
                format!("[[policy]]\n{service}\nsorry_server = \"198.51.100.9:80\"\n{line}\n")
            } else {
                // An exec check needs its command; the others need none.
                let command = if ty == "exec" && key != "command" {
                    "command = \"true\"\n"
                } else {
                    ""
                };
                format!("[[check]]\n{service}\ntype = \"{ty}\"\n{command}{line}\n")
            };
            health(&table).unwrap_or_else(|e| panic!("{line}: {e}\n{table}"));
            tried += 1;
        }
        assert!(tried >= 15, "{tried}");
    }

    /// README's example of checks and a policy resolves.
    #[test]
    fn the_readme_example_resolves() {
        let readme = include_str!("../../../README.md");
        let section = &readme[readme.find("## Health checks").expect("section")..];
        let start = section.find("```toml\n").expect("example") + 8;
        let end = start + section[start..].find("```\n").expect("end");
        let mut c = FileConfig::parse(&section[start..end]).expect("README's example parses");
        assert!(c.services_file.take().is_some());
        let mut m = model();
        m.apply(&Edit::AddReal(
            parse_service("tcp 192.0.2.10:80").unwrap(),
            RealSpec {
                addr: "198.51.100.3".parse().unwrap(),
                port: 80,
                method: ForwardMethod::Nat,
                weight: 1,
                upper_threshold: 0,
                lower_threshold: 0,
            },
        ))
        .unwrap();
        let h = resolve(
            c.check.as_deref().unwrap_or(&[]),
            c.policy.as_deref().unwrap_or(&[]),
            &m,
        )
        .expect("README's example resolves");
        assert_eq!((h.checks.services.len(), h.checks.reals.len()), (1, 1));
        assert_eq!(h.policies[0].1.quorum, 2);
    }

    #[test]
    fn mistakes_are_named() {
        let check = |rest: &str| {
            health(&format!(
                "[[check]]\nservice = \"tcp 192.0.2.10:80\"\n{rest}\n"
            ))
            .unwrap_err()
        };
        for (rest, want) in [
            ("type = \"tcp\"\npth = \"/\"", "unknown field `pth`"),
            (
                "type = \"tcp\"\npath = \"/\"",
                "path is a key of http and https checks, not of tcp",
            ),
            ("type = \"icmp\"", "type = \"icmp\": expected tcp, http"),
            (
                "type = \"tcp\"\ninterval = \"3 parsecs\"",
                "interval = \"3 parsecs\": expected a duration",
            ),
            ("type = \"tcp\"\nfall = 0", "fall = 0: at least 1"),
            (
                "type = \"http\"\nstatus = [\"299-200\"]",
                "expected codes 100 to 599",
            ),
            ("type = \"exec\"", "an exec check needs command"),
            (
                "type = \"tcp\"\nreal = \"198.51.100.7:80\"",
                "not a real server of this service",
            ),
            ("type = \"dns\"\nqtype = \"BOGUS\"", "qtype = \"BOGUS\""),
        ] {
            let e = check(rest);
            assert!(e.contains(want), "{rest}: {e}");
        }
        let e = health("[[check]]\nservice = \"tcp 192.0.2.11:80\"\ntype = \"tcp\"\n").unwrap_err();
        assert_eq!(
            e,
            "check 1 (tcp 192.0.2.11:80): no such virtual service in the services script"
        );
        let e = health("[[policy]]\nservice = \"tcp 192.0.2.10:80\"\nquorum = 0\n").unwrap_err();
        assert!(e.contains("quorum = 0"), "{e}");
        let e =
            health("[[policy]]\nservice = \"tcp 192.0.2.10:80\"\nsorry_weight = 3\n").unwrap_err();
        assert!(e.contains("sorry_weight without sorry_server"), "{e}");
        let e = health("[[policy]]\nservice = \"sctp 192.0.2.10:80\"\n").unwrap_err();
        assert!(e.contains("expected \"tcp ADDRESS:PORT\""), "{e}");
        let twice = "[[check]]\nservice = \"tcp 192.0.2.10:80\"\ntype = \"tcp\"\n";
        let e = health(&format!("{twice}{twice}")).unwrap_err();
        assert!(
            e.contains("check 2") && e.contains("has a check already"),
            "{e}"
        );
    }
}
