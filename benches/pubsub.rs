//! Worker throughput on the Google Pub/Sub emulator against a bare streaming-pull loop with the
//! same crate (google-cloud-pubsub) and the same number of streams, measured in the same run on
//! fresh subscriptions filled the same way.
//!
//! Needs the emulator on 127.0.0.1:8085 (`localstack/pubsub-start.sh`; `benches/run.sh` starts
//! it). Run: `cargo bench --bench pubsub` (add `-- quick` for a shorter run).
//!
//! The emulator serves one streaming pull at roughly 2,000 msg/s whatever the flow control, so
//! the absolute numbers say little about Google Cloud; the ratio says what the worker costs.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use veltrix::pipeline::settings::Settings;
use veltrix_pubsub::emulator::{EmulatorAdmin, SubscriptionSpec};
use veltrix_pubsub::{PubSubSource, PubSubSourceOptions, PubSubTarget};
use veltrix_queue::{OutboundMessage, Publisher};

const MAX_OUTSTANDING: u64 = 1000;

/// A fresh topic and subscription holding `n` ~1 KB messages.
async fn filled(admin: &EmulatorAdmin, n: usize) -> String {
    let (topic, sub) = admin
        .topic_with_subscription("bench", |s| SubscriptionSpec {
            ack_deadline_secs: 60,
            ..s
        })
        .await
        .expect("topic and subscription");
    let body =
        serde_json::to_string(&json!({"type": "order.created", "id": "o-1", "amount": 1500, "pad": "x".repeat(800)}))
            .unwrap();
    let target = PubSubTarget::open(&admin.connection, &topic).await.expect("target");
    let message = OutboundMessage {
        body: body.into(),
        ..Default::default()
    };
    let mut left = n;
    while left > 0 {
        let k = left.min(1000);
        for r in target.publish(vec![message.clone(); k]).await {
            r.expect("publish");
        }
        left -= k;
    }
    sub
}

/// The baseline: `streams` streaming pulls with the crate, acking each message as it arrives.
async fn bare_loop(admin: &EmulatorAdmin, sub: &str, n: usize, streams: usize) -> f64 {
    let subscriber = admin.connection.subscriber(sub).await.expect("subscriber");
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let mut stream = subscriber
            .subscribe(sub.to_string())
            .set_max_outstanding_messages(MAX_OUTSTANDING as i64)
            .build();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let token = stream.shutdown_token();
            while done.load(std::sync::atomic::Ordering::SeqCst) < n {
                match tokio::time::timeout(Duration::from_millis(200), stream.next()).await {
                    Ok(Some(Ok((_message, handler)))) => {
                        handler.ack();
                        done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    Ok(Some(Err(e))) => panic!("stream error: {e}"),
                    Ok(None) => break,
                    Err(_) => {}
                }
            }
            token.shutdown().await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// The worker: the same number of streams, a rule that matches and drops (acks).
async fn worker_run(admin: &EmulatorAdmin, sub: &str, n: usize, streams: usize) -> f64 {
    let source = PubSubSource::open(
        &admin.connection,
        PubSubSourceOptions {
            subscription: sub.to_string(),
            streams,
            max_outstanding_messages: MAX_OUTSTANDING,
            max_outstanding_bytes: 100 << 20,
            visibility_timeout: None,
            max_hold: Duration::from_secs(3600),
        },
    )
    .await
    .expect("source");
    let settings = Settings {
        max_in_flight: 1024,
        receive_wait: Duration::from_secs(1),
        ..Settings::default()
    };
    common::drop_all_rate(Arc::new(source), settings, n).await
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let quick = std::env::args().any(|a| a == "quick");
    let n = if quick { 2_000 } else { 10_000 };
    let runs = if quick { 1 } else { 3 };
    let rt = common::runtime();
    rt.block_on(async {
        let admin = EmulatorAdmin::connect().await.expect("emulator");
        for streams in [1usize, 2, 4, 8] {
            let mut bare = Vec::new();
            let mut ours = Vec::new();
            for _ in 0..runs {
                let sub = filled(&admin, n).await;
                bare.push(bare_loop(&admin, &sub, n, streams).await);
                let sub = filled(&admin, n).await;
                ours.push(worker_run(&admin, &sub, n, streams).await);
            }
            let (b, w) = (common::median(bare), common::median(ours));
            println!(
                "pubsub_emulator streams={streams}: worker {w:.0} msg/s, bare streaming-pull loop {b:.0} msg/s, ratio {:.2} (median of {runs}, {n} messages each)",
                w / b
            );
        }
    });
}
