//! `--start-daemon master|backup [options]` and `--stop-daemon
//! master|backup`: the sync daemon's command line, as ipvsadm reads it.
//! The options are IPVS's; what they mean for xvs's own sync protocol is
//! [`crate::sync::DaemonConfig`]'s.

use std::net::IpAddr;

use super::super::{Command, UsageError};
use super::lex::{Lexer, Token};
use super::options::Opt;
use crate::sync::{DaemonConfig, DaemonRole};

/// The rest of a daemon command line, after `--start-daemon STATE` (or
/// `--stop-daemon STATE`).
pub(super) fn parse(
    start: bool,
    state: Option<String>,
    lexer: &mut Lexer<'_>,
) -> Result<Command, UsageError> {
    let role = state
        .as_deref()
        .and_then(DaemonRole::from_name)
        .ok_or_else(|| {
            UsageError::usage(if start {
                "illegal start-daemon parameter specified"
            } else {
                "illegal stop_daemon parameter specified"
            })
        })?;
    let mut cfg = DaemonConfig::new(role);
    while let Some(token) = lexer.next() {
        let (opt, value, word) = match token {
            Ok(Token::Arg(a)) => return Err(UsageError::usage(format!("unexpected argument {a}"))),
            Ok(Token::Opt { opt, value, word }) => (opt, value.unwrap_or_default(), word),
            Err(e) => return Err(e.into_usage()),
        };
        if !start {
            return Err(UsageError::usage(format!(
                "Illegal '{word}' option with the 'stop-daemon' command"
            )));
        }
        match opt {
            Opt::McastInterface => {
                if value.is_empty() || value.len() >= 16 {
                    return Err(UsageError::usage(
                        "illegal multicast interface name specified",
                    ));
                }
                cfg.mcast_interface = Some(value);
            }
            Opt::SyncId => {
                cfg.syncid = value
                    .parse::<u8>()
                    .map_err(|_| UsageError::usage("illegal syncid specified"))?;
            }
            Opt::SyncMaxlen => {
                cfg.maxlen = Some(
                    value
                        .parse::<u16>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| UsageError::usage("illegal sync-maxlen specified"))?,
                );
            }
            Opt::McastGroup => match value.parse::<IpAddr>() {
                Ok(IpAddr::V4(g)) if g.is_multicast() => cfg.group = g,
                Ok(IpAddr::V6(g)) if g.is_multicast() => {
                    return Err(UsageError::unsupported(
                        "an IPv6 sync group (--mcast-group)",
                    ))
                }
                _ => return Err(UsageError::usage("illegal mcast-group specified")),
            },
            Opt::McastPort => {
                cfg.port = value
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| UsageError::usage("illegal mcast-port specified"))?;
            }
            Opt::McastTtl => {
                cfg.ttl = value
                    .parse::<u8>()
                    .ok()
                    .filter(|t| *t > 0)
                    .ok_or_else(|| UsageError::usage("illegal mcast-ttl specified"))?;
            }
            _ => {
                return Err(UsageError::usage(format!(
                    "Illegal '{word}' option with the 'start-daemon' command"
                )))
            }
        }
    }
    Ok(if start {
        Command::StartDaemon(cfg)
    } else {
        Command::StopDaemon(role)
    })
}
