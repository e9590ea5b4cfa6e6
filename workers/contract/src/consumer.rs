//! The consumer's command line and environment. The operator fills in a
//! [`ConsumerArgs`] from the spec (`new` gives the flags' defaults) and
//! renders it with [`crate::to_args`]; the consumer parses it back with clap.

use crate::LogFormat;
use crate::kafka::{KafkaSecurity, KafkaSecurityError};
use crate::postgres::PostgresSink;
use clap::{Parser, ValueEnum};
use std::net::SocketAddr;

/// Which clock assigns a tweet to a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimeMode {
    /// The tweet's `created_at` (with a watermark for late data).
    Event,
    /// The time the consumer reads the record.
    Processing,
}

/// Where a new consumer group starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StartFrom {
    Earliest,
    Latest,
}

/// Aggregates the tweet topic into windows (count, unique authors, top hashtags
/// and mentions, languages, likes, sentiment, late tweets).
///
/// With --output-topic, window results and consumed offsets commit in one Kafka
/// transaction (exactly-once; read the output with isolation.level=read_committed).
/// Without it, results are printed and offsets commit only after the window is
/// printed (at-least-once).
#[derive(Debug, Clone, PartialEq, Parser, serde::Serialize)]
#[command(name = "twitterstream-consumer", version)]
pub struct ConsumerArgs {
    /// Kafka bootstrap brokers, comma-separated host:port.
    #[arg(long, env = "TWS_BROKERS", value_delimiter = ',', required = true)]
    pub brokers: Vec<String>,
    /// How the Kafka clients authenticate and encrypt.
    #[command(flatten)]
    #[serde(flatten)]
    pub kafka_security: KafkaSecurity,
    /// Kafka topic of tweets to read.
    #[command(flatten)]
    #[serde(flatten)]
    pub postgres: PostgresSink,
    #[arg(long, env = "TWS_TOPIC")]
    pub topic: String,
    /// Name of the stream (the TwitterStream resource).
    #[arg(long, env = "TWS_STREAM_NAME")]
    pub stream_name: String,
    /// The TwitterStream's namespace: with the name, it keys the stream's
    /// rows in PostgreSQL, so that streams of one name in two namespaces
    /// sharing a table stay apart.
    #[arg(long, env = "TWS_STREAM_NAMESPACE", default_value = "")]
    pub stream_namespace: String,
    /// Consumer group id (default: the stream name).
    #[arg(long, env = "TWS_GROUP_ID")]
    pub group_id: Option<String>,
    /// Window length in seconds; windows are aligned to the Unix epoch.
    #[arg(long, env = "TWS_WINDOW_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub window_seconds: u64,
    /// Slide in seconds (default: the window length, i.e. tumbling windows).
    #[arg(long, env = "TWS_SLIDE_SECONDS", value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub slide_seconds: Option<u64>,
    /// How long after a window's end tweets are still accepted into it.
    #[arg(long, env = "TWS_ALLOWED_LATENESS_SECONDS", default_value_t = 0)]
    pub allowed_lateness_seconds: u64,
    /// Seconds without data after which a partition stops holding the watermark back.
    #[arg(long, env = "TWS_IDLE_PARTITION_SECONDS", default_value_t = 30)]
    pub idle_partition_seconds: u64,
    /// Tweets dated more than this many seconds ahead of the consumer's
    /// clock are skipped (counted in tweets_future_total) and never move a
    /// watermark.
    #[arg(long, env = "TWS_MAX_FUTURE_SKEW_SECONDS", default_value_t = 300)]
    pub max_future_skew_seconds: u64,
    /// Which clock assigns tweets to windows.
    #[arg(long = "time", env = "TWS_TIME", value_enum, default_value_t = TimeMode::Event)]
    pub time_mode: TimeMode,
    /// Topic for window results (exactly-once); none prints them instead.
    #[arg(long, env = "TWS_OUTPUT_TOPIC")]
    pub output_topic: Option<String>,
    /// How many hashtags and mentions each window reports.
    #[arg(long, env = "TWS_TOP_N", default_value_t = 10)]
    pub top_n: usize,
    /// Where a consumer group without committed offsets starts.
    #[arg(long, env = "TWS_START_FROM", value_enum, default_value_t = StartFrom::Earliest)]
    pub start_from: StartFrom,
    /// Print a line per window on stdout (default: on when there is no output topic).
    #[arg(long, env = "TWS_PRINT", num_args = 0..=1, default_missing_value = "true")]
    pub print: Option<bool>,
    /// Threads that parse and score tweets (0: one per CPU the process may
    /// use, which follows the container's CPU limit).
    #[arg(long, env = "TWS_THREADS", default_value_t = 0)]
    pub threads: usize,
    /// Take in at most this many tweets per second (none: as many as the
    /// replica can). For tests that need a known per-replica capacity (the
    /// autoscaling test), or to spare a shared broker; not set by the
    /// operator.
    #[arg(long, env = "TWS_MAX_TWEETS_PER_SECOND", value_parser = positive_rate)]
    pub max_tweets_per_second: Option<f64>,
    /// Address of the health and metrics server (/healthz, /readyz, /metrics).
    #[arg(long, env = "TWS_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// Log format.
    #[arg(long, env = "TWS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Validate the configuration, print it as JSON and exit.
    #[arg(long)]
    #[serde(skip)]
    pub print_config: bool,
}

fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 1.0 => Ok(r),
        _ => Err(format!(
            "{s:?} is not a rate of at least 1 tweet per second"
        )),
    }
}

/// A configuration that parses but cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(transparent)]
    Kafka(#[from] KafkaSecurityError),
    #[error("--slide-seconds ({slide}) must not exceed --window-seconds ({window})")]
    SlideLongerThanWindow { slide: u64, window: u64 },
    #[error("--slide-seconds ({slide}) must divide --window-seconds ({window})")]
    SlideDoesNotDivide { slide: u64, window: u64 },
    #[error("--output-topic must differ from --topic")]
    OutputIsInput,
    #[error("--brokers must list at least one host:port")]
    NoBrokers,
}

impl ConsumerArgs {
    /// The arguments the flags' defaults give, for the operator to fill in
    /// (`contract::to_args` renders only what differs; its test keeps these
    /// equal to the defaults above).
    pub fn new(stream_name: &str, brokers: Vec<String>, topic: &str) -> Self {
        ConsumerArgs {
            brokers,
            kafka_security: KafkaSecurity::default(),
            postgres: PostgresSink::default(),
            topic: topic.to_owned(),
            stream_name: stream_name.to_owned(),
            stream_namespace: String::new(),
            group_id: None,
            window_seconds: 10,
            slide_seconds: None,
            allowed_lateness_seconds: 0,
            idle_partition_seconds: 30,
            max_future_skew_seconds: 300,
            time_mode: TimeMode::Event,
            output_topic: None,
            top_n: 10,
            start_from: StartFrom::Earliest,
            print: None,
            threads: 0,
            max_tweets_per_second: None,
            http_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            log_format: LogFormat::Text,
            print_config: false,
        }
    }

    pub fn slide(&self) -> u64 {
        self.slide_seconds.unwrap_or(self.window_seconds)
    }

    pub fn group(&self) -> &str {
        self.group_id.as_deref().unwrap_or(&self.stream_name)
    }

    /// Printing defaults to on when there is nowhere else for results to go.
    pub fn prints(&self) -> bool {
        self.print
            .unwrap_or(self.output_topic.is_none() && self.postgres.postgres_dir.is_none())
    }

    /// Checks the combinations clap cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.kafka_security.validate()?;
        if self.brokers.iter().all(|b| b.trim().is_empty()) {
            return Err(ConfigError::NoBrokers);
        }
        let (slide, window) = (self.slide(), self.window_seconds);
        if slide > window {
            return Err(ConfigError::SlideLongerThanWindow { slide, window });
        }
        if window % slide != 0 {
            return Err(ConfigError::SlideDoesNotDivide { slide, window });
        }
        if self.output_topic.as_deref() == Some(self.topic.as_str()) {
            return Err(ConfigError::OutputIsInput);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> ConsumerArgs {
        let mut all = vec![
            "twitterstream-consumer",
            "--brokers",
            "k:9092",
            "--topic",
            "t",
            "--stream-name",
            "s",
        ];
        all.extend_from_slice(args);
        ConsumerArgs::try_parse_from(all).expect("parses")
    }

    #[test]
    fn defaults_are_tumbling_event_time_printing() {
        let a = parse(&[]);
        assert_eq!(a.slide(), 10);
        assert_eq!(a.time_mode, TimeMode::Event);
        assert_eq!(a.group(), "s");
        assert!(a.prints());
        assert_eq!(a.threads, 0, "one thread per available CPU");
        assert_eq!(a.validate(), Ok(()));
        assert_eq!(parse(&["--threads", "3"]).threads, 3);
    }

    #[test]
    fn output_topic_turns_printing_off_unless_asked() {
        assert!(!parse(&["--output-topic", "out"]).prints());
        assert!(parse(&["--output-topic", "out", "--print"]).prints());
        assert!(!parse(&["--print=false"]).prints());
    }

    #[test]
    fn slide_must_divide_window() {
        let a = parse(&["--window-seconds", "10", "--slide-seconds", "3"]);
        assert_eq!(
            a.validate(),
            Err(ConfigError::SlideDoesNotDivide {
                slide: 3,
                window: 10
            })
        );
        let a = parse(&["--window-seconds", "10", "--slide-seconds", "20"]);
        assert_eq!(
            a.validate(),
            Err(ConfigError::SlideLongerThanWindow {
                slide: 20,
                window: 10
            })
        );
    }

    #[test]
    fn output_must_not_be_input() {
        assert_eq!(
            parse(&["--output-topic", "t"]).validate(),
            Err(ConfigError::OutputIsInput)
        );
    }
}
