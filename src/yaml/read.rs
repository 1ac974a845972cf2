//! Events with positions, and the spanned tree built from them.
//!
//! [`Reader`] wraps `saphyr-parser`: over a string ([`Reader::from_str`]) or
//! streamed from any `io::Read` in UTF-8 ([`Reader::from_read`], through
//! [`Chars`]), so a caller can build one subtree at a time ([`Reader::node`])
//! and drop it before reading the next. Aliases are expanded into copies of
//! their anchor's subtree, within a budget (a "billion laughs" document fails
//! instead of exhausting memory); nesting deeper than [`MAX_DEPTH`] fails too.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Read;
use std::rc::Rc;

use saphyr_parser::{BufferedInput, Event, Input, Parser, ScalarStyle, Span, Tag};

use super::chars::{Chars, Source};
use super::{Error, Failure, Mark};

/// Deepest nesting of sequences and mappings accepted (as `serde_yaml`).
pub const MAX_DEPTH: usize = 128;

/// How a scalar was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Unquoted: resolved by the core schema (`true`, `12`, `~`, …).
    Plain,
    /// `'quoted'`: always a string.
    SingleQuoted,
    /// `"quoted"`: always a string.
    DoubleQuoted,
    /// `|` block: a string (or a tagged value).
    Literal,
    /// `>` block: a string.
    Folded,
}

/// A scalar: its text and how it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    /// The scalar's value, escapes and folding applied.
    pub value: String,
    /// How it was written.
    pub style: Style,
}

/// What a node is.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A scalar.
    Scalar(Scalar),
    /// A sequence of nodes.
    Seq(Vec<Node>),
    /// A mapping, in document order.
    Map(Vec<(Node, Node)>),
}

/// One node of a YAML document with where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the node starts (for a block mapping: its first key).
    pub mark: Mark,
    /// A number unique within its reader (copies made by an alias share it).
    pub id: usize,
    /// The node's full tag (`tag:yaml.org,2002:str`, `!local`), when it has one.
    pub tag: Option<String>,
    /// What it is.
    pub kind: Kind,
}

impl Node {
    /// An empty plain scalar, which is what an empty document or value reads as.
    pub fn empty(mark: Mark) -> Node {
        Node {
            mark,
            id: usize::MAX,
            tag: None,
            kind: Kind::Scalar(Scalar {
                value: String::new(),
                style: Style::Plain,
            }),
        }
    }

    /// The scalar's text, if this node is a scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar(s) => Some(&s.value),
            _ => None,
        }
    }

    /// Whether this is an empty plain scalar (an empty value, read as null).
    pub fn is_empty_plain(&self) -> bool {
        matches!(&self.kind, Kind::Scalar(s) if s.value.is_empty() && s.style == Style::Plain)
    }

    /// Number of nodes in this subtree.
    fn count(&self) -> usize {
        match &self.kind {
            Kind::Scalar(_) => 1,
            Kind::Seq(items) => 1 + items.iter().map(Node::count).sum::<usize>(),
            Kind::Map(entries) => {
                1 + entries
                    .iter()
                    .map(|(k, v)| k.count() + v.count())
                    .sum::<usize>()
            }
        }
    }
}

/// A YAML event reader that builds spanned subtrees.
pub struct Reader<'i, T: Input> {
    parser: Parser<'i, T>,
    /// Anchored subtrees by anchor id, copied where an alias names them.
    anchors: HashMap<usize, Node>,
    next_id: usize,
    /// Nodes read from events, and nodes copied by aliases (bounded by the first).
    read_nodes: usize,
    alias_nodes: usize,
    source: Rc<RefCell<Source>>,
    /// Where the last event read ends (an index in characters).
    last_end: usize,
}

impl<'i> Reader<'i, BufferedInput<Chars<&'i [u8]>>> {
    /// Read YAML from a string.
    #[allow(clippy::should_implement_trait)]
    pub fn from_str(text: &'i str) -> Self {
        Reader::from_read(text.as_bytes())
    }
}

impl<'i, R: Read + 'i> Reader<'i, BufferedInput<Chars<R>>> {
    /// Read YAML from a UTF-8 stream, a chunk at a time.
    pub fn from_read(reader: R) -> Self {
        let source = Rc::new(RefCell::new(Source::default()));
        let chars = Chars::new(reader, source.clone());
        Reader::new(Parser::new_from_iter(chars), source)
    }
}

fn mark(span: Span) -> Mark {
    Mark {
        line: span.start.line(),
        col: span.start.col() + 1,
    }
}

fn full_tag(tag: &Tag) -> String {
    format!("{}{}", tag.handle, tag.suffix)
}

fn style(s: ScalarStyle) -> Style {
    match s {
        ScalarStyle::Plain => Style::Plain,
        ScalarStyle::SingleQuoted => Style::SingleQuoted,
        ScalarStyle::DoubleQuoted => Style::DoubleQuoted,
        ScalarStyle::Literal => Style::Literal,
        ScalarStyle::Folded => Style::Folded,
    }
}

/// A problem at `mark`, as a failure.
pub(super) fn invalid(mark: Mark, message: impl Into<String>) -> Failure {
    Failure::Invalid(vec![Error {
        mark: Some(mark),
        path: String::new(),
        message: message.into(),
    }])
}

impl<'i, T: Input> Reader<'i, T> {
    fn new(parser: Parser<'i, T>, source: Rc<RefCell<Source>>) -> Self {
        Reader {
            parser,
            anchors: HashMap::new(),
            next_id: 0,
            read_nodes: 0,
            alias_nodes: 0,
            source,
            last_end: 0,
        }
    }

    /// The read error that cut the stream short, if any.
    fn io_failure(&self) -> Option<Failure> {
        self.source.borrow_mut().failed.take().map(Failure::Io)
    }

    /// The next event and where it starts.
    ///
    /// # Errors
    /// A syntax error, or the reader's own failure (which comes first: a stream cut
    /// short by a read error may still parse).
    pub fn event(&mut self) -> Result<(Event<'i>, Mark), Failure> {
        loop {
            match self.parser.next_event() {
                Some(Ok((Event::Nothing, _))) => continue,
                Some(Ok((ev, span))) => {
                    self.last_end = span.end.index();
                    if matches!(ev, Event::StreamEnd) {
                        if let Some(f) = self.io_failure() {
                            return Err(f);
                        }
                    }
                    return Ok((ev, mark(span)));
                }
                Some(Err(e)) => {
                    if let Some(f) = self.io_failure() {
                        return Err(f);
                    }
                    let m = e.marker();
                    return Err(invalid(
                        Mark {
                            line: m.line(),
                            col: m.col() + 1,
                        },
                        e.info().to_string(),
                    ));
                }
                None => {
                    return Err(self.io_failure().unwrap_or_else(|| {
                        invalid(Mark { line: 0, col: 0 }, "read past the end of the stream")
                    }))
                }
            }
        }
    }

    /// Read a whole single-document text into one tree; an empty text reads as an empty
    /// plain scalar.
    ///
    /// # Errors
    /// A syntax error, a second document, or the reader's failure.
    pub fn document(&mut self) -> Result<Node, Failure> {
        let (ev, m) = self.event()?;
        if !matches!(ev, Event::StreamStart) {
            return Err(invalid(m, "expected the start of a YAML stream"));
        }
        let (ev, m) = self.event()?;
        let root = match ev {
            Event::StreamEnd => return Ok(Node::empty(m)),
            Event::DocumentStart(_) => {
                let first = self.event()?;
                self.node(first)?
            }
            _ => return Err(invalid(m, "expected a YAML document")),
        };
        self.end()?;
        Ok(root)
    }

    /// After a document: accept its end and the stream's end, refuse a second document.
    ///
    /// # Errors
    /// A second document, a syntax error or the reader's failure.
    pub fn end(&mut self) -> Result<(), Failure> {
        loop {
            let (ev, m) = self.event()?;
            match ev {
                Event::DocumentEnd => {}
                Event::StreamEnd => return Ok(()),
                _ => return Err(invalid(
                    m,
                    "deserializing from YAML containing more than one document is not supported",
                )),
            }
        }
    }

    /// Build the subtree that starts with `first` (an event already read).
    ///
    /// # Errors
    /// A syntax error, an unknown alias, too deep a nesting, too many alias copies,
    /// or the reader's failure.
    pub fn node(&mut self, first: (Event<'i>, Mark)) -> Result<Node, Failure> {
        self.node_at(first, 0)
    }

    /// Whether the event just read runs to the end of the stream, and the stream's last
    /// line has no line break.
    fn ends_without_line_break(&self) -> bool {
        let source = self.source.borrow();
        source.ended
            && self.last_end == source.chars
            && !matches!(source.last_non_blank, Some('\n' | '\r') | None)
    }

    fn id(&mut self) -> usize {
        self.read_nodes += 1;
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    fn node_at(&mut self, (ev, mark): (Event<'i>, Mark), depth: usize) -> Result<Node, Failure> {
        if depth > MAX_DEPTH {
            return Err(invalid(mark, "recursion limit exceeded"));
        }
        let (anchor, node) = match ev {
            Event::Scalar(value, s, anchor, tag) => {
                let mut value = value.into_owned();
                if matches!(s, ScalarStyle::Literal | ScalarStyle::Folded)
                    && value.ends_with('\n')
                    && self.ends_without_line_break()
                {
                    // A block scalar whose last line ends the stream without a line break
                    // has no final line break to keep (libyaml, and so serde_yaml, agree;
                    // the parser adds one).
                    value.pop();
                }
                let node = Node {
                    mark,
                    id: self.id(),
                    tag: tag.as_deref().map(full_tag),
                    kind: Kind::Scalar(Scalar {
                        value,
                        style: style(s),
                    }),
                };
                (anchor, node)
            }
            Event::SequenceStart(anchor, tag) => {
                let id = self.id();
                let mut items = Vec::new();
                loop {
                    let next = self.event()?;
                    if matches!(next.0, Event::SequenceEnd) {
                        break;
                    }
                    items.push(self.node_at(next, depth + 1)?);
                }
                let tag = tag.as_deref().map(full_tag);
                (
                    anchor,
                    Node {
                        mark,
                        id,
                        tag,
                        kind: Kind::Seq(items),
                    },
                )
            }
            Event::MappingStart(anchor, tag) => {
                let id = self.id();
                let mut entries = Vec::new();
                loop {
                    let next = self.event()?;
                    if matches!(next.0, Event::MappingEnd) {
                        break;
                    }
                    let key = self.node_at(next, depth + 1)?;
                    let value = self.event()?;
                    let value = self.node_at(value, depth + 1)?;
                    entries.push((key, value));
                }
                let tag = tag.as_deref().map(full_tag);
                (
                    anchor,
                    Node {
                        mark,
                        id,
                        tag,
                        kind: Kind::Map(entries),
                    },
                )
            }
            Event::Alias(id) => {
                let Some(target) = self.anchors.get(&id) else {
                    return Err(invalid(mark, "unknown anchor"));
                };
                let n = target.count();
                if self.alias_nodes + n > self.read_nodes.saturating_mul(100) + 10_000 {
                    return Err(invalid(mark, "repetition limit exceeded"));
                }
                self.alias_nodes += n;
                return Ok(target.clone());
            }
            _ => return Err(invalid(mark, "unexpected YAML event")),
        };
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        Ok(node)
    }
}
