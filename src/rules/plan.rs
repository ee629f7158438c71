//! What to do with one event: decided by pure code, executed by the pipeline.

use std::fmt;

use serde::Serialize;

use crate::sandbox::RunError;

/// Why a message is dead-lettered; written to `veltrix.reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// No rule matched and `pipeline.unmatched = "dead_letter"`.
    Unmatched,
    /// A `dead_letter` action, with the operator's reason.
    Rule(String),
    /// A matched rule's schema does not accept the body.
    SchemaInvalid,
    /// A transform failed for this event.
    TransformFailed,
    /// A transform broke its time, output-size or memory budget on this event.
    TransformBudgetExceeded,
    /// The body is not UTF-8.
    UndecodableBody,
    /// The body is larger than the source's `max_body_bytes`.
    BodyTooLarge,
    /// A line of a `record` file source is not a record.
    MalformedRecord,
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
            Reason::SchemaInvalid => "schema_invalid",
            Reason::TransformFailed => "transform_failed",
            Reason::TransformBudgetExceeded => "transform_budget_exceeded",
            Reason::UndecodableBody => "undecodable_body",
            Reason::BodyTooLarge => "body_too_large",
            Reason::MalformedRecord => "malformed_record",
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
    /// For `veltrix.explain`: why no rule matched (the nearest rules and their failing
    /// fields), for unmatched events.
    pub explain: Option<String>,
}

/// The body a forward sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardBody {
    /// The message body, unchanged.
    Original,
    /// The transform's output, serialized.
    Transformed(Vec<u8>),
    /// The output of transform `n` (an index into the rule set's transforms), not run yet.
    Pending(usize),
}

/// One publish to a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// Index of the rule in file order.
    pub rule: usize,
    /// Index of the action within its rule.
    pub action: usize,
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
    /// The envelope, as JSON, that pending transforms read (set when a forward is pending).
    pub transform_input: Option<Vec<u8>>,
}

impl Plan {
    /// A plan that dead-letters without running anything.
    pub fn dead_letter(reason: Reason, rule: Option<String>, error: String, max_attempts: u32) -> Self {
        Self {
            matched: Vec::new(),
            forwards: Vec::new(),
            disposition: Disposition::DeadLetter(DeadLetter {
                reason,
                rule,
                error,
                explain: None,
            }),
            max_attempts,
            transform_input: None,
        }
    }

    /// Transforms still to run, each once, in forward order.
    pub fn pending_transforms(&self) -> Vec<usize> {
        let mut out = Vec::new();
        for f in &self.forwards {
            if let ForwardBody::Pending(id) = f.body {
                if !out.contains(&id) {
                    out.push(id);
                }
            }
        }
        out
    }

    /// Takes the output of every pending transform from `result`. When one failed, the plan
    /// becomes a dead letter of the first failing forward's rule and nothing is forwarded.
    /// Returns the error of a transform that could not run at all ([`RunError::Unavailable`]):
    /// the message is then retried later, unchanged.
    pub fn complete_transforms(
        &mut self,
        rules: &[crate::rules::Rule],
        mut result: impl FnMut(usize) -> Result<Vec<u8>, RunError>,
    ) -> Option<String> {
        let mut outputs: Vec<(usize, Result<Vec<u8>, RunError>)> = Vec::new();
        for id in self.pending_transforms() {
            outputs.push((id, result(id)));
        }
        self.apply_transform_outputs(rules, outputs)
    }

    /// Like [`Plan::complete_transforms`], with the outputs already at hand.
    pub fn apply_transform_outputs(
        &mut self,
        rules: &[crate::rules::Rule],
        outputs: Vec<(usize, Result<Vec<u8>, RunError>)>,
    ) -> Option<String> {
        let output = |id: usize| outputs.iter().find(|(i, _)| *i == id).map(|(_, r)| r);
        let mut failure = None;
        for f in &self.forwards {
            let ForwardBody::Pending(id) = f.body else { continue };
            let (reason, error) = match output(id) {
                Some(Ok(_)) => continue,
                Some(Err(RunError::Unavailable(e))) => return Some(e.clone()),
                Some(Err(RunError::Failed(e))) => (Reason::TransformFailed, e.clone()),
                Some(Err(RunError::OverBudget(e))) => (Reason::TransformBudgetExceeded, e.clone()),
                None => (Reason::TransformFailed, "the transform was not run".to_string()),
            };
            failure = Some(DeadLetter {
                explain: None,
                reason,
                rule: Some(rules[f.rule].name.clone()),
                error,
            });
            break;
        }
        if let Some(dl) = failure {
            self.forwards.clear();
            self.disposition = Disposition::DeadLetter(dl);
            self.transform_input = None;
            return None;
        }
        for f in &mut self.forwards {
            if let ForwardBody::Pending(id) = f.body {
                if let Some(Ok(bytes)) = output(id) {
                    f.body = ForwardBody::Transformed(bytes.clone());
                }
            }
        }
        self.transform_input = None;
        None
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
