//! The pipeline: receive loop, bounded concurrency, per-key ordering, outcomes, lease keeper,
//! batched acks and graceful drain.
//!
//! ```text
//!  pollers (pollers..max_pollers: full receives add one, empty ones shed one; poller_scale)
//!  pollers ──receive(batch ≤ free permits)──> deliveries
//!       │                                            │ no ordering key: a task each
//!       │                                            │ ordering key: the key's sequencer
//!       │                                            ▼
//!       │                               process: decode → plan → publish ──┐
//!       │                                            │      failed: backoff, │ retry in place
//!       │                                            │      judged by        │ (retry_budget)
//!       │                                            │      retry_budget  <──┘
//!       │            ack (batched) <─── success / dead letter written
//!       │            nack          <─── drain (held or in backoff), dead-letter write failed
//!  lease keeper extends leases of everything in flight
//!  intake gate: pollers wait while a target's circuit is open (targets::guard)
//! ```
//!
//! `max_in_flight` permits bound the messages held at once, whatever the batch size: a poller
//! only asks for as many messages as it holds permits, and receives only while the body bytes
//! held are under `max_in_flight_bytes` ([`byte_budget`]). Shutdown (the future given to
//! [`Worker::run`]) stops receiving (a receive under way is awaited and what it brings
//! released), releases queued-but-unstarted messages with `nack(0)`, gives in-flight ones
//! until `drain_timeout` after the signal, flushes acks and publishes within [`DRAIN_GRACE`],
//! and returns; a second signal ([`Worker::run_with_abort`]) releases everything held at once.

pub mod acker;
pub mod backoff;
pub mod batch;
pub mod byte_budget;
pub mod circuit;
pub mod dead_letters;
pub mod failure_ledger;
pub mod generation;
pub mod intake;
pub mod lease;
pub mod own_attributes;
pub mod poller_scale;
pub mod process;
pub mod rate_limit;
pub mod reload;
pub mod retry_budget;
pub mod sequencer;
pub mod settings;
pub mod stats;

use crate::observe::events::{
    DrainAborted, DrainGraceExceeded, DrainTimedOut, Draining, LedgerWriteFailed, LogEvent, PollerFailed,
    ReceiveFailed, ReleaseFailed,
};
pub use generation::{NextGeneration, NextTarget, ReloadError, Reloaded, Reloader};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::StreamExt;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use veltrix_queue::{Delivery, Publisher, QueueError, Received, Source, SourceInfo};

use crate::observe::health::Health;
use crate::observe::metrics::{Metrics, RuleMetrics};
use crate::pipeline::acker::{AckSender, Acker};
use crate::pipeline::byte_budget::{ByteBudget, HeldBytes};
use crate::pipeline::failure_ledger::FailureLedger;
use crate::pipeline::lease::{LeaseGuard, LeaseKeeper};
use crate::pipeline::poller_scale::{Change, PollerScale};
use crate::pipeline::process::Settled;
use crate::pipeline::sequencer::Sequencer;
use crate::pipeline::settings::Settings;
use crate::pipeline::stats::{Stats, Summary};
use crate::rules::RuleSet;
use crate::sandbox::{Sandbox, StartError};
use crate::targets::batching::BatchingPublisher;
use crate::targets::guard::{IntakeGate, TargetGuard};

/// First delay after a failed receive (doubles up to [`MAX_RECEIVE_RETRY_DELAY`]).
pub const RECEIVE_RETRY_DELAY: Duration = Duration::from_millis(200);
/// How often the source backlog gauge is refreshed (one `GetQueueAttributes` for SQS).
pub const BACKLOG_INTERVAL: Duration = Duration::from_secs(15);
/// Longest delay between failed receives.
pub const MAX_RECEIVE_RETRY_DELAY: Duration = Duration::from_secs(10);
/// A receive that has not answered this long after its long poll ended fails (a backstop
/// under the provider clients' own timeouts).
pub const RECEIVE_TIMEOUT_MARGIN: Duration = Duration::from_secs(30);
/// After the drain: the longest time releases, the last acks, closing the source and flushing
/// targets may take together.
pub const DRAIN_GRACE: Duration = Duration::from_secs(10);
/// After a second signal: the longest time releasing held messages and the last acks may take.
pub const ABORT_GRACE: Duration = Duration::from_secs(2);
/// After a second signal: how long receives still under way may take to come back (what they
/// bring is released) before they are dropped.
pub const ABORT_RECEIVE_GRACE: Duration = Duration::from_secs(2);
/// Longest wait for one release (`nack(0)`) at shutdown.
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

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

/// Everything a processing task needs: one config generation's rules, transforms and targets
/// ([`generation`]), with what every generation shares.
pub struct Context {
    /// The source.
    pub source: Arc<dyn Source>,
    /// Its kind and name, as patterns see them.
    pub source_info: SourceInfo,
    /// Compiled rules.
    pub rules: Arc<RuleSet>,
    /// Match counters of `rules`.
    pub rule_metrics: RuleMetrics,
    /// Targets, by index (shared with the generations that kept them).
    pub targets: Vec<Arc<BatchingPublisher>>,
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
    /// Whether pollers may receive (not while a target is in an outage).
    pub intake: IntakeGate,
    /// Cancelled when the drain starts: messages held for a target or waiting out a backoff
    /// are released then.
    pub draining: CancellationToken,
    /// Own failure counts of messages released to a source that cannot carry them
    /// ([`failure_ledger`]); `None` keeps them in the message only.
    pub ledger: Option<Arc<FailureLedger>>,
    /// The generation's number (the config the worker started with is 1).
    pub generation: u64,
    /// The generation's config hash.
    pub hash: String,
    /// The messages processed under this generation.
    pub in_use: TaskTracker,
    /// Cancelled when a newer generation replaced this one.
    pub retired: CancellationToken,
}

/// A message received and holding an in-flight permit and a lease.
struct Work {
    delivery: Delivery,
    held: Held,
}

/// What a message holds while in flight; all released together when dropped.
struct Held {
    _permit: Option<OwnedSemaphorePermit>,
    _bytes: HeldBytes,
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
    ledger: Option<Arc<FailureLedger>>,
    hash: String,
    reloader: Reloader,
    reloads: tokio::sync::mpsc::Receiver<generation::ReloadRequest>,
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
        let (reloader, reloads) = generation::channel();
        Self {
            source,
            rules,
            targets,
            dead_letter,
            settings,
            stats: Arc::default(),
            health: Arc::default(),
            ledger: None,
            hash: String::new(),
            reloader,
            reloads,
        }
    }

    /// Names the config the worker starts with by `hash` (shown in `/readyz` and `/metrics`).
    pub fn with_config_hash(mut self, hash: impl Into<String>) -> Self {
        self.hash = hash.into();
        self
    }

    /// A handle that switches the running worker to new rules and targets
    /// ([`generation`]); its calls fail once the worker has stopped.
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Keeps the own failure counts of messages the source cannot carry them for (SQS FIFO,
    /// Pub/Sub) in `ledger`, so they survive a restart; the worker closes it when it stops.
    pub fn with_failure_ledger(mut self, ledger: FailureLedger) -> Self {
        self.ledger = Some(Arc::new(ledger));
        self
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
        self.run_with_abort(shutdown, std::future::pending()).await
    }

    /// Like [`Worker::run`]; when `abort` completes during the drain (a second SIGTERM or
    /// SIGINT), the worker stops waiting: receives still under way get
    /// [`ABORT_RECEIVE_GRACE`], then it releases every message it holds (`nack(0)`), flushes
    /// the acks it has, and returns within [`ABORT_GRACE`] more.
    pub async fn run_with_abort(
        self,
        shutdown: impl Future<Output = ()> + Send,
        abort: impl Future<Output = ()> + Send,
    ) -> Result<Summary, PipelineError> {
        let Worker {
            source,
            rules,
            targets,
            dead_letter,
            settings,
            stats,
            health,
            ledger,
            hash,
            reloader,
            mut reloads,
        } = self;
        // Reload calls made after the worker stopped fail instead of waiting.
        drop(reloader);
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
        stats.register_metrics(Metrics::register(&source_info.name));
        crate::observe::metrics::config_running(1, &hash, None);
        health.set_config(1, &hash);
        let stop_keeper = CancellationToken::new();
        let (leases, keeper_task) =
            LeaseKeeper::spawn(source.clone(), settings.max_lease, stats.clone(), stop_keeper.clone());
        let backlog_task = tokio::spawn(watch_backlog(source.clone(), stats.clone(), stop_keeper.clone()));
        let (acks, acker) = Acker::spawn(source.clone(), stats.clone(), settings.ack_linger);
        let intake_changed = Arc::new(Notify::new());
        let guards: Vec<Arc<TargetGuard>> = targets
            .iter()
            .enumerate()
            .map(|(index, (name, _))| {
                Arc::new(TargetGuard::new(
                    name,
                    settings.target_limits(index),
                    intake_changed.clone(),
                ))
            })
            .collect();
        let intake = IntakeGate::new(guards.clone(), intake_changed.clone());
        let shared = generation::Shared { intake_changed };
        let targets: Vec<Arc<BatchingPublisher>> = targets
            .into_iter()
            .zip(guards)
            .map(|((name, publisher), guard)| {
                Arc::new(BatchingPublisher::spawn(
                    name,
                    publisher,
                    guard,
                    settings.publish_linger,
                ))
            })
            .collect();
        let draining = CancellationToken::new();
        let current = Arc::new(ArcSwap::from_pointee(Context {
            source_info,
            health: health.clone(),
            source: source.clone(),
            rule_metrics: RuleMetrics::register(&rule_names),
            rules,
            targets,
            dead_letter,
            settings: settings.clone(),
            acks,
            stats: stats.clone(),
            sandbox,
            intake,
            draining: draining.clone(),
            ledger: ledger.clone(),
            generation: 1,
            hash,
            in_use: TaskTracker::new(),
            retired: CancellationToken::new(),
        }));
        let mut retiring: Option<tokio::task::JoinHandle<()>> = None;
        let tasks = TaskTracker::new();
        let sequencer: Arc<Sequencer<Work>> = Arc::default();
        let permits = Arc::new(Semaphore::new(settings.max_in_flight));
        let bytes = ByteBudget::new(settings.max_in_flight_bytes);

        let scale = Arc::new(PollerScale::new(settings.pollers, settings.max_pollers));
        let (grow, mut grow_requests) = tokio::sync::mpsc::unbounded_channel::<()>();
        let template = Poller {
            id: 0,
            current: current.clone(),
            leases: leases.clone(),
            permits: permits.clone(),
            bytes: bytes.clone(),
            sequencer: sequencer.clone(),
            tasks: tasks.clone(),
            scale: scale.clone(),
            grow,
        };
        let mut pollers = tokio::task::JoinSet::new();
        let mut next_poller_id = 0;
        let mut spawn_poller = |pollers: &mut tokio::task::JoinSet<_>| {
            let poller = Poller {
                id: next_poller_id,
                ..template.clone()
            };
            next_poller_id += 1;
            pollers.spawn(poll(poller, draining.clone()));
        };
        for _ in 0..scale.min() {
            spawn_poller(&mut pollers);
        }
        let mut result = Ok(());
        tokio::pin!(shutdown);
        tokio::pin!(abort);
        let mut shutdown_seen = false;
        let mut aborted = false;
        // The drain's clock starts at the signal: receives still under way, then in-flight
        // messages, all get until `drain_deadline`.
        let mut drain_deadline = None;
        let mut abort_receives_by: Option<tokio::time::Instant> = None;
        while !pollers.is_empty() {
            tokio::select! {
                _ = &mut shutdown, if !shutdown_seen => {
                    shutdown_seen = true;
                    drain_deadline = Some(tokio::time::Instant::now() + settings.drain_timeout);
                    Draining {
                        drain_timeout_secs: settings.drain_timeout.as_secs(),
                    }
                    .emit();
                    health.set_draining();
                    draining.cancel();
                }
                // A new config generation: messages received from now on follow it.
                Some(request) = reloads.recv() => {
                    let result = if shutdown_seen || draining.is_cancelled() {
                        Err(ReloadError::Stopping)
                    } else {
                        let old = current.load_full();
                        let number = old.generation + 1;
                        match generation::build(&old, request.next, number, &shared).await {
                            Ok(next) => {
                                let next = Arc::new(next);
                                current.store(next.clone());
                                crate::observe::metrics::config_running(number, &next.hash, Some(&old.hash));
                                health.set_config(number, &next.hash);
                                // Pollers waiting out an old target's outage look again.
                                shared.intake_changed.notify_waiters();
                                let before = retiring.take();
                                retiring = Some(tokio::spawn(generation::retire(old, next, before)));
                                Ok(Reloaded { generation: number })
                            }
                            Err(e) => Err(e),
                        }
                    };
                    let _ = request.reply.send(result);
                }
                // A poller's receive came back full: one more poller (up to max_pollers).
                Some(()) = grow_requests.recv(), if !shutdown_seen && !draining.is_cancelled() => {
                    spawn_poller(&mut pollers);
                }
                _ = &mut abort, if shutdown_seen && !aborted => {
                    aborted = true;
                    abort_receives_by = Some(tokio::time::Instant::now() + ABORT_RECEIVE_GRACE);
                }
                // A receive dropped unanswered could still take messages released later (the
                // queue hands them to the request nobody reads): receives get a moment first.
                _ = tokio::time::sleep_until(abort_receives_by.unwrap_or_else(tokio::time::Instant::now)), if abort_receives_by.is_some() => {
                    abort_receives_by = None;
                    pollers.abort_all();
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
                        Err(e) if e.is_cancelled() => {}
                        Err(e) => PollerFailed { error: e.to_string() }.emit(),
                    }
                }
            }
        }
        draining.cancel();
        // Reloads asked for from now on fail at once.
        drop(reloads);
        drop(template);
        let ctx = current.load_full();
        let drain_deadline = drain_deadline.unwrap_or_else(|| tokio::time::Instant::now() + settings.drain_timeout);
        if !aborted {
            release_unstarted(&ctx, &sequencer).await;
            tasks.close();
            tokio::select! {
                finished = tokio::time::timeout_at(drain_deadline, tasks.wait()) => {
                    if finished.is_err() {
                        DrainTimedOut {
                            still_running: tasks.len(),
                        }
                        .emit();
                    }
                }
                _ = &mut abort, if shutdown_seen => aborted = true,
            }
        }
        let grace = if aborted { ABORT_GRACE } else { DRAIN_GRACE };
        let finish = async {
            if aborted {
                // Whatever is still held goes back to the queue now, not after its lease.
                let held = leases.tokens();
                DrainAborted { released: held.len() }.emit();
                release_all(&ctx, held).await;
            }
            release_unstarted(&ctx, &sequencer).await;
            stop_keeper.cancel();
            let _ = keeper_task.await;
            let _ = backlog_task.await;
            acker.finish().await;
            source.close().await;
            if let Some(ledger) = &ledger {
                if let Err(e) = ledger.close() {
                    LedgerWriteFailed { error: e.to_string() }.emit();
                }
            }
            // Older generations' targets first (they wait for their messages, all done or
            // released by now), then the running generation's.
            if let Some(retiring) = retiring {
                let _ = retiring.await;
            }
            for target in &ctx.targets {
                target.finish().await;
            }
        };
        if tokio::time::timeout(grace, finish).await.is_err() {
            DrainGraceExceeded {
                grace_secs: grace.as_secs(),
            }
            .emit();
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
    release_all(ctx, unstarted.into_iter().map(|w| w.delivery.token).collect()).await;
}

/// Makes messages visible again at once (`nack(0)`), concurrently, each call bounded.
async fn release_all(ctx: &Context, tokens: Vec<veltrix_queue::AckToken>) {
    futures::stream::iter(tokens)
        .for_each_concurrent(lease::LEASE_CONCURRENCY, |token| async move {
            match tokio::time::timeout(RELEASE_TIMEOUT, ctx.source.nack(token, Duration::ZERO)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => ReleaseFailed { error: e.to_string() }.emit(),
                Err(_) => ReleaseFailed {
                    error: format!("no answer within {} s", RELEASE_TIMEOUT.as_secs()),
                }
                .emit(),
            }
        })
        .await;
}

/// What one receive loop works with.
#[derive(Clone)]
struct Poller {
    id: usize,
    /// The running generation (each receive dispatches under the one current when it returns).
    current: Arc<ArcSwap<Context>>,
    leases: LeaseKeeper,
    permits: Arc<Semaphore>,
    bytes: Arc<ByteBudget>,
    sequencer: Arc<Sequencer<Work>>,
    tasks: TaskTracker,
    /// How many pollers run ([`poller_scale`]).
    scale: Arc<PollerScale>,
    /// Asks the worker for one more poller.
    grow: tokio::sync::mpsc::UnboundedSender<()>,
}

/// One receive loop: takes permits (messages) and waits for byte room, receives, dispatches.
/// A receive that is under way when the drain starts is waited for (bounded) and what it
/// brought is released at once, so no message stays hidden for its visibility timeout.
async fn poll(p: Poller, draining: CancellationToken) -> Result<(), PipelineError> {
    let first_generation = p.current.load_full();
    let wait = first_generation.settings.receive_wait;
    let limits = first_generation.source.limits();
    let batch_max = limits.max_receive_batch.max(1);
    let receive_reserve = first_generation.settings.receive_reserve_for(&limits);
    drop(first_generation);
    let mut failure_delay = RECEIVE_RETRY_DELAY;
    let mut empty_in_a_row = 0u32;
    loop {
        let ctx = &p.current.load_full();
        if let Some(reason) = ctx.intake.paused_for() {
            // A target is in an outage: receive nothing (messages stay in the queue, where
            // their delivery counts are not spent) until its circuit closes, or a new
            // generation replaces the targets.
            ctx.health.set_intake_paused(Some(reason));
            let open = tokio::select! {
                open = ctx.intake.wait_open(&draining) => open,
                _ = ctx.retired.cancelled() => true,
            };
            ctx.health.set_intake_paused(None);
            if !open {
                return Ok(());
            }
            continue;
        }
        let first = tokio::select! {
            biased;
            _ = draining.cancelled() => return Ok(()),
            p = p.permits.clone().acquire_owned() => p.expect("semaphore is never closed"),
        };
        let mut held = vec![first];
        while held.len() < batch_max {
            match p.permits.clone().try_acquire_owned() {
                Ok(permit) => held.push(permit),
                Err(_) => break,
            }
        }
        let reservation = tokio::select! {
            biased;
            _ = draining.cancelled() => return Ok(()),
            r = p.bytes.reserve_for_receive(receive_reserve) => r,
        };
        let started = tokio::time::Instant::now();
        ctx.health.receive_started(p.id, wait);
        let receive = tokio::time::timeout(wait + RECEIVE_TIMEOUT_MARGIN, ctx.source.receive(held.len(), wait));
        tokio::pin!(receive);
        let (received, stopping) = tokio::select! {
            biased;
            r = &mut receive => (r, false),
            // A receive from a local buffer is stopped at once: what it did not take stays there.
            _ = draining.cancelled(), if limits.receive_cancel_safe => (Ok(Ok(Received::Messages(Vec::new()))), true),
            _ = draining.cancelled() => match tokio::time::timeout(ctx.settings.drain_timeout, &mut receive).await {
                Ok(r) => (r, true),
                // Past the drain: give up on it (its messages come back after their lease).
                Err(_) => (Ok(Ok(Received::Messages(Vec::new()))), true),
            },
        };
        ctx.health.receive_finished(p.id);
        let received = received.unwrap_or_else(|_| {
            Err(QueueError::transient(format!(
                "the source did not answer a receive within {} s",
                (wait + RECEIVE_TIMEOUT_MARGIN).as_secs()
            )))
        });
        ctx.stats.receive_took(started.elapsed());
        ctx.health.set_source_reachable(received.is_ok());
        ctx.health.set_source_problem(ctx.source.health());
        if stopping {
            if let Ok(Received::Messages(late)) = received {
                ctx.stats.received(late.len() as u64);
                ctx.stats.released(late.len() as u64);
                for _ in &late {
                    ctx.stats.left();
                }
                release_all(ctx, late.into_iter().map(|d| d.token).collect()).await;
            }
            return Ok(());
        }
        let deliveries = match received {
            Ok(Received::Messages(d)) => d,
            Ok(Received::Exhausted) => return Ok(()),
            Err(e) if e.is_transient() => {
                drop(reservation);
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
            drop(reservation);
            ctx.stats.empty_receive();
            if p.scale.after_receive(0, batch_max) == Change::Shrink {
                return Ok(()); // the others keep up
            }
            empty_in_a_row = empty_in_a_row.saturating_add(1);
            let pause = intake::empty_receive_pause(started.elapsed(), wait, empty_in_a_row);
            if !pause.is_zero() {
                tokio::select! {
                    _ = draining.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(pause) => {}
                }
            }
            continue;
        }
        empty_in_a_row = 0;
        // The messages hold their own bytes from here.
        let _reservation = reservation;
        if p.scale.after_receive(deliveries.len(), batch_max) == Change::Grow {
            let _ = p.grow.send(());
        }
        ctx.stats.received(deliveries.len() as u64);
        // Under the generation running now, which may be newer than the one the receive
        // started under.
        let ctx = &p.current.load_full();
        let mut held = held.into_iter();
        for delivery in deliveries {
            let lease = p.leases.register(delivery.token.clone());
            let work = Work {
                held: Held {
                    _permit: held.next(),
                    _bytes: p.bytes.hold(delivery.body.len()),
                    _lease: lease,
                    _left: Left(ctx.stats.clone()),
                },
                delivery,
            };
            dispatch(ctx, &p.current, &p.sequencer, &p.tasks, &draining, work);
        }
    }
}

fn dispatch(
    ctx: &Arc<Context>,
    current: &Arc<ArcSwap<Context>>,
    sequencer: &Arc<Sequencer<Work>>,
    tasks: &TaskTracker,
    draining: &CancellationToken,
    work: Work,
) {
    match work.delivery.ordering_key.clone() {
        None => {
            let ctx = ctx.clone();
            let in_use = ctx.in_use.token();
            tasks.spawn(async move {
                let _in_use = in_use;
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
            let current = current.clone();
            // The first message of the key counts under the generation that received it.
            let mut in_use = Some(ctx.in_use.token());
            let mut ctx = ctx.clone();
            tasks.spawn(async move {
                let mut next = Some(first);
                while let Some(Work { delivery, held: _held }) = next {
                    // Each message of the key starts under the generation running then.
                    if in_use.is_none() {
                        ctx = current.load_full();
                    }
                    let _in_use = in_use.take().unwrap_or_else(|| ctx.in_use.token());
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
