//! keepalived.conf's lexical layer: files to tokens to a tree of
//! statements, as keepalived reads them.
//!
//! - A statement is a keyword and its arguments up to the end of the line;
//!   `{` and `}` are tokens of their own wherever they stand (outside
//!   quotes), so `url { path / }` on one line is a block, and a `{` alone
//!   on the next line opens the block of the statement above it.
//! - `#` and `!` start a comment anywhere outside quotes.
//! - `"` and `'` quote; a quoted part joins the unquoted text around it
//!   into one token; inside quotes the shell-like escapes keepalived knows
//!   (`\n`, `\t`, `\nnn`, `\xXX`, `\cC`, `\C`, ...) are decoded.
//! - `include` (and `includer`, `includem`, `includew`, `includeb`,
//!   `includea`) splices the files its glob names (with `{a,b}` braces),
//!   relative to the including file's directory, wherever it stands.
//! - A line starting `@ID` is kept only when ID is the configuration id,
//!   `@^ID` only when it is not (keepalived's conditional configuration).
//! - `$NAME=VALUE` defines a parameter (a value of several lines: `\` at
//!   the end of each but the last); `${NAME}` anywhere and `$NAME` before
//!   white space are replaced by its value at the time of use, again and
//!   again while the result has parameters. `_PWD`, `_INSTANCE`, `_HASH`
//!   and `_BANG` are predefined; an undefined parameter stays as written.
//!   `${_RANDOM}` and `~SEQ`/`~LST` lines are reported as unsupported.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::Diag;

/// Most files one configuration may include, nested or not.
const MAX_FILES: usize = 1024;
/// Deepest include nesting (a file including itself stops here).
const MAX_DEPTH: usize = 32;
/// Deepest parameter expansion (a parameter using itself stops here).
const MAX_EXPANSION: usize = 32;

/// Where a token or statement is: an index into [`Diag::files`] and a
/// 1-based line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct At {
    pub file: usize,
    pub line: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Word(String),
    Open,
    Close,
    Eol,
}

/// One statement: its words (the keyword first) and its block, if it has
/// one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stmt {
    pub at: At,
    pub words: Vec<String>,
    pub block: Option<Vec<Stmt>>,
}

impl Stmt {
    pub fn key(&self) -> &str {
        &self.words[0]
    }

    pub fn args(&self) -> &[String] {
        &self.words[1..]
    }
}

/// How included files are read: `None` where includes are not allowed
/// ([`super::parse`]).
pub type Reader<'a> = Option<&'a dyn Fn(&Path) -> Result<String, String>>;

/// The statement tree of `text` (named `file`, in directory `dir`), its
/// includes read through `reader`; errors and notes go to `diag`.
pub fn read(
    text: &str,
    file: &str,
    dir: Option<&Path>,
    reader: Reader<'_>,
    config_id: &str,
    diag: &mut Diag,
) -> Vec<Stmt> {
    let mut lexer = Lexer {
        toks: Vec::new(),
        reader,
        config_id,
        params: HashMap::new(),
        diag,
    };
    let index = lexer.diag.add_file(file);
    lexer.file(text, index, dir, 0);
    let toks = std::mem::take(&mut lexer.toks);
    let mut parser = Parser {
        toks,
        pos: 0,
        diag: lexer.diag,
    };
    parser.block(None)
}

struct Lexer<'a, 'd> {
    toks: Vec<(Tok, At)>,
    reader: Reader<'a>,
    config_id: &'a str,
    /// `$NAME=VALUE` definitions so far, of every file read.
    params: HashMap<String, String>,
    diag: &'d mut Diag,
}

impl Lexer<'_, '_> {
    fn file(&mut self, text: &str, file: usize, dir: Option<&Path>, depth: usize) {
        let mut lines = text.lines().enumerate();
        while let Some((n, raw)) = lines.next() {
            let at = At {
                file,
                line: n as u32 + 1,
            };
            let mut line = strip_comment(raw).to_owned();
            // A multiline definition: `$NAME= \`, then lines ending in `\`
            // up to one that does not (blank lines in between skipped).
            if is_definition(&line) && line.trim_end().ends_with('\\') {
                let mut value = vec![without_backslash(&line)];
                for (_, next) in lines.by_ref() {
                    let next = strip_comment(next);
                    if next.trim().is_empty() {
                        continue;
                    }
                    let more = next.trim_end().ends_with('\\');
                    value.push(without_backslash(next));
                    if !more {
                        break;
                    }
                }
                line = value.join("\n");
            }
            self.logical(&line, at, dir, depth, 0);
        }
    }

    /// One line as read (or as a parameter's expansion gives it, `expanded`
    /// levels deep), its comment gone.
    fn logical(&mut self, line: &str, at: At, dir: Option<&Path>, depth: usize, expanded: usize) {
        let Some(line) = self.conditional(line) else {
            return;
        };
        let trimmed = line.trim_start();
        if let Some((name, value)) = definition(trimmed) {
            self.params.insert(name.to_owned(), value.to_owned());
            return;
        }
        if trimmed.starts_with("~SEQ") || trimmed.starts_with("~LST") {
            self.diag.error(
                at,
                "~SEQ and ~LST lines are not supported by xvs: write the lines out",
            );
            return;
        }
        if let Some(text) = self.substitute(line, at, dir) {
            if expanded >= MAX_EXPANSION {
                self.diag.error(
                    at,
                    format!(
                        "parameters expanded more than {MAX_EXPANSION} levels deep \
                         (does a parameter use itself?)"
                    ),
                );
                return;
            }
            for l in text.split('\n') {
                self.logical(l, at, dir, depth, expanded + 1);
            }
            return;
        }
        // An include line is read before tokens: its pattern may hold
        // braces.
        let first = trimmed.split_whitespace().next().unwrap_or("");
        if let Some(kind) = include_kind(first) {
            let words: Vec<&str> = trimmed[first.len()..].split_whitespace().collect();
            match words.as_slice() {
                [name] => self.include(kind, unquote(name), at, dir, depth),
                _ => self
                    .diag
                    .error(at, "include takes one file name or pattern"),
            }
            return;
        }
        let words = self.line(line, at);
        self.toks.extend(words);
        self.toks.push((Tok::Eol, at));
    }

    /// `line` with its defined parameters replaced (`${NAME}` anywhere,
    /// `$NAME` before white space or the end), or `None` if it has none.
    fn substitute(&mut self, line: &str, at: At, dir: Option<&Path>) -> Option<String> {
        let mut out = String::new();
        let mut rest = line;
        let mut any = false;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            let (name, len) = if let Some(braced) = after.strip_prefix('{') {
                match braced.find('}') {
                    Some(end) => (&braced[..end], end + 2),
                    None => ("", 0),
                }
            } else {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                let followed = after[end..].chars().next().is_none_or(char::is_whitespace);
                if followed {
                    (&after[..end], end)
                } else {
                    ("", 0)
                }
            };
            let value = (len > 0).then(|| self.param(name, at, dir)).flatten();
            match value {
                Some(v) => {
                    out.push_str(&v);
                    rest = &after[len..];
                    any = true;
                }
                None => {
                    out.push('$');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        any.then_some(out)
    }

    /// A parameter's value: defined in the file, or one keepalived
    /// predefines.
    fn param(&mut self, name: &str, at: At, dir: Option<&Path>) -> Option<String> {
        if let Some(v) = self.params.get(name) {
            return Some(v.clone());
        }
        match name {
            "_PWD" => Some(dir.unwrap_or(Path::new(".")).display().to_string()),
            "_INSTANCE" => Some(self.config_id.to_owned()),
            "_HASH" => Some("#".to_owned()),
            "_BANG" => Some("!".to_owned()),
            n if n == "_RANDOM" || n.starts_with("_RANDOM ") => {
                self.diag
                    .error(at, "${_RANDOM} is not supported by xvs: write a number");
                None
            }
            _ => None,
        }
    }

    /// The line without its `@ID` prefix, or `None` when the prefix says
    /// the line is for another configuration id.
    fn conditional<'l>(&self, line: &'l str) -> Option<&'l str> {
        let trimmed = line.trim_start();
        let Some(rest) = trimmed.strip_prefix('@') else {
            return Some(line);
        };
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let (id, tail) = rest.split_at(end);
        let keep = match id.strip_prefix('^') {
            Some(not) => not != self.config_id,
            None => id == self.config_id,
        };
        keep.then_some(tail)
    }

    /// One line's tokens (no end-of-line token).
    fn line(&mut self, line: &str, at: At) -> Vec<(Tok, At)> {
        let mut out = Vec::new();
        let mut word = String::new();
        let mut in_word = false;
        let mut chars = line.chars().peekable();
        let flush = |word: &mut String, in_word: &mut bool, out: &mut Vec<(Tok, At)>| {
            if *in_word {
                out.push((Tok::Word(std::mem::take(word)), at));
                *in_word = false;
            }
        };
        while let Some(c) = chars.next() {
            match c {
                '{' | '}' => {
                    flush(&mut word, &mut in_word, &mut out);
                    out.push((if c == '{' { Tok::Open } else { Tok::Close }, at));
                }
                '"' | '\'' => {
                    in_word = true;
                    let mut closed = false;
                    while let Some(q) = chars.next() {
                        if q == c {
                            closed = true;
                            break;
                        }
                        if q == '\\' {
                            unescape(&mut chars, &mut word);
                        } else {
                            word.push(q);
                        }
                    }
                    if !closed {
                        self.diag
                            .error(at, format!("unterminated {c}quoted string"));
                    }
                }
                c if c.is_whitespace() => flush(&mut word, &mut in_word, &mut out),
                c => {
                    in_word = true;
                    word.push(c);
                }
            }
        }
        flush(&mut word, &mut in_word, &mut out);
        out
    }

    fn include(&mut self, kind: Include, name: &str, at: At, dir: Option<&Path>, depth: usize) {
        let Some(reader) = self.reader else {
            self.diag.error(
                at,
                "include is read only from a file (xvs director --keepalived FILE)",
            );
            return;
        };
        if depth >= MAX_DEPTH {
            self.diag.error(
                at,
                format!(
                    "include nested deeper than {MAX_DEPTH} files (does a file include itself?)"
                ),
            );
            return;
        }
        let base = dir.unwrap_or(Path::new("."));
        let mut paths = Vec::new();
        for pattern in expand_braces(name) {
            // The including file's directory is a path, not a pattern.
            let full = if Path::new(&pattern).is_absolute() {
                pattern.clone()
            } else {
                let base = glob::Pattern::escape(&base.to_string_lossy());
                format!("{}/{pattern}", base.trim_end_matches('/'))
            };
            match glob::glob(&full) {
                Ok(found) => {
                    let mut found: Vec<PathBuf> = found.filter_map(Result::ok).collect();
                    found.sort();
                    paths.extend(found);
                }
                Err(e) => {
                    self.diag
                        .error(at, format!("include pattern '{pattern}': {e}"));
                    return;
                }
            }
        }
        if paths.is_empty() {
            let msg = format!("include '{name}' matches no file");
            if kind.must_match {
                self.diag.error(at, msg);
            } else {
                self.diag.note(at, msg);
            }
            return;
        }
        for path in paths {
            if self.diag.files.len() >= MAX_FILES {
                self.diag
                    .error(at, format!("more than {MAX_FILES} files included"));
                return;
            }
            let shown = path.display().to_string();
            match reader(&path) {
                Ok(text) => {
                    let index = self.diag.add_file(&shown);
                    self.file(&text, index, path.parent(), depth + 1);
                }
                Err(e) => self.diag.error(at, format!("include: {e}")),
            }
        }
    }
}

/// What an include keyword demands of its pattern.
#[derive(Clone, Copy, Debug)]
struct Include {
    /// A pattern that matches nothing is an error (`includem`, `includea`),
    /// else a note. A file that matches but cannot be read is always one.
    must_match: bool,
}

fn include_kind(word: &str) -> Option<Include> {
    match word {
        "include" | "includer" | "includew" | "includeb" => Some(Include { must_match: false }),
        "includem" | "includea" => Some(Include { must_match: true }),
        _ => None,
    }
}

/// `line` up to its comment: `#` or `!` outside quotes.
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '#' | '!' => return &line[..i],
                '"' | '\'' => quote = Some(c),
                _ => {}
            },
        }
    }
    line
}

/// `$NAME=VALUE` (only white space before `$`, none before `=`): the name
/// and the value.
fn definition(line: &str) -> Option<(&str, &str)> {
    let rest = line.trim_start().strip_prefix('$')?;
    let (name, value) = rest.split_once('=')?;
    let mut chars = name.chars();
    let first = chars.next()?;
    let ok = (first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    ok.then_some((name, value.trim_end()))
}

/// Whether `line`, after an `@ID` prefix if it has one, is a definition.
fn is_definition(line: &str) -> bool {
    let t = line.trim_start();
    let t = match t.strip_prefix('@') {
        Some(r) => r
            .split_once(char::is_whitespace)
            .map_or("", |(_, rest)| rest),
        None => t,
    };
    definition(t).is_some()
}

/// A continued line without its final `\\`.
fn without_backslash(line: &str) -> String {
    let t = line.trim_end();
    t.strip_suffix('\\').unwrap_or(t).trim_end().to_owned()
}

/// `name` without the quotes around it, if it has them.
fn unquote(name: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = name.strip_prefix(q).and_then(|n| n.strip_suffix(q)) {
            return inner;
        }
    }
    name
}

/// Decodes one escape after a `\` inside quotes, as keepalived does.
fn unescape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>, out: &mut String) {
    let Some(c) = chars.next() else {
        out.push('\\');
        return;
    };
    let simple = match c {
        'a' => Some('\x07'),
        'b' => Some('\x08'),
        'E' => Some('\x1b'),
        'f' => Some('\x0c'),
        'n' => Some('\n'),
        'r' => Some('\r'),
        't' => Some('\t'),
        'v' => Some('\x0b'),
        _ => None,
    };
    if let Some(s) = simple {
        out.push(s);
        return;
    }
    match c {
        '0'..='7' => {
            let mut v = c.to_digit(8).unwrap_or(0);
            for _ in 0..2 {
                match chars.peek().and_then(|d| d.to_digit(8)) {
                    Some(d) => {
                        v = v * 8 + d;
                        chars.next();
                    }
                    None => break,
                }
            }
            out.push(char::from((v & 0xff) as u8));
        }
        'x' => {
            let mut v: u32 = 0;
            let mut any = false;
            while let Some(d) = chars.peek().and_then(|d| d.to_digit(16)) {
                v = (v << 4 | d) & 0xff;
                any = true;
                chars.next();
            }
            if any {
                out.push(char::from(v as u8));
            } else {
                out.push('x');
            }
        }
        'c' => match chars.next() {
            Some(k) => out.push(char::from((k.to_ascii_uppercase() as u8) ^ 0x40)),
            None => out.push('c'),
        },
        other => out.push(other),
    }
}

/// csh-style brace expansion: `a{b,c{d,e}}f` → `abf acdf acef`.
pub(super) fn expand_braces(pattern: &str) -> Vec<String> {
    let bytes = pattern.as_bytes();
    let Some(open) = pattern.find('{') else {
        return vec![pattern.to_owned()];
    };
    let mut depth = 0;
    let mut parts = Vec::new();
    let mut start = open + 1;
    for (i, &b) in bytes.iter().enumerate().skip(open) {
        match b {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    parts.push(&pattern[start..i]);
                    let (head, tail) = (&pattern[..open], &pattern[i + 1..]);
                    return parts
                        .into_iter()
                        .flat_map(|p| expand_braces(&format!("{head}{p}{tail}")))
                        .collect();
                }
            }
            b',' if depth == 1 => {
                parts.push(&pattern[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    vec![pattern.to_owned()]
}

struct Parser<'d> {
    toks: Vec<(Tok, At)>,
    pos: usize,
    diag: &'d mut Diag,
}

impl Parser<'_> {
    /// Statements up to the `}` of the block opened at `opened` (or to the
    /// end of the input for the top level).
    fn block(&mut self, opened: Option<At>) -> Vec<Stmt> {
        let mut out = Vec::new();
        loop {
            let Some((tok, at)) = self.toks.get(self.pos).cloned() else {
                if let Some(o) = opened {
                    self.diag.error(o, "block opened here has no closing '}'");
                }
                return out;
            };
            self.pos += 1;
            match tok {
                Tok::Eol => {}
                Tok::Close => {
                    if opened.is_some() {
                        return out;
                    }
                    self.diag.error(at, "'}' closes no block");
                }
                Tok::Open => {
                    self.diag.error(at, "'{' without a keyword before it");
                    self.block(Some(at));
                }
                Tok::Word(w) => {
                    let mut words = vec![w];
                    while let Some((Tok::Word(w), _)) = self.toks.get(self.pos) {
                        words.push(w.clone());
                        self.pos += 1;
                    }
                    let block = if self.opens_block() {
                        Some(self.block(Some(at)))
                    } else {
                        None
                    };
                    out.push(Stmt { at, words, block });
                }
            }
        }
    }

    /// Whether a `{` follows, on this line or alone on a later one;
    /// consumes it (and the line ends before it) if so.
    fn opens_block(&mut self) -> bool {
        let mut p = self.pos;
        while let Some((Tok::Eol, _)) = self.toks.get(p) {
            p += 1;
        }
        if let Some((Tok::Open, _)) = self.toks.get(p) {
            self.pos = p + 1;
            return true;
        }
        false
    }
}
