//! The crate's layering, checked: a module that imports one it must not
//! fails this test. ARCHITECTURE.md draws the layers; [`RULES`] is that
//! drawing as data.
//!
//! Every `.rs` file under `src/` is read; its references to other modules
//! (`use crate::...`, `use super::...`, inline `crate::x::y` paths, grouped
//! `{a, b::c}` trees) are resolved to absolute module paths. Comments and
//! test code — a `#[cfg(test)]` module to the end of the file, or a file its
//! parent declares under `#[cfg(test)]` — are left out: tests may reach
//! anywhere.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// `(module, modules it must not import, why)`. A module is a `::` path
/// prefix: `control` covers `control::daemon` and everything below it.
const RULES: &[(&str, &[&str], &str)] = &[
    (
        "packet",
        &[
            "conntrack",
            "control",
            "director",
            "forward",
            "neigh",
            "pipeline",
            "sched",
            "service",
            "verdict",
            "xsk",
        ],
        "packet parses and rewrites bytes; nothing above it",
    ),
    (
        "verdict",
        &[
            "conntrack",
            "control",
            "director",
            "forward",
            "pipeline",
            "sched",
            "service",
            "xsk",
        ],
        "a leaf every layer speaks",
    ),
    (
        "forward",
        &[
            "conntrack",
            "control",
            "director",
            "pipeline",
            "sched",
            "xsk",
        ],
        "a forwarding method rewrites one frame; it knows no connections",
    ),
    (
        "sched",
        &["conntrack", "control", "director", "pipeline", "xsk"],
        "schedulers read real servers' loads, never the connection table",
    ),
    (
        "conntrack",
        &["sched", "control", "director", "pipeline", "xsk"],
        "the table knows no schedulers and no I/O",
    ),
    (
        "service",
        &[
            "control",
            "director",
            "pipeline",
            "xsk",
            "conntrack",
            "sched",
        ],
        "the model is no front end's: ipvsadm, config, health checks and sync edit it",
    ),
    (
        "pipeline",
        &["control", "director", "xsk"],
        "the sans-IO core: no sockets, no control plane",
    ),
    (
        "neigh",
        &["control", "director", "pipeline", "xsk"],
        "next hops are data the pipeline reads",
    ),
    (
        "health",
        &[
            "conntrack",
            "control",
            "director",
            "pipeline",
            "sync",
            "xsk",
        ],
        "checks post reports to the daemon; they never touch the data plane",
    ),
    (
        "sync",
        &["control", "director", "health", "xsk"],
        "sync speaks to peers and the connection table; the daemon wires it",
    ),
    (
        "control::metrics",
        &["control::daemon", "director"],
        "metrics encode and serve what the daemon hands them",
    ),
];

/// Leaves inside a module others must not import, which any layer may:
/// `(module, why)`. A leaf imports nothing of the crate (checked).
const LEAVES: &[(&str, &str)] = &[(
    "xsk::huge",
    "arrays on huge pages, no I/O: in xsk only because unsafe code lives there",
)];

/// Test support that production code never imports.
const TEST_SUPPORT: &str = "pipeline::testnet";

/// One file's module path and the absolute module paths it references.
struct Source {
    path: PathBuf,
    module: Vec<String>,
    refs: BTreeSet<String>,
}

#[test]
fn modules_import_only_what_their_layer_allows() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let sources = read_tree(&root);
    assert!(
        sources.len() > 40,
        "read {} files under src/",
        sources.len()
    );
    let violations = check(&sources);
    assert!(
        violations.is_empty(),
        "layering broken:\n{}",
        violations.join("\n")
    );
}

/// The checker finds what it is meant to: a synthetic file of each kind of
/// reference, in a module that may not make it.
#[test]
fn the_checker_sees_every_form_of_import() {
    let fake = |module: &str, text: &str| {
        let module: Vec<String> = module.split("::").map(String::from).collect();
        Source {
            path: PathBuf::from(format!("{}.rs", module.join("/"))),
            refs: references(&module, false, text),
            module,
        }
    };
    let cases = [
        ("forward::nat", "use crate::conntrack::ConnTable;\n"),
        ("forward::nat", "use crate::{packet::Frame, conntrack};\n"),
        ("sched::rr", "fn f() { crate::conntrack::x(); }\n"),
        ("control::metrics", "use super::daemon::Control;\n"),
        (
            "control::metrics::encode",
            "use super::super::daemon::{self};\n",
        ),
        ("packet::parse", "use crate::{neigh::{PortId}};\n"),
        ("director", "use crate::pipeline::testnet;\n"),
        ("xsk::huge", "use crate::packet::Frame;\n"),
        ("conntrack::table", "use crate::xsk::{huge, worker};\n"),
    ];
    for (module, text) in cases {
        let found = check(&[fake(module, text)]);
        assert_eq!(found.len(), 1, "{module}: {text:?} → {found:?}");
    }
    let fine = [
        (
            "forward::nat",
            "use crate::packet::Frame;\n// use crate::conntrack;\n",
        ),
        (
            "pipeline",
            "use crate::conntrack::ConnTable;\n#[cfg(test)]\nmod tests {\n    use crate::xsk;\n}\n",
        ),
        ("conntrack::table", "use crate::xsk::huge::HugeSlice;\n"),
    ];
    for (module, text) in fine {
        assert_eq!(
            check(&[fake(module, text)]),
            Vec::<String>::new(),
            "{text:?}"
        );
    }
}

fn check(sources: &[Source]) -> Vec<String> {
    let within =
        |path: &str, prefix: &str| path == prefix || path.starts_with(&format!("{prefix}::"));
    let mut violations = Vec::new();
    for s in sources {
        let module = s.module.join("::");
        for (from, forbidden, why) in RULES {
            if !within(&module, from) {
                continue;
            }
            for r in s
                .refs
                .iter()
                .filter(|r| !LEAVES.iter().any(|(l, _)| within(r, l)))
            {
                if let Some(f) = forbidden.iter().find(|f| within(r, f)) {
                    violations.push(format!(
                        "{}: {module} imports {r} ({from} must not import {f}: {why})",
                        shown(&s.path)
                    ));
                }
            }
        }
        if let Some((leaf, _)) = LEAVES.iter().find(|(l, _)| within(&module, l)) {
            for r in s.refs.iter().filter(|r| !within(r, leaf)) {
                violations.push(format!(
                    "{}: {module} imports {r}, but {leaf} is a leaf every layer may import",
                    shown(&s.path)
                ));
            }
        }
        if !within(&module, TEST_SUPPORT) {
            for r in s.refs.iter().filter(|r| within(r, TEST_SUPPORT)) {
                violations.push(format!(
                    "{}: {module} imports {r}, which is test support",
                    shown(&s.path)
                ));
            }
        }
    }
    violations
}

/// A file's path from the crate's root, as a reader finds it.
fn shown(path: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Every file under `root` with its module path; files their parent
/// declares under `#[cfg(test)]` are test code and have no references.
fn read_tree(root: &Path) -> Vec<Source> {
    let mut files = Vec::new();
    collect(root, &mut files);
    files.sort();
    let texts: Vec<(PathBuf, String)> = files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            (f, text)
        })
        .collect();
    let mut test_modules = BTreeSet::new();
    for (f, text) in &texts {
        let module = module_of(root, f);
        let mut lines = text.lines().map(str::trim);
        while let Some(line) = lines.next() {
            if line == "#[cfg(test)]" {
                if let Some(name) = lines
                    .next()
                    .and_then(|l| l.strip_prefix("mod "))
                    .and_then(|l| l.strip_suffix(';'))
                {
                    let mut m = module.clone();
                    m.push(name.to_string());
                    test_modules.insert(m.join("::"));
                }
            }
        }
    }
    texts
        .into_iter()
        .filter(|(f, _)| f.file_name().is_some_and(|n| n != "architecture.rs"))
        .map(|(f, text)| {
            let module = module_of(root, &f);
            let test_only = test_modules.contains(&module.join("::"));
            Source {
                refs: references(&module, test_only, &text),
                module,
                path: f,
            }
        })
        .collect()
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `src/control/metrics.rs` and `src/control/metrics/mod.rs` are
/// `control::metrics`; `src/lib.rs` and `src/bin/*` are the crate root.
fn module_of(root: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(root).unwrap_or(file);
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.first().is_some_and(|p| p == "bin") {
        return Vec::new();
    }
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

/// The absolute module paths `text` (the file of `module`) refers to, up to
/// its first `#[cfg(test)]` module.
fn references(module: &[String], test_only: bool, text: &str) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    if test_only {
        return refs;
    }
    let mut code = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|l| l.trim_start().starts_with("mod "))
        {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        code.push_str(line.split(" //").next().unwrap_or(line));
        code.push('\n');
    }
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &code[i..];
        let boundary = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let base: Option<(Vec<String>, usize)> = if !boundary {
            None
        } else if rest.starts_with("crate::") {
            Some((Vec::new(), "crate::".len()))
        } else if rest.starts_with("super::") {
            let mut m = module.to_vec();
            let mut n = 0;
            while code[i + n..].starts_with("super::") {
                m.pop();
                n += "super::".len();
            }
            Some((m, n))
        } else {
            None
        };
        match base {
            Some((prefix, skip)) => {
                let (paths, used) = use_tree(&code[i + skip..], &prefix);
                for p in paths {
                    refs.insert(p.join("::"));
                }
                i += skip + used.max(1);
            }
            None => i += rest.chars().next().map_or(1, char::len_utf8),
        }
    }
    refs.retain(|r| !r.is_empty());
    refs
}

/// Parses a path or `{...}` tree at the start of `s` below `prefix`, and
/// gives each leaf's module path (at most two segments below the crate,
/// which is as deep as any rule looks, and the leaf's own name dropped
/// when it is an item: items start with an upper-case letter) and the
/// bytes read.
fn use_tree(s: &str, prefix: &[String]) -> (Vec<Vec<String>>, usize) {
    let mut path = prefix.to_vec();
    let mut out = Vec::new();
    let mut i = 0;
    let b = s.as_bytes();
    loop {
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        let seg = &s[start..i];
        if !seg.is_empty() && seg != "self" && !seg.starts_with(|c: char| c.is_ascii_uppercase()) {
            path.push(seg.to_string());
        }
        let group = if s[i..].starts_with("::{") {
            Some(3)
        } else if seg.is_empty() && s[i..].starts_with('{') {
            Some(1)
        } else {
            None
        };
        if let Some(skip) = group {
            i += skip;
            loop {
                let (inner, used) = use_tree(&s[i..], &path);
                out.extend(inner);
                i += used;
                while i < b.len() && (b[i] == b' ' || b[i] == b'\n') {
                    i += 1;
                }
                match b.get(i) {
                    Some(b',') => {
                        i += 1;
                        while i < b.len() && (b[i] == b' ' || b[i] == b'\n') {
                            i += 1;
                        }
                        if b.get(i) == Some(&b'}') {
                            return (out, i + 1);
                        }
                    }
                    Some(b'}') => return (out, i + 1),
                    _ => return (out, i),
                }
            }
        } else if s[i..].starts_with("::") {
            i += 2;
            continue;
        }
        path.truncate(2);
        out.push(path);
        return (out, i);
    }
}
