//! One element at a time: the list under one key of a document, streamed.

use saphyr_parser::{Event, Input};

use super::collect::{DeError, Path};
use super::de::invalid_type;
use super::read::{invalid, Node, Reader};
use super::{Error, Failure, Mark};

/// What a walk over a document found outside its elements.
#[derive(Debug, Default)]
pub struct Walk {
    /// Elements handed to the callback.
    pub elements: usize,
    /// Whether the document had the list at all (`key:` with a sequence, even `[]`): a
    /// caller can tell "no elements" from "no list" (an empty or cut-off file).
    pub list_seen: bool,
    /// Problems of the document's outline: another key (an unknown field), the list's
    /// key twice, a value that is not a list, a document that is not a mapping.
    pub problems: Vec<Error>,
    /// The syntax error that ended the walk, if one did (or a second document).
    pub syntax: Option<Error>,
}

/// Walk a document that is a mapping holding one list under `key` (`{consumers:
/// [...]}`), handing each element to `f` as soon as it is read, with its index and
/// path; each element's tree is dropped before the next is read, so memory does not
/// grow with the list. `expecting` says what the document should be, for the message
/// when it is not a mapping. An empty document, or an empty value for `key`, has no
/// elements.
///
/// # Errors
/// The reader's own failure (a read error, or text that is not UTF-8).
pub fn for_each_element<T: Input>(
    reader: &mut Reader<'_, T>,
    key: &'static str,
    expecting: &str,
    f: &mut dyn FnMut(usize, &Node, &Path<'_>),
) -> Result<Walk, std::io::Error> {
    let mut walk = Walk::default();
    match walk_document(reader, key, expecting, f, &mut walk) {
        Ok(()) => Ok(walk),
        Err(Failure::Io(e)) => Err(e),
        Err(Failure::Invalid(mut list)) => {
            walk.syntax = (!list.is_empty()).then(|| list.swap_remove(0));
            Ok(walk)
        }
    }
}

fn problem(mark: Mark, path: &Path<'_>, e: &DeError) -> Error {
    Error {
        mark: Some(mark),
        path: path.to_string(),
        message: e.to_string(),
    }
}

fn walk_document<T: Input>(
    reader: &mut Reader<'_, T>,
    key: &'static str,
    expecting: &str,
    f: &mut dyn FnMut(usize, &Node, &Path<'_>),
    walk: &mut Walk,
) -> Result<(), Failure> {
    let problems = &mut walk.problems;
    let (ev, m) = reader.event()?;
    if !matches!(ev, Event::StreamStart) {
        return Err(invalid(m, "expected the start of a YAML stream"));
    }
    match reader.event()? {
        (Event::StreamEnd, _) => return Ok(()),
        (Event::DocumentStart(_), _) => {}
        (_, m) => return Err(invalid(m, "expected a YAML document")),
    }
    let root = reader.event()?;
    if !matches!(root.0, Event::MappingStart(..)) {
        let node = reader.node(root)?;
        if !node.is_empty_plain() {
            problems.push(problem(
                node.mark,
                &Path::Root,
                &invalid_type(&node, false, &expecting),
            ));
        }
        return reader.end();
    }
    let list_path = Path::Map {
        parent: &Path::Root,
        key,
    };
    let mut seen = false;
    loop {
        let first = reader.event()?;
        if matches!(first.0, Event::MappingEnd) {
            break;
        }
        let k = reader.node(first)?;
        let value = reader.event()?;
        match k.as_str() {
            Some(text) if text == key && !seen => {
                seen = true;
                if !matches!(value.0, Event::SequenceStart(..)) {
                    let v = reader.node(value)?;
                    if !v.is_empty_plain() {
                        let e = invalid_type(&v, false, &"a sequence");
                        problems.push(problem(v.mark, &list_path, &e));
                    }
                    continue;
                }
                walk.list_seen = true;
                let mut index = 0;
                loop {
                    let next = reader.event()?;
                    if matches!(next.0, Event::SequenceEnd) {
                        break;
                    }
                    let element = reader.node(next)?;
                    f(
                        index,
                        &element,
                        &Path::Seq {
                            parent: &list_path,
                            index,
                        },
                    );
                    index += 1;
                    walk.elements = index;
                }
            }
            Some(text) if text == key => {
                reader.node(value)?;
                problems.push(problem(
                    k.mark,
                    &Path::Root,
                    &<DeError as serde::de::Error>::custom(format!("duplicate key `{key}`")),
                ));
            }
            Some(text) => {
                reader.node(value)?;
                let e = format!("unknown field `{text}`, expected `{key}`");
                problems.push(problem(
                    k.mark,
                    &Path::Root,
                    &<DeError as serde::de::Error>::custom(e),
                ));
            }
            None => {
                reader.node(value)?;
                problems.push(problem(
                    k.mark,
                    &Path::Root,
                    &invalid_type(&k, false, &"a string"),
                ));
            }
        }
    }
    reader.end()
}
