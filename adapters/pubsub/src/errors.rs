//! Pub/Sub errors → [`QueueError`], classified, with the cause chain and a hint that says what
//! to do.

use google_cloud_gax::error::rpc::Code;
use google_cloud_pubsub::Error;
use veltrix_queue::error::render_chain;
use veltrix_queue::{ErrorClass, QueueError};

/// What was being done, for the message and the hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Building a client.
    Connect,
    /// Reading a subscription's settings.
    GetSubscription,
    /// Reading a topic.
    GetTopic,
    /// Streaming pull.
    Pull,
    /// Publishing.
    Publish,
}

impl Operation {
    fn describe(self) -> &'static str {
        match self {
            Operation::Connect => "connecting",
            Operation::GetSubscription => "reading subscription",
            Operation::GetTopic => "reading topic",
            Operation::Pull => "pulling from",
            Operation::Publish => "publishing to",
        }
    }

    fn is_consume(self) -> bool {
        matches!(self, Operation::GetSubscription | Operation::Pull)
    }
}

/// Status codes retrying cannot fix.
fn is_permanent(code: Code) -> bool {
    matches!(
        code,
        Code::NotFound
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::AlreadyExists
            | Code::Unimplemented
            | Code::OutOfRange
    )
}

/// Classifies and renders an error from `op` on `resource` (a full subscription or topic name).
/// When the cause is known (missing subscription or topic, permissions, credentials, the
/// endpoint down), the message starts with it and its fix; the client's own words follow.
pub fn classify(op: Operation, resource: &str, endpoint: Option<&str>, err: &Error) -> QueueError {
    let chain = render_chain(err);
    let (class, cause) = match err.status().map(|s| s.code) {
        Some(Code::NotFound) => (
            ErrorClass::Permanent,
            Some(if op.is_consume() {
                format!("the subscription {resource} does not exist: check `subscription` (projects/PROJECT/subscriptions/NAME) and create it (terraform apply, or localstack/pubsub-seed.sh for the emulator)")
            } else {
                format!("the topic {resource} does not exist: check `topic` (projects/PROJECT/topics/NAME) and create it (terraform apply, or localstack/pubsub-seed.sh for the emulator)")
            }),
        ),
        Some(Code::PermissionDenied) => (
            ErrorClass::Permanent,
            Some(if op.is_consume() {
                format!("permission denied on {resource}: the worker's service account needs roles/pubsub.subscriber on the subscription (and roles/pubsub.viewer to read its settings)")
            } else {
                format!("permission denied on {resource}: the worker's service account needs roles/pubsub.publisher on the topic")
            }),
        ),
        Some(Code::Unauthenticated) => (ErrorClass::Permanent, Some(credentials_hint())),
        Some(code) if is_permanent(code) => (ErrorClass::Permanent, None),
        Some(Code::ResourceExhausted) => (ErrorClass::Throttled, None),
        Some(_) => (ErrorClass::Transient, None),
        None if err.is_authentication() => (ErrorClass::Permanent, Some(credentials_hint())),
        None if err.is_connect() || err.is_io() || err.is_transport() || err.is_timeout() => {
            (ErrorClass::Transient, Some(unreachable_hint(endpoint)))
        }
        None if err.is_binding() || err.is_serialization() => (ErrorClass::Permanent, None),
        // After the retry loop gives up, the last error is wrapped: read its words.
        None if chain.contains("authentication headers") || chain.contains("access token") => {
            (ErrorClass::Transient, Some(credentials_hint()))
        }
        None if chain.contains("Connection refused") || chain.contains("cannot connect") => {
            (ErrorClass::Transient, Some(unreachable_hint(endpoint)))
        }
        None => (ErrorClass::Transient, None),
    };
    let call = format!("Pub/Sub {} {resource} failed: {chain}", op.describe());
    QueueError {
        class,
        message: with_cause(cause, call),
        retry_after: None,
    }
}

/// `CAUSE` on the first line and the call below it, or the call alone.
fn with_cause(cause: Option<String>, call: String) -> String {
    match cause {
        Some(cause) => format!("{cause}\n    ({call})"),
        None => call,
    }
}

/// Renders an error from building a client: no usable credentials, or a bad endpoint.
pub fn client_build_error(
    resource: &str,
    endpoint: Option<&str>,
    err: &google_cloud_gax::client_builder::Error,
) -> QueueError {
    let chain = render_chain(err);
    let cause = if err.is_default_credentials() {
        credentials_hint()
    } else {
        unreachable_hint(endpoint)
    };
    QueueError::permanent(with_cause(
        Some(cause),
        format!("Pub/Sub client for {resource} could not be built: {chain}"),
    ))
}

fn credentials_hint() -> String {
    format!(
        "no Google credentials (none in GOOGLE_APPLICATION_CREDENTIALS or gcloud's file, and no metadata server answered): in production set up Application Default Credentials (workload identity, GOOGLE_APPLICATION_CREDENTIALS, or `gcloud auth application-default login`); for the emulator set `endpoint = \"http://127.0.0.1:8085\"` or {}=127.0.0.1:8085",
        crate::client::EMULATOR_HOST_ENV
    )
}

fn unreachable_hint(endpoint: Option<&str>) -> String {
    match endpoint {
        Some(ep) if ep.starts_with("http://") => {
            format!(
                "cannot reach the Pub/Sub emulator at {ep}: is it running? start it with `localstack/pubsub-start.sh`"
            )
        }
        Some(ep) => format!("cannot reach {ep}: is it up, and is the address right?"),
        None => "cannot reach pubsub.googleapis.com: check network access".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use google_cloud_gax::error::rpc::Status;

    fn status(code: Code) -> Error {
        Error::service(Status::default().set_code(code).set_message("boom"))
    }

    #[test]
    fn missing_subscription_is_permanent_and_says_how_to_create_it() {
        let e = classify(
            Operation::GetSubscription,
            "projects/p/subscriptions/s",
            None,
            &status(Code::NotFound),
        );
        assert!(!e.is_transient());
        assert!(e.message.contains("projects/p/subscriptions/s"), "{}", e.message);
        assert!(
            e.message.contains("does not exist: check `subscription`"),
            "{}",
            e.message
        );
    }

    #[test]
    fn missing_permission_names_the_role() {
        let e = classify(
            Operation::Publish,
            "projects/p/topics/t",
            None,
            &status(Code::PermissionDenied),
        );
        assert!(!e.is_transient());
        assert!(e.message.contains("roles/pubsub.publisher"), "{}", e.message);
    }

    #[test]
    fn the_cause_comes_first() {
        let e = classify(
            Operation::GetSubscription,
            "projects/p/subscriptions/s",
            None,
            &status(Code::NotFound),
        );
        assert!(
            e.message
                .starts_with("the subscription projects/p/subscriptions/s does not exist:"),
            "{}",
            e.message
        );
        assert_eq!(e.message.lines().count(), 2, "cause, then the call: {}", e.message);
    }

    #[test]
    fn unavailable_is_transient() {
        let e = classify(
            Operation::Pull,
            "projects/p/subscriptions/s",
            None,
            &status(Code::Unavailable),
        );
        assert!(e.is_transient());
    }
}
