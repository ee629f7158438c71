//! Connecting to Pub/Sub or to its emulator.
//!
//! Production uses Application Default Credentials (the crate's default: workload identity,
//! `GOOGLE_APPLICATION_CREDENTIALS`, gcloud's ADC file, the metadata server). The emulator takes
//! no credentials: an `http://` endpoint, from `endpoint` or from `PUBSUB_EMULATOR_HOST` (which
//! the official crate does not read by itself), switches to anonymous credentials.

use google_cloud_auth::credentials::anonymous::Builder as Anonymous;
use google_cloud_auth::credentials::Credentials;
use google_cloud_pubsub::client::{Publisher, Subscriber, SubscriptionAdmin, TopicAdmin};
use veltrix_queue::QueueError;

use crate::errors::client_build_error;

/// The variable the Google client libraries of other languages read for the emulator address.
pub const EMULATOR_HOST_ENV: &str = "PUBSUB_EMULATOR_HOST";

/// Where to connect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Endpoint override (`http://127.0.0.1:8085` for the emulator).
    pub endpoint: Option<String>,
}

impl ConnectOptions {
    /// The endpoint requests go to: `endpoint`, else `http://$PUBSUB_EMULATOR_HOST`, else `None`
    /// (the production service).
    pub fn resolved_endpoint(&self) -> Option<String> {
        self.endpoint.clone().or_else(|| {
            std::env::var(EMULATOR_HOST_ENV)
                .ok()
                .filter(|h| !h.trim().is_empty())
                .map(|h| emulator_url(h.trim()))
        })
    }
}

/// `host:port` → `http://host:port` (a value that already has a scheme is kept).
fn emulator_url(host: &str) -> String {
    if host.contains("://") {
        host.to_string()
    } else {
        format!("http://{host}")
    }
}

/// Applies the endpoint and, for the emulator, anonymous credentials to a client builder (each
/// client of the crate has its own builder type with the same two methods), then builds it.
macro_rules! build_client {
    ($connection:expr, $builder:expr, $resource:expr) => {{
        let mut builder = $builder;
        if let Some(endpoint) = &$connection.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(credentials) = $connection.anonymous() {
            builder = builder.with_credentials(credentials);
        }
        builder
            .build()
            .await
            .map_err(|e| client_build_error($resource, $connection.endpoint(), &e))
    }};
}

/// A resolved endpoint and credential mode, shared by every client built from it.
#[derive(Debug, Clone)]
pub struct Connection {
    endpoint: Option<String>,
}

impl Connection {
    /// Resolves the endpoint once.
    pub fn new(options: &ConnectOptions) -> Self {
        Self {
            endpoint: options.resolved_endpoint(),
        }
    }

    /// The endpoint override, if any (for error hints).
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    /// Plain-text endpoints are emulators: they get no credentials.
    pub fn is_emulator(&self) -> bool {
        self.endpoint.as_deref().is_some_and(|e| e.starts_with("http://"))
    }

    fn anonymous(&self) -> Option<Credentials> {
        self.is_emulator().then(|| Anonymous::new().build())
    }

    /// A streaming-pull client.
    pub async fn subscriber(&self, subscription: &str) -> Result<Subscriber, QueueError> {
        build_client!(self, Subscriber::builder(), subscription)
    }

    /// A batching publisher for `topic`.
    pub async fn publisher(&self, topic: &str) -> Result<Publisher, QueueError> {
        // The target publishes a whole batch and then flushes, so these only cap the size of
        // one request.
        let builder = Publisher::builder(topic)
            .set_message_count_threshold(crate::limits::MAX_PUBLISH_BATCH as u32)
            .set_byte_threshold(crate::limits::MAX_PUBLISH_REQUEST_BYTES as u32 / 2);
        build_client!(self, builder, topic)
    }

    /// The admin client for subscriptions (its calls retry for at most [`ADMIN_RETRY_LIMIT`]).
    pub async fn subscription_admin(&self, subscription: &str) -> Result<SubscriptionAdmin, QueueError> {
        build_client!(
            self,
            SubscriptionAdmin::builder().with_retry_policy(admin_retry_policy()),
            subscription
        )
    }

    /// The admin client for topics (its calls retry for at most [`ADMIN_RETRY_LIMIT`]).
    pub async fn topic_admin(&self, topic: &str) -> Result<TopicAdmin, QueueError> {
        build_client!(
            self,
            TopicAdmin::builder().with_retry_policy(admin_retry_policy()),
            topic
        )
    }
}

/// Longest time an admin call (reading a subscription's or topic's settings, at open and in
/// `check --preflight`) keeps retrying: an emulator or endpoint that is down is reported in
/// seconds, not after the client's default minute.
pub const ADMIN_RETRY_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

fn admin_retry_policy() -> impl google_cloud_gax::retry_policy::RetryPolicy {
    use google_cloud_gax::retry_policy::{Aip194Strict, RetryPolicyExt};
    Aip194Strict.with_attempt_limit(5).with_time_limit(ADMIN_RETRY_LIMIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulator_host_gets_a_scheme() {
        assert_eq!(emulator_url("127.0.0.1:8085"), "http://127.0.0.1:8085");
        assert_eq!(emulator_url("http://h:1"), "http://h:1");
    }

    #[test]
    fn only_plain_http_endpoints_are_emulators() {
        let c = |e: Option<&str>| Connection {
            endpoint: e.map(str::to_string),
        };
        assert!(c(Some("http://127.0.0.1:8085")).is_emulator());
        assert!(!c(Some("https://pubsub.googleapis.com")).is_emulator());
        assert!(!c(None).is_emulator());
    }
}
