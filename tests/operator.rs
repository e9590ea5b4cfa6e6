//! The operator, as a real process, against the real control plane (kwok runs
//! the pods) and the real Kafka broker.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use std::io::Write;
use std::process::Command;
use std::time::Duration;
use twitterstream_operator::crd::{TwitterStream, TwitterStreamSpec};
use twitterstream_tests::examples::superbowl_spec;
use twitterstream_tests::k8s::{TestNamespace, admin_client};
use twitterstream_tests::operator::{Operator, TEST_WORKER_IMAGE, install_crd};
use twitterstream_tests::{eventually, kafka, kafka_brokers, unique_name};

const WAIT: Duration = Duration::from_secs(90);

/// The README's example, pointed at the test broker with unique topic names.
fn example(name: &str) -> TwitterStream {
    let topic = unique_name("raw-twitter");
    let brokers = kafka_brokers();
    let brokers: Vec<&str> = brokers.split(',').collect();
    let spec: TwitterStreamSpec =
        serde_json::from_value(superbowl_spec(&brokers, &topic)).expect("example spec");
    TwitterStream::new(name, spec)
}

struct Setup {
    client: Client,
    ns: TestNamespace,
    streams: Api<TwitterStream>,
    deployments: Api<Deployment>,
}

async fn setup(prefix: &str) -> Setup {
    let client = admin_client().await;
    install_crd(&client).await;
    let ns = TestNamespace::create(&client, prefix).await;
    Setup {
        streams: Api::namespaced(client.clone(), &ns.name),
        deployments: Api::namespaced(client.clone(), &ns.name),
        client,
        ns,
    }
}

fn condition(tws: &TwitterStream, type_: &str) -> Option<(String, String, String)> {
    tws.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Waits until the stream's status describes its current generation and `check` holds.
async fn wait_status(
    api: &Api<TwitterStream>,
    name: &str,
    what: &str,
    check: impl Fn(&TwitterStream) -> bool,
) -> TwitterStream {
    eventually(what, WAIT, || {
        let api = api.clone();
        let check = &check;
        async move {
            let t = api.get(name).await.ok()?;
            let observed = t.status.as_ref()?.observed_generation;
            (observed == t.metadata.generation && check(&t)).then_some(t)
        }
    })
    .await
}

/// Waits until the TwitterStream `name` no longer exists.
async fn wait_gone(api: &Api<TwitterStream>, name: &str) {
    eventually(&format!("{name} gone"), WAIT, || {
        let api = api.clone();
        async move {
            api.get_opt(name)
                .await
                .ok()
                .flatten()
                .is_none()
                .then_some(())
        }
    })
    .await;
}

fn is_ready(t: &TwitterStream) -> bool {
    condition(t, "Ready").is_some_and(|(s, _, _)| s == "True")
}

fn args(d: &Deployment) -> Vec<String> {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .args
        .clone()
        .unwrap()
}

/// The value of `--name=value` in rendered arguments.
fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .find_map(|a| a.strip_prefix(name)?.strip_prefix('='))
        .map(str::to_owned)
}

async fn ready_pods(client: &Client, ns: &str, selector: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    pods.list(&ListParams::default().labels(selector))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .collect()
}

async fn event_reasons(client: &Client, ns: &str, name: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    events
        .list(&ListParams::default().fields(&format!(
            "involvedObject.name={name},involvedObject.kind=TwitterStream"
        )))
        .await
        .map(|l| l.items.into_iter().filter_map(|e| e.reason).collect())
        .unwrap_or_default()
}

fn kubectl(args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .args(args)
        .output()
        .expect("running kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn example_becomes_ready_then_follows_changes_suspend_and_scale() {
    let s = setup("op-lifecycle").await;
    let op = Operator::start(&s.ns.name, None, &[]);
    let tws = example("superbowl");
    let topic = tws.spec.kafka.topic.clone();
    s.streams
        .create(&PostParams::default(), &tws)
        .await
        .expect("create");

    // `kubectl wait` on the Ready condition works, as users will use it.
    let out = Command::new("kubectl")
        .args([
            "wait",
            "--for=condition=Ready",
            "tws/superbowl",
            "-n",
            &s.ns.name,
            "--timeout=90s",
        ])
        .output()
        .expect("kubectl wait");
    assert!(
        out.status.success(),
        "kubectl wait: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ready = wait_status(&s.streams, "superbowl", "Ready=True", is_ready).await;
    for c in ["TopicReady", "ProducerReady", "ConsumerReady"] {
        assert_eq!(
            condition(&ready, c).map(|c| c.0),
            Some("True".into()),
            "{c}"
        );
    }
    let st = ready.status.clone().unwrap();
    assert_eq!(st.consumer.as_ref().unwrap().ready_replicas, 2);
    assert_eq!(st.producer.as_ref().unwrap().ready_replicas, 1);

    // Both Deployments, with the rendered arguments and the default image.
    let producer = s
        .deployments
        .get("superbowl-producer")
        .await
        .expect("producer Deployment");
    let consumer = s
        .deployments
        .get("superbowl-consumer")
        .await
        .expect("consumer Deployment");
    let pargs = args(&producer);
    assert_eq!(flag(&pargs, "--keyword").as_deref(), Some("superbowl"));
    assert_eq!(flag(&pargs, "--topic").as_deref(), Some(topic.as_str()));
    assert_eq!(flag(&pargs, "--min-faves").as_deref(), Some("60000"));
    let cargs: twitterstream_contract::ConsumerArgs =
        twitterstream_contract::parse_rendered(&args(&consumer)).expect("consumer arguments");
    assert_eq!(cargs.window_seconds, 10);
    let image = producer
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone();
    assert_eq!(image.as_deref(), Some(TEST_WORKER_IMAGE));
    assert_eq!(
        ready_pods(
            &s.client,
            &s.ns.name,
            &st.consumer.as_ref().unwrap().selector
        )
        .await
        .len(),
        2
    );

    // The topic exists in Kafka with the requested 3 partitions.
    let state = kafka::describe_topic(&topic).await.expect("topic exists");
    assert_eq!(state, 3usize);
    let reasons = event_reasons(&s.client, &s.ns.name, "superbowl").await;
    assert!(
        reasons.iter().any(|r| r == "Created"),
        "Created Event: {reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r == "TopicCreated"),
        "TopicCreated Event: {reasons:?}"
    );

    // The printer columns show it.
    let table = kubectl(&["get", "tws", "-n", &s.ns.name]);
    assert!(
        table.contains("KEYWORD") && table.contains("READY"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|l| l.contains("superbowl") && l.contains("True")),
        "{table}"
    );

    // Metrics count the reconciles.
    let (code, body) = op.get("/metrics").await.expect("metrics endpoint");
    assert_eq!(code, 200);
    assert!(
        body.contains("twitterstream_operator_reconciles_total"),
        "{body}"
    );
    assert_eq!(op.get("/readyz").await.map(|r| r.0), Some(200));

    // A keyword change updates the Deployment and rolls the pods.
    let old_pods: Vec<String> = ready_pods(
        &s.client,
        &s.ns.name,
        &st.producer.as_ref().unwrap().selector,
    )
    .await
    .iter()
    .map(|p| p.name_any())
    .collect();
    let patch = json!({ "spec": { "keyword": "halftime show" } });
    s.streams
        .patch("superbowl", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch keyword");
    let changed = wait_status(
        &s.streams,
        "superbowl",
        "keyword change observed and Ready",
        |t| t.spec.keyword == "halftime show" && is_ready(t),
    )
    .await;
    assert_eq!(
        changed.status.as_ref().unwrap().observed_generation,
        changed.metadata.generation
    );
    let producer = s
        .deployments
        .get("superbowl-producer")
        .await
        .expect("producer");
    assert_eq!(
        flag(&args(&producer), "--keyword").as_deref(),
        Some("halftime show")
    );
    let new_pods = eventually("producer pods rolled", WAIT, || {
        let client = s.client.clone();
        let ns = s.ns.name.clone();
        let old = old_pods.clone();
        async move {
            let pods = ready_pods(
                &client,
                &ns,
                "app.kubernetes.io/instance=superbowl,app.kubernetes.io/component=producer",
            )
            .await;
            (pods.len() == 1 && pods.iter().all(|p| !old.contains(&p.name_any()))).then_some(pods)
        }
    })
    .await;
    assert_eq!(new_pods.len(), 1);

    // Suspend: zero replicas and a Suspended reason.
    s.streams
        .patch(
            "superbowl",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": { "suspend": true } })),
        )
        .await
        .expect("suspend");
    let suspended = wait_status(&s.streams, "superbowl", "Suspended", |t| {
        condition(t, "Ready").is_some_and(|(s, r, _)| s == "False" && r == "Suspended")
    })
    .await;
    assert!(suspended.spec.suspend);
    for name in ["superbowl-producer", "superbowl-consumer"] {
        let d = s.deployments.get(name).await.expect("deployment");
        assert_eq!(d.spec.unwrap().replicas, Some(0), "{name} scaled to zero");
    }
    s.streams
        .patch(
            "superbowl",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": { "suspend": false } })),
        )
        .await
        .expect("resume");
    wait_status(&s.streams, "superbowl", "Ready after resume", is_ready).await;

    // `kubectl scale` goes through the scale subresource to the consumers.
    kubectl(&[
        "scale",
        "tws/superbowl",
        "-n",
        &s.ns.name,
        "--replicas",
        "3",
    ]);
    let scaled = wait_status(&s.streams, "superbowl", "3 consumers ready", |t| {
        is_ready(t)
            && t.status
                .as_ref()
                .and_then(|s| s.consumer.as_ref())
                .is_some_and(|c| c.ready_replicas == 3)
    })
    .await;
    assert_eq!(scaled.spec.consumer.replicas, 3);
    let consumer = s
        .deployments
        .get("superbowl-consumer")
        .await
        .expect("consumer");
    assert_eq!(consumer.spec.unwrap().replicas, Some(3));
    let scale = kubectl(&[
        "get",
        "--raw",
        &format!(
            "/apis/twitterstream.io/v1alpha1/namespaces/{}/twitterstreams/superbowl/scale",
            s.ns.name
        ),
    ]);
    let scale: serde_json::Value = serde_json::from_str(&scale).expect("scale JSON");
    assert_eq!(scale["status"]["replicas"], 3);
    assert!(
        scale["status"]["selector"]
            .as_str()
            .is_some_and(|s| s.contains("component=consumer"))
    );

    // Delete: the garbage collector removes the children through their owner references.
    s.streams
        .delete("superbowl", &DeleteParams::foreground())
        .await
        .expect("delete");
    eventually("children garbage-collected", WAIT, || {
        let deployments = s.deployments.clone();
        async move {
            let list = deployments.list(&ListParams::default()).await.ok()?;
            list.items.is_empty().then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn killed_operator_restarts_and_converges_without_duplicates() {
    let s = setup("op-restart").await;
    let mut op = Operator::start(&s.ns.name, None, &[]);
    let names: Vec<String> = (0..6).map(|i| format!("stream-{i}")).collect();
    for n in &names {
        s.streams
            .create(&PostParams::default(), &example(n))
            .await
            .expect("create");
    }
    // Kill it while it is working through the batch: as soon as the first
    // child exists, before all are done.
    eventually("first Deployment", WAIT, || {
        let d = s.deployments.clone();
        async move {
            d.list(&ListParams::default())
                .await
                .ok()
                .filter(|l| !l.items.is_empty())
                .map(|_| ())
        }
    })
    .await;
    op.process.kill();
    let op2 = Operator::start(&s.ns.name, None, &[]);
    for n in &names {
        wait_status(&s.streams, n, "Ready after restart", is_ready).await;
    }
    let deployments = s
        .deployments
        .list(&ListParams::default())
        .await
        .expect("list");
    assert_eq!(
        deployments.items.len(),
        names.len() * 2,
        "exactly two Deployments per stream"
    );
    // An unchanged template never got a second ReplicaSet: re-applying was a no-op.
    let rs: Api<ReplicaSet> = Api::namespaced(s.client.clone(), &s.ns.name);
    let replicasets = rs.list(&ListParams::default()).await.expect("replicasets");
    assert_eq!(
        replicasets.items.len(),
        names.len() * 2,
        "one ReplicaSet per Deployment"
    );
    drop(op2);
}

#[tokio::test]
async fn unreachable_brokers_surface_as_condition_and_event() {
    let s = setup("op-nokafka").await;
    let _op = Operator::start(&s.ns.name, None, &[]);
    let mut tws = example("nokafka");
    // A port nothing listens on.
    tws.spec.kafka.brokers = vec![format!(
        "127.0.0.1:{}",
        twitterstream_tests::process::free_port()
    )];
    s.streams
        .create(&PostParams::default(), &tws)
        .await
        .expect("create");
    let t = wait_status(&s.streams, "nokafka", "TopicReady=False", |t| {
        condition(t, "TopicReady").is_some_and(|(s, r, _)| s == "False" && r == "KafkaUnreachable")
    })
    .await;
    let (_, reason, _) = condition(&t, "Ready").expect("Ready condition");
    assert_eq!(reason, "KafkaUnreachable");
    let reasons = eventually("Warning Event", WAIT, || {
        let client = s.client.clone();
        let ns = s.ns.name.clone();
        async move {
            let r = event_reasons(&client, &ns, "nokafka").await;
            r.iter().any(|r| r == "KafkaUnreachable").then_some(r)
        }
    })
    .await;
    assert!(reasons.contains(&"KafkaUnreachable".to_string()));
}

#[tokio::test]
async fn existing_topics_are_grown_never_shrunk() {
    let s = setup("op-topics").await;
    let _op = Operator::start(&s.ns.name, None, &[]);

    // Fewer partitions than asked: grown to the spec.
    let small = example("grow");
    kafka::create_topic(&small.spec.kafka.topic, 1, 1).await;
    s.streams
        .create(&PostParams::default(), &small)
        .await
        .expect("create");
    wait_status(&s.streams, "grow", "Ready", is_ready).await;
    assert_eq!(
        kafka::describe_topic(&small.spec.kafka.topic).await,
        Some(3)
    );
    let reasons = event_reasons(&s.client, &s.ns.name, "grow").await;
    assert!(
        reasons.iter().any(|r| r == "PartitionsIncreased"),
        "{reasons:?}"
    );

    // More partitions than asked: Kafka cannot remove them, so it is a condition.
    let big = example("shrink");
    kafka::create_topic(&big.spec.kafka.topic, 6, 1).await;
    s.streams
        .create(&PostParams::default(), &big)
        .await
        .expect("create");
    let t = wait_status(&s.streams, "shrink", "TopicReady=False", |t| {
        condition(t, "TopicReady").is_some_and(|(s, _, _)| s == "False")
    })
    .await;
    let (_, reason, message) = condition(&t, "TopicReady").unwrap();
    assert_eq!(reason, "PartitionsCannotShrink");
    assert!(message.contains("has 6 partitions"), "{message}");
    assert_eq!(
        kafka::describe_topic(&big.spec.kafka.topic).await,
        Some(6),
        "never shrunk"
    );
}

#[tokio::test]
async fn delete_topic_on_delete_uses_a_finalizer() {
    let s = setup("op-finalizer").await;
    let _op = Operator::start(&s.ns.name, None, &[]);
    let mut tws = example("cleanup");
    tws.spec.kafka.delete_topic_on_delete = true;
    let topic = tws.spec.kafka.topic.clone();
    s.streams
        .create(&PostParams::default(), &tws)
        .await
        .expect("create");
    let t = wait_status(&s.streams, "cleanup", "Ready", is_ready).await;
    assert!(
        t.finalizers()
            .iter()
            .any(|f| f == "twitterstream.io/delete-topics")
    );
    assert_eq!(kafka::describe_topic(&topic).await, Some(3));
    s.streams
        .delete("cleanup", &DeleteParams::default())
        .await
        .expect("delete");
    wait_gone(&s.streams, "cleanup").await;
    eventually("topic deleted", WAIT, || {
        let topic = topic.clone();
        async move { kafka::describe_topic(&topic).await.is_none().then_some(()) }
    })
    .await;
}

/// Kwok leaves pods annotated `kwok.x-k8s.io/status: custom` alone, so this
/// test can report what a real kubelet reports for a missing or incomplete
/// credentials Secret, and check that the operator passes the pod's own words on.
#[tokio::test]
async fn credentials_problems_show_the_pods_own_reason() {
    let s = setup("op-secret").await;
    let _op = Operator::start(&s.ns.name, None, &[]);
    let mut tws = example("nosecret");
    tws.spec.pod_template = Some(
        serde_json::from_value(json!({ "annotations": { "kwok.x-k8s.io/status": "custom" } }))
            .unwrap(),
    );
    s.streams
        .create(&PostParams::default(), &tws)
        .await
        .expect("create");
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), &s.ns.name);
    let selector = "app.kubernetes.io/instance=nosecret,app.kubernetes.io/component=producer";
    let pod = scheduled_pod(&pods, selector).await;
    let pod_name = pod.name_any();

    // The Secret does not exist: the kubelet cannot mount the volume, the
    // container waits in ContainerCreating, and the reason is in an Event.
    let creating = json!({ "status": {
        "phase": "Pending",
        "conditions": [{ "type": "Ready", "status": "False", "reason": "ContainersNotReady" }],
        "containerStatuses": [{
            "name": "producer", "image": TEST_WORKER_IMAGE, "imageID": "", "ready": false, "restartCount": 0,
            "state": { "waiting": { "reason": "ContainerCreating" } }
        }]
    }});
    pods.patch_status(&pod_name, &PatchParams::default(), &Patch::Merge(&creating))
        .await
        .expect("pod status");
    let now = k8s_openapi::jiff::Timestamp::now();
    let event: Event = serde_json::from_value(json!({
        "metadata": { "name": format!("{pod_name}.failedmount") },
        "involvedObject": { "kind": "Pod", "name": pod_name, "namespace": s.ns.name, "uid": pod.uid(), "apiVersion": "v1" },
        "reason": "FailedMount",
        "message": "MountVolume.SetUp failed for volume \"x-api-credentials\" : secret \"x-api\" not found",
        "type": "Warning",
        "source": { "component": "kubelet", "host": "kwok-node-0" },
        "firstTimestamp": now.to_string(),
        "lastTimestamp": now.to_string(),
        "count": 1
    }))
    .unwrap();
    Api::<Event>::namespaced(s.client.clone(), &s.ns.name)
        .create(&PostParams::default(), &event)
        .await
        .expect("kubelet Event");
    let t = wait_false(&s.streams, "nosecret", "ProducerReady", "FailedMount").await;
    let (_, _, message) = condition(&t, "ProducerReady").unwrap();
    assert!(message.contains("secret \"x-api\" not found"), "{message}");

    // The Secret appears but lacks a key: the producer exits with its error,
    // which the kubelet keeps as the termination message, and backs off.
    let crashing = crash_looping(
        2,
        "error: credentials in /var/run/secrets/twitterstream.io/x-api are incomplete: missing accessTokenSecret\n",
    );
    pods.patch_status(&pod_name, &PatchParams::default(), &Patch::Merge(&crashing))
        .await
        .expect("pod status");
    let t = wait_false(&s.streams, "nosecret", "ProducerReady", "CrashLoopBackOff").await;
    let (_, _, message) = condition(&t, "ProducerReady").unwrap();
    assert!(message.contains("missing accessTokenSecret"), "{message}");
    assert!(message.contains("exited with code 2"), "{message}");
    let (_, ready_reason, _) = condition(&t, "Ready").unwrap();
    assert_eq!(ready_reason, "CrashLoopBackOff");
}

/// Waits until the Deployment `name` exists.
async fn wait_deployment(api: &Api<Deployment>, name: &str) -> Deployment {
    eventually(name, WAIT, || {
        let api = api.clone();
        async move { api.get_opt(name).await.ok().flatten() }
    })
    .await
}

/// The test broker's SASL_SSL listeners.
fn sasl_ssl_brokers() -> Vec<String> {
    twitterstream_tests::env_var("KAFKA_SASL_SSL_BROKERS")
        .split(',')
        .map(str::to_owned)
        .collect()
}

/// Waits until the stream's condition `type_` is False with `reason`.
async fn wait_false(
    api: &Api<TwitterStream>,
    name: &str,
    type_: &str,
    reason: &str,
) -> TwitterStream {
    wait_status(api, name, &format!("{type_}=False {reason}"), |t| {
        condition(t, type_).is_some_and(|(s, r, _)| s == "False" && r == reason)
    })
    .await
}

/// The first pod of `selector` that kwok has scheduled.
async fn scheduled_pod(pods: &Api<Pod>, selector: &str) -> Pod {
    eventually("pod scheduled", WAIT, || {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels(selector))
                .await
                .ok()?;
            list.items
                .into_iter()
                .find(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
        }
    })
    .await
}

/// A producer pod's status as the kubelet writes it for a container that
/// exited with `exit_code` and `message` (its termination message) and is
/// backing off.
fn crash_looping(exit_code: i32, message: &str) -> serde_json::Value {
    json!({ "status": {
        "phase": "Running",
        "containerStatuses": [{
            "name": "producer", "image": TEST_WORKER_IMAGE, "imageID": "", "ready": false, "restartCount": 3,
            "state": { "waiting": { "reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container=producer" } },
            "lastState": { "terminated": { "exitCode": exit_code, "reason": "Error", "message": message } }
        }]
    }})
}

/// An operator replica competing for the Lease `lease` in `ns`.
fn elected(ns: &str, lease: &str, id: &str) -> Operator {
    Operator::start(
        ns,
        None,
        &[
            "--leader-elect",
            "--lease-name",
            lease,
            "--lease-namespace",
            ns,
            "--identity",
            id,
        ],
    )
}

/// Who holds the Lease now, if anyone.
async fn lease_holder(
    leases: Api<k8s_openapi::api::coordination::v1::Lease>,
    name: &'static str,
) -> Option<String> {
    let l = leases.get_opt(name).await.ok().flatten()?;
    l.spec?.holder_identity
}

/// Two replicas with leader election: one holds the Lease and reconciles; when
/// it dies, the other takes the Lease over and carries on.
#[tokio::test]
async fn leader_election_hands_over_when_the_leader_dies() {
    use k8s_openapi::api::coordination::v1::Lease;
    let s = setup("op-leader").await;
    let elect = |id: &'static str| elected(&s.ns.name, "tws-test", id);
    let mut first = elect("replica-a");
    let leases: Api<Lease> = Api::namespaced(s.client.clone(), &s.ns.name);
    let holder = |leases: Api<Lease>| lease_holder(leases, "tws-test");
    let leader = eventually("replica-a holds the Lease", WAIT, || {
        let leases = leases.clone();
        async move { holder(leases).await.filter(|h| h == "replica-a") }
    })
    .await;
    assert_eq!(leader, "replica-a");
    let second = elect("replica-b");
    s.streams
        .create(&PostParams::default(), &example("one"))
        .await
        .expect("create");
    wait_status(&s.streams, "one", "Ready under replica-a", is_ready).await;
    // The standby is live but not ready, and does not take the Lease while the leader renews it.
    assert_eq!(second.get("/healthz").await.map(|r| r.0), Some(200));
    assert_eq!(holder(leases.clone()).await.as_deref(), Some("replica-a"));

    first.process.kill();
    let leader = eventually(
        "replica-b takes over the Lease",
        Duration::from_secs(60),
        || {
            let leases = leases.clone();
            async move { holder(leases).await.filter(|h| h == "replica-b") }
        },
    )
    .await;
    assert_eq!(leader, "replica-b");
    s.streams
        .create(&PostParams::default(), &example("two"))
        .await
        .expect("create");
    wait_status(&s.streams, "two", "Ready under replica-b", is_ready).await;
}

/// SIGTERM (what the kubelet sends on a rollout or a drain): the leader stops
/// its controller, releases the Lease at once instead of letting it expire,
/// and exits 0; the standby then takes over and reconciles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_the_lease_and_exits_cleanly() {
    use k8s_openapi::api::coordination::v1::Lease;
    let s = setup("op-sigterm").await;
    let elect = |id: &'static str| elected(&s.ns.name, "tws-term", id);
    let leases: Api<Lease> = Api::namespaced(s.client.clone(), &s.ns.name);
    let holder = |leases: Api<Lease>| lease_holder(leases, "tws-term");
    let mut first = elect("term-a");
    eventually("term-a holds the Lease", WAIT, || {
        let leases = leases.clone();
        async move { holder(leases).await.filter(|h| h == "term-a") }
    })
    .await;
    let _second = elect("term-b");
    s.streams
        .create(&PostParams::default(), &example("before"))
        .await
        .expect("create");
    wait_status(&s.streams, "before", "Ready under term-a", is_ready).await;

    let started = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        let status = first.process.terminate();
        (status, first)
    })
    .await
    .expect("terminate");
    let exited_after = started.elapsed();
    assert!(status.0.success(), "exit status {:?}", status.0);
    assert!(
        exited_after < Duration::from_secs(10),
        "took {exited_after:?} to stop"
    );
    // Released, not merely left to expire: at exit term-a no longer holds it
    // (the Lease lasts 15 s when its holder just disappears).
    let after_exit = holder(leases.clone()).await;
    assert_ne!(
        after_exit.as_deref(),
        Some("term-a"),
        "the Lease was not released"
    );
    let log = status.1.process.log_text();
    assert!(log.contains("stopped"), "no clean stop in the log:\n{log}");
    eventually("term-b takes over", Duration::from_secs(30), || {
        let leases = leases.clone();
        async move { holder(leases).await.filter(|h| h == "term-b") }
    })
    .await;
    // Straight to stderr (libtest captures println!): the figures for the notes.
    let _ = writeln!(
        std::io::stderr(),
        "[operator] SIGTERM: exit 0 after {exited_after:?}, Lease holder at exit {after_exit:?}, term-b leader {:?} after the signal",
        started.elapsed()
    );
    s.streams
        .create(&PostParams::default(), &example("after"))
        .await
        .expect("create");
    wait_status(&s.streams, "after", "Ready under term-b", is_ready).await;
}

/// Item 10 of #12: `kubectl edit deploy <name>-consumer` (replicas and the
/// image here) is reverted to what the TwitterStream says. Before, the
/// render-hash annotation still matched, the apply was skipped, and the
/// edit stuck.
#[tokio::test]
async fn edits_to_a_child_deployment_are_reverted() {
    let s = setup("op-revert").await;
    let _op = Operator::start(&s.ns.name, None, &[]);
    let tws = example("edited");
    s.streams
        .create(&PostParams::default(), &tws)
        .await
        .expect("create");
    wait_status(&s.streams, "edited", "Ready=True", is_ready).await;
    let rendered = s
        .deployments
        .get("edited-consumer")
        .await
        .expect("consumer Deployment");
    let image = rendered
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone();
    let edit = serde_json::json!({
        "spec": {
            "replicas": 3,
            "template": {"spec": {"containers": [{"name": "consumer", "image": "example.invalid/other:1"}]}}
        }
    });
    s.deployments
        .patch(
            "edited-consumer",
            &PatchParams::default(),
            &Patch::Strategic(&edit),
        )
        .await
        .expect("edit the Deployment");
    eventually(
        "the edit to be reverted",
        Duration::from_secs(60),
        || async {
            let d = s.deployments.get("edited-consumer").await.ok()?;
            let spec = d.spec?;
            let img = spec.template.spec?.containers[0].image.clone();
            (spec.replicas == Some(2) && img == image).then_some(())
        },
    )
    .await;
}

/// Item 11 of #12: with deleteTopicOnDelete and Kafka unreachable, deletion
/// no longer hangs forever: past --topic-delete-timeout-seconds the resource
/// goes and a Warning Event says which topics were left.
#[tokio::test]
async fn deletion_does_not_hang_on_an_unreachable_kafka() {
    let s = setup("op-nokafka-delete").await;
    // Through the environment: an older build ignores it instead of
    // refusing an unknown flag.
    let _op = Operator::start_with_env(
        &s.ns.name,
        None,
        &[],
        &[("TWS_TOPIC_DELETE_TIMEOUT_SECONDS", "5")],
    );
    let mut tws = example("stuck");
    tws.spec.kafka.delete_topic_on_delete = true;
    tws.spec.kafka.brokers = vec![format!(
        "127.0.0.1:{}",
        twitterstream_tests::process::free_port()
    )];
    s.streams
        .create(&PostParams::default(), &tws)
        .await
        .expect("create");
    wait_status(&s.streams, "stuck", "the finalizer", |t| {
        t.finalizers()
            .iter()
            .any(|f| f == "twitterstream.io/delete-topics")
    })
    .await;
    s.streams
        .delete("stuck", &DeleteParams::default())
        .await
        .expect("delete");
    wait_gone(&s.streams, "stuck").await;
    let reasons = event_reasons(&s.client, &s.ns.name, "stuck").await;
    assert!(
        reasons.iter().any(|r| r == "TopicNotDeleted"),
        "{reasons:?}"
    );
}

/// Item 8 of #12: two streams share a topic; deleting the one with
/// deleteTopicOnDelete keeps the topic the other still uses (before, it was
/// deleted under the other stream).
#[tokio::test]
async fn a_shared_topic_outlives_the_stream_deleted_with_delete_topic_on_delete() {
    let s = setup("op-shared").await;
    let _op = Operator::start(&s.ns.name, None, &[]);
    let mut first = example("first");
    first.spec.kafka.delete_topic_on_delete = true;
    first.spec.kafka.output_topic = Some(unique_name("first-windows"));
    let topic = first.spec.kafka.topic.clone();
    let mut second = example("second");
    second.spec.kafka.topic = topic.clone();
    second.spec.kafka.output_topic = Some(unique_name("second-windows"));
    for t in [&first, &second] {
        s.streams
            .create(&PostParams::default(), t)
            .await
            .expect("create");
    }
    wait_status(&s.streams, "first", "Ready", is_ready).await;
    wait_status(&s.streams, "second", "Ready", is_ready).await;
    s.streams
        .delete("first", &DeleteParams::default())
        .await
        .expect("delete");
    wait_gone(&s.streams, "first").await;
    assert_eq!(kafka::describe_topic(&topic).await, Some(3), "kept");
    let own_output = first.spec.kafka.output_topic.clone().unwrap();
    assert_eq!(
        kafka::describe_topic(&own_output).await,
        None,
        "its own output topic is deleted"
    );
    let reasons = event_reasons(&s.client, &s.ns.name, "first").await;
    assert!(reasons.iter().any(|r| r == "TopicKept"), "{reasons:?}");
}

fn container_image(d: &Deployment) -> Option<String> {
    d.spec.as_ref()?.template.spec.as_ref()?.containers[0]
        .image
        .clone()
}

/// Tenant safety: whoever may edit a TwitterStream cannot run an image the
/// operator's allowlist does not name. The refusal is a condition and an
/// Event; the pipeline keeps the last allowed image.
#[tokio::test]
async fn images_outside_the_allowlist_are_refused_and_the_last_allowed_one_kept() {
    let s = setup("op-images").await;
    let _op = Operator::start(&s.ns.name, None, &["--allowed-images=registry.test/team/"]);
    let allowed = "registry.test/team/workers:1";
    let mut tws = example("images");
    tws.spec.producer.container.image = Some(allowed.into());
    s.streams
        .create(&PostParams::default(), &tws)
        .await
        .expect("create");
    let producer = wait_deployment(&s.deployments, "images-producer").await;
    assert_eq!(container_image(&producer).as_deref(), Some(allowed));

    let refused = "evil.example/miner:latest";
    s.streams
        .patch(
            "images",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"producer": {"image": refused}}})),
        )
        .await
        .expect("patch");
    let t = wait_status(&s.streams, "images", "ImagesAllowed=False", |t| {
        condition(t, "ImagesAllowed")
            .is_some_and(|(s, r, _)| s == "False" && r == "ImageNotAllowed")
    })
    .await;
    let (_, _, message) = condition(&t, "ImagesAllowed").expect("condition");
    assert!(
        message.contains(&format!("producer.image {refused} is not allowed"))
            && message.contains("registry.test/team/"),
        "{message}"
    );
    let (_, ready_reason, _) = condition(&t, "Ready").expect("Ready");
    assert_eq!(ready_reason, "ImageNotAllowed");
    eventually("the ImageNotAllowed Event", WAIT, || {
        let client = s.client.clone();
        let ns = s.ns.name.clone();
        async move {
            let r = event_reasons(&client, &ns, "images").await;
            r.iter().any(|r| r == "ImageNotAllowed").then_some(())
        }
    })
    .await;
    let producer = s
        .deployments
        .get("images-producer")
        .await
        .expect("the producer Deployment stays");
    assert_eq!(container_image(&producer).as_deref(), Some(allowed));

    // A new stream naming a refused image gets no Deployments at all; the
    // operator's own worker image is always allowed.
    let mut fresh = example("images-new");
    fresh.spec.consumer.container.image = Some("docker.io/library/busybox".into());
    fresh.spec.producer.container.image = Some(TEST_WORKER_IMAGE.into());
    s.streams
        .create(&PostParams::default(), &fresh)
        .await
        .expect("create");
    let t = wait_status(&s.streams, "images-new", "ImagesAllowed=False", |t| {
        condition(t, "ImagesAllowed").is_some_and(|(s, _, _)| s == "False")
    })
    .await;
    let (_, _, message) = condition(&t, "ImagesAllowed").expect("condition");
    assert!(
        message.starts_with("consumer.image docker.io/library/busybox"),
        "{message}"
    );
    let children = s
        .deployments
        .list(&ListParams::default().labels("app.kubernetes.io/instance=images-new"))
        .await
        .expect("list");
    assert!(children.items.is_empty(), "{:?}", children.items.len());
}

/// The operator's own login refused (a wrong SCRAM password in its mounted
/// file): the stream says so with its own reason, in the condition and an
/// Event, and the password appears in none of what the operator wrote
/// (status, Events, its log, its metrics, the rendered Deployments). Then
/// the file is corrected, as a rotated Secret would be, and the same
/// operator process creates the topic without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_operator_login_is_named_and_a_corrected_secret_taken_up() {
    let s = setup("op-login").await;
    let security = std::path::PathBuf::from(twitterstream_tests::env_var("KAFKA_SECURITY_DIR"));
    let dir = std::env::temp_dir().join(unique_name("op-login"));
    std::fs::create_dir_all(&dir).expect("dir");
    let password_file = dir.join("password");
    let wrong = format!("wrong-{}", unique_name("pw"));
    std::fs::write(&password_file, &wrong).expect("write");
    let flags = [
        "--kafka-security-protocol=sasl-ssl".to_owned(),
        format!("--kafka-ca-file={}", security.join("tls/ca.crt").display()),
        "--kafka-sasl-mechanism=SCRAM-SHA-512".to_owned(),
        format!(
            "--kafka-sasl-username-file={}",
            security.join("users/twsscram/username").display()
        ),
        format!("--kafka-sasl-password-file={}", password_file.display()),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let op = Operator::start(&s.ns.name, None, &flags);
    let mut tws = example("login");
    tws.spec.kafka.brokers = sasl_ssl_brokers();
    let topic = tws.spec.kafka.topic.clone();
    s.streams
        .create(&PostParams::default(), &tws)
        .await
        .expect("create");
    let t = wait_false(
        &s.streams,
        "login",
        "TopicReady",
        "KafkaAuthenticationFailed",
    )
    .await;
    let (_, _, message) = condition(&t, "TopicReady").expect("TopicReady");
    assert!(
        message.contains("the operator could not log in")
            && message.contains("SASL authentication"),
        "{message}"
    );
    eventually("the KafkaAuthenticationFailed Event", WAIT, || {
        let client = s.client.clone();
        let ns = s.ns.name.clone();
        async move {
            let r = event_reasons(&client, &ns, "login").await;
            r.iter()
                .any(|r| r == "KafkaAuthenticationFailed")
                .then_some(())
        }
    })
    .await;
    // The wrong password is nowhere the operator writes to.
    let status = serde_json::to_string(&t.status).expect("status");
    let events: Api<Event> = Api::namespaced(s.client.clone(), &s.ns.name);
    let events = serde_json::to_string(&events.list(&ListParams::default()).await.expect("events"))
        .expect("events");
    let deployments = serde_json::to_string(
        &s.deployments
            .list(&ListParams::default())
            .await
            .expect("list"),
    )
    .expect("deployments");
    let (_, metrics) = op.get("/metrics").await.expect("metrics");
    let log = op.process.log_text();
    for (what, text) in [
        ("status", &status),
        ("Events", &events),
        ("Deployments", &deployments),
        ("metrics", &metrics),
        ("operator log", &log),
    ] {
        assert!(!text.contains(&wrong), "the password is in the {what}");
    }

    // The Secret is corrected (the kubelet rewrites the mounted file).
    let right = security.join("users/twsscram/password");
    std::fs::copy(&right, &password_file).expect("copy");
    wait_status(&s.streams, "login", "TopicReady=True", |t| {
        condition(t, "TopicReady").is_some_and(|(s, _, _)| s == "True")
    })
    .await;
    assert!(kafka::describe_topic(&topic).await.is_some());
    println!("refused login: {message}; after the fix the topic {topic} exists");
}

/// `spec.networkPolicy` gives each component a NetworkPolicy on the real
/// apiserver (DNS, the brokers' port, the X API for the producer only,
/// the metrics port in), owned by the stream; removing it removes them.
/// (kwok enforces nothing: this checks what is asked of the network.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_policies_follow_the_spec() {
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    let s = setup("op-netpol").await;
    let _op = Operator::start(
        &s.ns.name,
        None,
        &["--x-api-base-url=https://x-proxy.test:8443"],
    );
    let mut tws = example("fenced");
    tws.spec.network_policy = Some(
        serde_json::from_value(json!({
            "kafka": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kafka"}}}],
        }))
        .expect("networkPolicy"),
    );
    let created = s
        .streams
        .create(&PostParams::default(), &tws)
        .await
        .expect("create");
    let policies: Api<NetworkPolicy> = Api::namespaced(s.client.clone(), &s.ns.name);
    let broker_port: i32 = kafka_brokers()
        .split(',')
        .next()
        .and_then(|b| b.rsplit_once(':'))
        .and_then(|(_, p)| p.parse().ok())
        .expect("broker port");
    let ports = |p: &NetworkPolicy| -> Vec<Vec<i32>> {
        let spec = p.spec.as_ref().expect("spec");
        spec.egress
            .iter()
            .flatten()
            .map(|r| {
                r.ports
                    .iter()
                    .flatten()
                    .filter_map(|p| match p.port {
                        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i)) => {
                            Some(i)
                        }
                        _ => None,
                    })
                    .collect()
            })
            .collect()
    };
    for (name, want) in [
        (
            "fenced-producer",
            vec![vec![53, 53], vec![broker_port], vec![8443]],
        ),
        ("fenced-consumer", vec![vec![53, 53], vec![broker_port]]),
    ] {
        let p = eventually(name, WAIT, || {
            let api = policies.clone();
            async move { api.get_opt(name).await.ok().flatten() }
        })
        .await;
        assert_eq!(ports(&p), want, "{name}");
        let spec = p.spec.as_ref().expect("spec");
        let egress = spec.egress.as_ref().expect("egress");
        assert!(
            egress[1]
                .to
                .as_ref()
                .is_some_and(|t| t[0].namespace_selector.is_some())
        );
        let owner = &p.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(Some(&owner.uid), created.metadata.uid.as_ref());
        println!("{name}: egress ports {:?}", ports(&p));
    }
    s.streams
        .patch(
            "fenced",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"networkPolicy": null}})),
        )
        .await
        .expect("patch");
    eventually("the NetworkPolicies deleted", WAIT, || {
        let api = policies.clone();
        async move {
            let left = api.list(&ListParams::default()).await.ok()?;
            left.items.is_empty().then_some(())
        }
    })
    .await;
}

/// A stream whose Kafka Secret holds a wrong password: the real producer,
/// run with the flags the operator renders for it, exits with its reason as
/// the termination message; placed in the pod's status as the kubelet does
/// (kwok runs no containers), it is what ProducerReady says, and the
/// password is not in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_worker_login_reaches_the_producer_condition() {
    use twitterstream_tests::process::{ChildProcess, binary, free_port};
    let s = setup("op-worker-login").await;
    let _op = Operator::start(&s.ns.name, None, &[]);
    let mut tws = example("badpass");
    tws.spec.source = twitterstream_operator::crd::Source::Synthetic;
    tws.spec.credentials_secret = None;
    tws.spec.pod_template = Some(
        serde_json::from_value(json!({ "annotations": { "kwok.x-k8s.io/status": "custom" } }))
            .unwrap(),
    );
    tws.spec.kafka.sasl = Some(
        serde_json::from_value(json!({
            "mechanism": "SCRAM-SHA-512", "secret": "kafka-user", "username": "twsscram",
        }))
        .expect("sasl"),
    );
    tws.spec.kafka.tls = Some(
        serde_json::from_value(json!({"ca": {"secret": "cluster-ca", "key": "ca.crt"}}))
            .expect("tls"),
    );
    tws.spec.kafka.brokers = sasl_ssl_brokers();
    s.streams
        .create(&PostParams::default(), &tws)
        .await
        .expect("create");
    let producer = wait_deployment(&s.deployments, "badpass-producer").await;
    // The rendered command line, its mounted files stood in for by local
    // ones: the CA, and a password file with the wrong password.
    let security = std::path::PathBuf::from(twitterstream_tests::env_var("KAFKA_SECURITY_DIR"));
    let dir = std::env::temp_dir().join(unique_name("worker-login"));
    std::fs::create_dir_all(&dir).expect("dir");
    let wrong = format!("wrong-{}", unique_name("pw"));
    std::fs::write(dir.join("password"), &wrong).expect("write");
    let container = &producer
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec")
        .containers[0];
    let mount = "/var/run/secrets/twitterstream.io/kafka";
    let args: Vec<String> = container
        .args
        .iter()
        .flatten()
        .map(|a| {
            a.replace(
                &format!("{mount}/kafka-ca/ca.crt"),
                &security.join("tls/ca.crt").display().to_string(),
            )
            .replace(
                &format!("{mount}/kafka-sasl/password"),
                &dir.join("password").display().to_string(),
            )
        })
        .filter(|a| !a.starts_with("--http-addr"))
        .collect();
    assert!(
        args.iter()
            .any(|a| a.contains("--kafka-sasl-password-file")),
        "{args:?}"
    );
    let termination = dir.join("termination");
    let mut cmd = Command::new(binary("twitterstream-workers", "twitterstream-producer"));
    cmd.args(&args)
        .arg(format!("--http-addr=127.0.0.1:{}", free_port()))
        .arg("--kafka-auth-grace-seconds=3")
        .env("TWS_TERMINATION_LOG", &termination);
    let mut p = ChildProcess::spawn(cmd, "worker-login-producer");
    let status = eventually("the producer to exit", WAIT, || {
        std::future::ready(p.child.try_wait().ok().flatten())
    })
    .await;
    assert_eq!(status.code(), Some(1), "{}", p.log_text());
    let message = std::fs::read_to_string(&termination).expect("termination message");
    assert!(!message.contains(&wrong) && !p.log_text().contains(&wrong));

    let pods: Api<Pod> = Api::namespaced(s.client.clone(), &s.ns.name);
    let selector = "app.kubernetes.io/instance=badpass,app.kubernetes.io/component=producer";
    let pod = scheduled_pod(&pods, selector).await;
    let crashing = crash_looping(1, &message);
    pods.patch_status(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&crashing),
    )
    .await
    .expect("pod status");
    let t = wait_false(&s.streams, "badpass", "ProducerReady", "CrashLoopBackOff").await;
    let (_, _, condition_message) = condition(&t, "ProducerReady").expect("ProducerReady");
    assert!(
        condition_message.contains("could not log in to Kafka")
            && condition_message.contains("SASL authentication error")
            && condition_message.contains("exited with code 1"),
        "{condition_message}"
    );
    assert!(
        !serde_json::to_string(&t.status)
            .expect("status")
            .contains(&wrong)
    );
    // And a Warning Event says the same.
    let events: Api<Event> = Api::namespaced(s.client.clone(), &s.ns.name);
    let note = eventually("the CrashLoopBackOff Event", WAIT, || {
        let events = events.clone();
        async move {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items.into_iter().find_map(|e| {
                (e.reason.as_deref() == Some("CrashLoopBackOff")
                    && e.involved_object.name.as_deref() == Some("badpass"))
                .then_some(e.message)
                .flatten()
            })
        }
    })
    .await;
    assert!(note.contains("could not log in to Kafka"), "{note}");
    assert!(!note.contains(&wrong));
    println!("ProducerReady: {condition_message}; Event: {note}");
}

/// Every first-contact refusal of the operator's own Kafka client (an
/// unknown user, a client certificate the brokers refuse, brokers whose CA
/// it was not given, a principal no ACL lets describe the topic) is named in
/// the stream's TopicReady condition within 30 s of the stream's creation:
/// which of authentication, TLS trust or authorization failed, and for an
/// ACL the operation and the topic. A table row per case is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_refusal_of_the_operators_kafka_client_is_named_within_30_s() {
    let env = twitterstream_tests::env_var;
    let security = std::path::PathBuf::from(env("KAFKA_SECURITY_DIR"));
    let tls = |f: &str| security.join("tls").join(f).display().to_string();
    let dir = std::env::temp_dir().join(unique_name("op-first"));
    std::fs::create_dir_all(&dir).expect("dir");
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    };
    // A principal that exists and may log in, with no grant on the
    // deny-by-default prefix of the ACL case's topic.
    let prefix = unique_name("op-acl");
    let password = unique_name("pw");
    kafka::set_scram_password(&prefix, &password);
    kafka::deny_by_default(&prefix);
    let sasl = |user: &str, password: &str| {
        vec![
            "--kafka-security-protocol=sasl-ssl".to_owned(),
            format!("--kafka-ca-file={}", tls("ca.crt")),
            "--kafka-sasl-mechanism=SCRAM-SHA-512".to_owned(),
            format!(
                "--kafka-sasl-username-file={}",
                write(&format!("{user}.user"), user)
            ),
            format!(
                "--kafka-sasl-password-file={}",
                write(&format!("{user}.pw"), password)
            ),
        ]
    };
    type Case = (
        &'static str,
        &'static str,
        Vec<String>,
        String,
        &'static str,
        String,
    );
    let cases: Vec<Case> = vec![
        (
            "unknown user",
            "KafkaAuthenticationFailed",
            sasl("nobody", "nothing"),
            env("KAFKA_SASL_SSL_BROKERS"),
            "authentication failed",
            unique_name("raw-twitter"),
        ),
        (
            "untrusted client certificate",
            "KafkaAuthenticationFailed",
            vec![
                "--kafka-security-protocol=ssl".to_owned(),
                format!("--kafka-ca-file={}", tls("ca.crt")),
                format!("--kafka-cert-file={}", tls("untrusted.crt")),
                format!("--kafka-key-file={}", tls("untrusted.key")),
            ],
            env("KAFKA_MTLS_BROKERS"),
            "the brokers do not accept this client's certificate",
            unique_name("raw-twitter"),
        ),
        (
            "brokers of another CA",
            "KafkaAuthenticationFailed",
            vec![
                "--kafka-security-protocol=ssl".to_owned(),
                format!("--kafka-ca-file={}", tls("untrusted.crt")),
            ],
            env("KAFKA_TLS_BROKERS"),
            "does not trust the brokers' certificate",
            unique_name("raw-twitter"),
        ),
        (
            "no ACL on the topic",
            "KafkaAuthorizationFailed",
            sasl(&prefix, &password),
            env("KAFKA_SASL_SSL_BROKERS"),
            "may not DESCRIBE topic",
            format!("{prefix}-in"),
        ),
    ];
    let runs = cases
        .into_iter()
        .map(|(case, reason, flags, brokers, says, topic)| async move {
            let s = setup("op-first").await;
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            let _op = Operator::start(&s.ns.name, None, &flags);
            let mut tws = example("first");
            tws.spec.kafka.brokers = brokers.split(',').map(str::to_owned).collect();
            tws.spec.kafka.topic = topic.clone();
            let created = std::time::Instant::now();
            s.streams
                .create(&PostParams::default(), &tws)
                .await
                .expect("create");
            let t = wait_false(&s.streams, "first", "TopicReady", reason).await;
            let took = created.elapsed();
            let (_, _, message) = condition(&t, "TopicReady").expect("TopicReady");
            (case, took, message, says, topic)
        });
    println!("| case | operator: TopicReady=False after | message |");
    for (case, took, message, says, topic) in futures::future::join_all(runs).await {
        println!("| {case} | {:.1} s | {message} |", took.as_secs_f64());
        assert!(message.contains(says), "{case}: {message:?} lacks {says:?}");
        if case == "no ACL on the topic" {
            assert!(message.contains(&topic), "{message}");
        }
        assert!(took <= Duration::from_secs(30), "{case}: {took:?}");
        assert!(!message.contains(&password));
    }
}
