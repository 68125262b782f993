//! ipvsadm 1.31's output, byte for byte: `-L` with `-n`, `--stats`,
//! `--rate`, `--exact`, `--thresholds`, `--persistent-conn`, `--tun-info`,
//! `-c` and `--timeout`, and the `-h`/`-v` texts.
//!
//! Inputs are plain data the daemon fills: the model's services, and
//! [`ListStats`] from the workers' counters (missing entries print as 0).
//! Column widths, trailing blanks and the K/M/G/T abbreviations are
//! ipvsadm's. The header prints IPVS version 1.2.1, the interface level xvs
//! speaks, and `size=` whatever the caller passes: the daemon passes its
//! connection hash table's bucket count as a power of two, as IPVS prints.

use std::collections::HashMap;
use std::fmt::{self, Write};
use std::net::IpAddr;

use super::names::Services;
use super::{ListOptions, ListWhat};
use crate::conntrack::ConnEntry;
use crate::packet::L4Proto;
use crate::service::{
    ForwardMethod, RealCounts, RealId, RealServer, SchedulerKind, ServiceKey, TotalStats,
    VirtualService,
};

/// The IPVS version xvs reports.
pub const IPVS_VERSION: &str = "1.2.1";

/// Per-second rates (ipvsadm `--rate`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateStats {
    pub cps: u64,
    pub inpps: u64,
    pub outpps: u64,
    pub inbps: u64,
    pub outbps: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceStats {
    pub totals: TotalStats,
    pub rates: RateStats,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RealStats {
    pub counts: RealCounts,
    pub totals: TotalStats,
    pub rates: RateStats,
}

/// Everything `-L` prints that is not configuration.
#[derive(Clone, Debug, Default)]
pub struct ListStats {
    pub services: HashMap<ServiceKey, ServiceStats>,
    pub reals: HashMap<RealId, RealStats>,
}

/// `-L -t|-u` of a service that does not exist; ipvsadm exits 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListError {
    NoSuchService,
}

impl ListError {
    pub fn exit_code(self) -> u8 {
        super::EXIT_LIST_FAILED
    }
}

impl fmt::Display for ListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("No such service")
    }
}

impl std::error::Error for ListError {}

/// `-L`: every service with the version header, or one service without it.
/// `-c`, `--timeout` and `--daemon` are [`connections`], [`timeouts`] and
/// [`daemons`]; given `--daemon` anyway, this prints nothing.
pub fn list(
    services: &[VirtualService],
    stats: &ListStats,
    opts: &ListOptions,
    table_size: usize,
    names: &Services,
) -> Result<String, ListError> {
    let mut out = String::new();
    let f = Format::list(opts, names);
    match opts.what {
        ListWhat::Service(key) => {
            let s = services
                .iter()
                .find(|s| s.key == key)
                .ok_or(ListError::NoSuchService)?;
            out.push_str(&title(opts));
            service(&mut out, s, stats, &f);
        }
        ListWhat::Daemon => {}
        ListWhat::All | ListWhat::Connections | ListWhat::Timeout => {
            let _ = writeln!(
                out,
                "IP Virtual Server version {IPVS_VERSION} (size={table_size})"
            );
            out.push_str(&title(opts));
            for s in sorted_services(services, opts.nosort) {
                service(&mut out, s, stats, &f);
            }
        }
    }
    Ok(out)
}

/// `-L -c`: the connection entries, in the order given.
pub fn connections(entries: &[ConnEntry], opts: &ListOptions, names: &Services) -> String {
    let mut out = String::from("IPVS connection entries\n");
    if opts.persistent_conn {
        let _ = writeln!(
            out,
            "pro expire {:<11} {:<18} {:<18} {:<18} {:<16} pe_data",
            "state", "source", "virtual", "destination", "pe name"
        );
    } else {
        let _ = writeln!(
            out,
            "pro expire {:<11} {:<18} {:<18} destination",
            "state", "source", "virtual"
        );
    }
    for e in entries {
        let name =
            |a: std::net::SocketAddr| addr_port(a.ip(), a.port(), e.proto, opts.numeric, names);
        // Entries carry no persistence-engine data, so ipvsadm's short
        // line, even under --persistent-conn.
        let _ = writeln!(
            out,
            "{:<3} {:<6} {:<11} {:<18} {:<18} {}",
            e.proto.name(),
            e.expire_mmss(),
            e.state.name(),
            name(e.client),
            name(e.virt),
            name(e.real)
        );
    }
    out
}

/// `-L --timeout`.
pub fn timeouts(tcp: u32, tcpfin: u32, udp: u32) -> String {
    format!("Timeout (tcp tcpfin udp): {tcp} {tcpfin} {udp}\n")
}

/// `-L --daemon`: one line per running sync daemon, as ipvsadm prints
/// them (`mcast=` is empty when no interface was given).
pub fn daemons(daemons: &[crate::sync::DaemonConfig]) -> String {
    let mut out = String::new();
    for d in daemons {
        out.push_str(&format!(
            "{} sync daemon (mcast={}, syncid={}, maxlen={}, group={}, port={}, ttl={})\n",
            d.role.name(),
            d.mcast_interface.as_deref().unwrap_or(""),
            d.syncid,
            d.maxlen(),
            d.group,
            d.port,
            d.ttl
        ));
    }
    out
}

/// `-v`.
pub fn version() -> String {
    format!(
        "ipvsadm v1.31 (xvs {}, compatible with IPVS v{IPVS_VERSION})\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// `-h`.
pub fn usage() -> String {
    let mut s = version();
    s.push_str(USAGE);
    s
}

const USAGE: &str = "\
Usage:
  ipvsadm -A|E virtual-service [-s scheduler] [-p [timeout]] [-M netmask] [-b sched-flags]
  ipvsadm -D virtual-service
  ipvsadm -C
  ipvsadm -R
  ipvsadm -S [-n]
  ipvsadm -a|e virtual-service -r server-address [options]
  ipvsadm -d virtual-service -r server-address
  ipvsadm -L|l [virtual-service] [options]
  ipvsadm -Z [virtual-service]
  ipvsadm --set tcp tcpfin udp
  ipvsadm -h

Commands (long or short form):
  --add-service     -A        add a virtual service
  --edit-service    -E        change a virtual service
  --delete-service  -D        delete a virtual service
  --clear           -C        delete every virtual service
  --restore         -R        read commands (ipvsadm -S output) from stdin
  --save            -S        write the configuration as commands to stdout
  --add-server      -a        add a real server to a virtual service
  --edit-server     -e        change a real server
  --delete-server   -d        delete a real server
  --list            -L|-l     list the virtual services
  --zero            -Z        zero the counters of one or every service
  --set tcp tcpfin udp        set connection timeouts (seconds, 0 = keep)
  --start-daemon state        start connection sync: master or backup
  --stop-daemon state         stop it: master or backup
  --help            -h        show this text
  --version         -v        show the version

virtual-service:
  --tcp-service|-t  address[:port]     IPv6 as [address]:port
  --udp-service|-u  address[:port]

Options:
  --scheduler    -s scheduler          rr|wrr|lc|wlc|lblc|lblcr|dh|sh|sed|nq|fo|ovf|mh|twos,
                                       wlc by default
  --persistent   -p [timeout]          persistent service, 360 s by default
  --netmask      -M netmask            persistence granularity (IPv6: prefix length)
  --sched-flags  -b flags              sh-fallback, sh-port, mh-fallback, mh-port,
                                       flag-1, flag-2 (comma-separated)
  --real-server  -r address[:port]     the real server
  --gatewaying   -g                    direct routing (default)
  --ipip         -i                    IP-in-IP tunnelling
  --masquerading -m                    NAT
  --weight       -w weight             0..65535, 1 by default; 0 quiesces
  --u-threshold  -x n                  stop new connections at n (0 = no limit)
  --l-threshold  -y n                  resume below n
  --numeric      -n                    ports as numbers
  --connection   -c                    list connections
  --timeout                            list the timeouts
  --stats                              list counters
  --rate                               list rates
  --exact                              do not abbreviate large numbers
  --thresholds                         list thresholds
  --persistent-conn                    list persistent connections
  --tun-info                           list tunnel types
  --nosort                             list in the order added
  --sort                               (the default)

Sync daemon options (xvs's own authenticated protocol, see README):
  --mcast-interface interface          the interface sync speaks on
  --syncid sid                         0..255; a backup of 0 takes any
  --sync-maxlen length                 largest datagram payload, 1472 by default
  --mcast-group address                IPv4 group, 224.0.0.81 by default
  --mcast-port port                    8848 by default
  --mcast-ttl ttl                      1 by default
  --daemon                             list the sync daemons (with -L)

Not supported by xvs (see README): -f, -6, --sctp-service, -o, --pe,
GUE/GRE tunnels, IPv6 sync groups.
";

/// How addresses and numbers print.
struct Format<'a> {
    numeric: bool,
    stats: bool,
    rate: bool,
    thresholds: bool,
    persistent_conn: bool,
    tun_info: bool,
    exact: bool,
    nosort: bool,
    names: &'a Services,
}

impl Format<'_> {
    fn list<'a>(o: &ListOptions, names: &'a Services) -> Format<'a> {
        Format {
            numeric: o.numeric,
            stats: o.stats,
            rate: o.rate,
            thresholds: o.thresholds,
            persistent_conn: o.persistent_conn,
            tun_info: o.tun_info,
            exact: o.exact,
            nosort: o.nosort,
            names,
        }
    }
}

fn title(o: &ListOptions) -> String {
    const PROT: &str = "Prot LocalAddress:Port";
    const REMOTE: &str = "  -> RemoteAddress:Port";
    if o.stats || o.rate {
        let cols = if o.stats {
            ["Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"]
        } else {
            ["CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"]
        };
        let [a, b, c, d, e] = cols;
        format!("{PROT:<33} {a:>8} {b:>8} {c:>8} {d:>8} {e:>8}\n{REMOTE}\n")
    } else if o.thresholds {
        let (a, b, c, d) = ("Uthreshold", "Lthreshold", "ActiveConn", "InActConn");
        format!("{PROT:<33} {a:<10} {b:<10} {c:<10} {d:<10}\n{REMOTE}\n")
    } else if o.persistent_conn {
        let (a, b, c, d) = ("Weight", "PersistConn", "ActiveConn", "InActConn");
        format!("{PROT:<33} {a:<9} {b:<11} {c:<10} {d:<10}\n{REMOTE}\n")
    } else if o.tun_info {
        format!(
            "Prot LocalAddress:Port Scheduler Flags\n{REMOTE}           Forward TunnelInfo    Weight ActiveConn InActConn\n"
        )
    } else {
        format!(
            "Prot LocalAddress:Port Scheduler Flags\n{REMOTE}           Forward Weight ActiveConn InActConn\n"
        )
    }
}

/// One service and its real servers.
fn service(out: &mut String, s: &VirtualService, stats: &ListStats, f: &Format<'_>) {
    let mut name = format!(
        "{:<4} {}",
        s.key.proto.name(),
        addr_port(s.key.addr, s.key.port, s.key.proto, f.numeric, f.names)
    );
    if s.key.addr.is_ipv4() {
        truncate(&mut name, 33);
    }
    let svc_stats = stats.services.get(&s.key).copied().unwrap_or_default();
    if f.stats {
        let _ = write!(out, "{name:<33}");
        totals(out, &svc_stats.totals, f.exact);
    } else if f.rate {
        let _ = write!(out, "{name:<33}");
        let r = &svc_stats.rates;
        for n in [r.cps, r.inpps, r.outpps, r.inbps, r.outbps] {
            large(out, n, f.exact);
        }
    } else {
        let _ = write!(out, "{name} {}", s.scheduler.name());
        if let Some(flags) = sched_flags(s) {
            let _ = write!(out, " ({flags})");
        }
        if let Some(p) = s.persistence {
            let _ = write!(out, " persistent {}", p.timeout_secs);
            if let Some(mask) = mask(s.key.addr, p.prefix_len) {
                let _ = write!(out, " mask {mask}");
            }
        }
    }
    out.push('\n');
    for r in sorted_reals(&s.reals, f.nosort) {
        real(
            out,
            s,
            r,
            stats.reals.get(&r.id).copied().unwrap_or_default(),
            f,
        );
    }
}

fn real(out: &mut String, s: &VirtualService, r: &RealServer, st: RealStats, f: &Format<'_>) {
    let mut name = addr_port(r.addr, r.port, s.key.proto, f.numeric, f.names);
    if r.addr.is_ipv4() {
        truncate(&mut name, 28);
    }
    let c = st.counts;
    if f.stats {
        let _ = write!(out, "  -> {name:<28}");
        totals(out, &st.totals, f.exact);
        out.push('\n');
    } else if f.rate {
        let t = &st.rates;
        let _ = write!(
            out,
            "  -> {name:<28} {:>8} {:>8} {:>8}",
            t.cps, t.inpps, t.outpps
        );
        large(out, t.inbps, f.exact);
        large(out, t.outbps, f.exact);
        out.push('\n');
    } else if f.thresholds {
        let _ = writeln!(
            out,
            "  -> {name:<28} {:<10} {:<10} {:<10} {:<10}",
            r.upper_threshold, r.lower_threshold, c.active_conns, c.inact_conns
        );
    } else if f.persistent_conn {
        let _ = writeln!(
            out,
            "  -> {name:<28} {:<9} {:<11} {:<10} {:<10}",
            r.weight, c.persist_conns, c.active_conns, c.inact_conns
        );
    } else if f.tun_info {
        let info = if r.method == ForwardMethod::Tun {
            "ipip"
        } else {
            "n/a"
        };
        let _ = writeln!(
            out,
            "  -> {name:<28} {:<7} {:<13} {:<6} {:<10} {:<10}",
            r.method.ipvsadm_name(),
            info,
            r.weight,
            c.active_conns,
            c.inact_conns
        );
    } else {
        let _ = writeln!(
            out,
            "  -> {name:<28} {:<7} {:<6} {:<10} {:<10}",
            r.method.ipvsadm_name(),
            r.weight,
            c.active_conns,
            c.inact_conns
        );
    }
}

fn totals(out: &mut String, t: &TotalStats, exact: bool) {
    for n in [t.conns, t.inpkts, t.outpkts, t.inbytes, t.outbytes] {
        large(out, n, exact);
    }
}

/// ipvsadm's `print_largenum`: 9 columns, abbreviated past 10^8 unless
/// `--exact`.
fn large(out: &mut String, n: u64, exact: bool) {
    let _ = if exact {
        let width = n.to_string().len().max(8) + 1;
        write!(out, "{n:>width$}")
    } else if n < 100_000_000 {
        write!(out, "{n:>9}")
    } else if n < 1_000_000_000 {
        write!(out, "{:>8}K", n / 1_000)
    } else if n < 100_000_000_000 {
        write!(out, "{:>8}M", n / 1_000_000)
    } else if n < 100_000_000_000_000 {
        write!(out, "{:>8}G", n / 1_000_000_000)
    } else {
        write!(out, "{:>8}T", n / 1_000_000_000_000)
    };
}

/// `-b` flags as ipvsadm names them for the service's scheduler.
pub(super) fn sched_flags(s: &VirtualService) -> Option<String> {
    let (fallback, port) = match s.scheduler {
        SchedulerKind::Sh => ("sh-fallback", "sh-port"),
        SchedulerKind::Mh => ("mh-fallback", "mh-port"),
        _ => ("flag-1", "flag-2"),
    };
    let flags: Vec<&str> = [
        (s.sched_flags.fallback, fallback),
        (s.sched_flags.port, port),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    (!flags.is_empty()).then(|| flags.join(","))
}

/// The persistence mask as ipvsadm prints it, when it is not the default
/// (a dotted mask for IPv4, a prefix length for IPv6).
pub(super) fn mask(vip: IpAddr, prefix_len: u8) -> Option<String> {
    match vip {
        IpAddr::V4(_) if prefix_len < 32 => {
            let m = u32::MAX
                .checked_shl(32 - u32::from(prefix_len))
                .unwrap_or(0);
            Some(std::net::Ipv4Addr::from(m).to_string())
        }
        IpAddr::V6(_) if prefix_len < 128 => Some(prefix_len.to_string()),
        _ => None,
    }
}

/// `addr:port`, `[v6]:port`; the port by name unless `numeric`.
pub(super) fn addr_port(
    addr: IpAddr,
    port: u16,
    proto: L4Proto,
    numeric: bool,
    names: &Services,
) -> String {
    let port = match names.name(port, proto) {
        Some(name) if !numeric => name.to_string(),
        _ => port.to_string(),
    };
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
}

/// ipvsadm's order: IPv4 before IPv6, TCP before UDP, then address and
/// port; or the order added with `--nosort`.
pub(super) fn sorted_services(services: &[VirtualService], nosort: bool) -> Vec<&VirtualService> {
    let mut v: Vec<&VirtualService> = services.iter().collect();
    if !nosort {
        v.sort_by_key(|s| {
            (
                s.key.addr.is_ipv6(),
                s.key.proto.number(),
                addr_value(s.key.addr),
                s.key.port,
            )
        });
    }
    v
}

pub(super) fn sorted_reals(reals: &[RealServer], nosort: bool) -> Vec<&RealServer> {
    let mut v: Vec<&RealServer> = reals.iter().collect();
    if !nosort {
        v.sort_by_key(|r| (r.addr.is_ipv6(), addr_value(r.addr), r.port));
    }
    v
}

fn addr_value(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

#[cfg(test)]
mod tests {
    use super::super::args::parse_line;
    use super::super::Command;
    use super::*;
    use crate::conntrack::ConnState;
    use crate::service::ServiceModel;

    /// A model built from ipvsadm command lines.
    pub(crate) fn model(lines: &[&str]) -> ServiceModel {
        let mut m = ServiceModel::new(64);
        for line in lines {
            match parse_line(line) {
                Ok(Command::Edit(e)) => {
                    m.apply(&e).unwrap();
                }
                other => panic!("{line}: {other:?}"),
            }
        }
        m
    }

    fn opts(line: &str) -> ListOptions {
        match parse_line(line) {
            Ok(Command::List(o)) => o,
            other => panic!("{line}: {other:?}"),
        }
    }

    /// Two services given out of order, IPv6 among them, with live counts.
    fn fixture() -> (ServiceModel, ListStats) {
        let m = model(&[
            "-A -u 192.0.2.1:53 -s rr",
            "-A -t [2001:db8::1]:443 -s mh -b mh-port -p 120 -M 64",
            "-A -t 192.0.2.1:80 -s wlc -p 300 -M 255.255.255.0",
            "-a -t 192.0.2.1:80 -r 198.51.100.12:8080 -m -w 3",
            "-a -t 192.0.2.1:80 -r 198.51.100.11 -g -w 0 -x 100 -y 50",
            "-a -t 192.0.2.1:80 -r 198.51.100.10 -i",
            "-a -u 192.0.2.1:53 -r 198.51.100.20:5353 -m",
            "-a -t [2001:db8::1]:443 -r [2001:db8:1::10]:443 -m -w 2",
        ]);
        // One real server's traffic, and so its service's.
        let totals = TotalStats {
            conns: 1234,
            inpkts: 99_999_999,
            outpkts: 100_000_000,
            inbytes: 123_456_789_012,
            outbytes: 987_654_321_098_765,
        };
        let rates = RateStats {
            cps: 12,
            inpps: 3456,
            outpps: 7890,
            inbps: 123_456_789,
            outbps: 1_234_567_890,
        };
        let mut stats = ListStats::default();
        let id = |addr: &str| {
            m.services()
                .iter()
                .flat_map(|s| &s.reals)
                .find(|r| r.addr.to_string() == addr)
                .map(|r| r.id)
                .unwrap_or(RealId(999))
        };
        stats.reals.insert(
            id("198.51.100.12"),
            RealStats {
                counts: RealCounts {
                    active_conns: 12,
                    inact_conns: 3,
                    persist_conns: 4,
                },
                totals,
                rates,
            },
        );
        stats
            .services
            .insert(m.services()[2].key, ServiceStats { totals, rates });
        (m, stats)
    }

    fn render(line: &str) -> String {
        let (m, stats) = fixture();
        list(
            m.services(),
            &stats,
            &opts(line),
            4096,
            &Services::builtin(),
        )
        .unwrap()
    }

    #[test]
    fn list_numeric() {
        assert_eq!(
            render("-L -n"),
            "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  192.0.2.1:80 wlc persistent 300 mask 255.255.255.0
  -> 198.51.100.10:80             Tunnel  1      0          0         
  -> 198.51.100.11:80             Route   0      0          0         
  -> 198.51.100.12:8080           Masq    3      12         3         
UDP  192.0.2.1:53 rr
  -> 198.51.100.20:5353           Masq    1      0          0         
TCP  [2001:db8::1]:443 mh (mh-port) persistent 120 mask 64
  -> [2001:db8:1::10]:443         Masq    2      0          0         
"
        );
    }

    #[test]
    fn list_names_ports_and_one_service() {
        assert_eq!(
            render("-L -t 192.0.2.1:80"),
            "\
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  192.0.2.1:http wlc persistent 300 mask 255.255.255.0
  -> 198.51.100.10:http           Tunnel  1      0          0         
  -> 198.51.100.11:http           Route   0      0          0         
  -> 198.51.100.12:http-alt       Masq    3      12         3         
"
        );
        let (m, stats) = fixture();
        let missing = opts("-L -t 192.0.2.9:80");
        let e = list(m.services(), &stats, &missing, 4096, &Services::builtin());
        assert_eq!(e, Err(ListError::NoSuchService));
        assert_eq!(ListError::NoSuchService.exit_code(), 1);
    }

    #[test]
    fn list_stats_abbreviated_and_exact() {
        assert_eq!(
            render("-L -n --stats"),
            "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes
  -> RemoteAddress:Port
TCP  192.0.2.1:80                     1234 99999999  100000K     123G     987T
  -> 198.51.100.10:80                    0        0        0        0        0
  -> 198.51.100.11:80                    0        0        0        0        0
  -> 198.51.100.12:8080               1234 99999999  100000K     123G     987T
UDP  192.0.2.1:53                        0        0        0        0        0
  -> 198.51.100.20:5353                  0        0        0        0        0
TCP  [2001:db8::1]:443                   0        0        0        0        0
  -> [2001:db8:1::10]:443                0        0        0        0        0
"
        );
        let exact = render("-L -n --stats --exact -t 192.0.2.1:80");
        assert_eq!(
            exact.lines().nth(2),
            Some("TCP  192.0.2.1:80                     1234 99999999 100000000 123456789012 987654321098765")
        );
        let mut s = String::new();
        large(&mut s, 100_000_000_000_000, false);
        assert_eq!(s, "     100T");
    }

    #[test]
    fn list_rate() {
        assert_eq!(
            render("-L -n --rate -t 192.0.2.1:80"),
            "\
Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS
  -> RemoteAddress:Port
TCP  192.0.2.1:80                       12     3456     7890  123456K    1234M
  -> 198.51.100.10:80                    0        0        0        0        0
  -> 198.51.100.11:80                    0        0        0        0        0
  -> 198.51.100.12:8080                 12     3456     7890  123456K    1234M
"
        );
    }

    #[test]
    fn list_thresholds_persistent_conn_tun_info() {
        assert_eq!(
            render("-L -n --thresholds -t 192.0.2.1:80"),
            "\
Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn 
  -> RemoteAddress:Port
TCP  192.0.2.1:80 wlc persistent 300 mask 255.255.255.0
  -> 198.51.100.10:80             0          0          0          0         
  -> 198.51.100.11:80             100        50         0          0         
  -> 198.51.100.12:8080           0          0          12         3         
"
        );
        assert_eq!(
            render("-L -n --persistent-conn -t 192.0.2.1:80"),
            "\
Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn 
  -> RemoteAddress:Port
TCP  192.0.2.1:80 wlc persistent 300 mask 255.255.255.0
  -> 198.51.100.10:80             1         0           0          0         
  -> 198.51.100.11:80             0         0           0          0         
  -> 198.51.100.12:8080           3         4           12         3         
"
        );
        assert_eq!(
            render("-L -n --tun-info -t 192.0.2.1:80"),
            "\
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn
TCP  192.0.2.1:80 wlc persistent 300 mask 255.255.255.0
  -> 198.51.100.10:80             Tunnel  ipip          1      0          0         
  -> 198.51.100.11:80             Route   n/a           0      0          0         
  -> 198.51.100.12:8080           Masq    n/a           3      12         3         
"
        );
    }

    #[test]
    fn list_nosort_keeps_the_order_added() {
        let out = render("-L -n --nosort");
        let services: Vec<&str> = out
            .lines()
            .filter(|l| !l.starts_with(' '))
            .skip(2)
            .collect();
        assert_eq!(
            services,
            [
                "UDP  192.0.2.1:53 rr",
                "TCP  [2001:db8::1]:443 mh (mh-port) persistent 120 mask 64",
                "TCP  192.0.2.1:80 wlc persistent 300 mask 255.255.255.0",
            ]
        );
    }

    #[test]
    fn connections_and_timeouts() {
        let sa = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        let entries = [
            ConnEntry {
                proto: L4Proto::Tcp,
                state: ConnState::Established,
                template: false,
                expires_ms: 899_500,
                client: sa("203.0.113.7:40001"),
                virt: sa("192.0.2.1:80"),
                real: sa("198.51.100.12:8080"),
                real_id: RealId(0),
                method: ForwardMethod::Nat,
            },
            ConnEntry {
                proto: L4Proto::Udp,
                state: ConnState::Udp,
                template: false,
                expires_ms: 61_000,
                client: sa("[2001:db8:2::7]:5353"),
                virt: sa("[2001:db8::1]:53"),
                real: sa("[2001:db8:1::10]:53"),
                real_id: RealId(1),
                method: ForwardMethod::Dr,
            },
            ConnEntry {
                proto: L4Proto::Tcp,
                state: ConnState::None,
                template: true,
                expires_ms: 6_000_000,
                client: sa("203.0.113.0:0"),
                virt: sa("192.0.2.1:80"),
                real: sa("198.51.100.12:8080"),
                real_id: RealId(0),
                method: ForwardMethod::Nat,
            },
        ];
        let names = Services::builtin();
        assert_eq!(
            connections(&entries, &opts("-L -n -c"), &names),
            "\
IPVS connection entries
pro expire state       source             virtual            destination
TCP 14:59  ESTABLISHED 203.0.113.7:40001  192.0.2.1:80       198.51.100.12:8080
UDP 01:01  UDP         [2001:db8:2::7]:5353 [2001:db8::1]:53   [2001:db8:1::10]:53
TCP 100:00 NONE        203.0.113.0:0      192.0.2.1:80       198.51.100.12:8080
"
        );
        let named = connections(&entries[..1], &opts("-L -c --persistent-conn"), &names);
        assert_eq!(
            named,
            "\
IPVS connection entries
pro expire state       source             virtual            destination        pe name          pe_data
TCP 14:59  ESTABLISHED 203.0.113.7:40001  192.0.2.1:http     198.51.100.12:http-alt
"
        );
        assert_eq!(
            timeouts(900, 120, 300),
            "Timeout (tcp tcpfin udp): 900 120 300\n"
        );
    }

    #[test]
    fn empty_table_and_texts() {
        let out = list(
            &[],
            &ListStats::default(),
            &ListOptions::all(),
            1 << 20,
            &Services::builtin(),
        );
        assert_eq!(
            out.unwrap(),
            "IP Virtual Server version 1.2.1 (size=1048576)\nProt LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
        );
        assert!(version().starts_with("ipvsadm v1.31 "));
        assert!(usage().contains("--set tcp tcpfin udp"));
        let daemon = opts("-L --daemon");
        assert_eq!(
            list(&[], &ListStats::default(), &daemon, 0, &Services::builtin()),
            Ok(String::new())
        );
    }

    #[test]
    fn daemons_print_as_ipvsadm_prints_them() {
        use crate::sync::{DaemonConfig, DaemonRole};
        let mut m = DaemonConfig::new(DaemonRole::Master);
        m.mcast_interface = Some("eth1".into());
        m.syncid = 3;
        let b = DaemonConfig::new(DaemonRole::Backup);
        assert_eq!(
            daemons(&[m, b]),
            "master sync daemon (mcast=eth1, syncid=3, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n\
             backup sync daemon (mcast=, syncid=0, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n"
        );
        assert_eq!(daemons(&[]), "");
    }
}
