//! Files the earlier reader accepted and the YAML 1.2 reader does not: read them the
//! old way, with a warning.
//!
//! keygate read its files with `serde_yaml` (libyaml) before [`crate::yaml`]. Where
//! both accept a text they read the same values (tests and the fuzz target compare
//! them), but libyaml accepts a few things YAML 1.2 forbids, which the new parser
//! refuses: continuation lines of a quoted string that are not indented, a `#`
//! comment right after a closing quote or bracket, a flow list or map whose lines are
//! less indented than its key, a tab right after `key:`. So that a file that loaded
//! before still loads, such a file is read with `serde_yaml`, and the load warns with
//! the place the new parser stopped at: the file should be corrected, and until then
//! its problems come one at a time and without the lines of later fields.

use std::fmt;
use std::path::Path;

use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use super::ConsumerConfig;
use crate::yaml;

/// `text` read by `serde_yaml`, if it accepts it.
pub(super) fn parse<T: DeserializeOwned>(text: &str) -> Option<T> {
    serde_yaml::from_str(text).ok()
}

/// The warning for a file read the old way.
pub(super) fn warning(file: &Path, syntax: &yaml::Error) -> String {
    let at = syntax
        .mark
        .map(|m| format!(":{}:{}", m.line, m.col))
        .unwrap_or_default();
    format!(
        "{}{at}: not valid YAML 1.2 ({}); read the way earlier keygate versions read it, without every problem at once: correct the file",
        file.display(),
        syntax.message
    )
}

/// Hand the consumers of a keys file `text` to `f` with `serde_yaml`, from index
/// `skip` on (those before were handed over already); false when `serde_yaml` does
/// not accept the text either. Reads the whole text at once, as keygate used to.
pub(super) fn consumers(
    text: &str,
    skip: usize,
    f: &mut dyn FnMut(usize, &ConsumerConfig),
) -> bool {
    let mut next = 0;
    let mut each = |c: ConsumerConfig| {
        if next >= skip {
            f(next, &c);
        }
        next += 1;
    };
    KeysSeed { f: &mut each }
        .deserialize(serde_yaml::Deserializer::from_str(text))
        .is_ok()
}

/// Streaming deserialization of `{consumers: [ConsumerConfig, ...]}`.
struct KeysSeed<'f> {
    f: &'f mut dyn FnMut(ConsumerConfig),
}

impl<'de> DeserializeSeed<'de> for KeysSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_struct("KeysFile", &["consumers"], self)
    }
}

impl<'de> Visitor<'de> for KeysSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a keys file with a `consumers` list")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = false;
        while let Some(key) = map.next_key::<String>()? {
            if key != "consumers" {
                return Err(de::Error::unknown_field(&key, &["consumers"]));
            }
            if seen {
                return Err(de::Error::duplicate_field("consumers"));
            }
            seen = true;
            map.next_value_seed(ConsumersSeed { f: &mut *self.f })?;
        }
        Ok(())
    }
}

struct ConsumersSeed<'f> {
    f: &'f mut dyn FnMut(ConsumerConfig),
}

impl<'de> DeserializeSeed<'de> for ConsumersSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ConsumersSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of consumers")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(c) = seq.next_element::<ConsumerConfig>()? {
            (self.f)(c);
        }
        Ok(())
    }
}
