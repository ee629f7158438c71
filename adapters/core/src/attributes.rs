//! Message attributes with their provider data types, kept exactly as they arrived.
//!
//! SQS attributes carry a data type (`String`, `Number`, `Binary`, or one of those with a custom
//! label such as `Number.int` or `Binary.png`); Pub/Sub attributes and file attributes are plain
//! strings. An [`AttributeValue`] keeps the type and the exact value (text or bytes), so a
//! message forwarded, dead-lettered or replayed leaves with every attribute it came with.
//!
//! Patterns and transforms see each attribute as one string: the text for `String` and
//! `Number` types, base64 for `Binary` ([`AttributeValue::text_form`]).

use std::borrow::Cow;
use std::collections::btree_map;
use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use bytes::Bytes;

/// The base64 alphabet used wherever veltrix writes bytes as text (standard, padded).
pub const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The data type of a plain text attribute.
pub const STRING_TYPE: &str = "String";

/// One attribute value and its data type. As small as a `String` (the common plain case is
/// one); typed values live behind a box.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttributeValue(Repr);

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Repr {
    /// A plain `String` attribute (every Pub/Sub and file attribute).
    Plain(String),
    /// Any other SQS data type.
    Typed(Box<Typed>),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Typed {
    data_type: String,
    data: Data,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Data {
    Text(String),
    Binary(Bytes),
}

/// The value of an attribute: text (`String`, `Number` types) or bytes (`Binary` types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttributeData<'a> {
    /// Text.
    Text(&'a str),
    /// Bytes.
    Binary(&'a Bytes),
}

impl std::fmt::Debug for AttributeValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Repr::Plain(v) => write!(f, "{v:?}"),
            Repr::Typed(t) => write!(f, "{}({:?})", t.data_type, t.data),
        }
    }
}

impl AttributeValue {
    /// A plain `String` attribute.
    pub fn string(value: impl Into<String>) -> Self {
        AttributeValue(Repr::Plain(value.into()))
    }

    /// A text attribute of an SQS data type (`String`, `Number`, `Number.int`, `String.x`…).
    pub fn typed_text(data_type: impl Into<String>, value: impl Into<String>) -> Self {
        let data_type = data_type.into();
        if data_type == STRING_TYPE {
            return Self::string(value);
        }
        AttributeValue(Repr::Typed(Box::new(Typed {
            data_type,
            data: Data::Text(value.into()),
        })))
    }

    /// A binary attribute (`Binary` or `Binary.label`).
    pub fn binary(data_type: impl Into<String>, value: impl Into<Bytes>) -> Self {
        AttributeValue(Repr::Typed(Box::new(Typed {
            data_type: data_type.into(),
            data: Data::Binary(value.into()),
        })))
    }

    /// The SQS data type name: `String` for plain text.
    pub fn data_type(&self) -> &str {
        match &self.0 {
            Repr::Plain(_) => STRING_TYPE,
            Repr::Typed(t) => &t.data_type,
        }
    }

    /// The value: text or bytes.
    pub fn data(&self) -> AttributeData<'_> {
        match &self.0 {
            Repr::Plain(v) => AttributeData::Text(v),
            Repr::Typed(t) => match &t.data {
                Data::Text(v) => AttributeData::Text(v),
                Data::Binary(b) => AttributeData::Binary(b),
            },
        }
    }

    /// True for a plain `String` attribute (what Pub/Sub, files and HTTP headers carry).
    pub fn is_plain_string(&self) -> bool {
        matches!(self.0, Repr::Plain(_))
    }

    /// The text of a text attribute; `None` for binary ones.
    pub fn as_str(&self) -> Option<&str> {
        match self.data() {
            AttributeData::Text(v) => Some(v),
            AttributeData::Binary(_) => None,
        }
    }

    /// The text of a text attribute, taken; `None` for binary ones.
    pub fn into_text(self) -> Option<String> {
        match self.0 {
            Repr::Plain(v) => Some(v),
            Repr::Typed(t) => match t.data {
                Data::Text(v) => Some(v),
                Data::Binary(_) => None,
            },
        }
    }

    /// The value as one string, as patterns and transforms see it: the text, or base64 of
    /// the bytes of a binary attribute.
    pub fn text_form(&self) -> Cow<'_, str> {
        match self.data() {
            AttributeData::Text(v) => Cow::Borrowed(v),
            AttributeData::Binary(b) => Cow::Owned(BASE64.encode(b)),
        }
    }

    /// Bytes of the value (text or binary).
    pub fn value_len(&self) -> usize {
        match self.data() {
            AttributeData::Text(v) => v.len(),
            AttributeData::Binary(b) => b.len(),
        }
    }

    /// True when the value is empty.
    pub fn is_empty(&self) -> bool {
        self.value_len() == 0
    }
}

impl From<String> for AttributeValue {
    fn from(value: String) -> Self {
        AttributeValue::string(value)
    }
}

impl From<&str> for AttributeValue {
    fn from(value: &str) -> Self {
        AttributeValue::string(value)
    }
}

impl From<&String> for AttributeValue {
    fn from(value: &String) -> Self {
        AttributeValue::string(value.clone())
    }
}

impl PartialEq<str> for AttributeValue {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == Some(other)
    }
}

impl PartialEq<&str> for AttributeValue {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == Some(*other)
    }
}

impl fmt::Display for AttributeValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text_form())
    }
}

/// Message attributes: names to typed values, ordered by name for stable output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Attributes(BTreeMap<String, AttributeValue>);

impl Attributes {
    /// No attributes.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&AttributeValue> {
        self.0.get(name)
    }

    /// The text of `name`, when it is a text attribute.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(AttributeValue::as_str)
    }

    /// True when `name` is set.
    pub fn contains_key(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// Sets `name`, returning the value it replaced.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<AttributeValue>) -> Option<AttributeValue> {
        self.0.insert(name.into(), value.into())
    }

    /// Removes `name`, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<AttributeValue> {
        self.0.remove(name)
    }

    /// Keeps only the attributes for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &mut AttributeValue) -> bool) {
        self.0.retain(|k, v| keep(k, v));
    }

    /// Attributes in name order.
    pub fn iter(&self) -> btree_map::Iter<'_, String, AttributeValue> {
        self.0.iter()
    }

    /// Names in order.
    pub fn keys(&self) -> btree_map::Keys<'_, String, AttributeValue> {
        self.0.keys()
    }

    /// Bytes of names and values together (what provider size limits count, less type names).
    pub fn byte_len(&self) -> usize {
        self.0.iter().map(|(k, v)| k.len() + v.value_len()).sum()
    }
}

impl std::ops::Index<&str> for Attributes {
    type Output = AttributeValue;

    fn index(&self, name: &str) -> &AttributeValue {
        self.0.get(name).unwrap_or_else(|| panic!("no attribute `{name}`"))
    }
}

impl<K: Into<String>, V: Into<AttributeValue>> FromIterator<(K, V)> for Attributes {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self(iter.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }
}

impl<K: Into<String>, V: Into<AttributeValue>> Extend<(K, V)> for Attributes {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        self.0.extend(iter.into_iter().map(|(k, v)| (k.into(), v.into())));
    }
}

impl IntoIterator for Attributes {
    type Item = (String, AttributeValue);
    type IntoIter = btree_map::IntoIter<String, AttributeValue>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Attributes {
    type Item = (&'a String, &'a AttributeValue);
    type IntoIter = btree_map::Iter<'a, String, AttributeValue>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_strings_have_no_stored_type() {
        assert_eq!(AttributeValue::typed_text("String", "x"), AttributeValue::string("x"));
        assert!(AttributeValue::string("x").is_plain_string());
        assert_eq!(AttributeValue::typed_text("Number.int", "7").data_type(), "Number.int");
        assert!(!AttributeValue::typed_text("Number", "7").is_plain_string());
    }

    #[test]
    fn a_value_is_no_larger_than_a_string() {
        assert_eq!(std::mem::size_of::<AttributeValue>(), std::mem::size_of::<String>());
    }

    #[test]
    fn binary_values_show_as_base64() {
        let v = AttributeValue::binary("Binary", Bytes::from_static(&[0xff, 0x00]));
        assert_eq!(v.text_form(), "/wA=");
        assert_eq!(v.as_str(), None);
        assert_eq!(v.value_len(), 2);
    }

    #[test]
    fn attributes_behave_like_an_ordered_map() {
        let mut a: Attributes = [("b", "2"), ("a", "1")].into_iter().collect();
        a.insert("c", AttributeValue::typed_text("Number", "3"));
        assert_eq!(a.keys().map(String::as_str).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(a["a"], "1");
        assert_eq!(a.get_str("c"), Some("3"));
        assert_eq!(a.byte_len(), 6);
        a.retain(|k, _| k != "b");
        assert_eq!(a.len(), 2);
    }
}
