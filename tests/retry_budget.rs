//! Retry budgets count only a message's own failures; outages pause intake, throttling slows
//! the target down, and neither spends anything (issue 12). Memory backend, paused time: ten
//! minutes of outage run in milliseconds.
//!
//! The targets are memory queues behind a [`Scripted`] publisher that fails the messages a
//! test says, the way a handler or a provider would (transient, throttled), and records when
//! each send was tried.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::{numbers, rules, run_until, settings, source, Targets, FORWARD_ALL};
use tokio::time::Instant;
use veltrix::pipeline::settings::TargetLimits;
use veltrix::pipeline::Worker;
use veltrix_queue::memory::{MemoryQueue, MemoryQueueConfig};
use veltrix_queue::{OutboundMessage, Publisher, QueueError};

/// What a scripted target does with one message.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Accept,
    Fail,
    Throttle(Option<Duration>),
}

type Script = dyn Fn(u64, Instant) -> Answer + Send + Sync;

/// A memory queue that answers each send as the script says (by the body's `n`).
#[derive(Clone)]
struct Scripted {
    queue: MemoryQueue,
    script: Arc<Script>,
    /// (when, n, answer) of every send.
    tries: Arc<Mutex<Vec<(Instant, u64, Answer)>>>,
}

impl Scripted {
    fn new(queue: MemoryQueue, script: impl Fn(u64, Instant) -> Answer + Send + Sync + 'static) -> Self {
        Self {
            queue,
            script: Arc::new(script),
            tries: Arc::default(),
        }
    }

    fn tries(&self) -> Vec<(Instant, u64, Answer)> {
        self.tries.lock().unwrap().clone()
    }

    fn tries_between(&self, from: Instant, to: Instant) -> usize {
        self.tries().iter().filter(|(at, _, _)| *at > from && *at < to).count()
    }
}

fn n_of(m: &OutboundMessage) -> u64 {
    serde_json::from_slice::<serde_json::Value>(&m.body).unwrap()["n"]
        .as_u64()
        .unwrap()
}

#[async_trait]
impl Publisher for Scripted {
    fn describe(&self) -> String {
        "scripted".into()
    }

    fn max_batch(&self) -> usize {
        10
    }

    async fn publish(&self, batch: Vec<OutboundMessage>) -> Vec<Result<(), QueueError>> {
        let now = Instant::now();
        let mut out = Vec::new();
        for m in batch {
            let n = n_of(&m);
            let answer = (self.script)(n, now);
            self.tries.lock().unwrap().push((now, n, answer.clone()));
            out.push(match answer {
                Answer::Accept => self.queue.publish(vec![m]).await.remove(0),
                Answer::Fail => Err(QueueError::transient("connection refused")),
                Answer::Throttle(after) => Err(QueueError {
                    retry_after: after,
                    ..QueueError::throttled("429 Too Many Requests")
                }),
            });
        }
        out
    }
}

/// A worker on `source` whose target `out` is `out`; `audit` and `dlq` are plain memory queues.
fn worker_with(source: &MemoryQueue, targets: &Targets, out: &Scripted, limits: TargetLimits) -> Worker {
    let mut list = targets.list();
    list[2].1 = Arc::new(out.clone());
    let mut s = settings();
    s.retry.initial_backoff = Duration::from_millis(500);
    s.target_limits = vec![TargetLimits::default(), TargetLimits::default(), limits];
    Worker::new(Arc::new(source.clone()), rules(FORWARD_ALL), list, 1, s)
}

fn push_numbers(q: &MemoryQueue, range: std::ops::Range<u64>) {
    for n in range {
        q.push_body(format!(r#"{{"n":{n}}}"#));
    }
}

#[tokio::test(start_paused = true)]
async fn a_ten_minute_outage_dead_letters_nothing_and_pauses_intake() {
    let src = source("orders");
    push_numbers(&src, 0..50);
    let targets = Targets::new();
    let start = Instant::now();
    let recovery = start + Duration::from_secs(600);
    let out = Scripted::new(targets.out.clone(), move |_, now| {
        if now < recovery {
            Answer::Fail
        } else {
            Answer::Accept
        }
    });
    let worker = worker_with(&src, &targets, &out, TargetLimits::default());
    let receives_at_start = Arc::new(Mutex::new(None));
    let seen = receives_at_start.clone();
    let src_probe = src.clone();
    let delivered = targets.out.clone();
    let summary = run_until(worker, Duration::from_secs(1200), "all 50 are delivered", move || {
        let now = Instant::now();
        let mut seen = seen.lock().unwrap();
        if now > start + Duration::from_secs(30) && seen.is_none() {
            *seen = Some(src_probe.receive_calls());
        }
        delivered.len() == 50
    })
    .await;
    assert!(targets.dlq.is_empty(), "nothing dead-lettered: {summary}");
    let mut got = numbers(&targets.out.snapshot());
    got.sort();
    assert_eq!(got, (0..50).collect::<Vec<_>>());
    // After the first burst (every message tried once, the circuit opened), only probes: one
    // per open interval (5, 10, 20, …, 300 s: 7 intervals in 600 s).
    let probes = out.tries_between(start + Duration::from_secs(1), recovery);
    assert!(
        (5..=8).contains(&probes),
        "{probes} sends during the outage; one probe per open interval expected"
    );
    let receives_then = receives_at_start.lock().unwrap().expect("observed at 30 s");
    let receives_during = src.receive_calls() - receives_then;
    assert!(
        receives_during <= probes as u64,
        "{receives_during} receives while the circuit was open (at most one per interval)"
    );
    assert_eq!(summary.received, 50, "no message was redelivered: {summary}");
}

#[tokio::test(start_paused = true)]
async fn a_poison_message_among_healthy_ones_is_dead_lettered_alone_after_max_attempts() {
    let src = source("orders");
    push_numbers(&src, 0..40);
    let targets = Targets::new();
    let out = Scripted::new(
        targets.out.clone(),
        |n, _| {
            if n == 13 {
                Answer::Fail
            } else {
                Answer::Accept
            }
        },
    );
    // Healthy messages keep arriving while the poison one is retried.
    let feeder = {
        let src = src.clone();
        tokio::spawn(async move {
            for n in 40..100 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                src.push_body(format!(r#"{{"n":{n}}}"#));
            }
        })
    };
    let worker = worker_with(&src, &targets, &out, TargetLimits::default());
    let (dlq, delivered) = (targets.dlq.clone(), targets.out.clone());
    run_until(
        worker,
        Duration::from_secs(120),
        "99 delivered and 1 dead letter",
        move || dlq.len() == 1 && delivered.len() == 99,
    )
    .await;
    feeder.await.unwrap();
    let dead = targets.dlq.snapshot();
    assert_eq!(numbers(&dead), vec![13]);
    assert_eq!(
        dead[0].attributes.get_str("veltrix.reason"),
        Some("retry_budget_exhausted")
    );
    assert_eq!(dead[0].attributes.get_str("veltrix.attempts"), Some("3"));
    let poison_tries = out.tries().iter().filter(|(_, n, _)| *n == 13).count();
    assert_eq!(poison_tries, 3, "exactly max_attempts sends of the poison message");
}

#[tokio::test(start_paused = true)]
async fn a_failing_head_holds_its_ordering_key_and_only_the_head_is_dead_lettered() {
    let src = MemoryQueue::new(MemoryQueueConfig {
        fifo: true,
        ..MemoryQueueConfig::named("orders.fifo")
    });
    for n in 0..5u64 {
        src.push(veltrix_queue::OutboundMessage {
            body: format!(r#"{{"n":{n}}}"#).into(),
            ordering_key: Some("g".into()),
            ..Default::default()
        });
    }
    let targets = Targets::new();
    let failed_once = Arc::new(Mutex::new(std::collections::HashSet::new()));
    let out = Scripted::new(targets.out.clone(), move |n, _| {
        if n == 0 || failed_once.lock().unwrap().insert(n) {
            Answer::Fail
        } else {
            Answer::Accept
        }
    });
    let worker = worker_with(&src, &targets, &out, TargetLimits::default());
    let (dlq, delivered) = (targets.dlq.clone(), targets.out.clone());
    let summary = run_until(
        worker,
        Duration::from_secs(120),
        "4 delivered and the head dead-lettered",
        move || dlq.len() == 1 && delivered.len() == 4,
    )
    .await;
    let dead = targets.dlq.snapshot();
    assert_eq!(numbers(&dead), vec![0]);
    assert_eq!(dead[0].attributes.get_str("veltrix.attempts"), Some("3"));
    assert_eq!(numbers(&targets.out.snapshot()), vec![1, 2, 3, 4], "siblings in order");
    let head_tries = out.tries().iter().filter(|(_, n, _)| *n == 0).count();
    assert_eq!(head_tries, 3);
    assert_eq!(
        summary.received, 5,
        "held siblings were not released and redelivered: {summary}"
    );
}

#[tokio::test(start_paused = true)]
async fn throttling_slows_the_target_and_spends_nothing() {
    let src = source("orders");
    push_numbers(&src, 0..100);
    let targets = Targets::new();
    let start = Instant::now();
    let until = start + Duration::from_secs(20);
    let out = Scripted::new(targets.out.clone(), move |_, now| {
        if now < until {
            Answer::Throttle(Some(Duration::from_secs(1)))
        } else {
            Answer::Accept
        }
    });
    let worker = worker_with(&src, &targets, &out, TargetLimits::default());
    let delivered = targets.out.clone();
    run_until(worker, Duration::from_secs(300), "all 100 delivered", move || {
        delivered.len() == 100
    })
    .await;
    assert!(targets.dlq.is_empty());
    // Retry-After: 1 → about one request a second while throttled (after the first burst).
    let during = out.tries_between(start + Duration::from_millis(500), until);
    assert!(
        (10..=40).contains(&during),
        "{during} sends in the 19.5 s of throttling; the rate should follow Retry-After: 1"
    );
    // No second was busier than the limiter allows after the first.
    let tries = out.tries();
    for second in 1..20u64 {
        let from = start + Duration::from_secs(second);
        let n = tries
            .iter()
            .filter(|(at, _, _)| *at >= from && *at < from + Duration::from_secs(1))
            .count();
        assert!(n <= 3, "{n} sends in second {second} while throttled");
    }
}

#[tokio::test(start_paused = true)]
async fn a_configured_rate_and_concurrency_bound_the_target() {
    let src = source("orders");
    push_numbers(&src, 0..60);
    let targets = Targets::new();
    let out = Scripted::new(targets.out.clone(), |_, _| Answer::Accept);
    let limits = TargetLimits {
        rate_per_sec: Some(10.0),
        max_concurrency: Some(2),
        ..TargetLimits::default()
    };
    let worker = worker_with(&src, &targets, &out, limits);
    let start = Instant::now();
    let delivered = targets.out.clone();
    run_until(worker, Duration::from_secs(60), "all 60 delivered", move || {
        delivered.len() == 60
    })
    .await;
    let tries = out.tries();
    let took = tries.last().unwrap().0 - start;
    // 10 at once (the bucket's burst), then 10 a second: the last at ~5 s.
    assert!(
        took >= Duration::from_millis(4900) && took <= Duration::from_secs(7),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn releases_at_drain_and_restarts_spend_nothing() {
    let src = source("orders");
    push_numbers(&src, 0..20);
    let targets = Targets::new();
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let h = healthy.clone();
    let out = Scripted::new(targets.out.clone(), move |_, _| {
        if h.load(std::sync::atomic::Ordering::Relaxed) {
            Answer::Accept
        } else {
            Answer::Fail
        }
    });
    // The target is down: its circuit opens and the failures are forgiven, so every release
    // at a drain gives back a message with no failures of its own.
    let limits = TargetLimits::default();
    // Twelve runs that each end (SIGTERM) in the middle of the messages' retries.
    for _ in 0..12 {
        let worker = worker_with(&src, &targets, &out, limits);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(worker.run(async move {
            let _ = stopped.await;
        }));
        tokio::time::sleep(Duration::from_millis(1200)).await;
        stop.send(()).unwrap();
        run.await.unwrap().unwrap();
        assert!(targets.dlq.is_empty(), "a release at drain spent a budget");
    }
    let held = src.snapshot();
    assert_eq!(held.len(), 20);
    assert!(
        held.iter().all(|m| m.receive_count >= 6),
        "most runs received (and released) every message: {:?}",
        held.iter().map(|m| m.receive_count).collect::<Vec<_>>()
    );
    healthy.store(true, std::sync::atomic::Ordering::Relaxed);
    let worker = worker_with(&src, &targets, &out, limits);
    let delivered = targets.out.clone();
    run_until(worker, Duration::from_secs(120), "all 20 delivered", move || {
        delivered.len() == 20
    })
    .await;
    assert!(targets.dlq.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_message_s_own_failures_survive_a_restart() {
    let src = source("orders");
    push_numbers(&src, 0..10);
    let targets = Targets::new();
    let out = Scripted::new(
        targets.out.clone(),
        |n, _| {
            if n == 7 {
                Answer::Fail
            } else {
                Answer::Accept
            }
        },
    );
    // Run 1: message 7 fails at 0 s and at 0.5 s (the first failure is counted after its
    // backoff, when no outage showed), then the drain comes during the 1 s backoff.
    let worker = worker_with(&src, &targets, &out, TargetLimits::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.send(()).unwrap();
    run.await.unwrap().unwrap();
    assert_eq!(targets.out.len(), 9);
    let held = src.snapshot();
    assert_eq!(held.len(), 1);
    // The released message carries its count (the failure still waiting to be judged at the
    // drain is not counted: it could have been the start of an outage).
    let carried = held[0].attributes.get_str("veltrix.failures").map(str::to_string);
    assert_eq!(carried, Some(format!("1 {}", held[0].id)));
    // Run 2 goes on from one failure: two more and the budget of 3 is spent.
    let worker = worker_with(&src, &targets, &out, TargetLimits::default());
    let dlq = targets.dlq.clone();
    run_until(worker, Duration::from_secs(60), "message 7 dead-lettered", move || {
        dlq.len() == 1
    })
    .await;
    let dead = targets.dlq.snapshot();
    assert_eq!(numbers(&dead), vec![7]);
    assert_eq!(dead[0].attributes.get_str("veltrix.attempts"), Some("3"));
    assert_eq!(
        dead[0].attributes.get_str("veltrix.message_id"),
        Some(held[0].id.as_str())
    );
    assert!(
        !dead[0].attributes.contains_key("veltrix.failures"),
        "the carried count never leaves the worker"
    );
    let tries = out.tries().iter().filter(|(_, n, _)| *n == 7).count();
    assert_eq!(
        tries, 4,
        "2 tries before the restart, 2 after (a fresh budget would take 3)"
    );
    assert!(src.snapshot().is_empty());
}
