//! The control socket: where it lives, the director's listener, the
//! `xvs ipvsadm` client, and the per-interface lock that keeps a second
//! director off an interface.
//!
//! The director binds a Unix stream socket (default [`DEFAULT_SOCKET`],
//! overridden by `--control-socket` or [`SOCKET_ENV`]) with mode 0600 in a
//! directory it creates with mode 0700: only root (the owner) may connect.
//! A listener thread accepts connections; each gets a thread of its own
//! (at most [`MAX_CLIENTS`] at once; one more is refused with an error
//! response at once) that reads one [`Request`] against one deadline for
//! the whole request and posts it to the daemon's [`Inbox`]; the daemon
//! thread, which owns the service model, answers on the message's own
//! channel. Workers never see any of this. Idle or dribbling
//! clients hold only their own place, until their deadline. A message that
//! is garbage, truncated, oversized, followed by anything or too slow gets
//! an error [`Response`] (a slow one: "timed out") and never reaches the
//! daemon.

use std::fs::File;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use super::conn::{self, ByDeadline};
use super::inbox::{Inbox, Unanswered};
use super::ipvsadm::EXIT_FAILED;
use super::protocol::{ProtocolError, Request, Response, MAX_PAYLOAD};

/// Where the director listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/xvs/control.sock";
/// Environment variable naming the socket (the flag wins over it).
pub const SOCKET_ENV: &str = "XVS_CONTROL_SOCKET";
/// Where the per-interface locks live.
pub const LOCK_DIR: &str = "/run/xvs/lock";
/// Connections served at once; more are refused with an error response.
pub const MAX_CLIENTS: usize = 64;
/// How long a client may take to send its whole request (and end it).
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection waits for the daemon's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a client may take to read the whole answer (`-L -c` of a full
/// connection table is hundreds of megabytes).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `xvs ipvsadm` waits for any part of the answer: longer than
/// the director takes to give up on a request.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(135);

/// The socket path: the flag, else `$XVS_CONTROL_SOCKET`, else the default.
pub fn socket_path(flag: Option<&Path>) -> PathBuf {
    match flag {
        Some(p) => p.to_path_buf(),
        None => std::env::var_os(SOCKET_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
    }
}

/// The bound control socket; the file is removed on drop.
pub struct ControlSocket {
    path: PathBuf,
}

impl ControlSocket {
    /// Binds `path` and starts the listener thread, which sends each
    /// well-formed request to `inbox`. Fails, changing nothing, if another
    /// director answers on `path`; a stale socket file is replaced.
    pub fn bind(path: &Path, inbox: Inbox) -> Result<ControlSocket, String> {
        let shown = path.display();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) if !m.file_type().is_socket() => {
                return Err(format!(
                    "{shown} exists and is not a socket: remove it or choose another \
                     path with --control-socket"
                ))
            }
            Ok(_) => match UnixStream::connect(path) {
                Ok(_) => {
                    return Err(format!(
                        "another xvs director is running: its control socket {shown} answers \
                         (stop it first, or give this one another --control-socket)"
                    ))
                }
                // Left behind by a director that died: take it over.
                Err(_) => std::fs::remove_file(path)
                    .map_err(|e| format!("cannot remove the stale socket {shown}: {e}"))?,
            },
            Err(_) => {}
        }
        let listener =
            UnixListener::bind(path).map_err(|e| format!("cannot listen on {shown}: {e}"))?;
        let socket = ControlSocket {
            path: path.to_path_buf(),
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("cannot make {shown} root-only: {e}"))?;
        std::thread::Builder::new()
            .name("xvs-control".into())
            .spawn(move || listen(listener, inbox))
            .map_err(|e| format!("cannot start the control thread: {e}"))?;
        Ok(socket)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn listen(listener: UnixListener, inbox: Inbox) {
    conn::serve_each(
        listener.incoming(),
        MAX_CLIENTS,
        "xvs-control-conn",
        move |stream| serve(stream, &inbox),
        refuse,
    );
}

/// Over the limit: told so at once by the accepting thread, which must not
/// wait on this client, so without blocking (a fresh connection's buffer
/// takes the short answer). The client reads the answer before it sees
/// the reset its unread request causes.
fn refuse(mut stream: UnixStream) {
    if stream.set_nonblocking(true).is_ok() {
        let _ = Response::error(
            EXIT_FAILED,
            format!(
                "xvs: the director is serving {MAX_CLIENTS} control connections already; try again"
            ),
        )
        .write_to(&mut stream);
    }
}

/// One connection: one request, one response.
fn serve(mut stream: UnixStream, inbox: &Inbox) {
    let mut reader = ByDeadline::new(&mut stream, READ_TIMEOUT);
    match Request::read_from(&mut reader) {
        Ok(request) => answer(&mut stream, &ask(inbox, request)),
        Err(e) => {
            let deadline = reader.deadline;
            answer(&mut stream, &refusal(e));
            // Until the request's deadline, what the client still sends:
            // closed with it unread, the client could lose the answer to a
            // reset while it is still writing.
            ByDeadline {
                stream: &mut stream,
                deadline,
            }
            .drain(MAX_PAYLOAD);
        }
    }
}

fn answer(stream: &mut UnixStream, response: &Response) {
    let _ = response.write_to(&mut ByDeadline::new(stream, WRITE_TIMEOUT));
}

/// What a client whose request could not be read is told.
fn refusal(e: ProtocolError) -> Response {
    match e {
        ProtocolError::TimedOut => Response::error(
            EXIT_FAILED,
            format!(
                "xvs: the request timed out: it did not reach the director whole within {} s",
                READ_TIMEOUT.as_secs()
            ),
        ),
        e => Response::error(EXIT_FAILED, format!("xvs: bad control message: {e}")),
    }
}

/// The daemon's answer to `request`, or why there is none.
fn ask(inbox: &Inbox, request: Request) -> Response {
    match inbox.ipvsadm(request, Instant::now() + ANSWER_TIMEOUT) {
        Ok(response) => response,
        Err(Unanswered::NotPosted) => {
            Response::error(EXIT_FAILED, "xvs: the director is stopping or stuck")
        }
        Err(Unanswered::NoAnswer) => {
            Response::error(EXIT_FAILED, "xvs: the director did not answer in time")
        }
    }
}

/// Why `xvs ipvsadm` got no answer.
#[derive(Debug)]
pub struct ClientError(pub String);

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Sends one request to the director at `path` and waits for its answer.
pub fn call(path: &Path, request: &Request) -> Result<Response, ClientError> {
    let unreachable = |e: std::io::Error| {
        let hint = match e.kind() {
            ErrorKind::PermissionDenied => "the control socket is root-only: run as root",
            _ => "is `xvs director` running?",
        };
        ClientError(format!(
            "cannot reach the xvs director at {}: {e} — {hint}",
            path.display()
        ))
    };
    // The director would refuse it after the header and hang up, which the
    // client would report as a broken pipe: say what is wrong instead.
    let size = request.payload_len();
    if size > MAX_PAYLOAD {
        return Err(ClientError(format!(
            "the request is {size} bytes, over the {MAX_PAYLOAD}-byte limit of one \
             control message (split a large -R input)"
        )));
    }
    let mut stream = UnixStream::connect(path).map_err(unreachable)?;
    let _ = stream.set_read_timeout(Some(CLIENT_TIMEOUT));
    // The end of the stream ends the request (see `protocol`).
    let sent = request
        .write_to(&mut stream)
        .and_then(|()| stream.shutdown(std::net::Shutdown::Write));
    // A director that refused the request (too many connections, too slow)
    // answers and hangs up, which can fail the write: its answer says why.
    match (Response::read_from(&mut stream), sent) {
        (Ok(r), _) => Ok(r),
        (Err(_), Err(e)) => Err(unreachable(e)),
        (Err(ProtocolError::TimedOut), Ok(())) => Err(ClientError(format!(
            "the xvs director at {} did not answer: timed out after {} s",
            path.display(),
            CLIENT_TIMEOUT.as_secs()
        ))),
        (Err(e), Ok(())) => Err(ClientError(format!(
            "the xvs director at {} gave no answer: {e}",
            path.display()
        ))),
    }
}

/// Exclusive locks on the director's interfaces, held while it runs and
/// released by the kernel when the process ends (flock), so a director that
/// died never blocks the next one.
pub struct InterfaceLocks {
    _locks: Vec<Flock<File>>,
}

impl InterfaceLocks {
    /// Locks every interface of this network namespace, or fails naming
    /// the interface and the process that holds it.
    pub fn acquire(interfaces: &[String]) -> Result<InterfaceLocks, String> {
        InterfaceLocks::acquire_in(Path::new(LOCK_DIR), interfaces)
    }

    pub fn acquire_in(dir: &Path, interfaces: &[String]) -> Result<InterfaceLocks, String> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        // Interface names are per network namespace: key on its inode.
        let netns = std::fs::read_link("/proc/self/ns/net")
            .ok()
            .and_then(|l| {
                let s = l.to_string_lossy().into_owned();
                let digits: String = s.chars().filter(char::is_ascii_digit).collect();
                (!digits.is_empty()).then_some(digits)
            })
            .unwrap_or_else(|| "0".into());
        let mut locks = Vec::new();
        for name in interfaces {
            let path = dir.join(format!("netns-{netns}-{name}.lock"));
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(mut lock) => {
                    let _ = lock.set_len(0);
                    let _ = writeln!(&mut *lock, "{}", std::process::id());
                    locks.push(lock);
                }
                Err((file, _)) => {
                    // A pid is a line; never more than a short read.
                    let pid = crate::files::read_bounded(file, 64).unwrap_or_default();
                    return Err(format!(
                        "another xvs director (pid {}) is running on interface {name}: \
                         stop it first",
                        pid.trim()
                    ));
                }
            }
        }
        Ok(InterfaceLocks { _locks: locks })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::inbox::{self, Mailbox, Message};

    fn temp_dir(what: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("xvs-sock-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// A daemon stand-in: answers every job with the arguments.
    fn echo(mailbox: Mailbox) {
        std::thread::spawn(move || {
            while let Some(message) = mailbox.recv() {
                if let Message::Ipvsadm { request, reply } = message {
                    let _ = reply.send(Response::ok(request.args.join(" ")));
                }
            }
        });
    }

    #[test]
    fn serves_requests_root_only_and_one_director_per_path() {
        let dir = temp_dir("serve");
        let path = dir.join("sub").join("control.sock");
        let (tx, rx) = inbox::channel();
        let seen = recording(rx);
        let sock = ControlSocket::bind(&path, tx).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dmode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dmode & 0o777, 0o700);

        let req = Request {
            args: vec!["-L".into(), "-n".into()],
            stdin: None,
        };
        assert_eq!(call(&path, &req).unwrap().stdout, "-L -n");
        assert_eq!(seen.recv().unwrap(), vec!["-L", "-n"]);

        // A second director on the same path fails and leaves the first be.
        let (tx2, _rx2) = inbox::channel();
        let e = ControlSocket::bind(&path, tx2).err().unwrap();
        assert!(e.contains("another xvs director is running"), "{e}");
        assert_eq!(call(&path, &req).unwrap().stdout, "-L -n");
        drop(sock);
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A daemon stand-in that answers every job and hands on
    /// the arguments of each request that reached it.
    fn recording(mailbox: Mailbox) -> crossbeam::channel::Receiver<Vec<String>> {
        let (seen_tx, seen) = crossbeam::channel::unbounded();
        std::thread::spawn(move || {
            while let Some(message) = mailbox.recv() {
                if let Message::Ipvsadm { request, reply } = message {
                    let _ = seen_tx.send(request.args.clone());
                    let _ = reply.send(Response::ok(request.args.join(" ")));
                }
            }
        });
        seen
    }

    /// Writes `bytes` as a client would (then shuts its write side) and
    /// reads the answer. The write may fail once the director has answered
    /// and closed: the answer is what counts.
    fn exchange(path: &Path, bytes: &[u8]) -> Result<Response, ProtocolError> {
        let mut s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let _ = s.write_all(bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        Response::read_from(&mut s)
    }

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut f = b"XVS1".to_vec();
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn malformed_frames_are_answered_and_never_reach_the_director() {
        let dir = temp_dir("malformed");
        let path = dir.join("control.sock");
        let (tx, rx) = inbox::channel();
        let seen = recording(rx);
        let _sock = ControlSocket::bind(&path, tx).unwrap();
        // A request that would change the configuration if it got through.
        let add = Request {
            args: "-A -t 192.0.2.10:80 -s rr"
                .split(' ')
                .map(String::from)
                .collect(),
            stdin: None,
        }
        .encode();
        let payload = &add[8..];
        let with = |head: &[u8], tail: &[u8]| [head, tail].concat();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("not xvs at all", b"hello\n".to_vec()),
            ("an HTTP request", b"GET / HTTP/1.0\r\n\r\n".to_vec()),
            ("another magic", with(b"XVS2", &add[4..])),
            ("nothing at all", Vec::new()),
            ("half a header", b"XVS1\0\0".to_vec()),
            ("a payload cut short", add[..add.len() - 1].to_vec()),
            ("a 4 GiB length", with(b"XVS1", &u32::MAX.to_be_bytes())),
            (
                "one byte over the limit",
                with(b"XVS1", &(MAX_PAYLOAD as u32 + 1).to_be_bytes()),
            ),
            ("an empty payload", framed(&[])),
            (
                "fewer arguments than counted",
                framed(&[0, 0, 0, 2, 0, 0, 0, 1, b'x']),
            ),
            ("more arguments than allowed", framed(&[0, 0, 0x04, 0x01])),
            (
                "a string longer than the payload",
                framed(&[0, 0, 0, 1, 0, 0, 0, 9, b'x']),
            ),
            (
                "an argument not UTF-8",
                framed(&[0, 0, 0, 1, 0, 0, 0, 1, 0xc3, 0]),
            ),
            ("no stdin flag", framed(&[0, 0, 0, 0])),
            ("stdin flag 7", framed(&[0, 0, 0, 0, 7])),
            (
                "stdin not UTF-8",
                framed(&[0, 0, 0, 0, 1, 0, 0, 0, 1, 0xff]),
            ),
            (
                "a byte after the stdin flag",
                framed(&with(payload, &[0xff])),
            ),
            ("a whole request, then junk", with(&add, b"junk")),
            ("two requests back to back", with(&add, &add)),
        ];
        assert!(cases.len() >= 17);
        for (what, bytes) in cases {
            let r = exchange(&path, &bytes).unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
            assert_eq!(r.exit_code, 255, "{what}: {r:?}");
            assert!(
                r.stderr.starts_with("xvs: bad control message: "),
                "{what}: {r:?}"
            );
            assert!(seen.try_recv().is_err(), "{what} reached the director");
        }
        // The same request alone is served.
        let r = exchange(&path, &add).unwrap();
        assert_eq!(r.stdout, "-A -t 192.0.2.10:80 -s rr");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_request_with_a_megabyte_of_junk_gets_its_answer_not_a_reset() {
        let dir = temp_dir("junk");
        let path = dir.join("control.sock");
        let (tx, rx) = inbox::channel();
        let seen = recording(rx);
        let _sock = ControlSocket::bind(&path, tx).unwrap();
        let mut bytes = Request {
            args: vec!["-C".into()],
            stdin: None,
        }
        .encode();
        bytes.resize(bytes.len() + (1 << 20), b'j');
        // A client that stops at a failed write, as many do, still gets to
        // read the answer: the director reads the rest before it hangs up.
        let mut s = UnixStream::connect(&path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(&bytes).expect("the whole request written");
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let r = Response::read_from(&mut s).unwrap();
        assert_eq!(r.exit_code, 255, "{r:?}");
        assert!(r.stderr.contains("bytes after the frame"), "{r:?}");
        assert!(
            seen.try_recv().is_err(),
            "-C with junk reached the director"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn idle_connections_do_not_lock_ipvsadm_out() {
        let dir = temp_dir("idle");
        let path = dir.join("control.sock");
        let (tx, rx) = inbox::channel();
        echo(rx);
        let _sock = ControlSocket::bind(&path, tx).unwrap();
        let idle: Vec<UnixStream> = (0..20)
            .map(|_| UnixStream::connect(&path).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        let start = std::time::Instant::now();
        let req = Request {
            args: vec!["-L".into(), "-n".into()],
            stdin: None,
        };
        let r = call(&path, &req).unwrap();
        assert_eq!(r.stdout, "-L -n", "{r:?}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "with 20 idle connections open, answered only after {:?}",
            start.elapsed()
        );
        drop(idle);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_connection_over_the_limit_is_told_so_at_once() {
        let dir = temp_dir("limit");
        let path = dir.join("control.sock");
        let (tx, rx) = inbox::channel();
        echo(rx);
        let _sock = ControlSocket::bind(&path, tx).unwrap();
        let idle: Vec<UnixStream> = (0..MAX_CLIENTS)
            .map(|_| UnixStream::connect(&path).unwrap())
            .collect();
        // Every place is taken (for the idle ones' five-second deadline):
        // the next client hears why, not a broken pipe, and is not queued,
        // even with a request too large to be written before the refusal.
        let restore = Request {
            args: vec!["-R".into()],
            stdin: Some("-A -t 192.0.2.10:80\n".repeat(1 << 16)),
        };
        let r = call(&path, &restore).unwrap();
        assert_eq!(r.exit_code, 255, "{r:?}");
        assert!(
            r.stderr
                .contains("serving 64 control connections already; try again"),
            "{r:?}"
        );
        drop(idle);
        let start = std::time::Instant::now();
        let req = Request {
            args: vec!["-S".into()],
            stdin: None,
        };
        while call(&path, &req).ok().map(|r| r.stdout).as_deref() != Some("-S") {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "not served again"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_idle_client_is_told_it_timed_out() {
        let dir = temp_dir("timeout");
        let path = dir.join("control.sock");
        let (tx, _rx) = inbox::channel();
        let _sock = ControlSocket::bind(&path, tx).unwrap();
        let start = std::time::Instant::now();
        // Connected, never a byte, never shut down.
        let mut s = UnixStream::connect(&path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let r = Response::read_from(&mut s).unwrap();
        assert_eq!(r.exit_code, 255);
        assert!(r.stderr.starts_with("xvs: the request timed out"), "{r:?}");
        assert!(start.elapsed() < Duration::from_secs(30));
        // A whole request that is never ended by a shutdown: the same.
        let mut s = UnixStream::connect(&path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        Request::default().write_to(&mut s).unwrap();
        let r = Response::read_from(&mut s).unwrap();
        assert!(r.stderr.starts_with("xvs: the request timed out"), "{r:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_dribbling_client_is_cut_off_at_the_deadline() {
        let dir = temp_dir("dribble");
        let path = dir.join("control.sock");
        let (tx, _rx) = inbox::channel();
        let sock = ControlSocket::bind(&path, tx).unwrap();
        let mut s = UnixStream::connect(&path).unwrap();
        let start = std::time::Instant::now();
        let mut writer = s.try_clone().unwrap();
        // One byte a second for 20 s: never five seconds of silence.
        std::thread::spawn(move || {
            for b in b"XVS1\0\0\0\x10aaaaaaaaaaaa" {
                if writer.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        let r = Response::read_from(&mut s).unwrap();
        assert_eq!(r.exit_code, 255);
        assert!(r.stderr.starts_with("xvs: the request timed out"), "{r:?}");
        assert!(
            start.elapsed() < Duration::from_secs(12),
            "cut off only after {:?}",
            start.elapsed()
        );
        drop(sock);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn stale_socket_is_replaced_and_absent_director_is_named() {
        let dir = temp_dir("stale");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("control.sock");
        let e = call(&path, &Request::default()).unwrap_err();
        assert!(
            e.0.contains("cannot reach the xvs director at")
                && e.0.contains("is `xvs director` running?"),
            "{e}"
        );
        drop(UnixListener::bind(&path).unwrap()); // leaves the file behind
        let (tx, rx) = inbox::channel();
        echo(rx);
        let _sock = ControlSocket::bind(&path, tx).unwrap();
        assert_eq!(
            call(
                &path,
                &Request {
                    args: vec!["-S".into()],
                    stdin: None
                }
            )
            .unwrap()
            .stdout,
            "-S"
        );
        // Not a socket: refused, not deleted.
        let file = dir.join("plain");
        std::fs::write(&file, "x").unwrap();
        let (tx, _rx) = inbox::channel();
        assert!(ControlSocket::bind(&file, tx)
            .err()
            .unwrap()
            .contains("is not a socket"));
        assert!(file.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_interface_takes_one_director() {
        let dir = temp_dir("lock");
        let a = InterfaceLocks::acquire_in(&dir, &["eth0".into()]).unwrap();
        let e = InterfaceLocks::acquire_in(&dir, &["eth1".into(), "eth0".into()])
            .err()
            .unwrap();
        assert!(
            e.contains(&format!(
                "another xvs director (pid {}) is running on interface eth0",
                std::process::id()
            )),
            "{e}"
        );
        drop(a);
        InterfaceLocks::acquire_in(&dir, &["eth0".into()]).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
