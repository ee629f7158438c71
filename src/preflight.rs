//! `veltrix check --preflight`: connect and compare the real queues with the config, and say
//! for each mismatch what to change.
//!
//! Errors (exit 1): the source or a target is missing or unreachable; the provider's own
//! dead-lettering (SQS `maxReceiveCount`, Pub/Sub `max_delivery_attempts`) would fire at or below
//! the worker's retry budget, so messages would leave without a reason; a FIFO source with a
//! non-FIFO dead-letter queue. Warnings (exit 0): no native dead-letter policy; a visibility
//! timeout or ack deadline shorter than the slowest target timeout; what cannot be checked.

use std::time::Duration;

use veltrix_pubsub::Connection;

use crate::config::{Config, SourceConfig, TargetKind};

/// The fix of a queue, subscription or topic that cannot be read: its error starts with the
/// cause and what to change (credentials, endpoint, name, account, region, permissions).
const UNREADABLE_FIX: &str = "change what the error names, then rerun `veltrix check --preflight`";

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The worker would lose reasons, fail to start, or misbehave: fix before deploying.
    Error,
    /// Worth a look; the worker copes.
    Warning,
}

/// One mismatch between the config and the real queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// What it is about: `source`, `targets.NAME`.
    pub subject: String,
    /// What is wrong.
    pub problem: String,
    /// What to change.
    pub fix: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{level}: {}: {}\n    fix: {}", self.subject, self.problem, self.fix)
    }
}

/// Everything preflight found.
#[derive(Debug, Default)]
pub struct Report {
    /// In check order.
    pub findings: Vec<Finding>,
    /// What was checked and found in order, for the summary.
    pub checked: Vec<String>,
}

impl Report {
    /// True when any finding is an error.
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }

    fn error(&mut self, subject: &str, problem: impl Into<String>, fix: impl Into<String>) {
        self.push(Severity::Error, subject, problem, fix);
    }

    fn warn(&mut self, subject: &str, problem: impl Into<String>, fix: impl Into<String>) {
        self.push(Severity::Warning, subject, problem, fix);
    }

    fn push(&mut self, severity: Severity, subject: &str, problem: impl Into<String>, fix: impl Into<String>) {
        self.findings.push(Finding {
            severity,
            subject: subject.to_string(),
            problem: problem.into(),
            fix: fix.into(),
        });
    }
}

/// The most deliveries any message may get from the worker before it dead-letters it: the
/// default budget or a rule's own, whichever is larger.
pub fn retry_budget(config: &Config) -> u32 {
    config
        .rules
        .rules()
        .iter()
        .filter_map(|r| r.max_attempts)
        .fold(config.rules.default_max_attempts(), u32::max)
}

/// The longest target timeout (HTTP targets), if any.
pub fn slowest_target_timeout(config: &Config) -> Option<(String, Duration)> {
    config
        .targets
        .iter()
        .filter_map(|t| match &t.kind {
            TargetKind::Http { timeout, .. } => Some((t.name.clone(), *timeout)),
            _ => None,
        })
        .max_by_key(|(_, timeout)| *timeout)
}

/// Connects to every queue the config names and compares.
pub async fn preflight(config: &Config) -> Report {
    let mut report = Report::default();
    let budget = retry_budget(config);
    let slowest = slowest_target_timeout(config);
    let dead_letter_fifo = config.dead_letter.and_then(|i| match &config.targets[i].kind {
        TargetKind::Sqs { queue_url, .. } => Some(queue_url.ends_with(".fifo")),
        _ => None,
    });
    match &config.source {
        SourceConfig::File { path, .. } => {
            report.checked.push(format!("source file {}", path.display()));
        }
        SourceConfig::Sqs {
            queue_url,
            connect,
            visibility_timeout,
        } => {
            let client = veltrix_sqs::connect(connect, queue_url).await;
            match veltrix_sqs::inspect::queue_settings(&client, queue_url, connect.endpoint_override().as_deref()).await
            {
                Err(e) => report.error(
                    "source",
                    format!("cannot read the SQS queue {queue_url}: {e}"),
                    UNREADABLE_FIX,
                ),
                Ok(q) => {
                    report.checked.push(format!("source queue {queue_url}"));
                    match &q.redrive {
                        Some(r) if r.max_receive_count <= budget => report.error(
                            "source",
                            format!(
                                "the queue's redrive policy moves a message to its dead-letter queue after {} receives, at or below the worker's retry budget of {budget} attempts: the worker retries in place and spends no receive on its own retries, but each restart, release at drain or crash during a message's retries does, so a few deploys would move healthy messages aside without a reason",
                                r.max_receive_count
                            ),
                            format!(
                                "raise maxReceiveCount above {budget} (terraform/modules/sqs-worker: max_receive_count = {}), or lower pipeline.retry.max_attempts and the rules' max_attempts below {}",
                                budget + 5,
                                r.max_receive_count
                            ),
                        ),
                        Some(_) => {}
                        None => report.warn(
                            "source",
                            "the queue has no redrive policy: a message that crashes the worker every time is never moved aside",
                            format!("add a redrive policy with maxReceiveCount above {budget} (terraform/modules/sqs-worker sets one)"),
                        ),
                    }
                    if q.fifo && dead_letter_fifo == Some(false) {
                        report.error(
                            "source",
                            "the source is a FIFO queue but the dead-letter target is a standard queue: SQS FIFO queues can only redrive to FIFO queues, and dead letters would lose their group order",
                            "use a .fifo dead-letter queue (terraform/modules/sqs-worker with fifo = true creates one)",
                        );
                    }
                    if let Some(r) = &q.redrive {
                        if q.fifo && !r.dead_letter_arn.ends_with(".fifo") {
                            report.error(
                                "source",
                                format!(
                                    "the redrive policy of this FIFO queue names a standard queue ({})",
                                    r.dead_letter_arn
                                ),
                                "point the redrive policy at a .fifo dead-letter queue",
                            );
                        }
                    }
                    let lease = visibility_timeout.unwrap_or(q.visibility_timeout);
                    check_lease(&mut report, "visibility timeout", lease, slowest.as_ref());
                }
            }
        }
        SourceConfig::Pubsub {
            subscription, connect, ..
        } => {
            let connection = Connection::new(connect);
            match veltrix_pubsub::describe_subscription(&connection, subscription).await {
                Err(e) => report.error(
                    "source",
                    format!("cannot read the Pub/Sub subscription: {e}"),
                    UNREADABLE_FIX,
                ),
                Ok(None) => report.warn(
                    "source",
                    format!("the credentials may not read subscription {subscription}, so its dead-letter policy and ack deadline are unchecked"),
                    "grant roles/pubsub.viewer on the subscription (terraform/modules/pubsub-worker does)",
                ),
                Ok(Some(s)) => {
                    report.checked.push(format!(
                        "source subscription {subscription} ({} delivery{}: acks {})",
                        if s.exactly_once { "exactly-once" } else { "at-least-once" },
                        if s.message_ordering { ", ordered by key" } else { "" },
                        if s.exactly_once {
                            "confirmed one by one; unconfirmed ones are counted in veltrix_ack_failures_total"
                        } else {
                            "batched by the client, best effort"
                        }
                    ));
                    match &s.dead_letter {
                        Some(p) if p.max_delivery_attempts <= budget => report.error(
                            "source",
                            format!(
                                "the subscription's dead-letter policy moves a message after {} delivery attempts, at or below the worker's retry budget of {budget}: the worker retries in place and spends no delivery attempt on its own retries, but each restart, release at drain or crash during a message's retries does, so a few deploys would move healthy messages aside without a reason",
                                p.max_delivery_attempts
                            ),
                            format!(
                                "raise max_delivery_attempts above {budget} (terraform/modules/pubsub-worker: max_delivery_attempts = {}; 5–100), or lower pipeline.retry.max_attempts and the rules' max_attempts below {}",
                                (budget + 5).clamp(veltrix_pubsub::limits::MIN_MAX_DELIVERY_ATTEMPTS, veltrix_pubsub::limits::MAX_MAX_DELIVERY_ATTEMPTS),
                                p.max_delivery_attempts
                            ),
                        ),
                        Some(p) => report.warn(
                            "source",
                            format!("cannot check from here that the Pub/Sub service agent may publish to {} and subscribe to this subscription (the Pub/Sub API does not expose IAM policies to this client)", p.topic),
                            "grant service-PROJECT_NUMBER@gcp-sa-pubsub.iam.gserviceaccount.com roles/pubsub.publisher on the dead-letter topic and roles/pubsub.subscriber on the subscription (terraform/modules/pubsub-worker does), or the dead-letter policy silently does nothing",
                        ),
                        None => report.warn(
                            "source",
                            "the subscription has no dead-letter policy: a message that crashes the worker every time is redelivered forever",
                            format!("set a dead-letter policy with max_delivery_attempts above {budget} (terraform/modules/pubsub-worker sets one)"),
                        ),
                    }
                    if s.retry_policy {
                        report.warn(
                            "source",
                            "the subscription has a retry policy: its backoff adds to the worker's own retry backoff",
                            "remove the retry policy (redeliver immediately) and let pipeline.retry set the backoff",
                        );
                    }
                    check_lease(&mut report, "ack deadline", s.ack_deadline, slowest.as_ref());
                }
            }
        }
    }
    for t in &config.targets {
        let subject = format!("targets.{}", t.name);
        match &t.kind {
            TargetKind::Sqs { queue_url, connect } => {
                let client = veltrix_sqs::connect(connect, queue_url).await;
                match veltrix_sqs::inspect::queue_settings(&client, queue_url, connect.endpoint_override().as_deref())
                    .await
                {
                    Ok(_) => report.checked.push(format!("{subject} queue {queue_url}")),
                    Err(e) => report.error(
                        &subject,
                        format!("cannot read the SQS queue {queue_url}: {e}"),
                        UNREADABLE_FIX,
                    ),
                }
            }
            TargetKind::Pubsub { topic, connect } => {
                match veltrix_pubsub::subscription::check_topic(&Connection::new(connect), topic).await {
                    Ok(true) => report.checked.push(format!("{subject} topic {topic}")),
                    Ok(false) => report.warn(
                        &subject,
                        format!("the credentials may not read topic {topic}, so its existence is unchecked"),
                        "grant roles/pubsub.viewer on the topic, or check it by hand",
                    ),
                    Err(e) => report.error(&subject, format!("cannot read the Pub/Sub topic: {e}"), UNREADABLE_FIX),
                }
            }
            TargetKind::File { .. } | TargetKind::Stdout | TargetKind::Http { .. } => {}
        }
    }
    report
}

fn check_lease(report: &mut Report, what: &str, lease: Duration, slowest: Option<&(String, Duration)>) {
    if let Some((target, timeout)) = slowest {
        if lease < *timeout {
            report.warn(
                "source",
                format!(
                    "the {what} ({} s) is shorter than target `{target}`'s timeout ({} ms): the worker extends leases while a message is processed, but if it stops extending (a crash, a stall) the message comes back while still being handled",
                    lease.as_secs(),
                    timeout.as_millis()
                ),
                format!("raise the {what} above {} s", timeout.as_secs().max(1) * 2),
            );
        }
    }
}
