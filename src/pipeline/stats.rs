//! Counters of what the pipeline did, and the summary line printed at exit.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use crate::observe::metrics::Metrics;
use crate::rules::plan::Outcome;

/// Live counters, shared by every task of a worker; each event is counted here (for the summary
/// line) and in the Prometheus metrics once those are registered.
#[derive(Default)]
pub struct Stats {
    metrics: OnceLock<Metrics>,
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
    /// Failed attempts retried (in place: the message stays held through its backoff).
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

impl fmt::Debug for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Stats").field(&self.snapshot()).finish()
    }
}

impl Stats {
    /// Starts recording Prometheus metrics too (once per worker).
    pub fn register_metrics(&self, metrics: Metrics) {
        let _ = self.metrics.set(metrics);
    }

    fn metrics(&self) -> Option<&Metrics> {
        self.metrics.get()
    }

    /// Counts received deliveries.
    pub fn received(&self, n: u64) {
        add(&self.received, n);
        if let Some(m) = self.metrics() {
            m.received(n);
        }
    }

    /// A received message left the worker (settled, released or abandoned).
    pub fn left(&self) {
        if let Some(m) = self.metrics() {
            m.left();
        }
    }

    /// Records the source's backlog.
    pub fn backlog(&self, n: u64) {
        if let Some(m) = self.metrics() {
            m.backlog(n);
        }
    }

    /// Counts a dead letter by reason.
    pub fn dead_lettered(&self, reason: &str) {
        if let Some(m) = self.metrics() {
            m.dead_lettered(reason);
        }
    }

    /// Records the duration of a receive call.
    pub fn receive_took(&self, took: Duration) {
        if let Some(m) = self.metrics() {
            m.receive_took(took);
        }
    }

    /// Records the duration of an ack call.
    pub fn ack_took(&self, took: Duration) {
        if let Some(m) = self.metrics() {
            m.ack_took(took);
        }
    }

    /// Records how long one message took from receipt to settlement.
    pub fn processing_took(&self, took: Duration) {
        if let Some(m) = self.metrics() {
            m.processing_took(took);
        }
    }

    /// Counts a settled message by its outcome.
    pub fn settled(&self, outcome: Outcome) {
        if let Some(m) = self.metrics() {
            m.settled(outcome);
        }
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
        if let Some(m) = self.metrics() {
            m.dead_letter_failed();
        }
    }

    /// Counts acks that failed for good.
    pub fn ack_failed(&self, n: u64) {
        add(&self.ack_failures, n);
        if let Some(m) = self.metrics() {
            m.ack_failed(n);
        }
    }

    /// Counts lease extensions.
    pub fn leases_extended(&self, n: u64) {
        add(&self.lease_extensions, n);
        if let Some(m) = self.metrics() {
            m.leases_extended(n);
        }
    }

    /// Counts an empty receive.
    pub fn empty_receive(&self) {
        add(&self.empty_receives, 1);
        if let Some(m) = self.metrics() {
            m.empty_receive();
        }
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
