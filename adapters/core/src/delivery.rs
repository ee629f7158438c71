//! Message types shared by every backend.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use crate::attributes::Attributes;

/// An opaque handle a source gives out with each delivery and takes back in `ack`, `nack` and
/// `extend`. Each provider stores its own type inside (an SQS receipt handle, a Pub/Sub ack id).
#[derive(Clone)]
pub struct AckToken(Arc<dyn Any + Send + Sync>);

impl AckToken {
    /// Wraps a provider's handle.
    pub fn new<T: Any + Send + Sync>(handle: T) -> Self {
        Self(Arc::new(handle))
    }

    /// The provider's handle, if it is of type `T`.
    pub fn downcast_ref<T: Any>(&self) -> Option<&T> {
        self.0.downcast_ref::<T>()
    }
}

impl fmt::Debug for AckToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AckToken(..)")
    }
}

/// One message received from a source.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The provider's message id (stable across redeliveries).
    pub id: String,
    /// The body, exactly as received.
    pub body: Bytes,
    /// Message attributes.
    pub attributes: Attributes,
    /// SQS FIFO message group or Pub/Sub ordering key; messages with the same key are processed
    /// in order.
    pub ordering_key: Option<String>,
    /// 1 on first delivery, incremented on each redelivery.
    pub delivery_attempt: u32,
    /// When the message was first published, where the provider says.
    pub published_at: Option<SystemTime>,
    /// The handle for `ack`, `nack` and `extend`.
    pub token: AckToken,
}

/// A message to publish to a target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundMessage {
    /// The body to send.
    pub body: Bytes,
    /// Attributes to send with it.
    pub attributes: Attributes,
    /// Ordering key / FIFO message group to publish under.
    pub ordering_key: Option<String>,
    /// De-duplication id for providers that have one (SQS FIFO).
    pub dedup_id: Option<String>,
}
