//! The producer's command line and environment. The operator fills in a
//! [`ProducerArgs`] from the spec (`new` gives the flags' defaults) and
//! renders it with [`crate::to_args`]; the producer parses it back with clap.

use crate::kafka::{KafkaSecurity, KafkaSecurityError};
use crate::{LogFormat, Source};
use chrono::{DateTime, Utc};
use clap::{Parser, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Which search endpoint to poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SearchEndpoint {
    /// `recent`, unless the start time is older than 7 days and the credentials are app-only.
    Auto,
    /// `/2/tweets/search/recent` (last 7 days).
    Recent,
    /// `/2/tweets/search/all` (full archive; app-only bearer token).
    All,
}

/// Publishes tweets from X API v2 (or a replay file, or a synthetic generator)
/// to Kafka, one record per tweet, keyed by tweet id.
///
/// Credentials are never taken from the command line: set X_CONSUMER_KEY,
/// X_CONSUMER_SECRET, X_ACCESS_TOKEN, X_ACCESS_TOKEN_SECRET and/or X_BEARER_TOKEN,
/// or point --credentials-dir at a directory of files named consumerKey,
/// consumerSecret, accessToken, accessTokenSecret, bearerToken (a mounted
/// Secret); the directory is re-read when its files change.
#[derive(Debug, Clone, PartialEq, Parser, serde::Serialize)]
#[command(name = "twitterstream-producer", version)]
pub struct ProducerArgs {
    /// Where tweets come from.
    #[arg(long, env = "TWS_SOURCE", value_enum, default_value_t = Source::XSearch)]
    pub source: Source,
    /// X search query (operators allowed); required for x-search and x-stream.
    #[arg(long, env = "TWS_KEYWORD")]
    pub keyword: Option<String>,
    /// Only tweets in this language (adds `lang:xx` to the query).
    #[arg(long, env = "TWS_LANGUAGE")]
    pub language: Option<String>,
    /// Oldest tweet creation time to fetch (RFC 3339).
    #[arg(long, env = "TWS_START_TIME")]
    pub start_time: Option<DateTime<Utc>>,
    /// Newest tweet creation time to fetch (RFC 3339).
    #[arg(long, env = "TWS_END_TIME")]
    pub end_time: Option<DateTime<Utc>>,
    /// Where a search without --start-time begins while it has no cursor:
    /// this many seconds back (0: from now). Bounded because recent search
    /// holds 7 days, and X counts every post it returns against the
    /// project's monthly post cap.
    #[arg(long, env = "TWS_LOOKBACK_SECONDS", default_value_t = DEFAULT_LOOKBACK_SECONDS, value_parser = clap::value_parser!(u64).range(0..=MAX_LOOKBACK_SECONDS))]
    pub lookback_seconds: u64,
    /// Drop tweets with fewer likes (`public_metrics.like_count`) than this.
    #[arg(long, env = "TWS_MIN_FAVES")]
    pub min_faves: Option<u64>,
    /// Seconds between search polls.
    #[arg(long, env = "TWS_POLL_INTERVAL_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub poll_interval_seconds: u64,
    /// Kafka bootstrap brokers, comma-separated host:port.
    #[arg(long, env = "TWS_BROKERS", value_delimiter = ',', required = true)]
    pub brokers: Vec<String>,
    /// How the Kafka clients authenticate and encrypt.
    #[command(flatten)]
    #[serde(flatten)]
    pub kafka_security: KafkaSecurity,
    /// Kafka topic the tweets are published to.
    #[arg(long, env = "TWS_TOPIC")]
    pub topic: String,
    /// Name of the stream (the TwitterStream resource); stamped on every record.
    #[arg(long, env = "TWS_STREAM_NAME")]
    pub stream_name: String,
    /// Namespace of the TwitterStream resource. Equally named streams in two
    /// namespaces may share a Kafka cluster or an X app: the transactional id
    /// and the filtered stream's rule tag include it, so they never fence or
    /// overwrite each other.
    #[arg(long, env = "TWS_NAMESPACE")]
    pub namespace: Option<String>,
    /// Base URL of the X API.
    #[arg(long, env = "TWS_X_API_BASE_URL", default_value = "https://api.x.com")]
    pub x_api_base_url: String,
    /// Search endpoint for x-search.
    #[arg(long, env = "TWS_SEARCH_ENDPOINT", value_enum, default_value_t = SearchEndpoint::Auto)]
    pub search_endpoint: SearchEndpoint,
    /// Keep retweets (by default the query gets `-is:retweet`).
    #[arg(long, env = "TWS_INCLUDE_RETWEETS")]
    pub include_retweets: bool,
    /// Directory of credential files (a mounted Secret).
    #[arg(long, env = "TWS_CREDENTIALS_DIR")]
    pub credentials_dir: Option<PathBuf>,
    /// JSONL file for the replay source.
    #[arg(long, env = "TWS_REPLAY_FILE")]
    pub replay_file: Option<PathBuf>,
    /// Replay speed factor relative to the tweets' created_at spacing (0 = as fast as possible).
    #[arg(long, env = "TWS_REPLAY_SPEED", default_value_t = 0.0)]
    pub replay_speed: f64,
    /// Synthetic tweets per second (0 = as fast as possible).
    #[arg(long, env = "TWS_SYNTHETIC_RATE", default_value_t = 100.0)]
    pub synthetic_rate: f64,
    /// Stop after publishing this many synthetic tweets.
    #[arg(long, env = "TWS_SYNTHETIC_COUNT")]
    pub synthetic_count: Option<u64>,
    /// Seed of the synthetic generator (same seed, same tweets).
    #[arg(long, env = "TWS_SEED", default_value_t = 1)]
    pub seed: u64,
    /// Exit 0 once a finite source is done (--synthetic-count reached, the
    /// replay file ended, x-search past --end-time). Without it the producer
    /// stays up, healthy and idle, until stopped: a Deployment restarts an
    /// exited pod, which would show as CrashLoopBackOff.
    #[arg(long, env = "TWS_EXIT_WHEN_DONE")]
    #[serde(skip)]
    pub exit_when_done: bool,
    /// Bytes of one search poll held in memory to publish it oldest first.
    /// A larger poll (a long backfill) is committed in parts, newest part
    /// first, each with a checkpoint; consumers may count older parts late.
    #[arg(long, env = "TWS_POLL_BUFFER_BYTES", default_value_t = 64 << 20, value_parser = clap::value_parser!(u64).range(1..=1 << 32))]
    pub poll_buffer_bytes: u64,
    /// Address of the health and metrics server (/healthz, /readyz, /metrics).
    #[arg(long, env = "TWS_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// Log format.
    #[arg(long, env = "TWS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Validate the configuration, print it as JSON (credentials never included) and exit.
    #[arg(long)]
    #[serde(skip)]
    pub print_config: bool,
}

/// How far back a search without a start time or a cursor begins, by
/// default: 10 minutes (the posts of a first poll are paid for).
pub const DEFAULT_LOOKBACK_SECONDS: u64 = 600;
/// The most: recent search's 7 days.
pub const MAX_LOOKBACK_SECONDS: u64 = 7 * 24 * 3600;

/// A configuration that parses but cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(transparent)]
    Kafka(#[from] KafkaSecurityError),
    #[error("--keyword is required for --source {0}")]
    KeywordRequired(&'static str),
    #[error("--replay-file is required for --source replay")]
    ReplayFileRequired,
    #[error("--end-time must be after --start-time")]
    EndBeforeStart,
    #[error("--brokers must list at least one host:port")]
    NoBrokers,
}

impl ProducerArgs {
    /// The arguments the flags' defaults give, for the operator to fill in
    /// (`contract::to_args` renders only what differs; its test keeps these
    /// equal to the defaults above).
    pub fn new(source: Source, stream_name: &str, brokers: Vec<String>, topic: &str) -> Self {
        ProducerArgs {
            source,
            keyword: None,
            language: None,
            start_time: None,
            end_time: None,
            min_faves: None,
            lookback_seconds: DEFAULT_LOOKBACK_SECONDS,
            poll_interval_seconds: 10,
            brokers,
            kafka_security: KafkaSecurity::default(),
            topic: topic.to_owned(),
            stream_name: stream_name.to_owned(),
            namespace: None,
            x_api_base_url: "https://api.x.com".to_owned(),
            search_endpoint: SearchEndpoint::Auto,
            include_retweets: false,
            credentials_dir: None,
            replay_file: None,
            replay_speed: 0.0,
            synthetic_rate: 100.0,
            synthetic_count: None,
            seed: 1,
            exit_when_done: false,
            poll_buffer_bytes: 64 << 20,
            http_addr: std::net::SocketAddr::from(([0, 0, 0, 0], 8080)),
            log_format: LogFormat::Text,
            print_config: false,
        }
    }

    /// The stream qualified by its namespace (`<namespace>.<name>`, or the
    /// bare name without one): what must be unique per Kafka cluster and per
    /// X app. Namespaces hold no dots, so this cannot be ambiguous.
    pub fn qualified_stream(&self) -> String {
        match self.namespace.as_deref().map(str::trim) {
            Some(ns) if !ns.is_empty() => format!("{ns}.{}", self.stream_name),
            _ => self.stream_name.clone(),
        }
    }

    /// Checks the combinations clap cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.kafka_security.validate()?;
        if self.brokers.iter().all(|b| b.trim().is_empty()) {
            return Err(ConfigError::NoBrokers);
        }
        if self.source.uses_x_api() && self.keyword.as_deref().is_none_or(|k| k.trim().is_empty()) {
            return Err(ConfigError::KeywordRequired(self.source.as_str()));
        }
        if self.source == Source::Replay && self.replay_file.is_none() {
            return Err(ConfigError::ReplayFileRequired);
        }
        if let (Some(s), Some(e)) = (self.start_time, self.end_time)
            && e <= s
        {
            return Err(ConfigError::EndBeforeStart);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> ProducerArgs {
        let mut all = vec!["twitterstream-producer"];
        all.extend_from_slice(args);
        ProducerArgs::try_parse_from(all).expect("parses")
    }

    #[test]
    fn search_needs_a_keyword() {
        let a = parse(&["--brokers", "k:9092", "--topic", "t", "--stream-name", "s"]);
        assert_eq!(a.validate(), Err(ConfigError::KeywordRequired("x-search")));
        let a = parse(&[
            "--brokers",
            "k:9092",
            "--topic",
            "t",
            "--stream-name",
            "s",
            "--keyword",
            "superbowl",
        ]);
        assert_eq!(a.validate(), Ok(()));
    }

    #[test]
    fn brokers_are_comma_separated() {
        let a = parse(&[
            "--source",
            "synthetic",
            "--brokers",
            "a:1,b:2",
            "--topic",
            "t",
            "--stream-name",
            "s",
        ]);
        assert_eq!(a.brokers, vec!["a:1", "b:2"]);
    }

    #[test]
    fn end_must_follow_start() {
        let a = parse(&[
            "--source",
            "synthetic",
            "--brokers",
            "a:1",
            "--topic",
            "t",
            "--stream-name",
            "s",
            "--start-time",
            "2020-03-03T00:00:00Z",
            "--end-time",
            "2020-01-01T00:00:00Z",
        ]);
        assert_eq!(a.validate(), Err(ConfigError::EndBeforeStart));
    }

    #[test]
    fn replay_needs_a_file() {
        let a = parse(&[
            "--source",
            "replay",
            "--brokers",
            "a:1",
            "--topic",
            "t",
            "--stream-name",
            "s",
        ]);
        assert_eq!(a.validate(), Err(ConfigError::ReplayFileRequired));
    }
}
