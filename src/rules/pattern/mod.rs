//! PLACEHOLDER until the real matcher lands: exact values only.
use serde_json::Value;

/// Compiled patterns.
pub struct PatternSet {
    patterns: Vec<Value>,
}

/// An invalid pattern.
#[derive(Debug, thiserror::Error)]
#[error("rule `{rule}`: at `{path}`: {reason}")]
pub struct PatternError {
    /// Rule name.
    pub rule: String,
    /// Path in the pattern.
    pub path: String,
    /// Why.
    pub reason: String,
}

/// Why a pattern matched or not.
#[derive(Debug, serde::Serialize)]
pub struct Explanation {
    /// Whether it matched.
    pub matched: bool,
}

impl PatternSet {
    /// Compiles.
    pub fn compile<'a, I: IntoIterator<Item = (&'a str, &'a Value)>>(patterns: I) -> Result<PatternSet, PatternError> {
        let mut out = Vec::new();
        for (name, p) in patterns {
            if !p.is_object() {
                return Err(PatternError {
                    rule: name.into(),
                    path: String::new(),
                    reason: "pattern must be an object".into(),
                });
            }
            out.push(p.clone());
        }
        Ok(Self { patterns: out })
    }
    /// Number of patterns.
    pub fn len(&self) -> usize {
        self.patterns.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
    /// Matching ids.
    pub fn matches(&self, event: &Value, out: &mut Vec<usize>) {
        for (i, p) in self.patterns.iter().enumerate() {
            if m(p, event) {
                out.push(i);
            }
        }
    }
    /// Explain.
    pub fn explain(&self, id: usize, event: &Value) -> Explanation {
        Explanation {
            matched: m(&self.patterns[id], event),
        }
    }
}

fn m(p: &Value, e: &Value) -> bool {
    match p {
        Value::Object(map) => map.iter().all(|(k, v)| e.get(k).is_some_and(|ev| m(v, ev))),
        Value::Array(vals) => vals
            .iter()
            .any(|v| v == e || e.as_array().is_some_and(|a| a.contains(v))),
        _ => false,
    }
}
