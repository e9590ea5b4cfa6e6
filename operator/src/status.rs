//! What the children add up to: each component's readiness (computed from
//! its Deployment, and in the pods' own words when it is not ready) and the
//! TwitterStream's status, written only when it changed.

use crate::apply;
use crate::autoscale;
use crate::child::ChildDeployment;
use crate::conditions::{self, Observation};
use crate::context::Context;
use crate::crd::{
    ComponentStatus, ThroughputStatus, TopicStatus, TwitterStream, TwitterStreamStatus,
};
use crate::diagnosis;
use crate::error::Error;
use crate::metrics::{StreamFigures, StreamLabels};
use crate::render::{self, Component};
use crate::throughput;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use std::collections::HashMap;

/// Observes the components, adds them to what the reconcile observed before
/// (the topic, a refused image), writes the status if it changed, and
/// returns whether the stream is ready.
pub(crate) async fn observe_and_write(
    tws: &TwitterStream,
    ctx: &Context,
    api: &Api<TwitterStream>,
    mut parts: Vec<Observation>,
    topic_status: Option<TopicStatus>,
    children: &[(Component, ChildDeployment)],
) -> Result<bool, Error> {
    let throughput = sample_throughput(tws, ctx, topic_status.as_ref()).await;
    let mut component_status = HashMap::new();
    let mut consumers_rolled_out = false;
    for (component, d) in children {
        let (obs, status) = component_readiness(tws, ctx, *component, d).await?;
        if *component == Component::Consumer {
            consumers_rolled_out = obs.ok && d.replicas == Some(tws.spec.consumer.replicas);
        }
        parts.push(obs);
        component_status.insert(*component, status);
    }
    autoscale(tws, ctx, api, throughput.as_ref(), consumers_rolled_out).await?;
    if let Some(t) = &throughput {
        let (namespace, name) = crate::context::key(tws);
        ctx.metrics.stream(
            &StreamLabels { namespace, name },
            &StreamFigures {
                lag: t.lag,
                published_per_second: t.published_per_second,
                consumed_per_second: t.consumed_per_second,
                last_window_delay_seconds: t.last_window_delay_seconds,
                window_seconds: tws.spec.window.seconds,
                consumer_replicas: tws.spec.consumer.replicas.into(),
            },
        );
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
        throughput: throughput.or(previous.throughput.clone()),
    };
    // A component's pods newly failing (a crash loop with the worker's
    // termination message, a missing Secret): also a Warning Event.
    for c in conditions::new_pod_problems(&previous.conditions, &status.conditions) {
        ctx.events
            .emit(
                tws,
                EventType::Warning,
                &c.reason,
                "ObservePods",
                c.message.clone(),
            )
            .await;
    }
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
    Ok(ready.ok)
}

/// A new throughput sample when the stream is due for one (`None`: keep the
/// last). A failed sample is only logged: the status keeps the last one, and
/// the topic's own check reports unreachable brokers.
async fn sample_throughput(
    tws: &TwitterStream,
    ctx: &Context,
    topic: Option<&TopicStatus>,
) -> Option<ThroughputStatus> {
    let now_ms = k8s_openapi::jiff::Timestamp::now().as_millisecond();
    let (last, due) = ctx.last_sample(tws, now_ms);
    let partitions = topic
        .or(tws.status.as_ref().and_then(|s| s.topic.as_ref()))
        .map(|t| t.partitions)
        .filter(|p| *p > 0)?;
    if !due {
        return None;
    }
    let progress = ctx
        .topics
        .group_progress(
            &apply::brokers(tws),
            &render::group_id(tws),
            &tws.spec.kafka.topic,
            partitions,
        )
        .await;
    match progress {
        Ok(progress) => {
            let (status, sample) = throughput::throughput(&progress, last, now_ms);
            ctx.remember_sample(tws, sample);
            Some(status)
        }
        Err(e) => {
            ctx.sample_failed(tws, now_ms);
            tracing::debug!(error = %e, "sampling the consumer group's progress failed");
            None
        }
    }
}

/// Lets `spec.consumer.autoscaling` decide on this reconcile's sample (or
/// bring the replicas back within its bounds); a suspended stream, or one
/// without autoscaling, starts over when it has it again.
async fn autoscale(
    tws: &TwitterStream,
    ctx: &Context,
    api: &Api<TwitterStream>,
    sample: Option<&ThroughputStatus>,
    rolled_out: bool,
) -> Result<(), Error> {
    let Some(spec) = tws
        .spec
        .consumer
        .autoscaling
        .as_ref()
        .filter(|_| !tws.spec.suspend)
    else {
        ctx.autoscaler(tws, |state| *state = autoscale::State::default());
        return Ok(());
    };
    let consumers = autoscale::Consumers {
        replicas: tws.spec.consumer.replicas,
        rolled_out,
    };
    let now_ms = k8s_openapi::jiff::Timestamp::now().as_millisecond();
    let decision = ctx.autoscaler(tws, |state| {
        autoscale::decide(state, spec, consumers, sample, now_ms)
    });
    match decision {
        Some(decision) => apply::scale_consumers(tws, ctx, api, &decision).await,
        None => Ok(()),
    }
}

/// Status equality that ignores transition times (they only change with status).
fn same_status(a: &TwitterStreamStatus, b: &TwitterStreamStatus) -> bool {
    a == b
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
        let (reason, message) = diagnosis::pod_problem(ctx, d, &status.selector)
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
