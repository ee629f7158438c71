//! Errors from queues and targets, classified for the retry policy.

use std::error::Error as StdError;
use std::fmt;

/// Whether retrying an operation later can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// 5xx, timeouts, connection loss: retry with backoff.
    Transient,
    /// The other side asked to slow down (HTTP 429, `Retry-After`, a provider's throttling
    /// error): retry later, at a lower rate; says nothing against the message.
    Throttled,
    /// Bad input, payload too large, 4xx, missing permission: retrying cannot help.
    Permanent,
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Throttled => "throttled",
            ErrorClass::Permanent => "permanent",
        })
    }
}

/// An error from a source or a publisher.
///
/// `message` holds the whole cause chain already rendered, so logs and dead-letter reasons show
/// the provider's own words, not just the outermost wrapper.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct QueueError {
    /// Transient or permanent.
    pub class: ErrorClass,
    /// Human-readable description, including causes and, where known, a hint.
    pub message: String,
    /// The earliest time a retry can help, when the other side said (HTTP `Retry-After`).
    pub retry_after: Option<std::time::Duration>,
}

impl QueueError {
    /// A transient error.
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Transient,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A throttling error (retry later, slower).
    pub fn throttled(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Throttled,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A permanent error.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Permanent,
            message: message.into(),
            retry_after: None,
        }
    }

    /// True when retrying later may succeed (transient and throttling errors).
    pub fn is_transient(&self) -> bool {
        matches!(self.class, ErrorClass::Transient | ErrorClass::Throttled)
    }

    /// True when the other side asked to slow down.
    pub fn is_throttled(&self) -> bool {
        self.class == ErrorClass::Throttled
    }

    /// Builds an error from `err` and every error in its `source()` chain, joined with ": ".
    pub fn from_chain(class: ErrorClass, err: &(dyn StdError + 'static)) -> Self {
        Self {
            class,
            message: render_chain(err),
            retry_after: None,
        }
    }
}

/// Renders an error and its causes as `outer: cause: root cause`, skipping repeats.
pub fn render_chain(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}
