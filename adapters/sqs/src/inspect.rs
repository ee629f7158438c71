//! Reading a queue's settings, for `veltrix check --preflight`.

use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use aws_sdk_sqs::Client;
use veltrix_queue::QueueError;

use crate::errors::{classify, CallContext};

/// What preflight compares with the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSettings {
    /// The queue's ARN.
    pub arn: String,
    /// FIFO queue.
    pub fifo: bool,
    /// Default visibility timeout.
    pub visibility_timeout: Duration,
    /// The redrive policy, if any.
    pub redrive: Option<Redrive>,
}

/// A queue's redrive policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redrive {
    /// ARN of the dead-letter queue.
    pub dead_letter_arn: String,
    /// Receives before SQS moves a message there.
    pub max_receive_count: u32,
}

/// Reads the settings of the queue at `queue_url` (a missing queue is a classified error with a
/// hint).
pub async fn queue_settings(
    client: &Client,
    queue_url: &str,
    endpoint_url: Option<&str>,
) -> Result<QueueSettings, QueueError> {
    let out = client
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .map_err(|e| {
            let ctx = CallContext {
                what: "GetQueueAttributes",
                queue: queue_url,
                endpoint: endpoint_url,
                region: client.config().region().map(|r| r.as_ref()),
            };
            classify(&ctx, e)
        })?;
    let attrs = out.attributes().cloned().unwrap_or_default();
    let get = |k: QueueAttributeName| attrs.get(&k).cloned();
    Ok(QueueSettings {
        arn: get(QueueAttributeName::QueueArn).unwrap_or_default(),
        fifo: get(QueueAttributeName::FifoQueue).is_some_and(|v| v == "true") || queue_url.ends_with(".fifo"),
        visibility_timeout: Duration::from_secs(
            get(QueueAttributeName::VisibilityTimeout)
                .and_then(|v| v.parse().ok())
                .unwrap_or(30),
        ),
        redrive: get(QueueAttributeName::RedrivePolicy).and_then(|p| parse_redrive(&p)),
    })
}

/// Parses `{"deadLetterTargetArn": "...", "maxReceiveCount": 10}` (the count may be a string).
pub fn parse_redrive(policy: &str) -> Option<Redrive> {
    let v: serde_json::Value = serde_json::from_str(policy).ok()?;
    let count = match &v["maxReceiveCount"] {
        serde_json::Value::Number(n) => n.as_u64()?,
        serde_json::Value::String(s) => s.parse().ok()?,
        _ => return None,
    };
    Some(Redrive {
        dead_letter_arn: v["deadLetterTargetArn"].as_str()?.to_string(),
        max_receive_count: u32::try_from(count).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redrive_policies_parse_with_numbers_or_strings() {
        let r =
            parse_redrive(r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:1:q-dlq","maxReceiveCount":"4"}"#).unwrap();
        assert_eq!(r.max_receive_count, 4);
        assert_eq!(r.dead_letter_arn, "arn:aws:sqs:us-east-1:1:q-dlq");
        assert_eq!(
            parse_redrive(r#"{"deadLetterTargetArn":"a","maxReceiveCount":10}"#)
                .unwrap()
                .max_receive_count,
            10
        );
        assert!(parse_redrive("{}").is_none());
    }
}
