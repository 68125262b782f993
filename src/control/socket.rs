//! The control socket: where it lives, the director's listener, the
//! `xvs ipvsadm` client, and the per-interface lock that keeps a second
//! director off an interface.
//!
//! The director binds a Unix stream socket (default [`DEFAULT_SOCKET`],
//! overridden by `--control-socket` or [`SOCKET_ENV`]) with mode 0600 in a
//! directory it creates with mode 0700: only root (the owner) may connect.
//! A listener thread accepts connections; each gets a thread of its own
//! (at most [`MAX_CLIENTS`] at once) that reads one [`Request`] with a
//! timeout and hands it to the director thread as a [`Job`] over a
//! channel; the director thread, which owns the service model, answers on
//! the job's own channel. Workers never see any of this. A message that is
//! garbage, truncated, oversized or too slow gets an error [`Response`] and
//! never reaches the director thread.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam::channel::{bounded, Sender};
use nix::fcntl::{Flock, FlockArg};

use super::ipvsadm::EXIT_FAILED;
use super::protocol::{Request, Response, MAX_PAYLOAD};

/// Where the director listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/xvs/control.sock";
/// Environment variable naming the socket (the flag wins over it).
pub const SOCKET_ENV: &str = "XVS_CONTROL_SOCKET";
/// Where the per-interface locks live.
pub const LOCK_DIR: &str = "/run/xvs/lock";
/// Connections served at once; more are refused with an error response.
pub const MAX_CLIENTS: usize = 16;
/// How long a client may take to send its whole request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection waits for the director thread's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

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

/// Work for the director thread.
pub enum Job {
    /// An `xvs ipvsadm` invocation.
    Ipvsadm {
        request: Request,
        reply: Sender<Response>,
    },
    /// A metrics scrape: the Prometheus text.
    Metrics { reply: Sender<String> },
}

/// The bound control socket; the file is removed on drop.
pub struct ControlSocket {
    path: PathBuf,
}

impl ControlSocket {
    /// Binds `path` and starts the listener thread, which sends each
    /// well-formed request to `jobs`. Fails, changing nothing, if another
    /// director answers on `path`; a stale socket file is replaced.
    pub fn bind(path: &Path, jobs: Sender<Job>) -> Result<ControlSocket, String> {
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
            .spawn(move || listen(listener, jobs))
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

fn listen(listener: UnixListener, jobs: Sender<Job>) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        if active.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
            active.fetch_sub(1, Ordering::AcqRel);
            let _ = stream.set_write_timeout(Some(READ_TIMEOUT));
            let _ = Response::error(EXIT_FAILED, "xvs: too many control connections at once")
                .write_to(&mut stream);
            continue;
        }
        let (jobs, active2) = (jobs.clone(), Arc::clone(&active));
        let spawned = std::thread::Builder::new()
            .name("xvs-control-conn".into())
            .spawn(move || {
                serve(stream, &jobs);
                active2.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// A stream read against one deadline for everything, however the bytes
/// are paced: a client sending a byte now and then must not hold one of the
/// [`MAX_CLIENTS`] places.
struct ByDeadline<'a> {
    stream: &'a mut UnixStream,
    deadline: std::time::Instant,
}

impl std::io::Read for ByDeadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self
            .deadline
            .saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                ErrorKind::TimedOut,
                "the request took too long to arrive",
            ));
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

/// One connection: one request, one response.
fn serve(mut stream: UnixStream, jobs: &Sender<Job>) {
    let _ = stream.set_write_timeout(Some(READ_TIMEOUT));
    let mut reader = ByDeadline {
        stream: &mut stream,
        deadline: std::time::Instant::now() + READ_TIMEOUT,
    };
    let response = match Request::read_from(&mut reader) {
        Ok(request) => {
            let (reply, answer) = bounded(1);
            if jobs.send(Job::Ipvsadm { request, reply }).is_err() {
                Response::error(EXIT_FAILED, "xvs: the director is stopping")
            } else {
                answer.recv_timeout(ANSWER_TIMEOUT).unwrap_or_else(|_| {
                    Response::error(EXIT_FAILED, "xvs: the director did not answer in time")
                })
            }
        }
        Err(e) => Response::error(EXIT_FAILED, format!("xvs: bad control message: {e}")),
    };
    let _ = response.write_to(&mut stream);
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
    request.write_to(&mut stream).map_err(unreachable)?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Response::read_from(&mut stream).map_err(|e| {
        ClientError(format!(
            "the xvs director at {} gave no answer: {e}",
            path.display()
        ))
    })
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
                Err((mut file, _)) => {
                    let mut pid = String::new();
                    let _ = file.read_to_string(&mut pid);
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

    fn temp_dir(what: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("xvs-sock-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// A director thread stand-in: answers every job with the arguments.
    fn echo(jobs: crossbeam::channel::Receiver<Job>) {
        std::thread::spawn(move || {
            for job in jobs {
                if let Job::Ipvsadm { request, reply } = job {
                    let _ = reply.send(Response::ok(request.args.join(" ")));
                }
            }
        });
    }

    #[test]
    fn serves_requests_and_refuses_garbage_without_passing_it_on() {
        let dir = temp_dir("serve");
        let path = dir.join("sub").join("control.sock");
        let (tx, rx) = crossbeam::channel::unbounded();
        let seen = {
            let (stx, srx) = crossbeam::channel::unbounded();
            std::thread::spawn(move || {
                for job in rx {
                    if let Job::Ipvsadm { request, reply } = job {
                        let _ = stx.send(request.args.clone());
                        let _ = reply.send(Response::ok(request.args.join(" ")));
                    }
                }
            });
            srx
        };
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

        // Garbage, a truncated frame and an oversized one: an error reply,
        // nothing reaches the director thread.
        let mut oversized = b"XVS1".to_vec();
        oversized.extend_from_slice(&u32::MAX.to_be_bytes());
        let truncated = req.encode()[..10].to_vec();
        for bad in [b"hello\n".to_vec(), truncated, oversized] {
            let mut s = UnixStream::connect(&path).unwrap();
            s.write_all(&bad).unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            let r = Response::read_from(&mut s).unwrap();
            assert_eq!(r.exit_code, 255);
            assert!(r.stderr.starts_with("xvs: bad control message"), "{r:?}");
        }
        assert!(seen.try_recv().is_err());

        // A second director on the same path fails and leaves the first be.
        let (tx2, _rx2) = crossbeam::channel::unbounded();
        let e = ControlSocket::bind(&path, tx2).err().unwrap();
        assert!(e.contains("another xvs director is running"), "{e}");
        assert_eq!(call(&path, &req).unwrap().stdout, "-L -n");
        drop(sock);
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_dribbling_client_is_cut_off_at_the_deadline() {
        let dir = temp_dir("dribble");
        let path = dir.join("control.sock");
        let (tx, _rx) = crossbeam::channel::unbounded();
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
        assert!(r.stderr.contains("took too long"), "{r:?}");
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
        let (tx, rx) = crossbeam::channel::unbounded();
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
        let (tx, _rx) = crossbeam::channel::unbounded();
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
