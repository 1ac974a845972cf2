//! Sequence, mapping and enum access for the collecting deserializer (see `de`).
//!
//! The accesses skip nodes hidden after an earlier error, record a failing
//! child with its own position and path, and refuse a repeated mapping key.

use std::collections::HashMap;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Unexpected, Visitor};

use super::collect::{Ctx, DeError, Fault, Path};
use super::de::De;
use super::read::{Kind, Node, Style};
use super::scalar::plain_is_string;

/// Mappings up to this size look for a repeated key by scanning; larger ones hash.
const SCAN_KEYS: usize = 16;

/// The elements of a sequence.
pub(super) struct SeqAccess<'a> {
    items: &'a [Node],
    next: usize,
    path: &'a Path<'a>,
    ctx: &'a Ctx,
    /// An element was hidden after an error.
    hid: bool,
}

impl<'a> SeqAccess<'a> {
    pub(super) fn new(items: &'a [Node], path: &'a Path<'a>, ctx: &'a Ctx) -> Self {
        SeqAccess {
            items,
            next: 0,
            path,
            ctx,
            hid: false,
        }
    }

    /// An error the visitor itself raised: a consequence of a hidden element is not news.
    pub(super) fn container_error(&self, e: DeError) -> DeError {
        match e.0 {
            Fault::Message(_) if self.hid => DeError(Fault::Hide),
            _ => e,
        }
    }
}

impl<'de> de::SeqAccess<'de> for SeqAccess<'_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        while let Some(item) = self.items.get(self.next) {
            let index = self.next;
            self.next += 1;
            if self.ctx.is_hidden(item.id) {
                self.hid = true;
                continue;
            }
            let path = Path::Seq {
                parent: self.path,
                index,
            };
            return seed
                .deserialize(De::new(item, path, self.ctx))
                .map(Some)
                .map_err(|e| self.ctx.failed(e, item, &path));
        }
        Ok(None)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len().saturating_sub(self.next))
    }
}

/// The entries of a mapping.
pub(super) struct MapAccess<'a> {
    entries: &'a [(Node, Node)],
    next: usize,
    path: &'a Path<'a>,
    ctx: &'a Ctx,
    /// The value of the key just given, and the key's text.
    value: Option<(&'a Node, Option<&'a str>)>,
    /// Keys whose value was hidden after an error (a "missing" one is not news).
    hidden_keys: Vec<&'a str>,
    /// First index of each scalar key's text, for large mappings.
    seen: Option<HashMap<&'a str, usize>>,
}

impl<'a> MapAccess<'a> {
    pub(super) fn new(entries: &'a [(Node, Node)], path: &'a Path<'a>, ctx: &'a Ctx) -> Self {
        MapAccess {
            entries,
            next: 0,
            path,
            ctx,
            value: None,
            hidden_keys: Vec::new(),
            seen: (entries.len() > SCAN_KEYS).then(HashMap::new),
        }
    }

    /// An error the visitor itself raised: a missing field that was hidden, or any
    /// complaint after a value was hidden, is a consequence and not news.
    pub(super) fn container_error(&self, e: DeError) -> DeError {
        match e.0 {
            Fault::MissingField(f) if self.hidden_keys.contains(&f) => DeError(Fault::Hide),
            Fault::Message(_) if !self.hidden_keys.is_empty() => DeError(Fault::Hide),
            _ => e,
        }
    }

    /// Whether key `i` repeats an earlier key of the mapping.
    fn repeats(&mut self, i: usize) -> bool {
        let Some((key, _)) = self.entries.get(i) else {
            return false;
        };
        let Some(text) = key.as_str() else {
            return false;
        };
        let earlier = match &mut self.seen {
            Some(seen) => match seen.get(text) {
                Some(&j) => self.entries.get(j).map(|(k, _)| k),
                None => {
                    seen.insert(text, i);
                    None
                }
            },
            None => self.entries.get(..i).and_then(|before| {
                before
                    .iter()
                    .map(|(k, _)| k)
                    .find(|k| k.as_str() == Some(text))
            }),
        };
        earlier.is_some_and(|other| same_key(key, other))
    }
}

/// Whether two scalar keys with the same text are the same key: both quoted, both
/// plain, or the plain one reads as a string (`a` and `'a'`, but not `1` and `'1'`).
fn same_key(a: &Node, b: &Node) -> bool {
    let plain = |n: &Node| matches!(&n.kind, Kind::Scalar(s) if s.style == Style::Plain);
    match (plain(a), plain(b)) {
        (true, true) | (false, false) => a.tag == b.tag,
        _ => a.as_str().is_some_and(plain_is_string),
    }
}

impl<'de> de::MapAccess<'de> for MapAccess<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        while let Some((key, value)) = self.entries.get(self.next) {
            let i = self.next;
            self.next += 1;
            if self.ctx.is_hidden(key.id) {
                continue;
            }
            if self.ctx.is_hidden(value.id) {
                self.hidden_keys.extend(key.as_str());
                continue;
            }
            if self.repeats(i) {
                let text = key.as_str().unwrap_or_default();
                self.ctx
                    .record(key.mark, self.path, format!("duplicate key `{text}`"));
                continue;
            }
            // A key that fails (an unknown field) is recorded where the key is, under
            // the mapping's path, and hidden for the next pass.
            return match seed.deserialize(De::new(key, *self.path, self.ctx)) {
                Ok(k) => {
                    self.value = Some((value, key.as_str()));
                    Ok(Some(k))
                }
                Err(e) => Err(self.ctx.failed(e, key, self.path)),
            };
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let Some((value, key)) = self.value.take() else {
            return Err(de::Error::custom("a value was requested before its key"));
        };
        let path = match key {
            Some(key) => Path::Map {
                parent: self.path,
                key,
            },
            None => Path::Unknown { parent: self.path },
        };
        seed.deserialize(De::new(value, path, self.ctx))
            .map_err(|e| self.ctx.failed(e, value, &path))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len().saturating_sub(self.next))
    }
}

/// An enum written as its variant's name (`auth: required`).
pub(super) struct UnitVariantAccess<'a> {
    de: De<'a>,
}

impl<'a> UnitVariantAccess<'a> {
    pub(super) fn new(de: De<'a>) -> Self {
        UnitVariantAccess { de }
    }
}

impl<'de> de::EnumAccess<'de> for UnitVariantAccess<'_> {
    type Error = DeError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), DeError> {
        Ok((seed.deserialize(self.de)?, self))
    }
}

impl<'de> de::VariantAccess<'de> for UnitVariantAccess<'_> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _seed: T) -> Result<T::Value, DeError> {
        Err(de::Error::invalid_type(
            Unexpected::UnitVariant,
            &"newtype variant",
        ))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, _visitor: V) -> Result<V::Value, DeError> {
        Err(de::Error::invalid_type(
            Unexpected::UnitVariant,
            &"tuple variant",
        ))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, DeError> {
        Err(de::Error::invalid_type(
            Unexpected::UnitVariant,
            &"struct variant",
        ))
    }
}

/// An enum written with a local tag naming its variant (`!variant value`).
pub(super) struct TagAccess<'a> {
    de: De<'a>,
    tag: &'a str,
}

impl<'a> TagAccess<'a> {
    pub(super) fn new(de: De<'a>, tag: &'a str) -> Self {
        TagAccess { de, tag }
    }
}

impl<'de, 'a> de::EnumAccess<'de> for TagAccess<'a> {
    type Error = DeError;
    type Variant = De<'a>;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, De<'a>), DeError> {
        let variant = seed.deserialize(IntoDeserializer::<DeError>::into_deserializer(self.tag))?;
        Ok((
            variant,
            De {
                tagged: true,
                ..self.de
            },
        ))
    }
}

impl<'de> de::VariantAccess<'de> for De<'_> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        de::Deserialize::deserialize(self)
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_seq(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_struct(self, "", fields, visitor)
    }
}
