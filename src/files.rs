//! Reading the files xvs reads by path: the configuration, the services
//! script, and the system's own (`/proc`, `/sys`, `/etc/services`).
//!
//! [`read_text`] is the one way to do it. It reads regular files only (a
//! FIFO would block forever, `/dev/zero` never ends, a directory is a
//! mistake) and at most a stated number of bytes, so no name an operator
//! types can hang the director or exhaust its memory. The file is opened
//! with `O_NONBLOCK`, so opening a FIFO returns at once, and its type is
//! checked on the open file, not the name, so it cannot change in between.

use std::fmt;
use std::fs::{FileType, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The most of a configuration file or services script xvs reads: the
/// largest `ipvsadm -R` request (`control::protocol::MAX_PAYLOAD`).
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;
/// The most of a system file (`/proc`, `/sys`, `/etc/services`) xvs reads.
pub const MAX_SYSTEM_BYTES: u64 = 1 << 20;

/// Why a file could not be read; the message names the file.
#[derive(Debug)]
pub enum FileError {
    /// Opening or reading failed (missing, no permission, not UTF-8, ...).
    Io(PathBuf, io::Error),
    /// Not a regular file: what it is instead.
    NotRegular(PathBuf, &'static str),
    /// Longer than the limit given, in bytes.
    TooLarge(PathBuf, u64),
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileError::Io(p, e) => write!(f, "cannot read {}: {e}", p.display()),
            FileError::NotRegular(p, what) => {
                write!(f, "{} is {what}, not a regular file", p.display())
            }
            FileError::TooLarge(p, limit) => {
                write!(
                    f,
                    "{} is larger than {}: xvs reads at most that much of it",
                    p.display(),
                    size_text(*limit)
                )
            }
        }
    }
}

impl std::error::Error for FileError {}

/// The text of the regular file at `path`, at most `limit` bytes of it.
pub fn read_text(path: &Path, limit: u64) -> Result<String, FileError> {
    let io_err = |e| FileError::Io(path.to_path_buf(), e);
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    if !meta.is_file() {
        return Err(FileError::NotRegular(
            path.to_path_buf(),
            kind(meta.file_type()),
        ));
    }
    if meta.len() > limit {
        return Err(FileError::TooLarge(path.to_path_buf(), limit));
    }
    // A regular file can still grow while it is read, and /proc's report
    // no size at all: the limit holds for what is read, not what stat says.
    read_bounded(file, limit).map_err(|e| match e {
        Bounded::Io(e) => io_err(e),
        Bounded::TooLarge => FileError::TooLarge(path.to_path_buf(), limit),
    })
}

/// Why [`read_bounded`] stopped.
#[derive(Debug)]
pub enum Bounded {
    Io(io::Error),
    /// There was more than the limit.
    TooLarge,
}

/// All of `reader` as text if it holds at most `limit` bytes (standard
/// input, say, which has no name to put in a [`FileError`]).
pub fn read_bounded(reader: impl Read, limit: u64) -> Result<String, Bounded> {
    let mut text = String::new();
    reader
        .take(limit.saturating_add(1))
        .read_to_string(&mut text)
        .map_err(Bounded::Io)?;
    if text.len() as u64 > limit {
        return Err(Bounded::TooLarge);
    }
    Ok(text)
}

fn kind(t: FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

/// `n` bytes in the largest binary unit it reaches, with one decimal when
/// not whole: "16 MiB", "17.9 GiB", "11 bytes".
pub fn size_text(n: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if n >= 1 << shift {
            return if n % (1 << shift) == 0 {
                format!("{} {unit}", n >> shift)
            } else {
                format!("{:.1} {unit}", n as f64 / (1u64 << shift) as f64)
            };
        }
    }
    format!("{n} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xvs-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_small_regular_file_is_read() {
        let dir = temp_dir("small");
        let f = dir.join("x.toml");
        std::fs::write(&f, "workers = 1\n").unwrap();
        assert_eq!(read_text(&f, 12).unwrap(), "workers = 1\n");
        let e = read_text(&f, 11).unwrap_err().to_string();
        assert!(e.ends_with("x.toml is larger than 11 bytes: xvs reads at most that much of it"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn dev_zero_is_refused_at_once() {
        let e = read_text(Path::new("/dev/zero"), MAX_CONFIG_BYTES).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/dev/zero is a character device, not a regular file"
        );
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = temp_dir("fifo");
        let f = dir.join("rules");
        nix::unistd::mkfifo(&f, nix::sys::stat::Mode::S_IRWXU).unwrap();
        // Run where a hang fails the test instead of stalling the suite.
        let (tx, rx) = std::sync::mpsc::channel();
        let path = f.clone();
        std::thread::spawn(move || {
            let _ = tx.send(read_text(&path, MAX_CONFIG_BYTES).map_err(|e| e.to_string()));
        });
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("reading a FIFO blocked");
        assert_eq!(
            got.unwrap_err(),
            format!("{} is a FIFO, not a regular file", f.display())
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_oversize_file_is_refused_before_reading() {
        let dir = temp_dir("big");
        let f = dir.join("huge.rules");
        // Sparse: costs no disk, and reading it all would take 64 GiB.
        File::create(&f).unwrap().set_len(64 << 30).unwrap();
        let e = read_text(&f, MAX_CONFIG_BYTES).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{} is larger than 16 MiB: xvs reads at most that much of it",
                f.display()
            )
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_directory_is_refused() {
        let dir = temp_dir("dir");
        let e = read_text(&dir, MAX_CONFIG_BYTES).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("{} is a directory, not a regular file", dir.display())
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn proc_files_have_no_size_but_are_read() {
        let s = read_text(Path::new("/proc/self/status"), MAX_SYSTEM_BYTES).unwrap();
        assert!(s.contains("CapEff:"), "{s}");
    }

    #[test]
    fn a_missing_file_says_cannot_read() {
        let e = read_text(Path::new("/nonexistent/xvs.toml"), 10).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot read /nonexistent/xvs.toml: "),
            "{e}"
        );
    }

    #[test]
    fn a_stream_is_bounded() {
        assert_eq!(read_bounded(&b"abc"[..], 3).unwrap(), "abc");
        assert!(matches!(
            read_bounded(&b"abcd"[..], 3),
            Err(Bounded::TooLarge)
        ));
        assert!(matches!(
            read_bounded(std::io::repeat(0).take(1 << 40), 1 << 10),
            Err(Bounded::TooLarge)
        ));
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(size_text(16 << 20), "16 MiB");
        assert_eq!(size_text(3 << 30), "3 GiB");
        assert_eq!(size_text(1536), "1.5 KiB");
        assert_eq!(size_text(11), "11 bytes");
    }
}
