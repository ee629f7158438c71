//! Liveness and readiness, shared between the pipeline (which updates them) and the server.
//!
//! Not ready (`/readyz` 503, with the reason) while draining, when the last receive failed,
//! when the source reports a lasting problem (a Pub/Sub stream that fails for good), or when a
//! receive has been waiting longer than its long poll plus [`RECEIVE_HANG_GRACE`] (an endpoint
//! that accepts connections and never answers).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How much longer than its long poll a receive may take before the worker is not ready.
pub const RECEIVE_HANG_GRACE: Duration = Duration::from_secs(15);

/// Whether a receive that started `running_for` ago with a long poll of `wait` is hanging.
pub fn receive_hanging(running_for: Duration, wait: Duration) -> bool {
    running_for > wait + RECEIVE_HANG_GRACE
}

/// What `/readyz` reports.
#[derive(Debug, Default)]
pub struct Health {
    source_reachable: AtomicBool,
    draining: AtomicBool,
    source_problem: Mutex<Option<String>>,
    intake_paused: Mutex<Option<String>>,
    /// The running config generation and its hash.
    config: Mutex<(u64, String)>,
    /// Receives in progress, by poller: when each started and how long it may wait.
    receives: Mutex<HashMap<usize, (Instant, Duration)>>,
}

impl Health {
    /// Records whether the last receive reached the source.
    pub fn set_source_reachable(&self, ok: bool) {
        self.source_reachable.store(ok, Ordering::Relaxed);
    }

    /// Records what the source says of itself (`Err`: a lasting problem, e.g. a Pub/Sub stream
    /// that keeps failing with a permanent error).
    pub fn set_source_problem(&self, status: Result<(), String>) {
        *self.source_problem.lock().unwrap_or_else(|e| e.into_inner()) = status.err();
    }

    /// Poller `poller` started a receive that may wait up to `wait`.
    pub fn receive_started(&self, poller: usize, wait: Duration) {
        self.receives
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(poller, (Instant::now(), wait));
    }

    /// Poller `poller`'s receive returned.
    pub fn receive_finished(&self, poller: usize) {
        self.receives.lock().unwrap_or_else(|e| e.into_inner()).remove(&poller);
    }

    /// Records why intake is paused (`None`: it is not). The worker stays ready while paused:
    /// it is healthy, its target is not.
    pub fn set_intake_paused(&self, reason: Option<String>) {
        *self.intake_paused.lock().unwrap_or_else(|e| e.into_inner()) = reason;
    }

    /// Records the running config generation and its hash.
    pub fn set_config(&self, generation: u64, hash: &str) {
        *self.config.lock().unwrap_or_else(|e| e.into_inner()) = (generation, hash.to_string());
    }

    /// The running config generation and its hash (0 and empty before the worker runs).
    pub fn config(&self) -> (u64, String) {
        self.config.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// What `/readyz` says when ready: `ready`, or why intake is paused, then the running
    /// config (`config generation 2, hash 3f2a…`).
    pub fn ready_note(&self) -> String {
        let state = match self.intake_paused.lock().unwrap_or_else(|e| e.into_inner()).as_deref() {
            None => "ready".to_string(),
            Some(why) => format!("ready; intake paused: target outage: {why}"),
        };
        match self.config() {
            (0, _) => state,
            (generation, hash) if hash.is_empty() => format!("{state}; config generation {generation}"),
            (generation, hash) => format!("{state}; config generation {generation}, hash {hash}"),
        }
    }

    /// Marks the worker as draining (no longer ready for new work).
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Ready: the source answers and the worker is not draining. `Err` says why not.
    pub fn ready(&self) -> Result<(), String> {
        if self.draining.load(Ordering::Relaxed) {
            return Err("draining".into());
        }
        if let Some(problem) = self.source_problem.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Err(format!("source failing: {problem}"));
        }
        let hanging = self
            .receives
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|(started, wait)| (started.elapsed(), *wait))
            .find(|(running, wait)| receive_hanging(*running, *wait));
        if let Some((running, _)) = hanging {
            return Err(format!(
                "a receive has been waiting {} s for the source to answer",
                running.as_secs()
            ));
        }
        if !self.source_reachable.load(Ordering::Relaxed) {
            return Err("source not reachable".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receive_hangs_past_its_long_poll_plus_grace() {
        let wait = Duration::from_secs(20);
        assert!(!receive_hanging(Duration::from_secs(20), wait));
        assert!(!receive_hanging(wait + RECEIVE_HANG_GRACE, wait));
        assert!(receive_hanging(
            wait + RECEIVE_HANG_GRACE + Duration::from_millis(1),
            wait
        ));
    }

    #[test]
    fn readiness_names_the_reason() {
        let h = Health::default();
        h.set_source_reachable(true);
        assert_eq!(h.ready(), Ok(()));
        h.set_source_problem(Err("subscription deleted".into()));
        assert!(h.ready().unwrap_err().contains("subscription deleted"));
        h.set_source_problem(Ok(()));
        h.receive_started(0, Duration::ZERO);
        h.receive_finished(0);
        assert_eq!(h.ready(), Ok(()));
        h.set_intake_paused(Some("fraud (open)".into()));
        assert_eq!(h.ready(), Ok(()), "a target outage is not the worker's");
        assert_eq!(h.ready_note(), "ready; intake paused: target outage: fraud (open)");
        h.set_intake_paused(None);
        assert_eq!(h.ready_note(), "ready");
        h.set_draining();
        assert_eq!(h.ready(), Err("draining".into()));
    }
}
