//! Pruned decoding: parse a JSON document keeping only the members some pattern can look at.
//!
//! The worker parses every message body before matching. Most of a typical event is never
//! looked at by any pattern, and building `serde_json::Value`s (strings, maps) for it is most of
//! the cost of parsing. A serde `DeserializeSeed` walks the document along the patterns' path
//! trie: members on a pattern path become values, everything else is checked for syntax and
//! skipped with `IgnoredAny`. The result matches exactly like the full document (a property the
//! tests check), and invalid JSON is rejected exactly as a full parse would reject it.

use std::fmt;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::flatten::PathTrie;

/// Decodes the value at trie node `node`.
pub(crate) struct Pruned<'t> {
    pub(crate) trie: &'t PathTrie,
    pub(crate) node: u32,
}

impl<'de> DeserializeSeed<'de> for Pruned<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Pruned<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Pruned {
            trie: self.trie,
            node: self.node,
        })? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        if !self.trie.has_children(self.node) {
            // No pattern looks inside this object: validate and skip it whole.
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(Value::Object(out));
        }
        while let Some(key) = map.next_key_seed(KeptKey {
            trie: self.trie,
            node: self.node,
        })? {
            match key {
                Some((child, key)) => {
                    let value = map.next_value_seed(Pruned {
                        trie: self.trie,
                        node: child,
                    })?;
                    out.insert(key, value);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(out))
    }
}

/// Reads an object key and looks it up among `node`'s children: the child and the key (copied
/// only then), or `None` when no pattern path continues through it.
struct KeptKey<'t> {
    trie: &'t PathTrie,
    node: u32,
}

impl<'de> DeserializeSeed<'de> for KeptKey<'_> {
    type Value = Option<(u32, String)>;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeptKey<'_> {
    type Value = Option<(u32, String)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.trie.child(self.node, key).map(|child| (child, key.to_string())))
    }
}
