//! The HTTP target: POST each message to a handler service.
//!
//! - Body: the message body, byte for byte (`content-type: application/json` when it is JSON,
//!   `text/plain; charset=utf-8` for other UTF-8 text, `application/octet-stream` otherwise).
//! - Headers: `x-veltrix-message-id`, `x-veltrix-rule`, `x-veltrix-attempt`; every other
//!   attribute as `x-veltrix-attr-<name>` when its name is a lowercase header token and its
//!   value a plain string of visible ASCII; attributes that cannot be sent that way (other
//!   names or values, SQS `Number`/`Binary` types) go, all of them, into one
//!   `x-veltrix-attributes` header holding a JSON object in the record shape (ASCII-escaped),
//!   so nothing is dropped (with more than 32 such attributes, all of them go there; a message
//!   whose attributes need more than 8 KiB there cannot be sent and is dead-lettered). The ordering key goes in `x-veltrix-ordering-key` (or, when it is
//!   not visible ASCII, as a JSON string in `x-veltrix-ordering-key-json`). Plus the configured
//!   static headers and an optional bearer token
//!   read from an environment variable at start-up (never logged; only sent over https or to a
//!   loopback address, which the config checks).
//! - Redirects are not followed (a redirected POST turns into a GET without a body, and the
//!   message would be acked unseen): a 3xx is a permanent failure naming the status and
//!   `Location`.
//! - Outcome: 2xx succeeds; 408, 429, 5xx, timeouts and connection errors are transient (a
//!   `Retry-After` in seconds is honoured as the earliest retry); any other status is permanent
//!   and dead-letters the message with the status and the first 256 bytes of the response
//!   (no more is read).
//! - URLs in descriptions and errors are shown without userinfo, query or fragment.
//!
//! One pooled `reqwest` client (rustls) per target; a batch is sent concurrently.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use reqwest::{Client, StatusCode, Url};
use veltrix_queue::record::attribute_to_json;
use veltrix_queue::{AttributeValue, ErrorClass, OutboundMessage, Publisher, QueueError};

use crate::pipeline::process::{ATTR_ATTEMPT, ATTR_MESSAGE_ID, ATTR_RULE};

/// Messages sent concurrently per publish call.
pub const MAX_CONCURRENT_REQUESTS: usize = 64;
/// Bytes of an error response body read and quoted in the dead-letter reason.
pub const ERROR_BODY_BYTES: usize = 256;
/// Longest `Retry-After` honoured (the SQS visibility maximum).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(12 * 60 * 60);
/// Prefix of the header of each attribute that can be a header of its own.
pub const ATTR_HEADER_PREFIX: &str = "x-veltrix-attr-";
/// Header carrying the attributes that cannot be headers of their own, as JSON.
pub const ATTRIBUTES_HEADER: &str = "x-veltrix-attributes";
/// Most attributes sent as headers of their own; a message with more sends them all in
/// [`ATTRIBUTES_HEADER`] (HTTP servers cap the number of headers: hyper at 100).
pub const MAX_ATTRIBUTE_HEADERS: usize = 32;
/// Longest [`ATTRIBUTES_HEADER`] value (the common per-header limit, nginx's 8 KiB); a message
/// whose attributes need more cannot be sent to a handler and is dead-lettered.
pub const MAX_ATTRIBUTES_HEADER_BYTES: usize = 8 * 1024;
/// Header carrying the ordering key (FIFO group), when it is visible ASCII.
pub const ORDERING_KEY_HEADER: &str = "x-veltrix-ordering-key";
/// Header carrying any other ordering key as an ASCII-escaped JSON string.
pub const ORDERING_KEY_JSON_HEADER: &str = "x-veltrix-ordering-key-json";

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
    timeout: Duration,
    url: String,
    /// `url` without userinfo, query and fragment, for descriptions and errors.
    shown: String,
}

/// A URL as it may be shown: no userinfo, query or fragment (they can hold secrets).
pub fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "<an invalid URL>".to_string(),
    }
}

/// Whether a URL may carry a bearer token: https, or plain http to a loopback address.
pub fn may_carry_token(url: &str) -> bool {
    let Ok(u) = Url::parse(url) else { return false };
    if u.scheme() == "https" {
        return true;
    }
    match u.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost") || d.to_ascii_lowercase().ends_with(".localhost")
        }
        None => false,
    }
}

/// Whether an attribute goes as its own `x-veltrix-attr-<name>` header.
fn own_header(name: &str, value: &AttributeValue) -> Option<(HeaderName, HeaderValue)> {
    let text = value.as_str().filter(|_| value.is_plain_string())?;
    if name.chars().any(|c| c.is_ascii_uppercase()) {
        return None; // header names are case-insensitive; attribute names are not
    }
    let name = HeaderName::from_bytes(format!("{ATTR_HEADER_PREFIX}{name}").as_bytes()).ok()?;
    if !text.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        return None;
    }
    Some((name, HeaderValue::from_str(text).ok()?))
}

/// JSON with every non-ASCII character escaped, so it is a valid header value.
fn ascii_json(value: &serde_json::Value) -> String {
    let text = serde_json::to_string(value).expect("a JSON value always serializes");
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

impl HttpTarget {
    /// Builds the pooled client; header names and values were validated with the config.
    pub fn new(options: HttpTargetOptions) -> Result<Self, QueueError> {
        let shown = redact_url(&options.url);
        let mut headers = HeaderMap::new();
        for (k, v) in &options.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| QueueError::permanent(format!("header name `{k}`: {e}")))?;
            let value = HeaderValue::from_str(v).map_err(|e| QueueError::permanent(format!("header `{k}`: {e}")))?;
            headers.insert(name, value);
        }
        if let Some(token) = &options.bearer_token {
            if !may_carry_token(&options.url) {
                return Err(QueueError::permanent(format!(
                    "a bearer token is sent only over https or to a loopback address, not to {shown}"
                )));
            }
            let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| QueueError::permanent("the bearer token is not a valid header value"))?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let client = Client::builder()
            .timeout(options.timeout)
            .default_headers(headers)
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(MAX_CONCURRENT_REQUESTS)
            .build()
            .map_err(|e| QueueError::from_chain(ErrorClass::Permanent, &e.without_url()))?;
        Ok(Self {
            client,
            timeout: options.timeout,
            url: options.url,
            shown,
        })
    }

    fn request(&self, message: OutboundMessage) -> Result<reqwest::RequestBuilder, QueueError> {
        let content_type = match std::str::from_utf8(&message.body) {
            Ok(text) if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() => "application/json",
            Ok(_) => "text/plain; charset=utf-8",
            Err(_) => "application/octet-stream",
        };
        let mut request = self.client.post(&self.url).header(CONTENT_TYPE, content_type);
        let own_headers = message
            .attributes
            .iter()
            .filter(|(k, v)| own_header(k, v).is_some())
            .count();
        let mut others = serde_json::Map::new();
        for (k, v) in &message.attributes {
            let fixed = match k.as_str() {
                ATTR_MESSAGE_ID => Some("x-veltrix-message-id"),
                ATTR_RULE => Some("x-veltrix-rule"),
                ATTR_ATTEMPT => Some("x-veltrix-attempt"),
                _ => None,
            };
            let header = match fixed {
                Some(name) => v
                    .as_str()
                    .and_then(|t| HeaderValue::from_str(t).ok())
                    .map(|value| (HeaderName::from_static(name), value)),
                None if own_headers <= MAX_ATTRIBUTE_HEADERS => own_header(k, v),
                None => None,
            };
            match header {
                Some((name, value)) => request = request.header(name, value),
                None => {
                    others.insert(k.clone(), attribute_to_json(v));
                }
            }
        }
        if !others.is_empty() {
            let json = ascii_json(&serde_json::Value::Object(others));
            if json.len() > MAX_ATTRIBUTES_HEADER_BYTES {
                return Err(QueueError::permanent(format!(
                    "the message's attributes need a {}-byte {ATTRIBUTES_HEADER} header; HTTP handlers take at most {MAX_ATTRIBUTES_HEADER_BYTES} bytes per header, so it cannot be sent to {}",
                    json.len(),
                    self.shown
                )));
            }
            let value = HeaderValue::from_str(&json).expect("ASCII JSON is a valid header value");
            request = request.header(ATTRIBUTES_HEADER, value);
        }
        if let Some(key) = &message.ordering_key {
            let plain = !key.is_empty() && key.bytes().all(|b| b.is_ascii_graphic());
            request = match plain {
                true => request.header(ORDERING_KEY_HEADER, HeaderValue::from_str(key).expect("visible ASCII")),
                false => request.header(
                    ORDERING_KEY_JSON_HEADER,
                    HeaderValue::from_str(&ascii_json(&serde_json::Value::String(key.clone())))
                        .expect("ASCII JSON is a valid header value"),
                ),
            };
        }
        Ok(request.body(message.body))
    }

    async fn send(&self, message: OutboundMessage) -> Result<(), QueueError> {
        let response = self.request(message)?.send().await.map_err(|e| {
            let what = if e.is_timeout() { "timed out" } else { "failed" };
            QueueError {
                class: ErrorClass::Transient,
                message: format!("POST {} {what}: {}", self.shown, chain(e)),
                retry_after: None,
            }
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        if status.is_redirection() {
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(|l| match self.client_url().join(l) {
                    Ok(u) => redact_url(u.as_str()),
                    Err(_) => "<not a URL>".to_string(),
                })
                .unwrap_or_else(|| "(none)".to_string());
            return Err(QueueError::permanent(format!(
                "POST {} returned {status}, Location: {location}; redirects are not followed (a redirected POST loses its body): point the target's `url` at the final address",
                self.shown
            )));
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|secs| Duration::from_secs(secs).min(MAX_RETRY_AFTER));
        let quoted = read_prefix(response, ERROR_BODY_BYTES).await;
        let class = status_class(status, retry_after.is_some());
        Err(QueueError {
            class,
            message: format!("POST {} returned {status}: {quoted}", self.shown),
            retry_after,
        })
    }

    fn client_url(&self) -> Url {
        Url::parse(&self.url).expect("the URL was validated with the config")
    }
}

/// The first `max` bytes of a response body, as text; the rest is never read.
async fn read_prefix(mut response: reqwest::Response, max: usize) -> String {
    let mut body = Vec::new();
    while body.len() < max {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(max - body.len())]),
            Ok(None) | Err(_) => break,
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// 408, 429 and 5xx are worth retrying; other non-2xx statuses are not.
pub fn is_transient_status(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// The class of a non-2xx, non-3xx answer: 429, or a retryable status with `Retry-After`, is
/// throttling (the target slows down, the message is not blamed); other 408/5xx are transient;
/// the rest permanent.
pub fn status_class(status: StatusCode, has_retry_after: bool) -> ErrorClass {
    if status == StatusCode::TOO_MANY_REQUESTS || (has_retry_after && is_transient_status(status)) {
        ErrorClass::Throttled
    } else if is_transient_status(status) {
        ErrorClass::Transient
    } else {
        ErrorClass::Permanent
    }
}

/// The error's cause chain, without the URL reqwest puts in it (it may hold secrets).
fn chain(e: reqwest::Error) -> String {
    veltrix_queue::error::render_chain(&e.without_url())
}

#[async_trait]
impl Publisher for HttpTarget {
    fn describe(&self) -> String {
        format!("http {}", self.shown)
    }

    fn max_batch(&self) -> usize {
        MAX_CONCURRENT_REQUESTS
    }

    fn call_timeout(&self) -> Duration {
        // Requests of a batch run at once, each bounded by the client's timeout.
        self.timeout + Duration::from_secs(5)
    }

    async fn publish(&self, batch: Vec<OutboundMessage>) -> Vec<Result<(), QueueError>> {
        futures::future::join_all(batch.into_iter().map(|m| self.send(m))).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_secrets() {
        assert_eq!(
            redact_url("https://user:pw@host.example:8443/hook?token=abc#x"),
            "https://host.example:8443/hook"
        );
        assert_eq!(redact_url("not a url"), "<an invalid URL>");
    }

    #[test]
    fn tokens_only_go_over_https_or_to_loopback() {
        assert!(may_carry_token("https://fraud.example/events"));
        assert!(may_carry_token("http://127.0.0.1:8080/x"));
        assert!(may_carry_token("http://[::1]/x"));
        assert!(may_carry_token("http://localhost/x"));
        assert!(!may_carry_token("http://fraud.internal/events"));
        assert!(!may_carry_token("http://10.0.0.1/events"));
    }

    #[test]
    fn attributes_headers_cannot_take_go_as_json() {
        assert!(own_header("tenant", &AttributeValue::string("acme")).is_some());
        assert!(own_header("Tenant", &AttributeValue::string("acme")).is_none());
        assert!(own_header("tenant", &AttributeValue::string("é")).is_none());
        assert!(own_header("tenant", &AttributeValue::string("a\nb")).is_none());
        assert!(own_header("with space", &AttributeValue::string("v")).is_none());
        assert!(own_header("n", &AttributeValue::typed_text("Number", "1")).is_none());
        let json = ascii_json(&serde_json::json!({"k": "é😀"}));
        assert_eq!(json, r#"{"k":"\u00e9\ud83d\ude00"}"#);
        assert_eq!(serde_json::from_str::<serde_json::Value>(&json).unwrap()["k"], "é😀");
    }

    #[test]
    fn status_classes() {
        assert_eq!(
            status_class(StatusCode::TOO_MANY_REQUESTS, false),
            ErrorClass::Throttled
        );
        assert_eq!(
            status_class(StatusCode::SERVICE_UNAVAILABLE, true),
            ErrorClass::Throttled
        );
        assert_eq!(
            status_class(StatusCode::SERVICE_UNAVAILABLE, false),
            ErrorClass::Transient
        );
        assert_eq!(status_class(StatusCode::BAD_REQUEST, true), ErrorClass::Permanent);
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(is_transient_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 413, 422] {
            assert!(!is_transient_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }
}
