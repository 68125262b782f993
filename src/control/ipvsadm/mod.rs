//! ipvsadm compatibility, without I/O: parse its command line into the
//! edits the service model applies, print its tables.
//!
//! ipvsadm is one front end of the service layer ([`crate::service`]): it
//! produces [`Edit`]s and prints the model, it does not own it.
//!
//! # Contract
//! - [`parse`] takes the arguments after the program name, exactly as
//!   ipvsadm 1.31 reads them (popt rules: the first option must be the
//!   command, short options cluster, `--long=value`, `-p` takes an optional
//!   value) and gives a [`Command`] or a [`UsageError`] with ipvsadm's
//!   message and exit status. A configuration change is a
//!   [`Command::Edit`] wrapping the model's [`Edit`]; the model refuses
//!   one with IPVS's wording ([`crate::service::ApplyError`]), which
//!   ipvsadm prints as it is, exiting 255.
//! - [`render`] prints `-L` in all its forms, `-c`, `--timeout`, `-h`, `-v`;
//!   [`save`] prints `-S`, parses `-R` input into a script, and
//!   [`restore`]s it: its edits as one transaction of the model, all or
//!   nothing, its `-Z` and `--set` lines checked in turn and handed back.
//!
//! # Exit statuses, as ipvsadm
//! | status | when |
//! |---|---|
//! | 0 | success, `-h`, `-v` |
//! | 1 | `-L -t|-u` of a service that does not exist ([`ListError`]) |
//! | 2 | a usage error ipvsadm reports itself (`fail(2, ...)`): bad address, weight, timeout, option not valid with the command, or not supported by xvs |
//! | 255 | an option popt rejects (unknown option, missing argument, no command), and every error the kernel would return ([`ApplyError`](crate::service::ApplyError)) |
//!
//! # What xvs does differently, on purpose
//! - Addresses are numeric in and out: no host-name lookups in either
//!   direction (`-n` only changes ports). Port names come from
//!   `/etc/services`, or a built-in table where it is missing ([`Services`]).
//! - Not supported, each refused with "... is not supported by xvs; see
//!   README" (exit 2): firewall marks (`-f`, `-6`), SCTP (`--sctp-service`),
//!   one-packet scheduling (`-o`), persistence engines (`--pe`), GUE/GRE
//!   tunnels and their options, IPv6 sync groups, port-0 (all ports) services,
//!   scheduler flag `flag-3`, non-contiguous IPv4 persistence masks.
//! - `--start-daemon`/`--stop-daemon` take IPVS's options but run xvs's
//!   own authenticated sync protocol ([`crate::sync`]), not IPVS's.
//! - `-S` appends ` -x N -y M` to a real server with thresholds (ipvsadm
//!   drops them); for a real server without, the line is ipvsadm's.
//! - `-R` skips blank lines and lines starting with `#`, and refuses the
//!   commands that do not change configuration (`-L`, `-S`, `-R`, `-h`).
//! - Sorting of `-L`/`-S` is by address value (ipvsadm's comparator wraps
//!   for addresses more than 2^31 apart); `--nosort` lists in the order the
//!   services and real servers were added.

mod args;
mod names;
pub mod render;
pub mod save;
#[cfg(test)]
mod tests;

use std::fmt;

use crate::service::{Edit, ServiceKey};

pub use args::{parse, parse_with};
pub use names::Services;
pub use render::{ListError, ListStats, RateStats, RealStats, ServiceStats};
pub use save::{check_zero, parse_restore, restore, RestoreError, RestoreOutcome, ScriptLine};

/// ipvsadm's default persistence timeout, in seconds, when `-p` has no value
/// (libipvs's `IPVS_SVC_PERSISTENT_TIMEOUT`, 6 minutes; its man page says 300).
pub const DEFAULT_PERSISTENT_TIMEOUT: u32 = 360;

/// The largest timeout ipvsadm accepts, 31 days.
pub const MAX_TIMEOUT: u32 = 86_400 * 31;

/// Exit status of a failed `-L` of one service.
pub const EXIT_LIST_FAILED: u8 = 1;
/// Exit status of usage errors ipvsadm reports itself.
pub const EXIT_USAGE: u8 = 2;
/// Exit status of popt errors and of every failed operation (ipvsadm's -1).
pub const EXIT_FAILED: u8 = 255;

/// One ipvsadm invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `-h`: print [`render::usage`] to stdout, exit 0.
    Help,
    /// `-v`: print [`render::version`] to stdout, exit 0.
    Version,
    /// `-L`/`-l`, or no arguments at all.
    List(ListOptions),
    /// `-S [-n]`.
    Save { numeric: bool },
    /// `-R`: the client reads standard input and passes it to
    /// [`parse_restore`].
    Restore,
    /// `-A -E -D -C -a -e -d`: a configuration change, for the service
    /// model to apply.
    Edit(Edit),
    /// `-Z [service]`: zero the counters of one service or of all.
    Zero(Option<ServiceKey>),
    /// `--set tcp tcpfin udp`: seconds; 0 leaves a value unchanged.
    SetTimeouts { tcp: u32, tcpfin: u32, udp: u32 },
    /// `--start-daemon master|backup [--mcast-interface IF] [--syncid N]
    /// ...`: start connection sync in that role ([`crate::sync`]).
    StartDaemon(crate::sync::DaemonConfig),
    /// `--stop-daemon master|backup`: the table keeps what it holds.
    StopDaemon(crate::sync::DaemonRole),
}

/// What `-L` lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListWhat {
    /// Every service, with the "IP Virtual Server version" header.
    All,
    /// One service (`-L -t VIP:port`), without the header.
    Service(ServiceKey),
    /// `-c`: the connection table ([`render::connections`]).
    Connections,
    /// `--timeout` ([`render::timeouts`]).
    Timeout,
    /// `--daemon`: the sync daemons running ([`render::daemons`]).
    Daemon,
}

/// `-L` and its display options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListOptions {
    pub what: ListWhat,
    /// `-n`: ports as numbers.
    pub numeric: bool,
    pub stats: bool,
    pub rate: bool,
    pub thresholds: bool,
    pub persistent_conn: bool,
    pub nosort: bool,
    /// `--exact`: no K/M/G/T abbreviation of large numbers.
    pub exact: bool,
    pub tun_info: bool,
}

impl ListOptions {
    /// What plain `ipvsadm` (no arguments) lists.
    pub fn all() -> ListOptions {
        ListOptions {
            what: ListWhat::All,
            numeric: false,
            stats: false,
            rate: false,
            thresholds: false,
            persistent_conn: false,
            nosort: false,
            exact: false,
            tun_info: false,
        }
    }
}

/// A command line ipvsadm would refuse: its message (one line, no trailing
/// newline) for stderr, and the exit status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageError {
    pub message: String,
    pub exit_code: u8,
}

impl UsageError {
    /// ipvsadm's `fail(2, ...)`.
    pub(crate) fn usage(message: impl Into<String>) -> UsageError {
        UsageError {
            message: message.into(),
            exit_code: EXIT_USAGE,
        }
    }

    /// An error popt or the kernel reports (exit -1, i.e. 255).
    pub(crate) fn failed(message: impl Into<String>) -> UsageError {
        UsageError {
            message: message.into(),
            exit_code: EXIT_FAILED,
        }
    }

    /// Something ipvsadm accepts that xvs does not do.
    pub(crate) fn unsupported(what: &str) -> UsageError {
        UsageError::usage(format!("{what} is not supported by xvs; see README"))
    }
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UsageError {}
