//! The HTTP target: POST each message to a handler service.
//!
//! - Body: the message body (JSON gets `content-type: application/json`, anything else
//!   `text/plain; charset=utf-8`).
//! - Headers: `x-veltrix-message-id`, `x-veltrix-rule`, `x-veltrix-attempt`, and every other
//!   attribute as `x-veltrix-attr-<name>` (attributes that are not valid header names or values
//!   are skipped), plus the configured static headers and an optional bearer token read from an
//!   environment variable at start-up (never logged).
//! - Outcome: 2xx succeeds; 408, 429, 5xx, timeouts and connection errors are transient (a
//!   `Retry-After` in seconds is honoured as the earliest retry); any other status is permanent
//!   and dead-letters the message with the status and the first bytes of the response body.
//!
//! One pooled `reqwest` client (rustls) per target; a batch is sent concurrently.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Client, StatusCode};
use veltrix_queue::{ErrorClass, OutboundMessage, Publisher, QueueError};

use crate::pipeline::process::{ATTR_ATTEMPT, ATTR_MESSAGE_ID, ATTR_RULE};

/// Messages sent concurrently per publish call.
pub const MAX_CONCURRENT_REQUESTS: usize = 64;
/// Bytes of an error response body quoted in the dead-letter reason.
pub const ERROR_BODY_BYTES: usize = 256;
/// Longest `Retry-After` honoured (the SQS visibility maximum).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(12 * 60 * 60);

/// Settings of one HTTP target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTargetOptions {
    /// Where to POST.
    pub url: String,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Static headers added to every request.
    pub headers: BTreeMap<String, String>,
    /// Bearer token (already read from its environment variable).
    pub bearer_token: Option<String>,
}

/// POSTs messages to a handler.
pub struct HttpTarget {
    client: Client,
    url: String,
}

impl HttpTarget {
    /// Builds the pooled client; header names and values were validated with the config.
    pub fn new(options: HttpTargetOptions) -> Result<Self, QueueError> {
        let mut headers = HeaderMap::new();
        for (k, v) in &options.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| QueueError::permanent(format!("header name `{k}`: {e}")))?;
            let value = HeaderValue::from_str(v).map_err(|e| QueueError::permanent(format!("header `{k}`: {e}")))?;
            headers.insert(name, value);
        }
        if let Some(token) = &options.bearer_token {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| QueueError::permanent("the bearer token is not a valid header value"))?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let client = Client::builder()
            .timeout(options.timeout)
            .default_headers(headers)
            .pool_max_idle_per_host(MAX_CONCURRENT_REQUESTS)
            .build()
            .map_err(|e| QueueError::from_chain(ErrorClass::Permanent, &e))?;
        Ok(Self {
            client,
            url: options.url,
        })
    }

    async fn send(&self, message: OutboundMessage) -> Result<(), QueueError> {
        let json = serde_json::from_slice::<serde::de::IgnoredAny>(&message.body).is_ok();
        let mut request = self
            .client
            .post(&self.url)
            .header(
                CONTENT_TYPE,
                if json {
                    "application/json"
                } else {
                    "text/plain; charset=utf-8"
                },
            )
            .body(message.body);
        for (k, v) in &message.attributes {
            let name = match k.as_str() {
                ATTR_MESSAGE_ID => "x-veltrix-message-id".to_string(),
                ATTR_RULE => "x-veltrix-rule".to_string(),
                ATTR_ATTEMPT => "x-veltrix-attempt".to_string(),
                other => format!("x-veltrix-attr-{other}"),
            };
            if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(v)) {
                request = request.header(name, value);
            }
        }
        let response = request.send().await.map_err(|e| {
            let what = if e.is_timeout() { "timed out" } else { "failed" };
            QueueError {
                class: ErrorClass::Transient,
                message: format!("POST {} {what}: {}", self.url, chain(&e)),
                retry_after: None,
            }
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|secs| Duration::from_secs(secs).min(MAX_RETRY_AFTER));
        let body = response.bytes().await.unwrap_or_default();
        let quoted = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_BYTES)]).into_owned();
        let class = if is_transient_status(status) {
            ErrorClass::Transient
        } else {
            ErrorClass::Permanent
        };
        Err(QueueError {
            class,
            message: format!("POST {} returned {status}: {quoted}", self.url),
            retry_after,
        })
    }
}

/// 408, 429 and 5xx are worth retrying; other non-2xx statuses are not.
pub fn is_transient_status(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

fn chain(e: &reqwest::Error) -> String {
    veltrix_queue::error::render_chain(e)
}

#[async_trait]
impl Publisher for HttpTarget {
    fn describe(&self) -> String {
        format!("http {}", self.url)
    }

    fn max_batch(&self) -> usize {
        MAX_CONCURRENT_REQUESTS
    }

    async fn publish(&self, batch: Vec<OutboundMessage>) -> Vec<Result<(), QueueError>> {
        futures::future::join_all(batch.into_iter().map(|m| self.send(m))).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(is_transient_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 413, 422] {
            assert!(!is_transient_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }
}
