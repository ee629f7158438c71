//! The lease keeper: extends the visibility timeout / ack deadline of in-flight messages before
//! it runs out, so a slow message is not redelivered to another worker while it is processed.
//!
//! Each received message is registered; every quarter lease the keeper extends (in provider-sized
//! batches, [`LEASE_CONCURRENCY`] calls at once, so thousands of messages at tens of
//! milliseconds per call are renewed well within a lease) the ones that have used half their
//! lease, by one more lease. A message held longer than `max_hold` is no longer extended, so a
//! stuck handler cannot hide a message forever.

use crate::observe::events::{LeaseExtensionFailed, LogEvent};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use veltrix_queue::{AckToken, Source};

use crate::pipeline::stats::Stats;

/// Shortest tick, so tiny test leases do not spin.
pub const MIN_TICK: Duration = Duration::from_millis(10);
/// Extension calls in flight at once.
pub const LEASE_CONCURRENCY: usize = 32;

struct Entry {
    token: AckToken,
    received_at: Instant,
    renew_at: Instant,
}

/// The registered messages; a guard's key is its slot (freed slots are reused).
type Leases = slab::Slab<Entry>;

/// Registers in-flight messages with the keeper task.
#[derive(Clone)]
pub struct LeaseKeeper {
    leases: Arc<Mutex<Leases>>,
    lease: Duration,
}

/// Keeps a message's lease extended until dropped.
pub struct LeaseGuard {
    keeper: LeaseKeeper,
    key: usize,
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.keeper.lock().try_remove(self.key);
    }
}

impl LeaseKeeper {
    fn lock(&self) -> std::sync::MutexGuard<'_, Leases> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the keeper for `source`; it stops when `stop` is cancelled.
    pub fn spawn(
        source: Arc<dyn Source>,
        max_hold: Duration,
        stats: Arc<Stats>,
        stop: CancellationToken,
    ) -> (LeaseKeeper, JoinHandle<()>) {
        let limits = source.limits();
        let lease = limits.initial_lease.min(limits.max_lease);
        let keeper = LeaseKeeper {
            leases: Arc::default(),
            lease,
        };
        let task_keeper = keeper.clone();
        let handle = tokio::spawn(async move {
            let tick = (lease / 4).max(MIN_TICK);
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = interval.tick() => {}
                }
                let due = task_keeper.take_due(Instant::now(), max_hold);
                let chunks: Vec<Vec<AckToken>> = due
                    .chunks(limits.max_ack_batch.max(1))
                    .map(<[AckToken]>::to_vec)
                    .collect();
                futures::stream::iter(chunks)
                    .for_each_concurrent(LEASE_CONCURRENCY, |chunk| {
                        let source = source.clone();
                        let stats = stats.clone();
                        async move {
                            let n = chunk.len() as u64;
                            match source.extend(chunk, lease).await {
                                Ok(()) => stats.leases_extended(n),
                                // Usually a race with an ack; if not, the message is redelivered.
                                Err(e) => LeaseExtensionFailed { error: e.to_string() }.emit(),
                            }
                        }
                    })
                    .await;
            }
        });
        (keeper, handle)
    }

    /// Registers a message received just now.
    pub fn register(&self, token: AckToken) -> LeaseGuard {
        let now = Instant::now();
        let key = self.lock().insert(Entry {
            token,
            received_at: now,
            renew_at: now + self.lease / 2,
        });
        LeaseGuard {
            keeper: self.clone(),
            key,
        }
    }

    /// The tokens of every message registered now (to release them all at once).
    pub fn tokens(&self) -> Vec<AckToken> {
        self.lock().iter().map(|(_, e)| e.token.clone()).collect()
    }

    /// Messages registered now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when none are registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn take_due(&self, now: Instant, max_hold: Duration) -> Vec<AckToken> {
        let mut leases = self.lock();
        let mut due = Vec::new();
        for (_, entry) in leases.iter_mut() {
            if entry.renew_at <= now && now.duration_since(entry.received_at) < max_hold {
                due.push(entry.token.clone());
                entry.renew_at = now + self.lease / 2;
            }
        }
        due
    }
}
