//! The YAML reader: positions kept, every schema error reported, one subtree at a time.
//!
//! `serde_yaml` stops at the first error and its `Value` keeps no positions; it
//! also builds the whole event list of a document before deserializing any of
//! it. This module reads YAML with the `saphyr-parser` event parser instead:
//!
//! - `read`, `chars`: events with their line and column, a small spanned tree
//!   ([`Node`]) built from them, from a string or streamed from any reader;
//! - `scalar`: how a plain scalar resolves (YAML 1.2 core schema), exactly as
//!   `serde_yaml` 0.9 resolves it, so a file means what it always meant;
//! - `de`, `access`, `collect`: a serde `Deserializer` over a [`Node`] that records
//!   *every* error it meets (unknown fields, wrong types, unknown variants, missing
//!   fields), each with its position and field path, instead of stopping;
//! - `stream`: hands the elements of one top-level list to a callback one at a
//!   time, so a file with a million entries is never in memory as a whole;
//! - `locate`: finds the line and column of a field path (`routes[1].upstream`),
//!   for problems found after parsing.
//!
//! It knows nothing of keygate's files (that is [`crate::config`]). Where it
//! deliberately differs from `serde_yaml`: a mapping with the same key twice is
//! an error (`serde_yaml` kept the last value for maps, and rejected it only for
//! struct fields), and errors are collected rather than the first one returned.
//! Where the parsers differ: `saphyr-parser` follows YAML 1.2 where libyaml did
//! not, refusing a few things libyaml accepted (see `config::compat`, which reads
//! such files the old way) and reading three rare constructs differently
//! (`{?a: 1}`, an anchor name holding `:`, a `%` escape in a tag; see
//! `tests/parity.rs`).

mod access;
mod chars;
mod collect;
mod de;
mod locate;
mod read;
mod scalar;
mod stream;

use std::fmt;

pub use chars::Chars;
pub use collect::Path;
pub use locate::locate;
pub use read::{Kind, Node, Reader, Scalar, Style};
pub use stream::{for_each_element, Walk};

/// A position in a YAML text: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mark {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
}

/// One problem in a YAML text: where, which field, what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Where it is, when known.
    pub mark: Option<Mark>,
    /// The field path, e.g. `routes[1].auth`; empty for the document itself.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(m) = self.mark {
            write!(f, "{}:{}: ", m.line, m.col)?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Why a streamed YAML text could not be read.
#[derive(Debug)]
pub enum Failure {
    /// The reader failed, or the text is not UTF-8.
    Io(std::io::Error),
    /// The text has problems: every one found.
    Invalid(Vec<Error>),
}

/// The most problems collected from one text before giving up on finding more.
pub const MAX_ERRORS: usize = 100;

/// Read a single-document YAML text into its tree (an empty text is an empty plain
/// scalar, as `serde_yaml` reads it).
///
/// # Errors
/// The syntax error (one: the parser stops there), or a second document.
pub fn parse(text: &str) -> Result<Node, Error> {
    Reader::from_str(text).document().map_err(|f| match f {
        Failure::Invalid(mut errors) if !errors.is_empty() => errors.swap_remove(0),
        Failure::Invalid(_) => Error {
            mark: None,
            path: String::new(),
            message: "invalid YAML".to_string(),
        },
        Failure::Io(e) => Error {
            mark: None,
            path: String::new(),
            message: e.to_string(),
        },
    })
}

/// Deserialize a single-document YAML text into `T`, reporting every problem found.
///
/// Scalars resolve as `serde_yaml` 0.9 resolves them. An empty text is an empty
/// document (as `serde_yaml` reads it: an empty mapping for a struct).
///
/// # Errors
/// The syntax error, or every schema problem found, sorted by position.
pub fn from_str<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, Vec<Error>> {
    from_node(&parse(text).map_err(|e| vec![e])?, &Path::Root)
}

/// Deserialize `node` into `T`; `path` is where the node is in its document (for
/// messages). Reports every schema problem found, sorted by position.
///
/// # Errors
/// Every problem found, each with position and field path.
pub fn from_node<T: serde::de::DeserializeOwned>(
    node: &Node,
    path: &Path<'_>,
) -> Result<T, Vec<Error>> {
    collect::deserialize(node, path)
}

#[cfg(test)]
mod tests;
