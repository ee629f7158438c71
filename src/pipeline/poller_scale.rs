//! Adaptive receive concurrency: pollers are added while receives come back full and shed on
//! empty receives, between `pollers` (always running) and `max_pollers`.
//!
//! A full receive (the provider's batch maximum) says messages are waiting faster than the
//! running pollers take them, so one more poller starts; an empty receive says they keep up,
//! so that poller stops, down to the minimum. An idle worker keeps just its minimum in long
//! polls (with the default of 1: one request per wait), and a backlog ramps up within a few
//! receives. [`decide`] is the pure rule; [`PollerScale`] applies it to the running count.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Default `max_pollers`.
pub const DEFAULT_MAX_POLLERS: usize = 16;

/// What a poller does after a receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Start one more poller.
    Grow,
    /// This poller stops.
    Shrink,
    /// Nothing changes.
    Keep,
}

/// The rule: with `active` pollers running (between `min` and `max`), a receive that brought
/// `received` messages of a possible `full` grows the pool when full, shrinks it when empty.
pub fn decide(active: usize, min: usize, max: usize, received: usize, full: usize) -> Change {
    if received >= full.max(1) && active < max {
        Change::Grow
    } else if received == 0 && active > min {
        Change::Shrink
    } else {
        Change::Keep
    }
}

/// The running poller count, changed only through [`decide`].
#[derive(Debug)]
pub struct PollerScale {
    min: usize,
    max: usize,
    active: AtomicUsize,
}

impl PollerScale {
    /// `min` pollers running (at least 1), at most `max` (at least `min`).
    pub fn new(min: usize, max: usize) -> Self {
        let min = min.max(1);
        Self {
            min,
            max: max.max(min),
            active: AtomicUsize::new(min),
        }
    }

    /// Pollers always running.
    pub fn min(&self) -> usize {
        self.min
    }

    /// Pollers running now (counting ones asked for and not started yet).
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Applies [`decide`] after a receive and updates the count; the caller starts a poller on
    /// [`Change::Grow`] and stops on [`Change::Shrink`].
    pub fn after_receive(&self, received: usize, full: usize) -> Change {
        let mut active = self.active.load(Ordering::Relaxed);
        loop {
            let change = decide(active, self.min, self.max, received, full);
            let next = match change {
                Change::Grow => active + 1,
                Change::Shrink => active - 1,
                Change::Keep => return Change::Keep,
            };
            match self
                .active
                .compare_exchange_weak(active, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return change,
                Err(now) => active = now,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_receives_grow_to_the_maximum_and_empty_ones_shed_to_the_minimum() {
        assert_eq!(decide(1, 1, 16, 10, 10), Change::Grow);
        assert_eq!(decide(16, 1, 16, 10, 10), Change::Keep, "never past the maximum");
        assert_eq!(decide(4, 1, 16, 3, 10), Change::Keep, "a partial receive keeps up");
        assert_eq!(decide(4, 1, 16, 0, 10), Change::Shrink);
        assert_eq!(decide(1, 1, 16, 0, 10), Change::Keep, "the minimum keeps polling");
        assert_eq!(decide(3, 3, 3, 10, 10), Change::Keep, "a fixed pool never changes");
        assert_eq!(decide(3, 3, 3, 0, 10), Change::Keep);
    }

    #[test]
    fn concurrent_decisions_stay_within_bounds() {
        let scale = std::sync::Arc::new(PollerScale::new(1, 16));
        let grown: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let scale = scale.clone();
                    s.spawn(move || (0..10).filter(|_| scale.after_receive(10, 10) == Change::Grow).count())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(grown, 15, "from 1 to 16, not beyond");
        assert_eq!(scale.active(), 16);
        let shed = (0..40).filter(|_| scale.after_receive(0, 10) == Change::Shrink).count();
        assert_eq!(shed, 15);
        assert_eq!(scale.active(), 1);
    }
}
