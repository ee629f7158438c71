//! The JSON-lines record: how file and stdout targets write a message, and how dead-letter files,
//! `format = "record"` file sources and `dlq replay` read it back, byte for byte.
//!
//! ```json
//! {"body": {"id": 1, "amount": 1.10}, "attributes": {"k": "v"}, "ordering_key": "g"}
//! ```
//!
//! - `body`: a JSON body that is an object, array, number, boolean or null is written as its
//!   exact text (no re-serialisation: key order, spacing, `1.10` and 30-digit integers stay as
//!   they came). Any other UTF-8 body, including a JSON *string* body, is written as a JSON
//!   string holding the body's text: the text body `hello` is `"hello"` and the JSON body
//!   `"hello"` (quotes included) is `"\"hello\""`. A body that is not UTF-8 is base64 with
//!   `"body_encoding": "base64"`.
//! - `attributes`: a plain string attribute is a JSON string; a typed one is an object in the
//!   shape of the SQS API, `{"data_type": "Number", "string_value": "7"}` or
//!   `{"data_type": "Binary", "binary_value": "<base64>"}`.
//! - `ordering_key`: present when the message has one.

use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::attributes::{AttributeData, AttributeValue, Attributes, BASE64};
use crate::OutboundMessage;

/// `body_encoding` of a body written as base64.
pub const BODY_ENCODING_BASE64: &str = "base64";

/// Deepest JSON nesting written as raw text; deeper bodies are written as a string (reading
/// the record nests one level more, and the JSON parser stops at 128).
pub const MAX_RAW_DEPTH: usize = 100;

/// A message read back from a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The body, exactly as it was written.
    pub body: Bytes,
    /// Attributes with their data types.
    pub attributes: Attributes,
    /// Ordering key / FIFO group.
    pub ordering_key: Option<String>,
}

/// Why a line is not a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a veltrix record: {0}")]
pub struct RecordError(pub String);

/// Writes one record as a line (with the trailing newline).
pub fn render(message: &OutboundMessage) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.body.len() + 64);
    out.extend_from_slice(b"{\"body\":");
    match std::str::from_utf8(&message.body) {
        Ok(text) if is_raw_json(text) => out.extend_from_slice(text.as_bytes()),
        Ok(text) => push_json(&mut out, &Value::String(text.to_string())),
        Err(_) => {
            push_json(&mut out, &Value::String(BASE64.encode(&message.body)));
            out.extend_from_slice(b",\"body_encoding\":\"base64\"");
        }
    }
    out.extend_from_slice(b",\"attributes\":");
    push_json(&mut out, &Value::Object(attributes_to_json(&message.attributes)));
    if let Some(key) = &message.ordering_key {
        out.extend_from_slice(b",\"ordering_key\":");
        push_json(&mut out, &Value::String(key.clone()));
    }
    out.extend_from_slice(b"}\n");
    out
}

fn push_json(out: &mut Vec<u8>, value: &Value) {
    serde_json::to_writer(out, value).expect("writing JSON to a Vec cannot fail");
}

/// True when `text` can be embedded as itself: JSON that is not a string, with nothing around
/// it, on one line, and not nested too deep.
fn is_raw_json(text: &str) -> bool {
    let first = text.as_bytes().first().copied();
    if matches!(first, None | Some(b'"')) || text.contains(['\n', '\r']) {
        return false;
    }
    match serde_json::from_str::<&RawValue>(text) {
        Ok(raw) => raw.get().len() == text.len() && nesting_depth(text) <= MAX_RAW_DEPTH,
        Err(_) => false,
    }
}

/// Deepest `[`/`{` nesting of JSON text (brackets inside strings do not count).
fn nesting_depth(text: &str) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in text.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    body: &'a RawValue,
    #[serde(default)]
    body_encoding: Option<String>,
    #[serde(default)]
    attributes: Option<Map<String, Value>>,
    #[serde(default)]
    ordering_key: Option<String>,
}

/// Reads a record line (a trailing newline is allowed).
pub fn parse(line: &[u8]) -> Result<Record, RecordError> {
    let line: Line<'_> = serde_json::from_slice(line).map_err(|e| RecordError(e.to_string()))?;
    let raw = line.body.get();
    let body = if raw.starts_with('"') {
        let text: String = serde_json::from_str(raw).map_err(|e| RecordError(format!("body: {e}")))?;
        match line.body_encoding.as_deref() {
            None => Bytes::from(text),
            Some(BODY_ENCODING_BASE64) => Bytes::from(
                BASE64
                    .decode(text.as_bytes())
                    .map_err(|e| RecordError(format!("body is not base64: {e}")))?,
            ),
            Some(other) => return Err(RecordError(format!("unknown body_encoding `{other}`"))),
        }
    } else {
        Bytes::copy_from_slice(raw.as_bytes())
    };
    let attributes = match &line.attributes {
        None => Attributes::new(),
        Some(map) => attributes_from_json(map).map_err(RecordError)?,
    };
    Ok(Record {
        body,
        attributes,
        ordering_key: line.ordering_key,
    })
}

/// Attributes as a JSON object: plain strings as strings, typed values as
/// `{"data_type", "string_value" | "binary_value"}`.
pub fn attributes_to_json(attributes: &Attributes) -> Map<String, Value> {
    attributes
        .iter()
        .map(|(k, v)| (k.clone(), attribute_to_json(v)))
        .collect()
}

/// One attribute value as JSON (see [`attributes_to_json`]).
pub fn attribute_to_json(value: &AttributeValue) -> Value {
    if value.is_plain_string() {
        return Value::String(value.as_str().unwrap_or_default().to_string());
    }
    match value.data() {
        AttributeData::Text(text) => serde_json::json!({ "data_type": value.data_type(), "string_value": text }),
        AttributeData::Binary(bytes) => {
            serde_json::json!({ "data_type": value.data_type(), "binary_value": BASE64.encode(bytes) })
        }
    }
}

/// Reads attributes written by [`attributes_to_json`]. Numbers and booleans (hand-written
/// files) are taken as their text.
pub fn attributes_from_json(map: &Map<String, Value>) -> Result<Attributes, String> {
    let mut out = Attributes::new();
    for (k, v) in map {
        out.insert(
            k.clone(),
            attribute_from_json(v).map_err(|e| format!("attribute `{k}`: {e}"))?,
        );
    }
    Ok(out)
}

/// One attribute value read back (see [`attributes_from_json`]).
pub fn attribute_from_json(value: &Value) -> Result<AttributeValue, String> {
    match value {
        Value::String(s) => Ok(AttributeValue::string(s.clone())),
        Value::Number(_) | Value::Bool(_) => Ok(AttributeValue::string(value.to_string())),
        Value::Object(o) => {
            let data_type = o
                .get("data_type")
                .and_then(Value::as_str)
                .ok_or("a typed attribute needs a string `data_type`")?;
            match (o.get("string_value"), o.get("binary_value")) {
                (Some(Value::String(s)), None) => Ok(AttributeValue::typed_text(data_type, s.clone())),
                (None, Some(Value::String(b))) => BASE64
                    .decode(b.as_bytes())
                    .map(|bytes| AttributeValue::binary(data_type, bytes))
                    .map_err(|e| format!("binary_value is not base64: {e}")),
                _ => Err("a typed attribute needs exactly one of `string_value` and `binary_value` (strings)".into()),
            }
        }
        _ => Err("an attribute value is a string or a {data_type, string_value|binary_value} object".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(body: &[u8], attributes: Attributes, ordering_key: Option<&str>) -> (Vec<u8>, Record) {
        let message = OutboundMessage {
            body: Bytes::copy_from_slice(body),
            attributes,
            ordering_key: ordering_key.map(str::to_string),
            dedup_id: None,
        };
        let line = render(&message);
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1, "one line");
        let record = parse(&line).unwrap();
        assert_eq!(&record.body[..], body, "{}", String::from_utf8_lossy(&line));
        assert_eq!(record.attributes, message.attributes);
        assert_eq!(record.ordering_key, message.ordering_key);
        (line, record)
    }

    #[test]
    fn json_bodies_are_kept_as_their_exact_text() {
        let body = br#"{"z":1,  "a":123456789012345678901234567890, "f":1.10, "e":"\u00e9\n"}"#;
        let (line, _) = round_trip(body, Attributes::new(), None);
        assert!(line.starts_with(br#"{"body":{"z":1,  "a":123456789012345678901234567890"#));
    }

    #[test]
    fn strings_text_and_odd_json_are_distinguished() {
        let (line, _) = round_trip(br#""hello""#, Attributes::new(), None);
        assert!(
            line.starts_with(br#"{"body":"\"hello\"""#),
            "{}",
            String::from_utf8_lossy(&line)
        );
        let (line, _) = round_trip(b"hello", Attributes::new(), None);
        assert!(line.starts_with(br#"{"body":"hello""#));
        round_trip(b" {\"a\":1} ", Attributes::new(), None);
        round_trip(b"{\n  \"a\": 1\n}", Attributes::new(), None);
        round_trip(b"", Attributes::new(), None);
        round_trip(b"1.10", Attributes::new(), None);
        round_trip(&b"[".repeat(200), Attributes::new(), None);
        let deep = format!("{}{}", "[".repeat(120), "]".repeat(120));
        round_trip(deep.as_bytes(), Attributes::new(), None);
    }

    #[test]
    fn bytes_that_are_not_utf8_are_base64() {
        let (line, _) = round_trip(&[0xff, 0x00, b'a', 0xc3], Attributes::new(), None);
        assert!(String::from_utf8_lossy(&line).contains(r#""body_encoding":"base64""#));
    }

    #[test]
    fn every_attribute_type_survives() {
        let mut a = Attributes::new();
        a.insert("s", "plain");
        a.insert("n", AttributeValue::typed_text("Number", "12.50"));
        a.insert("l", AttributeValue::typed_text("String.custom", "x"));
        a.insert(
            "b",
            AttributeValue::binary("Binary.png", Bytes::from_static(&[0, 255, 7])),
        );
        a.insert("empty", "");
        round_trip(b"{}", a, Some("group-1"));
    }

    #[test]
    fn hand_written_and_bad_lines() {
        let r = parse(br#"{"body": {"a": 1}, "attributes": {"n": 5, "t": true}}"#).unwrap();
        assert_eq!(&r.body[..], br#"{"a": 1}"#);
        assert_eq!(r.attributes["n"], "5");
        assert!(parse(b"not json").is_err());
        assert!(parse(br#"{"attributes": {}}"#).is_err());
        assert!(parse(br#"{"body": "x", "body_encoding": "rot13"}"#).is_err());
        assert!(parse(br#"{"body": {}, "attributes": {"x": [1]}}"#).is_err());
    }
}
