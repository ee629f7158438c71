//! Validated pipeline settings.

use std::time::Duration;

use crate::pipeline::backoff::RetryPolicy;

/// How the pipeline runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Messages processed at once, across all pollers (independent of batch size).
    pub max_in_flight: usize,
    /// Concurrent receive loops.
    pub pollers: usize,
    /// Long-poll wait per receive.
    pub receive_wait: Duration,
    /// Retry backoff.
    pub retry: RetryPolicy,
    /// Time given to in-flight messages on shutdown.
    pub drain_timeout: Duration,
    /// Longest time the lease keeper holds one message.
    pub max_lease: Duration,
    /// Longest wait to fill an ack batch.
    pub ack_linger: Duration,
    /// Extra wait to fill a publish batch (zero: publish as soon as a slot is free).
    pub publish_linger: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_in_flight: 256,
            pollers: 1,
            receive_wait: Duration::from_secs(20),
            retry: RetryPolicy {
                initial_backoff: Duration::from_millis(500),
                max_backoff: Duration::from_secs(300),
            },
            drain_timeout: Duration::from_secs(30),
            max_lease: Duration::from_secs(3600),
            ack_linger: Duration::from_millis(10),
            publish_linger: Duration::ZERO,
        }
    }
}
