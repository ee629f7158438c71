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

/// Where a call went: for the causes and hints in error messages.
#[derive(Debug, Clone, Copy)]
pub struct CallContext<'a> {
    /// The operation, e.g. `GetQueueAttributes`.
    pub what: &'a str,
    /// The queue URL.
    pub queue: &'a str,
    /// The endpoint override, if any.
    pub endpoint: Option<&'a str>,
    /// The region the client signs for.
    pub region: Option<&'a str>,
}

/// The account LocalStack gives its `test` credentials.
pub const LOCALSTACK_ACCOUNT: &str = "000000000000";

impl CallContext<'_> {
    fn local(&self) -> bool {
        self.endpoint
            .is_some_and(|ep| ep.contains("localhost") || ep.contains("127.0.0.1") || ep.contains(":4566"))
    }

    /// `(account, name)` from a queue URL `…/ACCOUNT/NAME`.
    fn account_and_name(&self) -> (Option<&str>, &str) {
        let mut parts = self.queue.trim_end_matches('/').rsplit('/');
        let name = parts.next().unwrap_or(self.queue);
        let account = parts
            .next()
            .filter(|a| a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()));
        (account, name)
    }
}

/// The real cause of a service error, as the first words of the message, when it is known.
pub fn service_cause(code: &str, ctx: &CallContext<'_>) -> Option<String> {
    let (account, name) = ctx.account_and_name();
    let region = ctx.region.unwrap_or("(none)");
    if code.contains("NonExistentQueue") || code.contains("QueueDoesNotExist") {
        let url_region = crate::client::region_from_queue_url(ctx.queue);
        if let Some(url_region) = url_region.as_deref().filter(|r| Some(*r) != ctx.region) {
            return Some(format!(
                "wrong region: the queue URL is in {url_region} but the client uses {region}: set `region = \"{url_region}\"` (or AWS_REGION), or remove `region`"
            ));
        }
        let mut cause = format!(
            "no queue `{name}` in account {} and region {region}: check the queue URL's account and name, and the region (`region` or AWS_REGION), or create the queue (terraform apply{})",
            account.unwrap_or("(none in the URL)"),
            if ctx.local() { ", or localstack/seed.sh" } else { "" }
        );
        if ctx.local() && account.is_some_and(|a| a != LOCALSTACK_ACCOUNT) {
            cause.push_str(&format!(
                "; the URL names account {}, but LocalStack's `test` credentials are account {LOCALSTACK_ACCOUNT}",
                account.unwrap_or_default()
            ));
        }
        return Some(cause);
    }
    if code.contains("AccessDenied") || code == "AuthorizationError" {
        return Some(format!(
            "access denied: the credentials may not call {} on {}: grant it in the worker's IAM policy (terraform/modules/sqs-worker: worker_policy_json), and check that the queue's account{} is the one the role may reach",
            ctx.what,
            ctx.queue,
            account.map(|a| format!(" {a}")).unwrap_or_default()
        ));
    }
    if code.contains("InvalidClientTokenId") || code.contains("UnrecognizedClient") {
        return Some(
            "the AWS access key is not valid for this endpoint: check AWS_ACCESS_KEY_ID and AWS_PROFILE (LocalStack accepts `test`/`test`)"
                .to_string(),
        );
    }
    if code.contains("SignatureDoesNotMatch") {
        return Some("the AWS secret key does not match the access key: check AWS_SECRET_ACCESS_KEY".to_string());
    }
    None
}

/// The real cause of a failed dispatch (no credentials, no instance metadata, endpoint down),
/// read from the SDK's cause chain.
pub fn dispatch_cause(chain: &str, ctx: &CallContext<'_>) -> Option<String> {
    let credentials = chain.contains("no credentials found in chain")
        || chain.contains("CredentialsNotLoaded")
        || chain.contains("while loading credentials");
    if credentials {
        // IMDS was asked (not turned off with AWS_EC2_METADATA_DISABLED) and gave nothing: no
        // answer, a refused token, or a 403 from a metadata service that is off.
        let imds_failed = chain.contains("could not communicate with IMDS")
            || chain.contains("failed to load IMDS")
            || (chain.contains("IMDS") && !chain.contains("IMDS disabled by AWS_EC2_METADATA_DISABLED"));
        if imds_failed {
            return Some(
                "no AWS credentials, and the instance metadata service (IMDS) gave none: off EC2 set AWS_EC2_METADATA_DISABLED=true and AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (LocalStack accepts `test`/`test`); on EKS give the pod a role (IRSA: a service account with eks.amazonaws.com/role-arn)"
                    .to_string(),
            );
        }
        return Some(
            "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (LocalStack accepts `test`/`test`), or AWS_PROFILE, or give the pod a role (IRSA); environment, profile, web identity, container and instance metadata were tried"
                .to_string(),
        );
    }
    let refused = chain.contains("Connection refused") || chain.contains("connection refused");
    let unresolved = chain.contains("dns error") || chain.contains("failed to lookup address");
    if refused || unresolved {
        let what = if refused {
            "connection refused"
        } else {
            "the host name does not resolve"
        };
        let at = ctx
            .endpoint
            .map(str::to_string)
            .unwrap_or_else(|| "the SQS endpoint".into());
        let fix = if ctx.local() {
            "is LocalStack running? start it with `localstack/start.sh`".to_string()
        } else if ctx.endpoint.is_some() {
            "check `endpoint_url` (or AWS_ENDPOINT_URL) and that the endpoint is up".to_string()
        } else {
            "check network access to SQS, the region, and AWS_ENDPOINT_URL".to_string()
        };
        return Some(format!("cannot reach {at} ({what}): {fix}"));
    }
    None
}

/// Classifies and renders an SDK error from `ctx.what` on `ctx.queue`. When the real cause is
/// known (no credentials, a missing queue, access denied, an endpoint down), the message starts
/// with it and its fix; the SDK's own words follow.
pub fn classify<E, R>(ctx: &CallContext<'_>, err: SdkError<E, R>) -> QueueError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let chain = render_chain(&err);
    let (class, detail, cause) = match &err {
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
            (class, format!("{code}: {message}"), service_cause(code, ctx))
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            // Only a timeout says nothing answered; other failures keep the SDK's words first.
            let cause = dispatch_cause(&chain, ctx).or_else(|| {
                matches!(err, SdkError::TimeoutError(_)).then(|| match ctx.endpoint {
                    Some(ep) if ctx.local() => {
                        format!("no answer from LocalStack at {ep}: is it running? start it with `localstack/start.sh`")
                    }
                    Some(ep) => format!("no answer from {ep}: is it reachable?"),
                    None => "no answer from SQS: check network access, the region, and AWS_ENDPOINT_URL".to_string(),
                })
            });
            // Transient even without credentials: a rotated IRSA token can be missing for a
            // moment, and a publish failing that way must be retried, not dead-lettered.
            (ErrorClass::Transient, chain.clone(), cause)
        }
        SdkError::ConstructionFailure(_) => (ErrorClass::Permanent, chain.clone(), None),
        _ => (ErrorClass::Transient, chain.clone(), None),
    };
    let mut call = format!("SQS {} on {} failed: {detail}", ctx.what, ctx.queue);
    if !detail.contains(&chain) && !chain.is_empty() && chain != detail {
        call.push_str(&format!(" ({chain})"));
    }
    let message = match cause {
        Some(cause) => format!("{cause}\n    ({call})"),
        None => call,
    };
    QueueError {
        class,
        message,
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(queue: &'a str, region: Option<&'a str>, endpoint: Option<&'a str>) -> CallContext<'a> {
        CallContext {
            what: "ReceiveMessage",
            queue,
            endpoint,
            region,
        }
    }

    /// LocalStack does not enforce IAM, so access denied is shown here on the service's code.
    #[test]
    fn access_denied_names_the_call_the_policy_and_the_account() {
        let c = ctx(
            "https://sqs.eu-west-1.amazonaws.com/123456789012/orders",
            Some("eu-west-1"),
            None,
        );
        let cause = service_cause("AccessDenied", &c).unwrap();
        assert!(
            cause.starts_with("access denied: the credentials may not call ReceiveMessage on https://sqs.eu-west-1.amazonaws.com/123456789012/orders"),
            "{cause}"
        );
        assert!(
            cause.contains("worker_policy_json") && cause.contains("account 123456789012"),
            "{cause}"
        );
        assert!(service_cause("AWS.SimpleQueueService.AccessDenied", &c).is_some());
    }

    #[test]
    fn a_region_in_the_url_that_differs_from_the_client_is_named() {
        let c = ctx(
            "https://sqs.eu-west-1.amazonaws.com/123456789012/orders",
            Some("us-east-1"),
            None,
        );
        let cause = service_cause("AWS.SimpleQueueService.NonExistentQueue", &c).unwrap();
        assert!(
            cause.starts_with("wrong region: the queue URL is in eu-west-1 but the client uses us-east-1"),
            "{cause}"
        );
        let same = ctx(
            "https://sqs.eu-west-1.amazonaws.com/123456789012/orders",
            Some("eu-west-1"),
            None,
        );
        let cause = service_cause("QueueDoesNotExist", &same).unwrap();
        assert!(
            cause.starts_with("no queue `orders` in account 123456789012 and region eu-west-1"),
            "{cause}"
        );
        assert!(!cause.contains("LocalStack"), "not LocalStack: {cause}");
    }

    /// What the SDK says with an empty environment on a machine whose metadata service
    /// answers 403, and with IMDS turned off.
    #[test]
    fn credential_chains_are_told_apart() {
        let c = ctx(
            "http://127.0.0.1:4566/000000000000/q",
            Some("us-east-1"),
            Some("http://127.0.0.1:4566"),
        );
        let forbidden = "dispatch failure: other: an error occurred while loading credentials: failed to load IMDS session token: service error: request forbidden: IMDS is disabled or the caller has insufficient permissions.";
        assert!(dispatch_cause(forbidden, &c)
            .unwrap()
            .starts_with("no AWS credentials, and the instance metadata service (IMDS) gave none"));
        let off = "dispatch failure: other: the credential provider was not enabled: no credentials found in chain. Attempted:\n  Ec2InstanceMetadata: the credential provider was not enabled: IMDS disabled by AWS_EC2_METADATA_DISABLED env var set to `true`";
        assert!(dispatch_cause(off, &c)
            .unwrap()
            .starts_with("no AWS credentials: set AWS_ACCESS_KEY_ID"));
    }

    #[test]
    fn key_problems_and_unknown_codes() {
        let c = ctx(
            "http://127.0.0.1:4566/000000000000/q",
            Some("us-east-1"),
            Some("http://127.0.0.1:4566"),
        );
        assert!(service_cause("InvalidClientTokenId", &c)
            .unwrap()
            .contains("AWS_ACCESS_KEY_ID"));
        assert!(service_cause("SignatureDoesNotMatch", &c)
            .unwrap()
            .contains("AWS_SECRET_ACCESS_KEY"));
        assert_eq!(service_cause("InternalError", &c), None);
        assert_eq!(dispatch_cause("io error: broken pipe", &c), None);
        let unresolved = dispatch_cause(
            "dns error: failed to lookup address information",
            &ctx("q", None, Some("http://sqs.example")),
        );
        assert_eq!(
            unresolved.as_deref(),
            Some("cannot reach http://sqs.example (the host name does not resolve): check `endpoint_url` (or AWS_ENDPOINT_URL) and that the endpoint is up")
        );
    }
}
