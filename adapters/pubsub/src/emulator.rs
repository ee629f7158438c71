//! Helpers for tests and benchmarks against the Google Pub/Sub emulator: start it with the
//! project's script when it is not running, fresh unique names, and topic/subscription setup.
//!
//! The emulator stalls consumption on a subscription name that was used before in the same
//! emulator run (even after delete and recreate), so every name made here is unique.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use google_cloud_pubsub::client::{SubscriptionAdmin, TopicAdmin};
use google_cloud_pubsub::model::{DeadLetterPolicy, RetryPolicy};
use veltrix_queue::QueueError;

use crate::client::{ConnectOptions, Connection, EMULATOR_HOST_ENV};

/// Where `localstack/pubsub-start.sh` serves the emulator.
pub const DEFAULT_EMULATOR_HOST: &str = "127.0.0.1:8085";

/// The project id the tests and the seed script use (the emulator accepts any).
pub const PROJECT: &str = "veltrix-local";

/// `host:port` of the emulator (`PUBSUB_EMULATOR_HOST`, else the default).
pub fn emulator_host() -> String {
    std::env::var(EMULATOR_HOST_ENV).unwrap_or_else(|_| DEFAULT_EMULATOR_HOST.to_string())
}

/// The emulator's URL.
pub fn endpoint() -> String {
    format!("http://{}", emulator_host())
}

/// Connect options for the emulator.
pub fn connect_options() -> ConnectOptions {
    ConnectOptions {
        endpoint: Some(endpoint()),
    }
}

fn listening() -> bool {
    use std::net::ToSocketAddrs;
    emulator_host()
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|addr| std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok())
}

/// Makes sure the emulator answers, starting it with `localstack/pubsub-start.sh` if needed.
pub fn ensure_running() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        if listening() {
            return;
        }
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../localstack/pubsub-start.sh");
        let status = std::process::Command::new("bash")
            .arg(&script)
            .status()
            .expect("run localstack/pubsub-start.sh");
        assert!(
            status.success(),
            "localstack/pubsub-start.sh failed; see localstack/.pubsub-state/pubsub.log"
        );
    });
}

/// `<prefix>-<random>`: unique per test and per run.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:016x}", fastrand::u64(..))
}

/// `projects/veltrix-local/topics/<name>`.
pub fn topic_path(name: &str) -> String {
    format!("projects/{PROJECT}/topics/{name}")
}

/// `projects/veltrix-local/subscriptions/<name>`.
pub fn subscription_path(name: &str) -> String {
    format!("projects/{PROJECT}/subscriptions/{name}")
}

/// A subscription to create.
#[derive(Debug, Clone)]
pub struct SubscriptionSpec {
    /// Topic (full name).
    pub topic: String,
    /// Ack deadline (10–600 s).
    pub ack_deadline_secs: i32,
    /// Dead-letter topic (full name) and `max_delivery_attempts` (5–100).
    pub dead_letter: Option<(String, i32)>,
    /// Retry policy (minimum, maximum backoff).
    pub retry: Option<(Duration, Duration)>,
    /// Ordered delivery per ordering key.
    pub ordering: bool,
}

impl SubscriptionSpec {
    /// A plain subscription on `topic` with a 10 s ack deadline.
    pub fn on(topic: &str) -> Self {
        Self {
            topic: topic.to_string(),
            ack_deadline_secs: 10,
            dead_letter: None,
            retry: None,
            ordering: false,
        }
    }
}

/// Admin clients on the emulator.
pub struct EmulatorAdmin {
    /// The connection (anonymous, emulator endpoint).
    pub connection: Connection,
    topics: TopicAdmin,
    subscriptions: SubscriptionAdmin,
}

fn admin_error(what: &str, e: impl std::fmt::Display) -> QueueError {
    QueueError::permanent(format!("emulator {what}: {e}"))
}

impl EmulatorAdmin {
    /// Starts the emulator if needed and connects.
    pub async fn connect() -> Result<Self, QueueError> {
        ensure_running();
        let connection = Connection::new(&connect_options());
        Ok(Self {
            topics: connection.topic_admin("topics").await?,
            subscriptions: connection.subscription_admin("subscriptions").await?,
            connection,
        })
    }

    /// Creates a topic named `<prefix>-<random>`; returns its full name.
    pub async fn topic(&self, prefix: &str) -> Result<String, QueueError> {
        self.create_topic(&topic_path(&unique(prefix))).await
    }

    /// Creates a subscription named `<prefix>-<random>`; returns its full name.
    pub async fn subscription(&self, prefix: &str, spec: SubscriptionSpec) -> Result<String, QueueError> {
        self.create_subscription(&subscription_path(&unique(prefix)), spec)
            .await
    }

    /// Creates a topic and a subscription on it, both named `<prefix>-<random>`; `spec` adjusts
    /// the subscription (dead-letter policy, ordering, ack deadline). Returns both full names.
    pub async fn topic_with_subscription(
        &self,
        prefix: &str,
        spec: impl FnOnce(SubscriptionSpec) -> SubscriptionSpec,
    ) -> Result<(String, String), QueueError> {
        let topic = self.topic(prefix).await?;
        let subscription = self.subscription(prefix, spec(SubscriptionSpec::on(&topic))).await?;
        Ok((topic, subscription))
    }

    /// Creates the topic `name` (full name).
    pub async fn create_topic(&self, name: &str) -> Result<String, QueueError> {
        let t = self
            .topics
            .create_topic()
            .set_name(name)
            .send()
            .await
            .map_err(|e| admin_error("create topic", e))?;
        Ok(t.name)
    }

    /// Creates the subscription `name` (full name).
    pub async fn create_subscription(&self, name: &str, spec: SubscriptionSpec) -> Result<String, QueueError> {
        let mut b = self
            .subscriptions
            .create_subscription()
            .set_name(name)
            .set_topic(spec.topic)
            .set_ack_deadline_seconds(spec.ack_deadline_secs)
            .set_enable_message_ordering(spec.ordering);
        if let Some((topic, attempts)) = spec.dead_letter {
            b = b.set_dead_letter_policy(
                DeadLetterPolicy::new()
                    .set_dead_letter_topic(topic)
                    .set_max_delivery_attempts(attempts),
            );
        }
        if let Some((min, max)) = spec.retry {
            let d = |d: Duration| google_cloud_wkt::Duration::try_from(d).map_err(|e| admin_error("duration", e));
            b = b.set_retry_policy(
                RetryPolicy::new()
                    .set_minimum_backoff(d(min)?)
                    .set_maximum_backoff(d(max)?),
            );
        }
        Ok(b.send().await.map_err(|e| admin_error("create subscription", e))?.name)
    }

    /// Deletes a subscription.
    pub async fn delete_subscription(&self, name: &str) -> Result<(), QueueError> {
        self.subscriptions
            .delete_subscription()
            .set_subscription(name)
            .send()
            .await
            .map_err(|e| admin_error("delete subscription", e))
    }
}
