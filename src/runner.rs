//! `veltrix run`: open the configured source and targets and run the worker.

use crate::observe::events::{LedgerUnavailable, LogEvent, WorkerStarting};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use veltrix_pubsub::{PubSubSource, PubSubSourceOptions};
use veltrix_queue::file::{FileSource, FileSourceOptions};
use veltrix_queue::{Publisher, QueueError, Source, SourceInfo};
use veltrix_sqs::{SqsSource, SqsSourceOptions};

use crate::config::{Config, ConfigError, SourceConfig};
use crate::observe::server::{install_recorder, Server, ServerError};
use crate::pipeline::failure_ledger::{FailureLedger, LedgerError};
use crate::pipeline::stats::Summary;
use crate::pipeline::{PipelineError, Worker};
use crate::targets;

/// Why `run` failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The config cannot run.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The source could not be opened.
    #[error("cannot open the source: {0}")]
    Source(QueueError),
    /// A target could not be opened.
    #[error("cannot open target `{name}`: {error}")]
    Target {
        /// Target name.
        name: String,
        /// Why.
        error: QueueError,
    },
    /// The pipeline stopped with an error.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The metrics/health server could not start.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// `pipeline.state_dir` cannot hold the failure ledger.
    #[error("pipeline.state_dir: {0}; make the directory writable by the worker, or remove the setting to use the temporary directory")]
    Ledger(LedgerError),
}

/// Added to the longest hold of a Pub/Sub message before the client library stops extending
/// its lease on its own (the source's own leases release it first).
const PUBSUB_HOLD_MARGIN: std::time::Duration = std::time::Duration::from_secs(60);

/// Opens the configured source.
pub async fn open_source(config: &Config) -> Result<Arc<dyn Source>, QueueError> {
    Ok(match &config.source {
        SourceConfig::File {
            path,
            visibility_timeout,
            format,
        } => {
            let options = FileSourceOptions {
                visibility_timeout: *visibility_timeout,
                format: *format,
                max_line_bytes: config.settings.max_body_bytes,
            };
            Arc::new(FileSource::open(path, options).await?)
        }
        SourceConfig::Sqs {
            queue_url,
            connect,
            visibility_timeout,
        } => {
            let client = veltrix_sqs::connect(connect, queue_url).await;
            let options = SqsSourceOptions {
                queue_url: queue_url.clone(),
                visibility_timeout: *visibility_timeout,
                endpoint_url: connect.endpoint_override(),
            };
            Arc::new(SqsSource::open(client, options).await?)
        }
        SourceConfig::Pubsub {
            subscription,
            connect,
            streams,
            max_outstanding_messages,
            max_outstanding_bytes,
            visibility_timeout,
        } => {
            let options = PubSubSourceOptions {
                subscription: subscription.clone(),
                streams: *streams,
                max_outstanding_messages: *max_outstanding_messages,
                max_outstanding_bytes: *max_outstanding_bytes,
                visibility_timeout: *visibility_timeout,
                // A message is held for its lease extensions or for a delayed nack, whichever
                // is longer, plus a margin; past that the client stops extending.
                max_hold: config.settings.max_lease.max(config.settings.retry.max_backoff) + PUBSUB_HOLD_MARGIN,
            };
            Arc::new(PubSubSource::open(&veltrix_pubsub::Connection::new(connect), options).await?)
        }
    })
}

/// Opens every target, then the source.
pub async fn open_all(config: &Config) -> Result<(Vec<(String, Arc<dyn Publisher>)>, Arc<dyn Source>), RunError> {
    let mut publishers: Vec<(String, Arc<dyn Publisher>)> = Vec::new();
    for t in &config.targets {
        let p = targets::open(t).await.map_err(|error| RunError::Target {
            name: t.name.clone(),
            error,
        })?;
        publishers.push((t.name.clone(), p));
    }
    let source = open_source(config).await.map_err(RunError::Source)?;
    Ok((publishers, source))
}

/// Opens the failure ledger of a source that cannot carry failure counts in the message (SQS
/// FIFO, Pub/Sub; see [`crate::pipeline::failure_ledger`]): under `pipeline.state_dir` when set (failing the
/// run when it cannot), else under the temporary directory (skipped with a warning when it
/// cannot be written, e.g. on a read-only root filesystem).
fn open_ledger(config: &Config, info: &SourceInfo) -> Result<Option<FailureLedger>, RunError> {
    let needed = match &config.source {
        SourceConfig::Sqs { queue_url, .. } => queue_url.ends_with(".fifo"),
        SourceConfig::Pubsub { .. } => true,
        // The file source and SQS standard queues carry the count in the message.
        _ => false,
    };
    if !needed {
        return Ok(None);
    }
    let dir_for = |base: &Path| base.join("veltrix-failures").join(ledger_dir_name(info));
    match &config.state_dir {
        Some(base) => FailureLedger::open(&dir_for(base)).map(Some).map_err(RunError::Ledger),
        None => {
            let dir = dir_for(&std::env::temp_dir());
            match FailureLedger::open(&dir) {
                Ok(ledger) => Ok(Some(ledger)),
                Err(e) => {
                    LedgerUnavailable {
                        dir: dir.display().to_string(),
                        error: e.source.to_string(),
                    }
                    .emit();
                    Ok(None)
                }
            }
        }
    }
}

/// The ledger directory of a source: its kind and name with every character that is not a
/// letter, digit, `.` or `-` replaced by `_` (a queue URL or subscription path is unique, so
/// two sources never share a directory).
fn ledger_dir_name(info: &SourceInfo) -> String {
    let name: String = format!("{}-{}", info.kind, info.name)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    // File systems take 255 bytes per name; queue URLs and subscription paths are shorter.
    name.chars().take(200).collect()
}

/// Options of `veltrix run` beyond the config file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Serve `/metrics`, `/healthz` and `/readyz` here.
    pub metrics_addr: Option<SocketAddr>,
    /// Reload when the config file or a schema it names changes ([`crate::reload_loop`]);
    /// SIGHUP reloads either way.
    pub watch: bool,
}

/// Runs the worker described by `config` until the source is exhausted or `shutdown` completes.
pub async fn run(
    config: Config,
    options: RunOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<Summary, RunError> {
    run_with_abort(config, options, shutdown, std::future::pending()).await
}

/// Like [`run`]; `abort` completing during the drain releases held messages and returns at
/// once ([`Worker::run_with_abort`]).
pub async fn run_with_abort(
    config: Config,
    options: RunOptions,
    shutdown: impl Future<Output = ()> + Send,
    abort: impl Future<Output = ()> + Send,
) -> Result<Summary, RunError> {
    let dead_letter = config.require_dead_letter(None)?;
    tokio::pin!(shutdown);
    // Opening connects to the source and targets; a signal meanwhile (an endpoint that never
    // answers) ends the run at once: nothing was received, so nothing needs draining.
    let opened = tokio::select! {
        opened = open_all(&config) => opened?,
        _ = &mut shutdown => return Ok(Summary::default()),
    };
    let (publishers, source) = opened;
    let info = source.info();
    WorkerStarting {
        source_kind: info.kind,
        source: info.name.clone(),
        rules: config.rules.rules().len(),
        targets: publishers.len(),
    }
    .emit();
    let ledger = open_ledger(&config, &info)?;
    let mut worker = Worker::new(
        source,
        config.rules.clone(),
        publishers,
        dead_letter,
        config.settings.clone(),
    )
    .with_config_hash(config.hash.clone());
    if let Some(ledger) = ledger {
        worker = worker.with_failure_ledger(ledger);
    }
    let health = worker.health();
    health.set_source_reachable(true);
    let server = match options.metrics_addr {
        None => None,
        Some(addr) => Some(Server::start(addr, install_recorder()?, health).await?),
    };
    let stop_reloads = tokio_util::sync::CancellationToken::new();
    let reloads = tokio::spawn(crate::reload_loop::serve(
        config,
        worker.reloader(),
        options.watch,
        stop_reloads.clone(),
    ));
    let result = worker.run_with_abort(shutdown, abort).await;
    stop_reloads.cancel();
    let _ = reloads.await;
    if let Some(server) = server {
        server.stop().await;
    }
    Ok(result?)
}
