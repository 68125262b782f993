//! Telling the service manager how the director is doing: systemd's
//! `sd_notify` protocol, as `Type=notify` units expect it.
//!
//! # Contract
//! - [`notify`] sends one datagram of `KEY=VALUE` lines to the socket named
//!   by `$NOTIFY_SOCKET` (a path, or an abstract name when it starts with
//!   `@`), and does nothing when that variable is unset or empty: the
//!   director started by hand or by a test has no manager to tell.
//! - `xvs director` sends [`READY`] once the steering programs are attached,
//!   the first snapshot is published and the control socket answers, and
//!   [`STOPPING`] when it starts to stop; systemd orders `After=xvs.service`
//!   units and `systemctl start` on the first.
//! - A failure to send is returned, never fatal: the manager times the
//!   start out on its own, and the director keeps directing.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The variable systemd sets for a `Type=notify` service.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";
/// Start-up is complete: the director directs.
pub const READY: &str = "READY=1";
/// The director has begun to stop.
pub const STOPPING: &str = "STOPPING=1";

/// Sends `state` to the service manager, if there is one; `Ok(false)` when
/// there is none to tell.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os(NOTIFY_SOCKET_ENV).filter(|v| !v.is_empty()) {
        Some(socket) => send_to(&socket.to_string_lossy(), state).map(|()| true),
        None => Ok(false),
    }
}

/// Sends `state` as one datagram to the socket `target` names.
fn send_to(target: &str, state: &str) -> io::Result<()> {
    let addr = match target.strip_prefix('@') {
        Some(name) => abstract_addr(name.as_bytes())?,
        None => SocketAddr::from_pathname(target)?,
    };
    let socket = UnixDatagram::unbound()?;
    socket.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(target_os = "linux")]
fn abstract_addr(name: &[u8]) -> io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(target_os = "linux"))]
fn abstract_addr(_name: &[u8]) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract socket names are Linux's",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn received(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn a_path_socket_gets_the_state_as_one_datagram() {
        let dir = std::env::temp_dir().join(format!("xvs-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let manager = UnixDatagram::bind(&path).unwrap();
        send_to(path.to_str().unwrap(), READY).unwrap();
        assert_eq!(received(&manager), "READY=1");
        send_to(path.to_str().unwrap(), STOPPING).unwrap();
        assert_eq!(received(&manager), "STOPPING=1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_at_sign_names_an_abstract_socket() {
        let name = format!("xvs-notify-test-{}", std::process::id());
        let manager = UnixDatagram::bind_addr(&abstract_addr(name.as_bytes()).unwrap()).unwrap();
        send_to(&format!("@{name}"), READY).unwrap();
        assert_eq!(received(&manager), "READY=1");
    }

    #[test]
    fn no_socket_is_an_error_to_report_not_a_panic() {
        let missing = std::env::temp_dir().join("xvs-notify-nobody-listens.sock");
        assert!(send_to(missing.to_str().unwrap(), READY).is_err());
    }
}
