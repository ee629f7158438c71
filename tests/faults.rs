//! The fault suite: N uniquely numbered messages go through the worker under one fault each,
//! and every id is accounted for at the end: processed (once or more) or dead-lettered, never
//! missing. Runnable alone: `cargo test --release --test faults -- --nocapture` prints one
//! report row per fault (also appended to target/fault-report.md).
//!
//! Faults here: SIGKILL mid-batch and restart, SIGTERM under load (drain, then restart), the HTTP
//! handler answering 503 for a while and timing out for a while, the dead-letter target down
//! while poison arrives, and poison messages (not JSON, 1 MiB, invalid UTF-8, 100,000-deep
//! nesting). Emulator restarts: tests/pubsub_restart.rs (Pub/Sub).

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, QueueAttributeName};
use aws_sdk_sqs::Client;
use bytes::Bytes;
use common::localstack::{self, ENDPOINT};
use common::*;
use tokio::time::Instant;
use veltrix::pipeline::Worker;
use veltrix_queue::memory::{Fault, MemoryQueue, StoredMessage};
use veltrix_queue::{OutboundMessage, Publisher, QueueError};

const ID: &str = "fault.id";

/// What happened to the messages of one fault run.
struct Tally {
    fault: &'static str,
    sent: BTreeSet<u64>,
    /// Ids that reached the target, with repeats.
    processed: Vec<u64>,
    /// Ids that reached the dead-letter target, with repeats.
    dead: Vec<u64>,
}

impl Tally {
    fn report(&self) -> usize {
        let processed: BTreeSet<u64> = self.processed.iter().copied().collect();
        let dead: BTreeSet<u64> = self.dead.iter().copied().collect();
        let missing: Vec<u64> = self
            .sent
            .iter()
            .filter(|id| !processed.contains(id) && !dead.contains(id))
            .copied()
            .collect();
        let row = format!(
            "| {} | {} | {} | {} | {} | {} |",
            self.fault,
            self.sent.len(),
            processed.len(),
            self.processed.len() - processed.len() + self.dead.len() - dead.len(),
            dead.len(),
            missing.len()
        );
        println!("| fault | sent | processed | duplicates | dead-lettered | missing |\n{row}");
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fault-report.md");
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "{row}");
        }
        assert!(missing.is_empty(), "{}: missing ids {missing:?}", self.fault);
        missing.len()
    }
}

fn ids(messages: &[StoredMessage]) -> Vec<u64> {
    messages
        .iter()
        .filter_map(|m| m.attributes.get_str(ID).and_then(|v| v.parse().ok()))
        .collect()
}

fn numbered(n: u64, body: impl Into<Bytes>) -> OutboundMessage {
    OutboundMessage {
        body: body.into(),
        attributes: [(ID.to_string(), n.to_string())].into_iter().collect(),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// The worker binary on SQS (LocalStack): SIGKILL and SIGTERM.

struct SqsRun {
    client: Client,
    source: String,
    out: String,
    dlq: String,
    config: tempfile::TempDir,
}

impl SqsRun {
    async fn new(what: &str, n: u64) -> Self {
        let client = localstack::client();
        let vis = [(QueueAttributeName::VisibilityTimeout, "5".to_string())];
        let source = localstack::create_queue(&client, what, false, &vis).await;
        let out = localstack::create_queue(&client, &format!("{what}-out"), false, &[]).await;
        let dlq = localstack::create_queue(&client, &format!("{what}-dlq"), false, &[]).await;
        let target = veltrix_sqs::SqsTarget::new(client.clone(), source.clone(), Some(ENDPOINT.into()));
        let all: Vec<OutboundMessage> = (0..n).map(|i| numbered(i, format!("{{\"n\": {i}}}"))).collect();
        for chunk in all.chunks(100) {
            for r in target.publish(chunk.to_vec()).await {
                r.expect("send");
            }
        }
        let config = tempfile::tempdir().unwrap();
        std::fs::write(
            config.path().join("w.toml"),
            format!(
                "[source]\ntype = \"sqs\"\nqueue_url = \"{source}\"\nendpoint_url = \"{ENDPOINT}\"\nwait_time_secs = 1\npollers = 1\nmax_in_flight = 16\n\
                 [targets.out]\ntype = \"sqs\"\nqueue_url = \"{out}\"\nendpoint_url = \"{ENDPOINT}\"\n\
                 [targets.dlq]\ntype = \"sqs\"\nqueue_url = \"{dlq}\"\nendpoint_url = \"{ENDPOINT}\"\n\
                 [pipeline]\ndead_letter = \"dlq\"\ndrain_timeout_secs = 20\n{FORWARD_ALL}"
            ),
        )
        .unwrap();
        Self {
            client,
            source,
            out,
            dlq,
            config,
        }
    }

    /// Starts the worker binary and waits (bounded) until it logged `worker_starting`, so a
    /// signal sent afterwards reaches a running worker, not a process still starting up.
    async fn spawn_worker(&self) -> RunningWorker {
        let config = self.config.path().join("w.toml");
        let mut child = Command::new(env!("CARGO_BIN_EXE_veltrix"))
            .args(["--log-format", "json", "run", "-c", config.to_str().unwrap()])
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut pipe, &mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while !stderr.lock().unwrap().contains("\"worker_starting\"") {
            assert!(
                Instant::now() < deadline,
                "the worker did not start: {}",
                stderr.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        RunningWorker { child, stderr, reader }
    }

    /// Receives and deletes up to 100 messages waiting on `url`, adding their ids to `into`.
    async fn collect(&self, url: &str, into: &mut Vec<u64>) {
        for _ in 0..10 {
            let out = self
                .client
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .message_attribute_names("All")
                .send()
                .await
                .unwrap();
            let messages = out.messages();
            if messages.is_empty() {
                return;
            }
            let mut delete = self.client.delete_message_batch().queue_url(url);
            for (i, m) in messages.iter().enumerate() {
                if let Some(id) = m
                    .message_attributes()
                    .and_then(|a| a.get(ID))
                    .and_then(|v| v.string_value())
                    .and_then(|v| v.parse().ok())
                {
                    into.push(id);
                }
                delete = delete.entries(
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(m.receipt_handle().unwrap())
                        .build()
                        .unwrap(),
                );
            }
            delete.send().await.unwrap();
        }
    }

    /// Collects from the target and the dead-letter queue until `done` holds for the unique
    /// processed count, or `limit` passes.
    async fn collect_until(&self, tally: &mut Tally, limit: Duration, mut done: impl FnMut(usize) -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            self.collect(&self.out, &mut tally.processed).await;
            self.collect(&self.dlq, &mut tally.dead).await;
            let unique: BTreeSet<u64> = tally.processed.iter().chain(tally.dead.iter()).copied().collect();
            if done(unique.len()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: only {} of {} accounted for after {limit:?}",
                tally.fault,
                unique.len(),
                tally.sent.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// After the last worker exited: collects whatever it still wrote, until the target and the
    /// dead-letter queue are empty, so late duplicates are counted too.
    async fn collect_rest(&self, tally: &mut Tally) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.collect(&self.out, &mut tally.processed).await;
            self.collect(&self.dlq, &mut tally.dead).await;
            let out = localstack::depth(&self.client, &self.out).await;
            let dlq = localstack::depth(&self.client, &self.dlq).await;
            if out == (0, 0) && dlq == (0, 0) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: the target queues do not empty",
                tally.fault
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn cleanup(self) {
        for url in [&self.source, &self.out, &self.dlq] {
            localstack::delete_queue(&self.client, url).await;
        }
    }
}

/// The worker binary, with its stderr collected by a thread.
struct RunningWorker {
    child: Child,
    stderr: Arc<Mutex<String>>,
    reader: std::thread::JoinHandle<()>,
}

impl RunningWorker {
    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    async fn wait(self) -> (std::process::ExitStatus, String) {
        let RunningWorker {
            mut child,
            stderr,
            reader,
        } = self;
        tokio::task::spawn_blocking(move || {
            let status = child.wait().unwrap();
            reader.join().unwrap();
            let text = stderr.lock().unwrap().clone();
            (status, text)
        })
        .await
        .unwrap()
    }
}

fn accounted(tally: &Tally) -> usize {
    tally
        .processed
        .iter()
        .chain(tally.dead.iter())
        .collect::<BTreeSet<_>>()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_batch_then_restart_loses_nothing() {
    localstack::ensure_running();
    let n = 4000;
    let run = SqsRun::new("fault-kill", n).await;
    let mut tally = Tally {
        fault: "SIGKILL mid-batch, restart (SQS)",
        sent: (0..n).collect(),
        processed: Vec::new(),
        dead: Vec::new(),
    };
    let first = run.spawn_worker().await;
    run.collect_until(&mut tally, Duration::from_secs(60), |done| done >= 200)
        .await;
    first.signal("-KILL");
    let (status, _) = first.wait().await;
    assert!(!status.success(), "killed");
    assert!(
        (accounted(&tally) as u64) < n,
        "the kill came before the end of the run"
    );
    let second = run.spawn_worker().await;
    run.collect_until(&mut tally, Duration::from_secs(120), |done| done as u64 >= n)
        .await;
    second.signal("-TERM");
    let (status, stderr) = second.wait().await;
    assert!(status.success(), "{stderr}");
    run.collect_rest(&mut tally).await;
    tally.report();
    assert_eq!(
        localstack::depth(&run.client, &run.source).await,
        (0, 0),
        "nothing left on the source"
    );
    run.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_and_the_restart_repeats_nothing() {
    localstack::ensure_running();
    let n = 4000;
    let run = SqsRun::new("fault-term", n).await;
    let mut tally = Tally {
        fault: "SIGTERM under load, restart (SQS)",
        sent: (0..n).collect(),
        processed: Vec::new(),
        dead: Vec::new(),
    };
    let first = run.spawn_worker().await;
    run.collect_until(&mut tally, Duration::from_secs(60), |done| done >= 300)
        .await;
    first.signal("-TERM");
    let (status, stderr) = first.wait().await;
    assert!(status.success(), "the drain exits 0: {stderr}");
    assert!(stderr.contains("received="), "{stderr}");
    assert!(
        (accounted(&tally) as u64) < n,
        "the SIGTERM came before the end of the run"
    );
    assert_eq!(
        localstack::depth(&run.client, &run.source).await.1,
        0,
        "the drain left nothing in flight: every message it held was acked or released"
    );
    let second = run.spawn_worker().await;
    run.collect_until(&mut tally, Duration::from_secs(120), |done| done as u64 >= n)
        .await;
    second.signal("-TERM");
    let (status, stderr) = second.wait().await;
    assert!(status.success(), "{stderr}");
    run.collect_rest(&mut tally).await;
    tally.report();
    let unique: BTreeSet<u64> = tally.processed.iter().copied().collect();
    assert_eq!(
        tally.processed.len() - unique.len(),
        0,
        "a drain finishes or releases what it holds, so the restart repeats nothing"
    );
    run.cleanup().await;
}

// ---------------------------------------------------------------------------------------------
// The memory backend: an HTTP handler in trouble, the dead-letter target down, poison.

/// A handler that answers `503` (or stalls past the timeout) until `bad_until`: an outage.
struct FlakyHandler {
    bad_until: std::time::Instant,
    stall: bool,
    calls: AtomicUsize,
    seen: Mutex<Vec<u64>>,
}

async fn flaky(
    axum::extract::State(h): axum::extract::State<Arc<FlakyHandler>>,
    headers: axum::http::HeaderMap,
) -> axum::http::StatusCode {
    h.calls.fetch_add(1, Ordering::SeqCst);
    if std::time::Instant::now() < h.bad_until {
        if h.stall {
            tokio::time::sleep(Duration::from_secs(3)).await;
        } else {
            return axum::http::StatusCode::SERVICE_UNAVAILABLE;
        }
    }
    if let Some(id) = headers
        .get(format!("x-veltrix-attr-{ID}"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
    {
        h.seen.lock().unwrap().push(id);
    }
    axum::http::StatusCode::OK
}

async fn serve(handler: Arc<FlakyHandler>) -> SocketAddr {
    let app = axum::Router::new()
        .route("/events", axum::routing::post(flaky))
        .with_state(handler);
    let addr = serve_on_loopback(app).await;
    addr
}

async fn http_fault(fault: &'static str, stall: bool) {
    let n = 200u64;
    let handler = Arc::new(FlakyHandler {
        bad_until: std::time::Instant::now() + Duration::from_secs(4),
        stall,
        calls: AtomicUsize::new(0),
        seen: Mutex::default(),
    });
    let addr = serve(handler.clone()).await;
    let src = source("src");
    for i in 0..n {
        src.push(numbered(i, format!("{{\"n\": {i}}}")));
    }
    src.close();
    let dlq = MemoryQueue::named("dlq");
    let out: Arc<dyn Publisher> = Arc::new(
        veltrix::targets::http::HttpTarget::new(veltrix::targets::http::HttpTargetOptions {
            url: format!("http://{addr}/events"),
            timeout: Duration::from_secs(1),
            headers: Default::default(),
            bearer_token: None,
        })
        .unwrap(),
    );
    let mut s = settings();
    s.retry.initial_backoff = Duration::from_millis(50);
    s.retry.max_backoff = Duration::from_millis(200);
    s.max_in_flight = 32;
    let rules = rules(&FORWARD_ALL.replace("[[rules]]", "[[rules]]\nmax_attempts = 50"));
    let worker = Worker::new(Arc::new(src.clone()), rules, targets_with_out(&dlq, out), 1, s);
    let summary = tokio::time::timeout(Duration::from_secs(120), worker.run(std::future::pending()))
        .await
        .expect("the worker finishes")
        .unwrap();
    assert!(summary.retried > 0, "the fault was hit: {summary}");
    assert_eq!(summary.dead_lettered, 0, "an outage dead-letters nothing: {summary}");
    let tally = Tally {
        fault,
        sent: (0..n).collect(),
        processed: handler.seen.lock().unwrap().clone(),
        dead: ids(&dlq.snapshot()),
    };
    tally.report();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_handler_503_for_a_while_then_recovering_loses_nothing() {
    http_fault("HTTP handler 503 for 4 s, then OK", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_handler_timing_out_for_a_while_loses_nothing() {
    http_fault("HTTP handler stalls past the 1 s timeout for 4 s, then OK", true).await;
}

#[tokio::test(start_paused = true)]
async fn dead_letter_target_down_while_poison_arrives_loses_nothing() {
    let n = 100u64;
    let src = source("src");
    for i in 0..n {
        // Every tenth message is poison: not JSON, so no rule matches and it is dead-lettered.
        let body = if i % 10 == 0 {
            "not json".to_string()
        } else {
            format!("{{\"n\": {i}}}")
        };
        src.push(numbered(i, body));
    }
    src.close();
    let targets = Targets::new();
    targets.dlq.set_publish_fault(Some(Fault {
        error: QueueError::transient("dead-letter queue unavailable"),
        remaining: Some(25),
    }));
    let summary = worker(&src, rules(FORWARD_ALL), &targets, settings())
        .run(std::future::pending())
        .await
        .unwrap();
    assert!(
        summary.dead_letter_failures > 0,
        "dead-letter writes failed and were retried: {summary}"
    );
    let tally = Tally {
        fault: "dead-letter target down ×25 writes while poison arrives",
        sent: (0..n).collect(),
        processed: ids(&targets.out.snapshot()),
        dead: ids(&targets.dlq.snapshot()),
    };
    tally.report();
    assert_eq!(tally.dead.len(), 10, "each poison message dead-lettered once");
}

#[tokio::test(start_paused = true)]
async fn poison_messages_are_dead_lettered_with_reasons_and_nothing_crashes() {
    let src = source("src");
    let mut sent = BTreeSet::new();
    let mut poison: HashMap<u64, &str> = HashMap::new();
    let mut push = |id: u64, body: Bytes, kind: Option<&'static str>| {
        sent.insert(id);
        if let Some(k) = kind {
            poison.insert(id, k);
        }
        src.push(numbered(id, body));
    };
    for i in 0..50 {
        push(i, Bytes::from(format!("{{\"n\": {i}}}")), None);
    }
    push(100, Bytes::from_static(b"not json at all"), Some("not JSON"));
    // Over the default source.max_body_bytes (1 MiB): dead-lettered unparsed.
    push(
        101,
        Bytes::from(format!("{{\"n\": 101, \"pad\": \"{}\"}}", "x".repeat(1 << 20))),
        Some("over max_body_bytes"),
    );
    // Invalid UTF-8 inside a string no rule reads: the pruned decoder skips that string, so
    // the message is forwarded byte for byte (not lost, not repaired).
    push(102, Bytes::from_static(b"{\"n\": 1, \"bad\": \"\xff\xfe\"}"), None);
    push(103, Bytes::from("[".repeat(100_000)), Some("100,000-deep nesting"));
    // Valid JSON nested deeper than the decoder's limit is taken as a string body: unmatched.
    push(
        104,
        Bytes::from(format!("{}{{\"n\": 1}}{}", "[".repeat(5_000), "]".repeat(5_000))),
        Some("5,000-deep nesting"),
    );
    src.close();
    let targets = Targets::new();
    let summary = worker(&src, rules(FORWARD_ALL), &targets, settings())
        .run(std::future::pending())
        .await
        .expect("the worker survives poison");
    let dead = targets.dlq.snapshot();
    for m in &dead {
        let id: u64 = m.attributes.get_str(ID).unwrap().parse().unwrap();
        assert!(
            poison.contains_key(&id),
            "only poison is dead-lettered, not {id} ({:?})",
            m.attributes
        );
        assert!(!m.attributes["veltrix.reason"].to_string().is_empty(), "with a reason");
    }
    let tally = Tally {
        fault: "poison: not JSON, 1 MiB, invalid UTF-8, deep nesting",
        sent,
        processed: ids(&targets.out.snapshot()),
        dead: ids(&dead),
    };
    tally.report();
    assert_eq!(summary.dead_lettered as usize, poison.len(), "{summary}");
}
