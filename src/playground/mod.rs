//! `veltrix playground`: one local page to edit rules and see, as you type, each rule's
//! verdict with its deciding fields, the transform's output and the outcome.
//!
//! ```text
//!  browser ──GET /──────────────> page.html (embedded: no CDN, works offline)
//!          ──GET /api/initial───> {"file", "config": <TOML text>, "events": [<event>, …]}
//!          ──POST /api/evaluate─> [<what `veltrix test --format json --explain` prints>, …]
//!                                 or {"error": {"line", "column", "message"}}
//! ```
//!
//! Nothing here connects to a queue or a target: the config is only parsed and its rules
//! evaluated, exactly as `veltrix test` does (transforms run in the sandbox, with its budgets,
//! so a transform typed into the page cannot stall or crash the server).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{self, Config, ConfigError};
use crate::sandbox::{InProcess, RunTransforms, Sandbox};
use crate::testing::{run_tests, Format, TestOptions};

/// The page, embedded in the binary.
const PAGE: &str = include_str!("page.html");

/// Most events one evaluation takes.
pub const MAX_EVENTS: usize = 1000;
/// Largest request body (config text plus events), in bytes.
pub const MAX_REQUEST_BYTES: usize = 2 * 1024 * 1024;

/// What `POST /api/evaluate` takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluateRequest {
    /// The config, as TOML text (relative paths resolve against the playground's config file).
    pub config: String,
    /// Events: bodies, or with `envelope` objects like `{"body": …, "attributes": {…}}`.
    pub events: Vec<Value>,
    /// Whether `events` are envelopes.
    #[serde(default)]
    pub envelope: bool,
}

/// Why an evaluation could not run: `{"error": {"line", "column", "message"}}`.
#[derive(Debug, Serialize, PartialEq)]
pub struct ApiError {
    /// The first problem.
    pub error: ErrorDetail,
    /// Every problem, in file order (config errors can be several).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<ErrorDetail>,
}

/// One problem, at its place in the config text when it has one.
#[derive(Debug, Serialize, PartialEq, Clone)]
pub struct ErrorDetail {
    /// Line, from 1.
    pub line: Option<usize>,
    /// Column in characters, from 1.
    pub column: Option<usize>,
    /// What is wrong, with the field, what is allowed and a hint.
    pub message: String,
}

impl ApiError {
    fn plain(message: impl Into<String>) -> Self {
        ApiError {
            error: ErrorDetail {
                line: None,
                column: None,
                message: message.into(),
            },
            problems: Vec::new(),
        }
    }

    fn from_config(e: &ConfigError) -> Self {
        let problems: Vec<ErrorDetail> = e
            .problems()
            .iter()
            .map(|d| ErrorDetail {
                line: d.position.map(|p| p.line),
                column: d.position.map(|p| p.column),
                message: d.describe(),
            })
            .collect();
        match problems.first() {
            Some(first) => ApiError {
                error: first.clone(),
                problems,
            },
            None => ApiError::plain(e.to_string()),
        }
    }
}

/// Parses `text` as the config at `path` (so relative paths and the file type follow it).
pub fn parse_config(path: &Path, text: &str) -> Result<Config, ApiError> {
    config::load_str(path, text, &|name| std::env::var(name).ok()).map_err(|e| ApiError::from_config(&e))
}

/// Evaluates `events` as `veltrix test --format json --explain` would and returns its lines.
pub fn evaluate(config: &Config, events: &[Value], envelope: bool, transforms: &dyn RunTransforms) -> Vec<Value> {
    let mut input = Vec::new();
    for e in events {
        // Compact JSON has no raw newlines, so each event is one line.
        serde_json::to_writer(&mut input, e).expect("a JSON value serialises");
        input.push(b'\n');
    }
    let options = TestOptions {
        envelope,
        explain: true,
        format: Format::Json,
    };
    let mut out = Vec::new();
    if let Err(e) = run_tests(config, &input[..], &mut out, options, transforms) {
        // Writing to memory does not fail; keep the answer well-formed if it ever does.
        return vec![serde_json::json!({ "error": e.to_string() })];
    }
    out.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap_or(Value::Null))
        .collect()
}

/// The playground's state: the file it was started on, and a sandbox for the transforms last
/// evaluated (restarted when they change).
pub struct Playground {
    config_path: PathBuf,
    config_text: String,
    events: Vec<Value>,
    sandbox: Mutex<Option<(Vec<String>, Arc<Sandbox>)>>,
}

impl Playground {
    /// Reads the config file and the events file (one event per line; a line that is not JSON
    /// is a string event). The config need not be valid: the page shows its errors.
    pub fn open(config_path: &Path, events_path: Option<&Path>) -> std::io::Result<Self> {
        let config_text = std::fs::read_to_string(config_path)?;
        let events = match events_path {
            Some(p) => std::fs::read_to_string(p)?
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str(l).unwrap_or_else(|_| Value::String(l.to_string())))
                .collect(),
            None => Vec::new(),
        };
        Ok(Playground {
            config_path: config_path.to_path_buf(),
            config_text,
            events,
            sandbox: Mutex::new(None),
        })
    }

    fn sandbox_for(&self, config: &Config) -> Result<Arc<Sandbox>, ApiError> {
        let sources = config.rules.transform_sources();
        let mut cached = self.sandbox.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((s, sandbox)) = cached.as_ref() {
            if *s == sources {
                return Ok(sandbox.clone());
            }
        }
        let sandbox = Arc::new(
            Sandbox::start(&config.settings.sandbox, sources.clone())
                .map_err(|e| ApiError::plain(format!("cannot start the transform sandbox: {e}")))?,
        );
        *cached = Some((sources, sandbox.clone()));
        Ok(sandbox)
    }

    /// Parses the request, evaluates it, and answers.
    fn answer(&self, body: &[u8]) -> Result<Vec<Value>, ApiError> {
        let request: EvaluateRequest = serde_json::from_slice(body).map_err(|e| {
            ApiError::plain(format!(
                "the request must be {{\"config\": \"<TOML text>\", \"events\": [<event>, …], \"envelope\": false}}: {e}"
            ))
        })?;
        if request.events.len() > MAX_EVENTS {
            return Err(ApiError::plain(format!(
                "{} events in one request; at most {MAX_EVENTS}",
                request.events.len()
            )));
        }
        let config = parse_config(&self.config_path, &request.config)?;
        if config.rules.transforms().is_empty() {
            return Ok(evaluate(
                &config,
                &request.events,
                request.envelope,
                &InProcess(&config.rules),
            ));
        }
        let sandbox = self.sandbox_for(&config)?;
        Ok(evaluate(&config, &request.events, request.envelope, sandbox.as_ref()))
    }
}

/// The routes: the page, `GET /api/initial` and `POST /api/evaluate`.
pub fn router(playground: Arc<Playground>) -> Router {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        // Browsers ask for it; there is none.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/api/initial", get(initial))
        .route("/api/evaluate", post(evaluate_route))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(playground)
}

async fn initial(State(p): State<Arc<Playground>>) -> Json<Value> {
    Json(serde_json::json!({
        "file": p.config_path.display().to_string(),
        "config": p.config_text,
        "events": p.events,
    }))
}

async fn evaluate_route(State(p): State<Arc<Playground>>, body: Bytes) -> Response {
    // Transforms block on the sandbox: off the async threads.
    let answer = tokio::task::spawn_blocking(move || p.answer(&body)).await;
    match answer {
        Ok(Ok(lines)) => Json(lines).into_response(),
        Ok(Err(e)) => (StatusCode::UNPROCESSABLE_ENTITY, Json(e)).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({"error": {"line": null, "column": null, "message": e.to_string()}}).to_string(),
        )
            .into_response(),
    }
}

/// Serves the playground on `addr` until `shutdown` completes; prints its address first.
pub async fn serve(
    playground: Arc<Playground>,
    addr: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    if !bound.ip().is_loopback() {
        tracing::warn!(%bound, "the playground is reachable from other machines; it shows the config, with ${{ENV}} values filled in");
    }
    println!("playground: http://{bound}/ (nothing is sent to any queue or target; Ctrl-C stops it)");
    axum::serve(listener, router(playground))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CONFIG: &str = r#"
[source]
type = "file"
path = "events.jsonl"

[[rules]]
name = "orders"
match = { body = { type = ["order.created"], customer = { id = [{ exists = true }] } } }
actions = [{ type = "drop" }]
"#;

    #[test]
    fn evaluates_like_veltrix_test_with_explanations() {
        let config = parse_config(Path::new("p.toml"), CONFIG).unwrap();
        let lines = evaluate(
            &config,
            &[
                json!({"type": "order.created", "customer": {"id": "c-1"}}),
                json!({"type": "order.created", "customer": null}),
                json!({"type": ["order.created", "x"], "customer": {"id": ["c"]}}),
            ],
            false,
            &InProcess(&config.rules),
        );
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["matched"], json!(["orders"]));
        assert_eq!(lines[0]["explain"][0]["matched"], true);
        let fields = &lines[1]["explain"][0]["fields"];
        assert_eq!(fields[0]["path"], "body.customer.id");
        assert_eq!(fields[0]["kind"], "missing");
        assert_eq!(lines[1]["nearest"][0]["rule"], "orders");
        assert_eq!(lines[2]["explain"][0]["fields"][1]["kind"], "array");
        assert_eq!(
            lines[2]["explain"][0]["fields"][1]["tried"],
            json!(["order.created", "x"])
        );
    }

    #[test]
    fn config_errors_come_with_line_and_column() {
        let broken = CONFIG.replace("type = \"drop\"", "type = \"dorp\"");
        let e = parse_config(Path::new("p.toml"), &broken).unwrap_err();
        let line = broken.lines().position(|l| l.contains("dorp")).unwrap() + 1;
        assert_eq!(e.error.line, Some(line));
        assert!(e.error.column.is_some());
        assert!(e.error.message.contains("dorp"), "{}", e.error.message);
        let j = serde_json::to_value(&e).unwrap();
        assert_eq!(j["error"]["line"], json!(line));
    }

    #[test]
    fn malformed_requests_get_the_error_shape() {
        let p = Playground {
            config_path: PathBuf::from("p.toml"),
            config_text: String::new(),
            events: Vec::new(),
            sandbox: Mutex::new(None),
        };
        let e = p.answer(b"{\"config\": 1}").unwrap_err();
        assert!(e.error.message.contains("\"events\""), "{}", e.error.message);
        let many = json!({"config": CONFIG, "events": vec![json!({}); MAX_EVENTS + 1]});
        assert!(p
            .answer(many.to_string().as_bytes())
            .unwrap_err()
            .error
            .message
            .contains("at most"));
        let ok = json!({"config": CONFIG, "events": [{"type": "x"}]});
        assert_eq!(
            p.answer(ok.to_string().as_bytes()).unwrap()[0]["outcome"],
            "dead_letter"
        );
    }
}
