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
    /// The event value that decided (the matching leaf, the offending leaf for `exists: false`,
    /// or the first leaf seen); `null` if the field is missing.
    pub value: Value,
    /// The `$or` alternative this field belongs to, for non-matches of patterns with `$or`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
}

/// Evaluate one field on its own: (held?, deciding value).
fn field_alone(f: &FieldRt, flat: &Flat, vals: &[&Value]) -> (bool, Value) {
    let mut first: Option<&Value> = None;
    // Leaves are linked newest-first; report in document order.
    let mut leaves: Vec<usize> = flat.at(f.node).collect();
    leaves.reverse();
    for i in leaves {
        let v = vals[i];
        if f.absent {
            return (false, v.clone());
        }
        first.get_or_insert(v);
        if f.test(v) {
            return (true, v.clone());
        }
    }
    (f.absent, first.cloned().unwrap_or(Value::Null))
}

fn describe(f: &FieldRt) -> String {
    f.descs.join(" or ")
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
        let ok = verify(s, flat, vals, event);
        if ok {
            let fields = s
                .fields
                .iter()
                .map(|f| {
                    let (_, value) = field_alone(f, flat, vals);
                    FieldExplanation {
                        path: f.path.to_string(),
                        operator: describe(f),
                        matched: true,
                        value: if f.absent { Value::Null } else { value },
                        branch: None,
                    }
                })
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
            let (held, value) = field_alone(f, flat, vals);
            if !held {
                fields.push(FieldExplanation {
                    path: f.path.to_string(),
                    operator: describe(f),
                    matched: false,
                    value,
                    branch: branch_of(s),
                });
            }
        }
        if fields.len() == before {
            // Every field holds on its own, but not together: array consistency (or an
            // `exists: false` field that is present next to the chosen leaves).
            for f in s.fields.iter() {
                let (held, value) = field_alone(f, flat, vals);
                fields.push(FieldExplanation {
                    path: f.path.to_string(),
                    operator: describe(f),
                    matched: held,
                    value: if f.absent { Value::Null } else { value },
                    branch: branch_of(s),
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
        assert_eq!(e.fields[0].value, json!(5));
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
        assert_eq!(e.fields[1].value, json!("xyz"));
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
        assert_eq!(e.fields[0].value, json!(3));
        assert_eq!(e.fields[1].branch.as_deref(), Some("$or[1]"));
        assert_eq!(e.fields[1].value, json!(null));
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
        assert_eq!(e.fields[0].value, json!("here"));
    }
}
