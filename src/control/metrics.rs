//! Prometheus metrics: the text exposition format over plain HTTP.
//!
//! `--metrics-addr ADDR:PORT` (off by default) starts a thread that
//! answers `GET /metrics` (any other path: 404). Each scrape is a
//! [`Job::Metrics`] to the director thread, which reads the counters into
//! a [`Snapshot`] and encodes it with `prometheus-client`, the Prometheus
//! project's Rust client, so names, escaping and TYPE/HELP lines follow
//! the format without hand-written code. The responder is a few dozen
//! lines on `std::net::TcpListener`: one request per connection, each
//! connection on a thread of its own ([`MAX_SCRAPES`] at once, one more is
//! answered 503 at once) with deadlines for the request head, the
//! director's answer and the write, so idle or slow clients delay no other
//! scrape. A scrape endpoint needs nothing more, and an HTTP library would
//! bring an async runtime or a dozen crates for it.
//!
//! # Metrics
//! Per service (`service="TCP 192.0.2.10:80"`) and real server
//! (`real="198.51.100.2:8080"`), the same numbers as `ipvsadm -L --stats`
//! (so `-Z` resets them, which Prometheus reads as a counter reset):
//! `xvs_service_connections_total`, `xvs_service_packets_total` and
//! `xvs_service_bytes_total` (`direction="in|out"`), the same three as
//! `xvs_real_*`, and gauges `xvs_real_active_connections`,
//! `xvs_real_inactive_connections`, `xvs_real_persistent_connections`,
//! `xvs_real_weight`.
//! Per worker (`worker="0"`): `xvs_worker_rx_frames_total`,
//! `xvs_worker_tx_frames_total`,
//! `xvs_worker_new_connections_total`, `xvs_worker_drops_total`
//! (`reason=` the `DropReason` label; the unclaimed reasons `not_ip`,
//! `other_protocol`, `no_connection`, `icmp_no_connection` count frames the
//! steering program should have left to the kernel), `xvs_worker_tx_ring_full_total`,
//! `xvs_worker_bad_port_total`, `xvs_worker_icmp_too_big_total`,
//! `xvs_worker_checksums_completed_total` (partial checksums finished),
//! `xvs_worker_tcp_resets_sent_total` (answers to segments of no connection),
//! `xvs_worker_outbox_overflow_total` and `xvs_worker_conn_events_dropped_total`
//! (pipeline events lost for want of room), the
//! kernel's AF_XDP counters `xvs_worker_xsk_rx_dropped_total`,
//! `xvs_worker_xsk_rx_ring_full_total`, `xvs_worker_xsk_fill_ring_empty_total`,
//! `xvs_worker_xsk_invalid_descs_total`, frame accounting
//! `xvs_worker_frames{place="total|free|fill|tx|held"}`, frames held for a
//! next hop's MAC and of those sent once it was known
//! (`xvs_worker_neighbour_held_total`, `xvs_worker_neighbour_held_sent_total`),
//! and batch latency
//! `xvs_worker_batch_duration_seconds{quantile="0.5|0.9|0.99|0.999|1"}`
//! with `xvs_worker_batches` (batches in the histogram).
//! Connection table: `xvs_conntrack_connections`, `xvs_conntrack_templates`,
//! `xvs_conntrack_half_open`, `xvs_conntrack_capacity`,
//! `xvs_conntrack_table_full_total`, `xvs_conntrack_reply_conflicts_total`,
//! `xvs_conntrack_template_gone_total`, `xvs_conntrack_released_total`.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use crossbeam::channel::{bounded, Sender};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::conn::{self, ByDeadline};
use super::daemon::Control;
use super::ipvsadm::{RealCounts, TotalStats};
use super::socket::Job;
use crate::conntrack::TableStats;
use crate::counters::{self, WorkerCounters};
use crate::director::Director;
use crate::verdict::DropReason;
use crate::xsk::worker::WorkerStats;

/// Batch-latency quantiles exported.
pub const QUANTILES: [f64; 5] = [0.5, 0.9, 0.99, 0.999, 1.0];

/// Everything a scrape shows, as plain data.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub services: Vec<ServiceMetrics>,
    pub workers: Vec<WorkerMetrics>,
    pub table: TableStats,
    pub table_capacity: usize,
}

#[derive(Clone, Debug, Default)]
pub struct ServiceMetrics {
    /// `TCP 192.0.2.10:80`, `UDP [2001:db8::10]:53`.
    pub label: String,
    pub totals: TotalStats,
    pub reals: Vec<RealMetrics>,
}

#[derive(Clone, Debug, Default)]
pub struct RealMetrics {
    /// `198.51.100.2:8080`.
    pub label: String,
    pub totals: TotalStats,
    pub counts: RealCounts,
    pub weight: u32,
}

#[derive(Clone, Debug, Default)]
pub struct WorkerMetrics {
    /// Every plain counter and the drops by reason ([`crate::counters`]).
    pub counters: WorkerCounters,
    /// The kernel's AF_XDP counters, as [`counters::XSK`] names them.
    pub xsk: [u64; 4],
    /// Frames by [`counters::FRAME_PLACES`].
    pub frames: [u64; 5],
    /// Seconds at each of [`QUANTILES`].
    pub batch_quantiles: Vec<f64>,
    pub batches: u64,
}

impl WorkerMetrics {
    pub fn read(w: &WorkerStats) -> WorkerMetrics {
        let (batch_quantiles, batches) = match w.batch_ns.lock() {
            Ok(h) => (
                QUANTILES
                    .iter()
                    .map(|q| h.value_at_quantile(*q) as f64 / 1e9)
                    .collect(),
                h.len(),
            ),
            Err(_) => (vec![0.0; QUANTILES.len()], 0),
        };
        WorkerMetrics {
            counters: w.counters.read(),
            xsk: w.xsk(),
            frames: w.frames(),
            batch_quantiles,
            batches,
        }
    }
}

/// Reads the director's counters (on the director thread).
pub fn snapshot(director: &Director, control: &Control) -> Snapshot {
    let stats = control.totals(director);
    let services = control
        .model()
        .services()
        .iter()
        .map(|s| ServiceMetrics {
            label: format!(
                "{} {}",
                s.key.proto.name(),
                SocketAddr::new(s.key.addr, s.key.port)
            ),
            totals: stats
                .services
                .get(&s.key)
                .map(|t| t.totals)
                .unwrap_or_default(),
            reals: s
                .reals
                .iter()
                .map(|r| {
                    let st = stats.reals.get(&r.id).copied().unwrap_or_default();
                    RealMetrics {
                        label: SocketAddr::new(r.addr, r.port).to_string(),
                        totals: st.totals,
                        counts: st.counts,
                        weight: r.weight,
                    }
                })
                .collect(),
        })
        .collect();
    let (v4, v6) = director.conns().capacity();
    Snapshot {
        services,
        workers: director
            .worker_stats()
            .iter()
            .map(|w| WorkerMetrics::read(w))
            .collect(),
        table: director.conns().stats(),
        table_capacity: v4 + v6,
    }
}

/// The scrape body for the director's current state.
pub fn render(director: &Director, control: &Control) -> String {
    encode(&snapshot(director, control))
}

type Labels = Vec<(&'static str, String)>;

struct Builder {
    registry: Registry,
}

impl Builder {
    fn counter(&mut self, name: &str, help: &str) -> Family<Labels, Counter> {
        let f = Family::<Labels, Counter>::default();
        self.registry.register(name, help, f.clone());
        f
    }

    fn gauge(&mut self, name: &str, help: &str) -> Family<Labels, Gauge> {
        let f = Family::<Labels, Gauge>::default();
        self.registry.register(name, help, f.clone());
        f
    }

    fn gauge_f64(&mut self, name: &str, help: &str) -> Family<Labels, Gauge<f64, AtomicU64>> {
        let f = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        self.registry.register(name, help, f.clone());
        f
    }
}

fn set(f: &Family<Labels, Counter>, labels: Labels, v: u64) {
    f.get_or_create(&labels).inc_by(v);
}

fn gauge(f: &Family<Labels, Gauge>, labels: Labels, v: u64) {
    f.get_or_create(&labels).set(v.min(i64::MAX as u64) as i64);
}

/// Encodes a snapshot in the Prometheus text format (version 0.0.4).
pub fn encode(s: &Snapshot) -> String {
    let mut b = Builder {
        registry: Registry::default(),
    };
    let svc_conns = b.counter("xvs_service_connections", "Connections scheduled");
    let svc_pkts = b.counter("xvs_service_packets", "Packets forwarded");
    let svc_bytes = b.counter("xvs_service_bytes", "Bytes forwarded");
    let real_conns = b.counter("xvs_real_connections", "Connections scheduled");
    let real_pkts = b.counter("xvs_real_packets", "Packets forwarded");
    let real_bytes = b.counter("xvs_real_bytes", "Bytes forwarded");
    let active = b.gauge("xvs_real_active_connections", "ActiveConn");
    let inactive = b.gauge("xvs_real_inactive_connections", "InActConn");
    let persistent = b.gauge("xvs_real_persistent_connections", "PersistConn (templates)");
    let weight = b.gauge("xvs_real_weight", "Scheduling weight (0: quiesced)");
    for svc in &s.services {
        let l = || vec![("service", svc.label.clone())];
        let dir = |d: &str| {
            let mut v = l();
            v.push(("direction", d.to_string()));
            v
        };
        set(&svc_conns, l(), svc.totals.conns);
        set(&svc_pkts, dir("in"), svc.totals.inpkts);
        set(&svc_pkts, dir("out"), svc.totals.outpkts);
        set(&svc_bytes, dir("in"), svc.totals.inbytes);
        set(&svc_bytes, dir("out"), svc.totals.outbytes);
        for r in &svc.reals {
            let l = || vec![("service", svc.label.clone()), ("real", r.label.clone())];
            let dir = |d: &str| {
                let mut v = l();
                v.push(("direction", d.to_string()));
                v
            };
            set(&real_conns, l(), r.totals.conns);
            set(&real_pkts, dir("in"), r.totals.inpkts);
            set(&real_pkts, dir("out"), r.totals.outpkts);
            set(&real_bytes, dir("in"), r.totals.inbytes);
            set(&real_bytes, dir("out"), r.totals.outbytes);
            gauge(&active, l(), u64::from(r.counts.active));
            gauge(&inactive, l(), u64::from(r.counts.inactive));
            gauge(&persistent, l(), u64::from(r.counts.persistent));
            gauge(&weight, l(), u64::from(r.weight));
        }
    }

    let plain: Vec<_> = counters::COUNTERS
        .iter()
        .map(|c| b.counter(c.name, c.help))
        .collect();
    let drops = b.counter(counters::DROPS.name, counters::DROPS.help);
    let xsk = counters::XSK.map(|c| b.counter(c.name, c.help));
    let frames = b.gauge(counters::FRAMES.name, counters::FRAMES.help);
    let batch = b.gauge_f64(
        "xvs_worker_batch_duration_seconds",
        "Processing time of busy rounds, by quantile",
    );
    let batches = b.gauge("xvs_worker_batches", "Busy rounds in the latency histogram");
    for (i, w) in s.workers.iter().enumerate() {
        let l = || vec![("worker", i.to_string())];
        let with = |k: &'static str, v: &str| {
            let mut x = l();
            x.push((k, v.to_string()));
            x
        };
        for (f, v) in plain.iter().zip(w.counters.values()) {
            set(f, l(), v);
        }
        for (reason, n) in DropReason::ALL.iter().zip(w.counters.drops) {
            set(&drops, with("reason", reason.label()), n);
        }
        for (f, v) in xsk.iter().zip(w.xsk) {
            set(f, l(), v);
        }
        for (place, v) in counters::FRAME_PLACES.iter().zip(w.frames) {
            gauge(&frames, with("place", place), v);
        }
        for (q, v) in QUANTILES.iter().zip(&w.batch_quantiles) {
            batch
                .get_or_create(&with("quantile", &q.to_string()))
                .set(*v);
        }
        gauge(&batches, l(), w.batches);
    }

    let t = &s.table;
    let none = Vec::new;
    gauge(
        &b.gauge("xvs_conntrack_connections", "Live connections"),
        none(),
        t.conns as u64,
    );
    gauge(
        &b.gauge("xvs_conntrack_templates", "Live persistence templates"),
        none(),
        t.templates as u64,
    );
    gauge(
        &b.gauge("xvs_conntrack_half_open", "Connections in SYN_RECV"),
        none(),
        t.half_open as u64,
    );
    gauge(
        &b.gauge("xvs_conntrack_capacity", "Slots, IPv4 and IPv6"),
        none(),
        s.table_capacity as u64,
    );
    for (name, help, v) in [
        (
            "xvs_conntrack_table_full",
            "New connections refused: table full",
            t.table_full,
        ),
        (
            "xvs_conntrack_reply_conflicts",
            "NAT reply keys already taken",
            t.reply_conflicts,
        ),
        (
            "xvs_conntrack_template_gone",
            "Connections whose template had gone",
            t.template_gone,
        ),
        (
            "xvs_conntrack_released",
            "Entries released (expiry, removal)",
            t.released,
        ),
    ] {
        set(&b.counter(name, help), none(), v);
    }

    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_text::encode(&mut out, &b.registry);
    out
}

/// Scrapes served at once; one more is answered 503 at once.
pub const MAX_SCRAPES: usize = 64;
/// How long a client may take to send its whole request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a scrape waits for the director thread's numbers (Prometheus
/// gives up on a scrape after 10 s by default).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to read the whole answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most bytes of a request head read.
const MAX_HEAD: usize = 8192;

/// Serves `GET /metrics` on `addr`: a thread accepts, and each connection
/// gets a thread of its own (at most [`MAX_SCRAPES`] at once) with its own
/// deadlines, so an idle or slow client delays no other scrape.
pub fn serve(addr: SocketAddr, jobs: Sender<Job>) -> Result<SocketAddr, String> {
    let listener =
        TcpListener::bind(addr).map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
    let bound = listener.local_addr().unwrap_or(addr);
    std::thread::Builder::new()
        .name("xvs-metrics".into())
        .spawn(move || accept(listener, jobs))
        .map_err(|e| format!("cannot start the metrics thread: {e}"))?;
    Ok(bound)
}

fn accept(listener: TcpListener, jobs: Sender<Job>) {
    conn::serve_each(
        listener.incoming(),
        MAX_SCRAPES,
        "xvs-metrics-conn",
        move |stream| respond(stream, &jobs),
        refuse,
    );
}

/// Over the limit: a 503 at once, from the accepting thread, which must not
/// wait on this client, so without blocking. A fresh connection's send
/// buffer takes the whole answer.
fn refuse(mut stream: TcpStream) {
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    // Unread bytes would turn the close into a reset that can overtake the
    // answer: read what the request has sent so far.
    let mut buf = [0u8; 1024];
    for _ in 0..MAX_HEAD / buf.len() {
        if !matches!(stream.read(&mut buf), Ok(n) if n > 0) {
            break;
        }
    }
    let busy = format!("{MAX_SCRAPES} scrapes are being served; try again\n");
    let _ = stream.write_all(http_response("503 Service Unavailable", &busy).as_bytes());
    let _ = stream.shutdown(Shutdown::Write);
}

/// One HTTP/1.x request, one response, then close.
fn respond(mut stream: TcpStream, jobs: &Sender<Job>) {
    let head = read_head(&mut ByDeadline::new(&mut stream, HEAD_TIMEOUT));
    let line = String::from_utf8_lossy(&head);
    let mut words = line.split_whitespace();
    let (status, body) = match (words.next(), words.next()) {
        (Some("GET"), Some("/metrics")) => match scrape(jobs) {
            Some(b) => ("200 OK", b),
            None => ("503 Service Unavailable", "the director is busy\n".into()),
        },
        (Some("GET"), _) => ("404 Not Found", "try /metrics\n".into()),
        _ => ("400 Bad Request", "GET /metrics\n".into()),
    };
    let _ = ByDeadline::new(&mut stream, WRITE_TIMEOUT)
        .write_all(http_response(status, &body).as_bytes());
}

/// The request head, or as much of it as came before the deadline.
fn read_head(r: &mut impl Read) -> Vec<u8> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    head
}

/// The director thread's scrape body, or `None` if it did not answer in time.
fn scrape(jobs: &Sender<Job>) -> Option<String> {
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    let (reply, answer) = bounded(1);
    jobs.send_deadline(Job::Metrics { reply }, deadline).ok()?;
    answer.recv_deadline(deadline).ok()
}

fn http_response(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        prometheus_text::CONTENT_TYPE,
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The endpoint on a free local port, the director answering `xvs_up 1`.
    fn serve_fixed_answer() -> SocketAddr {
        let (tx, rx) = crossbeam::channel::unbounded();
        std::thread::spawn(move || {
            for job in rx {
                if let Job::Metrics { reply } = job {
                    let _ = reply.send("xvs_up 1\n".to_string());
                }
            }
        });
        serve("127.0.0.1:0".parse().unwrap(), tx).unwrap()
    }

    fn get(addr: SocketAddr, request: &str) -> String {
        try_get(addr, request).unwrap()
    }

    /// One request and its whole answer; a test fails rather than hangs.
    fn try_get(addr: SocketAddr, request: &str) -> std::io::Result<String> {
        let mut s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        s.write_all(request.as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    const SCRAPE: &str = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";

    #[test]
    fn http_responder_serves_metrics_and_nothing_else() {
        let addr = serve_fixed_answer();
        let ok = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("Content-Type: text/plain; version=0.0.4"),
            "{ok}"
        );
        assert!(ok.ends_with("\r\n\r\nxvs_up 1\n"), "{ok}");
        assert!(get(addr, "GET / HTTP/1.0\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(addr, "\x00\x01garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
    }

    #[test]
    fn a_dribbling_client_does_not_hold_the_endpoint() {
        let addr = serve_fixed_answer();
        // One byte a second for 20 s: never two seconds of silence.
        std::thread::spawn(move || {
            if let Ok(mut s) = TcpStream::connect(addr) {
                for _ in 0..20 {
                    if s.write_all(b"G").is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        let start = std::time::Instant::now();
        let ok = get(addr, "GET /metrics HTTP/1.1\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "served only after {:?}",
            start.elapsed()
        );
    }

    #[test]
    fn idle_connections_do_not_delay_a_scrape() {
        let addr = serve_fixed_answer();
        // Connected, never a byte: each would hold a one-at-a-time
        // endpoint for its whole head deadline.
        let idle: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(addr).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(100));
        let start = std::time::Instant::now();
        let ok = get(addr, SCRAPE);
        assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "with 20 idle connections open, served only after {:?}",
            start.elapsed()
        );
        drop(idle);
    }

    #[test]
    fn a_connection_over_the_limit_is_refused_at_once() {
        let addr = serve_fixed_answer();
        let idle: Vec<TcpStream> = (0..MAX_SCRAPES)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        // Every place is taken (for the idle ones' two-second head
        // deadline): the next one is told so, not queued behind them.
        let busy = get(addr, SCRAPE);
        assert!(busy.starts_with("HTTP/1.1 503 "), "{busy}");
        drop(idle);
        let start = std::time::Instant::now();
        loop {
            match try_get(addr, SCRAPE) {
                Ok(ok) if ok.starts_with("HTTP/1.1 200 OK") => break,
                other => assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "not served once the idle connections went: {other:?}"
                ),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn a_thousand_parallel_scrapes_are_all_answered() {
        let addr = serve_fixed_answer();
        let start = std::time::Instant::now();
        let clients: Vec<_> = (0..50)
            .map(|_| {
                std::thread::spawn(move || {
                    (0..20)
                        .map(|_| try_get(addr, SCRAPE).map_err(|e| e.to_string()))
                        .filter(|r| !matches!(r, Ok(a) if a.ends_with("\r\n\r\nxvs_up 1\n")))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let failed: Vec<_> = clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        assert!(
            failed.is_empty(),
            "{} of 1000 scrapes failed, e.g. {:?}",
            failed.len(),
            failed[0]
        );
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "1000 scrapes took {:?}",
            start.elapsed()
        );
    }

    #[test]
    fn names_and_labels_are_present() {
        let s = Snapshot {
            services: vec![ServiceMetrics {
                label: "TCP 192.0.2.10:80".into(),
                totals: TotalStats {
                    conns: 3,
                    inpkts: 30,
                    outpkts: 20,
                    inbytes: 3000,
                    outbytes: 2000,
                },
                reals: vec![RealMetrics {
                    label: "198.51.100.2:8080".into(),
                    totals: TotalStats {
                        conns: 3,
                        ..TotalStats::default()
                    },
                    counts: RealCounts {
                        active: 2,
                        inactive: 1,
                        persistent: 0,
                    },
                    weight: 5,
                }],
            }],
            workers: vec![WorkerMetrics {
                counters: WorkerCounters {
                    rx: 100,
                    tx: 90,
                    drops: std::array::from_fn(|i| {
                        if i == DropReason::TcpNotSyn as usize {
                            7
                        } else {
                            0
                        }
                    }),
                    ..WorkerCounters::default()
                },
                frames: [4096, 2000, 2048, 48, 0],
                batch_quantiles: vec![1e-6, 2e-6, 3e-6, 4e-6, 5e-6],
                batches: 42,
                ..WorkerMetrics::default()
            }],
            table: TableStats {
                conns: 3,
                ..TableStats::default()
            },
            table_capacity: 1000,
        };
        let text = encode(&s);
        for want in [
            "# TYPE xvs_service_connections_total counter",
            "xvs_service_connections_total{service=\"TCP 192.0.2.10:80\"} 3",
            "xvs_service_packets_total{service=\"TCP 192.0.2.10:80\",direction=\"in\"} 30",
            "xvs_service_bytes_total{service=\"TCP 192.0.2.10:80\",direction=\"out\"} 2000",
            "xvs_real_connections_total{service=\"TCP 192.0.2.10:80\",real=\"198.51.100.2:8080\"} 3",
            "xvs_real_active_connections{service=\"TCP 192.0.2.10:80\",real=\"198.51.100.2:8080\"} 2",
            "xvs_real_inactive_connections{service=\"TCP 192.0.2.10:80\",real=\"198.51.100.2:8080\"} 1",
            "xvs_real_weight{service=\"TCP 192.0.2.10:80\",real=\"198.51.100.2:8080\"} 5",
            "xvs_worker_rx_frames_total{worker=\"0\"} 100",
            "xvs_worker_tx_frames_total{worker=\"0\"} 90",
            "xvs_worker_drops_total{worker=\"0\",reason=\"tcp_not_syn\"} 7",
            "xvs_worker_drops_total{worker=\"0\",reason=\"truncated\"} 0",
            "xvs_worker_frames{worker=\"0\",place=\"fill\"} 2048",
            "xvs_worker_batch_duration_seconds{worker=\"0\",quantile=\"0.99\"} 0.000003",
            "xvs_worker_batches{worker=\"0\"} 42",
            "xvs_worker_xsk_rx_ring_full_total{worker=\"0\"} 0",
            "xvs_conntrack_connections 3",
            "xvs_conntrack_capacity 1000",
            "xvs_conntrack_table_full_total 0",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(text.ends_with("\n"), "{text}");
    }
}
