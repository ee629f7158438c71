//! `veltrix test`: run events through the rules with no side effects and print, per event, which
//! rules matched and what would happen.
//!
//! Each input line is an event body (a line that is not JSON is a string body, as in the
//! worker). With `envelope`, each line is `{"body": …, "attributes": {…}}` (optionally
//! `delivery_attempt`), and the pattern sees that envelope.
//!
//! [`Format::Human`] prints a short report per event (outcome, and per rule the field that
//! decided, with what the pattern wanted and what the event had) and a summary; `human` renders
//! it. [`Format::Json`] prints one [`Line`] per event for scripts:
//! `{"event": <index from 0>, "matched": ["rule", …], "outcome": "ack|forward|drop|dead_letter|retry", …}`.

mod human;

use std::io::{BufRead, Write};

use serde::Serialize;
use serde_json::Value;
use veltrix_queue::{Attributes, SourceInfo};

use crate::config::Config;
use crate::rules::envelope;
use crate::rules::pattern::Explanation;
use crate::rules::plan::{Disposition, ForwardBody, Outcome, Plan, Reason};
use crate::rules::schema::Violation;
use crate::sandbox::RunTransforms;

/// Options of `veltrix test`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TestOptions {
    /// Lines are envelopes, not bodies.
    pub envelope: bool,
    /// Explain every field of every rule (JSON: an `explain` list per event).
    pub explain: bool,
    /// How reports are written.
    pub format: Format,
}

/// How `veltrix test` writes its reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line, for scripts.
    #[default]
    Json,
    /// A short report per event for people, with ANSI colours when `color`.
    Human {
        /// Colour the output (stdout is a terminal and `NO_COLOR` is unset).
        color: bool,
    },
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

/// Evaluates every line of `input` and writes one report per event to `out` (see
/// [`Format`]); transforms run with `transforms` (the sandbox, as in the worker).
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
    // People get each rule's deciding field, so the explanations are always computed for them.
    let explain = options.explain || matches!(options.format, Format::Human { .. });
    let mut counts = TestCounts::default();
    let mut tally = human::Tally::default();
    for (index, line) in input.split(b'\n').enumerate() {
        let line = line?;
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        let report = if options.envelope {
            let parsed = std::str::from_utf8(line)
                .map_err(|e| format!("line is not UTF-8: {e}"))
                .and_then(parse_envelope_line);
            match parsed {
                Err(error) => {
                    counts.invalid_lines += 1;
                    Line::Invalid { event: index, error }
                }
                Ok(e) => {
                    counts.events += 1;
                    let env = envelope::build(e.body, &e.attributes, &info, e.delivery_attempt);
                    let mut plan = config.rules.plan(&env, e.delivery_attempt);
                    finish(config, &mut plan, transforms);
                    Line::Report(report_for(config, index, &plan, &env, explain))
                }
            }
        } else {
            // Bodies go through exactly what the worker runs.
            counts.events += 1;
            let mut plan = config.rules.plan_message(line, &Attributes::new(), &info, 1);
            finish(config, &mut plan, transforms);
            // The envelope the patterns saw: a body that is not JSON is a string, as in the worker.
            let body = envelope::decode_body(line)
                .or_else(|_| std::str::from_utf8(line).map(|t| Value::String(t.to_string())))
                .unwrap_or(Value::Null);
            let env = envelope::build(body, &Attributes::new(), &info, 1);
            Line::Report(report_for(config, index, &plan, &env, explain))
        };
        match options.format {
            Format::Json => {
                serde_json::to_writer(&mut out, &report).map_err(std::io::Error::from)?;
                out.write_all(b"\n")?;
            }
            Format::Human { color } => {
                tally.add(&report);
                out.write_all(human::render(&report, options.explain, color).as_bytes())?;
            }
        }
    }
    if let Format::Human { color } = options.format {
        out.write_all(tally.render(color).as_bytes())?;
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

/// One output line: an event's report, or why its input line could not be read.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Line {
    /// The event was evaluated.
    Report(Report),
    /// The line was not a valid envelope.
    Invalid {
        /// Line index, from 0.
        event: usize,
        /// What was wrong with it.
        error: String,
    },
}

/// What `veltrix test` says of one event (its JSON shape is the `--format json` line).
#[derive(Debug, Serialize)]
pub struct Report {
    /// Line index, from 0.
    pub event: usize,
    /// Names of the matching rules, in file order.
    pub matched: Vec<String>,
    /// `ack`, `forward`, `drop`, `dead_letter` or `retry`.
    pub outcome: &'static str,
    /// Each forward: rule, target and, for transforms, the body sent.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub forward: Vec<ForwardReport>,
    /// For dead letters: `veltrix.reason`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For dead letters: the rule that decided, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// For dead letters: `veltrix.error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The dead letter comes from a rule's `dead_letter` action (its error says no more than
    /// the reason).
    #[serde(skip)]
    pub by_action: bool,
    /// With `--explain`: every rule, in file order, with why it did or did not match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explain: Option<Vec<RuleExplanation>>,
    /// For events no rule matched: the rules with the fewest failing fields, nearest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nearest: Vec<RuleExplanation>,
    /// For each matched rule with a schema: whether the body fits it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub schema: Vec<SchemaReport>,
}

/// A matched rule's schema check, in a [`Report`].
#[derive(Debug, Serialize)]
pub struct SchemaReport {
    /// The rule.
    pub rule: String,
    /// The schema file, as the config wrote it.
    pub schema: String,
    /// The body fits the schema.
    pub valid: bool,
    /// The first violations (at most [`crate::rules::schema::MAX_VIOLATIONS_LISTED`]).
    pub violations: Vec<Violation>,
    /// How many violations there are in all.
    pub total: usize,
}

/// One forward of a [`Report`].
#[derive(Debug, Serialize)]
pub struct ForwardReport {
    /// The rule.
    pub rule: String,
    /// The target.
    pub target: String,
    /// The transform's output (absent when the body is sent unchanged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

/// A rule's name with its [`Explanation`].
#[derive(Debug, Serialize)]
pub struct RuleExplanation {
    /// The rule.
    pub rule: String,
    /// Why it did or did not match.
    #[serde(flatten)]
    pub explanation: Explanation,
}

fn report_for(config: &Config, index: usize, plan: &Plan, env: &Value, explain: bool) -> Report {
    let rules = config.rules.rules();
    let named = |(i, explanation): (usize, Explanation)| RuleExplanation {
        rule: rules[i].name.clone(),
        explanation,
    };
    let forward = plan
        .forwards
        .iter()
        .map(|f| ForwardReport {
            rule: rules[f.rule].name.clone(),
            target: config.targets[f.target].name.clone(),
            body: match &f.body {
                ForwardBody::Transformed(bytes) => Some(serde_json::from_slice(bytes).unwrap_or(Value::Null)),
                _ => None,
            },
        })
        .collect();
    let dead_letter = match &plan.disposition {
        Disposition::DeadLetter(dl) => Some(dl),
        _ => None,
    };
    Report {
        event: index,
        matched: plan.matched.iter().map(|&i| rules[i].name.clone()).collect(),
        outcome: plan.outcome().as_str(),
        forward,
        reason: dead_letter.map(|dl| dl.reason.to_string()),
        rule: dead_letter.and_then(|dl| dl.rule.clone()),
        error: dead_letter.map(|dl| dl.error.clone()),
        by_action: dead_letter.is_some_and(|dl| matches!(dl.reason, Reason::Rule(_))),
        explain: explain.then(|| {
            (0..rules.len())
                .map(|i| named((i, config.rules.explain(i, env))))
                .collect()
        }),
        nearest: if plan.matched.is_empty() && plan.outcome() != Outcome::Retry {
            config.rules.nearest(env).into_iter().map(named).collect()
        } else {
            Vec::new()
        },
        schema: plan
            .matched
            .iter()
            .filter_map(|&i| {
                let check = config.rules.check_schema(i, env)?;
                Some(SchemaReport {
                    rule: rules[i].name.clone(),
                    schema: check.schema,
                    valid: check.total == 0,
                    violations: check.violations,
                    total: check.total,
                })
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::InProcess;
    use serde_json::json;
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
                ..TestOptions::default()
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
                explain: true,
                ..TestOptions::default()
            },
        );
        let explain = lines[0]["explain"].as_array().unwrap();
        assert_eq!(explain.len(), 2);
        assert_eq!(explain[0]["rule"], "orders");
        assert_eq!(explain[0]["matched"], true);
        assert_eq!(explain[1]["matched"], false);
    }
}
