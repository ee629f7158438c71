//! A batching front for a [`Publisher`]: callers send one message and await its own result,
//! while a task publishes what has queued up in provider-sized batches.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;
use veltrix_queue::{OutboundMessage, Publisher, QueueError};

use crate::observe::metrics::PublishResult;
use crate::pipeline::batch::{spawn_batcher, Batcher};
use crate::pipeline::stats::Stats;

/// Publish calls in flight at once per target.
pub const PUBLISH_CONCURRENCY: usize = 16;

type Pending = (OutboundMessage, oneshot::Sender<Result<(), QueueError>>);

/// One target, batched.
pub struct BatchingPublisher {
    name: String,
    description: String,
    tx: UnboundedSender<Pending>,
    batcher: Batcher,
}

impl BatchingPublisher {
    /// Starts the batch task for `publisher`.
    pub fn spawn(
        name: String,
        index: usize,
        publisher: Arc<dyn Publisher>,
        linger: Duration,
        stats: Arc<Stats>,
    ) -> Self {
        let description = publisher.describe();
        let max = publisher.max_batch();
        let (tx, batcher) = spawn_batcher(max, linger, PUBLISH_CONCURRENCY, move |batch: Vec<Pending>| {
            let publisher = publisher.clone();
            let stats = stats.clone();
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
                        Err(e) if e.is_transient() => PublishResult::Transient,
                        Err(_) => PublishResult::Permanent,
                    };
                    stats.published(index, result, took);
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
            tx,
            batcher,
        }
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

    /// Flushes what was sent and stops.
    pub async fn finish(self) {
        self.batcher.finish().await;
    }
}
