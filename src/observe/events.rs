//! The worker's log events: one struct per kind of log line, with a stable `event` name (see
//! [`veltrix_queue::logging`]). Fields are ids, names, counts and error texts; never message
//! bodies, attribute values or secrets.

pub use veltrix_queue::logging::LogEvent;

veltrix_queue::log_events! {
    /// The worker opened its source and targets and starts pulling.
    WorkerStarting => INFO "worker_starting" "worker starting" {
        /// `sqs`, `pubsub`, `file`.
        source_kind: &'static str,
        /// Queue URL, subscription or path.
        source: String,
        /// Rules loaded.
        rules: usize,
        /// Targets opened.
        targets: usize,
    }
    /// A new config took effect: messages received from now on follow it; those in flight
    /// finish under the generation they started with.
    ConfigReloaded => INFO "config_reloaded" "config reloaded" {
        /// The new generation (the config the worker started with is 1).
        generation: u64,
        /// Its hash (config text and schema files), as `/readyz` and `/metrics` show it.
        hash: String,
        /// What asked for it: `SIGHUP` or `watch`.
        trigger: &'static str,
        /// Rules in force.
        rules: usize,
        /// Targets that kept their connection.
        targets_kept: usize,
        /// Targets opened (new, or with changed settings).
        targets_opened: usize,
        /// Targets closed once the old generation's messages are done.
        targets_closed: usize,
    }
    /// A new config did not take effect; the running one stays in force.
    ConfigReloadFailed => ERROR "config_reload_failed" "config not reloaded; the running config stays in force" {
        /// What asked for it: `SIGHUP` or `watch`.
        trigger: &'static str,
        /// Why, with the file, line and column of config errors.
        error: String,
    }
    /// SIGTERM or SIGINT arrived.
    ShutdownSignal => INFO "shutdown_signal" "shutdown signal received" {
        /// `SIGTERM` or `SIGINT`.
        signal: &'static str,
    }
    /// A signal handler could not be installed (the worker still runs; that signal kills it).
    SignalListenerFailed => WARN "signal_listener_failed" "cannot listen for a shutdown signal" {
        /// `SIGTERM` or `SIGINT`.
        signal: &'static str,
        /// Why.
        error: String,
    }
    /// Draining began.
    Draining => INFO "draining" "shutdown requested: draining" {
        /// Time given to in-flight messages.
        drain_timeout_secs: u64,
    }
    /// The drain timeout passed with messages still in flight.
    DrainTimedOut => WARN "drain_timed_out" "drain timeout reached; unfinished messages are not acked and will be redelivered" {
        /// Messages still being processed.
        still_running: usize,
    }
    /// A second shutdown signal arrived during the drain: held messages are released at once.
    DrainAborted => WARN "drain_aborted" "second shutdown signal: releasing held messages and exiting" {
        /// Messages released (`nack(0)`).
        released: usize,
    }
    /// Releasing, the last acks, closing the source and flushing targets took longer than
    /// allowed after the drain; the worker exits anyway (unacked messages are redelivered).
    DrainGraceExceeded => WARN "drain_grace_exceeded" "shutdown steps did not finish in time; exiting" {
        /// The time allowed.
        grace_secs: u64,
    }
    /// The metrics and health server listens.
    MetricsServing => INFO "metrics_serving" "serving /metrics, /healthz and /readyz" {
        /// Listen address.
        addr: std::net::SocketAddr,
    }
    /// The metrics and health server stopped with an error.
    MetricsServerFailed => ERROR "metrics_server_failed" "metrics server failed" {
        /// Why.
        error: String,
    }
    /// A receive call failed; the poller retries after a delay.
    ReceiveFailed => WARN "receive_failed" "receive failed; retrying" {
        /// Why.
        error: String,
        /// Wait before the next receive.
        retry_in_ms: u64,
    }
    /// A sandbox process ended with the transform it ran (over its time budget, out of memory
    /// or stack); that message is dead-lettered and a new process takes the slot.
    SandboxRestarted => WARN "sandbox_restarted" "a transform exceeded its budget; its sandbox process was replaced" {
        /// How the process ended.
        reason: String,
    }
    /// A poller task ended unexpectedly.
    PollerFailed => ERROR "poller_failed" "poller task failed" {
        /// Why.
        error: String,
    }
    /// A batching task (acks or publishes) ended unexpectedly.
    BatchTaskFailed => ERROR "batch_task_failed" "batch task failed" {
        /// Why.
        error: String,
    }
    /// Acks failed for good; the messages will be redelivered (duplicates, not losses).
    AckFailed => WARN "ack_failed" "ack failed; the messages will be redelivered" {
        /// Messages whose ack failed.
        count: usize,
        /// Why.
        error: String,
    }
    /// A message failed transiently and goes back to the queue with a backoff.
    RetryScheduled => DEBUG "retry_scheduled" "transient failure; will retry" {
        /// Provider message id.
        message_id: String,
        /// Delivery attempt that failed.
        attempt: u32,
        /// Why.
        error: String,
    }
    /// A nack failed; the message returns when its lease expires.
    NackFailed => WARN "nack_failed" "nack failed; the message returns when its lease expires" {
        /// Provider message id.
        message_id: String,
        /// Why.
        error: String,
    }
    /// A message was written to the dead-letter target (and is then acked).
    DeadLettered => INFO "dead_lettered" "dead-lettered" {
        /// Provider message id.
        message_id: String,
        /// `veltrix.reason`.
        reason: String,
        /// The rule involved, if any.
        rule: Option<String>,
    }
    /// Writing a dead letter failed; the message is not acked and comes back.
    DeadLetterWriteFailed => ERROR "dead_letter_write_failed" "dead-letter write failed; the message is not acked and will be redelivered" {
        /// Provider message id.
        message_id: String,
        /// `veltrix.reason` it would have carried.
        reason: String,
        /// Why the write failed.
        error: String,
    }
    /// The failure ledger could not be written: a count recorded for a released message may
    /// be lost, so that message starts a fresh budget (the provider's limit still bounds it).
    LedgerWriteFailed => WARN "ledger_write_failed" "failure ledger write failed; a released message's count may start afresh" {
        /// Why.
        error: String,
    }
    /// The default failure ledger directory could not be used: failure counts of messages
    /// released to an SQS FIFO queue or a Pub/Sub subscription start afresh after a restart.
    LedgerUnavailable => WARN "ledger_unavailable" "no failure ledger: counts of released messages will not survive a restart; set pipeline.state_dir" {
        /// The directory tried.
        dir: String,
        /// Why.
        error: String,
    }
    /// Releasing an unstarted message at shutdown failed; it returns when its lease expires.
    ReleaseFailed => WARN "release_failed" "release failed; the message returns when its lease expires" {
        /// Why.
        error: String,
    }
    /// Extending leases failed (they may expire and the messages be redelivered).
    LeaseExtensionFailed => DEBUG "lease_extension_failed" "lease extension failed" {
        /// Why.
        error: String,
    }
    /// `dlq replay` published a dead letter but could not ack it on the dead-letter queue.
    ReplayAckFailed => WARN "replay_ack_failed" "replayed but the dead letter could not be acked" {
        /// Dead letter id.
        id: String,
        /// Why.
        error: String,
    }
    /// A target's circuit opened: nothing is sent to it until a probe gets through.
    CircuitOpened => WARN "circuit_opened" "target failing: circuit open, its messages are held and intake pauses" {
        /// Target name.
        target: String,
        /// How long until a probe.
        open_for_ms: u64,
        /// The failure that opened it.
        error: String,
    }
    /// A target's circuit turned half-open: one message is sent as a probe.
    CircuitHalfOpen => INFO "circuit_half_open" "probing target" {
        /// Target name.
        target: String,
    }
    /// A target's circuit closed: a probe got through.
    CircuitClosed => INFO "circuit_closed" "target recovered: circuit closed" {
        /// Target name.
        target: String,
    }
    /// A target asked to slow down.
    TargetThrottled => INFO "target_throttled" "target throttled: sending slower" {
        /// Target name.
        target: String,
        /// The rate now in force (messages per second).
        rate_per_sec: f64,
        /// How long sending pauses.
        pause_ms: u64,
    }
    /// Pollers stopped receiving (a target's circuit is open).
    IntakePaused => WARN "intake_paused" "intake paused: a target is in an outage" {
        /// Targets whose circuit is not closed.
        targets: String,
    }
    /// Pollers receive again.
    IntakeResumed => INFO "intake_resumed" "intake resumed" {
    }
}

#[cfg(test)]
mod tests {
    use super::ALL_EVENT_NAMES;

    #[test]
    fn event_names_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for name in ALL_EVENT_NAMES {
            assert!(seen.insert(name), "duplicate event name {name}");
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{name} is not snake_case"
            );
        }
    }
}
