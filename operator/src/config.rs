//! The operator's command line (each flag also from the environment).

use clap::Parser;
use std::net::SocketAddr;

pub use twitterstream_contract::LogFormat;
use twitterstream_contract::kafka::KafkaSecurity;

/// Reconciles TwitterStream resources into producer/consumer Deployments and Kafka topics.
#[derive(Debug, Clone, Parser)]
#[command(name = "twitterstream-operator", version)]
pub struct OperatorArgs {
    /// Image of the workers, used unless a TwitterStream sets its own.
    #[arg(long, env = "TWS_WORKER_IMAGE", default_value = concat!("ghcr.io/twitterstream-io/twitterstream-workers:", env!("CARGO_PKG_VERSION")))]
    pub worker_image: String,
    /// Images TwitterStreams may name for their workers, comma-separated:
    /// repositories (`ghcr.io/org/workers`: any tag or digest of it) or
    /// prefixes ending in `/` (`registry.example/team/`). The worker image's
    /// repository is always allowed; by default nothing else is.
    #[arg(long, env = "TWS_ALLOWED_IMAGES", value_delimiter = ',')]
    pub allowed_images: Vec<String>,
    /// Where producers reach the X API (default: the workers' own,
    /// https://api.x.com): a proxy, or a stand-in in tests. The operator's
    /// setting, not a resource's, because the streams' credentials go there.
    #[arg(long, env = "TWS_X_API_BASE_URL")]
    pub x_api_base_url: Option<String>,
    /// Namespaces to watch, comma-separated; empty watches all namespaces.
    #[arg(long, env = "TWS_WATCH_NAMESPACES", value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "TWS_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// Log format.
    #[arg(long, env = "TWS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Run only while holding a Lease, so several replicas can run safely.
    #[arg(long, env = "TWS_LEADER_ELECT")]
    pub leader_elect: bool,
    /// Name of the Lease used for leader election.
    #[arg(long, env = "TWS_LEASE_NAME", default_value = "twitterstream-operator")]
    pub lease_name: String,
    /// Namespace of the Lease (default: the pod's namespace from POD_NAMESPACE, else `default`).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// This replica's identity in the Lease (default: POD_NAME, else the hostname).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Seconds a Kafka admin request may take before the brokers count as unreachable.
    #[arg(long, env = "TWS_KAFKA_TIMEOUT_SECONDS", default_value_t = 10)]
    pub kafka_timeout_seconds: u64,
    /// How long a deleted TwitterStream with deleteTopicOnDelete waits for
    /// its topics to be deleted while Kafka is unreachable; then it is
    /// deleted anyway and the topics are left (a Warning Event names them).
    #[arg(long, env = "TWS_TOPIC_DELETE_TIMEOUT_SECONDS", default_value_t = 300)]
    pub topic_delete_timeout_seconds: u64,
    /// The shortest time between two throughput samples of a stream
    /// (`status.throughput`, and the autoscaler's decisions). With many
    /// streams they are spread further apart: at most 10 samples a second.
    #[arg(long, env = "TWS_THROUGHPUT_INTERVAL_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub throughput_interval_seconds: u64,
    /// The operator's own Kafka credentials, for topic administration (the
    /// chart mounts them from a Secret in the operator's namespace).
    #[command(flatten)]
    pub kafka_security: KafkaSecurity,
}

impl OperatorArgs {
    pub fn identity(&self) -> String {
        self.identity
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| format!("twitterstream-operator-{}", std::process::id()))
    }
}
