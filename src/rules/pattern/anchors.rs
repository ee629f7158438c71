//! The index that finds candidate subpatterns for an event.
//!
//! Each subpattern registers up to [`MAX_FILTERS`] of its most selective positive fields as
//! *filters*: the field's operators turned into index entries (exact values in a hash table,
//! prefixes and suffixes in byte tries, numeric and CIDR ranges in interval indexes). A posting
//! is `(subpattern, field)`. Probing the index with the event's leaves sets, per subpattern, a bit
//! for each filter field that fired; a subpattern is a candidate only when all its filters fired
//! (the counting method for conjunctions). How many filters a subpattern registers is a cost
//! estimate: another filter is added while the verifications it is expected to save outweigh the
//! postings it adds. Fields whose operators cannot be indexed (e.g. `anything-but`,
//! `exists: true`) filter by mere presence of their path, and only when the subpattern has
//! nothing better. Subpatterns with only `exists: false` fields are candidates for every event.
//!
//! Index entries are supersets: a filter may fire for a leaf its field then rejects (e.g. a
//! wildcard indexed by its literal prefix); verification decides.

use std::collections::HashMap;

use serde_json::Value;

use crate::rules::pattern::flatten::NONE;
use crate::rules::pattern::ip::{parse_ip, Family};
use crate::rules::pattern::lookup::{num_bits, Bound, ByteTrie, ExactTable, IntervalIndex, KeyOwned, KeyRef};
use crate::rules::pattern::operators::{number_of, Matcher};
use crate::rules::pattern::verify::Sub;

/// A subpattern registers at most this many fields in the index.
pub const MAX_FILTERS: usize = 3;

/// Pack a posting: subpattern id and field index (< 64).
#[inline]
fn posting(sub: u32, field: usize) -> u32 {
    debug_assert!(sub < (1 << 26) && field < 64);
    (sub << 6) | field as u32
}

/// The index entries of one anchor path.
#[derive(Default)]
struct PathAnchors {
    exact: bool,
    exact_ip: bool,
    exact_ic: bool,
    prefix: Option<ByteTrie>,
    prefix_ic: Option<ByteTrie>,
    suffix: Option<ByteTrie>,
    suffix_ic: Option<ByteTrie>,
    numeric: Option<IntervalIndex<f64>>,
    ip4: Option<IntervalIndex<u128>>,
    ip6: Option<IntervalIndex<u128>>,
    presence: Vec<u32>,
}

/// The index over all subpatterns' filter fields.
pub(crate) struct Anchors {
    /// Per trie node: index into `paths`, or `NONE`.
    node_anchor: Vec<u32>,
    paths: Vec<PathAnchors>,
    exact: ExactTable,
    /// Per subpattern: bit mask of its filter fields (all must fire).
    pub required: Vec<u64>,
    /// Subpatterns without positive fields: candidates for every event.
    pub always: Vec<u32>,
}

/// An index entry derived from one matcher.
enum Entry {
    Key(KeyOwned),
    Prefix(Box<[u8]>),
    PrefixIc(Box<[u8]>),
    Suffix(Box<[u8]>),
    SuffixIc(Box<[u8]>),
    Num(Bound<f64>, Bound<f64>),
    Ip(Family, u128, u128),
}

/// Index entries that together catch every leaf `m` accepts, or `None` if `m` cannot be indexed.
fn entries_of(m: &Matcher) -> Option<Entry> {
    Some(match m {
        Matcher::ExactString(s) => Entry::Key(KeyOwned::Str(s.clone())),
        Matcher::ExactIp(ip) => Entry::Key(KeyOwned::Ip(ip.family, ip.value)),
        Matcher::ExactNumber(x) => Entry::Key(KeyOwned::Num(num_bits(*x))),
        Matcher::ExactBool(b) => Entry::Key(KeyOwned::Bool(*b)),
        Matcher::ExactNull => Entry::Key(KeyOwned::Null),
        Matcher::Prefix(p) => Entry::Prefix(p.as_bytes().into()),
        Matcher::Suffix(p) => Entry::Suffix(p.as_bytes().into()),
        Matcher::PrefixIc(f) => Entry::PrefixIc(f.ascii_lower()?.as_bytes().into()),
        Matcher::SuffixIc(f) => Entry::SuffixIc(f.ascii_lower()?.as_bytes().into()),
        Matcher::EqualsIc(f) => Entry::Key(KeyOwned::StrIc(f.ascii_lower()?.into())),
        Matcher::Wildcard(w) => {
            if w.is_literal() {
                Entry::Key(KeyOwned::Str(w.literal_prefix().into()))
            } else if !w.literal_prefix().is_empty() {
                Entry::Prefix(w.literal_prefix().as_bytes().into())
            } else if !w.literal_suffix().is_empty() {
                Entry::Suffix(w.literal_suffix().as_bytes().into())
            } else {
                return None;
            }
        }
        Matcher::Numeric(r) => Entry::Num(r.lo, r.hi),
        Matcher::Cidr(r) => Entry::Ip(r.family, r.lo, r.hi),
        Matcher::AnythingBut(_) | Matcher::Exists => return None,
    })
}

/// Rough probability that an event leaf at the field's path fires `e`. Exact values: one of the
/// distinct values patterns use at that path; prefixes by length; ranges are usually broad.
fn entry_fire_chance(e: &Entry, node: u32, distinct_keys: &HashMap<u32, u32>) -> f64 {
    match e {
        Entry::Key(_) => 1.0 / distinct_keys.get(&node).copied().unwrap_or(1).max(2) as f64,
        Entry::Prefix(p) | Entry::PrefixIc(p) | Entry::Suffix(p) | Entry::SuffixIc(p) => match p.len() {
            0 | 1 => 0.5,
            2 | 3 => 0.2,
            _ => 0.05,
        },
        Entry::Num(Some((a, true)), Some((b, true))) if a == b => 0.05,
        Entry::Num(..) => 0.5,
        Entry::Ip(..) => 0.1,
    }
}

/// Verifying a candidate costs about this many posting updates; a further filter field is worth
/// registering when the verifications it saves outweigh the postings it adds.
const VERIFY_PER_POSTING: f64 = 16.0;

impl Anchors {
    /// Choose each subpattern's filter fields and build the index over them.
    pub fn build(subs: &[Sub], trie_nodes: usize) -> Anchors {
        let mut a = Anchors {
            node_anchor: vec![NONE; trie_nodes],
            paths: Vec::new(),
            exact: ExactTable::default(),
            required: vec![0; subs.len()],
            always: Vec::new(),
        };
        // How many distinct exact values patterns use at each path (to estimate selectivity).
        let mut keys_seen: HashMap<(u32, KeyOwned), ()> = HashMap::new();
        for s in subs {
            for f in s.fields.iter().filter(|f| !f.absent) {
                for m in f.matchers.iter() {
                    if let Some(Entry::Key(k)) = entries_of(m) {
                        keys_seen.insert((f.node, k), ());
                    }
                }
            }
        }
        let mut distinct_keys: HashMap<u32, u32> = HashMap::new();
        for (node, _) in keys_seen.keys() {
            *distinct_keys.entry(*node).or_default() += 1;
        }
        let mut presence_freq: HashMap<u32, u64> = HashMap::new();
        type Builder = (
            PathAnchors,
            Vec<(Bound<f64>, Bound<f64>, u32)>,
            [Vec<(Bound<u128>, Bound<u128>, u32)>; 2],
        );
        let mut builders: HashMap<u32, Builder> = HashMap::new();
        for (sid, s) in subs.iter().enumerate() {
            let sid = sid as u32;
            // (fire chance, field index, entries) of each indexable positive field, rarest first.
            let mut indexable: Vec<(f64, usize, Vec<Entry>)> = Vec::new();
            let mut presence: Option<(u64, usize)> = None;
            for (fi, f) in s.fields.iter().enumerate().filter(|(_, f)| !f.absent) {
                match f.matchers.iter().map(entries_of).collect::<Option<Vec<Entry>>>() {
                    Some(es) => {
                        let p: f64 = es.iter().map(|e| entry_fire_chance(e, f.node, &distinct_keys)).sum();
                        indexable.push((p.min(1.0), fi, es));
                    }
                    None => {
                        let cost = presence_freq.get(&f.node).copied().unwrap_or(0);
                        if presence.is_none_or(|p| cost < p.0) {
                            presence = Some((cost, fi));
                        }
                    }
                }
            }
            indexable.sort_by(|a, b| a.0.total_cmp(&b.0));
            // Add filter fields while the verifications they save outweigh their postings.
            let mut take = 0;
            let mut pass = 1.0f64;
            for (p, _, _) in &indexable {
                if take == MAX_FILTERS || (take > 0 && *p >= pass * (1.0 - p) * VERIFY_PER_POSTING) {
                    break;
                }
                pass *= p;
                take += 1;
            }
            indexable.truncate(take);
            if indexable.is_empty() {
                match presence {
                    None => a.always.push(sid),
                    Some((_, fi)) => {
                        let node = s.fields[fi].node;
                        builders.entry(node).or_default().0.presence.push(posting(sid, fi));
                        *presence_freq.entry(node).or_default() += 1;
                        a.required[sid as usize] = 1 << fi;
                    }
                }
                continue;
            }
            for (_, fi, entries) in indexable {
                a.required[sid as usize] |= 1 << fi;
                let node = s.fields[fi].node;
                let p = posting(sid, fi);
                let (pa, nums, ips) = builders.entry(node).or_default();
                for e in entries {
                    match e {
                        Entry::Key(k) => {
                            match k {
                                KeyOwned::Ip(..) => pa.exact_ip = true,
                                KeyOwned::StrIc(_) => pa.exact_ic = true,
                                _ => pa.exact = true,
                            }
                            a.exact.insert(node, k, p);
                        }
                        Entry::Prefix(b) => pa
                            .prefix
                            .get_or_insert_with(Default::default)
                            .insert(b.iter().copied(), p),
                        Entry::PrefixIc(b) => pa
                            .prefix_ic
                            .get_or_insert_with(Default::default)
                            .insert(b.iter().copied(), p),
                        Entry::Suffix(b) => pa
                            .suffix
                            .get_or_insert_with(Default::default)
                            .insert(b.iter().rev().copied(), p),
                        Entry::SuffixIc(b) => pa
                            .suffix_ic
                            .get_or_insert_with(Default::default)
                            .insert(b.iter().rev().copied(), p),
                        Entry::Num(lo, hi) => nums.push((lo, hi, p)),
                        Entry::Ip(fam, lo, hi) => {
                            ips[(fam == Family::V6) as usize].push((Some((lo, true)), Some((hi, true)), p))
                        }
                    }
                }
            }
        }
        let mut nodes: Vec<u32> = builders.keys().copied().collect();
        nodes.sort_unstable();
        for node in nodes {
            let (mut pa, nums, [ip4, ip6]) = builders.remove(&node).expect("present");
            for t in [&mut pa.prefix, &mut pa.prefix_ic, &mut pa.suffix, &mut pa.suffix_ic]
                .into_iter()
                .flatten()
            {
                t.finish();
            }
            if !nums.is_empty() {
                pa.numeric = Some(IntervalIndex::build(&nums));
            }
            if !ip4.is_empty() {
                pa.ip4 = Some(IntervalIndex::build(&ip4));
            }
            if !ip6.is_empty() {
                pa.ip6 = Some(IntervalIndex::build(&ip6));
            }
            a.node_anchor[node as usize] = a.paths.len() as u32;
            a.paths.push(pa);
        }
        a
    }

    /// Report (through `emit`) the postings that leaf `v` at trie node `node` fires.
    /// `buf` is scratch space.
    #[inline]
    pub fn probe(&self, node: u32, v: &Value, buf: &mut Vec<u8>, emit: &mut impl FnMut(&[u32])) {
        let a = self.node_anchor[node as usize];
        if a == NONE {
            return;
        }
        let pa = &self.paths[a as usize];
        match v {
            Value::String(s) => {
                if pa.exact {
                    emit(self.exact.get(node, KeyRef::Str(s)));
                }
                if pa.exact_ip || pa.ip4.is_some() || pa.ip6.is_some() {
                    if let Some(ip) = parse_ip(s) {
                        if pa.exact_ip {
                            emit(self.exact.get(node, KeyRef::Ip(ip.family, ip.value)));
                        }
                        let ix = if ip.family == Family::V4 { &pa.ip4 } else { &pa.ip6 };
                        if let Some(ix) = ix {
                            ix.query(ip.value, &mut *emit);
                        }
                    }
                }
                if pa.exact_ic && s.is_ascii() {
                    buf.clear();
                    buf.extend(s.bytes().map(|b| b.to_ascii_lowercase()));
                    emit(
                        self.exact
                            .get(node, KeyRef::StrIc(std::str::from_utf8(buf).unwrap_or_default())),
                    );
                }
                if let Some(t) = &pa.prefix {
                    t.walk(s.as_bytes(), &mut *emit);
                }
                if pa.prefix_ic.is_some() || pa.suffix.is_some() || pa.suffix_ic.is_some() {
                    // Probes for the other tries: lower-cased and/or reversed copies.
                    if let Some(t) = &pa.prefix_ic {
                        buf.clear();
                        buf.extend(s.bytes().map(|b| b.to_ascii_lowercase()));
                        t.walk(buf, &mut *emit);
                    }
                    if let Some(t) = &pa.suffix {
                        buf.clear();
                        buf.extend(s.bytes().rev());
                        t.walk(buf, &mut *emit);
                    }
                    if let Some(t) = &pa.suffix_ic {
                        buf.clear();
                        buf.extend(s.bytes().rev().map(|b| b.to_ascii_lowercase()));
                        t.walk(buf, &mut *emit);
                    }
                }
            }
            Value::Number(_) => {
                let x = number_of(v).unwrap_or(f64::NAN);
                if pa.exact {
                    emit(self.exact.get(node, KeyRef::Num(num_bits(x))));
                }
                if let Some(ix) = &pa.numeric {
                    ix.query(x, &mut *emit);
                }
            }
            Value::Bool(b) if pa.exact => emit(self.exact.get(node, KeyRef::Bool(*b))),
            Value::Null if pa.exact => emit(self.exact.get(node, KeyRef::Null)),
            _ => {}
        }
        emit(&pa.presence);
    }
}
