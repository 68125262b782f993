//! A popt-style lexer: words in, options (with their values) and
//! arguments out, as popt splits them — short options cluster, `--long=value`
//! or `--long value`, `--` ends options, an optional value is taken only
//! from a word that does not start with `-`.

use super::super::UsageError;
use super::options::{Opt, Takes, OPTIONS};

pub(super) enum Token {
    Opt {
        opt: Opt,
        value: Option<String>,
        /// The word it came from, for messages.
        word: String,
    },
    Arg(String),
}

/// What popt refuses, with the word it refused.
pub(super) enum PoptError {
    Unknown(String),
    MissingArg(String),
    UnwantedArg(String),
}

impl PoptError {
    pub(super) fn into_usage(self) -> UsageError {
        let (word, what) = match self {
            PoptError::Unknown(w) => (w, "unknown option"),
            PoptError::MissingArg(w) => (w, "missing argument"),
            PoptError::UnwantedArg(w) => (w, "option does not take an argument"),
        };
        UsageError::failed(format!("{word}: {what}"))
    }
}

/// Splits words into options and arguments as popt does.
pub(super) struct Lexer<'a> {
    args: &'a [String],
    next: usize,
    /// Inside a cluster of short options: the word and the byte offset of
    /// the next option letter.
    cluster: Option<(usize, usize)>,
    /// After `--`, everything is an argument.
    only_args: bool,
}

impl Lexer<'_> {
    pub(super) fn new(args: &[String]) -> Lexer<'_> {
        Lexer {
            args,
            next: 0,
            cluster: None,
            only_args: false,
        }
    }

    pub(super) fn next(&mut self) -> Option<Result<Token, PoptError>> {
        if let Some((w, at)) = self.cluster.take() {
            return Some(self.short(w, at));
        }
        let word = self.args.get(self.next)?;
        self.next += 1;
        if self.only_args || word == "-" || !word.starts_with('-') {
            return Some(Ok(Token::Arg(word.clone())));
        }
        if word == "--" {
            self.only_args = true;
            return self.next();
        }
        if let Some(long) = word.strip_prefix("--") {
            return Some(self.long(word, long));
        }
        Some(self.short(self.next - 1, 1))
    }

    fn long(&mut self, word: &str, long: &str) -> Result<Token, PoptError> {
        let (name, inline) = match long.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (long, None),
        };
        let &(opt, _, _, takes) = OPTIONS
            .iter()
            .find(|o| o.1 == name)
            .ok_or_else(|| PoptError::Unknown(word.to_string()))?;
        let value = match (takes, inline) {
            (Takes::Nothing, Some(_)) => return Err(PoptError::UnwantedArg(word.to_string())),
            (_, Some(v)) => Some(v),
            (Takes::Nothing, None) => None,
            (Takes::Value, None) => Some(
                self.take_word()
                    .ok_or_else(|| PoptError::MissingArg(word.to_string()))?,
            ),
            (Takes::MaybeValue, None) => self.take_maybe(),
        };
        Ok(Token::Opt {
            opt,
            value,
            word: word.to_string(),
        })
    }

    fn short(&mut self, w: usize, at: usize) -> Result<Token, PoptError> {
        let word = &self.args[w];
        let rest = &word[at..];
        let unknown = || PoptError::Unknown(word.clone());
        let c = rest.chars().next().ok_or_else(unknown)?;
        let &(opt, _, _, takes) = OPTIONS
            .iter()
            .find(|o| o.2 == Some(c))
            .ok_or_else(unknown)?;
        let after = &rest[c.len_utf8()..];
        let value = match takes {
            Takes::Nothing => {
                if !after.is_empty() {
                    self.cluster = Some((w, at + c.len_utf8()));
                }
                None
            }
            _ if !after.is_empty() => Some(after.to_string()),
            Takes::Value => Some(
                self.take_word()
                    .ok_or_else(|| PoptError::MissingArg(word.clone()))?,
            ),
            Takes::MaybeValue => self.take_maybe(),
        };
        Ok(Token::Opt {
            opt,
            value,
            word: word.clone(),
        })
    }

    fn take_word(&mut self) -> Option<String> {
        let word = self.args.get(self.next)?.clone();
        self.next += 1;
        Some(word)
    }

    fn take_maybe(&mut self) -> Option<String> {
        match self.args.get(self.next) {
            Some(w) if !w.starts_with('-') => self.take_word(),
            _ => None,
        }
    }
}
