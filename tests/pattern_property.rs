//! Randomised comparison of the indexed matcher with a naive reference evaluator written here
//! from event-ruler's model, independent of the crate's compiler, index and verifier:
//!
//! - patterns are generated as a small AST, serialised to JSON for the crate, and evaluated
//!   directly by the reference;
//! - the reference flattens the event into every (dotted path, scalar, array trace) leaf, and
//!   tries all assignments of leaves to the subpattern's fields in sorted field order (positive
//!   fields must pick pairwise array-consistent leaves; `exists: false` needs no leaf consistent
//!   with the leaves picked so far), i.e. event-ruler's `ACFinder` walk, by brute force.

use serde_json::{json, Map, Value};
use veltrix::rules::pattern::PatternSet;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.next() % 100 < pct
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

const KEYS: &[&str] = &["a", "b", "c", "a.b", "b.c"];
const STRINGS: &[&str] = &["x", "xy", "yx", "X", "", "xyz", "10.0.0.1", "10.0.1.9", "Xy"];
const NUMBERS: &[f64] = &[0.0, 1.0, 1.5, 2.0, 300.0, -1.0];

// ---------- pattern AST ----------

#[derive(Clone, Debug)]
enum Item {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
    Prefix(String),
    Suffix(String),
    PrefixIc(String),
    Eic(String),
    Wildcard(String),
    ButStrs(Vec<String>),
    ButNums(Vec<f64>),
    ButPrefix(String),
    Range(Option<(f64, bool)>, Option<(f64, bool)>),
    Cidr(String, u32, u32), // text, network, mask bits (IPv4)
    Exists(bool),
}

#[derive(Clone, Debug)]
enum Node {
    Leaf(Vec<Item>),
    Obj(Vec<(String, Node)>),
}

#[derive(Clone, Debug)]
struct Pat {
    fields: Vec<(String, Node)>,
    ors: Vec<Vec<Pat>>,
}

fn gen_item(r: &mut Rng) -> Item {
    match r.below(15) {
        0 | 1 => Item::Str(r.pick(STRINGS).to_string()),
        2 => Item::Num(*r.pick(NUMBERS)),
        3 => Item::Bool(r.chance(50)),
        4 => Item::Null,
        5 => Item::Prefix(r.pick(&["x", "y", "", "10."]).to_string()),
        6 => Item::Suffix(r.pick(&["y", "z", "x"]).to_string()),
        7 => Item::PrefixIc(r.pick(&["X", "xY"]).to_string()),
        8 => Item::Eic(r.pick(&["XY", "x", "yX"]).to_string()),
        9 => Item::Wildcard(r.pick(&["x*", "*y", "x*z", "*", "*y*"]).to_string()),
        10 => match r.below(3) {
            0 => Item::ButStrs((0..1 + r.below(2)).map(|_| r.pick(STRINGS).to_string()).collect()),
            1 => Item::ButNums((0..1 + r.below(2)).map(|_| *r.pick(NUMBERS)).collect()),
            _ => Item::ButPrefix(r.pick(&["x", "y"]).to_string()),
        },
        11 => {
            let a = *r.pick(NUMBERS);
            let b = a + 1.0 + r.below(300) as f64;
            match r.below(4) {
                0 => Item::Range(Some((a, r.chance(50))), None),
                1 => Item::Range(None, Some((a, r.chance(50)))),
                2 => Item::Range(Some((a, true)), Some((a, true))),
                _ => Item::Range(Some((a, r.chance(50))), Some((b, r.chance(50)))),
            }
        }
        12 => {
            if r.chance(50) {
                Item::Cidr("10.0.0.0/24".into(), 0x0A000000, 24)
            } else {
                Item::Cidr("10.0.0.0/16".into(), 0x0A000000, 16)
            }
        }
        _ => Item::Exists(r.chance(50)),
    }
}

fn gen_node(r: &mut Rng, depth: usize) -> Node {
    if depth >= 2 || r.chance(65) {
        Node::Leaf((0..1 + r.below(2)).map(|_| gen_item(r)).collect())
    } else {
        Node::Obj(gen_fields(r, depth + 1))
    }
}

fn gen_fields(r: &mut Rng, depth: usize) -> Vec<(String, Node)> {
    let mut used = Vec::new();
    let mut out = Vec::new();
    for _ in 0..1 + r.below(3) {
        let k = r.pick(KEYS).to_string();
        if used.contains(&k) {
            continue;
        }
        used.push(k.clone());
        out.push((k, gen_node(r, depth)));
    }
    out
}

fn gen_pat(r: &mut Rng, depth: usize) -> Pat {
    let fields = gen_fields(r, depth);
    let mut ors = Vec::new();
    if depth == 0 && r.chance(20) {
        ors.push((0..2 + r.below(2)).map(|_| gen_pat(r, 1)).collect());
    }
    Pat { fields, ors }
}

fn item_json(i: &Item) -> Value {
    match i {
        Item::Str(s) => json!(s),
        Item::Num(n) => json!(n),
        Item::Bool(b) => json!(b),
        Item::Null => Value::Null,
        Item::Prefix(s) => json!({ "prefix": s }),
        Item::Suffix(s) => json!({ "suffix": s }),
        Item::PrefixIc(s) => json!({ "prefix": { "equals-ignore-case": s } }),
        Item::Eic(s) => json!({ "equals-ignore-case": s }),
        Item::Wildcard(s) => json!({ "wildcard": s }),
        Item::ButStrs(v) => json!({ "anything-but": v }),
        Item::ButNums(v) => json!({ "anything-but": v }),
        Item::ButPrefix(s) => json!({ "anything-but": { "prefix": s } }),
        Item::Range(lo, hi) => {
            let mut a = Vec::new();
            match (lo, hi) {
                (Some((x, true)), Some((y, true))) if x == y => return json!({ "numeric": ["=", x] }),
                _ => {}
            }
            if let Some((x, inc)) = lo {
                a.push(json!(if *inc { ">=" } else { ">" }));
                a.push(json!(x));
            }
            if let Some((x, inc)) = hi {
                a.push(json!(if *inc { "<=" } else { "<" }));
                a.push(json!(x));
            }
            json!({ "numeric": a })
        }
        Item::Cidr(s, _, _) => json!({ "cidr": s }),
        Item::Exists(b) => json!({ "exists": b }),
    }
}

fn node_json(n: &Node) -> Value {
    match n {
        Node::Leaf(items) => Value::Array(items.iter().map(item_json).collect()),
        Node::Obj(fields) => Value::Object(fields.iter().map(|(k, v)| (k.clone(), node_json(v))).collect()),
    }
}

fn pat_json(p: &Pat) -> Value {
    let mut m: Map<String, Value> = p.fields.iter().map(|(k, v)| (k.clone(), node_json(v))).collect();
    for or in &p.ors {
        m.insert("$or".into(), Value::Array(or.iter().map(pat_json).collect()));
    }
    Value::Object(m)
}

/// A conjunction of (dotted path, any-of items).
type Conj = Vec<(String, Vec<Item>)>;

/// Disjunction of conjunctions; `None` if a path repeats (the crate rejects that).
fn expand(p: &Pat, prefix: &str) -> Option<Vec<Conj>> {
    fn walk(fields: &[(String, Node)], prefix: &str, out: &mut Vec<(String, Vec<Item>)>) {
        for (k, n) in fields {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match n {
                Node::Leaf(items) => out.push((path, items.clone())),
                Node::Obj(fs) => walk(fs, &path, out),
            }
        }
    }
    let mut base = Vec::new();
    walk(&p.fields, prefix, &mut base);
    let mut conjs = vec![base];
    for or in &p.ors {
        let mut alts = Vec::new();
        for b in or {
            alts.extend(expand(b, prefix)?);
        }
        let mut next = Vec::new();
        for c in &conjs {
            for a in &alts {
                let mut n = c.clone();
                n.extend(a.iter().cloned());
                next.push(n);
            }
        }
        conjs = next;
    }
    for c in &conjs {
        let mut paths: Vec<&String> = c.iter().map(|f| &f.0).collect();
        paths.sort();
        if paths.windows(2).any(|w| w[0] == w[1]) {
            return None;
        }
    }
    Some(conjs)
}

// ---------- events ----------

fn gen_scalar(r: &mut Rng) -> Value {
    match r.below(4) {
        0 | 1 => json!(r.pick(STRINGS)),
        2 => json!(r.pick(NUMBERS)),
        _ => {
            if r.chance(50) {
                Value::Null
            } else {
                json!(r.chance(50))
            }
        }
    }
}

fn gen_value(r: &mut Rng, depth: usize) -> Value {
    if depth >= 4 {
        return gen_scalar(r);
    }
    match r.below(10) {
        0..=3 => gen_scalar(r),
        4..=6 => {
            let mut m = Map::new();
            for _ in 0..r.below(4) {
                m.insert(r.pick(KEYS).to_string(), gen_value(r, depth + 1));
            }
            Value::Object(m)
        }
        _ => Value::Array((0..r.below(4)).map(|_| gen_value(r, depth + 1)).collect()),
    }
}

fn gen_event(r: &mut Rng) -> Value {
    let mut m = Map::new();
    for _ in 0..1 + r.below(4) {
        m.insert(r.pick(KEYS).to_string(), gen_value(r, 1));
    }
    Value::Object(m)
}

// ---------- reference evaluation ----------

struct Leaf {
    path: String,
    value: Value,
    trace: Vec<(usize, usize)>,
}

fn flatten(v: &Value, path: &str, trace: &mut Vec<(usize, usize)>, next_array: &mut usize, out: &mut Vec<Leaf>) {
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                flatten(c, &p, trace, next_array, out);
            }
        }
        Value::Array(items) => {
            let id = *next_array;
            *next_array += 1;
            for (i, c) in items.iter().enumerate() {
                trace.push((id, i));
                flatten(c, path, trace, next_array, out);
                trace.pop();
            }
        }
        _ => out.push(Leaf {
            path: path.to_string(),
            value: v.clone(),
            trace: trace.clone(),
        }),
    }
}

fn consistent(a: &[(usize, usize)], b: &[(usize, usize)]) -> bool {
    a.iter().all(|(arr, i)| b.iter().all(|(arr2, j)| arr != arr2 || i == j))
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') => (0..=s.len()).any(|k| glob(&p[1..], &s[k..])),
        Some(c) => s.first() == Some(c) && glob(&p[1..], &s[1..]),
    }
}

fn ipv4(s: &str) -> Option<u32> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() != 4 {
        return None;
    }
    let mut v = 0u32;
    for p in parts {
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) || (p.len() > 1 && p.starts_with('0'))
        {
            return None;
        }
        let n: u32 = p.parse().ok()?;
        if n > 255 {
            return None;
        }
        v = v << 8 | n;
    }
    Some(v)
}

fn item_ok(i: &Item, v: &Value) -> bool {
    let s = v.as_str();
    let n = if v.is_number() { v.as_f64() } else { None };
    match i {
        Item::Str(p) => match (s, ipv4(p)) {
            (Some(s), Some(ip)) => ipv4(s) == Some(ip),
            (Some(s), None) => s == p,
            _ => false,
        },
        Item::Num(x) => n == Some(*x),
        Item::Bool(b) => v.as_bool() == Some(*b),
        Item::Null => v.is_null(),
        Item::Prefix(p) => s.is_some_and(|s| s.starts_with(p.as_str())),
        Item::Suffix(p) => s.is_some_and(|s| s.ends_with(p.as_str())),
        Item::PrefixIc(p) => s.is_some_and(|s| s.to_lowercase().starts_with(&p.to_lowercase())),
        Item::Eic(p) => s.is_some_and(|s| s.to_lowercase() == p.to_lowercase()),
        Item::Wildcard(p) => s.is_some_and(|s| glob(p.as_bytes(), s.as_bytes())),
        Item::ButStrs(xs) => !s.is_some_and(|s| xs.iter().any(|x| x == s)),
        Item::ButNums(xs) => !n.is_some_and(|n| xs.contains(&n)),
        Item::ButPrefix(p) => !s.is_some_and(|s| s.starts_with(p.as_str())),
        Item::Range(lo, hi) => n.is_some_and(|x| {
            lo.is_none_or(|(b, inc)| if inc { x >= b } else { x > b })
                && hi.is_none_or(|(b, inc)| if inc { x <= b } else { x < b })
        }),
        Item::Cidr(_, net, bits) => s
            .and_then(ipv4)
            .is_some_and(|ip| (ip >> (32 - bits)) == (net >> (32 - bits))),
        Item::Exists(true) => true,
        Item::Exists(false) => false,
    }
}

fn conj_matches(fields: &[(String, Vec<Item>)], leaves: &[Leaf]) -> bool {
    let mut fields: Vec<&(String, Vec<Item>)> = fields.iter().collect();
    fields.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
    fn go(fields: &[&(String, Vec<Item>)], leaves: &[Leaf], chosen: &mut Vec<usize>) -> bool {
        let Some((f, rest)) = fields.split_first() else {
            return true;
        };
        let ok_with = |l: &Leaf, chosen: &[usize]| chosen.iter().all(|&c| consistent(&leaves[c].trace, &l.trace));
        for (i, l) in leaves.iter().enumerate() {
            if l.path == f.0 && f.1.iter().any(|it| item_ok(it, &l.value)) && ok_with(l, chosen) {
                chosen.push(i);
                if go(rest, leaves, chosen) {
                    return true;
                }
                chosen.pop();
            }
        }
        if f.1.iter().any(|it| matches!(it, Item::Exists(false)))
            && !leaves.iter().any(|l| l.path == f.0 && ok_with(l, chosen))
        {
            return go(rest, leaves, chosen);
        }
        false
    }
    go(&fields, leaves, &mut Vec::new())
}

#[test]
fn indexed_matcher_agrees_with_naive_reference() {
    let mut r = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut compared, mut matched, mut skipped) = (0usize, 0usize, 0usize);
    for _round in 0..1500 {
        let mut pats = Vec::new();
        let mut conjs = Vec::new();
        while pats.len() < 1 + r.below(8) {
            let p = gen_pat(&mut r, 0);
            match expand(&p, "") {
                Some(c) => {
                    pats.push(pat_json(&p));
                    conjs.push(c);
                }
                None => skipped += 1,
            }
        }
        let names: Vec<String> = (0..pats.len()).map(|i| format!("p{i}")).collect();
        let set = PatternSet::compile(names.iter().map(String::as_str).zip(pats.iter()))
            .unwrap_or_else(|e| panic!("generated pattern rejected: {e}\n{pats:#?}"));
        // The same patterns as the worker sees them, under `body`, to check pruned decoding.
        let under_body: Vec<Value> = pats.iter().map(|p| serde_json::json!({ "body": p })).collect();
        let body_set = PatternSet::compile(names.iter().map(String::as_str).zip(under_body.iter())).unwrap();
        for _ in 0..20 {
            let ev = gen_event(&mut r);
            let mut leaves = Vec::new();
            flatten(&ev, "", &mut Vec::new(), &mut 0, &mut leaves);
            let want: Vec<usize> = (0..pats.len())
                .filter(|&i| conjs[i].iter().any(|c| conj_matches(c, &leaves)))
                .collect();
            let mut got = Vec::new();
            set.matches(&ev, &mut got);
            assert_eq!(
                got,
                want,
                "\nevent: {ev}\npatterns: {}",
                serde_json::to_string(&pats).unwrap()
            );
            let pruned = body_set
                .decode_pruned("body", ev.to_string().as_bytes())
                .expect("valid JSON decodes");
            let mut via_pruned = Vec::new();
            body_set.matches(&serde_json::json!({ "body": pruned }), &mut via_pruned);
            assert_eq!(via_pruned, want, "pruned decoding changed the matches\nevent: {ev}");
            // Matching straight from bytes, split as the worker splits the envelope: one member
            // as JSON text, the others as a tree.
            let mut via_bytes = Vec::new();
            body_set
                .matches_json("body", ev.to_string().as_bytes(), &json!({}), &mut via_bytes)
                .expect("valid JSON matches");
            assert_eq!(via_bytes, want, "matching from bytes changed the matches\nevent: {ev}");
            for field in ev.as_object().expect("events are objects").keys() {
                let mut rest = ev.clone();
                let member = rest.as_object_mut().unwrap().remove(field).unwrap();
                let mut split = Vec::new();
                set.matches_json(field, member.to_string().as_bytes(), &rest, &mut split)
                    .expect("valid JSON matches");
                assert_eq!(
                    split,
                    want,
                    "matching member {field:?} from bytes changed the matches\nevent: {ev}\npatterns: {}",
                    serde_json::to_string(&pats).unwrap()
                );
            }
            for (i, p) in pats.iter().enumerate() {
                assert_eq!(
                    set.explain(i, &ev).matched,
                    want.contains(&i),
                    "explain disagrees\nevent: {ev}\npattern: {p}"
                );
            }
            compared += pats.len();
            matched += want.len();
        }
    }
    println!("compared {compared} pattern/event pairs, {matched} matches, {skipped} patterns skipped");
    assert!(
        matched > compared / 20,
        "generator should produce a fair share of matches"
    );
}

/// One large set, so many subpatterns share index entries and multi-field filters kick in.
#[test]
fn large_pattern_set_agrees_with_reference() {
    let mut r = Rng(0xA5A5_5A5A_0F0F_F0F0);
    let mut pats = Vec::new();
    let mut conjs = Vec::new();
    while pats.len() < 400 {
        let p = gen_pat(&mut r, 0);
        if let Some(c) = expand(&p, "") {
            pats.push(pat_json(&p));
            conjs.push(c);
        }
    }
    let names: Vec<String> = (0..pats.len()).map(|i| format!("p{i}")).collect();
    let set = PatternSet::compile(names.iter().map(String::as_str).zip(pats.iter())).unwrap();
    let mut total = 0;
    for _ in 0..400 {
        let ev = gen_event(&mut r);
        let mut leaves = Vec::new();
        flatten(&ev, "", &mut Vec::new(), &mut 0, &mut leaves);
        let want: Vec<usize> = (0..pats.len())
            .filter(|&i| conjs[i].iter().any(|c| conj_matches(c, &leaves)))
            .collect();
        let mut got = Vec::new();
        set.matches(&ev, &mut got);
        assert_eq!(got, want, "\nevent: {ev}");
        total += want.len();
    }
    assert!(total > 1000, "{total}");
}

/// Focused on array consistency: objects in (nested) arrays with shared keys.
#[test]
fn array_consistency_agrees_with_reference() {
    let mut r = Rng(0xDEAD_BEEF_1234_5678);
    for _ in 0..3000 {
        let key = |r: &mut Rng| r.pick(&["b", "c", "d"]).to_string();
        let mut inner = Vec::new();
        for _ in 0..r.below(4) {
            let mut m = Map::new();
            for _ in 0..1 + r.below(3) {
                let v = if r.chance(25) {
                    Value::Array((0..r.below(3)).map(|_| json!(r.below(3))).collect())
                } else {
                    json!(r.below(3))
                };
                m.insert(key(&mut r), v);
            }
            inner.push(if r.chance(20) {
                Value::Array(vec![Value::Object(m)])
            } else {
                Value::Object(m)
            });
        }
        let ev = json!({ "a": inner, "top": r.below(2) });
        let mut fields = Vec::new();
        for k in ["b", "c", "d"] {
            if r.chance(60) {
                let item = match r.below(4) {
                    0 => Item::Exists(false),
                    1 => Item::Exists(true),
                    _ => Item::Num(r.below(3) as f64),
                };
                fields.push((k.to_string(), Node::Leaf(vec![item])));
            }
        }
        if fields.is_empty() {
            continue;
        }
        let mut top = vec![("a".to_string(), Node::Obj(fields))];
        if r.chance(30) {
            top.push(("top".to_string(), Node::Leaf(vec![Item::Num(r.below(2) as f64)])));
        }
        let p = Pat {
            fields: top,
            ors: Vec::new(),
        };
        let conjs = expand(&p, "").unwrap();
        let pj = pat_json(&p);
        let set = PatternSet::compile([("p", &pj)]).unwrap();
        let mut leaves = Vec::new();
        flatten(&ev, "", &mut Vec::new(), &mut 0, &mut leaves);
        let want = conjs.iter().any(|c| conj_matches(c, &leaves));
        let mut got = Vec::new();
        set.matches(&ev, &mut got);
        assert_eq!(got == [0], want, "\nevent: {ev}\npattern: {pj}");
    }
}
