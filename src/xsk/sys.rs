//! The few system calls xsk-rs does not wrap.

use std::io;
use std::os::raw::c_int;

const SO_PREFER_BUSY_POLL: c_int = 69;
const SO_BUSY_POLL_BUDGET: c_int = 70;
/// Microseconds the kernel busy-polls a socket's queue before sleeping.
const BUSY_POLL_USECS: c_int = 20;

fn setsockopt_int(fd: c_int, opt: c_int, value: c_int) -> io::Result<()> {
    // SAFETY: value lives across the call and its size is passed.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            &value as *const c_int as *const libc::c_void,
            std::mem::size_of::<c_int>() as libc::socklen_t,
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Asks the kernel to busy-poll this AF_XDP socket's queue (kernel ≥ 5.11).
pub fn prefer_busy_poll(fd: c_int, budget: u16) -> io::Result<()> {
    setsockopt_int(fd, SO_PREFER_BUSY_POLL, 1)?;
    setsockopt_int(fd, libc::SO_BUSY_POLL, BUSY_POLL_USECS)?;
    setsockopt_int(fd, SO_BUSY_POLL_BUDGET, c_int::from(budget))
}

/// Lets the kernel busy-poll `fd`'s queue once, without waiting: with
/// preferred busy polling the kernel leaves the queue's NAPI work to the
/// socket's owner, which drives it through this (or sendto/poll) call.
pub fn busy_poll_once(fd: c_int) {
    // SAFETY: a zero-length receive with a null buffer and no address reads
    // and writes no memory of ours; AF_XDP ignores the buffer anyway.
    unsafe {
        libc::recvfrom(
            fd,
            std::ptr::null_mut(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
}

/// Waits until one of `fds` is readable or `timeout_ms` passes.
pub fn poll_readable(fds: &[c_int], timeout_ms: c_int) {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: pfds is a valid array of its length for the call's duration.
    unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
}

/// The effective user id.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}
