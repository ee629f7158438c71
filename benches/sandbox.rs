//! What running transforms in sandbox processes costs (issue 11).
//!
//! 1. one transform of a ~1 KB envelope: in this process (`Transform::run_bytes`, what the
//!    worker did before the sandbox) vs a sandbox round trip, one at a time (latency);
//! 2. sandbox throughput with 64 transforms submitted at once over the 2 default processes;
//! 3. the pipeline throughput bench (100 rules, memory backend, one core) with its catch-all
//!    forward plain vs through a transform, timed the same way in the same run, alternating.
//!
//! Run: `cargo bench --bench sandbox` (add `-- quick` for a shorter run).

mod common;
mod workload;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use veltrix::pipeline::settings::Settings;
use veltrix::pipeline::Worker;
use veltrix::rules::transform::Transform;
use veltrix::rules::RuleSet;
use veltrix::sandbox::{Sandbox, SandboxSettings};
use veltrix_queue::memory::MemoryQueue;
use veltrix_queue::Publisher;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TRANSFORM: &str = "{id: .body.id, source: .body.source, kind: .body[\"detail-type\"]}";

fn sandbox_settings() -> SandboxSettings {
    SandboxSettings {
        program: env!("CARGO_BIN_EXE_veltrix").into(),
        ..SandboxSettings::default()
    }
}

fn rules_100(transform: bool) -> Arc<RuleSet> {
    let mut forward = json!({"type": "forward", "target": "out"});
    if transform {
        forward["transform"] = json!(TRANSFORM);
    }
    workload::rules_100(forward)
}

fn envelope() -> Vec<u8> {
    let (_, events) = workload::workload(0, 1, true);
    let body: Value = serde_json::from_slice(&events[0]).unwrap();
    serde_json::to_vec(
        &json!({"body": body, "attributes": {}, "source": {"kind": "memory", "name": "b"}, "delivery_attempt": 1}),
    )
    .unwrap()
}

fn in_process(n: usize) -> f64 {
    let t = Transform::compile(TRANSFORM).unwrap();
    let input = envelope();
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(t.run_bytes(&input).unwrap());
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

fn sandbox_one_at_a_time(n: usize) -> f64 {
    let sandbox = Sandbox::start(&sandbox_settings(), vec![TRANSFORM.into()]).unwrap();
    let input = envelope();
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(sandbox.run_blocking(0, input.clone()).unwrap());
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

fn sandbox_concurrent(n: usize) -> f64 {
    let rt = common::runtime();
    let sandbox = Arc::new(Sandbox::start(&sandbox_settings(), vec![TRANSFORM.into()]).unwrap());
    let input = envelope();
    rt.block_on(async {
        let start = Instant::now();
        let mut done = 0;
        while done < n {
            let batch: Vec<_> = (0..64.min(n - done))
                .map(|_| {
                    let sandbox = sandbox.clone();
                    let input = input.clone();
                    tokio::spawn(async move { sandbox.run(0, input).await.unwrap() })
                })
                .collect();
            for b in batch {
                b.await.unwrap();
            }
            done += 64.min(n - done);
        }
        n as f64 / start.elapsed().as_secs_f64()
    })
}

fn pipeline(n: usize, transform: bool) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rules = rules_100(transform);
    rt.block_on(async {
        let src = MemoryQueue::named("src");
        workload::fill(&src, n);
        src.close();
        let out = MemoryQueue::named("out");
        let settings = Settings {
            max_in_flight: 1024,
            pollers: 2,
            max_pollers: 2,
            receive_wait: Duration::from_millis(50),
            sandbox: sandbox_settings(),
            ..Settings::default()
        };
        let targets: Vec<(String, Arc<dyn Publisher>)> = vec![
            ("dlq".into(), Arc::new(MemoryQueue::named("dlq"))),
            ("out".into(), Arc::new(out.clone())),
        ];
        let worker = Worker::new(Arc::new(src.clone()), rules, targets, 0, settings);
        let start = Instant::now();
        let summary = worker.run(std::future::pending()).await.unwrap();
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(summary.forwarded as usize, n);
        n as f64 / secs
    })
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let quick = std::env::args().any(|a| a == "quick");
    let n = if quick { 2_000 } else { 20_000 };
    println!(
        "transform_in_process: {:.1} us per transform (~1 KB envelope, one at a time)",
        in_process(n)
    );
    println!(
        "transform_sandbox_round_trip: {:.1} us per transform (one at a time)",
        sandbox_one_at_a_time(n)
    );
    println!(
        "transform_sandbox_throughput: {:.0} transforms/s (64 at once, 2 processes)",
        sandbox_concurrent(n)
    );
    let runs = if quick { 1 } else { 5 };
    let messages = if quick { 5_000 } else { 50_000 };
    let (mut plain, mut transformed) = (Vec::new(), Vec::new());
    for run in 0..runs {
        // Alternate which goes first.
        if run % 2 == 0 {
            plain.push(pipeline(messages, false));
            transformed.push(pipeline(messages, true));
        } else {
            transformed.push(pipeline(messages, true));
            plain.push(pipeline(messages, false));
        }
    }
    let (p, pmin, pmax) = common::spread(plain);
    let (t, tmin, tmax) = common::spread(transformed);
    println!(
        "pipeline_forward_plain: median {p:.0} msg/s (min {pmin:.0}, max {pmax:.0}) over {runs} runs of {messages}"
    );
    println!(
        "pipeline_forward_transformed_in_sandbox: median {t:.0} msg/s (min {tmin:.0}, max {tmax:.0}); {:.2}x of plain",
        t / p
    );
}
