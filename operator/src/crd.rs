//! The `TwitterStream` custom resource (group `twitterstream.io`, version `v1alpha1`).
//!
//! Every field carries a doc comment: it becomes the schema description that
//! `kubectl explain` shows. Constraints that the apiserver can check live here
//! as OpenAPI bounds or CEL rules, each with a message that says what to fix.

use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, ResourceRequirements, Toleration,
};
use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use twitterstream_contract::kafka::SaslMechanism;
pub use twitterstream_contract::postgres::SslMode;

pub const GROUP: &str = "twitterstream.io";
pub const KIND: &str = "TwitterStream";

/// A pipeline that polls X (Twitter) for a keyword, publishes every tweet to a Kafka topic, and aggregates the
/// tweets over time windows whose results go to an output topic or to the consumers' logs.
// Clippy reads the repeated `printcolumn(type_ = …)` arguments as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "twitterstream.io",
    version = "v1alpha1",
    kind = "TwitterStream",
    plural = "twitterstreams",
    singular = "twitterstream",
    shortname = "tws",
    namespaced,
    status = "TwitterStreamStatus",
    derive = "PartialEq",
    doc = "A pipeline that polls X (Twitter) for a keyword, publishes every tweet to a Kafka topic, and aggregates the tweets over time windows.",
    scale(
        spec_replicas_path = ".spec.consumer.replicas",
        status_replicas_path = ".status.consumer.replicas",
        label_selector_path = ".status.consumer.selector"
    ),
    printcolumn(name = "Keyword", type_ = "string", json_path = ".spec.keyword"),
    printcolumn(name = "Topic", type_ = "string", json_path = ".spec.kafka.topic"),
    printcolumn(
        name = "Window",
        type_ = "integer",
        json_path = ".spec.window.seconds",
        description = "Window length in seconds"
    ),
    printcolumn(
        name = "Producers",
        type_ = "integer",
        json_path = ".status.producer.readyReplicas",
        description = "Ready producer pods"
    ),
    printcolumn(
        name = "Consumers",
        type_ = "integer",
        json_path = ".status.consumer.readyReplicas",
        description = "Ready consumer pods"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Lag",
        type_ = "integer",
        json_path = ".status.throughput.lag",
        description = "Records of the topic the consumers have not committed"
    ),
    printcolumn(
        name = "Rate",
        type_ = "number",
        json_path = ".status.throughput.publishedPerSecond",
        description = "Records per second appended to the topic"
    ),
    printcolumn(
        name = "Last Window",
        type_ = "date",
        json_path = ".status.throughput.lastWindowEnd",
        description = "How long ago the last complete window ended"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.startTime) || !has(self.endTime) || timestamp(self.endTime) > timestamp(self.startTime)").message("endTime must be after startTime"),
    validation = Rule::new("!has(self.startTime) || !has(self.lookbackSeconds)").message("lookbackSeconds and startTime exclude each other: startTime already says where reading begins"),
    validation = Rule::new("size(self.keyword) + 14 + (has(self.language) ? 6 + size(self.language) : 0) <= 512").message("keyword is too long: with the operators the producer adds (parentheses, ' lang:<language>', ' -is:retweet') the query must fit X's 512 characters"),
    validation = Rule::new("self.producer.replicas <= 1").message("producer.replicas must be 0 or 1: a stream has one transactional producer, and a second would fence it (and fetch or generate the same tweets twice)"),
    validation = Rule::new("!(self.source in ['x-search', 'x-stream']) || has(self.credentialsSecret)").message("sources x-search and x-stream need credentialsSecret: the name of a Secret holding the X API credentials"),
    validation = Rule::new("self.consumer.replicas <= self.kafka.partitions").message("consumer.replicas must not exceed kafka.partitions: a partition is read by one consumer, extra consumers would sit idle"),
    validation = Rule::new("!has(self.consumer.autoscaling) || self.consumer.autoscaling.maxReplicas <= self.kafka.partitions").message("consumer.autoscaling.maxReplicas must not exceed kafka.partitions: a partition is read by one consumer, extra consumers would sit idle"),
)]
pub struct TwitterStreamSpec {
    /// The X search query to follow: a keyword, or any query using X's search operators (e.g. `superbowl has:hashtags`).
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(validation = Rule::new("self.matches('\\\\S')").message("keyword must not be blank"))]
    pub keyword: String,

    /// Only tweets in this language (BCP 47 code such as `en`); adds `lang:<code>` to the query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z]{2,3}(-[a-zA-Z0-9]{2,8})?$')").message("language must be a BCP 47 language code such as en or pt-BR"))]
    pub language: Option<String>,

    /// Oldest tweet creation time to fetch (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,

    /// Newest tweet creation time to fetch (RFC 3339); must be after startTime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,

    /// Where an x-search stream without startTime begins reading when it starts with no cursor: this many seconds
    /// back (default 600; 0 = from now; at most 604800, the 7 days recent search holds). Every post a search returns
    /// counts against the X project's monthly post cap, so a first poll is bounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = twitterstream_contract::producer::MAX_LOOKBACK_SECONDS))]
    pub lookback_seconds: Option<i64>,

    /// Keep only tweets with at least this many likes. X API v2 has no min_faves operator, so the producer filters on
    /// `public_metrics.like_count`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub min_faves: Option<i64>,

    /// Where tweets come from: `x-search` polls the X API v2 recent search, `x-stream` follows the filtered stream
    /// (bearer token), `replay` replays a JSONL file, `synthetic` generates realistic tweets (no credentials needed).
    #[serde(default)]
    pub source: Source,

    /// Seconds between two polls of the X search API.
    #[serde(default = "default_poll_interval")]
    #[schemars(range(min = 1, max = 86400))]
    pub poll_interval_seconds: i32,

    /// Name of a Secret in this namespace with the X API credentials: keys `consumerKey`, `consumerSecret`,
    /// `accessToken` and `accessTokenSecret` (OAuth 1.0a user context) and/or `bearerToken` (app-only). It is mounted
    /// into the producer pods; the operator never reads it. Required for the x-search and x-stream sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("credentialsSecret must be a Secret name (lowercase letters, digits, '-' and '.')"))]
    pub credentials_secret: Option<String>,

    /// Options of the replay source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplaySpec>,

    /// Options of the synthetic source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synthetic: Option<SyntheticSpec>,

    /// The Kafka cluster and topics of this pipeline.
    pub kafka: KafkaSpec,

    /// How tweets are grouped in time.
    #[serde(default)]
    pub window: WindowSpec,

    /// The producer pods (X API to Kafka).
    #[serde(default)]
    pub producer: ProducerSpec,

    /// The consumer pods (Kafka to windows). The scale subresource (`kubectl scale`) sets `consumer.replicas`.
    #[serde(default)]
    pub consumer: ConsumerSpec,

    /// Settings applied to the pods of both components.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplateSpec>,

    /// Scale both components to zero without deleting anything; set back to false to resume where it stopped.
    #[serde(default)]
    pub suspend: bool,

    /// Set (even to `{}`): a NetworkPolicy per component limits its pods' traffic to DNS, the brokers' ports, the X
    /// API (producer only) and ingress on the health and metrics port. NetworkPolicies cannot name hosts, so
    /// destinations are any address on those ports unless narrowed here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicySpec>,

    /// Where final windows go besides (or instead of) `kafka.outputTopic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<SinkSpec>,
}

/// Sinks of the final windows.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SinkSpec {
    /// Every final window as one row of a PostgreSQL table, written exactly once (an insert keyed by stream and
    /// window, before the consumed offsets are committed to Kafka).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresSinkSpec>,
}

/// A PostgreSQL table of final windows.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresSinkSpec {
    /// Name of a Secret in this namespace with the connection: key `url` (`postgres://user:password@host:port/db`),
    /// or keys `host`, `port` (default 5432), `database`, `user` and `password`; optional `ca.crt`, the CA that
    /// signed the server's certificate. Mounted into the consumer pods (read at every connection, so a rotated
    /// password is taken up); the operator never reads it.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("sink.postgres.secretName must be a Secret name (lowercase letters, digits, '-' and '.')"))]
    pub secret_name: String,

    /// TLS to the server, as libpq's `sslmode`: `disable`, `prefer`, `require`, `verify-ca` or `verify-full` (the
    /// certificate signed by `ca.crt`, else a public CA, and naming the host).
    #[serde(default)]
    pub ssl_mode: SslMode,

    /// Schema of the table; created when missing (the user needs CREATE on the database then).
    #[serde(default = "default_postgres_schema")]
    #[schemars(length(min = 1, max = 48), regex(pattern = "^[a-z_][a-z0-9_]{0,47}$"))]
    pub schema: String,

    /// The table; created and migrated by the consumers on start (the user needs CREATE on the schema). Streams may
    /// share a table: rows are keyed by namespace, stream and window.
    #[serde(default = "default_postgres_table")]
    #[schemars(length(min = 1, max = 48), regex(pattern = "^[a-z_][a-z0-9_]{0,47}$"))]
    pub table: String,

    /// The server's port, for `spec.networkPolicy` (which then lets the consumers reach it); the connection itself
    /// uses the Secret's.
    #[serde(default = "default_postgres_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub network_policy_port: i32,

    /// Seconds the writes may keep failing (a wrong password, a missing database, no privileges, the server down)
    /// before a consumer exits with the reason, which `ConsumerReady` then shows; shorter outages are waited out.
    /// Nothing is lost either way: uncommitted windows are written by the next attempt.
    #[serde(default = "default_postgres_grace")]
    #[schemars(range(min = 5, max = 86400))]
    pub grace_seconds: i32,
}

fn default_postgres_grace() -> i32 {
    twitterstream_contract::postgres::PostgresSink::default().postgres_grace_seconds as i32
}

fn default_postgres_port() -> i32 {
    5432
}
fn default_postgres_schema() -> String {
    twitterstream_contract::postgres::PostgresSink::default().postgres_schema
}
fn default_postgres_table() -> String {
    twitterstream_contract::postgres::PostgresSink::default().postgres_table
}

/// Where a pipeline's pods may connect, beyond the ports it needs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Where the brokers are (e.g. a `namespaceSelector` of Kafka's namespace, or `ipBlock`s). Empty: any address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kafka: Vec<NetworkPolicyPeer>,
    /// Where the X API is reached (e.g. `ipBlock`s of an egress proxy). Empty: any address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub x_api: Vec<NetworkPolicyPeer>,
    /// Who may reach the health and metrics port (8080), e.g. Prometheus' namespace. Empty: anyone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics_from: Vec<NetworkPolicyPeer>,
}

fn default_poll_interval() -> i32 {
    10
}

/// Where the producer gets tweets from (the workers' `--source`).
pub use twitterstream_contract::Source;

/// Options of the replay source.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.speed == 0.0 || self.speed >= 0.001").message("replay.speed must be 0 (as fast as possible) or at least 0.001"))]
pub struct ReplaySpec {
    /// Name of a ConfigMap in this namespace whose key holds the JSONL file (X API v2 tweets or v1.1 statuses).
    #[schemars(length(min = 1, max = 253))]
    pub config_map: String,
    /// The key of the ConfigMap that holds the file.
    #[serde(default = "default_replay_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
    /// Replay speed relative to the tweets' own spacing in time; 0 replays as fast as possible.
    #[serde(default)]
    #[schemars(range(min = 0.0))]
    pub speed: f64,
}

fn default_replay_key() -> String {
    "tweets.jsonl".into()
}

/// Options of the synthetic source.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.rate == 0.0 || self.rate >= 0.001").message("synthetic.rate must be 0 (as fast as possible) or at least 0.001 tweets per second"))]
pub struct SyntheticSpec {
    /// Tweets per second; 0 generates as fast as possible.
    #[serde(default = "default_synthetic_rate")]
    #[schemars(range(min = 0.0))]
    pub rate: f64,
    /// Stop after this many tweets (unset: never stop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub count: Option<i64>,
    /// Seed of the generator: the same seed gives the same tweets.
    #[serde(default = "default_seed")]
    pub seed: i64,
}

fn default_synthetic_rate() -> f64 {
    100.0
}
fn default_seed() -> i64 {
    1
}

/// The Kafka cluster and topics of a pipeline.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.outputTopic) || self.outputTopic != self.topic").message("kafka.outputTopic must differ from kafka.topic"))]
pub struct KafkaSpec {
    /// Bootstrap brokers as `host:port`.
    #[schemars(length(min = 1, max = 64), inner(length(min = 3, max = 261)))]
    #[x_kube(validation = Rule::new("self.all(b, b.matches('^([A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?|\\\\[[0-9A-Fa-f:.]+\\\\]):[0-9]{1,5}$'))").message("each kafka.brokers entry must be host:port, e.g. kafka-0.kafka:9092"))]
    pub brokers: Vec<String>,

    /// Topic the producer publishes tweets to; created by the operator if missing.
    #[schemars(length(min = 1, max = 249))]
    #[x_kube(
        validation = Rule::new("self.matches('^[a-zA-Z0-9._-]+$')").message("kafka.topic may contain only ASCII letters, digits, '.', '_' and '-'"),
        validation = Rule::new("self != '.' && self != '..'").message("kafka.topic cannot be '.' or '..'")
    )]
    pub topic: String,

    /// Partitions of the topic. Partitions are added when this grows; Kafka cannot remove them.
    #[serde(default = "default_partitions")]
    #[schemars(range(min = 1, max = 10000))]
    pub partitions: i32,

    /// Replication factor of the topics the operator creates.
    #[serde(default = "default_replication")]
    #[schemars(range(min = 1, max = 32))]
    pub replication_factor: i32,

    /// Topic the window results are written to, exactly once. Unset: the consumers print results to their logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 249))]
    #[x_kube(
        validation = Rule::new("self.matches('^[a-zA-Z0-9._-]+$')").message("kafka.outputTopic may contain only ASCII letters, digits, '.', '_' and '-'"),
        validation = Rule::new("self != '.' && self != '..'").message("kafka.outputTopic cannot be '.' or '..'")
    )]
    pub output_topic: Option<String>,

    /// Delete the topics when the TwitterStream is deleted (a finalizer holds the deletion until done).
    #[serde(default)]
    pub delete_topic_on_delete: bool,

    /// TLS to the brokers (all the pipeline's clients). Unset: plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<KafkaTls>,

    /// SASL authentication (all the pipeline's clients); over TLS when `tls` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<KafkaSasl>,
}

/// A key of a Secret or of a ConfigMap in the stream's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secret) != has(self.configMap)").message("name exactly one of secret and configMap"))]
pub struct KeyRef {
    /// Secret name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret: Option<String>,
    /// ConfigMap name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub config_map: Option<String>,
    /// The key holding the value.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// TLS settings of the Kafka clients.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaTls {
    /// The PEM CA bundle that signs the brokers' certificates (e.g. Strimzi's `<cluster>-cluster-ca-cert`, key
    /// `ca.crt`). Unset: the image's trust store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<KeyRef>,
    /// A client certificate for mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<ClientCertificate>,
    /// Do not check that a broker's certificate names the host connected to (the CA is still checked).
    #[serde(default)]
    pub skip_hostname_verification: bool,
}

/// A Secret holding a PEM client certificate and its key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientCertificate {
    /// Secret name (e.g. a `kubernetes.io/tls` Secret, or Strimzi's KafkaUser Secret with `user.crt`/`user.key`).
    #[schemars(length(min = 1, max = 253))]
    pub secret: String,
    /// Key of the certificate (chain).
    #[serde(default = "default_cert_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub cert_key: String,
    /// Key of the private key.
    #[serde(default = "default_key_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key_key: String,
}

fn default_cert_key() -> String {
    "tls.crt".into()
}
fn default_key_key() -> String {
    "tls.key".into()
}

/// SASL settings of the Kafka clients.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.username) != has(self.usernameKey)").message("sasl needs exactly one of username and usernameKey"),
    validation = Rule::new("(self.mechanism == 'OAUTHBEARER') == has(self.oauth)").message("sasl.oauth is needed with mechanism OAUTHBEARER, and only with it")
)]
pub struct KafkaSasl {
    /// The mechanism.
    pub mechanism: SaslMechanism,
    /// The Secret with the password (and the username, with `usernameKey`). With OAUTHBEARER: the OAuth client
    /// secret (and client id).
    #[schemars(length(min = 1, max = 253))]
    pub secret: String,
    /// The username, when the Secret does not hold it (Strimzi's KafkaUser Secrets hold only the password). With
    /// OAUTHBEARER: the OAuth client id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub username: Option<String>,
    /// The Secret's key holding the username (OAUTHBEARER: the client id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub username_key: Option<String>,
    /// The Secret's key holding the password (OAUTHBEARER: the client secret).
    #[serde(default = "default_password_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub password_key: String,
    /// OAUTHBEARER: where the clients get their tokens (OIDC client credentials grant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth: Option<KafkaOauth>,
}

/// The OIDC identity provider of OAUTHBEARER.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaOauth {
    /// The token endpoint (e.g. `https://idp.example.com/realms/kafka/protocol/openid-connect/token`).
    #[schemars(length(min = 8, max = 2048), regex(pattern = r"^https?://[^\s]+$"))]
    pub token_endpoint: String,
    /// The scope to ask for (space-separated); unset: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub scope: Option<String>,
    /// The PEM CA bundle that signs the token endpoint's certificate. Unset: the image's trust store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<KeyRef>,
}

fn default_password_key() -> String {
    "password".into()
}

fn default_partitions() -> i32 {
    3
}
fn default_replication() -> i32 {
    1
}

/// How tweets are grouped in time. Windows are aligned to the Unix epoch.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.slideSeconds) || self.slideSeconds <= self.seconds").message("window.slideSeconds must not exceed window.seconds"),
    validation = Rule::new("!has(self.slideSeconds) || self.seconds % self.slideSeconds == 0").message("window.slideSeconds must divide window.seconds"),
    validation = Rule::new("!has(self.slideSeconds) || self.seconds / self.slideSeconds <= 60").message("window.seconds / window.slideSeconds must be at most 60: each tweet is counted in that many windows (a day sliding every second would update 86,400 windows per tweet)")
)]
pub struct WindowSpec {
    /// Window length in seconds.
    #[serde(default = "default_window")]
    #[schemars(range(min = 1, max = 86400))]
    pub seconds: i64,
    /// Slide of hopping windows in seconds; unset means tumbling windows (slide = length).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub slide_seconds: Option<i64>,
    /// How long after a window ends late tweets are still counted in it (event time).
    #[serde(default)]
    #[schemars(range(min = 0, max = 86400))]
    pub allowed_lateness_seconds: i64,
}

fn default_window() -> i64 {
    10
}

impl Default for WindowSpec {
    fn default() -> Self {
        Self {
            seconds: default_window(),
            slide_seconds: None,
            allowed_lateness_seconds: 0,
        }
    }
}

/// The producer pods.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProducerSpec {
    /// Number of producer pods: 1, or 0 to stop producing (a stream has one transactional producer).
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    #[serde(flatten)]
    pub container: ContainerSpec,
}

impl Default for ProducerSpec {
    fn default() -> Self {
        Self {
            replicas: 1,
            container: ContainerSpec::default(),
        }
    }
}

/// The consumer pods.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerSpec {
    /// Number of consumer pods; each reads a share of the topic's partitions.
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 10000))]
    pub replicas: i32,
    /// How many hashtags and mentions each window result lists.
    #[serde(default = "default_top_n")]
    #[schemars(range(min = 1, max = 1000))]
    pub top_n: i32,
    /// Set: the operator sets `replicas` itself, from the consumer lag and the rates in `status.throughput`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    #[serde(flatten)]
    pub container: ContainerSpec,
}

impl Default for ConsumerSpec {
    fn default() -> Self {
        Self {
            replicas: 1,
            top_n: default_top_n(),
            autoscaling: None,
            container: ContainerSpec::default(),
        }
    }
}

/// Lag-based autoscaling of the consumers. At each throughput sample the operator wants enough replicas for the
/// incoming rate plus the lag spread over `catchUpSeconds`, each planned at `targetUtilizationPercent` of the rate
/// one replica was measured to process, and sets `consumer.replicas` through the scale subresource. Scale-ups are
/// at once (then `scaleUpCooldownSeconds` before the next); scale-downs only when every recommendation of the last
/// `scaleDownStabilizationSeconds` agrees. Each change is a `Scaled` Event with its figures.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("autoscaling.minReplicas must not exceed autoscaling.maxReplicas"))]
pub struct AutoscalingSpec {
    /// The fewest consumer pods.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 10000))]
    pub min_replicas: i32,
    /// The most consumer pods; at most `kafka.partitions` (a partition is read by one consumer).
    #[schemars(range(min = 1, max = 10000))]
    pub max_replicas: i32,
    /// Seconds in which a backlog should be worked off, on top of the incoming rate.
    #[serde(default = "default_catch_up_seconds")]
    #[schemars(range(min = 1, max = 86400))]
    pub catch_up_seconds: i32,
    /// Percent of a replica's measured processing rate to plan for: headroom for bursts.
    #[serde(default = "default_target_utilization")]
    #[schemars(range(min = 10, max = 100))]
    pub target_utilization_percent: i32,
    /// Seconds of recommendations that must all agree before replicas are removed.
    #[serde(default = "default_scale_down_stabilization")]
    #[schemars(range(min = 0, max = 86400))]
    pub scale_down_stabilization_seconds: i32,
    /// Seconds after a change before the next scale-up: the new pods take their partitions and show in a sample.
    #[serde(default = "default_scale_up_cooldown")]
    #[schemars(range(min = 0, max = 86400))]
    pub scale_up_cooldown_seconds: i32,
}

fn default_catch_up_seconds() -> i32 {
    60
}
fn default_target_utilization() -> i32 {
    80
}
fn default_scale_down_stabilization() -> i32 {
    300
}
fn default_scale_up_cooldown() -> i32 {
    30
}

fn one() -> i32 {
    1
}
fn default_top_n() -> i32 {
    10
}

/// Container settings of one component.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSpec {
    /// Container image; defaults to the operator's worker image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub image: Option<String>,
    /// Compute resources; defaults to small requests and a memory limit.
    /// Every value must be a Kubernetes quantity (checked at admission: an
    /// invalid one was accepted, and only the Deployment was refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("[has(self.limits) ? self.limits : {}, has(self.requests) ? self.requests : {}].all(m, m.all(k, type(m[k]) == int || (type(m[k]) == string && isQuantity(m[k]))))").message("every resources request and limit must be a Kubernetes quantity, such as 250m, 1.5, 512Mi or 2Gi"))]
    pub resources: Option<ResourceRequirements>,
    /// Extra environment variables, e.g. `RUST_LOG`. The workers' own
    /// variables (`TWS_*`, the X API credentials) are rejected: they come from
    /// this resource's fields, the operator's settings and the credentials
    /// Secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = Rule::new("self.all(k, !k.startsWith('TWS_') && !(k in ['X_CONSUMER_KEY', 'X_CONSUMER_SECRET', 'X_ACCESS_TOKEN', 'X_ACCESS_TOKEN_SECRET', 'X_BEARER_TOKEN']))").message("env must not set the workers' own variables (TWS_* and the X API credential variables): they come from the TwitterStream's fields, the operator's settings (such as the X API address) and the credentials Secret"))]
    pub env: BTreeMap<String, String>,
}

/// Settings applied to the pods of both components.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateSpec {
    /// Extra pod labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra pod annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Node selector of the pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Affinity of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Secrets for pulling the images.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Priority class of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// ServiceAccount the pods run as (default: the namespace's `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
}

/// Observed state of a TwitterStream.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TwitterStreamStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, TopicReady, ProducerReady and ConsumerReady.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The producer Deployment's replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer: Option<ComponentStatus>,
    /// The consumer Deployment's replicas (the scale subresource reads these).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<ComponentStatus>,
    /// The Kafka topic as last seen by the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<TopicStatus>,
    /// Whether the consumers keep up, from the consumer group's committed
    /// offsets and the topic's end offsets, sampled every 15 s (less often
    /// with over 150 streams: 10 samples per second in all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<ThroughputStatus>,
}

/// A stream's lag, rates and last complete window, as last sampled.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ThroughputStatus {
    /// Records of the input topic the consumers have not read, summed over its partitions (read_committed: up to the
    /// last stable offset), from the position each partition's last commit records.
    pub lag: i64,
    /// The largest lag of one partition.
    pub max_partition_lag: i64,
    /// Records per second appended to the topic between the last two samples (tweets, and one transaction marker per
    /// partition a producer transaction wrote to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_per_second: Option<f64>,
    /// Records per second the consumers read between the last two samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumed_per_second: Option<f64>,
    /// End of the last window every partition has closed (its results published).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_window_end: Option<Time>,
    /// Seconds from that window's end to the sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_window_delay_seconds: Option<i64>,
    /// When the sample was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampled_at: Option<Time>,
}

/// Replica counts of one component's Deployment.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// Pods of the current Deployment (all revisions).
    pub replicas: i32,
    /// Pods that are Ready.
    pub ready_replicas: i32,
    /// Pods running the latest spec.
    pub updated_replicas: i32,
    /// Label selector of the pods, for the scale subresource and `kubectl get pods -l`.
    pub selector: String,
}

/// The Kafka topic as last seen by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicStatus {
    /// Topic name.
    pub name: String,
    /// Partitions the topic has.
    pub partitions: i32,
    /// Replication factor of partition 0.
    pub replication_factor: i32,
}

/// The longest name a TwitterStream may have: its name is the value of
/// its children's `app.kubernetes.io/instance` label, and a label value
/// holds 63 characters (a 64-character name was accepted and every child
/// refused).
pub const MAX_NAME_LENGTH: usize = 63;

/// The CustomResourceDefinition, with the rules on `metadata.name` that
/// only the root schema can state.
pub fn definition()
-> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::ValidationRule;
    use kube::CustomResourceExt;
    let mut crd = TwitterStream::crd();
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            schema.x_kubernetes_validations = Some(vec![ValidationRule {
                rule: format!("size(self.metadata.name) <= {MAX_NAME_LENGTH}"),
                message: Some(format!(
                    "metadata.name must be at most {MAX_NAME_LENGTH} characters: it is the value of the children's app.kubernetes.io/instance label"
                )),
                ..ValidationRule::default()
            }]);
        }
    }
    crd
}

#[cfg(test)]
mod tests {
    use super::*;
    use twitterstream_contract::reserved_env;

    /// The env rule is a CEL literal; this keeps it in step with the
    /// contract's list of the workers' own variables.
    #[test]
    fn the_env_rule_rejects_every_reserved_variable() {
        let crd = serde_json::to_value(definition()).expect("CRD as JSON");
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        for component in ["producer", "consumer"] {
            let env = &spec[component]["properties"]["env"];
            let rule = env["x-kubernetes-validations"][0]["rule"]
                .as_str()
                .unwrap_or_else(|| panic!("{component}.env has a rule: {env}"));
            assert!(
                rule.contains(&format!("startsWith('{}')", reserved_env::PREFIX)),
                "{rule}"
            );
            for name in reserved_env::X_CREDENTIALS {
                assert!(rule.contains(&format!("'{name}'")), "{name} in {rule}");
            }
        }
    }
}
