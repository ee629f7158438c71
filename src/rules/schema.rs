//! JSON Schema validation of event bodies, per rule.
//!
//! A rule may name a schema file (`schema = "schemas/order.json"`, relative to the config).
//! It is compiled once at load with the `jsonschema` crate (the draft comes from the schema's
//! `$schema`: 2020-12 when absent, draft-07 and the others when named). An event that matches
//! the rule but whose body does not fit the schema is dead-lettered as `schema_invalid`, and
//! `veltrix.error` names the JSON pointer into the body and the keyword that failed.
//!
//! Schemas are self-contained: `$ref`s resolve within the file (`#/$defs/…`); nothing is
//! fetched from the network or the disk while compiling, so a reference to another document is
//! a load error that says so.

use std::fmt;

use serde::Serialize;
use serde_json::Value;
use sha2::Digest as _;

use crate::config::locate::{self, Position};

/// Largest schema file read, in bytes.
pub const MAX_SCHEMA_BYTES: usize = 1024 * 1024;
/// Most violations `veltrix test` lists per schema.
pub const MAX_VIOLATIONS_LISTED: usize = 10;

/// A compiled schema and the path it was read from.
pub struct Schema {
    path: String,
    digest: [u8; 32],
    validator: jsonschema::Validator,
}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schema")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// One way a body does not fit its schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// JSON pointer into the body (`""` is the body itself).
    pub pointer: String,
    /// The schema keyword that failed (`type`, `required`, `minimum`, …).
    pub keyword: String,
    /// What failed, without the offending value (it is in the message body already, and may be
    /// large or private).
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pointer.is_empty() {
            write!(f, "at the body itself, keyword `{}`: {}", self.keyword, self.message)
        } else {
            write!(f, "at {}, keyword `{}`: {}", self.pointer, self.keyword, self.message)
        }
    }
}

/// Why a schema file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// The file is not JSON.
    #[error("{}not JSON: {message}", at(*position))]
    Syntax {
        /// What the parser said.
        message: String,
        /// Where.
        position: Option<Position>,
    },
    /// The file is JSON but not a schema the crate accepts (invalid against its meta-schema,
    /// a reference it cannot resolve, a bad regular expression, …).
    #[error("{}not a valid JSON Schema{}: {message}", at(*position), pointer_note(pointer))]
    Invalid {
        /// JSON pointer into the schema document.
        pointer: String,
        /// What is wrong.
        message: String,
        /// Where the pointer leads in the file.
        position: Option<Position>,
    },
}

fn at(position: Option<Position>) -> String {
    position
        .map(|p| format!("line {}, column {}: ", p.line, p.column))
        .unwrap_or_default()
}

fn pointer_note(pointer: &str) -> String {
    if pointer.is_empty() {
        String::new()
    } else {
        format!(" at {pointer}")
    }
}

impl Schema {
    /// Compiles the schema in `text`; `path` is how errors and reports name it.
    pub fn compile(path: impl Into<String>, text: &str) -> Result<Schema, SchemaError> {
        let (document, locations) = locate::parse_json(text).map_err(|e| SchemaError::Syntax {
            message: e.message,
            position: e.position,
        })?;
        let validator = jsonschema::options()
            .with_retriever(NoFetch)
            .build(&document)
            .map_err(|e| {
                let pointer = e.instance_path().as_str().to_string();
                let mut message = e.masked().to_string();
                if matches!(e.kind(), jsonschema::error::ValidationErrorKind::Referencing(_))
                    && !message.contains(NO_FETCH)
                {
                    message = format!("{message}; {NO_FETCH}");
                }
                SchemaError::Invalid {
                    position: locations.find(&locations_path(&document, &pointer)),
                    message,
                    pointer,
                }
            })?;
        Ok(Schema {
            path: path.into(),
            digest: sha2::Sha256::digest(text.as_bytes()).into(),
            validator,
        })
    }

    /// The path as the config wrote it.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// SHA-256 of the schema's text (part of the config's hash).
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// The first violation of `body`, if it has one (the worker's check: it stops there).
    pub fn first_violation(&self, body: &Value) -> Option<Violation> {
        if self.validator.is_valid(body) {
            return None;
        }
        self.validator.validate(body).err().map(|e| violation(&e))
    }

    /// Up to `max` violations of `body`, in the validator's order (for people).
    pub fn violations(&self, body: &Value, max: usize) -> Vec<Violation> {
        self.validator
            .iter_errors(body)
            .take(max)
            .map(|e| violation(&e))
            .collect()
    }

    /// How many violations `body` has in all.
    pub fn count_violations(&self, body: &Value) -> usize {
        self.validator.iter_errors(body).count()
    }
}

/// What to do about a reference to another document.
const NO_FETCH: &str = "veltrix does not fetch schemas, so put the definitions under `$defs` in this file and refer to them as \"#/$defs/NAME\"";

/// Refuses every reference to another document, with a message that says what to do.
struct NoFetch;

impl jsonschema::Retrieve for NoFetch {
    fn retrieve(&self, uri: &jsonschema::Uri<String>) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!("the schema refers to another document ({uri}); {NO_FETCH}").into())
    }
}

fn violation(e: &jsonschema::ValidationError<'_>) -> Violation {
    Violation {
        pointer: e.instance_path().as_str().to_string(),
        keyword: e.kind().keyword().to_string(),
        message: e.masked().to_string(),
    }
}

/// The config-style path (`properties.amount.type`, `allOf[0]`) of a JSON pointer into
/// `document`, for [`locate::Locations::find`]; it stops where the document has no such member.
fn locations_path(document: &Value, pointer: &str) -> String {
    let mut path = String::new();
    let mut node = document;
    for raw in pointer.split('/').skip(1) {
        let segment = raw.replace("~1", "/").replace("~0", "~");
        match node {
            Value::Object(map) => match map.get(&segment) {
                Some(child) => {
                    path = locate::child_key(&path, &segment);
                    node = child;
                }
                None => break,
            },
            Value::Array(items) => match segment.parse::<usize>().ok().and_then(|i| items.get(i).map(|c| (i, c))) {
                Some((i, child)) => {
                    path = locate::child_index(&path, i);
                    node = child;
                }
                None => break,
            },
            _ => break,
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ORDER: &str = r##"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["id", "amount"],
  "properties": {
    "id": {"type": "string"},
    "amount": {"type": "number", "minimum": 0},
    "items": {"type": "array", "items": {"$ref": "#/$defs/item"}}
  },
  "$defs": {"item": {"type": "object", "required": ["sku"]}}
}"##;

    #[test]
    fn a_valid_body_has_no_violation() {
        let s = Schema::compile("order.json", ORDER).unwrap();
        assert_eq!(s.first_violation(&json!({"id": "o-1", "amount": 12.5})), None);
        assert!(s.violations(&json!({"id": "o-1", "amount": 0}), 10).is_empty());
    }

    #[test]
    fn violations_name_the_pointer_and_the_keyword() {
        let s = Schema::compile("order.json", ORDER).unwrap();
        let v = s.first_violation(&json!({"id": "o-1", "amount": "12"})).unwrap();
        assert_eq!((v.pointer.as_str(), v.keyword.as_str()), ("/amount", "type"));
        assert_eq!(
            v.to_string(),
            r#"at /amount, keyword `type`: value is not of type "number""#
        );
        assert!(
            !v.message.contains("\"12\""),
            "the value is not repeated: {}",
            v.message
        );

        let v = s.first_violation(&json!({"id": "o-1"})).unwrap();
        assert_eq!((v.pointer.as_str(), v.keyword.as_str()), ("", "required"));
        assert!(
            v.to_string().starts_with("at the body itself, keyword `required`"),
            "{v}"
        );

        let body = json!({"id": "o-1", "amount": -1, "items": [{"sku": "a"}, {}]});
        let all = s.violations(&body, 10);
        let found: Vec<(&str, &str)> = all.iter().map(|v| (v.pointer.as_str(), v.keyword.as_str())).collect();
        assert_eq!(found, vec![("/amount", "minimum"), ("/items/1", "required")]);
        assert_eq!(s.count_violations(&body), 2);
        assert_eq!(s.violations(&body, 1).len(), 1);
    }

    #[test]
    fn draft_07_is_taken_from_dollar_schema() {
        // In draft-07 a `$ref` overrides the keywords beside it; in 2020-12 they apply too.
        let schema = r##""definitions": {"s": {"type": "string"}}, "$ref": "#/definitions/s", "maxLength": 2}"##;
        let d7 = Schema::compile(
            "d7.json",
            &format!(r#"{{"$schema": "http://json-schema.org/draft-07/schema#", {schema}"#),
        )
        .unwrap();
        assert_eq!(
            d7.first_violation(&json!("abc")),
            None,
            "maxLength beside $ref is ignored"
        );
        assert_eq!(d7.first_violation(&json!(1)).map(|v| v.keyword), Some("type".into()));
        let d2020 = Schema::compile("d2020.json", &format!("{{{schema}")).unwrap();
        assert_eq!(
            d2020.first_violation(&json!("abc")).map(|v| v.keyword),
            Some("maxLength".into()),
            "2020-12 when $schema names none"
        );
    }

    #[test]
    fn a_broken_schema_says_where() {
        let e = Schema::compile(
            "bad.json",
            "{\n  \"type\": \"object\",\n  \"properties\": {\n    \"amount\": {\"type\": 12}\n  }\n}",
        )
        .unwrap_err();
        let SchemaError::Invalid { pointer, position, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(pointer, "/properties/amount/type");
        assert_eq!(position.map(|p| p.line), Some(4), "{e}");
        assert!(e.to_string().starts_with("line 4, column "), "{e}");

        let e = Schema::compile("bad.json", "{\n  \"type\": \"object\",\n}").unwrap_err();
        assert!(
            matches!(
                e,
                SchemaError::Syntax {
                    position: Some(Position { line: 3, .. }),
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn references_to_other_documents_are_refused_at_load() {
        for reference in ["https://example.com/other.json", "other.json"] {
            let e = Schema::compile("r.json", &format!(r#"{{"$ref": "{reference}"}}"#)).unwrap_err();
            assert!(matches!(e, SchemaError::Invalid { .. }), "{e:?}");
            assert!(e.to_string().contains("veltrix does not fetch schemas"), "{e}");
        }
    }
}
