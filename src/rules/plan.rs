//! What to do with one event: decided by pure code, executed by the pipeline.

use std::fmt;

use serde::Serialize;

/// Why a message is dead-lettered; written to `veltrix.reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// No rule matched and `pipeline.unmatched = "dead_letter"`.
    Unmatched,
    /// A `dead_letter` action, with the operator's reason.
    Rule(String),
    /// A transform failed for this event.
    TransformFailed,
    /// The body is not UTF-8.
    UndecodableBody,
    /// Every attempt of the retry budget failed.
    RetryBudgetExhausted,
    /// A target refused the message for good (payload too large, 4xx, …).
    TargetRejected,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::Unmatched => "unmatched",
            Reason::Rule(reason) => reason,
            Reason::TransformFailed => "transform_failed",
            Reason::UndecodableBody => "undecodable_body",
            Reason::RetryBudgetExhausted => "retry_budget_exhausted",
            Reason::TargetRejected => "target_rejected",
        })
    }
}

/// A dead-letter decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Why.
    pub reason: Reason,
    /// The rule that decided, if one did.
    pub rule: Option<String>,
    /// Details for `veltrix.error`.
    pub error: String,
}

/// The body a forward sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardBody {
    /// The message body, unchanged.
    Original,
    /// The transform's output, serialized.
    Transformed(Vec<u8>),
}

/// One publish to a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// Index of the rule in file order.
    pub rule: usize,
    /// Index of the target.
    pub target: usize,
    /// What to send.
    pub body: ForwardBody,
}

/// What happens to the message after the forwards succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Ack it.
    Ack,
    /// Nack it with backoff (a `retry` action of this rule).
    Retry {
        /// Index of the rule.
        rule: usize,
    },
    /// Write it to the dead-letter target, then ack.
    DeadLetter(DeadLetter),
}

/// The summary word for an event, as `veltrix test` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Acked without any action (unmatched with `unmatched = "ack"`).
    Ack,
    /// Forwarded to at least one target, then acked.
    Forward,
    /// Matched only `drop` actions.
    Drop,
    /// Written to the dead-letter target.
    DeadLetter,
    /// Redelivered later.
    Retry,
}

impl Outcome {
    /// The word used in output and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ack => "ack",
            Outcome::Forward => "forward",
            Outcome::Drop => "drop",
            Outcome::DeadLetter => "dead_letter",
            Outcome::Retry => "retry",
        }
    }
}

/// Everything decided for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Matching rules, in file order, cut after the first `final` one.
    pub matched: Vec<usize>,
    /// Publishes to run, in rule and action order.
    pub forwards: Vec<Forward>,
    /// What happens after the forwards.
    pub disposition: Disposition,
    /// Attempts allowed before transient failures dead-letter the message.
    pub max_attempts: u32,
}

impl Plan {
    /// A plan that dead-letters without running anything.
    pub fn dead_letter(reason: Reason, rule: Option<String>, error: String, max_attempts: u32) -> Self {
        Self {
            matched: Vec::new(),
            forwards: Vec::new(),
            disposition: Disposition::DeadLetter(DeadLetter { reason, rule, error }),
            max_attempts,
        }
    }

    /// The summary word.
    pub fn outcome(&self) -> Outcome {
        match &self.disposition {
            Disposition::DeadLetter(_) => Outcome::DeadLetter,
            Disposition::Retry { .. } => Outcome::Retry,
            Disposition::Ack if !self.forwards.is_empty() => Outcome::Forward,
            Disposition::Ack if !self.matched.is_empty() => Outcome::Drop,
            Disposition::Ack => Outcome::Ack,
        }
    }
}
