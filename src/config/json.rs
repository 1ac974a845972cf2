//! The JSON fast path for keys files: one consumer at a time, at `serde_json`'s speed.
//!
//! A million-key file is about 100 MB. Parsing it whole needs the text in memory
//! next to the key index it becomes (and during a reload, next to the old index
//! too); `serde_json::from_reader` streams but reads byte by byte, about 60 %
//! slower. So this reads the file in chunks, finds where each consumer object
//! starts and ends (a scan that tracks only brackets and strings), and parses each
//! one with `serde_json::from_str`: the fast parser, on a slice that is then
//! dropped. A consumer that does not fit its type is reported and the next one is
//! read (every consumer's problem at once, with its line and column).
//!
//! The outline around the consumers (`{"consumers": [ … ]}`) is checked by the
//! scan; anything else there (another key, bad syntax, a cut-off file) is handed
//! to `serde_json` reading the whole file, which gives its usual message.

use std::io::{self, Read};
use std::path::Path;

use serde::de::IgnoredAny;
use serde::Deserialize;

use super::error::{ConfigError, Location, Problem};
use super::parse::{json_error, strip_position};
use super::ConsumerConfig;

/// Bytes read at a time.
const CHUNK: usize = 64 * 1024;

/// What the fast path made of a text.
pub(super) enum Json {
    /// Read as JSON: every consumer was handed over or reported.
    Done,
    /// Not JSON (flow-style YAML starting with `{`, or no `{` at all): read it as YAML.
    Yaml,
    /// Nothing but whitespace.
    Blank,
    /// `{}`: a document without the `consumers` list.
    NoList,
}

/// The shape of a keys file, for `serde_json`'s message when the outline is wrong.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Outline {
    #[serde(default, rename = "consumers")]
    _consumers: Vec<IgnoredAny>,
}

/// A chunked reader that knows the line and column of what it reads.
struct Input<R> {
    reader: R,
    buf: Vec<u8>,
    pos: usize,
    /// Bytes dropped from the front of `buf` so far.
    base: usize,
    /// Current line (1-based) and the absolute offset where it starts.
    line: usize,
    line_start: usize,
    /// Index in `buf` of the first byte that must stay (the value being scanned).
    keep: Option<usize>,
}

impl<R: Read> Input<R> {
    /// Read `reader` from its start.
    fn new(reader: R) -> Self {
        Input {
            reader,
            buf: Vec::with_capacity(CHUNK),
            pos: 0,
            base: 0,
            line: 1,
            line_start: 0,
            keep: None,
        }
    }

    /// Read another chunk, dropping what is no longer needed; false at the end.
    fn fill(&mut self) -> io::Result<bool> {
        let drop_to = self.keep.unwrap_or(self.pos).min(self.pos);
        if drop_to > 0 {
            self.buf.drain(..drop_to);
            self.base += drop_to;
            self.pos -= drop_to;
            self.keep = self.keep.map(|k| k - drop_to);
        }
        let len = self.buf.len();
        self.buf.resize(len + CHUNK, 0);
        let n = loop {
            match self
                .reader
                .read(self.buf.get_mut(len..).unwrap_or_default())
            {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.buf.truncate(len);
                    return Err(e);
                }
            }
        };
        self.buf.truncate(len + n);
        Ok(n > 0)
    }

    fn peek(&mut self) -> io::Result<Option<u8>> {
        if self.pos >= self.buf.len() && !self.fill()? {
            return Ok(None);
        }
        Ok(self.buf.get(self.pos).copied())
    }

    fn newline_at(&mut self, i: usize) {
        self.line += 1;
        self.line_start = self.base + i + 1;
    }

    /// Skip whitespace; the next byte, if any.
    fn skip_ws(&mut self) -> io::Result<Option<u8>> {
        while let Some(b) = self.peek()? {
            match b {
                b'\n' => self.newline_at(self.pos),
                b' ' | b'\t' | b'\r' => {}
                _ => return Ok(Some(b)),
            }
            self.pos += 1;
        }
        Ok(None)
    }

    /// Consume `want` after whitespace; false when something else comes.
    fn expect(&mut self, want: u8) -> io::Result<bool> {
        if self.skip_ws()? == Some(want) {
            self.pos += 1;
            return Ok(true);
        }
        Ok(false)
    }

    /// 1-based line and column of the next byte.
    fn position(&self) -> (usize, usize) {
        (self.line, self.base + self.pos - self.line_start + 1)
    }

    /// Scan one JSON value from the next byte on (an object or array to its closing
    /// bracket, anything else to the next delimiter); its bytes, or `None` at the end.
    fn value(&mut self) -> io::Result<Option<&[u8]>> {
        let start = self.pos;
        self.keep = Some(start);
        let (mut depth, mut in_str, mut esc) = (0usize, false, false);
        let end = 'scan: loop {
            while let Some(&b) = self.buf.get(self.pos) {
                if in_str && !esc {
                    // Most of a keys file is inside strings: jump to the next quote or
                    // backslash (a raw line break inside a string is invalid JSON anyway).
                    let rest = self.buf.get(self.pos..).unwrap_or_default();
                    match memchr::memchr2(b'"', b'\\', rest) {
                        Some(0) => {}
                        Some(n) => {
                            self.pos += n;
                            continue;
                        }
                        None => {
                            self.pos = self.buf.len();
                            continue;
                        }
                    }
                }
                if in_str {
                    if esc {
                        esc = false;
                    } else if b == b'\\' {
                        esc = true;
                    } else if b == b'"' {
                        in_str = false;
                        if depth == 0 {
                            self.pos += 1;
                            break 'scan true;
                        }
                    }
                } else {
                    match b {
                        b'"' => in_str = true,
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' if depth > 0 => {
                            depth -= 1;
                            if depth == 0 {
                                self.pos += 1;
                                break 'scan true;
                            }
                        }
                        b',' | b':' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n' if depth == 0 => {
                            break 'scan true
                        }
                        _ => {}
                    }
                }
                if b == b'\n' {
                    self.newline_at(self.pos);
                }
                self.pos += 1;
            }
            if !self.fill()? {
                break false;
            }
        };
        let start = self.keep.take().unwrap_or(start);
        Ok(if end {
            self.buf.get(start..self.pos)
        } else {
            None
        })
    }
}

/// Where consumers `0..=last` of a JSON keys file start (line and column of their
/// `{`), read from `reader` up to consumer `last` only; `None` when the text is not a
/// JSON keys file (`{"consumers": [...]}`), e.g. YAML. Problems in a JSON file are
/// located at their consumer: the YAML reader would tokenize a whole flow collection
/// (the whole file) before its first event.
///
/// # Errors
/// A read error.
pub(super) fn consumer_starts<R: Read>(
    reader: R,
    last: usize,
) -> io::Result<Option<Vec<(usize, usize)>>> {
    let mut input = Input::new(reader);
    if !input.expect(b'{')? || input.skip_ws()? != Some(b'"') {
        return Ok(None);
    }
    let key = input
        .value()?
        .and_then(|k| serde_json::from_slice::<String>(k).ok());
    if key.as_deref() != Some("consumers") || !input.expect(b':')? || !input.expect(b'[')? {
        return Ok(None);
    }
    let mut starts = Vec::new();
    while starts.len() <= last {
        if input.skip_ws()? != Some(b'{') {
            break;
        }
        starts.push(input.position());
        if input.value()?.is_none() || !input.expect(b',')? {
            break;
        }
    }
    Ok(Some(starts))
}

/// Hand each consumer of a JSON keys file to `f`. `open` opens the text again when
/// the outline is wrong and `serde_json` must say why.
///
/// # Errors
/// [`ConfigError::Read`] when the file cannot be read or is not UTF-8;
/// [`ConfigError::Invalid`] for a wrong outline or a syntax error in a consumer.
pub(super) fn consumers<R: Read>(
    open: &dyn Fn() -> io::Result<R>,
    file: &Path,
    f: &mut dyn FnMut(usize, &ConsumerConfig),
    problems: &mut Vec<Problem>,
) -> Result<Json, ConfigError> {
    let read_error = |source| ConfigError::Read {
        path: file.to_path_buf(),
        source,
    };
    let mut input = Input::new(open().map_err(read_error)?);
    match input.skip_ws().map_err(read_error)? {
        None => return Ok(Json::Blank),
        Some(b'{') => {}
        Some(_) => return Ok(Json::Yaml),
    }
    let mut processed = 0;
    match scan(&mut input, file, f, problems, &mut processed).map_err(read_error)? {
        Scan::Done => Ok(Json::Done),
        Scan::NoList => Ok(Json::NoList),
        Scan::Yaml => Ok(Json::Yaml),
        Scan::Stop(e) => Err(e),
        Scan::Outline => {
            // The outline is not what the scan expects: let serde_json say why.
            let reader = io::BufReader::new(open().map_err(read_error)?);
            match serde_json::from_reader::<_, Outline>(reader) {
                Err(e) if (e.is_syntax() || e.is_eof()) && processed == 0 => Ok(Json::Yaml),
                Err(e) if e.is_io() => {
                    Err(read_error(io::Error::new(io::ErrorKind::InvalidData, e)))
                }
                Err(e) => Err(json_error(&e, file)),
                Ok(_) => {
                    let (line, col) = input.position();
                    Err(ConfigError::Invalid(vec![Problem {
                        at: Location {
                            file: file.to_path_buf(),
                            line_col: Some((line, col)),
                            field: String::new(),
                        },
                        message: "unexpected character in a keys file".to_string(),
                    }]))
                }
            }
        }
    }
}

enum Scan {
    Done,
    /// `{}`.
    NoList,
    Yaml,
    /// The outline is not `{"consumers": [...]}`.
    Outline,
    /// A problem that ends the reading (a syntax error inside a consumer).
    Stop(ConfigError),
}

fn scan<R: Read>(
    input: &mut Input<R>,
    file: &Path,
    f: &mut dyn FnMut(usize, &ConsumerConfig),
    problems: &mut Vec<Problem>,
    processed: &mut usize,
) -> io::Result<Scan> {
    input.pos += 1; // `{`
    if input.expect(b'}')? {
        return Ok(if input.skip_ws()?.is_none() {
            Scan::NoList
        } else {
            Scan::Outline
        });
    }
    if input.skip_ws()? != Some(b'"') {
        return Ok(Scan::Outline);
    }
    let key = input
        .value()?
        .and_then(|k| serde_json::from_slice::<String>(k).ok());
    if key.as_deref() != Some("consumers") || !input.expect(b':')? || !input.expect(b'[')? {
        return Ok(Scan::Outline);
    }
    if !input.expect(b']')? {
        loop {
            input.skip_ws()?;
            let (line, col) = input.position();
            let Some(bytes) = input.value()?.filter(|b| !b.is_empty()) else {
                return Ok(Scan::Outline);
            };
            let Ok(text) = std::str::from_utf8(bytes) else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "stream did not contain valid UTF-8",
                ));
            };
            let index = *processed;
            match serde_json::from_str::<ConsumerConfig>(text) {
                Ok(c) => f(index, &c),
                Err(e) if e.is_syntax() && index == 0 => return Ok(Scan::Yaml),
                Err(e) => {
                    let at = if e.line() == 1 {
                        col - 1 + e.column()
                    } else {
                        e.column()
                    };
                    let problem = Problem {
                        at: Location {
                            file: file.to_path_buf(),
                            line_col: Some((line + e.line() - 1, at)),
                            field: format!("consumers[{index}]"),
                        },
                        message: strip_position(e.to_string()),
                    };
                    if !e.is_data() {
                        return Ok(Scan::Stop(ConfigError::Invalid(vec![problem])));
                    }
                    Problem::push_capped(problems, problem);
                }
            }
            *processed += 1;
            if input.expect(b']')? {
                break;
            }
            if !input.expect(b',')? {
                return Ok(Scan::Outline);
            }
        }
    }
    if !input.expect(b'}')? || input.skip_ws()?.is_some() {
        return Ok(Scan::Outline);
    }
    Ok(Scan::Done)
}
