//! The shutdown signals: SIGTERM (what containers get) or SIGINT (Ctrl-C). The first starts the
//! drain; a second one during the drain aborts it (held messages are released at once).

use std::future::Future;

use crate::observe::events::{LogEvent, ShutdownSignal, SignalListenerFailed};

/// Waits for the next SIGTERM or SIGINT; returns its name.
struct Listener {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Listener {
    fn new() -> Self {
        #[cfg(unix)]
        let terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => Some(s),
            Err(e) => {
                SignalListenerFailed {
                    signal: "SIGTERM",
                    error: e.to_string(),
                }
                .emit();
                None
            }
        };
        Self {
            #[cfg(unix)]
            terminate,
        }
    }

    async fn next(&mut self) -> &'static str {
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
            match self.terminate.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => "SIGINT",
            _ = terminate => "SIGTERM",
        }
    }
}

/// Completes when the process receives SIGTERM or SIGINT.
pub async fn signal() {
    let signal = Listener::new().next().await;
    ShutdownSignal { signal }.emit();
}

/// Two futures: the first completes at the first SIGTERM/SIGINT (start the drain), the second
/// at the next one (abort the drain). Must be called inside a Tokio runtime.
pub fn signals() -> (impl Future<Output = ()> + Send, impl Future<Output = ()> + Send) {
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
    let (second_tx, second_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut listener = Listener::new();
        let signal = listener.next().await;
        ShutdownSignal { signal }.emit();
        let _ = first_tx.send(());
        let signal = listener.next().await;
        ShutdownSignal { signal }.emit();
        let _ = second_tx.send(());
    });
    (
        async move {
            if first_rx.await.is_err() {
                std::future::pending::<()>().await;
            }
        },
        async move {
            if second_rx.await.is_err() {
                std::future::pending::<()>().await;
            }
        },
    )
}
