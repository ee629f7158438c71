//! Dead letters from a JSON-lines file written by a `file` target: each line
//! `{"body": …, "attributes": {…}, "ordering_key"?: …}` becomes the message it was.
//!
//! The file is read, not changed: replayed lines stay in it (move it aside after a replay; the
//! `veltrix.replays` count on the replayed copies still stops loops).

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;
use veltrix_queue::file::FileSource;
use veltrix_queue::{
    AckFailure, AckToken, Attributes, Delivery, QueueError, Received, Source, SourceInfo, SourceLimits,
};

/// A dead-letter file as a [`Source`].
pub struct DeadLetterFile {
    inner: FileSource,
}

impl DeadLetterFile {
    /// Opens `path` (`-` = stdin).
    pub async fn open(path: &Path) -> Result<Self, QueueError> {
        Ok(Self {
            inner: FileSource::open(path, Duration::from_secs(3600)).await?,
        })
    }
}

/// Turns a file line back into the message it records; a line that is not such an object is
/// taken as a bare body.
pub fn from_line(mut d: Delivery) -> Delivery {
    let Ok(Value::Object(mut line)) = serde_json::from_slice::<Value>(&d.body) else {
        d.attributes.clear();
        return d;
    };
    let Some(body) = line.remove("body") else {
        d.attributes.clear();
        return d;
    };
    d.body = match body {
        Value::String(s) => Bytes::from(s),
        other => Bytes::from(serde_json::to_vec(&other).expect("a JSON value always serializes")),
    };
    d.attributes = match line.remove("attributes") {
        Some(Value::Object(attrs)) => attrs
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, v)
            })
            .collect::<Attributes>(),
        _ => Attributes::new(),
    };
    d.ordering_key = match line.remove("ordering_key") {
        Some(Value::String(k)) => Some(k),
        _ => None,
    };
    d
}

#[async_trait]
impl Source for DeadLetterFile {
    fn info(&self) -> SourceInfo {
        self.inner.info()
    }

    fn limits(&self) -> SourceLimits {
        self.inner.limits()
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Received, QueueError> {
        Ok(match self.inner.receive(max, wait).await? {
            Received::Messages(batch) => Received::Messages(batch.into_iter().map(from_line).collect()),
            Received::Exhausted => Received::Exhausted,
        })
    }

    async fn ack(&self, tokens: Vec<AckToken>) -> Result<(), AckFailure> {
        self.inner.ack(tokens).await
    }

    async fn nack(&self, token: AckToken, delay: Duration) -> Result<(), QueueError> {
        self.inner.nack(token, delay).await
    }

    async fn extend(&self, tokens: Vec<AckToken>, by: Duration) -> Result<(), QueueError> {
        self.inner.extend(tokens, by).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> Delivery {
        Delivery {
            id: "1".into(),
            body: Bytes::from(text.to_string()),
            attributes: [("file.line".to_string(), "1".to_string())].into_iter().collect(),
            ordering_key: None,
            delivery_attempt: 1,
            published_at: None,
            token: AckToken::new(1u64),
        }
    }

    #[test]
    fn file_lines_become_the_messages_they_record() {
        let d = from_line(line(
            r#"{"body": {"a": 1}, "attributes": {"veltrix.reason": "unmatched", "k": "v"}, "ordering_key": "g"}"#,
        ));
        assert_eq!(&d.body[..], br#"{"a":1}"#);
        assert_eq!(
            d.attributes.get("veltrix.reason").map(String::as_str),
            Some("unmatched")
        );
        assert!(!d.attributes.contains_key("file.line"));
        assert_eq!(d.ordering_key.as_deref(), Some("g"));
        let s = from_line(line(r#"{"body": "not json", "attributes": {}}"#));
        assert_eq!(&s.body[..], b"not json");
    }

    #[test]
    fn other_lines_are_bare_bodies() {
        let d = from_line(line("just text"));
        assert_eq!(&d.body[..], b"just text");
        assert!(d.attributes.is_empty());
    }
}
