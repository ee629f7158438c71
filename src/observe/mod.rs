//! Observability: Prometheus metrics, health endpoints and the small HTTP server that serves them.
//!
//! Metric names (all prefixed `veltrix_`), recorded through the `metrics` facade (no-ops unless
//! `--metrics-addr` installs the Prometheus recorder):
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `veltrix_messages_received_total` | counter | `source` |
//! | `veltrix_messages_settled_total` | counter | `source`, `outcome` (forward, drop, ack, dead_letter, retry) |
//! | `veltrix_rule_matches_total` | counter | `rule` |
//! | `veltrix_target_publishes_total` | counter | `target`, `result` (ok, transient, permanent) |
//! | `veltrix_dead_letters_total` | counter | `reason` |
//! | `veltrix_dead_letter_failures_total`, `veltrix_ack_failures_total` | counter | |
//! | `veltrix_lease_extensions_total`, `veltrix_empty_receives_total` | counter | |
//! | `veltrix_in_flight` | gauge | |
//! | `veltrix_backlog_messages` | gauge | `source` (where the provider tells: SQS, memory) |
//! | `veltrix_receive_duration_seconds`, `veltrix_ack_duration_seconds` | histogram | |
//! | `veltrix_publish_duration_seconds` | histogram | `target` |
//! | `veltrix_processing_duration_seconds` | histogram | |
//! | `veltrix_config_generation` | gauge | (the running config generation, from 1) |
//! | `veltrix_config_info` | gauge | `hash` (1 for the running config, 0 for those it replaced) |
//! | `veltrix_config_reloads_total` | counter | `result` (ok, failed) |

/// Every metric name veltrix exports (histograms add `_bucket`, `_sum`, `_count`).
pub const METRIC_NAMES: &[&str] = &[
    "veltrix_messages_received_total",
    "veltrix_messages_settled_total",
    "veltrix_rule_matches_total",
    "veltrix_target_publishes_total",
    "veltrix_dead_letters_total",
    "veltrix_dead_letter_failures_total",
    "veltrix_ack_failures_total",
    "veltrix_lease_extensions_total",
    "veltrix_empty_receives_total",
    "veltrix_in_flight",
    "veltrix_target_circuit_state",
    "veltrix_intake_paused",
    "veltrix_backlog_messages",
    "veltrix_receive_duration_seconds",
    "veltrix_ack_duration_seconds",
    "veltrix_publish_duration_seconds",
    "veltrix_processing_duration_seconds",
    "veltrix_config_generation",
    "veltrix_config_info",
    "veltrix_config_reloads_total",
];

pub mod events;
pub mod health;
pub mod metrics;
pub mod server;

/// Histogram buckets in seconds (1 ms to 60 s).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
