//! The command × option table: which options each ipvsadm command takes
//! (ipvsadm's `commands_v_options` and `generic_opt_check`), and the
//! commands as its messages name them.

use super::super::UsageError;
/// ipvsadm's commands, named as its messages name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cmd {
    Add,
    Edit,
    Del,
    Flush,
    List,
    AddReal,
    DelReal,
    EditReal,
    Timeout,
    Restore,
    Save,
    Zero,
}

impl Cmd {
    fn name(self) -> &'static str {
        match self {
            Cmd::Add => "add-service",
            Cmd::Edit => "edit-service",
            Cmd::Del => "delete-service",
            Cmd::Flush => "flush",
            Cmd::List => "list",
            Cmd::AddReal => "add-server",
            Cmd::DelReal => "delete-server",
            Cmd::EditReal => "edit-server",
            Cmd::Timeout => "set",
            Cmd::Restore => "restore",
            Cmd::Save => "save",
            Cmd::Zero => "zero",
        }
    }

    /// Which options the command takes, one character per [`Col`] in its
    /// order: `+` required, `x` refused, `1` at most one of the `1`s,
    /// blank optional (ipvsadm's `commands_v_options`, less what xvs refuses
    /// outright).
    fn allowed(self) -> &'static [u8; COLS] {
        //                   ncsSpMrfwxytdsrtpnebTT
        match self {
            Cmd::Add | Cmd::Edit => b"xx+   xxxxxxxxxxxxx xx",
            Cmd::Del => b"xx+xxxxxxxxxxxxxxxxxxx",
            Cmd::List => b" 11xxxxxxxx11      x x",
            Cmd::AddReal | Cmd::EditReal => b"xx+xxx+    xxxxxxxxxx ",
            Cmd::DelReal => b"xx+xxx+xxxxxxxxxxxxxxx",
            Cmd::Save => b" xxxxxxxxxxxxxxxxxxxxx",
            Cmd::Zero => b"xx xxxxxxxxxxxxxxxxxxx",
            Cmd::Flush | Cmd::Timeout | Cmd::Restore => b"xxxxxxxxxxxxxxxxxxxxxx",
        }
    }
}

const COLS: usize = 22;

/// The options ipvsadm checks against a command, in its table's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Col {
    Numeric,
    Connection,
    Service,
    Scheduler,
    Persistent,
    Netmask,
    Server,
    Forward,
    Weight,
    UThreshold,
    LThreshold,
    Timeout,
    Daemon,
    Stats,
    Rate,
    Thresholds,
    PersistentConn,
    NoSort,
    Exact,
    SchedFlags,
    TunInfo,
    TunType,
}

const ALL_COLS: [Col; COLS] = [
    Col::Numeric,
    Col::Connection,
    Col::Service,
    Col::Scheduler,
    Col::Persistent,
    Col::Netmask,
    Col::Server,
    Col::Forward,
    Col::Weight,
    Col::UThreshold,
    Col::LThreshold,
    Col::Timeout,
    Col::Daemon,
    Col::Stats,
    Col::Rate,
    Col::Thresholds,
    Col::PersistentConn,
    Col::NoSort,
    Col::Exact,
    Col::SchedFlags,
    Col::TunInfo,
    Col::TunType,
];

impl Col {
    pub(super) fn name(self) -> &'static str {
        match self {
            Col::Numeric => "numeric",
            Col::Connection => "connection",
            Col::Service => "service-address",
            Col::Scheduler => "scheduler",
            Col::Persistent => "persistent",
            Col::Netmask => "netmask",
            Col::Server => "real-server",
            Col::Forward => "forwarding-method",
            Col::Weight => "weight",
            Col::UThreshold => "u-threshold",
            Col::LThreshold => "l-threshold",
            Col::Timeout => "timeout",
            Col::Daemon => "daemon",
            Col::Stats => "stats",
            Col::Rate => "rate",
            Col::Thresholds => "thresholds",
            Col::PersistentConn => "persistent-conn",
            Col::NoSort => "nosort",
            Col::Exact => "exact",
            Col::SchedFlags => "sched-flags",
            Col::TunInfo => "tun-info",
            Col::TunType => "tun-type",
        }
    }

    pub(super) fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// ipvsadm's `generic_opt_check`.
pub(super) fn check_options(cmd: Cmd, options: u32) -> Result<(), UsageError> {
    let mut exclusive: Option<Col> = None;
    for (col, rule) in ALL_COLS.iter().zip(cmd.allowed()) {
        let given = options & col.bit() != 0;
        match (given, rule) {
            (false, b'+') => {
                return Err(UsageError::usage(format!(
                    "You need to supply the '{}' option for the '{}' command",
                    col.name(),
                    cmd.name()
                )))
            }
            (true, b'x') => {
                return Err(UsageError::usage(format!(
                    "Illegal '{}' option with the '{}' command",
                    col.name(),
                    cmd.name()
                )))
            }
            (true, b'1') => match exclusive {
                None => exclusive = Some(*col),
                Some(first) => {
                    return Err(UsageError::usage(format!(
                        "The option '{}' conflicts with the '{}' option in the '{}' command",
                        col.name(),
                        first.name(),
                        cmd.name()
                    )))
                }
            },
            _ => {}
        }
    }
    Ok(())
}
