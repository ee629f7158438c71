//! Circuit breaker per target: closed → open → half-open (one probe) → closed.
//!
//! A target that fails `failures` times in a row (transient failures: connection refused, 5xx,
//! timeouts; across messages, retries included) opens. While open nothing is sent to it; the
//! messages that need it wait in the worker with their leases extended, and intake pauses
//! ([`intake_paused`]). After `open` it turns half-open: one message is sent as a probe. A
//! probe that succeeds closes the circuit; one that fails opens it again for twice as long, up
//! to `max_open`. Throttling and permanent refusals say nothing about an outage and leave the
//! state alone.
//!
//! [`Circuit`] is the pure state machine (every method takes `now`); the pipeline holds it
//! behind a lock and wires its decisions in. Each opening bumps [`Circuit::epoch`], which the
//! retry budget uses to tell an outage from a message's own failure.

use std::time::Duration;

use tokio::time::Instant;

/// Default `failures`.
pub const DEFAULT_FAILURES: u32 = 10;
/// Default `open_secs`.
pub const DEFAULT_OPEN: Duration = Duration::from_secs(5);
/// Default `max_open_secs`.
pub const DEFAULT_MAX_OPEN: Duration = Duration::from_secs(300);

/// When a circuit opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitSettings {
    /// Transient failures in a row that open the circuit.
    pub failures: u32,
    /// How long it stays open the first time.
    pub open: Duration,
    /// Longest it stays open (the interval doubles per failed probe up to this).
    pub max_open: Duration,
}

impl Default for CircuitSettings {
    fn default() -> Self {
        Self {
            failures: DEFAULT_FAILURES,
            open: DEFAULT_OPEN,
            max_open: DEFAULT_MAX_OPEN,
        }
    }
}

/// The state, as metrics and logs show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Sending.
    Closed,
    /// Open: nothing is sent until the interval ends.
    Open,
    /// One probe may be sent.
    HalfOpen,
}

impl State {
    /// The `veltrix_target_circuit_state` value: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> f64 {
        match self {
            State::Closed => 0.0,
            State::HalfOpen => 1.0,
            State::Open => 2.0,
        }
    }

    /// The name logs use.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

/// What a sender may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Send.
    Send,
    /// Send: this message is the probe. Report its result with `probe = true`.
    Probe,
    /// Wait; ask again at this time or when the state changes (`None`: a probe is out).
    Wait(Option<Instant>),
}

/// A change of state, to log and show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state now.
    pub to: State,
    /// How long it stays open (for `Open`).
    pub open_for: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inner {
    Closed { in_a_row: u32 },
    Open { until: Instant, interval: Duration },
    HalfOpen { probing: bool, interval: Duration },
}

/// One target's circuit.
#[derive(Debug, Clone)]
pub struct Circuit {
    settings: CircuitSettings,
    inner: Inner,
    epoch: u64,
}

impl Circuit {
    /// A closed circuit.
    pub fn new(settings: CircuitSettings) -> Self {
        Self {
            settings,
            inner: Inner::Closed { in_a_row: 0 },
            epoch: 0,
        }
    }

    /// The state at `now` (an open circuit whose interval ended is half-open).
    pub fn state(&self, now: Instant) -> State {
        match self.inner {
            Inner::Closed { .. } => State::Closed,
            Inner::Open { until, .. } if now < until => State::Open,
            Inner::Open { .. } | Inner::HalfOpen { .. } => State::HalfOpen,
        }
    }

    /// How many times the circuit has opened (probes that failed included).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// When an open circuit turns half-open.
    pub fn open_until(&self) -> Option<Instant> {
        match self.inner {
            Inner::Open { until, .. } => Some(until),
            _ => None,
        }
    }

    /// May a message be sent now?
    pub fn admit(&mut self, now: Instant) -> (Admission, Option<Transition>) {
        match self.inner {
            Inner::Closed { .. } => (Admission::Send, None),
            Inner::Open { until, .. } if now < until => (Admission::Wait(Some(until)), None),
            Inner::Open { interval, .. } => {
                self.inner = Inner::HalfOpen {
                    probing: true,
                    interval,
                };
                let t = Transition {
                    to: State::HalfOpen,
                    open_for: Duration::ZERO,
                };
                (Admission::Probe, Some(t))
            }
            Inner::HalfOpen { probing: true, .. } => (Admission::Wait(None), None),
            Inner::HalfOpen { interval, .. } => {
                self.inner = Inner::HalfOpen {
                    probing: true,
                    interval,
                };
                (Admission::Probe, None)
            }
        }
    }

    /// A send succeeded (the probe, when `probe`).
    pub fn on_success(&mut self, probe: bool) -> Option<Transition> {
        match self.inner {
            Inner::Closed { .. } => {
                self.inner = Inner::Closed { in_a_row: 0 };
                None
            }
            Inner::HalfOpen { .. } if probe => {
                self.inner = Inner::Closed { in_a_row: 0 };
                Some(Transition {
                    to: State::Closed,
                    open_for: Duration::ZERO,
                })
            }
            // A send that left before the circuit opened: it says little about now.
            Inner::Open { .. } | Inner::HalfOpen { .. } => None,
        }
    }

    /// A send failed transiently (the probe, when `probe`).
    pub fn on_failure(&mut self, now: Instant, probe: bool) -> Option<Transition> {
        match self.inner {
            Inner::Closed { in_a_row } => {
                let in_a_row = in_a_row + 1;
                if in_a_row >= self.settings.failures.max(1) {
                    Some(self.open(now, self.settings.open))
                } else {
                    self.inner = Inner::Closed { in_a_row };
                    None
                }
            }
            Inner::HalfOpen { interval, .. } if probe => {
                let next = interval.saturating_mul(2).min(self.settings.max_open);
                Some(self.open(now, next))
            }
            Inner::Open { .. } | Inner::HalfOpen { .. } => None,
        }
    }

    /// The probe ended without saying whether the target is back (throttled, refused the
    /// message for good, or was abandoned at drain): another message may probe.
    pub fn on_probe_inconclusive(&mut self) {
        if let Inner::HalfOpen { interval, .. } = self.inner {
            self.inner = Inner::HalfOpen {
                probing: false,
                interval,
            };
        }
    }

    fn open(&mut self, now: Instant, interval: Duration) -> Transition {
        let interval = interval.max(Duration::from_millis(1));
        self.inner = Inner::Open {
            until: now + interval,
            interval,
        };
        self.epoch += 1;
        Transition {
            to: State::Open,
            open_for: interval,
        }
    }
}

/// Whether pollers should stop receiving: some target is open, or half-open with messages
/// already waiting for it (one of them probes; more would only wait too). A half-open target
/// nobody waits for lets intake resume, so a message can come and probe it.
pub fn intake_paused(targets: impl IntoIterator<Item = (State, usize)>) -> bool {
    targets.into_iter().any(|(state, waiting)| match state {
        State::Closed => false,
        State::Open => true,
        State::HalfOpen => waiting > 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> CircuitSettings {
        CircuitSettings {
            failures: 3,
            open: Duration::from_secs(5),
            max_open: Duration::from_secs(12),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_failures_in_a_row_and_a_success_resets_the_count() {
        let mut c = Circuit::new(settings());
        let now = Instant::now();
        assert_eq!(c.on_failure(now, false), None);
        assert_eq!(c.on_failure(now, false), None);
        assert_eq!(c.on_success(false), None);
        assert_eq!(c.on_failure(now, false), None);
        assert_eq!(c.on_failure(now, false), None);
        assert_eq!(c.epoch(), 0);
        let t = c.on_failure(now, false).expect("third failure in a row opens");
        assert_eq!(t.to, State::Open);
        assert_eq!(t.open_for, Duration::from_secs(5));
        assert_eq!(c.epoch(), 1);
        assert_eq!(c.state(now), State::Open);
        assert_eq!(c.admit(now).0, Admission::Wait(Some(now + Duration::from_secs(5))));
        // Late results of sends made before it opened change nothing.
        assert_eq!(c.on_failure(now, false), None);
        assert_eq!(c.on_success(false), None);
        assert_eq!(c.epoch(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn one_probe_at_a_time_and_failed_probes_double_the_interval_up_to_the_cap() {
        let mut c = Circuit::new(settings());
        let mut now = Instant::now();
        for _ in 0..3 {
            c.on_failure(now, false);
        }
        let mut expected = [10, 12, 12].into_iter();
        for _ in 0..3 {
            now += Duration::from_secs(13);
            assert_eq!(c.state(now), State::HalfOpen);
            let (admission, t) = c.admit(now);
            assert_eq!(admission, Admission::Probe);
            assert_eq!(t.map(|t| t.to), Some(State::HalfOpen));
            assert_eq!(c.admit(now).0, Admission::Wait(None), "only one probe is out");
            let t = c.on_failure(now, true).expect("a failed probe reopens");
            assert_eq!(t.open_for, Duration::from_secs(expected.next().unwrap()));
        }
        assert_eq!(c.epoch(), 4);
        now += Duration::from_secs(13);
        assert_eq!(c.admit(now).0, Admission::Probe);
        c.on_probe_inconclusive();
        assert_eq!(c.admit(now).0, Admission::Probe, "an inconclusive probe frees the slot");
        let t = c.on_success(true).expect("a good probe closes");
        assert_eq!(t.to, State::Closed);
        assert_eq!(c.admit(now).0, Admission::Send);
        // Closed again, it needs the full count to reopen, at the first interval.
        c.on_failure(now, false);
        c.on_failure(now, false);
        assert_eq!(c.on_failure(now, false).unwrap().open_for, Duration::from_secs(5));
    }

    #[test]
    fn intake_pauses_for_open_targets_and_half_open_ones_with_waiters() {
        assert!(!intake_paused([(State::Closed, 5), (State::Closed, 0)]));
        assert!(intake_paused([(State::Closed, 0), (State::Open, 0)]));
        assert!(intake_paused([(State::HalfOpen, 1)]));
        assert!(!intake_paused([(State::HalfOpen, 0)]));
        assert!(!intake_paused(std::iter::empty()));
    }
}
