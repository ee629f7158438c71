//! The backend behaviour suite: the same checks run against every backend (memory here; SQS on
//! LocalStack and Pub/Sub on its emulator in their crates), so providers cannot drift apart.
//!
//! Each check takes a [`Backend`] that makes a fresh, empty queue per call, and uses `tokio::time`
//! with bounded waits, so it runs instantly with paused time on the memory backend and in real
//! time against an emulator. A check panics with a message naming the broken behaviour.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{Attributes, Delivery, OutboundMessage, Publisher, Received, Source};

/// A fresh queue, seen as a source and as a publisher into it.
pub struct TestQueue {
    /// Consume side.
    pub source: Box<dyn Source>,
    /// Produce side (publishes into the same queue).
    pub publisher: Box<dyn Publisher>,
}

/// Makes fresh queues for the suite.
#[async_trait]
pub trait Backend: Send + Sync {
    /// A new, empty, uniquely named queue whose messages are leased for `visibility`.
    async fn fresh(&self, visibility: Duration) -> TestQueue;
    /// The smallest visibility timeout the backend honours (SQS: 1 s; Pub/Sub: 10 s).
    fn min_visibility(&self) -> Duration;
    /// Longest time a published message may take to become receivable.
    fn settle_time(&self) -> Duration {
        Duration::from_secs(5)
    }
}

async fn publish(q: &TestQueue, body: &str, attrs: &[(&str, &str)], key: Option<&str>) {
    let attributes: Attributes = attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let message = OutboundMessage {
        body: Bytes::from(body.to_string()),
        attributes,
        ordering_key: key.map(str::to_string),
        dedup_id: None,
    };
    for r in q.publisher.publish(vec![message]).await {
        r.expect("publish succeeds");
    }
}

/// Receives until `n` messages arrived or `limit` passed.
async fn receive_n(q: &TestQueue, n: usize, limit: Duration) -> Vec<Delivery> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut got = Vec::new();
    while got.len() < n && tokio::time::Instant::now() < deadline {
        let wait = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .min(Duration::from_secs(1));
        match q.source.receive(n - got.len(), wait).await.expect("receive succeeds") {
            Received::Messages(batch) => got.extend(batch),
            Received::Exhausted => panic!("a queue is never exhausted"),
        }
    }
    got
}

/// Receives for `window` and returns whatever arrived (to prove that nothing does).
async fn receive_during(q: &TestQueue, window: Duration) -> Vec<Delivery> {
    let deadline = tokio::time::Instant::now() + window;
    let mut got = Vec::new();
    while tokio::time::Instant::now() < deadline {
        let wait = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .min(Duration::from_secs(1));
        if let Received::Messages(batch) = q.source.receive(10, wait).await.expect("receive succeeds") {
            got.extend(batch);
        }
    }
    got
}

/// Body, attributes and ordering key survive a round trip; the first attempt is 1.
pub async fn publish_then_receive_keeps_body_and_attributes(b: &dyn Backend) {
    let q = b.fresh(b.min_visibility() * 10).await;
    publish(&q, "{\"n\": 1}", &[("tenant", "acme"), ("kind", "order")], None).await;
    let got = receive_n(&q, 1, b.settle_time()).await;
    assert_eq!(got.len(), 1, "the published message is received");
    let d = &got[0];
    assert_eq!(d.body, Bytes::from("{\"n\": 1}"));
    assert_eq!(d.attributes.get_str("tenant"), Some("acme"));
    assert_eq!(d.attributes.get_str("kind"), Some("order"));
    assert_eq!(d.delivery_attempt, 1);
    assert!(!d.id.is_empty());
    q.source.ack(vec![d.token.clone()]).await.expect("ack succeeds");
}

/// An acked message is not delivered again, even after its visibility timeout.
pub async fn acked_message_is_not_redelivered(b: &dyn Backend) {
    let vis = b.min_visibility();
    let q = b.fresh(vis).await;
    publish(&q, "a", &[], None).await;
    let got = receive_n(&q, 1, b.settle_time()).await;
    q.source.ack(vec![got[0].token.clone()]).await.expect("ack succeeds");
    assert!(
        receive_during(&q, vis * 3).await.is_empty(),
        "an acked message came back"
    );
}

/// An unsettled message comes back after its visibility timeout with a higher attempt.
pub async fn unacked_message_is_redelivered_after_visibility_timeout(b: &dyn Backend) {
    let vis = b.min_visibility();
    let q = b.fresh(vis).await;
    publish(&q, "a", &[], None).await;
    let first = receive_n(&q, 1, b.settle_time()).await;
    assert_eq!(first.len(), 1);
    let again = receive_n(&q, 1, vis * 3 + b.settle_time()).await;
    assert_eq!(again.len(), 1, "the unacked message was not redelivered");
    assert_eq!(again[0].id, first[0].id);
    assert!(again[0].delivery_attempt >= 2, "attempt grows on redelivery");
    q.source.ack(vec![again[0].token.clone()]).await.expect("ack succeeds");
}

/// `nack(delay)` keeps the message away for the delay, then delivers it again.
pub async fn nack_with_delay_redelivers_after_delay(b: &dyn Backend) {
    let vis = b.min_visibility() * 10;
    let delay = b.min_visibility() * 3;
    let q = b.fresh(vis).await;
    publish(&q, "a", &[], None).await;
    let first = receive_n(&q, 1, b.settle_time()).await;
    let nacked_at = tokio::time::Instant::now();
    q.source
        .nack(first[0].token.clone(), delay)
        .await
        .expect("nack succeeds");
    let early = receive_during(&q, delay.mul_f64(0.8)).await;
    assert!(early.is_empty(), "redelivered before the nack delay");
    let again = receive_n(&q, 1, delay + b.settle_time()).await;
    assert_eq!(again.len(), 1, "not redelivered after the nack delay");
    assert!(nacked_at.elapsed() >= delay.mul_f64(0.8));
    q.source.ack(vec![again[0].token.clone()]).await.expect("ack succeeds");
}

/// `nack(0)` makes the message available at once.
pub async fn nack_zero_redelivers_now(b: &dyn Backend) {
    let q = b.fresh(b.min_visibility() * 30).await;
    publish(&q, "a", &[], None).await;
    let first = receive_n(&q, 1, b.settle_time()).await;
    q.source
        .nack(first[0].token.clone(), Duration::ZERO)
        .await
        .expect("nack succeeds");
    let again = receive_n(&q, 1, b.settle_time()).await;
    assert_eq!(again.len(), 1, "nack(0) did not make the message available again");
    q.source.ack(vec![again[0].token.clone()]).await.expect("ack succeeds");
}

/// `extend` keeps a message invisible past its visibility timeout.
pub async fn extend_keeps_message_invisible_past_visibility_timeout(b: &dyn Backend) {
    let vis = b.min_visibility() * 2;
    let q = b.fresh(vis).await;
    publish(&q, "a", &[], None).await;
    let first = receive_n(&q, 1, b.settle_time()).await;
    q.source
        .extend(vec![first[0].token.clone()], vis * 4)
        .await
        .expect("extend succeeds");
    assert!(
        receive_during(&q, vis * 2).await.is_empty(),
        "redelivered despite the extension"
    );
    q.source
        .ack(vec![first[0].token.clone()])
        .await
        .expect("ack after extension succeeds");
}

/// Many messages in batches: every one arrives exactly once when acked promptly.
pub async fn batch_of_messages_arrives_once(b: &dyn Backend) {
    let q = b.fresh(b.min_visibility() * 30).await;
    let messages: Vec<OutboundMessage> = (0..25)
        .map(|i| OutboundMessage {
            body: Bytes::from(format!("m{i}")),
            ..Default::default()
        })
        .collect();
    for r in q.publisher.publish(messages).await {
        r.expect("publish succeeds");
    }
    let got = receive_n(&q, 25, b.settle_time() * 2).await;
    let mut bodies: Vec<String> = got
        .iter()
        .map(|d| String::from_utf8_lossy(&d.body).into_owned())
        .collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), 25, "every message arrives once");
    q.source
        .ack(got.iter().map(|d| d.token.clone()).collect())
        .await
        .expect("batch ack succeeds");
}

/// Runs every check.
pub async fn run_all(b: &dyn Backend) {
    publish_then_receive_keeps_body_and_attributes(b).await;
    acked_message_is_not_redelivered(b).await;
    unacked_message_is_redelivered_after_visibility_timeout(b).await;
    nack_with_delay_redelivers_after_delay(b).await;
    nack_zero_redelivers_now(b).await;
    extend_keeps_message_invisible_past_visibility_timeout(b).await;
    batch_of_messages_arrives_once(b).await;
}
