//! Amazon SQS for veltrix: a [`Source`](veltrix_queue::Source) that long-polls a queue and a
//! [`Publisher`](veltrix_queue::Publisher) that sends batches to one, with `aws-sdk-sqs`.
//!
//! - Receive: long polling (`WaitTimeSeconds` up to 20), up to 10 messages per call, message and
//!   system attributes (`ApproximateReceiveCount` is the delivery attempt, `SentTimestamp` the
//!   publish time, `MessageGroupId` the ordering key of FIFO queues).
//! - Ack: `DeleteMessageBatch` in tens; entries that fail are returned for retry.
//! - Nack and lease extension: `ChangeMessageVisibility(Batch)`, clamped to the 12 h maximum.
//! - Publish: `SendMessageBatch` with size-aware batching (10 entries, 1 MiB per request);
//!   FIFO targets get `MessageGroupId` and `MessageDeduplicationId`; an oversized message is a
//!   permanent error (it goes to the dead-letter target, not into a retry loop).
//!
//! Credentials come from the standard AWS chain (environment, profile, IMDS/IRSA) through
//! `aws-config`; `endpoint_url` (or `AWS_ENDPOINT_URL`) points at LocalStack.

pub mod client;
pub mod errors;
pub mod inspect;
pub mod limits;
pub mod source;
pub mod target;

pub use client::{connect, ConnectOptions};
pub use source::{SqsSource, SqsSourceOptions};
pub use target::SqsTarget;
