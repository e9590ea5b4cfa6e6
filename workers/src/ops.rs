//! The ops HTTP server both workers run: `/healthz`, `/readyz` and
//! `/metrics`, answered from what the worker tells it through [`Probes`].

use crate::shutdown::Shutdown;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::Arc;

/// What a worker tells the ops server.
pub(crate) trait Probes: Send + Sync + 'static {
    /// `Err(why)` makes `/healthz` fail, and Kubernetes restart the pod.
    fn live(&self) -> Result<(), String> {
        Ok(())
    }
    /// `Err(why)` makes `/readyz` fail. It may block briefly (a Kafka
    /// metadata request): it runs on a blocking thread.
    fn ready(&self) -> Result<(), String>;
    /// The metrics in OpenMetrics text; `None` when they cannot be encoded.
    fn metrics(&self) -> Option<String>;
}

type Shared = Arc<dyn Probes>;

async fn healthz(State(p): State<Shared>) -> Response {
    match p.live() {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn readyz(State(p): State<Shared>) -> Response {
    let ready = tokio::task::spawn_blocking(move || p.ready())
        .await
        .unwrap_or_else(|_| Err("the readiness check failed".to_owned()));
    match ready {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn metrics(State(p): State<Shared>) -> Response {
    match p.metrics() {
        Some(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Binds the server (port 0 picks one) and serves until `shutdown`; returns
/// the bound address and the serving task.
pub(crate) async fn serve(
    addr: SocketAddr,
    probes: impl Probes,
    mut shutdown: Shutdown,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Arc::new(probes) as Shared);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tracing::info!(addr = %bound, "serving /healthz, /readyz and /metrics");
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "ops HTTP server failed");
        }
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed {
        live: bool,
        ready: bool,
    }

    impl Probes for Fixed {
        fn live(&self) -> Result<(), String> {
            if self.live {
                Ok(())
            } else {
                Err("a stage stopped".to_owned())
            }
        }
        fn ready(&self) -> Result<(), String> {
            if self.ready {
                Ok(())
            } else {
                Err("not assigned yet".to_owned())
            }
        }
        fn metrics(&self) -> Option<String> {
            Some("# EOF\n".to_owned())
        }
    }

    async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
        crate::common::install_tls_provider();
        let r = reqwest::get(format!("http://{addr}{path}"))
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = r.status().as_u16();
        let kind = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (status, kind, r.text().await.unwrap_or_default())
    }

    /// A server on a free loopback port answering from `Fixed`, and the
    /// sender that stops it.
    async fn start(
        live: bool,
        ready: bool,
    ) -> (
        tokio::sync::watch::Sender<bool>,
        SocketAddr,
        tokio::task::JoinHandle<()>,
    ) {
        let (stop, shutdown) = Shutdown::new();
        let addr = "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"));
        let (addr, task) = serve(addr, Fixed { live, ready }, shutdown)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        (stop, addr, task)
    }

    #[tokio::test]
    async fn answers_from_the_probes_and_stops_on_shutdown() {
        let (stop, addr, task) = start(true, false).await;
        assert_eq!(get(addr, "/healthz").await.0, 200);
        let (status, _, body) = get(addr, "/readyz").await;
        assert_eq!((status, body.as_str()), (503, "not assigned yet\n"));
        let (status, kind, body) = get(addr, "/metrics").await;
        assert_eq!((status, body.as_str()), (200, "# EOF\n"));
        assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
        let _ = stop.send(true);
        tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .unwrap_or_else(|_| panic!("the server did not stop"))
            .unwrap_or_else(|e| panic!("{e}"));
    }

    #[tokio::test]
    async fn a_failed_liveness_fails_healthz_with_its_reason() {
        let (_stop, addr, _task) = start(false, true).await;
        let (status, _, body) = get(addr, "/healthz").await;
        assert_eq!((status, body.as_str()), (503, "a stage stopped\n"));
        assert_eq!(get(addr, "/readyz").await.0, 200);
    }
}
