//! Processing one delivery: decode, plan, publish, then settle (ack, nack or dead-letter).
//!
//! The rule that keeps messages safe: a message is acked only after every forward succeeded,
//! or after it was written to the dead-letter target. Any other path nacks it, so the queue
//! delivers it again.

use crate::observe::events::{DeadLetterWriteFailed, DeadLettered, LogEvent, NackFailed, RetryScheduled};
use std::time::Duration;

use bytes::Bytes;
use veltrix_queue::file::{LINE_BYTES_ATTRIBUTE, RECORD_ERROR_ATTRIBUTE};
use veltrix_queue::{Delivery, OutboundMessage};

use crate::pipeline::dead_letters::{dead_letter_message, Envelope};
use crate::pipeline::{own_attributes, Context};
use crate::rules::plan::{DeadLetter, Disposition, ForwardBody, Outcome, Plan, Reason};

pub use crate::pipeline::dead_letters::{
    ATTR_ATTEMPTS, ATTR_ERROR, ATTR_FAILED_AT, ATTR_MESSAGE_ID, ATTR_REASON, ATTR_RULE, ATTR_SOURCE, ATTR_TRIMMED,
    MAX_ERROR_ATTRIBUTE_BYTES,
};
/// Attribute added to forwarded messages: the delivery attempt.
pub const ATTR_ATTEMPT: &str = "veltrix.attempt";

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

/// Why a delivery cannot be looked at at all: a body over `max_body_bytes` (not parsed), or a
/// record line that is not a record.
pub fn unreadable(max_body_bytes: usize, d: &Delivery) -> Option<DeadLetter> {
    let cut_from = d.attributes.get_str(LINE_BYTES_ATTRIBUTE);
    if d.body.len() > max_body_bytes || cut_from.is_some() {
        let error = match cut_from {
            Some(full) => format!(
                "the line is {full} bytes, over source.max_body_bytes = {max_body_bytes}; this dead letter holds its first {} bytes",
                d.body.len()
            ),
            None => format!(
                "the body is {} bytes, over source.max_body_bytes = {max_body_bytes}",
                d.body.len()
            ),
        };
        return Some(DeadLetter {
            reason: Reason::BodyTooLarge,
            rule: None,
            error,
        });
    }
    d.attributes.get_str(RECORD_ERROR_ATTRIBUTE).map(|error| DeadLetter {
        reason: Reason::MalformedRecord,
        rule: None,
        error: error.to_string(),
    })
}

async fn process_inner(ctx: &Context, mut d: Delivery) -> Settled {
    own_attributes::rename_at_ingress(&mut d.attributes);
    if let Some(dl) = unreadable(ctx.settings.max_body_bytes, &d) {
        return dead_letter(ctx, d, &dl).await;
    }
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
    nack_after(ctx, d, delay).await
}

/// Nacks so the message comes back after `delay`.
async fn nack_after(ctx: &Context, d: Delivery, delay: Duration) -> Settled {
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

/// Writes the dead letter, then acks. A target that refuses it for good (too large, an
/// attribute it cannot take) gets a smaller envelope ([`Envelope`]); when even the smallest is
/// refused, or the write fails transiently, the message is nacked (the longest backoff for a
/// permanent refusal: the provider's own redrive policy ends it) and never acked unwritten.
async fn dead_letter(ctx: &Context, d: Delivery, dl: &DeadLetter) -> Settled {
    let mut level = Envelope::Full;
    loop {
        let message = dead_letter_message(&ctx.source_info, &d, dl, level);
        let error = match ctx.targets[ctx.dead_letter].send(message).await {
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
                return Settled::Acked;
            }
            Err(e) => e,
        };
        let permanent = !error.is_transient();
        DeadLetterWriteFailed {
            message_id: d.id.clone(),
            reason: dl.reason.to_string(),
            error: error.to_string(),
        }
        .emit();
        ctx.stats.dead_letter_failed();
        match level.smaller() {
            Some(smaller) if permanent => level = smaller,
            _ if permanent => {
                let delay = ctx.settings.retry.max_backoff;
                return nack_after(ctx, d, delay).await;
            }
            _ => return nack_with_backoff(ctx, d, None).await,
        }
    }
}
