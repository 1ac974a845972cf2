//! The characters of a UTF-8 stream, for the parser to read a file a chunk at a time.

use std::cell::RefCell;
use std::io::{self, Read};
use std::rc::Rc;

/// Bytes read from the underlying reader at a time.
const CHUNK: usize = 64 * 1024;

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
    failed: Rc<RefCell<Option<io::Error>>>,
}

impl<R: Read> Chars<R> {
    pub(super) fn new(reader: R, failed: Rc<RefCell<Option<io::Error>>>) -> Self {
        Chars {
            reader,
            chunk: vec![0; CHUNK].into_boxed_slice(),
            pending: Vec::new(),
            text: String::new(),
            pos: 0,
            done: false,
            failed,
        }
    }

    fn fail(&mut self, e: io::Error) {
        self.done = true;
        *self.failed.borrow_mut() = Some(e);
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
                if !self.pending.is_empty() {
                    self.fail(not_utf8());
                }
                self.done = true;
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
                return Some(c);
            }
            if self.done || !self.fill() {
                return None;
            }
        }
    }
}
