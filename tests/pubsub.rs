//! The worker on Google Pub/Sub (the real emulator, started once per run by scripts/test.sh or
//! here when it is not running): config-driven routing and dead-lettering through topics, the
//! interplay with the subscription's native dead-letter policy, and 10,000 messages drained.
//! Every test makes fresh, uniquely named topics and subscriptions.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use tokio::time::Instant;
use veltrix::config::load_str;
use veltrix::runner::{self, RunOptions};
use veltrix_pubsub::emulator::{self, EmulatorAdmin, SubscriptionSpec};
use veltrix_pubsub::{PubSubSource, PubSubSourceOptions, PubSubTarget};
use veltrix_queue::{Delivery, OutboundMessage, Publisher, Received, Source};

async fn admin() -> EmulatorAdmin {
    EmulatorAdmin::connect().await.expect("connect to the Pub/Sub emulator")
}

async fn open_source(admin: &EmulatorAdmin, subscription: &str, streams: usize) -> PubSubSource {
    let options = PubSubSourceOptions {
        subscription: subscription.to_string(),
        streams,
        max_outstanding_messages: 1000,
        max_outstanding_bytes: 100 << 20,
        visibility_timeout: None,
        max_hold: Duration::from_secs(3600),
    };
    PubSubSource::open(&admin.connection, options)
        .await
        .expect("open the Pub/Sub source")
}

/// How long a subscription must stay empty to show nothing is left unacked: longer than the
/// subscriptions' ack deadline (the emulator's default, 10 s), after which a message leased and
/// never acked comes back.
const UNACKED_WINDOW: Duration = Duration::from_secs(12);

async fn publish_all(admin: &EmulatorAdmin, topic: &str, messages: Vec<OutboundMessage>) {
    let target = PubSubTarget::open(&admin.connection, topic)
        .await
        .expect("open the target");
    for chunk in messages.chunks(1000) {
        for r in target.publish(chunk.to_vec()).await {
            r.expect("publish to the emulator");
        }
    }
}

fn body(text: &str) -> OutboundMessage {
    OutboundMessage {
        body: Bytes::from(text.to_string()),
        ..Default::default()
    }
}

/// Receives and acks until `n` messages arrived or `limit` passed.
async fn drain(source: &PubSubSource, n: usize, limit: Duration) -> Vec<Delivery> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        if let Received::Messages(batch) = source.receive(1000, Duration::from_secs(1)).await.expect("receive") {
            source
                .ack(batch.iter().map(|d| d.token.clone()).collect())
                .await
                .expect("ack");
            got.extend(batch);
        }
    }
    got
}

/// Whatever arrives during `window` (to prove that nothing does).
async fn arrivals_during(source: &PubSubSource, window: Duration) -> Vec<Delivery> {
    let deadline = Instant::now() + window;
    let mut got = Vec::new();
    while Instant::now() < deadline {
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(1));
        if let Received::Messages(batch) = source.receive(1000, wait).await.expect("receive") {
            got.extend(batch);
        }
    }
    got
}

/// The whole path from a config file: Pub/Sub source, Pub/Sub targets for forwards and dead
/// letters. The rule's retry budget (3) is below the subscription's native dead-letter policy
/// (5 attempts), so veltrix dead-letters the poison message itself, with its reason, and the
/// native dead-letter topic stays empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_driven_worker_routes_and_dead_letters_before_the_native_policy() {
    let admin = admin().await;
    let (native_dlq, native_dlq_sub) = admin
        .topic_with_subscription("native-dlq", |s| s)
        .await
        .expect("topic and subscription");
    let (source_topic, source_sub) = admin
        .topic_with_subscription("orders", |s| SubscriptionSpec {
            dead_letter: Some((native_dlq.clone(), 5)),
            ..s
        })
        .await
        .expect("topic and subscription");
    let (out, out_sub) = admin
        .topic_with_subscription("out", |s| s)
        .await
        .expect("topic and subscription");
    let (dlq, dlq_sub) = admin
        .topic_with_subscription("dlq", |s| s)
        .await
        .expect("topic and subscription");

    let endpoint = emulator::endpoint();
    let text = format!(
        r#"
[source]
type = "pubsub"
subscription = "{source_sub}"
endpoint = "{endpoint}"
streams = 2

[targets.out]
type = "pubsub"
topic = "{out}"
endpoint = "{endpoint}"

[targets.dlq]
type = "pubsub"
topic = "{dlq}"
endpoint = "{endpoint}"

[pipeline]
dead_letter = "dlq"
retry = {{ max_attempts = 3, initial_backoff_ms = 200, max_backoff_secs = 1 }}
drain_timeout_secs = 10

[[rules]]
name = "orders"
match = {{ body = {{ type = ["order"] }} }}
actions = [{{ type = "forward", target = "out" }}]

[[rules]]
name = "flaky"
match = {{ body = {{ type = ["poison"] }} }}
actions = [{{ type = "retry" }}]
"#
    );
    let config = load_str(Path::new("pubsub.toml"), &text, &|_| None).expect("valid config");
    let mut events: Vec<OutboundMessage> = (0..20)
        .map(|i| body(&format!(r#"{{"type":"order","n":{i}}}"#)))
        .collect();
    events.push(body(r#"{"type":"poison"}"#));
    events.push(body("not json at all"));
    publish_all(&admin, &source_topic, events).await;

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(runner::run(config, RunOptions::default(), async move {
        let _ = stopped.await;
    }));
    let out_source = open_source(&admin, &out_sub, 1).await;
    let dlq_source = open_source(&admin, &dlq_sub, 1).await;
    let forwarded = drain(&out_source, 20, Duration::from_secs(60)).await;
    let dead = drain(&dlq_source, 2, Duration::from_secs(60)).await;
    let native = open_source(&admin, &native_dlq_sub, 1).await;
    let natively_dead = arrivals_during(&native, Duration::from_secs(3)).await;
    let _ = stop.send(());
    let summary = worker.await.expect("worker task").expect("worker run");

    let numbers: BTreeSet<u64> = forwarded
        .iter()
        .map(|d| {
            serde_json::from_slice::<serde_json::Value>(&d.body).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(numbers, (0..20).collect(), "every order forwarded");
    assert!(forwarded
        .iter()
        .all(|d| d.attributes.get_str("veltrix.rule") == Some("orders")));
    let reasons: HashMap<String, &Delivery> = dead
        .iter()
        .map(|d| {
            (
                d.attributes.get_str("veltrix.reason").unwrap_or_default().to_string(),
                d,
            )
        })
        .collect();
    assert_eq!(dead.len(), 2, "{reasons:?}", reasons = reasons.keys());
    let poison = reasons
        .get("retry_budget_exhausted")
        .unwrap_or_else(|| panic!("poison dead-lettered by veltrix: {:?}", reasons.keys()));
    assert_eq!(&poison.body[..], br#"{"type":"poison"}"#);
    assert_eq!(poison.attributes.get_str("veltrix.attempts"), Some("3"));
    assert!(
        dead.iter().any(|d| &d.body[..] == b"not json at all"),
        "the malformed event is dead-lettered"
    );
    assert!(
        natively_dead.is_empty(),
        "the native policy moved {} message(s)",
        natively_dead.len()
    );
    assert_eq!((summary.forwarded, summary.dead_lettered), (20, 2), "{summary}");

    // Everything was acked: the source subscription is empty, for longer than the ack
    // deadline (a message the worker held unacked would be redelivered within it).
    let leftover = open_source(&admin, &source_sub, 1).await;
    assert!(
        arrivals_during(&leftover, UNACKED_WINDOW).await.is_empty(),
        "unacked messages remain"
    );
    for s in [out_source, dlq_source, native, leftover] {
        s.close().await;
    }
}

/// 10,000 messages through the worker on four streams: every id arrives, nothing is left on
/// the subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_drains_ten_thousand_messages_with_none_lost() {
    let admin = admin().await;
    let (topic, sub) = admin
        .topic_with_subscription("drain10k", |s| s)
        .await
        .expect("topic and subscription");
    publish_all(
        &admin,
        &topic,
        (0..10_000u64).map(|n| body(&format!(r#"{{"n":{n}}}"#))).collect(),
    )
    .await;
    let targets = Targets::new();
    let mut s = settings();
    s.receive_wait = Duration::from_secs(1);
    s.max_in_flight = 1024;
    let source = open_source(&admin, &sub, 4).await;
    let w = veltrix::pipeline::Worker::new(Arc::new(source), rules(FORWARD_ALL), targets.list(), 1, s);
    let out = targets.out.clone();
    let summary = run_until(w, Duration::from_secs(180), "10,000 messages arrived", || {
        out.len() >= 10_000
    })
    .await;
    let got: BTreeSet<u64> = numbers(&targets.out.snapshot()).into_iter().collect();
    assert_eq!(got, (0..10_000).collect(), "every id arrived");
    assert_eq!(summary.dead_lettered, 0, "{summary}");
    let leftover = open_source(&admin, &sub, 1).await;
    assert!(
        arrivals_during(&leftover, UNACKED_WINDOW).await.is_empty(),
        "unacked messages remain after more than the ack deadline"
    );
    leftover.close().await;
}

/// A drain does not wait out a receive that is waiting on the streams' buffer: the Pub/Sub
/// source's receive is local, so stopping it loses nothing, and a worker with a 20 s receive
/// wait stops in far less than that (it used to wait for the receive to time out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_stops_a_waiting_receive_at_once() {
    let admin = admin().await;
    let (topic, sub) = admin
        .topic_with_subscription("drain-wait", |s| s)
        .await
        .expect("topic and subscription");
    publish_all(
        &admin,
        &topic,
        (0..3u64).map(|n| body(&format!(r#"{{"n":{n}}}"#))).collect(),
    )
    .await;
    let targets = Targets::new();
    let mut s = settings();
    s.receive_wait = Duration::from_secs(20);
    let source = open_source(&admin, &sub, 1).await;
    let w = veltrix::pipeline::Worker::new(Arc::new(source), rules(FORWARD_ALL), targets.list(), 1, s);
    let out = targets.out.clone();
    // When the 3 had arrived, i.e. when run_until asked the worker to stop.
    let mut asked = None;
    let summary = run_until(w, Duration::from_secs(30), "3 messages forwarded", || {
        let done = out.len() >= 3;
        if done {
            asked = Some(Instant::now());
        }
        done
    })
    .await;
    let took = asked.expect("the worker was asked to stop").elapsed();
    assert_eq!(summary.forwarded, 3, "{summary}");
    assert!(
        took < Duration::from_secs(5),
        "the drain took {took:?}; a waiting receive (20 s) held it"
    );
    let leftover = open_source(&admin, &sub, 1).await;
    assert!(
        arrivals_during(&leftover, UNACKED_WINDOW).await.is_empty(),
        "a message came back after the drain: an ack was lost"
    );
    leftover.close().await;
}

/// `veltrix dlq replay` (the binary) on Pub/Sub: reads the dead letters from a subscription on
/// the dead-letter topic, publishes them to the source subscription's topic without the
/// worker's attributes, and leaves one replayed too often where it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_replay_moves_dead_letters_back_to_the_source_topic() {
    let admin = admin().await;
    let (_, source_sub) = admin
        .topic_with_subscription("replay-src", |s| s)
        .await
        .expect("topic and subscription");
    let (dlq, dlq_sub) = admin
        .topic_with_subscription("replay-dlq", |s| s)
        .await
        .expect("topic and subscription");
    let dead = |n: u32, replays: Option<&str>| {
        let mut m = body(&format!(r#"{{"n":{n}}}"#));
        m.attributes.insert("veltrix.reason", "transform_failed");
        m.attributes.insert("veltrix.message_id", format!("m-{n}"));
        m.attributes.insert("tenant", "t-1");
        if let Some(r) = replays {
            m.attributes.insert("veltrix.replays", r);
        }
        m
    };
    publish_all(&admin, &dlq, vec![dead(1, None), dead(2, None), dead(3, Some("3"))]).await;

    let endpoint = emulator::endpoint();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("w.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\ntype = \"pubsub\"\nsubscription = \"{source_sub}\"\nendpoint = \"{endpoint}\"\n\
             [targets.dlq]\ntype = \"pubsub\"\ntopic = \"{dlq}\"\nendpoint = \"{endpoint}\"\n\
             [pipeline]\ndead_letter = \"dlq\"\n"
        ),
    )
    .unwrap();
    let args = [
        "dlq",
        "replay",
        "-c",
        config.to_str().unwrap(),
        "--from-subscription",
        &dlq_sub,
        "--wait-secs",
        "3",
    ]
    .map(str::to_string);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_veltrix"))
            .args(args)
            .output()
            .expect("run veltrix dlq replay")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("read=3 replayed=2"), "{stderr}");
    assert!(stderr.contains("skipped_max_replays=1"), "{stderr}");

    let source = open_source(&admin, &source_sub, 1).await;
    let replayed = drain(&source, 2, Duration::from_secs(30)).await;
    let mut numbers: Vec<u64> = replayed
        .iter()
        .map(|d| {
            serde_json::from_slice::<serde_json::Value>(&d.body).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .collect();
    numbers.sort();
    assert_eq!(numbers, vec![1, 2]);
    for d in &replayed {
        assert_eq!(d.attributes.get_str("veltrix.replays"), Some("1"));
        assert_eq!(d.attributes.get_str("tenant"), Some("t-1"));
        assert!(!d.attributes.contains_key("veltrix.reason"), "{:?}", d.attributes);
    }
    // Released at the end of the replay; the emulator may have pushed it back onto the closing
    // stream, where it waits 50–80 s before it is delivered again (see adapters/pubsub/NOTES.md).
    let left = open_source(&admin, &dlq_sub, 1).await;
    let stays = drain(&left, 1, Duration::from_secs(120)).await;
    assert_eq!(stays.len(), 1, "the message replayed too often is still a dead letter");
    assert_eq!(stays[0].attributes.get_str("veltrix.replays"), Some("3"));
    assert!(
        arrivals_during(&left, Duration::from_secs(2)).await.is_empty(),
        "the replayed ones were acked"
    );
    source.close().await;
    left.close().await;
}

/// `check --preflight` on Pub/Sub: a dead-letter policy at the retry budget is an error, a
/// missing target topic is an error, no dead-letter policy is only a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_compares_the_subscription_with_the_retry_budget() {
    let admin = admin().await;
    let topic = admin.topic("pf").await.expect("topic");
    let dlq = admin.topic("pf-dlq").await.expect("topic");
    let at_budget = admin
        .subscription(
            "pf-low",
            SubscriptionSpec {
                dead_letter: Some((dlq.clone(), 5)),
                ..SubscriptionSpec::on(&topic)
            },
        )
        .await
        .expect("sub");
    let plain = admin
        .subscription("pf-plain", SubscriptionSpec::on(&topic))
        .await
        .expect("sub");
    let endpoint = emulator::endpoint();
    let config = |sub: &str, extra: &str| {
        let text = format!(
            "[source]\ntype = \"pubsub\"\nsubscription = \"{sub}\"\nendpoint = \"{endpoint}\"\n\
             [targets.dlq]\ntype = \"pubsub\"\ntopic = \"{dlq}\"\nendpoint = \"{endpoint}\"\n{extra}\
             [pipeline]\ndead_letter = \"dlq\"\nretry = {{ max_attempts = 5 }}\n"
        );
        load_str(Path::new("preflight.toml"), &text, &|_| None).expect("valid config")
    };
    let report = veltrix::preflight::preflight(&config(&at_budget, "")).await;
    assert!(report.has_errors(), "{:?}", report.findings);
    let f = &report.findings[0];
    assert!(
        f.problem.contains("after 5 delivery attempts") && f.problem.contains("retry budget of 5"),
        "{f}"
    );
    assert!(f.fix.contains("max_delivery_attempts = 10"), "{f}");

    let missing = emulator::topic_path(&emulator::unique("pf-missing"));
    let report = veltrix::preflight::preflight(&config(
        &plain,
        &format!("[targets.gone]\ntype = \"pubsub\"\ntopic = \"{missing}\"\nendpoint = \"{endpoint}\"\n"),
    ))
    .await;
    let gone = report
        .findings
        .iter()
        .find(|f| f.subject == "targets.gone")
        .expect("missing topic reported");
    assert_eq!(gone.severity, veltrix::preflight::Severity::Error);
    let no_policy = report
        .findings
        .iter()
        .find(|f| f.problem.contains("no dead-letter policy"))
        .expect("warning about the missing policy");
    assert_eq!(no_policy.severity, veltrix::preflight::Severity::Warning);

    let report = veltrix::preflight::preflight(&config(&plain, "")).await;
    assert!(!report.has_errors(), "warnings only: {:?}", report.findings);
}
