//! veltrix: a thin worker that pulls events from a queue, applies operator-configured rules,
//! and acks or dead-letters every message without ever losing one.
//!
//! ```text
//!  config file ──> config::load ──> Config { source, targets, rules: RuleSet, settings }
//!                                         │
//!  Source (veltrix-queue trait: file, memory; SQS and Pub/Sub crates) ──receive──┐
//!                                                                                ▼
//!  pipeline::Worker ── pollers ─> process: decode body → envelope → rules::RuleSet::plan
//!        │                                 (pure: matched rules, forwards, disposition)
//!        │                          publish forwards via targets::batching (batched per target)
//!        │                          then ack (batched) | nack(backoff) | dead-letter then ack
//!        └── lease keeper, per-key sequencer, drain on shutdown
//! ```
//!
//! Modules, one job each:
//! - [`config`]: TOML/JSON → validated [`config::Config`], errors with file, line, field, fix.
//! - [`rules`]: the EventBridge-pattern matcher ([`rules::pattern`]), actions, jq transforms
//!   and the pure [`rules::plan::Plan`] of what to do with an event.
//! - [`pipeline`]: the delivery machinery (concurrency, acks, retries, leases, drain).
//! - [`targets`]: opening configured targets, and batching publishes.
//! - [`runner`]: `veltrix run` wiring; [`testing`]: `veltrix test`; [`shutdown`]: signals.
//! - [`sandbox`]: transforms run in separate processes with time, size and memory budgets.
//! - [`replay`]: `veltrix dlq replay`, dead letters back to the source after a fix;
//!   [`preflight`]: `veltrix check --preflight`, the real queues compared with the config.

pub mod config;
pub mod observe;
pub mod pipeline;
pub mod preflight;
pub mod replay;
pub mod rules;
pub mod runner;
pub mod sandbox;
pub mod shutdown;
pub mod targets;
pub mod testing;
