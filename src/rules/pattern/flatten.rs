//! Event → leaves, pruned to the paths patterns use.
//!
//! event-ruler flattens an event into (dotted path, scalar) pairs, descending through arrays
//! (elements keep the array's path) and joining object keys with `.`, so the event key `"c.count"`
//! and nested `c` → `count` give the same path. [`PathTrie`] holds every pattern path split at
//! dots; at each trie node it maps every *dotted run* of the following segments to the node it
//! reaches, so one lookup per event key handles dotted keys too. Subtrees of the event that no
//! pattern path reaches are never visited.
//!
//! Traversal is iterative (an explicit stack), so nesting depth cannot overflow the call stack,
//! and its cost is linear in the part of the event it visits.

use std::collections::HashMap;

use serde_json::Value;

/// "No leaf" marker in the per-path linked lists.
pub(crate) const NONE: u32 = u32::MAX;

/// Children of a trie node keyed by (possibly dotted) event key: a small open-addressing table
/// with an O(1) hash (length and first/last eight bytes) and a first-byte/length pre-filter, so
/// the event keys patterns never mention are rejected in a few instructions.
struct KeyMap {
    entries: Vec<(Box<str>, u32)>,
    /// `index + 1` into `entries`, 0 = empty; length is a power of two.
    table: Vec<u32>,
    /// Bit per first byte of the keys (empty keys use byte 0).
    first: [u64; 4],
    /// Bit per key length (63 = 63 or longer).
    lens: u64,
}

#[inline]
fn load8(b: &[u8]) -> u64 {
    if let Some(w) = b.first_chunk::<8>() {
        return u64::from_le_bytes(*w);
    }
    b.iter().rev().fold(0u64, |a, &x| (a << 8) | x as u64)
}

#[inline]
fn key_hash(b: &[u8]) -> u64 {
    let head = load8(b);
    let tail = if b.len() > 8 { load8(&b[b.len() - 8..]) } else { 0 };
    let h = (head ^ tail.rotate_left(29) ^ ((b.len() as u64) << 56)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^ (h >> 29)
}

impl KeyMap {
    fn new(entries: Vec<(Box<str>, u32)>) -> KeyMap {
        let size = (entries.len() * 2).next_power_of_two().max(4);
        let mut table = vec![0u32; size];
        let (mut first, mut lens) = ([0u64; 4], 0u64);
        for (i, (k, _)) in entries.iter().enumerate() {
            let b = k.as_bytes();
            let f = b.first().copied().unwrap_or(0) as usize;
            first[f >> 6] |= 1 << (f & 63);
            lens |= 1 << b.len().min(63);
            let mut slot = key_hash(b) as usize & (size - 1);
            while table[slot] != 0 {
                slot = (slot + 1) & (size - 1);
            }
            table[slot] = i as u32 + 1;
        }
        KeyMap {
            entries,
            table,
            first,
            lens,
        }
    }

    #[inline]
    fn get(&self, k: &str) -> Option<u32> {
        let b = k.as_bytes();
        let f = b.first().copied().unwrap_or(0) as usize;
        if self.first[f >> 6] & (1 << (f & 63)) == 0 || self.lens & (1 << b.len().min(63)) == 0 {
            return None;
        }
        let mask = self.table.len() - 1;
        let mut slot = key_hash(b) as usize & mask;
        loop {
            let e = self.table[slot];
            if e == 0 {
                return None;
            }
            let (key, node) = &self.entries[e as usize - 1];
            if key.as_bytes() == b {
                return Some(*node);
            }
            slot = (slot + 1) & mask;
        }
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

struct TrieNode {
    /// Every dotted run of segments below this node → the node it reaches.
    keys: KeyMap,
    /// Whether some pattern field uses exactly this path.
    is_field: bool,
}

/// All pattern paths, split at dots. Node 0 is the root (the event itself).
pub(crate) struct PathTrie {
    nodes: Vec<TrieNode>,
}

/// Builds a [`PathTrie`].
#[derive(Default)]
pub(crate) struct PathTrieBuilder {
    /// Direct children by single segment.
    children: Vec<HashMap<String, u32>>,
    is_field: Vec<bool>,
}

impl PathTrieBuilder {
    /// A builder holding only the root.
    pub fn new() -> Self {
        PathTrieBuilder {
            children: vec![HashMap::new()],
            is_field: vec![false],
        }
    }

    /// Add a field path; returns its node id.
    pub fn add(&mut self, path: &str) -> u32 {
        let mut n = 0usize;
        for seg in path.split('.') {
            n = match self.children[n].get(seg) {
                Some(&c) => c as usize,
                None => {
                    let id = self.children.len();
                    self.children[n].insert(seg.to_string(), id as u32);
                    self.children.push(HashMap::new());
                    self.is_field.push(false);
                    id
                }
            };
        }
        self.is_field[n] = true;
        n as u32
    }

    /// Finish: compute the dotted-run key maps.
    pub fn build(self) -> PathTrie {
        let mut nodes = Vec::with_capacity(self.children.len());
        for n in 0..self.children.len() {
            let mut entries: Vec<(Box<str>, u32)> = Vec::new();
            // Depth-first over the subtree, accumulating the dotted key.
            let mut stack: Vec<(usize, String)> = vec![(n, String::new())];
            while let Some((m, key)) = stack.pop() {
                for (seg, &c) in &self.children[m] {
                    let k = if m == n { seg.clone() } else { format!("{key}.{seg}") };
                    entries.push((k.clone().into_boxed_str(), c));
                    stack.push((c as usize, k));
                }
            }
            nodes.push(TrieNode {
                keys: KeyMap::new(entries),
                is_field: self.is_field[n],
            });
        }
        PathTrie { nodes }
    }
}

impl PathTrie {
    /// Number of nodes (valid node ids are `0..len`).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The node an event key (possibly dotted) leads to from `node`, if any pattern uses it.
    #[inline]
    pub fn child(&self, node: u32, key: &str) -> Option<u32> {
        self.nodes[node as usize].keys.get(key)
    }

    /// True when some pattern path continues below `node`.
    #[inline]
    pub fn has_children(&self, node: u32) -> bool {
        self.nodes[node as usize].keys.len() > 0
    }

    /// True when some pattern field uses exactly the path of `node`.
    #[inline]
    pub fn is_field(&self, node: u32) -> bool {
        self.nodes[node as usize].is_field
    }
}

/// One flattened leaf.
#[derive(Clone, Copy)]
pub(crate) struct Leaf {
    /// Trie node of the leaf's path.
    pub node: u32,
    /// Next leaf at the same path, or [`NONE`].
    pub next: u32,
    /// Array context: the innermost array element enclosing the leaf (0 = none).
    pub ctx: u32,
}

/// An array element on the way to some leaves. Contexts form a tree rooted at context 0 (the
/// event outside any array); a leaf's chain of contexts is its event-ruler "array membership".
#[derive(Clone, Copy)]
pub(crate) struct Ctx {
    /// Enclosing context.
    parent: u32,
    /// Which array this is an element of (unique per array in the event).
    array: u32,
    /// Number of arrays enclosing this element, itself included.
    depth: u32,
}

/// Reusable flattening buffers. After [`flatten`], leaves at a path are found through `head`.
#[derive(Default)]
pub(crate) struct Flat {
    /// Leaves in visit order; `vals[i]` (kept by the caller) is leaf `i`'s value.
    pub leaves: Vec<Leaf>,
    /// Per trie node: first leaf at that path, or [`NONE`].
    pub head: Vec<u32>,
    /// Per trie node: whether some leaf at that path lies inside an array.
    pub in_array: Vec<bool>,
    /// Array contexts; entry 0 is the root.
    ctx: Vec<Ctx>,
    /// Nodes whose `head`/`in_array` were set (to reset them cheaply).
    touched: Vec<u32>,
    /// Arrays seen so far (each gets its own id).
    arrays: u32,
}

impl Flat {
    /// Clear the previous event's leaves and size the per-node tables for `trie`.
    pub fn reset(&mut self, trie: &PathTrie) {
        for &n in &self.touched {
            self.head[n as usize] = NONE;
            self.in_array[n as usize] = false;
        }
        self.touched.clear();
        self.leaves.clear();
        self.arrays = 0;
        self.ctx.clear();
        self.ctx.push(Ctx {
            parent: 0,
            array: u32::MAX,
            depth: 0,
        });
        if self.head.len() < trie.len() {
            self.head.resize(trie.len(), NONE);
            self.in_array.resize(trie.len(), false);
        }
    }

    /// Release buffer memory beyond `keep` entries (after an unusually large event).
    pub fn trim(&mut self, keep: usize) {
        if self.leaves.capacity() > keep || self.ctx.capacity() > keep {
            self.leaves.clear();
            self.leaves.shrink_to(keep / 16);
            self.ctx.clear();
            self.ctx.shrink_to(keep / 16);
            self.ctx.push(Ctx {
                parent: 0,
                array: u32::MAX,
                depth: 0,
            });
        }
    }

    /// A fresh id for an array of the event.
    #[inline]
    pub fn new_array(&mut self) -> u32 {
        let id = self.arrays;
        self.arrays = self.arrays.wrapping_add(1);
        id
    }

    /// A new context for an element of array `array` that sits in context `parent`.
    #[inline]
    pub fn push_ctx(&mut self, parent: u32, array: u32) -> u32 {
        let id = self.ctx.len() as u32;
        let depth = self.ctx[parent as usize].depth + 1;
        self.ctx.push(Ctx { parent, array, depth });
        id
    }

    /// Forget context `id` and every context made after it (no leaf may refer to them).
    #[inline]
    pub fn truncate_ctx(&mut self, id: u32) {
        self.ctx.truncate(id as usize);
    }

    /// Record a leaf at trie node `node` in context `ctx`; its value is the caller's entry at
    /// the same index.
    #[inline]
    pub fn push_leaf(&mut self, node: u32, ctx: u32) {
        let idx = self.leaves.len() as u32;
        let head = &mut self.head[node as usize];
        if *head == NONE {
            self.touched.push(node);
        }
        self.leaves.push(Leaf { node, next: *head, ctx });
        *head = idx;
        if ctx != 0 {
            self.in_array[node as usize] = true;
        }
    }

    /// Whether two array contexts are consistent: no array holds them in different elements.
    /// Arrays nest as a tree, so only the first divergence of the two context chains matters.
    #[inline]
    pub fn consistent(&self, a: u32, b: u32) -> bool {
        if a == 0 || b == 0 || a == b {
            return true;
        }
        let (mut a, mut b) = (a, b);
        let c = &self.ctx;
        while c[a as usize].depth > c[b as usize].depth {
            a = c[a as usize].parent;
        }
        while c[b as usize].depth > c[a as usize].depth {
            b = c[b as usize].parent;
        }
        if a == b {
            return true;
        }
        while c[a as usize].parent != c[b as usize].parent {
            a = c[a as usize].parent;
            b = c[b as usize].parent;
        }
        c[a as usize].array != c[b as usize].array
    }

    /// The leaf indices at trie node `node`.
    #[inline]
    pub fn at(&self, node: u32) -> LeafIter<'_> {
        LeafIter {
            flat: self,
            cur: self.head[node as usize],
        }
    }
}

/// Iterator over the leaf indices at one path.
pub(crate) struct LeafIter<'f> {
    flat: &'f Flat,
    cur: u32,
}

impl Iterator for LeafIter<'_> {
    type Item = usize;
    #[inline]
    fn next(&mut self) -> Option<usize> {
        if self.cur == NONE {
            return None;
        }
        let i = self.cur as usize;
        self.cur = self.flat.leaves[i].next;
        Some(i)
    }
}

/// Flatten `event` along the paths of `trie` into `flat` and `vals` (one value per leaf).
/// `stack` is scratch space. `flat` must have been [`Flat::reset`] for this trie; leaves already
/// in it (from [`crate::rules::pattern::raw`]) stay.
pub(crate) fn flatten<'a>(
    trie: &PathTrie,
    event: &'a Value,
    flat: &mut Flat,
    vals: &mut Vec<&'a Value>,
    stack: &mut Vec<(u32, &'a Value, u32)>,
) {
    stack.clear();
    stack.push((0, event, 0));
    while let Some((n, v, ctx)) = stack.pop() {
        let node = &trie.nodes[n as usize];
        match v {
            Value::Object(map) => {
                let keys = &node.keys;
                if keys.len() <= 2 && map.len() >= 16 {
                    for (k, c) in &keys.entries {
                        if let Some(child) = map.get(&**k) {
                            stack.push((*c, child, ctx));
                        }
                    }
                    continue;
                }
                for (k, child) in map {
                    if let Some(c) = keys.get(k) {
                        stack.push((c, child, ctx));
                    }
                }
            }
            Value::Array(items) => {
                let array = flat.new_array();
                for e in items.iter().rev() {
                    // Skip elements that cannot yield a leaf here.
                    let useful = match e {
                        Value::Object(_) => node.keys.len() > 0,
                        Value::Array(_) => true,
                        _ => node.is_field,
                    };
                    if useful {
                        let id = flat.push_ctx(ctx, array);
                        stack.push((n, e, id));
                    }
                }
            }
            _ => {
                if node.is_field {
                    flat.push_leaf(n, ctx);
                    vals.push(v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn leaves_at(trie: &PathTrie, ids: &[(u32, &str)], ev: &Value) -> Vec<(String, Vec<Value>, bool)> {
        let mut flat = Flat::default();
        flat.reset(trie);
        let mut vals = Vec::new();
        let mut stack = Vec::new();
        flatten(trie, ev, &mut flat, &mut vals, &mut stack);
        ids.iter()
            .map(|(n, p)| {
                let mut v: Vec<Value> = flat.at(*n).map(|i| vals[i].clone()).collect();
                v.reverse();
                (p.to_string(), v, flat.in_array[*n as usize])
            })
            .collect()
    }

    #[test]
    fn dotted_keys_and_nesting_are_the_same_path() {
        let mut b = PathTrieBuilder::new();
        let cc = b.add("detail.c.count");
        let st = b.add("detail.state");
        let trie = b.build();
        let ev = json!({"detail": {"c.count": 5, "c": {"count": 6}, "state": "running", "other": {"x": 1}}});
        let got = leaves_at(&trie, &[(cc, "cc"), (st, "st")], &ev);
        assert_eq!(got[0].1.len(), 2);
        assert_eq!(got[1].1, vec![json!("running")]);
        let ev = json!({"detail.c.count": 7});
        assert_eq!(leaves_at(&trie, &[(cc, "cc")], &ev)[0].1, vec![json!(7)]);
    }

    #[test]
    fn arrays_flatten_and_are_flagged() {
        let mut b = PathTrieBuilder::new();
        let f = b.add("employees.firstName");
        let ids = b.add("employees.ids");
        let trie = b.build();
        let ev = json!({"employees": [[{"firstName": "John", "ids": [1, 2]}, {"firstName": "Anna"}], [{"firstName": "Peter", "ids": []}]]});
        let got = leaves_at(&trie, &[(f, "f"), (ids, "ids")], &ev);
        assert_eq!(got[0].1, vec![json!("John"), json!("Anna"), json!("Peter")]);
        assert!(got[0].2);
        assert_eq!(got[1].1, vec![json!(1), json!(2)]);
    }

    #[test]
    fn objects_and_empty_arrays_are_not_leaves() {
        let mut b = PathTrieBuilder::new();
        let a = b.add("a");
        let trie = b.build();
        for ev in [
            json!({"a": {"b": 1}}),
            json!({"a": []}),
            json!({"b": 1}),
            json!([1, 2]),
            json!("a"),
        ] {
            assert!(leaves_at(&trie, &[(a, "a")], &ev)[0].1.is_empty(), "{ev}");
        }
        assert_eq!(
            leaves_at(&trie, &[(a, "a")], &json!({"a": null}))[0].1,
            vec![json!(null)]
        );
    }

    #[test]
    fn deep_nesting_is_iterative() {
        let mut b = PathTrieBuilder::new();
        let a = b.add("a");
        let trie = b.build();
        let mut v = json!("x");
        for _ in 0..5000 {
            v = Value::Array(vec![v]);
        }
        // (`json!` would serialise `v` recursively.)
        let ev = Value::Object([("a".to_string(), v)].into_iter().collect());
        assert_eq!(leaves_at(&trie, &[(a, "a")], &ev)[0].1, vec![json!("x")]);
        // Avoid the recursive drop of a very deep value on a small test stack.
        std::mem::forget(ev);
    }

    #[test]
    fn array_contexts_decide_consistency() {
        let mut b = PathTrieBuilder::new();
        let x = b.add("a.x");
        let y = b.add("a.y");
        let z = b.add("z");
        let trie = b.build();
        let ev = json!({"a": [{"x": 1, "y": [1, 2]}, {"x": 2, "y": 3}, [{"x": 4}]], "z": 0});
        let mut flat = Flat::default();
        flat.reset(&trie);
        let (mut vals, mut stack) = (Vec::new(), Vec::new());
        flatten(&trie, &ev, &mut flat, &mut vals, &mut stack);
        let ctx_of = |node: u32, v: Value| -> u32 {
            flat.at(node)
                .find(|&i| *vals[i] == v)
                .map(|i| flat.leaves[i].ctx)
                .unwrap()
        };
        let (x1, x2, x4) = (ctx_of(x, json!(1)), ctx_of(x, json!(2)), ctx_of(x, json!(4)));
        let (y1, y2, y3) = (ctx_of(y, json!(1)), ctx_of(y, json!(2)), ctx_of(y, json!(3)));
        let z0 = ctx_of(z, json!(0));
        assert!(flat.consistent(x1, y1) && flat.consistent(x1, y2) && flat.consistent(y2, x1));
        assert!(!flat.consistent(y1, y2), "same inner array, different elements");
        assert!(!flat.consistent(x1, y3) && !flat.consistent(x2, y1) && !flat.consistent(x4, x1));
        assert!(flat.consistent(x2, y3));
        assert!(flat.consistent(z0, x4) && flat.consistent(x4, x4));
    }

    #[test]
    fn many_keys_use_hashed_lookup() {
        let mut b = PathTrieBuilder::new();
        let ids: Vec<u32> = (0..20).map(|i| b.add(&format!("k{i}"))).collect();
        let trie = b.build();
        let ev = json!({"k3": 3, "k17": 17, "zz": 0});
        let got = leaves_at(&trie, &[(ids[3], "3"), (ids[17], "17"), (ids[4], "4")], &ev);
        assert_eq!(got[0].1, vec![json!(3)]);
        assert_eq!(got[1].1, vec![json!(17)]);
        assert!(got[2].1.is_empty());
    }
}
