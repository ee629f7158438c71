//! Fleet throughput: 1, 2 and 3 worker containers on one SQS queue (LocalStack) and on one
//! Pub/Sub subscription (the emulator), the image `deploy/build-image.sh` builds run under
//! podman exactly as tests/container.rs runs it (host network, read-only, non-root), with the
//! worker's default settings and the container tests' rules (9 in 10 messages forwarded, 1 in
//! 10 dead-lettered), in two workloads:
//! - **queue to queue**: forwards go to a queue (topic) of the same provider, which the bench
//!   reads back: the emulator is the limit;
//! - **slow handler**: forwards go to an HTTP handler on loopback that answers after
//!   [`HANDLER_DELAY`], at most [`HANDLER_CONCURRENCY`] at a time per replica
//!   (`max_concurrency`): each replica is the limit, so replicas add throughput until the
//!   emulator caps it.
//!
//! Each run publishes `n` messages to a fresh source, then times from starting the replicas
//! (all at once, as a scale-up) until every message arrived where it goes, checked byte for
//! byte, and the replicas' own metrics say all `n` are settled (acked); on SQS also until the
//! source queue reports nothing visible and nothing in flight. Runs rotate the replica counts'
//! order each round and alternate the providers. It prints medians with min–max and the
//! worker's receive and ack calls per message (from its metrics: on SQS one call is one
//! ReceiveMessage or DeleteMessageBatch request; on Pub/Sub receives and acks travel on the
//! streaming pull).
//!
//!   (with LocalStack, the Pub/Sub emulator, podman's API and the image, as scripts/test.sh sets up)
//!   cargo bench --bench fleet            # 5 rounds of both workloads (`-- queue`, `-- slow`: one;
//!                                        # `-- rounds=3`: three rounds)
//!   cargo bench --bench fleet -- quick   # smoke: 300 messages, 1 round, 2 replicas

#[path = "common/mod.rs"]
mod bench;
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/harness/containers.rs"]
mod containers;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use containers::{require_podman_and_image, Out, Stack, Tally, Tuning, Worker};

/// Replica counts, in the order of the first round.
const REPLICA_COUNTS: [usize; 3] = [1, 2, 3];
/// How long one run may take before the bench fails.
const RUN_LIMIT: Duration = Duration::from_secs(300);
/// The slow handler's answer time.
const HANDLER_DELAY: Duration = Duration::from_millis(20);
/// Requests each replica sends the slow handler at once: at most 4 / 20 ms = 200 msg/s.
const HANDLER_CONCURRENCY: u32 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Provider {
    Sqs,
    PubSub,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    QueueToQueue,
    SlowHandler,
}

/// One timed run.
struct Sample {
    msg_per_sec: f64,
    /// Receive and ack calls per message, summed over the replicas. (The worker's metrics
    /// count publishes per message, not per call: benches/router.rs counts SendMessageBatch
    /// requests in-process.)
    calls: [f64; 2],
}

/// The slow handler: answers 200 after [`HANDLER_DELAY`] and tallies what it was sent.
async fn slow_handler() -> (String, Arc<Mutex<Tally>>) {
    let tally = Arc::new(Mutex::new(Tally::new(0)));
    let seen = tally.clone();
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                tokio::time::sleep(HANDLER_DELAY).await;
                let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
                let rule = header("x-veltrix-rule").unwrap_or_default();
                seen.lock()
                    .unwrap()
                    .record_parts(header("x-veltrix-attr-seq").as_deref(), &body, &rule, false, None);
                axum::http::StatusCode::OK
            }
        }),
    );
    let addr = common::serve_on_loopback(app).await;
    (format!("http://{addr}/"), tally)
}

async fn run(provider: Provider, workload: Workload, replicas: usize, n: u64) -> Sample {
    let (forward, handled) = match workload {
        Workload::QueueToQueue => (Out::Queue, None),
        Workload::SlowHandler => {
            let (url, tally) = slow_handler().await;
            let forward = Out::Http {
                url,
                concurrency: HANDLER_CONCURRENCY,
            };
            (forward, Some(tally))
        }
    };
    let stack = match provider {
        Provider::Sqs => Stack::sqs("bench-fleet", n, Tuning::Defaults, &forward).await,
        Provider::PubSub => Stack::pubsub("bench-fleet", n, Tuning::Defaults, &forward).await,
    };
    let mut tally = Tally::new(n);
    let arrived = |tally: &Tally| tally.accounted() + handled.as_ref().map_or(0, |h| h.lock().unwrap().accounted());
    let started = Instant::now();
    let workers = futures::future::join_all((0..replicas).map(|r| Worker::start(stack.dir(), r))).await;
    loop {
        assert!(
            started.elapsed() < RUN_LIMIT,
            "{provider:?} {workload:?} x{replicas}: {} of {n} after {RUN_LIMIT:?}",
            arrived(&tally)
        );
        if stack.collect(&mut tally).await == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if arrived(&tally) < n {
            continue;
        }
        let mut settled = 0.0;
        for w in &workers {
            settled += w.metric("veltrix_messages_settled_total").await;
        }
        // SQS tells what is left on the source; on Pub/Sub the replicas' settled count is the
        // word on acks.
        let drained = stack.depth().await.is_none_or(|depth| depth == (0, 0));
        if settled >= n as f64 && drained {
            break;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let mut calls = [0.0; 2];
    for w in &workers {
        for (i, name) in [
            "veltrix_receive_duration_seconds_count",
            "veltrix_ack_duration_seconds_count",
        ]
        .iter()
        .enumerate()
        {
            calls[i] += w.metric(name).await / n as f64;
        }
    }
    // All at once: an idle SQS replica's drain waits for its long poll to return (up to
    // wait_time_secs, 20 s by default), since cancelling it could strand what it received.
    futures::future::join_all(workers.into_iter().map(Worker::stop_gracefully)).await;
    stack.collect_rest(&mut tally).await;
    if let Some(handled) = handled {
        tally.merge(std::mem::replace(&mut *handled.lock().unwrap(), Tally::new(0)));
    }
    assert_eq!(
        tally.missing(),
        Vec::<u64>::new(),
        "{provider:?} {workload:?} x{replicas}: nothing lost"
    );
    stack.cleanup().await;
    Sample {
        msg_per_sec: n as f64 / secs,
        calls,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "quick");
    // (workload, messages per run); `queue` or `slow` runs one workload only.
    let all: &[(Workload, u64)] = if quick {
        &[(Workload::QueueToQueue, 300), (Workload::SlowHandler, 300)]
    } else {
        &[(Workload::QueueToQueue, 10_000), (Workload::SlowHandler, 3_000)]
    };
    let only = |w: Workload| match w {
        Workload::QueueToQueue => !args.iter().any(|a| a == "slow"),
        Workload::SlowHandler => !args.iter().any(|a| a == "queue"),
    };
    let workloads: Vec<(Workload, u64)> = all.iter().copied().filter(|(w, _)| only(*w)).collect();
    let workloads = workloads.as_slice();
    // `rounds=N` (default 5).
    let rounds = args
        .iter()
        .find_map(|a| a.strip_prefix("rounds=")?.parse().ok())
        .unwrap_or(5);
    let (rounds, counts): (usize, &[usize]) = if quick { (1, &[2]) } else { (rounds, &REPLICA_COUNTS) };
    require_podman_and_image();
    let runtime = bench::runtime();
    let mut samples: Vec<(Provider, Workload, usize, Sample)> = Vec::new();
    runtime.block_on(async {
        for round in 0..rounds {
            let providers = if round % 2 == 0 {
                [Provider::Sqs, Provider::PubSub]
            } else {
                [Provider::PubSub, Provider::Sqs]
            };
            for provider in providers {
                for &(workload, n) in workloads {
                    for i in 0..counts.len() {
                        let replicas = counts[(i + round) % counts.len()];
                        let s = run(provider, workload, replicas, n).await;
                        println!(
                            "round {round}: {provider:?} {workload:?} x{replicas}: {:.0} msg/s, calls/msg receive {:.3} ack {:.3}",
                            s.msg_per_sec, s.calls[0], s.calls[1]
                        );
                        samples.push((provider, workload, replicas, s));
                    }
                }
            }
        }
    });
    println!("\nfleet: {rounds} round(s), worker defaults, timed from starting the replicas until all settled");
    for provider in [Provider::Sqs, Provider::PubSub] {
        for &(workload, n) in workloads {
            for &replicas in counts {
                let runs: Vec<&Sample> = samples
                    .iter()
                    .filter(|(p, w, r, _)| *p == provider && *w == workload && *r == replicas)
                    .map(|(_, _, _, s)| s)
                    .collect();
                let (median, min, max) = bench::spread(runs.iter().map(|s| s.msg_per_sec).collect());
                let call = |i: usize| bench::spread(runs.iter().map(|s| s.calls[i]).collect()).0;
                println!(
                    "{provider:?} {workload:?} ({n} msgs) x{replicas}: {median:.0} msg/s ({min:.0}-{max:.0}); calls/msg receive {:.3}, ack {:.3}",
                    call(0),
                    call(1)
                );
            }
        }
    }
}
