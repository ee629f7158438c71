//! `veltrix dlq replay`: move dead letters back to the source (or another target) after the
//! cause was fixed.
//!
//! Each dead letter is read from a queue, subscription or dead-letter file and then:
//! - left where it is when it does not match `--filter` (an event pattern over the same
//!   envelope rules see, so `{"attributes": {"veltrix.reason": ["transform_failed"]}}` works), or
//!   when it was already replayed `--max-replays` times (`veltrix.replays`: no replay loops);
//! - otherwise published to the destination with exactly the attributes the message arrived
//!   with: the `veltrix.*` attributes the worker added removed, producer-set ones it kept as
//!   `veltrix.upstream.*` given their names back ([`own_attributes`]), `veltrix.replays`
//!   counted up, its ordering key (FIFO group) kept, and a deduplication id unique per original
//!   message and replay; then acked on the dead-letter side. Publish first, ack second: a
//!   crash in between leaves a duplicate, never a loss.
//!
//! Every dead letter held (the one being published, and those left in place until the end) is
//! kept leased by the pipeline's lease keeper, so a slow `--rate` does not let them reappear
//! and be read twice. `--rate` paces publishes, `--limit` stops after that many, `--dry-run`
//! publishes and acks nothing. The run ends when the dead letters are exhausted (files) or a
//! receive comes back empty or with only messages already seen (queues). Messages left in place
//! are released at the end so they are visible again at once.

pub mod file;
pub mod open;

use crate::observe::events::{LogEvent, ReleaseFailed, ReplayAckFailed};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use veltrix_queue::{AckToken, Attributes, Delivery, OutboundMessage, Publisher, QueueError, Received, Source};

use crate::pipeline::lease::{LeaseGuard, LeaseKeeper};
use crate::pipeline::own_attributes;
use crate::pipeline::stats::Stats;
use crate::rules::envelope;
use crate::rules::pattern::PatternSet;

/// Counts how often a message was replayed; the one `veltrix.*` attribute a replay keeps.
pub use crate::pipeline::own_attributes::ATTR_REPLAYS;

/// The worker's original message id on a dead letter.
pub const ATTR_MESSAGE_ID: &str = "veltrix.message_id";

/// The dead-letter reason (shown in the report).
pub const ATTR_REASON: &str = "veltrix.reason";

/// Ack attempts per replayed dead letter before the failure is reported.
pub const ACK_ATTEMPTS: u32 = 4;

/// Delay before the first ack retry (doubles per attempt).
pub const ACK_RETRY_DELAY: Duration = Duration::from_millis(200);

/// Longest time a replay keeps one dead letter leased.
pub const MAX_HOLD: Duration = Duration::from_secs(12 * 60 * 60);

/// Default `--max-replays`.
pub const DEFAULT_MAX_REPLAYS: u32 = 3;

/// How a replay runs.
pub struct ReplayOptions {
    /// Only dead letters whose envelope matches this pattern are replayed.
    pub filter: Option<PatternSet>,
    /// Most messages published per second.
    pub rate_per_sec: Option<f64>,
    /// Stop after this many were replayed (or would be, with `dry_run`).
    pub limit: Option<u64>,
    /// Decide and report, but publish and ack nothing.
    pub dry_run: bool,
    /// A message already replayed this many times stays where it is.
    pub max_replays: u32,
    /// How long one receive waits; an empty receive ends the run.
    pub receive_wait: Duration,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self {
            filter: None,
            rate_per_sec: None,
            limit: None,
            dry_run: false,
            max_replays: DEFAULT_MAX_REPLAYS,
            receive_wait: Duration::from_secs(2),
        }
    }
}

/// What happened to one dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayAction {
    /// Published to the destination and acked.
    Replayed,
    /// `--dry-run`: would have been replayed.
    WouldReplay,
    /// Did not match `--filter`; left in place.
    SkippedFilter,
    /// Already replayed `--max-replays` times; left in place.
    SkippedMaxReplays,
    /// Publishing failed, or the dead letter cannot be read; left in place.
    Failed,
}

/// One line of the report (`veltrix dlq replay` prints one JSON line per dead letter).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplayRecord {
    /// The dead letter's id on the dead-letter queue.
    pub id: String,
    /// Why it was dead-lettered (`veltrix.reason`), if it says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Replays before this one.
    pub replays: u32,
    /// What was done.
    pub action: ReplayAction,
    /// The publish error, for `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Totals of a replay run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplaySummary {
    /// Dead letters read (each once).
    pub read: u64,
    /// Published and acked.
    pub replayed: u64,
    /// Would have been replayed (`--dry-run`).
    pub would_replay: u64,
    /// Left in place: not matching the filter.
    pub skipped_filter: u64,
    /// Left in place: replayed too often already.
    pub skipped_max_replays: u64,
    /// Left in place: publishing failed.
    pub failed: u64,
}

impl std::fmt::Display for ReplaySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "read={} replayed={} would_replay={} skipped_filter={} skipped_max_replays={} failed={}",
            self.read, self.replayed, self.would_replay, self.skipped_filter, self.skipped_max_replays, self.failed
        )
    }
}

/// Why a replay stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Reading the dead letters failed.
    #[error("reading dead letters failed: {0}")]
    Receive(QueueError),
}

/// `veltrix.replays` of a dead letter (0 when absent or unreadable).
pub fn replays_of(attributes: &Attributes) -> u32 {
    attributes
        .get_str(ATTR_REPLAYS)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The message to publish for a dead letter: the original body and the attributes the message
/// arrived with ([`own_attributes::restore_for_replay`]), `veltrix.replays` counted up, the
/// ordering key kept, and a deduplication id (FIFO targets) unique per original message and
/// replay, so two runs that publish the same dead letter publish it once.
pub fn replay_message(d: &Delivery) -> OutboundMessage {
    let replays = replays_of(&d.attributes) + 1;
    let original_id = d
        .attributes
        .get_str(ATTR_MESSAGE_ID)
        .map(str::to_string)
        .unwrap_or_else(|| d.id.clone());
    let mut attributes = own_attributes::restore_for_replay(&d.attributes);
    attributes.insert(ATTR_REPLAYS, replays.to_string());
    OutboundMessage {
        body: d.body.clone(),
        attributes,
        ordering_key: d.ordering_key.clone(),
        dedup_id: Some(format!("{original_id}:replay:{replays}")),
    }
}

/// Whether a dead letter matches the filter; the envelope is the one rules see.
fn matches_filter(filter: &PatternSet, d: &Delivery, source: &veltrix_queue::SourceInfo) -> bool {
    let body = envelope::decode_body(&d.body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&d.body).into_owned()));
    let env = envelope::build(body, &d.attributes, source, d.delivery_attempt);
    let mut out = Vec::new();
    filter.matches(&env, &mut out);
    !out.is_empty()
}

/// Paces publishes to `rate` per second (tokio time, so paused-time tests see it exactly).
struct Pacer {
    interval: Option<Duration>,
    next: tokio::time::Instant,
}

impl Pacer {
    fn new(rate_per_sec: Option<f64>) -> Self {
        Self {
            interval: rate_per_sec
                .filter(|r| *r > 0.0)
                .map(|r| Duration::from_secs_f64(1.0 / r)),
            next: tokio::time::Instant::now(),
        }
    }

    async fn wait(&mut self) {
        if let Some(interval) = self.interval {
            tokio::time::sleep_until(self.next).await;
            self.next = self.next.max(tokio::time::Instant::now() - interval) + interval;
        }
    }
}

/// Acks one replayed dead letter, retrying transient failures; its lease is kept meanwhile.
async fn ack_replayed(from: &dyn Source, d: &Delivery) {
    let mut delay = ACK_RETRY_DELAY;
    for attempt in 1..=ACK_ATTEMPTS {
        match from.ack(vec![d.token.clone()]).await {
            Ok(()) => return,
            Err(e) if e.error.is_transient() && attempt < ACK_ATTEMPTS => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => {
                // Published but still on the dead-letter queue: it comes back and is replayed
                // again (a duplicate, never a loss; FIFO destinations drop it by its
                // deduplication id), and the replay count on the copy stops a loop.
                ReplayAckFailed {
                    id: d.id.clone(),
                    error: e.to_string(),
                }
                .emit();
                return;
            }
        }
    }
}

/// A dead letter held by the replay, with its lease kept extended.
struct HeldLetter {
    token: AckToken,
    _lease: LeaseGuard,
}

/// Replays dead letters from `from` to `to`, calling `report` for each one read.
pub async fn replay(
    from: Arc<dyn Source>,
    to: &dyn Publisher,
    options: &ReplayOptions,
    mut report: impl FnMut(&ReplayRecord),
) -> Result<ReplaySummary, ReplayError> {
    let info = from.info();
    let stop_keeper = CancellationToken::new();
    let (leases, keeper) = LeaseKeeper::spawn(from.clone(), MAX_HOLD, Arc::new(Stats::default()), stop_keeper.clone());
    let mut summary = ReplaySummary::default();
    let mut seen: HashSet<String> = HashSet::new();
    let mut left_in_place: Vec<HeldLetter> = Vec::new();
    let hold = |d: Delivery| HeldLetter {
        _lease: leases.register(d.token.clone()),
        token: d.token,
    };
    let mut pacer = Pacer::new(options.rate_per_sec);
    let batch_max = from.limits().max_receive_batch.clamp(1, 100);
    let result = 'run: loop {
        let batch = match from.receive(batch_max, options.receive_wait).await {
            Ok(Received::Exhausted) => break Ok(()),
            Ok(Received::Messages(batch)) => batch,
            Err(e) => break Err(ReplayError::Receive(e)),
        };
        // A dead letter seen before came back after its lease: it was left in place on purpose.
        let (fresh, again): (Vec<Delivery>, Vec<Delivery>) = batch.into_iter().partition(|d| seen.insert(d.id.clone()));
        left_in_place.extend(again.into_iter().map(hold));
        if fresh.is_empty() {
            break Ok(());
        }
        let mut rest = fresh.into_iter().map(|d| {
            let lease = leases.register(d.token.clone());
            (d, lease)
        });
        while let Some((d, lease)) = rest.next() {
            let held = HeldLetter {
                token: d.token.clone(),
                _lease: lease,
            };
            if options
                .limit
                .is_some_and(|limit| summary.replayed + summary.would_replay >= limit)
            {
                left_in_place.push(held);
                left_in_place.extend(rest.map(|(d, lease)| HeldLetter {
                    token: d.token,
                    _lease: lease,
                }));
                break 'run Ok(());
            }
            summary.read += 1;
            let replays = replays_of(&d.attributes);
            let mut record = ReplayRecord {
                id: d.id.clone(),
                reason: d.attributes.get_str(ATTR_REASON).map(str::to_string),
                replays,
                action: ReplayAction::Replayed,
                error: None,
            };
            if let Some(why) = file::unreadable(&d) {
                record.action = ReplayAction::Failed;
                record.error = Some(format!("not a dead-letter record: {why}"));
                summary.failed += 1;
            } else if replays >= options.max_replays {
                record.action = ReplayAction::SkippedMaxReplays;
                summary.skipped_max_replays += 1;
            } else if options.filter.as_ref().is_some_and(|f| !matches_filter(f, &d, &info)) {
                record.action = ReplayAction::SkippedFilter;
                summary.skipped_filter += 1;
            } else if options.dry_run {
                record.action = ReplayAction::WouldReplay;
                summary.would_replay += 1;
            } else {
                pacer.wait().await;
                match to.publish(vec![replay_message(&d)]).await.pop() {
                    Some(Ok(())) => {
                        ack_replayed(from.as_ref(), &d).await;
                        summary.replayed += 1;
                        report(&record);
                        continue;
                    }
                    Some(Err(e)) => {
                        record.action = ReplayAction::Failed;
                        record.error = Some(e.to_string());
                        summary.failed += 1;
                    }
                    None => {
                        record.action = ReplayAction::Failed;
                        record.error = Some("the target returned no result".into());
                        summary.failed += 1;
                    }
                }
            }
            left_in_place.push(held);
            report(&record);
        }
    };
    stop_keeper.cancel();
    let _ = keeper.await;
    for held in left_in_place {
        if let Err(e) = from.nack(held.token, Duration::ZERO).await {
            ReleaseFailed { error: e.to_string() }.emit();
        }
    }
    from.close().await;
    result.map(|()| summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn delivery(attrs: &[(&str, &str)]) -> Delivery {
        Delivery {
            id: "dl-1".into(),
            body: Bytes::from_static(b"{\"type\":\"order\"}"),
            attributes: attrs.iter().copied().collect(),
            ordering_key: Some("group-7".into()),
            delivery_attempt: 1,
            published_at: None,
            token: AckToken::new(1u64),
        }
    }

    #[test]
    fn replay_strips_the_workers_attributes_and_counts_the_replay() {
        let d = delivery(&[
            ("veltrix.reason", "transform_failed"),
            ("veltrix.message_id", "m-42"),
            ("veltrix.error", "boom"),
            ("veltrix.replays", "1"),
            ("veltrix.upstream.rule", "producer-set"),
            ("customer", "c-1"),
        ]);
        let m = replay_message(&d);
        assert_eq!(
            m.attributes,
            [
                ("customer", "c-1"),
                ("veltrix.replays", "2"),
                ("veltrix.rule", "producer-set")
            ]
            .into_iter()
            .collect()
        );
        assert_eq!(m.body, d.body);
        assert_eq!(m.ordering_key.as_deref(), Some("group-7"), "FIFO group kept");
        assert_eq!(m.dedup_id.as_deref(), Some("m-42:replay:2"));
    }

    #[test]
    fn replay_count_defaults_to_zero() {
        assert_eq!(replays_of(&delivery(&[]).attributes), 0);
        assert_eq!(replays_of(&delivery(&[("veltrix.replays", "x")]).attributes), 0);
        assert_eq!(replays_of(&delivery(&[("veltrix.replays", "3")]).attributes), 3);
        let m = replay_message(&delivery(&[]));
        assert_eq!(m.attributes["veltrix.replays"], "1");
        assert_eq!(m.dedup_id.as_deref(), Some("dl-1:replay:1"));
    }
}
