//! Config generations: the rules, transforms and targets a message is processed with.
//!
//! The worker holds the running generation's [`Context`] in an `ArcSwap`. Each message takes
//! the current one when it starts and keeps it to the end (its retries in place included), so
//! a reload ([`Reloader::reload`]) never changes the rules under a message in flight. A new
//! generation reuses the running targets [`crate::pipeline::reload::decide`] kept (their
//! connections, batches and circuits) and opens the others; once the old generation's messages
//! are done, the targets only it had are flushed and closed.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use veltrix_queue::Publisher;

use crate::observe::metrics::RuleMetrics;
use crate::pipeline::settings::TargetLimits;
use crate::pipeline::Context;
use crate::rules::RuleSet;
use crate::sandbox::{Sandbox, StartError};
use crate::targets::batching::BatchingPublisher;
use crate::targets::guard::{IntakeGate, TargetGuard};

/// Reload requests waiting for the worker; a second one waits for the first.
const RELOAD_QUEUE: usize = 1;

/// One target of a new generation.
pub enum NextTarget {
    /// The running target of this name, as it is.
    Running(String),
    /// A target opened for the new generation, with its limits.
    Open(Arc<dyn Publisher>, TargetLimits),
}

/// Everything a new generation consists of, checked and opened.
pub struct NextGeneration {
    /// The config's hash (shown in `/readyz` and `/metrics`).
    pub hash: String,
    /// Its rules.
    pub rules: Arc<RuleSet>,
    /// Its targets by name, in the order its rules index them.
    pub targets: Vec<(String, NextTarget)>,
    /// Index of its dead-letter target.
    pub dead_letter: usize,
}

/// A generation that took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reloaded {
    /// Its number (the config the worker started with is 1).
    pub generation: u64,
}

/// Why a new generation did not take effect (the running one stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The worker has stopped or is draining.
    #[error("the worker is stopping")]
    Stopping,
    /// The new rules' transform sandbox did not start.
    #[error(transparent)]
    Sandbox(#[from] StartError),
    /// The new generation names a running target the worker does not have.
    #[error("no running target `{0}`")]
    UnknownTarget(String),
    /// The dead-letter index is outside the new targets.
    #[error("the dead-letter target index {0} is out of range")]
    DeadLetterOutOfRange(usize),
}

pub(crate) struct ReloadRequest {
    pub(crate) next: NextGeneration,
    pub(crate) reply: oneshot::Sender<Result<Reloaded, ReloadError>>,
}

/// Asks a running worker to switch to a new generation.
#[derive(Clone)]
pub struct Reloader {
    pub(crate) tx: mpsc::Sender<ReloadRequest>,
}

pub(crate) fn channel() -> (Reloader, mpsc::Receiver<ReloadRequest>) {
    let (tx, rx) = mpsc::channel(RELOAD_QUEUE);
    (Reloader { tx }, rx)
}

impl Reloader {
    /// Switches the worker to `next`; returns once messages received from now on follow it.
    pub async fn reload(&self, next: NextGeneration) -> Result<Reloaded, ReloadError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(ReloadRequest { next, reply })
            .await
            .map_err(|_| ReloadError::Stopping)?;
        answer.await.unwrap_or(Err(ReloadError::Stopping))
    }
}

/// What every generation of one worker shares.
pub(crate) struct Shared {
    /// The notifier target guards wake pollers with.
    pub(crate) intake_changed: Arc<Notify>,
}

/// Builds generation `number` from `next`, reusing `current`'s targets where `next` says so.
pub(crate) async fn build(
    current: &Context,
    next: NextGeneration,
    number: u64,
    shared: &Shared,
) -> Result<Context, ReloadError> {
    if next.dead_letter >= next.targets.len() {
        return Err(ReloadError::DeadLetterOutOfRange(next.dead_letter));
    }
    let mut slots: Vec<Option<Arc<BatchingPublisher>>> = Vec::with_capacity(next.targets.len());
    let mut opened = Vec::new();
    for (index, (name, target)) in next.targets.into_iter().enumerate() {
        match target {
            NextTarget::Running(running) => {
                let found = current.targets.iter().find(|t| t.name() == running).cloned();
                slots.push(Some(found.ok_or(ReloadError::UnknownTarget(running))?));
            }
            NextTarget::Open(publisher, limits) => {
                slots.push(None);
                opened.push((index, name, publisher, limits));
            }
        }
    }
    let sandbox = start_sandbox(current, &next.rules).await?;
    // Open targets start their batch tasks only once nothing can fail any more.
    for (index, name, publisher, limits) in opened {
        let guard = Arc::new(TargetGuard::new(&name, limits, shared.intake_changed.clone()));
        slots[index] = Some(Arc::new(BatchingPublisher::spawn(
            name,
            publisher,
            guard,
            current.settings.publish_linger,
        )));
    }
    let targets: Vec<Arc<BatchingPublisher>> = slots.into_iter().flatten().collect();
    let rule_names: Vec<String> = next.rules.rules().iter().map(|r| r.name.clone()).collect();
    let intake = IntakeGate::new(
        targets.iter().map(|t| t.guard().clone()).collect(),
        shared.intake_changed.clone(),
    );
    Ok(Context {
        source: current.source.clone(),
        source_info: current.source_info.clone(),
        rule_metrics: RuleMetrics::register(&rule_names),
        rules: next.rules,
        targets,
        dead_letter: next.dead_letter,
        settings: current.settings.clone(),
        acks: current.acks.clone(),
        stats: current.stats.clone(),
        health: current.health.clone(),
        sandbox,
        intake,
        draining: current.draining.clone(),
        ledger: current.ledger.clone(),
        generation: number,
        hash: next.hash,
        in_use: TaskTracker::new(),
        retired: CancellationToken::new(),
    })
}

/// The sandbox for `rules`: the running one when the transforms are the same, a new one when
/// they changed, none when there are none.
async fn start_sandbox(current: &Context, rules: &RuleSet) -> Result<Option<Arc<Sandbox>>, StartError> {
    if rules.transforms().is_empty() {
        return Ok(None);
    }
    let sources = rules.transform_sources();
    if current.sandbox.is_some() && current.rules.transform_sources() == sources {
        return Ok(current.sandbox.clone());
    }
    let settings = current.settings.sandbox.clone();
    let started = tokio::task::spawn_blocking(move || Sandbox::start(&settings, sources))
        .await
        .expect("starting the sandbox does not panic")?;
    Ok(Some(Arc::new(started)))
}

/// Retires `old` once `new` is running: waits for the retirement of the generation before it
/// (`before`) and for the messages that started under `old`, then flushes and closes the
/// targets `new` does not have. Retirements run in order, so a target is closed only when no
/// older generation's message can still use it.
pub(crate) async fn retire(old: Arc<Context>, new: Arc<Context>, before: Option<tokio::task::JoinHandle<()>>) {
    old.retired.cancel();
    if let Some(before) = before {
        let _ = before.await;
    }
    old.in_use.close();
    old.in_use.wait().await;
    for target in &old.targets {
        if !new.targets.iter().any(|t| Arc::ptr_eq(t, target)) {
            target.finish().await;
        }
    }
}
