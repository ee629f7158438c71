//! Peak memory with 1,000 messages in flight (DESIGN §9: < 64 MiB RSS with 1,000 in-flight 1 KB
//! messages).
//!
//! The worker runs on the memory backend with `max_in_flight = 1000`; the target takes 3 s per
//! publish, so every message is held at once. RSS (`/proc/self/status`) is read while all 1,000
//! are in flight, against the same process's RSS just before the worker started (the baseline:
//! runtime, allocator, rules). Three runs in fresh processes would be purer; three runs in one
//! process report the high-water mark too (`VmHWM` only grows).
//!
//! The same on the real SQS stack (issue 15; LocalStack at 127.0.0.1:4566, which
//! `benches/run.sh` starts): the AWS SDK source with its receives, lease extensions and acks,
//! 1,000 messages of 1 KB held behind a target that takes 10 s per publish; then 256 KiB bodies
//! (1,000 × 256 KiB would be 250 MiB) under `max_in_flight_bytes = 16 MiB`, with RSS and the
//! number held sampled every 20 ms for the whole run.
//!
//! Run: `cargo bench --bench memory` (add `-- quick` for one run of each part).

mod common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use veltrix::config::load_str;
use veltrix::pipeline::settings::Settings;
use veltrix::pipeline::Worker;
use veltrix_queue::memory::{MemoryQueue, MemoryQueueConfig};
use veltrix_queue::{OutboundMessage, Publisher};
use veltrix_sqs::{SqsSource, SqsSourceOptions};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const IN_FLIGHT: usize = 1000;
/// The body limit the bench's SQS source is configured with: SQS's limit before 2025 (256 KiB).
const SQS_CLASSIC_MAX_BODY: usize = 256 * 1024;

/// A `/proc/self/status` field in MiB.
fn status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status (Linux)");
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

async fn one_run() -> (f64, f64) {
    let config = json!({
        "source": {"type": "file", "path": "-"},
        "targets": {"dlq": {"type": "stdout"}, "out": {"type": "stdout"}},
        "pipeline": {"dead_letter": "dlq"},
        "rules": [{"name": "orders", "match": {"body": {"type": [{"prefix": "order."}]}},
                   "actions": [{"type": "forward", "target": "out", "transform": "{id: .body.id, amount: .body.amount}"}]}],
    });
    let rules = load_str(std::path::Path::new("bench.json"), &config.to_string(), &|_| None)
        .unwrap()
        .rules;
    let source = MemoryQueue::named("src");
    let mut slow = MemoryQueueConfig::named("out");
    slow.call_latency = Duration::from_secs(3);
    let out = MemoryQueue::new(slow);
    let baseline = status_mib("VmRSS:");
    for i in 0..IN_FLIGHT {
        let body = json!({"type": "order.created", "id": format!("o-{i}"), "amount": i, "pad": "x".repeat(950)});
        source.push(OutboundMessage {
            body: body.to_string().into(),
            ..Default::default()
        });
    }
    source.close();
    let settings = Settings {
        max_in_flight: IN_FLIGHT,
        publish_linger: Duration::ZERO,
        sandbox: veltrix::sandbox::SandboxSettings {
            program: env!("CARGO_BIN_EXE_veltrix").into(),
            ..Default::default()
        },
        ..Settings::default()
    };
    let dlq: Arc<dyn Publisher> = Arc::new(MemoryQueue::named("dlq"));
    let worker = Worker::new(
        Arc::new(source.clone()),
        rules,
        vec![("dlq".into(), dlq), ("out".into(), Arc::new(out.clone()))],
        0,
        settings,
    );
    let run = tokio::spawn(worker.run(std::future::pending()));
    while source.in_flight() < IN_FLIGHT {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let held = status_mib("VmRSS:");
    run.await.unwrap().unwrap();
    assert_eq!(out.len(), IN_FLIGHT, "every message forwarded");
    (baseline, held)
}

/// One run of the SQS part: `n` messages with bodies of `body_bytes` in a fresh LocalStack queue,
/// received by the SDK source under `max_in_flight_bytes`, forwarded to a target that takes
/// `publish_secs` per call. Returns the RSS before the worker started, the highest RSS and the
/// most messages held at once while it ran (sampled every 20 ms).
async fn sqs_run(n: usize, body_bytes: usize, max_in_flight_bytes: usize, publish_secs: u64) -> (f64, f64, u64) {
    let c = aws_sdk_sqs::Client::from_conf(common::sqs_config().build());
    let url = common::sqs_queue(&c, "memory").await;
    sqs_fill_one_by_one(&c, &url, n, body_bytes).await;
    // Settings from a config with this SQS source, as `veltrix run` makes them (the receive
    // reservation under `max_in_flight_bytes` comes from the source's type and body limit).
    let config = json!({
        "source": {"type": "sqs", "queue_url": url, "endpoint_url": common::SQS_ENDPOINT,
                   "max_in_flight": IN_FLIGHT, "max_in_flight_bytes": max_in_flight_bytes,
                   "max_body_bytes": SQS_CLASSIC_MAX_BODY},
        "targets": {"dlq": {"type": "stdout"}, "out": {"type": "stdout"}},
        "pipeline": {"dead_letter": "dlq"},
        "rules": [{"name": "orders", "match": {"body": {"type": [{"prefix": "order."}]}},
                   "actions": [{"type": "forward", "target": "out"}]}],
    });
    let config = load_str(std::path::Path::new("bench.json"), &config.to_string(), &|_| None).expect("bench config");
    let baseline = status_mib("VmRSS:");
    let source = SqsSource::open(
        c.clone(),
        SqsSourceOptions {
            queue_url: url.clone(),
            visibility_timeout: None,
            endpoint_url: Some(common::SQS_ENDPOINT.into()),
        },
    )
    .await
    .expect("open the SQS source");
    let mut slow = MemoryQueueConfig::named("out");
    slow.call_latency = Duration::from_secs(publish_secs);
    let out = MemoryQueue::new(slow);
    let (rules, settings) = (config.rules, config.settings);
    let dlq: Arc<dyn Publisher> = Arc::new(MemoryQueue::named("dlq"));
    let worker = Worker::new(
        Arc::new(source),
        rules,
        vec![("dlq".into(), dlq), ("out".into(), Arc::new(out.clone()))],
        0,
        settings,
    );
    let stats = worker.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    let (mut peak_rss, mut peak_held) = (0f64, 0u64);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while out.len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the SQS run did not finish in 300 s"
        );
        let s = stats.snapshot();
        peak_held = peak_held.max(s.received.saturating_sub(s.forwarded));
        peak_rss = peak_rss.max(status_mib("VmRSS:"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
    run.await.unwrap().expect("the worker ran");
    assert_eq!(common::sqs_depth(&c, &url).await, (0, 0), "every message acked");
    let _ = c.delete_queue().queue_url(&url).send().await;
    (baseline, peak_rss, peak_held)
}

/// Sends `n` messages of about `body_bytes` each, one per `SendMessage` (a batch may not exceed
/// 256 KiB in all), from 8 tasks.
async fn sqs_fill_one_by_one(c: &aws_sdk_sqs::Client, url: &str, n: usize, body_bytes: usize) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (c, url, next) = (c.clone(), url.to_string(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= n {
                        return;
                    }
                    let pad = "x".repeat(body_bytes.saturating_sub(80));
                    let body = json!({"type": "order.created", "id": format!("o-{i}"), "amount": i, "pad": pad});
                    c.send_message()
                        .queue_url(&url)
                        .message_body(body.to_string())
                        .send()
                        .await
                        .expect("fill the queue (is LocalStack running? benches/run.sh starts it)");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let quick = std::env::args().any(|a| a == "quick");
    let rt = common::runtime();
    let mut rows = Vec::new();
    for _ in 0..if quick { 1 } else { 3 } {
        rows.push(rt.block_on(one_run()));
    }
    let mut held: Vec<f64> = rows.iter().map(|r| r.1).collect();
    held.sort_by(f64::total_cmp);
    let median = held[held.len() / 2];
    println!(
        "memory in_flight={IN_FLIGHT} (1 KB bodies): RSS {median:.1} MiB while all are held (median of {}; runs {:?}), baseline before the first run {:.1} MiB, peak VmHWM {:.1} MiB; target < 64 MiB: ratio {:.2} of the target",
        rows.len(),
        rows.iter().map(|r| format!("{:.1}", r.1)).collect::<Vec<_>>(),
        rows[0].0,
        status_mib("VmHWM:"),
        status_mib("VmHWM:") / 64.0
    );

    // The SQS stack, in a fresh runtime of the same process (the high-water mark above stays).
    let runs = if quick { 1 } else { 3 };
    let small: Vec<(f64, f64, u64)> = (0..runs)
        .map(|_| rt.block_on(sqs_run(IN_FLIGHT, 1024, 64 << 20, 10)))
        .collect();
    for (baseline, peak, held) in &small {
        assert_eq!(*held, IN_FLIGHT as u64, "all {IN_FLIGHT} messages held at once");
        println!(
            "memory sqs in_flight={held} (1 KB bodies, LocalStack): peak RSS {peak:.1} MiB during the run, {baseline:.1} MiB before the worker started; target < 64 MiB: ratio {:.2}",
            peak / 64.0
        );
    }
    const BIG_BODY: usize = 256 * 1024 - 1024;
    const BYTES_BOUND: usize = 16 << 20;
    // The documented worst case: the budget plus one receive's reservation (10 bodies at the
    // configured limit).
    let bound = BYTES_BOUND + veltrix_sqs::limits::MAX_BATCH * SQS_CLASSIC_MAX_BODY;
    let big: Vec<(f64, f64, u64)> = (0..runs)
        .map(|_| rt.block_on(sqs_run(200, BIG_BODY, BYTES_BOUND, 2)))
        .collect();
    for (baseline, peak, held) in &big {
        let held_mib = *held as f64 * BIG_BODY as f64 / (1 << 20) as f64;
        assert!(
            *held as usize * BIG_BODY <= bound,
            "{held} bodies of {BIG_BODY} bytes held at once, over max_in_flight_bytes = {BYTES_BOUND} plus one receive"
        );
        println!(
            "memory sqs 256 KiB bodies, max_in_flight_bytes = 16 MiB: at most {held} held at once ({held_mib:.1} MiB of bodies), peak RSS {peak:.1} MiB, {baseline:.1} MiB before the worker started (growth {:.1} MiB)",
            peak - baseline
        );
    }
}
