//! Peak memory with 1,000 messages in flight (DESIGN §9: < 64 MiB RSS with 1,000 in-flight 1 KB
//! messages).
//!
//! The worker runs on the memory backend with `max_in_flight = 1000`; the target takes 3 s per
//! publish, so every message is held at once. RSS (`/proc/self/status`) is read while all 1,000
//! are in flight, against the same process's RSS just before the worker started (the baseline:
//! runtime, allocator, rules). Three runs in fresh processes would be purer; three runs in one
//! process report the high-water mark too (`VmHWM` only grows).
//!
//! Run: `cargo bench --bench memory`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use veltrix::config::load_str;
use veltrix::pipeline::settings::Settings;
use veltrix::pipeline::Worker;
use veltrix_queue::memory::{MemoryQueue, MemoryQueueConfig};
use veltrix_queue::{OutboundMessage, Publisher};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const IN_FLIGHT: usize = 1000;

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

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = common::runtime();
    let mut rows = Vec::new();
    for _ in 0..3 {
        rows.push(rt.block_on(one_run()));
    }
    let mut held: Vec<f64> = rows.iter().map(|r| r.1).collect();
    held.sort_by(f64::total_cmp);
    let median = held[1];
    println!(
        "memory in_flight={IN_FLIGHT} (1 KB bodies): RSS {median:.1} MiB while all are held (median of 3; runs {:?}), baseline before the first run {:.1} MiB, peak VmHWM {:.1} MiB; target < 64 MiB: ratio {:.2} of the target",
        rows.iter().map(|r| format!("{:.1}", r.1)).collect::<Vec<_>>(),
        rows[0].0,
        status_mib("VmHWM:"),
        status_mib("VmHWM:") / 64.0
    );
}
