//! String tests used by the operators: `wildcard` globs and `equals-ignore-case` folding.
//!
//! Both follow aws/event-ruler:
//! - A wildcard is a glob where `*` matches any run of characters (including none), `\*` is a
//!   literal star and `\\` a literal backslash; any other backslash escape and two consecutive
//!   wildcard stars are rejected. Matching is linear in the input (a literal-segment search, no
//!   backtracking), so hostile patterns or values cannot blow up.
//! - Case-insensitive matching compares, for each pattern character, the event text against that
//!   character's lower-case and upper-case forms (Unicode default mappings, which may be longer than
//!   one character, e.g. `ß` → `SS`). The event text itself is not folded, so `ſ` does not equal
//!   `s`, and characters outside the Basic Multilingual Plane only match themselves (event-ruler
//!   folds UTF-16 units one at a time).

use std::fmt;

/// A compiled `wildcard` pattern: the literal pieces between the wildcard stars.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wildcard {
    /// Literal pieces; `parts.len() - 1` is the number of wildcard stars. Never empty.
    parts: Vec<Box<str>>,
}

/// Why a wildcard pattern was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WildcardError {
    /// Two wildcard stars in a row (`**`), which event-ruler rejects.
    ConsecutiveStars,
    /// A backslash followed by something other than `*` or `\`.
    BadEscape,
}

impl fmt::Display for WildcardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WildcardError::ConsecutiveStars => f.write_str(
                "`wildcard` must not contain consecutive `*` characters (`**`); one `*` already matches any run of characters",
            ),
            WildcardError::BadEscape => f.write_str(
                "in `wildcard` a backslash may only escape `*` or `\\` (write `\\*` for a literal star, `\\\\` for a backslash)",
            ),
        }
    }
}

impl Wildcard {
    /// Parse a wildcard pattern (the JSON string's content, escapes already decoded by JSON).
    pub fn parse(pattern: &str) -> Result<Wildcard, WildcardError> {
        let bytes = pattern.as_bytes();
        let mut parts = Vec::new();
        let mut cur = String::new();
        let mut i = 0;
        // The star that ended the previous piece was a wildcard (not escaped).
        let mut prev_was_star = false;
        while i < bytes.len() {
            let b = bytes[i];
            if b == b'*' {
                if prev_was_star {
                    return Err(WildcardError::ConsecutiveStars);
                }
                parts.push(std::mem::take(&mut cur).into_boxed_str());
                prev_was_star = true;
                i += 1;
                continue;
            }
            prev_was_star = false;
            if b == b'\\' {
                match bytes.get(i + 1) {
                    Some(b'*') => cur.push('*'),
                    Some(b'\\') => cur.push('\\'),
                    _ => return Err(WildcardError::BadEscape),
                }
                i += 2;
                continue;
            }
            // Copy one whole UTF-8 character.
            let ch_len = utf8_len(b);
            cur.push_str(&pattern[i..i + ch_len]);
            i += ch_len;
        }
        parts.push(cur.into_boxed_str());
        Ok(Wildcard { parts })
    }

    /// Whether `s` matches the whole pattern. Linear time: the first and last pieces are anchored,
    /// the middle ones are found left-most in turn (greedy left-most is optimal for `*`-only globs).
    pub fn matches(&self, s: &str) -> bool {
        let n = self.parts.len();
        if n == 1 {
            return s == &*self.parts[0];
        }
        let first = &*self.parts[0];
        let last = &*self.parts[n - 1];
        if s.len() < first.len() + last.len() || !s.starts_with(first) || !s.ends_with(last) {
            return false;
        }
        let mut lo = first.len();
        let hi = s.len() - last.len();
        for part in &self.parts[1..n - 1] {
            if part.is_empty() {
                continue;
            }
            match s[lo..hi].find(&**part) {
                Some(pos) => lo += pos + part.len(),
                None => return false,
            }
        }
        true
    }

    /// The literal text before the first wildcard star (used to index the pattern).
    pub fn literal_prefix(&self) -> &str {
        &self.parts[0]
    }

    /// The literal text after the last wildcard star, or the whole text if there is no star.
    pub fn literal_suffix(&self) -> &str {
        &self.parts[self.parts.len() - 1]
    }

    /// Whether the pattern has no wildcard star at all (it is then an exact string).
    pub fn is_literal(&self) -> bool {
        self.parts.len() == 1
    }
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

/// A compiled case-insensitive string: per pattern character, its lower- and upper-case forms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseFold {
    /// Set when the pattern is pure ASCII: the pattern lower-cased, compared with
    /// `eq_ignore_ascii_case` (exactly equivalent for ASCII patterns).
    ascii: Option<Box<str>>,
    /// One entry per pattern character: (lower form, upper form).
    alts: Vec<(Box<str>, Box<str>)>,
}

impl CaseFold {
    /// Compile a case-insensitive pattern string.
    pub fn new(pattern: &str) -> CaseFold {
        let ascii = pattern
            .is_ascii()
            .then(|| pattern.to_ascii_lowercase().into_boxed_str());
        let alts = pattern
            .chars()
            .map(|c| {
                if (c as u32) > 0xFFFF {
                    let s: Box<str> = c.to_string().into_boxed_str();
                    (s.clone(), s)
                } else {
                    let lower: String = c.to_lowercase().collect();
                    let upper: String = c.to_uppercase().collect();
                    (lower.into_boxed_str(), upper.into_boxed_str())
                }
            })
            .collect();
        CaseFold { ascii, alts }
    }

    /// The ASCII-lower-cased pattern when the pattern is pure ASCII (used to index it).
    pub fn ascii_lower(&self) -> Option<&str> {
        self.ascii.as_deref()
    }

    /// Whole-string case-insensitive equality.
    pub fn equals(&self, s: &str) -> bool {
        if let Some(a) = &self.ascii {
            return a.len() == s.len() && a.as_bytes().eq_ignore_ascii_case(s.as_bytes());
        }
        self.forward_ends(s).contains(&s.len())
    }

    /// Case-insensitive `starts_with`.
    pub fn is_prefix_of(&self, s: &str) -> bool {
        if let Some(a) = &self.ascii {
            return s.len() >= a.len() && a.as_bytes().eq_ignore_ascii_case(&s.as_bytes()[..a.len()]);
        }
        !self.forward_ends(s).is_empty()
    }

    /// Case-insensitive `ends_with`.
    pub fn is_suffix_of(&self, s: &str) -> bool {
        if let Some(a) = &self.ascii {
            return s.len() >= a.len() && a.as_bytes().eq_ignore_ascii_case(&s.as_bytes()[s.len() - a.len()..]);
        }
        let mut offs: Vec<usize> = vec![s.len()];
        for (lower, upper) in self.alts.iter().rev() {
            let mut next = Vec::with_capacity(offs.len());
            for &o in &offs {
                for alt in [lower, upper] {
                    if s[..o].ends_with(&**alt) {
                        let n = o - alt.len();
                        if !next.contains(&n) {
                            next.push(n);
                        }
                    }
                }
            }
            if next.is_empty() {
                return false;
            }
            offs = next;
        }
        true
    }

    /// All byte offsets at which a case-insensitive match of the whole pattern, anchored at the
    /// start of `s`, can end. The set stays tiny: a character's lower and upper forms almost never
    /// share a first character.
    fn forward_ends(&self, s: &str) -> Vec<usize> {
        let mut offs: Vec<usize> = vec![0];
        for (lower, upper) in &self.alts {
            let mut next = Vec::with_capacity(offs.len());
            for &o in &offs {
                for alt in [lower, upper] {
                    if s[o..].starts_with(&**alt) {
                        let n = o + alt.len();
                        if !next.contains(&n) {
                            next.push(n);
                        }
                    }
                }
            }
            if next.is_empty() {
                return next;
            }
            offs = next;
        }
        offs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wc(p: &str) -> Wildcard {
        Wildcard::parse(p).unwrap()
    }

    #[test]
    fn wildcard_basics() {
        assert!(wc("*").matches(""));
        assert!(wc("*").matches("anything"));
        assert!(wc("*bc").matches("abcbc"));
        assert!(wc("d*f").matches("deeeef"));
        assert!(!wc("d*f").matches("deeeefx"));
        assert!(wc("xy*").matches("xy"));
        assert!(wc("h*l*o").matches("h*l*o"));
        assert!(!wc("h*l*o").matches("heeo"));
        assert!(wc("https://www.example.*/*9943").matches("https://www.example.com/image/481989943"));
        assert!(wc("a*a").matches("aa"));
        assert!(!wc("a*a").matches("a"));
        assert!(wc("*foo*").matches("barfoobar"));
        assert!(!wc("*foo*").matches("barfobarobar"));
        assert!(wc("").matches(""));
        assert!(!wc("").matches("x"));
    }

    #[test]
    fn wildcard_escapes() {
        assert!(wc("hel\\*o").matches("hel*o"));
        assert!(!wc("hel\\*o").matches("hello"));
        assert!(wc("he\\**o").matches("he*llo"));
        assert!(wc("he\\\\llo").matches("he\\llo"));
        assert!(!wc("he\\\\llo").matches("hello"));
        assert!(wc("a\\*\\*\\\\.b").matches("a**\\.b"));
        assert!(wc("\\**").matches("*x"));
        assert!(!wc("a\\**").is_literal());
    }

    #[test]
    fn wildcard_rejects() {
        assert_eq!(Wildcard::parse("a**b"), Err(WildcardError::ConsecutiveStars));
        assert_eq!(Wildcard::parse("**"), Err(WildcardError::ConsecutiveStars));
        assert_eq!(Wildcard::parse("a\\b"), Err(WildcardError::BadEscape));
        assert_eq!(Wildcard::parse("a\\"), Err(WildcardError::BadEscape));
        assert!(Wildcard::parse("a*\\**").is_ok());
    }

    #[test]
    fn wildcard_unicode_and_literals() {
        assert!(wc("我*Ő").matches("我们Ő"));
        assert_eq!(wc("ab*cd*ef").literal_prefix(), "ab");
        assert_eq!(wc("ab*cd*ef").literal_suffix(), "ef");
        assert!(wc("abc").is_literal());
    }

    #[test]
    fn wildcard_is_linear_on_pathological_input() {
        let p = wc("*a*a*a*a*a*a*a*a*a*a*b");
        let s = "a".repeat(200_000);
        let t = std::time::Instant::now();
        assert!(!p.matches(&s));
        assert!(t.elapsed().as_millis() < 500);
    }

    #[test]
    fn case_fold_ascii() {
        let f = CaseFold::new("aBc");
        assert!(f.equals("AbC"));
        assert!(f.equals("abc"));
        assert!(!f.equals("abcd"));
        assert!(f.is_prefix_of("ABCdef"));
        assert!(!f.is_prefix_of("AB"));
        assert!(CaseFold::new("LoOr").is_suffix_of("View from 15th Floor"));
        assert!(!CaseFold::new("k").equals("\u{212A}")); // Kelvin sign is not folded
    }

    #[test]
    fn case_fold_unicode() {
        assert!(CaseFold::new("12ⱥ34").equals("12Ⱥ34"));
        assert!(!CaseFold::new("12ⱥ34").equals("12A34"));
        assert!(CaseFold::new("1#$^sS我ŐaBc").equals("1#$^Ss我ŐAbC"));
        assert!(!CaseFold::new("1#$^sS我ŐaBc").equals("1#$^sS我ŏaBc"));
        // Simple per-character folding: no multi-character folds of the event text.
        assert!(!CaseFold::new("STRASSE").equals("straße"));
        assert!(CaseFold::new("Ⱥb").is_prefix_of("ⱥBx"));
        assert!(CaseFold::new("bⱥ").is_suffix_of("xBȺ"));
        assert!(!CaseFold::new("bⱥ").is_suffix_of("xBA"));
    }
}
