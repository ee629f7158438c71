//! The shared EventBridge conformance vectors (read from `VELTRIX_VECTORS`, default
//! `../shared/conformance/eventbridge-vectors.jsonl` beside the repository; never copied into
//! the project). Without either, the tests say so and skip; CI always has them.
//! Each pattern is placed under `body` and each event becomes `{"body": <event>}`, as the worker
//! presents messages.

use serde_json::{json, Value};
use veltrix::rules::pattern::PatternSet;

const DEFAULT_VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/conformance/eventbridge-vectors.jsonl"
);

struct Vector {
    id: u64,
    pattern: Value,
    event: Value,
    matches: bool,
    text: String,
    /// The event's exact JSON text (number spellings kept).
    event_text: String,
}

fn load() -> Vec<Vector> {
    let path = match std::env::var("VELTRIX_VECTORS") {
        Ok(p) => p,
        Err(_) if !std::path::Path::new(DEFAULT_VECTORS).exists() => {
            eprintln!("SKIPPED: no conformance vectors at {DEFAULT_VECTORS} and VELTRIX_VECTORS is unset");
            return Vec::new();
        }
        Err(_) => DEFAULT_VECTORS.to_string(),
    };
    let data = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read conformance vectors at {path}: {e} (set VELTRIX_VECTORS)"));
    data.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let row: Value = serde_json::from_str(l).expect("vector row is JSON");
            let pattern: Value = serde_json::from_str(row["pattern"].as_str().unwrap()).expect("pattern JSON");
            let event: Value = serde_json::from_str(row["event"].as_str().unwrap()).expect("event JSON");
            Vector {
                id: row["id"].as_u64().unwrap(),
                pattern: json!({ "body": pattern }),
                event: json!({ "body": event }),
                matches: row["matches"].as_bool().unwrap(),
                text: format!("pattern {} event {}", row["pattern"], row["event"]),
                event_text: row["event"].as_str().unwrap().to_string(),
            }
        })
        .collect()
}

#[test]
fn all_vectors_pass_individually() {
    let vectors = load();
    if vectors.is_empty() {
        return;
    }
    assert_eq!(vectors.len(), 128, "expected the 128 shared vectors");
    let mut failures = Vec::new();
    for v in &vectors {
        let set = match PatternSet::compile([("v", &v.pattern)]) {
            Ok(s) => s,
            Err(e) => {
                failures.push(format!("#{}: compile error {e}\n  {}", v.id, v.text));
                continue;
            }
        };
        let mut out = Vec::new();
        set.matches(&v.event, &mut out);
        let got = out == [0];
        if got != v.matches {
            failures.push(format!("#{}: expected {}, got {}\n  {}", v.id, v.matches, got, v.text));
        }
        // The explanation must agree with the matcher.
        assert_eq!(set.explain(0, &v.event).matched, got, "explain disagrees on #{}", v.id);
    }
    assert!(
        failures.is_empty(),
        "{} of {} vectors fail:\n{}",
        failures.len(),
        vectors.len(),
        failures.join("\n")
    );
    println!("conformance: {}/{} vectors pass", vectors.len(), vectors.len());
}

#[test]
fn all_vectors_pass_in_one_set() {
    let vectors = load();
    let names: Vec<String> = vectors.iter().map(|v| format!("v{}", v.id)).collect();
    let set = PatternSet::compile(names.iter().map(String::as_str).zip(vectors.iter().map(|v| &v.pattern))).unwrap();
    assert_eq!(set.len(), vectors.len());
    let mut failures = Vec::new();
    for (i, v) in vectors.iter().enumerate() {
        let mut out = Vec::new();
        set.matches(&v.event, &mut out);
        assert!(out.windows(2).all(|w| w[0] < w[1]), "ids ascending and unique");
        // What the worker does: decode only what patterns look at, straight from the text.
        let pruned = set
            .decode_pruned("body", v.event_text.as_bytes())
            .expect("vector events are JSON");
        let mut via_pruned = Vec::new();
        set.matches(&json!({ "body": pruned }), &mut via_pruned);
        assert_eq!(via_pruned, out, "pruned decoding changed the matches of #{}", v.id);
        if out.contains(&i) != v.matches {
            failures.push(format!("#{}: expected {}\n  {}", v.id, v.matches, v.text));
        }
    }
    assert!(
        failures.is_empty(),
        "{} vectors fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
