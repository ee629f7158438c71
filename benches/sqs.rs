//! Worker throughput on a LocalStack SQS queue against a bare aws-sdk-sqs receive+delete loop,
//! measured in the same run on the same kind of queue, and messages/s versus pollers.
//!
//! Needs LocalStack on 127.0.0.1:4566 (`localstack/start.sh`; `benches/run.sh` starts it).
//! Run: `cargo bench --bench sqs` (add `-- quick` for a shorter run).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_sqs::Client;
use common::SQS_ENDPOINT as ENDPOINT;
use serde_json::json;
use veltrix::pipeline::settings::Settings;
use veltrix_sqs::{SqsSource, SqsSourceOptions};

fn client() -> Client {
    Client::from_conf(common::sqs_config().build())
}

async fn fresh_queue(c: &Client) -> String {
    common::sqs_queue(c, "bench").await
}

async fn fill(c: &Client, url: &str, n: usize) {
    common::sqs_fill(c, url, n, |_| {
        serde_json::to_string(&json!({"type": "order.created", "id": "o-1", "amount": 1500, "pad": "x".repeat(800)}))
            .unwrap()
    })
    .await;
}

/// The baseline: `pollers` loops of receive(10, long poll) + DeleteMessageBatch.
async fn bare_loop(c: &Client, url: &str, n: usize, pollers: usize) -> f64 {
    let done = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..pollers {
        let (c, url, done) = (c.clone(), url.to_string(), done.clone());
        tasks.push(tokio::spawn(async move {
            while done.load(Ordering::SeqCst) < n {
                let out = c
                    .receive_message()
                    .queue_url(&url)
                    .max_number_of_messages(10)
                    .wait_time_seconds(1)
                    .send()
                    .await
                    .unwrap();
                let msgs = out.messages();
                if msgs.is_empty() {
                    continue;
                }
                common::sqs_delete(&c, &url, msgs).await;
                done.fetch_add(msgs.len(), Ordering::SeqCst);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// The worker: same queue kind, `pollers` pollers, a rule set that matches and drops (acks).
async fn worker_run(c: &Client, url: &str, n: usize, pollers: usize) -> f64 {
    let source = SqsSource::open(
        c.clone(),
        SqsSourceOptions {
            queue_url: url.to_string(),
            visibility_timeout: None,
            endpoint_url: Some(ENDPOINT.into()),
        },
    )
    .await
    .unwrap();
    let settings = Settings {
        pollers,
        max_pollers: pollers,
        max_in_flight: pollers * 20,
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
        let c = client();
        for pollers in [1usize, 2, 4, 8] {
            let mut bare = Vec::new();
            let mut ours = Vec::new();
            for _ in 0..runs {
                let url = fresh_queue(&c).await;
                fill(&c, &url, n).await;
                bare.push(bare_loop(&c, &url, n, pollers).await);
                let url2 = fresh_queue(&c).await;
                fill(&c, &url2, n).await;
                ours.push(worker_run(&c, &url2, n, pollers).await);
                let _ = c.delete_queue().queue_url(&url).send().await;
                let _ = c.delete_queue().queue_url(&url2).send().await;
            }
            let (b, w) = (common::median(bare), common::median(ours));
            println!(
                "localstack_sqs pollers={pollers}: worker {w:.0} msg/s, bare receive+delete loop {b:.0} msg/s, ratio {:.2} (median of {runs}, {n} messages each)",
                w / b
            );
        }
    });
}
