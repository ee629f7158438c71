//! Hot reload, decided by pure code: what of a new config can replace the running one without a
//! restart, and which targets keep their connections.
//!
//! Rules, transforms, schemas, targets, `pipeline.dead_letter`, `pipeline.unmatched` and the
//! retry budget (`pipeline.retry.max_attempts`) reload. The source (with its `max_in_flight`,
//! pollers and byte budgets) and every other pipeline setting (backoff, drain, leases,
//! batching, the transform sandbox's budgets, `state_dir`) shape what the worker holds and
//! need a restart: a new config that changes one of them is refused as a whole, with the list
//! of those changes.
//! The pipeline executes the decision ([`crate::pipeline::Reloader`]): messages in flight finish
//! under the generation they started with.

use std::fmt;

use crate::config::{Config, TargetConfig};

/// What becomes of one target of the new config.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetStep {
    /// The running target of this name, with its connection, batches and circuit: its settings
    /// did not change.
    Keep(String),
    /// A new target, or one whose settings changed: opened afresh.
    Open(TargetConfig),
}

/// A reload the worker can carry out.
#[derive(Debug, Clone, PartialEq)]
pub struct ReloadPlan {
    /// Per target of the new config, in its order.
    pub targets: Vec<TargetStep>,
    /// Running targets the new config no longer has (or has changed): flushed and closed once
    /// the messages of the old generation are done.
    pub closed: Vec<String>,
}

impl ReloadPlan {
    /// How many targets keep their connection.
    pub fn kept(&self) -> usize {
        self.targets.iter().filter(|t| matches!(t, TargetStep::Keep(_))).count()
    }

    /// How many targets are opened.
    pub fn opened(&self) -> usize {
        self.targets.len() - self.kept()
    }
}

/// A new config that changes what only a restart can change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeedsRestart {
    /// Each change, as `field: running → new`.
    pub changes: Vec<String>,
}

impl fmt::Display for NeedsRestart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "not reloaded: {} a restart (the running config stays in force; restart the worker to apply it, or undo {}): {}",
            if self.changes.len() == 1 { "this change needs" } else { "these changes need" },
            if self.changes.len() == 1 { "it" } else { "them" },
            self.changes.join("; ")
        )
    }
}

impl std::error::Error for NeedsRestart {}

/// Decides how `next` replaces `running`.
pub fn decide(running: &Config, next: &Config) -> Result<ReloadPlan, NeedsRestart> {
    let changes = restart_only_changes(running, next);
    if !changes.is_empty() {
        return Err(NeedsRestart { changes });
    }
    let targets: Vec<TargetStep> = next
        .targets
        .iter()
        .map(|t| match running.targets.iter().find(|r| r.name == t.name) {
            Some(r) if r == t => TargetStep::Keep(t.name.clone()),
            _ => TargetStep::Open(t.clone()),
        })
        .collect();
    let closed = running
        .targets
        .iter()
        .filter(|r| {
            !targets
                .iter()
                .any(|t| matches!(t, TargetStep::Keep(name) if *name == r.name))
        })
        .map(|r| r.name.clone())
        .collect();
    Ok(ReloadPlan { targets, closed })
}

/// The restart-only differences between two configs, as `field: running → new`.
fn restart_only_changes(running: &Config, next: &Config) -> Vec<String> {
    let mut changes = Vec::new();
    if running.source != next.source {
        let describe = |c: &Config| format!("{} {}", c.source.kind(), c.source.name());
        let (a, b) = (describe(running), describe(next));
        if a == b {
            changes.push(format!("source: the settings of {a} changed"));
        } else {
            changes.push(format!("source: {a} → {b}"));
        }
    }
    let (a, b) = (&running.settings, &next.settings);
    let restart_only: [(&str, &dyn fmt::Debug, &dyn fmt::Debug); 14] = [
        ("source.max_in_flight", &a.max_in_flight, &b.max_in_flight),
        ("source.pollers", &a.pollers, &b.pollers),
        ("source.max_pollers", &a.max_pollers, &b.max_pollers),
        ("source.wait_time_secs", &a.receive_wait, &b.receive_wait),
        ("pipeline.retry (backoff)", &a.retry, &b.retry),
        ("pipeline.drain_timeout_secs", &a.drain_timeout, &b.drain_timeout),
        ("pipeline.max_lease_secs", &a.max_lease, &b.max_lease),
        ("pipeline.ack_flush_ms", &a.ack_linger, &b.ack_linger),
        ("pipeline.publish_flush_ms", &a.publish_linger, &b.publish_linger),
        ("source.max_body_bytes", &a.max_body_bytes, &b.max_body_bytes),
        (
            "source.max_in_flight_bytes",
            &a.max_in_flight_bytes,
            &b.max_in_flight_bytes,
        ),
        (
            "receive reservation",
            &a.receive_reserve_bytes,
            &b.receive_reserve_bytes,
        ),
        ("pipeline.transform", &a.sandbox, &b.sandbox),
        ("pipeline.state_dir", &running.state_dir, &next.state_dir),
    ];
    for (field, was, now) in restart_only {
        let (was, now) = (format!("{was:?}"), format!("{now:?}"));
        if was != now {
            changes.push(format!("{field}: {was} → {now}"));
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const BASE: &str = r#"
[source]
type = "file"
path = "events.jsonl"
max_in_flight = 256
[targets.orders]
type = "file"
path = "out/orders.jsonl"
[targets.audit]
type = "file"
path = "out/audit.jsonl"
[targets.dlq]
type = "file"
path = "out/dlq.jsonl"
[pipeline]
dead_letter = "dlq"
[[rules]]
name = "orders"
match = { body = { type = ["order"] } }
actions = [{ type = "forward", target = "orders" }]
"#;

    fn load(text: &str) -> Config {
        crate::config::load_str(Path::new("/etc/veltrix/veltrix.toml"), text, &|_| None).unwrap()
    }

    #[test]
    fn unchanged_targets_are_kept_changed_ones_reopened_and_dropped_ones_closed() {
        let running = load(BASE);
        let next = load(
            &BASE
                .replace("path = \"out/audit.jsonl\"", "path = \"out/audit-v2.jsonl\"")
                .replace(
                    "[targets.orders]",
                    "[targets.payments]\ntype = \"stdout\"\n[targets.orders]",
                )
                .replace("[targets.dlq]", "[targets.gone-soon]\ntype = \"stdout\"\n[targets.dlq]")
                .replace("type = [\"order\"]", "type = [\"order\", \"refund\"]"),
        );
        let plan = decide(&running, &next).unwrap();
        let steps: Vec<String> = plan
            .targets
            .iter()
            .map(|s| match s {
                TargetStep::Keep(name) => format!("keep {name}"),
                TargetStep::Open(t) => format!("open {}", t.name),
            })
            .collect();
        let mut sorted = steps.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            vec![
                "keep dlq",
                "keep orders",
                "open audit",
                "open gone-soon",
                "open payments"
            ]
        );
        assert_eq!(
            plan.closed,
            vec!["audit".to_string()],
            "the changed target's old connection closes"
        );
        assert_eq!((plan.kept(), plan.opened()), (2, 3));

        let back = decide(&next, &running).unwrap();
        let mut closed = back.closed.clone();
        closed.sort();
        assert_eq!(closed, vec!["audit", "gone-soon", "payments"]);
    }

    #[test]
    fn a_rules_only_change_keeps_every_target() {
        let running = load(BASE);
        let next = load(&format!(
            "{BASE}\n[[rules]]\nname = \"refunds\"\nmatch = {{ body = {{ type = [\"refund\"] }} }}\nactions = [{{ type = \"drop\" }}]\n"
        ));
        let plan = decide(&running, &next).unwrap();
        assert!(plan.closed.is_empty());
        assert_eq!(plan.opened(), 0);
    }

    #[test]
    fn source_and_capacity_changes_are_refused_with_what_changed() {
        let running = load(BASE);
        let next = load(
            &BASE
                .replace("path = \"events.jsonl\"", "path = \"other.jsonl\"")
                .replace("max_in_flight = 256", "max_in_flight = 512"),
        );
        let refused = decide(&running, &next).unwrap_err();
        assert_eq!(
            refused.changes,
            vec![
                "source: file /etc/veltrix/events.jsonl → file /etc/veltrix/other.jsonl".to_string(),
                "source.max_in_flight: 256 → 512".to_string(),
            ]
        );
        let text = refused.to_string();
        assert!(text.starts_with("not reloaded: these changes need a restart"), "{text}");
        let one = load(&BASE.replace("max_in_flight = 256", "max_in_flight = 64"));
        assert!(decide(&running, &one)
            .unwrap_err()
            .to_string()
            .starts_with("not reloaded: this change needs a restart"));
    }
}
