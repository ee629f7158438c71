//! Pattern JSON → validated, flattened form.
//!
//! A pattern is an object whose keys nest into dotted paths (`{"a": {"b": [1]}}` and
//! `{"a.b": [1]}` both address `a.b`, as in event-ruler) and whose leaves are value lists.
//! `$or` (an array of at least two objects, at any level) forks the pattern: the result is a
//! disjunction of conjunctions ("subpatterns"), like event-ruler's `JsonRuleCompiler`. A field that
//! lists both `{"exists": false}` and positive values is forked the same way into an "absent"
//! variant and a "present" variant, which is exactly how event-ruler's machine explores it.
//!
//! Fields of a subpattern are sorted by path in Java `String` order (UTF-16 units), because
//! event-ruler checks `exists: false` only against the fields that sort before it.

use serde_json::{Map, Value};

use crate::rules::pattern::operators::Matcher;
use crate::rules::pattern::parse_ops::{parse_field, FieldSpec};

/// Objects may nest at most this deep (counting `$or` branches).
pub const MAX_DEPTH: usize = 64;
/// A subpattern may have at most this many fields.
pub const MAX_FIELDS: usize = 64;
/// A pattern may expand (through `$or` and mixed `exists: false` fields) to at most this many
/// subpatterns.
pub const MAX_SUBPATTERNS: usize = 1024;
/// A field path may have at most this many dot-separated parts.
pub const MAX_PATH_PARTS: usize = 256;

/// Field names that event-ruler reserves inside `$or` branches.
const RESERVED_IN_OR: &[&str] = &[
    "exactly",
    "equals-ignore-case",
    "prefix",
    "suffix",
    "anything-but",
    "exists",
    "wildcard",
    "numeric",
    "cidr",
    "=",
    "<",
    "<=",
    ">",
    ">=",
    "regex",
    "not-wildcard",
    "not-equals-ignore-case",
    "date-after",
    "date-on-or-after",
    "date-before",
    "date-on-or-before",
    "in-date-range",
    "ip-address-in-range",
    "ip-address-not-in-range",
];

/// A pattern that failed validation: which rule, where in the pattern, and why.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[error("rule `{rule}`: at `{}`: {reason}", shown_path(.path))]
pub struct PatternError {
    /// Name of the rule whose pattern is invalid.
    pub rule: String,
    /// Dotted location in the pattern (with `$or[i]` steps), empty for the pattern itself.
    pub path: String,
    /// What is wrong and how to fix it.
    pub reason: String,
}

fn shown_path(p: &str) -> &str {
    if p.is_empty() {
        "(pattern root)"
    } else {
        p
    }
}

/// One condition of a subpattern.
#[derive(Debug, Clone)]
pub(crate) struct FieldDef {
    /// Dotted path.
    pub path: String,
    /// Positive matchers (any-of); empty when `absent`.
    pub matchers: Vec<Matcher>,
    /// Description per matcher, e.g. `prefix "abc"`.
    pub descs: Vec<String>,
    /// `exists: false`: no leaf at `path` consistent with the fields sorted before it.
    pub absent: bool,
}

/// A conjunction of field conditions, one alternative of a pattern.
#[derive(Debug, Clone)]
pub(crate) struct SubPatternDef {
    /// Fields sorted by path (UTF-16 order).
    pub fields: Vec<FieldDef>,
    /// Which `$or` branches led here, e.g. `$or[1]`, `detail.$or[0]`; empty without `$or`.
    pub branch: String,
}

/// A working conjunction while the pattern is walked.
#[derive(Clone, Default)]
struct Conj<'p> {
    fields: Vec<(String, &'p FieldSpecRef)>,
    branch: Vec<String>,
}

/// Field specs are parsed once and shared by every conjunction that uses them.
type FieldSpecRef = (FieldSpec, String);

struct Walker<'p> {
    rule: &'p str,
    specs: Vec<FieldSpecRef>,
}

/// Validate `pattern` and expand it into subpatterns.
pub(crate) fn compile_pattern(rule: &str, pattern: &Value) -> Result<Vec<SubPatternDef>, PatternError> {
    let err = |path: &str, reason: String| PatternError {
        rule: rule.to_string(),
        path: path.to_string(),
        reason,
    };
    let Value::Object(root) = pattern else {
        return Err(err(
            "",
            "the pattern must be a JSON object, e.g. {\"type\": [\"order.created\"]}".into(),
        ));
    };
    // First pass: validate everything and parse every field spec (so errors come in a stable order
    // and conjunctions can borrow the parsed specs).
    let mut w = Walker {
        rule,
        specs: Vec::new(),
    };
    w.collect(root, "", "", 1, false)?;
    let specs = std::mem::take(&mut w.specs);
    let mut next = 0usize;
    let conjs = expand(&w, root, "", "", &specs, &mut next)?;
    let mut out = Vec::new();
    for c in conjs {
        split_mixed_fields(rule, c, &mut out)?;
    }
    Ok(out)
}

impl<'p> Walker<'p> {
    fn err(&self, path: &str, reason: impl Into<String>) -> PatternError {
        PatternError {
            rule: self.rule.to_string(),
            path: path.to_string(),
            reason: reason.into(),
        }
    }

    /// Validation pass: walks the object in key order, parses each field spec into `self.specs`.
    fn collect(
        &mut self,
        obj: &Map<String, Value>,
        path: &str,
        loc: &str,
        depth: usize,
        in_or: bool,
    ) -> Result<(), PatternError> {
        if depth > MAX_DEPTH {
            return Err(self.err(loc, format!("the pattern nests deeper than {MAX_DEPTH} levels")));
        }
        if obj.is_empty() {
            return Err(self.err(
                loc,
                "must not be an empty object; give at least one field, e.g. {\"type\": [\"order.created\"]}",
            ));
        }
        for (key, val) in obj {
            let kloc = join(loc, key);
            if key == "$or" {
                let Value::Array(branches) = val else {
                    return Err(self.err(
                        &kloc,
                        "`$or` must be an array of at least two objects, e.g. \"$or\": [{\"a\": [1]}, {\"b\": [2]}]",
                    ));
                };
                if branches.len() < 2 {
                    return Err(self.err(
                        &kloc,
                        "`$or` needs at least two branches, e.g. \"$or\": [{\"a\": [1]}, {\"b\": [2]}]",
                    ));
                }
                for (i, b) in branches.iter().enumerate() {
                    let bloc = format!("{kloc}[{i}]");
                    let Value::Object(bo) = b else {
                        return Err(self.err(&bloc, "each `$or` branch must be an object such as {\"a\": [1]}"));
                    };
                    self.collect(bo, path, &bloc, depth + 1, true)?;
                }
                continue;
            }
            if in_or && RESERVED_IN_OR.contains(&key.as_str()) {
                return Err(self.err(&kloc, format!(
                    "`{key}` is an operator name and cannot be a field name inside `$or`; put operators inside a value list, e.g. \"f\": [{{\"{key}\": ...}}]"
                )));
            }
            let fpath = join(path, key);
            if fpath.split('.').count() > MAX_PATH_PARTS {
                return Err(self.err(
                    &kloc,
                    format!("the field path has more than {MAX_PATH_PARTS} dot-separated parts"),
                ));
            }
            match val {
                Value::Object(o) => self.collect(o, &fpath, &kloc, depth + 1, in_or)?,
                Value::Array(list) => {
                    let spec = parse_field(list).map_err(|r| self.err(&kloc, r))?;
                    self.specs.push((spec, kloc));
                }
                _ => {
                    return Err(self.err(&kloc, format!(
                        "must be an array of values or operators, e.g. [\"order.created\"] or [{{\"prefix\": \"order.\"}}], or an object of fields; got {}",
                        crate::rules::pattern::parse_ops::json_text(val)
                    )))
                }
            }
        }
        Ok(())
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Expansion pass, in the same key order as `collect`, consuming specs in order.
fn expand<'s>(
    w: &Walker<'_>,
    obj: &Map<String, Value>,
    path: &str,
    loc: &str,
    specs: &'s [FieldSpecRef],
    next: &mut usize,
) -> Result<Vec<Conj<'s>>, PatternError> {
    let mut conjs = vec![Conj::default()];
    for (key, val) in obj {
        let kloc = join(loc, key);
        let alternatives: Vec<Conj<'s>> = if key == "$or" {
            let branches = val.as_array().expect("validated");
            let mut alts = Vec::new();
            for (i, b) in branches.iter().enumerate() {
                let bloc = format!("{kloc}[{i}]");
                for mut c in expand(w, b.as_object().expect("validated"), path, &bloc, specs, next)? {
                    c.branch.insert(0, bloc.clone());
                    alts.push(c);
                }
            }
            alts
        } else {
            let fpath = join(path, key);
            match val {
                Value::Object(o) => expand(w, o, &fpath, &kloc, specs, next)?,
                _ => {
                    let spec: &'s FieldSpecRef = &specs[*next];
                    *next += 1;
                    vec![Conj {
                        fields: vec![(fpath, spec)],
                        branch: Vec::new(),
                    }]
                }
            }
        };
        conjs = product(w, &kloc, conjs, alternatives)?;
    }
    Ok(conjs)
}

fn product<'s>(
    w: &Walker<'_>,
    loc: &str,
    left: Vec<Conj<'s>>,
    right: Vec<Conj<'s>>,
) -> Result<Vec<Conj<'s>>, PatternError> {
    if left.len().saturating_mul(right.len()) > MAX_SUBPATTERNS {
        return Err(w.err(loc, format!(
            "`$or` combinations multiply out to more than {MAX_SUBPATTERNS} alternatives; simplify the pattern or split it into several rules"
        )));
    }
    let mut out = Vec::with_capacity(left.len() * right.len());
    for l in &left {
        for r in &right {
            let mut c = l.clone();
            for (p, spec) in &r.fields {
                if c.fields.iter().any(|(q, _)| q == p) {
                    return Err(w.err(&spec.1, format!(
                        "field `{p}` is given more than once (as a dotted key and a nested object, or both inside and beside `$or`); give it once, or repeat it inside every `$or` branch"
                    )));
                }
                c.fields.push((p.clone(), *spec));
            }
            c.branch.extend(r.branch.iter().cloned());
            out.push(c);
        }
    }
    Ok(out)
}

/// Turn a conjunction into subpatterns, forking fields that mix `exists: false` with positive values.
fn split_mixed_fields(rule: &str, c: Conj<'_>, out: &mut Vec<SubPatternDef>) -> Result<(), PatternError> {
    let err = |path: &str, reason: String| PatternError {
        rule: rule.to_string(),
        path: path.to_string(),
        reason,
    };
    if c.fields.len() > MAX_FIELDS {
        return Err(err(
            "",
            format!(
                "a pattern alternative may use at most {MAX_FIELDS} fields; this one uses {}",
                c.fields.len()
            ),
        ));
    }
    let mut variants: Vec<Vec<FieldDef>> = vec![Vec::new()];
    for (path, spec) in &c.fields {
        let (fs, loc) = (&spec.0, &spec.1);
        let mut choices = Vec::new();
        if !fs.positives.is_empty() {
            choices.push(FieldDef {
                path: path.clone(),
                matchers: fs.positives.iter().map(|(m, _)| m.clone()).collect(),
                descs: fs.positives.iter().map(|(_, d)| d.clone()).collect(),
                absent: false,
            });
        }
        if fs.absent {
            choices.push(FieldDef {
                path: path.clone(),
                matchers: Vec::new(),
                descs: vec!["exists false".into()],
                absent: true,
            });
        }
        if variants.len() * choices.len() + out.len() > MAX_SUBPATTERNS {
            return Err(err(loc, format!(
                "the pattern expands to more than {MAX_SUBPATTERNS} alternatives (each field mixing `exists: false` with values doubles them); simplify it"
            )));
        }
        let mut next = Vec::with_capacity(variants.len() * choices.len());
        for v in &variants {
            for ch in &choices {
                let mut nv = v.clone();
                nv.push(ch.clone());
                next.push(nv);
            }
        }
        variants = next;
    }
    let branch = c.branch.join(", ");
    for mut fields in variants {
        fields.sort_by(|a, b| a.path.encode_utf16().cmp(b.path.encode_utf16()));
        out.push(SubPatternDef {
            fields,
            branch: branch.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn subs(p: Value) -> Vec<SubPatternDef> {
        compile_pattern("r", &p).unwrap()
    }

    fn err(p: Value) -> PatternError {
        compile_pattern("r", &p).unwrap_err()
    }

    fn paths(s: &SubPatternDef) -> Vec<&str> {
        s.fields.iter().map(|f| f.path.as_str()).collect()
    }

    #[test]
    fn nested_and_dotted_keys_flatten_to_paths() {
        let s = subs(json!({"detail": {"state": ["x"], "c.count": [5]}, "a.b": [1]}));
        assert_eq!(s.len(), 1);
        assert_eq!(paths(&s[0]), vec!["a.b", "detail.c.count", "detail.state"]);
    }

    #[test]
    fn or_expands_to_alternatives() {
        let s = subs(json!({"source": ["x"], "$or": [{"a": [1]}, {"b": [2], "c": [3]}]}));
        assert_eq!(s.len(), 2);
        assert_eq!(paths(&s[0]), vec!["a", "source"]);
        assert_eq!(paths(&s[1]), vec!["b", "c", "source"]);
        assert_eq!(s[1].branch, "$or[1]");
        let s = subs(
            json!({"d": {"$or": [{"a": [1]}, {"$or": [{"b": [2]}, {"c": [3]}]}]}, "$or": [{"x": [1]}, {"y": [1]}]}),
        );
        assert_eq!(s.len(), 6);
        assert!(s.iter().any(|s| s.branch == "$or[0], d.$or[1], d.$or[1].$or[0]"));
    }

    #[test]
    fn mixed_exists_false_forks() {
        let s = subs(json!({"a": [{"exists": false}, "x"], "b": [1]}));
        assert_eq!(s.len(), 2);
        assert!(s.iter().any(|s| s.fields[0].absent));
        assert!(s.iter().any(|s| !s.fields[0].absent && s.fields[0].matchers.len() == 1));
    }

    #[test]
    fn fields_sort_in_utf16_order() {
        let s = subs(json!({"\u{FF5E}": [1], "\u{1F600}": [2]}));
        // U+1F600 is a surrogate pair (0xD83D...), which sorts before U+FF5E in UTF-16.
        assert_eq!(paths(&s[0]), vec!["\u{1F600}", "\u{FF5E}"]);
    }

    #[test]
    fn structural_errors() {
        assert_eq!(
            err(json!([1])).reason,
            "the pattern must be a JSON object, e.g. {\"type\": [\"order.created\"]}"
        );
        assert!(err(json!({})).reason.contains("empty object"));
        assert!(err(json!({"a": {}})).reason.contains("empty object"));
        let e = err(json!({"body": {"type": "order.created"}}));
        assert_eq!(e.path, "body.type");
        assert!(e
            .reason
            .starts_with("must be an array of values or operators, e.g. [\"order.created\"]"));
        let e = err(json!({"body": {"amount": [{"numeric": [">", "x"]}]}}));
        assert_eq!(
            e.to_string(),
            "rule `r`: at `body.amount`: `numeric` needs an operator followed by a number, e.g. [\">\", 100]"
        );
        assert_eq!(err(json!({"a": []})).path, "a");
    }

    #[test]
    fn or_errors() {
        assert!(err(json!({"$or": [{"a": [1]}]}))
            .reason
            .contains("at least two branches"));
        assert!(err(json!({"$or": []})).reason.contains("at least two branches"));
        assert!(err(json!({"$or": {"a": [1]}})).reason.contains("must be an array"));
        let e = err(json!({"x": {"$or": [{"a": [1]}, "b"]}}));
        assert_eq!(e.path, "x.$or[1]");
        let e = err(json!({"$or": [{"prefix": ["a"]}, {"b": [1]}]}));
        assert!(e.reason.contains("operator name"));
        assert_eq!(e.path, "$or[0].prefix");
        // Outside `$or` a field may be called "prefix".
        assert_eq!(subs(json!({"prefix": ["a"]})).len(), 1);
    }

    #[test]
    fn duplicate_paths_are_rejected() {
        assert!(err(json!({"a.b": [1], "a": {"b": [2]}}))
            .reason
            .contains("more than once"));
        assert!(err(json!({"a": [1], "$or": [{"a": [2]}, {"b": [1]}]}))
            .reason
            .contains("more than once"));
    }

    #[test]
    fn limits() {
        let mut p = json!([1]);
        for _ in 0..70 {
            p = json!({ "a": p });
        }
        assert!(err(p).reason.contains("deeper than 64"));
        let mut fields = Map::new();
        for i in 0..65 {
            fields.insert(format!("f{i}"), json!([i]));
        }
        assert!(err(Value::Object(fields)).reason.contains("at most 64 fields"));
        let or = json!([{"a": [1]}, {"b": [1]}, {"c": [1]}, {"d": [1]}, {"e": [1]}, {"f": [1]}]);
        let p = json!({"p": {"$or": or}, "q": {"$or": or}, "r": {"$or": or}, "s": {"$or": or}});
        assert!(err(p).reason.contains("more than 1024"));
        let long = vec!["x"; 300].join(".");
        assert!(err(json!({ long: [1] })).reason.contains("dot-separated parts"));
    }
}
