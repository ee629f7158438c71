//! The Pub/Sub adapter against the real Google Pub/Sub emulator (started once per run by
//! scripts/test.sh, or here when it is not running): the shared backend behaviour suite and the
//! Pub/Sub specifics. Every test makes fresh, uniquely named topics and subscriptions.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;
use veltrix_pubsub::emulator::{EmulatorAdmin, SubscriptionSpec};
use veltrix_pubsub::{PubSubSource, PubSubSourceOptions, PubSubTarget};
use veltrix_queue::behaviour::{self, Backend, TestQueue};
use veltrix_queue::{Delivery, OutboundMessage, Publisher, Received, Source};

const SETTLE: Duration = Duration::from_secs(10);

async fn admin() -> EmulatorAdmin {
    EmulatorAdmin::connect().await.expect("connect to the Pub/Sub emulator")
}

fn options(subscription: &str, visibility: Option<Duration>) -> PubSubSourceOptions {
    PubSubSourceOptions {
        subscription: subscription.to_string(),
        streams: 1,
        max_outstanding_messages: 1000,
        max_outstanding_bytes: 100 << 20,
        visibility_timeout: visibility,
        max_hold: Duration::from_secs(3600),
    }
}

async fn source(admin: &EmulatorAdmin, subscription: &str, visibility: Option<Duration>) -> PubSubSource {
    PubSubSource::open(&admin.connection, options(subscription, visibility))
        .await
        .expect("open the Pub/Sub source")
}

async fn target(admin: &EmulatorAdmin, topic: &str) -> PubSubTarget {
    PubSubTarget::open(&admin.connection, topic)
        .await
        .expect("open the Pub/Sub target")
}

async fn receive_n(source: &dyn Source, n: usize, limit: Duration) -> Vec<Delivery> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(1));
        if let Received::Messages(batch) = source.receive(n - got.len(), wait).await.expect("receive") {
            got.extend(batch);
        }
    }
    got
}

async fn receive_during(source: &dyn Source, window: Duration) -> Vec<Delivery> {
    let deadline = Instant::now() + window;
    let mut got = Vec::new();
    while Instant::now() < deadline {
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(1));
        if let Received::Messages(batch) = source.receive(100, wait).await.expect("receive") {
            got.extend(batch);
        }
    }
    got
}

fn message(body: &str, key: Option<&str>) -> OutboundMessage {
    OutboundMessage {
        body: Bytes::from(body.to_string()),
        attributes: BTreeMap::from([("n".to_string(), body.to_string())])
            .into_iter()
            .collect(),
        ordering_key: key.map(str::to_string),
        dedup_id: None,
    }
}

async fn publish(target: &PubSubTarget, messages: Vec<OutboundMessage>) {
    for r in target.publish(messages).await {
        r.expect("publish succeeds");
    }
}

struct Emulator;

#[async_trait]
impl Backend for Emulator {
    async fn fresh(&self, visibility: Duration) -> TestQueue {
        let admin = admin().await;
        let dlq = admin.topic("suite-dlq").await.expect("dlq topic");
        let (topic, sub) = admin
            .topic_with_subscription("suite", |s| SubscriptionSpec {
                dead_letter: Some((dlq, 100)),
                ..s
            })
            .await
            .expect("topic and subscription");
        TestQueue {
            source: Box::new(source(&admin, &sub, Some(visibility)).await),
            publisher: Box::new(target(&admin, &topic).await),
        }
    }

    /// The visibility timeout is kept by the client, so it can be shorter than the service's
    /// 10 s minimum ack deadline.
    fn min_visibility(&self) -> Duration {
        Duration::from_secs(2)
    }

    fn settle_time(&self) -> Duration {
        SETTLE
    }
}

macro_rules! behaviour_suite {
    ($($check:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            behaviour::$check(&Emulator).await;
        }
    )*};
}

behaviour_suite!(
    publish_then_receive_keeps_body_and_attributes,
    acked_message_is_not_redelivered,
    unacked_message_is_redelivered_after_visibility_timeout,
    nack_with_delay_redelivers_after_delay,
    nack_zero_redelivers_now,
    extend_keeps_message_invisible_past_visibility_timeout,
    batch_of_messages_arrives_once,
);

/// A delayed nack longer than the subscription's ack deadline: the message stays away for the
/// whole delay (the crate keeps extending its server lease) and then comes back once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_with_delay_longer_than_the_ack_deadline_is_not_redelivered_early() {
    let admin = admin().await;
    let (topic, sub) = admin
        .topic_with_subscription("nack-delay", |s| s)
        .await
        .expect("topic and subscription");
    let source = source(&admin, &sub, None).await;
    publish(&target(&admin, &topic).await, vec![message("a", None)]).await;
    let first = receive_n(&source, 1, SETTLE).await;
    assert_eq!(first.len(), 1);
    let delay = Duration::from_secs(14);
    let nacked_at = Instant::now();
    source.nack(first[0].token.clone(), delay).await.expect("nack");
    let early = receive_during(&source, delay - Duration::from_secs(1)).await;
    assert!(
        early.is_empty(),
        "redelivered {:?} after the nack, before the {delay:?} delay",
        nacked_at.elapsed()
    );
    let again = receive_n(&source, 1, SETTLE).await;
    assert_eq!(again.len(), 1, "not redelivered after the delay");
    assert_eq!(again[0].id, first[0].id);
    assert!(
        nacked_at.elapsed() >= delay,
        "came back after {:?}",
        nacked_at.elapsed()
    );
    assert_eq!(
        again[0].delivery_attempt, 2,
        "counted locally without a dead-letter policy"
    );
    source.ack(vec![again[0].token.clone()]).await.expect("ack");
    source.close().await;
}

/// A slow handler: the lease is extended well past the 10 s ack deadline, then the ack lands
/// and the message never comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_extension_past_the_ack_deadline_gives_no_duplicate() {
    let admin = admin().await;
    let (topic, sub) = admin
        .topic_with_subscription("lease", |s| s)
        .await
        .expect("topic and subscription");
    let source = source(&admin, &sub, None).await;
    assert_eq!(
        source.limits().initial_lease,
        Duration::from_secs(10),
        "the subscription's ack deadline"
    );
    publish(&target(&admin, &topic).await, vec![message("slow", None)]).await;
    let first = receive_n(&source, 1, SETTLE).await;
    assert_eq!(first.len(), 1);
    let held_until = Instant::now() + Duration::from_secs(25);
    let mut duplicates = Vec::new();
    while Instant::now() < held_until {
        source
            .extend(vec![first[0].token.clone()], Duration::from_secs(10))
            .await
            .expect("extend");
        duplicates.extend(receive_during(&source, Duration::from_secs(4)).await);
    }
    assert!(duplicates.is_empty(), "redelivered while the lease was extended");
    source.ack(vec![first[0].token.clone()]).await.expect("ack");
    assert!(
        receive_during(&source, Duration::from_secs(12)).await.is_empty(),
        "redelivered after the ack"
    );
    source.close().await;
}

/// Messages with the same ordering key arrive in publish order (keys interleaved).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordering_keys_keep_their_order() {
    let admin = admin().await;
    let (topic, sub) = admin
        .topic_with_subscription("ordered", |s| SubscriptionSpec { ordering: true, ..s })
        .await
        .expect("topic and subscription");
    let source = source(&admin, &sub, None).await;
    let target = target(&admin, &topic).await;
    let keys = ["k0", "k1", "k2"];
    for round in 0..4 {
        let batch = (0..10)
            .flat_map(|i| {
                keys.iter()
                    .map(move |k| message(&format!("{k}:{}", round * 10 + i), Some(k)))
            })
            .collect();
        publish(&target, batch).await;
    }
    let mut seen: HashMap<String, Vec<u32>> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.values().map(Vec::len).sum::<usize>() < 120 && Instant::now() < deadline {
        if let Received::Messages(batch) = source.receive(100, Duration::from_secs(1)).await.expect("receive") {
            for d in &batch {
                let body = String::from_utf8_lossy(&d.body).into_owned();
                let (key, n) = body.split_once(':').expect("key:n");
                assert_eq!(d.ordering_key.as_deref(), Some(key));
                seen.entry(key.to_string())
                    .or_default()
                    .push(n.parse().expect("number"));
            }
            source
                .ack(batch.into_iter().map(|d| d.token).collect())
                .await
                .expect("ack");
        }
    }
    for key in keys {
        let got = seen.get(key).cloned().unwrap_or_default();
        assert_eq!(got, (0..40).collect::<Vec<u32>>(), "order of {key}");
    }
    source.close().await;
}

/// The native dead-letter policy moves a message nacked `max_delivery_attempts` times to the
/// dead-letter topic; the attempt the source reports is the service's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_dead_letter_policy_moves_a_poison_message_after_max_attempts() {
    let admin = admin().await;
    let (dlq_topic, dlq_sub) = admin
        .topic_with_subscription("native-dlq", |s| s)
        .await
        .expect("topic and subscription");
    let (topic, sub) = admin
        .topic_with_subscription("native", |s| SubscriptionSpec {
            dead_letter: Some((dlq_topic.clone(), 5)),
            ..s
        })
        .await
        .expect("topic and subscription");
    let source = source(&admin, &sub, None).await;
    publish(&target(&admin, &topic).await, vec![message("poison", None)]).await;
    let mut attempts = Vec::new();
    while attempts.len() < 5 {
        let got = receive_n(&source, 1, SETTLE).await;
        assert_eq!(
            got.len(),
            1,
            "delivery {} did not arrive (attempts so far {attempts:?})",
            attempts.len() + 1
        );
        attempts.push(got[0].delivery_attempt);
        source.nack(got[0].token.clone(), Duration::ZERO).await.expect("nack");
    }
    assert_eq!(attempts, vec![1, 2, 3, 4, 5], "the service's delivery attempts");
    let dead = source_on(&admin, &dlq_sub).await;
    let got = receive_n(&dead, 1, SETTLE * 2).await;
    assert_eq!(got.len(), 1, "the poison message reached the dead-letter topic");
    assert_eq!(&got[0].body[..], b"poison");
    assert_eq!(
        got[0].attributes.get_str("CloudPubSubDeadLetterSourceDeliveryCount"),
        Some("5")
    );
    assert!(
        receive_during(&source, Duration::from_secs(3)).await.is_empty(),
        "still delivered after dead-lettering"
    );
    dead.ack(vec![got[0].token.clone()]).await.expect("ack");
    source.close().await;
    dead.close().await;
}

async fn source_on(admin: &EmulatorAdmin, sub: &str) -> PubSubSource {
    source(admin, sub, None).await
}

/// A missing subscription or topic is a clear, permanent error at open, naming it and saying
/// how to create it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_subscription_and_topic_are_clear_errors() {
    let admin = admin().await;
    let missing_sub = veltrix_pubsub::emulator::subscription_path("does-not-exist");
    let e = PubSubSource::open(&admin.connection, options(&missing_sub, None))
        .await
        .err()
        .expect("open fails");
    assert!(!e.is_transient());
    assert!(
        e.message.contains(&missing_sub) && e.message.contains("create it"),
        "{}",
        e.message
    );
    let missing_topic = veltrix_pubsub::emulator::topic_path("does-not-exist");
    let e = PubSubTarget::open(&admin.connection, &missing_topic)
        .await
        .err()
        .expect("open fails");
    assert!(!e.is_transient());
    assert!(
        e.message.contains(&missing_topic) && e.message.contains("create it"),
        "{}",
        e.message
    );
}

/// Oversized messages are refused before the service sees them, as permanent errors; the rest
/// of the batch is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_fails_alone_and_permanently() {
    let admin = admin().await;
    let (topic, sub) = admin
        .topic_with_subscription("oversize", |s| s)
        .await
        .expect("topic and subscription");
    let source = source(&admin, &sub, None).await;
    let target = target(&admin, &topic).await;
    let mut big = message("big", None);
    big.body = Bytes::from(vec![b'x'; veltrix_pubsub::limits::MAX_MESSAGE_BYTES + 1]);
    let results = target.publish(vec![message("small", None), big]).await;
    assert!(results[0].is_ok());
    let e = results[1].as_ref().expect_err("the big one fails");
    assert!(!e.is_transient(), "{e}");
    let got = receive_n(&source, 1, SETTLE).await;
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].body[..], b"small");
    source.ack(vec![got[0].token.clone()]).await.expect("ack");
    source.close().await;
}

/// Messages a source still holds when it closes (a drain or restart released them: one as
/// received, one waiting out a delayed nack) reach the next subscriber, also on an ordering key.
///
/// Measured on the emulator, and so not asserted: it does not honour nacks sent while a stream
/// shuts down, so they come back after the 10 s ack deadline rather than at once (10.07 s; on an
/// open stream a nack is redelivered within ~50 ms); and the two come back in either order
/// (2 runs in 5 reversed), where the service redelivers an ordering key in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_held_at_close_reach_the_next_subscriber() {
    let admin = admin().await;
    let (topic, sub) = admin
        .topic_with_subscription("close-release", |s| SubscriptionSpec { ordering: true, ..s })
        .await
        .expect("topic and subscription");
    let target = target(&admin, &topic).await;
    publish(&target, vec![message("held", Some("k")), message("delayed", Some("k"))]).await;
    let first = source(&admin, &sub, None).await;
    let got = receive_n(&first, 2, SETTLE).await;
    assert_eq!(got.len(), 2, "both messages arrive");
    let mut tokens = got.into_iter().map(|d| d.token);
    let _held = tokens.next().unwrap();
    first
        .nack(tokens.next().unwrap(), Duration::from_secs(60))
        .await
        .expect("nack");
    first.close().await;
    let second = source(&admin, &sub, None).await;
    // The ack deadline plus the settle time.
    let again = receive_n(&second, 2, SETTLE * 2).await;
    let mut bodies: Vec<_> = again
        .iter()
        .map(|d| String::from_utf8_lossy(&d.body).into_owned())
        .collect();
    bodies.sort();
    assert_eq!(bodies, ["delayed", "held"], "both come back");
    second
        .ack(again.into_iter().map(|d| d.token).collect())
        .await
        .expect("ack");
    second.close().await;
}
