//! The two traits the pipeline uses: [`Source`] to consume and [`Publisher`] to produce.

use std::time::Duration;

use async_trait::async_trait;

use crate::{AckToken, Delivery, OutboundMessage, QueueError};

/// Default [`Publisher::call_timeout`].
pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(60);

/// What a receive call returned.
#[derive(Debug)]
pub enum Received {
    /// Zero or more messages (zero after an empty long poll).
    Messages(Vec<Delivery>),
    /// The source is finite and has nothing left, now or later (a file read to its end with
    /// every line settled). Queues never return this.
    Exhausted,
}

/// Where messages come from, for logs, metrics and the `source` field patterns see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceInfo {
    /// `sqs`, `pubsub`, `file` or `memory`.
    pub kind: &'static str,
    /// Queue URL, subscription, path or memory queue name.
    pub name: String,
}

/// Provider limits the pipeline must respect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceLimits {
    /// Most messages one `receive` call may return (SQS: 10).
    pub max_receive_batch: usize,
    /// Most tokens one `ack` call may carry (SQS `DeleteMessageBatch`: 10).
    pub max_ack_batch: usize,
    /// Longest single visibility / ack-deadline change (SQS: 12 h, Pub/Sub: 600 s).
    pub max_lease: Duration,
    /// The lease a received message starts with (visibility timeout / ack deadline).
    pub initial_lease: Duration,
    /// Whether a `receive` that is still waiting may be dropped without hiding a message (it
    /// waits on a local buffer, not on a remote long poll that may already have taken
    /// messages): a drain then stops it at once instead of waiting for it to return.
    pub receive_cancel_safe: bool,
    /// Whether what a `receive` brings is bounded by no buffer of the source's own: a remote
    /// batch of up to `max_receive_batch` messages arrives at once (SQS). The pipeline then
    /// reserves that batch's worst case under `max_in_flight_bytes` while the receive is under
    /// way. False for sources that bound what they buffer (Pub/Sub flow control, the file
    /// source's read-ahead).
    pub receive_unbuffered: bool,
}

/// What [`Source::requeue`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeued {
    /// The message comes back as the given message, counters included.
    Carried,
    /// The message comes back as it was (nacked); the counters were not kept.
    Released,
}

/// Tokens whose ack failed, with the reason.
#[derive(Debug, thiserror::Error)]
#[error("{} ack(s) failed: {error}", failed.len())]
pub struct AckFailure {
    /// The tokens to retry (or give up on: the message then comes back, which is a duplicate,
    /// never a loss).
    pub failed: Vec<AckToken>,
    /// Why.
    pub error: QueueError,
}

/// A queue or subscription the worker consumes.
#[async_trait]
pub trait Source: Send + Sync + 'static {
    /// Kind and name, for logs and patterns.
    fn info(&self) -> SourceInfo;

    /// Provider limits.
    fn limits(&self) -> SourceLimits;

    /// Waits up to `wait` for at least one message and returns at most `max` of them.
    async fn receive(&self, max: usize, wait: Duration) -> Result<Received, QueueError>;

    /// Settles messages for good. Implementations batch per provider limit; the ones that failed
    /// are returned so the caller can retry them.
    async fn ack(&self, tokens: Vec<AckToken>) -> Result<(), AckFailure>;

    /// Makes the message visible again after `delay` (0 = now), clamped to provider limits.
    async fn nack(&self, token: AckToken, delay: Duration) -> Result<(), QueueError>;

    /// Gives the message back for another attempt, like [`Source::nack`], but as `message`:
    /// the body and attributes it arrived with plus the worker's carried counters (its own
    /// failure count), so the next receive, on any replica, reads them back. Sources that can
    /// do this without changing the order of anything (SQS standard queues re-send it and
    /// delete the original; the memory queue rewrites it in place) return
    /// [`Requeued::Carried`]; the default nacks and returns [`Requeued::Released`].
    async fn requeue(
        &self,
        token: AckToken,
        message: OutboundMessage,
        delay: Duration,
    ) -> Result<Requeued, QueueError> {
        let _ = message;
        self.nack(token, delay).await.map(|()| Requeued::Released)
    }

    /// Pushes the lease of in-flight messages to `by` from now, clamped to `limits().max_lease`.
    async fn extend(&self, tokens: Vec<AckToken>, by: Duration) -> Result<(), QueueError>;

    /// Messages waiting to be received, where the provider can tell (SQS
    /// `ApproximateNumberOfMessages`); `None` where it cannot.
    async fn backlog(&self) -> Option<u64> {
        None
    }

    /// A lasting problem the source knows of without a failed call (a Pub/Sub stream that
    /// keeps failing with a permanent error); `/readyz` shows it. The default reports none.
    fn health(&self) -> Result<(), String> {
        Ok(())
    }

    /// Called once after the worker stopped and every ack was handed over: flush what the
    /// provider client still buffers (Pub/Sub acks are sent in the background) and release
    /// streams. The default does nothing (SQS acks are synchronous).
    async fn close(&self) {}
}

/// A destination for forwarded messages and dead letters.
#[async_trait]
pub trait Publisher: Send + Sync + 'static {
    /// A short description for logs (`sqs https://…/orders`, `file out.jsonl`).
    fn describe(&self) -> String;

    /// Most messages one `publish` call may carry.
    fn max_batch(&self) -> usize;

    /// Publishes a batch; returns one result per message, in order. A message is written when
    /// its result is `Ok` (flushed to the OS for files; accepted by the service for queues).
    async fn publish(&self, batch: Vec<OutboundMessage>) -> Vec<Result<(), QueueError>>;

    /// Whether this target reads [`OutboundMessage::dedup_id`] (SQS FIFO queues); callers
    /// need not build ids for the others.
    fn uses_dedup_ids(&self) -> bool {
        false
    }

    /// Longest a `publish` call may take before the caller gives up on it (every message of
    /// the batch then failed transiently). Targets with a configured timeout of their own
    /// return more than it.
    fn call_timeout(&self) -> std::time::Duration {
        DEFAULT_PUBLISH_TIMEOUT
    }
}
