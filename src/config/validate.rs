//! Raw config → validated config: ranges, references, patterns and transforms.
//!
//! Every problem is collected (not just the first), each naming its field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::error::{did_you_mean, Diagnostic};
use super::raw::{RawAction, RawConfig, RawLineFormat, RawRule, RawSource, RawTarget, RawTargetDelivery, RawUnmatched};
use super::{Config, ConnectOptions, PubSubConnect, SourceConfig, TargetConfig, TargetKind};
use crate::pipeline::backoff::RetryPolicy;
use crate::pipeline::circuit::CircuitSettings;
use crate::pipeline::poller_scale::DEFAULT_MAX_POLLERS;
use crate::pipeline::settings::{Settings, TargetLimits};
use crate::rules::pattern::PatternSet;
use crate::rules::schema::{Schema, SchemaError, MAX_SCHEMA_BYTES};
use crate::rules::transform::Transform;
use crate::rules::{Action, Rule, RuleSet, Unmatched};
use crate::sandbox::SandboxSettings;
use veltrix_queue::file::LineFormat;

/// Longest retry delay or lease: the SQS visibility timeout maximum (12 h).
pub const MAX_DELAY_SECS: u64 = 43_200;
/// Largest `max_in_flight`.
pub const MAX_IN_FLIGHT: u32 = 65_536;
/// Largest `pollers`.
pub const MAX_POLLERS: u32 = 64;

/// Most Pub/Sub streaming-pull streams per worker.
pub const MAX_PUBSUB_STREAMS: u32 = 32;
/// Largest retry budget.
pub const MAX_ATTEMPTS: u32 = 1000;
/// Largest `max_body_bytes` of a file source (256 MiB).
pub const MAX_FILE_BODY_BYTES: u64 = 256 * 1024 * 1024;
/// Smallest `max_in_flight_bytes` (1 MiB).
pub const MIN_IN_FLIGHT_BYTES: u64 = 1024 * 1024;
/// Largest `max_in_flight_bytes` (16 GiB).
pub const MAX_IN_FLIGHT_BYTES: u64 = 16 * 1024 * 1024 * 1024;

struct Checker {
    problems: Vec<Diagnostic>,
}

impl Checker {
    fn range(&mut self, field: &str, value: u64, min: u64, max: u64, unit: &str) {
        if value < min || value > max {
            self.problems.push(
                Diagnostic::field(field, format!("{value}{unit} is out of range"))
                    .allowed(format!("{min}{unit} to {max}{unit}"))
                    .hint(format!("set `{}` to a value between {min} and {max}", leaf(field))),
            );
        }
    }
}

fn leaf(field: &str) -> &str {
    field.rsplit('.').next().unwrap_or(field)
}

fn resolve(base: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if path == "-" || p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn list(names: &[&str]) -> String {
    if names.is_empty() {
        return "(no targets are declared)".into();
    }
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

/// Checks `raw` and builds the config; relative paths are resolved against `base_dir`.
pub fn validate(raw: RawConfig, file: &Path, base_dir: &Path) -> Result<Config, Vec<Diagnostic>> {
    let mut c = Checker { problems: Vec::new() };

    let mut receive_wait = Duration::from_secs(1);
    let (source, max_in_flight, pollers, max_pollers, max_body_bytes, max_in_flight_bytes) = match raw.source {
        RawSource::File {
            path,
            max_in_flight,
            pollers,
            visibility_timeout_secs,
            format,
            max_body_bytes,
            max_in_flight_bytes,
        } => {
            c.range(
                "source.max_body_bytes",
                max_body_bytes,
                1,
                MAX_FILE_BODY_BYTES,
                " bytes",
            );
            c.range(
                "source.visibility_timeout_secs",
                visibility_timeout_secs,
                1,
                MAX_DELAY_SECS,
                " s",
            );
            if path.is_empty() {
                c.problems.push(
                    Diagnostic::field("source.path", "the path is empty")
                        .hint("give a file of one event per line, or \"-\" for stdin"),
                );
            }
            let source = SourceConfig::File {
                path: resolve(base_dir, &path),
                visibility_timeout: Duration::from_secs(visibility_timeout_secs),
                format: match format {
                    RawLineFormat::Body => LineFormat::Body,
                    RawLineFormat::Record => LineFormat::Record,
                },
            };
            // A file is read locally: its pollers stay as many as configured.
            (
                source,
                max_in_flight,
                pollers,
                Some(pollers),
                max_body_bytes,
                max_in_flight_bytes,
            )
        }
        RawSource::Sqs {
            queue_url,
            endpoint_url,
            region,
            wait_time_secs,
            max_in_flight,
            pollers,
            max_pollers,
            visibility_timeout_secs,
            max_body_bytes,
            max_in_flight_bytes,
        } => {
            c.range(
                "source.max_body_bytes",
                max_body_bytes,
                1,
                veltrix_sqs::limits::MAX_MESSAGE_BYTES as u64,
                " bytes",
            );
            check_queue_url(&mut c, "source.queue_url", &queue_url);
            check_endpoint(&mut c, "source.endpoint_url", endpoint_url.as_deref());
            c.range("source.wait_time_secs", wait_time_secs, 0, 20, " s");
            if let Some(v) = visibility_timeout_secs {
                c.range("source.visibility_timeout_secs", v, 1, MAX_DELAY_SECS, " s");
            }
            receive_wait = Duration::from_secs(wait_time_secs);
            let source = SourceConfig::Sqs {
                queue_url,
                connect: ConnectOptions { endpoint_url, region },
                visibility_timeout: visibility_timeout_secs.map(Duration::from_secs),
            };
            (
                source,
                max_in_flight,
                pollers,
                max_pollers,
                max_body_bytes,
                max_in_flight_bytes,
            )
        }
        RawSource::Pubsub {
            subscription,
            endpoint,
            max_in_flight,
            pollers,
            max_pollers,
            streams,
            max_outstanding_messages,
            max_outstanding_bytes,
            visibility_timeout_secs,
            max_body_bytes,
            max_in_flight_bytes,
        } => {
            c.range(
                "source.max_body_bytes",
                max_body_bytes,
                1,
                veltrix_pubsub::limits::MAX_MESSAGE_BYTES as u64,
                " bytes",
            );
            check_pubsub_name(&mut c, "source.subscription", &subscription, "subscriptions");
            check_endpoint(&mut c, "source.endpoint", endpoint.as_deref());
            c.range("source.streams", streams.into(), 1, MAX_PUBSUB_STREAMS.into(), "");
            c.range(
                "source.max_outstanding_messages",
                max_outstanding_messages,
                1,
                1_000_000,
                "",
            );
            c.range(
                "source.max_outstanding_bytes",
                max_outstanding_bytes,
                1024,
                1 << 30,
                " bytes",
            );
            if let Some(v) = visibility_timeout_secs {
                c.range(
                    "source.visibility_timeout_secs",
                    v,
                    1,
                    veltrix_pubsub::limits::MAX_ACK_DEADLINE.as_secs(),
                    " s",
                );
            }
            let source = SourceConfig::Pubsub {
                subscription,
                connect: PubSubConnect { endpoint },
                streams: streams as usize,
                max_outstanding_messages,
                max_outstanding_bytes,
                visibility_timeout: visibility_timeout_secs.map(Duration::from_secs),
            };
            (
                source,
                max_in_flight,
                pollers,
                max_pollers,
                max_body_bytes,
                max_in_flight_bytes,
            )
        }
    };
    c.range(
        "source.max_in_flight_bytes",
        max_in_flight_bytes,
        MIN_IN_FLIGHT_BYTES,
        MAX_IN_FLIGHT_BYTES,
        " bytes",
    );
    c.range(
        "source.max_in_flight",
        max_in_flight.into(),
        1,
        MAX_IN_FLIGHT.into(),
        "",
    );
    c.range("source.pollers", pollers.into(), 1, MAX_POLLERS.into(), "");
    let max_pollers = max_pollers.unwrap_or_else(|| (DEFAULT_MAX_POLLERS as u32).max(pollers));
    c.range(
        "source.max_pollers",
        max_pollers.into(),
        pollers.clamp(1, MAX_POLLERS).into(),
        MAX_POLLERS.into(),
        "",
    );

    let mut targets = Vec::new();
    for (name, target) in &raw.targets {
        let field = format!("targets.{name}");
        if !valid_name(name) {
            c.problems.push(
                Diagnostic::field(&field, format!("`{name}` is not a valid target name"))
                    .allowed("letters, digits, `-`, `_` and `.`"),
            );
        }
        let kind = match target {
            RawTarget::File { path, .. } => {
                if path.is_empty() {
                    c.problems
                        .push(Diagnostic::field(format!("{field}.path"), "the path is empty"));
                }
                TargetKind::File {
                    path: resolve(base_dir, path),
                }
            }
            RawTarget::Stdout { .. } => TargetKind::Stdout,
            RawTarget::Http {
                url,
                timeout_ms,
                headers,
                bearer_token_env,
                ..
            } => {
                check_http_url(&mut c, &format!("{field}.url"), url);
                if bearer_token_env.is_some() && !crate::targets::http::may_carry_token(url) {
                    c.problems.push(
                        Diagnostic::field(
                            format!("{field}.bearer_token_env"),
                            format!(
                                "a bearer token would be sent in clear text to {}",
                                crate::targets::http::redact_url(url)
                            ),
                        )
                        .allowed("an https:// url, or http:// to a loopback address (127.0.0.1, ::1, localhost)")
                        .hint("use the handler's https:// address, or remove `bearer_token_env`"),
                    );
                }
                c.range(&format!("{field}.timeout_ms"), *timeout_ms, 1, 600_000, " ms");
                for (k, v) in headers {
                    if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err()
                        || reqwest::header::HeaderValue::from_str(v).is_err()
                    {
                        c.problems.push(
                            Diagnostic::field(
                                format!("{field}.headers.{k}"),
                                format!("`{k}` is not a valid HTTP header"),
                            )
                            .allowed("a token name (letters, digits, `-`) and a visible ASCII value"),
                        );
                    }
                }
                TargetKind::Http {
                    url: url.clone(),
                    timeout: Duration::from_millis(*timeout_ms),
                    headers: headers.clone(),
                    bearer_token_env: bearer_token_env.clone(),
                }
            }
            RawTarget::Sqs {
                queue_url,
                endpoint_url,
                region,
                ..
            } => {
                check_queue_url(&mut c, &format!("{field}.queue_url"), queue_url);
                check_endpoint(&mut c, &format!("{field}.endpoint_url"), endpoint_url.as_deref());
                TargetKind::Sqs {
                    queue_url: queue_url.clone(),
                    connect: ConnectOptions {
                        endpoint_url: endpoint_url.clone(),
                        region: region.clone(),
                    },
                }
            }
            RawTarget::Pubsub { topic, endpoint, .. } => {
                check_pubsub_name(&mut c, &format!("{field}.topic"), topic, "topics");
                check_endpoint(&mut c, &format!("{field}.endpoint"), endpoint.as_deref());
                TargetKind::Pubsub {
                    topic: topic.clone(),
                    connect: PubSubConnect {
                        endpoint: endpoint.clone(),
                    },
                }
            }
        };
        let limits = target_limits(&mut c, &field, target.delivery());
        targets.push(TargetConfig {
            name: name.clone(),
            kind,
            limits,
        });
    }
    let target_names: Vec<&str> = raw.targets.keys().map(String::as_str).collect();
    let target_index = |name: &str| target_names.iter().position(|n| *n == name);
    let unknown_target = |field: String, name: &str| {
        let d = Diagnostic::field(field, format!("unknown target `{name}`")).allowed(list(&target_names));
        match did_you_mean(name, target_names.iter().copied()) {
            Some(s) => d.hint(format!("did you mean `{s}`?")),
            None => d.hint(format!("declare it as a table: [targets.{name}] with a `type`")),
        }
    };

    let p = &raw.pipeline;
    let dead_letter = match &p.dead_letter {
        None => None,
        Some(name) => {
            let i = target_index(name);
            if i.is_none() {
                c.problems.push(unknown_target("pipeline.dead_letter".into(), name));
            }
            i
        }
    };
    c.range(
        "pipeline.retry.max_attempts",
        p.retry.max_attempts.into(),
        1,
        MAX_ATTEMPTS.into(),
        "",
    );
    c.range(
        "pipeline.retry.initial_backoff_ms",
        p.retry.initial_backoff_ms,
        1,
        MAX_DELAY_SECS * 1000,
        " ms",
    );
    c.range(
        "pipeline.retry.max_backoff_secs",
        p.retry.max_backoff_secs,
        1,
        MAX_DELAY_SECS,
        " s",
    );
    if p.retry.initial_backoff_ms > p.retry.max_backoff_secs.saturating_mul(1000) {
        c.problems.push(
            Diagnostic::field(
                "pipeline.retry.initial_backoff_ms",
                format!(
                    "initial backoff {} ms is longer than max_backoff_secs = {} s",
                    p.retry.initial_backoff_ms, p.retry.max_backoff_secs
                ),
            )
            .hint("lower `initial_backoff_ms` or raise `max_backoff_secs`"),
        );
    }
    c.range("pipeline.drain_timeout_secs", p.drain_timeout_secs, 0, 3600, " s");
    c.range("pipeline.max_lease_secs", p.max_lease_secs, 1, MAX_DELAY_SECS, " s");
    c.range("pipeline.ack_flush_ms", p.ack_flush_ms, 0, 1000, " ms");
    c.range("pipeline.publish_flush_ms", p.publish_flush_ms, 0, 1000, " ms");
    let t = &p.transform;
    c.range("pipeline.transform.timeout_ms", t.timeout_ms, 1, 60_000, " ms");
    c.range(
        "pipeline.transform.max_output_bytes",
        t.max_output_bytes,
        1,
        veltrix_pubsub::limits::MAX_MESSAGE_BYTES as u64,
        " bytes",
    );
    c.range(
        "pipeline.transform.max_memory_bytes",
        t.max_memory_bytes,
        16 * 1024 * 1024,
        16 * 1024 * 1024 * 1024,
        " bytes",
    );
    c.range("pipeline.transform.processes", t.processes.into(), 1, 64, "");

    let mut rules = Vec::new();
    let mut patterns: Vec<Value> = Vec::new();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let mut schemas: Vec<(PathBuf, Arc<Schema>)> = Vec::new();
    for (i, r) in raw.rules.iter().enumerate() {
        let field = format!("rules[{i}]");
        if !valid_name(&r.name) {
            c.problems.push(
                Diagnostic::field(
                    format!("{field}.name"),
                    format!("`{}` is not a valid rule name", r.name),
                )
                .allowed("a non-empty name of letters, digits, `-`, `_` and `.`"),
            );
        }
        if let Some(first) = seen.insert(&r.name, i) {
            c.problems.push(
                Diagnostic::field(
                    format!("{field}.name"),
                    format!("rule name `{}` is already used by rules[{first}]", r.name),
                )
                .hint("give every rule a unique name; names appear in `veltrix test`, logs and dead letters"),
            );
        }
        patterns.push(parse_pattern(&mut c, &field, r));
        let mut rule = compile_rule(&mut c, &field, r, &target_index, &unknown_target);
        rule.schema = r
            .schema
            .as_deref()
            .and_then(|written| load_schema(&mut c, &format!("{field}.schema"), written, base_dir, &mut schemas));
        rules.push(rule);
    }

    let pattern_set = match PatternSet::compile(rules.iter().map(|r| r.name.as_str()).zip(patterns.iter())) {
        Ok(set) => Some(set),
        Err(e) => {
            let i = rules.iter().position(|r| r.name == e.rule).unwrap_or(0);
            let inner = if e.path.is_empty() {
                String::new()
            } else {
                format!(".{}", e.path)
            };
            c.problems.push(
                Diagnostic::field(
                    format!("rules[{i}].match{inner}"),
                    format!("invalid pattern in rule `{}`: {}", e.rule, e.reason),
                )
                .hint("patterns follow EventBridge syntax; see the rule language section of the README"),
            );
            None
        }
    };

    if !c.problems.is_empty() {
        return Err(c.problems);
    }
    let unmatched = match p.unmatched {
        RawUnmatched::DeadLetter => Unmatched::DeadLetter,
        RawUnmatched::Ack => Unmatched::Ack,
    };
    let rule_set = RuleSet::new(
        pattern_set.expect("no problems means patterns compiled"),
        rules,
        unmatched,
        p.retry.max_attempts,
    );
    let settings = Settings {
        max_in_flight: max_in_flight as usize,
        pollers: pollers as usize,
        max_pollers: max_pollers as usize,
        receive_wait,
        retry: RetryPolicy {
            initial_backoff: Duration::from_millis(p.retry.initial_backoff_ms),
            max_backoff: Duration::from_secs(p.retry.max_backoff_secs),
        },
        drain_timeout: Duration::from_secs(p.drain_timeout_secs),
        max_lease: Duration::from_secs(p.max_lease_secs),
        ack_linger: Duration::from_millis(p.ack_flush_ms),
        publish_linger: Duration::from_millis(p.publish_flush_ms),
        max_body_bytes: max_body_bytes as usize,
        max_in_flight_bytes: max_in_flight_bytes as usize,
        // The source's own call (SQS: a batch of ten bodies), as for any worker.
        receive_reserve_bytes: None,
        sandbox: SandboxSettings {
            program: SandboxSettings::default_program(),
            timeout: Duration::from_millis(t.timeout_ms),
            max_output_bytes: t.max_output_bytes as usize,
            max_memory_bytes: t.max_memory_bytes,
            processes: t.processes as usize,
        },
        target_limits: targets.iter().map(|t| t.limits).collect(),
    };
    Ok(Config {
        file: file.to_path_buf(),
        source,
        targets,
        dead_letter,
        settings,
        rules: Arc::new(rule_set),
        state_dir: p.state_dir.as_deref().map(|dir| resolve(base_dir, dir)),
        // Set by `load_str`, which has the text.
        hash: String::new(),
        schema_files: schemas.into_iter().map(|(path, _)| path).collect(),
    })
}

/// Largest `max_concurrency` of a target.
pub const MAX_TARGET_CONCURRENCY: u64 = 65_536;
/// Largest `rate_per_sec` of a target.
pub const MAX_TARGET_RATE_PER_SEC: f64 = 1_000_000.0;

/// Checks a target's circuit, concurrency and rate settings.
fn target_limits(c: &mut Checker, field: &str, d: RawTargetDelivery<'_>) -> TargetLimits {
    let circuit = d.circuit;
    c.range(
        &format!("{field}.circuit.failures"),
        circuit.failures.into(),
        1,
        10_000,
        "",
    );
    c.range(&format!("{field}.circuit.open_secs"), circuit.open_secs, 1, 3600, " s");
    c.range(
        &format!("{field}.circuit.max_open_secs"),
        circuit.max_open_secs,
        1,
        MAX_DELAY_SECS,
        " s",
    );
    if circuit.max_open_secs < circuit.open_secs {
        c.problems.push(
            Diagnostic::field(
                format!("{field}.circuit.max_open_secs"),
                format!(
                    "max_open_secs = {} is shorter than open_secs = {}",
                    circuit.max_open_secs, circuit.open_secs
                ),
            )
            .hint("raise `max_open_secs` or lower `open_secs`"),
        );
    }
    if let Some(n) = d.max_concurrency {
        c.range(
            &format!("{field}.max_concurrency"),
            n.into(),
            1,
            MAX_TARGET_CONCURRENCY,
            "",
        );
    }
    if let Some(rate) = d.rate_per_sec {
        if !(rate.is_finite() && rate > 0.0 && rate <= MAX_TARGET_RATE_PER_SEC) {
            c.problems.push(
                Diagnostic::field(format!("{field}.rate_per_sec"), format!("{rate} is out of range"))
                    .allowed(format!("more than 0, at most {MAX_TARGET_RATE_PER_SEC}"))
                    .hint("set `rate_per_sec` to messages per second, e.g. 100 or 0.5; leave it out for no limit"),
            );
        }
    }
    TargetLimits {
        circuit: CircuitSettings {
            failures: circuit.failures.max(1),
            open: Duration::from_secs(circuit.open_secs.max(1)),
            max_open: Duration::from_secs(circuit.max_open_secs.max(circuit.open_secs).max(1)),
        },
        max_concurrency: d.max_concurrency.map(|n| n.max(1) as usize),
        rate_per_sec: d.rate_per_sec,
    }
}

fn check_queue_url(c: &mut Checker, field: &str, url: &str) {
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        c.problems.push(
            Diagnostic::field(field, format!("`{url}` is not a queue URL"))
                .allowed("an SQS queue URL such as https://sqs.eu-west-1.amazonaws.com/123456789012/orders")
                .hint("use the URL (not the ARN or name): `aws sqs get-queue-url --queue-name NAME`, or the Terraform output"),
        );
    }
}

/// `projects/PROJECT/<collection>/NAME`, as Pub/Sub names resources.
fn check_pubsub_name(c: &mut Checker, field: &str, name: &str, collection: &str) {
    let parts: Vec<&str> = name.split('/').collect();
    let ok = parts.len() == 4
        && parts[0] == "projects"
        && parts[2] == collection
        && !parts[1].is_empty()
        && !parts[3].is_empty();
    if ok {
        return;
    }
    let singular = collection.trim_end_matches('s');
    let mut d = Diagnostic::field(field, format!("`{name}` is not a full {singular} name"))
        .allowed(format!("projects/PROJECT/{collection}/NAME"));
    d = if !name.is_empty() && !name.contains('/') {
        d.hint(format!(
            "did you mean `projects/<your-project>/{collection}/{name}`? (the Terraform output and `gcloud pubsub {collection} describe` print the full name)"
        ))
    } else {
        d.hint(format!(
            "use the full name, e.g. projects/my-project/{collection}/orders (the Terraform output prints it)"
        ))
    };
    c.problems.push(d);
}

fn check_http_url(c: &mut Checker, field: &str, url: &str) {
    if reqwest::Url::parse(url)
        .map(|u| u.scheme() == "http" || u.scheme() == "https")
        .unwrap_or(false)
    {
        return;
    }
    let shown = match reqwest::Url::parse(url) {
        Ok(_) => crate::targets::http::redact_url(url),
        Err(_) => url.to_string(),
    };
    c.problems.push(
        Diagnostic::field(field, format!("`{shown}` is not an http(s) URL"))
            .allowed("http://host[:port]/path or https://…")
            .hint("e.g. url = \"http://fraud.internal:8080/events\""),
    );
}

fn check_endpoint(c: &mut Checker, field: &str, endpoint: Option<&str>) {
    if let Some(e) = endpoint {
        if !(e.starts_with("https://") || e.starts_with("http://")) {
            c.problems.push(
                Diagnostic::field(field, format!("`{e}` is not a URL"))
                    .allowed("http:// or https:// URL")
                    .hint("for LocalStack: endpoint_url = \"http://127.0.0.1:4566\""),
            );
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
}

/// A `match` is a table or a JSON string; returns the pattern as a JSON value.
fn parse_pattern(c: &mut Checker, field: &str, r: &RawRule) -> Value {
    match &r.pattern {
        Value::String(text) => match serde_json::from_str::<Value>(text) {
            Ok(v) => v,
            Err(e) => {
                c.problems.push(
                    Diagnostic::field(format!("{field}.match"), format!("the pattern string is not valid JSON: {e}"))
                        .hint("write the pattern as a TOML table, or as a JSON object in single quotes: match = '{\"body\": {\"x\": [null]}}'"),
                );
                Value::Object(Default::default())
            }
        },
        other => other.clone(),
    }
}

fn compile_transform(c: &mut Checker, field: String, code: &str) -> Option<Arc<Transform>> {
    match Transform::compile(code) {
        Ok(t) => Some(Arc::new(t)),
        Err(e) => {
            c.problems.push(
                Diagnostic::field(field, format!("invalid transform: {e}"))
                    .hint("transforms use jq syntax, e.g. \"{id: .body.id, amount: .body.amount}\""),
            );
            None
        }
    }
}

/// Reads and compiles the schema file a rule names (each file once: rules that name the same
/// file share it).
fn load_schema(
    c: &mut Checker,
    field: &str,
    written: &str,
    base_dir: &Path,
    loaded: &mut Vec<(PathBuf, Arc<Schema>)>,
) -> Option<Arc<Schema>> {
    let path = resolve(base_dir, written);
    if let Some((_, schema)) = loaded.iter().find(|(p, _)| *p == path) {
        return Some(schema.clone());
    }
    let read = std::fs::metadata(&path).and_then(|m| {
        if m.len() > MAX_SCHEMA_BYTES as u64 {
            Ok(Err(m.len()))
        } else {
            std::fs::read_to_string(&path).map(Ok)
        }
    });
    let text = match read {
        Ok(Ok(text)) => text,
        Ok(Err(len)) => {
            c.problems.push(
                Diagnostic::field(field, format!("schema file {} is {len} bytes", path.display()))
                    .allowed(format!("up to {MAX_SCHEMA_BYTES} bytes"))
                    .hint("split the schema, or leave out examples and descriptions"),
            );
            return None;
        }
        Err(e) => {
            c.problems.push(
                Diagnostic::field(field, format!("cannot read schema file {}: {e}", path.display()))
                    .hint("the path is relative to the config file's directory, e.g. schema = \"schemas/order.json\""),
            );
            return None;
        }
    };
    match Schema::compile(written, &text) {
        Ok(schema) => {
            let schema = Arc::new(schema);
            loaded.push((path, schema.clone()));
            Some(schema)
        }
        Err(e) => {
            let hint = match e {
                SchemaError::Syntax { .. } => "fix the JSON at that line and column",
                SchemaError::Invalid { .. } => {
                    "check the keyword against the draft the schema's `$schema` names (2020-12 when it names none)"
                }
            };
            c.problems
                .push(Diagnostic::field(field, format!("schema {written}: {e}")).hint(hint));
            None
        }
    }
}

fn compile_rule(
    c: &mut Checker,
    field: &str,
    r: &RawRule,
    target_index: &dyn Fn(&str) -> Option<usize>,
    unknown_target: &dyn Fn(String, &str) -> Diagnostic,
) -> Rule {
    if r.actions.is_empty() {
        c.problems.push(
            Diagnostic::field(format!("{field}.actions"), "a rule needs at least one action")
                .allowed("`forward`, `drop`, `dead_letter`, `retry`")
                .hint("e.g. actions = [{ type = \"forward\", target = \"NAME\" }]"),
        );
    }
    if let Some(n) = r.max_attempts {
        c.range(&format!("{field}.max_attempts"), n.into(), 1, MAX_ATTEMPTS.into(), "");
    }
    let rule_transform = r
        .transform
        .as_deref()
        .and_then(|code| compile_transform(c, format!("{field}.transform"), code));
    let mut actions = Vec::new();
    for (j, a) in r.actions.iter().enumerate() {
        let afield = format!("{field}.actions[{j}]");
        actions.push(match a {
            RawAction::Forward { target, transform } => {
                let index = target_index(target).unwrap_or_else(|| {
                    c.problems.push(unknown_target(format!("{afield}.target"), target));
                    0
                });
                let transform = match transform {
                    Some(code) => compile_transform(c, format!("{afield}.transform"), code),
                    None => rule_transform.clone(),
                };
                Action::Forward {
                    target: index,
                    transform,
                }
            }
            RawAction::Drop {} => Action::Drop,
            RawAction::DeadLetter { reason } => {
                if reason.trim().is_empty() {
                    c.problems.push(
                        Diagnostic::field(format!("{afield}.reason"), "the reason is empty")
                            .hint("say why, e.g. reason = \"missing customer id\"; it is written to `veltrix.reason`"),
                    );
                }
                Action::DeadLetter { reason: reason.clone() }
            }
            RawAction::Retry {} => Action::Retry,
        });
    }
    Rule {
        name: r.name.clone(),
        is_final: r.is_final,
        max_attempts: r.max_attempts,
        schema: None,
        actions,
    }
}
