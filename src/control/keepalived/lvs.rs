//! keepalived's LVS configuration: `virtual_server` blocks to services,
//! real servers, checks and failure policies.
//!
//! # Keys and what xvs does with them
//! A key in a block where keepalived does not have it is an error, as is
//! any key xvs does not know. Values are keepalived's (`<TIMER>` seconds
//! with fractions, `<BOOL>` on/off/true/false/yes/no).
//!
//! | where | key | xvs |
//! |---|---|---|
//! | top | `virtual_server IP PORT` (IPv4, IPv6) | a service; without `PORT` (all ports, port 0): error |
//! | top | `virtual_server fwmark N`, `virtual_server group NAME` | error: xvs has no firewall-mark or group services |
//! | top | `global_defs`, `vrrp_*`, `static_*`, `track_*`, `linkbeat_interfaces`, `bfd_instance`, `garp_group`, `SSL`, `virtual_server_group` | skipped with a note (VRRP stays keepalived's job) |
//! | top | `net_namespace`, `net_namespace_ipvs`, `instance`, `use_pid_dir`, `linkbeat_use_polling`, `child_wait_time` | note: keepalived's own process |
//! | service | `lvs_sched`/`lb_algo` | scheduler (default `wlc`) |
//! | service | `lvs_method`/`lb_kind` `NAT`, `DR`, `TUN` (`type ipip`) | forwarding method, default NAT; GUE and GRE tunnels: error |
//! | service | `protocol TCP`/`UDP` | SCTP: error |
//! | service | `persistence_timeout [N]` (360 without N), `persistence_granularity MASK` | persistence (`-p`, `-M`) |
//! | service | `sh-port`, `sh-fallback`, `mh-port`, `mh-fallback`, `flag-1`, `flag-2` | scheduler flags; `flag-3`, `ops`, `persistence_engine`, `ip_family`: error |
//! | service | `inhibit_on_failure` | down servers quiesced (weight 0) instead of removed (keepalived's default) |
//! | service | `quorum`, `hysteresis`, `sorry_server IP [PORT]`, `sorry_server_lvs_method` | the service's policy |
//! | service | `sorry_server_inhibit` | note: xvs takes the sorry server out while it is not needed |
//! | service | `quorum_up`, `quorum_down`, `omega`, `ha_suspend`, `smtp_alert`, `snmp_name` | note: not run, not honoured |
//! | service, real server, checker | `delay_loop` (60 s), `connect_timeout` (5 s), `retry`, `delay_before_retry`, `warmup` (up to `delay_loop`), `alpha`, `virtualhost` | each level the default of the one below |
//! | real server | `weight` (1), `lvs_method`, `uthreshold`, `lthreshold`, `inhibit_on_failure` | the real server; a real server's own `inhibit_on_failure` unlike its service's: note, the majority wins (a tie quiesces) |
//! | real server | `notify_up`, `notify_down` | hooks; a user or group after the script: note |
//! | real server | `TCP_CHECK`, `HTTP_GET`, `SSL_GET`, `DNS_CHECK`, `MISC_CHECK`, `UDP_CHECK` | its check, one per real server (a second: error) |
//! | real server | `SMTP_CHECK`, `PING_CHECK`, `BFD_CHECK`, `FILE_CHECK` | error: xvs has no such checker |
//! | checker | `connect_ip`, `connect_port`, `nb_get_retry` (old `retry`) | where and how it checks |
//! | checker | `bindto`, `bind_if`, `bind_port`, `fwmark`, `log_all_failures` | note: checks leave from the director's own address |
//! | HTTP_GET, SSL_GET | one `url { path; digest; status_code N A-B ...; virtualhost; regex }` | a second `url`: error; a `regex` with pattern characters, `regex_no_match`, `regex_*`: error |
//! | HTTP_GET, SSL_GET | `http_protocol`, `fast_recovery`; SSL_GET `enable_sni` | note (xvs speaks HTTP/1.1 and sends the host as SNI) |
//! | DNS_CHECK | `type` (SOA), `name` (`.`) | rcode 0 expected |
//! | MISC_CHECK | `misc_path`, `misc_timeout` (`delay_loop`), `misc_dynamic`; `user` | note for `user` |
//! | UDP_CHECK | `payload`, `require_reply [HEX]` | `X` wildcards, `min_reply_length`, `max_reply_length`: error; without `require_reply` xvs still waits for an answer (note) |
//!
//! `retry` counts the tries after a failure, so a check goes down after
//! `retry + 1` failures in a row (`fall`); it comes back up on one
//! success. keepalived's `retry` defaults: 1, DNS_CHECK 3, MISC_CHECK 0;
//! `delay_before_retry`: HTTP_GET and SSL_GET 3 s, DNS_CHECK `delay_loop`,
//! else 1 s.

use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;
use std::time::Duration;

use super::lex::{At, Stmt};
use super::Diag;
use crate::health::{CheckConfig, CheckKind, CheckSpec, HttpSpec, Notify};
use crate::packet::L4Proto;
use crate::service::{
    ForwardMethod, OnFailure, Persistence, RealSpec, SchedFlags, SchedulerKind, ServiceKey,
    ServicePolicy, ServiceSpec,
};

/// keepalived's `delay_loop` when none is given.
pub const DEFAULT_DELAY_LOOP: Duration = Duration::from_secs(60);
/// keepalived's `connect_timeout` when none is given.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// keepalived's `persistence_timeout` given without a value.
pub const DEFAULT_PERSISTENCE: u32 = 360;

type Services = Vec<(ServiceSpec, ServicePolicy, Vec<RealSpec>)>;

/// The services and checks of `tree`'s `virtual_server` blocks; every
/// other top-level block is noted or, if unknown, an error.
pub fn read(tree: &[Stmt], diag: &mut Diag) -> (Services, CheckConfig) {
    let mut services: Services = Vec::new();
    let mut checks = CheckConfig::default();
    let mut seen: Vec<(ServiceKey, At)> = Vec::new();
    for stmt in tree {
        let key = stmt.key();
        if key == "virtual_server" {
            if let Some(vs) = VirtualServer::read(stmt, diag) {
                let key = vs.key;
                if let Some((_, first)) = seen.iter().find(|(k, _)| *k == key) {
                    let first = diag.place(*first);
                    diag.error(
                        stmt.at,
                        format!("virtual_server defined twice (also {first})"),
                    );
                    continue;
                }
                seen.push((key, stmt.at));
                let (service, reals) = vs.finish(diag, &mut checks);
                services.push((service.0, service.1, reals));
            }
        } else if ignored_block(key) {
            if stmt.block.is_none() {
                diag.error(stmt.at, format!("'{key}' needs a {{ }} block"));
            } else {
                let why = if key == "virtual_server_group" {
                    "xvs has no virtual server groups (a virtual_server using it is an error)"
                } else {
                    "VRRP, addresses and routes stay keepalived's job"
                };
                diag.note(stmt.at, format!("{key} block ignored: {why}"));
            }
        } else if PROCESS_KEYS.contains(&key) && stmt.block.is_none() {
            diag.note(
                stmt.at,
                format!("{key} ignored: it sets up keepalived's own process"),
            );
        } else {
            diag.error(stmt.at, format!("unknown keyword '{key}' at the top level"));
        }
    }
    (services, checks)
}

/// Top-level keys that set up keepalived's process, not its services.
const PROCESS_KEYS: &[&str] = &[
    "net_namespace",
    "net_namespace_ipvs",
    "namespace_with_ipsets",
    "instance",
    "use_pid_dir",
    "linkbeat_use_polling",
    "child_wait_time",
];

fn ignored_block(key: &str) -> bool {
    matches!(
        key,
        "global_defs"
            | "static_ipaddress"
            | "static_routes"
            | "static_rules"
            | "linkbeat_interfaces"
            | "bfd_instance"
            | "garp_group"
            | "SSL"
            | "virtual_server_group"
    ) || key.starts_with("vrrp_")
        || key.starts_with("track_")
}

/// Settings each level passes down as the default of the one below
/// (service → real server → checker).
#[derive(Clone, Debug, Default)]
struct Inherited {
    delay_loop: Option<Duration>,
    connect_timeout: Option<Duration>,
    retry: Option<u32>,
    delay_before_retry: Option<Duration>,
    warmup: Option<Duration>,
    alpha: Option<bool>,
    virtualhost: Option<String>,
}

impl Inherited {
    /// Reads `stmt` if it is one of the inherited keys.
    fn read(&mut self, stmt: &Stmt, diag: &mut Diag) -> bool {
        match stmt.key() {
            "delay_loop" => self.delay_loop = timer(stmt, diag).or(self.delay_loop),
            "connect_timeout" => self.connect_timeout = timer(stmt, diag).or(self.connect_timeout),
            "retry" => self.retry = uint(stmt, u32::MAX, diag).or(self.retry),
            "delay_before_retry" => {
                self.delay_before_retry = timer(stmt, diag).or(self.delay_before_retry)
            }
            "warmup" => self.warmup = timer(stmt, diag).or(self.warmup),
            "alpha" => self.alpha = flag(stmt, diag).or(self.alpha),
            "virtualhost" => {
                self.virtualhost = one(stmt, diag)
                    .map(str::to_owned)
                    .or(self.virtualhost.take())
            }
            _ => return false,
        }
        true
    }

    /// `self` where set, else `parent`.
    fn over(&self, parent: &Inherited) -> Inherited {
        Inherited {
            delay_loop: self.delay_loop.or(parent.delay_loop),
            connect_timeout: self.connect_timeout.or(parent.connect_timeout),
            retry: self.retry.or(parent.retry),
            delay_before_retry: self.delay_before_retry.or(parent.delay_before_retry),
            warmup: self.warmup.or(parent.warmup),
            alpha: self.alpha.or(parent.alpha),
            virtualhost: self.virtualhost.clone().or(parent.virtualhost.clone()),
        }
    }
}

struct VirtualServer {
    at: At,
    key: ServiceKey,
    scheduler: Option<SchedulerKind>,
    flags: SchedFlags,
    method: ForwardMethod,
    persistence: Option<u32>,
    granularity: Option<(String, At)>,
    inhibit: Option<bool>,
    quorum: u32,
    hysteresis: u32,
    sorry: Option<(IpAddr, Option<u16>, At)>,
    sorry_method: Option<ForwardMethod>,
    inherited: Inherited,
    reals: Vec<Real>,
}

impl VirtualServer {
    fn read(stmt: &Stmt, diag: &mut Diag) -> Option<VirtualServer> {
        let args = stmt.args();
        let (addr, port) = match args {
            [kind, _] if kind == "fwmark" || kind == "group" => {
                diag.error(
                    stmt.at,
                    format!("virtual_server {kind} is not supported by xvs: give IP PORT"),
                );
                return None;
            }
            [ip] | [ip, _] => {
                let Ok(addr) = ip.parse::<IpAddr>() else {
                    diag.error(
                        stmt.at,
                        format!("virtual_server: '{ip}' is not an IP address"),
                    );
                    return None;
                };
                let port = match args.get(1) {
                    Some(p) => match p.parse::<u16>() {
                        Ok(p) => p,
                        Err(_) => {
                            diag.error(stmt.at, format!("virtual_server: '{p}' is not a port"));
                            return None;
                        }
                    },
                    None => 0,
                };
                (addr, port)
            }
            _ => {
                diag.error(stmt.at, "virtual_server takes IP PORT");
                return None;
            }
        };
        let Some(block) = &stmt.block else {
            diag.error(stmt.at, "virtual_server needs a { } block");
            return None;
        };
        let mut vs = VirtualServer {
            at: stmt.at,
            key: ServiceKey {
                proto: L4Proto::Tcp,
                addr,
                port,
            },
            scheduler: None,
            flags: SchedFlags::default(),
            method: ForwardMethod::Nat,
            persistence: None,
            granularity: None,
            inhibit: None,
            quorum: 1,
            hysteresis: 0,
            sorry: None,
            sorry_method: None,
            inherited: Inherited::default(),
            reals: Vec::new(),
        };
        for s in block {
            vs.key_of(s, diag);
        }
        Some(vs)
    }

    fn key_of(&mut self, s: &Stmt, diag: &mut Diag) {
        let key = s.key();
        if key == "real_server" {
            if let Some(real) = Real::read(s, diag) {
                self.reals.push(real);
            }
            return;
        }
        if s.block.is_some() {
            diag.error(s.at, format!("unknown block '{key}' in virtual_server"));
            return;
        }
        if self.inherited.read(s, diag) {
            return;
        }
        match key {
            "lvs_sched" | "lb_algo" => {
                if let Some(name) = one(s, diag) {
                    match SchedulerKind::from_name(&name.to_ascii_lowercase()) {
                        Some(k) => self.scheduler = Some(k),
                        None => diag.error(s.at, format!("{key}: unknown scheduler '{name}'")),
                    }
                }
            }
            "lvs_method" | "lb_kind" => {
                if let Some(m) = method(s, diag) {
                    self.method = m;
                }
            }
            "protocol" => {
                if let Some(p) = one(s, diag) {
                    match p.to_ascii_uppercase().as_str() {
                        "TCP" => self.key.proto = L4Proto::Tcp,
                        "UDP" => self.key.proto = L4Proto::Udp,
                        _ => diag.error(
                            s.at,
                            format!("protocol {p} is not supported by xvs (TCP and UDP are)"),
                        ),
                    }
                }
            }
            "persistence_timeout" => match s.args() {
                [] => self.persistence = Some(DEFAULT_PERSISTENCE),
                _ => {
                    if let Some(t) = uint(s, u32::MAX, diag) {
                        self.persistence = (t > 0).then_some(t);
                    }
                }
            },
            "persistence_granularity" => {
                if let Some(m) = one(s, diag) {
                    self.granularity = Some((m.to_owned(), s.at));
                }
            }
            "sh-fallback" | "mh-fallback" | "flag-1" => {
                if no_args(s, diag) {
                    self.flags.fallback = true;
                }
            }
            "sh-port" | "mh-port" | "flag-2" => {
                if no_args(s, diag) {
                    self.flags.port = true;
                }
            }
            "flag-3" | "ops" | "persistence_engine" | "ip_family" => {
                let what = match key {
                    "flag-3" => "scheduler flag flag-3",
                    "ops" => "one-packet scheduling (ops)",
                    "persistence_engine" => "persistence engines",
                    _ => "ip_family (for firewall-mark services)",
                };
                diag.error(s.at, format!("{what} is not supported by xvs"));
            }
            "inhibit_on_failure" => self.inhibit = flag(s, diag).or(self.inhibit),
            "quorum" => self.quorum = uint(s, u32::MAX, diag).unwrap_or(self.quorum),
            "hysteresis" => self.hysteresis = uint(s, u32::MAX, diag).unwrap_or(self.hysteresis),
            "sorry_server" => {
                if let Some((addr, port)) = addr_port(s, "sorry_server", diag) {
                    self.sorry = Some((addr, port, s.at));
                }
            }
            "sorry_server_lvs_method" => self.sorry_method = method(s, diag).or(self.sorry_method),
            "sorry_server_inhibit" => diag.note(
                s.at,
                "sorry_server_inhibit: xvs takes the sorry server out of the service \
                 while it is not needed",
            ),
            "quorum_up" | "quorum_down" => diag.note(
                s.at,
                format!("{key} is not run: xvs has no hooks on quorum changes"),
            ),
            "omega" => diag.note(s.at, "omega: xvs runs no notify hooks when it stops"),
            "ha_suspend" => diag.note(
                s.at,
                "ha_suspend: xvs checks whether or not the virtual address is configured",
            ),
            "smtp_alert" => diag.note(s.at, "smtp_alert: xvs sends no mail"),
            "snmp_name" => diag.note(s.at, "snmp_name: xvs has no SNMP"),
            _ => diag.error(s.at, format!("unknown keyword '{key}' in virtual_server")),
        }
    }

    /// The service, its policy and real servers; each real server's check
    /// goes into `checks`.
    fn finish(
        self,
        diag: &mut Diag,
        checks: &mut CheckConfig,
    ) -> ((ServiceSpec, ServicePolicy), Vec<RealSpec>) {
        let vip = self.key.addr;
        let prefix_len = match &self.granularity {
            Some((mask, at)) => {
                if self.persistence.is_none() {
                    diag.note(
                        *at,
                        "persistence_granularity without persistence_timeout has no effect",
                    );
                }
                granularity(mask, vip).unwrap_or_else(|e| {
                    diag.error(*at, e);
                    0
                })
            }
            None if vip.is_ipv4() => 32,
            None => 128,
        };
        if self.key.port == 0 {
            diag.error(
                self.at,
                "virtual_server without a port (all ports) is not supported by xvs",
            );
        }
        let service = ServiceSpec {
            key: self.key,
            scheduler: self.scheduler.unwrap_or(SchedulerKind::Wlc),
            sched_flags: self.flags,
            persistence: self.persistence.map(|timeout_secs| Persistence {
                timeout_secs,
                prefix_len,
            }),
        };
        let sorry = self.sorry.and_then(|(addr, port, at)| {
            let method = self.sorry_method.unwrap_or(self.method);
            same_family(vip, addr, at, "sorry_server", diag).then(|| RealSpec {
                addr,
                port: real_port(method, port, self.key.port),
                method,
                weight: 1,
                upper_threshold: 0,
                lower_threshold: 0,
            })
        });
        let policy = ServicePolicy {
            on_failure: self.on_failure(diag),
            sorry,
            quorum: self.quorum,
            hysteresis: self.hysteresis,
        };
        let mut reals: Vec<RealSpec> = Vec::new();
        let mut at_of: Vec<At> = Vec::new();
        for real in &self.reals {
            let method = real.method.unwrap_or(self.method);
            let spec = RealSpec {
                addr: real.addr,
                port: real_port(method, real.port, self.key.port),
                method,
                weight: real.weight,
                upper_threshold: real.uthreshold,
                lower_threshold: real.lthreshold,
            };
            if !same_family(vip, real.addr, real.at, "real_server", diag) {
                continue;
            }
            if let Some(i) = reals.iter().position(|r| r.endpoint() == spec.endpoint()) {
                let first = diag.place(at_of[i]);
                diag.error(
                    real.at,
                    format!(
                        "real_server {} defined twice (also {first})",
                        spec.endpoint()
                    ),
                );
                continue;
            }
            let inherited = real.inherited.over(&self.inherited);
            match real.checkers.as_slice() {
                [] => {
                    if real.notify != Notify::default() {
                        diag.note(
                            real.at,
                            "notify_up/notify_down of a real_server without a checker never run",
                        );
                    }
                }
                [one] => {
                    let mut check = one.spec(&inherited);
                    // A DR or TUN real server is served on the service's
                    // port; keepalived checks the port the file gives.
                    if check.connect_port.is_none() && !one.is_exec() {
                        if let Some(p) = real.port.filter(|&p| p != spec.port) {
                            check.connect_port = Some(p);
                        }
                    }
                    checks
                        .reals
                        .push((self.key, spec.endpoint(), check, real.notify.clone()));
                }
                [first, second, ..] => {
                    let first = diag.place(first.at);
                    diag.error(
                        second.at,
                        format!(
                            "xvs runs one checker per real server; this real_server has {} \
                             (the first at {first}): keep one",
                            real.checkers.len()
                        ),
                    );
                }
            }
            reals.push(spec);
            at_of.push(real.at);
        }
        ((service, policy), reals)
    }

    /// Quiesce or remove: the service's `inhibit_on_failure`, unless its
    /// real servers say otherwise.
    fn on_failure(&self, diag: &mut Diag) -> OnFailure {
        let service = self.inhibit.unwrap_or(false);
        let inhibit = self
            .reals
            .iter()
            .filter(|r| r.inhibit.unwrap_or(service))
            .count();
        let total = self.reals.len();
        let quiesce = if inhibit == 0 || inhibit == total {
            if total == 0 {
                service
            } else {
                inhibit == total
            }
        } else {
            let quiesce = inhibit * 2 >= total;
            diag.note(
                self.at,
                format!(
                    "{inhibit} of {total} real servers have inhibit_on_failure; xvs has one \
                     policy per service and {} every down real server",
                    if quiesce { "quiesces" } else { "removes" }
                ),
            );
            quiesce
        };
        if quiesce {
            OnFailure::Quiesce
        } else {
            OnFailure::Remove
        }
    }
}

/// The port a real server is reached on: as given for NAT (else the
/// service's), always the service's for DR and TUN (as ipvsadm forces it).
fn real_port(method: ForwardMethod, given: Option<u16>, service: u16) -> u16 {
    match method {
        ForwardMethod::Nat => given.unwrap_or(service),
        ForwardMethod::Dr | ForwardMethod::Tun => service,
    }
}

fn same_family(vip: IpAddr, addr: IpAddr, at: At, what: &str, diag: &mut Diag) -> bool {
    if vip.is_ipv4() == addr.is_ipv4() {
        return true;
    }
    diag.error(
        at,
        format!("{what} {addr}: not of the virtual server's address family (xvs does not cross families)"),
    );
    false
}

/// `persistence_granularity`: a contiguous dotted mask for IPv4, a prefix
/// length for IPv6 (either is accepted for IPv4).
fn granularity(mask: &str, vip: IpAddr) -> Result<u8, String> {
    let max = if vip.is_ipv4() { 32 } else { 128 };
    if let Ok(n) = mask.parse::<u8>() {
        if (1..=max).contains(&n) {
            return Ok(n);
        }
    }
    if vip.is_ipv4() {
        if let Ok(m) = mask.parse::<Ipv4Addr>() {
            let m = u32::from(m);
            if m.leading_ones() + m.trailing_zeros() == 32 && m != 0 {
                return Ok(m.leading_ones() as u8);
            }
            return Err(format!(
                "persistence_granularity {mask}: xvs takes contiguous masks only"
            ));
        }
    }
    Err(format!(
        "persistence_granularity {mask}: not a netmask or a prefix length of 1..={max}"
    ))
}

struct Real {
    at: At,
    addr: IpAddr,
    port: Option<u16>,
    weight: u32,
    method: Option<ForwardMethod>,
    uthreshold: u32,
    lthreshold: u32,
    inhibit: Option<bool>,
    notify: Notify,
    inherited: Inherited,
    checkers: Vec<Checker>,
}

impl Real {
    fn read(stmt: &Stmt, diag: &mut Diag) -> Option<Real> {
        let (addr, port) = addr_port(stmt, "real_server", diag)?;
        let Some(block) = &stmt.block else {
            diag.error(stmt.at, "real_server needs a { } block");
            return None;
        };
        let mut real = Real {
            at: stmt.at,
            addr,
            port,
            weight: 1,
            method: None,
            uthreshold: 0,
            lthreshold: 0,
            inhibit: None,
            notify: Notify::default(),
            inherited: Inherited::default(),
            checkers: Vec::new(),
        };
        for s in block {
            real.key_of(s, diag);
        }
        if real.uthreshold > 0 && real.lthreshold > real.uthreshold {
            diag.error(stmt.at, "lthreshold is above uthreshold");
        }
        Some(real)
    }

    fn key_of(&mut self, s: &Stmt, diag: &mut Diag) {
        let key = s.key();
        if let Some(kind) = CheckerType::from_name(key) {
            if let Some(c) = Checker::read(s, kind, diag) {
                self.checkers.push(c);
            }
            return;
        }
        if matches!(
            key,
            "SMTP_CHECK" | "PING_CHECK" | "BFD_CHECK" | "FILE_CHECK"
        ) {
            diag.error(s.at, format!("{key} is not supported by xvs (TCP_CHECK, HTTP_GET, SSL_GET, DNS_CHECK, MISC_CHECK and UDP_CHECK are)"));
            return;
        }
        if s.block.is_some() {
            diag.error(s.at, format!("unknown block '{key}' in real_server"));
            return;
        }
        if self.inherited.read(s, diag) {
            return;
        }
        match key {
            "weight" => self.weight = uint(s, 65535, diag).unwrap_or(self.weight),
            "lvs_method" | "lb_kind" => self.method = method(s, diag).or(self.method),
            "uthreshold" => self.uthreshold = uint(s, u32::MAX, diag).unwrap_or(0),
            "lthreshold" => self.lthreshold = uint(s, u32::MAX, diag).unwrap_or(0),
            "inhibit_on_failure" => self.inhibit = flag(s, diag).or(self.inhibit),
            "notify_up" | "notify_down" => {
                let Some((script, rest)) = s.args().split_first() else {
                    diag.error(s.at, format!("'{key}' takes a script"));
                    return;
                };
                if !rest.is_empty() {
                    diag.note(
                        s.at,
                        format!("{key}: runs as the director's user, not {}", rest.join(" ")),
                    );
                }
                if key == "notify_up" {
                    self.notify.up = Some(script.clone());
                } else {
                    self.notify.down = Some(script.clone());
                }
            }
            "smtp_alert" => diag.note(s.at, "smtp_alert: xvs sends no mail"),
            "snmp_name" => diag.note(s.at, "snmp_name: xvs has no SNMP"),
            _ => diag.error(s.at, format!("unknown keyword '{key}' in real_server")),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CheckerType {
    Tcp,
    Http,
    Ssl,
    Dns,
    Misc,
    Udp,
}

impl CheckerType {
    fn from_name(name: &str) -> Option<CheckerType> {
        Some(match name {
            "TCP_CHECK" => CheckerType::Tcp,
            "HTTP_GET" => CheckerType::Http,
            "SSL_GET" => CheckerType::Ssl,
            "DNS_CHECK" => CheckerType::Dns,
            "MISC_CHECK" => CheckerType::Misc,
            "UDP_CHECK" => CheckerType::Udp,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            CheckerType::Tcp => "TCP_CHECK",
            CheckerType::Http => "HTTP_GET",
            CheckerType::Ssl => "SSL_GET",
            CheckerType::Dns => "DNS_CHECK",
            CheckerType::Misc => "MISC_CHECK",
            CheckerType::Udp => "UDP_CHECK",
        }
    }
}

/// One checker block as read.
struct Checker {
    at: At,
    ty: CheckerType,
    /// Everything but the timings and where to connect, with keepalived's
    /// defaults filled in at [`Checker::spec`].
    kind: CheckKind,
    inherited: Inherited,
    connect_ip: Option<IpAddr>,
    connect_port: Option<u16>,
    misc_timeout: Option<Duration>,
}

/// An HTTP check's `url` block as read.
#[derive(Default)]
struct Url {
    path: Option<String>,
    digest: Option<String>,
    status: Option<Vec<RangeInclusive<u16>>>,
    virtualhost: Option<String>,
    contains: Option<String>,
}

impl Checker {
    fn read(stmt: &Stmt, ty: CheckerType, diag: &mut Diag) -> Option<Checker> {
        let name = ty.name();
        if !stmt.args().is_empty() {
            diag.error(stmt.at, format!("{name} takes no arguments"));
        }
        let Some(block) = &stmt.block else {
            diag.error(stmt.at, format!("{name} needs a {{ }} block"));
            return None;
        };
        let mut c = Checker {
            at: stmt.at,
            ty,
            kind: CheckKind::Tcp,
            inherited: Inherited::default(),
            connect_ip: None,
            connect_port: None,
            misc_timeout: None,
        };
        let mut urls: Vec<(Url, At)> = Vec::new();
        let mut dns_type: u16 = 6;
        let mut dns_name = ".".to_owned();
        let mut misc_path: Option<String> = None;
        let mut misc_dynamic = false;
        let mut payload: Vec<u8> = Vec::new();
        let mut payload_given = false;
        let mut reply: Option<Option<Vec<u8>>> = None;
        for s in block {
            let key = s.key();
            if key == "url" && matches!(ty, CheckerType::Http | CheckerType::Ssl) {
                if let Some(u) = read_url(s, diag) {
                    urls.push((u, s.at));
                }
                continue;
            }
            if s.block.is_some() {
                diag.error(s.at, format!("unknown block '{key}' in {name}"));
                continue;
            }
            // MISC_CHECK has the common keys from alpha on only.
            let connects = ty != CheckerType::Misc;
            if key == "virtualhost" && !matches!(ty, CheckerType::Http | CheckerType::Ssl) {
                diag.error(s.at, format!("unknown keyword 'virtualhost' in {name}"));
                continue;
            }
            if c.inherited.read(s, diag) {
                continue;
            }
            match (key, ty) {
                ("nb_get_retry", _) if connects => {
                    c.inherited.retry = uint(s, u32::MAX, diag).or(c.inherited.retry)
                }
                ("connect_ip", _) if connects => {
                    if let Some(v) = one(s, diag) {
                        match v.parse() {
                            Ok(ip) => c.connect_ip = Some(ip),
                            Err(_) => {
                                diag.error(s.at, format!("connect_ip: '{v}' is not an IP address"))
                            }
                        }
                    }
                }
                ("connect_port", _) if connects => {
                    c.connect_port = uint(s, 65535, diag).map(|p| p as u16).or(c.connect_port)
                }
                ("bindto" | "bind_if" | "bind_port" | "fwmark", _) if connects => diag.note(
                    s.at,
                    format!("{key} ignored: checks leave from the director's own address"),
                ),
                ("log_all_failures", _) => diag.note(
                    s.at,
                    "log_all_failures: xvs logs every transition and its reason",
                ),
                ("http_protocol" | "fast_recovery", CheckerType::Http | CheckerType::Ssl) => diag
                    .note(
                        s.at,
                        format!("{key} ignored: xvs speaks HTTP/1.1 with Connection: close"),
                    ),
                ("enable_sni", CheckerType::Ssl) => {
                    no_args(s, diag);
                }
                ("type", CheckerType::Dns) => {
                    if let Some(t) = one(s, diag) {
                        match dns_qtype(t) {
                            Some(q) => dns_type = q,
                            None => diag.error(
                                s.at,
                                format!("DNS_CHECK type '{t}': A, NS, CNAME, SOA, MX, TXT or AAAA"),
                            ),
                        }
                    }
                }
                ("name", CheckerType::Dns) => {
                    if let Some(n) = one(s, diag) {
                        dns_name = n.to_owned();
                    }
                }
                ("misc_path", CheckerType::Misc) => misc_path = one(s, diag).map(str::to_owned),
                ("misc_timeout", CheckerType::Misc) => {
                    c.misc_timeout = uint(s, u32::MAX, diag).map(|t| Duration::from_secs(t.into()))
                }
                ("misc_dynamic", CheckerType::Misc) => misc_dynamic = no_args(s, diag),
                ("user", CheckerType::Misc) => {
                    diag.note(s.at, "user: the script runs as the director's user")
                }
                ("payload", CheckerType::Udp) => {
                    payload_given = true;
                    match hex_bytes(s.args()) {
                        Ok(b) => payload = b,
                        Err(e) => diag.error(s.at, format!("payload: {e}")),
                    }
                }
                ("require_reply", CheckerType::Udp) => {
                    if s.args().is_empty() {
                        reply = Some(None);
                    } else {
                        match hex_bytes(s.args()) {
                            Ok(b) => reply = Some(Some(b)),
                            Err(e) => diag.error(s.at, format!("require_reply: {e}")),
                        }
                    }
                }
                ("min_reply_length" | "max_reply_length", CheckerType::Udp) => {
                    diag.error(s.at, format!("{key} is not supported by xvs"))
                }
                _ => diag.error(s.at, format!("unknown keyword '{key}' in {name}")),
            }
        }
        c.kind = match ty {
            CheckerType::Tcp => CheckKind::Tcp,
            CheckerType::Http | CheckerType::Ssl => {
                let url = match urls.len() {
                    0 => {
                        diag.error(stmt.at, format!("{name} needs a url {{ path ... }} block"));
                        return None;
                    }
                    1 => urls.pop().map(|(u, _)| u).unwrap_or_default(),
                    _ => {
                        let second = diag.place(urls[1].1);
                        diag.error(
                            stmt.at,
                            format!("xvs checks one url per {name}; this one has {} (the second at {second}): keep one", urls.len()),
                        );
                        return None;
                    }
                };
                if ty == CheckerType::Ssl && !block.iter().any(|s| s.key() == "enable_sni") {
                    diag.note(
                        stmt.at,
                        "SSL_GET without enable_sni: xvs sends the virtualhost, if any, as SNI",
                    );
                }
                let mut http = HttpSpec::new(url.path.unwrap_or_else(|| "/".to_owned()));
                http.host = url.virtualhost;
                if let Some(status) = url.status {
                    http.status = status;
                }
                http.digest = url.digest;
                http.body_contains = url.contains;
                if ty == CheckerType::Http {
                    CheckKind::Http(http)
                } else {
                    CheckKind::Https(http)
                }
            }
            CheckerType::Dns => CheckKind::Dns {
                name: dns_name,
                qtype: dns_type,
                rcodes: vec![0],
            },
            CheckerType::Misc => {
                let Some(command) = misc_path else {
                    diag.error(stmt.at, "MISC_CHECK needs misc_path");
                    return None;
                };
                CheckKind::Exec {
                    command,
                    dynamic: misc_dynamic,
                }
            }
            CheckerType::Udp => {
                if !payload_given {
                    diag.note(
                        stmt.at,
                        "UDP_CHECK without payload: xvs sends an empty datagram",
                    );
                }
                let expect = match reply {
                    Some(e) => e,
                    None => {
                        diag.note(
                            stmt.at,
                            "UDP_CHECK without require_reply: xvs still needs an answer for up",
                        );
                        None
                    }
                };
                CheckKind::Udp { payload, expect }
            }
        };
        Some(c)
    }

    fn is_exec(&self) -> bool {
        self.ty == CheckerType::Misc
    }

    /// The check with this checker's settings over `parent`'s (its real
    /// server's over its service's) and keepalived's defaults under both.
    fn spec(&self, parent: &Inherited) -> CheckSpec {
        let t = self.inherited.over(parent);
        let interval = t.delay_loop.unwrap_or(DEFAULT_DELAY_LOOP);
        let (retry, before_retry) = match self.ty {
            CheckerType::Dns => (3, interval),
            CheckerType::Misc => (0, Duration::from_secs(1)),
            CheckerType::Http | CheckerType::Ssl => (1, Duration::from_secs(3)),
            CheckerType::Tcp | CheckerType::Udp => (1, Duration::from_secs(1)),
        };
        let mut kind = self.kind.clone();
        if let CheckKind::Http(h) | CheckKind::Https(h) = &mut kind {
            if h.host.is_none() {
                h.host = t.virtualhost.clone();
            }
        }
        let mut spec = CheckSpec::new(kind);
        spec.interval = interval;
        spec.timeout = match self.ty {
            CheckerType::Misc => self.misc_timeout.unwrap_or(interval),
            _ => t.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        };
        spec.fall = t.retry.unwrap_or(retry).saturating_add(1);
        spec.rise = 1;
        spec.delay_before_retry = t.delay_before_retry.unwrap_or(before_retry);
        spec.warmup = t.warmup.unwrap_or(interval);
        spec.start_down = t.alpha.unwrap_or(false);
        spec.connect_ip = self.connect_ip;
        spec.connect_port = self.connect_port;
        spec
    }
}

fn read_url(stmt: &Stmt, diag: &mut Diag) -> Option<Url> {
    let Some(block) = &stmt.block else {
        diag.error(stmt.at, "url needs a { } block");
        return None;
    };
    let mut url = Url::default();
    for s in block {
        let key = s.key();
        if s.block.is_some() {
            diag.error(s.at, format!("unknown block '{key}' in url"));
            continue;
        }
        match key {
            "path" => url.path = one(s, diag).map(str::to_owned),
            "digest" => {
                if let Some(d) = one(s, diag) {
                    if d.len() == 32 && d.bytes().all(|b| b.is_ascii_hexdigit()) {
                        url.digest = Some(d.to_ascii_lowercase());
                    } else {
                        diag.error(s.at, format!("digest '{d}': an MD5 is 32 hex digits"));
                    }
                }
            }
            "status_code" => match status_codes(s.args()) {
                Ok(v) => url.status = Some(v),
                Err(e) => diag.error(s.at, format!("status_code: {e}")),
            },
            "virtualhost" => url.virtualhost = one(s, diag).map(str::to_owned),
            "regex" => {
                if let Some(r) = one(s, diag) {
                    if r.chars().any(|c| "\\^$.|?*+()[]{}".contains(c)) {
                        diag.error(
                            s.at,
                            format!(
                                "regex '{r}': xvs matches plain text only (no pattern characters)"
                            ),
                        );
                    } else {
                        url.contains = Some(r.to_owned());
                    }
                }
            }
            "regex_no_match" | "regex_options" | "regex_stack" | "regex_min_offset"
            | "regex_max_offset" => diag.error(s.at, format!("{key} is not supported by xvs")),
            _ => diag.error(s.at, format!("unknown keyword '{key}' in url")),
        }
    }
    Some(url)
}

fn dns_qtype(name: &str) -> Option<u16> {
    Some(match name.to_ascii_uppercase().as_str() {
        "A" => 1,
        "NS" => 2,
        "CNAME" => 5,
        "SOA" => 6,
        "MX" => 15,
        "TXT" => 16,
        "AAAA" => 28,
        _ => return None,
    })
}

/// `status_code 200 300-399 ...`.
fn status_codes(args: &[String]) -> Result<Vec<RangeInclusive<u16>>, String> {
    if args.is_empty() {
        return Err("give codes or ranges (200 300-399)".to_owned());
    }
    args.iter()
        .map(|a| {
            let code = |s: &str| {
                s.parse::<u16>()
                    .ok()
                    .filter(|c| (100..=999).contains(c))
                    .ok_or_else(|| format!("'{a}' is not a status code or range"))
            };
            match a.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (code(lo)?, code(hi)?);
                    if lo > hi {
                        return Err(format!("'{a}': the range is empty"));
                    }
                    Ok(lo..=hi)
                }
                None => code(a).map(|c| c..=c),
            }
        })
        .collect()
}

/// keepalived's free-form hex: in each word, pairs of digits from the left,
/// a last single digit is one byte of its own ("Ab12f 3" → AB 12 0F 03).
fn hex_bytes(args: &[String]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for word in args {
        if word.contains(['x', 'X']) {
            return Err(format!("'{word}': xvs matches no wildcard digits (X)"));
        }
        let digits: Vec<u8> = word
            .chars()
            .map(|c| c.to_digit(16).map(|d| d as u8))
            .collect::<Option<_>>()
            .ok_or_else(|| format!("'{word}' is not hex"))?;
        for pair in digits.chunks(2) {
            out.push(match pair {
                [h, l] => h << 4 | l,
                [l] => *l,
                _ => unreachable!("chunks(2) gives one or two"),
            });
        }
    }
    Ok(out)
}

fn method(s: &Stmt, diag: &mut Diag) -> Option<ForwardMethod> {
    let args = s.args();
    let Some(first) = args.first() else {
        diag.error(s.at, format!("'{}' takes NAT, DR or TUN", s.key()));
        return None;
    };
    let m = match first.to_ascii_uppercase().as_str() {
        "NAT" => ForwardMethod::Nat,
        "DR" => ForwardMethod::Dr,
        "TUN" => ForwardMethod::Tun,
        _ => {
            diag.error(
                s.at,
                format!("'{}': unknown forwarding method '{first}'", s.key()),
            );
            return None;
        }
    };
    let rest = &args[1..];
    let ok = match (m, rest) {
        (_, []) => true,
        (ForwardMethod::Tun, [t, kind]) if t == "type" && kind == "ipip" => true,
        (ForwardMethod::Tun, [t, ..]) if t == "type" => {
            diag.error(
                s.at,
                "only ipip tunnels are supported by xvs (not GUE or GRE)",
            );
            return None;
        }
        _ => false,
    };
    if !ok {
        diag.error(
            s.at,
            format!("'{}': unexpected '{}'", s.key(), rest.join(" ")),
        );
        return None;
    }
    Some(m)
}

/// `real_server IP [PORT]`, `sorry_server IP [PORT]`.
fn addr_port(s: &Stmt, what: &str, diag: &mut Diag) -> Option<(IpAddr, Option<u16>)> {
    let args = s.args();
    if args.is_empty() || args.len() > 2 {
        diag.error(s.at, format!("{what} takes IP [PORT]"));
        return None;
    }
    let Ok(addr) = args[0].parse::<IpAddr>() else {
        diag.error(s.at, format!("{what}: '{}' is not an IP address", args[0]));
        return None;
    };
    let port = match args.get(1) {
        Some(p) => match p.parse::<u16>() {
            Ok(p) => Some(p),
            Err(_) => {
                diag.error(s.at, format!("{what}: '{p}' is not a port"));
                return None;
            }
        },
        None => None,
    };
    Some((addr, port))
}

/// The one argument of `s`.
fn one<'s>(s: &'s Stmt, diag: &mut Diag) -> Option<&'s str> {
    match s.args() {
        [v] => Some(v),
        _ => {
            diag.error(s.at, format!("'{}' takes one value", s.key()));
            None
        }
    }
}

/// A flag that takes no value; false (and an error) if one is given.
fn no_args(s: &Stmt, diag: &mut Diag) -> bool {
    if s.args().is_empty() {
        return true;
    }
    diag.error(s.at, format!("'{}' takes no value", s.key()));
    false
}

/// A flag with an optional `<BOOL>`: bare means on.
fn flag(s: &Stmt, diag: &mut Diag) -> Option<bool> {
    match s.args() {
        [] => Some(true),
        [v] => match v.to_ascii_lowercase().as_str() {
            "on" | "true" | "yes" => Some(true),
            "off" | "false" | "no" => Some(false),
            _ => {
                diag.error(
                    s.at,
                    format!("'{}': '{v}' is not on|off|true|false|yes|no", s.key()),
                );
                None
            }
        },
        _ => {
            diag.error(s.at, format!("'{}' takes at most one value", s.key()));
            None
        }
    }
}

fn uint(s: &Stmt, max: u32, diag: &mut Diag) -> Option<u32> {
    let v = one(s, diag)?;
    match v.parse::<u32>() {
        Ok(n) if n <= max => Some(n),
        _ => {
            diag.error(
                s.at,
                format!("'{}': '{v}' is not a whole number up to {max}", s.key()),
            );
            None
        }
    }
}

/// A `<TIMER>`: seconds, fractions allowed.
fn timer(s: &Stmt, diag: &mut Diag) -> Option<Duration> {
    let v = one(s, diag)?;
    match v.parse::<f64>() {
        Ok(t) if t.is_finite() && (0.0..=1e9).contains(&t) => Some(Duration::from_secs_f64(t)),
        _ => {
            diag.error(
                s.at,
                format!("'{}': '{v}' is not a time in seconds", s.key()),
            );
            None
        }
    }
}
