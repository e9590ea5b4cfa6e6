//! A mock apiserver for reconcile tests: a `kube::Client` whose requests are
//! answered by a function of (method, path, body) and recorded, so a test
//! can say what the reconcile did to the cluster without one. Events are
//! answered too, whenever the publisher task sends them.

use crate::context::Context;
use crate::crd::TwitterStream;
use crate::metrics::Metrics;
use crate::render::RenderConfig;
use crate::topic::Topics;
use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request the reconcile made.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub method: Method,
    /// Path and query.
    pub uri: String,
    pub body: serde_json::Value,
}

impl Call {
    pub fn is(&self, method: &Method, path: &str) -> bool {
        self.method == method && self.uri.split('?').next() == Some(path)
    }
}

/// What the mock apiserver answers: a status and a JSON body.
pub(crate) type Answer = (StatusCode, serde_json::Value);

/// The calls so far.
#[derive(Clone, Default)]
pub(crate) struct Calls(Arc<Mutex<Vec<Call>>>);

impl Calls {
    pub fn all(&self) -> Vec<Call> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The calls other than Events.
    pub fn without_events(&self) -> Vec<Call> {
        self.all()
            .into_iter()
            .filter(|c| !c.uri.contains("/events"))
            .collect()
    }
}

/// A client served by `answer`.
pub(crate) fn apiserver(
    answer: impl Fn(&Method, &str, &serde_json::Value) -> Answer + Send + Sync + 'static,
) -> (kube::Client, Calls) {
    let calls = Calls::default();
    let recorded = calls.clone();
    let answer = Arc::new(answer);
    let service = tower::service_fn(move |request: Request<Body>| {
        let (recorded, answer) = (recorded.clone(), answer.clone());
        async move {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
            let uri = parts.uri.to_string();
            let (status, reply) = if uri.contains("/events") {
                (StatusCode::CREATED, body.clone())
            } else {
                answer(&parts.method, &uri, &body)
            };
            recorded
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Call {
                    method: parts.method,
                    uri,
                    body,
                });
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&reply).unwrap_or_default()))
        }
    });
    (kube::Client::new(service, "default"), calls)
}

/// A Kubernetes `Status` for an error answer.
pub(crate) fn status(code: StatusCode, reason: &str) -> Answer {
    (
        code,
        serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure",
            "reason": reason, "message": reason, "code": code.as_u16(),
        }),
    )
}

/// A context over `client`. Kafka is never reachable here: topic requests
/// fail after `kafka_timeout`.
pub(crate) fn context(client: kube::Client, kafka_timeout: Duration) -> Context {
    Context::new(
        client,
        RenderConfig::new("registry.example/twitterstream-workers:1.2.3"),
        Topics::new(kafka_timeout),
        Arc::new(Metrics::default()),
        "test".into(),
    )
}

/// A synthetic stream in namespace `ns` whose brokers refuse connections.
pub(crate) fn stream(ns: &str, name: &str) -> TwitterStream {
    let spec = serde_json::from_value(serde_json::json!({
        "keyword": "rust",
        "source": "synthetic",
        "kafka": {"brokers": ["127.0.0.1:9"], "topic": "tweets", "partitions": 3, "replicationFactor": 1},
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    let mut tws = TwitterStream::new(name, spec);
    tws.metadata.namespace = Some(ns.into());
    tws.metadata.uid = Some("uid-1".into());
    tws.metadata.generation = Some(1);
    tws.metadata.resource_version = Some("7".into());
    tws
}
