//! The [`Publisher`] for a topic: one batch becomes one or a few `Publish` requests through the
//! crate's batching publisher, flushed at once (the worker's own batcher decides when).
//!
//! Messages are checked against the service's limits first, so a message the service would
//! reject is a permanent error (it goes to the dead-letter target) and not a retry loop.
//! Attribute values veltrix writes itself (`veltrix.*`, e.g. a long dead-letter reason) are
//! shortened to fit, so a dead letter can always be written.

use crate::events::{LogEvent, TopicUnreadable};
use std::collections::HashMap;

use async_trait::async_trait;
use google_cloud_pubsub::client::Publisher as GooglePublisher;
use google_cloud_pubsub::error::PublishError;
use google_cloud_pubsub::model::Message;
use veltrix_queue::{OutboundMessage, Publisher, QueueError};

use crate::client::Connection;
use crate::errors::{classify, Operation};
use crate::limits::{
    MAX_ATTRIBUTES, MAX_ATTRIBUTE_KEY_BYTES, MAX_ATTRIBUTE_VALUE_BYTES, MAX_MESSAGE_BYTES, MAX_ORDERING_KEY_BYTES,
    MAX_PUBLISH_BATCH,
};

/// Attributes veltrix writes; their values are shortened rather than rejected.
const OWN_ATTRIBUTE_PREFIX: &str = "veltrix.";

/// Marks a shortened attribute value.
const ELLIPSIS: &str = "…";

/// A Pub/Sub topic as a veltrix [`Publisher`].
pub struct PubSubTarget {
    topic: String,
    endpoint: Option<String>,
    publisher: GooglePublisher,
}

impl PubSubTarget {
    /// Checks the topic exists (where the credentials may read it) and builds the publisher.
    pub async fn open(connection: &Connection, topic: &str) -> Result<Self, QueueError> {
        if !crate::subscription::check_topic(connection, topic).await? {
            TopicUnreadable {
                topic: topic.to_string(),
            }
            .emit();
        }
        Ok(Self {
            topic: topic.to_string(),
            endpoint: connection.endpoint().map(str::to_string),
            publisher: connection.publisher(topic).await?,
        })
    }

    fn publish_error(&self, e: PublishError) -> QueueError {
        match e {
            PublishError::Rpc(err) => classify(Operation::Publish, &self.topic, self.endpoint.as_deref(), &err),
            PublishError::OrderingKeyPaused => QueueError::transient(format!(
                "Pub/Sub publishing to {} is paused for this ordering key after an earlier failure",
                self.topic
            )),
            other => QueueError::transient(format!("Pub/Sub publishing to {} failed: {other}", self.topic)),
        }
    }
}

/// Builds the Pub/Sub message, or says which limit it breaks.
pub fn to_message(m: OutboundMessage) -> Result<Message, QueueError> {
    if m.attributes.len() > MAX_ATTRIBUTES {
        return Err(QueueError::permanent(format!(
            "message has {} attributes; Pub/Sub allows {MAX_ATTRIBUTES}",
            m.attributes.len()
        )));
    }
    let mut size = m.body.len();
    let mut attributes = HashMap::with_capacity(m.attributes.len());
    for (key, mut value) in m.attributes {
        if key.len() > MAX_ATTRIBUTE_KEY_BYTES {
            return Err(QueueError::permanent(format!(
                "attribute key `{}…` is {} bytes; Pub/Sub allows {MAX_ATTRIBUTE_KEY_BYTES}",
                truncate(&key, 40),
                key.len()
            )));
        }
        if value.len() > MAX_ATTRIBUTE_VALUE_BYTES {
            if !key.starts_with(OWN_ATTRIBUTE_PREFIX) {
                return Err(QueueError::permanent(format!(
                    "attribute `{key}` is {} bytes; Pub/Sub allows {MAX_ATTRIBUTE_VALUE_BYTES} per value",
                    value.len()
                )));
            }
            let keep = truncate(&value, MAX_ATTRIBUTE_VALUE_BYTES - ELLIPSIS.len()).len();
            value.truncate(keep);
            value.push_str(ELLIPSIS);
        }
        size += key.len() + value.len();
        attributes.insert(key, value);
    }
    let mut message = Message::new().set_data(m.body).set_attributes(attributes);
    if let Some(key) = m.ordering_key.filter(|k| !k.is_empty()) {
        if key.len() > MAX_ORDERING_KEY_BYTES {
            return Err(QueueError::permanent(format!(
                "ordering key is {} bytes; Pub/Sub allows {MAX_ORDERING_KEY_BYTES}",
                key.len()
            )));
        }
        size += key.len();
        message = message.set_ordering_key(key);
    }
    if size > MAX_MESSAGE_BYTES {
        return Err(QueueError::permanent(format!(
            "message is {size} bytes with its attributes; Pub/Sub allows {MAX_MESSAGE_BYTES}"
        )));
    }
    Ok(message)
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[async_trait]
impl Publisher for PubSubTarget {
    fn describe(&self) -> String {
        format!("pubsub {}", self.topic)
    }

    fn max_batch(&self) -> usize {
        MAX_PUBLISH_BATCH
    }

    async fn publish(&self, batch: Vec<OutboundMessage>) -> Vec<Result<(), QueueError>> {
        let mut results: Vec<Result<(), QueueError>> = Vec::with_capacity(batch.len());
        let mut pending = Vec::with_capacity(batch.len());
        for (index, m) in batch.into_iter().enumerate() {
            results.push(Ok(()));
            match to_message(m) {
                Ok(message) => {
                    let key = message.ordering_key.clone();
                    pending.push((index, key, self.publisher.publish(message)));
                }
                Err(e) => results[index] = Err(e),
            }
        }
        if pending.is_empty() {
            return results;
        }
        self.publisher.flush().await;
        for (index, key, future) in pending {
            if let Err(e) = future.await {
                if !key.is_empty() {
                    // The crate pauses a key after a failure to keep order; the worker retries
                    // the message itself (and holds later messages of the key meanwhile).
                    self.publisher.resume_publish(key);
                }
                results[index] = Err(self.publish_error(e));
            }
        }
        results
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn message(attrs: &[(&str, String)]) -> OutboundMessage {
        OutboundMessage {
            body: Bytes::from_static(b"{}"),
            attributes: attrs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            ordering_key: None,
            dedup_id: None,
        }
    }

    #[test]
    fn own_long_attribute_values_are_shortened_on_a_char_boundary() {
        let reason = "é".repeat(2000);
        let m = to_message(message(&[("veltrix.reason", reason)])).expect("fits after shortening");
        let v = &m.attributes["veltrix.reason"];
        assert!(v.len() <= MAX_ATTRIBUTE_VALUE_BYTES, "{}", v.len());
        assert!(v.ends_with(ELLIPSIS));
    }

    #[test]
    fn user_attribute_values_over_the_limit_are_permanent_errors() {
        let e = to_message(message(&[("customer", "x".repeat(1025))])).unwrap_err();
        assert!(!e.is_transient());
        assert!(e.message.contains("customer"), "{}", e.message);
    }

    #[test]
    fn oversized_bodies_are_permanent_errors() {
        let mut m = message(&[]);
        m.body = Bytes::from(vec![b'a'; MAX_MESSAGE_BYTES + 1]);
        assert!(!to_message(m).unwrap_err().is_transient());
    }

    #[test]
    fn too_many_attributes_are_permanent_errors() {
        let attrs: Vec<(String, String)> = (0..=MAX_ATTRIBUTES).map(|i| (format!("a{i}"), "v".into())).collect();
        let attrs: Vec<(&str, String)> = attrs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        assert!(!to_message(message(&attrs)).unwrap_err().is_transient());
    }
}
