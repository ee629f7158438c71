//! Matching straight from a document's bytes: the body is decoded into leaves at pattern paths,
//! never into a `serde_json::Value` tree.
//!
//! [`crate::rules::pattern::decode`] builds a pruned tree and [`crate::rules::pattern::flatten`]
//! then walks it; for the worker's hot path both steps collapse into one: a serde
//! `DeserializeSeed` walks the document along the patterns' path trie and records each scalar at
//! a pattern path as a leaf (with its array context) directly in [`Flat`]. Object keys are looked
//! up in the trie without being copied, members no pattern reaches are checked for syntax and
//! skipped, and no map, array or key is ever allocated; only the scalars patterns test are kept.
//! The leaves are the ones [`flatten`](crate::rules::pattern::flatten::flatten) gives for the
//! parsed document (the tests check it), and invalid JSON is rejected exactly as a full parse
//! rejects it.

use std::fmt;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

use super::flatten::{Flat, PathTrie};

/// Where the decoded leaves go: their positions in `flat`, their values in `vals` (same order).
pub(crate) struct Sink<'f> {
    pub flat: &'f mut Flat,
    pub vals: &'f mut Vec<Value>,
}

/// Decodes the value at trie node `node`, inside array context `ctx`, into leaves.
pub(crate) struct Leaves<'t, 's, 'f> {
    pub trie: &'t PathTrie,
    pub node: u32,
    pub ctx: u32,
    pub sink: &'s mut Sink<'f>,
}

impl Leaves<'_, '_, '_> {
    #[inline]
    fn leaf(self, v: impl FnOnce() -> Value) {
        if self.trie.is_field(self.node) {
            self.sink.flat.push_leaf(self.node, self.ctx);
            self.sink.vals.push(v());
        }
    }
}

impl<'de> DeserializeSeed<'de> for Leaves<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Leaves<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.leaf(|| Value::Bool(v));
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.leaf(|| Value::Number(v.into()));
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.leaf(|| Value::Number(v.into()));
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.leaf(|| Number::from_f64(v).map_or(Value::Null, Value::Number));
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.leaf(|| Value::String(v.to_string()));
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.leaf(|| Value::Null);
        Ok(())
    }

    fn visit_none<E>(self) -> Result<(), E> {
        self.leaf(|| Value::Null);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Leaves { trie, node, ctx, sink } = self;
        if !trie.is_field(node) && !trie.has_children(node) {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(());
        }
        let array = sink.flat.new_array();
        loop {
            let element = sink.flat.push_ctx(ctx, array);
            let leaves_before = sink.flat.leaves.len();
            let more = seq
                .next_element_seed(Leaves {
                    trie,
                    node,
                    ctx: element,
                    sink: &mut *sink,
                })?
                .is_some();
            if sink.flat.leaves.len() == leaves_before {
                // No leaf sits in this element: forget its context (and any nested below it).
                sink.flat.truncate_ctx(element);
            }
            if !more {
                return Ok(());
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Leaves { trie, node, ctx, sink } = self;
        if !trie.has_children(node) {
            // No pattern looks inside this object: validate and skip it whole.
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(());
        }
        while let Some(child) = map.next_key_seed(ChildKey { trie, node })? {
            match child {
                Some(child) => map.next_value_seed(Leaves {
                    trie,
                    node: child,
                    ctx,
                    sink: &mut *sink,
                })?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// Reads an object key and looks it up among `node`'s children in the trie, without copying
/// it: the trie node it leads to, or `None` when no pattern path continues through it.
pub(crate) struct ChildKey<'t> {
    pub trie: &'t PathTrie,
    pub node: u32,
}

impl<'de> DeserializeSeed<'de> for ChildKey<'_> {
    type Value = Option<u32>;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Option<u32>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for ChildKey<'_> {
    type Value = Option<u32>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<Option<u32>, E> {
        Ok(self.trie.child(self.node, key))
    }
}
