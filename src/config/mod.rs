//! Configuration: one TOML or JSON file (chosen by extension, same structure), validated fully
//! before anything connects.
//!
//! Loading runs in four steps, each with errors that point into the file:
//! 1. parse the text into a JSON value, recording the line and column of every field
//!    ([`locate`]);
//! 2. replace `${ENV}` references in strings ([`interpolate`]);
//! 3. deserialize into the raw structs ([`raw`]; unknown fields are errors);
//! 4. check ranges and references, compile patterns and transforms ([`validate`]).

pub mod error;
pub mod interpolate;
pub mod locate;
pub mod memory;
pub mod raw;
pub mod summary;
pub mod validate;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use error::{ConfigError, Diagnostic};

pub use veltrix_pubsub::ConnectOptions as PubSubConnect;
pub use veltrix_sqs::ConnectOptions;

use crate::pipeline::settings::Settings;
pub use crate::pipeline::settings::TargetLimits;
use crate::rules::RuleSet;
use error::did_you_mean;
use locate::Locations;

/// Where messages come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceConfig {
    /// One body per line; `-` is stdin.
    File {
        /// Resolved path.
        path: PathBuf,
        /// Lease of an unsettled line.
        visibility_timeout: Duration,
        /// What a line is.
        format: veltrix_queue::file::LineFormat,
    },
    /// An SQS queue.
    Sqs {
        /// Queue URL.
        queue_url: String,
        /// Endpoint and region.
        connect: ConnectOptions,
        /// Visibility timeout to request; `None` = the queue's.
        visibility_timeout: Option<Duration>,
    },
    /// A Pub/Sub subscription.
    Pubsub {
        /// `projects/P/subscriptions/S`.
        subscription: String,
        /// Endpoint.
        connect: PubSubConnect,
        /// Streaming-pull streams.
        streams: usize,
        /// Flow control per stream (messages).
        max_outstanding_messages: u64,
        /// Flow control per stream (bytes).
        max_outstanding_bytes: u64,
        /// Lease of a received message; `None` = the subscription's ack deadline.
        visibility_timeout: Option<Duration>,
    },
}

impl SourceConfig {
    /// `file`, `sqs`, `pubsub`.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::File { .. } => "file",
            SourceConfig::Sqs { .. } => "sqs",
            SourceConfig::Pubsub { .. } => "pubsub",
        }
    }

    /// The name patterns see as `source.name`.
    pub fn name(&self) -> String {
        match self {
            SourceConfig::File { path, .. } => path.display().to_string(),
            SourceConfig::Sqs { queue_url, .. } => queue_url.clone(),
            SourceConfig::Pubsub { subscription, .. } => subscription.clone(),
        }
    }
}

/// A destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetKind {
    /// Append JSON lines to a file.
    File {
        /// Resolved path.
        path: PathBuf,
    },
    /// Write JSON lines to stdout.
    Stdout,
    /// POST to a handler service.
    Http {
        /// Handler URL.
        url: String,
        /// Whole-request timeout.
        timeout: Duration,
        /// Static headers.
        headers: std::collections::BTreeMap<String, String>,
        /// Environment variable with a bearer token.
        bearer_token_env: Option<String>,
    },
    /// Send to an SQS queue.
    Sqs {
        /// Queue URL.
        queue_url: String,
        /// Endpoint and region.
        connect: ConnectOptions,
    },
    /// Publish to a Pub/Sub topic.
    Pubsub {
        /// `projects/P/topics/T`.
        topic: String,
        /// Endpoint.
        connect: PubSubConnect,
    },
}

/// A named destination.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetConfig {
    /// The name rules use.
    pub name: String,
    /// What it is.
    pub kind: TargetKind,
    /// Circuit breaker, concurrency and rate.
    pub limits: TargetLimits,
}

/// A validated config.
#[derive(Debug)]
pub struct Config {
    /// The file it came from.
    pub file: PathBuf,
    /// The source.
    pub source: SourceConfig,
    /// Targets, in name order; rules refer to them by index.
    pub targets: Vec<TargetConfig>,
    /// Index of the dead-letter target.
    pub dead_letter: Option<usize>,
    /// Pipeline settings.
    pub settings: Settings,
    /// Compiled rules.
    pub rules: Arc<RuleSet>,
    /// `pipeline.state_dir`, resolved against the config file's directory (`None`: the default
    /// under the temporary directory).
    pub state_dir: Option<PathBuf>,
    /// What the config consists of, hashed: its text and the schema files its rules name
    /// (12 hex digits of SHA-256; `/readyz` and `/metrics` show the running one).
    pub hash: String,
    /// The schema files the rules name, resolved (a reload watches them with the file).
    pub schema_files: Vec<PathBuf>,
}

impl Config {
    /// Checks what `run` needs beyond a valid file: a dead-letter target, since every worker must
    /// have somewhere to put messages it cannot process instead of losing them.
    pub fn require_dead_letter(&self, locations_hint: Option<&Locations>) -> Result<usize, ConfigError> {
        self.dead_letter.ok_or_else(|| {
            let mut d = Diagnostic::field("pipeline.dead_letter", "no dead-letter target is set")
                .allowed(if self.targets.is_empty() {
                    "(no targets are declared)".to_string()
                } else {
                    self.targets.iter().map(|t| format!("`{}`", t.name)).collect::<Vec<_>>().join(", ")
                })
                .hint("messages that cannot be processed (malformed, unmatched, out of retries) go there instead of being lost: add [targets.dlq] with type = \"file\" and path = \"dead-letters.jsonl\", then set dead_letter = \"dlq\" under [pipeline]");
            d.position = locations_hint.and_then(|l| l.find("pipeline.dead_letter"));
            ConfigError::Invalid { file: self.file.clone(), problems: vec![d] }
        })
    }
}

/// Reads and validates a config file, using the process environment for `${…}`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    load_str(path, &text, &|name| std::env::var(name).ok())
}

/// Validates config text as if read from `path`; `lookup` resolves `${…}`.
pub fn load_str(path: &Path, text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let invalid = |problems: Vec<Diagnostic>| ConfigError::Invalid {
        file: path.to_path_buf(),
        problems,
    };
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let parsed = match ext.as_str() {
        "toml" => locate::parse_toml(text),
        "json" => locate::parse_json(text),
        other => {
            return Err(invalid(vec![Diagnostic {
                field: None,
                position: None,
                message: format!("unknown config format `.{other}`"),
                allowed: Some("`.toml` or `.json`".into()),
                hint: Some("rename the file with the extension of its format".into()),
            }]))
        }
    };
    let (mut value, locations) = parsed.map_err(|e| {
        invalid(vec![Diagnostic {
            field: None,
            position: e.position,
            message: format!("syntax error: {}", e.message),
            allowed: None,
            hint: Some(format!("check the {} syntax around this position", ext.to_uppercase())),
        }])
    })?;
    interpolate::interpolate(&mut value, "", lookup).map_err(|m| {
        let mut d = Diagnostic::field(&m.path, format!("environment variable `{}` is not set", m.name)).hint(format!(
            "export {}=…, or write ${{{}:-default}} to give a fallback",
            m.name, m.name
        ));
        d.position = locations.find(&m.path);
        invalid(vec![d])
    })?;
    let raw: raw::RawConfig = serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { String::new() } else { field };
        let message = e.inner().to_string();
        let mut d = serde_diagnostic(&field, &message);
        d.position = locations.find(&field);
        // Inside tagged tables serde reports the table, not the field: point at the field.
        if message.starts_with("unknown field") {
            if let Some(word) = message.split('`').nth(1) {
                let exact = locate::child_key(&field, word);
                if let Some(pos) = locations.get(&exact) {
                    d.position = Some(pos);
                    d.field = Some(exact);
                }
            }
        }
        invalid(vec![d])
    })?;
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut config = validate::validate(raw, path, &base_dir).map_err(|mut problems| {
        for p in &mut problems {
            p.position = p.field.as_deref().and_then(|f| locations.find(f));
        }
        problems.sort_by_key(|p| p.position.map(|pos| (pos.line, pos.column)));
        invalid(problems)
    })?;
    let schemas: Vec<[u8; 32]> = config
        .rules
        .rules()
        .iter()
        .filter_map(|r| r.schema.as_ref().map(|s| s.digest()))
        .collect();
    config.hash = content_hash(text.as_bytes(), schemas.iter().map(|d| &d[..]));
    Ok(config)
}

/// Hex digits of a config hash.
const HASH_DIGITS: usize = 12;

/// The hash of a config's text and its parts (schema digests, or file contents), in order.
pub fn content_hash<'a>(text: &[u8], parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    hasher.update(text);
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher
        .finalize()
        .iter()
        .take(HASH_DIGITS / 2)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Turns a serde message into a diagnostic with the allowed values and a suggestion.
fn serde_diagnostic(field: &str, message: &str) -> Diagnostic {
    let ticked: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
    let base = Diagnostic {
        field: (!field.is_empty()).then(|| field.to_string()),
        position: None,
        message: message.to_string(),
        allowed: None,
        hint: None,
    };
    let expected = message
        .split_once(", expected ")
        .map(|(_, rest)| rest.trim_start_matches("one of ").to_string());
    if message.starts_with("unknown field") || message.starts_with("unknown variant") {
        let word = ticked.first().copied().unwrap_or("");
        let candidates: Vec<&str> = ticked.iter().skip(1).copied().collect();
        let what = if message.starts_with("unknown field") {
            "field"
        } else {
            "type"
        };
        let mut d = base;
        d.message = format!("unknown {what} `{word}`");
        d.allowed = expected.or_else(|| Some("none here".into()));
        d.hint = Some(match did_you_mean(word, candidates.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None if what == "field" => format!("remove `{word}`; this table takes only the fields listed"),
            None => "use one of the types listed".to_string(),
        });
        return d;
    }
    if let Some(missing) = message.strip_prefix("missing field ") {
        let name = missing.trim_matches('`');
        let mut d = base;
        d.message = format!("required field `{name}` is missing");
        d.hint = Some(format!("add `{name} = …` to this table"));
        return d;
    }
    if message.starts_with("invalid type") || message.starts_with("invalid value") {
        let mut d = base;
        d.allowed = expected;
        return d;
    }
    base
}

#[cfg(test)]
mod tests;
