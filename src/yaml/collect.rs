//! Collecting every error of a deserialization, not just the first.
//!
//! serde's derived visitors stop at the first error they are given, so errors are
//! kept out of their way: when a value fails, the error is *recorded* (with the
//! value's position and field path) and the visitor gets a marker error that
//! unwinds it; the failed node is then hidden and the whole document is
//! deserialized again, so the next pass reaches the siblings the first one never
//! saw. A hidden field that was required shows up as "missing": that error is a
//! consequence, not news, so it is dropped and the parent is hidden in turn. Each
//! pass hides at least one more node, so this ends; a document with one problem
//! takes a few passes, a valid one exactly one. Unknown fields and repeated keys
//! are recorded and skipped without unwinding anything.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fmt;

use serde::de;

use super::de::De;
use super::read::Node;
use super::{Error, Mark, MAX_ERRORS};

/// Where a node is in its document: `routes[1].auth`.
#[derive(Debug, Clone, Copy)]
pub enum Path<'a> {
    /// The document itself.
    Root,
    /// Element `index` of a sequence.
    Seq {
        /// The sequence's path.
        parent: &'a Path<'a>,
        /// The element's index.
        index: usize,
    },
    /// The value of `key` in a mapping.
    Map {
        /// The mapping's path.
        parent: &'a Path<'a>,
        /// The key.
        key: &'a str,
    },
    /// The value of a key that is not a string.
    Unknown {
        /// The mapping's path.
        parent: &'a Path<'a>,
    },
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parent = |f: &mut fmt::Formatter<'_>, p: &Path<'_>| match p {
            Path::Root => Ok(()),
            p => write!(f, "{p}."),
        };
        match self {
            Path::Root => Ok(()),
            Path::Seq { parent, index } => write!(f, "{parent}[{index}]"),
            Path::Map { parent: p, key } => {
                parent(f, p)?;
                f.write_str(key)
            }
            Path::Unknown { parent: p } => {
                parent(f, p)?;
                f.write_str("?")
            }
        }
    }
}

/// An error inside deserialization.
#[derive(Debug)]
pub struct DeError(pub(super) Fault);

#[derive(Debug)]
pub(super) enum Fault {
    /// A problem not yet recorded; the caller that knows the node records it.
    Message(String),
    /// A required field is absent (maybe because it was hidden after an error).
    MissingField(&'static str),
    /// Already recorded: unwind.
    Recorded,
    /// Nothing new to say, but this node cannot be built: hide it and unwind.
    Hide,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Fault::Message(m) => f.write_str(m),
            Fault::MissingField(field) => write!(f, "missing field `{field}`"),
            Fault::Recorded | Fault::Hide => f.write_str("(reported)"),
        }
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError(Fault::Message(msg.to_string()))
    }

    fn missing_field(field: &'static str) -> Self {
        DeError(Fault::MissingField(field))
    }
}

/// What one deserialization collects across its passes.
#[derive(Default)]
pub(super) struct Ctx {
    errors: RefCell<Vec<Error>>,
    hidden: RefCell<HashSet<usize>>,
    any_hidden: Cell<bool>,
    hid_more: Cell<bool>,
}

impl Ctx {
    /// Whether node `id` is hidden from visitors.
    pub(super) fn is_hidden(&self, id: usize) -> bool {
        self.any_hidden.get() && self.hidden.borrow().contains(&id)
    }

    fn hide(&self, id: usize) {
        if self.hidden.borrow_mut().insert(id) {
            self.hid_more.set(true);
            self.any_hidden.set(true);
        }
    }

    /// Record a problem (once, however many passes meet it).
    pub(super) fn record(&self, mark: Mark, path: &Path<'_>, message: String) {
        let e = Error {
            mark: Some(mark),
            path: path.to_string(),
            message,
        };
        let mut errors = self.errors.borrow_mut();
        if !errors.contains(&e) && errors.len() < MAX_ERRORS {
            errors.push(e);
        }
    }

    /// A child `node` at `path` failed with `e`: record what is new, hide the node when
    /// it cannot be built, and hand back the marker that unwinds the visitor.
    pub(super) fn failed(&self, e: DeError, node: &Node, path: &Path<'_>) -> DeError {
        match e.0 {
            Fault::Recorded => {}
            Fault::Hide => self.hide(node.id),
            Fault::Message(_) | Fault::MissingField(_) => {
                self.record(node.mark, path, e.to_string());
                self.hide(node.id);
            }
        }
        DeError(Fault::Recorded)
    }
}

/// Deserialize `node` (at `path`) into `T`, pass after pass until no new node is hidden.
pub(super) fn deserialize<T: de::DeserializeOwned>(
    node: &Node,
    path: &Path<'_>,
) -> Result<T, Vec<Error>> {
    let ctx = Ctx::default();
    loop {
        ctx.hid_more.set(false);
        match T::deserialize(De::new(node, *path, &ctx)) {
            Ok(v) if ctx.errors.borrow().is_empty() => return Ok(v),
            Ok(_) => {}
            Err(DeError(Fault::Recorded | Fault::Hide)) => {}
            Err(e) => {
                ctx.record(node.mark, path, e.to_string());
                break;
            }
        }
        if !ctx.hid_more.get() || ctx.errors.borrow().len() >= MAX_ERRORS {
            break;
        }
    }
    let mut errors = ctx.errors.into_inner();
    errors.sort_by_key(|e| e.mark);
    if errors.is_empty() {
        // Unreachable in practice: a failure always records something.
        errors.push(Error {
            mark: Some(node.mark),
            path: path.to_string(),
            message: "invalid value".to_string(),
        });
    }
    Err(errors)
}
