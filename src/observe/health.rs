//! Liveness and readiness, shared between the pipeline (which updates them) and the server.

use std::sync::atomic::{AtomicBool, Ordering};

/// What `/readyz` reports.
#[derive(Debug, Default)]
pub struct Health {
    source_reachable: AtomicBool,
    draining: AtomicBool,
}

impl Health {
    /// Records whether the last receive reached the source.
    pub fn set_source_reachable(&self, ok: bool) {
        self.source_reachable.store(ok, Ordering::Relaxed);
    }

    /// Marks the worker as draining (no longer ready for new work).
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Ready: the source answers and the worker is not draining. `Err` says why not.
    pub fn ready(&self) -> Result<(), &'static str> {
        if self.draining.load(Ordering::Relaxed) {
            return Err("draining");
        }
        if !self.source_reachable.load(Ordering::Relaxed) {
            return Err("source not reachable");
        }
        Ok(())
    }
}
