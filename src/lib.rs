//! veltrix: a thin worker that pulls events from a queue, applies operator-configured rules,
//! and acks or dead-letters every message without ever losing one.
//!
//! ```text
//!  config file ──> config::load ──> Config { source, targets, rules: RuleSet, settings }
//!                                         │
//!  Source (veltrix-queue trait: file, memory; SQS and Pub/Sub crates) ──receive──┐
//!                                                                                ▼
//!  pipeline::Worker ── pollers ─> process: own veltrix.* → veltrix.upstream.*, size check,
//!        │   (message and byte       decode body → envelope → rules::RuleSet::plan
//!        │    budgets)                 (pure: matched rules, forwards, disposition)
//!        │                          pending transforms → sandbox processes (budgets)
//!        │                          publish forwards via targets::batching (batched per target)
//!        │                            through targets::guard (circuit, rate, concurrency)
//!        │                          then ack (batched) | retry in place | dead-letter then ack
//!        └── lease keeper, per-key sequencer, intake gate, bounded drain on shutdown
//!
//!  SIGHUP / --watch ──> reload_loop: config::load ──> pipeline::reload::decide (pure: what
//!        reloads, which targets keep their connections) ──> open new targets ──> the worker
//!        swaps in a new generation (pipeline::generation); messages in flight finish under
//!        the one they started with
//! ```
//!
//! Modules, one job each:
//! - [`config`]: TOML/JSON → validated [`config::Config`], errors with file, line, field, fix.
//! - [`rules`]: the EventBridge-pattern matcher ([`rules::pattern`]), actions, jq transforms
//!   and the pure [`rules::plan::Plan`] of what to do with an event.
//! - [`pipeline`]: the delivery machinery (concurrency, acks, retries, leases, drain) and its
//!   policies, each a pure decision module: [`pipeline::retry_budget`],
//!   [`pipeline::circuit`], [`pipeline::rate_limit`], [`pipeline::backoff`],
//!   [`pipeline::reload`].
//! - [`targets`]: opening configured targets, batching publishes, and the guard that wires the
//!   policies in front of each target.
//! - [`runner`]: `veltrix run` wiring; [`reload_loop`]: its reloads on SIGHUP and `--watch`;
//!   [`testing`]: `veltrix test` (and its explanations for
//!   people); [`playground`]: `veltrix playground`, the rule playground page; [`shutdown`]: signals.
//! - [`sandbox`]: transforms run in separate processes with time, size and memory budgets.
//! - [`replay`]: `veltrix dlq replay`, dead letters back to the source after a fix;
//!   [`preflight`]: `veltrix check --preflight`, the real queues compared with the config.

pub mod config;
pub mod observe;
pub mod pipeline;
pub mod playground;
pub mod preflight;
pub mod reload_loop;
pub mod replay;
pub mod rules;
pub mod runner;
pub mod sandbox;
pub mod shutdown;
pub mod targets;
pub mod testing;
