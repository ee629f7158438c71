//! [`PatternSet`]: the compiled patterns, and matching an event against all of them.
//!
//! Matching: flatten the event along pattern paths ([`crate::rules::pattern::flatten`]), probe the index with
//! each leaf to find candidate subpatterns ([`crate::rules::pattern::anchors`]), then verify each candidate fully
//! ([`crate::rules::pattern::verify`]), skipping patterns already matched. All per-event buffers live in a
//! [`MatchScratch`] that is reused from event to event.

use std::cell::RefCell;

use serde_json::Value;

use crate::rules::pattern::anchors::Anchors;
use crate::rules::pattern::compile::{compile_pattern, PatternError, SubPatternDef};
use crate::rules::pattern::explain::{explain, failing_fields, Explanation};
use crate::rules::pattern::flatten::{flatten, Flat, PathTrie, PathTrieBuilder};
use crate::rules::pattern::raw::{Leaves, Sink};
use crate::rules::pattern::verify::{verify, FieldRt, Sub};

/// A compiled, immutable set of patterns. Cheap to share between threads (`Send + Sync`).
pub struct PatternSet {
    names: Vec<String>,
    /// Subpatterns of pattern `i` are `subs[rule_subs[i].0 .. rule_subs[i].1]`.
    rule_subs: Vec<(u32, u32)>,
    subs: Vec<Sub>,
    trie: PathTrie,
    anchors: Anchors,
}

/// All patterns together may expand to at most this many subpatterns (postings pack the
/// subpattern id into 26 bits).
pub const MAX_TOTAL_SUBPATTERNS: usize = 1 << 26;

/// Most leaves × subpatterns [`PatternSet::nearest`] ranks; beyond it, it ranks nothing.
pub const NEAREST_WORK_LIMIT: usize = 1 << 20;

/// Reusable per-thread buffers for [`PatternSet::matches_with`]. [`PatternSet::matches`] keeps
/// one per thread internally; hold your own to control where the memory lives.
#[derive(Default)]
pub struct MatchScratch {
    flat: Flat,
    vals: Vec<&'static Value>,
    /// Scalars decoded straight from bytes by [`PatternSet::matches_json`].
    owned: Vec<Value>,
    stack: Vec<(u32, &'static Value, u32)>,
    seen_sub: Vec<u32>,
    fired: Vec<u64>,
    seen_rule: Vec<u32>,
    epoch: u32,
    touched: Vec<u32>,
    cands: Vec<u32>,
    matched: Vec<usize>,
    buf: Vec<u8>,
}

impl MatchScratch {
    /// How many subpatterns the last event had to verify (for benchmarks and tuning).
    pub fn last_candidates(&self) -> usize {
        self.cands.len()
    }

    /// How many leaves the last event had at pattern paths (for benchmarks and tuning).
    pub fn last_leaves(&self) -> usize {
        self.flat.leaves.len()
    }

    /// Ready the buffers for one event against `set`.
    fn begin(&mut self, set: &PatternSet) {
        if self.epoch == u32::MAX {
            self.seen_sub.iter_mut().for_each(|e| *e = 0);
            self.seen_rule.iter_mut().for_each(|e| *e = 0);
            self.epoch = 0;
        }
        self.epoch += 1;
        if self.seen_sub.len() < set.subs.len() {
            self.seen_sub.resize(set.subs.len(), 0);
            self.fired.resize(set.subs.len(), 0);
        }
        if self.seen_rule.len() < set.names.len() {
            self.seen_rule.resize(set.names.len(), 0);
        }
        self.flat.reset(&set.trie);
        self.touched.clear();
        self.cands.clear();
        self.matched.clear();
    }

    /// Do not keep the memory of one huge event for the rest of the thread's life.
    fn trim(&mut self) {
        const KEEP: usize = 1 << 16;
        if self.vals.capacity() > KEEP || self.stack.capacity() > KEEP || self.owned.capacity() > KEEP {
            self.vals.shrink_to(KEEP / 16);
            self.stack.shrink_to(KEEP / 16);
            self.owned.shrink_to(KEEP / 16);
        }
        self.flat.trim(KEEP);
    }
}

thread_local! {
    static SCRATCH: RefCell<MatchScratch> = RefCell::new(MatchScratch::default());
}

/// Reuse a vector's allocation for a different lifetime of the same element type (the in-place
/// `collect` of an emptied vector keeps its buffer).
fn recycle<T, U>(mut v: Vec<T>) -> Vec<U> {
    v.clear();
    v.into_iter().map(|_| unreachable!("vector is empty")).collect()
}

impl PatternSet {
    /// Compile patterns in rule order; index `i` of the iterator is pattern id `i`.
    ///
    /// Each item is `(rule name, pattern)`. Fails on the first invalid pattern, naming the rule,
    /// the location in the pattern and the reason.
    pub fn compile<'a, I: IntoIterator<Item = (&'a str, &'a Value)>>(patterns: I) -> Result<PatternSet, PatternError> {
        let mut names = Vec::new();
        let mut defs: Vec<Vec<SubPatternDef>> = Vec::new();
        let mut total = 0usize;
        for (name, pattern) in patterns {
            let d = compile_pattern(name, pattern)?;
            total += d.len();
            if total > MAX_TOTAL_SUBPATTERNS {
                return Err(PatternError {
                    rule: name.to_string(),
                    path: String::new(),
                    reason: format!(
                        "the patterns expand to more than {MAX_TOTAL_SUBPATTERNS} alternatives in total (through `$or`); simplify them"
                    ),
                });
            }
            defs.push(d);
            names.push(name.to_string());
        }
        let mut tb = PathTrieBuilder::new();
        let mut subs = Vec::new();
        let mut rule_subs = Vec::new();
        for (rule, ds) in defs.into_iter().enumerate() {
            let start = subs.len() as u32;
            for d in ds {
                subs.push(runtime_sub(rule as u32, d, &mut tb));
            }
            rule_subs.push((start, subs.len() as u32));
        }
        let trie = tb.build();
        let anchors = Anchors::build(&subs, trie.len());
        Ok(PatternSet {
            names,
            rule_subs,
            subs,
            trie,
            anchors,
        })
    }

    /// Number of patterns.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the set has no patterns.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Name of pattern `id` (as given to [`PatternSet::compile`]).
    pub fn name(&self, id: usize) -> &str {
        &self.names[id]
    }

    /// Append the ids of matching patterns to `out`, ascending, each once.
    pub fn matches(&self, event: &Value, out: &mut Vec<usize>) {
        SCRATCH.with(|s| match s.try_borrow_mut() {
            Ok(mut scratch) => self.matches_with(event, &mut scratch, out),
            Err(_) => self.matches_with(event, &mut MatchScratch::default(), out),
        })
    }

    /// [`PatternSet::matches`] with caller-provided scratch buffers.
    pub fn matches_with(&self, event: &Value, scratch: &mut MatchScratch, out: &mut Vec<usize>) {
        scratch.begin(self);
        let mut vs: Vec<&Value> = recycle(std::mem::take(&mut scratch.vals));
        let mut st: Vec<(u32, &Value, u32)> = recycle(std::mem::take(&mut scratch.stack));
        flatten(&self.trie, event, &mut scratch.flat, &mut vs, &mut st);
        self.decide(scratch, &vs, &|| event, out);
        scratch.vals = recycle(vs);
        scratch.stack = recycle(st);
        scratch.trim();
    }

    /// Matches the document whose top-level member `field` is the JSON text `json` and whose
    /// other members are those of `rest` (an object without `field`, or `null` for none), and
    /// appends the ids of matching patterns to `out` as [`PatternSet::matches`] does for the
    /// parsed document. This is the worker's hot path: `json` is decoded straight into the
    /// leaves patterns test (see [`crate::rules::pattern::raw`]), with no `Value` tree, unless
    /// a subpattern needs the tree to decide array consistency. JSON that breaks the grammar is an
    /// error (as for [`PatternSet::decode_pruned`], members no pattern reads are checked for
    /// syntax only), and then nothing is appended.
    pub fn matches_json(&self, field: &str, json: &[u8], rest: &Value, out: &mut Vec<usize>) -> serde_json::Result<()> {
        SCRATCH.with(|s| match s.try_borrow_mut() {
            Ok(mut scratch) => self.matches_json_with(field, json, rest, &mut scratch, out),
            Err(_) => self.matches_json_with(field, json, rest, &mut MatchScratch::default(), out),
        })
    }

    /// [`PatternSet::matches_json`] with caller-provided scratch buffers.
    pub fn matches_json_with(
        &self,
        field: &str,
        json: &[u8],
        rest: &Value,
        scratch: &mut MatchScratch,
        out: &mut Vec<usize>,
    ) -> serde_json::Result<()> {
        scratch.begin(self);
        let mut owned = std::mem::take(&mut scratch.owned);
        owned.clear();
        if let Err(e) = self.decode_leaves(field, json, &mut scratch.flat, &mut owned) {
            owned.clear();
            scratch.owned = owned;
            return Err(e);
        }
        let mut vs: Vec<&Value> = recycle(std::mem::take(&mut scratch.vals));
        vs.extend(owned.iter());
        let mut st: Vec<(u32, &Value, u32)> = recycle(std::mem::take(&mut scratch.stack));
        flatten(&self.trie, rest, &mut scratch.flat, &mut vs, &mut st);
        let tree = std::cell::OnceCell::new();
        let event = || tree.get_or_init(|| self.document(field, json, rest));
        self.decide(scratch, &vs, &event, out);
        scratch.vals = recycle(vs);
        scratch.stack = recycle(st);
        owned.clear();
        scratch.owned = owned;
        scratch.trim();
        Ok(())
    }

    /// Decodes `json` (the top-level member `field`) into leaves at pattern paths.
    fn decode_leaves(
        &self,
        field: &str,
        json: &[u8],
        flat: &mut Flat,
        vals: &mut Vec<Value>,
    ) -> serde_json::Result<()> {
        let mut de = serde_json::Deserializer::from_slice(json);
        match self.trie.child(0, field) {
            Some(node) => {
                let mut sink = Sink { flat, vals };
                let leaves = Leaves {
                    trie: &self.trie,
                    node,
                    ctx: 0,
                    sink: &mut sink,
                };
                serde::de::DeserializeSeed::deserialize(leaves, &mut de)?;
            }
            None => {
                serde::de::Deserialize::deserialize(&mut de).map(|_: serde::de::IgnoredAny| ())?;
            }
        }
        de.end()
    }

    /// The (pruned) document [`PatternSet::matches_json`] matches, as a tree.
    fn document(&self, field: &str, json: &[u8], rest: &Value) -> Value {
        // `json` has already been decoded once without error by the same parser.
        let body = self.decode_pruned(field, json).unwrap_or(Value::Null);
        let mut document = match rest {
            Value::Object(members) => members.clone(),
            _ => serde_json::Map::new(),
        };
        document.insert(field.to_string(), body);
        Value::Object(document)
    }

    /// Probe the index with the event's leaves, verify the candidates, and append the matching
    /// pattern ids to `out` (ascending, each once).
    fn decide<'e>(
        &self,
        scratch: &mut MatchScratch,
        vs: &[&Value],
        event: &dyn Fn() -> &'e Value,
        out: &mut Vec<usize>,
    ) {
        let MatchScratch {
            flat,
            seen_sub,
            fired,
            seen_rule,
            epoch,
            touched,
            cands,
            matched,
            buf,
            ..
        } = scratch;
        let ep = *epoch;
        // Probe: set a bit per (subpattern, filter field) that fired.
        let mut emit = |postings: &[u32]| {
            for &p in postings {
                let sub = (p >> 6) as usize;
                let bit = 1u64 << (p & 63);
                if seen_sub[sub] != ep {
                    seen_sub[sub] = ep;
                    fired[sub] = bit;
                    touched.push(sub as u32);
                } else {
                    fired[sub] |= bit;
                }
            }
        };
        for (i, leaf) in flat.leaves.iter().enumerate() {
            self.anchors.probe(leaf.node, vs[i], buf, &mut emit);
        }
        cands.extend_from_slice(&self.anchors.always);
        let required = &self.anchors.required;
        cands.extend(
            touched
                .iter()
                .copied()
                .filter(|&s| fired[s as usize] == required[s as usize]),
        );
        for &c in cands.iter() {
            let sub = &self.subs[c as usize];
            let r = sub.rule as usize;
            if seen_rule[r] != ep && verify(sub, flat, vs, event) {
                seen_rule[r] = ep;
                matched.push(r);
            }
        }
        matched.sort_unstable();
        out.extend_from_slice(matched);
    }

    /// True when some pattern looks at top-level field `field`.
    pub fn uses_field(&self, field: &str) -> bool {
        self.trie.child(0, field).is_some()
    }

    /// Parses `json`, which patterns see under the top-level field `field` (the worker's
    /// `body`), keeping only the members some pattern can look at. Matching the result placed
    /// under `field` gives exactly the matches of the fully parsed document; invalid JSON is an
    /// error exactly when a full parse fails.
    pub fn decode_pruned(&self, field: &str, json: &[u8]) -> serde_json::Result<Value> {
        let mut de = serde_json::Deserializer::from_slice(json);
        let value = match self.trie.child(0, field) {
            Some(node) => {
                serde::de::DeserializeSeed::deserialize(super::decode::Pruned { trie: &self.trie, node }, &mut de)?
            }
            None => {
                serde::de::Deserialize::deserialize(&mut de).map(|_: serde::de::IgnoredAny| ())?;
                Value::Null
            }
        };
        de.end()?;
        Ok(value)
    }

    /// Slow path for humans: why pattern `id` did or did not match `event`.
    ///
    /// # Panics
    /// If `id >= self.len()`.
    pub fn explain(&self, id: usize, event: &Value) -> Explanation {
        let (a, b) = self.rule_subs[id];
        let mut flat = Flat::default();
        flat.reset(&self.trie);
        let mut vals = Vec::new();
        flatten(&self.trie, event, &mut flat, &mut vals, &mut Vec::new());
        explain(&self.subs[a as usize..b as usize], &flat, &vals, event)
    }

    /// Pattern `id` in short form for people: its fields joined by `and`, `$or` alternatives
    /// in parentheses joined by `or`, e.g. `body.type equals "order.created" and body.amount
    /// numeric [">", 1000]`.
    ///
    /// # Panics
    /// If `id >= self.len()`.
    pub fn describe(&self, id: usize) -> String {
        let (a, b) = self.rule_subs[id];
        let subs = &self.subs[a as usize..b as usize];
        let conjunction = |s: &Sub| -> String {
            if s.fields.is_empty() {
                return "any event".into();
            }
            let fields: Vec<String> = s
                .fields
                .iter()
                .map(|f| format!("{} {}", f.path, f.descs.join(" or ")))
                .collect();
            fields.join(" and ")
        };
        match subs {
            [one] => conjunction(one),
            many => many
                .iter()
                .map(|s| format!("({})", conjunction(s)))
                .collect::<Vec<_>>()
                .join(" or "),
        }
    }

    /// For humans, when `event` matched no pattern: the (at most `k`) patterns with the fewest
    /// failing fields, nearest first (ties in id order), each with its explanation. The event
    /// is flattened once for all patterns. Empty when ranking would cost more than
    /// [`NEAREST_WORK_LIMIT`] (leaves at pattern paths × patterns): a huge event must not buy
    /// a long explanation with every message.
    pub fn nearest(&self, event: &Value, k: usize) -> Vec<(usize, Explanation)> {
        let mut flat = Flat::default();
        flat.reset(&self.trie);
        let mut vals = Vec::new();
        flatten(&self.trie, event, &mut flat, &mut vals, &mut Vec::new());
        if flat.leaves.len().max(1).saturating_mul(self.subs.len()) > NEAREST_WORK_LIMIT {
            return Vec::new();
        }
        let subs_of = |id: usize| {
            let (a, b) = self.rule_subs[id];
            &self.subs[a as usize..b as usize]
        };
        let mut ranked: Vec<(usize, usize)> = (0..self.len())
            .map(|id| (failing_fields(subs_of(id), &flat, &vals, event), id))
            .filter(|&(failing, _)| failing > 0)
            .collect();
        ranked.sort_unstable();
        ranked
            .into_iter()
            .take(k)
            .map(|(_, id)| (id, explain(subs_of(id), &flat, &vals, event)))
            .collect()
    }
}

/// Build the runtime form of a subpattern, registering its paths in the trie.
fn runtime_sub(rule: u32, d: SubPatternDef, tb: &mut PathTrieBuilder) -> Sub {
    let mut positive = 0u64;
    let mut fields = Vec::with_capacity(d.fields.len());
    for (i, f) in d.fields.into_iter().enumerate() {
        let node = tb.add(&f.path);
        let before = positive;
        if !f.absent {
            positive |= 1 << i;
        }
        fields.push(FieldRt {
            node,
            absent: f.absent,
            matchers: f.matchers.into(),
            descs: f.descs.into(),
            before,
            segs: FieldRt::segments_of(&f.path),
            path: f.path.into(),
        });
    }
    Sub {
        rule,
        fields: fields.into(),
        positive,
        branch: d.branch.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(patterns: &[Value]) -> PatternSet {
        let names: Vec<String> = (0..patterns.len()).map(|i| format!("r{i}")).collect();
        PatternSet::compile(names.iter().map(String::as_str).zip(patterns.iter())).unwrap()
    }

    fn hits(s: &PatternSet, ev: Value) -> Vec<usize> {
        let mut out = Vec::new();
        s.matches(&ev, &mut out);
        out
    }

    #[test]
    fn recycle_keeps_capacity() {
        let v: Vec<&'static Value> = Vec::with_capacity(64);
        let w: Vec<&Value> = recycle(v);
        assert!(w.capacity() >= 64);
    }

    #[test]
    fn every_anchor_kind_finds_its_patterns() {
        let s = set(&[
            json!({"a": ["x"]}),
            json!({"a": [{"prefix": "pre"}]}),
            json!({"a": [{"suffix": "fix"}]}),
            json!({"a": [{"equals-ignore-case": "HeLLo"}]}),
            json!({"a": [{"prefix": {"equals-ignore-case": "UP"}}]}),
            json!({"a": [{"suffix": {"equals-ignore-case": "END"}}]}),
            json!({"a": [{"wildcard": "w*d"}]}),
            json!({"n": [{"numeric": [">", 10, "<=", 20]}]}),
            json!({"n": [15]}),
            json!({"ip": [{"cidr": "10.0.0.0/8"}]}),
            json!({"ip": ["2001:db8::1"]}),
            json!({"a": [{"anything-but": "x"}]}),
            json!({"z": [{"exists": false}]}),
            json!({"b": [true], "c": [null]}),
        ]);
        assert_eq!(hits(&s, json!({"a": "x"})), vec![0, 12]);
        assert_eq!(hits(&s, json!({"a": "prefix"})), vec![1, 2, 11, 12]);
        assert_eq!(hits(&s, json!({"a": "hello"})), vec![3, 11, 12]);
        assert_eq!(hits(&s, json!({"a": "upper-END"})), vec![4, 5, 11, 12]);
        assert_eq!(hits(&s, json!({"a": "wood"})), vec![6, 11, 12]);
        assert_eq!(hits(&s, json!({"n": 15.0})), vec![7, 8, 12]);
        assert_eq!(hits(&s, json!({"n": 10})), vec![12]);
        assert_eq!(hits(&s, json!({"ip": "10.1.2.3"})), vec![9, 12]);
        assert_eq!(hits(&s, json!({"ip": "2001:DB8:0::1"})), vec![10, 12]);
        assert_eq!(hits(&s, json!({"z": 1, "b": true, "c": null})), vec![13]);
    }

    #[test]
    fn or_branches_report_the_pattern_once() {
        let s = set(&[json!({"$or": [{"a": [1]}, {"b": [2]}]}), json!({"c": [3]})]);
        assert_eq!(hits(&s, json!({"a": 1, "b": 2, "c": 3})), vec![0, 1]);
        assert_eq!(hits(&s, json!({"b": 2})), vec![0]);
    }

    #[test]
    fn appends_to_existing_output() {
        let s = set(&[json!({"a": [1]})]);
        let mut out = vec![99];
        s.matches(&json!({"a": 1}), &mut out);
        assert_eq!(out, vec![99, 0]);
    }

    #[test]
    fn explicit_scratch_and_many_events() {
        let s = set(&[json!({"a": [1]}), json!({"a": [2]})]);
        let mut scratch = MatchScratch::default();
        for i in 0..1000 {
            let mut out = Vec::new();
            s.matches_with(&json!({"a": i % 3}), &mut scratch, &mut out);
            let want: Vec<usize> = match i % 3 {
                1 => vec![0],
                2 => vec![1],
                _ => vec![],
            };
            assert_eq!(out, want);
        }
    }

    /// The three verification strategies must agree wherever each applies.
    #[test]
    fn verification_strategies_agree() {
        use crate::rules::pattern::verify::{exact, fast, small};
        let mut seed = 0x0123_4567_89AB_CDEFu64;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        fn gen(rnd: &mut impl FnMut(u64) -> u64, depth: u32) -> Value {
            match if depth > 3 { 0 } else { rnd(6) } {
                0 | 1 => json!(rnd(3)),
                2 | 3 => {
                    let mut m = serde_json::Map::new();
                    for _ in 0..rnd(4) {
                        let k = ["b", "c", "d", "b.c"][rnd(4) as usize];
                        m.insert(k.to_string(), gen(rnd, depth + 1));
                    }
                    Value::Object(m)
                }
                _ => Value::Array((0..rnd(4)).map(|_| gen(rnd, depth + 1)).collect()),
            }
        }
        let mut checked = [0usize; 3];
        for _ in 0..4000 {
            let mut fields = serde_json::Map::new();
            for k in ["b", "c", "d", "b.c"] {
                if rnd(2) == 0 {
                    let item = match rnd(4) {
                        0 => json!({"exists": false}),
                        1 => json!({"exists": true}),
                        _ => json!(rnd(3)),
                    };
                    fields.insert(k.to_string(), json!([item]));
                }
            }
            if fields.is_empty() || fields.contains_key("b.c") && fields.contains_key("b") && rnd(2) == 0 {
                continue;
            }
            let p = json!({ "a": Value::Object(fields) });
            let Ok(set) = PatternSet::compile([("p", &p)]) else {
                continue;
            };
            let ev = json!({ "a": gen(&mut rnd, 0), "x": gen(&mut rnd, 2) });
            let mut flat = Flat::default();
            flat.reset(&set.trie);
            let mut vals = Vec::new();
            flatten(&set.trie, &ev, &mut flat, &mut vals, &mut Vec::new());
            for sub in &set.subs {
                let want = exact(sub, &ev);
                if let Some(f) = fast(sub, &flat, &vals) {
                    assert_eq!(f, want, "fast vs exact\npattern {p}\nevent {ev}");
                    checked[0] += 1;
                }
                if let Some(s) = small(sub, &flat, &vals) {
                    assert_eq!(s, want, "small vs exact\npattern {p}\nevent {ev}");
                    checked[1] += 1;
                }
                checked[2] += 1;
            }
        }
        assert!(checked[0] > 1000 && checked[1] > 1000, "{checked:?}");
    }

    fn hits_json(s: &PatternSet, body: &Value, rest: Value) -> Vec<usize> {
        let mut out = Vec::new();
        s.matches_json("body", body.to_string().as_bytes(), &rest, &mut out)
            .unwrap();
        out
    }

    #[test]
    fn matching_from_bytes_builds_the_tree_when_array_consistency_needs_it() {
        // 100 × 100 leaf pairs in one array: too many for the leaf search, so the tree walk
        // decides, on a tree the matcher builds from the bytes on demand.
        let elems: Vec<Value> = (0..100).map(|i| json!({"b": i, "c": i})).collect();
        let body = json!({ "a": elems });
        let s = set(&[
            json!({"body": {"a": {"b": [5], "c": [5]}}}),
            json!({"body": {"a": {"b": [5], "c": [6]}}}),
            json!({"body": {"a": {"b": [7]}}, "attributes": {"k": ["v"]}}),
        ]);
        assert_eq!(hits_json(&s, &body, json!({"attributes": {"k": "v"}})), vec![0, 2]);
        assert_eq!(hits_json(&s, &body, json!({})), vec![0]);
        assert_eq!(hits(&s, json!({"body": body, "attributes": {"k": "v"}})), vec![0, 2]);
    }

    #[test]
    fn matching_from_bytes_rejects_what_a_full_parse_rejects() {
        let s = set(&[json!({"body": {"a": [1]}})]);
        for bad in [&b"{\"a\": 1"[..], b"{\"b\": [1,]}", b"{\"a\": 1} x", b""] {
            let mut out = vec![];
            let from_bytes = s.matches_json("body", bad, &json!({}), &mut out);
            let full = serde_json::from_slice::<Value>(bad);
            assert_eq!(from_bytes.is_err(), full.is_err(), "{}", String::from_utf8_lossy(bad));
            assert!(out.is_empty());
        }
        // A number beyond f64 in a member no pattern reads is valid JSON; it is skipped (only
        // a full parse into a tree refuses it).
        let mut out = vec![];
        s.matches_json("body", b"{\"b\": 1e999, \"a\": 1}", &json!({}), &mut out)
            .unwrap();
        assert_eq!(out, vec![0]);
        // Invalid UTF-8 in a member no pattern reads is skipped, as the pruned decode skips it.
        let mut out = vec![];
        s.matches_json("body", b"{\"z\": \"\xff\", \"a\": 1}", &json!({}), &mut out)
            .unwrap();
        assert_eq!(out, vec![0]);
    }

    #[test]
    fn send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<PatternSet>();
    }
}
