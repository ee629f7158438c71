//! Delivery semantics of the pipeline, proven on the memory backend with paused tokio time.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use tokio::time::Instant;
use veltrix_queue::memory::{Fault, MemoryQueue, MemoryQueueConfig};
use veltrix_queue::{OutboundMessage, QueueError};

const FORWARD_ORDERS: &str = r#"
[[rules]]
name = "orders"
match = { body = { type = ["order"] } }
actions = [{ type = "forward", target = "out" }]
"#;

fn order(n: u64) -> String {
    format!("{{\"type\": \"order\", \"n\": {n}}}")
}

#[tokio::test(start_paused = true)]
async fn every_message_is_forwarded_and_acked_with_several_pollers() {
    let src = source("src");
    for n in 0..500 {
        src.push_body(order(n));
    }
    src.close();
    let targets = Targets::new();
    let mut s = settings();
    s.pollers = 4;
    s.max_in_flight = 32;
    let summary = worker(&src, rules(FORWARD_ORDERS), &targets, s)
        .run(std::future::pending())
        .await
        .unwrap();
    assert_eq!(summary.received, 500);
    assert_eq!(summary.forwarded, 500);
    assert!(src.is_empty());
    assert_eq!(src.acked(), 500);
    let got: BTreeSet<u64> = numbers(&targets.out.snapshot()).into_iter().collect();
    assert_eq!(got, (0..500).collect());
    let forwarded = &targets.out.snapshot()[0];
    assert!(forwarded.attributes["veltrix.message_id"]
        .to_string()
        .starts_with("src-"));
    assert_eq!(forwarded.attributes["veltrix.rule"], "orders");
}

#[tokio::test(start_paused = true)]
async fn no_ack_before_the_forward_succeeded() {
    let src = source("src");
    src.push_body(order(1));
    let targets = Targets::new();
    targets.out.set_publish_fault(Some(Fault {
        error: QueueError::transient("target down"),
        remaining: None,
    }));
    let w = worker(&src, rules(FORWARD_ORDERS), &targets, settings());
    // Stops at 1 s, while the message waits out its backoff in place.
    let summary = w.run(tokio::time::sleep(Duration::from_secs(1))).await.unwrap();
    assert_eq!(src.acked(), 0, "a failed forward must not ack");
    assert_eq!(src.len(), 1, "the message is still in the queue");
    assert_eq!(summary.released, 1, "released at the drain: {summary}");
}

#[tokio::test(start_paused = true)]
async fn transient_failure_is_redelivered_after_the_backoff_delay() {
    let src = source("src");
    src.push_body(order(7));
    src.close();
    let targets = Targets::new();
    targets.out.set_publish_fault(Some(Fault {
        error: QueueError::transient("503"),
        remaining: Some(1),
    }));
    let s = settings();
    let initial = s.retry.initial_backoff;
    let start = Instant::now();
    let w = worker(&src, rules(FORWARD_ORDERS), &targets, s);
    let stats = w.stats();
    let run = tokio::spawn(w.run(std::future::pending()));
    wait_until(Duration::from_secs(30), "the retry was forwarded", || {
        targets.out.len() == 1
    })
    .await;
    let elapsed = start.elapsed();
    assert!(
        elapsed >= initial / 2,
        "redelivered after {elapsed:?}, before half the backoff"
    );
    assert!(
        elapsed <= initial + Duration::from_millis(200),
        "redelivered after {elapsed:?}, later than the backoff"
    );
    let summary = run.await.unwrap().unwrap();
    // Retried in place: received once.
    assert_eq!((summary.received, summary.retried, summary.forwarded), (1, 1, 1));
    assert_eq!(stats.snapshot().dead_lettered, 0);
    assert!(src.is_empty());
}

#[tokio::test(start_paused = true)]
async fn exhausted_budget_dead_letters_with_the_envelope_attributes() {
    let src = source("src");
    src.push(body_with(&[("tenant", "acme")], &order(3)));
    src.close();
    let targets = Targets::new();
    targets.out.set_publish_fault(Some(Fault {
        error: QueueError::transient("timeout"),
        remaining: None,
    }));
    let summary = worker(&src, rules(FORWARD_ORDERS), &targets, settings())
        .run(std::future::pending())
        .await
        .unwrap();
    assert_eq!((summary.received, summary.retried, summary.dead_lettered), (1, 2, 1));
    let dl = targets.dlq.snapshot();
    assert_eq!(dl.len(), 1);
    let a = &dl[0].attributes;
    assert_eq!(dl[0].body, order(3), "the body is unchanged");
    assert_eq!(a["tenant"], "acme", "original attributes are kept");
    assert_eq!(a["veltrix.reason"], "retry_budget_exhausted");
    assert_eq!(a["veltrix.attempts"], "3");
    assert!(
        a["veltrix.error"].to_string().contains("timeout"),
        "{}",
        a["veltrix.error"]
    );
    assert_eq!(a["veltrix.source"], "memory:src");
    assert!(a["veltrix.message_id"].to_string().starts_with("src-"));
    assert!(a["veltrix.failed_at"].to_string().ends_with('Z'));
    assert!(src.is_empty());
}

#[tokio::test(start_paused = true)]
async fn dead_letter_target_down_leaves_the_message_unacked_until_it_recovers() {
    let src = source("src");
    src.push_body("{\"type\": \"unknown\"}");
    src.close();
    let targets = Targets::new();
    targets.dlq.set_publish_fault(Some(Fault {
        error: QueueError::transient("dlq down"),
        remaining: Some(2),
    }));
    let w = worker(&src, rules(FORWARD_ORDERS), &targets, settings());
    let stats = w.stats();
    let run = tokio::spawn(w.run(std::future::pending()));
    wait_until(Duration::from_secs(30), "the first dead-letter write failed", || {
        stats.snapshot().dead_letter_failures == 1
    })
    .await;
    assert_eq!(src.len(), 1, "not acked while the dead letter is not written");
    assert_eq!(src.acked(), 0);
    let summary = run.await.unwrap().unwrap();
    assert_eq!(summary.dead_letter_failures, 2);
    assert_eq!(summary.dead_lettered, 1);
    assert_eq!(targets.dlq.snapshot()[0].attributes["veltrix.reason"], "unmatched");
    assert!(src.is_empty());
}

#[tokio::test(start_paused = true)]
async fn permanent_target_error_dead_letters_at_once() {
    let src = source("src");
    src.push_body(order(1));
    src.close();
    let targets = Targets::new();
    targets.out.set_publish_fault(Some(Fault {
        error: QueueError::permanent("message too large"),
        remaining: None,
    }));
    let summary = worker(&src, rules(FORWARD_ORDERS), &targets, settings())
        .run(std::future::pending())
        .await
        .unwrap();
    assert_eq!((summary.received, summary.dead_lettered, summary.retried), (1, 1, 0));
    let a = &targets.dlq.snapshot()[0].attributes;
    assert_eq!(a["veltrix.reason"], "target_rejected");
    assert_eq!(a["veltrix.rule"], "orders");
    assert!(a["veltrix.error"].to_string().contains("message too large"));
}

#[tokio::test(start_paused = true)]
async fn undecodable_body_is_dead_lettered_and_text_is_a_string_body() {
    let src = source("src");
    src.push(OutboundMessage {
        body: vec![0x7b, 0xff, 0xfe].into(),
        ..Default::default()
    });
    src.push_body("plain text");
    src.close();
    let targets = Targets::new();
    let rs = rules(
        r#"
[[rules]]
name = "text"
match = { body = ["plain text"] }
actions = [{ type = "forward", target = "out" }]
"#,
    );
    let summary = worker(&src, rs, &targets, settings())
        .run(std::future::pending())
        .await
        .unwrap();
    assert_eq!((summary.forwarded, summary.dead_lettered), (1, 1));
    let dl = &targets.dlq.snapshot()[0];
    assert_eq!(dl.attributes["veltrix.reason"], "undecodable_body");
    assert_eq!(
        dl.body.as_ref(),
        &[0x7b, 0xff, 0xfe],
        "the dead letter keeps the exact bytes"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_finishes_in_flight_releases_the_rest_and_loses_nothing() {
    let src = source("src");
    for n in 0..200 {
        src.push_body(order(n));
    }
    let mut out_cfg = MemoryQueueConfig::named("out");
    out_cfg.call_latency = Duration::from_millis(50);
    let targets = Targets {
        out: MemoryQueue::new(out_cfg),
        ..Targets::new()
    };
    let mut s = settings();
    s.max_in_flight = 20;
    let summary = worker(&src, rules(FORWARD_ORDERS), &targets, s.clone())
        .run(tokio::time::sleep(Duration::from_millis(120)))
        .await
        .unwrap();
    assert!(
        summary.forwarded > 0 && summary.forwarded < 200,
        "stopped mid-stream: {summary}"
    );
    assert_eq!(
        src.in_flight(),
        0,
        "nothing is left leased: in-flight work finished or was released"
    );
    let forwarded: BTreeSet<u64> = numbers(&targets.out.snapshot()).into_iter().collect();
    assert_eq!(forwarded.len() as u64, summary.forwarded);
    assert_eq!(
        src.len() as u64 + summary.forwarded,
        200,
        "every message is either forwarded or still queued"
    );

    // A second worker finishes the rest: every id arrives.
    src.close();
    let summary2 = worker(&src, rules(FORWARD_ORDERS), &targets, s)
        .run(std::future::pending())
        .await
        .unwrap();
    assert_eq!(summary.forwarded + summary2.forwarded, 200);
    let all: BTreeSet<u64> = numbers(&targets.out.snapshot()).into_iter().collect();
    assert_eq!(all, (0..200).collect());
}

/// A target that takes 20 ms per call and records the most messages inside calls at once.
struct Counting {
    queue: MemoryQueue,
    inside: std::sync::atomic::AtomicUsize,
    peak: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl veltrix_queue::Publisher for Counting {
    fn describe(&self) -> String {
        "counting".into()
    }

    fn max_batch(&self) -> usize {
        10
    }

    async fn publish(&self, batch: Vec<OutboundMessage>) -> Vec<Result<(), QueueError>> {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.inside.fetch_add(batch.len(), SeqCst) + batch.len();
        self.peak.fetch_max(now, SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.inside.fetch_sub(batch.len(), SeqCst);
        self.queue.publish(batch).await
    }
}

#[tokio::test(start_paused = true)]
async fn in_flight_messages_never_exceed_the_bound() {
    let src = source("src");
    for n in 0..300 {
        src.push_body(order(n));
    }
    src.close();
    let targets = Targets::new();
    let out = std::sync::Arc::new(Counting {
        queue: targets.out.clone(),
        inside: Default::default(),
        peak: Default::default(),
    });
    let mut list = targets.list();
    list[2].1 = out.clone();
    let mut s = settings();
    s.max_in_flight = 7;
    s.pollers = 3;
    let w = veltrix::pipeline::Worker::new(std::sync::Arc::new(src.clone()), rules(FORWARD_ORDERS), list, 1, s);
    let run = tokio::spawn(w.run(std::future::pending()));
    let mut leased = 0;
    while !run.is_finished() {
        leased = leased.max(src.in_flight());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    run.await.unwrap().unwrap();
    let peak = out.peak.load(std::sync::atomic::Ordering::SeqCst);
    // Every message being sent is held, and the worker holds at most max_in_flight.
    assert!(peak <= 7, "{peak} messages being sent at once, over max_in_flight = 7");
    assert!(peak >= 5, "the bound is used: peak {peak}");
    // The queue's own count also includes settled messages whose ack is batched (at most one
    // ack batch of 10 waiting).
    assert!(leased <= 7 + 10, "{leased} messages leased at once");
    assert_eq!(targets.out.len(), 300);
}

#[tokio::test(start_paused = true)]
async fn lease_keeper_keeps_a_slow_message_from_being_redelivered() {
    let mut src_cfg = MemoryQueueConfig::named("src");
    src_cfg.visibility_timeout = Duration::from_secs(30);
    let src = MemoryQueue::new(src_cfg);
    src.push_body(order(1));
    src.close();
    let mut out_cfg = MemoryQueueConfig::named("out");
    out_cfg.call_latency = Duration::from_secs(100);
    let targets = Targets {
        out: MemoryQueue::new(out_cfg),
        ..Targets::new()
    };
    let summary = worker(&src, rules(FORWARD_ORDERS), &targets, settings())
        .run(std::future::pending())
        .await
        .unwrap();
    assert_eq!(summary.received, 1, "no redelivery while the slow forward ran");
    assert!(summary.lease_extensions >= 3, "{summary:?}");
    assert_eq!(targets.out.len(), 1);
    assert!(src.is_empty());
}

#[tokio::test(start_paused = true)]
async fn lease_is_not_extended_past_the_maximum_hold() {
    let mut src_cfg = MemoryQueueConfig::named("src");
    src_cfg.visibility_timeout = Duration::from_secs(30);
    let src = MemoryQueue::new(src_cfg);
    src.push_body(order(1));
    let mut out_cfg = MemoryQueueConfig::named("out");
    out_cfg.call_latency = Duration::from_secs(300);
    let targets = Targets {
        out: MemoryQueue::new(out_cfg),
        ..Targets::new()
    };
    let mut s = settings();
    s.max_lease = Duration::from_secs(60);
    let w = worker(&src, rules(FORWARD_ORDERS), &targets, s);
    let stats = w.stats();
    let run = tokio::spawn(w.run(tokio::time::sleep(Duration::from_secs(200))));
    wait_until(Duration::from_secs(150), "the message was redelivered", || {
        stats.snapshot().received >= 2
    })
    .await;
    run.abort();
}

#[tokio::test(start_paused = true)]
async fn ordering_key_messages_are_processed_in_order_even_across_a_retry() {
    let mut cfg = MemoryQueueConfig::named("fifo");
    cfg.fifo = true;
    let src = MemoryQueue::new(cfg);
    for n in 0..40u64 {
        let key = if n % 2 == 0 { "even" } else { "odd" };
        src.push(OutboundMessage {
            body: order(n).into(),
            ordering_key: Some(key.into()),
            ..Default::default()
        });
    }
    src.close();
    let targets = Targets::new();
    targets.out.set_publish_fault(Some(Fault {
        error: QueueError::transient("blip"),
        remaining: Some(1),
    }));
    let mut s = settings();
    s.max_in_flight = 16;
    let summary = worker(&src, rules(FORWARD_ORDERS), &targets, s)
        .run(std::future::pending())
        .await
        .unwrap();
    assert_eq!(summary.forwarded, 40);
    let got = numbers(&targets.out.snapshot());
    for parity in [0, 1] {
        let seq: Vec<u64> = got.iter().copied().filter(|n| n % 2 == parity).collect();
        let expected: Vec<u64> = (0..40).filter(|n| n % 2 == parity).collect();
        assert_eq!(seq, expected, "order kept for key {parity}");
    }
}

#[tokio::test(start_paused = true)]
async fn retry_action_backs_off_then_dead_letters() {
    let src = source("src");
    src.push_body(order(1));
    src.close();
    let targets = Targets::new();
    let rs = rules(
        r#"
[[rules]]
name = "later"
match = { body = { type = ["order"] } }
actions = [{ type = "retry" }]
"#,
    );
    let start = Instant::now();
    let summary = worker(&src, rs, &targets, settings())
        .run(std::future::pending())
        .await
        .unwrap();
    assert_eq!((summary.received, summary.retried, summary.dead_lettered), (1, 2, 1));
    assert!(
        start.elapsed() >= Duration::from_secs(1) + Duration::from_secs(2),
        "backoff was applied: {:?}",
        start.elapsed()
    );
    assert_eq!(
        targets.dlq.snapshot()[0].attributes["veltrix.reason"],
        "retry_budget_exhausted"
    );
}

#[tokio::test(start_paused = true)]
async fn fan_out_forwards_to_every_matching_rule() {
    let src = source("src");
    src.push_body(order(1));
    src.close();
    let targets = Targets::new();
    let rs = rules(
        r#"
[[rules]]
name = "orders"
match = { body = { type = ["order"] } }
actions = [{ type = "forward", target = "out", transform = "{n: .body.n, doubled: (.body.n * 2)}" }]

[[rules]]
name = "audit"
match = { body = { type = ["order"] } }
actions = [{ type = "forward", target = "audit" }]
"#,
    );
    let summary = worker(&src, rs, &targets, settings())
        .run(std::future::pending())
        .await
        .unwrap();
    assert_eq!(summary.forwarded, 1);
    assert_eq!(
        targets.out.snapshot()[0].body,
        "{\"n\":1,\"doubled\":2}",
        "jq key order, as jq prints it"
    );
    assert_eq!(targets.audit.snapshot()[0].body, order(1));
}

#[tokio::test(start_paused = true)]
async fn transient_receive_errors_are_retried() {
    let src = source("src");
    src.push_body(order(1));
    src.close();
    src.set_receive_fault(Some(Fault {
        error: QueueError::transient("connection reset"),
        remaining: Some(3),
    }));
    let targets = Targets::new();
    let summary = worker(&src, rules(FORWARD_ORDERS), &targets, settings())
        .run(std::future::pending())
        .await
        .unwrap();
    assert_eq!(summary.forwarded, 1);
}

#[tokio::test(start_paused = true)]
async fn permanent_receive_error_stops_the_worker_with_the_cause() {
    let src = source("src");
    src.set_receive_fault(Some(Fault {
        error: QueueError::permanent("queue does not exist"),
        remaining: None,
    }));
    let targets = Targets::new();
    let err = worker(&src, rules(FORWARD_ORDERS), &targets, settings())
        .run(std::future::pending())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("queue does not exist"));
}

#[tokio::test(start_paused = true)]
async fn acks_are_batched() {
    let src = source("src");
    for n in 0..100 {
        src.push_body(order(n));
    }
    src.close();
    let targets = Targets::new();
    let mut s = settings();
    s.max_in_flight = 100;
    s.ack_linger = Duration::from_millis(5);
    let summary = worker(&src, rules(FORWARD_ORDERS), &targets, s)
        .run(std::future::pending())
        .await
        .unwrap();
    assert_eq!(summary.forwarded, 100);
    assert_eq!(src.acked(), 100);
    assert!(src.ack_calls() <= 20, "100 acks took {} calls", src.ack_calls());
}
