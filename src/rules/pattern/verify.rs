//! Full check of one subpattern against one event, with event-ruler's array consistency.
//!
//! event-ruler (`rulesForJSONEvent`) accepts a subpattern when it can pick, for each positive
//! field, a leaf satisfying that field such that no two picked leaves sit in *different elements
//! of the same array*; an `exists: false` field must have no leaf consistent with the leaves
//! picked for the positive fields that sort before it (event-ruler checks absence while walking
//! the fields in sorted order).
//!
//! Three ways to decide it, cheapest first:
//! - [`fast`]: when at most one field has leaves inside arrays, every choice is consistent, so
//!   each field is checked on its own against the flattened leaves. This is the common case.
//! - [`small`]: when the fields have few leaves between them, a direct search over the leaves
//!   in field order (event-ruler's own procedure), comparing their array contexts.
//! - [`exact`]: otherwise, a walk of the event's JSON tree. Because arrays nest as a tree, all
//!   positive fields routed into one array must be satisfied inside one and the same element
//!   ("OR over elements"), while fields routed into different keys of an object are independent
//!   ("AND over children"). Each visited node is examined once per call, so the cost is linear in
//!   the part of the event the subpattern touches, never exponential in the array sizes.

use serde_json::{Map, Value};

use crate::rules::pattern::flatten::{Flat, NONE};
use crate::rules::pattern::operators::Matcher;

/// A compiled field of a [`Sub`].
pub(crate) struct FieldRt {
    /// Trie node of `path`.
    pub node: u32,
    /// `exists: false`.
    pub absent: bool,
    /// Positive matchers (any-of).
    pub matchers: Box<[Matcher]>,
    /// Human descriptions of the matchers (for explanations).
    pub descs: Box<[String]>,
    /// Bit mask of the positive fields sorted before this one (absence is checked against them).
    pub before: u64,
    /// Dotted path.
    pub path: Box<str>,
    /// Byte range of each dot-separated segment of `path`.
    pub segs: Box<[(u32, u32)]>,
}

impl FieldRt {
    /// Whether the positive matchers accept leaf `v`.
    #[inline]
    pub fn test(&self, v: &Value) -> bool {
        self.matchers.iter().any(|m| m.test(v))
    }

    /// Segment byte ranges of a dotted path.
    pub fn segments_of(path: &str) -> Box<[(u32, u32)]> {
        let mut out = Vec::new();
        let mut start = 0u32;
        for seg in path.split('.') {
            let end = start + seg.len() as u32;
            out.push((start, end));
            start = end + 1;
        }
        out.into()
    }

    /// The event keys that can continue this path from segment `d`: segment `d` alone, or joined
    /// with the following ones by dots (event-ruler treats `"a.b"` keys like nested objects).
    pub(crate) fn child_keys(&self, d: usize) -> impl Iterator<Item = (&str, usize)> + '_ {
        let start = self.segs.get(d).map_or(0, |s| s.0 as usize);
        (d + 1..=self.segs.len()).map(move |j| (&self.path[start..self.segs[j - 1].1 as usize], j))
    }
}

/// A compiled subpattern: one conjunction of an expanded pattern.
pub(crate) struct Sub {
    /// Pattern (rule) id.
    pub rule: u32,
    /// Fields, sorted by path in UTF-16 order.
    pub fields: Box<[FieldRt]>,
    /// Bit mask of positive (not `exists: false`) fields.
    pub positive: u64,
    /// Which `$or` branches this subpattern came from (empty without `$or`).
    pub branch: Box<str>,
}

/// Decide whether `sub` matches; `flat`/`vals` hold the event's flattened leaves, and `event`
/// gives its JSON tree, which only [`exact`] walks (so a caller matching from bytes builds the
/// tree only then).
pub(crate) fn verify<'e>(sub: &Sub, flat: &Flat, vals: &[&Value], event: &dyn Fn() -> &'e Value) -> bool {
    if let Some(b) = fast(sub, flat, vals) {
        return b;
    }
    if let Some(b) = small(sub, flat, vals) {
        return b;
    }
    exact(sub, event())
}

/// Largest product of per-field leaf counts that [`small`] searches exhaustively.
const SMALL_SEARCH: usize = 1024;

/// The direct search over leaves, or `None` if it could be too long (then use [`exact`]).
pub(crate) fn small(sub: &Sub, flat: &Flat, vals: &[&Value]) -> Option<bool> {
    let mut product = 1usize;
    for f in sub.fields.iter() {
        product = product.saturating_mul(flat.at(f.node).take(SMALL_SEARCH + 1).count().max(1));
        if product > SMALL_SEARCH {
            return None;
        }
    }
    let mut chosen = [0u32; 64];
    Some(search(sub, flat, vals, 0, &mut chosen, 0))
}

/// Fields `k..` in order, given the array contexts of the leaves picked so far.
fn search(sub: &Sub, flat: &Flat, vals: &[&Value], k: usize, chosen: &mut [u32; 64], n: usize) -> bool {
    let Some(f) = sub.fields.get(k) else {
        return true;
    };
    let fits = |ctx: u32, chosen: &[u32]| chosen.iter().all(|&c| flat.consistent(c, ctx));
    if f.absent {
        let present = flat.at(f.node).any(|i| fits(flat.leaves[i].ctx, &chosen[..n]));
        return !present && search(sub, flat, vals, k + 1, chosen, n);
    }
    for i in flat.at(f.node) {
        let ctx = flat.leaves[i].ctx;
        if f.test(vals[i]) && fits(ctx, &chosen[..n]) {
            chosen[n] = ctx;
            if search(sub, flat, vals, k + 1, chosen, n + 1) {
                return true;
            }
        }
    }
    false
}

/// The independent-fields check, or `None` when two or more fields have leaves inside arrays.
#[inline]
pub(crate) fn fast(sub: &Sub, flat: &Flat, vals: &[&Value]) -> Option<bool> {
    let mut array_fields = 0;
    for f in sub.fields.iter() {
        if flat.head[f.node as usize] == NONE {
            if !f.absent {
                return Some(false);
            }
        } else if flat.in_array[f.node as usize] {
            array_fields += 1;
        }
    }
    if array_fields >= 2 {
        return None;
    }
    for f in sub.fields.iter() {
        let mut leaves = flat.at(f.node);
        if f.absent {
            if leaves.next().is_some() {
                return Some(false);
            }
        } else if !leaves.any(|i| f.test(vals[i])) {
            return Some(false);
        }
    }
    Some(true)
}

/// The array-consistent check by walking the event tree.
pub(crate) fn exact(sub: &Sub, event: &Value) -> bool {
    let all = if sub.fields.len() == 64 {
        u64::MAX
    } else {
        (1u64 << sub.fields.len()) - 1
    };
    Walk { sub }.sat(event, 0, all)
}

fn bits(mut m: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if m == 0 {
            return None;
        }
        let i = m.trailing_zeros() as usize;
        m &= m - 1;
        Some(i)
    })
}

struct Walk<'s> {
    sub: &'s Sub,
}

/// A child of an object together with the fields routed into it.
struct Group<'v> {
    value: &'v Value,
    depth: usize,
    mask: u64,
}

fn add_to<'v>(groups: &mut Vec<Group<'v>>, value: &'v Value, depth: usize, bit: u64) {
    match groups
        .iter_mut()
        .find(|g| std::ptr::eq(g.value, value) && g.depth == depth)
    {
        Some(g) => g.mask |= bit,
        None => groups.push(Group {
            value,
            depth,
            mask: bit,
        }),
    }
}

impl Walk<'_> {
    /// Can the fields in `g` (all of whose paths lead through `v`, `d` segments consumed) be
    /// satisfied consistently inside `v`?
    fn sat(&self, v: &Value, d: usize, g: u64) -> bool {
        match v {
            Value::Array(items) => self.sat_array(items, d, g),
            Value::Object(map) => self.sat_object(map, d, g),
            _ => bits(g).all(|i| {
                let f = &self.sub.fields[i];
                if f.segs.len() == d {
                    !f.absent && f.test(v)
                } else {
                    f.absent
                }
            }),
        }
    }

    fn sat_array(&self, items: &[Value], d: usize, g: u64) -> bool {
        let pos = g & self.sub.positive;
        let mut g2 = g;
        // Absent fields not tied to any positive field here: any leaf under this array is
        // consistent with the picked leaves, so there must be none.
        for i in bits(g & !self.sub.positive) {
            if self.sub.fields[i].before & pos == 0 {
                if self.has_leaf(items, d, i) {
                    return false;
                }
                g2 &= !(1u64 << i);
            }
        }
        if pos == 0 {
            return true;
        }
        // All remaining fields must be satisfied within one element (nested arrays flattened).
        any_element(items, |e| self.sat(e, d, g2))
    }

    fn sat_object(&self, map: &Map<String, Value>, d: usize, g: u64) -> bool {
        let mut groups: Vec<Group<'_>> = Vec::new();
        let mut ambiguous: Vec<(u64, Vec<(&Value, usize)>)> = Vec::new();
        for i in bits(g) {
            let f = &self.sub.fields[i];
            if f.segs.len() == d {
                // An object is not a leaf.
                if f.absent {
                    continue;
                }
                return false;
            }
            let cands: Vec<(&Value, usize)> = f
                .child_keys(d)
                .filter_map(|(k, j)| map.get(k).map(|c| (c, j)))
                .collect();
            if f.absent {
                for (c, j) in cands {
                    add_to(&mut groups, c, j, 1 << i);
                }
                continue;
            }
            match cands.len() {
                0 => return false,
                1 => add_to(&mut groups, cands[0].0, cands[0].1, 1 << i),
                _ => ambiguous.push((1 << i, cands)),
            }
        }
        self.assign(groups, &ambiguous)
    }

    /// Try every routing of fields that several dotted keys could serve, then check each child.
    fn assign(&self, groups: Vec<Group<'_>>, ambiguous: &[(u64, Vec<(&Value, usize)>)]) -> bool {
        let Some(((bit, cands), rest)) = ambiguous.split_first() else {
            return groups.iter().all(|g| self.sat(g.value, g.depth, g.mask));
        };
        cands.iter().any(|(c, j)| {
            let mut gs: Vec<Group<'_>> = groups
                .iter()
                .map(|g| Group {
                    value: g.value,
                    depth: g.depth,
                    mask: g.mask,
                })
                .collect();
            add_to(&mut gs, c, *j, *bit);
            self.assign(gs, rest)
        })
    }

    /// Is there any leaf of field `i` under `items`?
    fn has_leaf(&self, items: &[Value], d: usize, i: usize) -> bool {
        any_element(items, |e| self.has_leaf_in(e, d, i))
    }

    fn has_leaf_in(&self, v: &Value, d: usize, i: usize) -> bool {
        let f = &self.sub.fields[i];
        match v {
            Value::Array(items) => self.has_leaf(items, d, i),
            Value::Object(map) => {
                f.segs.len() > d
                    && f.child_keys(d)
                        .any(|(k, j)| map.get(k).is_some_and(|c| self.has_leaf_in(c, j, i)))
            }
            _ => f.segs.len() == d,
        }
    }
}

/// True when `pred` holds for some element of `items`, nested arrays flattened (iteratively, so
/// deep nesting cannot overflow the stack).
fn any_element<'v>(items: &'v [Value], mut pred: impl FnMut(&'v Value) -> bool) -> bool {
    let mut stack: Vec<std::slice::Iter<'v, Value>> = vec![items.iter()];
    while let Some(it) = stack.last_mut() {
        match it.next() {
            None => {
                stack.pop();
            }
            Some(Value::Array(inner)) => stack.push(inner.iter()),
            Some(e) => {
                if pred(e) {
                    return true;
                }
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use crate::rules::pattern::PatternSet;
    use serde_json::{json, Value};

    fn matches(p: Value, ev: Value) -> bool {
        let set = PatternSet::compile([("p", &p)]).unwrap();
        let mut out = Vec::new();
        set.matches(&ev, &mut out);
        let exp = set.explain(0, &ev).matched;
        assert_eq!(exp, out == [0], "explain agrees");
        out == [0]
    }

    #[test]
    fn fields_in_one_array_must_share_an_element() {
        let p = json!({"a": {"b": [1], "c": [2]}});
        assert!(!matches(p.clone(), json!({"a": [{"b": 1, "c": 3}, {"b": 5, "c": 2}]})));
        assert!(matches(p.clone(), json!({"a": [{"b": 1, "c": 3}, {"b": 1, "c": 2}]})));
        assert!(matches(p.clone(), json!({"a": {"b": [0, 1], "c": [2]}})));
        // Nested arrays are elements of their outer element.
        assert!(matches(p.clone(), json!({"a": [[{"b": 1, "c": 2}], {"b": 7}]})));
        assert!(!matches(p, json!({"a": [[{"b": 1}, {"c": 2}]]})));
    }

    #[test]
    fn fields_in_different_arrays_are_independent() {
        let p = json!({"x": {"v": [1]}, "y": {"v": [2]}});
        assert!(matches(
            p,
            json!({"x": [{"v": 0}, {"v": 1}], "y": [{"v": 2}, {"v": 3}]})
        ));
    }

    #[test]
    fn exists_false_is_checked_against_earlier_fields_only() {
        // "a.b" sorts before "a.c": absence of b is judged before c picks an element.
        let p = json!({"a": {"b": [{"exists": false}], "c": [1]}});
        assert!(!matches(p, json!({"a": [{"c": 1}, {"b": 2, "c": 3}]})));
        // "a.b" positive first, then absence of "a.c" only within b's element.
        let p = json!({"a": {"b": [1], "c": [{"exists": false}]}});
        assert!(matches(p.clone(), json!({"a": [{"b": 1}, {"b": 2, "c": 3}]})));
        assert!(!matches(p, json!({"a": [{"b": 1, "c": 0}, {"b": 2}]})));
    }

    #[test]
    fn dotted_event_keys_inside_arrays() {
        let p = json!({"a": {"b": {"c": [1]}, "d": [2]}});
        assert!(matches(p.clone(), json!({"a": [{"b.c": 1, "d": 2}]})));
        assert!(!matches(p, json!({"a": [{"b.c": 1}, {"d": 2}]})));
    }

    #[test]
    fn many_leaves_use_the_tree_walk() {
        let elems: Vec<Value> = (0..100).map(|i| json!({"b": [i, i + 1], "c": i * 2})).collect();
        let p = json!({"a": {"b": [50], "c": [100]}});
        assert!(matches(p.clone(), json!({ "a": elems })));
        let p2 = json!({"a": {"b": [50], "c": [102]}});
        assert!(!matches(p2, json!({ "a": elems })));
    }
}
