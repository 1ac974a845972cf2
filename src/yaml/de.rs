//! A serde `Deserializer` over a [`Node`] that reports every error, not just the first.
//!
//! serde's derived visitors stop at the first error they are given, so errors are
//! kept out of their way: when a value fails, the error is *recorded* (with the
//! value's position and field path) and the visitor gets a marker error that
//! unwinds it; the failed node is then hidden and the whole document is
//! deserialized again, so the next pass reaches the siblings the first one never
//! saw. A hidden field that was required shows up as "missing": that error is a
//! consequence, not news, so it is dropped and the parent is hidden in turn. Each
//! pass hides at least one more node, so this ends; a document with one problem
//! takes a few passes, a valid one exactly one. Unknown fields and repeated keys
//! are recorded and skipped without unwinding anything.
//!
//! Scalar handling follows `serde_yaml` 0.9 method by method (see `scalar`).

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Expected, Unexpected, Visitor};

use super::access::{MapAccess, SeqAccess, TagAccess, UnitVariantAccess};
use super::read::{Kind, Node, Scalar, Style};
use super::scalar::{self as s, plain_or_tagged_literal, visit_scalar, BOOL, FLOAT, INT};
use super::{Error, Mark, MAX_ERRORS};

/// Where a node is in its document: `routes[1].auth`.
#[derive(Debug, Clone, Copy)]
pub enum Path<'a> {
    /// The document itself.
    Root,
    /// Element `index` of a sequence.
    Seq {
        /// The sequence's path.
        parent: &'a Path<'a>,
        /// The element's index.
        index: usize,
    },
    /// The value of `key` in a mapping.
    Map {
        /// The mapping's path.
        parent: &'a Path<'a>,
        /// The key.
        key: &'a str,
    },
    /// The value of a key that is not a string.
    Unknown {
        /// The mapping's path.
        parent: &'a Path<'a>,
    },
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parent = |f: &mut fmt::Formatter<'_>, p: &Path<'_>| match p {
            Path::Root => Ok(()),
            p => write!(f, "{p}."),
        };
        match self {
            Path::Root => Ok(()),
            Path::Seq { parent, index } => write!(f, "{parent}[{index}]"),
            Path::Map { parent: p, key } => {
                parent(f, p)?;
                f.write_str(key)
            }
            Path::Unknown { parent: p } => {
                parent(f, p)?;
                f.write_str("?")
            }
        }
    }
}

/// An error inside deserialization.
#[derive(Debug)]
pub struct DeError(pub(super) Fault);

#[derive(Debug)]
pub(super) enum Fault {
    /// A problem not yet recorded; the caller that knows the node records it.
    Message(String),
    /// A required field is absent (maybe because it was hidden after an error).
    MissingField(&'static str),
    /// Already recorded: unwind.
    Recorded,
    /// Nothing new to say, but this node cannot be built: hide it and unwind.
    Hide,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Fault::Message(m) => f.write_str(m),
            Fault::MissingField(field) => write!(f, "missing field `{field}`"),
            Fault::Recorded | Fault::Hide => f.write_str("(reported)"),
        }
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError(Fault::Message(msg.to_string()))
    }

    fn missing_field(field: &'static str) -> Self {
        DeError(Fault::MissingField(field))
    }
}

/// What one deserialization collects across its passes.
#[derive(Default)]
pub(super) struct Ctx {
    errors: RefCell<Vec<Error>>,
    hidden: RefCell<HashSet<usize>>,
    any_hidden: Cell<bool>,
    hid_more: Cell<bool>,
}

impl Ctx {
    /// Whether node `id` is hidden from visitors.
    pub(super) fn is_hidden(&self, id: usize) -> bool {
        self.any_hidden.get() && self.hidden.borrow().contains(&id)
    }

    fn hide(&self, id: usize) {
        if self.hidden.borrow_mut().insert(id) {
            self.hid_more.set(true);
            self.any_hidden.set(true);
        }
    }

    /// Record a problem (once, however many passes meet it).
    pub(super) fn record(&self, mark: Mark, path: &Path<'_>, message: String) {
        let e = Error {
            mark: Some(mark),
            path: path.to_string(),
            message,
        };
        let mut errors = self.errors.borrow_mut();
        if !errors.contains(&e) && errors.len() < MAX_ERRORS {
            errors.push(e);
        }
    }

    /// A child `node` at `path` failed with `e`: record what is new, hide the node when
    /// it cannot be built, and hand back the marker that unwinds the visitor.
    pub(super) fn failed(&self, e: DeError, node: &Node, path: &Path<'_>) -> DeError {
        match e.0 {
            Fault::Recorded => {}
            Fault::Hide => self.hide(node.id),
            Fault::Message(_) | Fault::MissingField(_) => {
                self.record(node.mark, path, e.to_string());
                self.hide(node.id);
            }
        }
        DeError(Fault::Recorded)
    }
}

/// Deserialize `node` (at `path`) into `T`, pass after pass until no new node is hidden.
pub(super) fn deserialize<T: de::DeserializeOwned>(
    node: &Node,
    path: &Path<'_>,
) -> Result<T, Vec<Error>> {
    let ctx = Ctx::default();
    loop {
        ctx.hid_more.set(false);
        match T::deserialize(De::new(node, *path, &ctx)) {
            Ok(v) if ctx.errors.borrow().is_empty() => return Ok(v),
            Ok(_) => {}
            Err(DeError(Fault::Recorded | Fault::Hide)) => {}
            Err(e) => {
                ctx.record(node.mark, path, e.to_string());
                break;
            }
        }
        if !ctx.hid_more.get() || ctx.errors.borrow().len() >= MAX_ERRORS {
            break;
        }
    }
    let mut errors = ctx.errors.into_inner();
    errors.sort_by_key(|e| e.mark);
    if errors.is_empty() {
        // Unreachable in practice: a failure always records something.
        errors.push(Error {
            mark: Some(node.mark),
            path: path.to_string(),
            message: "invalid value".to_string(),
        });
    }
    Err(errors)
}

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
