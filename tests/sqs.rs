//! The SQS adapter against a real LocalStack: the shared backend behaviour suite, SQS specifics,
//! and the worker end to end. Each test uses fresh, randomly named queues.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::QueueAttributeName;
use common::localstack::{self, ENDPOINT};
use common::*;
use veltrix_queue::behaviour::{self, Backend, TestQueue};
use veltrix_queue::memory::{Fault, MemoryQueue, MemoryQueueConfig};
use veltrix_queue::{ErrorClass, OutboundMessage, Publisher, QueueError, Received, Source};
use veltrix_sqs::{SqsSource, SqsSourceOptions, SqsTarget};

struct Sqs;

fn target(url: &str) -> SqsTarget {
    SqsTarget::new(localstack::client(), url.to_string(), Some(ENDPOINT.into()))
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

#[async_trait]
impl Backend for Sqs {
    async fn fresh(&self, visibility: Duration) -> TestQueue {
        let url = queue("behaviour", visibility.as_secs().max(1)).await;
        TestQueue {
            source: Box::new(localstack::open_source(&url, None).await),
            publisher: Box::new(target(&url)),
        }
    }
    fn min_visibility(&self) -> Duration {
        Duration::from_secs(1)
    }
}

// The shared behaviour suite, one test per check so they run concurrently.
macro_rules! behaviour_suite {
    ($($check:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $check() {
            behaviour::$check(&Sqs).await;
        }
    )*};
}

behaviour_suite!(
    publish_then_receive_keeps_body_and_attributes,
    acked_message_is_not_redelivered,
    unacked_message_is_redelivered_after_visibility_timeout,
    nack_with_delay_redelivers_after_delay,
    nack_zero_redelivers_now,
    extend_keeps_message_invisible_past_visibility_timeout,
    batch_of_messages_arrives_once,
);

#[tokio::test]
async fn batch_delete_returns_only_the_failed_entries() {
    let client = localstack::client();
    let url = queue("partial", 30).await;
    let source = localstack::open_source(&url, None).await;
    for r in target(&url)
        .publish(vec![OutboundMessage {
            body: "a".into(),
            ..Default::default()
        }])
        .await
    {
        r.unwrap();
    }
    let Received::Messages(got) = source.receive(10, Duration::from_secs(5)).await.unwrap() else {
        panic!()
    };
    assert_eq!(got.len(), 1);
    let bogus = veltrix_sqs::source::receipt_token("not-a-receipt-handle");
    let err = source.ack(vec![got[0].token.clone(), bogus]).await.unwrap_err();
    assert_eq!(err.failed.len(), 1, "only the bad entry is reported: {}", err.error);
    assert!(err.error.message.contains("DeleteMessageBatch"), "{}", err.error);
    assert_eq!(
        localstack::depth(&client, &url).await,
        (0, 0),
        "the valid entry was deleted"
    );
    localstack::delete_queue(&client, &url).await;
}

/// Runs a worker on `source` until `done` holds (bounded), then shuts it down and returns the
/// summary.
fn sqs_worker(
    source: SqsSource,
    rules_toml: &str,
    targets: &Targets,
    s: veltrix::pipeline::settings::Settings,
) -> veltrix::pipeline::Worker {
    veltrix::pipeline::Worker::new(Arc::new(source), rules(rules_toml), targets.list(), 1, s)
}

fn n_body(n: u64) -> OutboundMessage {
    OutboundMessage {
        body: format!("{{\"n\": {n}}}").into(),
        ..Default::default()
    }
}

async fn send_all(url: &str, messages: Vec<OutboundMessage>) {
    let t = target(url);
    for chunk in messages.chunks(100) {
        for r in t.publish(chunk.to_vec()).await {
            r.expect("send to LocalStack");
        }
    }
}

fn sqs_settings() -> veltrix::pipeline::settings::Settings {
    let mut s = settings();
    s.receive_wait = Duration::from_secs(1);
    s.retry.initial_backoff = Duration::from_secs(2);
    s
}

#[tokio::test]
async fn worker_retries_in_place_after_the_backoff() {
    let url = queue("backoff", 30).await;
    send_all(&url, vec![n_body(1)]).await;
    let targets = Targets::new();
    targets.out.set_publish_fault(Some(Fault {
        error: QueueError::transient("503"),
        remaining: Some(1),
    }));
    let start = tokio::time::Instant::now();
    let w = sqs_worker(
        localstack::open_source(&url, None).await,
        FORWARD_ALL,
        &targets,
        sqs_settings(),
    );
    let out = targets.out.clone();
    let summary = run_until(w, Duration::from_secs(30), "the retry arrived", || out.len() == 1).await;
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "the retry waited for the backoff: {:?}",
        start.elapsed()
    );
    // Held through its backoff: received once, its receive count not spent.
    assert_eq!((summary.received, summary.retried, summary.forwarded), (1, 1, 1));
    assert_eq!(localstack::depth(&localstack::client(), &url).await, (0, 0));
    localstack::delete_queue(&localstack::client(), &url).await;
}

#[tokio::test]
async fn lease_extension_keeps_a_slow_message_invisible_past_its_visibility_timeout() {
    let url = queue("lease", 2).await;
    send_all(&url, vec![n_body(1)]).await;
    let mut out_cfg = MemoryQueueConfig::named("out");
    out_cfg.call_latency = Duration::from_secs(6);
    let targets = Targets {
        out: MemoryQueue::new(out_cfg),
        ..Targets::new()
    };
    let w = sqs_worker(
        localstack::open_source(&url, None).await,
        FORWARD_ALL,
        &targets,
        sqs_settings(),
    );
    let out = targets.out.clone();
    let summary = run_until(w, Duration::from_secs(30), "the slow forward finished", || {
        out.len() == 1
    })
    .await;
    assert_eq!(
        summary.received, 1,
        "no redelivery while the 6 s forward ran with a 2 s visibility timeout"
    );
    assert!(summary.lease_extensions >= 2, "{summary:?}");
    localstack::delete_queue(&localstack::client(), &url).await;
}

#[tokio::test]
async fn fifo_messages_keep_their_order_per_group() {
    let client = localstack::client();
    let url = localstack::create_queue(
        &client,
        "fifo",
        true,
        &[
            (QueueAttributeName::ContentBasedDeduplication, "true".into()),
            (QueueAttributeName::VisibilityTimeout, "30".into()),
        ],
    )
    .await;
    let messages: Vec<OutboundMessage> = (0..40u64)
        .map(|n| OutboundMessage {
            ordering_key: Some(format!("g{}", n % 3)),
            ..n_body(n)
        })
        .collect();
    send_all(&url, messages).await;
    let targets = Targets::new();
    targets.out.set_publish_fault(Some(Fault {
        error: QueueError::transient("blip"),
        remaining: Some(1),
    }));
    let mut s = sqs_settings();
    s.pollers = 3;
    let w = sqs_worker(localstack::open_source(&url, None).await, FORWARD_ALL, &targets, s);
    let out = targets.out.clone();
    run_until(w, Duration::from_secs(60), "all 40 arrived", || out.len() >= 40).await;
    let got = numbers(&targets.out.snapshot());
    for g in 0..3 {
        let seq: Vec<u64> = got.iter().copied().filter(|n| n % 3 == g).collect();
        let expected: Vec<u64> = (0..40).filter(|n| n % 3 == g).collect();
        assert_eq!(seq, expected, "group g{g} kept its order");
    }
    localstack::delete_queue(&client, &url).await;
}

#[tokio::test]
async fn oversized_message_for_an_sqs_target_is_dead_lettered() {
    let url = queue("oversize-target", 30).await;
    let src = source("src");
    src.push_body(format!("{{\"n\": 1, \"pad\": \"{}\"}}", "x".repeat(1_100_000)));
    src.push_body("{\"n\": 2}");
    src.close();
    let dlq = MemoryQueue::named("dlq");
    let out: Arc<dyn Publisher> = Arc::new(target(&url));
    let worker = veltrix::pipeline::Worker::new(
        Arc::new(src.clone()),
        rules(FORWARD_ALL),
        targets_with_out(&dlq, out),
        1,
        // A source that takes larger bodies than SQS (Pub/Sub: 10 MB).
        veltrix::pipeline::settings::Settings {
            max_body_bytes: 10_000_000,
            ..sqs_settings()
        },
    );
    let summary = worker.run(std::future::pending()).await.unwrap();
    assert_eq!((summary.forwarded, summary.dead_lettered), (1, 1));
    let dead = dlq.snapshot();
    assert_eq!(dead[0].attributes["veltrix.reason"], "target_rejected");
    assert!(
        dead[0].attributes["veltrix.error"]
            .to_string()
            .contains("exceeds the SQS limit"),
        "{}",
        dead[0].attributes["veltrix.error"]
    );
    localstack::delete_queue(&localstack::client(), &url).await;
}

/// With a native redrive policy of 2 receives, a message the worker retries 4 times is not
/// taken away by SQS: retries happen in place and spend no receive; the worker dead-letters it
/// with its reason once its own budget is spent, and the native dead-letter queue stays empty.
#[tokio::test]
async fn retries_in_place_spend_no_receives_so_native_redrive_does_not_fire() {
    let client = localstack::client();
    let dlq_url = queue("native-dlq", 30).await;
    let dlq_arn = localstack::queue_arn(&client, &dlq_url).await;
    let url = localstack::create_queue(
        &client,
        "native-src",
        false,
        &[
            (QueueAttributeName::VisibilityTimeout, "30".into()),
            (
                QueueAttributeName::RedrivePolicy,
                format!("{{\"deadLetterTargetArn\":\"{dlq_arn}\",\"maxReceiveCount\":\"2\"}}"),
            ),
        ],
    )
    .await;
    send_all(&url, vec![n_body(1)]).await;
    let targets = Targets::new();
    let mut s = sqs_settings();
    s.retry.initial_backoff = Duration::from_millis(500);
    s.retry.max_backoff = Duration::from_secs(1);
    let retry_always = r#"
[[rules]]
name = "later"
match = { body = { n = [{ exists = true }] } }
max_attempts = 4
actions = [{ type = "retry" }]
"#;
    let w = sqs_worker(localstack::open_source(&url, None).await, retry_always, &targets, s);
    let dead = targets.dlq.clone();
    let summary = run_until(w, Duration::from_secs(30), "the worker dead-lettered it", move || {
        dead.len() == 1
    })
    .await;
    assert_eq!(summary.received, 1, "received once: {summary}");
    assert_eq!(summary.retried, 3, "{summary}");
    let dead = targets.dlq.snapshot();
    assert_eq!(
        dead[0].attributes.get_str("veltrix.reason"),
        Some("retry_budget_exhausted")
    );
    assert_eq!(dead[0].attributes.get_str("veltrix.attempts"), Some("4"));
    assert_eq!(dead[0].body, "{\"n\": 1}");
    assert_eq!(localstack::depth(&client, &url).await, (0, 0));
    assert_eq!(
        localstack::depth(&client, &dlq_url).await,
        (0, 0),
        "SQS did not move it: no receive was spent on retries"
    );
    localstack::delete_queue(&client, &url).await;
    localstack::delete_queue(&client, &dlq_url).await;
}

#[tokio::test]
async fn missing_queue_and_unreachable_endpoint_give_readable_errors() {
    let url = format!("{ENDPOINT}/000000000000/{}", localstack::unique_name("missing", false));
    let err = localstack::try_open_source(&url, None)
        .await
        .err()
        .expect("a missing queue fails to open");
    assert_eq!(err.class, ErrorClass::Permanent, "{err}");
    assert!(
        err.message.contains("NonExistentQueue") || err.message.contains("QueueDoesNotExist"),
        "{err}"
    );
    assert!(err.message.starts_with("no queue `"), "the cause comes first: {err}");
    assert!(err.message.contains("check the queue URL's account and name"), "{err}");

    // Static test credentials: the endpoint is the only thing wrong (the credential chain is
    // tested with the binary in `misconfigurations_name_their_real_cause_on_the_first_line`).
    let client = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::Config::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:1")
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "test",
                "test",
                None,
                None,
                "veltrix-tests",
            ))
            .build(),
    );
    let err = SqsSource::open(
        client,
        SqsSourceOptions {
            queue_url: url,
            visibility_timeout: None,
            endpoint_url: Some("http://127.0.0.1:1".into()),
        },
    )
    .await
    .err()
    .expect("nothing listens on port 1");
    assert_eq!(err.class, ErrorClass::Transient, "{err}");
    assert!(
        err.message
            .starts_with("cannot reach http://127.0.0.1:1 (connection refused): is LocalStack running?"),
        "{err}"
    );
    assert!(
        err.message.to_lowercase().contains("connect") || err.message.contains("dispatch"),
        "the cause is shown: {err}"
    );
}

#[tokio::test]
async fn worker_drains_ten_thousand_messages_with_none_lost_and_none_in_flight() {
    let client = localstack::client();
    let url = queue("drain10k", 30).await;
    send_all(&url, (0..10_000).map(n_body).collect()).await;
    let targets = Targets::new();
    let mut s = sqs_settings();
    s.pollers = 8;
    s.max_in_flight = 512;
    let w = sqs_worker(localstack::open_source(&url, None).await, FORWARD_ALL, &targets, s);
    let out = targets.out.clone();
    let summary = run_until(w, Duration::from_secs(240), "10,000 messages arrived", || {
        out.len() >= 10_000
    })
    .await;
    let got: BTreeSet<u64> = numbers(&targets.out.snapshot()).into_iter().collect();
    assert_eq!(got.len(), 10_000, "every id arrived");
    assert_eq!(got, (0..10_000).collect());
    assert_eq!(summary.dead_lettered, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let d = localstack::depth(&client, &url).await;
        if d == (0, 0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "queue not empty after the drain: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    localstack::delete_queue(&client, &url).await;
}

#[tokio::test]
async fn fifo_target_gets_group_ids_and_derived_deduplication_ids() {
    let client = localstack::client();
    // No content-based de-duplication: every send must carry a MessageDeduplicationId.
    let url = localstack::create_queue(&client, "fifo-target", true, &[]).await;
    let src = source("src");
    for n in 0..6u64 {
        src.push(OutboundMessage {
            ordering_key: Some(format!("g{}", n % 2)),
            ..n_body(n)
        });
    }
    src.close();
    let out: Arc<dyn Publisher> = Arc::new(target(&url));
    let worker = veltrix::pipeline::Worker::new(
        Arc::new(src.clone()),
        rules(FORWARD_ALL),
        vec![
            ("audit".into(), Arc::new(MemoryQueue::named("audit"))),
            ("dlq".into(), Arc::new(MemoryQueue::named("dlq"))),
            ("out".into(), out),
        ],
        1,
        sqs_settings(),
    );
    let summary = worker.run(std::future::pending()).await.unwrap();
    assert_eq!((summary.forwarded, summary.dead_lettered), (6, 0), "{summary}");
    let sqs = localstack::open_source(&url, None).await;
    let mut got = Vec::new();
    while got.len() < 6 {
        let Received::Messages(batch) = sqs.receive(10, Duration::from_secs(2)).await.unwrap() else {
            panic!()
        };
        assert!(!batch.is_empty(), "only {} of 6 arrived", got.len());
        sqs.ack(batch.iter().map(|d| d.token.clone()).collect()).await.unwrap();
        got.extend(batch);
    }
    for d in &got {
        let n: u64 = serde_json::from_slice::<serde_json::Value>(&d.body).unwrap()["n"]
            .as_u64()
            .unwrap();
        assert_eq!(
            d.ordering_key.as_deref(),
            Some(format!("g{}", n % 2).as_str()),
            "the group id is kept"
        );
    }
    localstack::delete_queue(&client, &url).await;
}

#[tokio::test]
async fn backlog_reports_the_waiting_messages() {
    let url = queue("backlog", 30).await;
    send_all(&url, (0..7).map(n_body).collect()).await;
    let source = localstack::open_source(&url, None).await;
    assert_eq!(source.backlog().await, Some(7));
    localstack::delete_queue(&localstack::client(), &url).await;
}

/// The operator's loop: a buggy transform dead-letters every order; after the fix,
/// `veltrix dlq replay` (the binary) moves them back to the source queue and the fixed worker
/// forwards them all.
#[tokio::test]
async fn dead_letters_replayed_after_a_fix_are_processed() {
    let client = localstack::client();
    let source_url = queue("replay-src", 30).await;
    let dlq_url = queue("replay-dlq", 30).await;
    let customers: Vec<String> = (0..5).map(|i| format!("c-{i}")).collect();
    send_all(
        &source_url,
        customers
            .iter()
            .map(|c| OutboundMessage {
                body: format!(r#"{{"type": "order", "customer": "{c}"}}"#).into(),
                ..Default::default()
            })
            .collect(),
    )
    .await;
    let rules_with = |transform: &str| {
        format!(
            "[[rules]]\nname = \"orders\"\nmatch = {{ body = {{ type = [\"order\"] }} }}\nactions = [{{ type = \"forward\", target = \"out\", transform = '{transform}' }}]\n"
        )
    };
    let targets = |out: &MemoryQueue| -> Vec<(String, Arc<dyn Publisher>)> {
        vec![
            (
                "audit".into(),
                Arc::new(MemoryQueue::named("audit")) as Arc<dyn Publisher>,
            ),
            ("dlq".into(), Arc::new(target(&dlq_url))),
            ("out".into(), Arc::new(out.clone())),
        ]
    };

    // v1: indexes a string as an object; every order fails its transform and is dead-lettered.
    let out = MemoryQueue::named("out");
    let buggy = veltrix::pipeline::Worker::new(
        Arc::new(localstack::open_source(&source_url, None).await),
        rules(&rules_with("{customer: .body.customer.name}")),
        targets(&out),
        1,
        sqs_settings(),
    );
    let stats = buggy.stats();
    let summary = run_until(buggy, Duration::from_secs(60), "5 dead letters", || {
        stats.snapshot().dead_lettered >= 5
    })
    .await;
    assert_eq!((summary.dead_lettered, summary.forwarded), (5, 0), "{summary}");

    // The replay, through the binary, with the fixed config.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fixed.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\ntype = \"sqs\"\nqueue_url = \"{source_url}\"\nendpoint_url = \"{ENDPOINT}\"\n\
             [targets.dlq]\ntype = \"sqs\"\nqueue_url = \"{dlq_url}\"\nendpoint_url = \"{ENDPOINT}\"\n\
             [targets.out]\ntype = \"stdout\"\n[pipeline]\ndead_letter = \"dlq\"\n{}",
            rules_with("{customer: .body.customer}")
        ),
    )
    .unwrap();
    let config_path = config.clone();
    let replay = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_veltrix"))
            .args(["dlq", "replay", "-c", config_path.to_str().unwrap(), "--wait-secs", "1"])
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .output()
            .expect("run veltrix dlq replay")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&replay.stderr);
    assert!(replay.status.success(), "{stderr}");
    assert!(stderr.contains("read=5 replayed=5"), "{stderr}");
    assert_eq!(
        localstack::depth(&client, &dlq_url).await,
        (0, 0),
        "the dead-letter queue is empty"
    );

    // v2: the fixed worker forwards every replayed order.
    let out = MemoryQueue::named("out");
    let fixed = veltrix::pipeline::Worker::new(
        Arc::new(localstack::open_source(&source_url, None).await),
        rules(&rules_with("{customer: .body.customer}")),
        targets(&out),
        1,
        sqs_settings(),
    );
    let watched = out.clone();
    let summary = run_until(fixed, Duration::from_secs(60), "5 forwards", || watched.len() >= 5).await;
    assert_eq!((summary.forwarded, summary.dead_lettered), (5, 0), "{summary}");
    let mut got: Vec<String> = out
        .snapshot()
        .iter()
        .map(|m| {
            serde_json::from_slice::<serde_json::Value>(&m.body).unwrap()["customer"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    got.sort();
    assert_eq!(got, customers);
    assert!(out
        .snapshot()
        .iter()
        .all(|m| !m.attributes.contains_key("veltrix.reason")));
    localstack::delete_queue(&client, &source_url).await;
    localstack::delete_queue(&client, &dlq_url).await;
}

/// Runs `veltrix check --preflight` (the binary: AWS credentials come from its environment)
/// on a config with this source, dead-letter target and extra tables; returns the exit code and
/// stdout.
async fn preflight(source_url: &str, dlq_url: &str, extra: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("preflight.toml");
    std::fs::write(
        &path,
        format!(
            "[source]\ntype = \"sqs\"\nqueue_url = \"{source_url}\"\nendpoint_url = \"{ENDPOINT}\"\n\
             [targets.dlq]\ntype = \"sqs\"\nqueue_url = \"{dlq_url}\"\nendpoint_url = \"{ENDPOINT}\"\n{extra}\
             [pipeline]\ndead_letter = \"dlq\"\nretry = {{ max_attempts = 5 }}\n"
        ),
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_veltrix"))
            .args(["check", "--preflight", "-c", path.to_str().unwrap()])
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn queue_with_redrive(what: &str, fifo: bool, dlq_url: &str, max_receive_count: u32) -> String {
    let client = localstack::client();
    let dlq_arn = localstack::queue_arn(&client, dlq_url).await;
    localstack::create_queue(
        &client,
        what,
        fifo,
        &[(
            QueueAttributeName::RedrivePolicy,
            format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"{max_receive_count}"}}"#),
        )],
    )
    .await
}

#[tokio::test]
async fn preflight_passes_on_matching_queues_and_explains_each_mismatch() {
    let client = localstack::client();
    let dlq = queue("pf-dlq", 30).await;
    // Matching: maxReceiveCount 10 above the budget of 5.
    let good = queue_with_redrive("pf-good", false, &dlq, 10).await;
    let (code, out) = preflight(&good, &dlq, "").await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("checked: source queue") && out.contains("checked: targets.dlq queue"),
        "{out}"
    );
    assert!(out.contains("preflight: 0 error(s), 0 warning(s)"), "{out}");

    // SQS would dead-letter after 3 receives, before the worker's 5 attempts.
    let low = queue_with_redrive("pf-low", false, &dlq, 3).await;
    let (code, out) = preflight(&low, &dlq, "").await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("error: source: the queue's redrive policy moves a message to its dead-letter queue after 3 receives, at or below the worker's retry budget of 5 attempts"),
        "{out}"
    );
    assert!(
        out.contains("fix: raise maxReceiveCount above 5 (terraform/modules/sqs-worker: max_receive_count = 10)"),
        "{out}"
    );

    // A missing target (error) and a visibility timeout under a slow HTTP target (warning).
    let missing = format!("{ENDPOINT}/000000000000/veltrix-missing-{:08x}", fastrand::u32(..));
    let extra = format!(
        "[targets.gone]\ntype = \"sqs\"\nqueue_url = \"{missing}\"\nendpoint_url = \"{ENDPOINT}\"\n\
         [targets.slow]\ntype = \"http\"\nurl = \"http://127.0.0.1:9/\"\ntimeout_ms = 120000\n"
    );
    let (code, out) = preflight(&good, &dlq, &extra).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("error: targets.gone: cannot read the SQS queue {missing}")),
        "{out}"
    );
    assert!(
        out.contains("warning: source: the visibility timeout (30 s) is shorter than target `slow`'s timeout"),
        "{out}"
    );

    // A FIFO source with a standard dead-letter target.
    let fifo = localstack::create_queue(&client, "pf-fifo", true, &[]).await;
    let (code, out) = preflight(&fifo, &dlq, "").await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("error: source: the source is a FIFO queue but the dead-letter target is a standard queue"),
        "{out}"
    );
    for url in [&good, &low, &fifo, &dlq] {
        localstack::delete_queue(&client, url).await;
    }
}

/// One misconfiguration for [`misconfigurations_name_their_real_cause_on_the_first_line`].
struct Misconfig {
    name: &'static str,
    /// The `[source]` table (the dead-letter target is a file).
    source: String,
    /// Extra tables (targets).
    extra: String,
    /// Environment on top of the base (test credentials, no instance metadata, loopback only).
    env: Vec<(&'static str, String)>,
    /// Base variables to leave out.
    remove: &'static [&'static str],
    /// `check` alone (no connection) instead of `check --preflight`.
    offline: bool,
    /// What the first error line says, in parts.
    first_line: Vec<String>,
}

/// Creates a topic, and a subscription to it, on the Pub/Sub emulator (REST).
async fn emulator_topic_and_subscription(project: &str, topic: &str, subscription: &str) {
    let http = reqwest::Client::new();
    let base = "http://127.0.0.1:8085/v1";
    let put = |url: String, body: serde_json::Value| {
        let http = http.clone();
        async move {
            let resp = http
                .put(url)
                .json(&body)
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .expect("the Pub/Sub emulator runs on 127.0.0.1:8085 (scripts/test.sh starts it)");
            assert!(resp.status().is_success(), "emulator: {}", resp.status());
        }
    };
    put(
        format!("{base}/projects/{project}/topics/{topic}"),
        serde_json::json!({}),
    )
    .await;
    put(
        format!("{base}/projects/{project}/subscriptions/{subscription}"),
        serde_json::json!({"topic": format!("projects/{project}/topics/{topic}")}),
    )
    .await;
}

/// The errors of a dozen misconfigurations, as a new user meets them: the first error line names
/// the real cause and the fix. Against LocalStack and the Pub/Sub emulator; no test reaches the
/// instance metadata address (IMDS is disabled or pointed at a closed loopback port, and
/// Google's metadata server at a closed loopback port).
#[tokio::test]
async fn misconfigurations_name_their_real_cause_on_the_first_line() {
    let client = localstack::client();
    let queue = localstack::create_queue(&client, "misconfig", false, &[]).await;
    let queue_name = queue.rsplit('/').next().unwrap().to_string();
    let project = "veltrix-misconfig";
    let suffix = localstack::unique_name("m", false);
    let (topic, subscription) = (format!("t-{suffix}"), format!("s-{suffix}"));
    emulator_topic_and_subscription(project, &topic, &subscription).await;
    let sqs = |url: &str, endpoint: &str| {
        format!("[source]\ntype = \"sqs\"\nqueue_url = \"{url}\"\nendpoint_url = \"{endpoint}\"\n")
    };
    let pubsub = |sub: &str, endpoint: &str| {
        format!("[source]\ntype = \"pubsub\"\nsubscription = \"projects/{project}/subscriptions/{sub}\"\nendpoint = \"{endpoint}\"\n")
    };
    let emulator = "http://127.0.0.1:8085";
    let missing = format!("missing-{suffix}");
    let cases = vec![
        Misconfig {
            name: "no AWS credentials",
            source: sqs(&queue, ENDPOINT),
            extra: String::new(),
            env: vec![],
            remove: &["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"],
            offline: false,
            first_line: vec![
                "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (LocalStack accepts `test`/`test`)".into(),
            ],
        },
        Misconfig {
            name: "instance metadata unavailable",
            source: sqs(&queue, ENDPOINT),
            extra: String::new(),
            // IMDS is enabled but points at a closed port on loopback.
            env: vec![("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9".into())],
            remove: &["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_EC2_METADATA_DISABLED"],
            offline: false,
            first_line: vec![
                "no AWS credentials, and the instance metadata service (IMDS) gave none".into(),
                "AWS_EC2_METADATA_DISABLED=true".into(),
            ],
        },
        Misconfig {
            name: "wrong region",
            source: sqs(&queue, ENDPOINT),
            extra: String::new(),
            env: vec![("AWS_REGION", "eu-west-1".into())],
            remove: &[],
            offline: false,
            first_line: vec![format!("no queue `{queue_name}` in account 000000000000 and region eu-west-1")],
        },
        Misconfig {
            name: "queue URL of another account",
            source: sqs(&format!("{ENDPOINT}/111111111111/{queue_name}"), ENDPOINT),
            extra: String::new(),
            env: vec![],
            remove: &[],
            offline: false,
            first_line: vec![
                format!("no queue `{queue_name}` in account 111111111111"),
                "LocalStack's `test` credentials are account 000000000000".into(),
            ],
        },
        Misconfig {
            name: "endpoint down",
            source: sqs(&queue, "http://127.0.0.1:1"),
            extra: String::new(),
            env: vec![],
            remove: &[],
            offline: false,
            first_line: vec!["cannot reach http://127.0.0.1:1 (connection refused): is LocalStack running?".into()],
        },
        Misconfig {
            name: "queue missing",
            source: sqs(&format!("{ENDPOINT}/000000000000/{missing}"), ENDPOINT),
            extra: String::new(),
            env: vec![],
            remove: &[],
            offline: false,
            first_line: vec![format!("no queue `{missing}` in account 000000000000 and region us-east-1")],
        },
        Misconfig {
            name: "no Google credentials",
            // Not the emulator (https): Application Default Credentials are needed, and there
            // are none (the metadata server is a closed loopback port).
            source: pubsub(&subscription, "https://127.0.0.1:1"),
            extra: String::new(),
            env: vec![],
            remove: &[],
            offline: false,
            first_line: vec!["no Google credentials".into(), "GOOGLE_APPLICATION_CREDENTIALS".into()],
        },
        Misconfig {
            name: "emulator down",
            source: pubsub(&subscription, "http://127.0.0.1:1"),
            extra: String::new(),
            env: vec![],
            remove: &[],
            offline: false,
            first_line: vec!["cannot reach the Pub/Sub emulator at http://127.0.0.1:1: is it running?".into()],
        },
        Misconfig {
            name: "subscription missing",
            source: pubsub(&missing, emulator),
            extra: String::new(),
            env: vec![],
            remove: &[],
            offline: false,
            first_line: vec![format!("the subscription projects/{project}/subscriptions/{missing} does not exist")],
        },
        Misconfig {
            name: "topic missing",
            source: pubsub(&subscription, emulator),
            extra: format!(
                "[targets.out]\ntype = \"pubsub\"\ntopic = \"projects/{project}/topics/{missing}\"\nendpoint = \"{emulator}\"\n"
            ),
            env: vec![],
            remove: &[],
            offline: false,
            first_line: vec![format!("targets.out: cannot read the Pub/Sub topic: the topic projects/{project}/topics/{missing} does not exist")],
        },
        Misconfig {
            name: "bad ${ENV} reference",
            source: "[source]\ntype = \"sqs\"\nqueue_url = \"${VELTRIX_TEST_UNSET_QUEUE_URL}\"\n".into(),
            extra: String::new(),
            env: vec![],
            remove: &[],
            offline: true,
            first_line: vec![
                "misconfig.toml:3:1: field `source.queue_url`: environment variable `VELTRIX_TEST_UNSET_QUEUE_URL` is not set".into(),
            ],
        },
        Misconfig {
            name: "the target's queue missing",
            source: sqs(&queue, ENDPOINT),
            extra: format!(
                "[targets.out]\ntype = \"sqs\"\nqueue_url = \"{ENDPOINT}/000000000000/{missing}\"\nendpoint_url = \"{ENDPOINT}\"\n"
            ),
            env: vec![],
            remove: &[],
            offline: false,
            first_line: vec![format!("targets.out: cannot read the SQS queue {ENDPOINT}/000000000000/{missing}: no queue `{missing}`")],
        },
    ];
    assert!(cases.len() >= 12);
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for case in cases {
        let path = dir.path().join("misconfig.toml");
        std::fs::write(
            &path,
            format!(
                "{}{}[targets.dlq]\ntype = \"file\"\npath = \"dlq.jsonl\"\n[pipeline]\ndead_letter = \"dlq\"\n",
                case.source, case.extra
            ),
        )
        .unwrap();
        let home = dir.path().to_path_buf();
        let out = tokio::task::spawn_blocking(move || {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_veltrix"));
            cmd.arg("check");
            if !case.offline {
                cmd.arg("--preflight");
            }
            cmd.arg("-c")
                .arg(&path)
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap())
                .env("HOME", &home);
            let base = [
                ("AWS_EC2_METADATA_DISABLED", "true"),
                ("AWS_ACCESS_KEY_ID", "test"),
                ("AWS_SECRET_ACCESS_KEY", "test"),
                ("AWS_REGION", "us-east-1"),
                ("GCE_METADATA_HOST", "127.0.0.1:9"),
                ("GCE_METADATA_ROOT", "127.0.0.1:9"),
            ];
            for (k, v) in base.iter().filter(|(k, _)| !case.remove.contains(k)) {
                cmd.env(k, v);
            }
            for (k, v) in &case.env {
                cmd.env(k, v);
            }
            (case, cmd.output().unwrap())
        })
        .await
        .unwrap();
        let (case, out) = out;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let first = text
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap_or("(no error line)");
        let ok = out.status.code() != Some(0) && case.first_line.iter().all(|part| first.contains(part.as_str()));
        if !ok {
            failures.push(format!(
                "{}: exit {:?}, first error line:\n  {first}\nwanted: {:?}",
                case.name,
                out.status.code(),
                case.first_line
            ));
        }
    }
    localstack::delete_queue(&client, &queue).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
