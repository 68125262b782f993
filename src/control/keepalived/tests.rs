use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::health::{CheckKind, CheckSpec, HttpSpec, Notify};
use crate::packet::L4Proto;
use crate::service::{
    ForwardMethod, OnFailure, Persistence, SchedFlags, SchedulerKind, ServiceKey,
};

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/control/keepalived/testdata")
        .join(name)
}

fn fixture(name: &str) -> Keepalived {
    let path = testdata(name);
    load(&path).unwrap_or_else(|e| panic!("{name}:\n{e}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn at(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn tcp(addr: &str, port: u16) -> ServiceKey {
    ServiceKey {
        proto: L4Proto::Tcp,
        addr: ip(addr),
        port,
    }
}

fn real(addr: &str, port: u16, method: ForwardMethod, weight: u32) -> RealSpec {
    RealSpec {
        addr: ip(addr),
        port,
        method,
        weight,
        upper_threshold: 0,
        lower_threshold: 0,
    }
}

fn check_of(k: &Keepalived, real: &str) -> CheckSpec {
    let real = at(real);
    k.checks
        .reals
        .iter()
        .find(|(_, a, _, _)| *a == real)
        .map(|(_, _, c, _)| c.clone())
        .unwrap_or_else(|| panic!("no check for {real}: {:?}", k.checks))
}

fn errors(text: &str) -> Vec<String> {
    match parse(text, "k.conf") {
        Ok(k) => panic!("parsed: {k:?}"),
        Err(e) => e.lines().map(str::to_owned).collect(),
    }
}

fn one_error(text: &str) -> String {
    let e = errors(text);
    assert_eq!(e.len(), 1, "{e:?}");
    e[0].clone()
}

fn wrap_real(inner: &str) -> String {
    format!("virtual_server 192.0.2.1 80 {{\n  real_server 198.51.100.1 80 {{\n{inner}\n  }}\n}}\n")
}

#[test]
fn nat_sample_with_http_get_digests_and_a_sorry_server() {
    let k = fixture("nat_http.conf");
    let key = tcp("192.0.2.10", 80);
    assert_eq!(k.services.len(), 1);
    let (service, policy, reals) = &k.services[0];
    assert_eq!(
        *service,
        ServiceSpec {
            key,
            scheduler: SchedulerKind::Rr,
            sched_flags: SchedFlags::default(),
            persistence: Some(Persistence {
                timeout_secs: 50,
                prefix_len: 32
            }),
        }
    );
    assert_eq!(
        *policy,
        ServicePolicy {
            on_failure: OnFailure::Remove,
            sorry: Some(real("198.51.100.200", 8080, ForwardMethod::Nat, 1)),
            quorum: 1,
            hysteresis: 0,
        }
    );
    assert_eq!(
        *reals,
        vec![
            real("198.51.100.2", 80, ForwardMethod::Nat, 1),
            real("198.51.100.3", 8080, ForwardMethod::Nat, 2),
        ]
    );

    let mut http = HttpSpec::new("/testurl/test.jsp");
    http.digest = Some("640205b7b0fc66c1ea91c463fac6334d".into());
    let mut first = CheckSpec::new(CheckKind::Http(http));
    first.interval = Duration::from_secs(6);
    first.timeout = Duration::from_secs(3);
    first.fall = 4;
    first.delay_before_retry = Duration::from_secs(3);
    first.warmup = Duration::from_secs(6);
    let mut http = HttpSpec::new("/health");
    http.status = vec![200..=200];
    let mut second = CheckSpec::new(CheckKind::Http(http));
    second.interval = Duration::from_secs(6);
    second.timeout = Duration::from_secs(3);
    second.fall = 4;
    second.delay_before_retry = Duration::from_millis(2500);
    second.warmup = Duration::from_secs(6);
    assert_eq!(
        k.checks,
        CheckConfig {
            services: vec![],
            reals: vec![
                (key, at("198.51.100.2:80"), first, Notify::default()),
                (key, at("198.51.100.3:8080"), second, Notify::default()),
            ],
        }
    );
    assert_eq!(k.notes.len(), 1, "{:?}", k.notes);
    assert!(
        k.notes[0].ends_with("nat_http.conf:2: global_defs block ignored: VRRP, addresses and routes stay keepalived's job"),
        "{:?}",
        k.notes
    );
}

#[test]
fn dr_with_tcp_check_quiesces_and_checks_the_port_the_file_gives() {
    let k = fixture("dr_tcp.conf");
    let key = tcp("203.0.113.10", 443);
    let (service, policy, reals) = &k.services[0];
    assert_eq!(service.scheduler, SchedulerKind::Wlc);
    assert_eq!(
        service.persistence,
        Some(Persistence {
            timeout_secs: 360,
            prefix_len: 24
        })
    );
    assert_eq!(policy.on_failure, OnFailure::Quiesce);
    assert_eq!(policy.sorry, None);
    let mut second = real("203.0.113.22", 443, ForwardMethod::Dr, 3);
    second.upper_threshold = 1000;
    second.lower_threshold = 800;
    assert_eq!(
        *reals,
        vec![real("203.0.113.21", 443, ForwardMethod::Dr, 3), second]
    );
    let a = check_of(&k, "203.0.113.21:443");
    assert_eq!(a.kind, CheckKind::Tcp);
    assert_eq!(a.interval, Duration::from_secs(10));
    assert_eq!(
        a.timeout,
        Duration::from_secs(2),
        "inherited from the service"
    );
    assert_eq!(
        (a.fall, a.rise),
        (2, 1),
        "retry 1 by default: down on the second failure"
    );
    assert_eq!(a.delay_before_retry, Duration::from_secs(1));
    assert_eq!(a.connect_port, Some(8443));
    let b = check_of(&k, "203.0.113.22:443");
    assert_eq!(b.timeout, Duration::from_secs(1), "the checker's own wins");
    assert_eq!(
        b.connect_port,
        Some(4443),
        "DR is served on 443, checked where the file says"
    );
    assert_eq!(b.endpoint(at("203.0.113.22:443")), at("203.0.113.22:4443"));
    assert_eq!(k.checks.reals[0].0, key);
    assert_eq!(k.notes.len(), 1, "{:?}", k.notes);
    assert!(
        k.notes[0].contains("dr_tcp.conf:16: bindto ignored"),
        "{:?}",
        k.notes
    );
}

#[test]
fn ssl_get_with_status_ranges_virtualhosts_and_notify_hooks() {
    let k = fixture("ssl_get.conf");
    let (service, _, _) = &k.services[0];
    assert_eq!(service.scheduler, SchedulerKind::Sh);
    assert_eq!(
        service.sched_flags,
        SchedFlags {
            fallback: true,
            port: true
        }
    );
    let a = check_of(&k, "198.51.100.5:443");
    let CheckKind::Https(h) = &a.kind else {
        panic!("{a:?}")
    };
    assert_eq!(h.path, "/status");
    assert_eq!(h.status, vec![200..=299, 301..=301, 400..=404]);
    assert_eq!(h.body_contains.as_deref(), Some("ALIVE"));
    assert_eq!(
        h.host.as_deref(),
        Some("www.example.com"),
        "the service's virtualhost"
    );
    assert!(!h.verify_cert);
    assert_eq!((a.fall, a.timeout), (3, Duration::from_secs(4)));
    assert_eq!(
        a.delay_before_retry,
        Duration::from_secs(3),
        "HTTP's default"
    );
    let notify = &k.checks.reals[0].3;
    assert_eq!(
        *notify,
        Notify {
            up: Some("/usr/local/bin/lvs-notify up 198.51.100.5".into()),
            down: Some("/usr/local/bin/lvs-notify-down".into()),
        }
    );
    let b = check_of(&k, "198.51.100.6:443");
    let CheckKind::Https(h) = &b.kind else {
        panic!("{b:?}")
    };
    assert_eq!(h.path, "/ping");
    assert_eq!(
        h.host.as_deref(),
        Some("api.example.com"),
        "the real server's own"
    );
    assert!(b.start_down, "alpha on");
    assert!(!a.start_down);
    assert_eq!(k.notes.len(), 1, "{:?}", k.notes);
    assert!(
        k.notes[0].contains("ssl_get.conf:29: SSL_GET without enable_sni"),
        "{:?}",
        k.notes
    );
}

#[test]
fn misc_check_with_misc_dynamic_quorum_and_alpha() {
    let k = fixture("misc_dynamic.conf");
    let (_, policy, reals) = &k.services[0];
    assert_eq!((policy.quorum, policy.hysteresis), (3, 1));
    assert_eq!(reals.len(), 2);
    let a = check_of(&k, "198.51.100.7:3306");
    assert_eq!(
        a.kind,
        CheckKind::Exec {
            command: "/etc/keepalived/check_db.sh 198.51.100.7 'read only'".into(),
            dynamic: true
        }
    );
    assert_eq!(a.timeout, Duration::from_secs(3));
    assert_eq!(a.fall, 1, "MISC_CHECK retries 0 times by default");
    assert!(a.start_down, "the service's alpha");
    let b = check_of(&k, "198.51.100.8:3306");
    assert_eq!(
        b.kind,
        CheckKind::Exec {
            command: "/etc/keepalived/check_db.sh".into(),
            dynamic: false
        }
    );
    assert_eq!(
        b.timeout,
        Duration::from_secs(5),
        "misc_timeout defaults to delay_loop"
    );
    // One of two real servers inhibits: a tie, which quiesces.
    assert_eq!(policy.on_failure, OnFailure::Quiesce);
    assert_eq!(k.notes.len(), 1, "{:?}", k.notes);
    assert!(k.notes[0].contains("misc_dynamic.conf:1: 1 of 2 real servers have inhibit_on_failure"));
}

#[test]
fn vrrp_blocks_are_noted_and_the_lvs_part_is_read() {
    let k = fixture("vrrp.conf");
    let notes: Vec<&str> = k
        .notes
        .iter()
        .map(|n| n.rsplit_once(".conf:").unwrap().1)
        .collect();
    assert_eq!(
        notes,
        [
            "2: global_defs block ignored: VRRP, addresses and routes stay keepalived's job",
            "7: vrrp_script block ignored: VRRP, addresses and routes stay keepalived's job",
            "12: vrrp_sync_group block ignored: VRRP, addresses and routes stay keepalived's job",
            "18: vrrp_instance block ignored: VRRP, addresses and routes stay keepalived's job",
            "36: static_ipaddress block ignored: VRRP, addresses and routes stay keepalived's job",
        ]
    );
    let (service, policy, reals) = &k.services[0];
    assert_eq!(service.key.proto, L4Proto::Udp);
    assert_eq!(policy.on_failure, OnFailure::Remove);
    assert_eq!(reals[0], real("192.0.2.51", 53, ForwardMethod::Dr, 1));
    let dns = check_of(&k, "192.0.2.51:53");
    assert_eq!(
        dns.kind,
        CheckKind::Dns {
            name: "www.example.com".into(),
            qtype: 1,
            rcodes: vec![0]
        }
    );
    assert_eq!(dns.fall, 4, "DNS_CHECK retries 3 times by default");
    assert_eq!(
        dns.delay_before_retry,
        Duration::from_secs(3),
        "its delay_loop"
    );
    let udp = check_of(&k, "192.0.2.52:53");
    assert_eq!(
        udp.kind,
        CheckKind::Udp {
            payload: vec![0x0a, 0x0b, 0x0c],
            expect: Some(vec![0x0a, 0x0b, 0x0c])
        }
    );
}

#[test]
fn ipv6_service_with_a_prefix_granularity_and_connect_ip() {
    let k = fixture("ipv6.conf");
    let (service, _, reals) = &k.services[0];
    assert_eq!(service.key, tcp("2001:db8::10", 80));
    assert_eq!(service.scheduler, SchedulerKind::Mh);
    assert!(service.sched_flags.port && !service.sched_flags.fallback);
    assert_eq!(
        service.persistence,
        Some(Persistence {
            timeout_secs: 120,
            prefix_len: 64
        })
    );
    assert_eq!(reals[0], real("2001:db8:1::2", 8080, ForwardMethod::Nat, 5));
    let c = check_of(&k, "[2001:db8:1::2]:8080");
    assert_eq!(c.connect_ip, Some(ip("2001:db8:2::2")));
    assert_eq!(c.warmup, Duration::ZERO);
    assert_eq!(c.interval, Duration::from_secs(2));
    let CheckKind::Http(h) = &c.kind else {
        panic!("{c:?}")
    };
    assert_eq!(h.host.as_deref(), Some("[2001:db8::10]"));
    assert!(k.notes.is_empty(), "{:?}", k.notes);
}

#[test]
fn includes_with_globs_braces_and_relative_paths() {
    let k = fixture("main.conf");
    let keys: Vec<ServiceKey> = k.services.iter().map(|s| s.0.key).collect();
    assert_eq!(
        keys,
        [
            tcp("192.0.2.60", 80),
            tcp("192.0.2.60", 25),
            tcp("192.0.2.61", 80)
        ]
    );
    assert_eq!(k.services[0].0.scheduler, SchedulerKind::Lc);
    // ../reals/*.inc is relative to conf.d/20-mail.conf, inside its block.
    assert_eq!(
        k.services[1].2,
        vec![real("198.51.100.62", 25, ForwardMethod::Nat, 4)]
    );
    assert_eq!(check_of(&k, "198.51.100.61:80").kind, CheckKind::Tcp);
    assert_eq!(
        k.checks.reals.len(),
        1,
        "real servers without a checker are not checked"
    );
    let notes: Vec<String> = k
        .notes
        .iter()
        .map(|n| n.rsplit_once("testdata/").unwrap().1.to_owned())
        .collect();
    assert_eq!(
        notes,
        [
            "main.conf:7: include 'missing/*.conf' matches no file",
            "main.conf:2: global_defs block ignored: VRRP, addresses and routes stay keepalived's job",
            "other/a.conf:1: vrrp_instance block ignored: VRRP, addresses and routes stay keepalived's job",
        ]
    );
}

#[test]
fn a_file_including_itself_stops_with_one_error() {
    let e = load(&testdata("loop/self.conf")).unwrap_err();
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines.len(), 1, "{e}");
    assert!(
        lines[0].ends_with(
            "loop/self.conf:1: include nested deeper than 32 files (does a file include itself?)"
        ),
        "{e}"
    );
}

#[test]
fn include_in_text_without_a_file_is_an_error() {
    assert_eq!(
        one_error("include other.conf\n"),
        "k.conf:1: include is read only from a file (xvs director --keepalived FILE)"
    );
}

#[test]
fn an_include_that_must_match_and_does_not_is_an_error() {
    let dir = testdata("");
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| e.to_string());
    let e = from_text(
        "includem nothing/*.conf\n",
        "m.conf",
        Some(&dir),
        Some(&read),
        "h",
    )
    .unwrap_err();
    assert_eq!(e, "m.conf:1: include 'nothing/*.conf' matches no file");
}

#[test]
fn every_error_of_a_file_is_reported_with_its_line() {
    let text = std::fs::read_to_string(testdata("errors.conf")).unwrap();
    assert_eq!(
        errors(&text),
        [
            "k.conf:2: lb_algo: unknown scheduler 'roundrobin'",
            "k.conf:4: protocol SCTP is not supported by xvs (TCP and UDP are)",
            "k.conf:5: unknown keyword 'foo' in virtual_server",
            "k.conf:6: one-packet scheduling (ops) is not supported by xvs",
            "k.conf:8: 'weight': 'many' is not a whole number up to 65535",
            "k.conf:9: unknown keyword 'bar' in real_server",
            "k.conf:10: SMTP_CHECK is not supported by xvs (TCP_CHECK, HTTP_GET, SSL_GET, \
             DNS_CHECK, MISC_CHECK and UDP_CHECK are)",
            "k.conf:18: xvs checks one url per HTTP_GET; this one has 2 (the second at k.conf:20): keep one",
            "k.conf:23: real_server 2001:db8::72: not of the virtual server's address family \
             (xvs does not cross families)",
            "k.conf:26: virtual_server fwmark is not supported by xvs: give IP PORT",
            "k.conf:29: virtual_server group is not supported by xvs: give IP PORT",
            "k.conf:31: unknown keyword 'frobnicate' at the top level",
        ]
    );
}

#[test]
fn two_checkers_on_one_real_server_are_an_error() {
    let e = one_error(&wrap_real(
        "    TCP_CHECK {\n    }\n    MISC_CHECK {\n      misc_path /bin/true\n    }",
    ));
    assert_eq!(
        e,
        "k.conf:5: xvs runs one checker per real server; this real_server has 2 \
         (the first at k.conf:3): keep one"
    );
}

#[test]
fn lexical_rules_comments_quotes_escapes_and_braces_on_one_line() {
    let text = "virtual_server 192.0.2.1 80 { # a comment\n\
                lb_algo rr ! another\n\
                real_server 198.51.100.1 80 { weight 2 }\n\
                real_server 198.51.100.2 80\n\
                {\n\
                  notify_up \"/bin/echo a\\tb \\x41\\101 'q' #not a comment\"\n\
                  notify_down 'single \"quoted\"'x\n\
                  HTTP_GET { url { path /a } }\n\
                }\n\
                }\n";
    let k = parse(text, "k.conf").unwrap();
    let reals = &k.services[0].2;
    assert_eq!(reals.len(), 2);
    assert_eq!(reals[0].weight, 2);
    let notify = &k.checks.reals[0].3;
    assert_eq!(
        notify.up.as_deref(),
        Some("/bin/echo a\tb AA 'q' #not a comment")
    );
    assert_eq!(notify.down.as_deref(), Some("single \"quoted\"x"));
}

#[test]
fn conditional_lines_follow_the_configuration_id() {
    let text = "virtual_server 192.0.2.1 80 {\n\
                @main lb_algo rr\n\
                @backup lb_algo wrr\n\
                @^main quorum 7\n\
                }\n";
    let main = from_text(text, "k.conf", None, None, "main").unwrap();
    assert_eq!(main.services[0].0.scheduler, SchedulerKind::Rr);
    assert_eq!(main.services[0].1.quorum, 1);
    let backup = from_text(text, "k.conf", None, None, "backup").unwrap();
    assert_eq!(backup.services[0].0.scheduler, SchedulerKind::Wrr);
    assert_eq!(backup.services[0].1.quorum, 7);
}

#[test]
fn unbalanced_braces_are_reported_where_they_are() {
    assert_eq!(
        one_error("virtual_server 192.0.2.1 80 {\n  lb_algo rr\n"),
        "k.conf:1: block opened here has no closing '}'"
    );
    assert_eq!(one_error("}\n"), "k.conf:1: '}' closes no block");
    assert_eq!(
        one_error("virtual_server 192.0.2.1 80 {\n lb_algo \"rr\n}\n"),
        "k.conf:2: unterminated \"quoted string"
    );
}

#[test]
fn parameters_are_substituted_at_use_and_again_in_their_values() {
    let text = "$PORT=80\n\
                $ALGO=rr\n\
                $NET=198.51.${SUB}\n\
                $SUB=100\n\
                virtual_server 192.0.2.1 $PORT {\n\
                lb_algo ${ALGO}\n\
                real_server ${NET}.1 $PORT {\n\
                notify_up \"/bin/echo ${_HASH}1 ${_BANG} $UNDEFINED\"\n\
                TCP_CHECK {\n}\n\
                }\n\
                $SUB=101\n\
                real_server ${NET}.2 $PORT {\n\
                }\n\
                }\n";
    let k = parse(text, "k.conf").unwrap();
    let (service, _, reals) = &k.services[0];
    assert_eq!(service.key, tcp("192.0.2.1", 80));
    assert_eq!(service.scheduler, SchedulerKind::Rr);
    assert_eq!(reals[0].addr, ip("198.51.100.1"));
    assert_eq!(
        reals[1].addr,
        ip("198.51.101.2"),
        "the value at the time of use"
    );
    assert_eq!(
        k.checks.reals[0].3.up.as_deref(),
        Some("/bin/echo #1 ! $UNDEFINED"),
        "comment characters from _HASH and _BANG; an undefined one as written"
    );
    assert!(k.notes.is_empty(), "{:?}", k.notes);
    let k = parse(
        "virtual_server 192.0.2.1 80 {\n real_server 198.51.100.1 80 {\n notify_up /bin/up\n }\n}\n",
        "k.conf",
    )
    .unwrap();
    assert_eq!(
        k.notes,
        ["k.conf:2: notify_up/notify_down of a real_server without a checker never run"]
    );
}

#[test]
fn multiline_parameters_nest_and_carry_definitions() {
    let text = "$RS= \\\n\
                real_server 198.51.100.${N} 80 { \\\n\
                    weight ${N} \\\n\
                    notify_up \"${_PWD}/up.sh ${N}\" \\\n\
                \n\
                    TCP_CHECK { \\\n\
                    } \\\n\
                }\n\
                $VS= \\\n\
                virtual_server 192.0.2.${V} 80 { \\\n\
                    $N=1 \\\n\
                    $RS \\\n\
                    $N=2 \\\n\
                    $RS \\\n\
                }\n\
                @main $V=1\n\
                @^main $V=2\n\
                $VS\n";
    let k = from_text(text, "k.conf", None, None, "main").unwrap();
    assert_eq!(k.services.len(), 1);
    let (service, _, reals) = &k.services[0];
    assert_eq!(service.key, tcp("192.0.2.1", 80));
    assert_eq!(
        *reals,
        vec![
            real("198.51.100.1", 80, ForwardMethod::Nat, 1),
            real("198.51.100.2", 80, ForwardMethod::Nat, 2),
        ]
    );
    assert_eq!(k.checks.reals[1].3.up.as_deref(), Some("./up.sh 2"));
    let k = from_text(text, "k.conf", None, None, "backup").unwrap();
    assert_eq!(k.services[0].0.key, tcp("192.0.2.2", 80));
}

#[test]
fn sequences_random_and_self_using_parameters_are_refused() {
    let e = errors(
        "~SEQ(N, 1, 3) real_server 198.51.100.${N} 80\n$A=x $A \nweight ${_RANDOM 1 9}\n$A\n",
    );
    assert_eq!(
        e,
        [
            "k.conf:1: ~SEQ and ~LST lines are not supported by xvs: write the lines out",
            "k.conf:3: ${_RANDOM} is not supported by xvs: write a number",
            "k.conf:4: parameters expanded more than 32 levels deep (does a parameter use itself?)",
            "k.conf:3: unknown keyword 'weight' at the top level",
        ]
    );
}

#[test]
fn real_server_level_inhibit_and_the_majority() {
    let text = "virtual_server 192.0.2.1 80 {\n\
                real_server 198.51.100.1 80 {\n inhibit_on_failure yes\n }\n\
                real_server 198.51.100.2 80 {\n inhibit_on_failure\n }\n\
                real_server 198.51.100.3 80 {\n }\n\
                }\n";
    let k = parse(text, "k.conf").unwrap();
    assert_eq!(k.services[0].1.on_failure, OnFailure::Quiesce);
    assert_eq!(
        k.notes,
        [
            "k.conf:1: 2 of 3 real servers have inhibit_on_failure; xvs has one policy per \
          service and quiesces every down real server"
        ]
    );
    let text = "virtual_server 192.0.2.1 80 {\n inhibit_on_failure\n\
                real_server 198.51.100.1 80 {\n inhibit_on_failure off\n }\n\
                }\n";
    let k = parse(text, "k.conf").unwrap();
    assert_eq!(
        k.services[0].1.on_failure,
        OnFailure::Remove,
        "the only real server says off"
    );
}

#[test]
fn values_are_checked() {
    for (inner, want) in [
        (
            "weight 70000",
            "'weight': '70000' is not a whole number up to 65535",
        ),
        (
            "delay_loop soon",
            "'delay_loop': 'soon' is not a time in seconds",
        ),
        (
            "alpha maybe",
            "'alpha': 'maybe' is not on|off|true|false|yes|no",
        ),
        (
            "lvs_method TUN type gue port 6080",
            "only ipip tunnels are supported by xvs (not GUE or GRE)",
        ),
        (
            "HTTP_GET {\n url { path / \n status_code 299-200 }\n}",
            "status_code: '299-200': the range is empty",
        ),
        (
            "HTTP_GET {\n url { digest abc }\n}",
            "digest 'abc': an MD5 is 32 hex digits",
        ),
        (
            "HTTP_GET {\n url { regex ^OK$ }\n}",
            "regex '^OK$': xvs matches plain text only (no pattern characters)",
        ),
        (
            "HTTP_GET {\n connect_timeout 1\n}",
            "HTTP_GET needs a url { path ... } block",
        ),
        (
            "MISC_CHECK {\n connect_ip 192.0.2.9\n misc_path /bin/true\n}",
            "unknown keyword 'connect_ip' in MISC_CHECK",
        ),
        (
            "UDP_CHECK {\n require_reply 0aXX\n}",
            "require_reply: '0aXX': xvs matches no wildcard digits (X)",
        ),
        (
            "DNS_CHECK {\n type PTR\n}",
            "DNS_CHECK type 'PTR': A, NS, CNAME, SOA, MX, TXT or AAAA",
        ),
        (
            "TCP_CHECK {\n url { path / }\n}",
            "unknown block 'url' in TCP_CHECK",
        ),
    ] {
        let e = one_error(&wrap_real(inner));
        let msg = e.split_once(": ").unwrap().1;
        assert_eq!(msg, want, "{inner}");
    }
    assert_eq!(
        one_error("virtual_server 192.0.2.1 {\n persistence_timeout 60\n}\n"),
        "k.conf:1: virtual_server without a port (all ports) is not supported by xvs"
    );
    assert_eq!(
        one_error("virtual_server 192.0.2.1 80 {\n persistence_timeout 60\n persistence_granularity 255.0.255.0\n}\n"),
        "k.conf:3: persistence_granularity 255.0.255.0: xvs takes contiguous masks only"
    );
}

#[test]
fn the_sorry_server_follows_its_own_method_and_dr_takes_the_service_port() {
    let text = "virtual_server 192.0.2.1 80 {\n lb_kind DR\n\
                sorry_server 192.0.2.99 8080\n\
                real_server 192.0.2.2 {\n }\n\
                }\n\
                virtual_server 192.0.2.1 81 {\n\
                sorry_server 198.51.100.99\n sorry_server_lvs_method NAT\n\
                }\n";
    let k = parse(text, "k.conf").unwrap();
    assert_eq!(
        k.services[0].1.sorry,
        Some(real("192.0.2.99", 80, ForwardMethod::Dr, 1))
    );
    assert_eq!(
        k.services[0].2,
        vec![real("192.0.2.2", 80, ForwardMethod::Dr, 1)]
    );
    assert_eq!(
        k.services[1].1.sorry,
        Some(real("198.51.100.99", 81, ForwardMethod::Nat, 1))
    );
}

#[test]
fn a_service_or_real_server_defined_twice_is_an_error() {
    let e = errors(
        "virtual_server 192.0.2.1 80 {\n real_server 198.51.100.1 80 {\n }\n real_server 198.51.100.1 80 {\n }\n}\n\
         virtual_server 192.0.2.1 80 {\n}\n",
    );
    assert_eq!(
        e,
        [
            "k.conf:4: real_server 198.51.100.1:80 defined twice (also k.conf:2)",
            "k.conf:7: virtual_server defined twice (also k.conf:1)",
        ]
    );
}

#[test]
fn keys_read_but_not_honoured_are_noted() {
    let text =
        "virtual_server 192.0.2.1 80 {\n smtp_alert\n quorum_up /bin/up\n omega\n ha_suspend\n\
                real_server 198.51.100.1 80 {\n notify_down /bin/down nobody nogroup\n\
                TCP_CHECK {\n bind_port 999\n log_all_failures on\n }\n }\n}\n";
    let k = parse(text, "k.conf").unwrap();
    let notes: Vec<&str> = k
        .notes
        .iter()
        .map(|n| n.split_once(": ").unwrap().1)
        .collect();
    assert_eq!(
        notes,
        [
            "smtp_alert: xvs sends no mail",
            "quorum_up is not run: xvs has no hooks on quorum changes",
            "omega: xvs runs no notify hooks when it stops",
            "ha_suspend: xvs checks whether or not the virtual address is configured",
            "notify_down: runs as the director's user, not nobody nogroup",
            "bind_port ignored: checks leave from the director's own address",
            "log_all_failures: xvs logs every transition and its reason",
        ]
    );
}

#[test]
fn keepalived_process_settings_are_noted() {
    let k = parse("net_namespace lb\nuse_pid_dir\n", "k.conf").unwrap();
    assert_eq!(
        k.notes,
        [
            "k.conf:1: net_namespace ignored: it sets up keepalived's own process",
            "k.conf:2: use_pid_dir ignored: it sets up keepalived's own process",
        ]
    );
}

#[test]
fn braces_expand_as_csh_does() {
    assert_eq!(lex::expand_braces("a{b,c{d,e}}f"), ["abf", "acdf", "acef"]);
    assert_eq!(lex::expand_braces("plain"), ["plain"]);
    assert_eq!(lex::expand_braces("x{,y}"), ["x", "xy"]);
}

#[test]
fn the_including_files_directory_is_no_pattern() {
    let dir = std::env::temp_dir().join(format!("xvs-kad[{}]", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("main.conf"), "include part*.conf\n").unwrap();
    std::fs::write(
        dir.join("part1.conf"),
        "virtual_server 192.0.2.1 80 {\n lb_algo rr\n}\n",
    )
    .unwrap();
    let k = load(&dir.join("main.conf"));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(k.unwrap().services[0].0.key, tcp("192.0.2.1", 80));
}
