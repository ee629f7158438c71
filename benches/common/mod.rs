//! Shared by the queue benchmarks: the worker side of "worker vs bare client loop".
#![allow(dead_code)] // each bench binary uses part of it

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use veltrix::config::load_str;
use veltrix::pipeline::settings::Settings;
use veltrix::pipeline::Worker;
use veltrix_queue::memory::MemoryQueue;
use veltrix_queue::{Publisher, Source};

/// Runs a worker on `source` with a rule that matches every order and drops it (so it acks),
/// until `n` messages were dropped; returns messages per second.
pub async fn drop_all_rate(source: Arc<dyn Source>, settings: Settings, n: usize) -> f64 {
    let config = json!({
        "source": {"type": "file", "path": "-"},
        "targets": {"dlq": {"type": "stdout"}},
        "pipeline": {"dead_letter": "dlq"},
        "rules": [{"name": "orders", "match": {"body": {"type": [{"prefix": "order."}]}}, "actions": [{"type": "drop"}]}],
    });
    let rules = load_str(std::path::Path::new("bench.json"), &config.to_string(), &|_| None)
        .unwrap()
        .rules;
    let dlq: Arc<dyn Publisher> = Arc::new(MemoryQueue::named("dlq"));
    let worker = Worker::new(source, rules, vec![("dlq".into(), dlq)], 0, settings);
    let stats = worker.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let start = Instant::now();
    let run = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    while stats.snapshot().dropped < n as u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let _ = stop.send(());
    run.await.unwrap().unwrap();
    n as f64 / secs
}

/// The median of several runs.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
