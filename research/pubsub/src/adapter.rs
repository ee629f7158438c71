//! A prototype of veltrix's Pub/Sub `Source` + `Publisher` on the official crate, run against
//! the backend behaviour suite of `veltrix-queue` (read-only path dependency on /work/main).
//!
//! Design (the one recommended in the report):
//! - One pump task per stream calls `MessageStream::next()` in a loop and pushes
//!   `(Message, Handler)` into a bounded channel. `receive(max, wait)` drains that channel.
//! - The crate's lease loop keeps every message it delivered leased on the server
//!   (ModifyAckDeadline every ~3 s, by `set_max_lease_extension`) until the handler is
//!   consumed or `set_max_lease` passes. The crate has no per-message lease control, so the
//!   adapter keeps its own *virtual* lease per token (`deadline`):
//!     - `extend(tokens, by)` moves the virtual deadline;
//!     - a reaper task nacks (ModifyAckDeadline 0) any token whose virtual deadline passed, which
//!       makes the message available again at once: the visibility timeout, emulated;
//!     - `nack(token, delay)` sets `nack_at`; the reaper nacks when it passes (the crate keeps the
//!       server lease alive meanwhile), so the message really stays away for `delay`.
//! - The token is a u64 key into the in-flight map; the map owns the `Handler`.
//! - `delivery_attempt`: the server's count when the subscription has a dead-letter policy,
//!   else a process-local count per message id (`Handler::delivery_attempt()` is `None`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use google_cloud_pubsub::client::{Publisher as GPublisher, Subscriber};
use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::subscriber::handler::Handler;
use google_cloud_pubsub::subscriber::ShutdownToken;
use tokio::sync::{mpsc, Mutex};
use tokio::time::Instant;
use veltrix_queue::behaviour::{self, Backend, TestQueue};
use veltrix_queue::{
    AckFailure, AckToken, Attributes, Delivery, OutboundMessage, Publisher, QueueError, Received, Source,
    SourceInfo, SourceLimits,
};

use crate::common::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct TokenId(u64);

struct InFlight {
    handler: Handler,
    /// Virtual lease: the reaper nacks the message when this passes.
    deadline: Instant,
    /// A delayed nack: the reaper nacks when this passes.
    nack_at: Option<Instant>,
}

pub struct PubSubSource {
    subscription: String,
    rx: Mutex<mpsc::Receiver<(Message, Handler)>>,
    inflight: Arc<std::sync::Mutex<HashMap<TokenId, InFlight>>>,
    local_attempts: std::sync::Mutex<HashMap<String, u32>>,
    next_id: AtomicU64,
    initial_lease: Duration,
    max_lease: Duration,
    shutdown: Vec<ShutdownToken>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

pub struct SourceOptions {
    pub initial_lease: Duration,
    /// Longest `extend`/`nack` delay honoured; also the crate's `set_max_lease` (+ margin).
    pub max_lease: Duration,
    pub streams: usize,
    pub channel: usize,
    pub max_outstanding_messages: i64,
    /// `set_max_lease_extension`: the stream ack deadline, i.e. how soon the server redelivers
    /// when this process stops extending (crash). 10..=600 s.
    pub stream_ack_deadline: Duration,
}

impl PubSubSource {
    pub fn new(subscriber: &Subscriber, subscription: String, o: SourceOptions) -> Self {
        let (tx, rx) = mpsc::channel(o.channel);
        let mut shutdown = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..o.streams {
            let mut stream = subscriber
                .subscribe(subscription.clone())
                .set_max_outstanding_messages(o.max_outstanding_messages)
                // The crate stops extending after this long; the adapter's own deadlines come
                // first, this is only the backstop.
                .set_max_lease(o.max_lease + Duration::from_secs(60))
                // Stream ack deadline: how soon the server redelivers if this process dies.
                .set_max_lease_extension(o.stream_ack_deadline)
                .build();
            shutdown.push(stream.shutdown_token());
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(pair) => {
                            if tx.send(pair).await.is_err() {
                                break; // source dropped; dropping the pair nacks it
                            }
                        }
                        Err(e) => {
                            // Permanent stream error (the crate retries transient ones itself).
                            eprintln!("pubsub stream error: {e}");
                            break;
                        }
                    }
                }
            }));
        }
        let inflight: Arc<std::sync::Mutex<HashMap<TokenId, InFlight>>> = Arc::default();
        let reaper_map = Arc::downgrade(&inflight);
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let Some(map) = reaper_map.upgrade() else { break };
                let now = Instant::now();
                let due: Vec<InFlight> = {
                    let mut map = map.lock().unwrap();
                    let ids: Vec<TokenId> = map
                        .iter()
                        .filter(|(_, e)| e.deadline <= now || e.nack_at.is_some_and(|t| t <= now))
                        .map(|(id, _)| *id)
                        .collect();
                    ids.into_iter().filter_map(|id| map.remove(&id)).collect()
                };
                for e in due {
                    e.handler.nack();
                }
            }
        }));
        Self {
            subscription,
            rx: Mutex::new(rx),
            inflight,
            local_attempts: Default::default(),
            next_id: AtomicU64::new(1),
            initial_lease: o.initial_lease,
            max_lease: o.max_lease,
            shutdown,
            tasks,
        }
    }

    fn delivery(&self, m: Message, h: Handler) -> Delivery {
        let attempt = match h.delivery_attempt() {
            Some(n) if n > 0 => n as u32,
            _ => {
                let mut local = self.local_attempts.lock().unwrap();
                let n = local.entry(m.message_id.clone()).or_insert(0);
                *n += 1;
                *n
            }
        };
        let id = TokenId(self.next_id.fetch_add(1, Ordering::Relaxed));
        self.inflight.lock().unwrap().insert(
            id,
            InFlight { handler: h, deadline: Instant::now() + self.initial_lease, nack_at: None },
        );
        let published_at = m.publish_time.and_then(|t| SystemTime::try_from(t).ok());
        Delivery {
            id: m.message_id,
            body: m.data,
            attributes: m.attributes.into_iter().collect::<Attributes>(),
            ordering_key: (!m.ordering_key.is_empty()).then_some(m.ordering_key),
            delivery_attempt: attempt,
            published_at,
            token: AckToken::new(id),
        }
    }

    /// Stop pulling: close the channel and nack what sits in it, nack what is in flight, and
    /// wait until the crate has flushed its acks/nacks. (Closing the channel first matters: a
    /// pump blocked on a full channel holds a handler, and the crate's WaitForProcessing
    /// shutdown waits for every handler it gave out.)
    pub async fn close(&self) {
        {
            let mut rx = self.rx.lock().await;
            rx.close();
            while let Ok((_m, h)) = rx.try_recv() {
                h.nack();
            }
        }
        let held: Vec<InFlight> = self.inflight.lock().unwrap().drain().map(|(_, e)| e).collect();
        for e in held {
            e.handler.nack();
        }
        for t in &self.shutdown {
            let _ = tokio::time::timeout(Duration::from_secs(10), t.shutdown()).await;
        }
    }
}

impl Drop for PubSubSource {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn token_id(t: &AckToken) -> Option<TokenId> {
    t.downcast_ref::<TokenId>().copied()
}

#[async_trait]
impl Source for PubSubSource {
    fn info(&self) -> SourceInfo {
        SourceInfo { kind: "pubsub", name: self.subscription.clone() }
    }

    fn limits(&self) -> SourceLimits {
        SourceLimits {
            max_receive_batch: 1000,
            max_ack_batch: 2500,
            max_lease: self.max_lease,
            initial_lease: self.initial_lease,
        }
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Received, QueueError> {
        let mut rx = self.rx.lock().await;
        let mut out = Vec::new();
        let first = match tokio::time::timeout(wait, rx.recv()).await {
            Err(_) => return Ok(Received::Messages(out)),
            Ok(None) => return Err(QueueError::permanent("pubsub stream closed")),
            Ok(Some(p)) => p,
        };
        out.push(self.delivery(first.0, first.1));
        while out.len() < max {
            match rx.try_recv() {
                Ok((m, h)) => out.push(self.delivery(m, h)),
                Err(_) => break,
            }
        }
        Ok(Received::Messages(out))
    }

    async fn ack(&self, tokens: Vec<AckToken>) -> Result<(), AckFailure> {
        let mut map = self.inflight.lock().unwrap();
        for t in tokens {
            // Unknown token: already nacked by the reaper (virtual lease expired) or settled:
            // the message comes back, a duplicate, never a loss. Fire-and-forget: the crate
            // gives no per-ack result for at-least-once subscriptions.
            if let Some(e) = token_id(&t).and_then(|id| map.remove(&id)) {
                e.handler.ack();
            }
        }
        Ok(())
    }

    async fn nack(&self, token: AckToken, delay: Duration) -> Result<(), QueueError> {
        let Some(id) = token_id(&token) else { return Err(QueueError::permanent("foreign token")) };
        let mut map = self.inflight.lock().unwrap();
        if delay.is_zero() {
            if let Some(e) = map.remove(&id) {
                e.handler.nack();
            }
        } else if let Some(e) = map.get_mut(&id) {
            let at = Instant::now() + delay.min(self.max_lease);
            e.nack_at = Some(at);
            e.deadline = e.deadline.max(at);
        }
        Ok(())
    }

    async fn extend(&self, tokens: Vec<AckToken>, by: Duration) -> Result<(), QueueError> {
        let deadline = Instant::now() + by.min(self.max_lease);
        let mut map = self.inflight.lock().unwrap();
        for t in tokens {
            if let Some(e) = token_id(&t).and_then(|id| map.get_mut(&id)) {
                e.deadline = deadline;
            }
        }
        Ok(())
    }
}

pub struct PubSubPublisher {
    topic: String,
    inner: GPublisher,
}

#[async_trait]
impl Publisher for PubSubPublisher {
    fn describe(&self) -> String {
        format!("pubsub {}", self.topic)
    }

    fn max_batch(&self) -> usize {
        1000
    }

    async fn publish(&self, batch: Vec<OutboundMessage>) -> Vec<Result<(), QueueError>> {
        let futures: Vec<_> = batch
            .into_iter()
            .map(|m| {
                let mut msg = Message::new().set_data(m.body).set_attributes(m.attributes);
                if let Some(k) = m.ordering_key {
                    msg = msg.set_ordering_key(k);
                }
                self.inner.publish(msg)
            })
            .collect();
        futures::future::join_all(futures)
            .await
            .into_iter()
            .map(|r| r.map(|_| ()).map_err(|e| QueueError::transient(e.to_string())))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The behaviour suite against the emulator.

struct Emulator {
    admin: Admin,
    subscriber: Subscriber,
    min_visibility: Duration,
}

#[async_trait]
impl Backend for Emulator {
    async fn fresh(&self, visibility: Duration) -> TestQueue {
        let topic = unique("suite-topic");
        let dlq = unique("suite-dlq");
        let sub = unique("suite-sub");
        self.admin.topic(&topic).await.expect("topic");
        self.admin.topic(&dlq).await.expect("dlq topic");
        // A dead-letter policy so delivery_attempt comes from the server; 100 = the maximum.
        let server_deadline = visibility.as_secs().clamp(10, 600) as i32;
        self.admin.sub_dlq(&sub, &topic, server_deadline, &dlq, 100, None).await.expect("sub");
        let source = PubSubSource::new(
            &self.subscriber,
            sub_path(&sub),
            SourceOptions {
                initial_lease: visibility,
                max_lease: Duration::from_secs(600),
                streams: 1,
                channel: 100,
                max_outstanding_messages: 1000,
                stream_ack_deadline: Duration::from_secs(60),
            },
        );
        let publisher = PubSubPublisher {
            topic: topic_path(&topic),
            inner: publisher(&topic).await.expect("publisher"),
        };
        TestQueue { source: Box::new(source), publisher: Box::new(publisher) }
    }

    fn min_visibility(&self) -> Duration {
        self.min_visibility
    }
}

pub async fn run_suite(only: Option<&str>) -> anyhow::Result<()> {
    let secs: f64 = std::env::var("MIN_VISIBILITY").ok().map(|s| s.parse()).transpose()?.unwrap_or(10.0);
    let b = Emulator {
        admin: Admin::new().await?,
        subscriber: subscriber().await?,
        min_visibility: Duration::from_secs_f64(secs),
    };
    let clock = Clock::new();
    macro_rules! check {
        ($name:ident) => {
            if only.is_none_or(|o| stringify!($name).contains(o)) {
                let t = clock.secs();
                behaviour::$name(&b).await;
                println!("ok   {:60} {:6.1} s", stringify!($name), clock.secs() - t);
            }
        };
    }
    println!("behaviour suite, min_visibility {secs} s");
    check!(publish_then_receive_keeps_body_and_attributes);
    check!(acked_message_is_not_redelivered);
    check!(unacked_message_is_redelivered_after_visibility_timeout);
    check!(nack_with_delay_redelivers_after_delay);
    check!(nack_zero_redelivers_now);
    check!(extend_keeps_message_invisible_past_visibility_timeout);
    check!(batch_of_messages_arrives_once);
    println!("all passed in {:.1} s", clock.secs());
    Ok(())
}

/// Throughput through the trait: publish n with the PubSubPublisher, then receive(max, 1 s) +
/// ack(tokens) until all arrived.
/// `pause_ms` > 0 makes a slow consumer (sleep between receives) to see whether messages
/// buffered below the crate (the emulator ignores flow control) expire and come back.
pub async fn bench(n: usize, streams: usize, max: usize, pause_ms: u64) -> anyhow::Result<()> {
    let admin = Admin::new().await?;
    let topic = unique("abench-topic");
    let sub = unique("abench-sub");
    admin.topic(&topic).await?;
    admin.sub(&sub, &topic, 60).await?;
    let publisher = PubSubPublisher { topic: topic_path(&topic), inner: publisher(&topic).await? };
    let clock = Clock::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let batch = chunk
            .iter()
            .map(|i| OutboundMessage { body: format!("m{i}").into(), ..Default::default() })
            .collect();
        for r in publisher.publish(batch).await {
            r?;
        }
    }
    let pub_secs = clock.secs();
    let subscriber = subscriber().await?;
    let source = PubSubSource::new(
        &subscriber,
        sub_path(&sub),
        SourceOptions {
            initial_lease: Duration::from_secs(30),
            max_lease: Duration::from_secs(600),
            streams,
            channel: if pause_ms > 0 { 50 } else { 1000 },
            max_outstanding_messages: if pause_ms > 0 { 100 } else { 1000 },
            stream_ack_deadline: Duration::from_secs(if pause_ms > 0 { 10 } else { 60 }),
        },
    );
    let clock = Clock::new();
    let mut max_attempt = 0;
    let mut seen = std::collections::HashSet::new();
    let mut dups = 0;
    while seen.len() < n && clock.secs() < 120.0 {
        if let Received::Messages(batch) = source.receive(max, Duration::from_secs(1)).await? {
            let mut tokens = Vec::with_capacity(batch.len());
            for d in batch {
                max_attempt = max_attempt.max(d.delivery_attempt);
                if !seen.insert(d.id) {
                    dups += 1;
                }
                tokens.push(d.token);
            }
            source.ack(tokens).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        if pause_ms > 0 {
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        }
    }
    let secs = clock.secs();
    println!(
        "adapter: publish {n} via trait {:.0} msg/s; receive(max {max})+ack, {streams} stream(s): {}/{n} in {secs:.2} s = {:.0} msg/s, {dups} duplicates, highest attempt {max_attempt}",
        n as f64 / pub_secs,
        seen.len(),
        seen.len() as f64 / secs
    );
    source.close().await;
    Ok(())
}
