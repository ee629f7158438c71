//! Reading a subscription's and a topic's settings (at open, and for `check --preflight`).

use std::time::Duration;

use veltrix_queue::QueueError;

use crate::client::Connection;
use crate::errors::{classify, Operation};
use crate::limits::MIN_ACK_DEADLINE;

/// A subscription's dead-letter policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterPolicy {
    /// `projects/P/topics/T`.
    pub topic: String,
    /// Deliveries before the service moves a message there.
    pub max_delivery_attempts: u32,
}

/// What the worker needs to know about a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionSettings {
    /// The topic it is attached to.
    pub topic: String,
    /// The subscription's ack deadline.
    pub ack_deadline: Duration,
    /// The native dead-letter policy, if set (then the service counts delivery attempts).
    pub dead_letter: Option<DeadLetterPolicy>,
    /// Whether a retry policy is set (its backoff adds to the worker's delayed nacks).
    pub retry_policy: bool,
    /// Whether messages with the same ordering key are delivered in order.
    pub message_ordering: bool,
    /// Whether exactly-once delivery is on.
    pub exactly_once: bool,
}

/// Reads `subscription` (`projects/P/subscriptions/S`). `Ok(None)` when the credentials may
/// consume but not read it (`roles/pubsub.subscriber` without `pubsub.subscriptions.get`).
pub async fn describe_subscription(
    connection: &Connection,
    subscription: &str,
) -> Result<Option<SubscriptionSettings>, QueueError> {
    let admin = connection.subscription_admin(subscription).await?;
    let s = match admin.get_subscription().set_subscription(subscription).send().await {
        Ok(s) => s,
        Err(e) if is_permission_denied(&e) => return Ok(None),
        Err(e) => {
            return Err(classify(
                Operation::GetSubscription,
                subscription,
                connection.endpoint(),
                &e,
            ))
        }
    };
    Ok(Some(SubscriptionSettings {
        topic: s.topic,
        ack_deadline: u64::try_from(s.ack_deadline_seconds)
            .ok()
            .filter(|secs| *secs > 0)
            .map(Duration::from_secs)
            .unwrap_or(MIN_ACK_DEADLINE),
        dead_letter: s.dead_letter_policy.and_then(|p| {
            (!p.dead_letter_topic.is_empty()).then(|| DeadLetterPolicy {
                topic: p.dead_letter_topic,
                max_delivery_attempts: u32::try_from(p.max_delivery_attempts)
                    .ok()
                    .filter(|n| *n > 0)
                    // The service's default when the field is unset.
                    .unwrap_or(crate::limits::MIN_MAX_DELIVERY_ATTEMPTS),
            })
        }),
        retry_policy: s.retry_policy.is_some(),
        message_ordering: s.enable_message_ordering,
        exactly_once: s.enable_exactly_once_delivery,
    }))
}

/// Checks that `topic` (`projects/P/topics/T`) exists. `Ok(false)` when the credentials may
/// publish but not read it (`roles/pubsub.publisher` alone), so existence is unknown.
pub async fn check_topic(connection: &Connection, topic: &str) -> Result<bool, QueueError> {
    let admin = connection.topic_admin(topic).await?;
    match admin.get_topic().set_topic(topic).send().await {
        Ok(_) => Ok(true),
        Err(e) if is_permission_denied(&e) => Ok(false),
        Err(e) => Err(classify(Operation::GetTopic, topic, connection.endpoint(), &e)),
    }
}

fn is_permission_denied(e: &google_cloud_pubsub::Error) -> bool {
    e.status()
        .is_some_and(|s| s.code == google_cloud_gax::error::rpc::Code::PermissionDenied)
}
