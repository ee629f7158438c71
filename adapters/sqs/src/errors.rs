//! SQS errors → [`QueueError`], classified and with the whole cause chain and a hint.
//!
//! An AWS SDK error's `Display` alone says little ("service error", "dispatch failure"); the
//! service's code and message and the connection error underneath are in the source chain.

use std::error::Error as StdError;

use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use veltrix_queue::error::render_chain;
use veltrix_queue::{ErrorClass, QueueError};

/// Error codes retrying cannot fix.
const PERMANENT_CODES: &[&str] = &[
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
    "AccessDenied",
    "AccessDeniedException",
    "InvalidParameterValue",
    "InvalidAttributeName",
    "InvalidAttributeValue",
    "InvalidMessageContents",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "MissingParameter",
    "ReceiptHandleIsInvalid",
    "InvalidAddress",
    "UnsupportedOperation",
    "BatchRequestTooLong",
    "KmsAccessDenied",
    "KmsDisabled",
    "KmsNotFound",
];

/// Error codes that mean "slow down".
const THROTTLING_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "RequestThrottled",
    "ThrottledException",
    "KMS.ThrottlingException",
    "OverLimit",
    "SlowDown",
];

/// Whether an SQS error code is throttling.
pub fn is_throttling_code(code: &str) -> bool {
    THROTTLING_CODES.iter().any(|c| code == *c || code.ends_with(c))
}

/// Whether an SQS error code is permanent.
pub fn is_permanent_code(code: &str) -> bool {
    PERMANENT_CODES.iter().any(|c| code == *c || code.ends_with(c))
}

/// Classifies and renders an SDK error from operation `what` on `queue`.
pub fn classify<E, R>(what: &str, queue: &str, endpoint: Option<&str>, err: SdkError<E, R>) -> QueueError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let (class, detail, hint) = match &err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let code = e.code().unwrap_or("unknown");
            let message = e.message().unwrap_or("");
            let class = if is_permanent_code(code) {
                ErrorClass::Permanent
            } else if is_throttling_code(code) {
                ErrorClass::Throttled
            } else {
                ErrorClass::Transient
            };
            let hint = if code.contains("NonExistentQueue") || code.contains("QueueDoesNotExist") {
                Some(
                    "check `queue_url`; create the queue (terraform apply, or localstack/seed.sh for LocalStack)"
                        .to_string(),
                )
            } else if code.contains("AccessDenied") || code.contains("InvalidClientTokenId") {
                Some("check the AWS credentials and the IAM policy (sqs:ReceiveMessage, DeleteMessage, ChangeMessageVisibility, GetQueueAttributes on the source; SendMessage on targets)".to_string())
            } else {
                None
            };
            (class, format!("{code}: {message}"), hint)
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            let hint = match endpoint {
                Some(ep) if ep.contains("localhost") || ep.contains("127.0.0.1") || ep.contains(":4566") => Some(
                    format!("is LocalStack running on {ep}? start it with `localstack/start.sh`"),
                ),
                Some(ep) => Some(format!("is {ep} reachable?")),
                None => Some("check network access to SQS, the region, and AWS_ENDPOINT_URL".to_string()),
            };
            (ErrorClass::Transient, render_chain(&err), hint)
        }
        SdkError::ConstructionFailure(_) => (ErrorClass::Permanent, render_chain(&err), None),
        _ => (ErrorClass::Transient, render_chain(&err), None),
    };
    let chain = render_chain(&err);
    let mut message = format!("SQS {what} on {queue} failed: {detail}");
    if !detail.contains(&chain) && !chain.is_empty() && chain != detail {
        message.push_str(&format!(" ({chain})"));
    }
    if let Some(h) = hint {
        message.push_str(&format!("; {h}"));
    }
    QueueError {
        class,
        message,
        retry_after: None,
    }
}
