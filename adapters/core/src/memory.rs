//! An in-process queue with the delivery semantics of a real one.
//!
//! - A received message is leased for the visibility timeout; if it is neither acked nor
//!   extended before the lease ends, it becomes visible again and its delivery attempt grows.
//! - `nack(delay)` makes it visible again after `delay`.
//! - In FIFO mode, messages with the same ordering key are handed out in publish order and a
//!   group is locked while any of its messages is in flight (like an SQS FIFO message group).
//! - Faults can be injected (failing publishes, failing acks) and every call can be given a
//!   simulated network latency, for tests and benchmarks.
//!
//! Time is `tokio::time`, so tests with paused time control visibility and delays exactly.
//! `MemoryQueue` is cheap to clone; clones share the queue.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::{
    AckFailure, AckToken, Attributes, Delivery, OutboundMessage, Publisher, QueueError, Received, Requeued, Source,
    SourceInfo, SourceLimits,
};

/// Most messages one receive may return, as for SQS.
pub const MAX_RECEIVE_BATCH: usize = 10;
/// Most messages one publish call may carry.
pub const MAX_PUBLISH_BATCH: usize = 100;
/// Longest lease, as for SQS (12 h).
pub const MAX_LEASE: Duration = Duration::from_secs(12 * 60 * 60);
/// Default visibility timeout.
pub const DEFAULT_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(30);

/// How a memory queue behaves.
#[derive(Debug, Clone)]
pub struct MemoryQueueConfig {
    /// Name shown in logs and to patterns.
    pub name: String,
    /// Lease given to each received message.
    pub visibility_timeout: Duration,
    /// Keep per-ordering-key order and lock groups while in flight.
    pub fifo: bool,
    /// Simulated round trip added to every receive, ack, nack, extend and publish call.
    pub call_latency: Duration,
    /// Report receives as unbuffered ([`SourceLimits::receive_unbuffered`]), as a remote queue's
    /// are, so the pipeline reserves their worst case.
    pub receive_unbuffered: bool,
}

impl MemoryQueueConfig {
    /// A standard queue with the default visibility timeout and no latency.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            visibility_timeout: DEFAULT_VISIBILITY_TIMEOUT,
            fifo: false,
            call_latency: Duration::ZERO,
            receive_unbuffered: false,
        }
    }
}

/// A fault to inject into an operation.
#[derive(Debug, Clone)]
pub struct Fault {
    /// The error to return.
    pub error: QueueError,
    /// How many calls fail before the fault clears; `None` = until cleared by hand.
    pub remaining: Option<usize>,
}

/// A snapshot of one stored message, for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Message id.
    pub id: String,
    /// Body.
    pub body: Bytes,
    /// Attributes.
    pub attributes: Attributes,
    /// Ordering key.
    pub ordering_key: Option<String>,
    /// How many times it was received.
    pub receive_count: u32,
    /// True while leased to a consumer.
    pub in_flight: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// In `ready`.
    Ready,
    /// Visible, but its FIFO group is locked.
    Parked,
    /// Leased to a consumer until `deadline`.
    Leased { receipt: u64, deadline: Instant },
    /// Nacked with a delay; visible again at `until`.
    Delayed { until: Instant },
}

#[derive(Debug)]
struct Stored {
    id: String,
    body: Bytes,
    attributes: Attributes,
    ordering_key: Option<String>,
    published_at: SystemTime,
    receive_count: u32,
    status: Status,
    /// Bumped at every status change, so stale timer entries are ignored.
    generation: u64,
}

#[derive(Debug, Default)]
struct State {
    next_seq: u64,
    next_receipt: u64,
    messages: HashMap<u64, Stored>,
    ready: BTreeSet<u64>,
    timers: BinaryHeap<Reverse<(Instant, u64, u64)>>,
    parked: HashMap<String, BTreeSet<u64>>,
    group_locks: HashMap<String, usize>,
    publish_fault: Option<Fault>,
    ack_fault: Option<Fault>,
    receive_fault: Option<Fault>,
    closed: bool,
    /// Body bytes of the stored messages.
    bytes: usize,
    acked: u64,
    ack_calls: u64,
    receive_calls: u64,
}

/// The token a memory queue hands out.
#[derive(Debug, Clone, Copy)]
struct Receipt {
    seq: u64,
    receipt: u64,
}

/// An in-process queue: a [`Source`] and a [`Publisher`] at once.
#[derive(Clone)]
pub struct MemoryQueue {
    config: Arc<MemoryQueueConfig>,
    state: Arc<Mutex<State>>,
    /// Woken on publish, nack, close and fault changes.
    changed: Arc<Notify>,
}

impl MemoryQueue {
    /// An empty queue.
    pub fn new(config: MemoryQueueConfig) -> Self {
        Self {
            config: Arc::new(config),
            state: Arc::new(Mutex::new(State::default())),
            changed: Arc::new(Notify::new()),
        }
    }

    /// An empty standard queue with default settings.
    pub fn named(name: impl Into<String>) -> Self {
        Self::new(MemoryQueueConfig::named(name))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (every mutation is complete
        // before any call that can panic), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a message directly (no latency, no faults); returns its id.
    pub fn push(&self, message: OutboundMessage) -> String {
        let id = self.lock().insert(message, &self.config);
        self.changed.notify_waiters();
        id
    }

    /// Adds a body with no attributes; returns its id.
    pub fn push_body(&self, body: impl Into<Bytes>) -> String {
        self.push(OutboundMessage {
            body: body.into(),
            ..Default::default()
        })
    }

    /// After `close`, a receive on an empty queue (nothing stored, nothing in flight) returns
    /// [`Received::Exhausted`] instead of waiting.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_waiters();
    }

    /// Messages stored (visible, delayed or in flight).
    pub fn len(&self) -> usize {
        self.lock().messages.len()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages currently leased to a consumer.
    pub fn in_flight(&self) -> usize {
        self.lock()
            .messages
            .values()
            .filter(|m| matches!(m.status, Status::Leased { .. }))
            .count()
    }

    /// How many messages were acked (deleted) so far.
    pub fn acked(&self) -> u64 {
        self.lock().acked
    }

    /// Waits until fewer than `n` messages are stored.
    pub async fn wait_until_len_below(&self, n: usize) {
        self.wait_until_below(n, usize::MAX).await;
    }

    /// Body bytes of the messages stored.
    pub fn byte_len(&self) -> usize {
        self.lock().bytes
    }

    /// Waits until fewer than `messages` messages of fewer than `bytes` body bytes are stored.
    pub async fn wait_until_below(&self, messages: usize, bytes: usize) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let state = self.lock();
                if state.messages.len() < messages && state.bytes < bytes {
                    return;
                }
            }
            changed.await;
        }
    }

    /// How many `receive` calls were made (to observe polling).
    pub fn receive_calls(&self) -> u64 {
        self.lock().receive_calls
    }

    /// How many `ack` calls were made (to observe batching).
    pub fn ack_calls(&self) -> u64 {
        self.lock().ack_calls
    }

    /// Every stored message, in publish order.
    pub fn snapshot(&self) -> Vec<StoredMessage> {
        let state = self.lock();
        let mut seqs: Vec<&u64> = state.messages.keys().collect();
        seqs.sort();
        seqs.into_iter()
            .map(|seq| {
                let m = &state.messages[seq];
                StoredMessage {
                    id: m.id.clone(),
                    body: m.body.clone(),
                    attributes: m.attributes.clone(),
                    ordering_key: m.ordering_key.clone(),
                    receive_count: m.receive_count,
                    in_flight: matches!(m.status, Status::Leased { .. }),
                }
            })
            .collect()
    }

    /// Removes and returns every message that is not in flight, in publish order.
    pub fn take_all(&self) -> Vec<StoredMessage> {
        let all = self.snapshot();
        let mut state = self.lock();
        let seqs: Vec<u64> = state
            .messages
            .iter()
            .filter(|(_, m)| !matches!(m.status, Status::Leased { .. }))
            .map(|(s, _)| *s)
            .collect();
        for seq in seqs {
            state.remove(seq);
        }
        all.into_iter().filter(|m| !m.in_flight).collect()
    }

    /// Makes publishes fail with `fault` (or succeed again with `None`).
    pub fn set_publish_fault(&self, fault: Option<Fault>) {
        self.lock().publish_fault = fault;
    }

    /// Makes acks fail with `fault` (or succeed again with `None`).
    pub fn set_ack_fault(&self, fault: Option<Fault>) {
        self.lock().ack_fault = fault;
    }

    /// Makes receives fail with `fault` (or succeed again with `None`).
    pub fn set_receive_fault(&self, fault: Option<Fault>) {
        self.lock().receive_fault = fault;
        self.changed.notify_waiters();
    }

    async fn simulate_latency(&self) {
        if !self.config.call_latency.is_zero() {
            tokio::time::sleep(self.config.call_latency).await;
        }
    }
}

impl State {
    fn insert(&mut self, message: OutboundMessage, config: &MemoryQueueConfig) -> String {
        let seq = self.next_seq;
        self.next_seq += 1;
        let id = format!("{}-{seq}", config.name);
        let ordering_key = message.ordering_key;
        self.bytes += message.body.len();
        self.messages.insert(
            seq,
            Stored {
                id: id.clone(),
                body: message.body,
                attributes: message.attributes,
                ordering_key,
                published_at: SystemTime::now(),
                receive_count: 0,
                status: Status::Ready,
                generation: 0,
            },
        );
        self.make_visible(seq, config.fifo);
        id
    }

    fn group_of(&self, seq: u64, fifo: bool) -> Option<String> {
        if !fifo {
            return None;
        }
        self.messages.get(&seq).and_then(|m| m.ordering_key.clone())
    }

    /// Puts a message in `ready`, or parks it when its FIFO group is locked.
    fn make_visible(&mut self, seq: u64, fifo: bool) {
        let group = self.group_of(seq, fifo);
        let locked = group
            .as_ref()
            .is_some_and(|g| self.group_locks.get(g).copied().unwrap_or(0) > 0);
        let Some(m) = self.messages.get_mut(&seq) else { return };
        m.generation += 1;
        if locked {
            m.status = Status::Parked;
            self.parked.entry(group.unwrap_or_default()).or_default().insert(seq);
        } else {
            m.status = Status::Ready;
            self.ready.insert(seq);
        }
    }

    fn unlock_group(&mut self, group: &str) {
        let count = self.group_locks.entry(group.to_string()).or_insert(0);
        *count = count.saturating_sub(1);
        if *count == 0 {
            self.group_locks.remove(group);
            if let Some(parked) = self.parked.remove(group) {
                for seq in parked {
                    if let Some(m) = self.messages.get_mut(&seq) {
                        m.status = Status::Ready;
                        m.generation += 1;
                        self.ready.insert(seq);
                    }
                }
            }
        }
    }

    /// Applies every timer that is due: expired leases and finished nack delays.
    fn promote_due(&mut self, now: Instant, fifo: bool) {
        while let Some(Reverse((at, seq, generation))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let current = self.messages.get(&seq).map(|m| (m.generation, m.status));
            let Some((current_generation, status)) = current else {
                continue;
            };
            if current_generation != generation {
                continue;
            }
            if matches!(status, Status::Leased { .. } | Status::Delayed { .. }) {
                if let Some(group) = self.group_of(seq, fifo) {
                    self.unlock_group(&group);
                }
                self.make_visible(seq, fifo);
            }
        }
    }

    fn next_timer(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _, _))| *at)
    }

    fn set_timer(&mut self, seq: u64, status: Status, at: Instant) {
        if let Some(m) = self.messages.get_mut(&seq) {
            m.generation += 1;
            m.status = status;
            self.timers.push(Reverse((at, seq, m.generation)));
        }
    }

    fn take_ready(&mut self, max: usize, now: Instant, config: &MemoryQueueConfig) -> Vec<Delivery> {
        let mut out = Vec::new();
        let mut taken_groups: Vec<String> = Vec::new();
        let mut skipped = Vec::new();
        while out.len() < max {
            let Some(seq) = self.ready.pop_first() else { break };
            // In FIFO mode a group locked by an earlier receive waits; messages of one group
            // received together stay in order.
            if let Some(group) = self.group_of(seq, config.fifo) {
                let locked_elsewhere =
                    self.group_locks.get(&group).copied().unwrap_or(0) > 0 && !taken_groups.contains(&group);
                if locked_elsewhere {
                    skipped.push((seq, group));
                    continue;
                }
                *self.group_locks.entry(group.clone()).or_insert(0) += 1;
                if !taken_groups.contains(&group) {
                    taken_groups.push(group);
                }
            }
            let receipt = self.next_receipt;
            self.next_receipt += 1;
            let deadline = now + config.visibility_timeout;
            self.set_timer(seq, Status::Leased { receipt, deadline }, deadline);
            let m = self.messages.get_mut(&seq).expect("ready message is stored");
            m.receive_count += 1;
            out.push(Delivery {
                id: m.id.clone(),
                body: m.body.clone(),
                attributes: m.attributes.clone(),
                ordering_key: m.ordering_key.clone(),
                delivery_attempt: m.receive_count,
                published_at: Some(m.published_at),
                token: AckToken::new(Receipt { seq, receipt }),
            });
        }
        for (seq, group) in skipped {
            if let Some(m) = self.messages.get_mut(&seq) {
                m.status = Status::Parked;
                m.generation += 1;
            }
            self.parked.entry(group).or_default().insert(seq);
        }
        out
    }

    /// The sequence number of a leased message if `token` is its current receipt.
    fn leased(&self, token: &AckToken) -> Result<u64, QueueError> {
        let r = token
            .downcast_ref::<Receipt>()
            .ok_or_else(|| QueueError::permanent("token does not belong to a memory queue"))?;
        match self.messages.get(&r.seq).map(|m| m.status) {
            Some(Status::Leased { receipt, .. }) if receipt == r.receipt => Ok(r.seq),
            Some(_) | None => Err(QueueError::permanent(
                "receipt is stale: the message was redelivered, settled or its lease expired",
            )),
        }
    }

    fn remove(&mut self, seq: u64) {
        if let Some(m) = self.messages.remove(&seq) {
            self.bytes -= m.body.len();
            self.ready.remove(&seq);
            if let Some(group) = &m.ordering_key {
                if let Some(p) = self.parked.get_mut(group) {
                    p.remove(&seq);
                }
            }
        }
    }

    fn is_exhausted(&self) -> bool {
        self.closed && self.messages.is_empty()
    }
}

/// Consumes one call's worth of a fault: returns the error when the call must fail.
fn trip(fault: &mut Option<Fault>) -> Option<QueueError> {
    let f = fault.as_mut()?;
    let error = f.error.clone();
    if let Some(n) = f.remaining.as_mut() {
        *n = n.saturating_sub(1);
        if *n == 0 {
            *fault = None;
        }
    }
    Some(error)
}

#[async_trait]
impl Source for MemoryQueue {
    fn info(&self) -> SourceInfo {
        SourceInfo {
            kind: "memory",
            name: self.config.name.clone(),
        }
    }

    fn limits(&self) -> SourceLimits {
        SourceLimits {
            max_receive_batch: MAX_RECEIVE_BATCH,
            max_ack_batch: MAX_RECEIVE_BATCH,
            max_lease: MAX_LEASE,
            initial_lease: self.config.visibility_timeout,
            // It stands in for remote queues in tests, so the drain treats it like one.
            receive_cancel_safe: false,
            receive_unbuffered: self.config.receive_unbuffered,
        }
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Received, QueueError> {
        self.simulate_latency().await;
        self.lock().receive_calls += 1;
        let give_up_at = Instant::now() + wait;
        loop {
            // Register interest before looking, so a publish between the look and the wait
            // is not missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let next_timer = {
                let mut state = self.lock();
                if let Some(err) = trip(&mut state.receive_fault) {
                    return Err(err);
                }
                let now = Instant::now();
                state.promote_due(now, self.config.fifo);
                let batch = state.take_ready(max.max(1), now, &self.config);
                if !batch.is_empty() {
                    return Ok(Received::Messages(batch));
                }
                if state.is_exhausted() {
                    return Ok(Received::Exhausted);
                }
                if now >= give_up_at {
                    return Ok(Received::Messages(Vec::new()));
                }
                state.next_timer()
            };
            let wake_at = next_timer.map_or(give_up_at, |t| t.min(give_up_at));
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(wake_at) => {}
            }
        }
    }

    async fn ack(&self, tokens: Vec<AckToken>) -> Result<(), AckFailure> {
        self.simulate_latency().await;
        let mut state = self.lock();
        state.ack_calls += 1;
        if let Some(error) = trip(&mut state.ack_fault) {
            return Err(AckFailure { failed: tokens, error });
        }
        let mut failed = Vec::new();
        let mut last_error = None;
        for token in tokens {
            match state.leased(&token) {
                Ok(seq) => {
                    let group = state.group_of(seq, self.config.fifo);
                    state.remove(seq);
                    state.acked += 1;
                    if let Some(group) = group {
                        state.unlock_group(&group);
                    }
                }
                Err(e) => {
                    failed.push(token);
                    last_error = Some(e);
                }
            }
        }
        drop(state);
        self.changed.notify_waiters();
        match last_error {
            None => Ok(()),
            Some(error) => Err(AckFailure { failed, error }),
        }
    }

    async fn nack(&self, token: AckToken, delay: Duration) -> Result<(), QueueError> {
        self.simulate_latency().await;
        let mut state = self.lock();
        let seq = state.leased(&token)?;
        let delay = delay.min(MAX_LEASE);
        if delay.is_zero() {
            if let Some(group) = state.group_of(seq, self.config.fifo) {
                state.unlock_group(&group);
            }
            state.make_visible(seq, self.config.fifo);
        } else {
            let until = Instant::now() + delay;
            state.set_timer(seq, Status::Delayed { until }, until);
        }
        drop(state);
        self.changed.notify_waiters();
        Ok(())
    }

    /// Rewrites the stored message's attributes in place (its place in the queue and its FIFO
    /// group are kept), then nacks it.
    async fn requeue(
        &self,
        token: AckToken,
        message: OutboundMessage,
        delay: Duration,
    ) -> Result<Requeued, QueueError> {
        {
            let mut state = self.lock();
            let seq = state.leased(&token)?;
            if let Some(m) = state.messages.get_mut(&seq) {
                m.attributes = message.attributes;
            }
        }
        self.nack(token, delay).await.map(|()| Requeued::Carried)
    }

    async fn backlog(&self) -> Option<u64> {
        let state = self.lock();
        Some(state.ready.len() as u64 + state.parked.values().map(|p| p.len() as u64).sum::<u64>())
    }

    async fn extend(&self, tokens: Vec<AckToken>, by: Duration) -> Result<(), QueueError> {
        self.simulate_latency().await;
        let mut state = self.lock();
        let deadline = Instant::now() + by.min(MAX_LEASE);
        let mut last_error = None;
        for token in tokens {
            match state.leased(&token) {
                Ok(seq) => {
                    let receipt = token.downcast_ref::<Receipt>().map_or(0, |r| r.receipt);
                    state.set_timer(seq, Status::Leased { receipt, deadline }, deadline);
                }
                Err(e) => last_error = Some(e),
            }
        }
        match last_error {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}

#[async_trait]
impl Publisher for MemoryQueue {
    fn describe(&self) -> String {
        format!("memory {}", self.config.name)
    }

    fn max_batch(&self) -> usize {
        MAX_PUBLISH_BATCH
    }

    fn call_timeout(&self) -> Duration {
        // Simulated latency is what tests want to see, not a hung target.
        self.config.call_latency + crate::traits::DEFAULT_PUBLISH_TIMEOUT
    }

    async fn publish(&self, batch: Vec<OutboundMessage>) -> Vec<Result<(), QueueError>> {
        self.simulate_latency().await;
        let mut state = self.lock();
        if let Some(error) = trip(&mut state.publish_fault) {
            return batch.iter().map(|_| Err(error.clone())).collect();
        }
        let results = batch
            .into_iter()
            .map(|m| {
                state.insert(m, &self.config);
                Ok(())
            })
            .collect();
        drop(state);
        self.changed.notify_waiters();
        results
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::behaviour::{self, Backend, TestQueue};

    struct Memory;

    #[async_trait]
    impl Backend for Memory {
        async fn fresh(&self, visibility: Duration) -> TestQueue {
            let mut config = MemoryQueueConfig::named("behaviour");
            config.visibility_timeout = visibility;
            let q = MemoryQueue::new(config);
            TestQueue {
                source: Box::new(q.clone()),
                publisher: Box::new(q),
            }
        }
        fn min_visibility(&self) -> Duration {
            Duration::from_secs(1)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn memory_backend_passes_the_behaviour_suite() {
        behaviour::run_all(&Memory).await;
    }

    fn bodies(r: Received) -> Vec<Delivery> {
        match r {
            Received::Messages(m) => m,
            Received::Exhausted => panic!("unexpected exhausted"),
        }
    }

    async fn recv(q: &MemoryQueue, max: usize) -> Vec<Delivery> {
        bodies(q.receive(max, Duration::ZERO).await.unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn unacked_message_is_redelivered_after_visibility_timeout() {
        let q = MemoryQueue::named("q");
        q.push_body("a");
        let first = recv(&q, 10).await;
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].delivery_attempt, 1);
        assert!(recv(&q, 10).await.is_empty(), "leased message must be invisible");
        tokio::time::advance(DEFAULT_VISIBILITY_TIMEOUT - Duration::from_millis(1)).await;
        assert!(recv(&q, 10).await.is_empty());
        tokio::time::advance(Duration::from_millis(1)).await;
        let again = recv(&q, 10).await;
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].delivery_attempt, 2);
        assert_eq!(again[0].id, first[0].id);
    }

    #[tokio::test(start_paused = true)]
    async fn ack_deletes_and_stale_receipt_is_rejected() {
        let q = MemoryQueue::named("q");
        q.push_body("a");
        let first = recv(&q, 10).await;
        tokio::time::advance(DEFAULT_VISIBILITY_TIMEOUT).await;
        let second = recv(&q, 10).await;
        let err = q.ack(vec![first[0].token.clone()]).await.unwrap_err();
        assert_eq!(err.failed.len(), 1);
        q.ack(vec![second[0].token.clone()]).await.unwrap();
        assert!(q.is_empty());
        assert_eq!(q.acked(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn nack_with_delay_redelivers_after_delay() {
        let q = MemoryQueue::named("q");
        q.push_body("a");
        let d = recv(&q, 1).await;
        q.nack(d[0].token.clone(), Duration::from_secs(5)).await.unwrap();
        tokio::time::advance(Duration::from_millis(4999)).await;
        assert!(recv(&q, 1).await.is_empty());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(recv(&q, 1).await.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn extend_keeps_message_invisible_past_visibility_timeout() {
        let q = MemoryQueue::named("q");
        q.push_body("a");
        let d = recv(&q, 1).await;
        tokio::time::advance(Duration::from_secs(20)).await;
        q.extend(vec![d[0].token.clone()], Duration::from_secs(30))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(recv(&q, 1).await.is_empty());
        q.ack(vec![d[0].token.clone()]).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn long_poll_wakes_on_publish() {
        let q = MemoryQueue::named("q");
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.receive(10, Duration::from_secs(20)).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        q.push_body("a");
        let got = bodies(waiter.await.unwrap().unwrap());
        assert_eq!(got.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn fifo_group_is_locked_while_in_flight() {
        let mut cfg = MemoryQueueConfig::named("f");
        cfg.fifo = true;
        let q = MemoryQueue::new(cfg);
        for (body, key) in [("a1", "a"), ("a2", "a"), ("b1", "b")] {
            q.push(OutboundMessage {
                body: Bytes::from(body),
                ordering_key: Some(key.into()),
                ..Default::default()
            });
        }
        let first = recv(&q, 1).await;
        assert_eq!(first[0].body, "a1");
        let second = recv(&q, 10).await;
        assert_eq!(second.len(), 1, "a2 waits while a1 is in flight");
        assert_eq!(second[0].body, "b1");
        q.nack(first[0].token.clone(), Duration::ZERO).await.unwrap();
        let third = recv(&q, 10).await;
        let got: Vec<_> = third.iter().map(|d| d.body.clone()).collect();
        assert_eq!(got, vec![Bytes::from("a1"), Bytes::from("a2")], "order kept after nack");
    }

    #[tokio::test(start_paused = true)]
    async fn closed_empty_queue_is_exhausted() {
        let q = MemoryQueue::named("q");
        q.push_body("a");
        q.close();
        let d = recv(&q, 1).await;
        assert!(matches!(q.receive(1, Duration::from_secs(1)).await.unwrap(), Received::Messages(m) if m.is_empty()));
        q.ack(vec![d[0].token.clone()]).await.unwrap();
        assert!(matches!(
            q.receive(1, Duration::from_secs(1)).await.unwrap(),
            Received::Exhausted
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn publish_fault_fails_then_clears() {
        let q = MemoryQueue::named("q");
        q.set_publish_fault(Some(Fault {
            error: QueueError::transient("down"),
            remaining: Some(1),
        }));
        let r = q.publish(vec![OutboundMessage::default()]).await;
        assert!(r[0].as_ref().unwrap_err().is_transient());
        let r = q.publish(vec![OutboundMessage::default()]).await;
        assert!(r[0].is_ok());
        assert_eq!(q.len(), 1);
    }
}
