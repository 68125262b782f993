//! `-S` (ipvsadm-save) output and `-R` (ipvsadm-restore) input.
//!
//! `-S` prints one `-A` line per service and one `-a` line per real server,
//! sorted as `-L` sorts, exactly as ipvsadm 1.31 does (tunnel servers carry
//! `--tun-type ipip`), plus ` -x N` / ` -y N` for thresholds, which ipvsadm
//! loses. [`parse_restore`] reads that back — or any list of ipvsadm
//! command lines — into a script [`super::ServiceModel::restore`] applies
//! all or nothing.

use std::fmt::Write;

use super::names::Services;
use super::render::{addr_port, mask, sched_flags, sorted_reals, sorted_services};
use super::{parse_with, Command, UsageError};
use crate::packet::L4Proto;
use crate::service::{ForwardMethod, VirtualService};

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

#[cfg(test)]
mod tests {
    use super::super::{Edit, ServiceModel};
    use super::*;

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
        m.restore(&script, &|_| true).unwrap();
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
            m.restore(&script, &|_| true).unwrap();
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
        let e = m.restore(&script, &|_| true).unwrap_err();
        assert_eq!(e.to_string(), "line 4: Destination already exists");
        assert_eq!(save(m.services(), true, &names), SAVED);
    }
}
