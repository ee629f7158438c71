//! The SQS target: `SendMessageBatch` with size-aware batching.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use aws_sdk_sqs::Client;
use veltrix_queue::{ErrorClass, OutboundMessage, Publisher, QueueError};

use crate::errors::{classify, is_permanent_code};
use crate::limits::{MAX_ATTRIBUTES, MAX_BATCH, MAX_BATCH_BYTES, MAX_ID_CHARS, MAX_MESSAGE_BYTES};

/// Attribute set when a body that is not UTF-8 was sent base64-encoded (SQS bodies are text).
pub const ATTR_BODY_ENCODING: &str = "veltrix.body_encoding";
/// Attribute holding every attribute as a JSON object when there are more than SQS allows.
pub const ATTR_PACKED: &str = "veltrix.attributes";
/// The source message id veltrix adds to forwarded messages (FIFO de-duplication uses it).
pub const ATTR_MESSAGE_ID: &str = "veltrix.message_id";
/// The forwarding rule veltrix adds to forwarded messages.
pub const ATTR_RULE: &str = "veltrix.rule";
/// Group used for FIFO targets when a message has no ordering key.
pub const DEFAULT_GROUP: &str = "veltrix";
/// Attributes kept individually first when the rest must be packed.
const PRIORITY: &[&str] = &[
    "veltrix.reason",
    "veltrix.message_id",
    "veltrix.rule",
    "veltrix.attempts",
    "veltrix.source",
];

/// Publishes to an SQS queue (standard or FIFO, by its `.fifo` suffix).
pub struct SqsTarget {
    client: Client,
    queue_url: String,
    endpoint_url: Option<String>,
    fifo: bool,
}

/// A message made ready for SQS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// Body text.
    pub body: String,
    /// Attributes to send (at most 10, none empty).
    pub attributes: BTreeMap<String, String>,
    /// Bytes SQS counts for this message.
    pub size: usize,
}

/// Makes a message fit SQS rules: text body, at most 10 non-empty attributes, size limit.
pub fn prepare(message: &OutboundMessage) -> Result<Prepared, QueueError> {
    let mut attributes: BTreeMap<String, String> = message
        .attributes
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let body = match std::str::from_utf8(&message.body) {
        Ok(text) => text.to_string(),
        Err(_) => {
            attributes.insert(ATTR_BODY_ENCODING.into(), "base64".into());
            base64_encode(&message.body)
        }
    };
    if attributes.len() > MAX_ATTRIBUTES {
        let packed = pack(&attributes);
        let mut kept = BTreeMap::new();
        for name in PRIORITY {
            if let Some(v) = attributes.get(*name) {
                kept.insert(name.to_string(), v.clone());
            }
        }
        for (k, v) in &attributes {
            if kept.len() >= MAX_ATTRIBUTES - 1 {
                break;
            }
            kept.entry(k.clone()).or_insert_with(|| v.clone());
        }
        kept.insert(ATTR_PACKED.into(), packed);
        attributes = kept;
    }
    let size = body.len()
        + attributes
            .iter()
            .map(|(k, v)| k.len() + v.len() + "String".len())
            .sum::<usize>();
    if size > MAX_MESSAGE_BYTES {
        return Err(QueueError::permanent(format!(
            "message of {size} bytes (body and attributes) exceeds the SQS limit of {MAX_MESSAGE_BYTES} bytes; \
             it cannot be sent to this queue"
        )));
    }
    Ok(Prepared { body, attributes, size })
}

fn pack(attributes: &BTreeMap<String, String>) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in attributes.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&json_string(k));
        out.push(':');
        out.push_str(&json_string(v));
    }
    out.push('}');
    out
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A FIFO de-duplication id made of allowed characters, at most 128 long.
pub fn dedup_id(raw: &str) -> String {
    let clean: String = raw.chars().filter(|c| c.is_ascii_graphic()).collect();
    if !clean.is_empty() && clean.len() <= MAX_ID_CHARS {
        return clean;
    }
    // FNV-1a over the raw id: stable, so a resend de-duplicates.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in raw.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{}-{h:016x}", &clean[..clean.len().min(MAX_ID_CHARS - 17)])
}

/// Splits prepared messages into batches of at most 10 entries and 1 MiB.
pub fn plan_batches(sizes: &[usize]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, &size) in sizes.iter().enumerate() {
        if i > start && (i - start == MAX_BATCH || bytes + size > MAX_BATCH_BYTES) {
            out.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < sizes.len() {
        out.push(start..sizes.len());
    }
    out
}

impl SqsTarget {
    /// A target for `queue_url`.
    pub fn new(client: Client, queue_url: String, endpoint_url: Option<String>) -> Self {
        let fifo = queue_url.ends_with(".fifo");
        Self {
            client,
            queue_url,
            endpoint_url,
            fifo,
        }
    }

    async fn send(&self, batch: &[(usize, Prepared, &OutboundMessage)], results: &mut [Result<(), QueueError>]) {
        let mut request = self.client.send_message_batch().queue_url(&self.queue_url);
        for (i, p, m) in batch {
            let mut entry = SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(&p.body);
            for (k, v) in &p.attributes {
                let value = MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value(v)
                    .build()
                    .expect("data type is set");
                entry = entry.message_attributes(k, value);
            }
            if self.fifo {
                entry = entry.message_group_id(m.ordering_key.clone().unwrap_or_else(|| DEFAULT_GROUP.into()));
                let derived = match (m.attributes.get(ATTR_MESSAGE_ID), m.attributes.get(ATTR_RULE)) {
                    (Some(id), Some(rule)) => Some(format!("{id}:{rule}")),
                    _ => None,
                };
                if let Some(id) = m.dedup_id.clone().or(derived) {
                    entry = entry.message_deduplication_id(dedup_id(&id));
                }
            }
            request = request.entries(entry.build().expect("id and body are set"));
        }
        match request.send().await {
            Ok(out) => {
                for f in out.failed() {
                    if let Some(i) = f.id().parse::<usize>().ok().filter(|i| *i < results.len()) {
                        let class = if f.sender_fault() || is_permanent_code(f.code()) {
                            ErrorClass::Permanent
                        } else {
                            ErrorClass::Transient
                        };
                        results[i] = Err(QueueError {
                            class,
                            retry_after: None,
                            message: format!(
                                "SQS SendMessageBatch to {} rejected the message: {}: {}",
                                self.queue_url,
                                f.code(),
                                f.message().unwrap_or("")
                            ),
                        });
                    }
                }
            }
            Err(e) => {
                let error = classify("SendMessageBatch", &self.queue_url, self.endpoint_url.as_deref(), e);
                for (i, _, _) in batch {
                    results[*i] = Err(error.clone());
                }
            }
        }
    }
}

#[async_trait]
impl Publisher for SqsTarget {
    fn describe(&self) -> String {
        format!("sqs {}", self.queue_url)
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    async fn publish(&self, batch: Vec<OutboundMessage>) -> Vec<Result<(), QueueError>> {
        let mut results: Vec<Result<(), QueueError>> = batch.iter().map(|_| Ok(())).collect();
        let mut ready = Vec::new();
        for (i, m) in batch.iter().enumerate() {
            match prepare(m) {
                Ok(p) => ready.push((i, p, m)),
                Err(e) => results[i] = Err(e),
            }
        }
        let sizes: Vec<usize> = ready.iter().map(|(_, p, _)| p.size).collect();
        for range in plan_batches(&sizes) {
            self.send(&ready[range], &mut results).await;
        }
        results
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn message(body: &[u8], attrs: usize) -> OutboundMessage {
        OutboundMessage {
            body: Bytes::copy_from_slice(body),
            attributes: (0..attrs).map(|i| (format!("a{i:02}"), format!("v{i}"))).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn batches_respect_count_and_bytes() {
        assert_eq!(plan_batches(&[1; 25]), vec![0..10, 10..20, 20..25]);
        let half = MAX_BATCH_BYTES / 2;
        assert_eq!(plan_batches(&[half, half, 1, half]), vec![0..2, 2..4]);
        assert_eq!(plan_batches(&[]), Vec::<std::ops::Range<usize>>::new());
    }

    #[test]
    fn oversized_message_is_a_permanent_error() {
        let e = prepare(&message(&vec![b'x'; MAX_MESSAGE_BYTES + 1], 0)).unwrap_err();
        assert_eq!(e.class, ErrorClass::Permanent);
        assert!(e.message.contains("exceeds the SQS limit"));
    }

    #[test]
    fn binary_body_is_base64_with_a_marker() {
        let p = prepare(&message(&[0xff, 0x00, 0x41], 0)).unwrap();
        assert_eq!(p.body, "/wBB");
        assert_eq!(p.attributes[ATTR_BODY_ENCODING], "base64");
        assert_eq!(base64_encode(b"hello"), "aGVsbG8=");
    }

    #[test]
    fn too_many_attributes_are_packed_keeping_priority_ones() {
        let mut m = message(b"{}", 12);
        m.attributes.insert("veltrix.reason".into(), "unmatched".into());
        m.attributes.insert("empty".into(), String::new());
        let p = prepare(&m).unwrap();
        assert_eq!(p.attributes.len(), MAX_ATTRIBUTES);
        assert_eq!(p.attributes["veltrix.reason"], "unmatched");
        assert!(p.attributes[ATTR_PACKED].contains("\"a11\":\"v11\""));
        assert!(!p.attributes.contains_key("empty"));
    }

    #[test]
    fn dedup_ids_are_clean_and_bounded() {
        assert_eq!(dedup_id("abc:1:2"), "abc:1:2");
        let long = "x".repeat(300);
        let id = dedup_id(&long);
        assert!(id.len() <= MAX_ID_CHARS);
        assert_eq!(id, dedup_id(&long), "stable");
    }
}
