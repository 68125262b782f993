//! The metrics endpoint: `GET /metrics` over plain HTTP.
//!
//! A few dozen lines on `std::net::TcpListener`: one request per
//! connection, each connection on a thread of its own ([`MAX_SCRAPES`] at
//! once, one more is answered 503 at once) with deadlines for the request
//! head, the daemon's answer and the write, so idle or slow clients delay
//! no other scrape. Each scrape posts a message to the daemon's [`Inbox`]
//! for the numbers and encodes them on its own thread. A scrape endpoint
//! needs nothing more, and an HTTP library would bring an async runtime or
//! a dozen crates for it.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use prometheus_client::encoding::prometheus_text;

use super::encode::encode;
use crate::control::conn::{self, ByDeadline};
use crate::control::inbox::Inbox;

/// Scrapes served at once; one more is answered 503 at once.
pub const MAX_SCRAPES: usize = 64;
/// How long a client may take to send its whole request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a scrape waits for the daemon's numbers (Prometheus
/// gives up on a scrape after 10 s by default).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to read the whole answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most bytes of a request head read.
const MAX_HEAD: usize = 8192;

/// Serves `GET /metrics` on `addr`: a thread accepts, and each connection
/// gets a thread of its own (at most [`MAX_SCRAPES`] at once) with its own
/// deadlines, so an idle or slow client delays no other scrape.
pub fn serve(addr: SocketAddr, inbox: Inbox) -> Result<SocketAddr, String> {
    let listener =
        TcpListener::bind(addr).map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
    let bound = listener.local_addr().unwrap_or(addr);
    std::thread::Builder::new()
        .name("xvs-metrics".into())
        .spawn(move || accept(listener, inbox))
        .map_err(|e| format!("cannot start the metrics thread: {e}"))?;
    Ok(bound)
}

fn accept(listener: TcpListener, inbox: Inbox) {
    conn::serve_each(
        listener.incoming(),
        MAX_SCRAPES,
        "xvs-metrics-conn",
        move |stream| respond(stream, &inbox),
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
fn respond(mut stream: TcpStream, inbox: &Inbox) {
    let head = read_head(&mut ByDeadline::new(&mut stream, HEAD_TIMEOUT));
    let line = String::from_utf8_lossy(&head);
    let mut words = line.split_whitespace();
    let (status, body) = match (words.next(), words.next()) {
        (Some("GET"), Some("/metrics")) => match scrape(inbox) {
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

/// The scrape body of the daemon's numbers, or `None` if it did not answer
/// in time.
fn scrape(inbox: &Inbox) -> Option<String> {
    let numbers = inbox.scrape(Instant::now() + ANSWER_TIMEOUT).ok()?;
    Some(encode(&numbers))
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
    use crate::control::inbox::{self, Message};
    use crate::control::metrics::Scrape;

    /// The endpoint on a free local port, the daemon answering with an
    /// empty scrape.
    fn serve_fixed_answer() -> SocketAddr {
        let (inbox, mailbox) = inbox::channel();
        std::thread::spawn(move || {
            while let Some(message) = mailbox.recv() {
                if let Message::Scrape { reply } = message {
                    let _ = reply.send(Scrape::default());
                }
            }
        });
        serve("127.0.0.1:0".parse().unwrap(), inbox).unwrap()
    }

    /// What an empty scrape encodes to: every family's TYPE and HELP.
    fn fixed_body() -> String {
        encode(&Scrape::default())
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
        assert!(ok.ends_with(&format!("\r\n\r\n{}", fixed_body())), "{ok}");
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
        let want = format!("\r\n\r\n{}", fixed_body());
        let clients: Vec<_> = (0..50)
            .map(|_| {
                let want = want.clone();
                std::thread::spawn(move || {
                    (0..20)
                        .map(|_| try_get(addr, SCRAPE).map_err(|e| e.to_string()))
                        .filter(|r| !matches!(r, Ok(a) if a.ends_with(&want)))
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
}
