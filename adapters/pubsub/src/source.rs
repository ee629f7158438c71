//! The streaming-pull [`Source`].
//!
//! The official crate owns the gRPC stream and keeps every message it handed out leased on the
//! server (`ModifyAckDeadline` in the background) until its handler is acked, nacked or dropped.
//! It has no per-message lease control, so this source keeps its own lease per token:
//!
//! - a message starts with `initial_lease` (the subscription's ack deadline unless
//!   `visibility_timeout` is set); `extend` moves it;
//! - a reaper nacks every message whose lease passed, which makes the service redeliver it
//!   at once: the visibility timeout, kept by the client;
//! - `nack(token, delay)` keeps the message held (the crate goes on extending it) and nacks it
//!   when `delay` has passed, so a retry really waits `delay` instead of coming back in
//!   ~100 ms. This was chosen over the subscription's retry policy, whose backoff the worker
//!   cannot choose per message and which adds to any delay (measured 1.9–3.0 s on top).
//!
//! A crash while a message is held redelivers it after the stream's ack deadline: a duplicate,
//! never a loss. At `close` the streams shut down with `NackImmediately`, which nacks every
//! message still held. The emulator does not honour nacks sent during a stream's shutdown (they
//! come back after the ack deadline, measured 10.07 s), so there a restart costs the ack deadline;
//! nacking before the shutdown was tried and is worse there: the messages bounce back onto the
//! closing stream and stay away longer. Held messages count against the stream's flow control.
//!
//! The delivery attempt is the service's when the subscription has a dead-letter policy, else
//! a count kept by this process per message id (reset by a restart).

use crate::events::{LateAcks, LogEvent, PubSubSourceOpen, StreamReopening, SubscriptionUnreadable};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use google_cloud_pubsub::client::Subscriber;
use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::subscriber::handler::Handler;
use google_cloud_pubsub::subscriber::ShutdownBehavior;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use veltrix_queue::{
    packing, AckFailure, AckToken, Attributes, Delivery, QueueError, Received, Source, SourceInfo, SourceLimits,
};

use crate::client::Connection;
use crate::errors::{classify, Operation};
use crate::limits::{MAX_ACK_DEADLINE, MAX_NACK_DELAY, MIN_ACK_DEADLINE};
use crate::subscription::{describe_subscription, SubscriptionSettings};

/// Most messages one `receive` returns (the pipeline's batch, not a service limit).
pub const MAX_RECEIVE_BATCH: usize = 1000;

/// Most tokens one `ack` call takes (acks are handed to the crate, which batches the RPCs).
pub const MAX_ACK_BATCH: usize = 2500;

/// How often held messages are checked for an expired lease or a due delayed nack.
pub const REAPER_INTERVAL: Duration = Duration::from_millis(100);

/// Messages pulled but not yet received by the worker, per stream.
pub const RECEIVE_BUFFER_PER_STREAM: usize = 256;

/// First wait before reopening a stream that failed; doubles up to [`RECONNECT_MAX_BACKOFF`].
pub const RECONNECT_INITIAL_BACKOFF: Duration = Duration::from_millis(250);

/// Longest wait between attempts to reopen a stream.
pub const RECONNECT_MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The ack deadline assumed when the subscription cannot be read (the crate's default stream
/// deadline).
pub const UNKNOWN_ACK_DEADLINE: Duration = Duration::from_secs(60);

/// Most message ids whose deliveries are counted locally (subscriptions without a dead-letter
/// policy); past it the counts start over.
pub const MAX_LOCAL_ATTEMPT_ENTRIES: usize = 100_000;

/// Longest wait in `close` for a stream to flush its acks.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// How to consume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubSubSourceOptions {
    /// `projects/P/subscriptions/S`.
    pub subscription: String,
    /// Parallel streaming-pull streams (one stream carries ~2k msg/s on the emulator).
    pub streams: usize,
    /// Flow control per stream: messages handed out and not yet settled.
    pub max_outstanding_messages: u64,
    /// Flow control per stream: bytes handed out and not yet settled.
    pub max_outstanding_bytes: u64,
    /// Lease of a received message before it is released for redelivery; `None` = the
    /// subscription's ack deadline.
    pub visibility_timeout: Option<Duration>,
    /// Longest time the client keeps one message leased (lease extensions plus delayed nacks).
    pub max_hold: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct TokenId(u64);

/// A message the worker has, with the handler that settles it.
struct Held {
    handler: Handler,
    message_id: String,
    /// The client-side lease: the reaper releases the message when it passes.
    deadline: Instant,
    /// A delayed nack: released when this passes.
    release_at: Option<Instant>,
}

#[derive(Default)]
struct Shared {
    held: Mutex<HashMap<TokenId, Held>>,
    /// Deliveries per message id, when the service does not count them.
    local_attempts: Mutex<HashMap<String, u32>>,
    /// The last permanent error of a stream that has not delivered since (`/readyz`).
    failing: Mutex<Option<String>>,
}

/// A Pub/Sub subscription as a veltrix [`Source`].
pub struct PubSubSource {
    subscription: String,
    settings: Option<SubscriptionSettings>,
    initial_lease: Duration,
    rx: tokio::sync::Mutex<mpsc::Receiver<(Message, Handler)>>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
    stop: CancellationToken,
    pumps: Mutex<Vec<JoinHandle<()>>>,
    reaper: JoinHandle<()>,
}

/// What a stream needs to (re)open.
#[derive(Clone)]
struct StreamPlan {
    subscriber: Subscriber,
    subscription: String,
    endpoint: Option<String>,
    max_outstanding_messages: i64,
    max_outstanding_bytes: i64,
    max_hold: Duration,
    stream_ack_deadline: Duration,
}

impl PubSubSource {
    /// Reads the subscription (a missing one or a missing permission is a clear error here,
    /// not a silent stall later) and starts the streams.
    pub async fn open(connection: &Connection, options: PubSubSourceOptions) -> Result<Self, QueueError> {
        let settings = describe_subscription(connection, &options.subscription).await?;
        if settings.is_none() {
            SubscriptionUnreadable {
                subscription: options.subscription.clone(),
            }
            .emit();
        }
        let ack_deadline = settings.as_ref().map_or(UNKNOWN_ACK_DEADLINE, |s| s.ack_deadline);
        let subscriber = connection.subscriber(&options.subscription).await?;
        let initial_lease = options
            .visibility_timeout
            .unwrap_or(ack_deadline)
            .clamp(Duration::from_secs(1), MAX_ACK_DEADLINE);
        let plan = StreamPlan {
            subscriber,
            subscription: options.subscription.clone(),
            endpoint: connection.endpoint().map(str::to_string),
            max_outstanding_messages: clamp_i64(options.max_outstanding_messages),
            max_outstanding_bytes: clamp_i64(options.max_outstanding_bytes),
            max_hold: options.max_hold,
            stream_ack_deadline: ack_deadline.clamp(MIN_ACK_DEADLINE, MAX_ACK_DEADLINE),
        };
        let streams = options.streams.max(1);
        let (tx, rx) = mpsc::channel(RECEIVE_BUFFER_PER_STREAM * streams);
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared::default());
        let pumps = (0..streams)
            .map(|_| tokio::spawn(pump(plan.clone(), tx.clone(), shared.clone(), stop.clone())))
            .collect();
        let reaper = tokio::spawn(reap(Arc::downgrade(&shared)));
        PubSubSourceOpen {
            subscription: options.subscription.clone(),
            streams,
            ack_deadline_secs: ack_deadline.as_secs(),
            dead_letter_policy: settings.as_ref().map(|s| s.dead_letter.is_some()),
            ordering: settings.as_ref().map(|s| s.message_ordering),
        }
        .emit();
        Ok(Self {
            subscription: options.subscription,
            settings,
            initial_lease,
            rx: tokio::sync::Mutex::new(rx),
            shared,
            next_id: AtomicU64::new(1),
            stop,
            pumps: Mutex::new(pumps),
            reaper,
        })
    }

    /// The subscription's settings as read at open (`None`: not allowed to read them).
    pub fn subscription_settings(&self) -> Option<&SubscriptionSettings> {
        self.settings.as_ref()
    }

    /// Messages currently held (received and not settled, or waiting for a delayed nack).
    pub fn held(&self) -> usize {
        self.shared.held.lock().expect("held map").len()
    }

    fn delivery(&self, m: Message, handler: Handler) -> Delivery {
        let attempt = match handler.delivery_attempt() {
            Some(n) if n > 0 => n as u32,
            _ => {
                let mut local = self.shared.local_attempts.lock().expect("attempt map");
                if local.len() >= MAX_LOCAL_ATTEMPT_ENTRIES && !local.contains_key(&m.message_id) {
                    // Entries of messages redelivered to another replica never get acked here;
                    // forgetting them all restarts those counts at 1 (a few extra retries, never
                    // a loss) and keeps memory bounded.
                    local.clear();
                }
                let n = local.entry(m.message_id.clone()).or_insert(0);
                *n += 1;
                *n
            }
        };
        let id = TokenId(self.next_id.fetch_add(1, Ordering::Relaxed));
        self.shared.held.lock().expect("held map").insert(
            id,
            Held {
                handler,
                message_id: m.message_id.clone(),
                deadline: Instant::now() + self.initial_lease,
                release_at: None,
            },
        );
        let mut attributes = m.attributes.into_iter().collect::<Attributes>();
        let mut body = m.data;
        packing::unpack(&mut attributes, &mut body);
        Delivery {
            published_at: m.publish_time.and_then(|t| SystemTime::try_from(t).ok()),
            id: m.message_id,
            body,
            attributes,
            ordering_key: (!m.ordering_key.is_empty()).then_some(m.ordering_key),
            delivery_attempt: attempt,
            token: AckToken::new(id),
        }
    }
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// One streaming pull, reopened with backoff whenever it ends (service restart, network loss,
/// a deleted and recreated subscription), until `stop`.
async fn pump(plan: StreamPlan, tx: mpsc::Sender<(Message, Handler)>, shared: Arc<Shared>, stop: CancellationToken) {
    let mut backoff = RECONNECT_INITIAL_BACKOFF;
    loop {
        let mut stream = plan
            .subscriber
            .subscribe(plan.subscription.clone())
            .set_max_outstanding_messages(plan.max_outstanding_messages)
            .set_max_outstanding_bytes(plan.max_outstanding_bytes)
            // The source's own leases come first; this is the backstop.
            .set_max_lease(plan.max_hold)
            // How soon the service redelivers if this process dies.
            .set_max_lease_extension(plan.stream_ack_deadline)
            .set_shutdown_behavior(ShutdownBehavior::NackImmediately)
            .build();
        let token = stream.shutdown_token();
        let failure = loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break None,
                next = stream.next() => match next {
                    Some(Ok(pair)) => {
                        backoff = RECONNECT_INITIAL_BACKOFF;
                        shared.failing.lock().expect("failing").take();
                        if tx.send(pair).await.is_err() {
                            break None; // the source is closing; the shutdown nacks the pair's peers
                        }
                    }
                    Some(Err(e)) => break Some(classify(Operation::Pull, &plan.subscription, plan.endpoint.as_deref(), &e)),
                    None => break Some(QueueError::transient(format!("Pub/Sub stream on {} ended", plan.subscription))),
                },
            }
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, token.shutdown()).await;
        drop(stream);
        let Some(error) = failure else { return };
        if !error.is_transient() {
            *shared.failing.lock().expect("failing") = Some(error.to_string());
        }
        StreamReopening {
            subscription: plan.subscription.clone(),
            error: error.to_string(),
            retry_in_ms: backoff.as_millis() as u64,
        }
        .emit();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(RECONNECT_MAX_BACKOFF);
    }
}

/// Releases held messages whose lease passed or whose delayed nack is due.
async fn reap(shared: std::sync::Weak<Shared>) {
    let mut tick = tokio::time::interval(REAPER_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else { return };
        let now = Instant::now();
        let due: Vec<Held> = {
            let mut held = shared.held.lock().expect("held map");
            let ids: Vec<TokenId> = held
                .iter()
                .filter(|(_, h)| h.deadline <= now || h.release_at.is_some_and(|t| t <= now))
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter().filter_map(|id| held.remove(&id)).collect()
        };
        for h in due {
            h.handler.nack();
        }
    }
}

fn token_id(t: &AckToken) -> Option<TokenId> {
    t.downcast_ref::<TokenId>().copied()
}

#[async_trait]
impl Source for PubSubSource {
    fn info(&self) -> SourceInfo {
        SourceInfo {
            kind: "pubsub",
            name: self.subscription.clone(),
        }
    }

    fn limits(&self) -> SourceLimits {
        SourceLimits {
            max_receive_batch: MAX_RECEIVE_BATCH,
            max_ack_batch: MAX_ACK_BATCH,
            max_lease: MAX_ACK_DEADLINE,
            initial_lease: self.initial_lease,
            // `receive` waits on the streams' local channel; what it has not taken stays there.
            receive_cancel_safe: true,
            // Flow control bounds what the streams buffer (`max_outstanding_bytes`).
            receive_unbuffered: false,
        }
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Received, QueueError> {
        let mut rx = self.rx.lock().await;
        let first = match tokio::time::timeout(wait, rx.recv()).await {
            Err(_) => return Ok(Received::Messages(Vec::new())),
            Ok(None) => return Err(QueueError::permanent("the Pub/Sub source is closed")),
            Ok(Some(pair)) => pair,
        };
        let mut out = Vec::with_capacity(max.clamp(1, 64));
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
        let (settled, late): (Vec<(AckToken, Held)>, Vec<AckToken>) = {
            let mut held = self.shared.held.lock().expect("held map");
            let mut settled = Vec::with_capacity(tokens.len());
            let mut late = Vec::new();
            for t in tokens {
                match token_id(&t).and_then(|id| held.remove(&id)) {
                    Some(h) => settled.push((t, h)),
                    None => late.push(t),
                }
            }
            (settled, late)
        };
        if !late.is_empty() {
            // Released before the ack (lease expired): the service redelivers them, a
            // duplicate, never a loss.
            LateAcks {
                subscription: self.subscription.clone(),
                count: late.len(),
            }
            .emit();
        }
        if self.settings.as_ref().is_none_or(|s| s.dead_letter.is_none()) {
            let mut local = self.shared.local_attempts.lock().expect("attempt map");
            for (_, h) in &settled {
                local.remove(&h.message_id);
            }
        }
        // Exactly-once subscriptions confirm each ack; at-least-once acks are handed to the
        // crate's batching lease loop.
        let mut confirming = Vec::new();
        for (token, h) in settled {
            match h.handler {
                Handler::ExactlyOnce(eo) => confirming.push(async move { (token, eo.confirmed_ack().await) }),
                other => other.ack(),
            }
        }
        let mut failed = late;
        let late_count = failed.len();
        let mut last_error = None;
        for (token, result) in futures::future::join_all(confirming).await {
            if let Err(e) = result {
                last_error = Some(e.to_string());
                failed.push(token);
            }
        }
        if failed.is_empty() {
            return Ok(());
        }
        let message = match last_error {
            Some(e) => format!(
                "{} ack(s) on {} not confirmed by exactly-once delivery (the service may redeliver them): {e}",
                failed.len() - late_count,
                self.subscription
            ),
            None => format!(
                "{late_count} ack(s) on {} came after the client-side lease ended: the messages were released and will be redelivered",
                self.subscription
            ),
        };
        // The handlers are used up: retrying these acks cannot help.
        Err(AckFailure {
            failed,
            error: QueueError::permanent(message),
        })
    }

    fn health(&self) -> Result<(), String> {
        match self.shared.failing.lock().expect("failing").clone() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    async fn nack(&self, token: AckToken, delay: Duration) -> Result<(), QueueError> {
        let id = token_id(&token).ok_or_else(|| QueueError::permanent("not a Pub/Sub ack token"))?;
        let mut held = self.shared.held.lock().expect("held map");
        if delay.is_zero() {
            if let Some(h) = held.remove(&id) {
                h.handler.nack();
            }
        } else if let Some(h) = held.get_mut(&id) {
            let at = Instant::now() + delay.min(MAX_NACK_DELAY);
            h.release_at = Some(at);
            h.deadline = h.deadline.max(at);
        }
        Ok(())
    }

    async fn extend(&self, tokens: Vec<AckToken>, by: Duration) -> Result<(), QueueError> {
        let deadline = Instant::now() + by.min(MAX_ACK_DEADLINE);
        let mut held = self.shared.held.lock().expect("held map");
        for t in tokens {
            if let Some(h) = token_id(&t).and_then(|id| held.get_mut(&id)) {
                h.deadline = h.deadline.max(deadline);
            }
        }
        Ok(())
    }

    async fn close(&self) {
        self.stop.cancel();
        {
            let mut rx = self.rx.lock().await;
            rx.close();
            while let Ok((_, h)) = rx.try_recv() {
                h.nack();
            }
        }
        let held: Vec<Held> = self
            .shared
            .held
            .lock()
            .expect("held map")
            .drain()
            .map(|(_, h)| h)
            .collect();
        for h in held {
            h.handler.nack();
        }
        let pumps = std::mem::take(&mut *self.pumps.lock().expect("pump list"));
        for p in pumps {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, p).await;
        }
    }
}

impl Drop for PubSubSource {
    fn drop(&mut self) {
        self.stop.cancel();
        self.reaper.abort();
    }
}
