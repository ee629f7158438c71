//! Retry budgets (issue 12) against LocalStack and the Pub/Sub emulator, real time: an HTTP
//! handler down for 45 s dead-letters nothing (behind SQS and behind Pub/Sub); a failing head of a FIFO group (SQS) or an
//! ordering key (Pub/Sub) is dead-lettered alone after exactly `max_attempts` failures while
//! its siblings arrive in order; `Retry-After` sets the request rate; a poison message among
//! healthy ones is dead-lettered alone; twelve restarts during a backlog spend no budget; a
//! message's own failures survive a restart on SQS standard and FIFO queues and on Pub/Sub.
//!
//! The handler is a local axum server whose answer per message (by the body's `n`) the test
//! scripts; it records when each request came.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use common::localstack::{self, ENDPOINT};
use common::*;
use veltrix::pipeline::failure_ledger::FailureLedger;
use veltrix::pipeline::settings::Settings;
use veltrix::pipeline::Worker;
use veltrix::targets::http::{HttpTarget, HttpTargetOptions};
use veltrix_pubsub::emulator::{EmulatorAdmin, SubscriptionSpec};
use veltrix_pubsub::PubSubTarget;
use veltrix_queue::memory::MemoryQueue;
use veltrix_queue::{Attributes, OutboundMessage, Publisher, Received, Source};
use veltrix_sqs::SqsTarget;

/// How the handler answers one request: a status and an optional `Retry-After` (seconds).
type Answer = (u16, Option<u64>);
type Script = dyn Fn(u64, Duration) -> Answer + Send + Sync;

/// A scripted handler: `script(n, since_start)` answers each request.
struct Handler {
    started: Instant,
    script: Box<Script>,
    /// (when, n, status, x-veltrix-attempt) per request.
    seen: Mutex<Vec<(Instant, u64, u16, String)>>,
}

impl Handler {
    fn seen(&self) -> Vec<(Instant, u64, u16, String)> {
        self.seen.lock().unwrap().clone()
    }

    /// How many distinct messages were accepted.
    fn accepted_unique(&self) -> usize {
        self.accepted()
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    }

    /// The `n` of every accepted request, in arrival order.
    fn accepted(&self) -> Vec<u64> {
        self.seen()
            .into_iter()
            .filter(|(_, _, s, _)| *s == 200)
            .map(|(_, n, _, _)| n)
            .collect()
    }
}

async fn handle(State(h): State<Arc<Handler>>, headers: HeaderMap, body: Bytes) -> Response {
    let n = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["n"]
        .as_u64()
        .unwrap();
    let (status, retry_after) = (h.script)(n, h.started.elapsed());
    let attempt = headers
        .get("x-veltrix-attempt")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    h.seen.lock().unwrap().push((Instant::now(), n, status, attempt));
    let mut response = StatusCode::from_u16(status).unwrap().into_response();
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", secs.to_string().parse().unwrap());
    }
    response
}

async fn serve(script: impl Fn(u64, Duration) -> Answer + Send + Sync + 'static) -> (SocketAddr, Arc<Handler>) {
    let handler = Arc::new(Handler {
        started: Instant::now(),
        script: Box::new(script),
        seen: Mutex::default(),
    });
    let app = axum::Router::new()
        .route("/events", axum::routing::post(handle))
        .with_state(handler.clone());
    let addr = serve_on_loopback(app).await;
    (addr, handler)
}

fn http(addr: SocketAddr) -> Arc<dyn Publisher> {
    Arc::new(
        HttpTarget::new(HttpTargetOptions {
            url: format!("http://{addr}/events"),
            timeout: Duration::from_secs(5),
            headers: Default::default(),
            bearer_token: None,
        })
        .unwrap(),
    )
}

fn fast_settings() -> Settings {
    let mut s = settings();
    s.receive_wait = Duration::from_secs(1);
    s.retry.initial_backoff = Duration::from_millis(500);
    s.retry.max_backoff = Duration::from_secs(4);
    s
}

/// A worker on `source` forwarding every `{"n": …}` to the handler, dead letters to `dlq`
/// (memory), with `max_attempts = 3`.
fn worker(source: Arc<dyn Source>, addr: SocketAddr, dlq: &MemoryQueue) -> Worker {
    Worker::new(
        source,
        rules(FORWARD_ALL),
        targets_with_out(dlq, http(addr)),
        1,
        fast_settings(),
    )
}

async fn sqs_queue(what: &str, fifo: bool) -> String {
    localstack::create_queue(
        &localstack::client(),
        what,
        fifo,
        &[(QueueAttributeName::VisibilityTimeout, "5".to_string())],
    )
    .await
}

async fn sqs_source(url: &str) -> Arc<dyn Source> {
    Arc::new(localstack::try_open_source(url, None).await.unwrap())
}

fn numbered(n: u64, key: Option<&str>) -> OutboundMessage {
    OutboundMessage {
        body: format!(r#"{{"n":{n}}}"#).into(),
        attributes: Attributes::new(),
        ordering_key: key.map(str::to_string),
        dedup_id: Some(format!("m{n}")),
    }
}

async fn publish(target: &dyn Publisher, messages: Vec<OutboundMessage>) {
    for chunk in messages.chunks(target.max_batch().min(10)) {
        for r in target.publish(chunk.to_vec()).await {
            r.expect("publish succeeds");
        }
    }
}

async fn sqs_publish(url: &str, messages: Vec<OutboundMessage>) {
    let target = SqsTarget::new(localstack::client(), url.to_string(), Some(ENDPOINT.into()));
    publish(&target, messages).await;
}

/// Runs `worker` until `done` (bounded by `limit`), then drains it.
async fn run_until_real(worker: Worker, limit: Duration, what: &str, done: impl Fn() -> bool) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop.send(());
    run.await.unwrap().unwrap();
}

async fn assert_sqs_empty(url: &str) {
    let client = localstack::client();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let depth = localstack::depth(&client, url).await;
        if depth == (0, 0) {
            return;
        }
        assert!(Instant::now() < deadline, "the source still holds {depth:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The handler of the outage tests: 503 for the first 45 s, then 200.
fn down_for_45_s(_: u64, since: Duration) -> Answer {
    if since < Duration::from_secs(45) {
        (503, None)
    } else {
        (200, None)
    }
}

/// The dead handler was not hammered: the first burst, then about one probe per circuit
/// interval.
fn assert_not_hammered(handler: &Handler) {
    let during = handler
        .seen()
        .iter()
        .filter(|(at, _, status, _)| *status == 503 && *at > handler.started + Duration::from_secs(2))
        .count();
    assert!(
        during <= 8,
        "{during} requests to the dead handler after the circuit opened"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_down_for_45_s_dead_letters_nothing_and_everything_arrives() {
    let url = sqs_queue("outage", false).await;
    sqs_publish(&url, (0..60).map(|n| numbered(n, None)).collect()).await;
    let (addr, handler) = serve(down_for_45_s).await;
    let dlq = MemoryQueue::named("dlq");
    let h = handler.clone();
    run_until_real(
        worker(sqs_source(&url).await, addr, &dlq),
        Duration::from_secs(150),
        "all 60 arrived",
        move || h.accepted_unique() == 60,
    )
    .await;
    assert!(dlq.is_empty(), "{} dead-lettered during an outage", dlq.len());
    assert_sqs_empty(&url).await;
    assert_not_hammered(&handler);
    localstack::delete_queue(&localstack::client(), &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_down_for_45_s_behind_pubsub_dead_letters_nothing() {
    let admin = EmulatorAdmin::connect().await.unwrap();
    let (topic, subscription) = admin.topic_with_subscription("outage", |s| s).await.unwrap();
    let target = PubSubTarget::open(&admin.connection, &topic).await.unwrap();
    publish(&target, (0..60).map(|n| numbered(n, None)).collect()).await;
    let (addr, handler) = serve(down_for_45_s).await;
    let dlq = MemoryQueue::named("dlq");
    let h = handler.clone();
    run_until_real(
        worker(
            Arc::new(open_pubsub_source(&admin, &subscription, None).await),
            addr,
            &dlq,
        ),
        Duration::from_secs(150),
        "all 60 arrived",
        move || h.accepted_unique() == 60,
    )
    .await;
    assert!(dlq.is_empty(), "{} dead-lettered during an outage", dlq.len());
    assert_not_hammered(&handler);
    // Held through the outage (past the 10 s ack deadline) and acked: nothing comes back.
    let check = open_pubsub_source(&admin, &subscription, None).await;
    let Received::Messages(left) = check.receive(10, Duration::from_secs(12)).await.unwrap() else {
        panic!("a subscription is never exhausted")
    };
    assert!(left.is_empty(), "{} messages came back", left.len());
}

/// Head `0` always fails; siblings `1..5` fail once each.
fn head_fails_siblings_once() -> impl Fn(u64, Duration) -> Answer + Send + Sync {
    let failed: Mutex<HashMap<u64, u32>> = Mutex::default();
    move |n, _| {
        let mut f = failed.lock().unwrap();
        let count = f.entry(n).or_insert(0);
        *count += 1;
        if n == 0 || *count == 1 {
            (500, None)
        } else {
            (200, None)
        }
    }
}

fn assert_only_the_head_dead_lettered(dlq: &MemoryQueue, handler: &Handler) {
    let dead = dlq.snapshot();
    assert_eq!(numbers(&dead), vec![0], "only the head is dead-lettered");
    assert_eq!(
        dead[0].attributes.get_str("veltrix.reason"),
        Some("retry_budget_exhausted")
    );
    assert_eq!(dead[0].attributes.get_str("veltrix.attempts"), Some("3"));
    let head: Vec<String> = handler
        .seen()
        .into_iter()
        .filter(|(_, n, _, _)| *n == 0)
        .map(|(_, _, _, attempt)| attempt)
        .collect();
    assert_eq!(head, vec!["1", "2", "3"], "exactly max_attempts tries of the head");
    assert_eq!(handler.accepted(), vec![1, 2, 3, 4], "the siblings, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_group_whose_head_always_fails_delivers_its_siblings_in_order() {
    let url = sqs_queue("head", true).await;
    sqs_publish(&url, (0..5).map(|n| numbered(n, Some("g"))).collect()).await;
    let (addr, handler) = serve(head_fails_siblings_once()).await;
    let dlq = MemoryQueue::named("dlq");
    let (h, d) = (handler.clone(), dlq.clone());
    run_until_real(
        worker(sqs_source(&url).await, addr, &dlq),
        Duration::from_secs(60),
        "the head dead-lettered and 4 siblings arrived",
        move || d.len() == 1 && h.accepted().len() == 4,
    )
    .await;
    assert_only_the_head_dead_lettered(&dlq, &handler);
    assert_sqs_empty(&url).await;
    localstack::delete_queue(&localstack::client(), &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordering_key_whose_head_always_fails_delivers_its_siblings_in_order() {
    let admin = EmulatorAdmin::connect().await.unwrap();
    let (topic, subscription) = admin
        .topic_with_subscription("head", |s| SubscriptionSpec { ordering: true, ..s })
        .await
        .unwrap();
    let target = PubSubTarget::open(&admin.connection, &topic).await.unwrap();
    publish(&target, (0..5).map(|n| numbered(n, Some("k"))).collect()).await;
    let source = open_pubsub_source(&admin, &subscription, None).await;
    let (addr, handler) = serve(head_fails_siblings_once()).await;
    let dlq = MemoryQueue::named("dlq");
    let (h, d) = (handler.clone(), dlq.clone());
    run_until_real(
        worker(Arc::new(source), addr, &dlq),
        Duration::from_secs(60),
        "the head dead-lettered and 4 siblings arrived",
        move || d.len() == 1 && h.accepted().len() == 4,
    )
    .await;
    assert_only_the_head_dead_lettered(&dlq, &handler);
    // Nothing comes back: every message was acked (the window exceeds the 10 s ack deadline).
    let check = open_pubsub_source(&admin, &subscription, None).await;
    let Received::Messages(left) = check.receive(10, Duration::from_secs(12)).await.unwrap() else {
        panic!("a subscription is never exhausted")
    };
    assert!(left.is_empty(), "{} messages came back", left.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_sets_the_request_rate_and_dead_letters_nothing() {
    let url = sqs_queue("throttle", false).await;
    sqs_publish(&url, (0..40).map(|n| numbered(n, None)).collect()).await;
    let (addr, handler) = serve(|_, since| {
        if since < Duration::from_secs(10) {
            (429, Some(1))
        } else {
            (200, None)
        }
    })
    .await;
    let dlq = MemoryQueue::named("dlq");
    let h = handler.clone();
    run_until_real(
        worker(sqs_source(&url).await, addr, &dlq),
        Duration::from_secs(120),
        "all 40 arrived",
        move || h.accepted().len() >= 40,
    )
    .await;
    assert!(dlq.is_empty());
    assert_eq!(handler.accepted_unique(), 40);
    // After the first burst, about one request per Retry-After while throttled.
    let seen = handler.seen();
    let first = seen[0].0;
    for second in 2..10u64 {
        let from = first + Duration::from_secs(second);
        let n = seen
            .iter()
            .filter(|(at, _, _, _)| *at >= from && *at < from + Duration::from_secs(1))
            .count();
        assert!(n <= 3, "{n} requests in second {second} under Retry-After: 1");
    }
    assert_sqs_empty(&url).await;
    localstack::delete_queue(&localstack::client(), &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_dead_lettered_alone_with_its_own_attempts() {
    let url = sqs_queue("poison", false).await;
    sqs_publish(&url, (0..30).map(|n| numbered(n, None)).collect()).await;
    let (addr, handler) = serve(|n, _| if n == 7 { (500, None) } else { (200, None) }).await;
    let dlq = MemoryQueue::named("dlq");
    let (h, d) = (handler.clone(), dlq.clone());
    run_until_real(
        worker(sqs_source(&url).await, addr, &dlq),
        Duration::from_secs(60),
        "29 arrived and 1 dead letter",
        move || d.len() == 1 && h.accepted().len() >= 29,
    )
    .await;
    let dead = dlq.snapshot();
    assert_eq!(numbers(&dead), vec![7]);
    assert_eq!(dead[0].attributes.get_str("veltrix.attempts"), Some("3"));
    assert_sqs_empty(&url).await;
    localstack::delete_queue(&localstack::client(), &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_restarts_during_a_backlog_spend_no_budget() {
    let url = sqs_queue("restarts", false).await;
    sqs_publish(&url, (0..50).map(|n| numbered(n, None)).collect()).await;
    // The handler fails everything (each message fails, is retried in place, ...) while the
    // worker is restarted twelve times; then it recovers.
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = healthy.clone();
    let (addr, handler) = serve(move |_, _| {
        if flag.load(std::sync::atomic::Ordering::Relaxed) {
            (200, None)
        } else {
            (503, None)
        }
    })
    .await;
    let dlq = MemoryQueue::named("dlq");
    for _ in 0..12 {
        let w = worker(sqs_source(&url).await, addr, &dlq);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(w.run(async move {
            let _ = stopped.await;
        }));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stop.send(()).unwrap();
        run.await.unwrap().unwrap();
    }
    assert!(dlq.is_empty(), "restarts spent budgets: {} dead letters", dlq.len());
    healthy.store(true, std::sync::atomic::Ordering::Relaxed);
    let h = handler.clone();
    run_until_real(
        worker(sqs_source(&url).await, addr, &dlq),
        Duration::from_secs(60),
        "all 50 arrived",
        move || h.accepted_unique() == 50,
    )
    .await;
    assert!(dlq.is_empty());
    assert_sqs_empty(&url).await;
    localstack::delete_queue(&localstack::client(), &url).await;
}

/// Runs a worker on the source `open` gives until message 7 (always 500) failed twice and the
/// five others arrived, stops it in the backoff, then runs a new one (with a ledger opened
/// afresh from `ledger`, as after a restart) until 7 is dead-lettered. Asserts the attempt
/// number went on across the restart and returns the dead letter queue.
async fn assert_own_failures_survive_a_restart(
    ledger: Option<&Path>,
    open: impl AsyncFn() -> Arc<dyn Source>,
) -> MemoryQueue {
    let (addr, handler) = serve(|n, _| if n == 7 { (500, None) } else { (200, None) }).await;
    let dlq = MemoryQueue::named("dlq");
    let tries_of_7 = |h: &Handler| {
        h.seen()
            .into_iter()
            .filter(|(_, n, _, _)| *n == 7)
            .map(|(_, _, _, attempt)| attempt)
            .collect::<Vec<_>>()
    };
    let restartable = |source| {
        let w = worker(source, addr, &dlq);
        match ledger {
            Some(dir) => w.with_failure_ledger(FailureLedger::open(dir).unwrap()),
            None => w,
        }
    };
    // Run 1 ends in the backoff after the second failure (0.5 s, then 1 s).
    let h = handler.clone();
    run_until_real(
        restartable(open().await),
        Duration::from_secs(30),
        "two tries of message 7",
        move || tries_of_7(&h).len() == 2 && h.accepted().len() == 5,
    )
    .await;
    assert!(dlq.is_empty());
    // Run 2 receives message 7 again and goes on counting from there.
    let d = dlq.clone();
    run_until_real(
        restartable(open().await),
        Duration::from_secs(60),
        "message 7 dead-lettered",
        move || d.len() == 1,
    )
    .await;
    assert_eq!(
        tries_of_7(&handler),
        ["1", "2", "2", "3"],
        "the attempt number goes on across the restart (a fresh budget would try 3 more times)"
    );
    let dead = dlq.snapshot();
    assert_eq!(numbers(&dead), vec![7]);
    assert_eq!(dead[0].attributes.get_str("veltrix.attempts"), Some("3"));
    assert_eq!(dead[0].attributes.get_str("tenant"), Some("acme"));
    assert!(
        !dead[0].attributes.contains_key("veltrix.failures"),
        "the carried count never leaves the worker"
    );
    if let Some(dir) = ledger {
        let left: Vec<_> = std::fs::read_dir(dir).unwrap().collect();
        assert!(left.is_empty(), "the ledger was adopted, emptied and removed: {left:?}");
    }
    dlq
}

/// Message 7 (the poison, with a producer attribute) after five healthy ones.
fn healthy_then_poison(key: impl Fn(u64) -> Option<String>) -> Vec<OutboundMessage> {
    let mut messages: Vec<_> = (0..5).map(|n| numbered(n, key(n).as_deref())).collect();
    let mut poison = numbered(7, key(7).as_deref());
    poison.attributes.insert("tenant", "acme");
    messages.push(poison);
    messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_failures_survive_a_restart_on_a_standard_queue() {
    let url = sqs_queue("carry", false).await;
    sqs_publish(&url, healthy_then_poison(|_| None)).await;
    // No ledger: the re-sent message carries its count.
    assert_own_failures_survive_a_restart(None, async || sqs_source(&url).await).await;
    assert_sqs_empty(&url).await;
    localstack::delete_queue(&localstack::client(), &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_failures_survive_a_restart_on_a_fifo_queue() {
    let url = sqs_queue("carry", true).await;
    sqs_publish(&url, healthy_then_poison(|n| Some(format!("g{n}")))).await;
    let ledger = tempfile::tempdir().unwrap();
    assert_own_failures_survive_a_restart(Some(ledger.path()), async || sqs_source(&url).await).await;
    assert_sqs_empty(&url).await;
    localstack::delete_queue(&localstack::client(), &url).await;
}

/// The standard-queue assertion on a Pub/Sub subscription, with or without ordering keys (all
/// six messages on one key), counting through the failure ledger.
async fn assert_own_failures_survive_a_restart_on_pubsub(ordering: bool) {
    let admin = EmulatorAdmin::connect().await.unwrap();
    let (topic, subscription) = admin
        .topic_with_subscription("carry", |s| SubscriptionSpec { ordering, ..s })
        .await
        .unwrap();
    let target = PubSubTarget::open(&admin.connection, &topic).await.unwrap();
    publish(&target, healthy_then_poison(|_| ordering.then(|| "k".to_string()))).await;
    let ledger = tempfile::tempdir().unwrap();
    assert_own_failures_survive_a_restart(Some(ledger.path()), async || {
        Arc::new(open_pubsub_source(&admin, &subscription, None).await) as Arc<dyn Source>
    })
    .await;
    // Nothing comes back: every message was acked (the window exceeds the ack deadline).
    let check = open_pubsub_source(&admin, &subscription, None).await;
    let Received::Messages(left) = check.receive(10, Duration::from_secs(12)).await.unwrap() else {
        panic!("a subscription is never exhausted")
    };
    assert!(left.is_empty(), "{} messages came back", left.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_failures_survive_a_restart_on_pubsub() {
    assert_own_failures_survive_a_restart_on_pubsub(false).await;
}

/// The released head of an ordering key comes back to the next worker after the ack deadline
/// (the emulator does not honour nacks sent while a stream shuts down), and goes on counting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_failures_survive_a_restart_on_pubsub_with_an_ordering_key() {
    assert_own_failures_survive_a_restart_on_pubsub(true).await;
}
