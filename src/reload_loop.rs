//! `veltrix run`'s reloads. SIGHUP, and with `--watch` a change of the config file or of a
//! schema file it names (read through the path every [`WATCH_INTERVAL`], so the symlink swap
//! of a Kubernetes ConfigMap counts), make the worker load and validate the file again, decide
//! what reloads ([`crate::pipeline::reload::decide`]), open the new targets and switch to the
//! new generation. Any failure leaves the running config in force. Each outcome is a log event
//! (`config_reloaded`, `config_reload_failed` with the file, line and column of config errors)
//! and counts in `veltrix_config_reloads_total{result}`.

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{self, Config};
use crate::observe::events::{ConfigReloadFailed, ConfigReloaded, LogEvent, SignalListenerFailed};
use crate::observe::metrics;
use crate::pipeline::reload::{self, TargetStep};
use crate::pipeline::{NextGeneration, NextTarget, Reloader};
use crate::targets;

/// How often `--watch` reads the config and schema files.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Serves reloads for the worker behind `reloader`, which runs `running`, until `stop`.
pub async fn serve(mut running: Config, reloader: Reloader, watch: bool, stop: CancellationToken) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            SignalListenerFailed {
                signal: "SIGHUP",
                error: e.to_string(),
            }
            .emit();
            None
        }
    };
    let mut watched = Watched::new(&running);
    let mut ticks = tokio::time::interval(WATCH_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let trigger = tokio::select! {
            _ = stop.cancelled() => return,
            Some(()) = async { hangup.as_mut()?.recv().await } => "SIGHUP",
            _ = ticks.tick(), if watch => {
                if !watched.changed().await {
                    continue;
                }
                "watch"
            }
        };
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            outcome = reload_once(&running, &reloader, trigger) => outcome,
        };
        match outcome {
            Ok(next) => {
                metrics::config_reload(true);
                running = next;
            }
            Err(error) => {
                metrics::config_reload(false);
                ConfigReloadFailed { trigger, error }.emit();
            }
        }
        // What was just tried (taken or not) is the new baseline: a broken file is not tried
        // again every second, only when it changes again.
        watched = Watched::new(&running);
        watched.settle().await;
    }
}

/// Loads the config file again and switches the worker to it.
async fn reload_once(running: &Config, reloader: &Reloader, trigger: &'static str) -> Result<Config, String> {
    let path = running.file.clone();
    let next = tokio::task::spawn_blocking(move || config::load(&path))
        .await
        .map_err(|e| format!("loading the config failed: {e}"))?
        .map_err(|e| e.to_string())?;
    let dead_letter = next.require_dead_letter(None).map_err(|e| e.to_string())?;
    let plan = reload::decide(running, &next).map_err(|refused| refused.to_string())?;
    let mut next_targets = Vec::with_capacity(plan.targets.len());
    for step in &plan.targets {
        next_targets.push(match step {
            TargetStep::Keep(name) => (name.clone(), NextTarget::Running(name.clone())),
            TargetStep::Open(target) => {
                let publisher = targets::open(target)
                    .await
                    .map_err(|e| format!("cannot open target `{}`: {e}", target.name))?;
                (target.name.clone(), NextTarget::Open(publisher, target.limits))
            }
        });
    }
    let reloaded = reloader
        .reload(NextGeneration {
            hash: next.hash.clone(),
            rules: next.rules.clone(),
            targets: next_targets,
            dead_letter,
        })
        .await
        .map_err(|e| e.to_string())?;
    ConfigReloaded {
        generation: reloaded.generation,
        hash: next.hash.clone(),
        trigger,
        rules: next.rules.rules().len(),
        targets_kept: plan.kept(),
        targets_opened: plan.opened(),
        targets_closed: plan.closed.len(),
    }
    .emit();
    Ok(next)
}

/// The files a config consists of, as last read.
struct Watched {
    files: Vec<PathBuf>,
    seen: String,
}

impl Watched {
    fn new(config: &Config) -> Self {
        let mut files = vec![config.file.clone()];
        files.extend(config.schema_files.iter().cloned());
        Self {
            files,
            seen: String::new(),
        }
    }

    /// Reads the files now and takes what they hold as the baseline.
    async fn settle(&mut self) {
        self.seen = fingerprint(self.files.clone()).await;
    }

    /// Whether the files differ from the baseline, and held still since the last look (a file
    /// being written is not read half-way: it must read the same twice in a row).
    async fn changed(&mut self) -> bool {
        if self.seen.is_empty() {
            self.settle().await;
            return false;
        }
        let now = fingerprint(self.files.clone()).await;
        if now == self.seen {
            return false;
        }
        tokio::time::sleep(WATCH_INTERVAL / 4).await;
        let again = fingerprint(self.files.clone()).await;
        again == now
    }
}

/// The hash of the files' contents (a file that cannot be read counts as its error).
async fn fingerprint(files: Vec<PathBuf>) -> String {
    tokio::task::spawn_blocking(move || {
        let contents: Vec<Vec<u8>> = files
            .iter()
            .map(|f| std::fs::read(f).unwrap_or_else(|e| format!("unreadable: {e}").into_bytes()))
            .collect();
        config::content_hash(b"", contents.iter().map(Vec::as_slice))
    })
    .await
    .unwrap_or_default()
}
