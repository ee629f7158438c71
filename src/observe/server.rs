//! The HTTP surface: `/metrics` (Prometheus text format), `/healthz`, `/readyz`.

use crate::observe::events::{LogEvent, MetricsServerFailed, MetricsServing};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::observe::health::Health;
use crate::observe::LATENCY_BUCKETS;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Binding the address failed.
    #[error("cannot listen on {addr}: {source}; is another process using the port? pick another with --metrics-addr")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A metrics recorder was already installed in this process.
    #[error("cannot install the Prometheus recorder: {0}")]
    Recorder(String),
}

/// Installs the process-wide Prometheus recorder (histograms with [`LATENCY_BUCKETS`]).
pub fn install_recorder() -> Result<PrometheusHandle, ServerError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), LATENCY_BUCKETS)
        .map_err(|e| ServerError::Recorder(e.to_string()))?
        .install_recorder()
        .map_err(|e| ServerError::Recorder(e.to_string()))
}

#[derive(Clone)]
struct AppState {
    metrics: PrometheusHandle,
    health: Arc<Health>,
}

async fn serve_metrics(State(s): State<AppState>) -> String {
    s.metrics.render()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<AppState>) -> (StatusCode, String) {
    match s.health.ready() {
        Ok(()) => (StatusCode::OK, format!("{}\n", s.health.ready_note())),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
    }
}

/// A running server; [`Server::stop`] ends it.
pub struct Server {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Server {
    /// Binds `addr` and serves until stopped.
    pub async fn start(
        addr: SocketAddr,
        metrics: PrometheusHandle,
        health: Arc<Health>,
    ) -> Result<Server, ServerError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ServerError::Bind { addr, source })?;
        let app = Router::new()
            .route("/metrics", get(serve_metrics))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .with_state(AppState { metrics, health });
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move { stopped.cancelled().await });
            if let Err(e) = serve.await {
                MetricsServerFailed { error: e.to_string() }.emit();
            }
        });
        MetricsServing { addr }.emit();
        Ok(Server { addr, stop, task })
    }

    /// Stops serving.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}
