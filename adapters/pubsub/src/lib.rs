//! Google Cloud Pub/Sub for veltrix: a [`Source`](veltrix_queue::Source) on a subscription
//! (streaming pull) and a [`Publisher`](veltrix_queue::Publisher) to a topic, with the official
//! `google-cloud-pubsub` crate.
//!
//! - Receive: streaming pull on `streams` parallel streams with flow control (outstanding
//!   messages and bytes); the attempt comes from the service with a dead-letter policy, else it
//!   is counted by this process.
//! - Ack: handed to the crate, which batches `Acknowledge` calls in the background; `close`
//!   flushes them on shutdown.
//! - Nack with a delay and the visibility timeout are kept by the client ([`source`]): the
//!   crate exposes no per-message `ModifyAckDeadline`, so a message is held (the crate keeps
//!   its server lease alive) and nacked when the delay or the lease passes.
//! - Publish: a batch goes through the crate's batching publisher, flushed at once, with
//!   attributes and ordering keys; limits are checked first ([`target`]).
//! - Streams that fail (service restart, network loss) are reopened with backoff.
//!
//! Credentials ([`client`]): Application Default Credentials in production; anonymous with the
//! emulator (`endpoint = "http://…"` or `PUBSUB_EMULATOR_HOST`).
//!
//! Why the official crate: it is the maintained googleapis client, with lease management,
//! flow control and reconnects built in. It is slower on the emulator than unary pull through
//! the community `gcloud-pubsub` crate (streaming pull tops out near 2k msg/s per stream there,
//! so use several `streams`), and its missing per-message deadline control is what the
//! client-side leases make up for; see `BENCHMARKS.md` for the measured cost.

pub mod client;
pub mod emulator;
pub mod errors;
pub mod events;
pub mod limits;
pub mod source;
pub mod subscription;
pub mod target;

pub use client::{ConnectOptions, Connection};
pub use source::{PubSubSource, PubSubSourceOptions};
pub use subscription::{describe_subscription, DeadLetterPolicy, SubscriptionSettings};
pub use target::PubSubTarget;
