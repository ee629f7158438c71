//! Helpers for pipeline tests on the memory backend.
#![allow(dead_code)]

pub mod localstack;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use veltrix::config::load_str;
use veltrix::pipeline::backoff::RetryPolicy;
use veltrix::pipeline::settings::Settings;
use veltrix::pipeline::Worker;
use veltrix::rules::RuleSet;
use veltrix_queue::memory::{MemoryQueue, MemoryQueueConfig};
use veltrix_queue::{OutboundMessage, Publisher};

/// Rules parsed from TOML `[[rules]]` tables; targets `out`, `audit` and `dlq` exist and the
/// retry budget is 3 attempts.
pub fn rules(rules_toml: &str) -> Arc<RuleSet> {
    let text = format!(
        "[source]\ntype = \"file\"\npath = \"-\"\n[targets.audit]\ntype = \"stdout\"\n[targets.dlq]\ntype = \"stdout\"\n[targets.out]\ntype = \"stdout\"\n[pipeline]\ndead_letter = \"dlq\"\nretry = {{ max_attempts = 3 }}\n{rules_toml}"
    );
    load_str(Path::new("test.toml"), &text, &|_| None)
        .expect("test config is valid")
        .rules
}

/// The memory queues behind targets `audit`, `dlq`, `out` (the config's name order).
pub struct Targets {
    pub audit: MemoryQueue,
    pub dlq: MemoryQueue,
    pub out: MemoryQueue,
}

impl Targets {
    pub fn new() -> Self {
        Self {
            audit: MemoryQueue::named("audit"),
            dlq: MemoryQueue::named("dlq"),
            out: MemoryQueue::named("out"),
        }
    }

    pub fn list(&self) -> Vec<(String, Arc<dyn Publisher>)> {
        vec![
            ("audit".into(), Arc::new(self.audit.clone()) as Arc<dyn Publisher>),
            ("dlq".into(), Arc::new(self.dlq.clone())),
            ("out".into(), Arc::new(self.out.clone())),
        ]
    }
}

/// Targets `audit` (a fresh memory queue), `dlq` and `out`, in the config's name order: for
/// tests whose `out` is not a memory queue.
pub fn targets_with_out(dlq: &MemoryQueue, out: Arc<dyn Publisher>) -> Vec<(String, Arc<dyn Publisher>)> {
    vec![
        (
            "audit".into(),
            Arc::new(MemoryQueue::named("audit")) as Arc<dyn Publisher>,
        ),
        ("dlq".into(), Arc::new(dlq.clone())),
        ("out".into(), out),
    ]
}

/// One rule forwarding every body with an `n` field to target `out`.
pub const FORWARD_ALL: &str = r#"
[[rules]]
name = "all"
match = { body = { n = [{ exists = true }] } }
actions = [{ type = "forward", target = "out" }]
"#;

/// Fast settings for tests: small backoff, short waits.
pub fn settings() -> Settings {
    Settings {
        receive_wait: Duration::from_millis(100),
        retry: RetryPolicy {
            initial_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(60),
        },
        drain_timeout: Duration::from_secs(10),
        sandbox: sandbox_settings(),
        ..Settings::default()
    }
}

/// Sandbox settings that start the veltrix binary built with the tests (not the test binary).
pub fn sandbox_settings() -> veltrix::sandbox::SandboxSettings {
    veltrix::sandbox::SandboxSettings {
        program: env!("CARGO_BIN_EXE_veltrix").into(),
        ..Default::default()
    }
}

pub fn source(name: &str) -> MemoryQueue {
    MemoryQueue::new(MemoryQueueConfig::named(name))
}

pub fn worker(source: &MemoryQueue, rules: Arc<RuleSet>, targets: &Targets, settings: Settings) -> Worker {
    Worker::new(Arc::new(source.clone()), rules, targets.list(), 1, settings)
}

pub fn body_with(attrs: &[(&str, &str)], body: &str) -> OutboundMessage {
    OutboundMessage {
        body: body.to_string().into(),
        attributes: attrs.iter().copied().collect(),
        ..Default::default()
    }
}

/// Waits (in tokio time) until `cond` holds, checking every 10 ms, failing after `limit`.
pub async fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The `n` field of every JSON body in `messages`.
pub fn numbers(messages: &[veltrix_queue::memory::StoredMessage]) -> Vec<u64> {
    messages
        .iter()
        .map(|m| {
            serde_json::from_slice::<serde_json::Value>(&m.body).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

/// Runs `worker` until `done` holds (checked every 50 ms, failing after `limit`), then shuts it
/// down and returns its summary.
pub async fn run_until(
    worker: veltrix::pipeline::Worker,
    limit: Duration,
    what: &str,
    done: impl FnMut() -> bool,
) -> veltrix::pipeline::stats::Summary {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    let waited = tokio::time::timeout(limit, async {
        let mut done = done;
        while !done() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let _ = stop.send(());
    let summary = run.await.unwrap().unwrap();
    assert!(
        waited.is_ok(),
        "timed out after {limit:?} waiting until {what}: {summary}"
    );
    summary
}

/// Runs `localstack/NAME` (the emulator scripts) and requires it to succeed.
pub fn run_script(name: &str) {
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("localstack")
        .join(name);
    let status = std::process::Command::new("bash")
        .arg(&script)
        .status()
        .unwrap_or_else(|e| panic!("run localstack/{name}: {e}"));
    assert!(status.success(), "localstack/{name} failed");
}

/// Serves `app` on a fresh loopback port in the background; returns its address.
pub async fn serve_on_loopback(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Opens a Pub/Sub source on the emulator: one stream, 1,000 messages / 100 MiB outstanding,
/// held up to 600 s (`visibility`: `None` keeps the subscription's ack deadline).
pub async fn open_pubsub_source(
    admin: &veltrix_pubsub::emulator::EmulatorAdmin,
    subscription: &str,
    visibility: Option<Duration>,
) -> veltrix_pubsub::PubSubSource {
    veltrix_pubsub::PubSubSource::open(
        &admin.connection,
        veltrix_pubsub::PubSubSourceOptions {
            subscription: subscription.to_string(),
            streams: 1,
            max_outstanding_messages: 1000,
            max_outstanding_bytes: 100 << 20,
            visibility_timeout: visibility,
            max_hold: Duration::from_secs(600),
        },
    )
    .await
    .unwrap()
}

/// A target that holds every publish until [`Gated::open`] is called, then passes it on to a
/// memory queue: messages wait inside the worker, in flight, for as long as a test needs.
#[derive(Clone)]
pub struct Gated {
    inner: MemoryQueue,
    open: Arc<tokio::sync::watch::Sender<bool>>,
    held: Arc<std::sync::atomic::AtomicUsize>,
}

impl Gated {
    /// Closed at first.
    pub fn new(inner: MemoryQueue) -> Self {
        Self {
            inner,
            open: Arc::new(tokio::sync::watch::channel(false).0),
            held: Arc::default(),
        }
    }

    /// Messages inside publish calls that wait for the gate.
    pub fn held(&self) -> usize {
        self.held.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Lets every held and later publish through.
    pub fn open(&self) {
        self.open.send_replace(true);
    }
}

#[async_trait::async_trait]
impl Publisher for Gated {
    fn describe(&self) -> String {
        format!("gated {}", self.inner.describe())
    }

    fn max_batch(&self) -> usize {
        self.inner.max_batch()
    }

    async fn publish(&self, batch: Vec<OutboundMessage>) -> Vec<Result<(), veltrix_queue::QueueError>> {
        use std::sync::atomic::Ordering;
        self.held.fetch_add(batch.len(), Ordering::SeqCst);
        let mut open = self.open.subscribe();
        let _ = open.wait_for(|o| *o).await;
        self.held.fetch_sub(batch.len(), Ordering::SeqCst);
        self.inner.publish(batch).await
    }
}

/// Every message numbered in `expected` reached `out`, each exactly once.
pub fn assert_each_arrived_once(out: &MemoryQueue, expected: std::ops::Range<u64>) {
    let mut got = numbers(&out.snapshot());
    got.sort_unstable();
    assert_eq!(got, expected.collect::<Vec<_>>(), "each message exactly once");
}
