//! The builder: the options' values gathered as they come ([`State`], in
//! ipvsadm's order of checks), then put together into a [`Command`] by the
//! command's rules, with the value parsers they share (addresses, ports,
//! numbers, timeouts, scheduler flags).

use std::net::{IpAddr, Ipv4Addr};

use super::super::names::Services;
use super::super::{
    Command, ListOptions, ListWhat, UsageError, DEFAULT_PERSISTENT_TIMEOUT, MAX_TIMEOUT,
};
use super::options::Opt;
use super::table::{Cmd, Col};
use super::try_help;
use crate::packet::L4Proto;
use crate::service::{
    Edit, ForwardMethod, Persistence, RealSpec, SchedFlags, SchedulerKind, ServiceKey, ServiceSpec,
};

/// Everything the options said, before the command puts it together.
pub(super) struct State {
    pub(super) options: u32,
    /// `-t`/`-u`: protocol, address, port (0 when not given).
    service: Option<(L4Proto, IpAddr, u16)>,
    pub(super) scheduler: Option<String>,
    persistent: Option<u32>,
    netmask: Option<String>,
    /// `-r`: address and the port as written, resolved once the service's
    /// protocol is known.
    real: Option<(IpAddr, Option<String>)>,
    method: ForwardMethod,
    weight: u32,
    upper: u32,
    lower: u32,
    pub(super) sched_flags: Option<String>,
    list: ListOptions,
}

impl Default for State {
    fn default() -> State {
        State {
            options: 0,
            service: None,
            scheduler: None,
            persistent: None,
            netmask: None,
            real: None,
            // ipvsadm's defaults: direct routing, weight 1.
            method: ForwardMethod::Dr,
            weight: 1,
            upper: 0,
            lower: 0,
            sched_flags: None,
            list: ListOptions::all(),
        }
    }
}

impl State {
    /// ipvsadm's `set_option`: each option once.
    fn set(&mut self, col: Col) -> Result<(), UsageError> {
        if self.options & col.bit() != 0 {
            return Err(UsageError::usage(format!(
                "multiple '{}' options specified",
                col.name()
            )));
        }
        self.options |= col.bit();
        Ok(())
    }

    /// One option after the command, in the order given.
    pub(super) fn option(
        &mut self,
        opt: Opt,
        value: Option<String>,
        word: &str,
        names: &Services,
    ) -> Result<(), UsageError> {
        let v = value.unwrap_or_default();
        match opt {
            Opt::Tcp | Opt::Udp => {
                self.set(Col::Service)?;
                let proto = if opt == Opt::Tcp {
                    L4Proto::Tcp
                } else {
                    L4Proto::Udp
                };
                let bad = || UsageError::usage("illegal virtual server address[:port] specified");
                let (addr, port) = endpoint(&v).ok_or_else(bad)?;
                let port = match port {
                    Some(p) => port_number(p, proto, names).ok_or_else(bad)?,
                    None => 0,
                };
                self.service = Some((proto, addr, port));
            }
            Opt::Scheduler => {
                self.set(Col::Scheduler)?;
                self.scheduler = Some(v);
            }
            Opt::Persistent => {
                self.set(Col::Persistent)?;
                self.persistent = Some(if v.is_empty() {
                    DEFAULT_PERSISTENT_TIMEOUT
                } else {
                    timeout(&v, 1)?
                });
            }
            Opt::Netmask => {
                self.set(Col::Netmask)?;
                self.netmask = Some(v);
            }
            Opt::RealServer => {
                self.set(Col::Server)?;
                let (addr, port) = endpoint(&v).ok_or_else(|| {
                    UsageError::usage("illegal real server address[:port] specified")
                })?;
                self.real = Some((addr, port.map(str::to_string)));
            }
            Opt::Gatewaying | Opt::Ipip | Opt::Masq => {
                self.set(Col::Forward)?;
                self.method = match opt {
                    Opt::Gatewaying => ForwardMethod::Dr,
                    Opt::Ipip => ForwardMethod::Tun,
                    _ => ForwardMethod::Nat,
                };
            }
            Opt::Weight => {
                self.set(Col::Weight)?;
                self.weight = number(&v, 0, 65535)
                    .ok_or_else(|| UsageError::usage("illegal weight specified"))?;
            }
            Opt::UThreshold => {
                self.set(Col::UThreshold)?;
                self.upper = number(&v, 0, i32::MAX as u32)
                    .ok_or_else(|| UsageError::usage("illegal u_threshold specified"))?;
            }
            Opt::LThreshold => {
                self.set(Col::LThreshold)?;
                self.lower = number(&v, 0, i32::MAX as u32)
                    .ok_or_else(|| UsageError::usage("illegal l_threshold specified"))?;
            }
            Opt::Connection => self.set(Col::Connection)?,
            Opt::Numeric => {
                self.set(Col::Numeric)?;
                self.list.numeric = true;
            }
            Opt::Timeout => self.set(Col::Timeout)?,
            Opt::Daemon => self.set(Col::Daemon)?,
            Opt::Stats => {
                self.set(Col::Stats)?;
                self.list.stats = true;
            }
            Opt::Rate => {
                self.set(Col::Rate)?;
                self.list.rate = true;
            }
            Opt::Thresholds => {
                self.set(Col::Thresholds)?;
                self.list.thresholds = true;
            }
            Opt::PersistentConn => {
                self.set(Col::PersistentConn)?;
                self.list.persistent_conn = true;
            }
            Opt::NoSort => {
                self.set(Col::NoSort)?;
                self.list.nosort = true;
            }
            // Sorting is the default; ipvsadm keeps --sort as a no-op.
            Opt::Sort => {}
            Opt::Exact => {
                self.set(Col::Exact)?;
                self.list.exact = true;
            }
            Opt::SchedFlags => {
                self.set(Col::SchedFlags)?;
                self.sched_flags = Some(v);
            }
            Opt::TunInfo => {
                self.set(Col::TunInfo)?;
                self.list.tun_info = true;
            }
            Opt::TunType => {
                self.set(Col::TunType)?;
                match v.as_str() {
                    "ipip" => {}
                    "gue" | "gre" => {
                        return Err(UsageError::unsupported(&format!("tunnel type {v}")))
                    }
                    _ => return Err(UsageError::usage("illegal tunnel type specified")),
                }
            }
            Opt::TunPort | Opt::TunNocsum | Opt::TunCsum | Opt::TunRemcsum => {
                return Err(UsageError::unsupported(&format!(
                    "{word} (GUE/GRE tunnel options)"
                )))
            }
            Opt::Sctp => return Err(UsageError::unsupported("SCTP (--sctp-service)")),
            Opt::Fwmark => return Err(UsageError::unsupported("a firewall-mark service (-f)")),
            Opt::Ipv6 => return Err(UsageError::usage("-6 used before -f")),
            Opt::Ops => return Err(UsageError::unsupported("one-packet scheduling (-o)")),
            Opt::Pe => return Err(UsageError::unsupported("a persistence engine (--pe)")),
            Opt::McastInterface
            | Opt::SyncId
            | Opt::McastGroup
            | Opt::McastPort
            | Opt::McastTtl
            | Opt::SyncMaxlen => {
                return Err(UsageError::usage(format!(
                    "{word} goes with --start-daemon"
                )))
            }
            // A second command, or -h/-v after one.
            Opt::AddService
            | Opt::EditService
            | Opt::DeleteService
            | Opt::Clear
            | Opt::List
            | Opt::Zero
            | Opt::AddServer
            | Opt::EditServer
            | Opt::DeleteServer
            | Opt::Set
            | Opt::Help
            | Opt::Version
            | Opt::Restore
            | Opt::Save
            | Opt::StartDaemon
            | Opt::StopDaemon => return Err(UsageError::usage(format!("invalid option `{word}'"))),
        }
        Ok(())
    }

    /// The command, from the options it was given.
    pub(super) fn build(
        mut self,
        cmd: Cmd,
        timeouts: Option<[u32; 3]>,
        sched_name: &str,
        sched_flags: SchedFlags,
        names: &Services,
    ) -> Result<Command, UsageError> {
        let key = self
            .service
            .map(|(proto, addr, port)| ServiceKey { proto, addr, port });
        // The option table guarantees a service where the command needs one.
        let need_key = || key.ok_or_else(try_help);
        Ok(match cmd {
            Cmd::Add | Cmd::Edit => {
                let key = need_key()?;
                if key.port == 0 && self.persistent.is_none() {
                    return Err(UsageError::usage(
                        "Zero port specified for non-persistent service",
                    ));
                }
                let prefix_len = self.prefix_len(key.addr)?;
                if key.port == 0 {
                    return Err(UsageError::unsupported("a port-0 (all ports) service"));
                }
                let scheduler = SchedulerKind::from_name(sched_name).ok_or_else(|| {
                    UsageError::failed("Scheduler or persistence engine not found")
                })?;
                let spec = ServiceSpec {
                    key,
                    scheduler,
                    sched_flags,
                    persistence: self.persistent.map(|timeout_secs| Persistence {
                        timeout_secs,
                        prefix_len,
                    }),
                };
                Command::Edit(if cmd == Cmd::Add {
                    Edit::AddService(spec)
                } else {
                    Edit::EditService(spec)
                })
            }
            Cmd::Del => Command::Edit(Edit::DeleteService(need_key()?)),
            Cmd::Flush => Command::Edit(Edit::Clear),
            Cmd::AddReal | Cmd::EditReal | Cmd::DelReal => {
                let key = need_key()?;
                let (addr, port) = self.real.take().ok_or_else(try_help)?;
                let bad = || UsageError::usage("illegal real server address[:port] specified");
                let mut port = match port {
                    Some(p) => port_number(&p, key.proto, names).ok_or_else(bad)?,
                    None => key.port,
                };
                if cmd == Cmd::DelReal {
                    return Ok(Command::Edit(Edit::DeleteReal(
                        key,
                        std::net::SocketAddr::new(addr, port),
                    )));
                }
                // DR and TUN keep the destination port: the real server
                // must listen on the service's.
                if matches!(self.method, ForwardMethod::Dr | ForwardMethod::Tun) {
                    port = key.port;
                }
                if addr.is_ipv4() != key.addr.is_ipv4() && self.method != ForwardMethod::Tun {
                    return Err(UsageError::usage(
                        "Different address family is allowed only for tunneling servers",
                    ));
                }
                if self.options & Col::TunType.bit() != 0 && self.method != ForwardMethod::Tun {
                    return Err(UsageError::usage(
                        "Tunnel options conflict with forward method",
                    ));
                }
                let spec = RealSpec {
                    addr,
                    port,
                    method: self.method,
                    weight: self.weight,
                    upper_threshold: self.upper,
                    lower_threshold: self.lower,
                };
                Command::Edit(if cmd == Cmd::AddReal {
                    Edit::AddReal(key, spec)
                } else {
                    Edit::EditReal(key, spec)
                })
            }
            Cmd::List => {
                let o = self.options;
                let has = |c: Col| o & c.bit() != 0;
                if ((has(Col::Connection) || has(Col::Timeout) || has(Col::Daemon))
                    && (has(Col::Stats) || has(Col::Rate) || has(Col::Thresholds)))
                    || ((has(Col::Timeout) || has(Col::Daemon)) && has(Col::PersistentConn))
                {
                    return Err(UsageError::usage("options conflicts in the list command"));
                }
                self.list.what = if has(Col::Connection) {
                    ListWhat::Connections
                } else if let Some(key) = key {
                    ListWhat::Service(key)
                } else if has(Col::Timeout) {
                    ListWhat::Timeout
                } else if has(Col::Daemon) {
                    ListWhat::Daemon
                } else {
                    ListWhat::All
                };
                Command::List(self.list)
            }
            Cmd::Timeout => {
                let [tcp, tcpfin, udp] = timeouts.unwrap_or_default();
                Command::SetTimeouts { tcp, tcpfin, udp }
            }
            Cmd::Restore => Command::Restore,
            Cmd::Save => Command::Save {
                numeric: self.list.numeric,
            },
            Cmd::Zero => Command::Zero(key),
        })
    }

    /// `-M`: a dotted mask for IPv4 (contiguous, for xvs), a prefix length
    /// for IPv6. Checked even when `-p` is absent, as ipvsadm does.
    fn prefix_len(&self, vip: IpAddr) -> Result<u8, UsageError> {
        let Some(mask) = &self.netmask else {
            return Ok(if vip.is_ipv4() { 32 } else { 128 });
        };
        if vip.is_ipv6() {
            return number(mask, 1, 128)
                .map(|n| n as u8)
                .ok_or_else(|| UsageError::usage("illegal ipv6 netmask specified"));
        }
        let m: Ipv4Addr = mask
            .parse()
            .map_err(|_| UsageError::usage("illegal virtual server persistent mask specified"))?;
        let m = u32::from(m);
        if m.leading_ones() + m.trailing_zeros() != 32 {
            return Err(UsageError::unsupported(&format!(
                "a non-contiguous persistence mask ({mask})"
            )));
        }
        Ok(m.leading_ones() as u8)
    }
}

/// `-b`: comma-separated scheduler flags; `sh-*` only with `sh`, `mh-*` only
/// with `mh`, `flag-N` with any scheduler.
pub(super) fn sched_flags(sched: &str, arg: &str) -> Result<SchedFlags, UsageError> {
    let mut flags = SchedFlags::default();
    for flag in arg.split(',').filter(|f| !f.is_empty()) {
        let (bit_fallback, needs) = match flag {
            "flag-1" => (true, None),
            "flag-2" => (false, None),
            "flag-3" => return Err(UsageError::unsupported("scheduler flag `flag-3'")),
            "sh-fallback" => (true, Some("sh")),
            "sh-port" => (false, Some("sh")),
            "mh-fallback" => (true, Some("mh")),
            "mh-port" => (false, Some("mh")),
            _ => {
                return Err(UsageError::usage(format!(
                    "invalid scheduler flag `{flag}'"
                )))
            }
        };
        if needs.is_some_and(|s| s != sched) {
            return Err(UsageError::usage(format!(
                "incompatible scheduler flag `{flag}'"
            )));
        }
        if bit_fallback {
            flags.fallback = true;
        } else {
            flags.port = true;
        }
    }
    Ok(flags)
}

/// `host[:port]`, `[v6]:port` or a bare IPv6 address: the address and the
/// port as written. Host names are not looked up.
fn endpoint(s: &str) -> Option<(IpAddr, Option<&str>)> {
    if s.is_empty() || s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (addr, port) = rest.split_once(']')?;
        let port = port.strip_prefix(':')?;
        return Some((addr.parse().ok()?, Some(port)));
    }
    if let Ok(v6) = s.parse::<std::net::Ipv6Addr>() {
        return Some((IpAddr::V6(v6), None));
    }
    match s.rsplit_once(':') {
        Some((addr, port)) => Some((IpAddr::V4(addr.parse().ok()?), Some(port))),
        None => Some((IpAddr::V4(s.parse().ok()?), None)),
    }
}

/// A port number, or a name for `proto`.
fn port_number(s: &str, proto: L4Proto, names: &Services) -> Option<u16> {
    match number(s, 0, 65535) {
        Some(n) => Some(n as u16),
        None => names.port(s, proto),
    }
}

/// ipvsadm's `string_to_number`: a whole decimal number within bounds.
fn number(s: &str, min: u32, max: u32) -> Option<u32> {
    s.parse::<i64>()
        .ok()
        .filter(|n| (min as i64..=max as i64).contains(n))
        .map(|n| n as u32)
}

/// A timeout in seconds, `min` to 31 days.
pub(super) fn timeout(s: &str, min: u32) -> Result<u32, UsageError> {
    number(s, min, MAX_TIMEOUT)
        .ok_or_else(|| UsageError::usage(format!("invalid timeout value `{s}' specified")))
}
