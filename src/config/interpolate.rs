//! `${NAME}` interpolation of environment variables in every string of a config.
//!
//! `${NAME}` is replaced by the variable's value, `${NAME:-fallback}` uses `fallback` when the
//! variable is unset or empty, and `$${` writes a literal `${`. An unset variable without a
//! fallback is an error naming the field.

use serde_json::Value;

use super::locate::{child_index, child_key};

/// A variable that is referenced but not set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingVariable {
    /// Field path of the string that references it.
    pub path: String,
    /// The variable's name.
    pub name: String,
}

/// Replaces `${…}` references in every string of `value`, looking variables up with `lookup`.
pub fn interpolate(
    value: &mut Value,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), MissingVariable> {
    match value {
        Value::String(s) if s.contains('$') => {
            *s = interpolate_str(s, lookup).map_err(|name| MissingVariable {
                path: path.to_string(),
                name,
            })?;
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate(item, &child_index(path, i), lookup)?;
            }
        }
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                interpolate(v, &child_key(path, k), lookup)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Interpolates one string; on failure returns the missing variable's name.
pub fn interpolate_str(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let Some(end) = tail.find('}') else {
                out.push_str(after);
                return Ok(out);
            };
            let expr = &tail[..end];
            let (name, fallback) = match expr.split_once(":-") {
                Some((n, f)) => (n, Some(f)),
                None => (expr, None),
            };
            match (lookup(name).filter(|v| !v.is_empty()), fallback) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(f)) => out.push_str(f),
                (None, None) => return Err(name.to_string()),
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(name: &str) -> Option<String> {
        (name == "QUEUE").then(|| "orders".to_string())
    }

    #[test]
    fn replaces_variables_defaults_and_escapes() {
        assert_eq!(interpolate_str("q/${QUEUE}/x", &env).unwrap(), "q/orders/x");
        assert_eq!(interpolate_str("${NOPE:-dflt}", &env).unwrap(), "dflt");
        assert_eq!(interpolate_str("$${QUEUE} $5", &env).unwrap(), "${QUEUE} $5");
        assert_eq!(interpolate_str("${NOPE}", &env).unwrap_err(), "NOPE");
    }

    #[test]
    fn missing_variable_names_the_field() {
        let mut v = json!({"targets": {"a": {"url": "${NOPE}"}}});
        let err = interpolate(&mut v, "", &env).unwrap_err();
        assert_eq!(
            err,
            MissingVariable {
                path: "targets.a.url".into(),
                name: "NOPE".into()
            }
        );
    }
}
