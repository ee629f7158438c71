//! The benchmark workload shared by the matcher benchmarks: ~1 KB events and 1,000 mixed
//! EventBridge patterns, generated deterministically.
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

pub const TYPES: &[&str] = &[
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
pub const REGIONS: &[&str] = &[
    "eu-west-1",
    "eu-central-1",
    "us-east-1",
    "us-west-2",
    "ap-south-1",
    "sa-east-1",
];
pub const SOURCES: &[&str] = &["checkout", "payments", "identity", "warehouse", "billing", "support"];
pub const TIERS: &[&str] = &["free", "pro", "enterprise", "GOLD", "Silver"];

/// One ~1 KB event.
pub fn event(rng: &mut Rng, i: u64) -> Value {
    let items: Vec<Value> = (0..4)
        .map(|k| json!({"sku": format!("SKU-{:05}", rng.below(50_000)), "qty": rng.below(9) + 1, "price": (rng.below(100_000) as f64) / 100.0, "line": k}))
        .collect();
    json!({
        "version": "0",
        "id": format!("{:016x}-{i}", rng.next()),
        "detail-type": *rng.pick(TYPES),
        "source": format!("com.example.{}", rng.pick(SOURCES)),
        "account": format!("{:012}", rng.below(1_000_000_000_000)),
        "time": format!("2026-11-{:02}T{:02}:{:02}:00Z", rng.below(28) + 1, rng.below(24), rng.below(60)),
        "region": *rng.pick(REGIONS),
        "resources": [format!("arn:aws:example:{}:resource/{}", rng.pick(REGIONS), rng.below(10_000))],
        "detail": {
            "amount": rng.below(5_000),
            "currency": *rng.pick(&["EUR", "USD", "GBP", "JPY"]),
            "customer": {"id": format!("c-{}", rng.below(100_000)), "tier": *rng.pick(TIERS), "country": *rng.pick(&["DE", "FR", "US", "IN", "BR", "JP"])},
            "client_ip": format!("10.{}.{}.{}", rng.below(4), rng.below(256), rng.below(256)),
            "items": items,
            "flags": {"gift": rng.below(2) == 0, "express": rng.below(3) == 0},
            "note": "customer asked for delivery after 18:00, leave at the back door if nobody answers",
        }
    })
}

/// The kinds of patterns in the mix; `quamina_ok` says whether the quamina crate accepts it.
pub fn pattern(rng: &mut Rng, quamina_ok: bool) -> Value {
    let kinds = if quamina_ok { 9 } else { 11 };
    match rng.below(kinds) {
        0 => json!({"detail-type": [rng.pick(TYPES)], "source": [format!("com.example.{}", rng.pick(SOURCES))]}),
        1 => json!({"detail-type": [rng.pick(TYPES)], "detail": {"amount": [{"numeric": [">", rng.below(5000)]}]}}),
        2 => json!({"region": [{"prefix": &rng.pick(REGIONS)[..3]}], "detail-type": [rng.pick(TYPES)]}),
        3 => {
            json!({"detail": {"customer": {"tier": [{"equals-ignore-case": rng.pick(TIERS).to_lowercase()}]}}, "detail-type": [rng.pick(TYPES)]})
        }
        4 => {
            json!({"detail": {"currency": [{"anything-but": ["EUR", "USD"]}], "customer": {"country": [rng.pick(&["DE", "FR", "US"])]}}})
        }
        5 => json!({"detail": {"items": {"sku": [format!("SKU-{:05}", rng.below(50_000))]}}}),
        6 => json!({"source": [{"suffix": rng.pick(SOURCES)}], "detail": {"flags": {"gift": [true]}}}),
        7 => {
            json!({"detail-type": [rng.pick(TYPES), rng.pick(TYPES)], "detail": {"amount": [{"numeric": [">=", 100, "<", 100 + rng.below(4000)]}]}})
        }
        8 => {
            json!({"detail": {"client_ip": [{"cidr": format!("10.{}.0.0/16", rng.below(4))}], "customer": {"tier": ["pro"]}}})
        }
        9 => {
            json!({"$or": [{"detail-type": [rng.pick(TYPES)]}, {"detail": {"amount": [{"numeric": ["<", rng.below(50)]}]}}]})
        }
        _ => {
            json!({"detail": {"note": [{"wildcard": "*delivery*door*"}], "customer": {"id": [format!("c-{}", rng.below(100_000))]}}})
        }
    }
}

/// `n` patterns and `events` serialized events.
pub fn workload(n: usize, events: usize, quamina_ok: bool) -> (Vec<Value>, Vec<Vec<u8>>) {
    let mut rng = Rng::new(0x5eed);
    let patterns = (0..n).map(|_| pattern(&mut rng, quamina_ok)).collect();
    let events = (0..events as u64)
        .map(|i| serde_json::to_vec(&event(&mut rng, i)).unwrap())
        .collect();
    (patterns, events)
}
