//! Where each field of a config file is written: a map from field path
//! (`rules[1].actions[0].target`) to line and column.
//!
//! Parsing produces a plain `serde_json::Value` (for interpolation and typed deserialization)
//! together with these positions, so every later error can point at the file.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use toml::de::{DeTable, DeValue};

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub column: usize,
}

/// Positions of every field and array element in a config file.
#[derive(Debug, Default)]
pub struct Locations {
    by_path: HashMap<String, Position>,
}

impl Locations {
    /// The position of `path`, or of its nearest recorded ancestor.
    pub fn find(&self, path: &str) -> Option<Position> {
        let mut p = path;
        loop {
            if let Some(pos) = self.by_path.get(p) {
                return Some(*pos);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }

    /// The position of exactly `path`.
    pub fn get(&self, path: &str) -> Option<Position> {
        self.by_path.get(path).copied()
    }

    fn record(&mut self, path: String, pos: Position) {
        self.by_path.entry(path).or_insert(pos);
    }
}

/// Converts a byte offset into a position.
pub fn position_of(text: &str, offset: usize) -> Position {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Position {
        line,
        column: before[line_start..].chars().count() + 1,
    }
}

/// Joins a parent path and an object key the way error paths are written.
pub fn child_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// Joins a parent path and an array index.
pub fn child_index(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// A syntax error with its position.
#[derive(Debug)]
pub struct SyntaxError {
    /// What the parser said.
    pub message: String,
    /// Where.
    pub position: Option<Position>,
}

/// Parses TOML into a JSON value and the position of every field.
pub fn parse_toml(text: &str) -> Result<(Value, Locations), SyntaxError> {
    let table = DeTable::parse(text).map_err(|e| SyntaxError {
        message: e.message().trim().to_string(),
        position: e.span().map(|s| position_of(text, s.start)),
    })?;
    let mut locations = Locations::default();
    let value = toml_table(text, table.get_ref(), "", &mut locations)?;
    Ok((value, locations))
}

fn toml_table(text: &str, table: &DeTable<'_>, path: &str, locations: &mut Locations) -> Result<Value, SyntaxError> {
    let mut out = Map::new();
    for (key, value) in table.iter() {
        let key_path = child_key(path, key.get_ref());
        locations.record(key_path.clone(), position_of(text, key.span().start));
        out.insert(
            key.get_ref().to_string(),
            toml_value(text, value.get_ref(), &key_path, locations)?,
        );
    }
    Ok(Value::Object(out))
}

fn toml_value(text: &str, value: &DeValue<'_>, path: &str, locations: &mut Locations) -> Result<Value, SyntaxError> {
    Ok(match value {
        DeValue::String(s) => Value::String(s.to_string()),
        DeValue::Integer(i) => {
            let digits = i.as_str().replace('_', "");
            let n = i64::from_str_radix(&digits, i.radix()).map_err(|e| SyntaxError {
                message: format!("integer at `{path}` is out of range: {e}"),
                position: locations.find(path),
            })?;
            Value::Number(n.into())
        }
        DeValue::Float(f) => {
            let n: f64 = f.as_str().replace('_', "").parse().unwrap_or(f64::NAN);
            Value::Number(Number::from_f64(n).ok_or_else(|| SyntaxError {
                message: format!("`{path}`: {} is not a finite number", f.as_str()),
                position: locations.find(path),
            })?)
        }
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Datetime(d) => Value::String(d.to_string()),
        DeValue::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let item_path = child_index(path, i);
                locations.record(item_path.clone(), position_of(text, item.span().start));
                out.push(toml_value(text, item.get_ref(), &item_path, locations)?);
            }
            Value::Array(out)
        }
        DeValue::Table(t) => toml_table(text, t, path, locations)?,
    })
}

/// Parses JSON into a value and the position of every field.
pub fn parse_json(text: &str) -> Result<(Value, Locations), SyntaxError> {
    let value: Value = serde_json::from_str(text).map_err(|e| SyntaxError {
        message: e.to_string(),
        position: Some(Position {
            line: e.line(),
            column: e.column(),
        }),
    })?;
    let mut locations = Locations::default();
    let mut scanner = JsonScanner {
        text,
        bytes: text.as_bytes(),
        at: 0,
        locations: &mut locations,
    };
    scanner.value("");
    Ok((value, locations))
}

/// Walks JSON text that serde_json already accepted and records where each member starts.
struct JsonScanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
    locations: &'a mut Locations,
}

impl JsonScanner<'_> {
    fn skip_ws(&mut self) {
        while self.at < self.bytes.len() && self.bytes[self.at].is_ascii_whitespace() {
            self.at += 1;
        }
    }

    fn string(&mut self) -> String {
        let start = self.at;
        self.at += 1;
        while self.at < self.bytes.len() {
            match self.bytes[self.at] {
                b'\\' => self.at += 2,
                b'"' => {
                    self.at += 1;
                    break;
                }
                _ => self.at += 1,
            }
        }
        serde_json::from_str(&self.text[start..self.at.min(self.text.len())]).unwrap_or_default()
    }

    fn value(&mut self, path: &str) {
        self.skip_ws();
        match self.bytes.get(self.at) {
            Some(b'{') => {
                self.at += 1;
                loop {
                    self.skip_ws();
                    match self.bytes.get(self.at) {
                        Some(b'}') | None => {
                            self.at += 1;
                            return;
                        }
                        Some(b',') => self.at += 1,
                        Some(b'"') => {
                            let pos = position_of(self.text, self.at);
                            let key = self.string();
                            let key_path = child_key(path, &key);
                            self.locations.record(key_path.clone(), pos);
                            self.skip_ws();
                            self.at += 1; // ':'
                            self.value(&key_path);
                        }
                        Some(_) => self.at += 1,
                    }
                }
            }
            Some(b'[') => {
                self.at += 1;
                let mut index = 0;
                loop {
                    self.skip_ws();
                    match self.bytes.get(self.at) {
                        Some(b']') | None => {
                            self.at += 1;
                            return;
                        }
                        Some(b',') => self.at += 1,
                        Some(_) => {
                            let item_path = child_index(path, index);
                            self.locations
                                .record(item_path.clone(), position_of(self.text, self.at));
                            self.value(&item_path);
                            index += 1;
                        }
                    }
                }
            }
            Some(b'"') => {
                self.string();
            }
            Some(_) => {
                while self.at < self.bytes.len() && !matches!(self.bytes[self.at], b',' | b'}' | b']') {
                    self.at += 1;
                }
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_positions_point_at_keys_and_array_items() {
        let text = "[source]\ntype = \"file\"\n\n[[rules]]\nname = \"a\"\nactions = [{ type = \"drop\" }]\n";
        let (value, loc) = parse_toml(text).unwrap();
        assert_eq!(value["rules"][0]["name"], "a");
        assert_eq!(loc.find("source.type"), Some(Position { line: 2, column: 1 }));
        assert_eq!(loc.find("rules[0].name").unwrap().line, 5);
        assert_eq!(loc.find("rules[0].actions[0].type").unwrap().line, 6);
        assert_eq!(
            loc.find("rules[0].actions[0].nope").unwrap().line,
            6,
            "falls back to the parent"
        );
    }

    #[test]
    fn json_positions_point_at_keys_and_array_items() {
        let text = "{\n  \"source\": {\"type\": \"file\"},\n  \"rules\": [\n    {\"name\": \"a\\\"b\", \"x\": [1, {\"y\": 2}]}\n  ]\n}";
        let (value, loc) = parse_json(text).unwrap();
        assert_eq!(value["rules"][0]["name"], "a\"b");
        assert_eq!(loc.find("source.type"), Some(Position { line: 2, column: 14 }));
        assert_eq!(loc.find("rules[0].x[1].y").unwrap().line, 4);
        assert_eq!(loc.find("rules[0]"), Some(Position { line: 4, column: 5 }));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = parse_toml("[source\ntype = 1").unwrap_err();
        assert_eq!(e.position.unwrap().line, 1);
        let e = parse_json("{\n\"a\": }").unwrap_err();
        assert_eq!(e.position.unwrap().line, 2);
    }
}
