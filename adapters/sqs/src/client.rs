//! Building an SQS client from the standard AWS configuration chain.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_sqs::Client;

/// Longest wait for a connection to SQS.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest single attempt of a call that does not long-poll (the SDK retries after it).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest call, its retries included; an endpoint that accepts connections and never answers
/// cannot hold a worker longer.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Added to the long-poll wait for a receive's attempt timeout.
pub const RECEIVE_ATTEMPT_MARGIN: Duration = Duration::from_secs(10);

/// The timeouts of every call but receives.
pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

/// The timeouts of a receive that long-polls for `wait`.
pub fn receive_timeouts(wait: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(wait + RECEIVE_ATTEMPT_MARGIN)
        .operation_timeout(wait + OPERATION_TIMEOUT)
        .build()
}

/// Where and how to connect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Endpoint override (LocalStack: `http://127.0.0.1:4566`); `AWS_ENDPOINT_URL` also works.
    pub endpoint_url: Option<String>,
    /// Region override; otherwise the chain's (`AWS_REGION`, profile, IMDS), else the region in
    /// the queue URL.
    pub region: Option<String>,
}

impl ConnectOptions {
    /// The endpoint requests go to when overridden (`endpoint_url`, else `AWS_ENDPOINT_URL`),
    /// for error hints.
    pub fn endpoint_override(&self) -> Option<String> {
        self.endpoint_url
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
    }
}

/// The region in a queue URL such as `https://sqs.eu-west-1.amazonaws.com/123/q`.
pub fn region_from_queue_url(queue_url: &str) -> Option<String> {
    let host = queue_url.split("://").nth(1)?.split('/').next()?;
    let mut parts = host.split('.');
    (parts.next()? == "sqs")
        .then(|| parts.next().map(str::to_string))
        .flatten()
        .filter(|r| r.contains('-'))
}

/// Loads the AWS configuration (credentials from env, profile, IMDS/IRSA) and builds a client.
pub async fn connect(options: &ConnectOptions, queue_url: &str) -> Client {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts());
    if let Some(endpoint) = &options.endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    let region = options.region.clone().or_else(|| region_from_queue_url(queue_url));
    if let Some(region) = region {
        loader = loader.region(Region::new(region));
    }
    let config = loader.load().await;
    let mut builder = aws_sdk_sqs::config::Builder::from(&config);
    if config.region().is_none() {
        // LocalStack and most emulators accept any region; a missing one only breaks signing.
        builder = builder.region(Region::new("us-east-1"));
    }
    Client::from_conf(builder.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_is_read_from_aws_queue_urls_only() {
        assert_eq!(
            region_from_queue_url("https://sqs.eu-west-1.amazonaws.com/1/q").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(region_from_queue_url("http://127.0.0.1:4566/000000000000/q"), None);
        assert_eq!(
            region_from_queue_url("http://sqs.localhost.localstack.cloud:4566/1/q"),
            None
        );
    }
}
