//! The pipeline: receive loop, bounded concurrency, per-key ordering, outcomes, lease keeper,
//! batched acks and graceful drain.
//!
//! ```text
//!  pollers (N) ──receive(batch ≤ free permits)──> deliveries
//!       │                                            │ no ordering key: a task each
//!       │                                            │ ordering key: the key's sequencer
//!       │                                            ▼
//!       │                               process: decode → plan → publish
//!       │                                            │
//!       │            ack (batched) <─── success / dead letter written
//!       │            nack(backoff) <─── transient failure, retry action, dead-letter write failed
//!  lease keeper extends leases of everything in flight
//! ```
//!
//! `max_in_flight` permits bound the messages held at once, whatever the batch size: a poller
//! only asks for as many messages as it holds permits. Shutdown (the future given to
//! [`Worker::run`]) stops receiving, releases queued-but-unstarted messages with `nack(0)`,
//! gives in-flight ones `drain_timeout` to finish, flushes acks and publishes, and returns.

pub mod acker;
pub mod backoff;
pub mod batch;
pub mod lease;
pub mod own_attributes;
pub mod process;
pub mod sequencer;
pub mod settings;
pub mod stats;

use crate::observe::events::{DrainTimedOut, Draining, LogEvent, PollerFailed, ReceiveFailed, ReleaseFailed};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use veltrix_queue::{Delivery, Publisher, QueueError, Received, Source, SourceInfo};

use crate::observe::health::Health;
use crate::observe::metrics::Metrics;
use crate::pipeline::acker::{AckSender, Acker};
use crate::pipeline::lease::{LeaseGuard, LeaseKeeper};
use crate::pipeline::process::Settled;
use crate::pipeline::sequencer::Sequencer;
use crate::pipeline::settings::Settings;
use crate::pipeline::stats::{Stats, Summary};
use crate::rules::RuleSet;
use crate::sandbox::{Sandbox, StartError};
use crate::targets::batching::BatchingPublisher;

/// First delay after a failed receive (doubles up to [`MAX_RECEIVE_RETRY_DELAY`]).
pub const RECEIVE_RETRY_DELAY: Duration = Duration::from_millis(200);
/// How often the source backlog gauge is refreshed (one `GetQueueAttributes` for SQS).
pub const BACKLOG_INTERVAL: Duration = Duration::from_secs(15);
/// Longest delay between failed receives.
pub const MAX_RECEIVE_RETRY_DELAY: Duration = Duration::from_secs(10);

/// Why a worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The source failed in a way retrying cannot fix.
    #[error("source failed: {0}")]
    Source(QueueError),
    /// The transform sandbox could not start.
    #[error(transparent)]
    Sandbox(#[from] StartError),
}

/// Everything a processing task needs, shared.
pub struct Context {
    /// The source.
    pub source: Arc<dyn Source>,
    /// Its kind and name, as patterns see them.
    pub source_info: SourceInfo,
    /// Compiled rules.
    pub rules: Arc<RuleSet>,
    /// Targets, by index.
    pub targets: Vec<BatchingPublisher>,
    /// Index of the dead-letter target.
    pub dead_letter: usize,
    /// Settings.
    pub settings: Settings,
    /// Ack queue.
    pub acks: AckSender,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Readiness.
    pub health: Arc<Health>,
    /// Where transforms run (`None` when no rule transforms).
    pub sandbox: Option<Arc<Sandbox>>,
}

/// A message received and holding an in-flight permit and a lease.
struct Work {
    delivery: Delivery,
    held: Held,
}

/// What a message holds while in flight; all released together when dropped.
struct Held {
    _permit: Option<OwnedSemaphorePermit>,
    _lease: LeaseGuard,
    _left: Left,
}

/// Counts a message out of the in-flight gauge when its work item is dropped.
struct Left(Arc<Stats>);

impl Drop for Left {
    fn drop(&mut self) {
        self.0.left();
    }
}

/// A worker: one source, its rules and targets.
pub struct Worker {
    source: Arc<dyn Source>,
    rules: Arc<RuleSet>,
    targets: Vec<(String, Arc<dyn Publisher>)>,
    dead_letter: usize,
    settings: Settings,
    stats: Arc<Stats>,
    health: Arc<Health>,
}

impl Worker {
    /// A worker; `dead_letter` indexes `targets`, and forward actions in `rules` index it too.
    pub fn new(
        source: Arc<dyn Source>,
        rules: Arc<RuleSet>,
        targets: Vec<(String, Arc<dyn Publisher>)>,
        dead_letter: usize,
        settings: Settings,
    ) -> Self {
        assert!(dead_letter < targets.len(), "dead-letter target index out of range");
        Self {
            source,
            rules,
            targets,
            dead_letter,
            settings,
            stats: Arc::default(),
            health: Arc::default(),
        }
    }

    /// Readiness, for `/readyz` (updated as the worker runs).
    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// Live counters (for metrics and tests).
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Runs until the source is exhausted or `shutdown` completes, then drains.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<Summary, PipelineError> {
        let Worker {
            source,
            rules,
            targets,
            dead_letter,
            settings,
            stats,
            health,
        } = self;
        let sandbox = if rules.transforms().is_empty() {
            None
        } else {
            let sandbox_settings = settings.sandbox.clone();
            let sources = rules.transform_sources();
            let started = tokio::task::spawn_blocking(move || Sandbox::start(&sandbox_settings, sources))
                .await
                .expect("starting the sandbox does not panic")?;
            Some(Arc::new(started))
        };
        let source_info = source.info();
        let rule_names: Vec<String> = rules.rules().iter().map(|r| r.name.clone()).collect();
        let target_names: Vec<String> = targets.iter().map(|(name, _)| name.clone()).collect();
        stats.register_metrics(Metrics::register(&source_info.name, &rule_names, &target_names));
        let stop_keeper = CancellationToken::new();
        let (leases, keeper_task) =
            LeaseKeeper::spawn(source.clone(), settings.max_lease, stats.clone(), stop_keeper.clone());
        let backlog_task = tokio::spawn(watch_backlog(source.clone(), stats.clone(), stop_keeper.clone()));
        let (acks, acker) = Acker::spawn(source.clone(), stats.clone(), settings.ack_linger);
        let targets: Vec<BatchingPublisher> = targets
            .into_iter()
            .enumerate()
            .map(|(index, (name, publisher))| {
                BatchingPublisher::spawn(name, index, publisher, settings.publish_linger, stats.clone())
            })
            .collect();
        let ctx = Arc::new(Context {
            source_info,
            health: health.clone(),
            source: source.clone(),
            rules,
            targets,
            dead_letter,
            settings: settings.clone(),
            acks,
            stats: stats.clone(),
            sandbox,
        });
        let draining = CancellationToken::new();
        let tasks = TaskTracker::new();
        let sequencer: Arc<Sequencer<Work>> = Arc::default();
        let permits = Arc::new(Semaphore::new(settings.max_in_flight));

        let mut pollers = tokio::task::JoinSet::new();
        for _ in 0..settings.pollers.max(1) {
            pollers.spawn(poll(
                ctx.clone(),
                leases.clone(),
                permits.clone(),
                sequencer.clone(),
                tasks.clone(),
                draining.clone(),
            ));
        }
        let mut result = Ok(());
        tokio::pin!(shutdown);
        let mut shutdown_seen = false;
        while !pollers.is_empty() {
            tokio::select! {
                _ = &mut shutdown, if !shutdown_seen => {
                    shutdown_seen = true;
                    Draining {
                        drain_timeout_secs: settings.drain_timeout.as_secs(),
                    }
                    .emit();
                    health.set_draining();
                    draining.cancel();
                }
                Some(joined) = pollers.join_next() => {
                    match joined {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            if result.is_ok() {
                                result = Err(e);
                            }
                            draining.cancel();
                        }
                        Err(e) => PollerFailed { error: e.to_string() }.emit(),
                    }
                }
            }
        }
        draining.cancel();
        release_unstarted(&ctx, &sequencer).await;
        tasks.close();
        if tokio::time::timeout(settings.drain_timeout, tasks.wait())
            .await
            .is_err()
        {
            DrainTimedOut {
                still_running: tasks.len(),
            }
            .emit();
        }
        release_unstarted(&ctx, &sequencer).await;
        stop_keeper.cancel();
        let _ = keeper_task.await;
        let _ = backlog_task.await;
        acker.finish().await;
        source.close().await;
        if let Some(ctx) = Arc::into_inner(ctx) {
            for target in ctx.targets {
                target.finish().await;
            }
        }
        result.map(|()| stats.snapshot())
    }
}

/// Refreshes the backlog gauge until `stop`, where the source can tell its backlog.
async fn watch_backlog(source: Arc<dyn Source>, stats: Arc<Stats>, stop: CancellationToken) {
    let mut interval = tokio::time::interval(BACKLOG_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        match source.backlog().await {
            Some(n) => stats.backlog(n),
            None => return,
        }
    }
}

/// Releases messages queued behind an ordering key that have not started.
async fn release_unstarted(ctx: &Context, sequencer: &Sequencer<Work>) {
    let unstarted = sequencer.take_all_queued();
    if unstarted.is_empty() {
        return;
    }
    ctx.stats.released(unstarted.len() as u64);
    for work in unstarted {
        if let Err(e) = ctx.source.nack(work.delivery.token, Duration::ZERO).await {
            ReleaseFailed { error: e.to_string() }.emit();
        }
    }
}

/// One receive loop.
async fn poll(
    ctx: Arc<Context>,
    leases: LeaseKeeper,
    permits: Arc<Semaphore>,
    sequencer: Arc<Sequencer<Work>>,
    tasks: TaskTracker,
    draining: CancellationToken,
) -> Result<(), PipelineError> {
    let batch_max = ctx.source.limits().max_receive_batch.max(1);
    let mut failure_delay = RECEIVE_RETRY_DELAY;
    loop {
        let first = tokio::select! {
            biased;
            _ = draining.cancelled() => return Ok(()),
            p = permits.clone().acquire_owned() => p.expect("semaphore is never closed"),
        };
        let mut held = vec![first];
        while held.len() < batch_max {
            match permits.clone().try_acquire_owned() {
                Ok(p) => held.push(p),
                Err(_) => break,
            }
        }
        let started = tokio::time::Instant::now();
        let received = tokio::select! {
            biased;
            _ = draining.cancelled() => return Ok(()),
            r = ctx.source.receive(held.len(), ctx.settings.receive_wait) => r,
        };
        ctx.stats.receive_took(started.elapsed());
        ctx.health.set_source_reachable(received.is_ok());
        let deliveries = match received {
            Ok(Received::Messages(d)) => d,
            Ok(Received::Exhausted) => return Ok(()),
            Err(e) if e.is_transient() => {
                ReceiveFailed {
                    error: e.to_string(),
                    retry_in_ms: failure_delay.as_millis() as u64,
                }
                .emit();
                tokio::select! {
                    _ = draining.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(failure_delay) => {}
                }
                failure_delay = (failure_delay * 2).min(MAX_RECEIVE_RETRY_DELAY);
                continue;
            }
            Err(e) => return Err(PipelineError::Source(e)),
        };
        failure_delay = RECEIVE_RETRY_DELAY;
        if deliveries.is_empty() {
            ctx.stats.empty_receive();
            continue;
        }
        ctx.stats.received(deliveries.len() as u64);
        let mut held = held.into_iter();
        for delivery in deliveries {
            let lease = leases.register(delivery.token.clone());
            let work = Work {
                delivery,
                held: Held {
                    _permit: held.next(),
                    _lease: lease,
                    _left: Left(ctx.stats.clone()),
                },
            };
            dispatch(&ctx, &sequencer, &tasks, &draining, work);
        }
    }
}

fn dispatch(
    ctx: &Arc<Context>,
    sequencer: &Arc<Sequencer<Work>>,
    tasks: &TaskTracker,
    draining: &CancellationToken,
    work: Work,
) {
    let ctx = ctx.clone();
    match work.delivery.ordering_key.clone() {
        None => {
            tasks.spawn(async move {
                let Work { delivery, held: _held } = work;
                process::process(&ctx, delivery).await;
            });
        }
        Some(key) => {
            let Some(first) = sequencer.enqueue(&key, work) else {
                return;
            };
            let sequencer = sequencer.clone();
            let draining = draining.clone();
            tasks.spawn(async move {
                let mut next = Some(first);
                while let Some(Work { delivery, held: _held }) = next {
                    if let Settled::Retried(delay) = process::process(&ctx, delivery).await {
                        // Keep the key's order: what queued behind a retried message waits as long.
                        for held_back in sequencer.take_queued(&key) {
                            let _ = ctx.source.nack(held_back.delivery.token, delay).await;
                            ctx.stats.released(1);
                        }
                    }
                    next = if draining.is_cancelled() {
                        None
                    } else {
                        sequencer.next(&key)
                    };
                }
                if draining.is_cancelled() {
                    // Finish the key; anything still queued is released by the drain.
                    while let Some(w) = sequencer.next(&key) {
                        let _ = ctx.source.nack(w.delivery.token, Duration::ZERO).await;
                        ctx.stats.released(1);
                    }
                }
            });
        }
    }
}
