//! The [`Publisher`] for a topic: one batch becomes one or a few `Publish` requests through the
//! crate's batching publisher, flushed at once (the worker's own batcher decides when).
//!
//! Messages are checked against the service's limits first, so a message the service would
//! reject is a permanent error (it goes to the dead-letter target) and not a retry loop.
//! Attributes Pub/Sub cannot carry as its own (SQS `Number` and `Binary` types, values over
//! 1 KiB, keys it reserves) travel packed in `veltrix.attributes`, which the Pub/Sub source
//! unpacks, so nothing is lost on the way.

use crate::events::{LogEvent, TopicUnreadable};
use std::collections::HashMap;

use async_trait::async_trait;
use google_cloud_pubsub::client::Publisher as GooglePublisher;
use google_cloud_pubsub::error::PublishError;
use google_cloud_pubsub::model::Message;
use veltrix_queue::{packing, AttributeValue, OutboundMessage, Publisher, QueueError};

use crate::client::Connection;
use crate::errors::{classify, Operation};
use crate::limits::{
    MAX_ATTRIBUTES, MAX_ATTRIBUTE_KEY_BYTES, MAX_ATTRIBUTE_VALUE_BYTES, MAX_MESSAGE_BYTES, MAX_ORDERING_KEY_BYTES,
    MAX_PUBLISH_BATCH,
};

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

/// Attribute key prefix the service reserves for itself.
const RESERVED_KEY_PREFIX: &str = "goog";

/// Whether Pub/Sub carries this attribute as one of its own (plain strings within its limits).
fn native_ok(key: &str, value: &AttributeValue) -> bool {
    value.is_plain_string()
        && !key.is_empty()
        && key.len() <= MAX_ATTRIBUTE_KEY_BYTES
        && !key.starts_with(RESERVED_KEY_PREFIX)
        && value.value_len() <= MAX_ATTRIBUTE_VALUE_BYTES
}

/// Builds the Pub/Sub message, or says which limit it breaks. Attributes Pub/Sub cannot carry
/// itself (typed SQS values, long values, reserved or long keys, more than 100) are packed
/// into `veltrix.attributes` ([`packing`]), which every veltrix source unpacks.
pub fn to_message(m: OutboundMessage) -> Result<Message, QueueError> {
    let carried = packing::carry(&m.attributes, MAX_ATTRIBUTES, MAX_ATTRIBUTE_VALUE_BYTES, native_ok);
    if carried.native.len() + carried.packed.len() > MAX_ATTRIBUTES {
        return Err(QueueError::permanent(format!(
            "message attributes need {} Pub/Sub attributes even packed; Pub/Sub allows {MAX_ATTRIBUTES}",
            carried.native.len() + carried.packed.len()
        )));
    }
    let mut size = m.body.len();
    let mut attributes = HashMap::with_capacity(carried.native.len() + carried.packed.len());
    for (key, value) in carried.native {
        let text = value.as_str().expect("native attributes are plain strings").to_string();
        size += key.len() + text.len();
        attributes.insert(key.clone(), text);
    }
    for (key, value) in carried.packed {
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
    use veltrix_queue::Attributes;

    fn message(attrs: &[(&str, String)]) -> OutboundMessage {
        OutboundMessage {
            body: Bytes::from_static(b"{}"),
            attributes: attrs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            ordering_key: None,
            dedup_id: None,
        }
    }

    fn carried_back(m: &Message) -> Attributes {
        let mut a: Attributes = m.attributes.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut body = m.data.clone();
        packing::unpack(&mut a, &mut body);
        a
    }

    #[test]
    fn long_values_typed_values_and_reserved_keys_travel_packed() {
        let mut original = message(&[
            ("veltrix.error", "é".repeat(2000)),
            ("customer", "x".repeat(1025)),
            ("googthing", "v".into()),
            ("plain", "p".into()),
        ]);
        original
            .attributes
            .insert("n", AttributeValue::typed_text("Number", "12"));
        original
            .attributes
            .insert("b", AttributeValue::binary("Binary", Bytes::from_static(&[0, 1])));
        let expected = original.attributes.clone();
        let m = to_message(original).expect("fits packed");
        assert!(m.attributes.values().all(|v| v.len() <= MAX_ATTRIBUTE_VALUE_BYTES));
        assert_eq!(m.attributes["plain"], "p");
        assert!(!m.attributes.contains_key("googthing"));
        assert_eq!(carried_back(&m), expected);
    }

    #[test]
    fn oversized_bodies_are_permanent_errors() {
        let mut m = message(&[]);
        m.body = Bytes::from(vec![b'a'; MAX_MESSAGE_BYTES + 1]);
        assert!(!to_message(m).unwrap_err().is_transient());
    }

    #[test]
    fn more_than_a_hundred_attributes_are_packed() {
        let attrs: Vec<(String, String)> = (0..=MAX_ATTRIBUTES).map(|i| (format!("a{i:03}"), "v".into())).collect();
        let attrs: Vec<(&str, String)> = attrs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let original = message(&attrs);
        let expected = original.attributes.clone();
        let m = to_message(original).unwrap();
        assert_eq!(m.attributes.len(), MAX_ATTRIBUTES);
        assert_eq!(carried_back(&m), expected);
    }
}
