//! A batching front for a [`Publisher`]: callers send one message and await its own result,
//! while a task publishes what has queued up in provider-sized batches.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use veltrix_queue::{OutboundMessage, Publisher, QueueError};

use crate::observe::metrics::{PublishResult, TargetMetrics};
use crate::pipeline::batch::{spawn_batcher, Batcher};
use crate::targets::guard::{AfterResult, TargetGuard};

/// Publish calls in flight at once per target.
pub const PUBLISH_CONCURRENCY: usize = 16;

type Pending = (OutboundMessage, oneshot::Sender<Result<(), QueueError>>);

/// How [`BatchingPublisher::deliver`] ended.
#[derive(Debug)]
pub enum Delivered {
    /// Written.
    Sent,
    /// Failed because of this message: refused for good, or failed transiently while the
    /// target was otherwise healthy. `epoch` is the target circuit's epoch when it was sent
    /// (see [`crate::pipeline::retry_budget`]).
    Failed {
        /// Why.
        error: QueueError,
        /// The circuit's epoch at the send.
        epoch: u64,
    },
    /// The worker is draining, or the message was held past its longest hold, while it
    /// waited for the target (circuit open, throttled): release it.
    Interrupted,
}

/// One target, batched.
pub struct BatchingPublisher {
    name: String,
    description: String,
    dedup_ids: bool,
    guard: Arc<TargetGuard>,
    tx: UnboundedSender<Pending>,
    /// Taken by the first [`BatchingPublisher::finish`].
    batcher: Mutex<Option<Batcher>>,
}

impl BatchingPublisher {
    /// Starts the batch task for `publisher`, sending through `guard`.
    pub fn spawn(name: String, publisher: Arc<dyn Publisher>, guard: Arc<TargetGuard>, linger: Duration) -> Self {
        let description = publisher.describe();
        let dedup_ids = publisher.uses_dedup_ids();
        let max = publisher.max_batch();
        let metrics = Arc::new(TargetMetrics::register(&name));
        let (tx, batcher) = spawn_batcher(max, linger, PUBLISH_CONCURRENCY, move |batch: Vec<Pending>| {
            let publisher = publisher.clone();
            let metrics = metrics.clone();
            async move {
                let (messages, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
                let count = messages.len();
                let started = tokio::time::Instant::now();
                let limit = publisher.call_timeout();
                let mut results = match tokio::time::timeout(limit, publisher.publish(messages)).await {
                    Ok(results) => results,
                    Err(_) => {
                        let error = QueueError::transient(format!(
                            "the target did not answer a publish within {} s",
                            limit.as_secs()
                        ));
                        vec![Err(error); count]
                    }
                };
                let took = started.elapsed();
                for r in &results {
                    let result = match r {
                        Ok(()) => PublishResult::Ok,
                        Err(e) if e.is_throttled() => PublishResult::Throttled,
                        Err(e) if e.is_transient() => PublishResult::Transient,
                        Err(_) => PublishResult::Permanent,
                    };
                    metrics.published(result, took);
                }
                results.resize_with(count, || {
                    Err(QueueError::transient("the target returned fewer results than messages"))
                });
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
        });
        Self {
            name,
            description,
            dedup_ids,
            guard,
            tx,
            batcher: Mutex::new(Some(batcher)),
        }
    }

    /// The target's guard (circuit, rate, concurrency).
    pub fn guard(&self) -> &Arc<TargetGuard> {
        &self.guard
    }

    /// Sends the message `make` builds through the target's guard: waits while the circuit is
    /// open or the target throttles, sends again what failed in an outage or was throttled,
    /// and returns once it was written, failed because of itself, or `stop` fired (or
    /// `give_up_at` passed) while it was held.
    pub async fn deliver(
        &self,
        make: impl Fn() -> OutboundMessage,
        stop: &CancellationToken,
        give_up_at: tokio::time::Instant,
    ) -> Delivered {
        loop {
            let Some(ticket) = self.guard.admit(stop, give_up_at).await else {
                return Delivered::Interrupted;
            };
            let epoch = ticket.epoch();
            let result = self.send(make()).await;
            match self.guard.record(ticket, &result) {
                AfterResult::Hold => continue,
                AfterResult::Settle => {
                    return match result {
                        Ok(()) => Delivered::Sent,
                        Err(error) => Delivered::Failed { error, epoch },
                    }
                }
            }
        }
    }

    /// Whether the target reads de-duplication ids (SQS FIFO).
    pub fn uses_dedup_ids(&self) -> bool {
        self.dedup_ids
    }

    /// The target's configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Publishes one message and waits for its result.
    pub async fn send(&self, message: OutboundMessage) -> Result<(), QueueError> {
        let (reply, result) = oneshot::channel();
        self.tx
            .send((message, reply))
            .map_err(|_| QueueError::transient(format!("target `{}` is shutting down", self.name)))?;
        result.await.unwrap_or_else(|_| {
            Err(QueueError::transient(format!(
                "target `{}` ({}) stopped before answering",
                self.name, self.description
            )))
        })
    }

    /// Flushes what was sent and stops (once: later calls return at once).
    pub async fn finish(&self) {
        let batcher = self.batcher.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(batcher) = batcher {
            batcher.finish().await;
        }
    }
}
