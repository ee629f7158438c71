//! The worker's container image, run for real under podman: the image `deploy/build-image.sh`
//! builds (`VELTRIX_IMAGE`, default `localhost/veltrix:dev`) runs the worker against LocalStack
//! (SQS) and the Pub/Sub emulator on the host network (all traffic on 127.0.0.1), with a
//! read-only root filesystem, every capability dropped, as uid/gid 65532, the way
//! `deploy/kubernetes/deployment.yaml` runs it.
//!
//! Containers are started, stopped, paused and resumed through the `testcontainers` crate over
//! podman's Docker-compatible API (`DOCKER_HOST`, served by `podman system service`, which
//! scripts/test.sh starts); SIGKILL and `inspect` go through the podman CLI, which the crate
//! does not offer.
//!
//! Each scenario runs on SQS and on Pub/Sub, with uniquely numbered messages (9 in 10 forwarded,
//! 1 in 10 unmatched and dead-lettered), and checks every id, body and attribute at the end:
//! - **relay**: 10,000 messages, three containers in turn. The first gets `podman stop` mid-run:
//!   it drains and exits 0 within the grace period, repeats nothing and leaves nothing in flight.
//!   The second is SIGKILLed mid-run. The third drains the rest. Nothing is lost; every repeat has
//!   a copy from the killed container, and there are at most as many as it held (in flight, its
//!   flow-control window on Pub/Sub, and its acks still on their way).
//! - **fleet**: 30,000 messages, three replicas on one queue / subscription. Mid-run one is
//!   SIGKILLed and one is frozen (`podman pause`) for longer than the visibility timeout / ack
//!   deadline, then resumed, so its late acks and forwards race the replicas that took its
//!   messages over. Nothing is lost; no repeat comes from two healthy replicas; the killed
//!   replica repeats at most what it held, and so does the frozen one on SQS. On Pub/Sub the
//!   emulator keeps sending to the frozen stream, so the frozen replica repeats up to what it
//!   settled after its resume; its repeats and late acks are counted and printed.
//! - **idle stop**: with no receive settings (a user's config), an idle worker stops within
//!   `podman stop`'s default grace of 10 s (given explicitly: containers created through the
//!   API have a stop timeout of 0) with exit 0.
//!
//! The harness (image, containers, stacks, tally) is tests/harness/containers.rs, shared with
//! benches/fleet.rs.
mod common;
#[path = "harness/containers.rs"]
mod containers;

use std::time::Duration;

use containers::*;
use tokio::time::Instant;
// ---------------------------------------------------------------------------------------------
// The scenarios.

/// Three containers in turn on 10,000 messages: `podman stop` mid-run, SIGKILL mid-run, then one
/// that drains the rest.
async fn relay(stack: Stack) {
    let n = stack.sent;
    let mut tally = Tally::new(n);

    let first = Worker::start(stack.dir(), 0).await;
    first.assert_hardened();
    Worker::wait_settled(&[&first], n / 5).await;
    first.stop_gracefully().await;
    stack.collect_rest(&mut tally).await;
    let after_stop = tally.accounted();
    assert!(
        after_stop < n,
        "{}: the stop came before the end of the run",
        stack.provider
    );
    assert_eq!(
        tally.duplicates(),
        0,
        "{}: a drain finishes or releases what it holds",
        stack.provider
    );
    if let Some(in_flight) = stack.in_flight().await {
        assert_eq!(
            in_flight, 0,
            "the drain left nothing in flight: every message was acked or released"
        );
    }

    let second = Worker::start(stack.dir(), 1).await;
    Worker::wait_settled(&[&second], n / 5).await;
    let killed_held = second.holds_at_most(stack.prefetch).await;
    second.kill().await;
    stack.collect_rest(&mut tally).await;
    assert!(
        tally.accounted() < n,
        "{}: the kill came before the end of the run",
        stack.provider
    );

    let third = Worker::start(stack.dir(), 2).await;
    stack
        .collect_until(&mut tally, Duration::from_secs(180), |done| done >= n)
        .await;
    third.stop_gracefully().await;
    stack.collect_rest(&mut tally).await;

    let (forwarded, dead) = tally.forwarded_and_dead();
    println!(
        "relay on {}: {n} sent, {forwarded} forwarded, {dead} dead-lettered, {} duplicates (the killed \
         container held at most {killed_held}), {} missing",
        stack.provider,
        tally.duplicates(),
        tally.missing().len()
    );
    assert_eq!(tally.missing(), Vec::<u64>::new(), "{}: nothing lost", stack.provider);
    assert_eq!(
        tally.unexplained_duplicates(&[1]),
        Vec::<u64>::new(),
        "{}: repeats without a copy from the killed container",
        stack.provider
    );
    assert!(
        tally.duplicates() <= killed_held,
        "{}: {} duplicates, more than the killed container could hold ({killed_held})",
        stack.provider,
        tally.duplicates()
    );
    stack.assert_source_settled().await;
    stack.cleanup().await;
}

/// Three replicas on 30,000 messages; one SIGKILLed, one frozen past its lease and resumed.
async fn fleet(stack: Stack, lease: Duration) {
    let n = stack.sent;
    let mut tally = Tally::new(n);
    let mut replicas = Vec::new();
    for r in 0..REPLICAS {
        replicas.push(Worker::start(stack.dir(), r).await);
    }
    Worker::wait_settled(&replicas.iter().collect::<Vec<_>>(), n / 5).await;
    let (survivor, killed, frozen) = (0, 1, 2);
    let frozen_worker = replicas.pop().unwrap();
    let killed_worker = replicas.pop().unwrap();
    let survivor_worker = replicas.pop().unwrap();
    let killed_held = killed_worker.holds_at_most(stack.prefetch).await;
    killed_worker.kill().await;
    let frozen_held = frozen_worker.holds_at_most(stack.prefetch).await;
    let settled_before = frozen_worker.metric("veltrix_messages_settled_total").await;
    frozen_worker.container.pause().await.expect("podman pause");
    // The freeze is the fault itself: it must outlast the lease, so the replicas left take its
    // messages over while it holds them.
    let frozen_until = Instant::now() + lease + Duration::from_secs(3);
    while Instant::now() < frozen_until {
        stack.collect(&mut tally).await;
    }
    frozen_worker.container.unpause().await.expect("podman unpause");
    stack
        .collect_until(&mut tally, Duration::from_secs(240), |done| done >= n)
        .await;
    let late_settled = frozen_worker.metric("veltrix_messages_settled_total").await - settled_before;
    let late_ack_failures = frozen_worker.metric("veltrix_ack_failures_total").await;
    survivor_worker.stop_gracefully().await;
    frozen_worker.stop_gracefully().await;
    stack.collect_rest(&mut tally).await;

    let by_killed = tally.duplicates_involving(killed);
    let by_frozen = tally.duplicates_involving(frozen);
    println!(
        "fleet on {}: {n} sent, {} duplicates ({by_killed} with a copy from the killed replica, which held at \
         most {killed_held}; {by_frozen} with a copy from the frozen one, which held at most {frozen_held} at its \
         freeze and settled {late_settled} after its resume, {late_ack_failures} acks failing), {} missing",
        stack.provider,
        tally.duplicates(),
        tally.missing().len()
    );
    assert_eq!(tally.missing(), Vec::<u64>::new(), "{}: nothing lost", stack.provider);
    assert_eq!(
        tally.unexplained_duplicates(&[killed, frozen]),
        Vec::<u64>::new(),
        "{}: repeats between healthy replicas (replica {survivor} and a replica that was not faulted)",
        stack.provider
    );
    assert!(
        by_killed <= killed_held,
        "{}: {by_killed} duplicates from the killed replica, more than it could hold ({killed_held})",
        stack.provider
    );
    stack.assert_frozen_duplicates(by_frozen, frozen_held, late_settled);
    stack.assert_source_settled().await;
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_relay_stop_kill_restart_loses_nothing() {
    require_podman_and_image();
    relay(Stack::sqs("ctr-relay", 10_000, Tuning::Bounded, &Out::Queue).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_relay_stop_kill_restart_loses_nothing() {
    require_podman_and_image();
    relay(Stack::pubsub("ctr-relay", 10_000, Tuning::Bounded, &Out::Queue).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_fleet_of_three_survives_a_kill_and_a_freeze() {
    require_podman_and_image();
    fleet(
        Stack::sqs("ctr-fleet", 30_000, Tuning::Bounded, &Out::Queue).await,
        Duration::from_secs(SQS_VISIBILITY_SECS),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_fleet_of_three_survives_a_kill_and_a_freeze() {
    require_podman_and_image();
    fleet(
        Stack::pubsub("ctr-fleet", 30_000, Tuning::Bounded, &Out::Queue).await,
        Duration::from_secs(PUBSUB_ACK_DEADLINE_SECS),
    )
    .await;
}

/// A user's config with no receive settings: an idle worker (its long poll in flight) stops on
/// `podman stop` with podman's default grace of 10 s, exit 0, instead of being SIGKILLed.
async fn idle_stop(stack: Stack) {
    let worker = Worker::start(stack.dir(), 0).await;
    // Idle: the empty source has been long-polled at least once.
    let deadline = Instant::now() + Duration::from_secs(30);
    while worker.metric("veltrix_receive_duration_seconds_count").await < 1.0 {
        assert!(Instant::now() < deadline, "{}: no receive in 30 s", stack.provider);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = worker.stop_within(None).await;
    println!(
        "{}: an idle worker with the default settings stopped in {took:?}",
        stack.provider
    );
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_idle_worker_with_default_settings_stops_within_podmans_default_grace() {
    require_podman_and_image();
    idle_stop(Stack::sqs("ctr-idle", 0, Tuning::Defaults, &Out::Queue).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_idle_worker_with_default_settings_stops_within_podmans_default_grace() {
    require_podman_and_image();
    idle_stop(Stack::pubsub("ctr-idle", 0, Tuning::Defaults, &Out::Queue).await).await;
}
