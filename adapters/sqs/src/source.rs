//! The SQS source.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName,
    QueueAttributeName,
};
use aws_sdk_sqs::Client;
use bytes::Bytes;
use veltrix_queue::{
    packing, AckFailure, AckToken, AttributeValue, Attributes, Delivery, OutboundMessage, QueueError, Received,
    Requeued, Source, SourceInfo, SourceLimits,
};

use crate::client::receive_timeouts;
use crate::errors::{classify, CallContext};
use crate::limits::{visibility_secs, MAX_BATCH, MAX_DELAY, MAX_VISIBILITY, MAX_WAIT};
use crate::target::{prepare, sdk_value, ATTR_ORDERING_KEY};

/// Source settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsSourceOptions {
    /// The queue.
    pub queue_url: String,
    /// Visibility timeout to request on receive; `None` uses the queue's own.
    pub visibility_timeout: Option<Duration>,
    /// Endpoint shown in error hints.
    pub endpoint_url: Option<String>,
}

/// The receipt handle, as the token.
#[derive(Debug, Clone)]
struct Receipt(String);

/// Consumes an SQS queue.
pub struct SqsSource {
    client: Client,
    options: SqsSourceOptions,
    lease: Duration,
    fifo: bool,
}

/// The token for a receipt handle (for tools that hold handles, and for tests).
pub fn receipt_token(handle: &str) -> AckToken {
    AckToken::new(Receipt(handle.to_string()))
}

fn receipt(token: &AckToken) -> Result<&str, QueueError> {
    token
        .downcast_ref::<Receipt>()
        .map(|r| r.0.as_str())
        .ok_or_else(|| QueueError::permanent("token does not belong to an SQS source"))
}

impl SqsSource {
    /// Opens the source: reads the queue's visibility timeout (which also proves the queue
    /// exists and the credentials work).
    pub async fn open(client: Client, options: SqsSourceOptions) -> Result<Self, QueueError> {
        let attrs = client
            .get_queue_attributes()
            .queue_url(&options.queue_url)
            .attribute_names(QueueAttributeName::VisibilityTimeout)
            .send()
            .await
            .map_err(|e| {
                let ctx = CallContext {
                    what: "GetQueueAttributes",
                    queue: &options.queue_url,
                    endpoint: options.endpoint_url.as_deref(),
                    region: client.config().region().map(|r| r.as_ref()),
                };
                classify(&ctx, e)
            })?;
        let queue_visibility = attrs
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::VisibilityTimeout))
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(30));
        if options.visibility_timeout.is_none() && queue_visibility.is_zero() {
            return Err(QueueError::permanent(format!(
                "the queue {} has a visibility timeout of 0 s: every message received would be visible to other receivers at once and delivered over and over; set source.visibility_timeout_secs (e.g. 60) or the queue's VisibilityTimeout (terraform: visibility_timeout_seconds)",
                options.queue_url
            )));
        }
        let lease = options.visibility_timeout.unwrap_or(queue_visibility);
        let fifo = options.queue_url.ends_with(".fifo");
        Ok(Self {
            client,
            options,
            lease,
            fifo,
        })
    }

    fn err<E, R>(&self, what: &str, e: aws_sdk_sqs::error::SdkError<E, R>) -> QueueError
    where
        E: aws_sdk_sqs::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let ctx = CallContext {
            what,
            queue: &self.options.queue_url,
            endpoint: self.options.endpoint_url.as_deref(),
            region: self.client.config().region().map(|r| r.as_ref()),
        };
        classify(&ctx, e)
    }
}

/// An SQS attribute value with its data type.
fn attribute_value(v: &aws_sdk_sqs::types::MessageAttributeValue) -> Option<AttributeValue> {
    let data_type = v.data_type();
    if data_type.starts_with("Binary") {
        let bytes = v.binary_value()?;
        return Some(AttributeValue::binary(
            data_type,
            Bytes::copy_from_slice(bytes.as_ref()),
        ));
    }
    Some(AttributeValue::typed_text(data_type, v.string_value()?))
}

/// Turns an SQS message into a delivery: every attribute with its data type, and what a
/// veltrix target packed (base64 body, `veltrix.attributes`, `veltrix.ordering_key`) undone.
fn delivery(m: &Message) -> Option<Delivery> {
    let handle = m.receipt_handle()?.to_string();
    let system = m.attributes();
    let sys = |name: MessageSystemAttributeName| system.and_then(|a| a.get(&name)).map(String::as_str);
    let mut attributes = Attributes::new();
    if let Some(attrs) = m.message_attributes() {
        for (k, v) in attrs {
            if let Some(value) = attribute_value(v) {
                attributes.insert(k.clone(), value);
            }
        }
    }
    let mut body = Bytes::from(m.body().unwrap_or_default().to_string());
    packing::unpack(&mut attributes, &mut body);
    let ordering_key = match attributes.remove(ATTR_ORDERING_KEY) {
        Some(v) if v.is_plain_string() => v.into_text(),
        Some(other) => {
            attributes.insert(ATTR_ORDERING_KEY, other);
            sys(MessageSystemAttributeName::MessageGroupId).map(str::to_string)
        }
        None => sys(MessageSystemAttributeName::MessageGroupId).map(str::to_string),
    };
    let delivery_attempt = sys(MessageSystemAttributeName::ApproximateReceiveCount)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let published_at = sys(MessageSystemAttributeName::SentTimestamp)
        .and_then(|s| s.parse::<u64>().ok())
        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
    Some(Delivery {
        id: m.message_id().unwrap_or_default().to_string(),
        body,
        attributes,
        ordering_key,
        delivery_attempt,
        published_at: published_at.or(Some(SystemTime::now())),
        token: AckToken::new(Receipt(handle)),
    })
}

#[async_trait]
impl Source for SqsSource {
    fn info(&self) -> SourceInfo {
        SourceInfo {
            kind: "sqs",
            name: self.options.queue_url.clone(),
        }
    }

    fn limits(&self) -> SourceLimits {
        SourceLimits {
            max_receive_batch: MAX_BATCH,
            max_ack_batch: MAX_BATCH,
            max_lease: MAX_VISIBILITY,
            initial_lease: self.lease,
            // A long poll that is dropped may already have made messages invisible.
            receive_cancel_safe: false,
            // Up to ten bodies of up to 1 MiB each arrive in one response.
            receive_unbuffered: true,
        }
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Received, QueueError> {
        let mut request = self
            .client
            .receive_message()
            .queue_url(&self.options.queue_url)
            .max_number_of_messages(max.clamp(1, MAX_BATCH) as i32)
            .wait_time_seconds(wait.min(MAX_WAIT).as_secs() as i32)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId);
        if let Some(v) = self.options.visibility_timeout {
            request = request.visibility_timeout(visibility_secs(v));
        }
        let out = request
            .customize()
            .config_override(
                aws_sdk_sqs::config::Builder::default().timeout_config(receive_timeouts(wait.min(MAX_WAIT))),
            )
            .send()
            .await
            .map_err(|e| self.err("ReceiveMessage", e))?;
        Ok(Received::Messages(out.messages().iter().filter_map(delivery).collect()))
    }

    async fn ack(&self, tokens: Vec<AckToken>) -> Result<(), AckFailure> {
        let mut failed = Vec::new();
        let mut last_error = None;
        for chunk in tokens.chunks(MAX_BATCH) {
            let mut request = self.client.delete_message_batch().queue_url(&self.options.queue_url);
            for (i, token) in chunk.iter().enumerate() {
                let handle = match receipt(token) {
                    Ok(h) => h,
                    Err(e) => {
                        return Err(AckFailure {
                            failed: tokens,
                            error: e,
                        })
                    }
                };
                let entry = DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(handle)
                    .build()
                    .expect("id and receipt handle are set");
                request = request.entries(entry);
            }
            match request.send().await {
                Ok(out) => {
                    for f in out.failed() {
                        if let Some(token) = f.id().parse::<usize>().ok().and_then(|i| chunk.get(i)) {
                            failed.push(token.clone());
                        }
                        let class = if f.sender_fault() {
                            veltrix_queue::ErrorClass::Permanent
                        } else {
                            veltrix_queue::ErrorClass::Transient
                        };
                        last_error = Some(QueueError {
                            class,
                            retry_after: None,
                            message: format!(
                                "SQS DeleteMessageBatch entry failed: {}: {}",
                                f.code(),
                                f.message().unwrap_or("")
                            ),
                        });
                    }
                }
                Err(e) => {
                    failed.extend(chunk.iter().cloned());
                    last_error = Some(self.err("DeleteMessageBatch", e));
                }
            }
        }
        match last_error {
            None => Ok(()),
            Some(error) => Err(AckFailure { failed, error }),
        }
    }

    async fn nack(&self, token: AckToken, delay: Duration) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.options.queue_url)
            .receipt_handle(receipt(&token)?)
            .visibility_timeout(visibility_secs(delay))
            .send()
            .await
            .map_err(|e| self.err("ChangeMessageVisibility", e))?;
        Ok(())
    }

    /// On a standard queue: sends `message` (with its carried counters) in place of the
    /// original, delayed by `delay` (at most [`MAX_DELAY`]: a longer backoff is cut to it), then
    /// deletes the original. Order is not a property of standard queues, so nothing is
    /// reordered. A FIFO queue, a message that no longer fits, or a failed send nacks instead.
    async fn requeue(
        &self,
        token: AckToken,
        message: OutboundMessage,
        delay: Duration,
    ) -> Result<Requeued, QueueError> {
        let handle = receipt(&token)?.to_string();
        let prepared = match (self.fifo, prepare(&message, false)) {
            (false, Ok(p)) => p,
            _ => return self.nack(token, delay).await.map(|()| Requeued::Released),
        };
        let mut request = self
            .client
            .send_message()
            .queue_url(&self.options.queue_url)
            .message_body(prepared.body)
            .delay_seconds(delay.min(MAX_DELAY).as_secs() as i32);
        for (k, v) in &prepared.attributes {
            request = request.message_attributes(k, sdk_value(v));
        }
        if request.send().await.is_err() {
            return self.nack(token, delay).await.map(|()| Requeued::Released);
        }
        self.client
            .delete_message()
            .queue_url(&self.options.queue_url)
            .receipt_handle(handle)
            .send()
            .await
            .map_err(|e| {
                let e = self.err("DeleteMessage", e);
                QueueError {
                    message: format!(
                        "the message was sent again with its failure count, but deleting the original failed, so it comes back once more: {}",
                        e.message
                    ),
                    ..e
                }
            })?;
        Ok(Requeued::Carried)
    }

    async fn backlog(&self) -> Option<u64> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.options.queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .ok()?;
        out.attributes()?
            .get(&QueueAttributeName::ApproximateNumberOfMessages)?
            .parse()
            .ok()
    }

    async fn extend(&self, tokens: Vec<AckToken>, by: Duration) -> Result<(), QueueError> {
        let secs = visibility_secs(by);
        let mut last_error = None;
        for chunk in tokens.chunks(MAX_BATCH) {
            let mut request = self
                .client
                .change_message_visibility_batch()
                .queue_url(&self.options.queue_url);
            for (i, token) in chunk.iter().enumerate() {
                let entry = ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(receipt(token)?)
                    .visibility_timeout(secs)
                    .build()
                    .expect("id and receipt handle are set");
                request = request.entries(entry);
            }
            match request.send().await {
                Ok(out) => {
                    if let Some(f) = out.failed().first() {
                        last_error = Some(QueueError::transient(format!(
                            "SQS ChangeMessageVisibilityBatch: {} of {} entries failed: {}: {}",
                            out.failed().len(),
                            chunk.len(),
                            f.code(),
                            f.message().unwrap_or("")
                        )));
                    }
                }
                Err(e) => last_error = Some(self.err("ChangeMessageVisibilityBatch", e)),
            }
        }
        last_error.map_or(Ok(()), Err)
    }
}
