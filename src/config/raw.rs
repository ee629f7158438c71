//! The config file as written: serde structs, no cross-field checks.
//!
//! Every struct denies unknown fields, so a typo is an error that names the allowed fields.
//! Defaults are documented on each field and come from `const fn`s in [`defaults`].

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// Default values, in one place.
pub mod defaults {
    /// Transient failures in a row that open a target's circuit.
    pub const fn circuit_failures() -> u32 {
        crate::pipeline::circuit::DEFAULT_FAILURES
    }
    /// How long a target's circuit stays open before a probe, in seconds.
    pub const fn circuit_open_secs() -> u64 {
        crate::pipeline::circuit::DEFAULT_OPEN.as_secs()
    }
    /// Longest a target's circuit stays open, in seconds.
    pub const fn circuit_max_open_secs() -> u64 {
        crate::pipeline::circuit::DEFAULT_MAX_OPEN.as_secs()
    }
    /// Messages processed at once, across all pollers.
    pub const fn max_in_flight() -> u32 {
        256
    }
    /// Receive loops always running.
    pub const fn pollers() -> u32 {
        1
    }
    /// Lease of an unsettled file line before it is handed out again.
    pub const fn file_visibility_timeout_secs() -> u64 {
        30
    }
    /// Longest body a file source passes on (1 MiB, what an SQS target can carry); longer
    /// lines are dead-lettered as `body_too_large`.
    pub const fn file_max_body_bytes() -> u64 {
        1024 * 1024
    }
    /// Longest body an SQS source passes on: the SQS maximum (1 MiB).
    pub const fn sqs_max_body_bytes() -> u64 {
        veltrix_sqs::limits::MAX_MESSAGE_BYTES as u64
    }
    /// Longest body a Pub/Sub source passes on: the Pub/Sub maximum (10 MB).
    pub const fn pubsub_max_body_bytes() -> u64 {
        veltrix_pubsub::limits::MAX_MESSAGE_BYTES as u64
    }
    /// Body bytes held in flight at once, across all pollers (64 MiB); a poller waits while
    /// more are held.
    pub const fn max_in_flight_bytes() -> u64 {
        64 * 1024 * 1024
    }
    /// HTTP target request timeout.
    pub const fn http_timeout_ms() -> u64 {
        5000
    }
    /// SQS long-poll wait: short enough that an idle worker's drain (which lets the long poll
    /// in flight answer, so nothing it returns is stranded) ends within `docker stop` /
    /// `podman stop`'s default 10 s; 20 s (the maximum) saves empty receives where the stop
    /// grace allows it.
    pub const fn sqs_wait_time_secs() -> u64 {
        5
    }
    /// Parallel Pub/Sub streaming-pull streams.
    pub const fn pubsub_streams() -> u32 {
        veltrix_pubsub::limits::DEFAULT_STREAMS
    }
    /// Pub/Sub flow control per stream: messages handed out and not yet settled.
    pub const fn pubsub_max_outstanding_messages() -> u64 {
        veltrix_pubsub::limits::DEFAULT_MAX_OUTSTANDING_MESSAGES
    }
    /// Pub/Sub flow control per stream: bytes handed out and not yet settled (50 MiB).
    pub const fn pubsub_max_outstanding_bytes() -> u64 {
        veltrix_pubsub::limits::DEFAULT_MAX_OUTSTANDING_BYTES
    }
    /// Attempts before a message that keeps failing is dead-lettered.
    pub const fn max_attempts() -> u32 {
        5
    }
    /// First retry delay.
    pub const fn initial_backoff_ms() -> u64 {
        500
    }
    /// Longest retry delay.
    pub const fn max_backoff_secs() -> u64 {
        300
    }
    /// Time given to in-flight messages on SIGTERM/SIGINT.
    pub const fn drain_timeout_secs() -> u64 {
        30
    }
    /// Longest time the lease keeper holds one message.
    pub const fn max_lease_secs() -> u64 {
        3600
    }
    /// Longest wait to fill a batch of acks: fuller `DeleteMessageBatch` calls mean fewer
    /// requests; an ack that waits delays only the deletion, not the message.
    pub const fn ack_flush_ms() -> u64 {
        10
    }
    /// Extra wait to fill a batch of publishes; 0 publishes what is queued as soon as a slot is
    /// free, so forwarding adds no latency when idle (under load batches still fill:
    /// `pipeline::batch::next_step`).
    pub const fn publish_flush_ms() -> u64 {
        0
    }
    /// Longest time one transform may run on one message.
    pub const fn transform_timeout_ms() -> u64 {
        250
    }
    /// Longest transform output (1 MiB: what an SQS target can carry).
    pub const fn transform_max_output_bytes() -> u64 {
        1024 * 1024
    }
    /// Memory one sandbox process may use beyond its start (64 MiB: a jq program over a
    /// 1 MiB body needs a few times that body).
    pub const fn transform_max_memory_bytes() -> u64 {
        64 * 1024 * 1024
    }
    /// Sandbox processes (one per core of the usual 2-core worker).
    pub const fn transform_processes() -> u32 {
        2
    }
}

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Where messages come from.
    pub source: RawSource,
    /// Named destinations for `forward` actions and dead letters.
    #[serde(default)]
    pub targets: BTreeMap<String, RawTarget>,
    /// Delivery settings.
    #[serde(default)]
    pub pipeline: RawPipeline,
    /// Rules, evaluated in file order.
    #[serde(default)]
    pub rules: Vec<RawRule>,
}

/// `[source]`, tagged by `type`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RawSource {
    /// One event body per line of a file; `path = "-"` reads stdin.
    File {
        /// File to read, or `-` for stdin.
        path: String,
        /// Messages processed at once (default 256, 1–65536).
        #[serde(default = "defaults::max_in_flight")]
        max_in_flight: u32,
        /// Concurrent receive loops (default 1, 1–64).
        #[serde(default = "defaults::pollers")]
        pollers: u32,
        /// Lease of an unsettled line (default 30 s).
        #[serde(default = "defaults::file_visibility_timeout_secs")]
        visibility_timeout_secs: u64,
        /// What a line is: `body` (default: one event body) or `record` (a line a file target
        /// wrote: body, attributes and ordering key, read back exactly).
        #[serde(default)]
        format: RawLineFormat,
        /// Longest body passed on (default 1048576 bytes, 1–268435456); longer lines are
        /// dead-lettered as `body_too_large` without being parsed.
        #[serde(default = "defaults::file_max_body_bytes")]
        max_body_bytes: u64,
        /// Body bytes held in flight at once (default 67108864 = 64 MiB, 1048576–17179869184).
        #[serde(default = "defaults::max_in_flight_bytes")]
        max_in_flight_bytes: u64,
    },
    /// An Amazon SQS queue (standard or FIFO).
    Sqs {
        /// Queue URL.
        queue_url: String,
        /// Endpoint override, e.g. LocalStack's `http://127.0.0.1:4566` (also `AWS_ENDPOINT_URL`).
        #[serde(default)]
        endpoint_url: Option<String>,
        /// Region override (default: the AWS chain, else the queue URL's region).
        #[serde(default)]
        region: Option<String>,
        /// Long-poll wait per receive (default 5 s, 0–20).
        #[serde(default = "defaults::sqs_wait_time_secs")]
        wait_time_secs: u64,
        /// Messages processed at once (default 256, 1–65536).
        #[serde(default = "defaults::max_in_flight")]
        max_in_flight: u32,
        /// Receive loops always running (default 1, 1–64).
        #[serde(default = "defaults::pollers")]
        pollers: u32,
        /// Most receive loops (default 16, `pollers`–64): one more starts while receives come
        /// back full, one stops on an empty receive.
        #[serde(default)]
        max_pollers: Option<u32>,
        /// Visibility timeout requested on receive (default: the queue's own; 1–43200 s).
        #[serde(default)]
        visibility_timeout_secs: Option<u64>,
        /// Longest body passed on (default and maximum: the SQS limit, 1048576 bytes); larger
        /// ones are dead-lettered as `body_too_large` without being parsed.
        #[serde(default = "defaults::sqs_max_body_bytes")]
        max_body_bytes: u64,
        /// Body bytes held in flight at once (default 67108864 = 64 MiB, 1048576–17179869184).
        #[serde(default = "defaults::max_in_flight_bytes")]
        max_in_flight_bytes: u64,
    },
    /// A Google Cloud Pub/Sub subscription (streaming pull).
    Pubsub {
        /// Full name: `projects/PROJECT/subscriptions/NAME`.
        subscription: String,
        /// Endpoint override, e.g. the emulator's `http://127.0.0.1:8085` (also
        /// `PUBSUB_EMULATOR_HOST`); an `http://` endpoint uses no credentials.
        #[serde(default)]
        endpoint: Option<String>,
        /// Messages processed at once (default 256, 1–65536).
        #[serde(default = "defaults::max_in_flight")]
        max_in_flight: u32,
        /// Receive loops always running (default 1, 1–64).
        #[serde(default = "defaults::pollers")]
        pollers: u32,
        /// Most receive loops (default 16, `pollers`–64): one more starts while receives come
        /// back full, one stops on an empty receive.
        #[serde(default)]
        max_pollers: Option<u32>,
        /// Parallel streaming-pull streams (default 2, 1–32).
        #[serde(default = "defaults::pubsub_streams")]
        streams: u32,
        /// Flow control per stream: unsettled messages (default 1000, 1–1000000).
        #[serde(default = "defaults::pubsub_max_outstanding_messages")]
        max_outstanding_messages: u64,
        /// Flow control per stream: unsettled bytes (default 52428800, 1024–1073741824).
        #[serde(default = "defaults::pubsub_max_outstanding_bytes")]
        max_outstanding_bytes: u64,
        /// Lease of a received message before it is redelivered (default: the subscription's
        /// ack deadline; 1–600 s).
        #[serde(default)]
        visibility_timeout_secs: Option<u64>,
        /// Longest body passed on (default and maximum: the Pub/Sub limit, 10000000 bytes);
        /// larger ones are dead-lettered as `body_too_large` without being parsed.
        #[serde(default = "defaults::pubsub_max_body_bytes")]
        max_body_bytes: u64,
        /// Body bytes held in flight at once (default 67108864 = 64 MiB, 1048576–17179869184).
        #[serde(default = "defaults::max_in_flight_bytes")]
        max_in_flight_bytes: u64,
    },
}

/// `source.format` of a file source.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawLineFormat {
    /// Each line is one event body.
    #[default]
    Body,
    /// Each line is a record as file targets write it.
    Record,
}

/// `[targets.NAME]`, tagged by `type`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RawTarget {
    /// Appends JSON lines `{"body", "attributes"}` to a file.
    File {
        /// File to append to (created with its directory if missing).
        path: String,
        /// Circuit breaker (default `{ failures = 10, open_secs = 5, max_open_secs = 300 }`).
        #[serde(default)]
        circuit: RawCircuit,
        /// Messages being sent to this target at once (default: no limit of its own).
        #[serde(default)]
        max_concurrency: Option<u32>,
        /// Messages per second sent to this target (default: no limit; throttling still adapts).
        #[serde(default)]
        rate_per_sec: Option<f64>,
    },
    /// Writes JSON lines to standard output.
    Stdout {
        /// Circuit breaker (default `{ failures = 10, open_secs = 5, max_open_secs = 300 }`).
        #[serde(default)]
        circuit: RawCircuit,
        /// Messages being sent to this target at once (default: no limit of its own).
        #[serde(default)]
        max_concurrency: Option<u32>,
        /// Messages per second sent to this target (default: no limit; throttling still adapts).
        #[serde(default)]
        rate_per_sec: Option<f64>,
    },
    /// POSTs each message to a handler service.
    Http {
        /// Handler URL (http or https).
        url: String,
        /// Whole-request timeout (default 5000 ms, 1–600000).
        #[serde(default = "defaults::http_timeout_ms")]
        timeout_ms: u64,
        /// Static headers sent with every request.
        #[serde(default)]
        headers: BTreeMap<String, String>,
        /// Name of an environment variable holding a bearer token (read at start, never logged).
        #[serde(default)]
        bearer_token_env: Option<String>,
        /// Circuit breaker (default `{ failures = 10, open_secs = 5, max_open_secs = 300 }`).
        #[serde(default)]
        circuit: RawCircuit,
        /// Messages being sent to this target at once (default: no limit of its own).
        #[serde(default)]
        max_concurrency: Option<u32>,
        /// Messages per second sent to this target (default: no limit; throttling still adapts).
        #[serde(default)]
        rate_per_sec: Option<f64>,
    },
    /// Sends to an Amazon SQS queue (standard or FIFO).
    Sqs {
        /// Queue URL.
        queue_url: String,
        /// Endpoint override (also `AWS_ENDPOINT_URL`).
        #[serde(default)]
        endpoint_url: Option<String>,
        /// Region override.
        #[serde(default)]
        region: Option<String>,
        /// Circuit breaker (default `{ failures = 10, open_secs = 5, max_open_secs = 300 }`).
        #[serde(default)]
        circuit: RawCircuit,
        /// Messages being sent to this target at once (default: no limit of its own).
        #[serde(default)]
        max_concurrency: Option<u32>,
        /// Messages per second sent to this target (default: no limit; throttling still adapts).
        #[serde(default)]
        rate_per_sec: Option<f64>,
    },
    /// Publishes to a Google Cloud Pub/Sub topic.
    Pubsub {
        /// Full name: `projects/PROJECT/topics/NAME`.
        topic: String,
        /// Endpoint override (also `PUBSUB_EMULATOR_HOST`).
        #[serde(default)]
        endpoint: Option<String>,
        /// Circuit breaker (default `{ failures = 10, open_secs = 5, max_open_secs = 300 }`).
        #[serde(default)]
        circuit: RawCircuit,
        /// Messages being sent to this target at once (default: no limit of its own).
        #[serde(default)]
        max_concurrency: Option<u32>,
        /// Messages per second sent to this target (default: no limit; throttling still adapts).
        #[serde(default)]
        rate_per_sec: Option<f64>,
    },
}

/// The delivery settings every kind of target has.
#[derive(Debug, Clone, Copy)]
pub struct RawTargetDelivery<'a> {
    /// `circuit`.
    pub circuit: &'a RawCircuit,
    /// `max_concurrency`.
    pub max_concurrency: Option<u32>,
    /// `rate_per_sec`.
    pub rate_per_sec: Option<f64>,
}

impl RawTarget {
    /// The circuit, concurrency and rate settings of this target.
    pub fn delivery(&self) -> RawTargetDelivery<'_> {
        let (circuit, max_concurrency, rate_per_sec) = match self {
            RawTarget::File {
                circuit,
                max_concurrency,
                rate_per_sec,
                ..
            }
            | RawTarget::Stdout {
                circuit,
                max_concurrency,
                rate_per_sec,
            }
            | RawTarget::Http {
                circuit,
                max_concurrency,
                rate_per_sec,
                ..
            }
            | RawTarget::Sqs {
                circuit,
                max_concurrency,
                rate_per_sec,
                ..
            }
            | RawTarget::Pubsub {
                circuit,
                max_concurrency,
                rate_per_sec,
                ..
            } => (circuit, max_concurrency, rate_per_sec),
        };
        RawTargetDelivery {
            circuit,
            max_concurrency: *max_concurrency,
            rate_per_sec: *rate_per_sec,
        }
    }
}

/// `[targets.NAME] circuit`: when a failing target stops being sent to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCircuit {
    /// Transient failures in a row that open the circuit (default 10, 1–10000).
    #[serde(default = "defaults::circuit_failures")]
    pub failures: u32,
    /// How long it stays open before a probe (default 5 s, 1–3600).
    #[serde(default = "defaults::circuit_open_secs")]
    pub open_secs: u64,
    /// Longest it stays open; the interval doubles per failed probe (default 300 s, 1–43200).
    #[serde(default = "defaults::circuit_max_open_secs")]
    pub max_open_secs: u64,
}

impl Default for RawCircuit {
    fn default() -> Self {
        Self {
            failures: defaults::circuit_failures(),
            open_secs: defaults::circuit_open_secs(),
            max_open_secs: defaults::circuit_max_open_secs(),
        }
    }
}

/// `[pipeline]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPipeline {
    /// Target that receives dead letters; required when anything can be dead-lettered.
    #[serde(default)]
    pub dead_letter: Option<String>,
    /// What happens to an event no rule matches: `dead_letter` (default) or `ack`.
    #[serde(default)]
    pub unmatched: RawUnmatched,
    /// Retry budget and backoff.
    #[serde(default)]
    pub retry: RawRetry,
    /// Time given to in-flight messages on shutdown (default 30 s).
    #[serde(default = "defaults::drain_timeout_secs")]
    pub drain_timeout_secs: u64,
    /// Longest time one message's lease is kept extended (default 3600 s).
    #[serde(default = "defaults::max_lease_secs")]
    pub max_lease_secs: u64,
    /// Longest wait to fill an ack batch (default 10 ms).
    #[serde(default = "defaults::ack_flush_ms")]
    pub ack_flush_ms: u64,
    /// Extra wait to fill a publish batch (default 0 ms: publish what is queued at once).
    #[serde(default = "defaults::publish_flush_ms")]
    pub publish_flush_ms: u64,
    /// Budgets of the transform sandbox.
    #[serde(default)]
    pub transform: RawTransform,
    /// Directory for the failure ledger: own failure counts of failed messages released to an
    /// SQS FIFO queue or a Pub/Sub subscription, so a restart goes on counting (default: a
    /// directory per source under the system's temporary directory, skipped with a warning
    /// when it cannot be written).
    #[serde(default)]
    pub state_dir: Option<String>,
}

/// `pipeline.transform`: the budgets every transform runs under (in a sandbox process).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTransform {
    /// Longest run on one message (default 250 ms, 1–60000); past it the message is
    /// dead-lettered as `transform_budget_exceeded`.
    #[serde(default = "defaults::transform_timeout_ms")]
    pub timeout_ms: u64,
    /// Longest output (default 1048576 bytes, 1–10000000).
    #[serde(default = "defaults::transform_max_output_bytes")]
    pub max_output_bytes: u64,
    /// Memory of one sandbox process beyond its start (default 67108864 bytes = 64 MiB,
    /// 16 MiB–16 GiB).
    #[serde(default = "defaults::transform_max_memory_bytes")]
    pub max_memory_bytes: u64,
    /// Sandbox processes, i.e. transforms running at once (default 2, 1–64).
    #[serde(default = "defaults::transform_processes")]
    pub processes: u32,
}

impl Default for RawTransform {
    fn default() -> Self {
        Self {
            timeout_ms: defaults::transform_timeout_ms(),
            max_output_bytes: defaults::transform_max_output_bytes(),
            max_memory_bytes: defaults::transform_max_memory_bytes(),
            processes: defaults::transform_processes(),
        }
    }
}

impl Default for RawPipeline {
    fn default() -> Self {
        Self {
            dead_letter: None,
            unmatched: RawUnmatched::default(),
            retry: RawRetry::default(),
            drain_timeout_secs: defaults::drain_timeout_secs(),
            max_lease_secs: defaults::max_lease_secs(),
            ack_flush_ms: defaults::ack_flush_ms(),
            publish_flush_ms: defaults::publish_flush_ms(),
            transform: RawTransform::default(),
            state_dir: None,
        }
    }
}

/// `pipeline.unmatched`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawUnmatched {
    /// Write unmatched events to the dead-letter target.
    #[default]
    DeadLetter,
    /// Ack (discard) unmatched events.
    Ack,
}

/// `pipeline.retry`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Deliveries before dead-lettering (default 5, 1–1000).
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: u32,
    /// Delay before the first retry (default 500 ms).
    #[serde(default = "defaults::initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    /// Cap on the retry delay (default 300 s, at most 43200 s).
    #[serde(default = "defaults::max_backoff_secs")]
    pub max_backoff_secs: u64,
}

impl Default for RawRetry {
    fn default() -> Self {
        Self {
            max_attempts: defaults::max_attempts(),
            initial_backoff_ms: defaults::initial_backoff_ms(),
            max_backoff_secs: defaults::max_backoff_secs(),
        }
    }
}

/// `[[rules]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Unique name, shown in `veltrix test`, logs and dead letters.
    pub name: String,
    /// Event pattern: a table, or a JSON string (TOML has no `null`).
    #[serde(rename = "match")]
    pub pattern: Value,
    /// jq program applied before `forward` actions that have no transform of their own.
    #[serde(default)]
    pub transform: Option<String>,
    /// Stop evaluating later rules when this one matches.
    #[serde(default, rename = "final")]
    pub is_final: bool,
    /// Retry budget for events this rule matches (default: `pipeline.retry.max_attempts`).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// JSON Schema file (relative to the config) that bodies of matching events must fit;
    /// those that do not are dead-lettered as `schema_invalid`. Default: none.
    #[serde(default)]
    pub schema: Option<String>,
    /// What to do with a matching event.
    pub actions: Vec<RawAction>,
}

/// One action, tagged by `type`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RawAction {
    /// Publish to a target, optionally through a jq transform.
    Forward {
        /// Target name.
        target: String,
        /// jq program; its single output becomes the forwarded body.
        #[serde(default)]
        transform: Option<String>,
    },
    /// Ack without forwarding.
    Drop {},
    /// Write to the dead-letter target with this reason.
    DeadLetter {
        /// Reason recorded in `veltrix.reason`.
        reason: String,
    },
    /// Redeliver later with backoff (counts against the retry budget).
    Retry {},
}
