//! The shutdown signal: SIGTERM (what containers get) or SIGINT (Ctrl-C).

use crate::observe::events::{LogEvent, ShutdownSignal, SignalListenerFailed};

/// Completes when the process receives SIGTERM or SIGINT.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            SignalListenerFailed {
                signal: "SIGINT",
                error: e.to_string(),
            }
            .emit();
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                SignalListenerFailed {
                    signal: "SIGTERM",
                    error: e.to_string(),
                }
                .emit();
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => ShutdownSignal { signal: "SIGINT" }.emit(),
        _ = terminate => ShutdownSignal { signal: "SIGTERM" }.emit(),
    }
}
