//! `/metrics`, `/healthz` and `/readyz` of the real binary: counts equal what was sent, and
//! readiness flips to 503 while draining.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::serve_on_loopback;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path).map(|t| t.lines().count()).unwrap_or(0)
}

async fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of the sample of `metric` whose labels contain every one of `labels`.
fn sample(text: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(metric) && !l.starts_with('#'))
        .filter(|l| l[metric.len()..].starts_with(['{', ' ']))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_count_what_was_sent_and_readiness_flips_during_drain() {
    // A handler that holds one request for 3 s, so a message is in flight at SIGTERM.
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let app = axum::Router::new().route(
        "/slow",
        axum::routing::post(move || {
            let h = h.clone();
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(3)).await;
                "ok"
            }
        }),
    );
    let slow = serve_on_loopback(app).await;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("w.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[source]
type = "file"
path = "-"
[targets.out]
type = "file"
path = "out.jsonl"
[targets.slow]
type = "http"
url = "http://{slow}/slow"
timeout_ms = 10000
[targets.dlq]
type = "file"
path = "dlq.jsonl"
[pipeline]
dead_letter = "dlq"
[[rules]]
name = "orders"
match = {{ body = {{ type = ["order"] }} }}
actions = [{{ type = "forward", target = "out" }}]
[[rules]]
name = "heartbeats"
match = {{ body = {{ type = ["heartbeat"] }} }}
actions = [{{ type = "drop" }}]
[[rules]]
name = "slow"
match = {{ body = {{ type = ["slow"] }} }}
actions = [{{ type = "forward", target = "slow" }}]
"#
        ),
    )
    .unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_veltrix"))
        .args([
            "run",
            "-c",
            config.to_str().unwrap(),
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
        ])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for i in 0..7 {
        writeln!(stdin, "{{\"type\": \"order\", \"n\": {i}}}").unwrap();
    }
    writeln!(stdin, "{{\"type\": \"heartbeat\"}}").unwrap();
    writeln!(stdin, "not json").unwrap();
    writeln!(stdin, "{{\"type\": \"unknown\"}}").unwrap();
    stdin.flush().unwrap();
    let (out, dlq) = (dir.path().join("out.jsonl"), dir.path().join("dlq.jsonl"));
    wait_until(Duration::from_secs(20), "7 forwarded and 2 dead-lettered", || {
        lines(&out) == 7 && lines(&dlq) == 2
    })
    .await;

    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let get = |path: &str| client.get(format!("{base}{path}")).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    // Settled counts are recorded right after the acks are queued: allow a moment.
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        text = get("/metrics").await.unwrap().text().await.unwrap();
        if sample(&text, "veltrix_messages_settled_total", &["outcome=\"dead_letter\""]) == Some(2.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        sample(&text, "veltrix_messages_received_total", &[]),
        Some(10.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "veltrix_messages_settled_total", &["outcome=\"forward\""]),
        Some(7.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "veltrix_messages_settled_total", &["outcome=\"drop\""]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "veltrix_messages_settled_total", &["outcome=\"dead_letter\""]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "veltrix_rule_matches_total", &["rule=\"orders\""]),
        Some(7.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "veltrix_dead_letters_total", &["reason=\"unmatched\""]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "veltrix_target_publishes_total",
            &["target=\"out\"", "result=\"ok\""]
        ),
        Some(7.0),
        "{text}"
    );
    assert_eq!(sample(&text, "veltrix_in_flight", &[]), Some(0.0), "{text}");
    assert!(
        sample(&text, "veltrix_publish_duration_seconds_count", &["target=\"out\""]).is_some(),
        "{text}"
    );
    assert!(
        sample(&text, "veltrix_backlog_messages", &["source=\"-\""]).is_some(),
        "{text}"
    );
    // Every exported name is in the documented list (the Grafana dashboard is checked against it).
    for line in text.lines().filter(|l| l.starts_with("veltrix_")) {
        let name = line.split(['{', ' ']).next().unwrap();
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
        assert!(
            veltrix::observe::METRIC_NAMES.contains(&base),
            "undocumented metric {name}"
        );
    }

    // One slow message in flight, then SIGTERM: /readyz turns 503 while the drain waits for it.
    writeln!(stdin, "{{\"type\": \"slow\"}}").unwrap();
    stdin.flush().unwrap();
    wait_until(Duration::from_secs(10), "the slow handler got the request", || {
        hits.load(Ordering::SeqCst) == 1
    })
    .await;
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let status = get("/readyz").await.unwrap().status();
        if status == 503 {
            break;
        }
        assert!(Instant::now() < deadline, "/readyz still {status} after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    drop(stdin);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("received=11 forwarded=8 dropped=1"),
        "the slow message finished during the drain: {stderr}"
    );
}
