//! Configuration errors: every problem found, each located by file, line and field.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where a configuration problem was found: file, optional line/column, field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file the problem is in (as given by the operator).
    pub file: PathBuf,
    /// 1-based line and column, when the parser reports one.
    pub line_col: Option<(usize, usize)>,
    /// The field path, e.g. `consumers[2].keys[0].sha256`.
    pub field: String,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.line_col {
            write!(f, ":{line}:{col}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        Ok(())
    }
}

/// One problem with the configuration, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where it is.
    pub at: Location,
    /// What is wrong, in plain words; never contains a key, digest or secret.
    pub message: String,
}

/// Problems kept in full in one list; past them only counted (a file with a million
/// broken keys must not hold a million messages: a report lists the first ones anyway).
pub const KEPT: usize = 1000;

impl Problem {
    /// A line standing for `n` problems of `file` found but not listed (a list stays
    /// short, and its memory flat, however broken a million-key file is).
    pub fn more(file: &Path, n: usize) -> Problem {
        Problem {
            at: Location {
                file: file.to_path_buf(),
                line_col: None,
                field: String::new(),
            },
            message: format!("and {n} more problems"),
        }
    }

    /// Add `p` to `list`, keeping the first `KEPT` (1000) problems in full and counting the
    /// others in one [`Problem::more`] line at the end.
    pub fn push_capped(list: &mut Vec<Problem>, p: Problem) {
        if list.len() < KEPT {
            list.push(p);
            return;
        }
        let n = list.last().and_then(Problem::unlisted).unwrap_or(0);
        if n > 0 {
            list.pop();
        }
        list.push(Problem::more(&p.at.file, n + 1));
    }

    /// For a [`Problem::more`] line, how many problems it stands for.
    pub fn unlisted(&self) -> Option<usize> {
        if !self.at.field.is_empty() || self.at.line_col.is_some() {
            return None;
        }
        self.message
            .strip_prefix("and ")?
            .strip_suffix(" more problems")?
            .parse()
            .ok()
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// Why a configuration could not be loaded. Holds *all* problems found.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("{}: cannot read file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// One or more problems in the contents.
    #[error("{}", ProblemList(.0))]
    Invalid(Vec<Problem>),
}

struct ProblemList<'a>(&'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n: usize = self.0.iter().map(|p| p.unlisted().unwrap_or(1)).sum();
        write!(
            f,
            "{n} problem{} in configuration",
            if n == 1 { "" } else { "s" }
        )?;
        for p in self.0 {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    /// Build an error holding a single problem.
    pub fn one(file: &Path, field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid(vec![Problem {
            at: Location {
                file: file.to_path_buf(),
                line_col: None,
                field: field.into(),
            },
            message: message.into(),
        }])
    }
}
