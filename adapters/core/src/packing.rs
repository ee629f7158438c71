//! How targets carry what a provider cannot hold natively, and how every source undoes it.
//!
//! - A body a provider cannot carry as it is (SQS bodies are XML-safe text) is sent base64 with
//!   [`ATTR_BODY_ENCODING`] `= "base64"`; an empty body (SQS needs one character) as one space
//!   with `= "empty"`.
//! - Attributes a provider cannot carry natively (over its count limit, a data type it lacks,
//!   a name or value it rejects) are sent as one JSON object, in the [`record`](crate::record)
//!   attribute shape, in [`ATTR_PACKED`]; a value longer than the provider's attribute limit is
//!   split over `veltrix.attributes.1`, `veltrix.attributes.2`, …
//!
//! [`unpack`] reverses both, so a message a veltrix target wrote comes back to any veltrix
//! source (the worker, `dlq replay`) with its exact body and every attribute and type. A
//! marker that does not decode is left untouched: nothing is dropped or changed silently.

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Map, Value};

use crate::attributes::{AttributeValue, Attributes, BASE64};
use crate::record::{attribute_to_json, attributes_from_json};

/// Marks a body sent as base64.
pub const ATTR_BODY_ENCODING: &str = "veltrix.body_encoding";
/// Holds the attributes a provider could not carry natively, as a JSON object.
pub const ATTR_PACKED: &str = "veltrix.attributes";
/// Body encoding: the body is base64.
pub const BASE64_ENCODING: &str = "base64";
/// Body encoding: the body is empty (sent as one space to providers that need a body).
pub const EMPTY_ENCODING: &str = "empty";
/// The body sent for an empty one, marked with [`EMPTY_ENCODING`].
pub const EMPTY_PLACEHOLDER: &str = " ";

/// The packed JSON object for `attributes`.
pub fn pack<'a>(attributes: impl IntoIterator<Item = (&'a String, &'a AttributeValue)>) -> String {
    let map: Map<String, Value> = attributes
        .into_iter()
        .map(|(k, v)| (k.clone(), attribute_to_json(v)))
        .collect();
    serde_json::to_string(&Value::Object(map)).expect("a JSON object always serializes")
}

/// Splits a packed value into `(name, part)` pairs of at most `max_value_bytes` each, cut on
/// character boundaries: `veltrix.attributes`, then `veltrix.attributes.1`, ….
pub fn split_packed(packed: &str, max_value_bytes: usize) -> Vec<(String, String)> {
    let max = max_value_bytes.max(4);
    let mut out = Vec::new();
    let mut rest = packed;
    while !rest.is_empty() || out.is_empty() {
        let mut end = rest.len().min(max);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let name = if out.is_empty() {
            ATTR_PACKED.to_string()
        } else {
            format!("{ATTR_PACKED}.{}", out.len())
        };
        out.push((name, rest[..end].to_string()));
        rest = &rest[end..];
    }
    out
}

/// Own attributes kept native first when some must be packed (operators filter on them).
pub const NATIVE_FIRST: &[&str] = &[
    ATTR_BODY_ENCODING,
    "veltrix.reason",
    "veltrix.message_id",
    "veltrix.rule",
    "veltrix.attempts",
    "veltrix.source",
];

/// How a target carries a message's attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carried<'a> {
    /// Sent as the provider's own attributes.
    pub native: Vec<(&'a String, &'a AttributeValue)>,
    /// Sent as plain string attributes holding the packed rest ([`split_packed`]).
    pub packed: Vec<(String, String)>,
}

/// Decides which attributes go native and packs the rest: at most `max_attributes` in all,
/// packed parts of at most `max_value_bytes`; `native_ok` says what the provider accepts as an
/// attribute of its own.
pub fn carry<'a>(
    attributes: &'a Attributes,
    max_attributes: usize,
    max_value_bytes: usize,
    native_ok: impl Fn(&str, &AttributeValue) -> bool,
) -> Carried<'a> {
    let (mut native, mut rest): (Vec<_>, Vec<_>) = attributes.iter().partition(|(k, v)| native_ok(k, v));
    let rank = |k: &str| NATIVE_FIRST.iter().position(|n| *n == k).unwrap_or(NATIVE_FIRST.len());
    native.sort_by(|a, b| rank(a.0).cmp(&rank(b.0)).then(a.0.cmp(b.0)));
    loop {
        let packed = if rest.is_empty() {
            Vec::new()
        } else {
            split_packed(&pack(rest.iter().copied()), max_value_bytes)
        };
        if native.len() + packed.len() <= max_attributes || native.is_empty() {
            return Carried { native, packed };
        }
        rest.push(native.pop().expect("native is not empty"));
    }
}

/// The base64 text of a body, for providers whose bodies are text.
pub fn encode_body(body: &[u8]) -> String {
    BASE64.encode(body)
}

/// Undoes what a veltrix target did to carry a message: decodes a base64 body and merges packed
/// attributes back (removing the markers). Markers that do not decode stay as they are.
pub fn unpack(attributes: &mut Attributes, body: &mut Bytes) {
    match attributes.get_str(ATTR_BODY_ENCODING) {
        Some(BASE64_ENCODING) => {
            if let Ok(decoded) = BASE64.decode(&body[..]) {
                *body = Bytes::from(decoded);
                attributes.remove(ATTR_BODY_ENCODING);
            }
        }
        Some(EMPTY_ENCODING) if &body[..] == EMPTY_PLACEHOLDER.as_bytes() => {
            *body = Bytes::new();
            attributes.remove(ATTR_BODY_ENCODING);
        }
        _ => {}
    }
    let Some(first) = attributes.get_str(ATTR_PACKED) else {
        return;
    };
    let mut text = first.to_string();
    let mut parts = vec![ATTR_PACKED.to_string()];
    for i in 1.. {
        let name = format!("{ATTR_PACKED}.{i}");
        match attributes.get_str(&name) {
            Some(part) => text.push_str(part),
            None => break,
        }
        parts.push(name);
    }
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&text) else {
        return;
    };
    let Ok(packed) = attributes_from_json(&map) else {
        return;
    };
    for name in &parts {
        attributes.remove(name);
    }
    for (k, v) in packed {
        attributes.insert(k, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_attributes_and_bodies_come_back() {
        let mut original = Attributes::new();
        original.insert("n", AttributeValue::typed_text("Number", "1.50"));
        original.insert("b", AttributeValue::binary("Binary", Bytes::from_static(&[1, 2, 255])));
        original.insert("s", "x".repeat(3000));
        let packed = pack(&original);
        let mut carried = Attributes::new();
        carried.insert("kept", "native");
        for (k, v) in split_packed(&packed, 1024) {
            assert!(v.len() <= 1024);
            carried.insert(k, v);
        }
        assert_eq!(carried.len(), 1 + packed.len().div_ceil(1024));
        carried.insert(ATTR_BODY_ENCODING, "base64");
        let mut body = Bytes::from(encode_body(&[0xff, 0xfe]));
        unpack(&mut carried, &mut body);
        assert_eq!(&body[..], &[0xff, 0xfe]);
        let mut a: Attributes = [(ATTR_BODY_ENCODING, EMPTY_ENCODING)].into_iter().collect();
        let mut body = Bytes::from_static(EMPTY_PLACEHOLDER.as_bytes());
        unpack(&mut a, &mut body);
        assert!(body.is_empty() && a.is_empty());
        let mut expected = original.clone();
        expected.insert("kept", "native");
        assert_eq!(carried, expected);
    }

    #[test]
    fn carry_keeps_own_attributes_native_and_packs_the_rest() {
        let mut a: Attributes = (0..12).map(|i| (format!("a{i:02}"), format!("v{i}"))).collect();
        a.insert("veltrix.reason", "unmatched");
        a.insert("bin", AttributeValue::binary("Binary", Bytes::from_static(b"x")));
        let carried = carry(&a, 10, 1024, |_, v| v.is_plain_string());
        assert_eq!(carried.native.len() + carried.packed.len(), 10);
        assert_eq!(carried.native[0].0, "veltrix.reason");
        let mut back: Attributes = carried
            .native
            .iter()
            .map(|(k, v)| ((*k).clone(), (*v).clone()))
            .collect();
        back.extend(carried.packed.clone());
        let mut body = Bytes::new();
        unpack(&mut back, &mut body);
        assert_eq!(back, a);
        let few: Attributes = [("k", "v")].into_iter().collect();
        let carried = carry(&few, 10, 1024, |_, _| true);
        assert!(carried.packed.is_empty());
    }

    #[test]
    fn markers_that_do_not_decode_stay() {
        let mut a: Attributes = [(ATTR_BODY_ENCODING, "base64"), (ATTR_PACKED, "{not json")]
            .into_iter()
            .collect();
        let before = a.clone();
        let mut body = Bytes::from_static(b"not base64!");
        unpack(&mut a, &mut body);
        assert_eq!(a, before);
        assert_eq!(&body[..], b"not base64!");
    }

    #[test]
    fn multibyte_values_split_on_character_boundaries() {
        let packed = pack(&[("k", "é".repeat(700))].into_iter().collect::<Attributes>());
        let parts = split_packed(&packed, 1024);
        assert!(parts.iter().all(|(_, v)| v.len() <= 1024));
        assert_eq!(parts.iter().map(|(_, v)| v.as_str()).collect::<String>(), packed);
    }
}
