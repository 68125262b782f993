//! ipvsadm's command line, read as ipvsadm 1.31 reads it with popt.
//!
//! The order of checks is ipvsadm's, so the same bad command line gets the
//! same first complaint: option values as they come, then `--set`'s values
//! and stray arguments, scheduler flags, which options the command allows,
//! then the per-command rules.

use std::net::{IpAddr, Ipv4Addr};

use super::names::Services;
use super::{Command, ListOptions, ListWhat, UsageError, DEFAULT_PERSISTENT_TIMEOUT, MAX_TIMEOUT};
use crate::packet::L4Proto;
use crate::service::{
    Edit, ForwardMethod, Persistence, RealSpec, SchedFlags, SchedulerKind, ServiceKey, ServiceSpec,
};

/// Parses ipvsadm's arguments (without the program name), naming ports from
/// this host's `/etc/services`.
pub fn parse(args: &[String]) -> Result<Command, UsageError> {
    parse_with(args, Services::system())
}

/// [`parse_with`] the built-in port names, for a command line written as one
/// string: how the tests write commands.
#[cfg(test)]
pub(super) fn parse_line(line: &str) -> Result<Command, UsageError> {
    let args: Vec<String> = line.split_whitespace().map(str::to_string).collect();
    parse_with(&args, &Services::builtin())
}

/// [`parse`] with a given port-name table.
pub fn parse_with(args: &[String], names: &Services) -> Result<Command, UsageError> {
    if args.is_empty() {
        return Ok(Command::List(ListOptions::all()));
    }
    let mut lexer = Lexer {
        args,
        next: 0,
        cluster: None,
        only_args: false,
    };
    let mut positional = Vec::new();
    // popt hands back options in order and queues arguments; the first
    // option must be the command.
    let first = loop {
        match lexer.next() {
            Some(Ok(Token::Arg(a))) => positional.push(a),
            Some(Ok(Token::Opt { opt, .. })) => break opt,
            None | Some(Err(_)) => return Err(try_help()),
        }
    };
    let cmd = match first {
        Opt::AddService => Cmd::Add,
        Opt::EditService => Cmd::Edit,
        Opt::DeleteService => Cmd::Del,
        Opt::Clear => Cmd::Flush,
        Opt::List => Cmd::List,
        Opt::Zero => Cmd::Zero,
        Opt::AddServer => Cmd::AddReal,
        Opt::EditServer => Cmd::EditReal,
        Opt::DeleteServer => Cmd::DelReal,
        Opt::Set => Cmd::Timeout,
        Opt::Restore => Cmd::Restore,
        Opt::Save => Cmd::Save,
        Opt::Help => return Ok(Command::Help),
        Opt::Version => return Ok(Command::Version),
        Opt::StartDaemon | Opt::StopDaemon => {
            return Err(UsageError::unsupported(
                "the IPVS connection sync daemon (--start-daemon, --stop-daemon)",
            ))
        }
        _ => return Err(try_help()),
    };

    let mut st = State::default();
    while let Some(token) = lexer.next() {
        let (opt, value, word) = match token {
            Ok(Token::Arg(a)) => {
                positional.push(a);
                continue;
            }
            Ok(Token::Opt { opt, value, word }) => (opt, value, word),
            Err(e) => return Err(e.into_usage()),
        };
        st.option(opt, value, &word, names)?;
    }

    let timeouts = if cmd == Cmd::Timeout {
        if positional.len() < 3 {
            return Err(UsageError::usage("--set option requires 3 timeout values"));
        }
        let mut t = [0u32; 3];
        for (slot, s) in t.iter_mut().zip(positional.drain(..3)) {
            *slot = timeout(&s, 0)?;
        }
        Some(t)
    } else {
        None
    };
    if let Some(a) = positional.first() {
        return Err(UsageError::usage(format!("unexpected argument {a}")));
    }
    let sched_name = st.scheduler.clone().unwrap_or_else(|| "wlc".to_string());
    let sched_flags = match &st.sched_flags {
        Some(arg) => sched_flags(&sched_name, arg)?,
        None => SchedFlags::default(),
    };
    check_options(cmd, st.options)?;
    st.build(cmd, timeouts, &sched_name, sched_flags, names)
}

/// popt's complaint when the first thing is not a command.
fn try_help() -> UsageError {
    UsageError::failed("Try `ipvsadm -h' or 'ipvsadm --help' for more information.")
}

/// ipvsadm's commands, named as its messages name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmd {
    Add,
    Edit,
    Del,
    Flush,
    List,
    AddReal,
    DelReal,
    EditReal,
    Timeout,
    Restore,
    Save,
    Zero,
}

impl Cmd {
    fn name(self) -> &'static str {
        match self {
            Cmd::Add => "add-service",
            Cmd::Edit => "edit-service",
            Cmd::Del => "delete-service",
            Cmd::Flush => "flush",
            Cmd::List => "list",
            Cmd::AddReal => "add-server",
            Cmd::DelReal => "delete-server",
            Cmd::EditReal => "edit-server",
            Cmd::Timeout => "set",
            Cmd::Restore => "restore",
            Cmd::Save => "save",
            Cmd::Zero => "zero",
        }
    }

    /// Which options the command takes, one character per [`Col`] in its
    /// order: `+` required, `x` refused, `1` at most one of the `1`s,
    /// blank optional (ipvsadm's `commands_v_options`, less what xvs refuses
    /// outright).
    fn allowed(self) -> &'static [u8; COLS] {
        //                   ncsSpMrfwxytdsrtpnebTT
        match self {
            Cmd::Add | Cmd::Edit => b"xx+   xxxxxxxxxxxxx xx",
            Cmd::Del => b"xx+xxxxxxxxxxxxxxxxxxx",
            Cmd::List => b" 11xxxxxxxx11      x x",
            Cmd::AddReal | Cmd::EditReal => b"xx+xxx+    xxxxxxxxxx ",
            Cmd::DelReal => b"xx+xxx+xxxxxxxxxxxxxxx",
            Cmd::Save => b" xxxxxxxxxxxxxxxxxxxxx",
            Cmd::Zero => b"xx xxxxxxxxxxxxxxxxxxx",
            Cmd::Flush | Cmd::Timeout | Cmd::Restore => b"xxxxxxxxxxxxxxxxxxxxxx",
        }
    }
}

const COLS: usize = 22;

/// The options ipvsadm checks against a command, in its table's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Col {
    Numeric,
    Connection,
    Service,
    Scheduler,
    Persistent,
    Netmask,
    Server,
    Forward,
    Weight,
    UThreshold,
    LThreshold,
    Timeout,
    Daemon,
    Stats,
    Rate,
    Thresholds,
    PersistentConn,
    NoSort,
    Exact,
    SchedFlags,
    TunInfo,
    TunType,
}

const ALL_COLS: [Col; COLS] = [
    Col::Numeric,
    Col::Connection,
    Col::Service,
    Col::Scheduler,
    Col::Persistent,
    Col::Netmask,
    Col::Server,
    Col::Forward,
    Col::Weight,
    Col::UThreshold,
    Col::LThreshold,
    Col::Timeout,
    Col::Daemon,
    Col::Stats,
    Col::Rate,
    Col::Thresholds,
    Col::PersistentConn,
    Col::NoSort,
    Col::Exact,
    Col::SchedFlags,
    Col::TunInfo,
    Col::TunType,
];

impl Col {
    fn name(self) -> &'static str {
        match self {
            Col::Numeric => "numeric",
            Col::Connection => "connection",
            Col::Service => "service-address",
            Col::Scheduler => "scheduler",
            Col::Persistent => "persistent",
            Col::Netmask => "netmask",
            Col::Server => "real-server",
            Col::Forward => "forwarding-method",
            Col::Weight => "weight",
            Col::UThreshold => "u-threshold",
            Col::LThreshold => "l-threshold",
            Col::Timeout => "timeout",
            Col::Daemon => "daemon",
            Col::Stats => "stats",
            Col::Rate => "rate",
            Col::Thresholds => "thresholds",
            Col::PersistentConn => "persistent-conn",
            Col::NoSort => "nosort",
            Col::Exact => "exact",
            Col::SchedFlags => "sched-flags",
            Col::TunInfo => "tun-info",
            Col::TunType => "tun-type",
        }
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// ipvsadm's `generic_opt_check`.
fn check_options(cmd: Cmd, options: u32) -> Result<(), UsageError> {
    let mut exclusive: Option<Col> = None;
    for (col, rule) in ALL_COLS.iter().zip(cmd.allowed()) {
        let given = options & col.bit() != 0;
        match (given, rule) {
            (false, b'+') => {
                return Err(UsageError::usage(format!(
                    "You need to supply the '{}' option for the '{}' command",
                    col.name(),
                    cmd.name()
                )))
            }
            (true, b'x') => {
                return Err(UsageError::usage(format!(
                    "Illegal '{}' option with the '{}' command",
                    col.name(),
                    cmd.name()
                )))
            }
            (true, b'1') => match exclusive {
                None => exclusive = Some(*col),
                Some(first) => {
                    return Err(UsageError::usage(format!(
                        "The option '{}' conflicts with the '{}' option in the '{}' command",
                        col.name(),
                        first.name(),
                        cmd.name()
                    )))
                }
            },
            _ => {}
        }
    }
    Ok(())
}

/// Everything the options said, before the command puts it together.
struct State {
    options: u32,
    /// `-t`/`-u`: protocol, address, port (0 when not given).
    service: Option<(L4Proto, IpAddr, u16)>,
    scheduler: Option<String>,
    persistent: Option<u32>,
    netmask: Option<String>,
    /// `-r`: address and the port as written, resolved once the service's
    /// protocol is known.
    real: Option<(IpAddr, Option<String>)>,
    method: ForwardMethod,
    weight: u32,
    upper: u32,
    lower: u32,
    sched_flags: Option<String>,
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
    fn option(
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
                return Err(UsageError::unsupported(&format!(
                    "{word} (an IPVS sync daemon option)"
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
    fn build(
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
fn sched_flags(sched: &str, arg: &str) -> Result<SchedFlags, UsageError> {
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
fn timeout(s: &str, min: u32) -> Result<u32, UsageError> {
    number(s, min, MAX_TIMEOUT)
        .ok_or_else(|| UsageError::usage(format!("invalid timeout value `{s}' specified")))
}

/// Every option ipvsadm 1.31 knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Opt {
    AddService,
    EditService,
    DeleteService,
    Clear,
    List,
    Zero,
    AddServer,
    EditServer,
    DeleteServer,
    Set,
    Help,
    Version,
    Restore,
    Save,
    StartDaemon,
    StopDaemon,
    Tcp,
    Udp,
    Sctp,
    Fwmark,
    Scheduler,
    Persistent,
    Netmask,
    RealServer,
    Masq,
    Ipip,
    Gatewaying,
    Weight,
    UThreshold,
    LThreshold,
    Numeric,
    Connection,
    McastInterface,
    SyncId,
    Timeout,
    Daemon,
    Stats,
    Rate,
    Thresholds,
    PersistentConn,
    NoSort,
    Sort,
    Exact,
    Ipv6,
    Ops,
    Pe,
    SchedFlags,
    McastGroup,
    McastPort,
    McastTtl,
    SyncMaxlen,
    TunInfo,
    TunType,
    TunPort,
    TunNocsum,
    TunCsum,
    TunRemcsum,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Takes {
    Nothing,
    Value,
    /// `-p [timeout]`: the next word, unless it starts with `-`.
    MaybeValue,
}

/// `(option, long name, short name, argument)`.
const OPTIONS: &[(Opt, &str, Option<char>, Takes)] = &[
    (Opt::AddService, "add-service", Some('A'), Takes::Nothing),
    (Opt::EditService, "edit-service", Some('E'), Takes::Nothing),
    (
        Opt::DeleteService,
        "delete-service",
        Some('D'),
        Takes::Nothing,
    ),
    (Opt::Clear, "clear", Some('C'), Takes::Nothing),
    (Opt::List, "list", Some('L'), Takes::Nothing),
    (Opt::List, "list", Some('l'), Takes::Nothing),
    (Opt::Zero, "zero", Some('Z'), Takes::Nothing),
    (Opt::AddServer, "add-server", Some('a'), Takes::Nothing),
    (Opt::EditServer, "edit-server", Some('e'), Takes::Nothing),
    (
        Opt::DeleteServer,
        "delete-server",
        Some('d'),
        Takes::Nothing,
    ),
    (Opt::Set, "set", None, Takes::Nothing),
    (Opt::Help, "help", Some('h'), Takes::Nothing),
    (Opt::Version, "version", Some('v'), Takes::Nothing),
    (Opt::Restore, "restore", Some('R'), Takes::Nothing),
    (Opt::Save, "save", Some('S'), Takes::Nothing),
    (Opt::StartDaemon, "start-daemon", None, Takes::Value),
    (Opt::StopDaemon, "stop-daemon", None, Takes::Value),
    (Opt::Tcp, "tcp-service", Some('t'), Takes::Value),
    (Opt::Udp, "udp-service", Some('u'), Takes::Value),
    (Opt::Sctp, "sctp-service", None, Takes::Value),
    (Opt::Fwmark, "fwmark-service", Some('f'), Takes::Value),
    (Opt::Scheduler, "scheduler", Some('s'), Takes::Value),
    (Opt::Persistent, "persistent", Some('p'), Takes::MaybeValue),
    (Opt::Netmask, "netmask", Some('M'), Takes::Value),
    (Opt::RealServer, "real-server", Some('r'), Takes::Value),
    (Opt::Masq, "masquerading", Some('m'), Takes::Nothing),
    (Opt::Ipip, "ipip", Some('i'), Takes::Nothing),
    (Opt::Gatewaying, "gatewaying", Some('g'), Takes::Nothing),
    (Opt::Weight, "weight", Some('w'), Takes::Value),
    (Opt::UThreshold, "u-threshold", Some('x'), Takes::Value),
    (Opt::LThreshold, "l-threshold", Some('y'), Takes::Value),
    (Opt::Numeric, "numeric", Some('n'), Takes::Nothing),
    (Opt::Connection, "connection", Some('c'), Takes::Nothing),
    (Opt::McastInterface, "mcast-interface", None, Takes::Value),
    (Opt::SyncId, "syncid", None, Takes::Value),
    (Opt::Timeout, "timeout", None, Takes::Nothing),
    (Opt::Daemon, "daemon", None, Takes::Nothing),
    (Opt::Stats, "stats", None, Takes::Nothing),
    (Opt::Rate, "rate", None, Takes::Nothing),
    (Opt::Thresholds, "thresholds", None, Takes::Nothing),
    (Opt::PersistentConn, "persistent-conn", None, Takes::Nothing),
    (Opt::NoSort, "nosort", None, Takes::Nothing),
    (Opt::Sort, "sort", None, Takes::Nothing),
    (Opt::Exact, "exact", Some('X'), Takes::Nothing),
    (Opt::Ipv6, "ipv6", Some('6'), Takes::Nothing),
    (Opt::Ops, "ops", Some('o'), Takes::Nothing),
    (Opt::Pe, "pe", None, Takes::Value),
    (Opt::SchedFlags, "sched-flags", Some('b'), Takes::Value),
    (Opt::McastGroup, "mcast-group", None, Takes::Value),
    (Opt::McastPort, "mcast-port", None, Takes::Value),
    (Opt::McastTtl, "mcast-ttl", None, Takes::Value),
    (Opt::SyncMaxlen, "sync-maxlen", None, Takes::Value),
    (Opt::TunInfo, "tun-info", None, Takes::Nothing),
    (Opt::TunType, "tun-type", None, Takes::Value),
    (Opt::TunPort, "tun-port", None, Takes::Value),
    (Opt::TunNocsum, "tun-nocsum", None, Takes::Nothing),
    (Opt::TunCsum, "tun-csum", None, Takes::Nothing),
    (Opt::TunRemcsum, "tun-remcsum", None, Takes::Nothing),
];

enum Token {
    Opt {
        opt: Opt,
        value: Option<String>,
        /// The word it came from, for messages.
        word: String,
    },
    Arg(String),
}

/// What popt refuses, with the word it refused.
enum PoptError {
    Unknown(String),
    MissingArg(String),
    UnwantedArg(String),
}

impl PoptError {
    fn into_usage(self) -> UsageError {
        let (word, what) = match self {
            PoptError::Unknown(w) => (w, "unknown option"),
            PoptError::MissingArg(w) => (w, "missing argument"),
            PoptError::UnwantedArg(w) => (w, "option does not take an argument"),
        };
        UsageError::failed(format!("{word}: {what}"))
    }
}

/// Splits words into options and arguments as popt does.
struct Lexer<'a> {
    args: &'a [String],
    next: usize,
    /// Inside a cluster of short options: the word and the byte offset of
    /// the next option letter.
    cluster: Option<(usize, usize)>,
    /// After `--`, everything is an argument.
    only_args: bool,
}

impl Lexer<'_> {
    fn next(&mut self) -> Option<Result<Token, PoptError>> {
        if let Some((w, at)) = self.cluster.take() {
            return Some(self.short(w, at));
        }
        let word = self.args.get(self.next)?;
        self.next += 1;
        if self.only_args || word == "-" || !word.starts_with('-') {
            return Some(Ok(Token::Arg(word.clone())));
        }
        if word == "--" {
            self.only_args = true;
            return self.next();
        }
        if let Some(long) = word.strip_prefix("--") {
            return Some(self.long(word, long));
        }
        Some(self.short(self.next - 1, 1))
    }

    fn long(&mut self, word: &str, long: &str) -> Result<Token, PoptError> {
        let (name, inline) = match long.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (long, None),
        };
        let &(opt, _, _, takes) = OPTIONS
            .iter()
            .find(|o| o.1 == name)
            .ok_or_else(|| PoptError::Unknown(word.to_string()))?;
        let value = match (takes, inline) {
            (Takes::Nothing, Some(_)) => return Err(PoptError::UnwantedArg(word.to_string())),
            (_, Some(v)) => Some(v),
            (Takes::Nothing, None) => None,
            (Takes::Value, None) => Some(
                self.take_word()
                    .ok_or_else(|| PoptError::MissingArg(word.to_string()))?,
            ),
            (Takes::MaybeValue, None) => self.take_maybe(),
        };
        Ok(Token::Opt {
            opt,
            value,
            word: word.to_string(),
        })
    }

    fn short(&mut self, w: usize, at: usize) -> Result<Token, PoptError> {
        let word = &self.args[w];
        let rest = &word[at..];
        let unknown = || PoptError::Unknown(word.clone());
        let c = rest.chars().next().ok_or_else(unknown)?;
        let &(opt, _, _, takes) = OPTIONS
            .iter()
            .find(|o| o.2 == Some(c))
            .ok_or_else(unknown)?;
        let after = &rest[c.len_utf8()..];
        let value = match takes {
            Takes::Nothing => {
                if !after.is_empty() {
                    self.cluster = Some((w, at + c.len_utf8()));
                }
                None
            }
            _ if !after.is_empty() => Some(after.to_string()),
            Takes::Value => Some(
                self.take_word()
                    .ok_or_else(|| PoptError::MissingArg(word.clone()))?,
            ),
            Takes::MaybeValue => self.take_maybe(),
        };
        Ok(Token::Opt {
            opt,
            value,
            word: word.clone(),
        })
    }

    fn take_word(&mut self) -> Option<String> {
        let word = self.args.get(self.next)?.clone();
        self.next += 1;
        Some(word)
    }

    fn take_maybe(&mut self) -> Option<String> {
        match self.args.get(self.next) {
            Some(w) if !w.starts_with('-') => self.take_word(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::parse_line;
    use crate::packet::L4Proto;
    use crate::service::{
        Edit, ForwardMethod, Persistence, RealSpec, SchedFlags, SchedulerKind, ServiceKey,
        ServiceSpec,
    };
    use std::net::{IpAddr, SocketAddr};

    fn ok(line: &str) -> Command {
        match parse_line(line) {
            Ok(c) => c,
            Err(e) => panic!("{line}: {e}"),
        }
    }

    fn err(line: &str) -> (String, u8) {
        match parse_line(line) {
            Ok(c) => panic!("{line}: parsed as {c:?}"),
            Err(e) => (e.message, e.exit_code),
        }
    }

    fn key(proto: L4Proto, addr: &str, port: u16) -> ServiceKey {
        ServiceKey {
            proto,
            addr: addr.parse().unwrap(),
            port,
        }
    }

    fn tcp(addr: &str, port: u16) -> ServiceKey {
        key(L4Proto::Tcp, addr, port)
    }

    fn svc(k: ServiceKey, s: SchedulerKind, pers: Option<(u32, u8)>) -> ServiceSpec {
        ServiceSpec {
            key: k,
            scheduler: s,
            sched_flags: SchedFlags::default(),
            persistence: pers.map(|(timeout_secs, prefix_len)| Persistence {
                timeout_secs,
                prefix_len,
            }),
        }
    }

    fn real(addr: &str, port: u16, method: ForwardMethod, weight: u32) -> RealSpec {
        RealSpec {
            addr: addr.parse().unwrap(),
            port,
            method,
            weight,
            upper_threshold: 0,
            lower_threshold: 0,
        }
    }

    #[test]
    fn add_service_defaults_and_options() {
        let flags = |fallback, port| SchedFlags { fallback, port };
        let cases = [
            (
                "-A -t 192.0.2.1:80",
                Edit::AddService(svc(tcp("192.0.2.1", 80), SchedulerKind::Wlc, None)),
            ),
            (
                "--add-service --udp-service 192.0.2.1:domain --scheduler rr --persistent",
                Edit::AddService(svc(
                    key(L4Proto::Udp, "192.0.2.1", 53),
                    SchedulerKind::Rr,
                    Some((360, 32)),
                )),
            ),
            (
                "-E -t 192.0.2.1:http -s sh -b sh-fallback,sh-port -p 600 -M 255.255.255.0",
                Edit::EditService(ServiceSpec {
                    sched_flags: flags(true, true),
                    ..svc(tcp("192.0.2.1", 80), SchedulerKind::Sh, Some((600, 24)))
                }),
            ),
            // -p's value is optional: the next word is taken unless it is an option.
            (
                "-A -t 192.0.2.1:443 -p -s rr",
                Edit::AddService(svc(
                    tcp("192.0.2.1", 443),
                    SchedulerKind::Rr,
                    Some((360, 32)),
                )),
            ),
            (
                "-A -t [2001:db8::1]:80 -p 60 -M 64 -s mh -b flag-2",
                Edit::AddService(ServiceSpec {
                    sched_flags: flags(false, true),
                    ..svc(tcp("2001:db8::1", 80), SchedulerKind::Mh, Some((60, 64)))
                }),
            ),
            // Clustered short options, attached and `=` values.
            (
                "-At192.0.2.1:80 --scheduler=wrr -p30",
                Edit::AddService(svc(
                    tcp("192.0.2.1", 80),
                    SchedulerKind::Wrr,
                    Some((30, 32)),
                )),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(ok(line), Command::Edit(want), "{line}");
        }
    }

    #[test]
    fn real_server_commands() {
        let k = tcp("192.0.2.1", 80);
        let cases = [
            (
                "-a -t 192.0.2.1:80 -r 198.51.100.10",
                Edit::AddReal(k, real("198.51.100.10", 80, ForwardMethod::Dr, 1)),
            ),
            (
                "-a -t 192.0.2.1:80 -r 198.51.100.10:8080 -m -w 0 -x 100 -y 50",
                Edit::AddReal(
                    k,
                    RealSpec {
                        upper_threshold: 100,
                        lower_threshold: 50,
                        ..real("198.51.100.10", 8080, ForwardMethod::Nat, 0)
                    },
                ),
            ),
            // DR and TUN keep the service's port whatever -r says.
            (
                "-e -t 192.0.2.1:80 -r 198.51.100.10:8080 -i -w 65535 --tun-type ipip",
                Edit::EditReal(k, real("198.51.100.10", 80, ForwardMethod::Tun, 65535)),
            ),
            (
                "-a -t [2001:db8::1]:80 -r [2001:db8::10]:http-alt -m",
                Edit::AddReal(
                    tcp("2001:db8::1", 80),
                    real("2001:db8::10", 8080, ForwardMethod::Nat, 1),
                ),
            ),
            (
                "-d -t 192.0.2.1:80 -r 198.51.100.10:8080",
                Edit::DeleteReal(
                    k,
                    SocketAddr::new("198.51.100.10".parse::<IpAddr>().unwrap(), 8080),
                ),
            ),
            // -r before -t still resolves against the service's port.
            (
                "-a -r 198.51.100.10 -m -t 192.0.2.1:80",
                Edit::AddReal(k, real("198.51.100.10", 80, ForwardMethod::Nat, 1)),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(ok(line), Command::Edit(want), "{line}");
        }
    }

    #[test]
    fn other_commands() {
        assert_eq!(ok("-C"), Command::Edit(Edit::Clear));
        assert_eq!(
            ok("-D -u 192.0.2.1:53"),
            Command::Edit(Edit::DeleteService(key(L4Proto::Udp, "192.0.2.1", 53)))
        );
        assert_eq!(ok("-Z"), Command::Zero(None));
        assert_eq!(
            ok("--zero -t 192.0.2.1:80"),
            Command::Zero(Some(tcp("192.0.2.1", 80)))
        );
        assert_eq!(
            ok("--set 900 0 300"),
            Command::SetTimeouts {
                tcp: 900,
                tcpfin: 0,
                udp: 300
            }
        );
        assert_eq!(ok("-S"), Command::Save { numeric: false });
        assert_eq!(ok("--save -n"), Command::Save { numeric: true });
        assert_eq!(ok("-R"), Command::Restore);
        assert_eq!(ok("-h"), Command::Help);
        assert_eq!(ok("--help -t whatever"), Command::Help);
        assert_eq!(ok("-v"), Command::Version);
        assert_eq!(parse_line(""), Ok(Command::List(ListOptions::all())));
        // After `--` everything is an argument.
        assert_eq!(err("-L -- -n"), ("unexpected argument -n".to_string(), 2));
    }

    #[test]
    fn list_forms() {
        let list = |what, f: fn(&mut ListOptions)| {
            let mut o = ListOptions::all();
            o.what = what;
            f(&mut o);
            Command::List(o)
        };
        assert_eq!(ok("-L"), list(ListWhat::All, |_| {}));
        assert_eq!(ok("-Ln"), list(ListWhat::All, |o| o.numeric = true));
        assert_eq!(
            ok("-l -n --stats --exact"),
            list(ListWhat::All, |o| {
                o.numeric = true;
                o.stats = true;
                o.exact = true
            })
        );
        assert_eq!(
            ok("--list --rate --sort"),
            list(ListWhat::All, |o| o.rate = true)
        );
        assert_eq!(
            ok("-Lnc"),
            list(ListWhat::Connections, |o| o.numeric = true)
        );
        assert_eq!(ok("-L --timeout"), list(ListWhat::Timeout, |_| {}));
        assert_eq!(ok("-L --daemon"), list(ListWhat::Daemon, |_| {}));
        assert_eq!(
            ok("-L -t 192.0.2.1:80 --thresholds --nosort"),
            list(ListWhat::Service(tcp("192.0.2.1", 80)), |o| {
                o.thresholds = true;
                o.nosort = true
            })
        );
        assert_eq!(
            ok("-L --persistent-conn -c"),
            list(ListWhat::Connections, |o| o.persistent_conn = true)
        );
    }

    #[test]
    fn popt_errors_exit_255() {
        let try_help = "Try `ipvsadm -h' or 'ipvsadm --help' for more information.";
        let cases: &[(&str, &str)] = &[
            ("--bogus", try_help),
            ("-n -L", try_help),
            ("foo", try_help),
            ("-L --bogus", "--bogus: unknown option"),
            ("-Lq", "-Lq: unknown option"),
            ("-A -t", "-t: missing argument"),
            (
                "-L --stats=1",
                "--stats=1: option does not take an argument",
            ),
            // What the kernel would refuse: an unknown scheduler.
            (
                "-A -t 192.0.2.1:80 -s bogus",
                "Scheduler or persistence engine not found",
            ),
        ];
        for (line, want) in cases {
            assert_eq!(err(line), (want.to_string(), 255), "{line}");
        }
    }

    #[test]
    fn usage_errors_exit_2() {
        let cases: &[(&str, &str)] = &[
            ("-A -t 192.0.2.1:80 -L", "invalid option `-L'"),
            ("-A", "You need to supply the 'service-address' option for the 'add-service' command"),
            ("-a -t 192.0.2.1:80", "You need to supply the 'real-server' option for the 'add-server' command"),
            ("-A -t 192.0.2.1:80 -w 3", "Illegal 'weight' option with the 'add-service' command"),
            ("-C -n", "Illegal 'numeric' option with the 'flush' command"),
            ("-S -c", "Illegal 'connection' option with the 'save' command"),
            ("-L -c --timeout", "The option 'timeout' conflicts with the 'connection' option in the 'list' command"),
            ("-L -c --stats", "options conflicts in the list command"),
            ("-L --timeout --persistent-conn", "options conflicts in the list command"),
            ("-A -t 192.0.2.1:80 -u 192.0.2.1:80", "multiple 'service-address' options specified"),
            ("-a -t 192.0.2.1:80 -r 198.51.100.1 -g -m", "multiple 'forwarding-method' options specified"),
            ("-A -t 192.0.2.1", "Zero port specified for non-persistent service"),
            ("-A -t example.org:80", "illegal virtual server address[:port] specified"),
            ("-A -t 192.0.2.1:nosuchport", "illegal virtual server address[:port] specified"),
            ("-A -t 192.0.2.1:65536", "illegal virtual server address[:port] specified"),
            ("-A -t [2001:db8::1]80", "illegal virtual server address[:port] specified"),
            ("-A -t 80", "illegal virtual server address[:port] specified"),
            ("-a -t [2001:db8::1]:80 -r [2001:db8::10] -m", "illegal real server address[:port] specified"),
            ("-a -t 192.0.2.1:80 -r 198.51.100.1:x", "illegal real server address[:port] specified"),
            ("-a -t 192.0.2.1:80 -r 198.51.100.1 -w 65536", "illegal weight specified"),
            ("-a -t 192.0.2.1:80 -r 198.51.100.1 -w -1", "illegal weight specified"),
            ("-a -t 192.0.2.1:80 -r 198.51.100.1 -x a", "illegal u_threshold specified"),
            ("-a -t 192.0.2.1:80 -r 198.51.100.1 -y 2147483648", "illegal l_threshold specified"),
            ("-A -t 192.0.2.1:80 -p 0", "invalid timeout value `0' specified"),
            ("-A -t 192.0.2.1:80 -p 2678401", "invalid timeout value `2678401' specified"),
            ("-A -t 192.0.2.1:80 -p -M 255.255.0.x", "illegal virtual server persistent mask specified"),
            ("-A -t [2001:db8::1]:80 -p -M 129", "illegal ipv6 netmask specified"),
            ("--set 900 120", "--set option requires 3 timeout values"),
            ("--set 900 120 x", "invalid timeout value `x' specified"),
            ("-L extra", "unexpected argument extra"),
            ("-A -t 192.0.2.1:80 -s rr -b sh-port", "incompatible scheduler flag `sh-port'"),
            ("-A -t 192.0.2.1:80 -b mh-port", "incompatible scheduler flag `mh-port'"),
            ("-A -t 192.0.2.1:80 -b bogus", "invalid scheduler flag `bogus'"),
            ("-a -t 192.0.2.1:80 -r 2001:db8::10 -m", "Different address family is allowed only for tunneling servers"),
            ("-a -t 192.0.2.1:80 -r 198.51.100.1 -m --tun-type ipip", "Tunnel options conflict with forward method"),
            ("-a -t 192.0.2.1:80 -r 198.51.100.1 -i --tun-type vxlan", "illegal tunnel type specified"),
            ("-A -f 1", "a firewall-mark service (-f) is not supported by xvs; see README"),
            ("-A --sctp-service 192.0.2.1:80", "SCTP (--sctp-service) is not supported by xvs; see README"),
            ("--start-daemon master", "the IPVS connection sync daemon (--start-daemon, --stop-daemon) is not supported by xvs; see README"),
            ("-A -t 192.0.2.1:80 -o", "one-packet scheduling (-o) is not supported by xvs; see README"),
            ("-A -t 192.0.2.1:80 --pe sip", "a persistence engine (--pe) is not supported by xvs; see README"),
            ("-a -t 192.0.2.1:80 -r 198.51.100.1 -i --tun-type gue", "tunnel type gue is not supported by xvs; see README"),
            ("-a -t 192.0.2.1:80 -r 198.51.100.1 -i --tun-port 6080", "--tun-port (GUE/GRE tunnel options) is not supported by xvs; see README"),
            ("-A -t 192.0.2.1:0 -p", "a port-0 (all ports) service is not supported by xvs; see README"),
            ("-A -t 192.0.2.1:80 -p -M 255.0.255.0", "a non-contiguous persistence mask (255.0.255.0) is not supported by xvs; see README"),
            ("-A -t 192.0.2.1:80 -b flag-3", "scheduler flag `flag-3' is not supported by xvs; see README"),
            ("-L -6", "-6 used before -f"),
        ];
        for (line, want) in cases {
            assert_eq!(err(line), (want.to_string(), 2), "{line}");
        }
    }
}
