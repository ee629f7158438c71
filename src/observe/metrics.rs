//! Metric handles, registered once per worker so the hot path only bumps atomics.

use std::time::Duration;

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

use crate::rules::plan::Outcome;

/// Outcomes in label order.
const OUTCOMES: [Outcome; 5] = [
    Outcome::Forward,
    Outcome::Drop,
    Outcome::Ack,
    Outcome::DeadLetter,
    Outcome::Retry,
];

fn outcome_index(o: Outcome) -> usize {
    OUTCOMES.iter().position(|x| *x == o).expect("every outcome is listed")
}

/// Result label of a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishResult {
    /// Accepted.
    Ok,
    /// Failed, retry later.
    Transient,
    /// Refused for good.
    Permanent,
    /// Throttled (slowed down, not counted against the message).
    Throttled,
}

/// The metrics of one worker that do not depend on its rules and targets (those are
/// [`RuleMetrics`] and [`TargetMetrics`], registered per config generation and per target).
pub struct Metrics {
    received: Counter,
    settled: [Counter; 5],
    in_flight: Gauge,
    backlog: Gauge,
    lease_extensions: Counter,
    empty_receives: Counter,
    dead_letter_failures: Counter,
    ack_failures: Counter,
    receive_duration: Histogram,
    ack_duration: Histogram,
    processing_duration: Histogram,
}

impl Metrics {
    /// Registers the metrics for a worker on `source`.
    pub fn register(source: &str) -> Self {
        let source = source.to_string();
        Self {
            received: counter!("veltrix_messages_received_total", "source" => source.clone()),
            settled: OUTCOMES.map(
                |o| counter!("veltrix_messages_settled_total", "source" => source.clone(), "outcome" => o.as_str()),
            ),
            in_flight: gauge!("veltrix_in_flight"),
            backlog: gauge!("veltrix_backlog_messages", "source" => source.clone()),
            lease_extensions: counter!("veltrix_lease_extensions_total"),
            empty_receives: counter!("veltrix_empty_receives_total"),
            dead_letter_failures: counter!("veltrix_dead_letter_failures_total"),
            ack_failures: counter!("veltrix_ack_failures_total"),
            receive_duration: histogram!("veltrix_receive_duration_seconds"),
            ack_duration: histogram!("veltrix_ack_duration_seconds"),
            processing_duration: histogram!("veltrix_processing_duration_seconds"),
        }
    }

    /// Messages received.
    pub fn received(&self, n: u64) {
        self.received.increment(n);
        self.in_flight.increment(n as f64);
    }

    /// A message settled (its in-flight slot is free again).
    pub fn settled(&self, outcome: Outcome) {
        self.settled[outcome_index(outcome)].increment(1);
    }

    /// A message left the worker (settled, released or abandoned).
    pub fn left(&self) {
        self.in_flight.decrement(1.0);
    }

    /// Messages waiting in the source.
    pub fn backlog(&self, n: u64) {
        self.backlog.set(n as f64);
    }

    /// A message was dead-lettered for `reason`.
    pub fn dead_lettered(&self, reason: &str) {
        counter!("veltrix_dead_letters_total", "reason" => reason.to_string()).increment(1);
    }

    /// Lease extensions sent.
    pub fn leases_extended(&self, n: u64) {
        self.lease_extensions.increment(n);
    }

    /// A receive returned nothing.
    pub fn empty_receive(&self) {
        self.empty_receives.increment(1);
    }

    /// A dead-letter write failed.
    pub fn dead_letter_failed(&self) {
        self.dead_letter_failures.increment(1);
    }

    /// Acks failed for good.
    pub fn ack_failed(&self, n: u64) {
        self.ack_failures.increment(n);
    }

    /// A receive call took `took`.
    pub fn receive_took(&self, took: Duration) {
        self.receive_duration.record(took.as_secs_f64());
    }

    /// An ack call took `took`.
    pub fn ack_took(&self, took: Duration) {
        self.ack_duration.record(took.as_secs_f64());
    }

    /// Processing one message (plan, publishes, settle) took `took`.
    pub fn processing_took(&self, took: Duration) {
        self.processing_duration.record(took.as_secs_f64());
    }
}

/// Match counters of one rule set, by rule index (registered per config generation: the same
/// rule name counts on in the same series).
pub struct RuleMetrics(Vec<Counter>);

impl RuleMetrics {
    /// Counters for these rules, in order.
    pub fn register(rules: &[String]) -> Self {
        Self(
            rules
                .iter()
                .map(|r| counter!("veltrix_rule_matches_total", "rule" => r.clone()))
                .collect(),
        )
    }

    /// Rule `rule` matched a message.
    pub fn matched(&self, rule: usize) {
        if let Some(c) = self.0.get(rule) {
            c.increment(1);
        }
    }
}

/// Publish counters and durations of one target.
pub struct TargetMetrics {
    publishes: [Counter; 4],
    duration: Histogram,
}

impl TargetMetrics {
    /// The metrics of target `name`.
    pub fn register(name: &str) -> Self {
        Self {
            publishes: ["ok", "transient", "permanent", "throttled"]
                .map(|r| counter!("veltrix_target_publishes_total", "target" => name.to_string(), "result" => r)),
            duration: histogram!("veltrix_publish_duration_seconds", "target" => name.to_string()),
        }
    }

    /// A publish call ended.
    pub fn published(&self, result: PublishResult, took: Duration) {
        self.publishes[result as usize].increment(1);
        self.duration.record(took.as_secs_f64());
    }
}

/// The running config generation and the reloads, as metrics: `veltrix_config_generation`
/// (1, 2, …), `veltrix_config_info{hash}` (1 for the running config, 0 for the ones it
/// replaced) and `veltrix_config_reloads_total{result="ok|failed"}`.
pub fn config_running(generation: u64, hash: &str, replaced: Option<&str>) {
    gauge!("veltrix_config_generation").set(generation as f64);
    if let Some(old) = replaced.filter(|old| *old != hash) {
        gauge!("veltrix_config_info", "hash" => old.to_string()).set(0.0);
    }
    gauge!("veltrix_config_info", "hash" => hash.to_string()).set(1.0);
}

/// Counts a reload that took effect (`ok`) or did not (`failed`).
pub fn config_reload(ok: bool) {
    counter!("veltrix_config_reloads_total", "result" => if ok { "ok" } else { "failed" }).increment(1);
}
