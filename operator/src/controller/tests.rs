//! `reconcile` against a mock apiserver (`crate::fixtures`): what it asks of
//! the cluster, without one. Kafka is unreachable in all of them.

use super::*;
use crate::apply::{TOPIC_FINALIZER, topic_requests};
use crate::child::ChildDeployment;
use crate::conditions;
use crate::fixtures::{self, Call};
use crate::render::{self, RenderConfig};
use http::{Method, StatusCode};
use k8s_openapi::api::apps::v1::Deployment;
use serde_json::{Value, json};

const KAFKA_TIMEOUT: Duration = Duration::from_millis(300);

/// A rendered Deployment as the cluster would hold it: at `generation`,
/// rolled out, every replica ready.
fn rolled_out(d: &Deployment, generation: i64) -> Value {
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let mut v = serde_json::to_value(d).unwrap_or_default();
    v["metadata"]["generation"] = json!(generation);
    v["status"] = json!({
        "observedGeneration": generation, "replicas": replicas,
        "readyReplicas": replicas, "updatedReplicas": replicas,
    });
    v
}

/// No pods: the reconcile's look at why pods are not ready finds nothing.
fn no_pods() -> fixtures::Answer {
    (
        StatusCode::OK,
        json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}),
    )
}

fn deployment_path(ns: &str, name: &str) -> String {
    format!("/apis/apps/v1/namespaces/{ns}/deployments/{name}")
}

fn stream_path(ns: &str, name: &str) -> String {
    format!("/apis/twitterstream.io/v1alpha1/namespaces/{ns}/twitterstreams/{name}")
}

fn applies(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c.method == Method::PATCH && c.uri.contains("/deployments/"))
        .map(|c| c.uri.clone())
        .collect()
}

/// Reconciles a stream whose Deployments exist as rendered, after this
/// process applied them at generation 1, while the cluster holds them at
/// `generation`; returns the calls.
async fn reconcile_existing(generation: i64) -> Vec<Call> {
    reconcile_existing_stream(fixtures::stream("ns1", "demo"), generation)
        .await
        .0
}

/// `reconcile_existing` of `tws`; also returns the context.
async fn reconcile_existing_stream(
    tws: TwitterStream,
    generation: i64,
) -> (Vec<Call>, Arc<Context>) {
    let rendered = render::deployments(
        &tws,
        &RenderConfig::new("registry.example/twitterstream-workers:1.2.3"),
    );
    let existing: Vec<(String, Value)> = rendered
        .iter()
        .map(|(_, d)| {
            (
                deployment_path("ns1", &d.name_any()),
                rolled_out(d, generation),
            )
        })
        .collect();
    let served = existing.clone();
    let me = serde_json::to_value(&tws).unwrap_or_default();
    let (client, calls) = fixtures::apiserver(move |method, uri, body| {
        let path = uri.split('?').next().unwrap_or_default();
        if path.ends_with("/pods") {
            return no_pods();
        }
        if path.ends_with("/scale") {
            let scale = json!({
                "apiVersion": "autoscaling/v1", "kind": "Scale",
                "metadata": {"name": "demo", "namespace": "ns1"},
                "spec": body["spec"].clone(), "status": {"replicas": 1},
            });
            return (StatusCode::OK, scale);
        }
        match served.iter().find(|(p, _)| p == path) {
            Some((_, d)) if method == Method::GET => (StatusCode::OK, d.clone()),
            Some((_, d)) => {
                // An apply: the cluster takes the new spec, at the next generation.
                let mut v = body.clone();
                v["metadata"]["generation"] = d["metadata"]["generation"]
                    .as_i64()
                    .map_or(json!(1), |g| json!(g + 1));
                (StatusCode::OK, v)
            }
            None => (StatusCode::OK, me.clone()),
        }
    });
    let ctx = fixtures::context(client, KAFKA_TIMEOUT);
    for req in topic_requests(&tws) {
        ctx.topic_checked(&req, true);
    }
    for (_, v) in &existing {
        let mut d: Deployment = serde_json::from_value(v.clone()).unwrap_or_default();
        d.metadata.generation = Some(1);
        ctx.remember_applied("ns1", &ChildDeployment::from(d));
    }
    let ctx = Arc::new(ctx);
    let result = reconcile(Arc::new(tws), ctx.clone()).await;
    assert!(result.is_ok(), "{:?}", result.err());
    (calls.without_events(), ctx)
}

#[tokio::test]
async fn autoscaling_brings_the_consumers_within_its_bounds_through_the_scale_subresource() {
    let mut tws = fixtures::stream("ns1", "demo");
    tws.spec.consumer.autoscaling = serde_json::from_value(json!({
        "minReplicas": 2, "maxReplicas": 3,
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    let (calls, ctx) = reconcile_existing_stream(tws, 1).await;
    let scale = format!("{}/scale", stream_path("ns1", "demo"));
    let patches: Vec<&Call> = calls
        .iter()
        .filter(|c| c.is(&Method::PATCH, &scale))
        .collect();
    assert_eq!(patches.len(), 1, "{calls:#?}");
    assert_eq!(patches[0].body, json!({"spec": {"replicas": 2}}));
    assert!(
        ctx.metrics
            .encode()
            .contains("twitterstream_operator_consumer_scalings_total{direction=\"up\"} 1"),
        "{}",
        ctx.metrics.encode()
    );
    // Within the bounds, without a throughput sample: nothing to decide.
    let (calls, _) = reconcile_existing_stream(fixtures::stream("ns1", "demo"), 1).await;
    assert!(
        !calls.iter().any(|c| c.uri.contains("/scale")),
        "{calls:#?}"
    );
}

#[tokio::test]
async fn an_unchanged_rendering_is_not_applied_again() {
    let calls = reconcile_existing(1).await;
    assert_eq!(applies(&calls), Vec::<String>::new(), "{calls:#?}");
    // It still looked (the watch cache is empty here) and wrote the status.
    assert!(
        calls
            .iter()
            .any(|c| c.is(&Method::GET, &deployment_path("ns1", "demo-producer")))
    );
    assert!(
        calls
            .iter()
            .any(|c| c.uri.ends_with("/status") || c.uri.contains("/status?"))
    );
}

#[tokio::test]
async fn a_deployment_someone_else_changed_is_applied_again() {
    // `kubectl scale deploy` or `kubectl edit` moved it to generation 2; its
    // render hash still matches, so only the generation tells.
    let calls = reconcile_existing(2).await;
    assert_eq!(
        applies(&calls).len(),
        2,
        "both Deployments re-applied: {calls:#?}"
    );
}

#[tokio::test]
async fn an_unreachable_kafka_sets_the_topic_condition() {
    let tws = fixtures::stream("ns1", "demo");
    let me = serde_json::to_value(&tws).unwrap_or_default();
    let (client, calls) = fixtures::apiserver(move |method, uri, body| {
        if uri.contains("/deployments/") && method == Method::GET {
            return fixtures::status(StatusCode::NOT_FOUND, "NotFound");
        }
        if uri.contains("/deployments/") {
            let mut v = body.clone();
            v["metadata"]["generation"] = json!(1);
            return (StatusCode::OK, v);
        }
        if uri.contains("/pods") {
            return (
                StatusCode::OK,
                json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}),
            );
        }
        (StatusCode::OK, me.clone())
    });
    let ctx = fixtures::context(client, KAFKA_TIMEOUT);
    let action = reconcile(Arc::new(tws), Arc::new(ctx)).await;
    assert!(
        action.is_ok(),
        "a topic failure is a condition, not an error: {action:?}"
    );
    let calls = calls.without_events();
    let status = calls
        .iter()
        .find(|c| c.method == Method::PATCH && c.uri.contains("/status"))
        .unwrap_or_else(|| panic!("no status written: {calls:#?}"));
    let conditions = status.body["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let condition = |t: &str| {
        conditions
            .iter()
            .find(|c| c["type"] == t)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(
        condition(conditions::TOPIC_READY)["status"],
        "False",
        "{conditions:#?}"
    );
    assert_ne!(condition(conditions::TOPIC_READY)["reason"], "TopicExists");
    assert_eq!(condition(conditions::READY)["status"], "False");
    // The Deployments are applied anyway, so they are ready when Kafka is.
    assert_eq!(applies(&calls).len(), 2, "{calls:#?}");
}

#[tokio::test]
async fn a_deleted_stream_drops_its_finalizer_once_kafka_has_had_its_time() {
    let mut tws = fixtures::stream("ns1", "demo");
    tws.spec.kafka.delete_topic_on_delete = true;
    tws.metadata.finalizers = Some(vec!["other.io/keep".into(), TOPIC_FINALIZER.into()]);
    tws.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(600),
    ));
    let me = serde_json::to_value(&tws).unwrap_or_default();
    let (client, calls) = fixtures::apiserver(move |_, _, _| (StatusCode::OK, me.clone()));
    let ctx = fixtures::context(client, KAFKA_TIMEOUT)
        .with_topic_delete_timeout(Duration::from_secs(300));
    let action = reconcile(Arc::new(tws), Arc::new(ctx)).await;
    assert!(action.is_ok(), "{action:?}");
    let patches: Vec<Call> = calls
        .without_events()
        .into_iter()
        .filter(|c| c.is(&Method::PATCH, &stream_path("ns1", "demo")))
        .collect();
    assert_eq!(patches.len(), 1, "{patches:#?}");
    // Ours goes, another controller's stays, and only if nobody changed the
    // list meanwhile.
    assert_eq!(
        patches[0].body["metadata"]["finalizers"],
        json!(["other.io/keep"])
    );
    assert_eq!(patches[0].body["metadata"]["resourceVersion"], "7");
    // The topic it could not delete is named in a Warning Event.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let warned = calls
            .all()
            .iter()
            .any(|c| c.uri.contains("/events") && c.body.to_string().contains("TopicNotDeleted"));
        if warned {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no TopicNotDeleted Event: {:#?}",
            calls.all()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_deleted_stream_keeps_its_finalizer_while_kafka_may_come_back() {
    let mut tws = fixtures::stream("ns1", "demo");
    tws.spec.kafka.delete_topic_on_delete = true;
    tws.metadata.finalizers = Some(vec![TOPIC_FINALIZER.into()]);
    tws.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    let (client, calls) =
        fixtures::apiserver(|_, _, _| fixtures::status(StatusCode::NOT_FOUND, "NotFound"));
    let ctx = fixtures::context(client, KAFKA_TIMEOUT);
    let result = reconcile(Arc::new(tws), Arc::new(ctx)).await;
    assert!(result.is_err(), "the deletion waits and retries");
    assert!(
        !calls
            .without_events()
            .iter()
            .any(|c| c.method == Method::PATCH),
        "{:#?}",
        calls.all()
    );
}
