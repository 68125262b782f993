//! The control socket's wire format: one request, one response, then the
//! connection closes.
//!
//! Every message is a frame: the magic `XVS1`, a big-endian `u32` payload
//! length (a request at most [`MAX_PAYLOAD`], a response at most
//! [`MAX_RESPONSE`]: `-L -c` of a full table is large), then the payload. Strings are a
//! big-endian `u32` byte length and UTF-8 bytes.
//!
//! ```text
//! request  payload: u32 argc, argc × string (ipvsadm's arguments, without
//!                   the program name), u8 has_stdin (0|1), [string stdin]
//! response payload: u8 exit status, string stdout, string stderr
//! ```
//!
//! A request whose first argument is [`XVS_COMMAND`] is one of xvs's own
//! commands (`xvs status`, `xvs drain`: [`Request::xvs`]) rather than
//! ipvsadm's; ipvsadm has no such option, and the ipvsadm client refuses
//! it before anything is sent, so no ipvsadm script can mean it.
//!
//! A request is one frame, then the end of the stream: the client shuts
//! down its write side after the frame, and the daemon reads up to that
//! end, so a request followed by anything at all (junk, a second request)
//! is refused whole rather than applied with the rest ignored.
//!
//! A payload must be consumed exactly: a short one, trailing bytes, a bad
//! flag or invalid UTF-8 is a [`ProtocolError`], and the daemon answers it
//! with an error response (exit 255) without acting on it. Sizes are checked
//! before anything is allocated, so a hostile length cannot make the daemon
//! allocate more than [`MAX_PAYLOAD`].

use std::fmt;
use std::io::{self, Read, Write};

/// Frame magic: protocol name and version.
pub const MAGIC: [u8; 4] = *b"XVS1";
/// The largest payload either side accepts: room for a restore script of
/// every real server xvs can hold (65 536 lines of ~80 bytes) with margin.
pub const MAX_PAYLOAD: usize = 16 << 20;
/// The largest response a client accepts: `-L -c` of millions of
/// connections, ~80 bytes each.
pub const MAX_RESPONSE: usize = 256 << 20;
/// The most arguments a request may carry.
pub const MAX_ARGS: usize = 1024;

/// What `xvs ipvsadm` asks the director.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    pub args: Vec<String>,
    /// Standard input, for `-R`.
    pub stdin: Option<String>,
}

/// What the director answers: ipvsadm's output and exit status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    pub exit_code: u8,
    pub stdout: String,
    pub stderr: String,
}

impl Response {
    pub fn ok(stdout: String) -> Response {
        Response {
            exit_code: 0,
            stdout,
            stderr: String::new(),
        }
    }

    /// A failure: `message` (one line, no newline) on stderr.
    pub fn error(exit_code: u8, message: impl fmt::Display) -> Response {
        Response {
            exit_code,
            stdout: String::new(),
            stderr: format!("{message}\n"),
        }
    }
}

/// Why a message could not be read.
#[derive(Debug)]
pub enum ProtocolError {
    /// The stream ended or failed before a whole frame arrived.
    Io(io::Error),
    /// The reader's time ran out first.
    TimedOut,
    BadMagic([u8; 4]),
    /// A frame longer than the reader takes: its length, and the limit.
    TooLarge(u64, usize),
    /// The payload is not a well-formed message.
    Malformed(&'static str),
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                f.write_str("message truncated")
            }
            ProtocolError::Io(e) => write!(f, "reading the message failed: {e}"),
            ProtocolError::TimedOut => f.write_str("timed out"),
            ProtocolError::BadMagic(m) => {
                write!(f, "not an xvs control message (starts with {m:02x?})")
            }
            ProtocolError::TooLarge(n, limit) => {
                write!(f, "message of {n} bytes is over the {limit}-byte limit")
            }
            ProtocolError::Malformed(what) => write!(f, "malformed message: {what}"),
        }
    }
}

impl std::error::Error for ProtocolError {}

impl From<io::Error> for ProtocolError {
    fn from(e: io::Error) -> ProtocolError {
        match e.kind() {
            // A socket read timeout is EAGAIN on Linux.
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ProtocolError::TimedOut,
            _ => ProtocolError::Io(e),
        }
    }
}

/// The first argument of a request for one of xvs's own commands.
pub const XVS_COMMAND: &str = "--xvs";

impl Request {
    /// A request for one of xvs's own commands, e.g. `["status", "--json"]`.
    pub fn xvs<S: Into<String>>(args: impl IntoIterator<Item = S>) -> Request {
        Request {
            args: std::iter::once(XVS_COMMAND.to_string())
                .chain(args.into_iter().map(Into::into))
                .collect(),
            stdin: None,
        }
    }

    /// The arguments of one of xvs's own commands; `None` for ipvsadm's.
    pub fn xvs_args(&self) -> Option<&[String]> {
        match self.args.split_first() {
            Some((first, rest)) if first == XVS_COMMAND => Some(rest),
            _ => None,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut p = Vec::new();
        put_u32(&mut p, self.args.len() as u32);
        for a in &self.args {
            put_str(&mut p, a);
        }
        match &self.stdin {
            Some(s) => {
                p.push(1);
                put_str(&mut p, s);
            }
            None => p.push(0),
        }
        frame(p)
    }

    /// Parses a payload (the bytes after the frame header).
    pub fn decode(payload: &[u8]) -> Result<Request, ProtocolError> {
        let mut c = Cursor(payload);
        let argc = c.u32()? as usize;
        if argc > MAX_ARGS {
            return Err(ProtocolError::Malformed("too many arguments"));
        }
        let mut args = Vec::with_capacity(argc);
        for _ in 0..argc {
            args.push(c.string()?);
        }
        let stdin = match c.u8()? {
            0 => None,
            1 => Some(c.string()?),
            _ => return Err(ProtocolError::Malformed("bad stdin flag")),
        };
        c.end()?;
        Ok(Request { args, stdin })
    }

    /// The encoded payload's length, without encoding it.
    pub fn payload_len(&self) -> usize {
        let strings: usize = self.args.iter().map(|a| 4 + a.len()).sum();
        4 + strings + 1 + self.stdin.as_ref().map_or(0, |s| 4 + s.len())
    }

    /// Reads one request and the end of the stream after it.
    pub fn read_from(r: &mut impl Read) -> Result<Request, ProtocolError> {
        let request = Request::decode(&read_frame(r, MAX_PAYLOAD)?)?;
        match r.read(&mut [0u8; 1])? {
            0 => Ok(request),
            _ => Err(ProtocolError::Malformed(
                "bytes after the frame (a request is one frame, then the end of the stream)",
            )),
        }
    }

    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(&self.encode())?;
        w.flush()
    }
}

impl Response {
    pub fn encode(&self) -> Vec<u8> {
        let mut p = vec![self.exit_code];
        put_str(&mut p, &self.stdout);
        put_str(&mut p, &self.stderr);
        frame(p)
    }

    pub fn decode(payload: &[u8]) -> Result<Response, ProtocolError> {
        let mut c = Cursor(payload);
        let exit_code = c.u8()?;
        let stdout = c.string()?;
        let stderr = c.string()?;
        c.end()?;
        Ok(Response {
            exit_code,
            stdout,
            stderr,
        })
    }

    pub fn read_from(r: &mut impl Read) -> Result<Response, ProtocolError> {
        Response::decode(&read_frame(r, MAX_RESPONSE)?)
    }

    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(&self.encode())?;
        w.flush()
    }
}

/// Reads one frame's payload of at most `limit` bytes: checks the magic
/// and the length before allocating.
pub fn read_frame(r: &mut impl Read, limit: usize) -> Result<Vec<u8>, ProtocolError> {
    let mut head = [0u8; 8];
    r.read_exact(&mut head)?;
    let magic = [head[0], head[1], head[2], head[3]];
    if magic != MAGIC {
        return Err(ProtocolError::BadMagic(magic));
    }
    let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    if len as usize > limit {
        return Err(ProtocolError::TooLarge(u64::from(len), limit));
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload)?;
    Ok(payload)
}

fn frame(payload: Vec<u8>) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + payload.len());
    f.extend_from_slice(&MAGIC);
    put_u32(&mut f, payload.len() as u32);
    f.extend_from_slice(&payload);
    f
}

fn put_u32(p: &mut Vec<u8>, v: u32) {
    p.extend_from_slice(&v.to_be_bytes());
}

fn put_str(p: &mut Vec<u8>, s: &str) {
    put_u32(p, s.len() as u32);
    p.extend_from_slice(s.as_bytes());
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], ProtocolError> {
        if self.0.len() < n {
            return Err(ProtocolError::Malformed("payload shorter than its fields"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, ProtocolError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self) -> Result<String, ProtocolError> {
        let n = self.u32()? as usize;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| ProtocolError::Malformed("invalid UTF-8"))
    }

    fn end(&self) -> Result<(), ProtocolError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError::Malformed("trailing bytes after the message"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request {
        Request {
            args: vec!["-R".into()],
            stdin: Some("-A -t 192.0.2.1:80 -s rr\n-a -t 192.0.2.1:80 -r 198.51.100.2\n".into()),
        }
    }

    #[test]
    fn request_and_response_round_trip() {
        let r = request();
        let bytes = r.encode();
        assert_eq!(&bytes[..4], b"XVS1");
        assert_eq!(Request::read_from(&mut &bytes[..]).unwrap(), r);
        let plain = Request {
            args: vec!["-L".into(), "-n".into()],
            stdin: None,
        };
        assert_eq!(Request::read_from(&mut &plain.encode()[..]).unwrap(), plain);
        let resp = Response {
            exit_code: 255,
            stdout: "out\n".into(),
            stderr: "Service not defined\n".into(),
        };
        assert_eq!(Response::read_from(&mut &resp.encode()[..]).unwrap(), resp);
    }

    /// xvs's own commands are marked by a first argument that ipvsadm's
    /// command line refuses.
    #[test]
    fn xvs_commands_are_told_apart_from_ipvsadms() {
        let r = Request::xvs(["status", "--json"]);
        assert_eq!(
            r.xvs_args(),
            Some(&["status".to_string(), "--json".into()][..])
        );
        assert_eq!(Request::read_from(&mut &r.encode()[..]).unwrap(), r);
        assert_eq!(request().xvs_args(), None);
        assert!(crate::control::ipvsadm::parse(&r.args).is_err());
    }

    #[test]
    fn exact_bytes_of_a_small_request() {
        let r = Request {
            args: vec!["-C".into()],
            stdin: None,
        };
        assert_eq!(
            r.encode(),
            [
                b'X', b'V', b'S', b'1', 0, 0, 0, 11, // frame: 11-byte payload
                0, 0, 0, 1, // one argument
                0, 0, 0, 2, b'-', b'C', // "-C"
                0,    // no stdin
            ]
        );
    }

    #[test]
    fn garbage_is_refused() {
        let e = Request::read_from(&mut &b"GET / HTTP/1.1\r\n\r\n"[..]).unwrap_err();
        assert!(matches!(e, ProtocolError::BadMagic(_)), "{e}");
        // A well-framed payload that is not a request.
        for payload in [
            &[0u8, 0, 0, 1, 0, 0, 0, 9, b'x'][..], // string longer than the payload
            &[0, 0, 0, 0, 7],                      // stdin flag 7
            &[0, 0, 0, 0, 0, 0xff],                // trailing byte
            &[0, 0, 0, 1, 0, 0, 0, 1, 0xc3, 0],    // invalid UTF-8
            &[0xff, 0xff, 0xff, 0xff],             // four billion arguments
        ] {
            let mut f = MAGIC.to_vec();
            f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            f.extend_from_slice(payload);
            let e = Request::read_from(&mut &f[..]).unwrap_err();
            assert!(matches!(e, ProtocolError::Malformed(_)), "{payload:?}: {e}");
        }
    }

    #[test]
    fn anything_after_the_frame_is_refused() {
        let mut bytes = request().encode();
        bytes.extend_from_slice(b"junk");
        let e = Request::read_from(&mut &bytes[..]).unwrap_err();
        assert!(
            matches!(e, ProtocolError::Malformed(m) if m.starts_with("bytes after the frame")),
            "{e}"
        );
        let twice = [request().encode(), request().encode()].concat();
        assert!(matches!(
            Request::read_from(&mut &twice[..]),
            Err(ProtocolError::Malformed(_))
        ));
    }

    #[test]
    fn a_socket_timeout_reads_as_timed_out() {
        let (mut a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.set_read_timeout(Some(std::time::Duration::from_millis(50)))
            .unwrap();
        let e = Request::read_from(&mut a).unwrap_err();
        assert!(matches!(e, ProtocolError::TimedOut), "{e:?}");
        assert_eq!(e.to_string(), "timed out");
    }

    #[test]
    fn truncated_is_refused() {
        let bytes = request().encode();
        for cut in [0, 3, 7, 8, bytes.len() - 1] {
            let e = Request::read_from(&mut &bytes[..cut]).unwrap_err();
            assert_eq!(e.to_string(), "message truncated", "cut at {cut}");
        }
    }

    #[test]
    fn payload_len_is_the_encoded_length() {
        for stdin in [
            None,
            Some(String::new()),
            Some("-A -t 192.0.2.10:80\n".into()),
        ] {
            let r = Request {
                args: vec!["-R".into(), "é".into()],
                stdin,
            };
            assert_eq!(r.payload_len() + 8, r.encode().len());
        }
    }

    #[test]
    fn oversized_is_refused_before_allocating() {
        let mut f = MAGIC.to_vec();
        f.extend_from_slice(&u32::MAX.to_be_bytes());
        let e = Request::read_from(&mut &f[..]).unwrap_err();
        assert!(matches!(e, ProtocolError::TooLarge(n, MAX_PAYLOAD) if n == u64::from(u32::MAX)));
        let mut f = MAGIC.to_vec();
        f.extend_from_slice(&(MAX_PAYLOAD as u32 + 1).to_be_bytes());
        assert!(matches!(
            Request::read_from(&mut &f[..]),
            Err(ProtocolError::TooLarge(..))
        ));
    }
}
