//! Pacing of receives that came back empty.
//!
//! A long poll paces itself: an empty receive has waited its `wait_time_secs`. A receive that
//! comes back empty much sooner (`wait_time_secs = 0`, short polling, an emulator that answers
//! at once) would make the poller spin, sending requests as fast as the network allows, so
//! such receives back off: 10 ms, doubling per empty receive in a row, up to 1 s.

use std::time::Duration;

/// First pause after an empty receive that returned early.
pub const FIRST_EMPTY_PAUSE: Duration = Duration::from_millis(10);
/// Longest pause between early empty receives.
pub const MAX_EMPTY_PAUSE: Duration = Duration::from_secs(1);

/// The pause before the next receive, after the `empty_in_a_row`-th empty receive in a row
/// (1-based) took `took` with a long poll of `wait`.
pub fn empty_receive_pause(took: Duration, wait: Duration, empty_in_a_row: u32) -> Duration {
    // Waited (nearly) as long as asked, or at least a second: the long poll did the pacing.
    let waited_enough = took >= wait.min(MAX_EMPTY_PAUSE) / 2 && !wait.is_zero();
    if waited_enough {
        return Duration::ZERO;
    }
    let doublings = empty_in_a_row.saturating_sub(1).min(16);
    FIRST_EMPTY_PAUSE.saturating_mul(1 << doublings).min(MAX_EMPTY_PAUSE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_polls_need_no_pause() {
        let wait = Duration::from_secs(20);
        assert_eq!(empty_receive_pause(Duration::from_secs(20), wait, 1), Duration::ZERO);
        assert_eq!(empty_receive_pause(Duration::from_secs(1), wait, 9), Duration::ZERO);
    }

    #[test]
    fn early_empty_receives_back_off_to_a_second() {
        let zero = Duration::ZERO;
        assert_eq!(empty_receive_pause(zero, zero, 1), Duration::from_millis(10));
        assert_eq!(empty_receive_pause(zero, zero, 2), Duration::from_millis(20));
        assert_eq!(empty_receive_pause(zero, zero, 8), Duration::from_millis(1000));
        assert_eq!(empty_receive_pause(zero, zero, u32::MAX), MAX_EMPTY_PAUSE);
        let wait = Duration::from_secs(20);
        assert_eq!(
            empty_receive_pause(Duration::from_millis(3), wait, 1),
            Duration::from_millis(10)
        );
    }
}
