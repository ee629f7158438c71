//! Processing one delivery: decode, plan, publish, then settle (ack, nack or dead-letter).
//!
//! The rule that keeps messages safe: a message is acked only after every forward succeeded,
//! or after it was written to the dead-letter target. Any other path nacks it, so the queue
//! delivers it again.

use crate::observe::events::{DeadLetterWriteFailed, DeadLettered, LogEvent, NackFailed, RetryScheduled};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use veltrix_queue::{Delivery, OutboundMessage};

use crate::pipeline::{own_attributes, Context};
use crate::rules::plan::{DeadLetter, Disposition, ForwardBody, Outcome, Plan, Reason};

/// Attribute added to forwarded messages and dead letters: the source message id.
pub const ATTR_MESSAGE_ID: &str = "veltrix.message_id";
/// Attribute added to forwarded messages: the rule that forwarded it.
pub const ATTR_RULE: &str = "veltrix.rule";
/// Attribute added to forwarded messages: the delivery attempt.
pub const ATTR_ATTEMPT: &str = "veltrix.attempt";
/// Dead-letter attribute: why.
pub const ATTR_REASON: &str = "veltrix.reason";
/// Dead-letter attribute: the error in detail.
pub const ATTR_ERROR: &str = "veltrix.error";
/// Dead-letter attribute: delivery attempts made.
pub const ATTR_ATTEMPTS: &str = "veltrix.attempts";
/// Dead-letter attribute: `kind:name` of the source.
pub const ATTR_SOURCE: &str = "veltrix.source";
/// Dead-letter attribute: when, RFC 3339.
pub const ATTR_FAILED_AT: &str = "veltrix.failed_at";
/// Longest `veltrix.error` value, in bytes.
pub const MAX_ERROR_ATTRIBUTE_BYTES: usize = 1024;

/// How processing ended, for the ordering-key sequencer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Acked (or queued for ack).
    Acked,
    /// Nacked to come back after the delay.
    Retried(Duration),
}

/// Decides what to do with a delivery (pure apart from running transforms).
pub fn plan_for(ctx: &Context, d: &Delivery) -> Plan {
    ctx.rules
        .plan_message(&d.body, &d.attributes, &ctx.source_info, d.delivery_attempt)
}

/// What the publishes of a plan amounted to.
enum Step {
    Ack(Outcome),
    /// Retry with backoff, but not sooner than the given delay (a target's `Retry-After`).
    Retry(Option<Duration>),
    DeadLetter(DeadLetter),
}

/// Processes one delivery to the end.
pub async fn process(ctx: &Context, d: Delivery) -> Settled {
    let started = tokio::time::Instant::now();
    let settled = process_inner(ctx, d).await;
    ctx.stats.processing_took(started.elapsed());
    settled
}

async fn process_inner(ctx: &Context, mut d: Delivery) -> Settled {
    own_attributes::rename_at_ingress(&mut d.attributes);
    let mut plan = plan_for(ctx, &d);
    for &rule in &plan.matched {
        ctx.stats.rule_matched(rule);
    }
    if let Some(error) = run_transforms(ctx, &mut plan).await {
        RetryScheduled {
            message_id: d.id.clone(),
            attempt: d.delivery_attempt,
            error: error.clone(),
        }
        .emit();
        return retry(ctx, d, None).await;
    }
    let step = run_forwards(ctx, &d, &plan).await;
    let step = match step {
        Some(step) => step,
        None => match plan.disposition.clone() {
            Disposition::Ack => Step::Ack(plan.outcome()),
            Disposition::Retry { .. } => Step::Retry(None),
            Disposition::DeadLetter(dl) => Step::DeadLetter(dl),
        },
    };
    match step {
        Step::Ack(outcome) => {
            ctx.acks.ack(d.token);
            ctx.stats.settled(outcome);
            Settled::Acked
        }
        Step::Retry(not_before) => retry(ctx, d, not_before).await,
        Step::DeadLetter(dl) => dead_letter(ctx, d, &dl).await,
    }
}

/// Runs the plan's pending transforms in the sandbox, all at once. Returns an error when the
/// sandbox could not run them (the message is retried unchanged); a transform that failed or
/// broke its budget has turned the plan into a dead letter.
async fn run_transforms(ctx: &Context, plan: &mut Plan) -> Option<String> {
    let pending = plan.pending_transforms();
    if pending.is_empty() {
        return None;
    }
    let Some(sandbox) = &ctx.sandbox else {
        return Some("no transform sandbox is running".into());
    };
    let input = plan.transform_input.clone().unwrap_or_default();
    let runs = pending.iter().map(|&id| {
        let input = input.clone();
        async move { (id, sandbox.run(id, input).await) }
    });
    let outputs = futures::future::join_all(runs).await;
    plan.apply_transform_outputs(ctx.rules.rules(), outputs)
}

/// Publishes every forward; returns a step when a failure overrides the plan's disposition.
async fn run_forwards(ctx: &Context, d: &Delivery, plan: &Plan) -> Option<Step> {
    if plan.forwards.is_empty() {
        return None;
    }
    let sends = plan.forwards.iter().map(|f| {
        let rule = &ctx.rules.rules()[f.rule];
        let body = match &f.body {
            ForwardBody::Original => d.body.clone(),
            ForwardBody::Transformed(bytes) => Bytes::from(bytes.clone()),
            ForwardBody::Pending(_) => unreachable!("transforms ran before the forwards"),
        };
        let mut attributes = d.attributes.clone();
        attributes.insert(ATTR_MESSAGE_ID, d.id.clone());
        attributes.insert(ATTR_RULE, rule.name.clone());
        attributes.insert(ATTR_ATTEMPT, d.delivery_attempt.to_string());
        let message = OutboundMessage {
            body,
            attributes,
            ordering_key: d.ordering_key.clone(),
            // Unique per message, rule and action: two forwards of one message to one FIFO
            // queue are two messages, and a redelivery of the same forward is de-duplicated.
            dedup_id: Some(format!("{}:{}:{}", d.id, rule.name, f.action)),
        };
        let target = &ctx.targets[f.target];
        async move { (rule.name.as_str(), target.name(), target.send(message).await) }
    });
    let results = futures::future::join_all(sends).await;
    let mut transient: Option<String> = None;
    let mut not_before: Option<Duration> = None;
    for (rule, target, result) in results {
        if let Err(e) = result {
            let what = format!("rule `{rule}`: target `{target}`: {e}");
            if !e.is_transient() {
                return Some(Step::DeadLetter(DeadLetter {
                    reason: Reason::TargetRejected,
                    rule: Some(rule.to_string()),
                    error: what,
                }));
            }
            transient.get_or_insert(what);
            not_before = not_before.max(e.retry_after);
        }
    }
    let error = transient?;
    if d.delivery_attempt >= plan.max_attempts {
        return Some(Step::DeadLetter(DeadLetter {
            reason: Reason::RetryBudgetExhausted,
            rule: None,
            error: format!(
                "attempt {} of {} failed: {error}",
                d.delivery_attempt, plan.max_attempts
            ),
        }));
    }
    RetryScheduled {
        message_id: d.id.clone(),
        attempt: d.delivery_attempt,
        error: error.to_string(),
    }
    .emit();
    Some(Step::Retry(not_before))
}

async fn retry(ctx: &Context, d: Delivery, not_before: Option<Duration>) -> Settled {
    let settled = nack_with_backoff(ctx, d, not_before).await;
    ctx.stats.settled(Outcome::Retry);
    settled
}

/// Nacks with the backoff for this attempt (but not sooner than `not_before`); the message is
/// not acked and comes back after the delay.
async fn nack_with_backoff(ctx: &Context, d: Delivery, not_before: Option<Duration>) -> Settled {
    let backoff = ctx.settings.retry.delay(d.delivery_attempt, fastrand::f64());
    let delay = not_before.map_or(backoff, |n| n.max(backoff));
    if let Err(e) = ctx.source.nack(d.token, delay).await {
        // The lease runs out instead and the message comes back a little later.
        NackFailed {
            message_id: d.id.clone(),
            error: e.to_string(),
        }
        .emit();
    }
    Settled::Retried(delay)
}

async fn dead_letter(ctx: &Context, d: Delivery, dl: &DeadLetter) -> Settled {
    let message = dead_letter_message(ctx, &d, dl);
    match ctx.targets[ctx.dead_letter].send(message).await {
        Ok(()) => {
            DeadLettered {
                message_id: d.id.clone(),
                reason: dl.reason.to_string(),
                rule: dl.rule.clone(),
            }
            .emit();
            ctx.acks.ack(d.token);
            ctx.stats.settled(Outcome::DeadLetter);
            ctx.stats.dead_lettered(&dl.reason.to_string());
            Settled::Acked
        }
        Err(e) => {
            DeadLetterWriteFailed {
                message_id: d.id.clone(),
                reason: dl.reason.to_string(),
                error: e.to_string(),
            }
            .emit();
            ctx.stats.dead_letter_failed();
            nack_with_backoff(ctx, d, None).await
        }
    }
}

/// The dead letter: the original body unchanged, the original attributes plus `veltrix.*`.
pub fn dead_letter_message(ctx: &Context, d: &Delivery, dl: &DeadLetter) -> OutboundMessage {
    let mut attributes = d.attributes.clone();
    attributes.insert(ATTR_REASON, dl.reason.to_string());
    if let Some(rule) = &dl.rule {
        attributes.insert(ATTR_RULE, rule.clone());
    }
    attributes.insert(ATTR_ERROR, truncate(&dl.error, MAX_ERROR_ATTRIBUTE_BYTES));
    attributes.insert(ATTR_ATTEMPTS, d.delivery_attempt.to_string());
    attributes.insert(
        ATTR_SOURCE,
        format!("{}:{}", ctx.source_info.kind, ctx.source_info.name),
    );
    attributes.insert(ATTR_MESSAGE_ID, d.id.clone());
    attributes.insert(
        ATTR_FAILED_AT,
        humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
    );
    OutboundMessage {
        body: d.body.clone(),
        attributes,
        ordering_key: d.ordering_key.clone(),
        dedup_id: Some(format!("{}:dead-letter", d.id)),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
