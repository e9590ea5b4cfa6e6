//! The pods of a test namespace, wherever they run: in real containers on the
//! environment's real node (kubelet, containerd and runc, started by
//! `tests/env/up`), or, when that node could not start, as local processes
//! ([`LocalPods`], which plays the kubelet). Tests written against
//! [`NamespacePods`] run unchanged on both; [`real_node`] tells which.

use crate::k8s::TestNamespace;
use crate::local_pods::{LocalPods, PodInfo};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The real node's name, when `tests/env/up` started one (`TWS_REAL_NODE`).
pub fn real_node() -> Option<String> {
    std::env::var("TWS_REAL_NODE")
        .ok()
        .filter(|n| !n.is_empty())
}

/// Why there is no real node, as `tests/env/up` recorded it.
pub fn no_node_reason() -> String {
    std::env::var("TWS_ENV_DIR")
        .ok()
        .and_then(|d| std::fs::read_to_string(format!("{d}/no-node")).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "the environment does not say (TWS_ENV_DIR/no-node)".into())
}

/// The address the servers that pods reach (the tests' X API, Kafka, the
/// apiserver) listen on: the host's end of the real node's veth, or loopback.
pub fn host_ip() -> String {
    std::env::var("TWS_HOST_IP")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "127.0.0.1".into())
}

/// The workers image the chart names by default, which `tests/env/images`
/// builds and imports into the real node.
pub fn workers_image() -> String {
    format!(
        "ghcr.io/twitterstream-io/twitterstream-workers:{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// The real node's taint (tests/env/node.sh): only pods that tolerate it run there.
const REAL_NODE_TAINT: &str = "twitterstream.io/real-node";

/// A test namespace whose pods all run on the real node (when there is one):
/// the PodNodeSelector and PodTolerationRestriction admission plugins give
/// every pod of the namespace the node selector `type=real` and the node's
/// toleration, so a chart or a TwitterStream needs no change to land there.
pub async fn namespace_on_real_node(client: &Client, prefix: &str) -> TestNamespace {
    let ns = TestNamespace::create(client, prefix).await;
    if real_node().is_some() {
        let api = Api::<Namespace>::all(client.clone());
        let mut n = api.get(&ns.name).await.expect("reading the test namespace");
        let annotations = n.metadata.annotations.get_or_insert_with(Default::default);
        annotations.insert(
            "scheduler.alpha.kubernetes.io/node-selector".into(),
            "type=real".into(),
        );
        annotations.insert(
            "scheduler.alpha.kubernetes.io/defaultTolerations".into(),
            format!(r#"[{{"key":"{REAL_NODE_TAINT}","operator":"Exists","effect":"NoSchedule"}}]"#),
        );
        api.replace(&ns.name, &PostParams::default(), &n)
            .await
            .expect("placing the test namespace on the real node");
    }
    ns
}

/// A namespace's pods: real ones, or local processes standing in for them.
pub enum NamespacePods {
    Real(RealPods),
    Local(LocalPods),
}

impl NamespacePods {
    /// Real pods when the environment has a real node; otherwise starts
    /// [`LocalPods`] for the namespace, saying why in one line.
    pub fn start(client: Client, namespace: &str) -> Self {
        if real_node().is_some() {
            Self::Real(RealPods::watch(client, namespace))
        } else {
            // Straight to stderr: libtest captures eprintln! of passing tests.
            let _ = writeln!(
                std::io::stderr(),
                "[pods] no real node ({}): running the namespace's Deployments as local processes",
                no_node_reason()
            );
            Self::Local(LocalPods::start(client, namespace, None))
        }
    }

    pub fn is_real(&self) -> bool {
        matches!(self, Self::Real(_))
    }

    /// The pods running now (for real pods: scheduled, not being deleted,
    /// their container started).
    pub fn pods(&self) -> Vec<PodInfo> {
        match self {
            Self::Real(r) => r.pods(),
            Self::Local(l) => l.pods(),
        }
    }

    pub fn pods_of(&self, deployment: &str) -> Vec<PodInfo> {
        self.pods()
            .into_iter()
            .filter(|p| p.deployment == deployment)
            .collect()
    }

    pub fn errors(&self) -> Vec<String> {
        match self {
            Self::Real(r) => r.errors(),
            Self::Local(l) => l.errors(),
        }
    }

    pub fn stop(self) {
        match self {
            Self::Real(r) => r.task.abort(),
            Self::Local(l) => l.stop(),
        }
    }
}

/// The real pods of a namespace, read from the API every 500 ms.
pub struct RealPods {
    state: Arc<Mutex<(Vec<PodInfo>, Vec<String>)>>,
    task: tokio::task::JoinHandle<()>,
}

impl RealPods {
    fn watch(client: Client, namespace: &str) -> Self {
        let state = Arc::new(Mutex::new((Vec::new(), Vec::new())));
        let st = state.clone();
        let api = Api::<Pod>::namespaced(client, namespace);
        let task = tokio::spawn(async move {
            loop {
                match api.list(&ListParams::default()).await {
                    Ok(list) => {
                        let pods = list.items.iter().filter_map(running).collect();
                        lock(&st).0 = pods;
                    }
                    Err(e) => lock(&st).1.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        Self { state, task }
    }

    fn pods(&self) -> Vec<PodInfo> {
        lock(&self.state).0.clone()
    }

    fn errors(&self) -> Vec<String> {
        lock(&self.state).1.clone()
    }
}

impl Drop for RealPods {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A pod whose (first) container runs now, as [`PodInfo`]: its command line
/// from the pod spec, its ports on the pod's IP, its restart count and the
/// kubelet's log file of the running container.
fn running(pod: &Pod) -> Option<PodInfo> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let spec = pod.spec.as_ref()?;
    let status = pod.status.as_ref()?;
    let container = spec.containers.first()?;
    let cs = status
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == container.name)?;
    cs.state.as_ref()?.running.as_ref()?;
    let template = pod
        .labels()
        .get("pod-template-hash")
        .cloned()
        .unwrap_or_default();
    // The ReplicaSet is named <deployment>-<pod-template-hash>.
    let deployment = pod
        .owner_references()
        .iter()
        .find(|o| o.kind == "ReplicaSet")
        .map(|o| {
            o.name
                .strip_suffix(&format!("-{template}"))
                .unwrap_or(&o.name)
                .to_string()
        })
        .unwrap_or_default();
    let argv = container
        .command
        .iter()
        .flatten()
        .chain(container.args.iter().flatten())
        .cloned()
        .collect();
    let ports: BTreeMap<i32, u16> = container
        .ports
        .iter()
        .flatten()
        .filter_map(|p| Some((p.container_port, u16::try_from(p.container_port).ok()?)))
        .collect();
    // The kubelet's CRI log: <podLogsDir>/<ns>_<pod>_<uid>/<container>/<restarts>.log.
    let log = PathBuf::from(std::env::var("TWS_ENV_DIR").unwrap_or_default()).join(format!(
        "kubelet/pod-logs/{}_{}_{}/{}/{}.log",
        pod.namespace().unwrap_or_default(),
        pod.name_any(),
        pod.uid().unwrap_or_default(),
        container.name,
        cs.restart_count
    ));
    Some(PodInfo {
        name: pod.name_any(),
        deployment,
        template,
        argv,
        ports,
        restarts: u32::try_from(cs.restart_count).unwrap_or(0),
        log,
    })
}
