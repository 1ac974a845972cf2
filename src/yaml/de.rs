//! A serde `Deserializer` over a [`Node`], method by method as `serde_yaml` 0.9's
//! (see `scalar` for how scalars resolve). Errors are handed to the accesses
//! (`access`), which record them and hide what failed (see `collect`).

use std::fmt;

use serde::de::{self, Expected, Unexpected, Visitor};

use super::access::{MapAccess, SeqAccess, TagAccess, UnitVariantAccess};
use super::collect::{Ctx, DeError, Path};
use super::read::{Kind, Node, Scalar, Style};
use super::scalar::{self as s, plain_or_tagged_literal, visit_scalar, BOOL, FLOAT, INT};

/// The deserializer for one node.
#[derive(Clone, Copy)]
pub(super) struct De<'a> {
    pub(super) node: &'a Node,
    pub(super) path: Path<'a>,
    pub(super) ctx: &'a Ctx,
    /// The node's tag already chose an enum variant (`!variant value`).
    pub(super) tagged: bool,
}

impl<'a> De<'a> {
    pub(super) fn new(node: &'a Node, path: Path<'a>, ctx: &'a Ctx) -> Self {
        De {
            node,
            path,
            ctx,
            tagged: false,
        }
    }

    fn tag(&self) -> Option<&'a str> {
        if self.tagged {
            None
        } else {
            self.node.tag.as_deref()
        }
    }

    /// The node's own tag as an enum variant name, unless a tag was already used.
    fn enum_tag(&self) -> Option<&'a str> {
        s::enum_tag(self.tag())
    }

    fn scalar(&self) -> Option<&'a Scalar> {
        match &self.node.kind {
            Kind::Scalar(sc) => Some(sc),
            _ => None,
        }
    }

    /// A typed scalar request (`bool`, integer, float): the parsed value, or the error
    /// `serde_yaml` gives.
    fn typed<'de, V: Visitor<'de>, T>(
        self,
        visitor: V,
        core_tag: &str,
        parse: fn(&str) -> Option<T>,
        visit: fn(V, T) -> Result<V::Value, DeError>,
    ) -> Result<V::Value, DeError> {
        if let Some(sc) = self.scalar() {
            if plain_or_tagged_literal(core_tag, sc, self.node.tag.as_deref(), self.tagged) {
                if let Some(v) = parse(&sc.value) {
                    return visit(visitor, v);
                }
            }
        }
        Err(invalid_type(self.node, self.tagged, &visitor))
    }

    fn visit_seq<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.kind {
            Kind::Seq(items) => {
                let mut access = SeqAccess::new(items, &self.path, self.ctx);
                let result = visitor.visit_seq(&mut access);
                result.map_err(|e| access.container_error(e))
            }
            _ if self.node.is_empty_plain() => {
                visitor.visit_seq(SeqAccess::new(&[], &self.path, self.ctx))
            }
            _ => Err(invalid_type(self.node, self.tagged, &visitor)),
        }
    }

    fn visit_map<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.kind {
            Kind::Map(entries) => {
                let mut access = MapAccess::new(entries, &self.path, self.ctx);
                let result = visitor.visit_map(&mut access);
                result.map_err(|e| access.container_error(e))
            }
            _ if self.node.is_empty_plain() => {
                visitor.visit_map(MapAccess::new(&[], &self.path, self.ctx))
            }
            _ => Err(invalid_type(self.node, self.tagged, &visitor)),
        }
    }
}

/// The "invalid type" error `serde_yaml` gives for `node` where `exp` was expected.
pub(super) fn invalid_type(node: &Node, tagged: bool, exp: &dyn Expected) -> DeError {
    enum Void {}
    struct InvalidType<'a>(&'a dyn Expected);
    impl<'de> Visitor<'de> for InvalidType<'_> {
        type Value = Void;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            self.0.fmt(f)
        }
    }
    match &node.kind {
        Kind::Scalar(sc) => {
            let tag = if tagged { None } else { node.tag.as_deref() };
            match visit_scalar(InvalidType(exp), sc, tag, tagged) {
                Ok(void) => match void {},
                Err(e) => e,
            }
        }
        Kind::Seq(_) => de::Error::invalid_type(Unexpected::Seq, exp),
        Kind::Map(_) => de::Error::invalid_type(Unexpected::Map, exp),
    }
}

macro_rules! forward {
    ($($method:ident => $to:ident),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            self.$to(visitor)
        })*
    };
}

impl<'de> de::Deserializer<'de> for De<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if let Some(tag) = self.enum_tag() {
            return visitor.visit_enum(TagAccess::new(self, tag));
        }
        match &self.node.kind {
            Kind::Scalar(sc) => visit_scalar(visitor, sc, self.tag(), self.tagged),
            Kind::Seq(_) => self.visit_seq(visitor),
            Kind::Map(_) => self.visit_map(visitor),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.typed(visitor, BOOL, s::parse_bool, |v, b| v.visit_bool(b))
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.typed(
            visitor,
            INT,
            |v| s::parse_signed_int(v, i64::from_str_radix),
            |v, i| v.visit_i64(i),
        )
    }

    fn deserialize_i128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.typed(
            visitor,
            INT,
            |v| s::parse_signed_int(v, i128::from_str_radix),
            |v, i| v.visit_i128(i),
        )
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.typed(
            visitor,
            INT,
            |v| s::parse_unsigned_int(v, u64::from_str_radix),
            |v, i| v.visit_u64(i),
        )
    }

    fn deserialize_u128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.typed(
            visitor,
            INT,
            |v| s::parse_unsigned_int(v, u128::from_str_radix),
            |v, i| v.visit_u128(i),
        )
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.typed(visitor, FLOAT, s::parse_f64, |v, f| v.visit_f64(f))
    }

    forward! {
        deserialize_i8 => deserialize_i64,
        deserialize_i16 => deserialize_i64,
        deserialize_i32 => deserialize_i64,
        deserialize_u8 => deserialize_u64,
        deserialize_u16 => deserialize_u64,
        deserialize_u32 => deserialize_u64,
        deserialize_f32 => deserialize_f64,
        deserialize_char => deserialize_str,
        deserialize_string => deserialize_str,
        deserialize_identifier => deserialize_str,
        deserialize_seq => visit_seq,
        deserialize_map => visit_map,
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.scalar() {
            Some(sc) => visitor.visit_str(&sc.value),
            None => Err(invalid_type(self.node, self.tagged, &visitor)),
        }
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, DeError> {
        Err(de::Error::custom(
            "serialization and deserialization of bytes in YAML is not implemented",
        ))
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let is_some = match self.scalar() {
            None => true,
            Some(sc) if sc.style != Style::Plain => true,
            Some(sc) => match self.tag() {
                Some(s::NULL) if s::parse_null(&sc.value).is_some() => false,
                Some(s::NULL) => {
                    return Err(de::Error::invalid_value(
                        Unexpected::Str(&sc.value),
                        &"null",
                    ))
                }
                Some(_) => true,
                None => !sc.value.is_empty() && s::parse_null(&sc.value).is_none(),
            },
        };
        if is_some {
            visitor.visit_some(self)
        } else {
            visitor.visit_none()
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.scalar() {
            Some(sc) => {
                let is_null = if sc.style != Style::Plain {
                    false
                } else if let Some(tag) = self.tag() {
                    tag == s::NULL && s::parse_null(&sc.value).is_some()
                } else {
                    sc.value.is_empty() || s::parse_null(&sc.value).is_some()
                };
                if is_null {
                    visitor.visit_unit()
                } else {
                    Err(de::Error::invalid_value(
                        Unexpected::Str(&sc.value),
                        &"null",
                    ))
                }
            }
            None => Err(invalid_type(self.node, self.tagged, &visitor)),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.visit_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.visit_seq(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.visit_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        if self.tagged {
            return match self.scalar() {
                Some(sc) if !sc.value.is_empty() => {
                    visitor.visit_enum(UnitVariantAccess::new(self))
                }
                _ => Err(de::Error::custom(
                    "deserializing nested enum from YAML is not supported yet",
                )),
            };
        }
        if let Some(tag) = self.enum_tag() {
            return visitor.visit_enum(TagAccess::new(self, tag));
        }
        match &self.node.kind {
            Kind::Scalar(_) => visitor.visit_enum(UnitVariantAccess::new(self)),
            Kind::Seq(_) => Err(de::Error::invalid_type(
                Unexpected::Seq,
                &"a YAML tag starting with '!'",
            )),
            Kind::Map(_) => Err(de::Error::invalid_type(
                Unexpected::Map,
                &"a YAML tag starting with '!'",
            )),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }
}
