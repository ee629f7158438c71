//! Property fuzzing of the inputs an operator or a producer controls: the config loader, the
//! body decoder (and the whole `plan_message` path behind it) and the pattern compiler. On
//! arbitrary, mutated and hostile input each must return (Ok or a clear Err), never panic, and
//! stay within a time bound. `FUZZ_CASES` sets the cases per target (default 2,000, as CI runs
//! it; run longer by hand, e.g. `FUZZ_CASES=20000 cargo test --release --test fuzz_inputs`).
//! The matcher against a reference implementation lives in tests/pattern_property.rs.

use std::path::Path;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use serde_json::Value;
use veltrix::config::load_str;
use veltrix::rules::pattern::PatternSet;
use veltrix::rules::plan::{Disposition, Reason};
use veltrix_queue::{Attributes, SourceInfo};

const QUICKSTART: &str = include_str!("../examples/quickstart.toml");

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

fn runner() -> TestRunner {
    TestRunner::new(RunnerConfig {
        cases: cases(),
        failure_persistence: None,
        ..RunnerConfig::default()
    })
}

fn within<T>(limit: Duration, what: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    assert!(start.elapsed() < limit, "{what} took {:?}", start.elapsed());
    out
}

fn source() -> SourceInfo {
    SourceInfo {
        kind: "memory",
        name: "fuzz".into(),
    }
}

/// Text edits: delete, insert a character that matters to TOML or to the schema, duplicate.
#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, char),
    Duplicate(usize, usize),
}

fn edit_strategy() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1usize..20).prop_map(|(at, n)| Edit::Delete(at, n)),
        (
            any::<usize>(),
            prop::sample::select(vec![
                '[', ']', '{', '}', '"', '\'', '=', ',', '\n', '#', '$', '.', '0', '-', 'x', '\\'
            ])
        )
            .prop_map(|(at, c)| Edit::Insert(at, c)),
        (any::<usize>(), 1usize..200).prop_map(|(at, n)| Edit::Duplicate(at, n)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits {
        let len = chars.len().max(1);
        match *e {
            Edit::Delete(at, n) => {
                let at = at % len;
                let end = (at + n).min(chars.len());
                chars.drain(at.min(chars.len())..end);
            }
            Edit::Insert(at, c) => chars.insert(at % (chars.len() + 1), c),
            Edit::Duplicate(at, n) => {
                let at = at % len;
                let end = (at + n).min(chars.len());
                let copy: Vec<char> = chars[at.min(chars.len())..end].to_vec();
                let pos = end;
                chars.splice(pos..pos, copy);
            }
        }
    }
    chars.into_iter().collect()
}

#[test]
fn config_loader_survives_mutated_configs() {
    runner()
        .run(&prop::collection::vec(edit_strategy(), 1..8), |edits| {
            let text = apply(QUICKSTART, &edits);
            let result = within(Duration::from_millis(500), "loading a mutated config", || {
                load_str(Path::new("fuzz.toml"), &text, &|_| Some("x".into()))
            });
            if let Err(e) = result {
                // Every problem names the file; most name a line.
                prop_assert!(e.to_string().contains("fuzz.toml"), "{e}");
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn config_loader_survives_arbitrary_text_and_json() {
    runner()
        .run(&(any::<String>(), any::<bool>()), |(text, json)| {
            let name = if json { "fuzz.json" } else { "fuzz.toml" };
            within(Duration::from_millis(200), "loading arbitrary text", || {
                let _ = load_str(Path::new(name), &text, &|_| None);
            });
            Ok(())
        })
        .unwrap();
}

/// The quick start's rules (they include jq transforms, so matched events are decoded in full).
fn quickstart_rules() -> std::sync::Arc<veltrix::rules::RuleSet> {
    load_str(Path::new("quickstart.toml"), QUICKSTART, &|_| None)
        .unwrap()
        .rules
}

#[test]
fn plan_message_survives_arbitrary_bytes() {
    let rules = quickstart_rules();
    runner()
        .run(&prop::collection::vec(any::<u8>(), 0..2048), |body| {
            within(Duration::from_millis(200), "planning arbitrary bytes", || {
                let _ = rules.plan_message(&body, &Attributes::new(), &source(), 1);
            });
            Ok(())
        })
        .unwrap();
}

/// JSON-ish bodies: an order event with mutated bytes, deep nesting and long arrays spliced in.
fn hostile_body() -> impl Strategy<Value = Vec<u8>> {
    let base =
        br#"{"type": "order.created", "id": "o-1", "customer": "c-1", "amount": 1500, "items": [1, 2]}"#.to_vec();
    (
        prop::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        0usize..20_000,
        0usize..50_000,
        any::<bool>(),
    )
        .prop_map(move |(flips, depth, width, objects)| {
            let mut body = base.clone();
            for (at, byte) in flips {
                let i = at % body.len();
                body[i] = byte;
            }
            let (open, close) = if objects { ("{\"a\":", "}") } else { ("[", "]") };
            let nested = format!("{}1{}", open.repeat(depth), close.repeat(depth));
            let wide = format!("[{}]", vec!["0"; width].join(","));
            let text = String::from_utf8_lossy(&body).replacen("[1, 2]", &format!("[{nested}, {wide}]"), 1);
            let mut out = text.into_bytes();
            if !body.is_ascii() {
                out.extend_from_slice(&body); // keep the raw invalid bytes in play too
            }
            out
        })
}

#[test]
fn plan_message_survives_hostile_json() {
    let rules = quickstart_rules();
    runner()
        .run(&hostile_body(), |body| {
            within(Duration::from_millis(500), "planning a hostile body", || {
                let _ = rules.plan_message(&body, &Attributes::new(), &source(), 1);
            });
            Ok(())
        })
        .unwrap();
}

/// Found by this suite: invalid UTF-8 inside a string no pattern reads passes the pruned decode;
/// when a matched rule transforms, the full decode must dead-letter it, not panic.
#[test]
fn invalid_utf8_in_an_unread_string_of_a_transformed_event_is_dead_lettered() {
    let rules = quickstart_rules();
    let body = b"{\"type\": \"order.created\", \"id\": \"o-1\", \"customer\": \"c-1\", \"amount\": 1500, \"note\": \"\xff\xfe\"}";
    let plan = rules.plan_message(body, &Attributes::new(), &source(), 1);
    match plan.disposition {
        Disposition::DeadLetter(dl) => assert_eq!(dl.reason, Reason::UndecodableBody),
        other => panic!("expected a dead letter, got {other:?}"),
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(vec![
            "prefix",
            "suffix",
            "wildcard",
            "anything-but",
            "numeric",
            "exists",
            "cidr",
            "equals-ignore-case",
            "*",
            "**",
            "a*b*c*d*e*",
            "10.0.0.0/8",
            ">",
            "<=",
            "=",
            "x",
        ])
        .prop_map(|s| Value::String(s.to_string())),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "body",
                        "attributes",
                        "prefix",
                        "suffix",
                        "wildcard",
                        "anything-but",
                        "numeric",
                        "exists",
                        "cidr",
                        "equals-ignore-case",
                        "a",
                        "b",
                    ]),
                    inner
                ),
                0..4
            )
            .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

#[test]
fn pattern_compiler_and_matcher_survive_arbitrary_json() {
    runner()
        .run(&(json_value(), json_value()), |(pattern, event)| {
            within(Duration::from_millis(500), "compiling and matching", || {
                if let Ok(set) = PatternSet::compile([("fuzz", &pattern)]) {
                    let mut out = Vec::new();
                    set.matches(&event, &mut out);
                    set.matches(&serde_json::json!({"body": event, "attributes": {}}), &mut out);
                }
            });
            Ok(())
        })
        .unwrap();
}
