//! Processing one delivery: decode, plan, publish, then settle (ack or dead-letter), retrying
//! in place in between.
//!
//! The rule that keeps messages safe: a message is acked only after every forward succeeded,
//! or after it was written to the dead-letter target. A failed attempt keeps the message held
//! (lease extended) through its backoff and tries again ([`retry_budget`] decides what counts);
//! sends wait while a target's circuit is open or it throttles ([`Delivered`]). Any path that
//! gives up on the message (the drain, a dead-letter target refusing it) nacks it, so the
//! queue delivers it again.

use crate::observe::events::{
    DeadLetterWriteFailed, DeadLettered, LedgerWriteFailed, LogEvent, NackFailed, RetryScheduled,
};
use std::time::Duration;

use bytes::Bytes;
use veltrix_queue::file::{LINE_BYTES_ATTRIBUTE, RECORD_ERROR_ATTRIBUTE};
use veltrix_queue::{Delivery, OutboundMessage, Requeued};

use crate::pipeline::dead_letters::{dead_letter_message, Envelope};
use crate::pipeline::retry_budget::{self, Verdict};
use crate::pipeline::{own_attributes, Context};
use crate::rules::plan::{DeadLetter, Disposition, ForwardBody, Outcome, Plan, Reason};
use crate::targets::batching::Delivered;

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

/// How one attempt at a message ended.
enum Attempt {
    /// Every forward was written (or there were none): the plan's disposition decides.
    Done,
    /// A target refused the message for good.
    DeadLetter(DeadLetter),
    /// A forward failed transiently while its target was otherwise healthy; `epochs` are the
    /// failed targets' circuit epochs at the send (an outage since then forgives the failure).
    TargetFailed {
        error: String,
        not_before: Option<Duration>,
        epochs: Vec<(usize, u64)>,
    },
    /// The message itself needs another attempt whatever the targets do (a rule's `retry`
    /// action, a transform the sandbox could not run).
    Again(String),
    /// The drain started while the message was held for a target.
    Interrupted,
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
            explain: None,
            reason: Reason::BodyTooLarge,
            rule: None,
            error,
        });
    }
    d.attributes.get_str(RECORD_ERROR_ATTRIBUTE).map(|error| DeadLetter {
        explain: None,
        reason: Reason::MalformedRecord,
        rule: None,
        error: error.to_string(),
    })
}

/// Tries the message until it is acked or dead-lettered, retrying in place: it stays held
/// (leased, its ordering key waiting) through its backoff, and only its own failures count
/// ([`retry_budget`]). `delivery_attempt` becomes the worker's attempt number: 1 + the
/// message's own failures so far.
async fn process_inner(ctx: &Context, mut d: Delivery) -> Settled {
    // Past this the lease keeper stops extending the message: held any longer, it would be
    // delivered again while still held here, so it goes back to the queue instead.
    let hold_until = tokio::time::Instant::now() + ctx.settings.max_lease;
    // Failures counted by an earlier attempt that gave the message back ([`release`]).
    let carried = own_attributes::take_carried_failures(&mut d.attributes);
    own_attributes::rename_at_ingress(&mut d.attributes);
    let mut failures = 0u32;
    if let Some(c) = carried {
        failures = c.failures;
        if let Some(id) = c.first_id {
            d.id = id;
        }
    } else if let Some(f) = ctx.ledger.as_ref().and_then(|ledger| ledger.take(&d.id)) {
        // Released earlier to a source that gave it back as it was (SQS FIFO, Pub/Sub).
        failures = f;
    }
    d.delivery_attempt = failures.saturating_add(1);
    if let Some(dl) = unreadable(ctx.settings.max_body_bytes, &d) {
        return Box::pin(dead_letter(ctx, d, &dl, hold_until)).await;
    }
    // Forwards already written, as (rule, action): a retry sends only the others.
    let mut sent: Vec<(usize, usize)> = Vec::new();
    let mut first = true;
    loop {
        d.delivery_attempt = failures.saturating_add(1);
        let mut plan = plan_for(ctx, &d);
        if first {
            first = false;
            for &rule in &plan.matched {
                ctx.rule_metrics.matched(rule);
            }
        }
        let attempt = match run_transforms(ctx, &mut plan).await {
            Some(error) => Attempt::Again(error),
            None => run_forwards(ctx, &d, &plan, &mut sent, hold_until).await,
        };
        let (error, not_before, epochs) = match attempt {
            Attempt::Done => match plan.disposition.clone() {
                Disposition::Ack => {
                    ctx.acks.ack(d.token);
                    ctx.stats.settled(plan.outcome());
                    return Settled::Acked;
                }
                Disposition::DeadLetter(dl) => return Box::pin(dead_letter(ctx, d, &dl, hold_until)).await,
                Disposition::Retry { rule } => {
                    let name = &ctx.rules.rules()[rule].name;
                    (format!("rule `{name}` asked for a retry"), None, None)
                }
            },
            Attempt::Again(error) => (error, None, None),
            Attempt::TargetFailed {
                error,
                not_before,
                epochs,
            } => (error, not_before, Some(epochs)),
            Attempt::DeadLetter(dl) => return Box::pin(dead_letter(ctx, d, &dl, hold_until)).await,
            Attempt::Interrupted => return Box::pin(release(ctx, d, Duration::ZERO, failures)).await,
        };
        // A failure that is the message's own whatever the targets do counts now; one on a
        // target is judged after the backoff, when an outage would have shown.
        if epochs.is_none() {
            if let Verdict::Exhausted { failures: f } = retry_budget::count(failures, plan.max_attempts) {
                d.delivery_attempt = f;
                return Box::pin(dead_letter(
                    ctx,
                    d,
                    &exhausted(f, plan.max_attempts, &error),
                    hold_until,
                ))
                .await;
            }
        }
        RetryScheduled {
            message_id: d.id.clone(),
            attempt: d.delivery_attempt,
            error: error.clone(),
        }
        .emit();
        let backoff = ctx.settings.retry.delay(d.delivery_attempt, fastrand::f64());
        let delay = not_before.map_or(backoff, |n| n.max(backoff));
        let until = tokio::time::Instant::now() + delay;
        if until >= hold_until {
            return Box::pin(release(ctx, d, delay, failures)).await;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(until) => {}
            _ = ctx.draining.cancelled() => {
                // Waiting out a backoff at the drain: back to the queue for the rest of it.
                let rest = until.saturating_duration_since(tokio::time::Instant::now());
                return Box::pin(release(ctx, d, rest, failures)).await;
            }
        }
        let verdict = match epochs {
            None => retry_budget::count(failures, plan.max_attempts),
            Some(epochs) => {
                let outage = epochs
                    .iter()
                    .any(|&(target, epoch)| ctx.targets[target].guard().epoch() != epoch);
                retry_budget::judge(failures, plan.max_attempts, outage)
            }
        };
        match verdict {
            Verdict::Forgiven => ctx.stats.settled(Outcome::Retry),
            Verdict::Counted { failures: f } => {
                failures = f;
                ctx.stats.settled(Outcome::Retry);
            }
            Verdict::Exhausted { failures: f } => {
                d.delivery_attempt = f;
                return Box::pin(dead_letter(
                    ctx,
                    d,
                    &exhausted(f, plan.max_attempts, &error),
                    hold_until,
                ))
                .await;
            }
        }
    }
}

/// The dead letter of a message whose budget is spent.
fn exhausted(failures: u32, max_attempts: u32, error: &str) -> DeadLetter {
    DeadLetter {
        explain: None,
        reason: Reason::RetryBudgetExhausted,
        rule: None,
        error: format!("attempt {failures} of {max_attempts} failed: {error}"),
    }
}

/// Gives the message back to the queue (after `delay`) without counting anything against it.
/// A message with failures takes its count along where the source can carry it (an SQS
/// standard queue, the memory and file backends), so the next attempt, on any replica, goes on
/// from there; elsewhere (SQS FIFO, Pub/Sub) the worker's [`failure_ledger`] remembers it by
/// message id, and without a ledger the count starts again and the provider's delivery limit is
/// the backstop.
///
/// [`failure_ledger`]: crate::pipeline::failure_ledger
async fn release(ctx: &Context, d: Delivery, delay: Duration, failures: u32) -> Settled {
    ctx.stats.released(1);
    if failures == 0 {
        return nack_after(ctx, d, delay).await;
    }
    let mut attributes = own_attributes::restore_for_replay(&d.attributes);
    attributes.insert(
        own_attributes::ATTR_FAILURES,
        own_attributes::carried_failures_value(failures, &d.id),
    );
    let message = OutboundMessage {
        body: d.body.clone(),
        attributes,
        ordering_key: d.ordering_key.clone(),
        dedup_id: None,
    };
    // Recorded before the message can come back (to this worker, at once after a nack).
    if let Some(ledger) = &ctx.ledger {
        if let Err(e) = ledger.record(&d.id, failures) {
            LedgerWriteFailed { error: e.to_string() }.emit();
        }
    }
    match ctx.source.requeue(d.token, message, delay).await {
        Ok(Requeued::Carried) => {
            if let Some(ledger) = &ctx.ledger {
                ledger.forget(&d.id);
            }
        }
        Ok(Requeued::Released) => {}
        Err(e) => NackFailed {
            message_id: d.id.clone(),
            error: e.to_string(),
        }
        .emit(),
    }
    Settled::Retried(delay)
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

/// Publishes every forward not yet in `sent` (adding the ones written to it).
async fn run_forwards(
    ctx: &Context,
    d: &Delivery,
    plan: &Plan,
    sent: &mut Vec<(usize, usize)>,
    hold_until: tokio::time::Instant,
) -> Attempt {
    let pending = plan.forwards.iter().filter(|f| !sent.contains(&(f.rule, f.action)));
    let sends = pending.map(|f| {
        let rule = &ctx.rules.rules()[f.rule];
        let target = &ctx.targets[f.target];
        let make = move || {
            let body = match &f.body {
                ForwardBody::Original => d.body.clone(),
                ForwardBody::Transformed(bytes) => Bytes::from(bytes.clone()),
                ForwardBody::Pending(_) => unreachable!("transforms ran before the forwards"),
            };
            let mut attributes = d.attributes.clone();
            attributes.insert(ATTR_MESSAGE_ID, d.id.clone());
            attributes.insert(ATTR_RULE, rule.name.clone());
            attributes.insert(ATTR_ATTEMPT, d.delivery_attempt.to_string());
            OutboundMessage {
                body,
                attributes,
                ordering_key: d.ordering_key.clone(),
                // Unique per message, rule and action: two forwards of one message to one FIFO
                // queue are two messages, and a redelivery of the same forward is de-duplicated.
                dedup_id: target
                    .uses_dedup_ids()
                    .then(|| format!("{}:{}:{}", d.id, rule.name, f.action)),
            }
        };
        async move {
            (
                f,
                rule.name.as_str(),
                target.name(),
                target.deliver(make, &ctx.draining, hold_until).await,
            )
        }
    });
    let results = futures::future::join_all(sends).await;
    let mut transient: Option<String> = None;
    let mut not_before: Option<Duration> = None;
    let mut epochs = Vec::new();
    let mut interrupted = false;
    let mut refused = None;
    for (f, rule, target, delivered) in results {
        match delivered {
            Delivered::Sent => sent.push((f.rule, f.action)),
            Delivered::Interrupted => interrupted = true,
            Delivered::Failed { error, epoch } => {
                let what = format!("rule `{rule}`: target `{target}`: {error}");
                if !error.is_transient() {
                    refused.get_or_insert(DeadLetter {
                        explain: None,
                        reason: Reason::TargetRejected,
                        rule: Some(rule.to_string()),
                        error: what,
                    });
                    continue;
                }
                transient.get_or_insert(what);
                not_before = not_before.max(error.retry_after);
                epochs.push((f.target, epoch));
            }
        }
    }
    if let Some(dl) = refused {
        return Attempt::DeadLetter(dl);
    }
    if interrupted {
        return Attempt::Interrupted;
    }
    match transient {
        Some(error) => Attempt::TargetFailed {
            error,
            not_before,
            epochs,
        },
        None => Attempt::Done,
    }
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
async fn dead_letter(ctx: &Context, d: Delivery, dl: &DeadLetter, hold_until: tokio::time::Instant) -> Settled {
    let mut level = Envelope::Full;
    loop {
        let make = || dead_letter_message(&ctx.source_info, &d, dl, level);
        let error = match ctx.targets[ctx.dead_letter]
            .deliver(make, &ctx.draining, hold_until)
            .await
        {
            Delivered::Interrupted => {
                let failures = d.delivery_attempt.saturating_sub(1);
                return release(ctx, d, Duration::ZERO, failures).await;
            }
            Delivered::Failed { error, .. } => error,
            Delivered::Sent => {
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
