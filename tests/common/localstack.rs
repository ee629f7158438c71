//! LocalStack for tests: one shared instance per run (started by scripts/test.sh, or here when
//! it is not running), a fresh randomly named queue per test.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::QueueAttributeName;
use aws_sdk_sqs::Client;

pub const ENDPOINT: &str = "http://127.0.0.1:4566";

fn listening() -> bool {
    std::net::TcpStream::connect_timeout(&"127.0.0.1:4566".parse().unwrap(), Duration::from_millis(500)).is_ok()
}

/// Makes sure LocalStack answers, starting it with the project's script if needed.
pub fn ensure_running() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        if listening() {
            return;
        }
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("localstack/start.sh");
        let status = std::process::Command::new("bash")
            .arg(&script)
            .status()
            .expect("run localstack/start.sh");
        assert!(
            status.success(),
            "localstack/start.sh failed; see localstack/.state/localstack.log"
        );
    });
}

/// A client for LocalStack with static test credentials.
pub fn client() -> Client {
    ensure_running();
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(ENDPOINT)
        .credentials_provider(Credentials::new("test", "test", None, None, "veltrix-tests"))
        .build();
    Client::from_conf(config)
}

/// A unique queue name: `veltrix-<what>-<random>` (`.fifo` appended for FIFO queues).
pub fn unique_name(what: &str, fifo: bool) -> String {
    let name = format!("veltrix-{what}-{:016x}", fastrand::u64(..));
    if fifo {
        format!("{name}.fifo")
    } else {
        name
    }
}

/// Creates a queue with the given attributes; returns its URL.
pub async fn create_queue(client: &Client, what: &str, fifo: bool, attrs: &[(QueueAttributeName, String)]) -> String {
    let mut req = client.create_queue().queue_name(unique_name(what, fifo));
    let mut map: HashMap<QueueAttributeName, String> = attrs.iter().cloned().collect();
    if fifo {
        map.insert(QueueAttributeName::FifoQueue, "true".into());
    }
    req = req.set_attributes(Some(map));
    req.send()
        .await
        .expect("create queue")
        .queue_url()
        .expect("queue url")
        .to_string()
}

/// The queue's ARN.
pub async fn queue_arn(client: &Client, url: &str) -> String {
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("get attributes");
    out.attributes().unwrap()[&QueueAttributeName::QueueArn].clone()
}

/// Visible + in-flight + delayed messages.
pub async fn depth(client: &Client, url: &str) -> (u64, u64) {
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .expect("get attributes");
    let a = out.attributes().unwrap();
    let n = |k: QueueAttributeName| a.get(&k).and_then(|v| v.parse().ok()).unwrap_or(0);
    (
        n(QueueAttributeName::ApproximateNumberOfMessages),
        n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    )
}

/// Deletes a queue (best effort, at the end of a test).
pub async fn delete_queue(client: &Client, url: &str) {
    let _ = client.delete_queue().queue_url(url).send().await;
}

/// Opens an SQS source on `url` at LocalStack (`visibility`: `None` takes the queue's own).
pub async fn try_open_source(
    url: &str,
    visibility: Option<Duration>,
) -> Result<veltrix_sqs::SqsSource, veltrix_queue::QueueError> {
    veltrix_sqs::SqsSource::open(
        client(),
        veltrix_sqs::SqsSourceOptions {
            queue_url: url.to_string(),
            visibility_timeout: visibility,
            endpoint_url: Some(ENDPOINT.into()),
        },
    )
    .await
}

/// [`try_open_source`], which must succeed.
pub async fn open_source(url: &str, visibility: Option<Duration>) -> veltrix_sqs::SqsSource {
    try_open_source(url, visibility).await.expect("open the SQS source")
}
