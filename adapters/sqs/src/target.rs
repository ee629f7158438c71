//! The SQS target: `SendMessageBatch` with size-aware batching.

use async_trait::async_trait;
use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use aws_sdk_sqs::Client;
use veltrix_queue::{packing, AttributeData, AttributeValue, ErrorClass, OutboundMessage, Publisher, QueueError};

use crate::errors::{classify, is_permanent_code, is_throttling_code, CallContext};
use crate::limits::{MAX_ATTRIBUTES, MAX_BATCH, MAX_BATCH_BYTES, MAX_ID_CHARS, MAX_MESSAGE_BYTES};

/// The source message id veltrix adds to forwarded messages.
pub const ATTR_MESSAGE_ID: &str = "veltrix.message_id";
/// Carries an ordering key SQS cannot hold as it is (a standard queue has no groups; a FIFO
/// group id allows 128 characters of a limited set); the SQS source restores it.
pub const ATTR_ORDERING_KEY: &str = "veltrix.ordering_key";
/// Group used for FIFO targets when a message has no ordering key.
pub const DEFAULT_GROUP: &str = "veltrix";
/// Longest attribute name and data type.
const MAX_NAME_CHARS: usize = 256;

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
    /// Attributes to send as SQS attributes (at most 10, each valid for SQS).
    pub attributes: Vec<(String, AttributeValue)>,
    /// FIFO message group.
    pub group_id: Option<String>,
    /// Bytes SQS counts for this message.
    pub size: usize,
}

/// Whether SQS accepts `c` in a body or attribute value (the XML 1.0 character set).
pub fn is_sqs_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{fffe}' && c != '\u{ffff}')
}

/// Whether SQS accepts `name` as a message attribute name.
pub fn is_sqs_attribute_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !name.is_empty()
        && name.len() <= MAX_NAME_CHARS
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
        && !lower.starts_with("aws.")
        && !lower.starts_with("amazon.")
}

/// Whether SQS accepts `data_type` (`String`, `Number`, `Binary`, optionally `.label`).
fn is_sqs_data_type(data_type: &str) -> bool {
    let (base, label) = data_type.split_once('.').unwrap_or((data_type, ""));
    matches!(base, "String" | "Number" | "Binary")
        && data_type.len() <= MAX_NAME_CHARS
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && (label.is_empty() || !data_type.ends_with('.'))
}

/// Whether SQS carries this attribute as one of its own.
fn native_ok(name: &str, value: &AttributeValue) -> bool {
    if !is_sqs_attribute_name(name) || !is_sqs_data_type(value.data_type()) || value.is_empty() {
        return false;
    }
    match value.data() {
        AttributeData::Binary(_) => value.data_type().starts_with("Binary"),
        AttributeData::Text(text) => {
            let base = value.data_type().split('.').next().unwrap_or("");
            text.chars().all(is_sqs_char)
                && match base {
                    "Number" => is_sqs_number(text),
                    _ => base == "String",
                }
        }
    }
}

/// A number SQS accepts: digits with an optional sign, point and exponent, at most 38 digits.
fn is_sqs_number(text: &str) -> bool {
    let digits = text.chars().filter(char::is_ascii_digit).count();
    (1..=38).contains(&digits)
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | 'e' | 'E'))
        && text.parse::<f64>().is_ok()
}

/// Bytes SQS counts for one attribute: name, data type and value.
fn attribute_size(name: &str, value: &AttributeValue) -> usize {
    name.len() + value.data_type().len() + value.value_len()
}

/// Makes a message fit SQS: an XML-safe text body (else base64 with `veltrix.body_encoding`),
/// at most 10 attributes SQS accepts (the rest packed in `veltrix.attributes`), a valid FIFO
/// group (the ordering key kept in `veltrix.ordering_key` when it cannot be the group as it
/// is), and the size limit.
pub fn prepare(message: &OutboundMessage, fifo: bool) -> Result<Prepared, QueueError> {
    let mut attributes = message.attributes.clone();
    let body = match std::str::from_utf8(&message.body) {
        Ok("") => {
            attributes.insert(packing::ATTR_BODY_ENCODING, packing::EMPTY_ENCODING);
            packing::EMPTY_PLACEHOLDER.to_string()
        }
        Ok(text) if text.chars().all(is_sqs_char) => text.to_string(),
        _ => {
            attributes.insert(packing::ATTR_BODY_ENCODING, packing::BASE64_ENCODING);
            packing::encode_body(&message.body)
        }
    };
    let group_id = fifo.then(|| {
        let key = message.ordering_key.as_deref().unwrap_or(DEFAULT_GROUP);
        dedup_id(key)
    });
    if let Some(key) = &message.ordering_key {
        if group_id.as_deref() != Some(key.as_str()) {
            attributes.insert(ATTR_ORDERING_KEY, key.clone());
        }
    }
    let carried = packing::carry(&attributes, MAX_ATTRIBUTES, MAX_MESSAGE_BYTES, native_ok);
    let mut out: Vec<(String, AttributeValue)> = carried
        .native
        .into_iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    out.extend(carried.packed.into_iter().map(|(k, v)| (k, AttributeValue::string(v))));
    if out.len() > MAX_ATTRIBUTES {
        return Err(QueueError::permanent(format!(
            "message attributes need {} SQS attributes even packed; SQS allows {MAX_ATTRIBUTES}",
            out.len()
        )));
    }
    let size = body.len() + out.iter().map(|(k, v)| attribute_size(k, v)).sum::<usize>();
    if size > MAX_MESSAGE_BYTES {
        return Err(QueueError::permanent(format!(
            "message of {size} bytes (body and attributes, as SQS counts them) exceeds the SQS limit of {MAX_MESSAGE_BYTES} bytes; \
             it cannot be sent to this queue"
        )));
    }
    Ok(Prepared {
        body,
        attributes: out,
        group_id,
        size,
    })
}

/// The SDK's attribute value.
pub(crate) fn sdk_value(value: &AttributeValue) -> MessageAttributeValue {
    let builder = MessageAttributeValue::builder().data_type(value.data_type());
    let builder = match value.data() {
        AttributeData::Text(text) => builder.string_value(text),
        AttributeData::Binary(bytes) => builder.binary_value(Blob::new(bytes.to_vec())),
    };
    builder.build().expect("data type is set")
}

/// A FIFO de-duplication id or group id: `raw` itself when SQS allows it (at most 128 printable
/// ASCII characters), else its printable part cut short plus a hash of all of it, so distinct
/// ids stay distinct and a resend maps to the same id.
pub fn dedup_id(raw: &str) -> String {
    if !raw.is_empty() && raw.len() <= MAX_ID_CHARS && raw.chars().all(|c| c.is_ascii_graphic()) {
        return raw.to_string();
    }
    let clean: String = raw
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(MAX_ID_CHARS - 17)
        .collect();
    // FNV-1a over the raw id: stable across processes.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in raw.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{clean}-{h:016x}")
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
                entry = entry.message_attributes(k, sdk_value(v));
            }
            if let Some(group) = &p.group_id {
                entry = entry.message_group_id(group);
                // Without an id from the caller, a random one: SQS must not drop the message as
                // a duplicate of another with the same body.
                let id = m
                    .dedup_id
                    .clone()
                    .unwrap_or_else(|| format!("veltrix-{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)));
                entry = entry.message_deduplication_id(dedup_id(&id));
            }
            request = request.entries(entry.build().expect("id and body are set"));
        }
        match request.send().await {
            Ok(out) => {
                for f in out.failed() {
                    if let Some(i) = f.id().parse::<usize>().ok().filter(|i| *i < results.len()) {
                        let class = if is_throttling_code(f.code()) {
                            ErrorClass::Throttled
                        } else if f.sender_fault() || is_permanent_code(f.code()) {
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
                let ctx = CallContext {
                    what: "SendMessageBatch",
                    queue: &self.queue_url,
                    endpoint: self.endpoint_url.as_deref(),
                    region: self.client.config().region().map(|r| r.as_ref()),
                };
                let error = classify(&ctx, e);
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

    fn uses_dedup_ids(&self) -> bool {
        self.fifo
    }

    async fn publish(&self, batch: Vec<OutboundMessage>) -> Vec<Result<(), QueueError>> {
        let mut results: Vec<Result<(), QueueError>> = batch.iter().map(|_| Ok(())).collect();
        let mut ready = Vec::new();
        for (i, m) in batch.iter().enumerate() {
            match prepare(m, self.fifo) {
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
    use veltrix_queue::Attributes;

    fn message(body: &[u8], attrs: usize) -> OutboundMessage {
        OutboundMessage {
            body: Bytes::copy_from_slice(body),
            attributes: (0..attrs).map(|i| (format!("a{i:02}"), format!("v{i}"))).collect(),
            ..Default::default()
        }
    }

    /// What an SQS source makes of a prepared message.
    fn read_back(p: &Prepared) -> (Bytes, Attributes) {
        let mut attributes: Attributes = p.attributes.iter().cloned().collect();
        let mut body = Bytes::from(p.body.clone());
        packing::unpack(&mut attributes, &mut body);
        (body, attributes)
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
        let e = prepare(&message(&vec![b'x'; MAX_MESSAGE_BYTES + 1], 0), false).unwrap_err();
        assert_eq!(e.class, ErrorClass::Permanent);
        assert!(e.message.contains("exceeds the SQS limit"));
    }

    #[test]
    fn bodies_sqs_cannot_hold_are_base64_with_a_marker() {
        for body in [&[0xff, 0x00, 0x41][..], b"ok\x00nul", b"bell\x07", b""] {
            let p = prepare(&message(body, 0), false).unwrap();
            assert_eq!(p.attributes[0].0, packing::ATTR_BODY_ENCODING);
            assert_eq!(&read_back(&p).0[..], body);
        }
        let p = prepare(&message("tab\t and é and \u{10000}".as_bytes(), 0), false).unwrap();
        assert!(p.attributes.is_empty(), "text SQS accepts is sent as it is");
    }

    #[test]
    fn too_many_or_unusual_attributes_are_packed_and_come_back() {
        let mut m = message(b"{}", 12);
        m.attributes.insert("veltrix.reason", "unmatched");
        m.attributes.insert("empty", "");
        m.attributes.insert("AWS.reserved", "x");
        m.attributes.insert("bad name", "x");
        m.attributes.insert("ctl", "a\u{1}b");
        m.attributes.insert("n", AttributeValue::typed_text("Number.int", "42"));
        m.attributes.insert(
            "b",
            AttributeValue::binary("Binary.png", Bytes::from_static(&[0, 1, 2])),
        );
        let p = prepare(&m, false).unwrap();
        assert_eq!(p.attributes.len(), MAX_ATTRIBUTES);
        assert_eq!(
            p.attributes[0],
            ("veltrix.reason".to_string(), AttributeValue::string("unmatched"))
        );
        assert!(p
            .attributes
            .iter()
            .all(|(k, v)| native_ok(k, v) || k.starts_with(packing::ATTR_PACKED)));
        assert_eq!(read_back(&p).1, m.attributes);
    }

    #[test]
    fn typed_attributes_stay_native_when_they_fit() {
        let mut m = message(b"{}", 0);
        m.attributes.insert("n", AttributeValue::typed_text("Number", "-1.5e3"));
        m.attributes
            .insert("b", AttributeValue::binary("Binary", Bytes::from_static(&[9])));
        let p = prepare(&m, false).unwrap();
        assert_eq!(p.attributes.len(), 2);
        assert_eq!(p.size, 2 + ("n".len() + 6 + 6) + ("b".len() + 6 + 1));
    }

    #[test]
    fn ordering_keys_are_kept_on_standard_queues_and_odd_groups() {
        let mut m = message(b"{}", 0);
        m.ordering_key = Some("customer/é/42".into());
        let p = prepare(&m, true).unwrap();
        let group = p.group_id.clone().unwrap();
        assert!(group.chars().all(|c| c.is_ascii_graphic()));
        assert_eq!(read_back(&p).1.get_str(ATTR_ORDERING_KEY), Some("customer/é/42"));
        m.ordering_key = Some("plain-key".into());
        let p = prepare(&m, true).unwrap();
        assert_eq!(p.group_id.as_deref(), Some("plain-key"));
        assert!(p.attributes.is_empty());
        let p = prepare(&m, false).unwrap();
        assert_eq!(read_back(&p).1.get_str(ATTR_ORDERING_KEY), Some("plain-key"));
    }

    #[test]
    fn dedup_ids_are_clean_and_bounded() {
        assert_eq!(dedup_id("abc:1:2"), "abc:1:2");
        let long = "x".repeat(300);
        let id = dedup_id(&long);
        assert!(id.len() <= MAX_ID_CHARS);
        assert_eq!(id, dedup_id(&long), "stable");
        assert_ne!(dedup_id("a é"), dedup_id("a è"), "distinct ids stay distinct");
        assert_eq!(dedup_id("a é").len(), "a".len() + 17);
    }
}
