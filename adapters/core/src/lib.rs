//! The queue layer of veltrix.
//!
//! The worker's pipeline talks to queues through two small traits:
//!
//! ```text
//!   Source ── receive(max, wait) ──> [Delivery …]      ack(tokens) / nack(token, delay) / extend(tokens, by)
//!   Publisher <── publish([OutboundMessage …]) ──> one Result per message
//! ```
//!
//! Providers hide their handles (receipt handles, ack ids) inside an opaque [`AckToken`]. Every
//! error is classified as [`ErrorClass::Transient`] (retry later) or [`ErrorClass::Permanent`]
//! (retrying cannot help), so the pipeline acts on the type, never on message strings.
//!
//! This crate also holds the two embedded backends:
//! - [`memory`]: an in-process queue with real visibility timeouts, redelivery, delayed nacks,
//!   FIFO message groups and injectable faults; used by tests and benchmarks.
//! - [`file`]: a source that reads one event body per line from a file or stdin, and targets that
//!   append JSON lines to a file or stdout.
//!
//! Provider crates (SQS, Pub/Sub) live next to this one and implement the same traits.

pub mod attributes;
pub mod behaviour;
pub mod delivery;
pub mod error;
pub mod file;
pub mod logging;
pub mod memory;
pub mod packing;
pub mod record;
pub mod traits;

pub use attributes::{AttributeData, AttributeValue, Attributes};
pub use delivery::{AckToken, Delivery, OutboundMessage};
pub use error::{ErrorClass, QueueError};
pub use traits::{AckFailure, Publisher, Received, Requeued, Source, SourceInfo, SourceLimits};
