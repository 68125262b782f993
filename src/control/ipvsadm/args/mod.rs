//! ipvsadm's command line, read as ipvsadm 1.31 reads it with popt.
//!
//! The order of checks is ipvsadm's, so the same bad command line gets the
//! same first complaint: option values as they come, then `--set`'s values
//! and stray arguments, scheduler flags, which options the command allows,
//! then the per-command rules.

//!
//! In parts: [`lex`] splits the words as popt does, against the table of
//! every option ([`options`]); [`table`] says which options each command
//! takes; [`build`] gathers the options' values and puts the command
//! together. [`parse_with`] runs them in that order.

use super::names::Services;
use super::{Command, ListOptions, UsageError};
use crate::service::SchedFlags;
use build::{sched_flags, timeout, State};
use lex::{Lexer, Token};
use options::Opt;
use table::{check_options, Cmd};

mod build;
mod daemon;
mod lex;
mod options;
mod table;
#[cfg(test)]
mod tests;

/// Parses ipvsadm's arguments (without the program name), naming ports from
/// this host's `/etc/services`.
pub fn parse(args: &[String]) -> Result<Command, UsageError> {
    parse_with(args, Services::system())
}

/// [`parse_with`] the built-in port names, for a command line written as one
/// string: how the tests write commands.
#[cfg(test)]
pub(super) fn parse_line(line: &str) -> Result<Command, UsageError> {
    let args: Vec<String> = line.split_whitespace().map(str::to_string).collect();
    parse_with(&args, &Services::builtin())
}

/// [`parse`] with a given port-name table.
pub fn parse_with(args: &[String], names: &Services) -> Result<Command, UsageError> {
    if args.is_empty() {
        return Ok(Command::List(ListOptions::all()));
    }
    let mut lexer = Lexer::new(args);
    let mut positional = Vec::new();
    // popt hands back options in order and queues arguments; the first
    // option must be the command.
    let (first, first_value) = loop {
        match lexer.next() {
            Some(Ok(Token::Arg(a))) => positional.push(a),
            Some(Ok(Token::Opt { opt, value, .. })) => break (opt, value),
            None | Some(Err(_)) => return Err(try_help()),
        }
    };
    let cmd = match first {
        Opt::AddService => Cmd::Add,
        Opt::EditService => Cmd::Edit,
        Opt::DeleteService => Cmd::Del,
        Opt::Clear => Cmd::Flush,
        Opt::List => Cmd::List,
        Opt::Zero => Cmd::Zero,
        Opt::AddServer => Cmd::AddReal,
        Opt::EditServer => Cmd::EditReal,
        Opt::DeleteServer => Cmd::DelReal,
        Opt::Set => Cmd::Timeout,
        Opt::Restore => Cmd::Restore,
        Opt::Save => Cmd::Save,
        Opt::Help => return Ok(Command::Help),
        Opt::Version => return Ok(Command::Version),
        Opt::StartDaemon | Opt::StopDaemon => {
            if let Some(a) = positional.first() {
                return Err(UsageError::usage(format!("unexpected argument {a}")));
            }
            return daemon::parse(first == Opt::StartDaemon, first_value, &mut lexer);
        }
        _ => return Err(try_help()),
    };

    let mut st = State::default();
    while let Some(token) = lexer.next() {
        let (opt, value, word) = match token {
            Ok(Token::Arg(a)) => {
                positional.push(a);
                continue;
            }
            Ok(Token::Opt { opt, value, word }) => (opt, value, word),
            Err(e) => return Err(e.into_usage()),
        };
        st.option(opt, value, &word, names)?;
    }

    let timeouts = if cmd == Cmd::Timeout {
        if positional.len() < 3 {
            return Err(UsageError::usage("--set option requires 3 timeout values"));
        }
        let mut t = [0u32; 3];
        for (slot, s) in t.iter_mut().zip(positional.drain(..3)) {
            *slot = timeout(&s, 0)?;
        }
        Some(t)
    } else {
        None
    };
    if let Some(a) = positional.first() {
        return Err(UsageError::usage(format!("unexpected argument {a}")));
    }
    let sched_name = st.scheduler.clone().unwrap_or_else(|| "wlc".to_string());
    let sched_flags = match &st.sched_flags {
        Some(arg) => sched_flags(&sched_name, arg)?,
        None => SchedFlags::default(),
    };
    check_options(cmd, st.options)?;
    st.build(cmd, timeouts, &sched_name, sched_flags, names)
}

/// popt's complaint when the first thing is not a command.
fn try_help() -> UsageError {
    UsageError::failed("Try `ipvsadm -h' or 'ipvsadm --help' for more information.")
}
