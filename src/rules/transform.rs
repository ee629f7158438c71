//! jq transforms, through the `jaq` crates.
//!
//! A transform is compiled once at start-up; running it takes the envelope the pattern saw
//! (`{"body", "attributes", "source", "delivery_attempt"}`) and must produce exactly one value,
//! which becomes the forwarded body.

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{data, unwrap_valr, Compiler, Ctx, Vars};
use jaq_json::Val;
use serde_json::Value;

type Filter = jaq_core::compile::Filter<jaq_core::Native<data::JustLut<Val>>>;

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

impl Transform {
    /// Compiles a jq program; errors say what was expected and at which column.
    pub fn compile(code: &str) -> Result<Self, TransformError> {
        let defs = jaq_core::defs().chain(jaq_std::defs()).chain(jaq_json::defs());
        let funs = jaq_core::funs().chain(jaq_std::funs()).chain(jaq_json::funs());
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
                .map(|(name, undefined)| format!("undefined {} `{name}`", undefined.as_str()))
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

    /// Runs the program on `input`; it must yield exactly one value.
    pub fn run(&self, input: &Value) -> Result<Value, TransformError> {
        let input_text = serde_json::to_vec(input).map_err(|e| TransformError(e.to_string()))?;
        let input = jaq_json::read::parse_single(&input_text)
            .map_err(|e| TransformError(format!("cannot convert input: {e}")))?;
        let ctx = Ctx::<data::JustLut<Val>>::new(&self.filter.lut, Vars::new([]));
        let mut outputs = self.filter.id.run((ctx, input)).map(unwrap_valr);
        let first = match outputs.next() {
            None => {
                return Err(TransformError(
                    "transform produced no value (did a `select` filter it out?)".into(),
                ))
            }
            Some(Err(e)) => return Err(TransformError(format!("transform failed: {e}"))),
            Some(Ok(v)) => v,
        };
        if outputs.next().is_some() {
            return Err(TransformError(
                "transform produced more than one value; wrap it in [ … ] to forward an array".into(),
            ));
        }
        let text = first.to_string();
        serde_json::from_str(&text).map_err(|e| TransformError(format!("transform output is not JSON ({e}): {text}")))
    }
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
    fn transform_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Transform>();
    }
}
