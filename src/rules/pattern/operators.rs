//! The value tests a pattern field can apply to one event leaf (a scalar: string, number, boolean
//! or `null`), with event-ruler's typing rules:
//!
//! - exact strings match only strings; a pattern string that is an IP address matches any event
//!   string naming the same address (`2001:DB8::1` = `2001:db8:0:0:0:0:0:1`);
//! - exact numbers and `numeric` compare as IEEE doubles (`3.0e2` = `300`) and match only numbers;
//! - booleans match only booleans, `null` only `null`;
//! - `prefix`, `suffix`, `equals-ignore-case`, `wildcard` and `cidr` match only strings;
//! - `anything-but` matches any leaf (including `null`, numbers, booleans) that is not excluded;
//!   string exclusions only exclude strings, number exclusions only numbers;
//! - `exists: true` matches any leaf, including `null`.

use serde_json::Value;

use crate::rules::pattern::ip::{parse_ip, Ip, IpRange};
use crate::rules::pattern::text::{CaseFold, Wildcard};

/// One compiled operator of a pattern field. A field matches a leaf if any of its matchers does.
#[derive(Clone, Debug)]
pub enum Matcher {
    /// An exact string (`"running"` or `{"exactly": "running"}`).
    ExactString(Box<str>),
    /// An exact string that is an IP address literal: matches strings naming the same address.
    ExactIp(Ip),
    /// An exact number, compared numerically.
    ExactNumber(f64),
    /// `true` or `false`.
    ExactBool(bool),
    /// `null`.
    ExactNull,
    /// `{"prefix": "..."}`.
    Prefix(Box<str>),
    /// `{"prefix": {"equals-ignore-case": "..."}}`.
    PrefixIc(CaseFold),
    /// `{"suffix": "..."}`.
    Suffix(Box<str>),
    /// `{"suffix": {"equals-ignore-case": "..."}}`.
    SuffixIc(CaseFold),
    /// `{"equals-ignore-case": "..."}`.
    EqualsIc(CaseFold),
    /// `{"wildcard": "..."}`.
    Wildcard(Wildcard),
    /// `{"anything-but": ...}`.
    AnythingBut(AnythingBut),
    /// `{"numeric": [...]}`.
    Numeric(NumRange),
    /// `{"cidr": "..."}`.
    Cidr(IpRange),
    /// `{"exists": true}`.
    Exists,
}

/// What an `anything-but` excludes. A leaf matches if it is not excluded.
#[derive(Clone, Debug)]
pub enum AnythingBut {
    /// Excluded strings, sorted (other leaf types are never excluded).
    Strings(Box<[Box<str>]>),
    /// Excluded numbers (other leaf types are never excluded).
    Numbers(Box<[f64]>),
    /// Strings starting with any of these are excluded.
    Prefixes(Box<[Box<str>]>),
    /// Strings ending with any of these are excluded.
    Suffixes(Box<[Box<str>]>),
    /// Strings equal (ignoring case) to any of these are excluded.
    EqualsIc(Box<[CaseFold]>),
    /// Strings matching any of these wildcards are excluded.
    Wildcards(Box<[Wildcard]>),
}

/// A numeric interval; `None` is unbounded. The flag says whether the bound is inclusive.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NumRange {
    /// Lower bound and whether it is inclusive.
    pub lo: Option<(f64, bool)>,
    /// Upper bound and whether it is inclusive.
    pub hi: Option<(f64, bool)>,
}

impl NumRange {
    /// Whether `x` lies in the interval.
    pub fn contains(&self, x: f64) -> bool {
        let lo_ok = match self.lo {
            None => true,
            Some((b, true)) => x >= b,
            Some((b, false)) => x > b,
        };
        let hi_ok = match self.hi {
            None => true,
            Some((b, true)) => x <= b,
            Some((b, false)) => x < b,
        };
        lo_ok && hi_ok
    }
}

/// The numeric value of a JSON number leaf (integers beyond 2^53 round as Java's parser does).
pub fn number_of(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

impl Matcher {
    /// Whether this matcher accepts the event leaf `v` (a scalar; arrays and objects never match).
    pub fn test(&self, v: &Value) -> bool {
        match self {
            Matcher::ExactString(p) => matches!(v, Value::String(s) if s == &**p),
            Matcher::ExactIp(ip) => matches!(v, Value::String(s) if parse_ip(s) == Some(*ip)),
            Matcher::ExactNumber(p) => number_of(v) == Some(*p),
            Matcher::ExactBool(b) => matches!(v, Value::Bool(x) if x == b),
            Matcher::ExactNull => v.is_null(),
            Matcher::Prefix(p) => matches!(v, Value::String(s) if s.starts_with(&**p)),
            Matcher::PrefixIc(f) => matches!(v, Value::String(s) if f.is_prefix_of(s)),
            Matcher::Suffix(p) => matches!(v, Value::String(s) if s.ends_with(&**p)),
            Matcher::SuffixIc(f) => matches!(v, Value::String(s) if f.is_suffix_of(s)),
            Matcher::EqualsIc(f) => matches!(v, Value::String(s) if f.equals(s)),
            Matcher::Wildcard(w) => matches!(v, Value::String(s) if w.matches(s)),
            Matcher::AnythingBut(a) => !a.excludes(v),
            Matcher::Numeric(r) => number_of(v).is_some_and(|x| r.contains(x)),
            Matcher::Cidr(r) => {
                matches!(v, Value::String(s) if parse_ip(s).is_some_and(|ip| r.contains(ip)))
            }
            Matcher::Exists => !v.is_array() && !v.is_object(),
        }
    }
}

impl AnythingBut {
    /// Whether the leaf is excluded (the `anything-but` then fails on it).
    pub fn excludes(&self, v: &Value) -> bool {
        if let AnythingBut::Numbers(ns) = self {
            return number_of(v).is_some_and(|x| ns.contains(&x));
        }
        let Value::String(s) = v else { return false };
        match self {
            AnythingBut::Strings(set) => set.binary_search_by(|p| (**p).cmp(s.as_str())).is_ok(),
            AnythingBut::Numbers(_) => false,
            AnythingBut::Prefixes(ps) => ps.iter().any(|p| s.starts_with(&**p)),
            AnythingBut::Suffixes(ps) => ps.iter().any(|p| s.ends_with(&**p)),
            AnythingBut::EqualsIc(fs) => fs.iter().any(|f| f.equals(s)),
            AnythingBut::Wildcards(ws) => ws.iter().any(|w| w.matches(s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::pattern::ip::parse_cidr;
    use serde_json::json;

    fn num(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn exact_values_are_typed() {
        assert!(Matcher::ExactString("300".into()).test(&json!("300")));
        assert!(!Matcher::ExactString("300".into()).test(&json!(300)));
        assert!(Matcher::ExactNumber(300.0).test(&num("3.0e2")));
        assert!(Matcher::ExactNumber(300.0).test(&num("300.0")));
        assert!(Matcher::ExactNumber(35.0).test(&num("0.000035e6")));
        assert!(!Matcher::ExactNumber(300.0).test(&json!("300")));
        assert!(Matcher::ExactBool(false).test(&json!(false)));
        assert!(!Matcher::ExactBool(false).test(&json!("false")));
        assert!(!Matcher::ExactString("X".into()).test(&json!(true)));
        assert!(Matcher::ExactNull.test(&json!(null)));
        assert!(!Matcher::ExactNull.test(&json!("")));
        assert!(!Matcher::ExactString("".into()).test(&json!(null)));
    }

    #[test]
    fn exact_ip_strings_compare_as_addresses() {
        let m = Matcher::ExactIp(parse_ip("2001:db8::ff00:42:8329").unwrap());
        assert!(m.test(&json!("2001:DB8:0:0:0:FF00:42:8329")));
        assert!(!m.test(&json!("2001:db8::ff00:42:832a")));
        assert!(!m.test(&json!(5)));
    }

    #[test]
    fn string_operators_only_match_strings() {
        assert!(Matcher::Prefix("20".into()).test(&json!("2017")));
        assert!(!Matcher::Prefix("20".into()).test(&json!(2017)));
        assert!(Matcher::Suffix("java".into()).test(&json!("xjava")));
        assert!(!Matcher::Suffix("java".into()).test(&json!("javaa")));
        assert!(Matcher::PrefixIc(CaseFold::new("RuNn")).test(&json!("running")));
        assert!(Matcher::SuffixIc(CaseFold::new("nInG")).test(&json!("running")));
        assert!(Matcher::EqualsIc(CaseFold::new("aBc")).test(&json!("AbC")));
        assert!(!Matcher::EqualsIc(CaseFold::new("XyZ")).test(&json!("xyzz")));
        let w = Matcher::Wildcard(Wildcard::parse("*").unwrap());
        assert!(w.test(&json!("")));
        assert!(!w.test(&json!(1)));
    }

    #[test]
    fn numeric_ranges() {
        let r = Matcher::Numeric(NumRange {
            lo: Some((0.0, false)),
            hi: Some((5.0, true)),
        });
        assert!(r.test(&json!(5)));
        assert!(!r.test(&json!(0)));
        assert!(!r.test(&json!("5")));
        let eq = Matcher::Numeric(NumRange {
            lo: Some((301.8, true)),
            hi: Some((301.8, true)),
        });
        assert!(eq.test(&num("3.018e2")));
        let lt = Matcher::Numeric(NumRange {
            lo: None,
            hi: Some((0.0, false)),
        });
        assert!(lt.test(&json!(-0.1)));
        assert!(!lt.test(&json!(0)));
    }

    #[test]
    fn cidr_and_exists() {
        let c = Matcher::Cidr(parse_cidr("10.0.0.0/24").unwrap());
        assert!(c.test(&json!("10.0.0.33")));
        assert!(!c.test(&json!("10.0.0.300")));
        assert!(!c.test(&json!(10)));
        assert!(Matcher::Exists.test(&json!(null)));
        assert!(Matcher::Exists.test(&json!("")));
    }

    #[test]
    fn anything_but_variants() {
        let s = Matcher::AnythingBut(AnythingBut::Strings(vec!["dad0".into(), "dad1".into()].into()));
        assert!(s.test(&json!("dad7")));
        assert!(!s.test(&json!("dad1")));
        assert!(s.test(&json!(null)));
        assert!(s.test(&json!(5)));
        let n = Matcher::AnythingBut(AnythingBut::Numbers(vec![111.0, 444.0].into()));
        assert!(!n.test(&json!(444)));
        assert!(!n.test(&num("4.44e2")));
        assert!(n.test(&json!("444")));
        let p = Matcher::AnythingBut(AnythingBut::Prefixes(vec!["$".into()].into()));
        assert!(p.test(&json!("value$")));
        assert!(!p.test(&json!("$notvalue")));
        let sfx = Matcher::AnythingBut(AnythingBut::Suffixes(vec!["$".into(), "%".into()].into()));
        assert!(!sfx.test(&json!("notvalue%")));
        assert!(sfx.test(&json!("%notvalue")));
        let ic = Matcher::AnythingBut(AnythingBut::EqualsIc(
            vec![CaseFold::new("yes"), CaseFold::new("please")].into(),
        ));
        assert!(!ic.test(&json!("pLease")));
        assert!(ic.test(&json!("value")));
        let w = Matcher::AnythingBut(AnythingBut::Wildcards(vec![Wildcard::parse("*foo*").unwrap()].into()));
        assert!(!w.test(&json!("barfoobar")));
        assert!(w.test(&json!("barfobarobar")));
        assert!(w.test(&json!(true)));
    }
}
