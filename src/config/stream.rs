//! Streaming the keys file: one consumer at a time, never the whole parsed file.
//!
//! A keys file is read in chunks, JSON through the fast path (`json`), YAML
//! through the event reader ([`crate::yaml`]), and each consumer is handed to the
//! state builder as soon as it is read, then dropped: loading a million keys takes
//! the memory of the key index, not of the file. A consumer with schema problems
//! is reported (every problem of it, with line and column) and the next one is
//! read, so one pass finds every problem of the file.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::compat;
use super::error::{ConfigError, Location, Problem};
use super::json::{self, Json};
use super::parse::problem;
use super::ConsumerConfig;
use crate::yaml::{self, Reader};

/// What the keys file must be, for the message when it is something else.
const EXPECTING: &str = "a keys file with a `consumers` list";

/// Hand each consumer of the keys file text `text` to `f` as soon as it is parsed,
/// with its index in the file. `file` names the file in errors.
///
/// A text that is only whitespace has no consumers. Accepts what
/// [`super::KeysFile::from_yaml`] accepts, with the same located errors.
///
/// # Errors
/// [`ConfigError::Invalid`] with every problem found: consumers that had problems are
/// not handed to `f`, the others are.
pub fn for_each_consumer(
    text: &str,
    file: &Path,
    f: &mut dyn FnMut(usize, &ConsumerConfig),
) -> Result<(), ConfigError> {
    consumers(&|| Ok(text.as_bytes()), file, f).map(|_| ())
}

/// Why a keys file without its `consumers` list is refused.
const NO_LIST: &str = "the keys file has no `consumers` list (caught mid-write?); write `consumers: []` to run with no keys";

/// What streaming a keys file found besides its consumers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Streamed {
    /// A warning when the file had to be read the way earlier keygate versions read it
    /// (it is not valid YAML 1.2; see `compat`).
    pub warning: Option<String>,
    /// SHA-256 (FIPS 180-4) of the file's bytes, computed from the chunks as they were
    /// read: the file is not read a second time for it.
    pub sha256: [u8; 32],
}

/// Read the keys file at `path` a chunk at a time and hand each consumer to `f` as
/// soon as it is parsed, with its index in the file. Memory stays flat whatever the
/// file's size. The file is opened once: every pass (JSON probe, YAML, the lenient
/// reader) reads the same file even if another is renamed over `path` meanwhile, and
/// the digest returned is of exactly the bytes that were parsed.
///
/// # Errors
/// [`ConfigError::Read`] when the file cannot be read or is not UTF-8;
/// [`ConfigError::Invalid`] with every problem found, including a file that is empty
/// or only whitespace (most likely caught mid-write: it is never read as "no keys").
pub fn stream_consumers(
    path: &Path,
    f: &mut dyn FnMut(usize, &ConsumerConfig),
) -> Result<Streamed, ConfigError> {
    let read_error = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(read_error)?;
    let hasher = RefCell::new(Sha256::new());
    // Each pass starts from the beginning with a fresh digest: the last pass is the one
    // whose reading counts.
    let open = || -> io::Result<Hashed<'_>> {
        (&file).seek(SeekFrom::Start(0))?;
        *hasher.borrow_mut() = Sha256::new();
        Ok(Hashed {
            file: &file,
            hasher: &hasher,
        })
    };
    let warning = match consumers(&open, path, f)? {
        (Json::Blank, _) => return Err(ConfigError::one(
            path,
            "",
            "the keys file is empty (caught mid-write?); write `consumers: []` to run with no keys",
        )),
        (Json::NoList, _) => return Err(ConfigError::one(path, "consumers", NO_LIST)),
        (_, warning) => warning,
    };
    // Every reader stops at the end of the file; should one have stopped short (a
    // buffered reader's last chunk is hashed when read, not when parsed), the rest of
    // the file is hashed from where the last pass left off.
    io::copy(
        &mut Hashed {
            file: &file,
            hasher: &hasher,
        },
        &mut io::sink(),
    )
    .map_err(read_error)?;
    Ok(Streamed {
        warning,
        sha256: hasher.into_inner().finalize().into(),
    })
}

/// Reads the keys file and feeds every byte read to the digest.
struct Hashed<'a> {
    file: &'a File,
    hasher: &'a RefCell<Sha256>,
}

impl Read for Hashed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        self.hasher
            .borrow_mut()
            .update(buf.get(..n).unwrap_or_default());
        Ok(n)
    }
}

/// Read the consumers of the text `open` gives (JSON fast path, else YAML); with the
/// warning when it was read the old way.
fn consumers<R: Read>(
    open: &dyn Fn() -> io::Result<R>,
    file: &Path,
    f: &mut dyn FnMut(usize, &ConsumerConfig),
) -> Result<(Json, Option<String>), ConfigError> {
    let read_error = |source| ConfigError::Read {
        path: file.to_path_buf(),
        source,
    };
    let mut problems = Vec::new();
    let outcome = json::consumers(open, file, f, &mut problems)?;
    let mut warning = None;
    if let Json::Yaml = outcome {
        let mut reader = Reader::from_read(open().map_err(read_error)?);
        let mut add = |index: usize, node: &yaml::Node, path: &yaml::Path<'_>| match yaml::from_node::<
            ConsumerConfig,
        >(
            node, path
        ) {
            Ok(c) => f(index, &c),
            Err(errors) => {
                for e in errors {
                    Problem::push_capped(&mut problems, problem(e, file));
                }
            }
        };
        let walk = yaml::for_each_element(&mut reader, "consumers", EXPECTING, &mut add)
            .map_err(read_error)?;
        problems.extend(walk.problems.into_iter().map(|e| problem(e, file)));
        if !walk.list_seen && walk.syntax.is_none() && problems.is_empty() {
            // Comments only, `---`, or `consumers:` without a value: most likely a file
            // caught mid-write, never read as "no keys" (a reload would drop every key).
            problems.push(Problem {
                at: Location {
                    file: file.to_path_buf(),
                    line_col: None,
                    field: "consumers".to_string(),
                },
                message: NO_LIST.to_string(),
            });
        }
        if let Some(syntax) = walk.syntax {
            // Perhaps only the earlier reader accepts it: read it that way, from the
            // consumer where the walk stopped (the ones before are the same for both).
            let mut text = String::new();
            let lenient = problems.is_empty()
                && open().and_then(|mut r| r.read_to_string(&mut text)).is_ok()
                && compat::consumers(&text, walk.elements, f);
            if lenient {
                warning = Some(compat::warning(file, &syntax));
            } else {
                problems.push(problem(syntax, file));
            }
        }
    }
    if problems.is_empty() {
        return Ok((outcome, warning));
    }
    sort(&mut problems);
    Err(ConfigError::Invalid(problems))
}

/// Sort problems by position (those without one last, in their order).
pub(super) fn sort(problems: &mut [Problem]) {
    problems.sort_by_key(|p| (p.at.line_col.is_none(), p.at.line_col));
}
