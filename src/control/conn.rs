//! What the control socket and the metrics endpoint share: a bounded
//! number of connections served at once, each on a thread of its own and
//! against its own deadlines.
//!
//! A thread per connection (not one thread polling non-blocking sockets)
//! because each connection ends by waiting for the director thread's
//! answer on a channel, which no `poll` can wait on beside the sockets: a
//! thread can block on it with the time left. The threads are bounded (64
//! per server), short-lived, and share nothing but the count of
//! [`Places`]. A connection over the limit is refused by the accepting
//! thread at once; an idle or dribbling one holds its own place until its
//! deadline and delays no other.

use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// At most `max` connections at once.
pub struct Places {
    used: Arc<AtomicUsize>,
    max: usize,
}

/// One connection's place, given back when dropped.
pub struct Place(Arc<AtomicUsize>);

impl Places {
    pub fn new(max: usize) -> Places {
        Places {
            used: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// A place, or `None` when all are taken.
    pub fn take(&self) -> Option<Place> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Place(Arc::clone(&self.used)))
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs `serve` on a thread named `name` that holds `place` until it ends;
/// `false` if no thread could be started (the place is given back).
pub fn spawn(name: &str, place: Place, serve: impl FnOnce() + Send + 'static) -> bool {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _place = place;
            serve();
        })
        .is_ok()
}

/// Serves every connection `incoming` yields on a thread of its own named
/// `name`, at most `limit` at once; one past the limit is handed to `refuse`
/// on the accepting thread, which must answer it without blocking.
pub fn serve_each<S: Send + 'static>(
    incoming: impl Iterator<Item = io::Result<S>>,
    limit: usize,
    name: &str,
    serve: impl Fn(S) + Clone + Send + 'static,
    refuse: impl Fn(S),
) {
    let places = Places::new(limit);
    for stream in incoming {
        let Ok(stream) = stream else {
            // Out of file descriptors, most likely: let some close.
            std::thread::sleep(std::time::Duration::from_millis(10));
            continue;
        };
        match places.take() {
            Some(place) => {
                let serve = serve.clone();
                spawn(name, place, move || serve(stream));
            }
            None => refuse(stream),
        }
    }
}

/// A stream whose timeouts can be set: TCP and Unix.
pub trait Timeouts {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()>;
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()>;
}

impl Timeouts for TcpStream {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, t)
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        TcpStream::set_write_timeout(self, t)
    }
}

impl Timeouts for UnixStream {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        UnixStream::set_read_timeout(self, t)
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        UnixStream::set_write_timeout(self, t)
    }
}

/// A stream read and written against one deadline for everything, however
/// the bytes are paced: a peer sending or taking a byte now and then must
/// not hold its place past the deadline. Past it, every call fails with
/// [`ErrorKind::TimedOut`] (a socket timeout's `WouldBlock` included).
pub struct ByDeadline<'a, S> {
    pub stream: &'a mut S,
    pub deadline: Instant,
}

impl<'a, S: Timeouts> ByDeadline<'a, S> {
    pub fn new(stream: &'a mut S, within: Duration) -> ByDeadline<'a, S> {
        ByDeadline {
            stream,
            deadline: Instant::now() + within,
        }
    }

    fn left(&self) -> io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(timed_out())
        } else {
            Ok(left)
        }
    }

    /// Reads and drops whatever the peer still sends until it shuts its
    /// side, the deadline passes or `limit` bytes went: closing a socket
    /// with unread bytes resets the connection, and the peer may lose the
    /// answer already written to it.
    pub fn drain(&mut self, limit: usize) -> usize
    where
        S: Read,
    {
        let (mut gone, mut buf) = (0, [0u8; 16 << 10]);
        while gone < limit {
            match self.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => gone += n,
            }
        }
        gone
    }
}

fn timed_out() -> io::Error {
    io::Error::new(ErrorKind::TimedOut, "timed out")
}

/// A socket timeout reads as `WouldBlock` on Linux: say what it is.
fn name_timeout(e: io::Error) -> io::Error {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => timed_out(),
        _ => e,
    }
}

impl<S: Timeouts + Read> Read for ByDeadline<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.set_read_timeout(Some(self.left()?))?;
        self.stream.read(buf).map_err(name_timeout)
    }
}

impl<S: Timeouts + Write> Write for ByDeadline<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.set_write_timeout(Some(self.left()?))?;
        self.stream.write(buf).map_err(name_timeout)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_bounded_and_given_back() {
        let places = Places::new(2);
        let a = places.take().unwrap();
        let b = places.take().unwrap();
        assert!(places.take().is_none());
        drop(a);
        let c = places.take().unwrap();
        assert!(places.take().is_none());
        drop((b, c));
        assert!(places.take().is_some());
    }

    #[test]
    fn a_read_past_the_deadline_times_out() {
        let (mut a, _b) = UnixStream::pair().unwrap();
        let start = Instant::now();
        let mut r = ByDeadline::new(&mut a, Duration::from_millis(200));
        let e = r.read(&mut [0u8; 8]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
        assert_eq!(e.to_string(), "timed out");
        assert!(start.elapsed() >= Duration::from_millis(200));
        // And at once from then on.
        let e = r.read(&mut [0u8; 8]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    }

    #[test]
    fn a_write_nobody_reads_times_out() {
        let (mut a, _b) = UnixStream::pair().unwrap();
        let mut w = ByDeadline::new(&mut a, Duration::from_millis(200));
        let e = w.write_all(&vec![0u8; 64 << 20]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    }
}
