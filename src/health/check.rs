//! The checkers: one check of one target, from connect to verdict, with
//! its reason in words when it fails. Each runs inside the target's
//! timeout; a check abandoned (timed out, or its target gone) drops its
//! sockets and kills its process group.

use std::io;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use md5::{Digest, Md5};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::process::Command;

use super::dns;
use super::state::Outcome;
use super::{CheckKind, HttpSpec, Target};

/// The most of an HTTP answer a check reads (head and body).
const HTTP_MAX: usize = 4 << 20;

/// What every check shares: the TLS client configurations, made once.
pub(crate) struct Checker {
    provider: Arc<CryptoProvider>,
    unverified: Arc<ClientConfig>,
    verified: OnceLock<Result<Arc<ClientConfig>, String>>,
}

impl Checker {
    pub fn new() -> io::Result<Checker> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let unverified = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(
                provider.signature_verification_algorithms,
            )))
            .with_no_client_auth();
        Ok(Checker {
            provider,
            unverified: Arc::new(unverified),
            verified: OnceLock::new(),
        })
    }

    /// Checks `target` once: Ok (with a dynamic weight, if any) when up,
    /// else why not. Never takes longer than the target's timeout.
    pub async fn check(&self, target: &Target) -> Outcome {
        let timeout = target.check.timeout;
        match tokio::time::timeout(timeout, self.check_untimed(target)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("timed out after {}", words(timeout))),
        }
    }

    async fn check_untimed(&self, target: &Target) -> Outcome {
        let at = target.check.endpoint(target.real);
        match &target.check.kind {
            CheckKind::Tcp => {
                TcpStream::connect(at).await.map_err(io_reason)?;
                Ok(None)
            }
            CheckKind::Http(http) => {
                let stream = TcpStream::connect(at).await.map_err(io_reason)?;
                get(stream, http, &host_header(http, at, 80)).await
            }
            CheckKind::Https(http) => {
                let config = if http.verify_cert {
                    self.verified()?
                } else {
                    self.unverified.clone()
                };
                let name = match &http.host {
                    Some(host) => ServerName::try_from(strip_port(host).to_string())
                        .map_err(|_| format!("{host:?} is no name for TLS"))?,
                    None => ServerName::IpAddress(at.ip().into()),
                };
                let tcp = TcpStream::connect(at).await.map_err(io_reason)?;
                let tls = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {}", io_reason(e)))?;
                get(tls, http, &host_header(http, at, 443)).await
            }
            CheckKind::Udp { payload, expect } => {
                let answer = exchange(at, payload).await?;
                match expect {
                    Some(expect) if !answer.starts_with(expect) => {
                        Err("answer does not begin as expected".into())
                    }
                    _ => Ok(None),
                }
            }
            CheckKind::Dns {
                name,
                qtype,
                rcodes,
            } => {
                let id = super::random() as u16;
                let answer = exchange(at, &dns::query(id, name, *qtype)?).await?;
                let rcode = dns::answer_rcode(id, &answer)?;
                let wanted = if rcodes.is_empty() { &[0][..] } else { rcodes };
                if wanted.contains(&rcode) {
                    Ok(None)
                } else {
                    Err(format!("DNS rcode {rcode} ({})", dns::rcode_name(rcode)))
                }
            }
            CheckKind::Exec { command, dynamic } => exec(target, command, *dynamic).await,
        }
    }

    fn verified(&self) -> Result<Arc<ClientConfig>, String> {
        self.verified
            .get_or_init(|| {
                let mut roots = RootCertStore::empty();
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err("no trusted certificates on this host to verify with".into());
                }
                let config = ClientConfig::builder_with_provider(self.provider.clone())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                Ok(Arc::new(config))
            })
            .clone()
    }
}

/// A duration in words: "2s", "1.5s", "300ms".
pub(crate) fn words(d: Duration) -> String {
    let ms = d.as_millis();
    if ms >= 1000 && ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else if ms >= 1000 {
        format!("{}s", d.as_secs_f64())
    } else {
        format!("{ms}ms")
    }
}

/// An I/O error in the words a reason uses.
fn io_reason(e: io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::ConnectionReset => "connection reset".into(),
        io::ErrorKind::HostUnreachable => "host unreachable".into(),
        io::ErrorKind::NetworkUnreachable => "network unreachable".into(),
        io::ErrorKind::UnexpectedEof => "connection closed early".into(),
        _ => {
            let text = e.to_string();
            // "Connection timed out (os error 110)" → "connection timed out"
            let text = text.split(" (os error").next().unwrap_or(&text);
            let mut chars = text.chars();
            match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => "I/O error".into(),
            }
        }
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.parse::<u16>().is_ok() => name,
        _ => host,
    }
}

/// The Host header: the spec's, else the address (and the port unless
/// it is the scheme's).
fn host_header(http: &HttpSpec, at: SocketAddr, default_port: u16) -> String {
    if let Some(host) = &http.host {
        return host.clone();
    }
    let ip = match at {
        SocketAddr::V4(v4) => v4.ip().to_string(),
        SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
    };
    if at.port() == default_port {
        ip
    } else {
        format!("{ip}:{}", at.port())
    }
}

/// One GET over `stream` and the verdict on its answer.
async fn get<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    http: &HttpSpec,
    host: &str,
) -> Outcome {
    let path = if http.path.is_empty() {
        "/"
    } else {
        &http.path
    };
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: xvs-health\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(io_reason)?;
    stream.flush().await.map_err(io_reason)?;
    let need_body = http.body_contains.is_some() || http.digest.is_some();
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
            // A TLS peer that closes without close_notify: the end all the same.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && !buf.is_empty() => 0,
            Err(e) => return Err(io_reason(e)),
        };
        buf.extend_from_slice(&chunk[..n]);
        let eof = n == 0;
        if let Some(answer) = parse_answer(&buf, eof, need_body)? {
            return judge(http, &answer);
        }
        if eof {
            return Err("connection closed before a whole answer".into());
        }
        if buf.len() > HTTP_MAX {
            return Err(format!("answer over {} MiB", HTTP_MAX >> 20));
        }
    }
}

/// An HTTP answer as far as a check reads it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    pub status: u16,
    /// The body, decoded from chunks; empty when the check needs none.
    pub body: Vec<u8>,
}

/// The answer in `buf` once there is enough of it: the head, and the
/// body too if `need_body` (whole by Content-Length, chunks or `eof`).
pub(crate) fn parse_answer(
    buf: &[u8],
    eof: bool,
    need_body: bool,
) -> Result<Option<Answer>, String> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > 64 * 1024 {
            return Err("HTTP head over 64 KiB".into());
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| "HTTP head is not text")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut words = status_line.split(' ');
    let version = words.next().unwrap_or("");
    let status = words.next().and_then(|s| s.parse::<u16>().ok());
    let status = match status {
        Some(s) if version.starts_with("HTTP/") => s,
        _ => return Err(format!("no HTTP answer: {:?}", truncate(status_line, 40))),
    };
    if !need_body {
        return Ok(Some(Answer {
            status,
            body: Vec::new(),
        }));
    }
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("bad Content-Length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    let body = &buf[head_end + 4..];
    if chunked {
        // Only try to decode once the last chunk may be in.
        if !eof && !body.ends_with(b"\r\n\r\n") {
            return Ok(None);
        }
        return match dechunk(body) {
            Some(body) => Ok(Some(Answer { status, body })),
            None if eof => Err("bad chunked body".into()),
            None => Ok(None),
        };
    }
    match length {
        Some(n) if body.len() >= n => Ok(Some(Answer {
            status,
            body: body[..n].to_vec(),
        })),
        Some(_) if eof => Err("connection closed before the whole body".into()),
        Some(_) => Ok(None),
        None if eof => Ok(Some(Answer {
            status,
            body: body.to_vec(),
        })),
        None => Ok(None),
    }
}

/// A chunked body decoded, or None while it is not whole.
fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len());
    loop {
        let line_end = find(body, b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size_text = size_text.split(';').next()?.trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        if body.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

/// The verdict on an answer: status, then body substring, then digest.
fn judge(http: &HttpSpec, answer: &Answer) -> Outcome {
    let wanted = if http.status.is_empty() {
        std::slice::from_ref(&(200..=299))
    } else {
        &http.status[..]
    };
    if !wanted.iter().any(|r| r.contains(&answer.status)) {
        return Err(format!("HTTP {}", answer.status));
    }
    if let Some(needle) = &http.body_contains {
        if find(&answer.body, needle.as_bytes()).is_none() && !needle.is_empty() {
            return Err(format!("body lacks {needle:?}"));
        }
    }
    if let Some(digest) = &http.digest {
        let got = md5_hex(&answer.body);
        if !got.eq_ignore_ascii_case(digest.trim()) {
            return Err(format!("digest mismatch (body's MD5 is {got})"));
        }
    }
    Ok(None)
}

/// The MD5 of `data` as lowercase hex, as keepalived's `digest` holds it.
pub fn md5_hex(data: &[u8]) -> String {
    Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Sends one datagram to `at` and waits for one back.
async fn exchange(at: SocketAddr, payload: &[u8]) -> Result<Vec<u8>, String> {
    let local: SocketAddr = if at.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await.map_err(io_reason)?;
    socket.connect(at).await.map_err(io_reason)?;
    socket.send(payload).await.map_err(io_reason)?;
    let mut buf = vec![0u8; 64 * 1024];
    let n = socket.recv(&mut buf).await.map_err(io_reason)?;
    buf.truncate(n);
    Ok(buf)
}

/// Runs `command` with `sh -c` in a process group of its own, killed whole
/// when the check is abandoned.
async fn exec(target: &Target, command: &str, dynamic: bool) -> Outcome {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .envs(target_env(target))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run sh: {}", io_reason(e)))?;
    let mut group = Group(child.id());
    let status = child.wait().await.map_err(io_reason)?;
    group.0 = None;
    match status.code() {
        Some(0) => Ok(None),
        Some(code) if dynamic && code >= 2 => Ok(Some(code as u32 - 2)),
        Some(code) => Err(format!("exit {code}")),
        None => {
            use std::os::unix::process::ExitStatusExt;
            Err(format!("killed by signal {}", status.signal().unwrap_or(0)))
        }
    }
}

/// The environment of an exec check and of a notify hook: XVS_REAL and
/// XVS_SERVICE.
pub(crate) fn target_env(target: &Target) -> [(&'static str, String); 2] {
    [
        ("XVS_REAL", target.real.to_string()),
        ("XVS_SERVICE", service_words(target)),
    ]
}

/// A service as ipvsadm names it: "TCP 192.0.2.10:80".
pub(crate) fn service_words(target: &Target) -> String {
    let key = &target.service;
    format!(
        "{} {}",
        key.proto.name(),
        SocketAddr::new(key.addr, key.port)
    )
}

/// A process group still running, killed when dropped.
pub(crate) struct Group(pub Option<u32>);

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// HTTPS without certificate checks (keepalived `SSL_GET`'s default): any
/// certificate, but the handshake's signatures still verified.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
