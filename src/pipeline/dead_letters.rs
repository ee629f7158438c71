//! The dead-letter envelope, and how it is cut down when the dead-letter target refuses it.
//!
//! A dead letter is the original body and attributes plus the worker's own attributes
//! (`veltrix.reason`, `veltrix.rule`, `veltrix.error`, `veltrix.explain` for unmatched events,
//! `veltrix.attempts`, `veltrix.source`,
//! `veltrix.message_id`, `veltrix.failed_at`). A message just under its provider's size limit
//! may not fit with all of them; when the target refuses a dead letter for good, the pipeline
//! tries the next [`Envelope`] level, which drops envelope attributes (never the message's own)
//! and lists what it dropped in `veltrix.trimmed`.

use std::time::SystemTime;

use veltrix_queue::{Delivery, OutboundMessage, SourceInfo};

use crate::rules::plan::DeadLetter;

/// Attribute added to forwarded messages and dead letters: the source message id.
pub const ATTR_MESSAGE_ID: &str = "veltrix.message_id";
/// Attribute added to forwarded messages and dead letters: the rule that decided.
pub const ATTR_RULE: &str = "veltrix.rule";
/// Dead-letter attribute: why.
pub const ATTR_REASON: &str = "veltrix.reason";
/// Dead-letter attribute: the error in detail.
pub const ATTR_ERROR: &str = "veltrix.error";
/// Dead-letter attribute of unmatched events: the nearest rules and their failing fields.
pub const ATTR_EXPLAIN: &str = "veltrix.explain";
/// Dead-letter attribute: delivery attempts made.
pub const ATTR_ATTEMPTS: &str = "veltrix.attempts";
/// Dead-letter attribute: `kind:name` of the source.
pub const ATTR_SOURCE: &str = "veltrix.source";
/// Dead-letter attribute: when, RFC 3339.
pub const ATTR_FAILED_AT: &str = "veltrix.failed_at";
/// Dead-letter attribute: the envelope attributes left out so the dead letter fits.
pub const ATTR_TRIMMED: &str = "veltrix.trimmed";
/// Longest `veltrix.error` value, in bytes.
pub const MAX_ERROR_ATTRIBUTE_BYTES: usize = 1024;

/// How much of the envelope a dead letter carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Envelope {
    /// Every envelope attribute.
    Full,
    /// Without `veltrix.error`, `veltrix.explain`, `veltrix.source` and `veltrix.failed_at`.
    Trimmed,
    /// `veltrix.reason` alone (and `veltrix.trimmed`).
    Minimal,
}

impl Envelope {
    /// The next smaller envelope, if there is one.
    pub fn smaller(self) -> Option<Envelope> {
        match self {
            Envelope::Full => Some(Envelope::Trimmed),
            Envelope::Trimmed => Some(Envelope::Minimal),
            Envelope::Minimal => None,
        }
    }

    /// The envelope attributes this level leaves out.
    pub fn left_out(self) -> &'static [&'static str] {
        match self {
            Envelope::Full => &[],
            Envelope::Trimmed => &[ATTR_ERROR, ATTR_EXPLAIN, ATTR_SOURCE, ATTR_FAILED_AT],
            Envelope::Minimal => &[
                ATTR_ERROR,
                ATTR_EXPLAIN,
                ATTR_SOURCE,
                ATTR_FAILED_AT,
                ATTR_RULE,
                ATTR_ATTEMPTS,
                ATTR_MESSAGE_ID,
            ],
        }
    }
}

/// The dead letter of `d`: its body and attributes unchanged, plus the envelope at `level`.
pub fn dead_letter_message(source: &SourceInfo, d: &Delivery, dl: &DeadLetter, level: Envelope) -> OutboundMessage {
    let mut attributes = d.attributes.clone();
    let mut envelope: Vec<(&str, String)> = vec![(ATTR_REASON, dl.reason.to_string())];
    if let Some(rule) = &dl.rule {
        envelope.push((ATTR_RULE, rule.clone()));
    }
    envelope.push((ATTR_ERROR, truncate(&dl.error, MAX_ERROR_ATTRIBUTE_BYTES)));
    if let Some(explain) = &dl.explain {
        // Already bounded by `rules::MAX_EXPLAIN_BYTES`.
        envelope.push((ATTR_EXPLAIN, explain.clone()));
    }
    envelope.push((ATTR_ATTEMPTS, d.delivery_attempt.to_string()));
    envelope.push((ATTR_SOURCE, format!("{}:{}", source.kind, source.name)));
    envelope.push((ATTR_MESSAGE_ID, d.id.clone()));
    envelope.push((
        ATTR_FAILED_AT,
        humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
    ));
    let left_out = level.left_out();
    let mut dropped = Vec::new();
    for (name, value) in envelope {
        if left_out.contains(&name) {
            dropped.push(name);
        } else {
            attributes.insert(name, value);
        }
    }
    if !left_out.is_empty() {
        attributes.insert(ATTR_TRIMMED, dropped.join(","));
    }
    OutboundMessage {
        body: d.body.clone(),
        attributes,
        ordering_key: d.ordering_key.clone(),
        dedup_id: Some(format!("{}:dead-letter", d.id)),
    }
}

/// At most `max` bytes of `s`, cut on a character boundary, with `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::plan::Reason;
    use bytes::Bytes;
    use veltrix_queue::AckToken;

    fn delivery() -> Delivery {
        Delivery {
            id: "m-1".into(),
            body: Bytes::from_static(b"{}"),
            attributes: [("tenant", "t-1")].into_iter().collect(),
            ordering_key: Some("g".into()),
            delivery_attempt: 2,
            published_at: None,
            token: AckToken::new(1u8),
        }
    }

    fn dl() -> DeadLetter {
        DeadLetter {
            explain: None,
            reason: Reason::Unmatched,
            rule: Some("r".into()),
            error: "é".repeat(1000),
        }
    }

    fn info() -> SourceInfo {
        SourceInfo {
            kind: "sqs",
            name: "q".into(),
        }
    }

    #[test]
    fn the_full_envelope_keeps_everything_and_adds_the_reason() {
        let m = dead_letter_message(&info(), &delivery(), &dl(), Envelope::Full);
        assert_eq!(m.attributes["tenant"], "t-1");
        assert_eq!(m.attributes[ATTR_REASON], "unmatched");
        assert_eq!(m.attributes[ATTR_ATTEMPTS], "2");
        assert!(m.attributes[ATTR_ERROR].value_len() <= MAX_ERROR_ATTRIBUTE_BYTES + "…".len());
        assert!(!m.attributes.contains_key(ATTR_TRIMMED));
        assert_eq!(m.ordering_key.as_deref(), Some("g"));
    }

    #[test]
    fn smaller_envelopes_say_what_they_left_out_and_keep_the_message() {
        let m = dead_letter_message(&info(), &delivery(), &dl(), Envelope::Trimmed);
        assert!(!m.attributes.contains_key(ATTR_ERROR));
        assert_eq!(m.attributes[ATTR_MESSAGE_ID], "m-1");
        assert_eq!(
            m.attributes[ATTR_TRIMMED],
            "veltrix.error,veltrix.source,veltrix.failed_at"
        );
        let explained = DeadLetter {
            explain: Some("nearest: r (a: wanted equals 1, found missing)".into()),
            ..dl()
        };
        let full = dead_letter_message(&info(), &delivery(), &explained, Envelope::Full);
        assert_eq!(full.attributes[ATTR_EXPLAIN], explained.explain.as_deref().unwrap());
        let m = dead_letter_message(&info(), &delivery(), &explained, Envelope::Trimmed);
        assert_eq!(
            m.attributes[ATTR_TRIMMED],
            "veltrix.error,veltrix.explain,veltrix.source,veltrix.failed_at"
        );
        let m = dead_letter_message(&info(), &delivery(), &dl(), Envelope::Minimal);
        assert_eq!(
            m.attributes.keys().map(String::as_str).collect::<Vec<_>>(),
            ["tenant", ATTR_REASON, ATTR_TRIMMED]
        );
        assert_eq!(Envelope::Minimal.smaller(), None);
        assert_eq!(&m.body[..], b"{}");
    }
}
