use std::path::Path;

use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn load_toml(text: &str) -> Result<Config, ConfigError> {
    load_str(Path::new("/etc/veltrix/w.toml"), text, &no_env)
}

const VALID: &str = r#"
[source]
type = "file"
path = "events.jsonl"

[targets.out]
type = "file"
path = "out/forwarded.jsonl"

[targets.dlq]
type = "stdout"

[pipeline]
dead_letter = "dlq"
retry = { max_attempts = 3, initial_backoff_ms = 100, max_backoff_secs = 10 }

[[rules]]
name = "orders"
match = { body = { type = ["order.created"] } }
actions = [{ type = "forward", target = "out", transform = "{id: .body.id}" }]

[[rules]]
name = "no-coupon"
match = '{"body": {"coupon": [null]}}'
actions = [{ type = "drop" }]
"#;

fn only_problem(err: ConfigError) -> Diagnostic {
    let problems = err.problems().to_vec();
    assert_eq!(problems.len(), 1, "{err}");
    problems.into_iter().next().unwrap()
}

#[test]
fn valid_toml_loads_with_paths_relative_to_the_file() {
    let c = load_toml(VALID).unwrap();
    assert_eq!(
        c.source,
        SourceConfig::File {
            path: "/etc/veltrix/events.jsonl".into(),
            visibility_timeout: Duration::from_secs(30),
            format: veltrix_queue::file::LineFormat::Body,
        }
    );
    assert_eq!(
        c.targets[1].kind,
        TargetKind::File {
            path: "/etc/veltrix/out/forwarded.jsonl".into()
        }
    );
    assert_eq!(c.dead_letter, Some(0));
    assert_eq!(c.rules.rules().len(), 2);
    assert_eq!(c.rules.default_max_attempts(), 3);
    c.require_dead_letter(None).unwrap();
}

#[test]
fn json_config_has_the_same_structure() {
    let text = r#"{"source": {"type": "file", "path": "-"},
        "targets": {"dlq": {"type": "stdout"}},
        "pipeline": {"dead_letter": "dlq", "unmatched": "ack"},
        "rules": [{"name": "a", "match": {"body": {"x": [null]}}, "actions": [{"type": "drop"}]}]}"#;
    let c = load_str(Path::new("w.json"), text, &no_env).unwrap();
    assert_eq!(c.source.name(), "-");
}

#[test]
fn unknown_field_names_line_allowed_fields_and_suggestion() {
    let text = VALID.replace("path = \"events.jsonl\"", "path = \"events.jsonl\"\nmax_inflight = 5");
    let d = only_problem(load_toml(&text).unwrap_err());
    assert_eq!(d.message, "unknown field `max_inflight`");
    assert_eq!(d.position.unwrap().line, 5);
    assert!(d.allowed.unwrap().contains("`max_in_flight`"));
    assert_eq!(d.hint.unwrap(), "did you mean `max_in_flight`?");
}

#[test]
fn unknown_target_points_at_its_line() {
    let text = VALID.replace("target = \"out\"", "target = \"uot\"");
    let err = load_toml(&text).unwrap_err();
    let d = only_problem(err);
    assert_eq!(d.field.as_deref(), Some("rules[0].actions[0].target"));
    assert_eq!(d.position.unwrap().line, 20);
    assert_eq!(d.hint.as_deref(), Some("did you mean `out`?"));
}

#[test]
fn out_of_range_values_say_the_range() {
    let text = VALID.replace("max_attempts = 3", "max_attempts = 0");
    let d = only_problem(load_toml(&text).unwrap_err());
    assert_eq!(d.field.as_deref(), Some("pipeline.retry.max_attempts"));
    assert_eq!(d.allowed.as_deref(), Some("1 to 1000"));
    assert_eq!(d.position.unwrap().line, 15);
}

#[test]
fn invalid_pattern_names_its_rule() {
    let text = VALID.replace("type = [\"order.created\"]", "type = \"order.created\"");
    let d = only_problem(load_toml(&text).unwrap_err());
    assert!(d.message.contains("rule `orders`"), "{}", d.message);
    assert_eq!(d.position.unwrap().line, 19);
}

#[test]
fn bad_transform_is_reported() {
    let text = VALID.replace("{id: .body.id}", "{id: .body.id");
    let d = only_problem(load_toml(&text).unwrap_err());
    assert_eq!(d.field.as_deref(), Some("rules[0].actions[0].transform"));
    assert!(d.message.contains("jq syntax error"), "{}", d.message);
}

#[test]
fn all_problems_are_listed_in_file_order() {
    let text = VALID
        .replace("target = \"out\"", "target = \"nope\"")
        .replace("max_attempts = 3", "max_attempts = 0");
    let err = load_toml(&text).unwrap_err();
    let lines: Vec<usize> = err.problems().iter().map(|p| p.position.unwrap().line).collect();
    assert_eq!(lines, vec![15, 20]);
    assert!(err.to_string().contains("2 problems in /etc/veltrix/w.toml"));
}

#[test]
fn unknown_source_type_lists_types() {
    let text = VALID.replace(
        "type = \"file\"\npath = \"events.jsonl\"",
        "type = \"fiel\"\npath = \"events.jsonl\"",
    );
    let d = only_problem(load_toml(&text).unwrap_err());
    assert_eq!(d.message, "unknown type `fiel`");
    assert_eq!(d.hint.as_deref(), Some("did you mean `file`?"));
}

#[test]
fn missing_env_variable_names_field_and_variable() {
    let text = VALID.replace("path = \"events.jsonl\"", "path = \"${EVENTS_FILE}\"");
    let d = only_problem(load_toml(&text).unwrap_err());
    assert_eq!(d.field.as_deref(), Some("source.path"));
    assert!(d.message.contains("`EVENTS_FILE`"));
    let c = load_str(Path::new("/w.toml"), &text, &|n| {
        (n == "EVENTS_FILE").then(|| "/data/e.jsonl".into())
    })
    .unwrap();
    assert_eq!(c.source.name(), "/data/e.jsonl");
}

#[test]
fn syntax_error_has_line_and_column() {
    let err = load_toml("[source\ntype = \"file\"").unwrap_err();
    let d = only_problem(err);
    assert!(d.message.starts_with("syntax error"));
    assert_eq!(d.position.unwrap().line, 1);
}

#[test]
fn missing_dead_letter_target_is_explained() {
    let text = VALID.replace("dead_letter = \"dlq\"\n", "");
    let c = load_toml(&text).unwrap();
    let err = c.require_dead_letter(None).unwrap_err();
    assert!(err.to_string().contains("[targets.dlq]"), "{err}");
}

#[test]
fn duplicate_rule_names_are_rejected() {
    let text = VALID.replace("name = \"no-coupon\"", "name = \"orders\"");
    let d = only_problem(load_toml(&text).unwrap_err());
    assert!(d.message.contains("already used by rules[0]"));
}

#[test]
fn http_target_is_validated() {
    let text = VALID.replace(
        "[targets.dlq]\ntype = \"stdout\"",
        "[targets.dlq]\ntype = \"http\"\nurl = \"ftp://x\"\ntimeout_ms = 0\nheaders = { \"bad header\" = \"v\" }",
    );
    let err = load_toml(&text).unwrap_err();
    let fields: Vec<&str> = err.problems().iter().filter_map(|p| p.field.as_deref()).collect();
    assert!(fields.contains(&"targets.dlq.url"), "{err}");
    assert!(fields.contains(&"targets.dlq.timeout_ms"), "{err}");
    assert!(fields.contains(&"targets.dlq.headers.bad header"), "{err}");
    let ok = VALID.replace(
        "[targets.dlq]\ntype = \"stdout\"",
        "[targets.dlq]\ntype = \"http\"\nurl = \"https://handler.internal/events\"\nbearer_token_env = \"TOKEN\"",
    );
    let c = load_toml(&ok).unwrap();
    assert!(matches!(&c.targets[0].kind, TargetKind::Http { timeout, .. } if *timeout == Duration::from_secs(5)));
}

#[test]
fn pubsub_source_and_target_load_with_defaults() {
    let text = VALID
        .replace(
            "type = \"file\"\npath = \"events.jsonl\"",
            "type = \"pubsub\"\nsubscription = \"projects/p/subscriptions/orders\"\nendpoint = \"http://127.0.0.1:8085\"",
        )
        .replace(
            "[targets.dlq]\ntype = \"stdout\"",
            "[targets.dlq]\ntype = \"pubsub\"\ntopic = \"projects/p/topics/orders-dlq\"",
        );
    let c = load_toml(&text).unwrap();
    assert_eq!(
        c.source,
        SourceConfig::Pubsub {
            subscription: "projects/p/subscriptions/orders".into(),
            connect: PubSubConnect {
                endpoint: Some("http://127.0.0.1:8085".into())
            },
            streams: 2,
            max_outstanding_messages: 1000,
            max_outstanding_bytes: 50 << 20,
            visibility_timeout: None,
        }
    );
    assert_eq!(
        c.targets[0].kind,
        TargetKind::Pubsub {
            topic: "projects/p/topics/orders-dlq".into(),
            connect: PubSubConnect::default()
        }
    );
}

#[test]
fn pubsub_short_names_are_explained_with_the_full_form() {
    let text = VALID.replace(
        "type = \"file\"\npath = \"events.jsonl\"",
        "type = \"pubsub\"\nsubscription = \"orders-sub\"\nstreams = 0",
    );
    let err = load_toml(&text).unwrap_err();
    let problems = err.problems();
    let sub = problems
        .iter()
        .find(|p| p.field.as_deref() == Some("source.subscription"))
        .expect("subscription problem");
    assert_eq!(sub.position.unwrap().line, 4);
    assert_eq!(sub.allowed.as_deref(), Some("projects/PROJECT/subscriptions/NAME"));
    assert!(
        sub.hint
            .as_deref()
            .unwrap()
            .contains("projects/<your-project>/subscriptions/orders-sub"),
        "{err}"
    );
    let streams = problems
        .iter()
        .find(|p| p.field.as_deref() == Some("source.streams"))
        .expect("streams problem");
    assert_eq!(streams.allowed.as_deref(), Some("1 to 32"));
    let topic = VALID.replace(
        "[targets.dlq]\ntype = \"stdout\"",
        "[targets.dlq]\ntype = \"pubsub\"\ntopic = \"projects/p/subscriptions/x\"",
    );
    let d = only_problem(load_toml(&topic).unwrap_err());
    assert_eq!(d.field.as_deref(), Some("targets.dlq.topic"));
}
