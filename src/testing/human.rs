//! The people's format of `veltrix test`: per event the outcome, and per rule the field that
//! decided it, with what the pattern wanted and what the event had; a summary at the end.
//!
//! ```text
//! event 5  dead_letter  reason "order has no customer" (rule orders-without-customer)
//!   ✓ orders-without-customer  body.type: wanted equals "order.created", found string "order.created"; …
//!   ✗ heartbeats               body.type: wanted equals "heartbeat", found string "order.created"
//! ```
//!
//! With `explain`, every field of every rule gets its own line. Colours are ANSI escapes, used
//! only when the caller says so (a terminal, and `NO_COLOR` unset).

use anstyle::{AnsiColor, Style};

use super::{Line, Report, RuleExplanation};

/// Rule sets up to this size list every rule per event; larger ones list the matched and the
/// nearest rules only (`explain` lists all).
pub const MAX_RULES_LISTED: usize = 12;

const PASS: &str = "✓";
const FAIL: &str = "✗";

/// Styles, or none.
struct Paint {
    color: bool,
}

impl Paint {
    fn style(&self, text: &str, style: Style) -> String {
        if self.color {
            format!("{style}{text}{style:#}")
        } else {
            text.to_string()
        }
    }

    fn fg(&self, text: &str, color: AnsiColor) -> String {
        self.style(text, Style::new().fg_color(Some(color.into())))
    }

    fn bold(&self, text: &str) -> String {
        self.style(text, Style::new().bold())
    }

    fn mark(&self, matched: bool) -> String {
        if matched {
            self.fg(PASS, AnsiColor::Green)
        } else {
            self.fg(FAIL, AnsiColor::Red)
        }
    }

    fn outcome(&self, outcome: &str) -> String {
        let color = match outcome {
            "forward" => AnsiColor::Green,
            "dead_letter" => AnsiColor::Red,
            "retry" => AnsiColor::Yellow,
            _ => AnsiColor::Cyan,
        };
        self.style(outcome, Style::new().bold().fg_color(Some(color.into())))
    }
}

/// The report of one line, ending in a newline (a blank line separates events).
pub fn render(line: &Line, explain: bool, color: bool) -> String {
    let paint = Paint { color };
    match line {
        Line::Invalid { event, error } => {
            format!(
                "event {event}  {}  {error}\n\n",
                paint.fg("invalid line", AnsiColor::Red)
            )
        }
        Line::Report(report) => {
            let mut out = header(report, &paint);
            if explain {
                every_clause(report, &paint, &mut out);
            } else {
                deciding_clauses(report, &paint, &mut out);
            }
            schema_checks(report, &paint, &mut out);
            out.push('\n');
            out
        }
    }
}

fn header(r: &Report, paint: &Paint) -> String {
    let mut out = format!("event {}  {}", r.event, paint.outcome(r.outcome));
    match r.outcome {
        "forward" => {
            let to: Vec<String> = r
                .forward
                .iter()
                .map(|f| format!("{} (rule {})", paint.bold(&f.target), f.rule))
                .collect();
            out.push_str(&format!("  → {}", to.join(", ")));
        }
        "dead_letter" | "retry" => {
            if let Some(reason) = &r.reason {
                out.push_str(&format!("  reason {reason:?}"));
            }
            if let Some(rule) = &r.rule {
                out.push_str(&format!(" (rule {rule})"));
            }
        }
        "drop" => out.push_str(&format!("  (rule {})", r.matched.join(", "))),
        _ => {}
    }
    if r.matched.is_empty() && !r.nearest.is_empty() {
        let names: Vec<&str> = r.nearest.iter().map(|n| n.rule.as_str()).collect();
        out.push_str(&format!("  no rule matched; nearest: {}", names.join(", ")));
    }
    out.push('\n');
    if let Some(error) = &r.error {
        if !r.by_action && r.reason.as_deref() != Some("unmatched") {
            out.push_str(&format!("  error: {error}\n"));
        }
    }
    for f in r.forward.iter().filter(|f| f.body.is_some()) {
        let body = f.body.as_ref().map(|b| b.to_string()).unwrap_or_default();
        out.push_str(&format!("  body → {}: {body}\n", f.target));
    }
    out
}

/// One line per rule: a matched rule's fields, or a failing rule's first failing field.
fn deciding_clauses(r: &Report, paint: &Paint, out: &mut String) {
    let Some(rules) = &r.explain else { return };
    let width = rules.iter().map(|e| e.rule.chars().count()).max().unwrap_or(0);
    let listed: Vec<&RuleExplanation> = if rules.len() <= MAX_RULES_LISTED {
        rules.iter().collect()
    } else {
        let nearest = |e: &&RuleExplanation| r.nearest.iter().any(|n| n.rule == e.rule);
        rules.iter().filter(|e| e.explanation.matched || nearest(e)).collect()
    };
    for e in &listed {
        let x = &e.explanation;
        let cut = cut_by_final(r, e);
        let shown: Vec<String> = if x.matched {
            x.fields.iter().map(|f| f.to_string()).collect()
        } else {
            let failing: Vec<String> = x.fields.iter().filter(|f| !f.matched).map(|f| f.to_string()).collect();
            match failing.split_first() {
                Some((first, rest)) if !rest.is_empty() => vec![format!("{first} (+{} more failing)", rest.len())],
                Some((first, _)) => vec![first.clone()],
                None => vec![x.note.clone().unwrap_or_default()],
            }
        };
        let branch = x.branch.as_deref().map(|b| format!(" {b}")).unwrap_or_default();
        out.push_str(&format!(
            "  {} {:<width$}{branch}  {}{cut}\n",
            paint.mark(x.matched),
            e.rule,
            shown.join("; ")
        ));
    }
    let hidden = rules.len() - listed.len();
    if hidden > 0 {
        out.push_str(&format!(
            "  … {hidden} more rules did not match (--explain lists every rule)\n"
        ));
    }
}

/// One line per matched rule with a schema, and its violations below.
fn schema_checks(r: &Report, paint: &Paint, out: &mut String) {
    for s in &r.schema {
        let verdict = match s.total {
            0 => "the body fits".to_string(),
            1 => "1 violation".to_string(),
            n => format!("{n} violations"),
        };
        out.push_str(&format!(
            "  {} schema {} (rule {}): {verdict}\n",
            paint.mark(s.valid),
            s.schema,
            s.rule
        ));
        for v in &s.violations {
            out.push_str(&format!("      {v}\n"));
        }
        if s.total > s.violations.len() {
            out.push_str(&format!("      … {} more\n", s.total - s.violations.len()));
        }
    }
}

/// For a rule whose pattern matched but which did not act because a `final` rule before it
/// matched: the note that says so.
fn cut_by_final(r: &Report, e: &RuleExplanation) -> String {
    match r.matched.last() {
        Some(last) if e.explanation.matched && !r.matched.contains(&e.rule) => {
            format!("  (not applied: final rule {last} matched first)")
        }
        _ => String::new(),
    }
}

/// Every rule, then every field it has, each on its own line.
fn every_clause(r: &Report, paint: &Paint, out: &mut String) {
    let Some(rules) = &r.explain else { return };
    for e in rules {
        let x = &e.explanation;
        let branch = x
            .branch
            .as_deref()
            .map(|b| format!("  ({b} matched)"))
            .unwrap_or_default();
        let cut = cut_by_final(r, e);
        out.push_str(&format!(
            "  {} {}{branch}{cut}\n",
            paint.mark(x.matched),
            paint.bold(&e.rule)
        ));
        for f in &x.fields {
            let branch = f.branch.as_deref().map(|b| format!("{b}: ")).unwrap_or_default();
            out.push_str(&format!("      {} {branch}{f}\n", paint.mark(f.matched)));
        }
        if let Some(note) = &x.note {
            out.push_str(&format!("      note: {note}\n"));
        }
    }
}

/// Outcome counts for the closing line.
#[derive(Debug, Default)]
pub struct Tally {
    events: usize,
    invalid: usize,
    outcomes: Vec<(&'static str, usize)>,
}

impl Tally {
    /// Counts one line.
    pub fn add(&mut self, line: &Line) {
        match line {
            Line::Invalid { .. } => self.invalid += 1,
            Line::Report(r) => {
                self.events += 1;
                match self.outcomes.iter_mut().find(|(o, _)| *o == r.outcome) {
                    Some((_, n)) => *n += 1,
                    None => self.outcomes.push((r.outcome, 1)),
                }
            }
        }
    }

    /// `14 events: 6 forward, 2 drop, 5 dead_letter, 1 retry`.
    pub fn render(&self, color: bool) -> String {
        let paint = Paint { color };
        let parts: Vec<String> = self
            .outcomes
            .iter()
            .map(|(o, n)| format!("{n} {}", paint.outcome(o)))
            .collect();
        let mut out = format!("{} events: {}", self.events, parts.join(", "));
        if self.invalid > 0 {
            out.push_str(&format!(
                "; {} {} could not be read",
                self.invalid,
                if self.invalid == 1 { "line" } else { "lines" }
            ));
        }
        out.push('\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;
    use crate::sandbox::InProcess;
    use crate::testing::{run_tests, Format, TestOptions};

    fn render_all(input: &str, explain: bool, color: bool) -> String {
        let text = r#"
[source]
type = "file"
path = "e.jsonl"
[targets.out]
type = "stdout"
[[rules]]
name = "stop"
match = { body = { kind = ["stop"] } }
final = true
actions = [{ type = "drop" }]
[[rules]]
name = "all"
match = { body = { kind = [{ exists = true }] } }
actions = [{ type = "forward", target = "out" }]
"#;
        let config = load_str(std::path::Path::new("t.toml"), text, &|_| None).unwrap();
        let mut out = Vec::new();
        let options = TestOptions {
            explain,
            format: Format::Human { color },
            ..TestOptions::default()
        };
        run_tests(&config, input.as_bytes(), &mut out, options, &InProcess(&config.rules)).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn colours_only_when_asked() {
        let plain = render_all("{\"kind\": \"stop\"}\n", false, false);
        assert!(!plain.contains('\u{1b}'), "{plain}");
        let coloured = render_all("{\"kind\": \"stop\"}\n", false, true);
        assert!(coloured.contains("\u{1b}["), "{coloured}");
        assert!(coloured.contains(&format!("{}", Style::new().fg_color(Some(AnsiColor::Green.into())))));
    }

    #[test]
    fn a_rule_cut_by_a_final_one_says_so() {
        let text = render_all("{\"kind\": \"stop\"}\n", false, false);
        assert!(text.contains("✓ all "), "{text}");
        assert!(text.contains("(not applied: final rule stop matched first)"), "{text}");
        let text = render_all("{\"kind\": \"go\"}\n", true, false);
        assert!(
            text.contains("      ✗ body.kind: wanted equals \"stop\", found string \"go\""),
            "{text}"
        );
        assert!(!text.contains("not applied"), "{text}");
    }

    #[test]
    fn large_rule_sets_list_matched_and_nearest_rules_only() {
        let mut text = String::from("[source]\ntype = \"file\"\npath = \"e.jsonl\"\n");
        for i in 0..30 {
            text.push_str(&format!(
                "[[rules]]\nname = \"r{i}\"\nmatch = {{ body = {{ n = [{i}] }} }}\nactions = [{{ type = \"drop\" }}]\n"
            ));
        }
        let config = load_str(std::path::Path::new("t.toml"), &text, &|_| None).unwrap();
        let mut out = Vec::new();
        let options = TestOptions {
            format: Format::Human { color: false },
            ..TestOptions::default()
        };
        run_tests(
            &config,
            &b"{\"n\": 7}\n"[..],
            &mut out,
            options,
            &InProcess(&config.rules),
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("✓ r7 "), "{text}");
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("  ✗ ") || l.starts_with("  ✓ "))
                .count(),
            1,
            "{text}"
        );
        assert!(
            text.contains("… 29 more rules did not match (--explain lists every rule)"),
            "{text}"
        );
    }
}
