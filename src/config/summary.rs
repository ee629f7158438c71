//! The one-screen review `veltrix check` prints after validating: source, targets, dead letter,
//! retry budget and limits, and each rule with its pattern in short form and its actions.
//!
//! ```text
//! source       file examples/events.jsonl
//! targets      dlq           file examples/out/dead-letters.jsonl  (dead letter)
//!              orders        file examples/out/orders.jsonl
//! dead letter  dlq; unmatched events are dead-lettered
//! budget       5 failures of its own per message (outages do not count), backoff 500ms …
//! rules        in file order; a matching `final` rule stops evaluation
//!   1 heartbeats  body.type equals "heartbeat"
//!                 → drop  [final]
//! ```

use std::fmt::Write;

use crate::config::{Config, SourceConfig, TargetConfig, TargetKind};
use crate::rules::{Action, Unmatched};

/// The review text, ending in a newline.
pub fn summary(c: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "source       {}", source(&c.source));
    let width = c.targets.iter().map(|t| t.name.chars().count()).max().unwrap_or(0);
    for (i, t) in c.targets.iter().enumerate() {
        let label = if i == 0 { "targets" } else { "" };
        let role = if c.dead_letter == Some(i) {
            "  (dead letter)"
        } else {
            ""
        };
        let _ = writeln!(out, "{label:<12} {:<width$}  {}{role}{}", t.name, target(t), limits(t));
    }
    if c.targets.is_empty() {
        let _ = writeln!(out, "targets      none");
    }
    let dead_letter = c.dead_letter.map_or("none", |i| c.targets[i].name.as_str());
    let unmatched = match c.rules.unmatched() {
        Unmatched::DeadLetter => "unmatched events are dead-lettered",
        Unmatched::Ack => "unmatched events are acked (unmatched = \"ack\")",
    };
    let _ = writeln!(out, "dead letter  {dead_letter}; {unmatched}");
    let s = &c.settings;
    let _ = writeln!(
        out,
        "budget       {} failures of its own per message (outages do not count), backoff {} doubling to {}",
        c.rules.default_max_attempts(),
        humantime::format_duration(s.retry.initial_backoff),
        humantime::format_duration(s.retry.max_backoff),
    );
    let pollers = if s.max_pollers > s.pollers {
        format!("{} to {} pollers", s.pollers, s.max_pollers)
    } else {
        format!("{} poller{}", s.pollers, if s.pollers == 1 { "" } else { "s" })
    };
    let _ = writeln!(
        out,
        "in flight    {} messages, {} of bodies, bodies up to {}; {pollers}",
        s.max_in_flight,
        bytes(s.max_in_flight_bytes),
        bytes(s.max_body_bytes),
    );
    let rules = c.rules.rules();
    let _ = writeln!(
        out,
        "rules        {} in file order; a matching `final` rule stops evaluation",
        rules.len()
    );
    let number_width = rules.len().to_string().len();
    let name_width = rules.iter().map(|r| r.name.chars().count()).max().unwrap_or(0);
    let indent = " ".repeat(2 + number_width + 1 + name_width + 2);
    for (i, rule) in rules.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {:>number_width$} {:<name_width$}  {}",
            i + 1,
            rule.name,
            c.rules.describe_pattern(i)
        );
        let actions: Vec<String> = rule.actions.iter().map(|a| action(c, a)).collect();
        let mut flags = Vec::new();
        if rule.is_final {
            flags.push("final".to_string());
        }
        if let Some(n) = rule.max_attempts {
            flags.push(format!("max_attempts {n}"));
        }
        if let Some(schema) = &rule.schema {
            flags.push(format!("schema {}", schema.path()));
        }
        let flags = if flags.is_empty() {
            String::new()
        } else {
            format!("  [{}]", flags.join(", "))
        };
        let _ = writeln!(out, "{indent}→ {}{flags}", actions.join(", "));
    }
    out
}

/// `64 MiB`, `256 KiB`, `1000 bytes`.
fn bytes(n: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * 1024;
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= KIB && n.is_multiple_of(KIB) {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} bytes")
    }
}

fn source(s: &SourceConfig) -> String {
    match s {
        SourceConfig::File { path, .. } => format!("file {}", path.display()),
        SourceConfig::Sqs { queue_url, connect, .. } => {
            format!("sqs {queue_url}{}", endpoint(connect.endpoint_url.as_deref()))
        }
        SourceConfig::Pubsub {
            subscription,
            connect,
            streams,
            ..
        } => format!(
            "pubsub {subscription} ({streams} streams){}",
            endpoint(connect.endpoint.as_deref())
        ),
    }
}

fn endpoint(url: Option<&str>) -> String {
    url.map(|u| format!(" via {u}")).unwrap_or_default()
}

fn target(t: &TargetConfig) -> String {
    match &t.kind {
        TargetKind::File { path } => format!("file {}", path.display()),
        TargetKind::Stdout => "stdout".into(),
        TargetKind::Http { url, timeout, .. } => {
            format!("http {url} (timeout {})", humantime::format_duration(*timeout))
        }
        TargetKind::Sqs { queue_url, connect } => {
            format!("sqs {queue_url}{}", endpoint(connect.endpoint_url.as_deref()))
        }
        TargetKind::Pubsub { topic, connect } => format!("pubsub {topic}{}", endpoint(connect.endpoint.as_deref())),
    }
}

fn limits(t: &TargetConfig) -> String {
    let mut parts = Vec::new();
    if let Some(n) = t.limits.max_concurrency {
        parts.push(format!("max_concurrency {n}"));
    }
    if let Some(rate) = t.limits.rate_per_sec {
        parts.push(format!("{rate}/s"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("  [{}]", parts.join(", "))
    }
}

fn action(c: &Config, a: &Action) -> String {
    match a {
        Action::Forward { target, transform } => {
            let name = &c.targets[*target].name;
            match transform {
                Some(t) => format!("forward {name} with transform `{}`", t.source()),
                None => format!("forward {name}"),
            }
        }
        Action::Drop => "drop".into(),
        Action::DeadLetter { reason } => format!("dead_letter {reason:?}"),
        Action::Retry => "retry".into(),
    }
}
