//! Smoke tests proving each part of `tests/env/up` is real: Kafka stores and
//! serves records through a consumer group; the control plane runs
//! controllers, a scheduler and kwok's simulated node; RBAC is enforced for
//! ServiceAccount tokens.

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Api, ResourceExt};
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::HashSet;
use std::time::Duration;
use twitterstream_tests::k8s::{TestNamespace, admin_client, service_account_token, token_client};
use twitterstream_tests::{eventually, kafka, kafka_brokers, unique_name};

const MESSAGES: usize = 10_000;

#[tokio::test]
async fn kafka_round_trips_10k_messages_through_a_consumer_group() {
    let topic = unique_name("smoke");
    kafka::create_topic(&topic, 3, 1).await;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let sends = (0..MESSAGES).map(|i| {
        let producer = &producer;
        let topic = &topic;
        async move {
            let key = format!("k{i}");
            let payload = format!("message {i}");
            producer
                .send(
                    FutureRecord::to(topic).key(&key).payload(&payload),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
        }
    });
    let delivered = futures::future::join_all(sends).await;
    let mut partitions_used = HashSet::new();
    for d in delivered {
        let delivery = d.expect("delivery");
        partitions_used.insert(delivery.partition);
    }
    assert_eq!(
        partitions_used.len(),
        3,
        "keys spread over all 3 partitions"
    );

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", unique_name("smoke-group"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");
    let mut seen = HashSet::new();
    let mut stream = consumer.stream();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while seen.len() < MESSAGES {
        let msg = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("consumed only {} of {MESSAGES} messages", seen.len()))
            .expect("stream ended")
            .expect("consume error");
        let payload = std::str::from_utf8(msg.payload().expect("payload")).expect("utf8");
        let key = std::str::from_utf8(msg.key().expect("key")).expect("utf8");
        assert_eq!(key[1..], payload["message ".len()..], "key matches payload");
        assert!(seen.insert(payload.to_string()), "duplicate {payload}");
    }
    assert_eq!(seen.len(), MESSAGES);
}

#[tokio::test]
async fn kube_serves_custom_resources() {
    let client = admin_client().await;
    let ns = TestNamespace::create(&client, "smoke-crd").await;
    let crd: CustomResourceDefinition = serde_json::from_value(serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": "widgets.smoke.twitterstream.io" },
        "spec": {
            "group": "smoke.twitterstream.io",
            "names": { "kind": "Widget", "plural": "widgets", "singular": "widget" },
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "properties": { "spec": {
                        "type": "object",
                        "required": ["size"],
                        "properties": { "size": { "type": "integer", "minimum": 1 } }
                    }}
                }}
            }]
        }
    }))
    .expect("CRD manifest");
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    crds.patch(
        "widgets.smoke.twitterstream.io",
        &PatchParams::apply("smoke-test").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("server-side apply of the CRD");
    eventually("CRD Established", Duration::from_secs(30), || {
        let crds = crds.clone();
        async move {
            let c = crds.get("widgets.smoke.twitterstream.io").await.ok()?;
            let established = c
                .status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            established.then_some(())
        }
    })
    .await;

    let gvk = GroupVersionKind::gvk("smoke.twitterstream.io", "v1", "Widget");
    let widgets: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns.name, &ApiResource::from_gvk(&gvk));
    let good: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "smoke.twitterstream.io/v1", "kind": "Widget",
        "metadata": { "name": "w1" }, "spec": { "size": 3 }
    }))
    .expect("widget");
    // The CRD's REST endpoint can lag Established by a moment.
    let created = eventually("creating a Widget", Duration::from_secs(30), || {
        let widgets = widgets.clone();
        let good = good.clone();
        async move { widgets.create(&PostParams::default(), &good).await.ok() }
    })
    .await;
    assert_eq!(created.data["spec"]["size"], 3);

    // The schema is enforced by the apiserver, not just stored.
    let bad: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "smoke.twitterstream.io/v1", "kind": "Widget",
        "metadata": { "name": "w2" }, "spec": { "size": 0 }
    }))
    .expect("widget");
    let err = widgets
        .create(&PostParams::default(), &bad)
        .await
        .expect_err("size 0 violates minimum 1");
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 422, "{status:?}");
            assert!(status.message.contains("spec.size"), "{}", status.message);
        }
        other => panic!("expected a 422 from the apiserver, got {other}"),
    }
}

#[tokio::test]
async fn deployment_pods_are_scheduled_on_the_simulated_node_and_become_ready() {
    let client = admin_client().await;
    let ns = TestNamespace::create(&client, "smoke-deploy").await;
    let deploy: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "web", "image": "example.invalid/web:1" }] }
            }
        }
    }))
    .expect("deployment");
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns.name);
    deployments
        .create(&PostParams::default(), &deploy)
        .await
        .expect("create deployment");

    // The deployment controller (kube-controller-manager) made a ReplicaSet...
    let replicasets = Api::<ReplicaSet>::namespaced(client.clone(), &ns.name);
    eventually(
        "a ReplicaSet owned by the Deployment",
        Duration::from_secs(60),
        || {
            let replicasets = replicasets.clone();
            async move {
                let list = replicasets.list(&ListParams::default()).await.ok()?;
                list.items
                    .iter()
                    .any(|rs| {
                        rs.owner_references()
                            .iter()
                            .any(|o| o.kind == "Deployment" && o.name == "web")
                    })
                    .then_some(())
            }
        },
    )
    .await;
    // ...kube-scheduler bound its pods to the kwok node, and kwok reports them Ready.
    let pods = Api::<Pod>::namespaced(client.clone(), &ns.name);
    let ready = eventually(
        "2 Ready pods on the kwok node",
        Duration::from_secs(90),
        || {
            let pods = pods.clone();
            async move {
                let list = pods
                    .list(&ListParams::default().labels("app=web"))
                    .await
                    .ok()?;
                let ready: Vec<Pod> = list
                    .items
                    .into_iter()
                    .filter(|p| {
                        p.status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|cs| {
                                cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                            })
                    })
                    .collect();
                (ready.len() == 2).then_some(ready)
            }
        },
    )
    .await;
    for pod in &ready {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        assert_eq!(
            node.as_deref(),
            Some("kwok-node-0"),
            "pod {} node",
            pod.name_any()
        );
    }
    let status = eventually(
        "Deployment readyReplicas=2",
        Duration::from_secs(60),
        || {
            let deployments = deployments.clone();
            async move {
                let d = deployments.get("web").await.ok()?;
                let s = d.status?;
                (s.ready_replicas == Some(2)).then_some(s)
            }
        },
    )
    .await;
    assert_eq!(status.available_replicas, Some(2));
}

#[tokio::test]
async fn service_account_token_without_rbac_is_forbidden() {
    let client = admin_client().await;
    let ns = TestNamespace::create(&client, "smoke-rbac").await;
    let sa: ServiceAccount =
        serde_json::from_value(serde_json::json!({ "metadata": { "name": "nobody" } }))
            .expect("sa");
    Api::<ServiceAccount>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &sa)
        .await
        .expect("create ServiceAccount");
    let token = service_account_token(&client, &ns.name, "nobody").await;
    let as_sa = token_client(&token).await;

    // The token authenticates (not a 401): the apiserver knows who we are.
    let review: SelfSubjectReview = Api::<SelfSubjectReview>::all(as_sa.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .expect("SelfSubjectReview with the ServiceAccount token");
    let username = review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username);
    assert_eq!(
        username.as_deref(),
        Some(format!("system:serviceaccount:{}:nobody", ns.name).as_str())
    );

    // But RBAC grants it nothing.
    let err = Api::<Pod>::namespaced(as_sa, &ns.name)
        .list(&ListParams::default())
        .await
        .expect_err("listing pods without a Role must fail");
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert_eq!(status.reason, "Forbidden");
        }
        other => panic!("expected 403 Forbidden, got {other}"),
    }
}

/// `tests/env/up` formats each broker's storage with a fresh cluster id; one
/// starting with "-" (1 in 64 of the ids it drew) made the storage tool take
/// it for an option, and the environment did not start.
#[test]
fn kafka_storage_is_formatted_with_a_cluster_id_starting_with_a_dash() {
    let dir = std::env::temp_dir().join(unique_name("kafka-format"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let props = dir.join("server.properties");
    std::fs::write(
        &props,
        format!(
            "process.roles=broker,controller\nnode.id=1\ncontroller.quorum.voters=1@127.0.0.1:9\n\
             listeners=PLAINTEXT://127.0.0.1:8,CONTROLLER://127.0.0.1:9\n\
             controller.listener.names=CONTROLLER\nlog.dirs={}\n",
            dir.join("data").display()
        ),
    )
    .expect("server.properties");
    let id = "-SwVwebBSHqMLo8ThAbQcg";
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(r#"source "$1" && kafka_cluster_id && kafka_format "$2" "$3""#)
        .args(["bash", concat!(env!("CARGO_MANIFEST_DIR"), "/env/lib.sh")])
        .arg(&props)
        .arg(id)
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let drawn = stdout.lines().next().unwrap_or_default();
    assert_eq!(drawn.len(), 22, "a drawn cluster id: {drawn:?}");
    assert!(!drawn.starts_with('-'), "a drawn cluster id: {drawn:?}");
    let meta = std::fs::read_to_string(dir.join("data/meta.properties")).expect("meta.properties");
    std::fs::remove_dir_all(&dir).expect("remove the temp dir");
    assert!(meta.contains(&format!("cluster.id={id}")), "{meta}");
}
