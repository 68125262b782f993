//! The checkers against small servers on loopback, and the monitor's
//! runtime: reports, hooks, hanging targets, flapping, reconciliation.
//! Durations are short and bounds generous (the machine is shared).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::check::Checker;
use super::*;
use crate::packet::L4Proto;

const SERVICE: ServiceKey = ServiceKey {
    proto: L4Proto::Tcp,
    addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
    port: 80,
};

fn target(real: SocketAddr, kind: CheckKind) -> Target {
    Target {
        service: SERVICE,
        real,
        check: CheckSpec {
            interval: Duration::from_millis(50),
            timeout: Duration::from_millis(500),
            delay_before_retry: Duration::from_millis(20),
            ..CheckSpec::new(kind)
        },
        notify: Notify::default(),
    }
}

fn check(target: &Target) -> Result<Option<u32>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let checker = Checker::new().unwrap();
    runtime.block_on(checker.check(target))
}

/// A loopback port that nothing listens on.
fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// A file name in the temporary directory for this test alone.
fn scratch(name: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("xvs-health-{}-{n}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// Serves every connection `answer`, after reading the request's head.
fn serve_http(answer: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            read_head(&mut stream);
            let _ = stream.write_all(answer);
        }
    });
    at
}

fn read_head(stream: &mut impl Read) -> Vec<u8> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    head
}

/// Accepts connections and never answers (they stay open).
fn serve_silence() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = listener.local_addr().unwrap();
    thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    at
}

fn http(spec: HttpSpec, at: SocketAddr) -> Target {
    target(at, CheckKind::Http(spec))
}

#[test]
fn an_http_answer_is_whole_by_its_length_its_chunks_or_its_end() {
    use super::check::{parse_answer, Answer};
    let answer = |status, body: &[u8]| {
        Ok(Some(Answer {
            status,
            body: body.to_vec(),
        }))
    };
    /// Bytes so far, at the end of the stream, body needed, verdict.
    type Case = (&'static [u8], bool, bool, Result<Option<Answer>, String>);
    let cases: &[Case] = &[
        (b"HTTP/1.1 200 OK\r\nServer: x", false, false, Ok(None)),
        (b"HTTP/1.1 503 Busy\r\n\r\n", false, false, answer(503, b"")),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab",
            false,
            true,
            Ok(None),
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nabcdef",
            false,
            true,
            answer(200, b"abcd"),
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab",
            true,
            true,
            Err("connection closed before the whole body".into()),
        ),
        (
            b"HTTP/1.0 200 OK\r\n\r\nuntil the end",
            false,
            true,
            Ok(None),
        ),
        (
            b"HTTP/1.0 200 OK\r\n\r\nuntil the end",
            true,
            true,
            answer(200, b"until the end"),
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n",
            false,
            true,
            Ok(None),
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\n\r\n",
            false,
            true,
            answer(200, b"abc"),
        ),
        (
            b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
            false,
            false,
            Err("no HTTP answer: \"SSH-2.0-OpenSSH_9.2\"".into()),
        ),
    ];
    for (i, (bytes, eof, need_body, verdict)) in cases.iter().enumerate() {
        assert_eq!(&parse_answer(bytes, *eof, *need_body), verdict, "case {i}");
    }
}

#[test]
fn tcp_is_up_when_it_connects_and_down_when_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = listener.local_addr().unwrap();
    assert_eq!(check(&target(at, CheckKind::Tcp)), Ok(None));
    assert_eq!(
        check(&target(closed_port(), CheckKind::Tcp)),
        Err("connection refused".into())
    );
}

#[test]
fn connect_ip_and_port_replace_the_real_servers() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = listener.local_addr().unwrap();
    let mut t = target("192.0.2.1:80".parse().unwrap(), CheckKind::Tcp);
    t.check.connect_ip = Some(at.ip());
    t.check.connect_port = Some(at.port());
    assert_eq!(check(&t), Ok(None));
}

#[test]
fn http_status_must_be_in_range() {
    let ok = serve_http(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
    let error = serve_http(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(check(&http(HttpSpec::new("/"), ok)), Ok(None));
    assert_eq!(
        check(&http(HttpSpec::new("/"), error)),
        Err("HTTP 500".into())
    );
    let mut spec = HttpSpec::new("/");
    spec.status = vec![500..=500, 502..=504];
    assert_eq!(check(&http(spec.clone(), error)), Ok(None));
    assert_eq!(check(&http(spec, ok)), Err("HTTP 204".into()));
}

#[test]
fn http_body_must_contain_the_substring() {
    let at = serve_http(b"HTTP/1.0 200 OK\r\n\r\nall is ok here");
    let mut spec = HttpSpec::new("/health");
    spec.body_contains = Some("is ok".into());
    assert_eq!(check(&http(spec.clone(), at)), Ok(None));
    spec.body_contains = Some("fine".into());
    assert_eq!(check(&http(spec, at)), Err("body lacks \"fine\"".into()));
}

#[test]
fn http_digest_is_the_bodys_md5_also_when_chunked() {
    let at = serve_http(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    );
    let mut spec = HttpSpec::new("/");
    spec.digest = Some(md5_hex(b"hello world"));
    assert_eq!(
        spec.digest.as_deref(),
        Some("5eb63bbbe01eeed093cb22bb8f5acdc3")
    );
    assert_eq!(check(&http(spec.clone(), at)), Ok(None));
    spec.digest = Some(md5_hex(b"hello"));
    let reason = check(&http(spec, at)).unwrap_err();
    assert!(reason.starts_with("digest mismatch"), "{reason}");
}

#[test]
fn http_sends_the_path_and_host_asked_for() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let head = read_head(&mut stream);
        stream
            .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .unwrap();
        String::from_utf8(head).unwrap()
    });
    let mut spec = HttpSpec::new("/status?full=1");
    spec.host = Some("www.example.org".into());
    assert_eq!(check(&http(spec, at)), Ok(None));
    let head = server.join().unwrap();
    assert!(
        head.starts_with("GET /status?full=1 HTTP/1.0\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nHost: www.example.org\r\n"), "{head}");
}

#[test]
fn an_answer_that_never_comes_times_out() {
    let at = serve_silence();
    let mut t = http(HttpSpec::new("/"), at);
    t.check.timeout = Duration::from_millis(200);
    let started = Instant::now();
    assert_eq!(check(&t), Err("timed out after 200ms".into()));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn https_checks_skip_certificates_unless_asked() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = certified.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = listener.local_addr().unwrap();
    let sni = Arc::new(Mutex::new(Vec::new()));
    let seen = sni.clone();
    thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                continue;
            };
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            read_head(&mut tls);
            seen.lock()
                .unwrap()
                .push(tls.conn.server_name().map(str::to_string));
            let _ = tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nsecured");
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    let mut spec = HttpSpec::new("/");
    spec.host = Some("localhost".into());
    spec.body_contains = Some("secured".into());
    assert_eq!(check(&target(at, CheckKind::Https(spec.clone()))), Ok(None));
    assert_eq!(sni.lock().unwrap().as_slice(), &[Some("localhost".into())]);
    spec.verify_cert = true;
    let reason = check(&target(at, CheckKind::Https(spec))).unwrap_err();
    assert!(
        reason.starts_with("TLS") || reason.starts_with("no trusted"),
        "{reason}"
    );
}

#[test]
fn udp_expects_an_answer_beginning_as_asked() {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let at = server.local_addr().unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = server.recv_from(&mut buf) {
            let mut answer = b"pong ".to_vec();
            answer.extend_from_slice(&buf[..n]);
            let _ = server.send_to(&answer, from);
        }
    });
    let kind = |expect: Option<&[u8]>| CheckKind::Udp {
        payload: b"ping".to_vec(),
        expect: expect.map(<[u8]>::to_vec),
    };
    assert_eq!(check(&target(at, kind(None))), Ok(None));
    assert_eq!(check(&target(at, kind(Some(b"pong ping")))), Ok(None));
    assert_eq!(
        check(&target(at, kind(Some(b"pang")))),
        Err("answer does not begin as expected".into())
    );
    let closed = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    assert_eq!(
        check(&target(closed, kind(None))),
        Err("connection refused".into())
    );
}

#[test]
fn dns_checks_the_answers_rcode() {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let at = server.local_addr().unwrap();
    let names = Arc::new(Mutex::new(Vec::new()));
    let seen = names.clone();
    thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = server.recv_from(&mut buf) {
            let mut answer = buf[..n].to_vec();
            seen.lock().unwrap().push(answer[12..].to_vec());
            answer[2] |= 0x80;
            answer[3] = 0x83; // NXDOMAIN
            let _ = server.send_to(&answer, from);
        }
    });
    let kind = |rcodes: Vec<u8>| CheckKind::Dns {
        name: "www.example.org".into(),
        qtype: 1,
        rcodes,
    };
    assert_eq!(
        check(&target(at, kind(vec![]))),
        Err("DNS rcode 3 (NXDOMAIN)".into())
    );
    assert_eq!(check(&target(at, kind(vec![0, 3]))), Ok(None));
    assert_eq!(
        names.lock().unwrap()[0],
        b"\x03www\x07example\x03org\x00\x00\x01\x00\x01"
    );
}

fn exec(command: &str, dynamic: bool) -> Target {
    target(
        "198.51.100.1:80".parse().unwrap(),
        CheckKind::Exec {
            command: command.into(),
            dynamic,
        },
    )
}

#[test]
fn exec_is_up_on_exit_zero_with_the_target_in_its_environment() {
    let command =
        r#"test "$XVS_REAL" = 198.51.100.1:80 && test "$XVS_SERVICE" = "TCP 192.0.2.10:80""#;
    assert_eq!(check(&exec(command, false)), Ok(None));
    assert_eq!(check(&exec("exit 3", false)), Err("exit 3".into()));
    assert_eq!(
        check(&exec("kill -9 $$", false)),
        Err("killed by signal 9".into())
    );
}

#[test]
fn dynamic_exec_turns_exit_codes_into_weights() {
    assert_eq!(check(&exec("exit 0", true)), Ok(None));
    assert_eq!(check(&exec("exit 1", true)), Err("exit 1".into()));
    assert_eq!(check(&exec("exit 2", true)), Ok(Some(0)));
    assert_eq!(check(&exec("exit 12", true)), Ok(Some(10)));
    assert_eq!(check(&exec("exit 255", true)), Ok(Some(253)));
}

/// Whether a process of ours still runs (not a zombie).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "not within {limit:?}: {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn an_exec_past_its_timeout_is_killed_with_its_children() {
    let pids = scratch("pids");
    let command = format!(
        "sleep 60 & echo $! > {p}.tmp && mv {p}.tmp {p}; sleep 60",
        p = pids.display()
    );
    let mut t = exec(&command, false);
    t.check.timeout = Duration::from_millis(300);
    assert_eq!(check(&t), Err("timed out after 300ms".into()));
    let grandchild: u32 = std::fs::read_to_string(&pids)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_for(
        "the check's background sleep dies",
        Duration::from_secs(10),
        || !alive(grandchild),
    );
    let _ = std::fs::remove_file(&pids);
}

/// Reports the monitor's sink received.
#[derive(Clone, Default)]
struct Reports(Arc<Mutex<Vec<Report>>>);

impl Reports {
    fn sink(&self) -> Box<dyn Fn(Report) + Send + Sync> {
        let reports = self.0.clone();
        Box::new(move |report| reports.lock().unwrap().push(report))
    }

    fn take(&self) -> Vec<Report> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    fn wait(&self, n: usize) -> Vec<Report> {
        wait_for(&format!("{n} reports"), Duration::from_secs(20), || {
            self.0.lock().unwrap().len() >= n
        });
        self.take()
    }
}

fn status_of(monitor: &Monitor, real: SocketAddr) -> TargetStatus {
    monitor
        .status()
        .into_iter()
        .find(|s| s.real == real)
        .expect("a status for the target")
}

#[test]
fn the_monitor_reports_down_and_up_with_reasons() {
    let reports = Reports::default();
    let monitor = Monitor::start(reports.sink()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = listener.local_addr().unwrap();
    let mut t = target(at, CheckKind::Tcp);
    t.check.fall = 2;
    t.check.rise = 2;
    monitor.set_targets(vec![t.clone()]);
    wait_for("two successful checks", Duration::from_secs(20), || {
        status_of(&monitor, at).latency.count >= 2
    });
    assert!(reports.take().is_empty(), "an up target reports nothing");
    let status = status_of(&monitor, at);
    assert!(status.up);
    assert_eq!(status.kind, "tcp");
    assert_eq!(status.transitions, 0);
    assert!(status
        .last
        .as_ref()
        .is_some_and(|l| l.ok && l.reason.is_empty()));
    drop(listener);
    let down = reports.wait(1);
    assert_eq!(
        down,
        vec![Report {
            service: SERVICE,
            real: at,
            up: false,
            weight: None,
            reason: "connection refused".into(),
        }]
    );
    let status = status_of(&monitor, at);
    assert!(!status.up);
    assert_eq!(status.transitions, 1);
    assert_eq!(status.last.unwrap().reason, "connection refused");
    let _listener = TcpListener::bind(at).unwrap();
    let up = reports.wait(1);
    assert!(up[0].up, "{up:?}");
    assert_eq!(status_of(&monitor, at).transitions, 2);
    let histogram = &status_of(&monitor, at).latency;
    assert_eq!(
        histogram.buckets().last(),
        Some((f64::INFINITY, histogram.count))
    );
    monitor.stop();
}

#[test]
fn a_target_that_starts_down_is_reported_at_once() {
    let reports = Reports::default();
    let monitor = Monitor::start(reports.sink()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = listener.local_addr().unwrap();
    let mut t = target(at, CheckKind::Tcp);
    t.check.start_down = true;
    t.check.warmup = Duration::from_millis(200);
    monitor.set_targets(vec![t]);
    let first = reports.wait(1);
    assert!(!first[0].up);
    assert!(first[0].reason.contains("alpha"), "{first:?}");
    // The warmup is a random part of 200 ms: the first success may have
    // come already, in the same take.
    let up = if first.len() > 1 {
        first[1..].to_vec()
    } else {
        reports.wait(1)
    };
    assert!(up[0].up, "{up:?}");
    monitor.stop();
}

#[test]
fn a_hanging_target_stalls_only_its_own_check() {
    let reports = Reports::default();
    let monitor = Monitor::with_options(
        reports.sink(),
        MonitorOptions {
            threads: 1,
            ..MonitorOptions::default()
        },
    )
    .unwrap();
    let silent = serve_silence();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let good = listener.local_addr().unwrap();
    let mut hanging = http(HttpSpec::new("/"), silent);
    hanging.check.timeout = Duration::from_secs(2);
    hanging.check.interval = Duration::from_secs(2);
    monitor.set_targets(vec![hanging.clone(), target(good, CheckKind::Tcp)]);
    // Replacing the targets while the hanging check is in flight does not wait on it.
    thread::sleep(Duration::from_millis(100));
    let mut changed = hanging.clone();
    changed.check.rise = 2;
    let started = Instant::now();
    monitor.set_targets(vec![changed, target(good, CheckKind::Tcp)]);
    assert!(started.elapsed() < Duration::from_secs(1));
    let down = reports.wait(1);
    assert_eq!(down[0].real, silent);
    assert_eq!(down[0].reason, "timed out after 2s");
    // Meanwhile the good target was checked every 50 ms.
    let good_checks = status_of(&monitor, good).latency.count;
    assert!(good_checks >= 5, "{good_checks} checks of the good target");
    assert!(status_of(&monitor, good).up);
    monitor.stop();
}

#[test]
fn a_flapping_target_reports_each_transition() {
    let reports = Reports::default();
    let monitor = Monitor::start(reports.sink()).unwrap();
    let up = Arc::new(AtomicBool::new(true));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = listener.local_addr().unwrap();
    let serving = up.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            read_head(&mut stream);
            let answer: &[u8] = if serving.load(Ordering::Relaxed) {
                b"HTTP/1.0 200 OK\r\n\r\n"
            } else {
                b"HTTP/1.0 503 Service Unavailable\r\n\r\n"
            };
            let _ = stream.write_all(answer);
        }
    });
    monitor.set_targets(vec![http(HttpSpec::new("/"), at)]);
    for round in 0..3 {
        up.store(false, Ordering::Relaxed);
        let down = reports.wait(1);
        assert_eq!(
            (down[0].up, down[0].reason.as_str()),
            (false, "HTTP 503"),
            "round {round}"
        );
        up.store(true, Ordering::Relaxed);
        assert!(reports.wait(1)[0].up, "round {round}");
    }
    assert_eq!(status_of(&monitor, at).transitions, 6);
    monitor.stop();
}

#[test]
fn set_targets_keeps_restarts_starts_and_stops() {
    let reports = Reports::default();
    let monitor = Monitor::start(reports.sink()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let kept = listener.local_addr().unwrap();
    let down = closed_port();
    let a = target(kept, CheckKind::Tcp);
    let b = target(down, CheckKind::Tcp);
    monitor.set_targets(vec![a.clone(), b.clone()]);
    assert!(!reports.wait(1)[0].up);
    wait_for("checks of the kept target", Duration::from_secs(20), || {
        status_of(&monitor, kept).latency.count >= 3
    });
    // The same set again: nothing restarts, counts go on.
    let before = status_of(&monitor, kept).latency.count;
    monitor.set_targets(vec![a.clone(), b.clone()]);
    assert!(status_of(&monitor, kept).latency.count >= before);
    // A changed check restarts in the state it had, without a report.
    let mut b2 = b.clone();
    b2.check.interval = Duration::from_millis(80);
    monitor.set_targets(vec![a.clone(), b2.clone()]);
    assert!(!status_of(&monitor, down).up);
    assert_eq!(status_of(&monitor, down).transitions, 1);
    thread::sleep(Duration::from_millis(300));
    assert!(
        reports.take().is_empty(),
        "a restarted target reports nothing new"
    );
    // A gone target leaves the status; a new one that starts down is announced.
    let mut c = target(closed_port(), CheckKind::Tcp);
    c.check.start_down = true;
    monitor.set_targets(vec![a.clone(), c.clone()]);
    let reals: Vec<_> = monitor.status().iter().map(|s| s.real).collect();
    assert_eq!(reals.len(), 2);
    assert!(reals.contains(&kept) && reals.contains(&c.real));
    let announced = reports.wait(1);
    assert_eq!((announced[0].real, announced[0].up), (c.real, false));
    thread::sleep(Duration::from_millis(300));
    assert!(
        reports.take().iter().all(|r| r.real != down),
        "a gone target reports nothing"
    );
    monitor.stop();
}

#[test]
fn per_kind_histograms_add_up() {
    let reports = Reports::default();
    let monitor = Monitor::start(reports.sink()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = listener.local_addr().unwrap();
    let other: SocketAddr = SocketAddr::new(at.ip(), closed_port().port());
    let web = serve_http(b"HTTP/1.0 200 OK\r\n\r\n");
    monitor.set_targets(vec![
        target(at, CheckKind::Tcp),
        target(other, CheckKind::Tcp),
        http(HttpSpec::new("/"), web),
    ]);
    wait_for("a few checks of each", Duration::from_secs(20), || {
        monitor.status().iter().all(|s| s.latency.count >= 2)
    });
    let statuses = monitor.status();
    let kinds = by_kind(&statuses);
    let tcp = &kinds.iter().find(|(k, _)| *k == "tcp").unwrap().1;
    let tcp_targets: u64 = statuses
        .iter()
        .filter(|s| s.kind == "tcp")
        .map(|s| s.latency.count)
        .sum();
    assert_eq!(tcp.count, tcp_targets);
    assert!(kinds.iter().any(|(k, _)| *k == "http"));
    let counts: Vec<u64> = tcp.buckets().map(|(_, c)| c).collect();
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
    // The totals keep the checks of targets gone, and of kinds changed.
    let total = |m: &Monitor, kind: &str| {
        m.latency_by_kind()
            .into_iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, h)| h.count)
    };
    let tcp_before = total(&monitor, "tcp");
    let http_before = total(&monitor, "http");
    assert!(tcp_before >= tcp.count && http_before >= 2);
    let mut web_as_tcp = http(HttpSpec::new("/"), web);
    web_as_tcp.check.kind = CheckKind::Tcp;
    monitor.set_targets(vec![web_as_tcp]);
    assert!(total(&monitor, "tcp") >= tcp_before);
    assert!(total(&monitor, "http") >= http_before);
    assert_eq!(status_of(&monitor, web).kind, "tcp");
    monitor.stop();
}

fn read_when_there(path: &PathBuf) -> String {
    wait_for("the hook's file", Duration::from_secs(20), || path.exists());
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn notify_hooks_run_with_the_transition_in_their_environment() {
    let reports = Reports::default();
    let monitor = Monitor::start(reports.sink()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = listener.local_addr().unwrap();
    let down_file = scratch("down");
    let up_file = scratch("up");
    let hook = |file: &PathBuf| {
        format!(
            r#"echo "$XVS_STATE|$XVS_REAL|$XVS_SERVICE|$XVS_REASON" > {f}.tmp && mv {f}.tmp {f}"#,
            f = file.display()
        )
    };
    let mut t = target(at, CheckKind::Tcp);
    t.notify = Notify {
        up: Some(hook(&up_file)),
        down: Some(hook(&down_file)),
    };
    monitor.set_targets(vec![t]);
    drop(listener);
    assert_eq!(
        read_when_there(&down_file),
        format!("down|{at}|TCP 192.0.2.10:80|connection refused\n")
    );
    let _listener = TcpListener::bind(at).unwrap();
    assert_eq!(
        read_when_there(&up_file),
        format!("up|{at}|TCP 192.0.2.10:80|check succeeded\n")
    );
    monitor.stop();
    let _ = std::fs::remove_file(&down_file);
    let _ = std::fs::remove_file(&up_file);
}

#[test]
fn a_hanging_hook_is_killed_and_stalls_nothing() {
    let reports = Reports::default();
    let monitor = Monitor::with_options(
        reports.sink(),
        MonitorOptions {
            notify_timeout: Duration::from_millis(300),
            ..MonitorOptions::default()
        },
    )
    .unwrap();
    let pid_file = scratch("hook-pid");
    let mut t = target(closed_port(), CheckKind::Tcp);
    t.check.start_down = false;
    t.notify.down = Some(format!(
        "echo $$ > {p}.tmp && mv {p}.tmp {p}; exec sleep 60",
        p = pid_file.display()
    ));
    let mut good = target(serve_http(b"HTTP/1.0 200 OK\r\n\r\n"), CheckKind::Tcp);
    good.check.interval = Duration::from_millis(20);
    monitor.set_targets(vec![t, good.clone()]);
    assert!(!reports.wait(1)[0].up);
    let pid: u32 = read_when_there(&pid_file).trim().parse().unwrap();
    let before = status_of(&monitor, good.real).latency.count;
    wait_for(
        "the hanging hook is killed",
        Duration::from_secs(20),
        || !alive(pid),
    );
    assert!(status_of(&monitor, good.real).latency.count > before);
    monitor.stop();
    let _ = std::fs::remove_file(&pid_file);
}

#[test]
fn stop_ends_checks_in_flight_with_their_processes() {
    let reports = Reports::default();
    let monitor = Monitor::start(reports.sink()).unwrap();
    let pid_file = scratch("check-pid");
    let mut t = exec(
        &format!(
            "echo $$ > {p}.tmp && mv {p}.tmp {p}; exec sleep 60",
            p = pid_file.display()
        ),
        false,
    );
    t.check.timeout = Duration::from_secs(60);
    monitor.set_targets(vec![t]);
    let pid: u32 = read_when_there(&pid_file).trim().parse().unwrap();
    assert!(alive(pid));
    let started = Instant::now();
    monitor.stop();
    assert!(started.elapsed() < Duration::from_secs(10));
    wait_for("the check's process dies", Duration::from_secs(10), || {
        !alive(pid)
    });
    assert!(reports.take().is_empty());
    let _ = std::fs::remove_file(&pid_file);
}
