//! Integrity (issue 11), on the memory backend, local HTTP handlers and the binary: no input,
//! target or transform can lose a message, change it silently, or crash, stall or leak from
//! the worker. (Provider cases are in `integrity_providers.rs`, round trips in
//! `roundtrip.rs`.)

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes as AxumBytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use common::*;
use veltrix::pipeline::Worker;
use veltrix::replay::{replay, ReplayOptions};
use veltrix::targets::http::{HttpTarget, HttpTargetOptions};
use veltrix_queue::memory::{Fault, MemoryQueue, MemoryQueueConfig};
use veltrix_queue::{OutboundMessage, Publisher, QueueError};

/// What the test handler saw and answers.
#[derive(Default)]
struct Handler {
    posts: AtomicUsize,
    gets: AtomicUsize,
    reply: Mutex<Option<(u16, Option<String>)>>,
}

async fn handle(State(h): State<Arc<Handler>>, method: Method, _headers: HeaderMap, _body: AxumBytes) -> Response {
    if method == Method::GET {
        h.gets.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::OK, "got a GET").into_response();
    }
    h.posts.fetch_add(1, Ordering::SeqCst);
    let reply = h.reply.lock().unwrap().clone();
    match reply {
        Some((status, location)) => {
            let mut r = StatusCode::from_u16(status).unwrap().into_response();
            if let Some(l) = location {
                r.headers_mut().insert("location", l.parse().unwrap());
            }
            r
        }
        None => StatusCode::OK.into_response(),
    }
}

/// An endless error response: 400 with a body that never ends.
async fn endless(_: AxumBytes) -> Response {
    let chunks = futures::stream::repeat_with(|| Ok::<_, std::io::Error>(AxumBytes::from(vec![b'e'; 64 * 1024])));
    (StatusCode::BAD_REQUEST, Body::from_stream(chunks)).into_response()
}

async fn serve(handler: Arc<Handler>) -> SocketAddr {
    let app = axum::Router::new()
        .route("/events", axum::routing::any(handle))
        .route("/final", axum::routing::any(handle))
        .route("/endless", axum::routing::post(endless))
        .with_state(handler);
    let addr = serve_on_loopback(app).await;
    addr
}

fn http(url: String) -> Arc<dyn Publisher> {
    Arc::new(
        HttpTarget::new(HttpTargetOptions {
            url,
            timeout: Duration::from_secs(5),
            headers: Default::default(),
            bearer_token: None,
        })
        .unwrap(),
    )
}

/// Runs the messages of `src` through `FORWARD_ALL` to `out`; returns the dead letters.
async fn through(
    src: &MemoryQueue,
    out: Arc<dyn Publisher>,
    settings: veltrix::pipeline::settings::Settings,
) -> (veltrix::pipeline::stats::Summary, MemoryQueue) {
    src.close();
    let dlq = MemoryQueue::named("dlq");
    let worker = Worker::new(
        Arc::new(src.clone()),
        rules(FORWARD_ALL),
        targets_with_out(&dlq, out),
        1,
        settings,
    );
    let summary = tokio::time::timeout(Duration::from_secs(60), worker.run(std::future::pending()))
        .await
        .expect("the worker finishes")
        .unwrap();
    assert!(src.is_empty(), "every message settled: {summary}");
    (summary, dlq)
}

#[tokio::test]
async fn http_redirects_are_not_followed_and_dead_letter_with_the_status_and_location() {
    for status in [301, 302, 303, 307, 308] {
        let handler = Arc::new(Handler::default());
        let addr = serve(handler.clone()).await;
        *handler.reply.lock().unwrap() = Some((status, Some(format!("http://u:pw@{addr}/final?sig=secret"))));
        let src = source("src");
        src.push_body("{\"n\": 1}");
        let (summary, dlq) = through(&src, http(format!("http://{addr}/events")), settings()).await;
        assert_eq!(
            (summary.forwarded, summary.dead_lettered),
            (0, 1),
            "{status}: {summary}"
        );
        assert_eq!(
            handler.gets.load(Ordering::SeqCst),
            0,
            "{status}: the redirect was not followed"
        );
        let dead = &dlq.snapshot()[0];
        assert_eq!(dead.attributes["veltrix.reason"], "target_rejected");
        let error = dead.attributes["veltrix.error"].to_string();
        assert!(error.contains(&status.to_string()), "{error}");
        assert!(error.contains(&format!("Location: http://{addr}/final")), "{error}");
        assert!(
            !error.contains("pw") && !error.contains("secret"),
            "no secrets: {error}"
        );
        assert_eq!(&dead.body[..], b"{\"n\": 1}", "the body is kept");
    }
}

#[tokio::test]
async fn http_errors_show_urls_without_userinfo_or_query_and_read_only_256_bytes() {
    let handler = Arc::new(Handler::default());
    let addr = serve(handler).await;
    let src = source("src");
    src.push_body("{\"n\": 1}");
    let started = std::time::Instant::now();
    let (summary, dlq) = through(
        &src,
        http(format!("http://user:s3cret@{addr}/endless?token=abc")),
        settings(),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "an endless error body is not read to its end"
    );
    assert_eq!(summary.dead_lettered, 1);
    let error = dlq.snapshot()[0].attributes["veltrix.error"].to_string();
    assert!(!error.contains("s3cret") && !error.contains("token"), "{error}");
    assert!(error.contains(&format!("http://{addr}/endless")), "{error}");
    let quoted = error.matches('e').count();
    assert!(
        (256..256 + 100).contains(&quoted),
        "the first 256 bytes are quoted: {error}"
    );
}

#[test]
fn a_bearer_token_to_a_plain_http_address_that_is_not_loopback_is_a_config_error() {
    let text = "[source]\ntype = \"file\"\npath = \"-\"\n[targets.h]\ntype = \"http\"\nurl = \"http://fraud.internal/events\"\nbearer_token_env = \"TOKEN\"\n";
    let e = veltrix::config::load_str(Path::new("t.toml"), text, &|_| None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("t.toml:7:"), "{e}");
    assert!(
        e.contains("targets.h.bearer_token_env") && e.contains("clear text"),
        "{e}"
    );
    for ok in [
        "https://fraud.internal/events",
        "http://127.0.0.1:8080/events",
        "http://localhost/x",
    ] {
        let text = text.replace("http://fraud.internal/events", ok);
        assert!(
            veltrix::config::load_str(Path::new("t.toml"), &text, &|_| None).is_ok(),
            "{ok}"
        );
    }
}

#[tokio::test]
async fn transforms_over_budget_are_dead_lettered_and_the_worker_goes_on() {
    let rs = rules(
        r#"
[[rules]]
name = "loop"
match = { body = { k = ["loop"] } }
actions = [{ type = "forward", target = "out", transform = "def f: f; f" }]
[[rules]]
name = "range"
match = { body = { k = ["range"] } }
actions = [{ type = "forward", target = "out", transform = "[range(1e9)]" }]
[[rules]]
name = "deep"
match = { body = { k = ["deep"] } }
actions = [{ type = "forward", target = "out", transform = "def r: [r]; r" }]
[[rules]]
name = "big"
match = { body = { k = ["big"] } }
actions = [{ type = "forward", target = "out", transform = ".body.k * 500000" }]
[[rules]]
name = "ok"
match = { body = { k = ["ok"] } }
actions = [{ type = "forward", target = "out", transform = "{n: .body.n}" }]
"#,
    );
    let src = source("src");
    for (i, k) in ["loop", "ok", "range", "ok", "deep", "ok", "big", "ok"]
        .iter()
        .enumerate()
    {
        src.push_body(format!("{{\"k\": \"{k}\", \"n\": {i}}}"));
    }
    src.close();
    let targets = Targets::new();
    let started = std::time::Instant::now();
    let summary = tokio::time::timeout(
        Duration::from_secs(60),
        worker(&src, rs, &targets, settings()).run(std::future::pending()),
    )
    .await
    .expect("no transform stalls the worker")
    .expect("no transform ends the worker");
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    assert_eq!((summary.forwarded, summary.dead_lettered), (4, 4), "{summary}");
    assert_eq!(numbers(&targets.out.snapshot()).len(), 4);
    for dead in targets.dlq.snapshot() {
        assert_eq!(
            dead.attributes["veltrix.reason"], "transform_budget_exceeded",
            "{:?}",
            dead.attributes
        );
        let body: serde_json::Value = serde_json::from_slice(&dead.body).unwrap();
        let rule = body["k"].as_str().unwrap();
        assert_eq!(dead.attributes["veltrix.rule"], rule);
        let error = dead.attributes["veltrix.error"].to_string();
        let expected: &[&str] = match rule {
            "loop" => &["longer than its budget"],
            // Whichever budget it breaks first: memory or time.
            "range" => &["longer than its budget", "ran out of memory"],
            "deep" => &["ran out of memory"],
            _ => &["over the limit"],
        };
        assert!(expected.iter().any(|e| error.contains(e)), "{rule}: {error}");
    }
}

#[test]
fn transforms_that_reach_outside_the_message_are_refused_at_load_with_their_position() {
    let dir = tempfile::tempdir().unwrap();
    for (code, name) in [
        ("{t: env.AWS_SECRET_ACCESS_KEY}", "env"),
        ("$ENV.HOME", "$ENV"),
        ("halt_error", "halt_error"),
        ("[inputs]", "inputs"),
        ("debug", "debug"),
        (". as $x | stderr", "stderr"),
        ("{at: now}", "now"),
    ] {
        let path = dir.path().join("w.toml");
        std::fs::write(
            &path,
            format!("[source]\ntype = \"file\"\npath = \"-\"\n[targets.out]\ntype = \"stdout\"\n[pipeline]\ndead_letter = \"out\"\n\n[[rules]]\nname = \"r\"\nmatch = {{ body = {{ a = [1] }} }}\nactions = [{{ type = \"forward\", target = \"out\", transform = '{code}' }}]\n"),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_veltrix"))
            .args(["check", "-c", path.to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{code}: {stderr}");
        assert!(stderr.contains("w.toml:12:"), "{code}: names the line: {stderr}");
        assert!(
            stderr.contains(&format!("`{name}` is not allowed in a transform")),
            "{code}: {stderr}"
        );
    }
}

#[tokio::test]
async fn bodies_over_max_body_bytes_are_dead_lettered_unparsed() {
    let src = source("src");
    src.push_body(format!("{{\"n\": 1, \"pad\": \"{}\"}}", "x".repeat(2000)));
    src.push_body("{\"n\": 2}");
    let mut s = settings();
    s.max_body_bytes = 1000;
    let out = MemoryQueue::named("out");
    let (summary, dlq) = through(&src, Arc::new(out.clone()), s).await;
    assert_eq!((summary.forwarded, summary.dead_lettered), (1, 1));
    let dead = &dlq.snapshot()[0];
    assert_eq!(dead.attributes["veltrix.reason"], "body_too_large");
    assert!(dead.attributes["veltrix.error"]
        .to_string()
        .contains("max_body_bytes = 1000"));
    assert_eq!(dead.body.len(), 2000 + 19, "the dead letter is the whole body");
}

#[tokio::test]
async fn a_file_line_longer_than_max_body_bytes_is_cut_and_dead_lettered_with_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    std::fs::write(
        &events,
        format!("{{\"n\": 1, \"pad\": \"{}\"}}\n{{\"n\": 2}}\n", "x".repeat(5000)),
    )
    .unwrap();
    let config = dir.path().join("w.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\ntype = \"file\"\npath = \"events.jsonl\"\nmax_body_bytes = 1024\n[targets.out]\ntype = \"file\"\npath = \"out.jsonl\"\n[targets.dlq]\ntype = \"file\"\npath = \"dlq.jsonl\"\n[pipeline]\ndead_letter = \"dlq\"\n{FORWARD_ALL}"
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_veltrix"))
        .args(["run", "-c", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dead = std::fs::read_to_string(dir.path().join("dlq.jsonl")).unwrap();
    let record = veltrix_queue::record::parse(dead.lines().next().unwrap().as_bytes()).unwrap();
    assert_eq!(record.attributes["veltrix.reason"], "body_too_large");
    assert!(
        record.attributes["veltrix.error"]
            .to_string()
            .contains("the line is 5019 bytes"),
        "{:?}",
        record.attributes
    );
    assert_eq!(record.body.len(), 1025, "cut one byte past the limit, never read whole");
    let forwarded = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    assert_eq!(forwarded.lines().count(), 1);
}

#[tokio::test(start_paused = true)]
async fn bytes_in_flight_stay_within_max_in_flight_bytes() {
    const BODY: usize = 256 * 1024;
    // It stands in for SQS: receives are unbuffered, so each reserves ten bodies' worth.
    let src = MemoryQueue::new(MemoryQueueConfig {
        receive_unbuffered: true,
        ..MemoryQueueConfig::named("src")
    });
    for n in 0..60 {
        src.push_body(format!("{{\"n\": {n}, \"pad\": \"{}\"}}", "x".repeat(BODY)));
    }
    src.close();
    let mut out_cfg = MemoryQueueConfig::named("out");
    out_cfg.call_latency = Duration::from_millis(500);
    let targets = Targets {
        out: MemoryQueue::new(out_cfg),
        ..Targets::new()
    };
    let mut s = settings();
    s.max_in_flight = 1000;
    s.max_in_flight_bytes = 2 * 1024 * 1024;
    // Up to 16 pollers as receives come back full; each receive reserves the most it can
    // bring (10 bodies of `max_body_bytes`, derived from the source's limits as
    // `Settings::default()` leaves it), so whatever their number one batch over the budget is
    // the bound.
    s.pollers = 2;
    s.max_pollers = 16;
    s.max_body_bytes = BODY + 20;
    assert_eq!(s.receive_reserve_bytes, None);
    let bound = s.max_in_flight_bytes + 10 * (BODY + 20);
    let run = tokio::spawn(worker(&src, rules(FORWARD_ALL), &targets, s).run(std::future::pending()));
    let mut peak = 0;
    while !run.is_finished() {
        peak = peak.max(src.in_flight() * (BODY + 20));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    run.await.unwrap().unwrap();
    assert_eq!(targets.out.len(), 60);
    assert!(peak <= bound, "peak {peak} bytes held, bound {bound}");
    assert!(peak >= 2 * 1024 * 1024, "the budget is used: peak {peak}");
}

#[tokio::test(start_paused = true)]
async fn a_dead_letter_target_that_refuses_for_good_tries_smaller_envelopes_and_never_acks() {
    let src = source("src");
    src.push_body("not json: unmatched");
    src.close();
    let targets = Targets::new();
    targets.dlq.set_publish_fault(Some(Fault {
        error: QueueError::permanent("message too large for this queue"),
        remaining: None,
    }));
    let mut s = settings();
    s.retry.max_backoff = Duration::from_secs(120);
    let w = worker(&src, rules(FORWARD_ALL), &targets, s);
    let stats = w.stats();
    let run = tokio::spawn(w.run(std::future::pending()));
    tokio::time::sleep(Duration::from_secs(600)).await;
    let snapshot = stats.snapshot();
    assert_eq!(src.len(), 1, "never acked without a written dead letter");
    assert!(
        snapshot.received <= 6,
        "a refused dead letter backs off for max_backoff, no hot loop: {snapshot}"
    );
    assert_eq!(
        snapshot.dead_letter_failures,
        3 * snapshot.received,
        "three envelopes tried each time: {snapshot}"
    );
    targets.dlq.set_publish_fault(None);
    wait_until(
        Duration::from_secs(300),
        "the dead letter is written once the target takes it",
        || src.is_empty(),
    )
    .await;
    run.abort();
    assert_eq!(targets.dlq.snapshot()[0].attributes["veltrix.reason"], "unmatched");
}

#[tokio::test(start_paused = true)]
async fn leases_of_five_thousand_messages_stay_extended_at_fifty_ms_per_call() {
    let mut src_cfg = MemoryQueueConfig::named("src");
    src_cfg.visibility_timeout = Duration::from_secs(10);
    src_cfg.call_latency = Duration::from_millis(50);
    let src = MemoryQueue::new(src_cfg);
    for n in 0..5000 {
        src.push_body(format!("{{\"n\": {n}}}"));
    }
    src.close();
    let mut out_cfg = MemoryQueueConfig::named("out");
    out_cfg.call_latency = Duration::from_secs(120);
    let targets = Targets {
        out: MemoryQueue::new(out_cfg),
        ..Targets::new()
    };
    let mut s = settings();
    s.max_in_flight = 5000;
    s.pollers = 64;
    s.max_in_flight_bytes = 1 << 30;
    let summary = worker(&src, rules(FORWARD_ALL), &targets, s)
        .run(std::future::pending())
        .await
        .unwrap();
    assert_eq!(
        summary.received, 5000,
        "no message was redelivered while held: {summary}"
    );
    assert_eq!(targets.out.len(), 5000);
    assert!(summary.lease_extensions >= 5000, "{summary}");
}

#[tokio::test(start_paused = true)]
async fn empty_receives_that_return_at_once_back_off() {
    let src = source("src");
    let targets = Targets::new();
    let mut s = settings();
    s.receive_wait = Duration::ZERO;
    let w = worker(&src, rules(FORWARD_ALL), &targets, s);
    let stats = w.stats();
    let run = tokio::spawn(w.run(std::future::pending()));
    tokio::time::sleep(Duration::from_secs(10)).await;
    let empty = stats.snapshot().empty_receives;
    assert!(empty <= 20, "{empty} empty receives in 10 s: no hot loop");
    src.push_body("{\"n\": 1}");
    wait_until(
        Duration::from_secs(5),
        "a message still arrives within the longest pause",
        || targets.out.len() == 1,
    )
    .await;
    run.abort();
}

#[tokio::test]
async fn producer_set_own_attributes_cannot_pass_for_the_workers() {
    let src = source("src");
    src.push(body_with(
        &[
            ("veltrix.reason", "spoofed"),
            ("veltrix.attempts", "99"),
            ("tenant", "t"),
        ],
        "unmatched: no n",
    ));
    src.push(body_with(&[("veltrix.rule", "upstream-rule")], "{\"n\": 1}"));
    let out = MemoryQueue::named("out");
    let (_, dlq) = through(&src, Arc::new(out.clone()), settings()).await;
    let dead = &dlq.snapshot()[0];
    assert_eq!(dead.attributes["veltrix.reason"], "unmatched");
    assert_eq!(dead.attributes["veltrix.attempts"], "1");
    assert_eq!(dead.attributes["veltrix.upstream.reason"], "spoofed");
    assert_eq!(dead.attributes["veltrix.upstream.attempts"], "99");
    let forwarded = &out.snapshot()[0];
    assert_eq!(forwarded.attributes["veltrix.rule"], "all");
    assert_eq!(forwarded.attributes["veltrix.upstream.rule"], "upstream-rule");
    // A replay gives the message back the attributes it came with.
    let back = MemoryQueue::named("back");
    let dlq_again = MemoryQueue::named("dlq-again");
    for m in dlq.snapshot() {
        dlq_again.push(OutboundMessage {
            body: m.body,
            attributes: m.attributes,
            ..Default::default()
        });
    }
    let options = ReplayOptions {
        receive_wait: Duration::from_millis(200),
        ..ReplayOptions::default()
    };
    replay(Arc::new(dlq_again), &back, &options, |_| {}).await.unwrap();
    let replayed = &back.snapshot()[0];
    assert_eq!(replayed.attributes["veltrix.reason"], "spoofed");
    assert_eq!(replayed.attributes["veltrix.attempts"], "99");
    assert_eq!(replayed.attributes["tenant"], "t");
    assert_eq!(replayed.attributes["veltrix.replays"], "1");
    assert_eq!(replayed.attributes.len(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_slow_replay_keeps_its_dead_letters_leased_and_publishes_each_once() {
    let mut cfg = MemoryQueueConfig::named("dlq");
    cfg.visibility_timeout = Duration::from_secs(2);
    let dlq = MemoryQueue::new(cfg);
    for n in 0..8 {
        dlq.push(body_with(
            &[("veltrix.reason", "unmatched")],
            &format!("{{\"n\": {n}}}"),
        ));
    }
    let to = MemoryQueue::named("to");
    let options = ReplayOptions {
        rate_per_sec: Some(1.0),
        receive_wait: Duration::from_millis(500),
        ..ReplayOptions::default()
    };
    let summary = replay(Arc::new(dlq.clone()), &to, &options, |_| {}).await.unwrap();
    assert_eq!(summary.replayed, 8, "{summary}");
    assert_eq!(summary.read, 8, "no dead letter came back to be read twice: {summary}");
    let mut got = numbers(&to.snapshot());
    got.sort();
    assert_eq!(got, (0..8).collect::<Vec<_>>(), "each published once");
    assert!(dlq.is_empty());
}

#[test]
fn replay_refuses_to_publish_into_the_queue_it_reads() {
    let text = "[source]\ntype = \"sqs\"\nqueue_url = \"https://sqs.eu-west-1.amazonaws.com/1/q\"\n[targets.dlq]\ntype = \"sqs\"\nqueue_url = \"https://sqs.eu-west-1.amazonaws.com/1/q-dlq\"\n[targets.file]\ntype = \"file\"\npath = \"dl.jsonl\"\n[pipeline]\ndead_letter = \"dlq\"\n";
    let c = veltrix::config::load_str(Path::new("r.toml"), text, &|_| None).unwrap();
    let e = veltrix::replay::open::check_distinct(&c, None, "dlq")
        .unwrap_err()
        .to_string();
    assert!(e.contains("where they are read from"), "{e}");
    assert!(veltrix::replay::open::check_distinct(&c, Some("file"), "file").is_err());
    assert!(veltrix::replay::open::check_distinct(&c, None, "source").is_ok());
    assert!(veltrix::replay::open::check_distinct(&c, Some("file"), "dlq").is_ok());
}

#[test]
fn record_files_replay_byte_for_byte_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.jsonl");
    let bodies: Vec<&[u8]> = vec![
        br#"{"big": 123456789012345678901234567890, "f": 1.10}"#,
        br#""a JSON string""#,
        b"text",
        b"\xff\x00not utf-8",
    ];
    let mut lines = Vec::new();
    for (i, b) in bodies.iter().enumerate() {
        let mut attributes: veltrix_queue::Attributes = [("veltrix.reason", "unmatched")].into_iter().collect();
        attributes.insert("n", veltrix_queue::AttributeValue::typed_text("Number", i.to_string()));
        lines.extend(veltrix_queue::record::render(&OutboundMessage {
            body: Bytes::copy_from_slice(b),
            attributes,
            ..Default::default()
        }));
    }
    std::fs::write(&dead, lines).unwrap();
    let config = dir.path().join("w.toml");
    std::fs::write(
        &config,
        "[source]\ntype = \"file\"\npath = \"in.jsonl\"\n[targets.dlq]\ntype = \"file\"\npath = \"dead.jsonl\"\n[targets.back]\ntype = \"file\"\npath = \"back.jsonl\"\n[pipeline]\ndead_letter = \"dlq\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_veltrix"))
        .args([
            "dlq",
            "replay",
            "-c",
            config.to_str().unwrap(),
            "--to",
            "back",
            "--wait-secs",
            "1",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let back = std::fs::read(dir.path().join("back.jsonl")).unwrap();
    let records: Vec<_> = back
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| veltrix_queue::record::parse(l).unwrap())
        .collect();
    assert_eq!(records.len(), bodies.len());
    for r in records {
        let n: usize = r.attributes["n"].to_string().parse().unwrap();
        assert_eq!(&r.body[..], bodies[n]);
        assert_eq!(r.attributes["n"].data_type(), "Number");
        assert!(!r.attributes.contains_key("veltrix.reason"));
    }
}

/// A reload while messages are in flight: those that started under generation 1 finish there
/// (to `out`, slow), every later one follows generation 2 (to `audit`); no message is lost or
/// sent to both; a reload naming a target the worker does not have is refused and changes
/// nothing.
#[tokio::test(start_paused = true)]
async fn a_reload_leaves_messages_in_flight_on_their_generation_and_routes_the_rest_by_the_new_one() {
    use veltrix::pipeline::settings::TargetLimits;
    use veltrix::pipeline::{NextGeneration, NextTarget, ReloadError};
    const MESSAGES: u64 = 200;
    let src = source("src");
    for n in 0..MESSAGES {
        src.push_body(format!("{{\"n\": {n}}}"));
    }
    let mut out_cfg = MemoryQueueConfig::named("out");
    out_cfg.call_latency = Duration::from_millis(200);
    let targets = Targets {
        out: MemoryQueue::new(out_cfg),
        ..Targets::new()
    };
    let mut s = settings();
    s.max_in_flight = 20;
    let w = worker(&src, rules(FORWARD_ALL), &targets, s);
    let reloader = w.reloader();
    let stats = w.stats();
    let health = w.health();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(w.run(async move {
        let _ = stopped.await;
    }));
    wait_until(Duration::from_secs(60), "some forwards to out", || {
        targets.out.len() >= 20
    })
    .await;

    let refused = reloader
        .reload(NextGeneration {
            hash: "bad".into(),
            rules: rules(FORWARD_ALL),
            targets: vec![("nope".into(), NextTarget::Running("nope".into()))],
            dead_letter: 0,
        })
        .await;
    assert!(
        matches!(refused, Err(ReloadError::UnknownTarget(ref t)) if t == "nope"),
        "{refused:?}"
    );
    assert_eq!(health.config().0, 1, "still generation 1");

    // Generation 2: the same targets (dlq kept, audit opened afresh), every message to audit.
    let to_audit = FORWARD_ALL.replace("target = \"out\"", "target = \"audit\"");
    let fresh_audit = MemoryQueue::named("audit-2");
    let reloaded = reloader
        .reload(NextGeneration {
            hash: "v2".into(),
            rules: rules(&to_audit),
            targets: vec![
                (
                    "audit".into(),
                    NextTarget::Open(Arc::new(fresh_audit.clone()), TargetLimits::default()),
                ),
                ("dlq".into(), NextTarget::Running("dlq".into())),
                ("out".into(), NextTarget::Running("out".into())),
            ],
            dead_letter: 1,
        })
        .await
        .unwrap();
    assert_eq!(reloaded.generation, 2);
    assert_eq!(health.config(), (2, "v2".to_string()));
    wait_until(Duration::from_secs(600), "every message settled", || {
        stats.snapshot().forwarded == MESSAGES
    })
    .await;
    let _ = stop.send(());
    let summary = run.await.unwrap().unwrap();
    assert_eq!(summary.forwarded, MESSAGES, "{summary}");
    assert_eq!(summary.dead_lettered, 0, "{summary}");
    assert!(src.is_empty(), "every message acked");
    let old: BTreeSet<u64> = numbers(&targets.out.snapshot()).into_iter().collect();
    let new: BTreeSet<u64> = numbers(&fresh_audit.snapshot()).into_iter().collect();
    assert!(
        old.len() >= 20 && !new.is_empty(),
        "old {} new {}",
        old.len(),
        new.len()
    );
    assert_eq!(old.intersection(&new).count(), 0, "no message in both generations");
    assert_eq!(old.len() + new.len(), MESSAGES as usize);
    assert!(targets.audit.is_empty(), "the replaced audit target got nothing");
}
