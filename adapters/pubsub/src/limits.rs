//! Google Cloud Pub/Sub limits (<https://cloud.google.com/pubsub/quotas#resource_limits>).

use std::time::Duration;

/// Shortest ack deadline a subscription or a stream may have.
pub const MIN_ACK_DEADLINE: Duration = Duration::from_secs(10);

/// Longest ack deadline (and longest single `ModifyAckDeadline`).
pub const MAX_ACK_DEADLINE: Duration = Duration::from_secs(600);

/// Messages in one `Publish` request.
pub const MAX_PUBLISH_BATCH: usize = 1000;

/// Bytes in one `Publish` request.
pub const MAX_PUBLISH_REQUEST_BYTES: usize = 10_000_000;

/// Bytes of one message: data plus attribute keys and values plus ordering key.
pub const MAX_MESSAGE_BYTES: usize = 10_000_000;

/// Attributes on one message.
pub const MAX_ATTRIBUTES: usize = 100;

/// Bytes of one attribute key.
pub const MAX_ATTRIBUTE_KEY_BYTES: usize = 256;

/// Bytes of one attribute value.
pub const MAX_ATTRIBUTE_VALUE_BYTES: usize = 1024;

/// Bytes of an ordering key.
pub const MAX_ORDERING_KEY_BYTES: usize = 1024;

/// Fewest delivery attempts a dead-letter policy accepts (the service rejects fewer).
pub const MIN_MAX_DELIVERY_ATTEMPTS: u32 = 5;

/// Most delivery attempts a dead-letter policy accepts.
pub const MAX_MAX_DELIVERY_ATTEMPTS: u32 = 100;

/// Messages the streaming pull client buffers per stream by default (the crate's default).
pub const DEFAULT_MAX_OUTSTANDING_MESSAGES: u64 = 1000;

/// Streaming-pull streams a worker opens by default. One stream of the emulator serves about
/// 2,000 msg/s, and a second one nearly doubles that (BENCHMARKS.md, "Pub/Sub forwarding mix");
/// Google's Node.js client opens 5 by default, the Go client used to open 10.
pub const DEFAULT_STREAMS: u32 = 2;

/// Bytes the streaming pull client buffers per stream by default: half the crate's 100 MiB,
/// so the default [`DEFAULT_STREAMS`] streams buffer no more than the crate's one stream.
pub const DEFAULT_MAX_OUTSTANDING_BYTES: u64 = 50 * 1024 * 1024;

/// Longest delay a `nack` holds a message before releasing it for redelivery.
pub const MAX_NACK_DELAY: Duration = MAX_ACK_DEADLINE;
