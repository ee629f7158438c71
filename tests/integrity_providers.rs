//! Integrity (issue 11) against LocalStack and the Pub/Sub emulator, with the worker binary
//! where signals and readiness are the point: dead letters that fit, FIFO de-duplication ids,
//! visibility 0, bounded shutdown (a receive under way at the signal, a second signal, an
//! endpoint that stops answering), readiness of a failing Pub/Sub stream, exactly-once acks.

mod common;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use bytes::Bytes;
use common::localstack::{self, ENDPOINT};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use veltrix_pubsub::emulator::{EmulatorAdmin, SubscriptionSpec};
use veltrix_pubsub::PubSubTarget;
use veltrix_queue::memory::MemoryQueue;
use veltrix_queue::{OutboundMessage, Publisher, Received, Source};
use veltrix_sqs::SqsTarget;

/// The worker binary, running.
struct Running {
    child: Child,
    stderr: Arc<Mutex<String>>,
    metrics: String,
}

impl Running {
    /// Starts `veltrix run` on `config` with its metrics on a free port; waits until ready.
    async fn start(config: &std::path::Path) -> Running {
        Self::start_with(config, &[]).await
    }

    /// [`Running::start`] with more `run` arguments.
    async fn start_with(config: &std::path::Path, extra: &[&str]) -> Running {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let metrics = format!("127.0.0.1:{port}");
        let mut child = Command::new(env!("CARGO_BIN_EXE_veltrix"))
            .args([
                "--log-format",
                "json",
                "run",
                "-c",
                config.to_str().unwrap(),
                "--metrics-addr",
                &metrics,
            ])
            .args(extra)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut pipe, &mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let running = Running { child, stderr, metrics };
        running.wait_ready(Duration::from_secs(30), 200).await;
        running
    }

    async fn readyz(&self) -> Option<(u16, String)> {
        let url = format!("http://{}/readyz", self.metrics);
        let r = reqwest::get(&url).await.ok()?;
        Some((r.status().as_u16(), r.text().await.unwrap_or_default()))
    }

    /// Waits until `/readyz` answers `status`; returns its body.
    async fn wait_ready(&self, limit: Duration, status: u16) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some((s, body)) = self.readyz().await {
                if s == status {
                    return body;
                }
            }
            assert!(
                Instant::now() < deadline,
                "/readyz never answered {status}: {}",
                self.stderr.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal}");
    }

    /// Waits (bounded) for the process to exit; returns its exit code and how long it took.
    async fn exit_within(&mut self, limit: Duration) -> (Option<i32>, Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), started.elapsed());
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                panic!(
                    "the worker did not exit within {limit:?}: {}",
                    self.stderr.lock().unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

async fn queue(what: &str, visibility_secs: u64) -> String {
    localstack::create_queue(
        &localstack::client(),
        what,
        false,
        &[(QueueAttributeName::VisibilityTimeout, visibility_secs.to_string())],
    )
    .await
}

async fn send(url: &str, bodies: &[String]) {
    let client = localstack::client();
    for b in bodies {
        client
            .send_message()
            .queue_url(url)
            .message_body(b)
            .send()
            .await
            .unwrap();
    }
}

fn sqs_source(url: &str, endpoint: &str) -> String {
    format!("[source]\ntype = \"sqs\"\nqueue_url = \"{url}\"\nendpoint_url = \"{endpoint}\"\n")
}

/// Messages visible and in flight on `url`, once they settle to `want` (bounded).
async fn wait_depth(url: &str, want: (u64, u64), limit: Duration) {
    let client = localstack::client();
    let deadline = Instant::now() + limit;
    loop {
        let depth = localstack::depth(&client, url).await;
        if depth == want {
            return;
        }
        assert!(Instant::now() < deadline, "depth {depth:?}, expected {want:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_message_just_under_the_sqs_limit_is_dead_lettered_with_a_trimmed_envelope() {
    let dlq_url = queue("fit-dlq", 30).await;
    let src = source("src");
    // 1 MiB less 180 bytes: the full envelope (~200 bytes) does not fit, a smaller one does.
    let body = format!("unmatched {}", "x".repeat(1024 * 1024 - 180 - 10));
    src.push_body(body.clone());
    src.close();
    let dlq: Arc<dyn Publisher> = Arc::new(SqsTarget::new(
        localstack::client(),
        dlq_url.clone(),
        Some(ENDPOINT.into()),
    ));
    let worker = veltrix::pipeline::Worker::new(
        Arc::new(src.clone()),
        rules(FORWARD_ALL),
        vec![
            ("audit".into(), Arc::new(MemoryQueue::named("audit"))),
            ("dlq".into(), dlq),
            ("out".into(), Arc::new(MemoryQueue::named("out"))),
        ],
        1,
        settings(),
    );
    let summary = worker.run(std::future::pending()).await.unwrap();
    assert_eq!(summary.dead_lettered, 1, "{summary}");
    assert!(
        summary.dead_letter_failures >= 1,
        "the full envelope was refused: {summary}"
    );
    let reader = localstack::try_open_source(&dlq_url, None).await.unwrap();
    let Received::Messages(got) = reader.receive(10, Duration::from_secs(5)).await.unwrap() else {
        panic!("no dead letter")
    };
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, Bytes::from(body), "the body is whole");
    assert_eq!(got[0].attributes["veltrix.reason"], "unmatched");
    assert!(got[0].attributes["veltrix.trimmed"]
        .to_string()
        .contains("veltrix.error"));
    localstack::delete_queue(&localstack::client(), &dlq_url).await;
}

#[tokio::test]
async fn two_forwards_of_one_message_to_one_fifo_queue_both_arrive() {
    let client = localstack::client();
    let fifo = localstack::create_queue(&client, "dedup", true, &[]).await;
    let src = source("src");
    src.push_body("{\"n\": 1}");
    src.close();
    let target: Arc<dyn Publisher> = Arc::new(SqsTarget::new(client.clone(), fifo.clone(), Some(ENDPOINT.into())));
    let worker = veltrix::pipeline::Worker::new(
        Arc::new(src.clone()),
        rules(
            r#"
[[rules]]
name = "twice"
match = { body = { n = [1] } }
actions = [
  { type = "forward", target = "out", transform = "{copy: 1}" },
  { type = "forward", target = "out", transform = "{copy: 2}" },
]
"#,
        ),
        vec![
            ("audit".into(), Arc::new(MemoryQueue::named("audit"))),
            ("dlq".into(), Arc::new(MemoryQueue::named("dlq"))),
            ("out".into(), target),
        ],
        1,
        settings(),
    );
    let summary = worker.run(std::future::pending()).await.unwrap();
    assert_eq!(summary.forwarded, 1, "{summary}");
    let out = client
        .receive_message()
        .queue_url(&fifo)
        .max_number_of_messages(10)
        .wait_time_seconds(2)
        .send()
        .await
        .unwrap();
    let mut bodies: Vec<&str> = out.messages().iter().map(|m| m.body().unwrap()).collect();
    bodies.sort();
    assert_eq!(
        bodies,
        ["{\"copy\":1}", "{\"copy\":2}"],
        "SQS did not drop one as a duplicate"
    );
    localstack::delete_queue(&client, &fifo).await;
}

#[tokio::test]
async fn a_queue_with_visibility_zero_is_refused_with_the_reason() {
    let url = queue("vis0", 0).await;
    let e = localstack::try_open_source(&url, None).await.err().expect("refused");
    assert!(e.message.contains("visibility timeout of 0 s"), "{e}");
    assert!(e.message.contains("visibility_timeout_secs"), "{e}");
    let ok = localstack::try_open_source(&url, Some(Duration::from_secs(30))).await;
    assert!(ok.is_ok(), "an explicit visibility timeout is accepted");
    localstack::delete_queue(&localstack::client(), &url).await;
}

#[tokio::test]
async fn messages_a_long_poll_brings_after_sigterm_are_released_not_hidden() {
    let url = queue("late", 300).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("w.toml");
    std::fs::write(
        &config,
        format!(
            "{}wait_time_secs = 20\n[targets.dlq]\ntype = \"file\"\npath = \"dlq.jsonl\"\n[targets.out]\ntype = \"http\"\nurl = \"http://127.0.0.1:9/never\"\n[pipeline]\ndead_letter = \"dlq\"\n{FORWARD_ALL}",
            sqs_source(&url, ENDPOINT)
        ),
    )
    .unwrap();
    let mut worker = Running::start(&config).await;
    // Ready means the poller is in its 20 s long poll.
    tokio::time::sleep(Duration::from_secs(2)).await;
    worker.signal("TERM");
    send(&url, &(0..3).map(|n| format!("{{\"n\": {n}}}")).collect::<Vec<_>>()).await;
    let (code, _) = worker.exit_within(Duration::from_secs(40)).await;
    assert_eq!(code, Some(0), "{}", worker.stderr.lock().unwrap());
    // Visible again at once, not after the 300 s visibility timeout.
    wait_depth(&url, (3, 0), Duration::from_secs(5)).await;
    localstack::delete_queue(&localstack::client(), &url).await;
}

/// An HTTP handler that holds every request for a minute.
async fn slow_handler() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = seen.clone();
    let app = axum::Router::new().route(
        "/slow",
        axum::routing::post(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(60)).await;
                "late"
            }
        }),
    );
    let url = format!("http://{}/slow", serve_on_loopback(app).await);
    (url, seen)
}

#[tokio::test]
async fn a_second_sigterm_releases_held_messages_and_exits_at_once() {
    let url = queue("abort", 300).await;
    send(&url, &(0..5).map(|n| format!("{{\"n\": {n}}}")).collect::<Vec<_>>()).await;
    let (handler, seen) = slow_handler().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("w.toml");
    std::fs::write(
        &config,
        format!(
            "{}wait_time_secs = 1\n[targets.dlq]\ntype = \"file\"\npath = \"dlq.jsonl\"\n[targets.out]\ntype = \"http\"\nurl = \"{handler}\"\ntimeout_ms = 120000\n[pipeline]\ndead_letter = \"dlq\"\ndrain_timeout_secs = 60\n{FORWARD_ALL}",
            sqs_source(&url, ENDPOINT)
        ),
    )
    .unwrap();
    let mut worker = Running::start(&config).await;
    wait_until(Duration::from_secs(30), "the handler holds all 5", || {
        seen.load(Ordering::SeqCst) >= 5
    })
    .await;
    worker.signal("TERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
    worker.signal("TERM");
    let (code, took) = worker.exit_within(Duration::from_secs(10)).await;
    assert_eq!(code, Some(0), "{}", worker.stderr.lock().unwrap());
    assert!(
        took < Duration::from_secs(5),
        "the second signal ends the 60 s drain at once: {took:?}"
    );
    let log = worker.stderr.lock().unwrap().clone();
    assert!(log.contains("\"drain_aborted\""), "{log}");
    wait_depth(&url, (5, 0), Duration::from_secs(5)).await;
    localstack::delete_queue(&localstack::client(), &url).await;
}

/// A TCP proxy to LocalStack that can stop answering while keeping connections open.
async fn black_hole_proxy() -> (String, Arc<AtomicBool>) {
    let hole = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let flag = hole.clone();
    tokio::spawn(async move {
        loop {
            let (mut client, _) = listener.accept().await.unwrap();
            let flag = flag.clone();
            tokio::spawn(async move {
                let Ok(mut upstream) = tokio::net::TcpStream::connect("127.0.0.1:4566").await else {
                    return;
                };
                let (mut cr, mut cw) = client.split();
                let (mut ur, mut uw) = upstream.split();
                let mut a = [0u8; 16384];
                let mut b = [0u8; 16384];
                loop {
                    tokio::select! {
                        n = cr.read(&mut a) => match n {
                            Ok(0) | Err(_) => return,
                            Ok(n) if !flag.load(Ordering::SeqCst) => { if uw.write_all(&a[..n]).await.is_err() { return } }
                            Ok(_) => {}
                        },
                        n = ur.read(&mut b) => match n {
                            Ok(0) | Err(_) => return,
                            Ok(n) if !flag.load(Ordering::SeqCst) => { if cw.write_all(&b[..n]).await.is_err() { return } }
                            Ok(_) => {}
                        },
                    }
                }
            });
        }
    });
    (addr, hole)
}

#[tokio::test]
async fn an_endpoint_that_stops_answering_makes_the_worker_unready_and_shutdown_stays_bounded() {
    let url = queue("hole", 30).await;
    let (proxy, hole) = black_hole_proxy().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("w.toml");
    std::fs::write(
        &config,
        format!(
            "{}wait_time_secs = 1\n[targets.dlq]\ntype = \"file\"\npath = \"dlq.jsonl\"\n[pipeline]\ndead_letter = \"dlq\"\ndrain_timeout_secs = 2\n",
            sqs_source(&url, &proxy)
        ),
    )
    .unwrap();
    let mut worker = Running::start(&config).await;
    hole.store(true, Ordering::SeqCst);
    let why = worker.wait_ready(Duration::from_secs(40), 503).await;
    assert!(why.contains("not ready"), "{why}");
    worker.signal("TERM");
    let (code, took) = worker.exit_within(Duration::from_secs(30)).await;
    assert_eq!(code, Some(0), "{}", worker.stderr.lock().unwrap());
    let bound = Duration::from_secs(2) + veltrix::pipeline::DRAIN_GRACE + Duration::from_secs(3);
    assert!(took <= bound, "drain + grace bound the exit: {took:?} > {bound:?}");
    localstack::delete_queue(&localstack::client(), &url).await;
}

#[tokio::test]
async fn a_pubsub_stream_that_fails_for_good_makes_the_worker_unready() {
    let admin = EmulatorAdmin::connect().await.unwrap();
    let (_, subscription) = admin.topic_with_subscription("gone", |s| s).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("w.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\ntype = \"pubsub\"\nsubscription = \"{subscription}\"\nendpoint = \"{}\"\n[targets.dlq]\ntype = \"file\"\npath = \"dlq.jsonl\"\n[pipeline]\ndead_letter = \"dlq\"\n",
            veltrix_pubsub::emulator::endpoint()
        ),
    )
    .unwrap();
    let mut worker = Running::start(&config).await;
    admin.delete_subscription(&subscription).await.unwrap();
    let why = worker.wait_ready(Duration::from_secs(60), 503).await;
    assert!(why.contains("source failing"), "{why}");
    worker.signal("TERM");
    let (code, _) = worker.exit_within(Duration::from_secs(30)).await;
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn acks_after_the_lease_ended_are_failures_the_worker_counts() {
    let admin = EmulatorAdmin::connect().await.unwrap();
    let (topic, subscription) = admin.topic_with_subscription("late-ack", |s| s).await.unwrap();
    let target = PubSubTarget::open(&admin.connection, &topic).await.unwrap();
    for r in target
        .publish(vec![OutboundMessage {
            body: Bytes::from_static(b"x"),
            ..Default::default()
        }])
        .await
    {
        r.unwrap();
    }
    let source = open_pubsub_source(&admin, &subscription, Some(Duration::from_secs(1))).await;
    let Received::Messages(got) = source.receive(10, Duration::from_secs(10)).await.unwrap() else {
        panic!("no message")
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let failure = source.ack(vec![got[0].token.clone()]).await.unwrap_err();
    assert_eq!(failure.failed.len(), 1);
    assert!(!failure.error.is_transient(), "retrying a late ack cannot help");
    assert!(
        failure.error.message.contains("after the client-side lease ended"),
        "{}",
        failure.error
    );
    source.close().await;
}

#[tokio::test]
async fn an_exactly_once_subscription_gets_confirmed_acks_and_no_redelivery() {
    let admin = EmulatorAdmin::connect().await.unwrap();
    let topic = admin.topic("eo").await.unwrap();
    let subscription = veltrix_pubsub::emulator::subscription_path(&veltrix_pubsub::emulator::unique("eo"));
    // The admin helper has no exactly-once switch: create it over the emulator's REST API.
    let url = format!("{}/v1/{subscription}", veltrix_pubsub::emulator::endpoint());
    let created = reqwest::Client::new()
        .put(&url)
        .json(&serde_json::json!({"topic": topic, "enableExactlyOnceDelivery": true, "ackDeadlineSeconds": 10}))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{}", created.text().await.unwrap());
    let settings = veltrix_pubsub::describe_subscription(&admin.connection, &subscription)
        .await
        .unwrap()
        .unwrap();
    assert!(settings.exactly_once);
    let target = PubSubTarget::open(&admin.connection, &topic).await.unwrap();
    let messages: Vec<OutboundMessage> = (0..30)
        .map(|n| OutboundMessage {
            body: Bytes::from(format!("{{\"n\": {n}}}")),
            ..Default::default()
        })
        .collect();
    for r in target.publish(messages).await {
        r.unwrap();
    }
    let src: Arc<dyn Source> = Arc::new(open_pubsub_source(&admin, &subscription, None).await);
    let targets = Targets::new();
    let w = veltrix::pipeline::Worker::new(
        src.clone(),
        rules(FORWARD_ALL),
        targets.list(),
        1,
        settings_for_pubsub(),
    );
    let stats = w.stats();
    let watched = targets.out.clone();
    run_until(w, Duration::from_secs(60), "30 forwarded", || watched.len() >= 30).await;
    assert_eq!(stats.snapshot().ack_failures, 0, "every ack confirmed");
    // Nothing comes back after the 10 s ack deadline.
    let again = open_pubsub_source(&admin, &subscription, None).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Received::Messages(m) = again.receive(10, Duration::from_secs(1)).await.unwrap() {
            assert!(m.is_empty(), "redelivered after a confirmed ack: {m:?}");
        }
    }
    again.close().await;
}

fn settings_for_pubsub() -> veltrix::pipeline::settings::Settings {
    let mut s = settings();
    s.receive_wait = Duration::from_secs(1);
    s
}

#[tokio::test]
async fn preflight_reports_the_pubsub_delivery_mode() {
    let admin = EmulatorAdmin::connect().await.unwrap();
    let (_, subscription) = admin
        .topic_with_subscription("mode", |s| SubscriptionSpec { ordering: true, ..s })
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("p.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\ntype = \"pubsub\"\nsubscription = \"{subscription}\"\nendpoint = \"{}\"\n[targets.dlq]\ntype = \"file\"\npath = \"d.jsonl\"\n[pipeline]\ndead_letter = \"dlq\"\n",
            veltrix_pubsub::emulator::endpoint()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_veltrix"))
        .args(["check", "--preflight", "-c", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("at-least-once delivery, ordered by key"), "{stdout}");
}

// Hot reload (issue 16): the worker binary on LocalStack, reloaded while messages flow.

impl Running {
    /// Waits (bounded) until the worker's log has `want` lines with event `event`; returns
    /// them, parsed.
    async fn wait_for_events(&self, event: &str, want: usize, limit: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + limit;
        loop {
            let found: Vec<serde_json::Value> = self
                .stderr
                .lock()
                .unwrap()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| v["event"] == event)
                .collect();
            if found.len() >= want {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no {want} `{event}` events within {limit:?}: {}",
                self.stderr.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn scrape(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.metrics))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// Sends `{"n": …}` for every number of `numbers`, ten per `SendMessageBatch`.
async fn send_numbers(url: &str, numbers: std::ops::Range<u64>) {
    let target = SqsTarget::new(localstack::client(), url.to_string(), Some(ENDPOINT.into()));
    let all: Vec<u64> = numbers.collect();
    for chunk in all.chunks(100) {
        let messages = chunk
            .iter()
            .map(|n| OutboundMessage {
                body: format!("{{\"n\": {n}}}").into(),
                ..Default::default()
            })
            .collect();
        for r in target.publish(messages).await {
            r.expect("send to LocalStack");
        }
    }
}

/// Receives and deletes everything on `url`, which holds `expected` messages once they all
/// arrived; returns their `n`s.
async fn drain_numbers(url: &str, expected: usize) -> Vec<u64> {
    let client = localstack::client();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while got.len() < expected {
        assert!(
            Instant::now() < deadline,
            "drained {} of {expected} from {url}",
            got.len()
        );
        let out = client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        let messages = out.messages();
        if messages.is_empty() {
            continue;
        }
        let mut delete = client.delete_message_batch().queue_url(url);
        for (i, m) in messages.iter().enumerate() {
            let body: serde_json::Value = serde_json::from_str(m.body().unwrap()).unwrap();
            got.push(body["n"].as_u64().unwrap());
            delete = delete.entries(
                aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle().unwrap())
                    .build()
                    .unwrap(),
            );
        }
        delete.send().await.unwrap();
    }
    got
}

/// A config reading `src` with SQS targets `targets` (name, queue URL) and `dlq`, forwarding
/// every message to target `to`.
fn routing_config(src: &str, targets: &[(&str, &str)], dlq: &str, to: &str) -> String {
    let target = |name: &str, url: &str| {
        format!("[targets.{name}]\ntype = \"sqs\"\nqueue_url = \"{url}\"\nendpoint_url = \"{ENDPOINT}\"\n")
    };
    let tables: String = targets.iter().map(|(name, url)| target(name, url)).collect();
    format!(
        "{}wait_time_secs = 1\npollers = 4\n{tables}{}[pipeline]\ndead_letter = \"dlq\"\n\
         [[rules]]\nname = \"route\"\nmatch = {{ body = {{ n = [{{ exists = true }}] }} }}\n\
         actions = [{{ type = \"forward\", target = \"{to}\" }}]\n",
        sqs_source(src, ENDPOINT),
        target("dlq", dlq)
    )
}

#[tokio::test]
async fn sighup_switches_rules_while_messages_flow_and_every_message_follows_exactly_one_generation() {
    const MESSAGES: u64 = 10_000;
    let (src, a, b, dlq) = (
        queue("reload-src", 60).await,
        queue("reload-a", 60).await,
        queue("reload-b", 60).await,
        queue("reload-dlq", 60).await,
    );
    send_numbers(&src, 0..MESSAGES).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("veltrix.toml");
    std::fs::write(&config, routing_config(&src, &[("a", &a), ("b", &b)], &dlq, "a")).unwrap();
    let mut worker = Running::start(&config).await;
    assert!(
        worker.readyz().await.unwrap().1.contains("config generation 1, hash "),
        "/readyz names the running config"
    );
    // Once a part has gone to `a`, the rule changes to `b` and target `a` goes away.
    let client = localstack::client();
    let deadline = Instant::now() + Duration::from_secs(60);
    while localstack::depth(&client, &a).await.0 < 1_000 {
        assert!(
            Instant::now() < deadline,
            "nothing reached `a`: {}",
            worker.stderr.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let v2 = routing_config(&src, &[("b", &b)], &dlq, "b");
    std::fs::write(&config, &v2).unwrap();
    worker.signal("HUP");
    let reloaded = worker
        .wait_for_events("config_reloaded", 1, Duration::from_secs(30))
        .await;
    assert_eq!(reloaded[0]["generation"], 2, "{}", reloaded[0]);
    assert_eq!(reloaded[0]["trigger"], "SIGHUP");
    assert_eq!(
        reloaded[0]["targets_kept"], 2,
        "b and dlq keep their connections: {}",
        reloaded[0]
    );
    assert_eq!(reloaded[0]["targets_opened"], 0);
    assert_eq!(reloaded[0]["targets_closed"], 1, "a is flushed and closed");
    let hash = reloaded[0]["hash"].as_str().unwrap().to_string();
    assert!(worker
        .readyz()
        .await
        .unwrap()
        .1
        .contains(&format!("config generation 2, hash {hash}")));

    // An invalid config changes nothing: the failure is logged with its line, counted, and
    // generation 2 goes on serving.
    let broken = routing_config(&src, &[("b", &b)], &dlq, "c");
    std::fs::write(&config, &broken).unwrap();
    worker.signal("HUP");
    let failed = worker
        .wait_for_events("config_reload_failed", 1, Duration::from_secs(30))
        .await;
    let line = broken.lines().position(|l| l.contains("target = \"c\"")).unwrap() + 1;
    let error = failed[0]["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("veltrix.toml:{line}:")) && error.contains("unknown target `c`"),
        "{error}"
    );
    // A change only a restart can make is refused the same way.
    std::fs::write(&config, v2.replace("pollers = 4", "pollers = 2")).unwrap();
    worker.signal("HUP");
    let failed = worker
        .wait_for_events("config_reload_failed", 2, Duration::from_secs(30))
        .await;
    let error = failed[1]["error"].as_str().unwrap();
    assert!(
        error.starts_with("not reloaded: this change needs a restart") && error.contains("source.pollers: 4 → 2"),
        "{error}"
    );
    let metrics = worker.scrape().await;
    assert!(
        metrics.contains("veltrix_config_reloads_total{result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("veltrix_config_reloads_total{result=\"failed\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("veltrix_config_generation 2"), "{metrics}");
    assert!(
        metrics.contains(&format!("veltrix_config_info{{hash=\"{hash}\"}} 1")),
        "{metrics}"
    );
    assert!(worker.readyz().await.unwrap().1.contains("config generation 2"));

    wait_depth(&src, (0, 0), Duration::from_secs(180)).await;
    worker.signal("TERM");
    let (code, _) = worker.exit_within(Duration::from_secs(30)).await;
    assert_eq!(code, Some(0), "{}", worker.stderr.lock().unwrap());
    let (in_a, in_b) = (
        localstack::depth(&client, &a).await.0,
        localstack::depth(&client, &b).await.0,
    );
    // `a` got everything generation 1 sent it, flushed before it was closed.
    assert_eq!(
        in_a + in_b,
        MESSAGES,
        "every message was forwarded once: a {in_a}, b {in_b}"
    );
    let got_a: BTreeSet<u64> = drain_numbers(&a, in_a as usize).await.into_iter().collect();
    let got_b: BTreeSet<u64> = drain_numbers(&b, in_b as usize).await.into_iter().collect();
    assert!(
        got_a.len() >= 1_000 && !got_b.is_empty(),
        "a {} b {}",
        got_a.len(),
        got_b.len()
    );
    assert_eq!(
        got_a.intersection(&got_b).count(),
        0,
        "no message followed both generations"
    );
    assert_eq!(
        got_a.len() + got_b.len(),
        MESSAGES as usize,
        "no duplicates within a target"
    );
    let all: BTreeSet<u64> = got_a.union(&got_b).copied().collect();
    assert_eq!(all, (0..MESSAGES).collect(), "none missing");
    assert_eq!(localstack::depth(&client, &dlq).await, (0, 0), "nothing dead-lettered");
    for url in [&src, &a, &b, &dlq] {
        localstack::delete_queue(&client, url).await;
    }
}

#[tokio::test]
async fn watch_reloads_on_a_configmap_style_symlink_swap() {
    let (src, a, b, dlq) = (
        queue("watch-src", 60).await,
        queue("watch-a", 60).await,
        queue("watch-b", 60).await,
        queue("watch-dlq", 60).await,
    );
    // What the kubelet makes of a mounted ConfigMap: the file is a symlink through `..data`,
    // itself a symlink to a timestamped directory that an update replaces atomically.
    let dir = tempfile::tempdir().unwrap();
    let version = |name: &str, to: &str| {
        let d = dir.path().join(name);
        std::fs::create_dir(&d).unwrap();
        std::fs::write(
            d.join("veltrix.toml"),
            routing_config(&src, &[("a", &a), ("b", &b)], &dlq, to),
        )
        .unwrap();
    };
    version("..2026_12_03_v1", "a");
    std::os::unix::fs::symlink("..2026_12_03_v1", dir.path().join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/veltrix.toml", dir.path().join("veltrix.toml")).unwrap();
    let config = dir.path().join("veltrix.toml");
    let mut worker = Running::start_with(&config, &["--watch"]).await;
    send_numbers(&src, 0..5).await;
    let client = localstack::client();
    let deadline = Instant::now() + Duration::from_secs(30);
    while localstack::depth(&client, &a).await.0 < 5 {
        assert!(Instant::now() < deadline, "the first five did not reach `a`");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    version("..2026_12_03_v2", "b");
    std::os::unix::fs::symlink("..2026_12_03_v2", dir.path().join("..data_tmp")).unwrap();
    std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
    let reloaded = worker
        .wait_for_events("config_reloaded", 1, Duration::from_secs(30))
        .await;
    assert_eq!(reloaded[0]["trigger"], "watch", "{}", reloaded[0]);
    send_numbers(&src, 5..10).await;
    wait_depth(&src, (0, 0), Duration::from_secs(30)).await;
    worker.signal("TERM");
    let (code, _) = worker.exit_within(Duration::from_secs(30)).await;
    assert_eq!(code, Some(0), "{}", worker.stderr.lock().unwrap());
    let mut got_a = drain_numbers(&a, 5).await;
    let mut got_b = drain_numbers(&b, 5).await;
    got_a.sort_unstable();
    got_b.sort_unstable();
    assert_eq!((got_a, got_b), ((0..5).collect(), (5..10).collect()));
    for url in [&src, &a, &b, &dlq] {
        localstack::delete_queue(&client, url).await;
    }
}
