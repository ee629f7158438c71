//! Validation of one pattern field's value list (`["a", {"prefix": "b"}, ...]`) into matchers.
//!
//! Error texts are the `reason` of a [`crate::rules::pattern::PatternError`]; they name the operator and show a
//! correct example, because users meet them in `veltrix check` output.

use serde_json::{Map, Value};

use crate::rules::pattern::ip::{parse_cidr, parse_ip};
use crate::rules::pattern::operators::{AnythingBut, Matcher, NumRange};
use crate::rules::pattern::text::{CaseFold, Wildcard};

/// The operators a value list may contain, for did-you-mean suggestions.
pub(crate) const OPERATORS: &[&str] = &[
    "prefix",
    "suffix",
    "equals-ignore-case",
    "wildcard",
    "anything-but",
    "numeric",
    "exists",
    "cidr",
    "exactly",
];

/// A validated field: its positive matchers (each with a human description) and whether
/// `{"exists": false}` is among its alternatives.
#[derive(Debug)]
pub(crate) struct FieldSpec {
    /// Positive matchers with descriptions such as `prefix "abc"`.
    pub positives: Vec<(Matcher, String)>,
    /// Whether the list contains `{"exists": false}`.
    pub absent: bool,
}

/// Validate a field's value list. `Err` holds the reason.
pub(crate) fn parse_field(list: &[Value]) -> Result<FieldSpec, String> {
    if list.is_empty() {
        return Err("must not be an empty array; list at least one value or operator, e.g. [\"order.created\"]".into());
    }
    let mut spec = FieldSpec {
        positives: Vec::new(),
        absent: false,
    };
    for item in list {
        match item {
            Value::String(s) => {
                let m = match parse_ip(s) {
                    Some(ip) => Matcher::ExactIp(ip),
                    None => Matcher::ExactString(s.as_str().into()),
                };
                spec.positives.push((m, format!("equals {}", json_text(item))));
            }
            Value::Number(n) => {
                let x = n.as_f64().ok_or("number out of range")?;
                spec.positives
                    .push((Matcher::ExactNumber(x), format!("equals {}", json_text(item))));
            }
            Value::Bool(b) => spec.positives.push((Matcher::ExactBool(*b), format!("equals {b}"))),
            Value::Null => spec.positives.push((Matcher::ExactNull, "equals null".into())),
            Value::Array(_) => {
                return Err(
                    "a value inside the list must be a string, number, true, false, null or an operator \
                            object such as {\"prefix\": \"abc\"}, not a nested array"
                        .into(),
                )
            }
            Value::Object(obj) => match parse_operator(obj)? {
                Op::Absent => spec.absent = true,
                Op::Matcher(m) => {
                    let (k, v) = obj.iter().next().expect("one key");
                    spec.positives.push((m, format!("{k} {}", json_text(v))));
                }
            },
        }
    }
    Ok(spec)
}

enum Op {
    Matcher(Matcher),
    Absent,
}

fn parse_operator(obj: &Map<String, Value>) -> Result<Op, String> {
    if obj.len() != 1 {
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        return Err(format!(
            "an operator object must have exactly one key, e.g. {{\"prefix\": \"abc\"}}; this one has {}{}",
            keys.len(),
            if keys.is_empty() {
                String::new()
            } else {
                format!(" ({})", keys.join(", "))
            }
        ));
    }
    let (name, arg) = obj.iter().next().expect("one key");
    let m = match name.as_str() {
        "exactly" => Matcher::ExactString(string_arg(name, arg, "\"order.created\"")?.into()),
        "prefix" => match arg {
            Value::Object(o) => Matcher::PrefixIc(CaseFold::new(ignore_case_arg(name, o)?)),
            _ => Matcher::Prefix(string_arg(name, arg, "\"order.\"")?.into()),
        },
        "suffix" => match arg {
            Value::Object(o) => Matcher::SuffixIc(CaseFold::new(ignore_case_arg(name, o)?)),
            _ => Matcher::Suffix(string_arg(name, arg, "\".png\"")?.into()),
        },
        "equals-ignore-case" => Matcher::EqualsIc(CaseFold::new(string_arg(name, arg, "\"Order.Created\"")?)),
        "wildcard" => Matcher::Wildcard(wildcard(string_arg(name, arg, "\"arn:aws:*:us-east-1:*\"")?)?),
        "anything-but" => Matcher::AnythingBut(anything_but(arg)?),
        "numeric" => Matcher::Numeric(numeric(arg)?),
        "cidr" => Matcher::Cidr(parse_cidr(string_arg(name, arg, "\"10.0.0.0/24\"")?)?),
        "exists" => match arg {
            Value::Bool(true) => Matcher::Exists,
            Value::Bool(false) => return Ok(Op::Absent),
            _ => return Err(format!("`exists` must be true or false, not {}", json_text(arg))),
        },
        other => return Err(unknown_operator(other)),
    };
    Ok(Op::Matcher(m))
}

fn string_arg<'a>(op: &str, arg: &'a Value, example: &str) -> Result<&'a str, String> {
    match arg {
        Value::String(s) => Ok(s),
        _ => Err(format!(
            "`{op}` needs a string, e.g. {{\"{op}\": {example}}}; got {}",
            json_text(arg)
        )),
    }
}

fn ignore_case_arg<'a>(op: &str, o: &'a Map<String, Value>) -> Result<&'a str, String> {
    match (o.len(), o.get("equals-ignore-case")) {
        (1, Some(Value::String(s))) => Ok(s),
        _ => Err(format!(
            "`{op}` takes a string or {{\"equals-ignore-case\": \"...\"}}, e.g. {{\"{op}\": {{\"equals-ignore-case\": \"abc\"}}}}"
        )),
    }
}

fn wildcard(s: &str) -> Result<Wildcard, String> {
    Wildcard::parse(s).map_err(|e| e.to_string())
}

const ANYTHING_BUT_FORMS: &str = "`anything-but` takes a string, a number, a list of strings or of numbers, or one of \
     {\"prefix\": ...}, {\"suffix\": ...}, {\"equals-ignore-case\": ...}, {\"wildcard\": ...}";

fn anything_but(arg: &Value) -> Result<AnythingBut, String> {
    match arg {
        Value::String(s) => Ok(AnythingBut::Strings(vec![s.as_str().into()].into())),
        Value::Number(n) => Ok(AnythingBut::Numbers(vec![n.as_f64().unwrap_or(f64::NAN)].into())),
        Value::Array(items) => {
            if items.is_empty() {
                return Err("`anything-but` list must not be empty".into());
            }
            if items.iter().all(Value::is_string) {
                let mut v: Vec<Box<str>> = items.iter().map(|s| s.as_str().unwrap_or_default().into()).collect();
                v.sort();
                v.dedup();
                Ok(AnythingBut::Strings(v.into()))
            } else if items.iter().all(Value::is_number) {
                Ok(AnythingBut::Numbers(items.iter().filter_map(Value::as_f64).collect()))
            } else {
                Err(
                    "`anything-but` list must hold only strings or only numbers (no mix, no null, booleans or objects)"
                        .into(),
                )
            }
        }
        Value::Object(o) if o.len() == 1 => {
            let (k, v) = o.iter().next().expect("one key");
            let strings = string_list(k, v)?;
            match k.as_str() {
                "prefix" | "suffix" => {
                    if strings.iter().any(|s| s.is_empty()) {
                        return Err(format!(
                            "`anything-but` `{k}` must not be empty (it would exclude every string)"
                        ));
                    }
                    let b: Box<[Box<str>]> = strings.iter().map(|s| (*s).into()).collect();
                    Ok(if k == "prefix" {
                        AnythingBut::Prefixes(b)
                    } else {
                        AnythingBut::Suffixes(b)
                    })
                }
                "equals-ignore-case" => Ok(AnythingBut::EqualsIc(
                    strings.iter().map(|s| CaseFold::new(s)).collect(),
                )),
                "wildcard" => Ok(AnythingBut::Wildcards(
                    strings
                        .iter()
                        .map(|s| wildcard(s))
                        .collect::<Result<Vec<_>, _>>()?
                        .into(),
                )),
                other => {
                    let hint = suggest(other, &["prefix", "suffix", "equals-ignore-case", "wildcard"])
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_default();
                    Err(format!(
                        "unknown `anything-but` operator `{other}`{hint} (it takes prefix, suffix, equals-ignore-case or wildcard)"
                    ))
                }
            }
        }
        _ => Err(ANYTHING_BUT_FORMS.into()),
    }
}

fn string_list<'a>(op: &str, v: &'a Value) -> Result<Vec<&'a str>, String> {
    let err = || format!("`anything-but` `{op}` needs a string or a non-empty list of strings");
    match v {
        Value::String(s) => Ok(vec![s.as_str()]),
        Value::Array(items) if !items.is_empty() => items.iter().map(|i| i.as_str().ok_or_else(err)).collect(),
        _ => Err(err()),
    }
}

const NUMERIC_FORM: &str = "`numeric` needs an operator followed by a number, e.g. [\">\", 100]";

fn numeric(arg: &Value) -> Result<NumRange, String> {
    let Value::Array(items) = arg else {
        return Err(NUMERIC_FORM.into());
    };
    let op_at = |i: usize| -> Result<&str, String> {
        match items.get(i) {
            Some(Value::String(s)) if ["=", "<", "<=", ">", ">="].contains(&s.as_str()) => Ok(s),
            Some(Value::String(s)) => Err(format!("`numeric` operator {s:?} is not one of =, <, <=, >, >=")),
            _ => Err(NUMERIC_FORM.into()),
        }
    };
    let num_at = |i: usize| -> Result<f64, String> {
        match items.get(i) {
            Some(Value::Number(n)) => n.as_f64().ok_or_else(|| NUMERIC_FORM.to_string()),
            _ => Err(NUMERIC_FORM.into()),
        }
    };
    if items.len() != 2 && items.len() != 4 {
        return Err(NUMERIC_FORM.into());
    }
    let (op1, x1) = (op_at(0)?, num_at(1)?);
    let bound = |op: &str, x: f64| -> NumRange {
        match op {
            "=" => NumRange {
                lo: Some((x, true)),
                hi: Some((x, true)),
            },
            "<" => NumRange {
                lo: None,
                hi: Some((x, false)),
            },
            "<=" => NumRange {
                lo: None,
                hi: Some((x, true)),
            },
            ">" => NumRange {
                lo: Some((x, false)),
                hi: None,
            },
            _ => NumRange {
                lo: Some((x, true)),
                hi: None,
            },
        }
    };
    if items.len() == 2 {
        return Ok(bound(op1, x1));
    }
    let (op2, x2) = (op_at(2)?, num_at(3)?);
    if !matches!(op1, ">" | ">=") || !matches!(op2, "<" | "<=") {
        return Err(
            "a `numeric` range is a lower bound (\">\" or \">=\") followed by an upper bound (\"<\" or \"<=\"), \
                    e.g. [\">\", 0, \"<=\", 5]"
                .into(),
        );
    }
    if x1 >= x2 {
        return Err(format!(
            "`numeric` range is empty: the lower bound {} must be less than the upper bound {}",
            json_text(&items[1]),
            json_text(&items[3])
        ));
    }
    Ok(NumRange {
        lo: bound(op1, x1).lo,
        hi: bound(op2, x2).hi,
    })
}

fn unknown_operator(name: &str) -> String {
    match suggest(name, OPERATORS) {
        Some(s) => format!("unknown operator `{name}`; did you mean `{s}`?"),
        None => format!("unknown operator `{name}`; operators are {}", OPERATORS.join(", ")),
    }
}

/// The closest candidate to `word` by edit distance, if it is close enough to be a likely typo.
pub(crate) fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let w = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (levenshtein(&w, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + (ca != cb) as usize).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// One-line JSON with a space after `,` and `:`, for descriptions such as `numeric [">", 1000]`.
pub(crate) fn json_text(v: &Value) -> String {
    match v {
        Value::Array(a) => format!("[{}]", a.iter().map(json_text).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!("{}: {}", Value::String(k.clone()), json_text(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(v: Value) -> Result<FieldSpec, String> {
        parse_field(v.as_array().unwrap())
    }

    fn err(v: Value) -> String {
        field(v).unwrap_err()
    }

    #[test]
    fn accepts_every_operator() {
        let f = field(json!([
            "a", 1, true, null, {"exactly": "x"}, {"prefix": "p"}, {"prefix": {"equals-ignore-case": "P"}},
            {"suffix": "s"}, {"suffix": {"equals-ignore-case": "S"}}, {"equals-ignore-case": "e"},
            {"wildcard": "w*"}, {"anything-but": "x"}, {"anything-but": 5}, {"anything-but": ["a", "b"]},
            {"anything-but": [1, 2]}, {"anything-but": {"prefix": "p"}}, {"anything-but": {"suffix": ["a", "b"]}},
            {"anything-but": {"equals-ignore-case": ["a"]}}, {"anything-but": {"wildcard": "*x*"}},
            {"numeric": ["=", 5]}, {"numeric": [">", 0, "<=", 5]}, {"cidr": "10.0.0.0/8"}, {"exists": true},
            {"exists": false}
        ]))
        .unwrap();
        assert!(f.absent);
        assert_eq!(f.positives.len(), 23);
        assert_eq!(f.positives[20].1, "numeric [\">\", 0, \"<=\", 5]");
        assert_eq!(f.positives[0].1, "equals \"a\"");
    }

    #[test]
    fn exact_ip_string_becomes_address() {
        let f = field(json!(["10.0.0.1", "08:23"])).unwrap();
        assert!(matches!(f.positives[0].0, Matcher::ExactIp(_)));
        assert!(matches!(f.positives[1].0, Matcher::ExactString(_)));
    }

    #[test]
    fn rejects_empty_and_nested_lists() {
        assert!(err(json!([])).contains("empty array"));
        assert!(err(json!([[1]])).contains("nested array"));
    }

    #[test]
    fn rejects_bad_operator_objects() {
        assert!(err(json!([{}])).contains("exactly one key"));
        assert!(err(json!([{"prefix": "a", "suffix": "b"}])).contains("exactly one key"));
        assert_eq!(
            err(json!([{"prefx": "a"}])),
            "unknown operator `prefx`; did you mean `prefix`?"
        );
        assert!(err(json!([{"anythingbut": "a"}])).contains("did you mean `anything-but`"));
        assert!(err(json!([{"regex": "a"}])).contains("operators are"));
        assert!(err(json!([{"prefix": 5}])).contains("`prefix` needs a string"));
        assert!(err(json!([{"prefix": {"suffix": "x"}}])).contains("equals-ignore-case"));
        assert!(err(json!([{"equals-ignore-case": 1}])).contains("needs a string"));
        assert!(err(json!([{"exists": "yes"}])).contains("`exists` must be true or false"));
        assert!(err(json!([{"cidr": "10.0.0.0/33"}])).contains("too long"));
        assert!(err(json!([{"cidr": "10.0.0.300/8"}])).contains("not a valid"));
        assert!(err(json!([{"cidr": 10}])).contains("needs a string"));
    }

    #[test]
    fn rejects_bad_wildcards() {
        assert!(err(json!([{"wildcard": "a**b"}])).contains("consecutive"));
        assert!(err(json!([{"wildcard": "a\\b"}])).contains("backslash"));
        assert!(err(json!([{"anything-but": {"wildcard": ["ok*", "a**"]}}])).contains("consecutive"));
    }

    #[test]
    fn rejects_bad_numeric() {
        let form = "`numeric` needs an operator followed by a number";
        assert!(err(json!([{"numeric": 5}])).starts_with(form));
        assert!(err(json!([{"numeric": [">"]}])).starts_with(form));
        assert!(err(json!([{"numeric": [">", "5"]}])).starts_with(form));
        assert!(err(json!([{"numeric": [5, ">"]}])).starts_with(form));
        assert!(err(json!([{"numeric": [">", 1, "<"]}])).starts_with(form));
        assert!(err(json!([{"numeric": ["=>", 1]}])).contains("not one of"));
        assert!(err(json!([{"numeric": ["<", 1, ">", 0]}])).contains("lower bound"));
        assert!(err(json!([{"numeric": ["=", 1, "<", 5]}])).contains("lower bound"));
        assert!(err(json!([{"numeric": [">", 10, "<", 5]}])).contains("range is empty"));
        assert!(err(json!([{"numeric": [">=", 5, "<=", 5]}])).contains("range is empty"));
    }

    #[test]
    fn rejects_bad_anything_but() {
        assert!(err(json!([{"anything-but": true}])).starts_with("`anything-but` takes"));
        assert!(err(json!([{"anything-but": null}])).starts_with("`anything-but` takes"));
        assert!(err(json!([{"anything-but": []}])).contains("must not be empty"));
        assert!(err(json!([{"anything-but": ["a", 1]}])).contains("only strings or only numbers"));
        assert!(err(json!([{"anything-but": {"prefix": ""}}])).contains("must not be empty"));
        assert!(err(json!([{"anything-but": {"prefx": "a"}}])).contains("did you mean `prefix`"));
        assert!(err(json!([{"anything-but": {"prefix": 1}}])).contains("needs a string"));
        assert!(err(json!([{"anything-but": {"prefix": "a", "suffix": "b"}}])).starts_with("`anything-but` takes"));
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("prefx", OPERATORS), Some("prefix"));
        assert_eq!(suggest("NUMERIC", OPERATORS), Some("numeric"));
        assert_eq!(suggest("equals-ignorecase", OPERATORS), Some("equals-ignore-case"));
        assert_eq!(suggest("zzzz", OPERATORS), None);
    }
}
