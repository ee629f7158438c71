//! The SQS source rides out a LocalStack restart. A test binary of its own: it stops and starts
//! the shared LocalStack (with the project's scripts), which would disturb tests running beside
//! it; cargo runs test binaries one after another.
//!
//! LocalStack keeps its state in memory, so a restart loses the queue and anything on it. The
//! test restarts it while the worker holds every message of the first half in flight (received,
//! its forwards held back by a gated target), so those messages can only arrive through the
//! worker; then it recreates the queue under the same name, sends the second half, and
//! requires every message of both halves exactly once.
//!
//! While LocalStack is down, receives fail transiently and the worker retries with backoff. If a
//! receive lands between the restart and the queue's re-creation, SQS answers "queue does not
//! exist", a permanent error: the worker stops with that error (as it does in production, where
//! its supervisor restarts it with backoff), and the test restarts it like a supervisor would.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use common::localstack::{self, ENDPOINT};
use common::*;
use veltrix_queue::{OutboundMessage, Publisher};
use veltrix_sqs::SqsTarget;

async fn send_range(url: &str, range: std::ops::Range<u64>) {
    let target = SqsTarget::new(localstack::client(), url.to_string(), Some(ENDPOINT.into()));
    let all: Vec<OutboundMessage> = range
        .map(|n| OutboundMessage {
            body: format!("{{\"n\": {n}}}").into(),
            ..Default::default()
        })
        .collect();
    for chunk in all.chunks(10) {
        for r in target.publish(chunk.to_vec()).await {
            r.expect("send");
        }
    }
}

/// Messages in each half (all of the first are in flight at the restart).
const FIRST_HALF: u64 = 50;

fn localstack_answers() -> bool {
    std::net::TcpStream::connect_timeout(&"127.0.0.1:4566".parse().unwrap(), Duration::from_millis(300)).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_source_rides_out_a_localstack_restart_and_loses_nothing() {
    let client = localstack::client();
    let vis = [(QueueAttributeName::VisibilityTimeout, "10".to_string())];
    let url = localstack::create_queue(&client, "restart", false, &vis).await;
    let name = url.rsplit('/').next().unwrap().to_string();
    let targets = Targets::new();
    let out = targets.out.clone();
    let gated = Gated::new(out.clone());
    let list = targets_with_out(&targets.dlq, Arc::new(gated.clone()));
    let mut run = start_worker(&url, &list).await;

    send_range(&url, 0..FIRST_HALF).await;
    // Every message of the first half received (none visible, all leased) and forwards waiting.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while localstack::depth(&client, &url).await != (0, FIRST_HALF) || gated.held() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker did not take the first half in flight: depth {:?}, {} held",
            localstack::depth(&client, &url).await,
            gated.held()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(out.is_empty(), "nothing has been forwarded yet");

    run_script("stop.sh");
    assert!(
        !localstack_answers(),
        "LocalStack still answers after localstack/stop.sh: it was not started by localstack/start.sh, so this test cannot restart it"
    );
    // With LocalStack down, the held forwards go through; their deletes fail.
    gated.open();
    wait_until(Duration::from_secs(30), "the first half forwarded", || {
        out.len() >= FIRST_HALF as usize
    })
    .await;
    run_script("start.sh");
    let client = localstack::client();
    let again = client
        .create_queue()
        .queue_name(&name)
        .attributes(QueueAttributeName::VisibilityTimeout, "10")
        .send()
        .await
        .expect("recreate the queue");
    assert_eq!(again.queue_url(), Some(url.as_str()), "same name, same URL");
    send_range(&url, FIRST_HALF..2 * FIRST_HALF).await;
    let all_arrived =
        || numbers(&out.snapshot()).into_iter().collect::<BTreeSet<u64>>().len() >= 2 * FIRST_HALF as usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut restarts = 0;
    while !all_arrived() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for the second half after the restart"
        );
        if run.worker.is_finished() {
            let error = run
                .worker
                .await
                .expect("worker task")
                .expect_err("a worker only stops on an error here");
            assert!(
                error.to_string().contains("NonExistentQueue") || error.to_string().contains("does not exist"),
                "{error}"
            );
            restarts += 1;
            run = start_worker(&url, &list).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(restarts <= 1, "one supervisor restart at most");
    let _ = run.stop.send(());
    let summary = run.worker.await.expect("worker task").expect("worker run");
    // Exactly once: the queue that held the first half is gone, so nothing came back.
    assert_each_arrived_once(&out, 0..2 * FIRST_HALF);
    assert_eq!(summary.dead_lettered, 0, "{summary}");
    localstack::delete_queue(&client, &url).await;
}

struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    worker: tokio::task::JoinHandle<Result<veltrix::pipeline::stats::Summary, veltrix::pipeline::PipelineError>>,
}

/// A worker on the queue, forwarding to `targets`' `out` (shared across restarts).
async fn start_worker(url: &str, targets: &[(String, Arc<dyn Publisher>)]) -> Running {
    let source = localstack::try_open_source(url, None).await.expect("open the source");
    let mut s = settings();
    s.receive_wait = Duration::from_secs(1);
    let worker = veltrix::pipeline::Worker::new(Arc::new(source), rules(FORWARD_ALL), targets.to_vec(), 1, s);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    Running { stop, worker }
}
