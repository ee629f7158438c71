//! Validated pipeline settings.

use std::time::Duration;

use crate::pipeline::backoff::RetryPolicy;
use crate::pipeline::circuit::CircuitSettings;
use crate::sandbox::SandboxSettings;
use veltrix_queue::SourceLimits;

/// Default `max_body_bytes` (the SQS limit, 1 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Default `max_in_flight_bytes` (64 MiB).
pub const DEFAULT_MAX_IN_FLIGHT_BYTES: usize = 64 * 1024 * 1024;

/// How the pipeline runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Messages processed at once, across all pollers (independent of batch size).
    pub max_in_flight: usize,
    /// Receive loops always running.
    pub pollers: usize,
    /// Most receive loops: more start while receives come back full
    /// ([`crate::pipeline::poller_scale`]).
    pub max_pollers: usize,
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
    /// Longest body processed; larger ones are dead-lettered as `body_too_large` unparsed.
    pub max_body_bytes: usize,
    /// Body bytes held in flight at once; pollers wait while more are held.
    pub max_in_flight_bytes: usize,
    /// Bytes a receive reserves under `max_in_flight_bytes` while it is under way. `None` (the
    /// default): what the source calls for ([`Settings::receive_reserve_for`]), the most one
    /// receive can bring (SQS: 10 × `max_body_bytes`), and 0 for sources that buffer within
    /// bounds of their own (Pub/Sub flow control, the file source's read-ahead, memory).
    pub receive_reserve_bytes: Option<usize>,
    /// Where and with which budgets transforms run.
    pub sandbox: SandboxSettings,
    /// Circuit, concurrency and rate per target, by target index (targets beyond the end use
    /// [`TargetLimits::default`]).
    pub target_limits: Vec<TargetLimits>,
}

/// How much a target is sent, and when it stops being sent to.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TargetLimits {
    /// Its circuit breaker.
    pub circuit: CircuitSettings,
    /// Messages being sent to it at once (`None`: only `max_in_flight` bounds them).
    pub max_concurrency: Option<usize>,
    /// Messages per second (`None`: no configured limit; throttling still slows it down).
    pub rate_per_sec: Option<f64>,
}

impl Settings {
    /// The limits of target `index`.
    pub fn target_limits(&self, index: usize) -> TargetLimits {
        self.target_limits.get(index).copied().unwrap_or_default()
    }

    /// Bytes each receive from a source with `limits` reserves while it is under way: the
    /// configured reservation, else a full batch of `max_body_bytes` bodies when the source's
    /// receives are unbuffered, else nothing.
    pub fn receive_reserve_for(&self, limits: &SourceLimits) -> usize {
        self.receive_reserve_bytes.unwrap_or(if limits.receive_unbuffered {
            limits.max_receive_batch.saturating_mul(self.max_body_bytes)
        } else {
            0
        })
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_in_flight: 256,
            pollers: 1,
            max_pollers: crate::pipeline::poller_scale::DEFAULT_MAX_POLLERS,
            receive_wait: Duration::from_secs(crate::config::raw::defaults::sqs_wait_time_secs()),
            retry: RetryPolicy {
                initial_backoff: Duration::from_millis(500),
                max_backoff: Duration::from_secs(300),
            },
            drain_timeout: Duration::from_secs(30),
            max_lease: Duration::from_secs(3600),
            ack_linger: Duration::from_millis(10),
            publish_linger: Duration::ZERO,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_in_flight_bytes: DEFAULT_MAX_IN_FLIGHT_BYTES,
            receive_reserve_bytes: None,
            sandbox: SandboxSettings::default(),
            target_limits: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(receive_unbuffered: bool) -> SourceLimits {
        SourceLimits {
            max_receive_batch: 10,
            max_ack_batch: 10,
            max_lease: Duration::from_secs(60),
            initial_lease: Duration::from_secs(30),
            receive_cancel_safe: false,
            receive_unbuffered,
        }
    }

    #[test]
    fn default_settings_reserve_what_the_source_calls_for() {
        let s = Settings::default();
        assert_eq!(s.receive_reserve_for(&limits(true)), 10 * DEFAULT_MAX_BODY_BYTES);
        assert_eq!(s.receive_reserve_for(&limits(false)), 0);
        let s = Settings {
            receive_reserve_bytes: Some(7),
            ..Settings::default()
        };
        assert_eq!(s.receive_reserve_for(&limits(true)), 7, "a configured reservation wins");
    }
}
