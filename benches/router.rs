//! The forwarding mix on LocalStack SQS (issue 15): of every 10 messages 7 are forwarded to a
//! target queue, 2 dead-lettered to a dead-letter queue and 1 dropped. Contestants:
//!
//! - `bare`: a bare aws-sdk-sqs router, 8 tasks, each: receive 10 (long poll), one
//!   `SendMessageBatch` to the target and one to the dead-letter queue, one
//!   `DeleteMessageBatch`;
//! - `veltrix default`: the worker with its default config (loaded from TOML like a user's);
//! - `veltrix flush10`: the same with `publish_flush_ms = 10`;
//! - `sqs-consumer`: a Node.js router on the `sqs-consumer` library with 8 consumers
//!   (`benches/peers/sqs-consumer`, pinned; `npm ci` there first, which `benches/run.sh` and
//!   `scripts/test.sh` do), the peer most teams would pick.
//!
//! Every contestant is timed the same way: from its start until the source queue is verified
//! empty (visible and in-flight counts both 0, so every delete is in) and the target and
//! dead-letter queues hold all they should. The order of contestants rotates per round;
//! results are the median and min–max of the rounds, with requests per message counted by an
//! SDK interceptor on each contestant's own client (the depth checks use another client).
//!
//! Needs LocalStack on 127.0.0.1:4566 (`benches/run.sh` starts it).
//! Run: `cargo bench --bench router` (`-- quick`: 1 round of 1,000 messages, for CI).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_sqs::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_sqs::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_sqs::error::BoxError;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use aws_sdk_sqs::Client;
use common::SQS_ENDPOINT as ENDPOINT;
use veltrix::pipeline::Worker;
use veltrix_queue::Publisher;
use veltrix_sqs::{SqsSource, SqsSourceOptions, SqsTarget};

/// Consumers of the bare router (the peers were run with 8).
const BARE_TASKS: usize = 8;

/// Counts HTTP attempts made by one client, per operation (`X-Amz-Target`).
#[derive(Debug, Default, Clone)]
struct CountRequests(Arc<std::sync::Mutex<std::collections::BTreeMap<String, u64>>>);

impl CountRequests {
    /// Requests of every operation.
    fn total(&self) -> u64 {
        self.0.lock().expect("counts").values().sum()
    }

    /// Requests per message by operation, e.g. `ReceiveMessage 0.10`.
    fn per_operation(&self, n: usize) -> String {
        let by_op = self.0.lock().expect("counts");
        by_op
            .iter()
            .map(|(op, c)| format!("{op} {:.3}", *c as f64 / n as f64))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "CountRequests"
    }

    fn read_before_attempt(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let op = context
            .request()
            .headers()
            .get("x-amz-target")
            .map_or("other", |t| t.trim_start_matches("AmazonSQS."));
        *self.0.lock().expect("counts").entry(op.to_string()).or_default() += 1;
        Ok(())
    }
}

fn client(count: Option<CountRequests>) -> Client {
    let mut config = common::sqs_config();
    if let Some(count) = count {
        config = config.interceptor(count);
    }
    Client::from_conf(config.build())
}

struct Queues {
    source: String,
    out: String,
    dlq: String,
}

async fn fresh_queues(c: &Client, n: usize) -> Queues {
    let q = Queues {
        source: common::sqs_queue(c, "router-src").await,
        out: common::sqs_queue(c, "router-out").await,
        dlq: common::sqs_queue(c, "router-dlq").await,
    };
    common::sqs_fill(c, &q.source, n, |i| {
        format!(
            r#"{{"type":"order.created","kind":"{}","id":"o-{i}","pad":"{}"}}"#,
            common::router_kind(i),
            "x".repeat(800)
        )
    })
    .await;
    q
}

/// Waits until the source is empty and the target and dead-letter queues hold what they
/// should; returns the time since `start`.
async fn until_done(c: &Client, q: &Queues, n: usize, start: Instant) -> Duration {
    let forwards = (0..n).filter(|&i| common::router_kind(i) == "forward").count() as u64;
    let dead = (0..n).filter(|&i| common::router_kind(i) == "dead").count() as u64;
    let deadline = start + Duration::from_secs(600);
    loop {
        if common::sqs_depth(c, &q.source).await == (0, 0) {
            let elapsed = start.elapsed();
            let (out, _) = common::sqs_depth(c, &q.out).await;
            let (dlq, _) = common::sqs_depth(c, &q.dlq).await;
            assert!(
                out >= forwards && dlq >= dead,
                "source empty but {out}/{forwards} forwards and {dlq}/{dead} dead letters arrived"
            );
            return elapsed;
        }
        assert!(Instant::now() < deadline, "the source did not empty within 600 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The bare router: `BARE_TASKS` loops of receive → batched sends → batched delete.
async fn bare(q: &Queues, n: usize, count: CountRequests, check: &Client) -> Duration {
    let c = client(Some(count));
    let start = Instant::now();
    let stop = tokio_util::sync::CancellationToken::new();
    let mut tasks = Vec::new();
    for _ in 0..BARE_TASKS {
        let (c, src, out, dlq, stop) = (c.clone(), q.source.clone(), q.out.clone(), q.dlq.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.is_cancelled() {
                let received = tokio::select! {
                    r = c.receive_message().queue_url(&src).max_number_of_messages(10).wait_time_seconds(20).send() => r.expect("receive"),
                    _ = stop.cancelled() => return,
                };
                let messages = received.messages();
                if messages.is_empty() {
                    continue;
                }
                let (mut forward, mut dead) = (Vec::new(), Vec::new());
                for (i, m) in messages.iter().enumerate() {
                    let body = m.body().unwrap_or_default();
                    let value: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
                    let entry = SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body)
                        .build()
                        .unwrap();
                    match value["kind"].as_str() {
                        Some("forward") => forward.push(entry),
                        Some("dead") => dead.push(entry),
                        _ => {}
                    }
                }
                for (url, entries) in [(&out, forward), (&dlq, dead)] {
                    if !entries.is_empty() {
                        let sent = c
                            .send_message_batch()
                            .queue_url(url)
                            .set_entries(Some(entries))
                            .send()
                            .await
                            .expect("send");
                        assert!(sent.failed().is_empty(), "a send failed");
                    }
                }
                common::sqs_delete(&c, &src, messages).await;
            }
        }));
    }
    let took = until_done(check, q, n, start).await;
    stop.cancel();
    for t in tasks {
        t.await.unwrap();
    }
    took
}

/// The Node.js peer: `benches/peers/sqs-consumer/router.mjs`, run until the source is empty,
/// then stopped with SIGTERM; it prints its request counts as it stops.
async fn sqs_consumer(q: &Queues, n: usize, count: CountRequests, check: &Client) -> Duration {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peers/sqs-consumer");
    assert!(
        dir.join("node_modules/sqs-consumer").is_dir(),
        "the sqs-consumer peer is not installed: run `npm ci` in {} (benches/run.sh does it)",
        dir.display()
    );
    let start = Instant::now();
    let child = std::process::Command::new("node")
        .arg(dir.join("router.mjs"))
        .env("SOURCE_URL", &q.source)
        .env("OUT_URL", &q.out)
        .env("DLQ_URL", &q.dlq)
        .env("ENDPOINT", ENDPOINT)
        .env("CONSUMERS", BARE_TASKS.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start node (Node.js 20 or later)");
    let took = until_done(check, q, n, start).await;
    // SAFETY: signals our own child, which has not been waited for yet.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let out = tokio::task::spawn_blocking(|| child.wait_with_output())
        .await
        .unwrap()
        .expect("the peer stops");
    assert!(out.status.success(), "the sqs-consumer peer failed: {:?}", out.status);
    let line = String::from_utf8_lossy(&out.stdout);
    let counts: std::collections::BTreeMap<String, u64> =
        serde_json::from_str(line.trim().lines().last().unwrap_or_default()).expect("the peer's request counts");
    let mut into = count.0.lock().expect("counts");
    for (command, c) in counts {
        *into.entry(command.trim_end_matches("Command").to_string()).or_default() += c;
    }
    took
}

/// The worker, configured from TOML as a user would (`extra` goes under `[pipeline]`).
async fn worker(q: &Queues, n: usize, count: CountRequests, check: &Client, extra: &str) -> Duration {
    let head = format!(
        r#"
[source]
type = "sqs"
queue_url = "{src}"
endpoint_url = "{ENDPOINT}"

[targets.out]
type = "sqs"
queue_url = "{out}"
endpoint_url = "{ENDPOINT}"

[targets.dlq]
type = "sqs"
queue_url = "{dlq}"
endpoint_url = "{ENDPOINT}"
"#,
        src = q.source,
        out = q.out,
        dlq = q.dlq,
    );
    let config = common::router_config(&head, extra);
    let start = Instant::now();
    let c = client(Some(count));
    let source = SqsSource::open(
        c.clone(),
        SqsSourceOptions {
            queue_url: q.source.clone(),
            visibility_timeout: None,
            endpoint_url: Some(ENDPOINT.into()),
        },
    )
    .await
    .expect("open the source");
    let targets: Vec<(String, Arc<dyn Publisher>)> = config
        .targets
        .iter()
        .map(|t| {
            let url = if t.name == "out" { &q.out } else { &q.dlq };
            let p: Arc<dyn Publisher> = Arc::new(SqsTarget::new(c.clone(), url.clone(), Some(ENDPOINT.into())));
            (t.name.clone(), p)
        })
        .collect();
    let dead_letter = config.dead_letter.expect("dead_letter is set");
    let w = Worker::new(
        Arc::new(source),
        config.rules.clone(),
        targets,
        dead_letter,
        config.settings.clone(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(w.run(async move {
        let _ = stopped.await;
    }));
    let took = until_done(check, q, n, start).await;
    let _ = stop.send(());
    run.await.unwrap().expect("the worker ran");
    took
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let quick = std::env::args().any(|a| a == "quick");
    let (n, rounds) = if quick { (1_000, 1) } else { (10_000, 5) };
    let rt = common::runtime();
    rt.block_on(async {
        let check = client(None);
        let names = ["bare", "veltrix default", "veltrix flush10", "sqs-consumer"];
        let mut rates: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
        let mut requests: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
        for round in 0..rounds {
            for k in 0..names.len() {
                // Rotate the order per round.
                let who = (k + round) % names.len();
                let q = fresh_queues(&check, n).await;
                let count = CountRequests::default();
                let took = match who {
                    0 => bare(&q, n, count.clone(), &check).await,
                    1 => worker(&q, n, count.clone(), &check, "").await,
                    2 => worker(&q, n, count.clone(), &check, "publish_flush_ms = 10").await,
                    _ => sqs_consumer(&q, n, count.clone(), &check).await,
                };
                rates[who].push(n as f64 / took.as_secs_f64());
                requests[who].push(count.total() as f64 / n as f64);
                println!(
                    "  round {round} {}: {:.0} msg/s, requests/msg {}",
                    names[who],
                    n as f64 / took.as_secs_f64(),
                    count.per_operation(n)
                );
                for url in [&q.source, &q.out, &q.dlq] {
                    let _ = check.delete_queue().queue_url(url).send().await;
                }
            }
        }
        let (bare_median, _, _) = common::spread(rates[0].clone());
        for (who, name) in names.iter().enumerate() {
            let (m, lo, hi) = common::spread(rates[who].clone());
            let (r, rlo, rhi) = common::spread(requests[who].clone());
            println!(
                "router_mix {name}: {m:.0} msg/s (min {lo:.0}, max {hi:.0}), {r:.3} requests/msg ({rlo:.3}–{rhi:.3}), {:.2}x bare (median of {rounds}, {n} messages each)",
                m / bare_median
            );
        }
    });
}
