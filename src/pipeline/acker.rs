//! Batched acks: tokens go into a channel; a task acks them in provider-sized batches and
//! retries the ones that fail transiently. An ack that still fails is counted and logged: the
//! message comes back later (a duplicate, never a loss).

use crate::observe::events::{AckFailed, LogEvent};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use veltrix_queue::{AckToken, Source};

use crate::pipeline::batch::{spawn_batcher, Batcher};
use crate::pipeline::stats::Stats;

/// Attempts per ack batch before giving up on the tokens that keep failing.
pub const ACK_ATTEMPTS: u32 = 4;
/// Delay before the first ack retry (doubles per attempt).
pub const ACK_RETRY_DELAY: Duration = Duration::from_millis(100);
/// Ack calls in flight at once.
pub const ACK_CONCURRENCY: usize = 8;

/// Sends tokens to the ack task.
#[derive(Clone)]
pub struct AckSender(UnboundedSender<AckToken>);

impl AckSender {
    /// Queues a token for acking. Returns false if the acker already stopped.
    pub fn ack(&self, token: AckToken) -> bool {
        self.0.send(token).is_ok()
    }
}

/// The ack task; [`Acker::finish`] waits until everything queued was acked.
pub struct Acker {
    batcher: Batcher,
}

impl Acker {
    /// Starts the ack task.
    pub fn spawn(source: Arc<dyn Source>, stats: Arc<Stats>, linger: Duration) -> (AckSender, Acker) {
        let max = source.limits().max_ack_batch;
        let (tx, batcher) = spawn_batcher(max, linger, ACK_CONCURRENCY, move |batch: Vec<AckToken>| {
            let source = source.clone();
            let stats = stats.clone();
            async move { ack_with_retries(source.as_ref(), &stats, batch).await }
        });
        (AckSender(tx), Acker { batcher })
    }

    /// Flushes every ack queued so far and stops; later acks are refused (those messages are
    /// redelivered).
    pub async fn finish(self) {
        self.batcher.finish().await;
    }
}

async fn ack_with_retries(source: &dyn Source, stats: &Stats, mut tokens: Vec<AckToken>) {
    let mut delay = ACK_RETRY_DELAY;
    for attempt in 1..=ACK_ATTEMPTS {
        let started = tokio::time::Instant::now();
        let result = source.ack(tokens).await;
        stats.ack_took(started.elapsed());
        match result {
            Ok(()) => return,
            Err(failure) => {
                let give_up = !failure.error.is_transient() || attempt == ACK_ATTEMPTS;
                if give_up {
                    AckFailed {
                        count: failure.failed.len(),
                        error: failure.error.to_string(),
                    }
                    .emit();
                    stats.ack_failed(failure.failed.len() as u64);
                    return;
                }
                tokens = failure.failed;
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
}
