//! Making Kafka and the cluster as the spec says: the topics, the finalizer,
//! the Deployments and the NetworkPolicies.

use crate::autoscale::Decision;
use crate::child::ChildDeployment;
use crate::conditions::{self, Observation};
use crate::context::Context;
use crate::crd::{TopicStatus, TwitterStream};
use crate::error::Error;
use crate::network_policy;
use crate::policy::Refusal;
use crate::render::{self, Component, FIELD_MANAGER};
use crate::topic::{TopicChange, TopicRequest};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};

/// Finalizer that holds a deletion until the topics are deleted; only present
/// when `kafka.deleteTopicOnDelete` is set.
pub(crate) const TOPIC_FINALIZER: &str = "twitterstream.io/delete-topics";

/// Applies each Deployment that differs from its rendering (or that someone
/// else changed since this process applied it), with an Event when it was
/// created or updated; returns them as they are now.
pub(crate) async fn deployments(
    tws: &TwitterStream,
    ctx: &Context,
    ns: &str,
) -> Result<Vec<(Component, ChildDeployment)>, Error> {
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    let mut children = Vec::new();
    for (component, desired) in render::deployments(tws, &ctx.render) {
        let name = desired.name_any();
        let before = current(ctx, &deployments, ns, &name).await?;
        let unchanged = before.as_ref().is_some_and(|b| {
            b.metadata.deletion_timestamp.is_none()
                && b.render_hash() == render::render_hash(&desired)
                && ctx.applied_as_is(ns, b)
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
        ctx.remember_applied(ns, &applied);
        match &before {
            None => {
                ctx.events
                    .emit(
                        tws,
                        EventType::Normal,
                        "Created",
                        "Apply",
                        format!("Created Deployment {name}"),
                    )
                    .await
            }
            Some(b) if b.metadata.generation != applied.metadata.generation => {
                ctx.events
                    .emit(
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
        children.push((component, applied));
    }
    Ok(children)
}

/// Applies the NetworkPolicies `spec.networkPolicy` asks for, or deletes
/// ours once it no longer does (a stream this process has seen without them
/// costs no request; a new one never had any).
pub(crate) async fn network_policies(
    tws: &TwitterStream,
    ctx: &Context,
    ns: &str,
) -> Result<(), Error> {
    let api: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), ns);
    let key = crate::context::key(tws);
    let desired = network_policy::network_policies(tws, &ctx.render);
    let without = || {
        ctx.without_policies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    };
    if desired.is_empty() {
        if tws.status.is_none() || without().contains(&key) {
            without().insert(key);
            return Ok(());
        }
        for name in network_policy::policy_names(tws) {
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {
                    ctx.events
                        .emit(
                            tws,
                            EventType::Normal,
                            "Deleted",
                            "Delete",
                            format!("Deleted NetworkPolicy {name}"),
                        )
                        .await
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        without().insert(key);
        return Ok(());
    }
    without().remove(&key);
    for policy in desired {
        let name = policy.name_any();
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&policy),
        )
        .await?;
    }
    Ok(())
}

/// A child Deployment as it is now. The watch cache answers "does it exist,
/// and is it as rendered?" without a request; only a child it has not seen
/// yet costs a GET.
async fn current(
    ctx: &Context,
    deployments: &Api<Deployment>,
    ns: &str,
    name: &str,
) -> Result<Option<ChildDeployment>, Error> {
    Ok(match ctx.cached_deployment(ns, name) {
        Some(d) => Some(d),
        None => deployments.get_opt(name).await?.map(ChildDeployment::from),
    })
}

/// The stream's Deployments as they are, without applying anything: while
/// its spec is refused, the pipeline keeps what it last ran.
pub(crate) async fn existing_deployments(
    tws: &TwitterStream,
    ctx: &Context,
    ns: &str,
) -> Result<Vec<(Component, ChildDeployment)>, Error> {
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    let mut children = Vec::new();
    for (component, desired) in render::deployments(tws, &ctx.render) {
        let existing = current(ctx, &deployments, ns, &desired.name_any()).await?;
        children.extend(existing.map(|d| (component, d)));
    }
    Ok(children)
}

/// Says why the spec is not applied, in a Warning Event.
pub(crate) async fn refuse(tws: &TwitterStream, ctx: &Context, refusal: &Refusal) {
    ctx.events
        .emit(
            tws,
            EventType::Warning,
            Refusal::REASON,
            "Apply",
            refusal.message(),
        )
        .await;
}

/// Sets the consumer replicas the autoscaler decided on, through the scale
/// subresource (as `kubectl scale` does), and says so in an Event with the
/// figures. The TwitterStream's new generation brings the next reconcile,
/// which renders the Deployment with them.
pub(crate) async fn scale_consumers(
    tws: &TwitterStream,
    ctx: &Context,
    api: &Api<TwitterStream>,
    decision: &Decision,
) -> Result<(), Error> {
    let patch = serde_json::json!({ "spec": { "replicas": decision.to } });
    api.patch_scale(
        &tws.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    ctx.metrics.scaled(if decision.to > decision.from {
        "up"
    } else {
        "down"
    });
    tracing::info!(
        from = decision.from,
        to = decision.to,
        "{}",
        decision.message
    );
    ctx.events
        .emit(
            tws,
            EventType::Normal,
            "Scaled",
            "Autoscale",
            decision.message.clone(),
        )
        .await;
    Ok(())
}

pub(crate) fn brokers(tws: &TwitterStream) -> String {
    tws.spec.kafka.brokers.join(",")
}

pub(crate) fn topic_requests(tws: &TwitterStream) -> Vec<TopicRequest> {
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

pub(crate) async fn ensure_topics(
    tws: &TwitterStream,
    ctx: &Context,
) -> (Observation, Option<TopicStatus>) {
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
                        ctx.events
                            .emit(
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
                        ctx.events
                            .emit(
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
                ctx.events
                    .emit(
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

/// Adds or removes the topic finalizer to match `kafka.deleteTopicOnDelete`.
pub(crate) async fn sync_finalizer(
    tws: &TwitterStream,
    api: &Api<TwitterStream>,
) -> Result<(), Error> {
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
pub(crate) async fn set_topic_finalizer(
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
