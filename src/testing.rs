//! `veltrix test`: run events through the rules with no side effects and print, per event, which
//! rules matched and what would happen.
//!
//! Each input line is an event body (a line that is not JSON is a string body, as in the
//! worker). With `envelope`, each line is `{"body": …, "attributes": {…}}` (optionally
//! `delivery_attempt`), and the pattern sees that envelope. Output is one JSON line per event:
//! `{"event": <index from 0>, "matched": ["rule", …], "outcome": "ack|forward|drop|dead_letter|retry", …}`.

use std::io::{BufRead, Write};

use serde_json::{json, Map, Value};
use veltrix_queue::{Attributes, SourceInfo};

use crate::config::Config;
use crate::rules::envelope;
use crate::rules::plan::{Disposition, ForwardBody, Plan};
use crate::sandbox::RunTransforms;

/// Options of `veltrix test`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TestOptions {
    /// Lines are envelopes, not bodies.
    pub envelope: bool,
    /// Add, per rule, which field and operator decided.
    pub explain: bool,
}

/// What a test run saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TestCounts {
    /// Events evaluated.
    pub events: usize,
    /// Lines that could not be read as an envelope.
    pub invalid_lines: usize,
}

/// Why `veltrix test` stopped.
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    /// Reading input or writing output failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// An envelope line, parsed.
struct EnvelopeLine {
    body: Value,
    attributes: Attributes,
    delivery_attempt: u32,
}

fn parse_envelope_line(line: &str) -> Result<EnvelopeLine, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not a JSON envelope: {e}"))?;
    let Value::Object(mut obj) = v else {
        return Err("an envelope line must be an object like {\"body\": …, \"attributes\": {…}}".into());
    };
    let body = obj.remove("body").ok_or("the envelope has no `body`")?;
    let mut attributes = Attributes::new();
    match obj.remove("attributes") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (k, v) in map {
                let text = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                attributes.insert(k, text);
            }
        }
        Some(_) => return Err("`attributes` must be an object of strings".into()),
    }
    let delivery_attempt = match obj.remove("delivery_attempt") {
        None => 1,
        Some(v) => v
            .as_u64()
            .filter(|n| *n >= 1 && *n <= u32::MAX as u64)
            .ok_or("`delivery_attempt` must be a positive integer")? as u32,
    };
    if let Some(k) = obj.keys().find(|k| k.as_str() != "source") {
        return Err(format!(
            "unknown envelope field `{k}`; allowed: `body`, `attributes`, `delivery_attempt`"
        ));
    }
    Ok(EnvelopeLine {
        body,
        attributes,
        delivery_attempt,
    })
}

/// Evaluates every line of `input` and writes one JSON line per event to `out`; transforms
/// run with `transforms` (the sandbox, as in the worker).
pub fn run_tests(
    config: &Config,
    input: impl BufRead,
    mut out: impl Write,
    options: TestOptions,
    transforms: &dyn RunTransforms,
) -> Result<TestCounts, TestError> {
    let info = SourceInfo {
        kind: config.source.kind(),
        name: config.source.name(),
    };
    let mut counts = TestCounts::default();
    for (index, line) in input.split(b'\n').enumerate() {
        let line = line?;
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        let record = if options.envelope {
            let parsed = std::str::from_utf8(line)
                .map_err(|e| format!("line is not UTF-8: {e}"))
                .and_then(parse_envelope_line);
            match parsed {
                Err(error) => {
                    counts.invalid_lines += 1;
                    json!({"event": index, "error": error})
                }
                Ok(e) => {
                    counts.events += 1;
                    let env = envelope::build(e.body, &e.attributes, &info, e.delivery_attempt);
                    let mut plan = config.rules.plan(&env, e.delivery_attempt);
                    finish(config, &mut plan, transforms);
                    record_for(config, index, &plan, options.explain.then_some(&env))
                }
            }
        } else {
            // Bodies go through exactly what the worker runs.
            counts.events += 1;
            let mut plan = config.rules.plan_message(line, &Attributes::new(), &info, 1);
            finish(config, &mut plan, transforms);
            let env = options.explain.then(|| {
                let body = envelope::decode_body(line).unwrap_or(Value::Null);
                envelope::build(body, &Attributes::new(), &info, 1)
            });
            record_for(config, index, &plan, env.as_ref())
        };
        serde_json::to_writer(&mut out, &record).map_err(std::io::Error::from)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(counts)
}

/// Runs the plan's transforms; when they cannot run at all, the event shows as a retry.
fn finish(config: &Config, plan: &mut Plan, transforms: &dyn RunTransforms) {
    if config.rules.run_transforms(plan, transforms).is_some() {
        plan.forwards.clear();
        plan.disposition = Disposition::Retry {
            rule: plan.matched.first().copied().unwrap_or(0),
        };
    }
}

fn record_for(config: &Config, index: usize, plan: &Plan, explain: Option<&Value>) -> Value {
    let mut record = describe(config, index, plan);
    if let Some(env) = explain {
        let explained: Vec<Value> = config
            .rules
            .rules()
            .iter()
            .enumerate()
            .map(|(i, rule)| {
                let mut v = serde_json::to_value(config.rules.explain(i, env)).unwrap_or(Value::Null);
                if let Value::Object(m) = &mut v {
                    m.insert("rule".into(), Value::String(rule.name.clone()));
                }
                v
            })
            .collect();
        record["explain"] = Value::Array(explained);
    }
    record
}

fn describe(config: &Config, index: usize, plan: &Plan) -> Value {
    let names = config.rules.rules();
    let mut record = Map::new();
    record.insert("event".into(), json!(index));
    record.insert(
        "matched".into(),
        json!(plan.matched.iter().map(|&i| names[i].name.as_str()).collect::<Vec<_>>()),
    );
    record.insert("outcome".into(), json!(plan.outcome().as_str()));
    if !plan.forwards.is_empty() {
        let forwards: Vec<Value> = plan
            .forwards
            .iter()
            .map(|f| {
                let mut v = json!({"rule": names[f.rule].name, "target": config.targets[f.target].name});
                if let ForwardBody::Transformed(bytes) = &f.body {
                    v["body"] = serde_json::from_slice(bytes).unwrap_or(Value::Null);
                }
                v
            })
            .collect();
        record.insert("forward".into(), Value::Array(forwards));
    }
    if let Disposition::DeadLetter(dl) = &plan.disposition {
        record.insert("reason".into(), json!(dl.reason.to_string()));
        if let Some(rule) = &dl.rule {
            record.insert("rule".into(), json!(rule));
        }
        record.insert("error".into(), json!(dl.error));
    }
    Value::Object(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::InProcess;
    use std::path::Path;

    fn config() -> Config {
        let text = r#"
[source]
type = "file"
path = "events.jsonl"
[targets.out]
type = "stdout"
[[rules]]
name = "orders"
match = { body = { type = ["order"] } }
actions = [{ type = "forward", target = "out", transform = "{id: .body.id}" }]
[[rules]]
name = "vip"
match = { attributes = { tier = ["gold"] } }
actions = [{ type = "drop" }]
"#;
        crate::config::load_str(Path::new("t.toml"), text, &|_| None).unwrap()
    }

    fn run(input: &str, options: TestOptions) -> Vec<Value> {
        let mut out = Vec::new();
        let config = config();
        run_tests(&config, input.as_bytes(), &mut out, options, &InProcess(&config.rules)).unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn prints_one_line_per_event_with_matches_and_outcome() {
        let lines = run("{\"type\":\"order\",\"id\":7}\nnot json\n", TestOptions::default());
        assert_eq!(lines[0]["event"], 0);
        assert_eq!(lines[0]["matched"], json!(["orders"]));
        assert_eq!(lines[0]["outcome"], "forward");
        assert_eq!(lines[0]["forward"][0]["body"], json!({"id": 7}));
        assert_eq!(lines[1]["matched"], json!([]));
        assert_eq!(lines[1]["outcome"], "dead_letter");
        assert_eq!(lines[1]["reason"], "unmatched");
    }

    #[test]
    fn envelope_lines_expose_attributes_to_patterns() {
        let lines = run(
            "{\"body\": {}, \"attributes\": {\"tier\": \"gold\"}}\n{\"nobody\": 1}\n",
            TestOptions {
                envelope: true,
                explain: false,
            },
        );
        assert_eq!(lines[0]["matched"], json!(["vip"]));
        assert_eq!(lines[0]["outcome"], "drop");
        assert!(lines[1]["error"].as_str().unwrap().contains("no `body`"));
    }

    #[test]
    fn a_line_that_is_not_utf8_is_dead_lettered_like_the_worker_does() {
        let mut out = Vec::new();
        let config = config();
        run_tests(
            &config,
            &b"\xff\xfe\n{\"type\":\"order\"}\n"[..],
            &mut out,
            TestOptions::default(),
            &InProcess(&config.rules),
        )
        .unwrap();
        let lines: Vec<Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["outcome"], "dead_letter");
        assert_eq!(lines[0]["reason"], "undecodable_body");
        assert_eq!(lines[1]["outcome"], "forward");
    }

    #[test]
    fn explain_adds_one_entry_per_rule() {
        let lines = run(
            "{\"type\":\"order\"}\n",
            TestOptions {
                envelope: false,
                explain: true,
            },
        );
        let explain = lines[0]["explain"].as_array().unwrap();
        assert_eq!(explain.len(), 2);
        assert_eq!(explain[0]["rule"], "orders");
        assert_eq!(explain[0]["matched"], true);
        assert_eq!(explain[1]["matched"], false);
    }
}
