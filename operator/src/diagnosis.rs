//! Why a component's pods are not ready, in the kubelet's own words: a
//! waiting reason, a crashed container's last message, a pod that cannot be
//! scheduled, or (before any container exists) the pod's Warning Events.

use crate::child::ChildDeployment;
use crate::context::Context;
use crate::error::Error;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

pub(crate) async fn pod_problem(
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
pub(crate) fn problem_in_status(pod: &str, ps: &PodStatus) -> Option<(String, String)> {
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
