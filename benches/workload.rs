//! The benchmark workload shared by the benchmarks: ~0.7 KB events and mixed EventBridge
//! patterns, generated deterministically.
#![allow(dead_code)]

use serde_json::{json, Value};

/// A small deterministic RNG (xorshift64*), so every run benchmarks the same data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const TYPES: &[&str] = &[
    "order.created",
    "order.paid",
    "order.shipped",
    "order.cancelled",
    "payment.succeeded",
    "payment.failed",
    "user.signed_up",
    "user.deleted",
    "inventory.low",
    "inventory.restocked",
    "invoice.issued",
    "refund.requested",
];
const REGIONS: &[&str] = &[
    "eu-west-1",
    "eu-central-1",
    "us-east-1",
    "us-west-2",
    "ap-south-1",
    "sa-east-1",
];
const SOURCES: &[&str] = &["checkout", "payments", "identity", "warehouse", "billing", "support"];
const TIERS: &[&str] = &["free", "pro", "enterprise", "GOLD", "Silver"];

/// The names events and patterns draw from. A small vocabulary makes many rules match each event
/// (dense); a large one gives the few matches per event of a typical deployment.
pub struct Vocab {
    pub types: Vec<String>,
    pub sources: Vec<String>,
}

impl Vocab {
    /// 12 event types, 6 sources.
    pub fn dense() -> Self {
        Self {
            types: TYPES.iter().map(|t| t.to_string()).collect(),
            sources: SOURCES.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// 240 event types (12 × 20 tenants), 60 sources.
    pub fn typical() -> Self {
        Self {
            types: (0..20)
                .flat_map(|t| TYPES.iter().map(move |ty| format!("{ty}.t{t}")))
                .collect(),
            sources: (0..10)
                .flat_map(|t| SOURCES.iter().map(move |s| format!("{s}{t}")))
                .collect(),
        }
    }
}

/// One ~0.7 KB event.
pub fn event(rng: &mut Rng, v: &Vocab, i: u64) -> Value {
    let items: Vec<Value> = (0..4)
        .map(|k| {
            json!({"sku": format!("SKU-{:05}", rng.below(50_000)), "qty": rng.below(9) + 1,
                   "price": (rng.below(100_000) as f64) / 100.0, "line": k})
        })
        .collect();
    json!({
        "version": "0",
        "id": format!("{:016x}-{i}", rng.next()),
        "detail-type": rng.pick(&v.types),
        "source": format!("com.example.{}", rng.pick(&v.sources)),
        "account": format!("{:012}", rng.below(1_000_000_000_000)),
        "time": format!("2026-11-{:02}T{:02}:{:02}:00Z", rng.below(28) + 1, rng.below(24), rng.below(60)),
        "region": *rng.pick(REGIONS),
        "resources": [format!("arn:aws:example:{}:resource/{}", rng.pick(REGIONS), rng.below(10_000))],
        "detail": {
            "amount": rng.below(5_000),
            "currency": *rng.pick(&["EUR", "USD", "GBP", "JPY"]),
            "customer": {"id": format!("c-{}", rng.below(100_000)), "tier": *rng.pick(TIERS),
                         "country": *rng.pick(&["DE", "FR", "US", "IN", "BR", "JP"])},
            "client_ip": format!("10.{}.{}.{}", rng.below(4), rng.below(256), rng.below(256)),
            "items": items,
            "flags": {"gift": rng.below(2) == 0, "express": rng.below(3) == 0},
            "note": "customer asked for delivery after 18:00, leave at the back door if nobody answers",
        }
    })
}

/// A draft 2020-12 schema every [`event`] fits: required members, types, enums, formats of
/// ids, and the line items' shape.
pub fn event_schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["version", "id", "detail-type", "source", "account", "time", "region", "detail"],
        "properties": {
            "version": {"const": "0"},
            "id": {"type": "string", "minLength": 1},
            "detail-type": {"type": "string"},
            "source": {"type": "string", "pattern": "^com\\.example\\."},
            "account": {"type": "string", "pattern": "^[0-9]{12}$"},
            "time": {"type": "string"},
            "region": {"enum": REGIONS},
            "resources": {"type": "array", "items": {"type": "string"}},
            "detail": {
                "type": "object",
                "required": ["amount", "currency", "customer", "items"],
                "properties": {
                    "amount": {"type": "integer", "minimum": 0},
                    "currency": {"enum": ["EUR", "USD", "GBP", "JPY"]},
                    "customer": {
                        "type": "object",
                        "required": ["id", "tier"],
                        "properties": {"id": {"type": "string"}, "tier": {"enum": TIERS}, "country": {"type": "string", "maxLength": 2}}
                    },
                    "client_ip": {"type": "string"},
                    "items": {"type": "array", "maxItems": 100, "items": {"$ref": "#/$defs/item"}},
                    "flags": {"type": "object", "additionalProperties": {"type": "boolean"}},
                    "note": {"type": "string", "maxLength": 1000}
                }
            }
        },
        "$defs": {
            "item": {
                "type": "object",
                "required": ["sku", "qty", "price"],
                "properties": {
                    "sku": {"type": "string", "pattern": "^SKU-[0-9]{5}$"},
                    "qty": {"type": "integer", "minimum": 1},
                    "price": {"type": "number", "minimum": 0},
                    "line": {"type": "integer"}
                }
            }
        }
    })
}

/// One pattern of the mix. With `quamina_ok`, only kinds the quamina crate accepts.
pub fn pattern(rng: &mut Rng, v: &Vocab, quamina_ok: bool) -> Value {
    let kinds = if quamina_ok { 9 } else { 11 };
    let ty = rng.pick(&v.types).clone();
    match rng.below(kinds) {
        0 => json!({"detail-type": [ty], "source": [format!("com.example.{}", rng.pick(&v.sources))]}),
        1 => json!({"detail-type": [ty], "detail": {"amount": [{"numeric": [">", rng.below(5000)]}]}}),
        2 => json!({"region": [{"prefix": &rng.pick(REGIONS)[..3]}], "detail-type": [ty]}),
        3 => json!({"detail-type": [ty],
                    "detail": {"customer": {"tier": [{"equals-ignore-case": rng.pick(TIERS).to_lowercase()}]}}}),
        4 => json!({"detail-type": [ty],
                    "detail": {"currency": [{"anything-but": ["EUR", "USD"]}],
                               "customer": {"country": [rng.pick(&["DE", "FR", "US"])]}}}),
        5 => json!({"detail": {"items": {"sku": [format!("SKU-{:05}", rng.below(50_000))]}}}),
        6 => json!({"source": [{"suffix": rng.pick(&v.sources)}], "detail": {"flags": {"gift": [true]}}}),
        7 => json!({"detail-type": [ty, rng.pick(&v.types)],
                    "detail": {"amount": [{"numeric": [">=", 100, "<", 100 + rng.below(4000)]}]}}),
        8 => json!({"detail-type": [ty],
                    "detail": {"client_ip": [{"cidr": format!("10.{}.0.0/16", rng.below(4))}], "customer": {"tier": ["pro"]}}}),
        9 => json!({"$or": [{"detail-type": [ty]}, {"detail": {"amount": [{"numeric": ["<", rng.below(50)]}]}}]}),
        _ => json!({"detail": {"note": [{"wildcard": "*delivery*door*"}],
                               "customer": {"id": [format!("c-{}", rng.below(100_000))]}}}),
    }
}

/// Only exact values and prefixes: the kinds quamina's automaton handles best.
pub fn pattern_exact(rng: &mut Rng, v: &Vocab) -> Value {
    let ty = rng.pick(&v.types).clone();
    match rng.below(3) {
        0 => json!({"detail-type": [ty], "source": [format!("com.example.{}", rng.pick(&v.sources))]}),
        1 => json!({"region": [{"prefix": &rng.pick(REGIONS)[..3]}], "detail-type": [ty]}),
        _ => json!({"detail": {"items": {"sku": [format!("SKU-{:05}", rng.below(50_000))]}}}),
    }
}

/// `n` exact/prefix patterns and `events` events over the typical vocabulary.
pub fn workload_exact(n: usize, events: usize) -> (Vec<Value>, Vec<Vec<u8>>) {
    let v = Vocab::typical();
    let mut rng = Rng::new(0x5eed);
    let patterns = (0..n).map(|_| pattern_exact(&mut rng, &v)).collect();
    let events = (0..events as u64)
        .map(|i| serde_json::to_vec(&event(&mut rng, &v, i)).unwrap())
        .collect();
    (patterns, events)
}

/// `n` patterns and `events` serialized events over the typical vocabulary.
pub fn workload(n: usize, events: usize, quamina_ok: bool) -> (Vec<Value>, Vec<Vec<u8>>) {
    workload_with(&Vocab::typical(), n, events, quamina_ok)
}

/// [`workload`] over a chosen vocabulary.
pub fn workload_with(v: &Vocab, n: usize, events: usize, quamina_ok: bool) -> (Vec<Value>, Vec<Vec<u8>>) {
    let mut rng = Rng::new(0x5eed);
    let patterns = (0..n).map(|_| pattern(&mut rng, v, quamina_ok)).collect();
    let events = (0..events as u64)
        .map(|i| serde_json::to_vec(&event(&mut rng, v, i)).unwrap())
        .collect();
    (patterns, events)
}

/// 99 workload rules that drop, plus one catch-all (`detail-type` exists) with `forward` as its
/// action: the 100-rule config of the pipeline benchmarks.
pub fn rules_100(forward: Value) -> std::sync::Arc<veltrix::rules::RuleSet> {
    let (patterns, _) = workload(99, 0, true);
    let mut rules: Vec<Value> = patterns
        .iter()
        .enumerate()
        .map(|(i, p)| json!({"name": format!("r{i}"), "match": {"body": p}, "actions": [{"type": "drop"}]}))
        .collect();
    rules.push(json!({"name": "all", "match": {"body": {"detail-type": [{"exists": true}]}}, "actions": [forward]}));
    let config = json!({
        "source": {"type": "file", "path": "-"},
        "targets": {"dlq": {"type": "stdout"}, "out": {"type": "stdout"}},
        "pipeline": {"dead_letter": "dlq", "unmatched": "ack"},
        "rules": rules,
    });
    veltrix::config::load_str(std::path::Path::new("bench.json"), &config.to_string(), &|_| None)
        .expect("bench config")
        .rules
}

/// Queues `n` workload events (2,000 distinct ones, repeated) on `queue`.
pub fn fill(queue: &veltrix_queue::memory::MemoryQueue, n: usize) {
    let (_, events) = workload(0, 2000, true);
    for i in 0..n {
        queue.push_body(events[i % events.len()].clone());
    }
}
