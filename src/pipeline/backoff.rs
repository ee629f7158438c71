//! Retry delays: exponential backoff with jitter, computed from the delivery attempt.

use std::time::Duration;

/// Backoff curve for retries. (The retry budget lives with the rules, since rules may override
/// it.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay after the first failed attempt (before jitter).
    pub initial_backoff: Duration,
    /// Cap on the delay.
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// The delay before redelivering a message whose `attempt`-th delivery failed (1-based).
    ///
    /// The nominal delay doubles per attempt from `initial_backoff` up to `max_backoff`; the
    /// result is drawn uniformly from the upper half of it ("equal jitter"), so retries of
    /// messages that failed together spread out but never come back sooner than half the
    /// nominal delay. `unit` is a number in `[0, 1)`; pass `fastrand::f64()`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let nominal = self.nominal_delay(attempt);
        let half = nominal / 2;
        half + half.mul_f64(unit.clamp(0.0, 1.0))
    }

    /// The delay before jitter.
    pub fn nominal_delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(40);
        self.initial_backoff
            .saturating_mul(1u32 << doublings.min(31))
            .min(self.max_backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(300),
        }
    }

    #[test]
    fn doubles_per_attempt_and_caps() {
        let p = policy();
        assert_eq!(p.nominal_delay(1), Duration::from_millis(500));
        assert_eq!(p.nominal_delay(2), Duration::from_secs(1));
        assert_eq!(p.nominal_delay(4), Duration::from_secs(4));
        assert_eq!(p.nominal_delay(20), Duration::from_secs(300));
        assert_eq!(p.nominal_delay(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn jitter_stays_in_the_upper_half() {
        let p = policy();
        assert_eq!(p.delay(3, 0.0), Duration::from_secs(1));
        assert_eq!(p.delay(3, 0.5), Duration::from_millis(1500));
        assert!(p.delay(3, 0.999_999) <= Duration::from_secs(2));
        for _ in 0..1000 {
            let d = p.delay(2, fastrand::f64());
            assert!(d >= Duration::from_millis(500) && d <= Duration::from_secs(1));
        }
    }
}
