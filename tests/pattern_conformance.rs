//! The EventBridge conformance vectors (`tests/data/eventbridge-vectors.jsonl`, provenance in
//! `tests/data/README.md`; `VELTRIX_VECTORS` points elsewhere), against the matcher and through
//! the binary's `veltrix test`. A missing or short vector file fails.
//! Each pattern is placed under `body` and each event becomes `{"body": <event>}`, as the worker
//! presents messages.

use serde_json::{json, Value};
use veltrix::rules::pattern::PatternSet;

const DEFAULT_VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/eventbridge-vectors.jsonl");

/// How many vectors the file holds.
const VECTORS: usize = 128;

struct Vector {
    id: u64,
    pattern: Value,
    event: Value,
    matches: bool,
    text: String,
    /// The event's exact JSON text (number spellings kept).
    event_text: String,
    /// The pattern's exact JSON text.
    pattern_text: String,
}

fn load() -> Vec<Vector> {
    let path = std::env::var("VELTRIX_VECTORS").unwrap_or_else(|_| DEFAULT_VECTORS.to_string());
    let data = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("cannot read the conformance vectors at {path}: {e} (they are part of the repository: restore tests/data/, or set VELTRIX_VECTORS)")
    });
    let vectors = parse(&data);
    assert_eq!(vectors.len(), VECTORS, "expected {VECTORS} vectors in {path}");
    vectors
}

fn parse(data: &str) -> Vec<Vector> {
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
                pattern_text: row["pattern"].as_str().unwrap().to_string(),
            }
        })
        .collect()
}

#[test]
fn all_vectors_pass_individually() {
    let vectors = load();
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
        // The worker's hot path: straight from the event's exact text to leaves.
        let mut from_bytes = Vec::new();
        set.matches_json("body", v.event_text.as_bytes(), &json!({}), &mut from_bytes)
            .expect("vector events are JSON");
        assert_eq!(from_bytes, out, "matching from bytes disagrees on #{}", v.id);
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
        let mut from_bytes = Vec::new();
        set.matches_json("body", v.event_text.as_bytes(), &json!({}), &mut from_bytes)
            .expect("vector events are JSON");
        assert_eq!(from_bytes, out, "matching from bytes changed the matches of #{}", v.id);
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

#[test]
fn all_vectors_pass_through_the_binary() {
    let vectors = load();
    let dir = std::env::temp_dir().join(format!("veltrix-conformance-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let events = dir.join("events.jsonl");
    let lines: Vec<String> = vectors.iter().map(|v| v.event_text.replace('\n', " ")).collect();
    std::fs::write(&events, lines.join("\n") + "\n").unwrap();
    // Written as text, as the shared runner does, so the patterns' number spellings survive.
    let rules: Vec<String> = vectors
        .iter()
        .map(|v| {
            format!(
                r#"{{"name": "v{}", "match": {{"body": {}}}, "actions": [{{"type": "drop"}}]}}"#,
                v.id, v.pattern_text
            )
        })
        .collect();
    let config = dir.join("veltrix.json");
    let text = format!(
        r#"{{"source": {{"type": "file", "path": {}}}, "pipeline": {{"unmatched": "ack"}}, "rules": [{}]}}"#,
        json!(events),
        rules.join(",\n")
    );
    std::fs::write(&config, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_veltrix"))
        .args(["test", "--format", "json", "--explain", "-c"])
        .arg(&config)
        .arg(&events)
        .output()
        .expect("run veltrix test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "veltrix test failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut failures = Vec::new();
    let reports: Vec<Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("a JSON report line"))
        .collect();
    assert_eq!(reports.len(), vectors.len(), "one report per event:\n{stdout}");
    for (v, report) in vectors.iter().zip(&reports) {
        let name = format!("v{}", v.id);
        let got = report["matched"]
            .as_array()
            .expect("matched is a list")
            .iter()
            .any(|m| m.as_str() == Some(&name) || m["rule"].as_str() == Some(&name));
        if got != v.matches {
            failures.push(format!("#{}: expected {}, got {}\n  {}", v.id, v.matches, got, v.text));
        }
        // The explanation of every rule agrees with the match result, and says what it found.
        let explained = report["explain"].as_array().expect("--explain lists every rule");
        assert_eq!(explained.len(), vectors.len(), "one explanation per rule");
        let mine = explained
            .iter()
            .find(|e| e["rule"] == name.as_str())
            .expect("the vector's own rule is explained");
        assert_eq!(mine["matched"], Value::Bool(got), "explain disagrees on #{}", v.id);
        for e in explained {
            let matched_by_report = report["matched"].as_array().unwrap().contains(&e["rule"]);
            assert_eq!(e["matched"], Value::Bool(matched_by_report), "#{}: {e}", v.id);
            for f in e["fields"].as_array().unwrap() {
                check_found(f, v.id);
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        failures.is_empty(),
        "{} vectors fail through the binary:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A field explanation's `kind` agrees with its `value` and `tried`.
fn check_found(f: &Value, id: u64) {
    let kind = f["kind"].as_str().unwrap_or_else(|| panic!("#{id}: no kind in {f}"));
    let value = f.get("value");
    let leaf_kind = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Object(_) => "object",
        Value::Array(_) => "array",
    };
    match kind {
        "missing" | "object" => assert!(value.is_none(), "#{id}: a {kind} has no value: {f}"),
        "array" => {
            let tried = f["tried"]
                .as_array()
                .unwrap_or_else(|| panic!("#{id}: an array lists what it tried: {f}"));
            assert!(
                tried.iter().all(|t| !t.is_object() && !t.is_array()),
                "#{id}: tried leaves only: {f}"
            );
            if let Some(v) = value {
                assert!(
                    tried.contains(v) || tried.len() == 16,
                    "#{id}: the deciding element was tried: {f}"
                );
            }
        }
        "null" | "boolean" | "number" | "string" => {
            let v = value.unwrap_or_else(|| panic!("#{id}: a leaf has its value: {f}"));
            assert_eq!(leaf_kind(v), kind, "#{id}: {f}");
            assert!(f.get("tried").is_none(), "#{id}: {f}");
        }
        other => panic!("#{id}: unknown kind {other:?} in {f}"),
    }
}
