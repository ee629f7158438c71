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

/// Every metric of one worker.
pub struct Metrics {
    received: Counter,
    settled: [Counter; 5],
    rule_matches: Vec<Counter>,
    publishes: Vec<[Counter; 4]>,
    publish_duration: Vec<Histogram>,
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
    /// Registers the metrics for a worker on `source` with these rules and targets.
    pub fn register(source: &str, rules: &[String], targets: &[String]) -> Self {
        let source = source.to_string();
        Self {
            received: counter!("veltrix_messages_received_total", "source" => source.clone()),
            settled: OUTCOMES.map(
                |o| counter!("veltrix_messages_settled_total", "source" => source.clone(), "outcome" => o.as_str()),
            ),
            rule_matches: rules
                .iter()
                .map(|r| counter!("veltrix_rule_matches_total", "rule" => r.clone()))
                .collect(),
            publishes: targets
                .iter()
                .map(|t| {
                    ["ok", "transient", "permanent", "throttled"]
                        .map(|r| counter!("veltrix_target_publishes_total", "target" => t.clone(), "result" => r))
                })
                .collect(),
            publish_duration: targets
                .iter()
                .map(|t| histogram!("veltrix_publish_duration_seconds", "target" => t.clone()))
                .collect(),
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

    /// Rule `rule` matched a message.
    pub fn rule_matched(&self, rule: usize) {
        if let Some(c) = self.rule_matches.get(rule) {
            c.increment(1);
        }
    }

    /// A publish call to target `target` ended.
    pub fn published(&self, target: usize, result: PublishResult, took: Duration) {
        if let Some(c) = self.publishes.get(target) {
            c[result as usize].increment(1);
        }
        if let Some(h) = self.publish_duration.get(target) {
            h.record(took.as_secs_f64());
        }
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
