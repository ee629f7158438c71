//! The most memory a worker with a given config can use, from its settings alone.
//!
//! The sum of: the worker's base; the body bytes in flight (`max_in_flight_bytes`); what can
//! arrive beyond that bound (SQS receives reserve their worst case under the bound, which
//! admits one receive batch over it however many pollers run; a Pub/Sub stream buffers up to
//! its `max_outstanding_bytes`; a file source reads ahead [`READ_AHEAD_BYTES`]); and each sandbox process at its limit when rules
//! transform. The Kubernetes memory limit in `deploy/` is derived from it, and `veltrix
//! check` prints it.

use veltrix_queue::file::READ_AHEAD_BYTES;

use super::{Config, SourceConfig};

/// Memory of the worker itself with nothing in flight (runtime, clients, metrics), rounded up
/// from the measured ~12 MiB idle and ~40 MiB with 1,000 small messages held (BENCHMARKS.md).
pub const BASE_MEMORY_BYTES: u64 = 64 * 1024 * 1024;
/// Memory of one idle sandbox process (measured ~15 MiB resident), rounded up.
pub const SANDBOX_BASE_MEMORY_BYTES: u64 = 32 * 1024 * 1024;

/// Bytes that can arrive beyond `max_in_flight_bytes`.
pub fn receive_overshoot_bytes(config: &Config) -> u64 {
    let s = &config.settings;
    match &config.source {
        SourceConfig::Sqs { .. } => s
            .receive_reserve_bytes
            .unwrap_or(veltrix_sqs::limits::MAX_BATCH * s.max_body_bytes) as u64,
        SourceConfig::Pubsub {
            streams,
            max_outstanding_bytes,
            ..
        } => *streams as u64 * max_outstanding_bytes,
        SourceConfig::File { .. } => READ_AHEAD_BYTES as u64 + s.max_body_bytes as u64,
    }
}

/// The most memory the worker of `config` can use, in bytes.
pub fn memory_bound_bytes(config: &Config) -> u64 {
    let s = &config.settings;
    let sandboxes = if config.rules.transforms().is_empty() {
        0
    } else {
        s.sandbox.processes as u64 * (SANDBOX_BASE_MEMORY_BYTES + s.sandbox.max_memory_bytes)
    };
    BASE_MEMORY_BYTES + s.max_in_flight_bytes as u64 + receive_overshoot_bytes(config) + sandboxes
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const MIB: u64 = 1024 * 1024;

    fn load(text: &str) -> Config {
        super::super::load_str(Path::new("m.toml"), text, &|_| None).unwrap()
    }

    #[test]
    fn sqs_with_a_transform() {
        let c = load(
            r#"
[source]
type = "sqs"
queue_url = "https://sqs.eu-west-1.amazonaws.com/1/q"
pollers = 4
[targets.out]
type = "stdout"
[[rules]]
name = "r"
match = { body = { a = [1] } }
actions = [{ type = "forward", target = "out", transform = "{a: .body.a}" }]
"#,
        );
        assert_eq!(memory_bound_bytes(&c), (64 + 64 + 10 + 2 * (32 + 64)) * MIB);
    }

    #[test]
    fn pubsub_counts_its_stream_buffers() {
        let c = load(
            r#"
[source]
type = "pubsub"
subscription = "projects/p/subscriptions/s"
streams = 2
max_outstanding_bytes = 16777216
"#,
        );
        assert_eq!(memory_bound_bytes(&c), (64 + 64 + 32) * MIB);
    }
}
