//! The Pub/Sub source reconnects after the emulator restarts. A test binary of its own: it stops
//! and starts the shared emulator (with the project's scripts), which would disturb tests
//! running beside it; cargo runs test binaries one after another.
//!
//! The emulator keeps everything in memory, so a restart loses its topics, subscriptions and
//! unacknowledged messages: the test lets the worker settle everything before the restart,
//! recreates the topic and subscription under the same names afterwards, and then requires
//! every message of both halves to arrive.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use veltrix_pubsub::emulator::{self, EmulatorAdmin, SubscriptionSpec};
use veltrix_pubsub::{PubSubSource, PubSubSourceOptions, PubSubTarget};
use veltrix_queue::{OutboundMessage, Publisher};

fn emulator_answers() -> bool {
    std::net::TcpStream::connect_timeout(
        &emulator::emulator_host().parse().expect("host:port"),
        Duration::from_millis(300),
    )
    .is_ok()
}

async fn publish_range(admin: &EmulatorAdmin, topic: &str, range: std::ops::Range<u64>) {
    let target = PubSubTarget::open(&admin.connection, topic)
        .await
        .expect("open the target");
    let batch: Vec<OutboundMessage> = range
        .map(|n| OutboundMessage {
            body: Bytes::from(format!(r#"{{"n":{n}}}"#)),
            ..Default::default()
        })
        .collect();
    for r in target.publish(batch).await {
        r.expect("publish");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_reconnects_after_an_emulator_restart_and_loses_nothing() {
    let admin = EmulatorAdmin::connect().await.expect("emulator");
    let (topic, sub) = admin
        .topic_with_subscription("restart", |s| s)
        .await
        .expect("topic and subscription");
    let source = PubSubSource::open(
        &admin.connection,
        PubSubSourceOptions {
            subscription: sub.clone(),
            streams: 2,
            max_outstanding_messages: 1000,
            max_outstanding_bytes: 100 << 20,
            visibility_timeout: None,
            max_hold: Duration::from_secs(3600),
        },
    )
    .await
    .expect("open the source");
    let targets = Targets::new();
    let mut s = settings();
    s.receive_wait = Duration::from_secs(1);
    let worker = veltrix::pipeline::Worker::new(Arc::new(source), rules(FORWARD_ALL), targets.list(), 1, s);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));

    publish_range(&admin, &topic, 0..200).await;
    let out = targets.out.clone();
    wait_until(Duration::from_secs(60), "the first 200 arrived", || out.len() >= 200).await;
    // Acks still on their way are lost with the emulator's state, which holds no messages
    // after the restart: nothing to wait for.
    run_script("pubsub-stop.sh");
    assert!(
        !emulator_answers(),
        "the emulator still answers after localstack/pubsub-stop.sh: it was not started by localstack/pubsub-start.sh, so this test cannot restart it"
    );
    run_script("pubsub-start.sh");
    let admin = EmulatorAdmin::connect().await.expect("emulator after the restart");
    admin.create_topic(&topic).await.expect("recreate the topic");
    admin
        .create_subscription(&sub, SubscriptionSpec::on(&topic))
        .await
        .expect("recreate the subscription");
    publish_range(&admin, &topic, 200..400).await;
    wait_until(
        Duration::from_secs(90),
        "the second 200 arrived after the restart",
        || numbers(&out.snapshot()).into_iter().collect::<BTreeSet<u64>>().len() >= 400,
    )
    .await;
    let _ = stop.send(());
    let summary = run.await.expect("worker task").expect("worker run");
    let got: BTreeSet<u64> = numbers(&targets.out.snapshot()).into_iter().collect();
    assert_eq!(got, (0..400).collect(), "every message of both halves arrived");
    assert_eq!(summary.dead_lettered, 0, "{summary}");
}
