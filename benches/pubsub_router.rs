//! The forwarding mix of `router.rs` on the Google Pub/Sub emulator (issue 15): of every 10
//! messages 7 are forwarded to a target topic, 2 dead-lettered to a dead-letter topic and 1
//! dropped. Contestants:
//!
//! - `bare`: a bare streaming-pull router with the same crate (google-cloud-pubsub) and the
//!   worker's default number of streams: each message is decoded, published to its topic with
//!   the crate's batching publisher, and acked once its publish is confirmed;
//! - `veltrix default`: the worker with its default config (loaded from TOML like a user's, and
//!   opened the way `veltrix run` opens it).
//!
//! Both are timed the same way: from their start until every message was settled and the
//! contestant shut down, so its acks reached the emulator (the crate sends them in the
//! background until its shutdown). Untimed checks follow: the target topics received every
//! forward and dead letter, and the source subscription redelivers nothing for longer than its
//! ack deadline (so every ack counted). The order of contestants rotates per round; results are
//! the median and min–max of the rounds. Requests per message are not counted: the crate's
//! gRPC calls (publishes, streaming pull, acks on the stream) are not visible to an interceptor.
//!
//! Needs the emulator on 127.0.0.1:8085 (`benches/run.sh` starts it).
//! Run: `cargo bench --bench pubsub_router` (`-- quick`: 1 round of 1,000 messages).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use veltrix::pipeline::Worker;
use veltrix_pubsub::emulator::{EmulatorAdmin, SubscriptionSpec};
use veltrix_pubsub::target::to_message;
use veltrix_pubsub::PubSubTarget;
use veltrix_queue::{OutboundMessage, Publisher};

/// The subscriptions' ack deadline: the least Pub/Sub allows, so the check that nothing comes
/// back after the run is short.
const ACK_DEADLINE_SECS: u64 = 10;

struct Topics {
    subscription: String,
    out: String,
    out_sub: String,
    dlq: String,
    dlq_sub: String,
}

async fn fresh_topics(admin: &EmulatorAdmin, n: usize) -> Topics {
    let spec = |s: SubscriptionSpec| SubscriptionSpec {
        ack_deadline_secs: ACK_DEADLINE_SECS as i32,
        ..s
    };
    let (source, subscription) = admin.topic_with_subscription("router-src", spec).await.expect("source");
    let (out, out_sub) = admin.topic_with_subscription("router-out", spec).await.expect("target");
    let (dlq, dlq_sub) = admin
        .topic_with_subscription("router-dlq", spec)
        .await
        .expect("dead letters");
    let target = PubSubTarget::open(&admin.connection, &source).await.expect("fill");
    for first in (0..n).step_by(1000) {
        let batch = (first..(first + 1000).min(n))
            .map(|i| OutboundMessage {
                body: format!(
                    r#"{{"type":"order.created","kind":"{}","id":"o-{i}","pad":"{}"}}"#,
                    common::router_kind(i),
                    "x".repeat(800)
                )
                .into(),
                ..Default::default()
            })
            .collect();
        for r in target.publish(batch).await {
            r.expect("fill the source topic");
        }
    }
    Topics {
        subscription,
        out,
        out_sub,
        dlq,
        dlq_sub,
    }
}

/// The bare router: one streaming pull; per message a task that publishes and then acks.
async fn bare(admin: &EmulatorAdmin, t: &Topics, n: usize) -> Duration {
    let start = Instant::now();
    let subscriber = admin.connection.subscriber(&t.subscription).await.expect("subscriber");
    let out = Arc::new(admin.connection.publisher(&t.out).await.expect("publisher"));
    let dlq = Arc::new(admin.connection.publisher(&t.dlq).await.expect("publisher"));
    let mut stream = subscriber.subscribe(t.subscription.clone()).build();
    let token = stream.shutdown_token();
    let settled = Arc::new(AtomicUsize::new(0));
    let all_settled = Arc::new(tokio::sync::Notify::new());
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let next = tokio::select! {
            next = stream.next() => next,
            _ = all_settled.notified() => break,
        };
        let (message, handler) = match next {
            Some(Ok(m)) => m,
            Some(Err(e)) => panic!("stream error: {e}"),
            None => break,
        };
        let (out, dlq, settled, all_settled) = (out.clone(), dlq.clone(), settled.clone(), all_settled.clone());
        tasks.spawn(async move {
            let value: serde_json::Value = serde_json::from_slice(&message.data).unwrap_or_default();
            let to = match value["kind"].as_str() {
                Some("forward") => Some(out),
                Some("dead") => Some(dlq),
                _ => None,
            };
            if let Some(to) = to {
                let forward = OutboundMessage {
                    body: message.data.clone(),
                    ..Default::default()
                };
                let forward = to_message(forward).expect("within the limits");
                to.publish(forward).await.expect("publish");
            }
            handler.ack();
            if settled.fetch_add(1, Ordering::SeqCst) + 1 == n {
                all_settled.notify_one();
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    token.shutdown().await;
    start.elapsed()
}

/// The worker, configured from TOML as a user would, with its defaults.
async fn worker(t: &Topics, n: usize) -> Duration {
    let endpoint = veltrix_pubsub::emulator::endpoint();
    let head = format!(
        r#"
[source]
type = "pubsub"
subscription = "{subscription}"
endpoint = "{endpoint}"

[targets.out]
type = "pubsub"
topic = "{out}"
endpoint = "{endpoint}"

[targets.dlq]
type = "pubsub"
topic = "{dlq}"
endpoint = "{endpoint}"
"#,
        subscription = t.subscription,
        out = t.out,
        dlq = t.dlq,
    );
    let config = common::router_config(&head, "");
    let start = Instant::now();
    let (targets, source) = veltrix::runner::open_all(&config)
        .await
        .expect("open the targets and the source");
    let dead_letter = config.dead_letter.expect("dead_letter is set");
    let w = Worker::new(
        source,
        config.rules.clone(),
        targets,
        dead_letter,
        config.settings.clone(),
    );
    let stats = w.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(w.run(async move {
        let _ = stopped.await;
    }));
    let deadline = start + Duration::from_secs(600);
    loop {
        let s = stats.snapshot();
        if (s.forwarded + s.dead_lettered + s.dropped) as usize >= n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not settle {n} messages within 600 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = stop.send(());
    run.await.unwrap().expect("the worker ran");
    start.elapsed()
}

/// Pulls `subscription` (acking) for `window`, or until `enough` messages came; returns how many.
async fn pull_count(admin: &EmulatorAdmin, subscription: &str, enough: usize, window: Duration) -> usize {
    let subscriber = admin.connection.subscriber(subscription).await.expect("subscriber");
    let mut stream = subscriber.subscribe(subscription.to_string()).build();
    let token = stream.shutdown_token();
    let end = tokio::time::Instant::now() + window;
    let mut count = 0;
    while count < enough {
        match tokio::time::timeout_at(end, stream.next()).await {
            Ok(Some(Ok((_, handler)))) => {
                handler.ack();
                count += 1;
            }
            Ok(Some(Err(e))) => panic!("stream error: {e}"),
            Ok(None) | Err(_) => break,
        }
    }
    token.shutdown().await;
    count
}

/// Every forward and dead letter arrived, and nothing is left on the source.
async fn check(admin: &EmulatorAdmin, t: &Topics, n: usize, who: &str) {
    let forwards = (0..n).filter(|&i| common::router_kind(i) == "forward").count();
    let dead = (0..n).filter(|&i| common::router_kind(i) == "dead").count();
    let window = Duration::from_secs(30);
    let got = pull_count(admin, &t.out_sub, forwards, window).await;
    assert_eq!(got, forwards, "{who}: forwards that arrived");
    let got = pull_count(admin, &t.dlq_sub, dead, window).await;
    assert_eq!(got, dead, "{who}: dead letters that arrived");
    let left = pull_count(admin, &t.subscription, 1, Duration::from_secs(ACK_DEADLINE_SECS + 2)).await;
    assert_eq!(
        left, 0,
        "{who}: a message came back on the source after the run (an ack was lost)"
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let quick = std::env::args().any(|a| a == "quick");
    let (n, rounds) = if quick { (1_000, 1) } else { (10_000, 5) };
    let rt = common::runtime();
    rt.block_on(async {
        let admin = EmulatorAdmin::connect().await.expect("the Pub/Sub emulator (benches/run.sh starts it)");
        let names = ["bare", "veltrix default"];
        let mut rates: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
        for round in 0..rounds {
            for k in 0..names.len() {
                // Rotate the order per round.
                let who = (k + round) % names.len();
                let t = fresh_topics(&admin, n).await;
                let took = match who {
                    0 => bare(&admin, &t, n).await,
                    _ => worker(&t, n).await,
                };
                check(&admin, &t, n, names[who]).await;
                let rate = n as f64 / took.as_secs_f64();
                rates[who].push(rate);
                println!("  round {round} {}: {rate:.0} msg/s", names[who]);
            }
        }
        let (bare_median, _, _) = common::spread(rates[0].clone());
        for (who, name) in names.iter().enumerate() {
            let (m, lo, hi) = common::spread(rates[who].clone());
            println!(
                "pubsub_router_mix {name}: {m:.0} msg/s (min {lo:.0}, max {hi:.0}), {:.2}x bare (median of {rounds}, {n} messages each)",
                m / bare_median
            );
        }
    });
}
