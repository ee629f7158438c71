//! Counters of what the pipeline did, and the summary line printed at exit.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::rules::plan::Outcome;

/// Live counters, shared by every task of a worker.
#[derive(Debug, Default)]
pub struct Stats {
    received: AtomicU64,
    forwarded: AtomicU64,
    dropped: AtomicU64,
    acked_unmatched: AtomicU64,
    dead_lettered: AtomicU64,
    retried: AtomicU64,
    dead_letter_failures: AtomicU64,
    ack_failures: AtomicU64,
    lease_extensions: AtomicU64,
    empty_receives: AtomicU64,
    released: AtomicU64,
}

/// A snapshot of [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// Deliveries received (redeliveries count again).
    pub received: u64,
    /// Messages forwarded to every target their rules named, then acked.
    pub forwarded: u64,
    /// Messages that matched only `drop` actions, acked.
    pub dropped: u64,
    /// Unmatched messages acked (`unmatched = "ack"`).
    pub acked_unmatched: u64,
    /// Messages written to the dead-letter target, then acked.
    pub dead_lettered: u64,
    /// Deliveries nacked for a later retry.
    pub retried: u64,
    /// Dead-letter writes that failed (the message was nacked and comes back).
    pub dead_letter_failures: u64,
    /// Acks that failed for good (the message comes back: a duplicate, not a loss).
    pub ack_failures: u64,
    /// Lease extensions sent.
    pub lease_extensions: u64,
    /// Receives that returned nothing.
    pub empty_receives: u64,
    /// Received messages released unprocessed at shutdown (nack 0).
    pub released: u64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Stats {
    /// Counts received deliveries.
    pub fn received(&self, n: u64) {
        add(&self.received, n);
    }

    /// Counts a settled message by its outcome.
    pub fn settled(&self, outcome: Outcome) {
        add(
            match outcome {
                Outcome::Forward => &self.forwarded,
                Outcome::Drop => &self.dropped,
                Outcome::Ack => &self.acked_unmatched,
                Outcome::DeadLetter => &self.dead_lettered,
                Outcome::Retry => &self.retried,
            },
            1,
        );
    }

    /// Counts a failed dead-letter write.
    pub fn dead_letter_failed(&self) {
        add(&self.dead_letter_failures, 1);
    }

    /// Counts acks that failed for good.
    pub fn ack_failed(&self, n: u64) {
        add(&self.ack_failures, n);
    }

    /// Counts lease extensions.
    pub fn leases_extended(&self, n: u64) {
        add(&self.lease_extensions, n);
    }

    /// Counts an empty receive.
    pub fn empty_receive(&self) {
        add(&self.empty_receives, 1);
    }

    /// Counts messages released at shutdown.
    pub fn released(&self, n: u64) {
        add(&self.released, n);
    }

    /// The current values.
    pub fn snapshot(&self) -> Summary {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Summary {
            received: get(&self.received),
            forwarded: get(&self.forwarded),
            dropped: get(&self.dropped),
            acked_unmatched: get(&self.acked_unmatched),
            dead_lettered: get(&self.dead_lettered),
            retried: get(&self.retried),
            dead_letter_failures: get(&self.dead_letter_failures),
            ack_failures: get(&self.ack_failures),
            lease_extensions: get(&self.lease_extensions),
            empty_receives: get(&self.empty_receives),
            released: get(&self.released),
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "received={} forwarded={} dropped={} acked_unmatched={} dead_lettered={} retried={}",
            self.received, self.forwarded, self.dropped, self.acked_unmatched, self.dead_lettered, self.retried
        )?;
        if self.dead_letter_failures > 0 {
            write!(f, " dead_letter_failures={}", self.dead_letter_failures)?;
        }
        if self.ack_failures > 0 {
            write!(f, " ack_failures={}", self.ack_failures)?;
        }
        if self.released > 0 {
            write!(f, " released={}", self.released)?;
        }
        Ok(())
    }
}
