//! Plays the kubelet for Deployments whose containers cannot run here.
//!
//! kwok schedules pods and reports them Ready, but runs no containers. To
//! test the real pipeline, `LocalPods` watches the Deployments of a namespace
//! and runs each replica's container as a local process started with exactly
//! the container's command, args and env, the way a kubelet would:
//! `fieldRef` env from the pod, `secretKeyRef`/`configMapKeyRef` env and
//! Secret/ConfigMap volumes materialised as files, and the ServiceAccount's
//! token (when the pod automounts it) as the process's kubeconfig. Only two
//! things are translated, because a local process has no pod of its own: a
//! volume's mount path becomes a local directory, and a listen address on a
//! container port (`0.0.0.0:8080`) becomes a free loopback port.
//!
//! Like a Deployment controller it converges: a changed pod template
//! replaces the processes (a rollout), fewer replicas stops some, a deleted
//! Deployment stops all, and a process that exits is restarted
//! (`restartPolicy: Always`).

use crate::process::{ChildProcess, binary, free_port};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, Secret};
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The workspace package that builds each container command.
fn package_of(command: &str) -> Option<&'static str> {
    match command {
        "twitterstream-operator" => Some("twitterstream-operator"),
        "twitterstream-producer" | "twitterstream-consumer" => Some("twitterstream-workers"),
        _ => None,
    }
}

/// The binary a container command runs: the workspace's build, or the one
/// `TWS_CONSUMER_BIN`, `TWS_PRODUCER_BIN` or `TWS_OPERATOR_BIN` names (to
/// run a test against an older build).
fn program_path(package: &str, command: &str) -> PathBuf {
    let var = command
        .strip_prefix("twitterstream-")
        .map(|c| format!("TWS_{}_BIN", c.to_uppercase()));
    match var.and_then(std::env::var_os) {
        Some(p) => PathBuf::from(p),
        None => binary(package, command),
    }
}

/// One local "pod": a process started from a Deployment's pod template.
struct LocalPod {
    info: PodInfo,
    process: ChildProcess,
}

#[derive(Default)]
struct State {
    pods: BTreeMap<String, Vec<LocalPod>>,
    started: u64,
    errors: Vec<String>,
}

/// One running process, for assertions.
#[derive(Debug, Clone)]
pub struct PodInfo {
    pub name: String,
    pub deployment: String,
    /// Hash of the pod template it was started from.
    pub template: String,
    /// The command line it was started with (after the two translations).
    pub argv: Vec<String>,
    /// Loopback ports standing in for the container ports, by container port.
    pub ports: BTreeMap<i32, u16>,
    pub restarts: u32,
    pub log: PathBuf,
}

/// Chooses the Deployments to run.
pub type Filter = Box<dyn Fn(&Deployment) -> bool + Send + Sync>;

/// Runs the Deployments of one namespace as local processes until dropped.
pub struct LocalPods {
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
    pub namespace: String,
}

impl LocalPods {
    /// Starts syncing the Deployments in `namespace` accepted by `filter`
    /// (`None`: all of them), every 500 ms.
    pub fn start(client: Client, namespace: &str, filter: Option<Filter>) -> Self {
        Self::start_on_node(client, namespace, filter, &[])
    }

    /// `start`, on a "node" that adds `node_env` to every process's
    /// environment, after the container's own: a test setting no pod spec
    /// may carry (the autoscaling test caps each consumer's rate with
    /// `TWS_MAX_TWEETS_PER_SECOND`, which a TwitterStream cannot set).
    pub fn start_on_node(
        client: Client,
        namespace: &str,
        filter: Option<Filter>,
        node_env: &[(&str, &str)],
    ) -> Self {
        let node_env: Arc<Vec<(String, String)>> = Arc::new(
            node_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        // Build the binaries now (cargo, on first use): a cold build takes
        // minutes, and inside the sync loop it would stall the runtime (and
        // time out the kube Client's connection) while nothing runs.
        tokio::task::block_in_place(|| {
            for command in [
                "twitterstream-operator",
                "twitterstream-producer",
                "twitterstream-consumer",
            ] {
                if let Some(package) = package_of(command) {
                    binary(package, command);
                }
            }
        });
        let state = Arc::new(Mutex::new(State::default()));
        let ns = namespace.to_string();
        let st = state.clone();
        let task = tokio::spawn(async move {
            let mut client = client;
            loop {
                if let Err(e) = sync(&client, &ns, filter.as_deref(), &node_env, &st).await {
                    lock(&st).errors.push(e);
                    // A kube Client whose connection worker died answers
                    // every call with `Service(Closed)`: start afresh.
                    if let Ok(fresh) = fresh_client().await {
                        client = fresh;
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        Self {
            state,
            task,
            namespace: namespace.to_string(),
        }
    }

    /// The processes running now.
    pub fn pods(&self) -> Vec<PodInfo> {
        lock(&self.state)
            .pods
            .values()
            .flatten()
            .map(|p| p.info.clone())
            .collect()
    }

    /// The processes of one Deployment.
    pub fn pods_of(&self, deployment: &str) -> Vec<PodInfo> {
        self.pods()
            .into_iter()
            .filter(|p| p.deployment == deployment)
            .collect()
    }

    /// How many processes were started in total (restarts included).
    pub fn started(&self) -> u64 {
        lock(&self.state).started
    }

    /// Errors met while syncing (e.g. a Secret that does not exist), each
    /// retried on the next sync; for diagnostics.
    pub fn errors(&self) -> Vec<String> {
        lock(&self.state).errors.clone()
    }

    /// Stops syncing and SIGTERMs every process (SIGKILL after 10 s).
    pub fn stop(self) {
        self.task.abort();
        let pods = std::mem::take(&mut lock(&self.state).pods);
        for mut pod in pods.into_values().flatten() {
            stop_process(&mut pod.process);
        }
    }
}

impl Drop for LocalPods {
    fn drop(&mut self) {
        self.task.abort();
        // ChildProcess kills on drop.
        lock(&self.state).pods.clear();
    }
}

async fn fresh_client() -> Result<Client, String> {
    let config = kube::Config::infer().await.map_err(|e| e.to_string())?;
    Client::try_from(config).map_err(|e| e.to_string())
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// SIGTERM, then SIGKILL when the process has not exited after 10 s.
fn stop_process(process: &mut ChildProcess) {
    let _ = Command::new("kill")
        .args(["-TERM", &process.child.id().to_string()])
        .status();
    for _ in 0..100 {
        if let Ok(Some(_)) = process.child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    process.kill();
}

fn template_hash(d: &Deployment) -> String {
    use sha2::Digest;
    let json = serde_json::to_vec(&d.spec.as_ref().map(|s| &s.template)).unwrap_or_default();
    let digest = sha2::Sha256::digest(&json);
    digest.iter().take(5).map(|b| format!("{b:02x}")).collect()
}

async fn sync(
    client: &Client,
    ns: &str,
    filter: Option<&(dyn Fn(&Deployment) -> bool + Send + Sync)>,
    node_env: &[(String, String)],
    state: &Mutex<State>,
) -> Result<(), String> {
    let deployments = Api::<Deployment>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing Deployments in {ns}: {e}"))?;
    let mut desired: HashMap<String, (String, i32, Deployment)> = HashMap::new();
    for d in deployments.items {
        if filter.is_some_and(|f| !f(&d)) {
            continue;
        }
        let replicas = if d.metadata.deletion_timestamp.is_some() {
            0
        } else {
            d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
        };
        desired.insert(d.name_any(), (template_hash(&d), replicas, d));
    }

    // Stop what is no longer wanted: deleted Deployments, old templates,
    // surplus replicas. Restart what exited.
    let mut to_stop = Vec::new();
    {
        let mut st = lock(state);
        let names: Vec<String> = st.pods.keys().cloned().collect();
        for name in names {
            let pods = st
                .pods
                .get_mut(&name)
                .map(std::mem::take)
                .unwrap_or_default();
            let (keep, stop): (Vec<_>, Vec<_>) = match desired.get(&name) {
                None => (Vec::new(), pods),
                Some((hash, _, _)) => pods.into_iter().partition(|p| &p.info.template == hash),
            };
            to_stop.extend(stop);
            let want = desired.get(&name).map_or(0, |(_, r, _)| *r).max(0) as usize;
            let mut keep = keep;
            while keep.len() > want {
                to_stop.extend(keep.pop());
            }
            st.pods.insert(name, keep);
        }
    }
    if !to_stop.is_empty() {
        tokio::task::spawn_blocking(move || {
            for mut pod in to_stop {
                stop_process(&mut pod.process);
            }
        })
        .await
        .map_err(|e| e.to_string())?;
    }

    for (name, (hash, replicas, d)) in &desired {
        let (running, exited) = {
            let mut st = lock(state);
            let pods = st.pods.entry(name.clone()).or_default();
            let mut exited = Vec::new();
            pods.retain_mut(|p| match p.process.child.try_wait() {
                Ok(Some(status)) => {
                    exited.push((p.info.name.clone(), p.info.restarts, status));
                    false
                }
                _ => true,
            });
            (pods.len(), exited)
        };
        let mut restarts: Vec<u32> = exited.iter().map(|(_, r, _)| r + 1).collect();
        let want = (*replicas).max(0) as usize;
        for _ in running.min(want)..want {
            let pod_name = format!("{name}-{hash}-{}", unique_suffix());
            let mut pod = materialise(client, ns, d, &pod_name, node_env)
                .await
                .map_err(|e| format!("pod {pod_name} of {name}: {e}"))?;
            pod.info.template = hash.clone();
            pod.info.restarts = restarts.pop().unwrap_or(0);
            let mut st = lock(state);
            st.started += 1;
            st.pods.entry(name.clone()).or_default().push(pod);
        }
    }
    Ok(())
}

fn unique_suffix() -> String {
    crate::unique_name("p")
        .rsplit('-')
        .take(2)
        .collect::<Vec<_>>()
        .join("")
}

/// Builds and starts one process from the Deployment's first container.
async fn materialise(
    client: &Client,
    ns: &str,
    d: &Deployment,
    pod_name: &str,
    node_env: &[(String, String)],
) -> Result<LocalPod, String> {
    let template = d
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .ok_or("no spec")?;
    let spec: PodSpec = template.spec.ok_or("no pod spec")?;
    let container: &Container = spec.containers.first().ok_or("no container")?;
    let command = container.command.clone().unwrap_or_default();
    let program = command.first().ok_or("the container sets no command")?;
    let package = package_of(program).ok_or(format!("no local binary for {program}"))?;
    let root = PathBuf::from(crate::env_var("TWS_ENV_DIR"))
        .join("local-pods")
        .join(pod_name);
    std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;

    // Volumes: mount path -> local directory.
    let mut mounts: Vec<(String, PathBuf)> = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let vol = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == m.name)
            .ok_or(format!("volume {} is not defined", m.name))?;
        let dir = root.join(&m.name);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        if let Some(s) = &vol.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            let secret = Api::<Secret>::namespaced(client.clone(), ns)
                .get(&name)
                .await
                .map_err(|e| format!("Secret {name} for volume {}: {e}", m.name))?;
            for (k, v) in secret.data.unwrap_or_default() {
                write_key(&dir, &k, &v.0)?;
            }
        } else if let Some(c) = &vol.config_map {
            let name = c.name.clone();
            let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
                .get(&name)
                .await
                .map_err(|e| format!("ConfigMap {name} for volume {}: {e}", m.name))?;
            for (k, v) in cm.data.unwrap_or_default() {
                write_key(&dir, &k, v.as_bytes())?;
            }
        }
        mounts.push((m.mount_path.clone(), dir));
    }
    // Longest mount path first, so nested mounts translate correctly.
    mounts.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));

    let mut ports = BTreeMap::new();
    for p in container.ports.iter().flatten() {
        ports.insert(p.container_port, free_port());
    }
    let translate = |value: &str| -> String {
        for (port, local) in &ports {
            if value == format!("0.0.0.0:{port}") || value == format!(":{port}") {
                return format!("127.0.0.1:{local}");
            }
        }
        for (path, dir) in &mounts {
            if let Some(rest) = value.strip_prefix(path.as_str())
                && (rest.is_empty() || rest.starts_with('/'))
            {
                return format!("{}{rest}", dir.display());
            }
        }
        value.to_string()
    };

    let mut cmd = Command::new(program_path(package, program));
    let args: Vec<String> = command[1..]
        .iter()
        .chain(container.args.iter().flatten())
        .map(|a| match a.split_once('=') {
            // `--flag=value`: translate the value.
            Some((flag, value)) if flag.starts_with("--") => format!("{flag}={}", translate(value)),
            _ => translate(a),
        })
        .collect();
    cmd.args(&args);
    cmd.env_clear();
    for key in ["PATH", "HOME", "RUST_BACKTRACE"] {
        if let Ok(v) = std::env::var(key) {
            cmd.env(key, v);
        }
    }
    cmd.env("HOSTNAME", pod_name);
    for e in container.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (Some(v), _) => translate(v),
            (None, Some(from)) => {
                if let Some(f) = &from.field_ref {
                    match f.field_path.as_str() {
                        "metadata.namespace" => ns.to_string(),
                        "metadata.name" => pod_name.to_string(),
                        "spec.serviceAccountName" => {
                            spec.service_account_name.clone().unwrap_or_default()
                        }
                        other => return Err(format!("fieldRef {other} is not supported")),
                    }
                } else if let Some(s) = &from.secret_key_ref {
                    let secret = Api::<Secret>::namespaced(client.clone(), ns)
                        .get(&s.name)
                        .await
                        .map_err(|err| format!("Secret {} for env {}: {err}", s.name, e.name))?;
                    let bytes = secret
                        .data
                        .and_then(|d| d.get(&s.key).cloned())
                        .ok_or(format!("Secret {} has no key {}", s.name, s.key))?;
                    String::from_utf8_lossy(&bytes.0).into_owned()
                } else if let Some(c) = &from.config_map_key_ref {
                    let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
                        .get(&c.name)
                        .await
                        .map_err(|err| format!("ConfigMap {} for env {}: {err}", c.name, e.name))?;
                    cm.data
                        .and_then(|d| d.get(&c.key).cloned())
                        .ok_or(format!("ConfigMap {} has no key {}", c.name, c.key))?
                } else {
                    return Err(format!("env {}: unsupported valueFrom", e.name));
                }
            }
            (None, None) => String::new(),
        };
        cmd.env(&e.name, value);
    }
    for (k, v) in node_env {
        cmd.env(k, v);
    }
    // The kubelet mounts the ServiceAccount token unless the pod opts out;
    // a local process gets the same identity as a kubeconfig.
    if spec.automount_service_account_token != Some(false) {
        let sa = spec
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".into());
        let token = crate::k8s::try_service_account_token(client, ns, &sa).await?;
        let kubeconfig = root.join("kubeconfig");
        crate::k8s::write_token_kubeconfig(&kubeconfig, &token, ns)?;
        cmd.env("KUBECONFIG", &kubeconfig);
    }

    let mut argv = vec![program.clone()];
    argv.extend(args);
    let process = ChildProcess::spawn(cmd, &format!("local-pods/{pod_name}"));
    Ok(LocalPod {
        info: PodInfo {
            name: pod_name.to_string(),
            deployment: d.name_any(),
            template: String::new(),
            argv,
            ports,
            restarts: 0,
            log: process.log.clone(),
        },
        process,
    })
}

fn write_key(dir: &Path, key: &str, bytes: &[u8]) -> Result<(), String> {
    // Secret keys are file names: no path separators.
    if key.contains('/') || key == ".." {
        return Err(format!("unsafe key {key:?}"));
    }
    std::fs::write(dir.join(key), bytes).map_err(|e| format!("writing {key}: {e}"))
}
