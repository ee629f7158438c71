//! The `veltrix` binary end to end: the quick start, `check` errors, `test` output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn veltrix(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_veltrix"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn json_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `veltrix test --format json` on `config` and `events`: one report per line, parsed.
fn test_json(config: &Path, events: &Path) -> Vec<Value> {
    let out = veltrix(&[
        "test",
        "-c",
        config.to_str().unwrap(),
        events.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Copies the quick start into a fresh directory so the test does not touch `examples/out`.
fn quickstart_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["quickstart.toml", "events.jsonl"] {
        std::fs::copy(repo().join("examples").join(f), dir.path().join(f)).unwrap();
    }
    dir
}

#[test]
fn quickstart_routes_every_event_and_dead_letters_with_reasons() {
    let dir = quickstart_copy();
    let out = veltrix(&["run", "-c", dir.path().join("quickstart.toml").to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("received=14 forwarded=6 dropped=2 acked_unmatched=0 dead_lettered=6 retried=0"),
        "{stderr}"
    );
    let orders = json_lines(&dir.path().join("out/orders.jsonl"));
    let ids: Vec<&str> = orders.iter().map(|o| o["body"]["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3);
    for id in ["o-1001", "o-1002", "o-1004"] {
        assert!(ids.contains(&id), "{ids:?}");
    }
    let fraud = json_lines(&dir.path().join("out/fraud-review.jsonl"));
    let mut amounts: Vec<f64> = fraud.iter().map(|f| f["body"]["amount"].as_f64().unwrap()).collect();
    amounts.sort_by(f64::total_cmp);
    assert_eq!(amounts, vec![1890.0, 3000.0]);
    assert!(
        fraud[0]["body"].get("currency").is_none(),
        "the transform reshaped the body"
    );
    assert_eq!(json_lines(&dir.path().join("out/payments.jsonl")).len(), 3);
    let dead = json_lines(&dir.path().join("out/dead-letters.jsonl"));
    let mut reasons: Vec<&str> = dead
        .iter()
        .map(|d| d["attributes"]["veltrix.reason"].as_str().unwrap())
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        vec![
            "malformed: body is not JSON",
            "malformed: body is not JSON",
            "order has no customer",
            "unmatched",
            "unmatched",
            "unmatched"
        ]
    );
    for d in &dead {
        assert!(d["attributes"]["veltrix.message_id"].is_string());
        assert_eq!(d["attributes"]["veltrix.attempts"], "1");
        // Unmatched events say why: the nearest rules and what failed.
        let explain = d["attributes"]["veltrix.explain"].as_str();
        if d["attributes"]["veltrix.reason"] == "unmatched" {
            let explain = explain.expect("an unmatched dead letter has veltrix.explain");
            assert!(explain.starts_with("nearest: "), "{explain}");
            assert!(explain.len() <= 1024 + "…".len(), "bounded: {explain}");
        } else {
            assert_eq!(explain, None, "only unmatched events are explained: {d}");
        }
    }
    let cancelled = dead
        .iter()
        .find(|d| d["body"]["type"] == "order.cancelled")
        .expect("the cancelled order is dead-lettered");
    assert!(
        cancelled["attributes"]["veltrix.explain"]
            .as_str()
            .unwrap()
            .contains(r#"orders (body.type: wanted equals "order.created", found string "order.cancelled")"#),
        "{cancelled}"
    );
}

#[test]
fn check_accepts_the_examples() {
    let out = veltrix(&["check", "-c", repo().join("examples/quickstart.toml").to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("OK (6 rules, 4 targets"));
    // The review screen: source, targets, dead letter, budget, each rule's pattern and actions.
    for line in [
        "source       file ",
        "dead letter  dlq; unmatched events are dead-lettered",
        "budget       5 failures of its own per message",
        r#"5 large-orders             body.amount numeric [">", 1000] and body.type equals "order.created""#,
        "→ forward fraud-review with transform `{id: .body.id",
        r#"→ dead_letter "order has no customer"  [final]"#,
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("targets      dlq") && l.ends_with("(dead letter)")),
        "{stdout}"
    );
    let out = veltrix(&[
        "check",
        "-c",
        repo().join("examples/sqs-localstack.toml").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK (2 rules, 2 targets, source sqs"));
}

#[test]
fn check_reports_the_line_of_a_bad_field_and_exits_2() {
    let dir = quickstart_copy();
    let path = dir.path().join("quickstart.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("target = \"payments\"", "target = \"paymnets\"");
    std::fs::write(&path, &text).unwrap();
    let line = text.lines().position(|l| l.contains("paymnets")).unwrap() + 1;
    let out = veltrix(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("quickstart.toml:{line}:")), "{stderr}");
    assert!(stderr.contains("unknown target `paymnets`"), "{stderr}");
    assert!(stderr.contains("did you mean `payments`?"), "{stderr}");
}

#[test]
fn test_command_prints_matches_without_side_effects() {
    let dir = quickstart_copy();
    let lines = test_json(&dir.path().join("quickstart.toml"), &dir.path().join("events.jsonl"));
    assert_eq!(lines.len(), 14);
    assert_eq!(lines[2]["matched"], serde_json::json!(["orders", "large-orders"]));
    assert_eq!(lines[2]["outcome"], "forward");
    assert_eq!(lines[1]["outcome"], "drop");
    assert_eq!(lines[4]["outcome"], "dead_letter");
    assert!(lines[2].get("explain").is_none(), "explanations only with --explain");
    // An unmatched event names its nearest rules and their failing fields.
    let nearest = lines[11]["nearest"]
        .as_array()
        .expect("nearest rules for an unmatched event");
    assert!(nearest.len() <= 3 && !nearest.is_empty(), "{nearest:?}");
    let orders = nearest.iter().find(|n| n["rule"] == "orders").expect("orders is near");
    assert_eq!(orders["fields"][0]["kind"], "string");
    assert_eq!(orders["fields"][0]["value"], "order.cancelled");
    assert!(
        lines[0].get("nearest").is_none(),
        "matched events have no nearest rules"
    );
    assert!(!dir.path().join("out").exists(), "test has no side effects");
}

/// What a new user sees on the quick start: a short report per event, no escape codes when
/// stdout is not a terminal.
#[test]
fn test_command_reads_well_for_people() {
    let dir = quickstart_copy();
    let config = dir.path().join("quickstart.toml");
    let events = dir.path().join("events.jsonl");
    let out = veltrix(&["test", "-c", config.to_str().unwrap(), events.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        !text.contains('\u{1b}'),
        "no colours when stdout is not a terminal:\n{text}"
    );
    let event = |n: usize| -> &str {
        let start = text
            .find(&format!("event {n}  "))
            .unwrap_or_else(|| panic!("no event {n}:\n{text}"));
        let end = text[start..].find("\n\n").map_or(text.len(), |e| start + e);
        &text[start..end]
    };
    let e2 = event(2);
    assert!(
        e2.starts_with("event 2  forward  → orders (rule orders), fraud-review (rule large-orders)"),
        "{e2}"
    );
    assert!(
        e2.contains(r#"body → fraud-review: {"amount":1890,"customer":"c-42","id":"o-1002"}"#),
        "{e2}"
    );
    assert!(!e2.contains("✗ large-orders"), "large-orders matched event 2: {e2}");
    let e0 = event(0);
    assert!(
        e0.contains(r#"✗ large-orders             body.amount: wanted numeric [">", 1000], found number 42.5"#),
        "{e0}"
    );
    assert!(
        e0.contains(r#"✗ orders-without-customer  body.customer: wanted equals null, found an object"#),
        "an object is not null: {e0}"
    );
    let e5 = event(5);
    assert!(
        e5.starts_with(r#"event 5  dead_letter  reason "order has no customer" (rule orders-without-customer)"#),
        "{e5}"
    );
    assert!(e5.contains("body.customer: wanted equals null, found null"), "{e5}");
    let e11 = event(11);
    assert!(e11.contains("no rule matched; nearest: "), "{e11}");
    assert!(e11.lines().all(|l| l.len() < 200), "short lines: {e11}");
    assert!(
        text.ends_with("14 events: 6 forward, 2 drop, 6 dead_letter\n"),
        "{text}"
    );
    // --explain lists every field of every rule on its own line.
    let out = veltrix(&[
        "test",
        "-c",
        config.to_str().unwrap(),
        events.to_str().unwrap(),
        "--explain",
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    let first = &text[..text.find("\n\n").unwrap()];
    assert!(
        first.contains("      ✗ body.customer: wanted equals null, found an object"),
        "{first}"
    );
    assert!(
        first.contains("      ✓ body.type: wanted equals \"order.created\", found string \"order.created\""),
        "{first}"
    );
    assert_eq!(
        first
            .lines()
            .filter(|l| l.starts_with("  ✓ ") || l.starts_with("  ✗ "))
            .count(),
        6,
        "{first}"
    );
}

/// `veltrix test … | head` ends quietly.
#[test]
fn test_command_stops_quietly_when_the_reader_goes_away() {
    let dir = quickstart_copy();
    let events = dir.path().join("many.jsonl");
    std::fs::write(&events, "{\"type\": \"heartbeat\"}\n".repeat(20_000)).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_veltrix"))
        .args([
            "test",
            "-c",
            dir.path().join("quickstart.toml").to_str().unwrap(),
            events.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Read;
        let mut first = [0u8; 64];
        child.stdout.as_mut().unwrap().read_exact(&mut first).unwrap();
    }
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn run_reads_stdin_with_dash() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("w.json");
    std::fs::write(
        &config,
        r#"{"source": {"type": "file", "path": "-"},
            "targets": {"out": {"type": "file", "path": "out.jsonl"}, "dlq": {"type": "file", "path": "dlq.jsonl"}},
            "pipeline": {"dead_letter": "dlq"},
            "rules": [{"name": "all", "match": {"body": {"k": [{"exists": true}]}}, "actions": [{"type": "forward", "target": "out"}]}]}"#,
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_veltrix"))
        .args(["run", "-c", config.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        for i in 0..50 {
            writeln!(stdin, "{{\"k\": {i}}}").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(json_lines(&dir.path().join("out.jsonl")).len(), 50);
}

#[test]
fn sigterm_drains_and_exits_zero_with_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("w.toml");
    std::fs::write(
        &config,
        "[source]\ntype = \"file\"\npath = \"-\"\n[targets.out]\ntype = \"file\"\npath = \"out.jsonl\"\n\
         [targets.dlq]\ntype = \"file\"\npath = \"dlq.jsonl\"\n[pipeline]\ndead_letter = \"dlq\"\n\
         [[rules]]\nname = \"all\"\nmatch = { body = { k = [{ exists = true }] } }\n\
         actions = [{ type = \"forward\", target = \"out\" }]\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_veltrix"))
        .args(["run", "-c", config.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    {
        use std::io::Write;
        for i in 0..5 {
            writeln!(stdin, "{{\"k\": {i}}}").unwrap();
        }
        stdin.flush().unwrap();
    }
    // stdin stays open: the worker would run forever; wait (bounded) until it forwarded all 5.
    let out = dir.path().join("out.jsonl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while json_lines(&out).len() < 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker did not forward the 5 lines"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    drop(stdin);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "exit {:?}: {stderr}", output.status);
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    assert!(stderr.contains("received=5 forwarded=5"), "{stderr}");
}

#[test]
fn dlq_replay_moves_filtered_dead_letters_from_a_file_to_a_target() {
    let dir = quickstart_copy();
    let config = dir.path().join("quickstart.toml");
    let config = config.to_str().unwrap();
    assert!(veltrix(&["run", "-c", config]).status.success());
    let unmatched = r#"{"attributes": {"veltrix.reason": ["unmatched"]}}"#;

    let dry = veltrix(&[
        "dlq",
        "replay",
        "-c",
        config,
        "--to",
        "orders",
        "--filter",
        unmatched,
        "--dry-run",
        "--wait-secs",
        "1",
    ]);
    assert!(dry.status.success(), "{}", String::from_utf8_lossy(&dry.stderr));
    let records: Vec<Value> = String::from_utf8_lossy(&dry.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 6, "one line per dead letter read");
    assert_eq!(records.iter().filter(|r| r["action"] == "would_replay").count(), 3);
    assert_eq!(records.iter().filter(|r| r["action"] == "skipped_filter").count(), 3);
    assert_eq!(
        json_lines(&dir.path().join("out/orders.jsonl")).len(),
        3,
        "a dry run writes nothing"
    );

    let out = veltrix(&[
        "dlq",
        "replay",
        "-c",
        config,
        "--to",
        "orders",
        "--filter",
        unmatched,
        "--wait-secs",
        "1",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("replay: read=6 replayed=3 would_replay=0 skipped_filter=3"),
        "{stderr}"
    );
    let orders = json_lines(&dir.path().join("out/orders.jsonl"));
    assert_eq!(orders.len(), 6, "three replayed dead letters appended");
    for replayed in &orders[3..] {
        let attrs = replayed["attributes"].as_object().unwrap();
        assert_eq!(attrs.get("veltrix.replays").and_then(Value::as_str), Some("1"));
        assert!(
            attrs
                .keys()
                .all(|k| !k.starts_with("veltrix.") || k == "veltrix.replays"),
            "{attrs:?}"
        );
    }

    let to_source = veltrix(&["dlq", "replay", "-c", config, "--wait-secs", "1"]);
    assert!(!to_source.status.success());
    assert!(
        String::from_utf8_lossy(&to_source.stderr).contains("pass --to TARGET"),
        "{}",
        String::from_utf8_lossy(&to_source.stderr)
    );
    let bad_filter = veltrix(&[
        "dlq",
        "replay",
        "-c",
        config,
        "--to",
        "orders",
        "--filter",
        r#"{"body": {"n": [{"numeric": ["<"]}]}}"#,
    ]);
    assert_eq!(bad_filter.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_filter.stderr).contains("--filter"));
}

#[test]
fn json_logs_are_one_named_event_per_line_without_bodies() {
    let dir = quickstart_copy();
    let out = veltrix(&[
        "--log-format",
        "json",
        "run",
        "-c",
        dir.path().join("quickstart.toml").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let events: Vec<Value> = stderr.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let names: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap_or("<none>")).collect();
    assert!(
        names
            .iter()
            .all(|n| veltrix::observe::events::ALL_EVENT_NAMES.contains(n)),
        "{names:?}"
    );
    assert_eq!(names.first(), Some(&"worker_starting"), "{names:?}");
    let dead: Vec<&Value> = events.iter().filter(|e| e["event"] == "dead_lettered").collect();
    assert_eq!(dead.len(), 6, "one event per dead letter");
    assert!(dead
        .iter()
        .all(|e| e["message_id"].is_string() && e["reason"].is_string()));
    assert_eq!(events[0]["rules"], 6, "numbers stay numbers: {}", events[0]);
    for body_text in ["o-1001", "1890", "heartbeat"] {
        assert!(
            !stderr.contains(body_text),
            "a message body leaked into the logs: {body_text}"
        );
    }
}

/// A running `veltrix playground` on a free loopback port, stopped on drop.
struct PlaygroundProcess {
    child: std::process::Child,
    url: String,
}

impl PlaygroundProcess {
    fn start(dir: &Path) -> Self {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_veltrix"))
            .args(["playground", "--addr", "127.0.0.1:0", "-c"])
            .arg(dir.join("quickstart.toml"))
            .arg("--events")
            .arg(dir.join("events.jsonl"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("the binary runs");
        // The first line names the address; the read ends when the process does.
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let url = first
            .split_whitespace()
            .find(|w| w.starts_with("http://127.0.0.1:"))
            .unwrap_or_else(|| panic!("no address in {first:?}"))
            .to_string();
        PlaygroundProcess { child, url }
    }

    /// POSTs `body` to /api/evaluate: (status, answer).
    fn evaluate(&self, body: &Value) -> (u16, Value) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let resp = reqwest::Client::new()
                .post(format!("{}api/evaluate", self.url))
                .json(body)
                .timeout(std::time::Duration::from_secs(10))
                .send()
                .await
                .expect("the playground answers");
            (resp.status().as_u16(), resp.json().await.expect("a JSON answer"))
        })
    }
}

impl Drop for PlaygroundProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `POST /api/evaluate` answers what `veltrix test --format json --explain` prints, with the
/// kinds that tell missing, null, objects and arrays apart; config errors come with their place.
/// A config whose `orders` rule checks bodies against `schemas/order.json`.
fn schema_config() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("schemas")).unwrap();
    std::fs::write(
        dir.path().join("schemas/order.json"),
        r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["type", "id"],
  "properties": {
    "id": {"type": "string"},
    "amount": {"type": "number", "minimum": 0}
  }
}
"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("veltrix.toml"),
        r#"[source]
type = "file"
path = "events.jsonl"

[targets.orders]
type = "file"
path = "out/orders.jsonl"

[targets.dlq]
type = "file"
path = "out/dead-letters.jsonl"

[pipeline]
dead_letter = "dlq"
unmatched = "ack"

[[rules]]
name = "orders"
match = { body = { type = ["order.created"] } }
schema = "schemas/order.json"
actions = [{ type = "forward", target = "orders" }]
"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("events.jsonl"),
        concat!(
            r#"{"type": "order.created", "id": "o-1", "amount": 12.5}"#,
            "\n",
            r#"{"type": "order.created", "id": "o-2", "amount": "12.50"}"#,
            "\n",
            r#"{"type": "order.created", "amount": 3}"#,
            "\n",
            r#"{"type": "heartbeat"}"#,
            "\n",
        ),
    )
    .unwrap();
    dir
}

#[test]
fn bodies_that_do_not_fit_their_rules_schema_are_dead_lettered_naming_pointer_and_keyword() {
    let dir = schema_config();
    let config = dir.path().join("veltrix.toml");
    let out = veltrix(&["run", "-c", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("received=4 forwarded=1 dropped=0 acked_unmatched=1 dead_lettered=2 retried=0"),
        "{stderr}"
    );
    let forwarded = json_lines(&dir.path().join("out/orders.jsonl"));
    assert_eq!(forwarded.len(), 1);
    assert_eq!(forwarded[0]["body"]["id"], "o-1");
    let mut dead = json_lines(&dir.path().join("out/dead-letters.jsonl"));
    let events: Vec<Value> = std::fs::read_to_string(dir.path().join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(dead.len(), 2, "{dead:?}");
    // Messages are handled concurrently, so dead letters need not be written in input order.
    dead.sort_by_key(|d| events.iter().position(|e| *e == d["body"]));
    for (d, (event, error)) in dead.iter().zip([
        (
            &events[1],
            r#"at /amount, keyword `type`: value is not of type "number""#,
        ),
        (&events[2], "at the body itself, keyword `required`"),
    ]) {
        assert_eq!(d["attributes"]["veltrix.reason"], "schema_invalid", "{d}");
        assert_eq!(d["attributes"]["veltrix.rule"], "orders", "{d}");
        let text = d["attributes"]["veltrix.error"].as_str().unwrap();
        assert!(
            text.starts_with("rule `orders`: the body does not fit schema schemas/order.json: ")
                && text.contains(error),
            "{text}"
        );
        assert_eq!(&d["body"], event, "the dead letter keeps the body as it came");
    }

    // `veltrix test` shows the check, for scripts and for people.
    let events = dir.path().join("events.jsonl");
    let lines = test_json(&config, &events);
    assert_eq!(lines[0]["outcome"], "forward");
    assert_eq!(
        lines[0]["schema"],
        serde_json::json!([{"rule": "orders", "schema": "schemas/order.json", "valid": true, "violations": [], "total": 0}])
    );
    assert_eq!(lines[1]["outcome"], "dead_letter");
    assert_eq!(lines[1]["reason"], "schema_invalid");
    assert_eq!(lines[1]["schema"][0]["valid"], false);
    assert_eq!(lines[1]["schema"][0]["violations"][0]["pointer"], "/amount");
    assert_eq!(lines[1]["schema"][0]["violations"][0]["keyword"], "type");
    assert_eq!(lines[2]["schema"][0]["violations"][0]["keyword"], "required");
    assert!(
        lines[3].get("schema").is_none(),
        "no schema checked when no rule with one matched"
    );
    let out = veltrix(&["test", "-c", config.to_str().unwrap(), events.to_str().unwrap()]);
    let human = String::from_utf8_lossy(&out.stdout);
    assert!(
        human.contains("✓ schema schemas/order.json (rule orders): the body fits"),
        "{human}"
    );
    assert!(
        human.contains("✗ schema schemas/order.json (rule orders): 1 violation\n      at /amount, keyword `type`"),
        "{human}"
    );

    // `veltrix check` shows it on the review screen, and refuses a broken schema with its
    // file, line and column.
    let out = veltrix(&["check", "-c", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("[schema schemas/order.json]"));
    std::fs::write(
        dir.path().join("schemas/order.json"),
        "{\n  \"type\": \"object\",\n  \"properties\": {\"amount\": {\"type\": \"money\"}}\n}\n",
    )
    .unwrap();
    let out = veltrix(&["check", "-c", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = std::fs::read_to_string(&config)
        .unwrap()
        .lines()
        .position(|l| l.starts_with("schema ="))
        .unwrap()
        + 1;
    assert!(stderr.contains(&format!("veltrix.toml:{line}:")), "{stderr}");
    assert!(
        stderr.contains("schema schemas/order.json: line 3, column ") && stderr.contains("at /properties/amount/type"),
        "{stderr}"
    );
    std::fs::remove_file(dir.path().join("schemas/order.json")).unwrap();
    let stderr = String::from_utf8_lossy(&veltrix(&["check", "-c", config.to_str().unwrap()]).stderr).to_string();
    assert!(stderr.contains("cannot read schema file"), "{stderr}");
}

#[test]
fn playground_api_explains_missing_null_object_and_array_fields() {
    let dir = quickstart_copy();
    let playground = PlaygroundProcess::start(dir.path());
    let config = std::fs::read_to_string(dir.path().join("quickstart.toml")).unwrap();
    let events = serde_json::json!([
        {"type": "order.created", "id": "o-1"},
        {"type": "order.created", "customer": null},
        {"type": "order.created", "customer": {"id": "c-1"}},
        {"type": ["payment.refunded", "x"], "currency": "EUR"}
    ]);
    let (status, answer) =
        playground.evaluate(&serde_json::json!({"config": config, "events": events, "envelope": false}));
    assert_eq!(status, 200, "{answer}");
    let field = |event: usize, rule: &str, path: &str| -> Value {
        let rules = answer[event]["explain"].as_array().expect("every rule is explained");
        let r = rules.iter().find(|r| r["rule"] == rule).expect("rule explained");
        r["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == path)
            .cloned()
            .unwrap_or_else(|| panic!("no {path} in {r}"))
    };
    let customer = |event| field(event, "orders-without-customer", "body.customer");
    assert_eq!(customer(0)["kind"], "missing");
    assert!(customer(0).get("value").is_none());
    assert_eq!(
        (customer(1)["kind"].clone(), customer(1)["value"].clone()),
        ("null".into(), Value::Null)
    );
    assert_eq!(customer(1)["matched"], true);
    assert_eq!(customer(2)["kind"], "object");
    assert_eq!(customer(2)["matched"], false);
    let payment_type = field(3, "payments", "body.type");
    assert_eq!(payment_type["kind"], "array");
    assert_eq!(payment_type["tried"], serde_json::json!(["payment.refunded", "x"]));
    assert_eq!(payment_type["value"], "payment.refunded");
    assert_eq!(answer[1]["matched"], serde_json::json!(["orders-without-customer"]));
    assert_eq!(answer[1]["outcome"], "dead_letter");
    assert_eq!(answer[3]["outcome"], "forward");
    // The verdicts agree with the matches.
    for report in answer.as_array().unwrap() {
        for r in report["explain"].as_array().unwrap() {
            let applied = report["matched"].as_array().unwrap().contains(&r["rule"]);
            if applied {
                assert_eq!(r["matched"], true, "{report}");
            }
        }
    }
    // A config error: its line and column, and the message with the fix.
    let broken = config.replace("target = \"payments\"", "target = \"paymnets\"");
    let line = broken.lines().position(|l| l.contains("paymnets")).unwrap() + 1;
    let (status, answer) = playground.evaluate(&serde_json::json!({"config": broken, "events": []}));
    assert_eq!(status, 422);
    assert_eq!(answer["error"]["line"], line, "{answer}");
    assert!(answer["error"]["column"].as_u64().unwrap() > 1, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did you mean `payments`?"),
        "{answer}"
    );
    assert!(!dir.path().join("out").exists(), "the playground writes to no target");
}

/// The playground page in Debian's headless Chromium (tests/browser/playground.mjs, installed
/// by tests/browser/install.sh): type an event, see the matching rule and its clause.
#[test]
fn playground_page_shows_verdicts_in_headless_chromium() {
    let browser = repo().join("tests/browser");
    assert!(
        browser.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run tests/browser/install.sh (scripts/test.sh does)"
    );
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "Debian's chromium is missing: run tests/browser/install.sh (apt-get install chromium)"
    );
    let dir = quickstart_copy();
    let playground = PlaygroundProcess::start(dir.path());
    let screenshot = dir.path().join("playground.png");
    let out = Command::new("node")
        .arg(browser.join("playground.mjs"))
        .arg(&playground.url)
        .arg(&screenshot)
        .output()
        .expect("node runs (Node.js is needed for the browser test)");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).expect("the driver prints what it saw");
    assert_eq!(seen["events_offered"], 14, "{seen}");
    assert!(seen["outcome"].as_str().unwrap().starts_with("forward"), "{seen}");
    assert_eq!(
        seen["large_orders_clause"],
        r#"✓ body.amount: wanted numeric [">", 1000], found number 2500"#
    );
    assert_eq!(
        seen["payments_clause"],
        r#"✗ body.type: wanted prefix "payment.", found string "order.created""#
    );
    let transformed: Value = serde_json::from_str(seen["transform_output"].as_str().unwrap()).unwrap();
    assert_eq!(
        transformed,
        serde_json::json!({"amount": 2500, "customer": "c-9", "id": "o-7"})
    );
    assert_eq!(seen["null_clause"], "✓ body.customer: wanted equals null, found null");
    assert_eq!(seen["error_line"], seen["broken_line"], "{seen}");
    assert!(
        seen["error"].as_str().unwrap().contains("unknown target `paymnets`"),
        "{seen}"
    );
    assert_eq!(seen["page_errors"], serde_json::json!([]), "{seen}");
    assert_eq!(
        seen["foreign_requests"],
        serde_json::json!([]),
        "nothing leaves the page: {seen}"
    );
    let png = std::fs::read(&screenshot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
}
