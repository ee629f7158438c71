//! Hostile events and patterns must neither panic nor blow up in time or memory.

use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use veltrix::rules::pattern::PatternSet;

fn set(patterns: &[Value]) -> PatternSet {
    let names: Vec<String> = (0..patterns.len()).map(|i| format!("r{i}")).collect();
    PatternSet::compile(names.iter().map(String::as_str).zip(patterns.iter())).unwrap()
}

fn hits(s: &PatternSet, ev: &Value) -> Vec<usize> {
    let mut out = Vec::new();
    s.matches(ev, &mut out);
    out
}

fn quick<T>(limit_ms: u64, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let r = f();
    assert!(t.elapsed() < Duration::from_millis(limit_ms), "took {:?}", t.elapsed());
    r
}

#[test]
fn deeply_nested_event_does_not_overflow() {
    let s = set(&[
        json!({"a": ["x"]}),
        json!({"a": {"b": [{"exists": false}]}, "c": [{"exists": false}]}),
        json!({"a": [{"exists": true}], "z": [{"exists": false}], "y": [{"anything-but": 1}]}),
    ]);
    // Arrays nested 100k deep under a pattern path, and objects nested deep off-path.
    let mut v = json!("x");
    for _ in 0..100_000 {
        v = Value::Array(vec![v]);
    }
    let mut deep_obj = json!(1);
    for _ in 0..100_000 {
        deep_obj = Value::Object([("a".to_string(), deep_obj)].into_iter().collect());
    }
    let ev = Value::Object(
        [
            ("a".to_string(), v),
            ("q".to_string(), deep_obj),
            ("y".to_string(), json!(2)),
        ]
        .into_iter()
        .collect(),
    );
    assert_eq!(quick(2000, || hits(&s, &ev)), vec![0, 1, 2]);
    let _ = s.explain(1, &ev);
    let _ = s.explain(0, &ev);
    let _ = s.nearest(&ev, 3);
    // serde_json drops values recursively; keep the test about the matcher.
    std::mem::forget(ev);
}

#[test]
fn parsed_deep_json_is_limited_by_the_parser() {
    let text = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(serde_json::from_str::<Value>(&text).is_err());
}

#[test]
fn huge_arrays_are_linear() {
    let s = set(&[
        json!({"a": [999_999]}),
        json!({"a": [{"numeric": [">", 2_000_000]}]}),
        json!({"a": [{"anything-but": [1, 2, 3]}]}),
    ]);
    let ev = json!({ "a": (0..1_000_000).collect::<Vec<i64>>() });
    assert_eq!(quick(3000, || hits(&s, &ev)), vec![0, 2]);
}

#[test]
fn array_consistency_is_not_exponential() {
    // Fields spread over several independent arrays, one of which can never be satisfied
    // consistently: a naive backtracking search would try every combination.
    let mut pat = Map::new();
    let mut obj = Map::new();
    for k in 0..8 {
        pat.insert(format!("x{k}"), json!([1]));
        obj.insert(format!("x{k}"), json!(vec![1; 200]));
    }
    pat.insert("y".into(), json!([1]));
    pat.insert("z".into(), json!([1]));
    obj.insert("y".into(), json!(1));
    obj.insert("z".into(), json!(2));
    let other = json!({"y": 2, "z": 1});
    let pattern = json!({ "a": Value::Object(pat) });
    let s = set(&[pattern]);
    let ev = json!({ "a": vec![Value::Object(obj), other] });
    assert_eq!(quick(1000, || hits(&s, &ev)), Vec::<usize>::new());

    // Many elements, three fields that only ever meet in different elements.
    let elems: Vec<Value> = (0..20_000)
        .map(|i| match i % 3 {
            0 => json!({"b": 1}),
            1 => json!({"c": 1}),
            _ => json!({"d": 1}),
        })
        .collect();
    let s = set(&[json!({"a": {"b": [1], "c": [1], "d": [1]}})]);
    assert!(quick(1000, || hits(&s, &json!({ "a": elems }))).is_empty());
}

#[test]
fn pathological_wildcards_are_linear() {
    let s = set(&[
        json!({"s": [{"wildcard": "*a*a*a*a*a*a*a*a*a*a*a*a*b"}]}),
        json!({"s": [{"anything-but": {"wildcard": ["*a*a*a*a*a*a*a*c", "a*a*a*a*a*a*a*a*d"]}}]}),
    ]);
    let long = "a".repeat(1_000_000);
    assert_eq!(quick(2000, || hits(&s, &json!({ "s": long }))), vec![1]);
}

#[test]
fn wide_objects_and_long_strings() {
    let mut m = Map::new();
    for i in 0..100_000 {
        m.insert(format!("k{i}"), json!(i));
    }
    m.insert("type".into(), json!("x".repeat(1_000_000)));
    let ev = json!({ "body": Value::Object(m) });
    let s = set(&[
        json!({"body": {"k77": [77]}}),
        json!({"body": {"type": [{"prefix": "xxx"}]}}),
        json!({"body": {"type": [{"suffix": {"equals-ignore-case": "XX"}}]}}),
        json!({"body": {"type": [{"equals-ignore-case": "X"}]}}),
    ]);
    assert_eq!(quick(2000, || hits(&s, &ev)), vec![0, 1, 2]);
}

#[test]
fn hostile_patterns_are_rejected_not_fatal() {
    let mut deep = json!([1]);
    for _ in 0..100 {
        deep = json!({ "a": deep });
    }
    let or10: Vec<Value> = (0..10).map(|i| json!({ format!("f{i}"): [i] })).collect();
    let mut explosive = Map::new();
    for k in 0..5 {
        explosive.insert(format!("o{k}"), json!({ "$or": or10 }));
    }
    let long_key = "a.".repeat(1000) + "b";
    for p in [
        deep,
        Value::Object(explosive),
        json!({ long_key: [1] }),
        json!({"a": [{"numeric": [">", 1e308, "<", -1e308]}]}),
    ] {
        assert!(PatternSet::compile([("r", &p)]).is_err(), "{p}");
    }
}

#[test]
fn events_that_are_not_objects() {
    let s = set(&[json!({"body": ["raw text"]}), json!({"x": [{"exists": false}]})]);
    for ev in [json!("raw"), json!(5), json!(null), json!([1, 2]), json!([])] {
        assert_eq!(hits(&s, &ev), vec![1], "{ev}");
    }
    assert_eq!(hits(&s, &json!({"body": "raw text"})), vec![0, 1]);
}
