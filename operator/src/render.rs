//! Pure functions from a `TwitterStream` to the child objects it should have.
//! No I/O: the reconciler applies what these return, and unit tests check them
//! without a cluster.
//!
//! The worker arguments are the workers' own argument types
//! (`twitterstream_contract`), filled in from the spec and rendered
//! by the contract; a test feeds them back through the workers' parsers.

use crate::crd::{ContainerSpec, Source, TwitterStream};
use crate::kafka_auth::kafka_auth;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, HTTPGetAction,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use twitterstream_contract::kafka::KafkaSecurity;
use twitterstream_contract::producer::DEFAULT_LOOKBACK_SECONDS;
use twitterstream_contract::{ConsumerArgs, LogFormat, ProducerArgs, postgres, to_args};

/// Field manager for server-side apply.
pub(crate) const FIELD_MANAGER: &str = "twitterstream-operator";
/// Annotation on each child: a hash of the whole rendered object, so the
/// reconciler can tell from its watch cache that an apply would change nothing.
pub(crate) const RENDER_HASH_ANNOTATION: &str = "twitterstream.io/render-hash";
/// Where the credentials Secret is mounted in producer pods.
pub(crate) const CREDENTIALS_DIR: &str = "/var/run/secrets/twitterstream.io/x-api";
/// Where the replay ConfigMap is mounted in producer pods.
pub(crate) const REPLAY_DIR: &str = "/var/run/twitterstream.io/replay";
/// The workers' health and metrics port.
pub(crate) const HTTP_PORT: i32 = 8080;
/// Non-root user the worker images run as.
const RUN_AS_USER: i64 = 65532;

/// Operator-wide settings that shape the children.
#[derive(Clone, Debug, PartialEq)]
pub struct RenderConfig {
    /// Image for both workers unless a resource overrides it.
    pub worker_image: String,
    /// Where producers reach the X API (the workers' default otherwise). An
    /// operator setting, not a resource's: the stream's credentials go there.
    pub x_api_base_url: Option<String>,
}

impl RenderConfig {
    /// Settings with the workers' defaults and this worker image.
    pub fn new(worker_image: impl Into<String>) -> Self {
        Self {
            worker_image: worker_image.into(),
            x_api_base_url: None,
        }
    }
}

/// Which of the two workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Component {
    Producer,
    Consumer,
}

impl Component {
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Producer => "producer",
            Component::Consumer => "consumer",
        }
    }

    fn binary(self) -> &'static str {
        match self {
            Component::Producer => "twitterstream-producer",
            Component::Consumer => "twitterstream-consumer",
        }
    }
}

/// `<name>-producer` / `<name>-consumer`.
pub(crate) fn deployment_name(tws: &TwitterStream, component: Component) -> String {
    format!("{}-{}", tws.name_any(), component.as_str())
}

/// Labels that select one component's pods.
pub(crate) fn selector_labels(
    tws: &TwitterStream,
    component: Component,
) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "twitterstream".to_string(),
        ),
        ("app.kubernetes.io/instance".to_string(), tws.name_any()),
        (
            "app.kubernetes.io/component".to_string(),
            component.as_str().to_string(),
        ),
    ])
}

/// The selector as a string, for status and the scale subresource.
pub(crate) fn selector_string(tws: &TwitterStream, component: Component) -> String {
    selector_labels(tws, component)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn labels(tws: &TwitterStream, component: Component) -> BTreeMap<String, String> {
    let mut l = selector_labels(tws, component);
    l.insert(
        "app.kubernetes.io/managed-by".to_string(),
        FIELD_MANAGER.to_string(),
    );
    l
}

/// A child object's name (`<name>-<component>`), namespace, labels and
/// controller owner reference.
pub(crate) fn child_metadata(tws: &TwitterStream, component: Component) -> ObjectMeta {
    ObjectMeta {
        name: Some(deployment_name(tws, component)),
        namespace: tws.namespace(),
        labels: Some(labels(tws, component)),
        owner_references: tws.controller_owner_ref(&()).map(|o| vec![o]),
        ..Default::default()
    }
}

/// Consumer group id: namespaced, so equally named streams in two namespaces
/// sharing a Kafka cluster never share offsets, and ending in the window
/// generation, so a changed window starts a group (and partials topic) of
/// its own instead of reading the old one's state with another size.
pub(crate) fn group_id(tws: &TwitterStream) -> String {
    format!(
        "twitterstream.{}.{}.{}",
        tws.namespace().unwrap_or_default(),
        tws.name_any(),
        window_generation(&tws.spec.window)
    )
}

/// Names the window shape: `w10s` (tumbling), `w60s-10s` (60 s every 10 s).
/// The consumer puts the same in its output keys. Lateness is left out: it
/// changes no window's bounds, so the group's state stays valid.
pub(crate) fn window_generation(w: &crate::crd::WindowSpec) -> String {
    match w.slide_seconds.filter(|s| *s != w.seconds) {
        None => format!("w{}s", w.seconds),
        Some(slide) => format!("w{}s-{}s", w.seconds, slide),
    }
}

/// Flags rendered even at their default: the listen address is the one the
/// Deployment's container port and probes name.
const SPELLED: &[&str] = &["http_addr"];

/// The producer's command-line arguments: its typed arguments, rendered by
/// the contract (no flag is spelled here).
pub(crate) fn producer_args(
    tws: &TwitterStream,
    cfg: &RenderConfig,
    security: &KafkaSecurity,
) -> Vec<String> {
    let s = &tws.spec;
    let mut a = ProducerArgs::new(
        s.source,
        &tws.name_any(),
        s.kafka.brokers.clone(),
        &s.kafka.topic,
    );
    a.namespace = Some(tws.namespace().unwrap_or_default());
    a.kafka_security = security.clone();
    if let Some(url) = &cfg.x_api_base_url {
        a.x_api_base_url = url.clone();
    }
    a.keyword = Some(s.keyword.clone());
    a.poll_interval_seconds = unsigned(s.poll_interval_seconds.into());
    a.http_addr = SocketAddr::from(([0, 0, 0, 0], HTTP_PORT as u16));
    a.log_format = LogFormat::Json;
    a.language = s.language.clone();
    a.start_time = s
        .start_time
        .as_ref()
        .and_then(|t| t.0.to_string().parse().ok());
    a.end_time = s
        .end_time
        .as_ref()
        .and_then(|t| t.0.to_string().parse().ok());
    a.min_faves = s.min_faves.map(unsigned);
    a.lookback_seconds = s
        .lookback_seconds
        .map_or(DEFAULT_LOOKBACK_SECONDS, unsigned);
    if s.credentials_secret.is_some() {
        a.credentials_dir = Some(CREDENTIALS_DIR.into());
    }
    if s.source == Source::Replay
        && let Some(r) = &s.replay
    {
        a.replay_file = Some(format!("{REPLAY_DIR}/{}", r.key).into());
        a.replay_speed = r.speed;
    }
    if s.source == Source::Synthetic {
        let syn = s.synthetic.clone().unwrap_or(crate::crd::SyntheticSpec {
            rate: 100.0,
            count: None,
            seed: 1,
        });
        a.synthetic_rate = syn.rate;
        a.seed = unsigned(syn.seed);
        a.synthetic_count = syn.count.map(unsigned);
    }
    to_args(&a, SPELLED)
}

/// The consumer's command-line arguments, rendered like the producer's.
pub(crate) fn consumer_args(tws: &TwitterStream, security: &KafkaSecurity) -> Vec<String> {
    let s = &tws.spec;
    let mut a = ConsumerArgs::new(&tws.name_any(), s.kafka.brokers.clone(), &s.kafka.topic);
    a.kafka_security = security.clone();
    a.group_id = Some(group_id(tws));
    a.window_seconds = unsigned(s.window.seconds);
    a.slide_seconds = s.window.slide_seconds.map(unsigned);
    a.allowed_lateness_seconds = unsigned(s.window.allowed_lateness_seconds);
    a.top_n = unsigned(s.consumer.top_n.into()) as usize;
    a.http_addr = SocketAddr::from(([0, 0, 0, 0], HTTP_PORT as u16));
    a.log_format = LogFormat::Json;
    a.output_topic = s.kafka.output_topic.clone();
    a.stream_namespace = tws.namespace().unwrap_or_default();
    if let Some(pg) = s.sink.as_ref().and_then(|k| k.postgres.as_ref()) {
        a.postgres.postgres_dir = Some(postgres::SECRET_DIR.into());
        a.postgres.postgres_schema = pg.schema.clone();
        a.postgres.postgres_table = pg.table.clone();
        a.postgres.postgres_sslmode = pg.ssl_mode;
        a.postgres.postgres_grace_seconds = u64::try_from(pg.grace_seconds).unwrap_or(120);
    }
    to_args(&a, SPELLED)
}

/// The CRD's integers are signed (Kubernetes' convention); its schema keeps
/// these non-negative.
fn unsigned(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("100m".to_string())),
            ("memory".to_string(), Quantity("64Mi".to_string())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_string(),
            Quantity("256Mi".to_string()),
        )])),
        ..Default::default()
    }
}

fn probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String("http".to_string()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Default::default()
    }
}

fn restricted_container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS_USER),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_string()]),
            ..Default::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_string(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container(
    component: Component,
    spec: &ContainerSpec,
    cfg: &RenderConfig,
    args: Vec<String>,
    mounts: Vec<VolumeMount>,
) -> Container {
    let env: Vec<EnvVar> = spec
        .env
        .iter()
        .map(|(k, v)| EnvVar {
            name: k.clone(),
            value: Some(v.clone()),
            ..Default::default()
        })
        .collect();
    Container {
        name: component.as_str().to_string(),
        image: Some(
            spec.image
                .clone()
                .unwrap_or_else(|| cfg.worker_image.clone()),
        ),
        command: Some(vec![component.binary().to_string()]),
        args: Some(args),
        env: (!env.is_empty()).then_some(env),
        ports: Some(vec![ContainerPort {
            name: Some("http".to_string()),
            container_port: HTTP_PORT,
            protocol: Some("TCP".to_string()),
            ..Default::default()
        }]),
        // The workers' last error line becomes the pod's termination message,
        // which the operator surfaces in the ProducerReady/ConsumerReady condition.
        termination_message_policy: Some("FallbackToLogsOnError".to_string()),
        liveness_probe: Some(probe("/healthz", 10, 3)),
        // Every 2 s: a consumer is ready 1-3 s after it starts (its group
        // joined), and at 5 s the kubelet saw it ~5 s late, holding the
        // stream's Ready back (9 s after `kubectl apply` in the demo, 2026-12).
        // 8 failures keep "not ready" at 16 s of failing, as 3 × 5 s did.
        readiness_probe: Some(probe("/readyz", 2, 8)),
        resources: Some(spec.resources.clone().unwrap_or_else(default_resources)),
        security_context: Some(restricted_container_security()),
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        ..Default::default()
    }
}

fn replicas(tws: &TwitterStream, component: Component) -> i32 {
    if tws.spec.suspend {
        return 0;
    }
    match component {
        Component::Producer => tws.spec.producer.replicas,
        Component::Consumer => tws.spec.consumer.replicas,
    }
}

/// The Deployment of one component.
pub fn deployment(tws: &TwitterStream, component: Component, cfg: &RenderConfig) -> Deployment {
    let s = &tws.spec;
    // Both components' Kafka clients authenticate alike.
    let kafka = kafka_auth(&s.kafka);
    let mut volumes = kafka.volumes;
    let mut mounts = kafka.mounts;
    let (args, container_spec) = match component {
        Component::Producer => {
            if let Some(secret) = &s.credentials_secret {
                // The operator only names the Secret; the kubelet mounts it, and
                // updates the files in place when the Secret is rotated.
                volumes.push(Volume {
                    name: "x-api-credentials".to_string(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(secret.clone()),
                        default_mode: Some(0o440),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
                mounts.push(VolumeMount {
                    name: "x-api-credentials".to_string(),
                    mount_path: CREDENTIALS_DIR.to_string(),
                    read_only: Some(true),
                    ..Default::default()
                });
            }
            if s.source == Source::Replay
                && let Some(r) = &s.replay
            {
                volumes.push(Volume {
                    name: "replay".to_string(),
                    config_map: Some(ConfigMapVolumeSource {
                        name: r.config_map.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
                mounts.push(VolumeMount {
                    name: "replay".to_string(),
                    mount_path: REPLAY_DIR.to_string(),
                    read_only: Some(true),
                    ..Default::default()
                });
            }
            (
                producer_args(tws, cfg, &kafka.security),
                &s.producer.container,
            )
        }
        Component::Consumer => {
            if let Some(pg) = s.sink.as_ref().and_then(|k| k.postgres.as_ref()) {
                // Named, never read: the kubelet mounts the Secret and
                // updates its files when it is rotated.
                volumes.push(Volume {
                    name: "postgres".to_string(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(pg.secret_name.clone()),
                        default_mode: Some(0o440),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
                mounts.push(VolumeMount {
                    name: "postgres".to_string(),
                    mount_path: postgres::SECRET_DIR.to_string(),
                    read_only: Some(true),
                    ..Default::default()
                });
            }
            (consumer_args(tws, &kafka.security), &s.consumer.container)
        }
    };

    let pod = s.pod_template.clone().unwrap_or_default();
    let mut pod_labels = pod.labels.clone();
    pod_labels.extend(labels(tws, component));
    // Only what the pods run from is in their template, so a change rolls
    // the pods it concerns and no others. (A hash of the whole spec here
    // once restarted all 12 consumers of the autoscaling test when the
    // producer's rate changed.)
    let pod_annotations = pod.annotations.clone();

    // Two search/stream producers side by side would fetch the same tweets:
    // replace the old pod before starting the new one.
    let strategy = match (component, s.source.uses_x_api()) {
        (Component::Producer, true) => DeploymentStrategy {
            type_: Some("Recreate".to_string()),
            ..Default::default()
        },
        _ => DeploymentStrategy::default(),
    };

    Deployment {
        metadata: child_metadata(tws, component),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas(tws, component)),
            selector: LabelSelector {
                match_labels: Some(selector_labels(tws, component)),
                ..Default::default()
            },
            strategy: Some(strategy),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(pod_annotations),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container(component, container_spec, cfg, args, mounts)],
                    volumes: (!volumes.is_empty()).then_some(volumes),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS_USER),
                        run_as_group: Some(RUN_AS_USER),
                        fs_group: Some(RUN_AS_USER),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_string(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    automount_service_account_token: Some(false),
                    service_account_name: pod.service_account_name.clone(),
                    node_selector: (!pod.node_selector.is_empty())
                        .then_some(pod.node_selector.clone()),
                    tolerations: (!pod.tolerations.is_empty()).then_some(pod.tolerations.clone()),
                    affinity: pod.affinity.clone(),
                    image_pull_secrets: (!pod.image_pull_secrets.is_empty())
                        .then_some(pod.image_pull_secrets.clone()),
                    priority_class_name: pod.priority_class_name.clone(),
                    termination_grace_period_seconds: Some(30),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// Both children, producer first, each stamped with its render hash.
pub fn deployments(tws: &TwitterStream, cfg: &RenderConfig) -> [(Component, Deployment); 2] {
    [Component::Producer, Component::Consumer].map(|c| (c, stamped(deployment(tws, c, cfg))))
}

/// Adds the render-hash annotation (of the object without it).
fn stamped(mut d: Deployment) -> Deployment {
    let bytes = serde_json::to_vec(&d).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    let hash: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    d.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(RENDER_HASH_ANNOTATION.to_string(), hash);
    d
}

/// The render hash an existing child carries, if any.
pub(crate) fn render_hash(d: &Deployment) -> Option<&str> {
    d.metadata
        .annotations
        .as_ref()?
        .get(RENDER_HASH_ANNOTATION)
        .map(String::as_str)
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
