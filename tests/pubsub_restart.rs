//! The Pub/Sub source reconnects after the emulator restarts. A test binary of its own: it stops
//! and starts the shared emulator (with the project's scripts), which would disturb tests
//! running beside it; cargo runs test binaries one after another.
//!
//! The emulator keeps everything in memory, so a restart loses its topics, subscriptions and
//! unacknowledged messages. The test restarts it while the worker holds every message of the
//! first half in flight (received, its forwards held back by a gated target), so those can only
//! arrive through the worker; then it recreates the topic and subscription under the same
//! names and requires every message of both halves exactly once.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use veltrix_pubsub::emulator::{self, EmulatorAdmin, SubscriptionSpec};
use veltrix_pubsub::{PubSubSource, PubSubSourceOptions, PubSubTarget};
use veltrix_queue::{OutboundMessage, Publisher};

/// Messages in each half (all of the first are in flight at the restart).
const FIRST_HALF: u64 = 50;

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
    let out = targets.out.clone();
    let gated = Gated::new(out.clone());
    let mut s = settings();
    s.receive_wait = Duration::from_secs(1);
    let worker = veltrix::pipeline::Worker::new(
        Arc::new(source),
        rules(FORWARD_ALL),
        targets_with_out(&targets.dlq, Arc::new(gated.clone())),
        1,
        s,
    );
    let stats = worker.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));

    publish_range(&admin, &topic, 0..FIRST_HALF).await;
    wait_until(
        Duration::from_secs(60),
        "the worker took the first half in flight",
        || stats.snapshot().received >= FIRST_HALF && gated.held() > 0,
    )
    .await;
    assert!(out.is_empty(), "nothing has been forwarded yet");
    run_script("pubsub-stop.sh");
    assert!(
        !emulator_answers(),
        "the emulator still answers after localstack/pubsub-stop.sh: it was not started by localstack/pubsub-start.sh, so this test cannot restart it"
    );
    // With the emulator down, the held forwards go through; their acks are lost with it.
    gated.open();
    wait_until(Duration::from_secs(30), "the first half forwarded", || {
        out.len() >= FIRST_HALF as usize
    })
    .await;
    run_script("pubsub-start.sh");
    let admin = EmulatorAdmin::connect().await.expect("emulator after the restart");
    admin.create_topic(&topic).await.expect("recreate the topic");
    admin
        .create_subscription(&sub, SubscriptionSpec::on(&topic))
        .await
        .expect("recreate the subscription");
    publish_range(&admin, &topic, FIRST_HALF..2 * FIRST_HALF).await;
    wait_until(
        Duration::from_secs(90),
        "the second half arrived after the restart",
        || numbers(&out.snapshot()).into_iter().collect::<BTreeSet<u64>>().len() >= 2 * FIRST_HALF as usize,
    )
    .await;
    let _ = stop.send(());
    let summary = run.await.expect("worker task").expect("worker run");
    // Exactly once: the subscription that held the first half is gone, so nothing came back.
    assert_each_arrived_once(&out, 0..2 * FIRST_HALF);
    assert_eq!(summary.dead_lettered, 0, "{summary}");
}
