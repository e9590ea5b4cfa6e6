//! The reconciler: a `TwitterStream` in, its topic, Deployments and status out.

use crate::child::{self, ChildDeployment};
use crate::conditions::{self, Observation};
use crate::crd::{ComponentStatus, TopicStatus, TwitterStream, TwitterStreamStatus};
use crate::metrics::Metrics;
use crate::render::{self, Component, FIELD_MANAGER, RenderConfig};
use crate::topic::{TopicChange, TopicError, TopicRequest, Topics};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event as CoreEvent, ObjectReference, Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ListParams, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use std::time::Instant;
use tracing::{Instrument, field, info, info_span, warn};

/// Finalizer that holds a deletion until the topics are deleted; only present
/// when `kafka.deleteTopicOnDelete` is set.
pub const TOPIC_FINALIZER: &str = "twitterstream.io/delete-topics";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Topic(#[from] TopicError),
    #[error("TwitterStream has no namespace")]
    NoNamespace,
}

impl Error {
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubernetesApiError",
            Error::Topic(e) => e.reason(),
            Error::NoNamespace => "NoNamespace",
        }
    }
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub render: RenderConfig,
    pub topics: Topics,
    pub metrics: Arc<Metrics>,
    /// Events waiting for the publisher task (see [`publish_events`]).
    events: tokio::sync::mpsc::Sender<(Event, ObjectReference)>,
    /// Consecutive failures per object, for the error policy's backoff.
    failures: Mutex<HashMap<(String, String), u32>>,
    /// Watch caches of the children, per watched scope (None = all namespaces).
    deployment_caches: RwLock<Vec<(Option<String>, Store<ChildDeployment>)>>,
    /// When each topic was last found as the spec asks: Kafka is asked again
    /// only after TOPIC_RECHECK, not on every pod event.
    topics_checked: Mutex<HashMap<TopicRequest, Instant>>,
    /// Per child Deployment (namespace, name): its generation after this
    /// process last applied it. A Deployment at another generation was
    /// changed by someone else (`kubectl edit`, `kubectl scale deploy`), and
    /// the render hash it still carries would hide that.
    applied_generations: Mutex<HashMap<(String, String), i64>>,
    /// How long deletion waits for topics to be deleted (see `finalize`).
    topic_delete_timeout: Duration,
}

/// Publishes queued Events, a few at a time, until the Context is dropped.
///
/// Warnings go through kube's `Recorder`, which folds repeats into one Event
/// with a series count (a failing reconcile retries). Normal Events (Created,
/// Updated, TopicCreated) happen once per change, so they are created
/// directly: the Recorder keeps every Event it published for 6 minutes to
/// spot repeats, which at 1,000 new streams is megabytes held for nothing.
async fn publish_events(
    client: Client,
    reporter: Reporter,
    queue: tokio::sync::mpsc::Receiver<(Event, ObjectReference)>,
) {
    let recorder = Recorder::new(client.clone(), reporter.clone());
    futures::stream::unfold(queue, |mut q| async move { q.recv().await.map(|e| (e, q)) })
        .for_each_concurrent(EVENT_CONCURRENCY, |(ev, reference)| {
            let recorder = recorder.clone();
            let (client, reporter) = (client.clone(), reporter.clone());
            async move {
                let published = match ev.type_ {
                    EventType::Warning => recorder.publish(&ev, &reference).await,
                    EventType::Normal => create_event(client, &reporter, &ev, reference).await,
                };
                if let Err(e) = published {
                    warn!(error = %e, reason = %ev.reason, "could not publish Event");
                }
            }
        })
        .await;
}

/// An events.k8s.io/v1 Event, as the Recorder would first create it.
async fn create_event(
    client: Client,
    reporter: &Reporter,
    ev: &Event,
    regarding: ObjectReference,
) -> Result<(), kube::Error> {
    use k8s_openapi::api::events::v1::Event as K8sEvent;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
    let ns = regarding
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let now = k8s_openapi::jiff::Timestamp::now();
    let event = K8sEvent {
        metadata: ObjectMeta {
            // As the Recorder names them: the object, then the time in hex.
            name: Some(format!(
                "{}.{:x}",
                regarding.name.clone().unwrap_or_default(),
                now.as_nanosecond()
            )),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        action: Some(ev.action.clone()),
        reason: Some(ev.reason.clone()),
        note: ev.note.clone(),
        type_: Some("Normal".into()),
        event_time: Some(MicroTime(now)),
        reporting_controller: Some(reporter.controller.clone()),
        reporting_instance: reporter.instance.clone(),
        regarding: Some(regarding),
        ..Default::default()
    };
    Api::<K8sEvent>::namespaced(client, &ns)
        .create(&Default::default(), &event)
        .await
        .map(|_| ())
}

/// Reconciles running at once, at most, per watched scope. Each holds its
/// API responses (a Deployment, a pod list while pods are not ready) and an
/// HTTPS connection with its buffers; at 1,000 new streams 16 converge as fast
/// as 32 (the apiserver is the bottleneck) with less memory in flight.
const MAX_CONCURRENT_RECONCILES: u16 = 16;

/// Events queued for publishing, at most; beyond that they are dropped (and
/// logged): an Event is a record, never worth blocking a reconcile for.
const EVENT_QUEUE: usize = 10_000;
/// Events published at once: a task per Event would let thousands of
/// requests pile up when thousands of streams are created together.
const EVENT_CONCURRENCY: usize = 4;

/// How long a successful topic check is trusted.
const TOPIC_RECHECK: Duration = Duration::from_secs(60);

impl Context {
    pub fn new(
        client: Client,
        render: RenderConfig,
        topics: Topics,
        metrics: Arc<Metrics>,
        instance: String,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_string(),
            instance: Some(instance),
        };
        let (events, queue) = tokio::sync::mpsc::channel(EVENT_QUEUE);
        tokio::spawn(publish_events(client.clone(), reporter, queue));
        Self {
            events,
            client,
            render,
            topics,
            metrics,
            failures: Mutex::new(HashMap::new()),
            deployment_caches: RwLock::new(Vec::new()),
            topics_checked: Mutex::new(HashMap::new()),
            applied_generations: Mutex::new(HashMap::new()),
            topic_delete_timeout: Duration::from_secs(300),
        }
    }

    /// The TwitterStreams this operator watches, other than `tws` and those
    /// being deleted: a topic one of them uses is not deleted with `tws`.
    async fn other_streams(&self, tws: &TwitterStream) -> Result<Vec<TwitterStream>, Error> {
        let scopes: Vec<Option<String>> = self
            .deployment_caches
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(scope, _)| scope.clone())
            .collect();
        let mut out = Vec::new();
        for scope in scopes {
            let api: Api<TwitterStream> = match &scope {
                Some(ns) => Api::namespaced(self.client.clone(), ns),
                None => Api::all(self.client.clone()),
            };
            for o in api.list(&ListParams::default()).await? {
                let same = o.namespace() == tws.namespace() && o.name_any() == tws.name_any();
                if !same && o.meta().deletion_timestamp.is_none() {
                    out.push(o);
                }
            }
        }
        Ok(out)
    }

    /// How long a deleted stream waits for its topics to be deleted while
    /// Kafka is unreachable before it is deleted anyway.
    pub fn with_topic_delete_timeout(mut self, timeout: Duration) -> Self {
        self.topic_delete_timeout = timeout;
        self
    }

    fn key(tws: &TwitterStream) -> (String, String) {
        (tws.namespace().unwrap_or_default(), tws.name_any())
    }

    fn record_outcome(&self, tws: &TwitterStream, failed: bool) -> u32 {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failed {
            let n = f.entry(Self::key(tws)).or_insert(0);
            *n += 1;
            *n
        } else {
            f.remove(&Self::key(tws));
            0
        }
    }

    async fn event(
        &self,
        tws: &TwitterStream,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let ev = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: None,
        };
        // Off the reconcile's path: an Event is a record, not a step the
        // pipeline waits for. Best effort: a lost Event must not fail anything.
        if let Err(e) = self.events.try_send((ev, tws.object_ref(&()))) {
            warn!(reason, error = %e, "Event not queued");
        }
    }

    /// Whether this process applied the Deployment at exactly its current
    /// generation: nobody changed its spec since.
    fn applied_as_is(&self, ns: &str, d: &ChildDeployment) -> bool {
        let key = (ns.to_owned(), d.metadata.name.clone().unwrap_or_default());
        let applied = self
            .applied_generations
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        d.metadata.generation.is_some() && applied.get(&key) == d.metadata.generation.as_ref()
    }

    fn remember_applied(&self, ns: &str, d: &ChildDeployment) {
        if let (Some(name), Some(generation)) = (&d.metadata.name, d.metadata.generation) {
            self.applied_generations
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert((ns.to_owned(), name.clone()), generation);
        }
    }

    fn cached_deployment(&self, ns: &str, name: &str) -> Option<ChildDeployment> {
        let caches = self
            .deployment_caches
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let key = ObjectRef::<ChildDeployment>::new(name).within(ns);
        caches
            .iter()
            .find(|(scope, _)| scope.as_deref().is_none_or(|s| s == ns))
            .and_then(|(_, store)| store.get(&key))
            .map(|d| (*d).clone())
    }

    fn topic_recently_checked(&self, req: &TopicRequest) -> bool {
        let checked = self
            .topics_checked
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        checked
            .get(req)
            .is_some_and(|t| t.elapsed() < TOPIC_RECHECK)
    }

    fn topic_checked(&self, req: &TopicRequest, ok: bool) {
        let mut checked = self
            .topics_checked
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if ok {
            checked.insert(req.clone(), Instant::now());
        } else {
            checked.remove(req);
        }
    }
}

/// Reconciles one TwitterStream; failures also become a Warning Event.
pub async fn reconcile(tws: Arc<TwitterStream>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = info_span!(
        "reconcile",
        namespace = tws.namespace().unwrap_or_default(),
        name = tws.name_any(),
        generation = tws.metadata.generation.unwrap_or(0),
        ready = field::Empty
    );
    let _timer = ctx.metrics.start();
    let result = reconcile_inner(&tws, &ctx).instrument(span.clone()).await;
    ctx.record_outcome(&tws, result.is_err());
    if let Err(e) = &result {
        ctx.metrics.failed(e.reason());
        ctx.event(
            &tws,
            EventType::Warning,
            e.reason(),
            "Reconcile",
            e.to_string(),
        )
        .await;
    }
    result
}

/// Retries with exponential backoff: 1 s, 2 s, 4 s … up to 5 minutes.
pub fn error_policy(tws: Arc<TwitterStream>, error: &Error, ctx: Arc<Context>) -> Action {
    let attempts = ctx
        .failures
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&Context::key(&tws))
        .copied()
        .unwrap_or(1);
    let delay = Duration::from_secs(1u64 << attempts.saturating_sub(1).min(8))
        .min(Duration::from_secs(300));
    warn!(name = %tws.name_any(), error = %error, ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

fn brokers(tws: &TwitterStream) -> String {
    tws.spec.kafka.brokers.join(",")
}

/// Whether two streams name a broker in common (so the same cluster).
fn shares_a_broker(a: &TwitterStream, b: &TwitterStream) -> bool {
    a.spec
        .kafka
        .brokers
        .iter()
        .any(|x| b.spec.kafka.brokers.contains(x))
}

fn topic_requests(tws: &TwitterStream) -> Vec<TopicRequest> {
    let k = &tws.spec.kafka;
    let mut topics = vec![TopicRequest {
        name: k.topic.clone(),
        partitions: k.partitions,
        replication_factor: k.replication_factor,
    }];
    if let Some(out) = &k.output_topic {
        topics.push(TopicRequest {
            name: out.clone(),
            partitions: k.partitions,
            replication_factor: k.replication_factor,
        });
    }
    topics
}

async fn reconcile_inner(tws: &TwitterStream, ctx: &Context) -> Result<Action, Error> {
    let ns = tws.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<TwitterStream> = Api::namespaced(ctx.client.clone(), &ns);

    if tws.meta().deletion_timestamp.is_some() {
        return finalize(tws, ctx, &api).await;
    }
    sync_finalizer(tws, &api).await?;

    // Topic first: pods that start before their topic exists only crash-loop.
    let (topic_obs, topic_status) = ensure_topics(tws, ctx).await;

    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let mut parts = vec![topic_obs];
    let mut component_status = HashMap::new();
    for desired in render::deployments(tws, &ctx.render) {
        let name = desired.name_any();
        let component = if name.ends_with("-producer") {
            Component::Producer
        } else {
            Component::Consumer
        };
        // The watch cache answers "does it exist, and is it as rendered?"
        // without a request; only a child it has not seen yet costs a GET.
        let before = match ctx.cached_deployment(&ns, &name) {
            Some(d) => Some(d),
            None => deployments.get_opt(&name).await?.map(ChildDeployment::from),
        };
        let unchanged = before.as_ref().is_some_and(|b| {
            b.metadata.deletion_timestamp.is_none()
                && b.render_hash() == render::render_hash(&desired)
                && ctx.applied_as_is(&ns, b)
        });
        let applied = match before.clone() {
            Some(b) if unchanged => b,
            _ => deployments
                .patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&desired),
                )
                .await?
                .into(),
        };
        ctx.remember_applied(&ns, &applied);
        match &before {
            None => {
                ctx.event(
                    tws,
                    EventType::Normal,
                    "Created",
                    "Apply",
                    format!("Created Deployment {name}"),
                )
                .await
            }
            Some(b) if b.metadata.generation != applied.metadata.generation => {
                ctx.event(
                    tws,
                    EventType::Normal,
                    "Updated",
                    "Apply",
                    format!("Updated Deployment {name}"),
                )
                .await
            }
            Some(_) => {}
        }
        let (obs, status) = component_readiness(tws, ctx, component, &applied).await?;
        parts.push(obs);
        component_status.insert(component, status);
    }

    let ready = conditions::ready(&parts, tws.spec.suspend);
    tracing::Span::current().record("ready", ready.ok);
    let mut observed = vec![ready.clone()];
    observed.extend(parts);
    let previous = tws.status.clone().unwrap_or_default();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let status = TwitterStreamStatus {
        observed_generation: tws.metadata.generation,
        conditions: conditions::merge(
            &previous.conditions,
            &observed,
            tws.metadata.generation,
            &now,
        ),
        producer: component_status.remove(&Component::Producer),
        consumer: component_status.remove(&Component::Consumer),
        topic: topic_status.or(previous.topic.clone()),
    };
    // Unchanged status: skip the write, so a steady state costs no API writes.
    if !same_status(&previous, &status) {
        let patch = serde_json::json!({ "status": status });
        api.patch_status(
            &tws.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    }
    // Deployment and pod changes trigger reconciles through the watches; the
    // periodic requeue only re-checks Kafka.
    Ok(Action::requeue(if ready.ok {
        Duration::from_secs(300)
    } else {
        Duration::from_secs(30)
    }))
}

/// Status equality that ignores transition times (they only change with status).
fn same_status(a: &TwitterStreamStatus, b: &TwitterStreamStatus) -> bool {
    a == b
}

async fn ensure_topics(tws: &TwitterStream, ctx: &Context) -> (Observation, Option<TopicStatus>) {
    let brokers = brokers(tws);
    let mut main_status = None;
    for req in topic_requests(tws) {
        if ctx.topic_recently_checked(&req) {
            if req.name == tws.spec.kafka.topic {
                main_status = tws.status.as_ref().and_then(|s| s.topic.clone());
            }
            continue;
        }
        let result = ctx.topics.ensure(&brokers, &req).await;
        ctx.topic_checked(&req, result.is_ok());
        match result {
            Ok((state, change)) => {
                match change {
                    TopicChange::Created => {
                        ctx.event(
                            tws,
                            EventType::Normal,
                            "TopicCreated",
                            "CreateTopic",
                            format!(
                                "Created Kafka topic {} ({} partitions, replication factor {})",
                                req.name, req.partitions, req.replication_factor
                            ),
                        )
                        .await
                    }
                    TopicChange::PartitionsIncreased { from, to } => {
                        ctx.event(
                            tws,
                            EventType::Normal,
                            "PartitionsIncreased",
                            "CreatePartitions",
                            format!("Kafka topic {}: partitions {from} -> {to}", req.name),
                        )
                        .await
                    }
                    TopicChange::None => {}
                }
                if req.name == tws.spec.kafka.topic {
                    main_status = Some(TopicStatus {
                        name: req.name.clone(),
                        partitions: state.partitions,
                        replication_factor: state.replication_factor,
                    });
                }
            }
            Err(e) => {
                ctx.event(
                    tws,
                    EventType::Warning,
                    e.reason(),
                    "EnsureTopic",
                    e.to_string(),
                )
                .await;
                return (
                    Observation::new(conditions::TOPIC_READY, false, e.reason(), e.to_string()),
                    main_status,
                );
            }
        }
    }
    let msg = match &main_status {
        Some(s) => format!(
            "topic {} has {} partitions, replication factor {}",
            s.name, s.partitions, s.replication_factor
        ),
        None => "topics exist".to_string(),
    };
    (
        Observation::new(conditions::TOPIC_READY, true, "TopicExists", msg),
        main_status,
    )
}

async fn component_readiness(
    tws: &TwitterStream,
    ctx: &Context,
    component: Component,
    d: &ChildDeployment,
) -> Result<(Observation, ComponentStatus), Error> {
    let type_ = match component {
        Component::Producer => conditions::PRODUCER_READY,
        Component::Consumer => conditions::CONSUMER_READY,
    };
    let want = d.replicas.unwrap_or(0);
    let status = ComponentStatus {
        replicas: d.status_replicas.unwrap_or(0),
        ready_replicas: d.ready_replicas.unwrap_or(0),
        updated_replicas: d.updated_replicas.unwrap_or(0),
        selector: render::selector_string(tws, component),
    };
    let rolled_out = d.observed_generation >= d.metadata.generation
        && status.updated_replicas >= want
        && status.ready_replicas >= want
        && status.replicas == want;
    let obs = if tws.spec.suspend {
        Observation::new(type_, false, "Suspended", "scaled to zero while suspended")
    } else if rolled_out {
        Observation::new(
            type_,
            true,
            if want == 0 {
                "ScaledToZero"
            } else {
                "AllReplicasReady"
            },
            format!("{}/{} pods ready", status.ready_replicas, want),
        )
    } else {
        // Say why in the pod's own words: a missing Secret, an image that
        // cannot be pulled, a pod that cannot be scheduled.
        let (reason, message) = pod_problem(ctx, d, &status.selector)
            .await?
            .unwrap_or_else(|| {
                (
                    "RollingOut".to_string(),
                    format!(
                        "{}/{} pods ready, {} updated",
                        status.ready_replicas, want, status.updated_replicas
                    ),
                )
            });
        Observation::new(type_, false, reason, message)
    };
    Ok((obs, status))
}

async fn pod_problem(
    ctx: &Context,
    d: &ChildDeployment,
    selector: &str,
) -> Result<Option<(String, String)>, Error> {
    let ns = d.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let list = pods.list(&ListParams::default().labels(selector)).await?;
    let mut starting = Vec::new();
    for pod in &list.items {
        let Some(ps) = &pod.status else { continue };
        if let Some(problem) = problem_in_status(&pod.name_any(), ps) {
            return Ok(Some(problem));
        }
        let creating = ps.container_statuses.as_ref().is_none_or(|cs| {
            cs.iter().any(|c| {
                c.state
                    .as_ref()
                    .and_then(|s| s.waiting.as_ref())
                    .is_some_and(|w| w.reason.as_deref() == Some("ContainerCreating"))
            })
        });
        if creating {
            starting.push(pod.name_any());
        }
    }
    // A pod stuck before its containers exist (a missing Secret or ConfigMap
    // volume) has its reason only in the kubelet's Warning Events.
    let events: Api<CoreEvent> = Api::namespaced(ctx.client.clone(), &ns);
    for name in starting {
        let fields = format!("involvedObject.kind=Pod,involvedObject.name={name},type=Warning");
        let mut warnings = events
            .list(&ListParams::default().fields(&fields))
            .await?
            .items;
        warnings.sort_by_key(|e| {
            e.last_timestamp
                .clone()
                .or(e.event_time.clone().map(|t| Time(t.0)))
        });
        if let Some(e) = warnings.last() {
            return Ok(Some((
                e.reason.clone().unwrap_or_else(|| "PodWarning".to_string()),
                format!("pod {name}: {}", e.message.clone().unwrap_or_default()),
            )));
        }
    }
    Ok(None)
}

/// What the kubelet says is wrong with a pod, from its status alone.
pub fn problem_in_status(pod: &str, ps: &PodStatus) -> Option<(String, String)> {
    for cs in ps
        .init_container_statuses
        .iter()
        .flatten()
        .chain(ps.container_statuses.iter().flatten())
    {
        let last_exit = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref());
        if let Some(w) = cs.state.as_ref().and_then(|s| s.waiting.as_ref())
            && let Some(reason) = &w.reason
            && reason != "ContainerCreating"
        {
            // A crash loop's own message only says it is backing off; the
            // container's last words (its termination message) say why.
            let message = match (reason.as_str(), last_exit) {
                ("CrashLoopBackOff", Some(t)) => format!(
                    "exited with code {}{}",
                    t.exit_code,
                    t.message
                        .as_deref()
                        .map(|m| format!(": {}", m.trim()))
                        .unwrap_or_default()
                ),
                _ => w.message.clone().unwrap_or_default(),
            };
            return Some((reason.clone(), format!("pod {pod}: {message}")));
        }
        if let Some(t) = last_exit
            && !cs.ready
        {
            return Some((
                t.reason
                    .clone()
                    .unwrap_or_else(|| "ContainerTerminated".to_string()),
                format!(
                    "pod {pod}: exited with code {}{}",
                    t.exit_code,
                    t.message
                        .as_deref()
                        .map(|m| format!(": {}", m.trim()))
                        .unwrap_or_default()
                ),
            ));
        }
    }
    for c in ps.conditions.iter().flatten() {
        if c.type_ == "PodScheduled" && c.status == "False" {
            return Some((
                c.reason
                    .clone()
                    .unwrap_or_else(|| "Unschedulable".to_string()),
                format!("pod {pod}: {}", c.message.clone().unwrap_or_default()),
            ));
        }
    }
    None
}

/// Adds or removes the topic finalizer to match `kafka.deleteTopicOnDelete`.
async fn sync_finalizer(tws: &TwitterStream, api: &Api<TwitterStream>) -> Result<(), Error> {
    let has = tws.finalizers().iter().any(|f| f == TOPIC_FINALIZER);
    let want = tws.spec.kafka.delete_topic_on_delete;
    if has == want {
        return Ok(());
    }
    set_topic_finalizer(tws, api, want).await
}

/// Writes the finalizer list with ours present or absent. The resourceVersion
/// makes this a compare-and-swap: a list someone else changed meanwhile is
/// never overwritten (the conflict retries the reconcile).
async fn set_topic_finalizer(
    tws: &TwitterStream,
    api: &Api<TwitterStream>,
    present: bool,
) -> Result<(), Error> {
    let mut finalizers: Vec<String> = tws
        .finalizers()
        .iter()
        .filter(|f| *f != TOPIC_FINALIZER)
        .cloned()
        .collect();
    if present {
        finalizers.push(TOPIC_FINALIZER.to_string());
    }
    let patch = serde_json::json!({
        "metadata": { "finalizers": finalizers, "resourceVersion": tws.resource_version() }
    });
    api.patch(
        &tws.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

async fn finalize(
    tws: &TwitterStream,
    ctx: &Context,
    api: &Api<TwitterStream>,
) -> Result<Action, Error> {
    if !tws.finalizers().iter().any(|f| f == TOPIC_FINALIZER) {
        return Ok(Action::await_change());
    }
    let brokers = brokers(tws);
    // Deletion must not hang forever on an unreachable Kafka (a namespace
    // holding both could never terminate): past the timeout the topics stay.
    let waited = tws.meta().deletion_timestamp.as_ref().map_or(0, |t| {
        k8s_openapi::jiff::Timestamp::now().as_second() - t.0.as_second()
    });
    let give_up = waited >= ctx.topic_delete_timeout.as_secs() as i64;
    let others = ctx.other_streams(tws).await?;
    for req in topic_requests(tws) {
        // Another stream on the same Kafka still reads or writes it.
        if let Some(user) = others.iter().find(|o| {
            topic_requests(o).iter().any(|r| r.name == req.name) && shares_a_broker(o, tws)
        }) {
            ctx.event(
                tws,
                EventType::Normal,
                "TopicKept",
                "DeleteTopic",
                format!(
                    "Kept Kafka topic {}: TwitterStream {}/{} still uses it",
                    req.name,
                    user.namespace().unwrap_or_default(),
                    user.name_any()
                ),
            )
            .await;
            continue;
        }
        match ctx.topics.delete(&brokers, &req.name).await {
            Ok(()) => {
                ctx.event(
                    tws,
                    EventType::Normal,
                    "TopicDeleted",
                    "DeleteTopic",
                    format!("Deleted Kafka topic {}", req.name),
                )
                .await
            }
            Err(e) if give_up => {
                ctx.event(
                    tws,
                    EventType::Warning,
                    "TopicNotDeleted",
                    "DeleteTopic",
                    format!(
                        "Left Kafka topic {} in place: not deleted within {} s of the deletion ({e})",
                        req.name,
                        ctx.topic_delete_timeout.as_secs()
                    ),
                )
                .await
            }
            Err(e) => return Err(e.into()),
        }
    }
    set_topic_finalizer(tws, api, false).await?;
    Ok(Action::await_change())
}

/// Runs the controller over the given namespaces (all when empty) until a
/// shutdown signal. `ready` is set once the watches are running.
pub async fn run(ctx: Arc<Context>, namespaces: &[String], ready: Arc<AtomicBool>) {
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().cloned().map(Some).collect()
    };
    let children_cfg =
        watcher::Config::default().labels("app.kubernetes.io/managed-by=twitterstream-operator");
    let controllers = scopes.into_iter().map(|ns| {
        let (streams, deployments): (Api<TwitterStream>, Api<Deployment>) = match &ns {
            Some(ns) => (
                Api::namespaced(ctx.client.clone(), ns),
                Api::namespaced(ctx.client.clone(), ns),
            ),
            None => (Api::all(ctx.client.clone()), Api::all(ctx.client.clone())),
        };
        // Pods are grandchildren, so `owns` cannot map them back; their labels
        // can. Metadata-only: any status change still arrives as an event, at
        // a fraction of the memory of full pod objects.
        let pods: Api<PartialObjectMeta<Pod>> = match &ns {
            Some(ns) => Api::namespaced(ctx.client.clone(), ns),
            None => Api::all(ctx.client.clone()),
        };
        let pod_events = watcher::watcher(pods, children_cfg.clone()).touched_objects();
        let (cache, cache_writer) = reflector::store::<ChildDeployment>();
        ctx.deployment_caches
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push((ns.clone(), cache));
        let deployment_events = reflector::reflector(
            cache_writer,
            // Only the few fields the reconciler reads (applies are decided
            // by the render-hash annotation); see `ChildDeployment`.
            watcher::watcher(deployments, children_cfg.clone()).map_ok(child::summarize),
        )
        .touched_objects();
        // Pod status changes arrive in bursts (scheduled, running, ready):
        // one reconcile per burst is enough.
        // Bounded concurrency keeps memory flat with thousands of streams (each
        // reconcile may hold a blocking Kafka metadata call) without slowing
        // convergence: the apiserver, not the operator, is the bottleneck.
        let config = controller::Config::default()
            .debounce(Duration::from_millis(500))
            .concurrency(MAX_CONCURRENT_RECONCILES);
        // The controller's own cache of TwitterStreams, without managedFields
        // (as for Deployments): at thousands of streams they are most of it.
        // The reconciler reads spec, status and metadata, never these.
        let (stream_cache, stream_writer) = reflector::store::<TwitterStream>();
        let stream_events =
            watcher::watcher(streams.clone(), watcher::Config::default().any_semantic())
                .default_backoff()
                .modify(|t| {
                    t.managed_fields_mut().clear();
                    // A client-side `kubectl apply` copies the whole spec here.
                    t.annotations_mut()
                        .remove("kubectl.kubernetes.io/last-applied-configuration");
                })
                .reflect(stream_writer)
                .touched_objects();
        let controller = Controller::for_stream(stream_events, stream_cache)
            .with_config(config)
            .owns_stream(deployment_events)
            .watches_stream(pod_events, |pod| {
                let name = pod.labels().get("app.kubernetes.io/instance").cloned();
                let ns = pod.namespace();
                name.into_iter().map(move |n| {
                    let r = ObjectRef::new(&n);
                    match &ns {
                        Some(ns) => r.within(ns),
                        None => r,
                    }
                })
            })
            .shutdown_on_signal();
        let store = controller.store();
        let ctx = ctx.clone();
        let ready = ready.clone();
        async move {
            let metrics = ctx.metrics.clone();
            // Ready once the API answers a list of this scope's TwitterStreams:
            // the CRD is installed and RBAC lets the watch work.
            let probe = streams.clone();
            tokio::spawn(async move {
                let mut delay = Duration::from_millis(200);
                loop {
                    match probe.list_metadata(&ListParams::default().limit(1)).await {
                        Ok(_) => break ready.store(true, Ordering::Relaxed),
                        Err(e) => warn!(error = %e, "cannot list TwitterStreams yet"),
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            });
            controller
                .run(reconcile, error_policy, ctx)
                .for_each(|res| {
                    metrics.managed.set(store.state().len() as i64);
                    match res {
                        Ok((obj, _)) => {
                            info!(namespace = ?obj.namespace, name = %obj.name, "reconciled")
                        }
                        Err(e) => warn!(error = %e, "reconcile error"),
                    }
                    futures::future::ready(())
                })
                .await;
        }
    });
    futures::future::join_all(controllers).await;
}
