//! End-to-end latency on LocalStack: a message sent to the source queue, forwarded by the worker
//! to a target queue, received there by a long-polling consumer; p50/p99 of send → receive.
//! Contestants, in an order that rotates per run: send → receive on one queue with no worker in
//! between (what LocalStack and the SDK cost by themselves); the worker with its defaults; and
//! the worker sending every forward at once in its own call (a target that takes batches of
//! 1), which is what the default batching must not be slower than at p99 (issue 15). Also shown:
//! the 350 ms average of the system veltrix replaces (issue 7).
//!
//! Needs LocalStack on 127.0.0.1:4566 (`benches/run.sh` starts it). Run: `cargo bench --bench
//! latency` (add `-- quick` for a shorter run).

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::Client;
use common::SQS_ENDPOINT as ENDPOINT;
use serde_json::json;
use veltrix::config::load_str;
use veltrix::pipeline::settings::Settings;
use veltrix::pipeline::Worker;
use veltrix_queue::memory::MemoryQueue;
use veltrix_queue::{OutboundMessage, Publisher, QueueError};
use veltrix_sqs::{SqsSource, SqsSourceOptions, SqsTarget};

const REPLACED_SYSTEM_AVERAGE_MS: f64 = 350.0;

fn client() -> Client {
    Client::from_conf(common::sqs_config().build())
}

async fn queue(c: &Client, what: &str) -> String {
    common::sqs_queue(c, &format!("latency-{what}")).await
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// Sends `n` messages to `url` at `rate` per second, each carrying its send time.
async fn produce(c: Client, url: String, n: usize, rate: f64) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    for i in 0..n {
        tick.tick().await;
        let body = json!({"type": "order.created", "id": i, "sent_ns": now_ns(), "pad": "x".repeat(800)});
        c.send_message()
            .queue_url(&url)
            .message_body(body.to_string())
            .send()
            .await
            .unwrap();
    }
}

/// Long-polls `url` until `n` messages arrived; returns each one's send → receive latency (ms).
async fn consume(c: Client, url: String, n: usize) -> Vec<f64> {
    let mut latencies = Vec::with_capacity(n);
    while latencies.len() < n {
        let out = c
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(20)
            .send()
            .await
            .unwrap();
        let received = now_ns();
        for m in out.messages() {
            let body: serde_json::Value = serde_json::from_str(m.body().unwrap()).unwrap();
            let sent = body["sent_ns"].as_u64().unwrap();
            latencies.push((received.saturating_sub(sent)) as f64 / 1e6);
        }
        if !out.messages().is_empty() {
            common::sqs_delete(&c, &url, out.messages()).await;
        }
    }
    latencies
}

/// A target that takes one message per call, so nothing is ever batched.
struct OneAtATime(SqsTarget);

#[async_trait::async_trait]
impl Publisher for OneAtATime {
    fn describe(&self) -> String {
        self.0.describe()
    }

    fn max_batch(&self) -> usize {
        1
    }

    async fn publish(&self, batch: Vec<OutboundMessage>) -> Vec<Result<(), QueueError>> {
        self.0.publish(batch).await
    }

    fn uses_dedup_ids(&self) -> bool {
        self.0.uses_dedup_ids()
    }

    fn call_timeout(&self) -> Duration {
        self.0.call_timeout()
    }
}

/// Who carries the messages from the source queue to where they are received.
#[derive(Clone, Copy, PartialEq)]
enum Contestant {
    /// Nobody: they are received from the queue they were sent to.
    Bare,
    /// The worker with its defaults.
    Worker,
    /// The worker with a target that takes batches of 1 (send at once).
    WorkerOneAtATime,
}

const CONTESTANTS: [(Contestant, &str); 3] = [
    (Contestant::Bare, "bare send→receive on one queue"),
    (Contestant::Worker, "worker, defaults"),
    (Contestant::WorkerOneAtATime, "worker, every forward sent at once"),
];

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

async fn measure(c: &Client, n: usize, rate: f64, who: Contestant) -> (f64, f64, f64) {
    let with_worker = who != Contestant::Bare;
    let source = queue(c, "src").await;
    let arrival = if with_worker {
        queue(c, "out").await
    } else {
        source.clone()
    };
    let stop = Arc::new(Mutex::new(None));
    let worker = if with_worker {
        let config = json!({
            "source": {"type": "file", "path": "-"},
            "targets": {"dlq": {"type": "stdout"}, "out": {"type": "stdout"}},
            "pipeline": {"dead_letter": "dlq"},
            "rules": [{"name": "orders", "match": {"body": {"type": [{"prefix": "order."}]}}, "actions": [{"type": "forward", "target": "out"}]}],
        });
        let rules = load_str(std::path::Path::new("bench.json"), &config.to_string(), &|_| None)
            .unwrap()
            .rules;
        let src = SqsSource::open(
            c.clone(),
            SqsSourceOptions {
                queue_url: source.clone(),
                visibility_timeout: None,
                endpoint_url: Some(ENDPOINT.into()),
            },
        )
        .await
        .unwrap();
        let target = SqsTarget::new(c.clone(), arrival.clone(), Some(ENDPOINT.into()));
        let out: Arc<dyn Publisher> = if who == Contestant::WorkerOneAtATime {
            Arc::new(OneAtATime(target))
        } else {
            Arc::new(target)
        };
        let dlq: Arc<dyn Publisher> = Arc::new(MemoryQueue::named("dlq"));
        let settings = Settings {
            pollers: 2,
            ..Settings::default()
        };
        let w = Worker::new(
            Arc::new(src),
            rules,
            vec![("dlq".into(), dlq), ("out".into(), out)],
            0,
            settings,
        );
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        *stop.lock().unwrap() = Some(tx);
        Some(tokio::spawn(w.run(async move {
            let _ = rx.await;
        })))
    } else {
        None
    };
    let consumer = tokio::spawn(consume(c.clone(), arrival.clone(), n));
    produce(c.clone(), source.clone(), n, rate).await;
    let mut latencies = consumer.await.unwrap();
    if let Some(w) = worker {
        let _ = stop.lock().unwrap().take().unwrap().send(());
        w.await.unwrap().unwrap();
    }
    let _ = c.delete_queue().queue_url(&source).send().await;
    if with_worker {
        let _ = c.delete_queue().queue_url(&arrival).send().await;
    }
    latencies.sort_by(f64::total_cmp);
    let mean = latencies.iter().sum::<f64>() / latencies.len() as f64;
    (percentile(&latencies, 0.5), percentile(&latencies, 0.99), mean)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let quick = std::env::args().any(|a| a == "quick");
    let (n, runs) = if quick { (200, 1) } else { (500, 5) };
    let rate = 50.0;
    let rt = common::runtime();
    rt.block_on(async {
        let c = client();
        let mut results: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); CONTESTANTS.len()];
        for run in 0..runs {
            for k in 0..CONTESTANTS.len() {
                // Rotate the order per run.
                let who = (k + run) % CONTESTANTS.len();
                let r = measure(&c, n, rate, CONTESTANTS[who].0).await;
                println!(
                    "  run {run} {}: p50 {:.1} ms, p99 {:.1} ms, mean {:.1} ms",
                    CONTESTANTS[who].1, r.0, r.1, r.2
                );
                results[who].push(r);
            }
        }
        for (who, (contestant, name)) in CONTESTANTS.iter().enumerate() {
            let v = &results[who];
            let (p50, p50_lo, p50_hi) = common::spread(v.iter().map(|r| r.0).collect());
            let (p99, p99_lo, p99_hi) = common::spread(v.iter().map(|r| r.1).collect());
            let (mean, _, _) = common::spread(v.iter().map(|r| r.2).collect());
            let replaced = if *contestant == Contestant::Bare {
                String::new()
            } else {
                format!(", mean vs the replaced system's {REPLACED_SYSTEM_AVERAGE_MS} ms: {:.3}×", mean / REPLACED_SYSTEM_AVERAGE_MS)
            };
            println!(
                "localstack_latency {name}, {n} msgs at {rate}/s: p50 {p50:.1} ms ({p50_lo:.1}–{p50_hi:.1}), p99 {p99:.1} ms ({p99_lo:.1}–{p99_hi:.1}), mean {mean:.1} ms (median of {runs}){replaced}"
            );
        }
    });
}
