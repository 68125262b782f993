//! keepalived.conf read as it is: its `virtual_server` blocks become xvs
//! services, real servers, checks and failure policies
//! (`xvs director --keepalived FILE`), so a keepalived LVS site moves to
//! xvs with its own file.
//!
//! [`load`] reads a file and its includes, [`parse`] a text without them.
//! Both give a [`Keepalived`] or every error of the file at once, one per
//! line, each "FILE:LINE: what is wrong". No keyword is dropped silently:
//! what xvs does not know is an error; what keepalived accepts and xvs
//! reads but cannot honour is, key by key, an error (where running without
//! it would change what is served or checked) or a note (where it does
//! not: mail alerts, SNMP names, a source address for checks). VRRP and
//! everything else outside `virtual_server` stays keepalived's job: those
//! blocks are skipped with a note.
//!
//! [`lex`] has the lexical rules; [`lvs`] the `virtual_server` keywords,
//! keepalived's defaults, and the table of what becomes of each key.

pub mod lex;
pub mod lvs;

use std::path::Path;

use crate::files;
use crate::health::CheckConfig;
use crate::service::{RealSpec, ServicePolicy, ServiceSpec};

/// What a keepalived.conf configures for xvs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Keepalived {
    /// Each `virtual_server` in file order: the service, what it does on
    /// failures, its real servers (without the sorry server, which is in
    /// the policy).
    pub services: Vec<(ServiceSpec, ServicePolicy, Vec<RealSpec>)>,
    /// One check per real server that has a checker block; real servers
    /// without one are not checked (always up, as keepalived has them).
    pub checks: CheckConfig,
    /// Said once at start: ignored vrrp_* / global_defs / static_* blocks,
    /// keys read but not honoured, "file:line: ...".
    pub notes: Vec<String>,
}

/// Reads the keepalived.conf at `path` and the files it includes (relative
/// include paths are from the including file's directory, as keepalived
/// has them).
pub fn load(path: &Path) -> Result<Keepalived, String> {
    let read = |p: &Path| files::read_text(p, files::MAX_CONFIG_BYTES).map_err(|e| e.to_string());
    let text = read(path)?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let shown = path.display().to_string();
    from_text(&text, &shown, dir, Some(&read), &config_id())
}

/// Reads keepalived.conf text named `file` in messages; an `include` in it
/// is an error.
pub fn parse(text: &str, file: &str) -> Result<Keepalived, String> {
    from_text(text, file, None, None, &config_id())
}

/// The configuration id `@ID` lines are compared with: as keepalived's
/// default, the host name up to its first dot.
pub fn config_id() -> String {
    files::read_text(
        Path::new("/proc/sys/kernel/hostname"),
        files::MAX_SYSTEM_BYTES,
    )
    .map(|h| h.trim().split('.').next().unwrap_or("").to_owned())
    .unwrap_or_default()
}

/// The whole reading: text to statements to services, with `config_id`
/// for `@ID` lines.
pub fn from_text(
    text: &str,
    file: &str,
    dir: Option<&Path>,
    reader: lex::Reader<'_>,
    config_id: &str,
) -> Result<Keepalived, String> {
    let mut diag = Diag::default();
    let tree = lex::read(text, file, dir, reader, config_id, &mut diag);
    let (services, checks) = lvs::read(&tree, &mut diag);
    if !diag.errors.is_empty() {
        return Err(diag.errors.join("\n"));
    }
    Ok(Keepalived {
        services,
        checks,
        notes: diag.notes,
    })
}

/// The files read so far and what was found wrong or worth saying.
#[derive(Debug, Default)]
pub struct Diag {
    pub files: Vec<String>,
    pub errors: Vec<String>,
    pub notes: Vec<String>,
}

impl Diag {
    fn add_file(&mut self, name: &str) -> usize {
        self.files.push(name.to_owned());
        self.files.len() - 1
    }

    fn place(&self, at: lex::At) -> String {
        format!("{}:{}", self.files[at.file], at.line)
    }

    pub fn error(&mut self, at: lex::At, msg: impl AsRef<str>) {
        let line = format!("{}: {}", self.place(at), msg.as_ref());
        self.errors.push(line);
    }

    pub fn note(&mut self, at: lex::At, msg: impl AsRef<str>) {
        let line = format!("{}: {}", self.place(at), msg.as_ref());
        self.notes.push(line);
    }
}

#[cfg(test)]
mod tests;
