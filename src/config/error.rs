//! Config errors that say where, what is allowed, and what to do.

use std::fmt;
use std::path::PathBuf;

use super::locate::Position;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Field path, e.g. `rules[1].actions[0].target`.
    pub field: Option<String>,
    /// Where in the file.
    pub position: Option<Position>,
    /// What is wrong.
    pub message: String,
    /// What would be accepted.
    pub allowed: Option<String>,
    /// How to fix it.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// A problem with `field`.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            position: None,
            message: message.into(),
            allowed: None,
            hint: None,
        }
    }

    /// Adds what is allowed.
    pub fn allowed(mut self, allowed: impl Into<String>) -> Self {
        self.allowed = Some(allowed.into());
        self
    }

    /// Adds a suggestion.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file has problems; every one found is listed.
    #[error("{}", render(file, problems))]
    Invalid {
        /// The file.
        file: PathBuf,
        /// The problems, in file order.
        problems: Vec<Diagnostic>,
    },
}

impl ConfigError {
    /// The problems, if the file was read.
    pub fn problems(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { problems, .. } => problems,
        }
    }
}

fn render(file: &PathBuf, problems: &[Diagnostic]) -> String {
    let mut out = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&p.display_in(file).to_string());
    }
    if problems.len() > 1 {
        out.push_str(&format!("\n{} problems in {}", problems.len(), file.display()));
    }
    out
}

impl Diagnostic {
    /// Renders as `FILE:LINE:COL: field `F`: MESSAGE` plus `allowed:` and `help:` lines.
    pub fn display_in<'a>(&'a self, file: &'a PathBuf) -> impl fmt::Display + 'a {
        DiagnosticInFile { d: self, file }
    }
}

struct DiagnosticInFile<'a> {
    d: &'a Diagnostic,
    file: &'a PathBuf,
}

impl fmt::Display for DiagnosticInFile<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(pos) = self.d.position {
            write!(f, ":{}:{}", pos.line, pos.column)?;
        }
        write!(f, ": {}", self.d.describe())
    }
}

impl Diagnostic {
    /// The problem without its file and position: `field `F`: MESSAGE` plus `allowed:` and
    /// `help:` lines.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        if let Some(field) = &self.field {
            out.push_str(&format!("field `{field}`: "));
        }
        out.push_str(&self.message);
        if let Some(allowed) = &self.allowed {
            out.push_str(&format!("\n    allowed: {allowed}"));
        }
        if let Some(hint) = &self.hint {
            out.push_str(&format!("\n    help: {hint}"));
        }
        out
    }
}

/// The closest candidate to `word`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_file_line_field_allowed_and_help() {
        let mut d = Diagnostic::field("rules[0].actions[0].target", "unknown target `fruad`")
            .allowed("`dlq`, `fraud`")
            .hint("did you mean `fraud`?");
        d.position = Some(Position { line: 12, column: 3 });
        let text = d.display_in(&PathBuf::from("w.toml")).to_string();
        assert_eq!(
            text,
            "w.toml:12:3: field `rules[0].actions[0].target`: unknown target `fruad`\n    allowed: `dlq`, `fraud`\n    help: did you mean `fraud`?"
        );
    }

    #[test]
    fn suggests_close_words_only() {
        assert_eq!(did_you_mean("fruad", ["dlq", "fraud"]), Some("fraud"));
        assert_eq!(did_you_mean("queue_ur", ["queue_url", "path"]), Some("queue_url"));
        assert_eq!(did_you_mean("zzz", ["dlq", "fraud"]), None);
    }
}
