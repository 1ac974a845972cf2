//! The characters of a UTF-8 stream, for the parser to read a file a chunk at a time.

use std::cell::RefCell;
use std::io::{self, Read};
use std::rc::Rc;

/// Bytes read from the underlying reader at a time.
const CHUNK: usize = 64 * 1024;

/// What the reader learns about its stream, known once the stream has ended.
#[derive(Debug, Default)]
pub(super) struct Source {
    /// The read error (or the bytes that are not UTF-8) that cut the stream short.
    pub(super) failed: Option<io::Error>,
    /// The stream has ended.
    pub(super) ended: bool,
    /// Characters in the stream.
    pub(super) chars: usize,
    /// Its last character that is not a space or a tab.
    pub(super) last_non_blank: Option<char>,
}

/// The characters of a UTF-8 stream, read in chunks; a read error or a byte sequence
/// that is not UTF-8 ends the stream and is kept for [`super::Reader`] to report.
pub struct Chars<R> {
    reader: R,
    chunk: Box<[u8]>,
    /// Bytes read but not decoded yet (an incomplete sequence at a chunk's end).
    pending: Vec<u8>,
    text: String,
    pos: usize,
    done: bool,
    chars: usize,
    last_non_blank: Option<char>,
    source: Rc<RefCell<Source>>,
}

impl<R: Read> Chars<R> {
    pub(super) fn new(reader: R, source: Rc<RefCell<Source>>) -> Self {
        Chars {
            reader,
            chunk: vec![0; CHUNK].into_boxed_slice(),
            pending: Vec::new(),
            text: String::new(),
            pos: 0,
            done: false,
            chars: 0,
            last_non_blank: None,
            source,
        }
    }

    fn fail(&mut self, e: io::Error) {
        self.source.borrow_mut().failed = Some(e);
        self.end();
    }

    /// The stream has ended: say what it was.
    fn end(&mut self) {
        self.done = true;
        let mut source = self.source.borrow_mut();
        source.ended = true;
        source.chars = self.chars;
        source.last_non_blank = self.last_non_blank;
    }

    /// Decode the next chunk into `text`; false at the end of the stream.
    fn fill(&mut self) -> bool {
        let not_utf8 = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "stream did not contain valid UTF-8",
            )
        };
        loop {
            let n = match self.reader.read(&mut self.chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.fail(e);
                    return false;
                }
            };
            if n == 0 {
                if self.pending.is_empty() {
                    self.end();
                } else {
                    self.fail(not_utf8());
                }
                return false;
            }
            self.pending
                .extend_from_slice(self.chunk.get(..n).unwrap_or_default());
            let valid = match std::str::from_utf8(&self.pending) {
                Ok(s) => s.len(),
                Err(e) if e.error_len().is_none() => e.valid_up_to(),
                Err(_) => {
                    self.fail(not_utf8());
                    return false;
                }
            };
            self.text.clear();
            self.pos = 0;
            match self.pending.get(..valid).map(std::str::from_utf8) {
                Some(Ok(s)) => self.text.push_str(s),
                _ => {
                    self.fail(not_utf8());
                    return false;
                }
            }
            self.pending.drain(..valid);
            if !self.text.is_empty() {
                return true;
            }
        }
    }
}

impl<R: Read> Iterator for Chars<R> {
    type Item = char;

    #[inline]
    fn next(&mut self) -> Option<char> {
        loop {
            if let Some(c) = self.text.get(self.pos..).and_then(|s| s.chars().next()) {
                self.pos += c.len_utf8();
                self.chars += 1;
                if c != ' ' && c != '\t' {
                    self.last_non_blank = Some(c);
                }
                return Some(c);
            }
            if self.done || !self.fill() {
                return None;
            }
        }
    }
}
