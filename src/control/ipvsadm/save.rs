//! `-S` (ipvsadm-save) output and `-R` (ipvsadm-restore) input.
//!
//! `-S` prints one `-A` line per service and one `-a` line per real server,
//! sorted as `-L` sorts, exactly as ipvsadm 1.31 does (tunnel servers carry
//! `--tun-type ipip`), plus ` -x N` / ` -y N` for thresholds, which ipvsadm
//! loses. [`parse_restore`] reads that back — or any list of ipvsadm
//! command lines — into a script; [`restore`] applies its edits to the
//! model as one transaction, all or nothing, and hands back its `-Z` and
//! `--set` lines, which act outside the model.

use std::fmt::{self, Write};

use super::names::Services;
use super::render::{addr_port, mask, sched_flags, sorted_reals, sorted_services};
use super::{parse_with, Command, UsageError};
use crate::packet::L4Proto;
use crate::service::{ApplyError, ForwardMethod, RealId, ServiceKey, ServiceModel, VirtualService};

/// One command of a restore script and the line it came from (1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptLine {
    pub line: usize,
    pub command: Command,
}

/// `-S`, or `-S -n` with `numeric`.
pub fn save(services: &[VirtualService], numeric: bool, names: &Services) -> String {
    let mut out = String::new();
    for s in sorted_services(services, false) {
        let option = match s.key.proto {
            L4Proto::Udp => "-u",
            _ => "-t",
        };
        let vname = addr_port(s.key.addr, s.key.port, s.key.proto, numeric, names);
        let svc = format!("{option} {vname}");
        let _ = write!(out, "-A {svc} -s {}", s.scheduler.name());
        if let Some(p) = s.persistence {
            let _ = write!(out, " -p {}", p.timeout_secs);
            if let Some(m) = mask(s.key.addr, p.prefix_len) {
                let _ = write!(out, " -M {m}");
            }
        }
        if let Some(flags) = sched_flags(s) {
            let _ = write!(out, " -b {flags}");
        }
        out.push('\n');
        for r in sorted_reals(&s.reals, false) {
            let dname = addr_port(r.addr, r.port, s.key.proto, numeric, names);
            let method = match r.method {
                ForwardMethod::Nat => "-m",
                ForwardMethod::Tun => "-i",
                ForwardMethod::Dr => "-g",
            };
            let _ = write!(out, "-a {svc} -r {dname} {method} -w {}", r.weight);
            if r.method == ForwardMethod::Tun {
                out.push_str(" --tun-type ipip");
            }
            if r.upper_threshold != 0 {
                let _ = write!(out, " -x {}", r.upper_threshold);
            }
            if r.lower_threshold != 0 {
                let _ = write!(out, " -y {}", r.lower_threshold);
            }
            out.push('\n');
        }
    }
    out
}

/// Parses `-R` input: one ipvsadm command line per line, optionally
/// starting with the word `ipvsadm`; blank lines and `#` comments skipped.
/// Only commands that change state are allowed (`-A -E -D -C -a -e -d -Z
/// --set`). The first bad line fails the whole script, named in the message
/// ("line 3: illegal weight specified") with ipvsadm's exit status.
pub fn parse_restore(text: &str, names: &Services) -> Result<Vec<ScriptLine>, UsageError> {
    let mut script = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut words: Vec<String> = trimmed.split_whitespace().map(str::to_string).collect();
        if words.first().map(String::as_str) == Some("ipvsadm") {
            words.remove(0);
            if words.is_empty() {
                continue;
            }
        }
        let command = parse_with(&words, names).map_err(|e| UsageError {
            message: format!("line {n}: {}", e.message),
            exit_code: e.exit_code,
        })?;
        match command {
            Command::Edit(_) | Command::Zero(_) | Command::SetTimeouts { .. } => {}
            _ => {
                return Err(UsageError::usage(format!(
                    "line {n}: only -A -E -D -C -a -e -d -Z and --set can be restored, not `{}'",
                    words.join(" ")
                )))
            }
        }
        script.push(ScriptLine { line: n, command });
    }
    Ok(script)
}

/// A restore that failed: the line and why. Nothing was applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestoreError {
    pub line: usize,
    pub error: ApplyError,
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.error)
    }
}

impl std::error::Error for RestoreError {}

/// What a successful restore leaves for the daemon to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreOutcome {
    /// Real servers the script deleted, as `Applied::removed`.
    pub removed: Vec<RealId>,
    /// The script's `-Z` and `--set` commands, in order, which act on
    /// counters and timeouts outside the model.
    pub deferred: Vec<Command>,
}

/// `-R`: applies a whole script to `model` or nothing, as one transaction.
/// `-Z` lines are checked against the model as the script has it by then;
/// they and the `--set` lines are handed back for the daemon to carry out.
/// A freed real-server id is reused only if `reusable` says so.
pub fn restore(
    model: &mut ServiceModel,
    script: &[ScriptLine],
    reusable: &dyn Fn(RealId) -> bool,
) -> Result<RestoreOutcome, RestoreError> {
    let mut tx = model.transaction();
    let mut deferred = Vec::new();
    for line in script {
        let fail = |error| RestoreError {
            line: line.line,
            error,
        };
        match &line.command {
            Command::Edit(edit) => tx.apply_with(edit, reusable).map_err(fail)?,
            Command::Zero(key) => {
                check_zero(tx.model(), key.as_ref()).map_err(fail)?;
                deferred.push(line.command.clone());
            }
            other => deferred.push(other.clone()),
        }
    }
    let removed = tx.commit().removed;
    Ok(RestoreOutcome { removed, deferred })
}

/// `-Z`: whether the service to zero exists (the counters themselves live
/// with the workers).
pub fn check_zero(model: &ServiceModel, key: Option<&ServiceKey>) -> Result<(), ApplyError> {
    match key {
        Some(k) if model.service(k).is_none() => Err(ApplyError::NoSuchService),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::Edit;

    const SAVED: &str = "\
-A -t 192.0.2.1:80 -s wlc -p 300 -M 255.255.255.0
-a -t 192.0.2.1:80 -r 198.51.100.10:80 -i -w 1 --tun-type ipip
-a -t 192.0.2.1:80 -r 198.51.100.11:80 -g -w 0 -x 100 -y 50
-a -t 192.0.2.1:80 -r 198.51.100.12:8080 -m -w 3
-A -t 192.0.2.1:443 -s sh -b sh-fallback,sh-port
-A -u 192.0.2.1:53 -s rr
-a -u 192.0.2.1:53 -r 198.51.100.20:5353 -m -w 1
-A -t [2001:db8::1]:443 -s mh -p 120 -M 64 -b mh-port
-a -t [2001:db8::1]:443 -r [2001:db8:1::10]:443 -m -w 2
";

    fn restored(text: &str) -> ServiceModel {
        let mut m = ServiceModel::new(64);
        let script = parse_restore(text, &Services::builtin()).unwrap();
        restore(&mut m, &script, &|_| true).unwrap();
        m
    }

    #[test]
    fn save_numeric_golden() {
        // Given in another order, with a comment and the `ipvsadm` prefix.
        let m = restored(
            "# saved by hand\n\
             ipvsadm -A -t [2001:db8::1]:443 -s mh -b mh-port -p 120 -M 64\n\
             -A -u 192.0.2.1:domain -s rr\n\
             \n\
             -A -t 192.0.2.1:http -p 300 -M 255.255.255.0\n\
             -A -t 192.0.2.1:https -s sh -b sh-port,sh-fallback\n\
             -a -t 192.0.2.1:80 -r 198.51.100.12:8080 -m -w 3\n\
             -a -t 192.0.2.1:80 -r 198.51.100.11 -w 0 -x 100 -y 50\n\
             -a -t 192.0.2.1:80 -r 198.51.100.10 -i\n\
             -a -u 192.0.2.1:53 -r 198.51.100.20:5353 -m\n\
             -a -t [2001:db8::1]:443 -r 2001:db8:1::10 -m -w 2\n",
        );
        assert_eq!(save(m.services(), true, &Services::builtin()), SAVED);
    }

    #[test]
    fn save_with_port_names() {
        let m = restored(SAVED);
        assert_eq!(
            save(m.services(), false, &Services::builtin()),
            "\
-A -t 192.0.2.1:http -s wlc -p 300 -M 255.255.255.0
-a -t 192.0.2.1:http -r 198.51.100.10:http -i -w 1 --tun-type ipip
-a -t 192.0.2.1:http -r 198.51.100.11:http -g -w 0 -x 100 -y 50
-a -t 192.0.2.1:http -r 198.51.100.12:http-alt -m -w 3
-A -t 192.0.2.1:https -s sh -b sh-fallback,sh-port
-A -u 192.0.2.1:domain -s rr
-a -u 192.0.2.1:domain -r 198.51.100.20:5353 -m -w 1
-A -t [2001:db8::1]:https -s mh -p 120 -M 64 -b mh-port
-a -t [2001:db8::1]:https -r [2001:db8:1::10]:https -m -w 2
"
        );
    }

    #[test]
    fn save_clear_restore_save_round_trips() {
        let names = Services::builtin();
        let mut m = restored(SAVED);
        for numeric in [true, false] {
            let first = save(m.services(), numeric, &names);
            m.apply(&Edit::Clear).unwrap();
            assert_eq!(save(m.services(), numeric, &names), "");
            let script = parse_restore(&first, &names).unwrap();
            restore(&mut m, &script, &|_| true).unwrap();
            assert_eq!(save(m.services(), numeric, &names), first);
        }
    }

    #[test]
    fn restore_names_the_failing_line() {
        let names = Services::builtin();
        let e = parse_restore(
            "-A -t 192.0.2.1:80\n\n-a -t 192.0.2.1:80 -r 198.51.100.1 -w x\n",
            &names,
        )
        .unwrap_err();
        assert_eq!(
            (e.message.as_str(), e.exit_code),
            ("line 3: illegal weight specified", 2)
        );
        let e = parse_restore("-C\n-L -n\n", &names).unwrap_err();
        assert_eq!(
            e.message,
            "line 2: only -A -E -D -C -a -e -d -Z and --set can be restored, not `-L -n'"
        );
        let e = parse_restore("-A -t 192.0.2.1:80 --bogus\n", &names).unwrap_err();
        assert_eq!(
            (e.message.as_str(), e.exit_code),
            ("line 1: --bogus: unknown option", 255)
        );
        // A script the model refuses changes nothing.
        let mut m = restored(SAVED);
        let script = parse_restore(
            "-C\n-A -t 192.0.2.9:80\n-a -t 192.0.2.9:80 -r 198.51.100.1\n-a -t 192.0.2.9:80 -r 198.51.100.1\n",
            &names,
        )
        .unwrap();
        let e = restore(&mut m, &script, &|_| true).unwrap_err();
        assert_eq!(e.to_string(), "line 4: Destination already exists");
        assert_eq!(save(m.services(), true, &names), SAVED);
    }
}
