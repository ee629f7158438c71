//! The worker's own attributes (`veltrix.*`) and what happens to ones a producer set.
//!
//! The worker writes `veltrix.*` attributes on forwards and dead letters (`veltrix.reason`,
//! `veltrix.message_id`, …). A producer, or a veltrix worker upstream, may send messages that
//! already carry such names; taken as they are, they would pass for this worker's own (a
//! producer's `veltrix.reason` on a dead letter, a stale `veltrix.attempts`), and a replay would
//! strip them as the worker's.
//!
//! So at receive ([`rename_at_ingress`]) every `veltrix.*` attribute is moved to
//! `veltrix.upstream.*` (nesting once per hop: `veltrix.upstream.upstream.*` two hops up),
//! except the counters the worker reads back on purpose ([`CARRIED`]). Rules see the renamed
//! names, and forwards and dead letters keep them. `dlq replay` ([`restore_for_replay`]) drops
//! the worker's own attributes and moves `veltrix.upstream.*` back one level, so a replayed
//! message has exactly the attributes it arrived with.

use veltrix_queue::Attributes;

/// Prefix of the worker's own attributes.
pub const OWN_PREFIX: &str = "veltrix.";

/// Where producer-set `veltrix.*` attributes are kept: `veltrix.x` becomes `veltrix.upstream.x`.
pub const UPSTREAM_PREFIX: &str = "veltrix.upstream.";

/// How often a message was replayed (kept at receive, counted up by every replay).
pub const ATTR_REPLAYS: &str = "veltrix.replays";

/// `veltrix.*` attributes kept as they are at receive: counters the worker carries itself.
pub const CARRIED: &[&str] = &[ATTR_REPLAYS];

/// A released message's own failures so far, and the id it first had: `"<failures> <id>"`.
/// The worker writes it when it gives a failed message back to a source that can carry it
/// ([`veltrix_queue::Source::requeue`]) and takes it off at the next receive, so it never
/// reaches a target.
pub const ATTR_FAILURES: &str = "veltrix.failures";

/// What [`ATTR_FAILURES`] carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarriedFailures {
    /// The message's own failures before this delivery.
    pub failures: u32,
    /// The message id it had when it was first received (an SQS re-send gets a new one).
    pub first_id: Option<String>,
}

/// Removes [`ATTR_FAILURES`] and returns what it carried (`None` when absent or unreadable,
/// which counts as no failures).
pub fn take_carried_failures(attributes: &mut Attributes) -> Option<CarriedFailures> {
    let value = attributes.remove(ATTR_FAILURES)?;
    let text = value.as_str()?;
    let (count, id) = match text.split_once(' ') {
        Some((count, id)) => (count, Some(id.to_string()).filter(|id| !id.is_empty())),
        None => (text, None),
    };
    Some(CarriedFailures {
        failures: count.parse().ok()?,
        first_id: id,
    })
}

/// The [`ATTR_FAILURES`] value for `failures` of the message first received as `id`.
pub fn carried_failures_value(failures: u32, id: &str) -> String {
    format!("{failures} {id}")
}

/// Moves producer-set `veltrix.*` attributes under [`UPSTREAM_PREFIX`]; nothing is dropped.
pub fn rename_at_ingress(attributes: &mut Attributes) {
    let foreign: Vec<String> = attributes
        .keys()
        .filter(|k| k.starts_with(OWN_PREFIX) && !CARRIED.contains(&k.as_str()))
        .cloned()
        .collect();
    // Deepest first, so `veltrix.upstream.x` moves out of the way before `veltrix.x` takes it.
    let mut foreign = foreign;
    foreign.sort_by_key(|k| std::cmp::Reverse(k.len()));
    for name in foreign {
        if let Some(value) = attributes.remove(&name) {
            attributes.insert(format!("{UPSTREAM_PREFIX}{}", &name[OWN_PREFIX.len()..]), value);
        }
    }
}

/// The attributes a replay publishes: the worker's own dropped, `veltrix.upstream.*` moved back
/// one level, [`CARRIED`] counters kept (the caller counts the replay up).
pub fn restore_for_replay(attributes: &Attributes) -> Attributes {
    let mut out = Attributes::new();
    for (k, v) in attributes {
        if let Some(rest) = k.strip_prefix(UPSTREAM_PREFIX) {
            out.insert(format!("{OWN_PREFIX}{rest}"), v.clone());
        } else if !k.starts_with(OWN_PREFIX) || CARRIED.contains(&k.as_str()) {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> Attributes {
        pairs.iter().copied().collect()
    }

    #[test]
    fn producer_set_own_names_move_upstream_and_come_back_on_replay() {
        let arrived = attrs(&[
            ("tenant", "t-1"),
            ("veltrix.reason", "spoofed"),
            ("veltrix.upstream.rule", "hop-2"),
            ("veltrix.replays", "1"),
        ]);
        let mut seen = arrived.clone();
        rename_at_ingress(&mut seen);
        assert_eq!(
            seen,
            attrs(&[
                ("tenant", "t-1"),
                ("veltrix.upstream.reason", "spoofed"),
                ("veltrix.upstream.upstream.rule", "hop-2"),
                ("veltrix.replays", "1"),
            ])
        );
        // The worker dead-letters it with its own attributes.
        let mut dead_letter = seen.clone();
        dead_letter.insert("veltrix.reason", "unmatched");
        dead_letter.insert("veltrix.message_id", "m-1");
        assert_eq!(restore_for_replay(&dead_letter), arrived);
    }

    #[test]
    fn messages_without_own_names_are_untouched() {
        let mut a = attrs(&[("a", "1"), ("veltrixish", "2")]);
        let before = a.clone();
        rename_at_ingress(&mut a);
        assert_eq!(a, before);
        assert_eq!(restore_for_replay(&a), before);
    }
}
