//! Pipeline benchmarks on the memory backend (a bench binary; criterion does not fit latency
//! distributions or multi-second network simulations).
//!
//! 1. throughput: receive → match 100 rules → forward to a memory target → ack, on one core
//!    (current-thread runtime), 50,000 pre-queued ~1 KB events;
//! 2. added latency: events pushed at a steady rate; latency from push to arrival at the target,
//!    p50/p99;
//! 3. simulated network: every source call takes 20 ms; N pollers against the N × 10 / 20 ms
//!    limit.
//!
//! Run: `cargo bench --bench pipeline` (add `-- quick` for a shorter run). Results go to
//! BENCHMARKS.md.

mod common;
mod workload;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::json;
use veltrix::pipeline::settings::Settings;
use veltrix::pipeline::Worker;
use veltrix::rules::RuleSet;
use veltrix_queue::memory::{MemoryQueue, MemoryQueueConfig};
use veltrix_queue::{OutboundMessage, Publisher, QueueError};

/// mimalloc: the worker allocates many small, short-lived objects per message (parsed values,
/// attribute maps); glibc malloc costs measurably more (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SENT_AT: &str = "bench.sent_ns";

/// 99 workload rules that drop, plus one catch-all that forwards to `out`.
fn rules_100() -> Arc<RuleSet> {
    workload::rules_100(json!({"type": "forward", "target": "out"}))
}

/// A target that records the latency of each message from its `bench.sent_ns` attribute.
struct Recorder {
    base: Instant,
    latencies_ns: Mutex<Vec<u64>>,
}

#[async_trait]
impl Publisher for Recorder {
    fn describe(&self) -> String {
        "recorder".into()
    }
    fn max_batch(&self) -> usize {
        100
    }
    async fn publish(&self, batch: Vec<OutboundMessage>) -> Vec<Result<(), QueueError>> {
        let now = self.base.elapsed().as_nanos() as u64;
        let mut l = self.latencies_ns.lock().unwrap();
        for m in &batch {
            if let Some(sent) = m.attributes.get_str(SENT_AT).and_then(|s| s.parse::<u64>().ok()) {
                l.push(now.saturating_sub(sent));
            }
        }
        batch.iter().map(|_| Ok(())).collect()
    }
}

/// A target that counts what it is sent and keeps nothing, so the throughput runs time the
/// worker and not a sink that grows by 50,000 stored messages per run.
#[derive(Default)]
struct Counter {
    messages: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl Publisher for Counter {
    fn describe(&self) -> String {
        "counter".into()
    }
    fn max_batch(&self) -> usize {
        veltrix_queue::memory::MAX_PUBLISH_BATCH
    }
    async fn publish(&self, batch: Vec<OutboundMessage>) -> Vec<Result<(), QueueError>> {
        self.messages
            .fetch_add(batch.len(), std::sync::atomic::Ordering::Relaxed);
        batch.iter().map(|_| Ok(())).collect()
    }
}

fn settings(max_in_flight: usize, pollers: usize) -> Settings {
    Settings {
        max_in_flight,
        pollers,
        max_pollers: pollers,
        receive_wait: Duration::from_millis(50),
        ..Settings::default()
    }
}

fn targets(out: Arc<dyn Publisher>) -> Vec<(String, Arc<dyn Publisher>)> {
    vec![("dlq".into(), Arc::new(MemoryQueue::named("dlq"))), ("out".into(), out)]
}

/// CPU time of the calling thread (excludes time the VM or other processes took from it).
fn thread_cpu_secs() -> f64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `t` is a valid timespec for the call to write.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

fn throughput(n: usize) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rules = rules_100();
    rt.block_on(async {
        let src = MemoryQueue::named("src");
        workload::fill(&src, n);
        src.close();
        let out = Arc::new(Counter::default());
        let worker = Worker::new(Arc::new(src.clone()), rules, targets(out.clone()), 0, settings(1024, 2));
        let start = Instant::now();
        let cpu_start = thread_cpu_secs();
        let summary = worker.run(std::future::pending()).await.unwrap();
        let secs = start.elapsed().as_secs_f64();
        if std::env::var_os("PIPELINE_CPU_TIME").is_some() {
            eprintln!("cpu {:.0}", n as f64 / (thread_cpu_secs() - cpu_start));
        }
        assert_eq!(summary.forwarded as usize, n);
        assert_eq!(out.messages.load(std::sync::atomic::Ordering::Relaxed), n);
        n as f64 / secs
    })
}

fn latency(rate_per_sec: u64, secs: u64) -> (f64, f64, f64, usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rules = rules_100();
    let (_, events) = workload::workload(0, 2000, true);
    rt.block_on(async {
        let base = Instant::now();
        let recorder = Arc::new(Recorder {
            base,
            latencies_ns: Mutex::default(),
        });
        let src = MemoryQueue::named("src");
        let worker = Worker::new(
            Arc::new(src.clone()),
            rules,
            targets(recorder.clone()),
            0,
            settings(1024, 2),
        );
        let run = tokio::spawn(worker.run(std::future::pending()));
        let total = rate_per_sec * secs;
        let tick = Duration::from_millis(1);
        let per_tick = (rate_per_sec / 1000).max(1);
        let mut sent = 0u64;
        let mut interval = tokio::time::interval(tick);
        while sent < total {
            interval.tick().await;
            for _ in 0..per_tick {
                let mut attributes = veltrix_queue::Attributes::new();
                attributes.insert(SENT_AT, (base.elapsed().as_nanos() as u64).to_string());
                src.push(OutboundMessage {
                    body: events[sent as usize % events.len()].clone().into(),
                    attributes,
                    ..Default::default()
                });
                sent += 1;
            }
        }
        src.close();
        run.await.unwrap().unwrap();
        let mut l = recorder.latencies_ns.lock().unwrap().clone();
        l.sort_unstable();
        let pct = |p: f64| l[((l.len() as f64 * p) as usize).min(l.len() - 1)] as f64 / 1e6;
        (pct(0.5), pct(0.99), pct(0.999), l.len())
    })
}

fn simulated_network(pollers: usize, secs: f64) -> f64 {
    let rt = common::runtime();
    let rules = rules_100();
    rt.block_on(async {
        let mut cfg = MemoryQueueConfig::named("src");
        cfg.call_latency = Duration::from_millis(20);
        let src = MemoryQueue::new(cfg);
        let n = (pollers as f64 * 500.0 * secs * 1.5) as usize + 1000;
        workload::fill(&src, n);
        let out = MemoryQueue::named("out");
        let worker = Worker::new(
            Arc::new(src.clone()),
            rules,
            targets(Arc::new(out.clone())),
            0,
            settings(pollers * 40, pollers),
        );
        let stats = worker.stats();
        let run = tokio::spawn(worker.run(tokio::time::sleep(Duration::from_secs_f64(secs + 1.0))));
        tokio::time::sleep(Duration::from_secs(1)).await; // warm-up
        let before = stats.snapshot().forwarded;
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        let done = stats.snapshot().forwarded - before;
        run.await.unwrap().unwrap();
        done as f64 / secs
    })
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs = if quick { 1 } else { 5 };
    let n = if quick { 10_000 } else { 50_000 };
    // A first run faults in the allocator's pages and warms the caches; it is not counted.
    throughput(n);
    let tputs: Vec<f64> = (0..runs).map(|_| throughput(n)).collect();
    println!(
        "pipeline_throughput_1core: median {:.0} msg/s over {runs} runs of {n} (runs: {:?})",
        common::median(tputs.clone()),
        tputs.iter().map(|t| *t as u64).collect::<Vec<_>>()
    );
    if std::env::args().any(|a| a == "throughput") {
        return; // only the throughput runs (for profiling)
    }

    let (p50, p99, p999, count) = latency(if quick { 5_000 } else { 20_000 }, if quick { 1 } else { 3 });
    println!("pipeline_added_latency: p50 {p50:.3} ms, p99 {p99:.3} ms, p99.9 {p999:.3} ms over {count} messages");

    for pollers in [1usize, 4, 16, 64] {
        let limit = pollers as f64 * 10.0 / 0.020;
        let got = simulated_network(pollers, if quick { 1.0 } else { 3.0 });
        println!(
            "simulated_20ms_network pollers={pollers}: {got:.0} msg/s, limit {limit:.0} msg/s, ratio {:.2}",
            got / limit
        );
    }
}
