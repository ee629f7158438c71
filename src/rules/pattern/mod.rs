//! EventBridge event patterns with the semantics of aws/event-ruler, compiled once and matched
//! against many events.
//!
//! ```text
//!  patterns ──compile──> subpatterns (one per $or alternative) ──index──> PatternSet
//!                         (validate, expand $or,                          (anchor per subpattern:
//!                          sort fields by path)                            hash / tries / intervals)
//!
//!  event ──flatten (pattern paths only)──> leaves ──probe anchors──> candidates ──verify──> ids
//!                                                                     (array-consistent)
//! ```
//!
//! ```
//! use serde_json::json;
//! use veltrix::rules::pattern::PatternSet;
//!
//! let large = json!({"body": {"type": ["order.created"], "amount": [{"numeric": [">", 1000]}]}});
//! let set = PatternSet::compile([("large-orders", &large)]).unwrap();
//! let mut out = Vec::new();
//! set.matches(&json!({"body": {"type": "order.created", "amount": 1500}}), &mut out);
//! assert_eq!(out, vec![0]);
//! ```
//!
//! Modules (one concept each): `compile` validates pattern structure and expands `$or`
//! ([`PatternError`]); `parse_ops` validates value lists; `operators`, `text` and `ip` test leaf
//! values; `flatten` turns events into leaves; `lookup` and `anchors` find candidates; `verify`
//! decides array-consistent matches; `index` holds [`PatternSet`]; `decode` parses only what
//! patterns read and `raw` goes from bytes straight to leaves; `explain` tells humans why.

mod anchors;
mod compile;
mod decode;
mod explain;
mod flatten;
mod index;
mod ip;
mod lookup;
mod operators;
mod parse_ops;
mod raw;
mod text;
mod verify;

pub use anchors::MAX_FILTERS;
pub use compile::{PatternError, MAX_DEPTH, MAX_FIELDS, MAX_PATH_PARTS, MAX_SUBPATTERNS};
pub use explain::{Explanation, FieldExplanation, FoundKind, MAX_TRIED};
pub use index::{MatchScratch, PatternSet, MAX_TOTAL_SUBPATTERNS, NEAREST_WORK_LIMIT};
