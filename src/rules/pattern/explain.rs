//! Human explanations of a match decision (the slow path behind `veltrix test --explain`).

use serde::Serialize;
use serde_json::Value;

use crate::rules::pattern::flatten::Flat;
use crate::rules::pattern::verify::{verify, FieldRt, Sub};

/// Why a pattern did or did not match an event.
///
/// Serialises as `{"matched": bool, "branch"?: "...", "fields": [...], "note"?: "..."}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// Whether the pattern matched.
    pub matched: bool,
    /// For a match of a pattern with `$or`: the branch that matched, e.g. `$or[1]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// For a match: every field of the matching alternative. For a non-match: the fields that
    /// failed (in each `$or` alternative, tagged with its `branch`).
    pub fields: Vec<FieldExplanation>,
    /// Extra context, e.g. that fields matched only in different elements of one array.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One field condition and how it fared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldExplanation {
    /// Dotted field path, e.g. `body.amount`.
    pub path: String,
    /// The field's operators, e.g. `numeric [">", 1000]` (alternatives joined by ` or `).
    pub operator: String,
    /// Whether the condition held.
    pub matched: bool,
    /// What the event holds at `path`.
    pub kind: FoundKind,
    /// The leaf that decided: the value itself for a single leaf (`null` included); for an
    /// array, the element that matched (or, for `exists: false`, the one that was present).
    /// Absent when the field is missing, an object, or an array where no element decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// For `kind: "array"`: the leaf elements that were tried, in document order (nested arrays
    /// flattened, objects left out), at most [`MAX_TRIED`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tried: Option<Vec<Value>>,
    /// The `$or` alternative this field belongs to, for non-matches of patterns with `$or`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
}

/// Most array elements an explanation lists in [`FieldExplanation::tried`].
pub const MAX_TRIED: usize = 16;

/// What an event holds at a pattern's field path: the distinctions EventBridge patterns make
/// (`exists`, `[null]`, leaf values, objects that are never leaves, arrays tried element-wise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FoundKind {
    /// No such field.
    Missing,
    /// JSON `null`.
    Null,
    /// `true` or `false`.
    Boolean,
    /// A number.
    Number,
    /// A string.
    String,
    /// An object (never a leaf: only `exists: false` can hold on it).
    Object,
    /// An array, or several values because an array lies on the path.
    Array,
}

impl FoundKind {
    /// The kind of one JSON value.
    pub fn of(v: &Value) -> FoundKind {
        match v {
            Value::Null => FoundKind::Null,
            Value::Bool(_) => FoundKind::Boolean,
            Value::Number(_) => FoundKind::Number,
            Value::String(_) => FoundKind::String,
            Value::Object(_) => FoundKind::Object,
            Value::Array(_) => FoundKind::Array,
        }
    }

    /// The lowercase name used in JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            FoundKind::Missing => "missing",
            FoundKind::Null => "null",
            FoundKind::Boolean => "boolean",
            FoundKind::Number => "number",
            FoundKind::String => "string",
            FoundKind::Object => "object",
            FoundKind::Array => "array",
        }
    }
}

impl FieldExplanation {
    /// What was found, for people: `string "order.created"`, `missing`, `an object`,
    /// `array [1, 2] (matched 2)`.
    pub fn found(&self) -> String {
        let leaf = |v: &Value| {
            let text = v.to_string();
            crate::pipeline::dead_letters::truncate(&text, 80)
        };
        match (self.kind, &self.value) {
            (FoundKind::Missing, _) => "missing".into(),
            (FoundKind::Object, _) => "an object".into(),
            (FoundKind::Null, _) => "null".into(),
            (FoundKind::Array, value) => {
                let tried: Vec<String> = self.tried.iter().flatten().map(leaf).collect();
                let mut s = format!("array [{}]", tried.join(", "));
                if let Some(v) = value {
                    let verb = if self.matched { "matched" } else { "present" };
                    s.push_str(&format!(" ({verb} {})", leaf(v)));
                }
                s
            }
            (kind, Some(v)) => format!("{} {}", kind.as_str(), leaf(v)),
            (kind, None) => kind.as_str().into(),
        }
    }
}

impl std::fmt::Display for FieldExplanation {
    /// `body.amount: wanted numeric [">", 1000], found number 5`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: wanted {}, found {}", self.path, self.operator, self.found())
    }
}

/// Evaluate one field on its own: (held?, deciding leaf).
fn field_alone(f: &FieldRt, flat: &Flat, vals: &[&Value]) -> (bool, Option<Value>) {
    // Leaves are linked newest-first; report in document order.
    let mut leaves: Vec<usize> = flat.at(f.node).collect();
    leaves.reverse();
    for i in leaves {
        let v = vals[i];
        if f.absent || f.test(v) {
            return (!f.absent, Some(v.clone()));
        }
    }
    (f.absent, None)
}

/// Every value `event` holds at `f`'s path, in document order, arrays on the way expanded
/// (dotted keys count as nesting, as in matching), and whether an array was expanded. Iterative:
/// hostile events nest deeper than any call stack.
fn values_at<'v>(f: &FieldRt, event: &'v Value) -> (Vec<&'v Value>, bool) {
    let mut out = Vec::new();
    let mut through_array = false;
    let mut stack = vec![(event, 0usize)];
    while let Some((v, d)) = stack.pop() {
        if d == f.segs.len() {
            out.push(v);
            continue;
        }
        match v {
            Value::Array(items) => {
                through_array = true;
                stack.extend(items.iter().rev().map(|e| (e, d)));
            }
            Value::Object(map) => {
                let children: Vec<(&Value, usize)> = f
                    .child_keys(d)
                    .filter_map(|(key, next)| map.get(key).map(|c| (c, next)))
                    .collect();
                stack.extend(children.into_iter().rev());
            }
            _ => {}
        }
    }
    (out, through_array)
}

/// Leaves of `values` in document order (nested arrays flattened, objects skipped), at most
/// `limit`. Iterative, like [`values_at`].
fn leaves_of<'v>(values: &[&'v Value], limit: usize) -> Vec<&'v Value> {
    let mut out = Vec::new();
    let mut stack: Vec<&Value> = values.iter().rev().copied().collect();
    while let Some(v) = stack.pop() {
        if out.len() == limit {
            break;
        }
        match v {
            Value::Array(items) => stack.extend(items.iter().rev()),
            Value::Object(_) => {}
            leaf => out.push(leaf),
        }
    }
    out
}

/// One field's explanation: whether it held alone, and what the event holds at its path.
fn explain_field(f: &FieldRt, flat: &Flat, vals: &[&Value], event: &Value, matched: Option<bool>) -> FieldExplanation {
    let (held, deciding) = field_alone(f, flat, vals);
    let (found, through_array) = values_at(f, event);
    let kind = match found.as_slice() {
        [] => FoundKind::Missing,
        [one] if !through_array => FoundKind::of(one),
        _ => FoundKind::Array,
    };
    let (value, tried) = match kind {
        FoundKind::Missing | FoundKind::Object => (None, None),
        FoundKind::Array => {
            let tried = leaves_of(&found, MAX_TRIED).into_iter().cloned().collect();
            (deciding, Some(tried))
        }
        _ => (found.first().map(|v| (*v).clone()), None),
    };
    FieldExplanation {
        path: f.path.to_string(),
        operator: describe(f),
        matched: matched.unwrap_or(held),
        kind,
        value,
        tried,
        branch: None,
    }
}

fn describe(f: &FieldRt) -> String {
    f.descs.join(" or ")
}

/// How many fields of the best alternative fail on their own (at least 1 for a pattern that
/// does not match: fields that hold only in different array elements count as one failure).
pub(crate) fn failing_fields(subs: &[Sub], flat: &Flat, vals: &[&Value], event: &Value) -> usize {
    subs.iter()
        .map(|s| {
            if verify(s, flat, vals, &|| event) {
                return 0;
            }
            let alone = s.fields.iter().filter(|f| !field_alone(f, flat, vals).0).count();
            alone.max(1)
        })
        .min()
        .unwrap_or(usize::MAX)
}

/// Explain the subpatterns of one pattern against a flattened event.
pub(crate) fn explain(subs: &[Sub], flat: &Flat, vals: &[&Value], event: &Value) -> Explanation {
    let multi = subs.len() > 1;
    let branch_of = |s: &Sub| -> Option<String> {
        if !multi {
            return None;
        }
        Some(if s.branch.is_empty() {
            "alternative".to_string()
        } else {
            s.branch.to_string()
        })
    };
    for s in subs {
        if verify(s, flat, vals, &|| event) {
            let fields = s
                .fields
                .iter()
                .map(|f| explain_field(f, flat, vals, event, Some(true)))
                .collect();
            return Explanation {
                matched: true,
                branch: branch_of(s),
                fields,
                note: None,
            };
        }
    }
    let mut fields = Vec::new();
    let mut note = None;
    for s in subs {
        let before = fields.len();
        for f in s.fields.iter() {
            let e = explain_field(f, flat, vals, event, None);
            if !e.matched {
                fields.push(FieldExplanation {
                    branch: branch_of(s),
                    ..e
                });
            }
        }
        if fields.len() == before {
            // Every field holds on its own, but not together: array consistency (or an
            // `exists: false` field that is present next to the chosen leaves).
            for f in s.fields.iter() {
                fields.push(FieldExplanation {
                    branch: branch_of(s),
                    ..explain_field(f, flat, vals, event, None)
                });
            }
            note = Some(
                "each field holds somewhere in the event, but not within the same array element: \
                 fields under one array must match in one and the same element"
                    .to_string(),
            );
        }
    }
    Explanation {
        matched: false,
        branch: None,
        fields,
        note,
    }
}

#[cfg(test)]
mod tests {
    use super::FoundKind;
    use crate::rules::pattern::PatternSet;
    use serde_json::{json, Value};

    fn one(p: Value) -> PatternSet {
        PatternSet::compile([("r", &p)]).unwrap()
    }

    #[test]
    fn explains_a_failing_numeric_field() {
        let s = one(json!({"body": {"type": ["order.created"], "amount": [{"numeric": [">", 1000]}]}}));
        let e = s.explain(0, &json!({"body": {"type": "order.created", "amount": 5}}));
        assert!(!e.matched);
        assert_eq!(e.fields.len(), 1);
        assert_eq!(e.fields[0].path, "body.amount");
        assert_eq!(e.fields[0].operator, "numeric [\">\", 1000]");
        assert_eq!(e.fields[0].value, Some(json!(5)));
        assert_eq!(e.fields[0].kind, FoundKind::Number);
        let j = serde_json::to_value(&e).unwrap();
        assert_eq!(j["fields"][0]["matched"], json!(false));
        assert!(j.get("branch").is_none());
    }

    #[test]
    fn explains_a_match_with_values() {
        let s = one(json!({"body": {"type": ["a", {"prefix": "x"}], "gone": [{"exists": false}]}}));
        let e = s.explain(0, &json!({"body": {"type": "xyz"}}));
        assert!(e.matched);
        assert_eq!(e.fields.len(), 2);
        assert_eq!(e.fields[1].operator, "equals \"a\" or prefix \"x\"");
        assert_eq!(e.fields[1].value, Some(json!("xyz")));
        assert_eq!(e.fields[0].operator, "exists false");
    }

    #[test]
    fn explains_or_branches() {
        let s = one(json!({"$or": [{"a": [1]}, {"b": [2]}]}));
        let e = s.explain(0, &json!({"b": 2}));
        assert!(e.matched);
        assert_eq!(e.branch.as_deref(), Some("$or[1]"));
        let e = s.explain(0, &json!({"a": 3}));
        assert!(!e.matched);
        assert_eq!(e.fields.len(), 2);
        assert_eq!(e.fields[0].branch.as_deref(), Some("$or[0]"));
        assert_eq!(e.fields[0].value, Some(json!(3)));
        assert_eq!(e.fields[1].branch.as_deref(), Some("$or[1]"));
        assert_eq!(e.fields[1].kind, FoundKind::Missing);
        assert_eq!(e.fields[1].value, None);
    }

    #[test]
    fn explains_array_consistency() {
        let s = one(json!({"a": {"b": [1], "c": [2]}}));
        let e = s.explain(0, &json!({"a": [{"b": 1, "c": 3}, {"b": 5, "c": 2}]}));
        assert!(!e.matched);
        assert!(e.note.as_deref().unwrap().contains("same array element"));
        assert!(e.fields.iter().all(|f| f.matched));
    }

    #[test]
    fn explains_present_field_for_exists_false() {
        let s = one(json!({"a": [{"exists": false}]}));
        let e = s.explain(0, &json!({"a": "here"}));
        assert!(!e.matched);
        assert_eq!(e.fields[0].value, Some(json!("here")));
    }

    /// The distinctions patterns make are the distinctions explanations report.
    #[test]
    fn says_what_was_found_missing_null_object_array_or_leaf() {
        let s = one(json!({"body": {"customer": ["c-1"]}}));
        let found = |event: Value| {
            let e = s.explain(0, &json!({ "body": event }));
            let f = e.fields[0].clone();
            (f.kind, f.value, f.tried, e.fields[0].to_string())
        };
        assert_eq!(found(json!({})).0, FoundKind::Missing);
        assert_eq!(found(json!({})).1, None);
        assert_eq!(found(json!({"customer": null})).0, FoundKind::Null);
        assert_eq!(found(json!({"customer": null})).1, Some(Value::Null));
        let (kind, value, _, text) = found(json!({"customer": {"id": "c-1"}}));
        assert_eq!((kind, value), (FoundKind::Object, None));
        assert_eq!(text, "body.customer: wanted equals \"c-1\", found an object");
        assert_eq!(found(json!({"customer": true})).0, FoundKind::Boolean);
        assert_eq!(found(json!({"customer": 7})).0, FoundKind::Number);
        let (kind, value, tried, text) = found(json!({"customer": "c-2"}));
        assert_eq!((kind, value, tried), (FoundKind::String, Some(json!("c-2")), None));
        assert_eq!(text, "body.customer: wanted equals \"c-1\", found string \"c-2\"");
        let (kind, value, tried, _) = found(json!({"customer": ["c-3", {"x": 1}, ["c-4"], null]}));
        assert_eq!(kind, FoundKind::Array);
        assert_eq!(value, None, "no element decided");
        assert_eq!(tried, Some(vec![json!("c-3"), json!("c-4"), Value::Null]));
        let (_, value, _, text) = found(json!({"customer": ["c-3", "c-1"]}));
        assert_eq!(value, Some(json!("c-1")));
        assert!(
            text.ends_with("found array [\"c-3\", \"c-1\"] (matched \"c-1\")"),
            "{text}"
        );
    }

    #[test]
    fn an_array_on_the_path_makes_the_field_an_array() {
        let s = one(json!({"items": {"sku": ["b"]}}));
        let e = s.explain(0, &json!({"items": [{"sku": "a"}, {"sku": "b"}, {"other": 1}]}));
        assert!(e.matched);
        assert_eq!(e.fields[0].kind, FoundKind::Array);
        assert_eq!(e.fields[0].tried, Some(vec![json!("a"), json!("b")]));
        assert_eq!(e.fields[0].value, Some(json!("b")));
        // One element alone is still an array on the path.
        let e = s.explain(0, &json!({"items": [{"sku": "a"}]}));
        assert_eq!(e.fields[0].kind, FoundKind::Array);
        // Dotted keys are nesting, as in matching.
        let e = s.explain(0, &json!({"items.sku": "b"}));
        assert_eq!((e.matched, e.fields[0].kind), (true, FoundKind::String));
    }

    #[test]
    fn an_object_satisfies_exists_false_and_says_so() {
        let s = one(json!({"a": [{"exists": false}]}));
        let e = s.explain(0, &json!({"a": {"b": 1}}));
        assert!(e.matched);
        assert_eq!(e.fields[0].kind, FoundKind::Object);
        let j = serde_json::to_value(&e).unwrap();
        assert_eq!(j["fields"][0]["kind"], "object");
        assert!(j["fields"][0].get("value").is_none(), "no value for an object: {j}");
    }
}
