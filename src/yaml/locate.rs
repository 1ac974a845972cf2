//! Where a field path is in a YAML text, for problems found after parsing.
//!
//! The state builder finds problems by field path (`consumers[3].keys[0].sha256`)
//! long after the text was parsed; this reads the text again as a stream of
//! events, keeping only the current path, and stops once every path asked for is
//! found. Nothing of the document is kept, so it works on a million-key file.

use std::collections::{HashMap, HashSet};

use saphyr_parser::{Event, Input};

use super::read::Reader;
use super::Mark;

enum Frame {
    Seq {
        /// Length of the path string of the sequence itself.
        len: usize,
        index: usize,
    },
    Map {
        len: usize,
        /// The key whose value comes next (`None` for a key that is not a scalar),
        /// and where the key is.
        key: Option<(Option<String>, Mark)>,
    },
}

/// Find where each of `paths` is: a scalar value's own position, or for a collection
/// under a key, the key's (a block collection starts on the line after its key).
/// Paths not found (a default, a syntax error before them) are absent from the result.
pub fn locate<T: Input, S: AsRef<str>>(
    reader: &mut Reader<'_, T>,
    paths: &[S],
) -> HashMap<String, Mark> {
    let wanted: HashSet<&str> = paths
        .iter()
        .map(AsRef::as_ref)
        .filter(|p| !p.is_empty())
        .collect();
    // For each list that wanted paths go through at the first two levels (`consumers`,
    // `routes`), the last element they need: past it, reading on finds nothing (a
    // million-key file with problems in its first consumers is not read to the end).
    let mut last_needed: HashMap<&str, usize> = HashMap::new();
    for p in &wanted {
        if let Some((list, rest)) = p.split_once('[') {
            if list.matches('.').count() <= 1 {
                if let Some(i) = rest.split_once(']').and_then(|(i, _)| i.parse().ok()) {
                    let e = last_needed.entry(list).or_insert(0);
                    *e = (*e).max(i);
                }
            }
        }
    }
    let mut found = HashMap::new();
    let mut path = String::new();
    let mut frames: Vec<Frame> = Vec::new();
    // Depth inside a key that is itself a collection (never part of a path).
    let mut in_complex_key = 0usize;
    while found.len() < wanted.len() {
        let Ok((ev, m)) = reader.event() else {
            break;
        };
        let collection = matches!(ev, Event::SequenceStart(..) | Event::MappingStart(..));
        if in_complex_key > 0 {
            match ev {
                Event::SequenceStart(..) | Event::MappingStart(..) => in_complex_key += 1,
                Event::SequenceEnd | Event::MappingEnd => {
                    in_complex_key -= 1;
                    if in_complex_key == 0 {
                        if let Some(Frame::Map { key, .. }) = frames.last_mut() {
                            *key = Some((None, m));
                        }
                    }
                }
                _ => {}
            }
            continue;
        }
        match ev {
            Event::StreamEnd | Event::DocumentEnd => break,
            Event::SequenceEnd | Event::MappingEnd => {
                frames.pop();
                continue;
            }
            Event::Scalar(..)
            | Event::Alias(_)
            | Event::SequenceStart(..)
            | Event::MappingStart(..) => {}
            _ => continue,
        }
        let at = match frames.last_mut() {
            Some(Frame::Map {
                key: key @ None, ..
            }) => {
                if collection {
                    in_complex_key = 1;
                } else {
                    let text = match &ev {
                        Event::Scalar(v, ..) => Some(v.to_string()),
                        _ => None,
                    };
                    *key = Some((text, m));
                }
                continue;
            }
            Some(Frame::Map { len, key }) => {
                path.truncate(*len);
                let (text, key_mark) = key.take().unwrap_or((None, m));
                if *len > 0 {
                    path.push('.');
                }
                path.push_str(text.as_deref().unwrap_or("?"));
                if collection {
                    key_mark
                } else {
                    m
                }
            }
            Some(Frame::Seq { len, index }) => {
                path.truncate(*len);
                if last_needed
                    .get(path.as_str())
                    .is_some_and(|&last| *index > last)
                {
                    break;
                }
                path.push_str(&format!("[{index}]"));
                *index += 1;
                m
            }
            None => {
                path.clear();
                m
            }
        };
        if wanted.contains(path.as_str()) {
            found.entry(path.clone()).or_insert(at);
        }
        match ev {
            Event::SequenceStart(..) => frames.push(Frame::Seq {
                len: path.len(),
                index: 0,
            }),
            Event::MappingStart(..) => frames.push(Frame::Map {
                len: path.len(),
                key: None,
            }),
            _ => {}
        }
    }
    found
}
