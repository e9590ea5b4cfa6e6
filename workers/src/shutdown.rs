//! Shutdown on SIGTERM or Ctrl-C, observable from every loop of a worker.

use std::time::Duration;
use tokio::sync::watch;

/// A shutdown request (SIGTERM or Ctrl-C), observable from every loop.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    pub(crate) fn new() -> (watch::Sender<bool>, Self) {
        let (tx, rx) = watch::channel(false);
        (tx, Self(rx))
    }

    pub(crate) fn requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once shutdown is requested (or every sender is gone).
    pub(crate) async fn wait(&mut self) {
        let _ = self.0.wait_for(|v| *v).await;
    }

    /// Sleeps, returning false if shutdown cut the sleep short.
    pub(crate) async fn sleep(&mut self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = self.wait() => false,
        }
    }
}

/// Installs SIGTERM/SIGINT handlers that request shutdown.
pub fn shutdown_on_signals() -> Shutdown {
    let (tx, rx) = Shutdown::new();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = term.recv() => tracing::info!("SIGTERM: finishing the current transaction"),
                        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: finishing the current transaction"),
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot install a SIGTERM handler");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        let _ = tx.send(true);
        // Keep the sender alive so `wait` does not resolve spuriously later.
        std::future::pending::<()>().await;
    });
    rx
}
