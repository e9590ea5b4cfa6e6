//! The reconciler: a `TwitterStream` in, its topic, Deployments and status out.

use crate::child::{self, ChildDeployment};
pub(crate) use crate::context::Context;
use crate::crd::TwitterStream;
pub(crate) use crate::error::Error;
use crate::{apply, cleanup, status};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PartialObjectMeta};
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing::{Instrument, field, info, info_span, warn};

/// Reconciles running at once, at most, per watched scope. Each holds its
/// API responses (a Deployment, a pod list while pods are not ready) and an
/// HTTPS connection with its buffers; at 1,000 new streams 16 converge as fast
/// as 32 (the apiserver is the bottleneck) with less memory in flight.
const MAX_CONCURRENT_RECONCILES: u16 = 16;

/// Reconciles one TwitterStream; failures also become a Warning Event.
pub(crate) async fn reconcile(tws: Arc<TwitterStream>, ctx: Arc<Context>) -> Result<Action, Error> {
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
        ctx.events
            .emit(
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
pub(crate) fn error_policy(tws: Arc<TwitterStream>, error: &Error, ctx: Arc<Context>) -> Action {
    let attempts = ctx
        .failures
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&crate::context::key(&tws))
        .copied()
        .unwrap_or(1);
    let delay = Duration::from_secs(1u64 << attempts.saturating_sub(1).min(8))
        .min(Duration::from_secs(300));
    warn!(name = %tws.name_any(), error = %error, ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

/// Delete, or apply and observe: the topic first (pods that start before
/// their topic exists only crash-loop), then the Deployments, then the status
/// they add up to.
async fn reconcile_inner(tws: &TwitterStream, ctx: &Context) -> Result<Action, Error> {
    let ns = tws.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<TwitterStream> = Api::namespaced(ctx.client.clone(), &ns);
    if tws.meta().deletion_timestamp.is_some() {
        return cleanup::finalize(tws, ctx, &api).await;
    }
    apply::sync_finalizer(tws, &api).await?;
    let (topic, topic_status) = apply::ensure_topics(tws, ctx).await;
    let mut observed = vec![topic];
    apply::network_policies(tws, ctx, &ns).await?;
    let children = match ctx.images.refusal(tws) {
        None => apply::deployments(tws, ctx, &ns).await?,
        Some(refusal) => {
            apply::refuse(tws, ctx, &refusal).await;
            observed.insert(0, refusal.observation());
            apply::existing_deployments(tws, ctx, &ns).await?
        }
    };
    let ready =
        status::observe_and_write(tws, ctx, &api, observed, topic_status, &children).await?;
    // Deployment and pod changes trigger reconciles through the watches; the
    // periodic requeue re-checks Kafka and samples the throughput.
    Ok(Action::requeue(if ready {
        ctx.sample_interval()
    } else {
        Duration::from_secs(30).min(ctx.sample_interval())
    }))
}

/// Runs the controller over the given namespaces (all when empty) until a
/// shutdown signal. `ready` is set once the watches are running.
pub(crate) async fn run(ctx: Arc<Context>, namespaces: &[String], ready: Arc<AtomicBool>) {
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
        tokio::spawn(forget_deleted_streams(
            ctx.clone(),
            ns.clone(),
            store.clone(),
        ));
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

/// Every minute, once the watch has listed them: forgets the samples and
/// series of the scope's streams that are gone.
async fn forget_deleted_streams(
    ctx: Arc<Context>,
    scope: Option<String>,
    store: reflector::Store<TwitterStream>,
) {
    if store.wait_until_ready().await.is_err() {
        return;
    }
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
        let present = store
            .state()
            .iter()
            .map(|t| crate::context::key(t))
            .collect();
        ctx.forget_streams_except(scope.as_deref(), &present);
    }
}

#[cfg(test)]
mod tests;
