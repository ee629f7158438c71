//! The retry budget: `max_attempts` counts only the failures a message caused itself.
//!
//! The worker owns the count. A failed message is retried in place: it stays held (its lease
//! extended by the lease keeper, its ordering key holding its siblings), waits its backoff,
//! and is tried again, so neither the provider's delivery count nor the siblings' is spent.
//! After the backoff the failure is judged ([`judge`]):
//!
//! - a target the attempt failed on opened its circuit since the failure (its
//!   [`epoch`](crate::pipeline::circuit::Circuit::epoch) moved): the failure was part of an
//!   outage and is forgiven; the message waits for the circuit like every other;
//! - otherwise it counts; when `max_attempts` failures are counted the message is
//!   dead-lettered as `retry_budget_exhausted` with `veltrix.attempts` = the count.
//!
//! Throttling never reaches the budget (the target's rate adapts, see
//! [`rate_limit`](crate::pipeline::rate_limit)); nor do releases at drain, hold-backs behind a
//! sibling, or redeliveries after a restart (the count lives with the message in this process;
//! a restart starts it again, and the provider's own `maxReceiveCount` /
//! `max_delivery_attempts` remains the backstop for crash loops).

/// What a judged failure amounts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Part of a target outage: costs nothing; try again.
    Forgiven,
    /// The message's own failure number `failures`; try again.
    Counted {
        /// Own failures so far, this one included.
        failures: u32,
    },
    /// The message's own failure number `failures` = `max_attempts`: dead-letter it.
    Exhausted {
        /// Own failures so far, this one included.
        failures: u32,
    },
}

/// Judges a failed attempt of a message that had `failures_before` own failures, once its
/// backoff has passed; `outage_since` is true when a target it failed on opened its circuit
/// after the failure.
pub fn judge(failures_before: u32, max_attempts: u32, outage_since: bool) -> Verdict {
    if outage_since {
        return Verdict::Forgiven;
    }
    count(failures_before, max_attempts)
}

/// Counts a failure that is the message's own whatever the targets do (a rule's `retry`
/// action, a transform the sandbox could not run).
pub fn count(failures_before: u32, max_attempts: u32) -> Verdict {
    let failures = failures_before.saturating_add(1);
    if failures >= max_attempts.max(1) {
        Verdict::Exhausted { failures }
    } else {
        Verdict::Counted { failures }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_failures_count_up_to_the_budget() {
        assert_eq!(judge(0, 3, false), Verdict::Counted { failures: 1 });
        assert_eq!(judge(1, 3, false), Verdict::Counted { failures: 2 });
        assert_eq!(judge(2, 3, false), Verdict::Exhausted { failures: 3 });
        assert_eq!(count(0, 1), Verdict::Exhausted { failures: 1 });
        assert_eq!(count(0, 0), Verdict::Exhausted { failures: 1 }, "0 means 1");
    }

    #[test]
    fn failures_in_an_outage_cost_nothing() {
        for before in [0, 2, 10] {
            assert_eq!(judge(before, 3, true), Verdict::Forgiven);
        }
    }
}
