//! The HTTP target against a real local HTTP server (axum, on 127.0.0.1:0): each status class,
//! timeouts, `Retry-After`, headers.

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use common::*;
use veltrix::pipeline::Worker;
use veltrix::targets::http::{HttpTarget, HttpTargetOptions};
use veltrix_queue::memory::MemoryQueue;
use veltrix_queue::Publisher;

/// One scripted reply.
#[derive(Clone)]
struct Reply {
    status: u16,
    retry_after: Option<&'static str>,
    delay: Duration,
    body: &'static str,
}

fn ok() -> Reply {
    Reply {
        status: 200,
        retry_after: None,
        delay: Duration::ZERO,
        body: "",
    }
}

fn status(status: u16) -> Reply {
    Reply { status, ..ok() }
}

#[derive(Default)]
struct Handler {
    script: Mutex<VecDeque<Reply>>,
    seen: Mutex<Vec<(Instant, HeaderMap, Bytes)>>,
}

async fn handle(State(h): State<Arc<Handler>>, headers: HeaderMap, body: Bytes) -> Response {
    h.seen.lock().unwrap().push((Instant::now(), headers, body));
    let reply = h.script.lock().unwrap().pop_front().unwrap_or_else(ok);
    tokio::time::sleep(reply.delay).await;
    let mut response = (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
    if let Some(ra) = reply.retry_after {
        response.headers_mut().insert("retry-after", ra.parse().unwrap());
    }
    response
}

async fn serve(script: Vec<Reply>) -> (SocketAddr, Arc<Handler>) {
    let handler = Arc::new(Handler {
        script: Mutex::new(script.into()),
        ..Default::default()
    });
    let app = axum::Router::new()
        .route("/events", axum::routing::post(handle))
        .with_state(handler.clone());
    let addr = serve_on_loopback(app).await;
    (addr, handler)
}

fn http_target(url: String, timeout: Duration, token: Option<&str>) -> Arc<dyn Publisher> {
    Arc::new(
        HttpTarget::new(HttpTargetOptions {
            url,
            timeout,
            headers: [("x-team".to_string(), "payments".to_string())].into(),
            bearer_token: token.map(str::to_string),
        })
        .unwrap(),
    )
}

/// Runs one message through a worker whose `out` target is the HTTP handler.
async fn run_one(out: Arc<dyn Publisher>) -> (veltrix::pipeline::stats::Summary, MemoryQueue) {
    let src = source("src");
    src.push(body_with(&[("tenant", "acme")], "{\"n\": 1}"));
    src.close();
    let dlq = MemoryQueue::named("dlq");
    let mut s = settings();
    s.retry.initial_backoff = Duration::from_millis(100);
    s.retry.max_backoff = Duration::from_millis(400);
    let worker = Worker::new(
        Arc::new(src.clone()),
        rules(FORWARD_ALL),
        targets_with_out(&dlq, out),
        1,
        s,
    );
    let summary = tokio::time::timeout(Duration::from_secs(30), worker.run(std::future::pending()))
        .await
        .expect("the worker finishes")
        .unwrap();
    assert!(src.is_empty(), "the source message is settled");
    (summary, dlq)
}

#[tokio::test]
async fn success_carries_body_headers_and_token() {
    let (addr, h) = serve(vec![ok()]).await;
    let (summary, _) = run_one(http_target(
        format!("http://{addr}/events"),
        Duration::from_secs(5),
        Some("s3cret"),
    ))
    .await;
    assert_eq!((summary.forwarded, summary.retried), (1, 0));
    let seen = h.seen.lock().unwrap();
    let (_, headers, body) = &seen[0];
    assert_eq!(body.as_ref(), b"{\"n\": 1}");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["authorization"], "Bearer s3cret");
    assert_eq!(headers["x-team"], "payments");
    assert_eq!(headers["x-veltrix-rule"], "all");
    assert_eq!(headers["x-veltrix-attempt"], "1");
    assert_eq!(headers["x-veltrix-attr-tenant"], "acme");
    assert!(headers["x-veltrix-message-id"].to_str().unwrap().starts_with("src-"));
}

#[tokio::test]
async fn server_errors_are_retried_until_the_handler_recovers() {
    let (addr, h) = serve(vec![status(503), status(500), ok()]).await;
    let (summary, dlq) = run_one(http_target(
        format!("http://{addr}/events"),
        Duration::from_secs(5),
        None,
    ))
    .await;
    // Retried in place: received once, never back through the queue.
    assert_eq!((summary.received, summary.retried, summary.forwarded), (1, 2, 1));
    assert!(dlq.is_empty());
    let attempts: Vec<String> = h
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, hd, _)| hd["x-veltrix-attempt"].to_str().unwrap().to_string())
        .collect();
    assert_eq!(attempts, vec!["1", "2", "3"]);
}

#[tokio::test]
async fn client_errors_dead_letter_with_status_and_body() {
    let (addr, _h) = serve(vec![Reply {
        body: "field `amount` must be positive",
        ..status(422)
    }])
    .await;
    let (summary, dlq) = run_one(http_target(
        format!("http://{addr}/events"),
        Duration::from_secs(5),
        None,
    ))
    .await;
    assert_eq!((summary.retried, summary.dead_lettered), (0, 1));
    let a = &dlq.snapshot()[0].attributes;
    assert_eq!(a["veltrix.reason"], "target_rejected");
    assert!(a["veltrix.error"].to_string().contains("422"), "{}", a["veltrix.error"]);
    assert!(
        a["veltrix.error"]
            .to_string()
            .contains("field `amount` must be positive"),
        "{}",
        a["veltrix.error"]
    );
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let (addr, h) = serve(vec![
        Reply {
            retry_after: Some("2"),
            ..status(429)
        },
        ok(),
    ])
    .await;
    let (summary, _) = run_one(http_target(
        format!("http://{addr}/events"),
        Duration::from_secs(5),
        None,
    ))
    .await;
    // Throttling is the target's, not the message's: no retry counted, the same attempt sent
    // again once the target's pause ends.
    assert_eq!((summary.received, summary.retried, summary.forwarded), (1, 0, 1));
    let seen = h.seen.lock().unwrap();
    let gap = seen[1].0 - seen[0].0;
    assert!(
        gap >= Duration::from_secs(2),
        "retried after {gap:?}, before Retry-After: 2"
    );
    assert_eq!(seen[1].1["x-veltrix-attempt"], "1");
}

#[tokio::test]
async fn a_slow_handler_times_out_and_is_retried() {
    let (addr, h) = serve(vec![
        Reply {
            delay: Duration::from_secs(3),
            ..ok()
        },
        ok(),
    ])
    .await;
    let (summary, _) = run_one(http_target(
        format!("http://{addr}/events"),
        Duration::from_millis(300),
        None,
    ))
    .await;
    assert_eq!((summary.retried, summary.forwarded), (1, 1));
    assert_eq!(h.seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn unreachable_handler_is_retried_then_dead_lettered_when_the_budget_is_spent() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener); // nothing listens there now
    let (summary, dlq) = run_one(http_target(
        format!("http://{addr}/events"),
        Duration::from_secs(2),
        None,
    ))
    .await;
    // One message alone cannot open the circuit (3 failures < 10): its failures are its own.
    assert_eq!((summary.received, summary.retried, summary.dead_lettered), (1, 2, 1));
    let a = &dlq.snapshot()[0].attributes;
    assert_eq!(a["veltrix.reason"], "retry_budget_exhausted");
    assert_eq!(a["veltrix.attempts"], "3");
    assert!(
        a["veltrix.error"].to_string().contains("POST"),
        "{}",
        a["veltrix.error"]
    );
}

/// A handler service on its own runtime and thread, so killing it closes every connection
/// (kept-alive ones too), like a process that dies.
struct HandlerProcess {
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HandlerProcess {
    fn start(addr: SocketAddr, handler: Arc<Handler>) -> (Self, SocketAddr) {
        let (kill, killed) = tokio::sync::oneshot::channel::<()>();
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(addr).await.expect("bind the handler");
                bound_tx.send(listener.local_addr().unwrap()).unwrap();
                let app = axum::Router::new()
                    .route("/events", axum::routing::post(handle))
                    .with_state(handler);
                tokio::select! {
                    _ = async { axum::serve(listener, app).await } => {}
                    _ = killed => {}
                }
            });
            // Dropping the runtime cancels every connection task: the sockets close.
        });
        let bound = bound_rx.recv().unwrap();
        (
            Self {
                kill: Some(kill),
                thread: Some(thread),
            },
            bound,
        )
    }

    fn kill(mut self) {
        let _ = self.kill.take().unwrap().send(());
        self.thread.take().unwrap().join().unwrap();
    }
}

/// The handler service dies mid-run and comes back on the same address: the messages sent
/// while it was down are retried in place, then held while its circuit is open, and all
/// arrive once a probe gets through; nothing is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_killed_mid_run_recovers_with_nothing_lost() {
    let handler = Arc::new(Handler::default());
    let (process, addr) = HandlerProcess::start("127.0.0.1:0".parse().unwrap(), handler.clone());

    let src = source("src");
    let dlq = MemoryQueue::named("dlq");
    let mut s = settings();
    s.retry.initial_backoff = Duration::from_millis(100);
    s.retry.max_backoff = Duration::from_millis(400);
    let rules = common::rules(&FORWARD_ALL.replace("[[rules]]", "[[rules]]\nmax_attempts = 100"));
    let worker = Worker::new(
        Arc::new(src.clone()),
        rules,
        vec![
            ("audit".into(), Arc::new(MemoryQueue::named("audit"))),
            ("dlq".into(), Arc::new(dlq.clone())),
            (
                "out".into(),
                http_target(format!("http://{addr}/events"), Duration::from_secs(2), None),
            ),
        ],
        1,
        s,
    );
    let stats = worker.stats();
    let run = tokio::spawn(worker.run(std::future::pending()));
    let numbers = |h: &Handler| -> std::collections::BTreeSet<u64> {
        h.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(_, _, b)| {
                serde_json::from_slice::<serde_json::Value>(b).unwrap()["n"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    };
    for n in 0..10 {
        src.push(body_with(&[], &format!("{{\"n\": {n}}}")));
    }
    wait_until(Duration::from_secs(10), "the first 10 arrived", || {
        numbers(&handler).len() == 10
    })
    .await;

    tokio::task::spawn_blocking(move || process.kill()).await.unwrap();
    for n in 10..20 {
        src.push(body_with(&[], &format!("{{\"n\": {n}}}")));
    }
    // While it is down nothing arrives; ten failures in a row open the handler's circuit.
    wait_until(Duration::from_secs(10), "new messages failed", || {
        stats.snapshot().retried >= 5
    })
    .await;
    assert_eq!(numbers(&handler).len(), 10, "nothing arrives while the handler is down");
    assert_eq!(src.len(), 10, "the failed messages are still on the queue");

    let (process, _) = HandlerProcess::start(addr, handler.clone());
    wait_until(Duration::from_secs(20), "all 20 arrived after the restart", || {
        numbers(&handler).len() == 20
    })
    .await;
    src.close();
    let summary = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the worker finishes")
        .unwrap()
        .unwrap();
    assert_eq!(numbers(&handler), (0..20).collect(), "every message arrived");
    assert!(summary.retried >= 5, "{summary}");
    assert_eq!(summary.received, 20, "nothing went back through the queue: {summary}");
    assert_eq!(summary.dead_lettered, 0, "{summary}");
    assert!(dlq.is_empty());
    tokio::task::spawn_blocking(move || process.kill()).await.unwrap();
}
