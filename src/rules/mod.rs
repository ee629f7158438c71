//! Rules: patterns, actions and transforms, compiled once at start-up and evaluated by pure
//! code (no I/O) into a [`Plan`] the pipeline executes.
//!
//! Evaluation: every rule whose pattern matches fires, in file order (fan-out); a rule with
//! `final = true` stops evaluation after it. Then:
//! 1. a matched rule with a [`schema`] checks the body against it; a body that does not fit
//!    dead-letters the event (`schema_invalid`, naming the JSON pointer and the keyword) and
//!    nothing is forwarded;
//! 2. transforms run (in the [`sandbox`](crate::sandbox): the plan lists them as pending and
//!    [`Plan::complete_transforms`] takes their results); if one fails, the event is
//!    dead-lettered (`transform_failed`, or `transform_budget_exceeded` when it broke its time,
//!    size or memory budget) and nothing is forwarded, so a replay after the fix does not
//!    duplicate the other forwards;
//! 3. otherwise every `forward` is published; after that the message is dead-lettered if a
//!    matched rule has a `dead_letter` action, else retried if one has `retry` (dead-lettered
//!    with `retry_budget_exhausted` once the budget is spent), else acked;
//! 4. an event no rule matches follows `pipeline.unmatched`.

pub mod envelope;
pub mod pattern;
pub mod plan;
pub mod schema;
pub mod transform;

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::Value;
use veltrix_queue::{Attributes, SourceInfo};

use crate::rules::pattern::{Explanation, PatternSet};
use crate::rules::plan::{DeadLetter, Disposition, Forward, ForwardBody, Plan, Reason};
use crate::rules::schema::{Schema, Violation};
use crate::rules::transform::Transform;

/// How many nearest rules explanations of unmatched events name.
pub const NEAREST_RULES: usize = 3;
/// Longest `veltrix.explain` text, in bytes (before the `…` of a cut).
pub const MAX_EXPLAIN_BYTES: usize = 1024;

/// What to do with an event no rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmatched {
    /// Write it to the dead-letter target.
    DeadLetter,
    /// Ack it.
    Ack,
}

/// One compiled action.
#[derive(Debug, Clone)]
pub enum Action {
    /// Publish to target `target` (an index into the target list).
    Forward {
        /// Target index.
        target: usize,
        /// Transform applied first, if any.
        transform: Option<Arc<Transform>>,
    },
    /// Ack without forwarding.
    Drop,
    /// Dead-letter with the operator's reason.
    DeadLetter {
        /// Reason recorded in `veltrix.reason`.
        reason: String,
    },
    /// Redeliver later with backoff.
    Retry,
}

/// One compiled rule (its pattern lives in the [`PatternSet`]).
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique name.
    pub name: String,
    /// Stop after this rule when it matches.
    pub is_final: bool,
    /// Retry budget override.
    pub max_attempts: Option<u32>,
    /// The schema matching bodies must fit, if any.
    pub schema: Option<Arc<Schema>>,
    /// Actions, in order.
    pub actions: Vec<Action>,
}

/// What a rule's schema said of one body (see [`RuleSet::check_schema`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaCheck {
    /// The schema's path, as the config wrote it.
    pub schema: String,
    /// Up to [`schema::MAX_VIOLATIONS_LISTED`] violations; empty when the body fits.
    pub violations: Vec<Violation>,
    /// How many violations there are in all.
    pub total: usize,
}

/// All rules of a config, compiled.
pub struct RuleSet {
    patterns: PatternSet,
    /// Envelope fields some pattern looks at (the rest is not built for matching).
    matching_fields: envelope::Fields,
    rules: Vec<Rule>,
    /// Every distinct transform, by the index plans and the sandbox use.
    transforms: Vec<Arc<Transform>>,
    /// Per rule, per action: the index of its transform in `transforms`.
    transform_ids: Vec<Vec<Option<usize>>>,
    unmatched: Unmatched,
    default_max_attempts: u32,
}

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet")
            .field("rules", &self.rules)
            .field("unmatched", &self.unmatched)
            .field("default_max_attempts", &self.default_max_attempts)
            .finish_non_exhaustive()
    }
}

impl RuleSet {
    /// Assembles a rule set; `patterns` holds one pattern per rule, in the same order.
    pub fn new(patterns: PatternSet, rules: Vec<Rule>, unmatched: Unmatched, default_max_attempts: u32) -> Self {
        assert_eq!(patterns.len(), rules.len(), "one pattern per rule");
        let matching_fields = envelope::Fields {
            attributes: patterns.uses_field("attributes"),
            source: patterns.uses_field("source"),
            delivery_attempt: patterns.uses_field("delivery_attempt"),
        };
        let mut transforms: Vec<Arc<Transform>> = Vec::new();
        let transform_ids = rules
            .iter()
            .map(|rule| {
                rule.actions
                    .iter()
                    .map(|action| match action {
                        Action::Forward { transform: Some(t), .. } => {
                            Some(match transforms.iter().position(|known| Arc::ptr_eq(known, t)) {
                                Some(i) => i,
                                None => {
                                    transforms.push(t.clone());
                                    transforms.len() - 1
                                }
                            })
                        }
                        _ => None,
                    })
                    .collect()
            })
            .collect();
        Self {
            patterns,
            matching_fields,
            rules,
            transforms,
            transform_ids,
            unmatched,
            default_max_attempts,
        }
    }

    /// Every distinct transform, by index (what [`ForwardBody::Pending`] refers to).
    pub fn transforms(&self) -> &[Arc<Transform>] {
        &self.transforms
    }

    /// The source text of every transform, by index (what the sandbox compiles).
    pub fn transform_sources(&self) -> Vec<String> {
        self.transforms.iter().map(|t| t.source().to_string()).collect()
    }

    /// Runs the pending transforms of `plan` with `runner` (the sandbox, or in process).
    /// Returns an error when they could not run at all (retry later).
    pub fn run_transforms(&self, plan: &mut Plan, runner: &dyn crate::sandbox::RunTransforms) -> Option<String> {
        let input = plan.transform_input.clone().unwrap_or_default();
        plan.complete_transforms(&self.rules, |id| runner.run_transform(id, &input))
    }

    /// Runs the pending transforms of `plan` in this process, without budgets (tests, trusted
    /// tools; the worker uses the sandbox).
    pub fn run_transforms_in_process(&self, plan: &mut Plan) {
        let _ = self.run_transforms(plan, &crate::sandbox::InProcess(self));
    }

    /// The rules, in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The default retry budget.
    pub fn default_max_attempts(&self) -> u32 {
        self.default_max_attempts
    }

    /// Indices of matching rules, in file order, cut after the first `final` one.
    pub fn matching(&self, envelope: &Value, out: &mut Vec<usize>) {
        out.clear();
        self.patterns.matches(envelope, out);
        self.stop_at_final(out);
    }

    /// Drops the matches after the first `final` rule.
    fn stop_at_final(&self, matched: &mut Vec<usize>) {
        if let Some(cut) = matched.iter().position(|&i| self.rules[i].is_final) {
            matched.truncate(cut + 1);
        }
    }

    /// What happens to events no rule matches.
    pub fn unmatched(&self) -> Unmatched {
        self.unmatched
    }

    /// Rule `rule`'s pattern in short form (see [`PatternSet::describe`]).
    pub fn describe_pattern(&self, rule: usize) -> String {
        self.patterns.describe(rule)
    }

    /// Why rule `rule` did or did not match.
    pub fn explain(&self, rule: usize, envelope: &Value) -> Explanation {
        self.patterns.explain(rule, envelope)
    }

    /// For an event no rule matched: the rules with the fewest failing fields (at most
    /// [`NEAREST_RULES`], nearest first), each with its explanation.
    pub fn nearest(&self, envelope: &Value) -> Vec<(usize, Explanation)> {
        self.patterns.nearest(envelope, NEAREST_RULES)
    }

    /// The `veltrix.explain` text of an unmatched event: its nearest rules and their failing
    /// fields on one line, at most [`MAX_EXPLAIN_BYTES`], e.g.
    /// `nearest: orders (1 failing: body.type: wanted equals "order.created", found string "order.cancelled")`.
    pub fn why_unmatched(&self, envelope: &Value) -> String {
        if self.rules.is_empty() {
            return "no rules".into();
        }
        let nearest = self.nearest(envelope);
        if nearest.is_empty() {
            return "nearest rules not ranked: the event has too many values at pattern paths".into();
        }
        let parts: Vec<String> = nearest
            .iter()
            .map(|(id, e)| {
                let failing: Vec<String> = e.fields.iter().filter(|f| !f.matched).map(|f| f.to_string()).collect();
                let failing = if failing.is_empty() {
                    e.note.clone().unwrap_or_default()
                } else {
                    failing.join("; ")
                };
                format!("{} ({failing})", self.rules[*id].name)
            })
            .collect();
        crate::pipeline::dead_letters::truncate(&format!("nearest: {}", parts.join(" | ")), MAX_EXPLAIN_BYTES)
    }

    /// Decides what to do with a message from its raw parts. The body is matched straight from
    /// its bytes (see [`PatternSet::matches_json`]: no JSON tree is built for matching), and
    /// decoded as a tree only when the plan needs one: in full when a matched rule has a
    /// transform or a schema, pruned to pattern paths to explain an unmatched event. A body
    /// that is not JSON is a string; one that is not UTF-8 is dead-lettered as
    /// `undecodable_body`.
    pub fn plan_message(
        &self,
        body: &[u8],
        attributes: &Attributes,
        source: &SourceInfo,
        delivery_attempt: u32,
    ) -> Plan {
        let fields = self.matching_fields;
        let mut matched = Vec::new();
        let rest = envelope::build_without_body(attributes, source, delivery_attempt, fields);
        if self.patterns.matches_json("body", body, &rest, &mut matched).is_ok() {
            self.stop_at_final(&mut matched);
            if !self.needs_full_envelope(&matched) {
                let pruned = || {
                    // The bytes were just decoded without error by the same parser.
                    let body = self.patterns.decode_pruned("body", body).unwrap_or(Value::Null);
                    Cow::Owned(envelope::build_only(body, attributes, source, delivery_attempt, fields))
                };
                return self.plan_decided(matched, &pruned, delivery_attempt);
            }
        } else {
            let text = match std::str::from_utf8(body) {
                Ok(text) => text,
                Err(e) => {
                    let error = envelope::UndecodableBody {
                        offset: e.valid_up_to(),
                    }
                    .to_string();
                    return Plan::dead_letter(Reason::UndecodableBody, None, error, self.default_max_attempts);
                }
            };
            let env = envelope::build_only(
                Value::String(text.to_string()),
                attributes,
                source,
                delivery_attempt,
                fields,
            );
            self.matching(&env, &mut matched);
            if !self.needs_full_envelope(&matched) {
                return self.plan_matched(matched, &env, delivery_attempt);
            }
        }
        // Matching skips what no pattern reads without validating it (invalid UTF-8 inside an
        // unread string, say); the full decode does not, so it can still fail here.
        let full_body = match envelope::decode_body(body) {
            Ok(v) => v,
            Err(e) => {
                return Plan::dead_letter(Reason::UndecodableBody, None, e.to_string(), self.default_max_attempts);
            }
        };
        let full = envelope::build(full_body, attributes, source, delivery_attempt);
        self.plan_matched(matched, &full, delivery_attempt)
    }

    /// True when one of the `matched` rules transforms or checks a schema (and so needs the
    /// whole envelope).
    pub fn needs_full_envelope(&self, matched: &[usize]) -> bool {
        matched.iter().any(|&i| {
            let rule = &self.rules[i];
            rule.schema.is_some()
                || rule
                    .actions
                    .iter()
                    .any(|a| matches!(a, Action::Forward { transform: Some(_), .. }))
        })
    }

    /// For rule `rule`, when it has a schema: what the schema says of the envelope's body.
    pub fn check_schema(&self, rule: usize, envelope: &Value) -> Option<SchemaCheck> {
        let schema = self.rules[rule].schema.as_ref()?;
        let body = envelope.get("body").unwrap_or(&Value::Null);
        Some(SchemaCheck {
            schema: schema.path().to_string(),
            violations: schema.violations(body, schema::MAX_VIOLATIONS_LISTED),
            total: schema.count_violations(body),
        })
    }

    /// The dead letter of the first matched rule whose schema the body does not fit.
    fn schema_violation<'e>(&self, matched: &[usize], envelope: &dyn Fn() -> Cow<'e, Value>) -> Option<DeadLetter> {
        if !matched.iter().any(|&i| self.rules[i].schema.is_some()) {
            return None;
        }
        let envelope = envelope();
        let body = envelope.get("body").unwrap_or(&Value::Null);
        matched.iter().find_map(|&i| {
            let rule = &self.rules[i];
            let schema = rule.schema.as_ref()?;
            let violation = schema.first_violation(body)?;
            let error = format!(
                "rule `{}`: the body does not fit schema {}: {violation}",
                rule.name,
                schema.path()
            );
            Some(DeadLetter {
                reason: Reason::SchemaInvalid,
                rule: Some(rule.name.clone()),
                error: crate::pipeline::dead_letters::truncate(&error, MAX_EXPLAIN_BYTES),
                explain: None,
            })
        })
    }

    /// Decides what to do with an event on its `delivery_attempt`-th delivery.
    pub fn plan(&self, envelope: &Value, delivery_attempt: u32) -> Plan {
        let mut matched = Vec::new();
        self.matching(envelope, &mut matched);
        self.plan_matched(matched, envelope, delivery_attempt)
    }

    /// Like [`RuleSet::plan`], for rules already matched.
    pub fn plan_matched(&self, matched: Vec<usize>, envelope: &Value, delivery_attempt: u32) -> Plan {
        self.plan_decided(matched, &|| Cow::Borrowed(envelope), delivery_attempt)
    }

    /// [`RuleSet::plan_matched`] with the envelope made on demand: it is read only to explain
    /// an unmatched event, to check schemas and as the input of transforms.
    fn plan_decided<'e>(
        &self,
        matched: Vec<usize>,
        envelope: &dyn Fn() -> Cow<'e, Value>,
        delivery_attempt: u32,
    ) -> Plan {
        let max_attempts = matched
            .iter()
            .filter_map(|&i| self.rules[i].max_attempts)
            .min()
            .unwrap_or(self.default_max_attempts);
        if matched.is_empty() {
            let disposition = match self.unmatched {
                Unmatched::Ack => Disposition::Ack,
                Unmatched::DeadLetter => Disposition::DeadLetter(DeadLetter {
                    reason: Reason::Unmatched,
                    rule: None,
                    error: "no rule matched this event".into(),
                    explain: Some(self.why_unmatched(&envelope())),
                }),
            };
            return Plan {
                matched,
                forwards: Vec::new(),
                disposition,
                max_attempts,
                transform_input: None,
            };
        }
        if let Some(dl) = self.schema_violation(&matched, envelope) {
            return Plan {
                matched,
                forwards: Vec::new(),
                disposition: Disposition::DeadLetter(dl),
                max_attempts,
                transform_input: None,
            };
        }
        let mut forwards = Vec::new();
        let mut dead_letter = None;
        let mut retry = None;
        for &rule_index in &matched {
            let rule = &self.rules[rule_index];
            for (action_index, action) in rule.actions.iter().enumerate() {
                match action {
                    Action::Forward { target, transform } => {
                        let body = match (transform, self.transform_ids[rule_index][action_index]) {
                            (Some(_), Some(id)) => ForwardBody::Pending(id),
                            _ => ForwardBody::Original,
                        };
                        forwards.push(Forward {
                            rule: rule_index,
                            action: action_index,
                            target: *target,
                            body,
                        });
                    }
                    Action::Drop => {}
                    Action::DeadLetter { reason } => {
                        dead_letter.get_or_insert_with(|| DeadLetter {
                            explain: None,
                            reason: Reason::Rule(reason.clone()),
                            rule: Some(rule.name.clone()),
                            error: format!("rule `{}` dead-letters matching events", rule.name),
                        });
                    }
                    Action::Retry => {
                        retry.get_or_insert(rule_index);
                    }
                }
            }
        }
        let disposition = match (dead_letter, retry) {
            (Some(dl), _) => Disposition::DeadLetter(dl),
            (None, Some(rule)) if delivery_attempt >= max_attempts => Disposition::DeadLetter(DeadLetter {
                explain: None,
                reason: Reason::RetryBudgetExhausted,
                rule: Some(self.rules[rule].name.clone()),
                error: format!(
                    "rule `{}` asked for a retry; all {max_attempts} attempts are used",
                    self.rules[rule].name
                ),
            }),
            (None, Some(rule)) => Disposition::Retry { rule },
            (None, None) => Disposition::Ack,
        };
        let transform_input = forwards
            .iter()
            .any(|f| matches!(f.body, ForwardBody::Pending(_)))
            .then(|| serde_json::to_vec(envelope().as_ref()).expect("a JSON value always serializes"));
        Plan {
            matched,
            forwards,
            disposition,
            max_attempts,
            transform_input,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::plan::Outcome;
    use super::*;
    use serde_json::json;

    fn rule(name: &str, actions: Vec<Action>) -> Rule {
        Rule {
            name: name.into(),
            is_final: false,
            max_attempts: None,
            schema: None,
            actions,
        }
    }

    fn set(patterns: Vec<Value>, rules: Vec<Rule>, unmatched: Unmatched) -> RuleSet {
        let named: Vec<(&str, &Value)> = rules.iter().map(|r| r.name.as_str()).zip(patterns.iter()).collect();
        RuleSet::new(PatternSet::compile(named).unwrap(), rules, unmatched, 3)
    }

    fn event(body: Value) -> Value {
        json!({"body": body, "attributes": {}})
    }

    #[test]
    fn fans_out_in_file_order_and_final_stops() {
        let mut r2 = rule(
            "b",
            vec![Action::Forward {
                target: 1,
                transform: None,
            }],
        );
        r2.is_final = true;
        let rs = set(
            vec![
                json!({"body": {"t": ["x"]}}),
                json!({"body": {"t": ["x"]}}),
                json!({"body": {"t": ["x"]}}),
            ],
            vec![
                rule(
                    "a",
                    vec![Action::Forward {
                        target: 0,
                        transform: None,
                    }],
                ),
                r2,
                rule("c", vec![Action::Drop]),
            ],
            Unmatched::DeadLetter,
        );
        let plan = rs.plan(&event(json!({"t": "x"})), 1);
        assert_eq!(plan.matched, vec![0, 1]);
        assert_eq!(plan.forwards.iter().map(|f| f.target).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(plan.outcome(), Outcome::Forward);
    }

    #[test]
    fn unmatched_follows_the_setting() {
        let rs = set(
            vec![json!({"body": {"t": ["x"]}})],
            vec![rule("a", vec![Action::Drop])],
            Unmatched::DeadLetter,
        );
        let plan = rs.plan(&event(json!({"t": "y"})), 1);
        assert!(matches!(&plan.disposition, Disposition::DeadLetter(d) if d.reason == Reason::Unmatched));
        let rs = set(
            vec![json!({"body": {"t": ["x"]}})],
            vec![rule("a", vec![Action::Drop])],
            Unmatched::Ack,
        );
        assert_eq!(rs.plan(&event(json!({"t": "y"})), 1).outcome(), Outcome::Ack);
        assert_eq!(rs.plan(&event(json!({"t": "x"})), 1).outcome(), Outcome::Drop);
    }

    #[test]
    fn retry_turns_into_dead_letter_when_the_budget_is_spent() {
        let rs = set(
            vec![json!({"body": {"t": ["x"]}})],
            vec![rule("a", vec![Action::Retry])],
            Unmatched::Ack,
        );
        assert_eq!(
            rs.plan(&event(json!({"t": "x"})), 2).disposition,
            Disposition::Retry { rule: 0 }
        );
        let plan = rs.plan(&event(json!({"t": "x"})), 3);
        assert!(matches!(&plan.disposition, Disposition::DeadLetter(d) if d.reason == Reason::RetryBudgetExhausted));
    }

    #[test]
    fn failing_transform_dead_letters_without_forwarding() {
        let t = Arc::new(Transform::compile(".body.n + 1").unwrap());
        let rs = set(
            vec![json!({"body": {"t": ["x"]}}), json!({"body": {"t": ["x"]}})],
            vec![
                rule(
                    "ok",
                    vec![Action::Forward {
                        target: 0,
                        transform: None,
                    }],
                ),
                rule(
                    "bad",
                    vec![Action::Forward {
                        target: 0,
                        transform: Some(t),
                    }],
                ),
            ],
            Unmatched::Ack,
        );
        let mut plan = rs.plan(&event(json!({"t": "x", "n": "str"})), 1);
        assert_eq!(plan.pending_transforms(), vec![0]);
        rs.run_transforms_in_process(&mut plan);
        assert!(plan.forwards.is_empty());
        match plan.disposition {
            Disposition::DeadLetter(d) => {
                assert_eq!(d.reason, Reason::TransformFailed);
                assert_eq!(d.rule.as_deref(), Some("bad"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn plan_message_sees_attributes_source_and_attempt_when_patterns_use_them() {
        let rs = set(
            vec![
                json!({"attributes": {"tenant": ["acme"]}}),
                json!({"source": {"kind": ["sqs"]}, "delivery_attempt": [{"numeric": [">=", 2]}]}),
                json!({"body": {"t": ["x"]}}),
            ],
            vec![
                rule("tenant", vec![Action::Drop]),
                rule("retried", vec![Action::Drop]),
                rule("body", vec![Action::Drop]),
            ],
            Unmatched::Ack,
        );
        let mut attrs = Attributes::new();
        attrs.insert("tenant", "acme");
        let sqs = SourceInfo {
            kind: "sqs",
            name: "q".into(),
        };
        assert_eq!(
            rs.plan_message(b"{\"t\": \"x\"}", &attrs, &sqs, 2).matched,
            vec![0, 1, 2]
        );
        assert_eq!(
            rs.plan_message(b"{\"t\": \"x\"}", &Attributes::new(), &sqs, 1).matched,
            vec![2]
        );
        let file = SourceInfo {
            kind: "file",
            name: "f".into(),
        };
        assert_eq!(rs.plan_message(b"not json", &attrs, &file, 3).matched, vec![0]);
    }

    #[test]
    fn dead_letter_action_wins_after_forwards() {
        let rs = set(
            vec![json!({"body": {"t": ["x"]}}), json!({"body": {"t": ["x"]}})],
            vec![
                rule(
                    "fwd",
                    vec![Action::Forward {
                        target: 0,
                        transform: None,
                    }],
                ),
                rule(
                    "dl",
                    vec![Action::DeadLetter {
                        reason: "quarantine".into(),
                    }],
                ),
            ],
            Unmatched::Ack,
        );
        let plan = rs.plan(&event(json!({"t": "x"})), 1);
        assert_eq!(plan.forwards.len(), 1);
        assert!(
            matches!(&plan.disposition, Disposition::DeadLetter(d) if d.reason == Reason::Rule("quarantine".into()))
        );
    }

    #[test]
    fn a_body_that_does_not_fit_its_rules_schema_is_dead_lettered_and_nothing_is_forwarded() {
        let schema = Schema::compile(
            "schemas/order.json",
            r#"{"type": "object", "required": ["id"], "properties": {"amount": {"type": "number"}}}"#,
        )
        .unwrap();
        let mut orders = rule(
            "orders",
            vec![Action::Forward {
                target: 0,
                transform: None,
            }],
        );
        orders.schema = Some(Arc::new(schema));
        let audit = rule(
            "audit",
            vec![Action::Forward {
                target: 1,
                transform: None,
            }],
        );
        let rs = set(
            vec![json!({"body": {"t": ["order"]}}), json!({"body": {"t": ["order"]}})],
            vec![orders, audit],
            Unmatched::Ack,
        );
        let (attrs, source) = (
            Attributes::new(),
            SourceInfo {
                kind: "memory",
                name: "q".into(),
            },
        );
        let fits = rs.plan_message(br#"{"t": "order", "id": "o-1", "amount": 5}"#, &attrs, &source, 1);
        assert_eq!((fits.outcome(), fits.forwards.len()), (Outcome::Forward, 2));
        // `amount` is outside every pattern path: the pruned decode alone would not see it.
        let bad = rs.plan_message(br#"{"t": "order", "id": "o-1", "amount": "5"}"#, &attrs, &source, 1);
        assert!(
            bad.forwards.is_empty(),
            "no forward of the event, not even the other rule's"
        );
        assert_eq!(bad.matched, vec![0, 1]);
        let Disposition::DeadLetter(dl) = &bad.disposition else {
            panic!("dead-lettered: {bad:?}")
        };
        assert_eq!(dl.reason.to_string(), "schema_invalid");
        assert_eq!(dl.rule.as_deref(), Some("orders"));
        assert_eq!(
            dl.error,
            r#"rule `orders`: the body does not fit schema schemas/order.json: at /amount, keyword `type`: value is not of type "number""#
        );
        let check = rs.check_schema(0, &event(json!({"t": "order"}))).unwrap();
        assert_eq!((check.total, check.violations[0].keyword.as_str()), (1, "required"));
        assert_eq!(rs.check_schema(1, &event(json!({}))), None, "audit has no schema");
        // Events no schema-checking rule matches are not looked at.
        let other = rs.plan(&event(json!({"t": "refund"})), 1);
        assert_eq!(other.outcome(), Outcome::Ack);
    }

    #[test]
    fn unmatched_dead_letters_name_the_nearest_rules_within_the_bound() {
        let rules = vec![
            rule("orders", vec![Action::Drop]),
            rule("payments", vec![Action::Drop]),
            rule("big", vec![Action::Drop]),
        ];
        let s = set(
            vec![
                json!({"body": {"type": ["order"]}}),
                json!({"body": {"type": ["payment"], "currency": ["EUR"]}}),
                json!({"body": {"type": ["order"], "amount": [{"numeric": [">", 10]}], "currency": ["EUR"]}}),
            ],
            rules,
            Unmatched::DeadLetter,
        );
        let plan = s.plan(&json!({"body": {"type": "refund", "currency": "EUR"}}), 1);
        let Disposition::DeadLetter(dl) = plan.disposition else {
            panic!("unmatched events are dead-lettered")
        };
        let explain = dl.explain.expect("explained");
        // orders and payments each fail one field; big fails two.
        assert_eq!(
            explain,
            r#"nearest: orders (body.type: wanted equals "order", found string "refund") | payments (body.type: wanted equals "payment", found string "refund") | big (body.amount: wanted numeric [">", 10], found missing; body.type: wanted equals "order", found string "refund")"#
        );
        // A pattern with hundreds of values still leaves a bounded attribute.
        let many: Vec<String> = (0..300).map(|i| format!("type-{i:04}")).collect();
        let s = set(
            vec![json!({"body": {"type": many}})],
            vec![rule("many", vec![Action::Drop])],
            Unmatched::DeadLetter,
        );
        let plan = s.plan(&json!({"body": {"type": "other"}}), 1);
        let Disposition::DeadLetter(dl) = plan.disposition else {
            panic!("unmatched events are dead-lettered")
        };
        let explain = dl.explain.unwrap();
        assert!(
            explain.starts_with("nearest: many (body.type: wanted equals"),
            "{explain}"
        );
        assert!(explain.ends_with('…'), "cut: {explain}");
        assert!(explain.len() <= MAX_EXPLAIN_BYTES + "…".len());
        // A huge array at a pattern path is not ranked against every rule.
        let huge: Vec<u32> = (0..(crate::rules::pattern::NEAREST_WORK_LIMIT as u32 + 1)).collect();
        let plan = s.plan(&json!({"body": {"type": huge}}), 1);
        let Disposition::DeadLetter(dl) = plan.disposition else {
            panic!("unmatched events are dead-lettered")
        };
        assert_eq!(
            dl.explain.as_deref(),
            Some("nearest rules not ranked: the event has too many values at pattern paths")
        );
    }
}
