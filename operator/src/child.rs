//! What the operator keeps of a child Deployment in its watch cache.
//!
//! A `k8s_openapi` `Deployment` is over a kilobyte even when empty (its pod
//! template embeds a full `PodSpec` inline), and with managedFields, labels,
//! selector, strategy and status conditions a cached one is several. The
//! reconciler only reads the fields below, so at thousands of children the
//! cache holds these instead.

use crate::render;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::runtime::watcher;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// A child Deployment as the reconciler sees it.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ChildDeployment {
    /// Name, namespace, generation, deletionTimestamp, ownerReferences (the
    /// Controller maps a child to its TwitterStream through them) and the
    /// render-hash annotation; nothing else. (The watch keeps its own
    /// resourceVersion before objects are summarized.)
    pub(crate) metadata: ObjectMeta,
    /// spec.replicas
    pub(crate) replicas: Option<i32>,
    /// status.observedGeneration
    pub(crate) observed_generation: Option<i64>,
    /// status.replicas, readyReplicas and updatedReplicas.
    pub(crate) status_replicas: Option<i32>,
    pub(crate) ready_replicas: Option<i32>,
    pub(crate) updated_replicas: Option<i32>,
}

impl ChildDeployment {
    /// The render hash the Deployment carries, if any.
    pub(crate) fn render_hash(&self) -> Option<&str> {
        self.metadata
            .annotations
            .as_ref()?
            .get(render::RENDER_HASH_ANNOTATION)
            .map(String::as_str)
    }
}

/// Only the render-hash annotation of a Deployment's annotations.
fn hash_only(annotations: Option<BTreeMap<String, String>>) -> Option<BTreeMap<String, String>> {
    let hash = annotations?.remove(render::RENDER_HASH_ANNOTATION)?;
    Some(BTreeMap::from([(
        render::RENDER_HASH_ANNOTATION.to_string(),
        hash,
    )]))
}

impl From<Deployment> for ChildDeployment {
    fn from(d: Deployment) -> Self {
        let m = d.metadata;
        let status = d.status.unwrap_or_default();
        Self {
            metadata: ObjectMeta {
                name: m.name,
                namespace: m.namespace,
                generation: m.generation,
                deletion_timestamp: m.deletion_timestamp,
                owner_references: m.owner_references,
                annotations: hash_only(m.annotations),
                ..Default::default()
            },
            replicas: d.spec.and_then(|s| s.replicas),
            observed_generation: status.observed_generation,
            status_replicas: status.replicas,
            ready_replicas: status.ready_replicas,
            updated_replicas: status.updated_replicas,
        }
    }
}

impl Resource for ChildDeployment {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("Deployment")
    }
    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("apps")
    }
    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("v1")
    }
    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("deployments")
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A Deployment watch event as a [`ChildDeployment`] event.
pub(crate) fn summarize(event: watcher::Event<Deployment>) -> watcher::Event<ChildDeployment> {
    use watcher::Event;
    match event {
        Event::Apply(d) => Event::Apply(d.into()),
        Event::Delete(d) => Event::Delete(d.into()),
        Event::Init => Event::Init,
        Event::InitApply(d) => Event::InitApply(d.into()),
        Event::InitDone => Event::InitDone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    #[test]
    fn keeps_what_the_reconciler_reads_and_drops_the_rest() {
        let owner = OwnerReference {
            api_version: "twitterstream.io/v1alpha1".into(),
            kind: "TwitterStream".into(),
            name: "s".into(),
            uid: "u".into(),
            controller: Some(true),
            ..Default::default()
        };
        let d = Deployment {
            metadata: ObjectMeta {
                name: Some("s-producer".into()),
                namespace: Some("ns".into()),
                generation: Some(3),
                owner_references: Some(vec![owner.clone()]),
                labels: Some(BTreeMap::from([("a".into(), "b".into())])),
                annotations: Some(BTreeMap::from([
                    (render::RENDER_HASH_ANNOTATION.into(), "h1".into()),
                    ("other".into(), "x".into()),
                ])),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(2),
                ..Default::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(3),
                replicas: Some(2),
                ready_replicas: Some(1),
                updated_replicas: Some(2),
                ..Default::default()
            }),
        };
        let c = ChildDeployment::from(d);
        assert_eq!(c.render_hash(), Some("h1"));
        assert_eq!(c.metadata.annotations.as_ref().map(BTreeMap::len), Some(1));
        assert_eq!(c.metadata.labels, None);
        assert_eq!(c.metadata.owner_references, Some(vec![owner]));
        assert_eq!(
            (c.metadata.name.as_deref(), c.metadata.namespace.as_deref()),
            (Some("s-producer"), Some("ns"))
        );
        assert_eq!(
            (
                c.replicas,
                c.observed_generation,
                c.status_replicas,
                c.ready_replicas,
                c.updated_replicas
            ),
            (Some(2), Some(3), Some(2), Some(1), Some(2))
        );
        assert_eq!(
            ChildDeployment::from(Deployment::default()).render_hash(),
            None
        );
    }
}
