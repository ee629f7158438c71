//! Parse + match throughput: veltrix's matcher against the `quamina` crate, side by side on the
//! same 1,000 patterns and ~1 KB events (the subset of operators quamina accepts), plus veltrix
//! alone on the full mix (with `$or` and `wildcard`), and the cost of a rule's JSON Schema check
//! per event.
//!
//! Run: `cargo bench --bench matcher`. Results are summarised in BENCHMARKS.md.

mod workload;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::{json, Value};
use veltrix::rules::envelope;
use veltrix::rules::pattern::PatternSet;
use veltrix::rules::schema::Schema;
use veltrix_queue::{Attributes, SourceInfo};

/// The worker's allocator (see `src/main.rs`), for both matchers.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PATTERNS: usize = 1000;
const EVENTS: usize = 256;

/// veltrix's matcher as the worker holds it: the patterns (under `body`) and the envelope
/// members they look at.
struct Veltrix {
    set: PatternSet,
    fields: envelope::Fields,
}

fn veltrix_set(patterns: &[Value]) -> Veltrix {
    let wrapped: Vec<Value> = patterns.iter().map(|p| json!({ "body": p })).collect();
    let names: Vec<String> = (0..wrapped.len()).map(|i| format!("p{i}")).collect();
    let set =
        PatternSet::compile(names.iter().map(String::as_str).zip(wrapped.iter())).expect("bench patterns compile");
    let fields = envelope::Fields {
        attributes: set.uses_field("attributes"),
        source: set.uses_field("source"),
        delivery_attempt: set.uses_field("delivery_attempt"),
    };
    Veltrix { set, fields }
}

/// What the worker does per message (`RuleSet::plan_message`): build the envelope members
/// patterns look at besides the body (none here), and match the body straight from its bytes.
fn veltrix_match(set: &Veltrix, info: &SourceInfo, attrs: &Attributes, event: &[u8], out: &mut Vec<usize>) -> usize {
    let Veltrix { set, fields } = set;
    let rest = envelope::build_without_body(attrs, info, 1, *fields);
    out.clear();
    set.matches_json("body", event, &rest, out).unwrap();
    out.len()
}

/// Compiles both matchers on the same patterns, checks they agree on every event, and benches
/// them side by side.
fn side_by_side(c: &mut Criterion, group: &str, (patterns, events): (Vec<Value>, Vec<Vec<u8>>)) {
    let info = SourceInfo {
        kind: "memory",
        name: "bench".into(),
    };
    let attrs = Attributes::new();
    let set = veltrix_set(&patterns);
    // quamina's default automaton budget (10 MiB) is too small for 1,000 patterns.
    let mut quamina = quamina::QuaminaBuilder::<usize>::new()
        .with_arena_byte_budget(1 << 30)
        .build()
        .expect("quamina builds");
    for (i, p) in patterns.iter().enumerate() {
        quamina
            .add_pattern(i, &p.to_string())
            .expect("quamina accepts the shared subset");
    }
    let mut out = Vec::new();
    let mut total = 0;
    for e in &events {
        veltrix_match(&set, &info, &attrs, e, &mut out);
        let mut theirs = quamina.matches_for_event(e).unwrap();
        theirs.sort_unstable();
        assert_eq!(
            out,
            theirs,
            "veltrix and quamina disagree on event {}",
            String::from_utf8_lossy(e)
        );
        total += out.len();
    }
    let avg = events.iter().map(Vec::len).sum::<usize>() / events.len();
    eprintln!(
        "{group}: {PATTERNS} patterns, {EVENTS} events of {avg} bytes on average, {:.2} matching rules per event",
        total as f64 / events.len() as f64
    );
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("veltrix", |b| {
        let mut out = Vec::new();
        b.iter(|| {
            events
                .iter()
                .map(|e| veltrix_match(&set, &info, &attrs, black_box(e), &mut out))
                .sum::<usize>()
        })
    });
    g.bench_function("quamina", |b| {
        b.iter(|| {
            events
                .iter()
                .map(|e| quamina.matches_for_event(black_box(e)).unwrap().len())
                .sum::<usize>()
        })
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    side_by_side(
        c,
        "parse_and_match_1000_patterns_typical",
        workload::workload(PATTERNS, EVENTS, true),
    );
    side_by_side(
        c,
        "parse_and_match_1000_patterns_dense",
        workload::workload_with(&workload::Vocab::dense(), PATTERNS, EVENTS, true),
    );
    side_by_side(
        c,
        "parse_and_match_1000_exact_prefix_patterns",
        workload::workload_exact(PATTERNS, EVENTS),
    );

    // veltrix alone on the full operator mix (adds `$or` and `wildcard`).
    let info = SourceInfo {
        kind: "memory",
        name: "bench".into(),
    };
    let attrs = Attributes::new();
    let (full, events) = workload::workload(PATTERNS, EVENTS, false);
    let set = veltrix_set(&full);
    let mut g = c.benchmark_group("parse_and_match_1000_patterns_full_mix");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("veltrix", |b| {
        let mut out = Vec::new();
        b.iter(|| {
            events
                .iter()
                .map(|e| veltrix_match(&set, &info, &attrs, black_box(e), &mut out))
                .sum::<usize>()
        })
    });
    g.finish();

    schema_validation(c);
}

/// What a rule's `schema` adds per event: the full decode of the body (the pruned decode is not
/// enough for a schema) and the validation, against a schema of the workload's event shape.
fn schema_validation(c: &mut Criterion) {
    let (_, events) = workload::workload(PATTERNS, EVENTS, true);
    let schema =
        Schema::compile("bench/event.json", &workload::event_schema().to_string()).expect("the bench schema compiles");
    let bodies: Vec<Value> = events.iter().map(|e| serde_json::from_slice(e).unwrap()).collect();
    for body in &bodies {
        assert_eq!(schema.first_violation(body), None, "every bench event fits: {body}");
    }
    let mut broken = bodies[0].clone();
    broken["detail"]["amount"] = json!("12");
    assert!(
        schema.first_violation(&broken).is_some(),
        "the schema checks what it claims"
    );
    let mut g = c.benchmark_group("schema_validation_per_event");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("validate", |b| {
        b.iter(|| {
            bodies
                .iter()
                .filter(|body| schema.first_violation(black_box(body)).is_none())
                .count()
        })
    });
    g.bench_function("full_decode_and_validate", |b| {
        b.iter(|| {
            events
                .iter()
                .filter(|e| {
                    let body: Value = serde_json::from_slice(black_box(e)).unwrap();
                    schema.first_violation(&body).is_none()
                })
                .count()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
