//! The lookup structures behind the anchor index: an exact-value hash table, byte tries for
//! prefixes and suffixes, and a stabbing-query interval index for numeric and IP ranges.
//! Each maps an event leaf value to the ids of the subpatterns that may match it.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::rules::pattern::ip::Family;

/// A small, fast, non-cryptographic hasher (FxHash-style multiply-rotate over 8-byte words).
/// Hash flooding is not a concern: keys come from operator-written patterns, and event values
/// only probe the table.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, w: u64) {
        self.hash = (self.hash.rotate_left(5) ^ w).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(buf) ^ ((rest.len() as u64) << 59));
        }
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        // Final avalanche so the low bits used by the table are well mixed.
        let mut h = self.hash;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h
    }
}

/// A hash-table key: an exact event value at a path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum KeyOwned {
    /// A string, compared exactly.
    Str(Box<str>),
    /// An ASCII string compared case-insensitively (stored lower-cased).
    StrIc(Box<str>),
    /// A number, as the bits of its `f64` (with `-0.0` normalised to `0.0`).
    Num(u64),
    /// A boolean.
    Bool(bool),
    /// `null`.
    Null,
    /// An IP address.
    Ip(Family, u128),
}

/// A borrowed [`KeyOwned`], used to probe the table without allocating.
#[derive(Clone, Copy, Debug)]
pub(crate) enum KeyRef<'a> {
    Str(&'a str),
    StrIc(&'a str),
    Num(u64),
    Bool(bool),
    Null,
    Ip(Family, u128),
}

/// The table key bits of a number.
pub(crate) fn num_bits(x: f64) -> u64 {
    (x + 0.0).to_bits()
}

impl KeyOwned {
    fn as_ref(&self) -> KeyRef<'_> {
        match self {
            KeyOwned::Str(s) => KeyRef::Str(s),
            KeyOwned::StrIc(s) => KeyRef::StrIc(s),
            KeyOwned::Num(n) => KeyRef::Num(*n),
            KeyOwned::Bool(b) => KeyRef::Bool(*b),
            KeyOwned::Null => KeyRef::Null,
            KeyOwned::Ip(f, v) => KeyRef::Ip(*f, *v),
        }
    }
}

impl KeyRef<'_> {
    fn same(&self, o: &KeyRef<'_>) -> bool {
        match (self, o) {
            (KeyRef::Str(a), KeyRef::Str(b)) | (KeyRef::StrIc(a), KeyRef::StrIc(b)) => a == b,
            (KeyRef::Num(a), KeyRef::Num(b)) => a == b,
            (KeyRef::Bool(a), KeyRef::Bool(b)) => a == b,
            (KeyRef::Null, KeyRef::Null) => true,
            (KeyRef::Ip(f, a), KeyRef::Ip(g, b)) => f == g && a == b,
            _ => false,
        }
    }

    fn hash(&self, path: u32) -> u64 {
        let mut h = FxHasher::default();
        h.write_u32(path);
        match self {
            KeyRef::Str(s) => {
                h.write_u32(1);
                h.write(s.as_bytes());
            }
            KeyRef::StrIc(s) => {
                h.write_u32(2);
                h.write(s.as_bytes());
            }
            KeyRef::Num(n) => {
                h.write_u32(3);
                h.write_u64(*n);
            }
            KeyRef::Bool(b) => h.write_u32(4 + *b as u32),
            KeyRef::Null => h.write_u32(6),
            KeyRef::Ip(f, v) => {
                h.write_u32(7 + (*f == Family::V6) as u32);
                h.write_u64(*v as u64);
                h.write_u64((*v >> 64) as u64);
            }
        }
        h.finish()
    }
}

/// Identity hasher for keys that are already hashes.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, _: &[u8]) {
        unreachable!("IdHasher only hashes u64 keys")
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = i;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

struct ExactEntry {
    path: u32,
    key: KeyOwned,
    subs: Vec<u32>,
}

/// (path, exact value) → subpattern ids.
#[derive(Default)]
pub(crate) struct ExactTable {
    map: HashMap<u64, Vec<ExactEntry>, BuildHasherDefault<IdHasher>>,
}

impl ExactTable {
    /// Register subpattern `sub` under `(path, key)`.
    pub fn insert(&mut self, path: u32, key: KeyOwned, sub: u32) {
        let h = key.as_ref().hash(path);
        let bucket = self.map.entry(h).or_default();
        match bucket.iter_mut().find(|e| e.path == path && e.key == key) {
            Some(e) => {
                if e.subs.last() != Some(&sub) {
                    e.subs.push(sub)
                }
            }
            None => bucket.push(ExactEntry {
                path,
                key,
                subs: vec![sub],
            }),
        }
    }

    /// Subpattern ids registered under `(path, key)`.
    #[inline]
    pub fn get(&self, path: u32, key: KeyRef<'_>) -> &[u32] {
        if let Some(bucket) = self.map.get(&key.hash(path)) {
            for e in bucket {
                if e.path == path && e.key.as_ref().same(&key) {
                    return &e.subs;
                }
            }
        }
        &[]
    }
}

/// A byte trie: every stored string that is a prefix of the probe reports its ids. Built
/// uncompressed, then [`ByteTrie::finish`] merges single-child chains into labelled edges so a
/// walk compares whole runs of bytes at once.
#[derive(Default)]
pub(crate) struct ByteTrie {
    build: Vec<BNode>,
    nodes: Vec<PNode>,
    labels: Vec<u8>,
    children: Vec<(u8, u32)>,
    ids: Vec<u32>,
}

#[derive(Default)]
struct BNode {
    children: Vec<(u8, u32)>,
    ids: Vec<u32>,
}

/// A compressed node: the label of the edge into it, its children (by first label byte), its ids.
#[derive(Clone, Copy, Default)]
struct PNode {
    label: (u32, u32),
    children: (u32, u32),
    ids: (u32, u32),
}

impl ByteTrie {
    /// Store `bytes` for posting `id`.
    pub fn insert(&mut self, bytes: impl Iterator<Item = u8>, id: u32) {
        if self.build.is_empty() {
            self.build.push(BNode::default());
        }
        let mut n = 0usize;
        for b in bytes {
            n = match self.build[n].children.binary_search_by_key(&b, |c| c.0) {
                Ok(i) => self.build[n].children[i].1 as usize,
                Err(i) => {
                    let new = self.build.len() as u32;
                    self.build[n].children.insert(i, (b, new));
                    self.build.push(BNode::default());
                    new as usize
                }
            };
        }
        if self.build[n].ids.last() != Some(&id) {
            self.build[n].ids.push(id);
        }
    }

    /// Compress the trie; call once after the last insert.
    pub fn finish(&mut self) {
        if self.build.is_empty() {
            return;
        }
        let build = std::mem::take(&mut self.build);
        // Breadth-first: each packed node's children are contiguous.
        self.nodes.push(PNode::default());
        let mut queue = vec![(0usize, 0usize)]; // (build node, packed node)
        while let Some((b, p)) = queue.pop() {
            let ids_start = self.ids.len() as u32;
            self.ids.extend_from_slice(&build[b].ids);
            let ch_start = self.children.len() as u32;
            let kids: Vec<(u8, u32)> = build[b].children.clone();
            self.children.extend(kids.iter().map(|_| (0u8, 0u32)));
            for (k, &(byte, child)) in kids.iter().enumerate() {
                // Follow the chain of single-child, id-less nodes.
                let label_start = self.labels.len() as u32;
                self.labels.push(byte);
                let mut c = child as usize;
                while build[c].ids.is_empty() && build[c].children.len() == 1 {
                    self.labels.push(build[c].children[0].0);
                    c = build[c].children[0].1 as usize;
                }
                let packed = self.nodes.len() as u32;
                self.nodes.push(PNode {
                    label: (label_start, self.labels.len() as u32),
                    ..PNode::default()
                });
                self.children[ch_start as usize + k] = (byte, packed);
                queue.push((c, packed as usize));
            }
            let node = &mut self.nodes[p];
            node.ids = (ids_start, self.ids.len() as u32);
            node.children = (ch_start, self.children.len() as u32);
        }
    }

    /// Call `f` with the ids of every stored string that is a prefix of `probe`.
    #[inline]
    pub fn walk(&self, probe: &[u8], mut f: impl FnMut(&[u32])) {
        let Some(mut node) = self.nodes.first() else {
            return;
        };
        let mut pos = 0;
        loop {
            if node.ids.0 < node.ids.1 {
                f(&self.ids[node.ids.0 as usize..node.ids.1 as usize]);
            }
            let Some(&b) = probe.get(pos) else { return };
            let kids = &self.children[node.children.0 as usize..node.children.1 as usize];
            let Some(&(_, c)) = kids.iter().find(|k| k.0 == b) else {
                return;
            };
            let next = &self.nodes[c as usize];
            let label = &self.labels[next.label.0 as usize..next.label.1 as usize];
            if !probe[pos..].starts_with(label) {
                return;
            }
            pos += label.len();
            node = next;
        }
    }
}

/// Points of an ordered key space (numbers, IP addresses).
pub(crate) trait Point: Copy + PartialOrd {}
impl Point for f64 {}
impl Point for u128 {}

/// A bound: the value and whether it is inclusive; `None` is unbounded.
pub(crate) type Bound<K> = Option<(K, bool)>;

/// Stabbing queries over intervals: which intervals contain a point. A segment tree over the
/// "elementary slots" of the sorted endpoints (each endpoint, and each open gap between them), so
/// open and closed bounds are exact. Query cost is O(log n + answers).
pub(crate) struct IntervalIndex<K: Point> {
    points: Vec<K>,
    slots: usize,
    /// CSR layout of the segment-tree nodes' id lists.
    offsets: Vec<u32>,
    ids: Vec<u32>,
}

impl<K: Point> IntervalIndex<K> {
    /// Build from `(lower, upper, id)` triples.
    pub fn build(intervals: &[(Bound<K>, Bound<K>, u32)]) -> Self {
        let mut points: Vec<K> = Vec::new();
        for (lo, hi, _) in intervals {
            points.extend(lo.map(|b| b.0));
            points.extend(hi.map(|b| b.0));
        }
        points.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
        points.dedup_by(|a, b| a == b);
        let slots = 2 * points.len() + 1;
        let idx = |x: K| points.partition_point(|p| *p < x);
        let mut lists: Vec<Vec<u32>> = vec![Vec::new(); 2 * slots];
        for (lo, hi, id) in intervals {
            let l = match lo {
                None => 0,
                Some((x, true)) => 2 * idx(*x) + 1,
                Some((x, false)) => 2 * idx(*x) + 2,
            };
            let r = match hi {
                None => slots - 1,
                Some((x, true)) => 2 * idx(*x) + 1,
                Some((x, false)) => 2 * idx(*x),
            };
            if l > r {
                continue;
            }
            let (mut l, mut r) = (l + slots, r + slots + 1);
            while l < r {
                if l & 1 == 1 {
                    lists[l].push(*id);
                    l += 1;
                }
                if r & 1 == 1 {
                    r -= 1;
                    lists[r].push(*id);
                }
                l >>= 1;
                r >>= 1;
            }
        }
        let mut offsets = Vec::with_capacity(lists.len() + 1);
        let mut ids = Vec::new();
        offsets.push(0);
        for l in &lists {
            ids.extend_from_slice(l);
            offsets.push(ids.len() as u32);
        }
        IntervalIndex {
            points,
            slots,
            offsets,
            ids,
        }
    }

    /// Call `f` with the ids of intervals containing `x` (in several slices).
    #[inline]
    pub fn query(&self, x: K, mut f: impl FnMut(&[u32])) {
        let i = self.points.partition_point(|p| *p < x);
        let slot = if i < self.points.len() && self.points[i] == x {
            2 * i + 1
        } else {
            2 * i
        };
        let mut node = slot + self.slots;
        while node >= 1 {
            let (a, b) = (self.offsets[node] as usize, self.offsets[node + 1] as usize);
            if a < b {
                f(&self.ids[a..b]);
            }
            node >>= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_table_separates_paths_and_types() {
        let mut t = ExactTable::default();
        t.insert(1, KeyOwned::Str("300".into()), 7);
        t.insert(1, KeyOwned::Num(num_bits(300.0)), 8);
        t.insert(2, KeyOwned::Str("300".into()), 9);
        t.insert(1, KeyOwned::Str("300".into()), 10);
        assert_eq!(t.get(1, KeyRef::Str("300")), &[7, 10]);
        assert_eq!(t.get(1, KeyRef::Num(num_bits(300.0))), &[8]);
        assert_eq!(t.get(2, KeyRef::Str("300")), &[9]);
        assert!(t.get(3, KeyRef::Str("300")).is_empty());
        assert!(t.get(1, KeyRef::StrIc("300")).is_empty());
        assert_eq!(num_bits(-0.0), num_bits(0.0));
    }

    #[test]
    fn byte_trie_reports_prefixes() {
        let mut t = ByteTrie::default();
        t.insert("ab".bytes(), 1);
        t.insert("abc".bytes(), 2);
        t.insert("".bytes(), 3);
        t.insert("b".bytes(), 4);
        t.insert("abcdefgh".bytes(), 5);
        t.insert("abcdxy".bytes(), 6);
        t.finish();
        let walk = |probe: &str| {
            let mut got = Vec::new();
            t.walk(probe.as_bytes(), |ids| got.extend_from_slice(ids));
            got.sort();
            got
        };
        assert_eq!(walk("abcd"), vec![1, 2, 3]);
        assert_eq!(walk("x"), vec![3]);
        assert_eq!(walk(""), vec![3]);
        assert_eq!(walk("abcdefghij"), vec![1, 2, 3, 5]);
        assert_eq!(walk("abcdefg"), vec![1, 2, 3]);
        assert_eq!(walk("abcdxyz"), vec![1, 2, 3, 6]);
        assert_eq!(walk("b"), vec![3, 4]);
        let empty = ByteTrie::default();
        empty.walk(b"abc", |_| panic!("no ids"));
    }

    fn stab(ix: &IntervalIndex<f64>, x: f64) -> Vec<u32> {
        let mut v = Vec::new();
        ix.query(x, |ids| v.extend_from_slice(ids));
        v.sort();
        v
    }

    #[test]
    fn interval_index_respects_open_and_closed_bounds() {
        let ix = IntervalIndex::build(&[
            (Some((0.0, false)), Some((5.0, true)), 1),
            (None, Some((10.0, false)), 2),
            (Some((5.0, true)), Some((5.0, true)), 3),
            (Some((100.0, true)), None, 4),
        ]);
        assert_eq!(stab(&ix, 0.0), vec![2]);
        assert_eq!(stab(&ix, 0.5), vec![1, 2]);
        assert_eq!(stab(&ix, 5.0), vec![1, 2, 3]);
        assert_eq!(stab(&ix, 7.0), vec![2]);
        assert_eq!(stab(&ix, 10.0), Vec::<u32>::new());
        assert_eq!(stab(&ix, 100.0), vec![4]);
        assert_eq!(stab(&ix, -1e300), vec![2]);
        assert_eq!(stab(&ix, 1e300), vec![4]);
    }

    #[test]
    fn interval_index_matches_brute_force() {
        let mut seed = 0x2545F4914F6CDD1Du64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut ivs = Vec::new();
        for id in 0..200u32 {
            let a = (rnd() % 50) as f64;
            let b = a + (rnd() % 20) as f64;
            let lo = if rnd() % 5 == 0 {
                None
            } else {
                Some((a, rnd() % 2 == 0))
            };
            let hi = if rnd() % 5 == 0 {
                None
            } else {
                Some((b, rnd() % 2 == 0))
            };
            ivs.push((lo, hi, id));
        }
        let ix = IntervalIndex::build(&ivs);
        for k in 0..150 {
            let x = k as f64 * 0.5 - 5.0;
            let want: Vec<u32> = ivs
                .iter()
                .filter(|(lo, hi, _)| {
                    lo.is_none_or(|(b, inc)| if inc { x >= b } else { x > b })
                        && hi.is_none_or(|(b, inc)| if inc { x <= b } else { x < b })
                })
                .map(|t| t.2)
                .collect();
            assert_eq!(stab(&ix, x), want, "x = {x}");
        }
    }
}
