//! What a pattern sees: the same envelope for every source.
//!
//! ```json
//! { "body": <the body parsed as JSON, or the raw string if it is not JSON>,
//!   "attributes": { "<name>": "<value>" },   // binary values as base64
//!   "source": { "kind": "sqs|pubsub|file|memory", "name": "<queue or subscription>" },
//!   "delivery_attempt": 1 }
//! ```

use serde_json::{Map, Value};
use veltrix_queue::{Attributes, SourceInfo};

/// A body that cannot be shown to patterns at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("body is not valid UTF-8 (first invalid byte at offset {offset}); it can be neither JSON nor a string")]
pub struct UndecodableBody {
    /// Offset of the first invalid byte.
    pub offset: usize,
}

/// Decodes a body: JSON when it parses as JSON, otherwise the text as a string.
pub fn decode_body(body: &[u8]) -> Result<Value, UndecodableBody> {
    let text = std::str::from_utf8(body).map_err(|e| UndecodableBody {
        offset: e.valid_up_to(),
    })?;
    Ok(serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string())))
}

/// Which top-level envelope fields to build (matching needs only what patterns look at).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fields {
    /// Include `attributes`.
    pub attributes: bool,
    /// Include `source`.
    pub source: bool,
    /// Include `delivery_attempt`.
    pub delivery_attempt: bool,
}

impl Fields {
    /// Every field.
    pub const ALL: Fields = Fields {
        attributes: true,
        source: true,
        delivery_attempt: true,
    };
}

/// Builds the envelope with only `fields` (and always `body`).
pub fn build_only(
    body: Value,
    attributes: &Attributes,
    source: &SourceInfo,
    delivery_attempt: u32,
    fields: Fields,
) -> Value {
    let mut envelope = members(attributes, source, delivery_attempt, fields);
    envelope.insert("body".into(), body);
    Value::Object(envelope)
}

/// The envelope's members other than `body`, only `fields` of them: what matching straight from
/// the body's bytes needs besides the bytes (see
/// [`PatternSet::matches_json`](crate::rules::pattern::PatternSet::matches_json)).
pub fn build_without_body(
    attributes: &Attributes,
    source: &SourceInfo,
    delivery_attempt: u32,
    fields: Fields,
) -> Value {
    Value::Object(members(attributes, source, delivery_attempt, fields))
}

fn members(attributes: &Attributes, source: &SourceInfo, delivery_attempt: u32, fields: Fields) -> Map<String, Value> {
    let mut envelope = Map::new();
    if fields.attributes {
        let attributes: Map<String, Value> = attributes
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.text_form().into_owned())))
            .collect();
        envelope.insert("attributes".into(), Value::Object(attributes));
    }
    if fields.source {
        let mut source_obj = Map::new();
        source_obj.insert("kind".into(), Value::String(source.kind.to_string()));
        source_obj.insert("name".into(), Value::String(source.name.clone()));
        envelope.insert("source".into(), Value::Object(source_obj));
    }
    if fields.delivery_attempt {
        envelope.insert("delivery_attempt".into(), Value::from(delivery_attempt));
    }
    envelope
}

/// Builds the envelope patterns and transforms see.
pub fn build(body: Value, attributes: &Attributes, source: &SourceInfo, delivery_attempt: u32) -> Value {
    build_only(body, attributes, source, delivery_attempt, Fields::ALL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_bodies_are_parsed_and_others_are_strings() {
        assert_eq!(decode_body(b"{\"a\":1}").unwrap(), json!({"a": 1}));
        assert_eq!(decode_body(b"not json").unwrap(), json!("not json"));
        assert_eq!(decode_body(b"3.0e2").unwrap(), json!(300.0));
        assert_eq!(decode_body(b"ab\xffc").unwrap_err(), UndecodableBody { offset: 2 });
    }

    #[test]
    fn deeply_nested_json_becomes_a_string_instead_of_failing() {
        let deep = "[".repeat(100_000);
        assert!(decode_body(deep.as_bytes()).unwrap().is_string());
    }

    #[test]
    fn envelope_has_the_documented_shape() {
        let mut attrs = Attributes::new();
        attrs.insert("k", "v");
        let info = SourceInfo {
            kind: "file",
            name: "events.jsonl".into(),
        };
        let env = build(json!({"x": 1}), &attrs, &info, 2);
        assert_eq!(
            env,
            json!({"body": {"x": 1}, "attributes": {"k": "v"},
                   "source": {"kind": "file", "name": "events.jsonl"}, "delivery_attempt": 2})
        );
    }
}
