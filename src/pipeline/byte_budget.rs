//! The bound on body bytes in flight (`max_in_flight_bytes`), next to the bound on messages.
//!
//! A receive cannot know the size of what it will get, so a poller waits until the bytes held
//! are under the budget ([`has_room`]), then reserves the most its receive can bring (SQS:
//! 10 × `max_body_bytes`; a source that buffers on its own, like Pub/Sub's flow-controlled
//! stream, reserves nothing) and holds what came in place of the reservation. Reservations
//! count as held, so however many pollers run, the worst case is the budget plus one receive
//! batch, which is what the Kubernetes memory limit in `deploy/` is derived from.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// Whether a poller may receive while `held` bytes are in flight under a budget of `max`.
pub fn has_room(held: usize, max: usize) -> bool {
    held < max
}

/// Body bytes held by messages in flight.
#[derive(Debug)]
pub struct ByteBudget {
    held: AtomicUsize,
    max: usize,
    freed: Notify,
}

/// Bytes one message holds; given back when dropped.
#[derive(Debug)]
pub struct HeldBytes {
    budget: Arc<ByteBudget>,
    bytes: usize,
}

impl ByteBudget {
    /// A budget of `max` bytes.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            held: AtomicUsize::new(0),
            max,
            freed: Notify::new(),
        })
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    /// Waits until a receive may start.
    pub async fn wait_for_room(&self) {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if has_room(self.held(), self.max) {
                return;
            }
            freed.await;
        }
    }

    /// Waits until a receive may start, then holds `reserve` bytes for what it may bring until
    /// the returned guard is dropped (after the received messages hold their own).
    pub async fn reserve_for_receive(self: &Arc<Self>, reserve: usize) -> HeldBytes {
        self.wait_for_room().await;
        self.hold(reserve)
    }

    /// Records `bytes` as held until the returned guard is dropped.
    pub fn hold(self: &Arc<Self>, bytes: usize) -> HeldBytes {
        self.held.fetch_add(bytes, Ordering::AcqRel);
        HeldBytes {
            budget: self.clone(),
            bytes,
        }
    }
}

impl Drop for HeldBytes {
    fn drop(&mut self) {
        let before = self.budget.held.fetch_sub(self.bytes, Ordering::AcqRel);
        // Waiters wait only while there is no room: wake them when room appears.
        if !has_room(before, self.budget.max) && has_room(before - self.bytes, self.budget.max) {
            self.budget.freed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn room_is_left_until_the_budget_is_reached() {
        assert!(has_room(0, 10));
        assert!(has_room(9, 10));
        assert!(!has_room(10, 10));
        assert!(!has_room(50, 10));
    }

    #[tokio::test(start_paused = true)]
    async fn reservations_of_receives_under_way_count_as_held() {
        let budget = ByteBudget::new(100);
        let first = budget.reserve_for_receive(60).await;
        let second = budget.reserve_for_receive(60).await;
        assert_eq!(
            budget.held(),
            120,
            "room was left for the second: one batch over at most"
        );
        let third = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve_for_receive(60).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!third.is_finished(), "no third receive while two may bring 120");
        let small = budget.hold(5); // what the first receive brought
        drop(first);
        drop(second);
        let third = tokio::time::timeout(Duration::from_secs(1), third)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(budget.held(), 65);
        drop((small, third));
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_receive_waits_until_bytes_are_given_back() {
        let budget = ByteBudget::new(100);
        let big = budget.hold(150);
        assert_eq!(budget.held(), 150);
        let waiter = tokio::spawn({
            let budget = budget.clone();
            async move { budget.wait_for_room().await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiter.is_finished(), "no room while over the budget");
        drop(big);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("room once the bytes are back")
            .unwrap();
        assert_eq!(budget.held(), 0);
    }
}
