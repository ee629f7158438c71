//! Shared helpers: endpoint, anonymous credentials, unique names, admin clients.
//!
//! The crate does NOT read PUBSUB_EMULATOR_HOST: we read it and pass `http://host:port` as the
//! endpoint of every client (admin clients speak REST/JSON, Publisher and Subscriber speak gRPC;
//! the emulator serves both on one port).

use std::time::{Duration, Instant};

use anyhow::Result;
use google_cloud_auth::credentials::anonymous::Builder as Anonymous;
use google_cloud_auth::credentials::Credentials;
use google_cloud_pubsub::client::{Publisher, Subscriber, SubscriptionAdmin, TopicAdmin};
use google_cloud_pubsub::model::{DeadLetterPolicy, RetryPolicy};

pub const PROJECT: &str = "veltrix-local";

pub fn endpoint() -> String {
    let host = std::env::var("PUBSUB_EMULATOR_HOST").unwrap_or_else(|_| "127.0.0.1:8085".into());
    format!("http://{host}")
}

/// No token fetch, no metadata server, no ADC lookup.
pub fn creds() -> Credentials {
    Anonymous::new().build()
}

/// The emulator stalls on a reused subscription name: every run gets fresh names.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{:08x}", std::process::id(), fastrand::u32(..))
}

pub fn topic_path(name: &str) -> String {
    format!("projects/{PROJECT}/topics/{name}")
}

pub fn sub_path(name: &str) -> String {
    format!("projects/{PROJECT}/subscriptions/{name}")
}

pub struct Admin {
    pub topics: TopicAdmin,
    pub subs: SubscriptionAdmin,
}

impl Admin {
    pub async fn new() -> Result<Self> {
        // Admin clients: gax ClientBuilder (REST transport) + endpoint + anonymous credentials.
        let topics = TopicAdmin::builder()
            .with_endpoint(endpoint())
            .with_credentials(creds())
            .build()
            .await?;
        let subs = SubscriptionAdmin::builder()
            .with_endpoint(endpoint())
            .with_credentials(creds())
            .build()
            .await?;
        Ok(Self { topics, subs })
    }

    pub async fn topic(&self, name: &str) -> Result<String> {
        let t = self.topics.create_topic().set_name(topic_path(name)).send().await?;
        Ok(t.name)
    }

    /// A plain subscription.
    pub async fn sub(&self, name: &str, topic: &str, ack_deadline: i32) -> Result<String> {
        let s = self
            .subs
            .create_subscription()
            .set_name(sub_path(name))
            .set_topic(topic_path(topic))
            .set_ack_deadline_seconds(ack_deadline)
            .send()
            .await?;
        Ok(s.name)
    }

    /// A subscription with a dead-letter policy (so `delivery_attempt()` is filled in) and,
    /// optionally, a retry policy.
    pub async fn sub_dlq(
        &self,
        name: &str,
        topic: &str,
        ack_deadline: i32,
        dead_letter_topic: &str,
        max_attempts: i32,
        retry: Option<(Duration, Duration)>,
    ) -> Result<String> {
        let mut b = self
            .subs
            .create_subscription()
            .set_name(sub_path(name))
            .set_topic(topic_path(topic))
            .set_ack_deadline_seconds(ack_deadline)
            .set_dead_letter_policy(
                DeadLetterPolicy::new()
                    .set_dead_letter_topic(topic_path(dead_letter_topic))
                    .set_max_delivery_attempts(max_attempts),
            );
        if let Some((min, max)) = retry {
            b = b.set_retry_policy(
                RetryPolicy::new()
                    .set_minimum_backoff(google_cloud_wkt::Duration::try_from(min)?)
                    .set_maximum_backoff(google_cloud_wkt::Duration::try_from(max)?),
            );
        }
        Ok(b.send().await?.name)
    }

    pub async fn delete_sub(&self, name: &str) -> Result<()> {
        self.subs.delete_subscription().set_subscription(sub_path(name)).send().await?;
        Ok(())
    }

    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        self.topics.delete_topic().set_topic(topic_path(name)).send().await?;
        Ok(())
    }
}

pub async fn publisher(topic: &str) -> Result<Publisher> {
    Ok(Publisher::builder(topic_path(topic))
        .with_endpoint(endpoint())
        .with_credentials(creds())
        // Batching: send when 100 messages are queued or after 10 ms.
        .set_message_count_threshold(100)
        .set_delay_threshold(Duration::from_millis(10))
        .build()
        .await?)
}

pub async fn subscriber() -> Result<Subscriber> {
    Ok(Subscriber::builder()
        .with_endpoint(endpoint())
        .with_credentials(creds())
        .build()
        .await?)
}

/// Elapsed-time stamp for logs.
pub struct Clock(Instant);

impl Clock {
    pub fn new() -> Self {
        Self(Instant::now())
    }
    pub fn t(&self) -> String {
        format!("{:7.3}s", self.0.elapsed().as_secs_f64())
    }
    pub fn secs(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}
