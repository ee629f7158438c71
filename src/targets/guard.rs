//! What stands between a message and its target: the circuit breaker, the rate limit and the
//! concurrency limit, wired from the pure policies in [`crate::pipeline::circuit`] and
//! [`crate::pipeline::rate_limit`].
//!
//! [`TargetGuard::admit`] waits until a message may be sent (circuit closed or this message is
//! the probe, a rate token, a concurrency slot) and [`TargetGuard::record`] feeds the result
//! back. Waiting messages are counted, so [`IntakeGate`] can tell pollers to stop receiving
//! while a target is in an outage.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use metrics::{gauge, Gauge};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use veltrix_queue::QueueError;

use crate::observe::events::{
    CircuitClosed, CircuitHalfOpen, CircuitOpened, IntakePaused, IntakeResumed, LogEvent, TargetThrottled,
};
use crate::pipeline::circuit::{intake_paused, Admission, Circuit, State, Transition};
use crate::pipeline::rate_limit::RateLimiter;
use crate::pipeline::settings::TargetLimits;

/// Leave to send one message, from [`TargetGuard::admit`]; give it back to
/// [`TargetGuard::record`].
pub struct Ticket {
    probe: bool,
    epoch: u64,
    _slot: Option<OwnedSemaphorePermit>,
}

impl Ticket {
    /// The circuit's epoch when the message was let through.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

/// What the sender should do after a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterResult {
    /// Done: the message was sent, or failed in a way that is its own (permanent, or transient
    /// while the target is otherwise healthy).
    Settle,
    /// Send it again once admitted: the target is throttling or in an outage, and the message
    /// is not to blame.
    Hold,
}

struct Policies {
    circuit: Circuit,
    rate: RateLimiter,
}

/// One target's circuit, rate and concurrency.
pub struct TargetGuard {
    name: String,
    policies: Mutex<Policies>,
    slots: Option<Arc<Semaphore>>,
    /// Wakes messages waiting for the circuit.
    changed: Notify,
    waiting: AtomicUsize,
    /// False from the circuit's opening to its closing, so the intake gate can tell that every
    /// circuit is closed without taking a lock.
    closed: AtomicBool,
    state_gauge: Gauge,
    intake: Arc<Notify>,
}

impl TargetGuard {
    /// A guard for target `name`; `intake` is notified whenever the circuit changes.
    pub fn new(name: &str, limits: TargetLimits, intake: Arc<Notify>) -> Self {
        let state_gauge = gauge!("veltrix_target_circuit_state", "target" => name.to_string());
        state_gauge.set(State::Closed.gauge());
        Self {
            name: name.to_string(),
            policies: Mutex::new(Policies {
                circuit: Circuit::new(limits.circuit),
                rate: RateLimiter::new(limits.rate_per_sec, Instant::now()),
            }),
            slots: limits.max_concurrency.map(|n| Arc::new(Semaphore::new(n.max(1)))),
            changed: Notify::new(),
            waiting: AtomicUsize::new(0),
            closed: AtomicBool::new(true),
            state_gauge,
            intake,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Policies> {
        self.policies.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The circuit's state now.
    pub fn state(&self) -> State {
        self.lock().circuit.state(Instant::now())
    }

    /// How many times the circuit has opened.
    pub fn epoch(&self) -> u64 {
        self.lock().circuit.epoch()
    }

    /// Messages waiting for the circuit.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// When an open circuit turns half-open.
    pub fn open_until(&self) -> Option<Instant> {
        self.lock().circuit.open_until()
    }

    /// Waits until one message may be sent; `None` when `stop` fired or `give_up_at` passed
    /// first.
    pub async fn admit(&self, stop: &CancellationToken, give_up_at: Instant) -> Option<Ticket> {
        match self.admit_now() {
            Some(ticket) => Some(ticket),
            None => self.admit_waiting(stop, give_up_at).await,
        }
    }

    /// The common case, with one lock and no waiter or timer to register: the circuit is
    /// closed, no rate is in force (a rate's tokens go to the waiting messages in turn) and a
    /// concurrency slot is free (the semaphore hands freed slots to its waiters first). `None`
    /// leaves everything as it was (a slot taken here is given back) for
    /// [`Self::admit_waiting`].
    fn admit_now(&self) -> Option<Ticket> {
        let slot = match &self.slots {
            Some(slots) => Some(slots.clone().try_acquire_owned().ok()?),
            None => None,
        };
        let now = Instant::now();
        let mut p = self.lock();
        // Closed: `Circuit::admit` would say `Send` and change nothing.
        if p.circuit.state(now) != State::Closed || p.rate.rate().is_some() || p.rate.acquire(now).is_err() {
            return None;
        }
        Some(Ticket {
            probe: false,
            epoch: p.circuit.epoch(),
            _slot: slot,
        })
    }

    /// [`Self::admit`] when something has to be waited for: the circuit, a rate token or a slot.
    async fn admit_waiting(&self, stop: &CancellationToken, give_up_at: Instant) -> Option<Ticket> {
        let mut counted = false;
        let probe = loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (admission, transition, epoch) = {
                let mut p = self.lock();
                let (a, t) = p.circuit.admit(Instant::now());
                (a, t, p.circuit.epoch())
            };
            if let Some(t) = transition {
                self.transitioned(t, None);
            }
            let wait_until = match admission {
                Admission::Send => break Some((false, epoch)),
                Admission::Probe => break Some((true, epoch)),
                Admission::Wait(until) => until,
            };
            if !counted {
                counted = true;
                self.waiting.fetch_add(1, Ordering::Relaxed);
                self.intake.notify_waiters();
            }
            let stopped = tokio::select! {
                _ = stop.cancelled() => true,
                _ = tokio::time::sleep_until(give_up_at) => true,
                _ = &mut notified => false,
                _ = sleep_until_or_forever(wait_until) => false,
            };
            if stopped {
                break None;
            }
        };
        if counted {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            self.intake.notify_waiters();
        }
        let (probe, epoch) = probe?;
        // The rate, then a slot; giving up here frees the probe for another message.
        let ready = async {
            loop {
                let next = self.lock().rate.acquire(Instant::now());
                match next {
                    Ok(()) => break,
                    Err(at) => tokio::time::sleep_until(at).await,
                }
            }
            match &self.slots {
                Some(slots) => Some(slots.clone().acquire_owned().await.expect("never closed")),
                None => None,
            }
        };
        let given_up = async {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep_until(give_up_at) => {}
            }
        };
        tokio::select! {
            slot = ready => Some(Ticket { probe, epoch, _slot: slot }),
            _ = given_up => {
                if probe {
                    self.lock().circuit.on_probe_inconclusive();
                    self.changed.notify_waiters();
                }
                None
            }
        }
    }

    /// Feeds a send's result back; says whether the message is settled or to be held.
    pub fn record(&self, ticket: Ticket, result: &Result<(), QueueError>) -> AfterResult {
        let now = Instant::now();
        let mut p = self.lock();
        match result {
            Ok(()) => {
                p.rate.on_success(now);
                let t = p.circuit.on_success(ticket.probe);
                drop(p);
                if let Some(t) = t {
                    self.transitioned(t, None);
                }
                AfterResult::Settle
            }
            Err(e) if e.is_throttled() => {
                p.rate.on_throttled(now, e.retry_after);
                if ticket.probe {
                    p.circuit.on_probe_inconclusive();
                }
                let rate = p.rate.rate().unwrap_or(0.0);
                drop(p);
                self.changed.notify_waiters();
                TargetThrottled {
                    target: self.name.clone(),
                    rate_per_sec: rate,
                    pause_ms: e.retry_after.map_or(0, |d| d.as_millis() as u64),
                }
                .emit();
                AfterResult::Hold
            }
            Err(e) if !e.is_transient() => {
                // Refused for good: the target answered, and the message is to blame.
                if ticket.probe {
                    p.circuit.on_probe_inconclusive();
                    drop(p);
                    self.changed.notify_waiters();
                }
                AfterResult::Settle
            }
            Err(e) => {
                let t = p.circuit.on_failure(now, ticket.probe);
                let outage = p.circuit.state(now) != State::Closed;
                drop(p);
                if let Some(t) = t {
                    self.transitioned(t, Some(e));
                }
                if outage {
                    AfterResult::Hold
                } else {
                    AfterResult::Settle
                }
            }
        }
    }

    fn transitioned(&self, t: Transition, error: Option<&QueueError>) {
        self.closed.store(t.to == State::Closed, Ordering::Relaxed);
        self.state_gauge.set(t.to.gauge());
        match t.to {
            State::Open => CircuitOpened {
                target: self.name.clone(),
                open_for_ms: t.open_for.as_millis() as u64,
                error: error.map(|e| e.to_string()).unwrap_or_default(),
            }
            .emit(),
            State::HalfOpen => CircuitHalfOpen {
                target: self.name.clone(),
            }
            .emit(),
            State::Closed => CircuitClosed {
                target: self.name.clone(),
            }
            .emit(),
        }
        self.changed.notify_waiters();
        self.intake.notify_waiters();
    }
}

async fn sleep_until_or_forever(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Whether pollers may receive: not while a target is in an outage (see
/// [`intake_paused`]).
pub struct IntakeGate {
    guards: Vec<Arc<TargetGuard>>,
    changed: Arc<Notify>,
    paused: AtomicBool,
    gauge: Gauge,
}

impl IntakeGate {
    /// A gate over these targets' guards; `changed` is the notifier they were built with.
    pub fn new(guards: Vec<Arc<TargetGuard>>, changed: Arc<Notify>) -> Self {
        let gauge = gauge!("veltrix_intake_paused");
        gauge.set(0.0);
        Self {
            guards,
            changed,
            paused: AtomicBool::new(false),
            gauge,
        }
    }

    /// Why intake is paused, or `None` when it is not.
    pub fn paused_for(&self) -> Option<String> {
        // The common case, every circuit closed, takes no lock.
        if self.guards.iter().all(|g| g.closed.load(Ordering::Relaxed)) {
            return None;
        }
        let states: Vec<(State, usize)> = self.guards.iter().map(|g| (g.state(), g.waiting())).collect();
        if !intake_paused(states.iter().copied()) {
            return None;
        }
        let names: Vec<String> = self
            .guards
            .iter()
            .zip(&states)
            .filter(|(_, (s, _))| *s != State::Closed)
            .map(|(g, (s, _))| format!("{} ({})", g.name, s.as_str()))
            .collect();
        Some(names.join(", "))
    }

    /// Waits until intake may go on; false when `stop` fired first.
    pub async fn wait_open(&self, stop: &CancellationToken) -> bool {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let Some(reason) = self.paused_for() else {
                self.set_paused(false, String::new());
                return true;
            };
            self.set_paused(true, reason);
            let recheck = self.guards.iter().filter_map(|g| g.open_until()).min();
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = &mut notified => {}
                _ = sleep_until_or_forever(recheck) => {}
            }
        }
    }

    /// Whether intake is paused now (as last seen by a poller).
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    fn set_paused(&self, paused: bool, reason: String) {
        if self.paused.swap(paused, Ordering::Relaxed) == paused {
            return;
        }
        self.gauge.set(if paused { 1.0 } else { 0.0 });
        if paused {
            IntakePaused { targets: reason }.emit();
        } else {
            IntakeResumed {}.emit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::circuit::CircuitSettings;
    use std::time::Duration;

    fn guard(max_concurrency: Option<usize>, rate_per_sec: Option<f64>) -> TargetGuard {
        let limits = TargetLimits {
            max_concurrency,
            rate_per_sec,
            ..TargetLimits::default()
        };
        TargetGuard::new("t", limits, Arc::new(Notify::new()))
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[tokio::test(start_paused = true)]
    async fn a_freed_slot_goes_to_the_message_waiting_for_it_not_to_a_newcomer() {
        let g = Arc::new(guard(Some(1), None));
        let stop = CancellationToken::new();
        let first = g.admit(&stop, far()).await.expect("a free slot admits at once");
        let waiter = tokio::spawn({
            let (g, stop) = (g.clone(), stop.clone());
            async move { g.admit(&stop, far()).await.map(|t| t.epoch()) }
        });
        tokio::task::yield_now().await; // the waiter queues for the slot
        assert!(g.admit_now().is_none(), "no slot while the first message holds it");
        drop(first);
        assert!(g.admit_now().is_none(), "the freed slot is the waiter's");
        assert_eq!(waiter.await.unwrap(), Some(0));
    }

    #[tokio::test(start_paused = true)]
    async fn with_a_rate_in_force_every_message_waits_its_turn_for_a_token() {
        let g = guard(None, Some(1.0));
        let stop = CancellationToken::new();
        let start = Instant::now();
        assert!(
            g.admit_now().is_none(),
            "a rate in force is never admitted on the fast path"
        );
        let _ = g.admit(&stop, far()).await.expect("the first token is there");
        assert_eq!(start.elapsed(), Duration::ZERO);
        let _ = g.admit(&stop, far()).await.expect("the next token comes");
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_circuit_with_no_limits_admits_on_the_fast_path() {
        let g = guard(None, None);
        let ticket = g.admit_now().expect("closed, no rate, no slots");
        assert!(!ticket.probe);
        assert_eq!(ticket.epoch(), 0);
        let err = QueueError::transient("down");
        for _ in 0..CircuitSettings::default().failures {
            let t = g.admit(&CancellationToken::new(), far()).await.unwrap();
            g.record(t, &Err(err.clone()));
        }
        assert_eq!(g.state(), State::Open);
        assert!(g.admit_now().is_none(), "an open circuit waits");
    }
}
