//! Where a replay reads from and writes to, from the worker's config.

use std::sync::Arc;

use veltrix_pubsub::{Connection, PubSubSource, PubSubSourceOptions, PubSubTarget};
use veltrix_queue::{Publisher, QueueError, Source};
use veltrix_sqs::{SqsSource, SqsSourceOptions, SqsTarget};

use crate::config::{Config, SourceConfig, TargetConfig, TargetKind};

/// The destination `source` means the worker's own source.
pub const TO_SOURCE: &str = "source";

/// Why a replay cannot start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A name given on the command line is not a target of the config.
    #[error("no target `{name}` in the config; targets: {known}")]
    UnknownTarget {
        /// The name given.
        name: String,
        /// The config's targets.
        known: String,
    },
    /// No `--from` and no `pipeline.dead_letter`.
    #[error("no dead-letter target: pass --from TARGET or set pipeline.dead_letter")]
    NoDeadLetter,
    /// The dead letters cannot be read from this kind of target.
    #[error("{0}")]
    Unreadable(String),
    /// The destination cannot be written.
    #[error("{0}")]
    Unwritable(String),
    /// The dead letters would be published back where they are read from.
    #[error("{0}")]
    SameQueue(String),
    /// Connecting failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

fn find<'a>(config: &'a Config, name: &str) -> Result<&'a TargetConfig, OpenError> {
    config
        .targets
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| OpenError::UnknownTarget {
            name: name.to_string(),
            known: config
                .targets
                .iter()
                .map(|t| format!("`{}`", t.name))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

fn dead_letter_target<'a>(config: &'a Config, from: Option<&str>) -> Result<&'a TargetConfig, OpenError> {
    match from {
        Some(name) => find(config, name),
        None => Ok(&config.targets[config.dead_letter.ok_or(OpenError::NoDeadLetter)?]),
    }
}

/// What a queue, topic or file is, to tell whether two names mean the same place.
#[derive(Debug, PartialEq, Eq)]
enum Place<'a> {
    Queue(&'a str),
    Topic(&'a str),
    File(&'a std::path::Path),
}

fn target_place(kind: &TargetKind) -> Option<Place<'_>> {
    match kind {
        TargetKind::Sqs { queue_url, .. } => Some(Place::Queue(queue_url.trim_end_matches('/'))),
        TargetKind::Pubsub { topic, .. } => Some(Place::Topic(topic)),
        TargetKind::File { path } => Some(Place::File(path)),
        TargetKind::Stdout | TargetKind::Http { .. } => None,
    }
}

/// Refuses a replay that would publish dead letters to the place it reads them from (it would
/// receive its own copies, hold them and count them as replayed again). Decided from the
/// config: the dead-letter target, and the destination (`source` or a target).
pub fn check_distinct(config: &Config, from: Option<&str>, to: &str) -> Result<(), OpenError> {
    let read = target_place(&dead_letter_target(config, from)?.kind);
    let written = if to == TO_SOURCE {
        match &config.source {
            SourceConfig::Sqs { queue_url, .. } => Some(Place::Queue(queue_url.trim_end_matches('/'))),
            SourceConfig::File { path, .. } => Some(Place::File(path)),
            // The subscription's topic is only known by asking the service; a dead-letter topic
            // is never the topic of the subscription whose dead letters it holds.
            SourceConfig::Pubsub { .. } => None,
        }
    } else {
        target_place(&find(config, to)?.kind)
    };
    match (read, written) {
        (Some(a), Some(b)) if a == b => Err(OpenError::SameQueue(format!(
            "the dead letters would be replayed into {a:?}, which is where they are read from: pass --to with another target, or --from with the dead-letter target"
        ))),
        _ => Ok(()),
    }
}

/// Opens the dead letters: target `from` (default: `pipeline.dead_letter`). A Pub/Sub topic
/// cannot be read, so `subscription` names a subscription on it.
pub async fn open_dead_letters(
    config: &Config,
    from: Option<&str>,
    subscription: Option<&str>,
) -> Result<Arc<dyn Source>, OpenError> {
    let target = dead_letter_target(config, from)?;
    if let Some(subscription) = subscription {
        let connect = match &target.kind {
            TargetKind::Pubsub { connect, .. } => connect.clone(),
            _ => Default::default(),
        };
        return Ok(Arc::new(open_subscription(&connect, subscription).await?));
    }
    Ok(match &target.kind {
        TargetKind::File { path } => Arc::new(super::file::open(path).await?),
        TargetKind::Sqs { queue_url, connect } => {
            let client = veltrix_sqs::connect(connect, queue_url).await;
            Arc::new(
                SqsSource::open(
                    client,
                    SqsSourceOptions {
                        queue_url: queue_url.clone(),
                        visibility_timeout: None,
                        endpoint_url: connect.endpoint_override(),
                    },
                )
                .await?,
            )
        }
        TargetKind::Pubsub { topic, .. } => {
            return Err(OpenError::Unreadable(format!(
                "target `{}` is the Pub/Sub topic {topic}, and a topic cannot be read: pass --from-subscription projects/PROJECT/subscriptions/NAME, a subscription on that topic (the Terraform module's dead_letter_subscription output)",
                target.name
            )))
        }
        TargetKind::Stdout | TargetKind::Http { .. } => {
            return Err(OpenError::Unreadable(format!(
                "target `{}` ({}) keeps nothing that can be read back; replay reads a file, SQS queue or Pub/Sub subscription",
                target.name,
                kind_name(&target.kind)
            )))
        }
    })
}

async fn open_subscription(
    connect: &veltrix_pubsub::ConnectOptions,
    subscription: &str,
) -> Result<PubSubSource, QueueError> {
    PubSubSource::open(
        &Connection::new(connect),
        PubSubSourceOptions {
            subscription: subscription.to_string(),
            streams: 1,
            max_outstanding_messages: veltrix_pubsub::limits::DEFAULT_MAX_OUTSTANDING_MESSAGES,
            max_outstanding_bytes: veltrix_pubsub::limits::DEFAULT_MAX_OUTSTANDING_BYTES,
            visibility_timeout: None,
            max_hold: std::time::Duration::from_secs(3600),
        },
    )
    .await
}

/// Opens the destination: `source` (the default) is where the worker reads from; any other name
/// is a target of the config.
pub async fn open_destination(config: &Config, to: &str) -> Result<Arc<dyn Publisher>, OpenError> {
    if to != TO_SOURCE {
        return Ok(crate::targets::open(find(config, to)?).await?);
    }
    Ok(match &config.source {
        SourceConfig::Sqs { queue_url, connect, .. } => {
            let client = veltrix_sqs::connect(connect, queue_url).await;
            Arc::new(SqsTarget::new(client, queue_url.clone(), connect.endpoint_override()))
        }
        SourceConfig::Pubsub {
            subscription, connect, ..
        } => {
            let connection = Connection::new(connect);
            let Some(settings) = veltrix_pubsub::describe_subscription(&connection, subscription).await? else {
                return Err(OpenError::Unwritable(format!(
                    "may not read subscription {subscription} to find its topic: pass --to TARGET with a pubsub target on the topic"
                )));
            };
            Arc::new(PubSubTarget::open(&connection, &settings.topic).await?)
        }
        SourceConfig::File { path, .. } => {
            return Err(OpenError::Unwritable(format!(
                "the source is the file {}, which replay does not write to: pass --to TARGET",
                path.display()
            )))
        }
    })
}

fn kind_name(kind: &TargetKind) -> &'static str {
    match kind {
        TargetKind::File { .. } => "file",
        TargetKind::Stdout => "stdout",
        TargetKind::Http { .. } => "http",
        TargetKind::Sqs { .. } => "sqs",
        TargetKind::Pubsub { .. } => "pubsub",
    }
}
