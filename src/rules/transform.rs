//! jq transforms, through the `jaq` crates.
//!
//! A transform is compiled once at start-up; running it takes the envelope the pattern saw
//! (`{"body", "attributes", "source", "delivery_attempt"}`) and must produce exactly one value,
//! which becomes the forwarded body.
//!
//! A transform is a pure function of the message. Filters that reach outside it are rejected
//! at load with the reason ([`FORBIDDEN`]): the environment (`env`, `$ENV`: credentials and
//! tokens), the process (`halt`, `halt_error`), other inputs (`input`, `inputs`), the worker's
//! logs (`debug`, `stderr`) and the clock and time zone (`now`, `localtime`, `strflocaltime`:
//! `veltrix test` must show exactly what the worker sends). The worker runs transforms in the
//! [`sandbox`](crate::sandbox), with a time budget, an output cap and a memory limit;
//! [`Transform::run_bytes`] is what runs there.

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{data, Compiler, Ctx, Vars};
use jaq_json::Val;
use serde_json::Value;

type Filter = jaq_core::compile::Filter<jaq_core::Native<data::JustLut<Val>>>;

/// Names a transform may not use, and why.
pub const FORBIDDEN: &[(&str, &str)] = &[
    ("env", "it reads the worker's environment (credentials, tokens)"),
    ("$ENV", "it reads the worker's environment (credentials, tokens)"),
    ("ENV", "it reads the worker's environment (credentials, tokens)"),
    ("halt", "it would stop the worker"),
    ("halt_error", "it would stop the worker"),
    ("input", "a transform sees only its own message"),
    ("inputs", "a transform sees only its own message"),
    ("debug", "it writes to the worker's log (message contents must not leak there)"),
    ("stderr", "it writes to the worker's stderr (message contents must not leak there)"),
    ("now", "it reads the clock: a transform must give the same output for the same message, so `veltrix test` shows what the worker sends"),
    ("localtime", "it reads the worker's time zone: use gmtime"),
    ("strflocaltime", "it reads the worker's time zone: use strftime"),
];

/// Standard-library definitions left out (they wrap forbidden natives).
const FORBIDDEN_DEFS: &[&str] = &["stderr", "debug", "halt", "halt_error"];

/// Natives left out.
const FORBIDDEN_NATIVES: &[&str] = &[
    "env",
    "halt",
    "debug_empty",
    "stderr_empty",
    "now",
    "localtime",
    "strflocaltime",
];

/// A compiled jq program.
pub struct Transform {
    source: String,
    filter: Filter,
}

impl std::fmt::Debug for Transform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Transform({:?})", self.source)
    }
}

/// Why a transform did not compile or run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TransformError(pub String);

fn column_of(code: &str, rest: &str) -> usize {
    code.len().saturating_sub(rest.len()) + 1
}

/// Why `name` may not be used, if it may not.
pub fn forbidden(name: &str) -> Option<&'static str> {
    FORBIDDEN.iter().find(|(n, _)| *n == name).map(|(_, why)| *why)
}

impl Transform {
    /// Compiles a jq program; errors say what was expected and at which column, and name a
    /// forbidden filter with the reason.
    pub fn compile(code: &str) -> Result<Self, TransformError> {
        let defs = jaq_core::defs()
            .chain(jaq_std::defs().filter(|d| !FORBIDDEN_DEFS.contains(&d.name)))
            .chain(jaq_json::defs());
        let funs = jaq_core::funs()
            .chain(jaq_std::funs().filter(|(name, _, _)| !FORBIDDEN_NATIVES.contains(name)))
            .chain(jaq_json::funs());
        let loader = Loader::new(defs);
        let arena = Arena::default();
        let modules = loader.load(&arena, File { code, path: () }).map_err(|errs| {
            let mut msgs = Vec::new();
            for (_, e) in errs {
                match e {
                    jaq_core::load::Error::Lex(es) => msgs.extend(es.iter().map(|(expect, rest)| {
                        format!("expected {} at column {}", expect.as_str(), column_of(code, rest))
                    })),
                    jaq_core::load::Error::Parse(es) => msgs.extend(es.iter().map(|(expect, rest)| {
                        format!("expected {} at column {}", expect.as_str(), column_of(code, rest))
                    })),
                    jaq_core::load::Error::Io(es) => {
                        msgs.extend(es.iter().map(|(path, e)| format!("cannot load {path}: {e}")))
                    }
                }
            }
            TransformError(format!("jq syntax error: {}", msgs.join("; ")))
        })?;
        let filter = Compiler::default().with_funs(funs).compile(modules).map_err(|errs| {
            let msgs: Vec<String> = errs
                .into_iter()
                .flat_map(|(_, es)| es)
                .map(|(name, undefined)| {
                    let name: &str = name;
                    let bare = name.trim_start_matches('$');
                    match forbidden(name).or_else(|| forbidden(bare)) {
                        Some(why) => format!("`{name}` is not allowed in a transform: {why}"),
                        None => format!("undefined {} `{name}`", undefined.as_str()),
                    }
                })
                .collect();
            TransformError(format!("jq error: {}", msgs.join("; ")))
        })?;
        Ok(Self {
            source: code.to_string(),
            filter,
        })
    }

    /// The program text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Runs the program on JSON text; it must yield exactly one value, returned as JSON text.
    pub fn run_bytes(&self, input: &[u8]) -> Result<Vec<u8>, TransformError> {
        let input =
            jaq_json::read::parse_single(input).map_err(|e| TransformError(format!("cannot convert input: {e}")))?;
        let ctx = Ctx::<data::JustLut<Val>>::new(&self.filter.lut, Vars::new([]));
        let mut outputs = self.filter.id.run((ctx, input));
        let first = match outputs.next() {
            None => {
                return Err(TransformError(
                    "transform produced no value (did a `select` filter it out?)".into(),
                ))
            }
            Some(Err(e)) => return Err(TransformError(format!("transform failed: {}", describe_exn(e)))),
            Some(Ok(v)) => v,
        };
        if outputs.next().is_some() {
            return Err(TransformError(
                "transform produced more than one value; wrap it in [ … ] to forward an array".into(),
            ));
        }
        let text = first.to_string();
        // jaq prints some values (NaN, infinities) as no JSON parser reads them.
        serde_json::from_str::<serde::de::IgnoredAny>(&text)
            .map_err(|e| TransformError(format!("transform output is not JSON ({e}): {}", shorten(&text))))?;
        Ok(text.into_bytes())
    }

    /// Runs the program on `input` in this process (tests and tools; the worker uses the
    /// sandbox); it must yield exactly one value.
    pub fn run(&self, input: &Value) -> Result<Value, TransformError> {
        let input_text = serde_json::to_vec(input).map_err(|e| TransformError(e.to_string()))?;
        let out = self.run_bytes(&input_text)?;
        serde_json::from_slice(&out).map_err(|e| TransformError(format!("transform output is not JSON ({e})")))
    }
}

/// An exception as text; a halt (which cannot be compiled in) is an error too, never an exit.
fn describe_exn<V: std::fmt::Display>(e: jaq_core::Exn<V>) -> String {
    match e.get_err() {
        Ok(err) => err.to_string(),
        Err(other) => match other.get_halt() {
            Ok(code) => format!("the program asked to halt with code {code}"),
            Err(_) => "the program raised an exception".to_string(),
        },
    }
}

fn shorten(text: &str) -> &str {
    let mut end = text.len().min(200);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn runs_a_projection() {
        let t = Transform::compile("{id: .body.id, amount: (.body.amount * 2)}").unwrap();
        let out = t.run(&json!({"body": {"id": "o-1", "amount": 21, "x": 1}})).unwrap();
        assert_eq!(out, json!({"id": "o-1", "amount": 42}));
    }

    #[test]
    fn std_functions_are_available() {
        let t = Transform::compile(".body | keys | map(ascii_upcase)").unwrap();
        assert_eq!(t.run(&json!({"body": {"b": 1, "a": 2}})).unwrap(), json!(["A", "B"]));
    }

    #[test]
    fn syntax_errors_have_a_column() {
        let e = Transform::compile("{id: .body.id").unwrap_err();
        assert!(e.0.contains("column"), "{e}");
        let e = Transform::compile("nosuchfn(1)").unwrap_err();
        assert!(e.0.contains("undefined filter `nosuchfn`"), "{e}");
    }

    #[test]
    fn zero_or_many_outputs_and_runtime_errors_are_errors() {
        let t = Transform::compile(".body[]").unwrap();
        assert!(t.run(&json!({"body": []})).unwrap_err().0.contains("no value"));
        assert!(t.run(&json!({"body": [1, 2]})).unwrap_err().0.contains("more than one"));
        let t = Transform::compile(".body + 1").unwrap();
        assert!(t.run(&json!({"body": "x"})).unwrap_err().0.contains("failed"));
    }

    #[test]
    fn filters_that_reach_outside_the_message_are_rejected_with_the_reason() {
        for (code, name) in [
            ("env.HOME", "env"),
            ("$ENV.HOME", "$ENV"),
            ("halt_error", "halt_error"),
            ("halt_error(1)", "halt_error"),
            ("halt", "halt"),
            ("input", "input"),
            ("[inputs]", "inputs"),
            ("debug", "debug"),
            ("debug(\"x\")", "debug"),
            ("stderr", "stderr"),
            ("now", "now"),
            ("localtime", "localtime"),
        ] {
            let e = Transform::compile(code).unwrap_err();
            assert!(e.0.contains(&format!("`{name}` is not allowed")), "{code}: {e}");
        }
        assert!(Transform::compile(".body | tojson | gmtime? // 1").is_ok());
    }

    #[test]
    fn transform_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Transform>();
    }
}
