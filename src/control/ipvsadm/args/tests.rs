//! ipvsadm command lines in, [`Command`]s or ipvsadm's complaints out.

use super::super::*;
use super::parse_line;
use crate::packet::L4Proto;
use crate::service::{
    Edit, ForwardMethod, Persistence, RealSpec, SchedFlags, SchedulerKind, ServiceKey, ServiceSpec,
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
        (
            "-A",
            "You need to supply the 'service-address' option for the 'add-service' command",
        ),
        (
            "-a -t 192.0.2.1:80",
            "You need to supply the 'real-server' option for the 'add-server' command",
        ),
        (
            "-A -t 192.0.2.1:80 -w 3",
            "Illegal 'weight' option with the 'add-service' command",
        ),
        ("-C -n", "Illegal 'numeric' option with the 'flush' command"),
        (
            "-S -c",
            "Illegal 'connection' option with the 'save' command",
        ),
        (
            "-L -c --timeout",
            "The option 'timeout' conflicts with the 'connection' option in the 'list' command",
        ),
        ("-L -c --stats", "options conflicts in the list command"),
        (
            "-L --timeout --persistent-conn",
            "options conflicts in the list command",
        ),
        (
            "-A -t 192.0.2.1:80 -u 192.0.2.1:80",
            "multiple 'service-address' options specified",
        ),
        (
            "-a -t 192.0.2.1:80 -r 198.51.100.1 -g -m",
            "multiple 'forwarding-method' options specified",
        ),
        (
            "-A -t 192.0.2.1",
            "Zero port specified for non-persistent service",
        ),
        (
            "-A -t example.org:80",
            "illegal virtual server address[:port] specified",
        ),
        (
            "-A -t 192.0.2.1:nosuchport",
            "illegal virtual server address[:port] specified",
        ),
        (
            "-A -t 192.0.2.1:65536",
            "illegal virtual server address[:port] specified",
        ),
        (
            "-A -t [2001:db8::1]80",
            "illegal virtual server address[:port] specified",
        ),
        (
            "-A -t 80",
            "illegal virtual server address[:port] specified",
        ),
        (
            "-a -t [2001:db8::1]:80 -r [2001:db8::10] -m",
            "illegal real server address[:port] specified",
        ),
        (
            "-a -t 192.0.2.1:80 -r 198.51.100.1:x",
            "illegal real server address[:port] specified",
        ),
        (
            "-a -t 192.0.2.1:80 -r 198.51.100.1 -w 65536",
            "illegal weight specified",
        ),
        (
            "-a -t 192.0.2.1:80 -r 198.51.100.1 -w -1",
            "illegal weight specified",
        ),
        (
            "-a -t 192.0.2.1:80 -r 198.51.100.1 -x a",
            "illegal u_threshold specified",
        ),
        (
            "-a -t 192.0.2.1:80 -r 198.51.100.1 -y 2147483648",
            "illegal l_threshold specified",
        ),
        (
            "-A -t 192.0.2.1:80 -p 0",
            "invalid timeout value `0' specified",
        ),
        (
            "-A -t 192.0.2.1:80 -p 2678401",
            "invalid timeout value `2678401' specified",
        ),
        (
            "-A -t 192.0.2.1:80 -p -M 255.255.0.x",
            "illegal virtual server persistent mask specified",
        ),
        (
            "-A -t [2001:db8::1]:80 -p -M 129",
            "illegal ipv6 netmask specified",
        ),
        ("--set 900 120", "--set option requires 3 timeout values"),
        ("--set 900 120 x", "invalid timeout value `x' specified"),
        ("-L extra", "unexpected argument extra"),
        (
            "-A -t 192.0.2.1:80 -s rr -b sh-port",
            "incompatible scheduler flag `sh-port'",
        ),
        (
            "-A -t 192.0.2.1:80 -b mh-port",
            "incompatible scheduler flag `mh-port'",
        ),
        (
            "-A -t 192.0.2.1:80 -b bogus",
            "invalid scheduler flag `bogus'",
        ),
        (
            "-a -t 192.0.2.1:80 -r 2001:db8::10 -m",
            "Different address family is allowed only for tunneling servers",
        ),
        (
            "-a -t 192.0.2.1:80 -r 198.51.100.1 -m --tun-type ipip",
            "Tunnel options conflict with forward method",
        ),
        (
            "-a -t 192.0.2.1:80 -r 198.51.100.1 -i --tun-type vxlan",
            "illegal tunnel type specified",
        ),
        (
            "-A -f 1",
            "a firewall-mark service (-f) is not supported by xvs; see README",
        ),
        (
            "-A --sctp-service 192.0.2.1:80",
            "SCTP (--sctp-service) is not supported by xvs; see README",
        ),
        (
            "--start-daemon leader",
            "illegal start-daemon parameter specified",
        ),
        (
            "--stop-daemon primary",
            "illegal stop_daemon parameter specified",
        ),
        (
            "--start-daemon master --syncid 256",
            "illegal syncid specified",
        ),
        (
            "--start-daemon master --mcast-port 0",
            "illegal mcast-port specified",
        ),
        (
            "--start-daemon master --mcast-group 192.0.2.1",
            "illegal mcast-group specified",
        ),
        (
            "--start-daemon master --mcast-group ff02::81",
            "an IPv6 sync group (--mcast-group) is not supported by xvs; see README",
        ),
        (
            "--start-daemon master -t 192.0.2.1:80",
            "Illegal '-t' option with the 'start-daemon' command",
        ),
        (
            "--stop-daemon backup --syncid 1",
            "Illegal '--syncid' option with the 'stop-daemon' command",
        ),
        (
            "-A -t 192.0.2.1:80 --syncid 1",
            "--syncid goes with --start-daemon",
        ),
        (
            "-A -t 192.0.2.1:80 -o",
            "one-packet scheduling (-o) is not supported by xvs; see README",
        ),
        (
            "-A -t 192.0.2.1:80 --pe sip",
            "a persistence engine (--pe) is not supported by xvs; see README",
        ),
        (
            "-a -t 192.0.2.1:80 -r 198.51.100.1 -i --tun-type gue",
            "tunnel type gue is not supported by xvs; see README",
        ),
        (
            "-a -t 192.0.2.1:80 -r 198.51.100.1 -i --tun-port 6080",
            "--tun-port (GUE/GRE tunnel options) is not supported by xvs; see README",
        ),
        (
            "-A -t 192.0.2.1:0 -p",
            "a port-0 (all ports) service is not supported by xvs; see README",
        ),
        (
            "-A -t 192.0.2.1:80 -p -M 255.0.255.0",
            "a non-contiguous persistence mask (255.0.255.0) is not supported by xvs; see README",
        ),
        (
            "-A -t 192.0.2.1:80 -b flag-3",
            "scheduler flag `flag-3' is not supported by xvs; see README",
        ),
        ("-L -6", "-6 used before -f"),
    ];
    for (line, want) in cases {
        assert_eq!(err(line), (want.to_string(), 2), "{line}");
    }
}

#[test]
fn daemon_commands_take_ipvs_options() {
    use crate::sync::{DaemonConfig, DaemonRole};
    assert_eq!(
        ok("--start-daemon backup"),
        Command::StartDaemon(DaemonConfig::new(DaemonRole::Backup))
    );
    let mut want = DaemonConfig::new(DaemonRole::Master);
    want.mcast_interface = Some("eth2".into());
    want.syncid = 7;
    want.maxlen = Some(1400);
    want.group = "239.1.2.3".parse().unwrap();
    want.port = 9000;
    want.ttl = 4;
    assert_eq!(
        ok(
            "--start-daemon master --mcast-interface eth2 --syncid 7 --sync-maxlen 1400 \
            --mcast-group 239.1.2.3 --mcast-port 9000 --mcast-ttl 4"
        ),
        Command::StartDaemon(want)
    );
    assert_eq!(
        ok("--stop-daemon master"),
        Command::StopDaemon(DaemonRole::Master)
    );
}
