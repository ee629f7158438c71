//! Targets: building publishers from config, and batching what the pipeline sends them.

pub mod batching;
pub mod guard;
pub mod http;

use std::sync::Arc;

use veltrix_pubsub::PubSubTarget;
use veltrix_queue::file::{FileTarget, StdoutTarget};
use veltrix_queue::{Publisher, QueueError};
use veltrix_sqs::SqsTarget;

use http::{HttpTarget, HttpTargetOptions};

use crate::config::{TargetConfig, TargetKind};

/// Opens the publisher for a configured target.
pub async fn open(target: &TargetConfig) -> Result<Arc<dyn Publisher>, QueueError> {
    Ok(match &target.kind {
        TargetKind::File { path } => Arc::new(FileTarget::open(path).await?),
        TargetKind::Stdout => Arc::new(StdoutTarget::default()),
        TargetKind::Http {
            url,
            timeout,
            headers,
            bearer_token_env,
        } => {
            let bearer_token = match bearer_token_env {
                None => None,
                Some(var) => Some(std::env::var(var).map_err(|_| {
                    QueueError::permanent(format!(
                        "environment variable `{var}` (bearer_token_env of target `{}`) is not set",
                        target.name
                    ))
                })?),
            };
            Arc::new(HttpTarget::new(HttpTargetOptions {
                url: url.clone(),
                timeout: *timeout,
                headers: headers.clone(),
                bearer_token,
            })?)
        }
        TargetKind::Sqs { queue_url, connect } => {
            let client = veltrix_sqs::connect(connect, queue_url).await;
            let endpoint = connect.endpoint_override();
            Arc::new(SqsTarget::new(client, queue_url.clone(), endpoint))
        }
        TargetKind::Pubsub { topic, connect } => {
            Arc::new(PubSubTarget::open(&veltrix_pubsub::Connection::new(connect), topic).await?)
        }
    })
}
