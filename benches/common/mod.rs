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

/// The runtime the multi-threaded benches run on: 2 worker threads, one per core of the
/// project's machine.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The median of several runs.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median, min and max of several runs.
pub fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// LocalStack, as every SQS bench reaches it.
pub const SQS_ENDPOINT: &str = "http://127.0.0.1:4566";

/// An SQS client config for LocalStack with test credentials (add interceptors, then build).
pub fn sqs_config() -> aws_sdk_sqs::config::Builder {
    use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
    aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(SQS_ENDPOINT)
        .credentials_provider(Credentials::new("test", "test", None, None, "bench"))
}

/// A fresh, uniquely named queue `veltrix-<what>-<random>`.
pub async fn sqs_queue(c: &aws_sdk_sqs::Client, what: &str) -> String {
    c.create_queue()
        .queue_name(format!("veltrix-{what}-{:016x}", fastrand::u64(..)))
        .send()
        .await
        .expect("create queue (is LocalStack running? benches/run.sh starts it)")
        .queue_url()
        .unwrap()
        .to_string()
}

/// Sends messages `0..n` (the body of message `i` is `body(i)`) to `url` in batches of 10, from
/// 8 tasks.
pub async fn sqs_fill(c: &aws_sdk_sqs::Client, url: &str, n: usize, body: fn(usize) -> String) {
    use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (c, url, next) = (c.clone(), url.to_string(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let first = next.fetch_add(10, Ordering::SeqCst);
                if first >= n {
                    return;
                }
                let mut req = c.send_message_batch().queue_url(&url);
                for i in first..(first + 10).min(n) {
                    let entry = SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body(i))
                        .build()
                        .unwrap();
                    req = req.entries(entry);
                }
                req.send().await.expect("fill the queue");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// (visible, in flight) of a queue.
pub async fn sqs_depth(c: &aws_sdk_sqs::Client, url: &str) -> (u64, u64) {
    use aws_sdk_sqs::types::QueueAttributeName;
    let out = c
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .expect("queue attributes");
    let get = |name| {
        out.attributes()
            .and_then(|a| a.get(&name))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (
        get(QueueAttributeName::ApproximateNumberOfMessages),
        get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    )
}

/// The router benches' config: `head` (the source and the `out` and `dlq` targets), then
/// `[pipeline]` with `dead_letter = "dlq"` and `extra`, then [`ROUTER_RULES`].
pub fn router_config(head: &str, extra: &str) -> veltrix::config::Config {
    let toml = format!("{head}\n[pipeline]\ndead_letter = \"dlq\"\n{extra}\n{ROUTER_RULES}");
    load_str(std::path::Path::new("router.toml"), &toml, &|_| None).expect("the bench config is valid")
}

/// Deletes received messages in one `DeleteMessageBatch` (at most 10).
pub async fn sqs_delete(c: &aws_sdk_sqs::Client, url: &str, messages: &[aws_sdk_sqs::types::Message]) {
    use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
    let mut delete = c.delete_message_batch().queue_url(url);
    for (i, m) in messages.iter().enumerate() {
        delete = delete.entries(
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(m.receipt_handle().unwrap())
                .build()
                .unwrap(),
        );
    }
    delete.send().await.expect("delete");
}

/// What the message numbered `i` of the router benches is for: 7 in 10 forwarded, 2
/// dead-lettered, 1 dropped.
pub fn router_kind(i: usize) -> &'static str {
    match i % 10 {
        0..=6 => "forward",
        7 | 8 => "dead",
        _ => "drop",
    }
}

/// The router benches' rules (TOML): `kind` forward → target `out`, dead → dead letter, drop.
pub const ROUTER_RULES: &str = r#"
[[rules]]
name = "forward"
match = { body = { kind = ["forward"] } }
actions = [{ type = "forward", target = "out" }]

[[rules]]
name = "dead"
match = { body = { kind = ["dead"] } }
actions = [{ type = "dead_letter", reason = "bench" }]

[[rules]]
name = "drop"
match = { body = { kind = ["drop"] } }
actions = [{ type = "drop" }]
"#;
