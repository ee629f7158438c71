//! Per-target sending rate: a configured token bucket (`rate_per_sec`) and an adaptive limit
//! that follows the target's throttling.
//!
//! A throttled send (HTTP 429 or 503 with `Retry-After`, a provider's throttling error) costs
//! the message nothing: the target stops sending until the `Retry-After` (or, without one,
//! 1 s doubling per throttle in a row up to [`MAX_THROTTLE_PAUSE`]), and its rate is halved
//! from what it was sending (not below [`MIN_RATE_PER_SEC`]). Each second without throttling
//! raises the rate by a tenth until it is no longer the limit. Throttles that arrive while the
//! target is already paused (the answers to requests sent together) count once.
//!
//! [`RateLimiter`] is pure (every method takes `now`); the pipeline holds it behind a lock.

use std::time::Duration;

use tokio::time::Instant;

/// Slowest adaptive rate, messages per second.
pub const MIN_RATE_PER_SEC: f64 = 1.0;
/// Longest pause after throttles in a row without a `Retry-After`.
pub const MAX_THROTTLE_PAUSE: Duration = Duration::from_secs(30);
/// Pause after a throttle without a `Retry-After` (doubles per throttle in a row).
pub const FIRST_THROTTLE_PAUSE: Duration = Duration::from_secs(1);
/// How often the adaptive rate grows while nothing is throttled.
pub const RECOVERY_STEP: Duration = Duration::from_secs(1);

/// One target's rate state.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    configured: Option<f64>,
    adaptive: Option<f64>,
    tokens: f64,
    refilled: Instant,
    paused_until: Option<Instant>,
    throttles_in_a_row: u32,
    grown: Instant,
    window_start: Instant,
    window_sends: u32,
    observed: f64,
}

impl RateLimiter {
    /// A limiter with an optional configured rate (messages per second).
    pub fn new(rate_per_sec: Option<f64>, now: Instant) -> Self {
        Self {
            configured: rate_per_sec.filter(|r| *r > 0.0),
            adaptive: None,
            tokens: rate_per_sec.map_or(0.0, |r| r.max(1.0)),
            refilled: now,
            paused_until: None,
            throttles_in_a_row: 0,
            grown: now,
            window_start: now,
            window_sends: 0,
            observed: 0.0,
        }
    }

    /// The rate in force, if any (the configured one or the adaptive one, whichever is lower).
    pub fn rate(&self) -> Option<f64> {
        match (self.configured, self.adaptive) {
            (Some(c), Some(a)) => Some(c.min(a)),
            (c, a) => c.or(a),
        }
    }

    /// Takes a token to send one message, or says when to ask again.
    pub fn acquire(&mut self, now: Instant) -> Result<(), Instant> {
        if let Some(until) = self.paused_until {
            if now < until {
                return Err(until);
            }
            self.paused_until = None;
            // Start again from one message, at the new rate.
            self.tokens = 1.0;
            self.refilled = until;
        }
        self.count_send(now);
        let Some(rate) = self.rate() else {
            return Ok(());
        };
        let burst = rate.max(1.0);
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - self.tokens) / rate;
            Err(now + Duration::from_secs_f64(wait))
        }
    }

    /// The target throttled a send; `retry_after` is what it asked for.
    pub fn on_throttled(&mut self, now: Instant, retry_after: Option<Duration>) {
        let already_paused = self.paused_until.is_some_and(|u| now < u);
        let pause = retry_after.unwrap_or_else(|| {
            FIRST_THROTTLE_PAUSE
                .saturating_mul(1 << self.throttles_in_a_row.min(5))
                .min(MAX_THROTTLE_PAUSE)
        });
        let until = now + pause;
        self.paused_until = Some(self.paused_until.map_or(until, |u| u.max(until)));
        if already_paused {
            return;
        }
        self.throttles_in_a_row = self.throttles_in_a_row.saturating_add(1);
        let sending = self.rate().unwrap_or(self.observed.max(MIN_RATE_PER_SEC * 2.0));
        self.adaptive = Some((sending / 2.0).max(MIN_RATE_PER_SEC));
        self.grown = until;
    }

    /// A send went through (not throttled).
    pub fn on_success(&mut self, now: Instant) {
        self.throttles_in_a_row = 0;
        let Some(rate) = self.adaptive else { return };
        if now.saturating_duration_since(self.grown) < RECOVERY_STEP {
            return;
        }
        self.grown = now;
        let grown = rate * 1.1 + 1.0;
        let unneeded = self.configured.is_some_and(|c| grown >= c) || grown > self.observed.max(1.0) * 4.0;
        self.adaptive = (!unneeded).then_some(grown);
    }

    fn count_send(&mut self, now: Instant) {
        let window = now.saturating_duration_since(self.window_start);
        if window >= Duration::from_secs(1) {
            self.observed = f64::from(self.window_sends) / window.as_secs_f64();
            self.window_start = now;
            self.window_sends = 0;
        }
        self.window_sends = self.window_sends.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn unlimited_without_a_rate_or_throttling() {
        let now = Instant::now();
        let mut r = RateLimiter::new(None, now);
        for _ in 0..10_000 {
            assert_eq!(r.acquire(now), Ok(()));
        }
        assert_eq!(r.rate(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_configured_rate_is_a_token_bucket_with_a_second_of_burst() {
        let start = Instant::now();
        let mut r = RateLimiter::new(Some(10.0), start);
        let sent = (0..100).filter(|_| r.acquire(start).is_ok()).count();
        assert_eq!(sent, 10);
        let next = r.acquire(start).unwrap_err();
        assert_eq!(next, start + Duration::from_millis(100));
        // Over ten seconds at most 10 per second get through (plus the first burst).
        let mut sent = 0;
        let mut now = start;
        while now < start + Duration::from_secs(10) {
            match r.acquire(now) {
                Ok(()) => sent += 1,
                Err(at) => now = at,
            }
        }
        assert!((99..=101).contains(&sent), "sent {sent}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttle_pauses_for_retry_after_and_halves_the_rate_once_per_pause() {
        let start = Instant::now();
        let mut r = RateLimiter::new(Some(40.0), start);
        r.on_throttled(start, Some(Duration::from_secs(1)));
        // The other answers of that burst come in while paused: counted once.
        for _ in 0..15 {
            r.on_throttled(start, Some(Duration::from_secs(1)));
        }
        assert_eq!(r.rate(), Some(20.0));
        assert_eq!(r.acquire(start), Err(start + Duration::from_secs(1)));
        let later = start + Duration::from_secs(1);
        assert_eq!(r.acquire(later), Ok(()));
        assert!(
            r.acquire(later).is_err(),
            "after a pause sending restarts from one message"
        );
        // Throttled again after the pause: halves again.
        r.on_throttled(later, Some(Duration::from_secs(1)));
        assert_eq!(r.rate(), Some(10.0));
    }

    #[tokio::test(start_paused = true)]
    async fn without_retry_after_pauses_double_and_the_rate_recovers() {
        let start = Instant::now();
        let mut r = RateLimiter::new(None, start);
        for _ in 0..50 {
            r.acquire(start).unwrap();
        }
        r.acquire(start + Duration::from_secs(1)).unwrap();
        r.on_throttled(start + Duration::from_secs(1), None);
        let rate = r.rate().expect("throttling sets a rate");
        assert!((24.0..=26.0).contains(&rate), "{rate}");
        let mut now = start + Duration::from_secs(2);
        assert!(r.acquire(now).is_ok());
        r.on_throttled(now, None);
        assert_eq!(r.acquire(now), Err(now + Duration::from_secs(2)), "second pause is 2 s");
        for _ in 0..60 {
            now += RECOVERY_STEP;
            r.on_success(now);
        }
        assert_eq!(r.rate(), None, "a minute without throttling lifts the limit");
    }
}
