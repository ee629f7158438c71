//! `veltrix dlq replay` semantics on the memory backend (paused tokio time): filter, rate,
//! limit, dry run, the replay-loop guard, attribute stripping, FIFO keys, and a failing
//! destination leaving the dead letter in place.

mod common;

use std::time::Duration;

use common::body_with;
use veltrix::replay::{replay, ReplayAction, ReplayOptions, ReplayRecord, ReplaySummary};
use veltrix::rules::pattern::PatternSet;
use veltrix_queue::memory::{Fault, MemoryQueue};
use veltrix_queue::{OutboundMessage, QueueError, Received, Source};

fn dead_letter(n: u32, reason: &str, extra: &[(&str, &str)]) -> OutboundMessage {
    let mut attrs = vec![
        ("veltrix.reason", reason),
        ("veltrix.rule", "orders"),
        ("veltrix.error", "boom"),
        ("veltrix.attempts", "5"),
        ("veltrix.source", "memory:orders"),
        ("customer", "c-1"),
    ];
    attrs.extend_from_slice(extra);
    let mut m = body_with(&attrs, &format!(r#"{{"n": {n}}}"#));
    m.attributes.insert("veltrix.message_id", format!("m-{n}"));
    m
}

fn filter(json: &str) -> PatternSet {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    PatternSet::compile([("filter", &v)]).unwrap()
}

fn options() -> ReplayOptions {
    ReplayOptions {
        receive_wait: Duration::from_millis(100),
        ..ReplayOptions::default()
    }
}

async fn run(dlq: &MemoryQueue, to: &MemoryQueue, options: &ReplayOptions) -> (ReplaySummary, Vec<ReplayRecord>) {
    let mut records = Vec::new();
    let summary = replay(std::sync::Arc::new(dlq.clone()), to, options, |r| {
        records.push(r.clone())
    })
    .await
    .expect("replay");
    (summary, records)
}

/// Everything left on the dead-letter queue is visible again at once.
async fn visible_now(q: &MemoryQueue) -> usize {
    match q.receive(100, Duration::ZERO).await.unwrap() {
        Received::Messages(batch) => batch.len(),
        Received::Exhausted => 0,
    }
}

#[tokio::test(start_paused = true)]
async fn replays_matching_dead_letters_without_the_workers_attributes() {
    let dlq = MemoryQueue::named("dlq");
    let source = MemoryQueue::named("orders");
    dlq.push(dead_letter(1, "transform_failed", &[]));
    dlq.push(dead_letter(2, "unmatched", &[]));
    let mut fifo = dead_letter(3, "transform_failed", &[]);
    fifo.ordering_key = Some("group-a".into());
    dlq.push(fifo);
    let opts = ReplayOptions {
        filter: Some(filter(r#"{"attributes": {"veltrix.reason": ["transform_failed"]}}"#)),
        ..options()
    };
    let (summary, records) = run(&dlq, &source, &opts).await;
    assert_eq!(
        (summary.read, summary.replayed, summary.skipped_filter),
        (3, 2, 1),
        "{summary}"
    );
    let replayed = source.snapshot();
    assert_eq!(replayed.len(), 2);
    for m in &replayed {
        let keys: Vec<&str> = m.attributes.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            vec!["customer", "veltrix.replays"],
            "only the user's attributes and the count"
        );
        assert_eq!(m.attributes["veltrix.replays"], "1");
    }
    assert_eq!(replayed[1].ordering_key.as_deref(), Some("group-a"), "FIFO group kept");
    assert_eq!(dlq.len(), 1, "the unmatched dead letter stays");
    assert_eq!(visible_now(&dlq).await, 1, "and is visible again at once");
    assert_eq!(records[1].action, ReplayAction::SkippedFilter);
    assert_eq!(records[1].reason.as_deref(), Some("unmatched"));
}

#[tokio::test(start_paused = true)]
async fn rate_paces_publishes() {
    let dlq = MemoryQueue::named("dlq");
    let source = MemoryQueue::named("orders");
    for n in 0..6 {
        dlq.push(dead_letter(n, "unmatched", &[]));
    }
    let start = tokio::time::Instant::now();
    let opts = ReplayOptions {
        rate_per_sec: Some(10.0),
        ..options()
    };
    let (summary, _) = run(&dlq, &source, &opts).await;
    assert_eq!(summary.replayed, 6);
    // Six publishes at 10/s: the last one 0.5 s after the first (plus the final empty receive).
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(500), "{elapsed:?}");
    assert!(
        elapsed < Duration::from_millis(500) + opts.receive_wait * 2,
        "{elapsed:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn limit_stops_early_and_dry_run_moves_nothing() {
    let dlq = MemoryQueue::named("dlq");
    let source = MemoryQueue::named("orders");
    for n in 0..5 {
        dlq.push(dead_letter(n, "unmatched", &[]));
    }
    let dry = ReplayOptions {
        dry_run: true,
        ..options()
    };
    let (summary, records) = run(&dlq, &source, &dry).await;
    assert_eq!((summary.would_replay, summary.replayed), (5, 0));
    assert!(records.iter().all(|r| r.action == ReplayAction::WouldReplay));
    assert!(source.is_empty(), "a dry run publishes nothing");
    assert_eq!(visible_now(&dlq).await, 5, "and leaves every dead letter visible");

    let dlq = MemoryQueue::named("dlq2");
    for n in 0..5 {
        dlq.push(dead_letter(n, "unmatched", &[]));
    }
    let limited = ReplayOptions {
        limit: Some(2),
        ..options()
    };
    let (summary, _) = run(&dlq, &source, &limited).await;
    assert_eq!(summary.replayed, 2, "{summary}");
    assert_eq!(source.len(), 2);
    assert_eq!(dlq.len(), 3);
    assert_eq!(visible_now(&dlq).await, 3, "the rest is released, not held");
}

#[tokio::test(start_paused = true)]
async fn a_message_replayed_too_often_stays_put() {
    let dlq = MemoryQueue::named("dlq");
    let source = MemoryQueue::named("orders");
    dlq.push(dead_letter(1, "retry_budget_exhausted", &[("veltrix.replays", "3")]));
    dlq.push(dead_letter(2, "retry_budget_exhausted", &[("veltrix.replays", "2")]));
    let (summary, records) = run(&dlq, &source, &options()).await;
    assert_eq!((summary.replayed, summary.skipped_max_replays), (1, 1), "{summary}");
    assert_eq!(records[0].action, ReplayAction::SkippedMaxReplays);
    assert_eq!(records[0].replays, 3);
    assert_eq!(source.snapshot()[0].attributes["veltrix.replays"], "3");
    assert_eq!(dlq.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failing_destination_leaves_the_dead_letter_in_place() {
    let dlq = MemoryQueue::named("dlq");
    let source = MemoryQueue::named("orders");
    dlq.push(dead_letter(1, "unmatched", &[]));
    dlq.push(dead_letter(2, "unmatched", &[]));
    source.set_publish_fault(Some(Fault {
        error: QueueError::transient("503 from the source queue"),
        remaining: Some(1),
    }));
    let (summary, records) = run(&dlq, &source, &options()).await;
    assert_eq!((summary.replayed, summary.failed), (1, 1), "{summary}");
    assert_eq!(records[0].action, ReplayAction::Failed);
    assert!(records[0].error.as_deref().unwrap().contains("503"));
    assert_eq!(dlq.len(), 1, "the failed one is still a dead letter");
    assert_eq!(source.len(), 1);
}
