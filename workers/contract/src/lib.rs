//! The contract between the operator and the workers, typed once: the
//! workers' argument types ([`ProducerArgs`], [`ConsumerArgs`], parsed by the
//! workers with clap and built by the operator as values), the enums both
//! sides name ([`Source`], [`LogFormat`]), the record header names, what the
//! consumer's offset commits say ([`commit`]), and
//! [`to_args`], which renders an argument value into the command line that
//! parses back into it. The flag names exist only in the clap definitions.

use serde::Serialize;

pub mod commit;
pub mod consumer;
pub mod kafka;
pub mod postgres;
pub mod producer;
pub mod refusal;

pub use consumer::ConsumerArgs;
pub use producer::ProducerArgs;

/// Where the producer gets tweets from: the CRD's `spec.source` and the
/// producer's `--source`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// Poll the X API v2 search endpoint (`/2/tweets/search/recent` or `/all`).
    #[default]
    XSearch,
    /// Follow the X API v2 filtered stream (bearer token only).
    XStream,
    /// Replay a JSONL file of v2 tweets or v1.1 statuses.
    Replay,
    /// Generate deterministic synthetic tweets (no credentials needed).
    Synthetic,
}

impl Source {
    /// The name in flags, the CRD, record headers and checkpoints.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::XSearch => "x-search",
            Source::XStream => "x-stream",
            Source::Replay => "replay",
            Source::Synthetic => "synthetic",
        }
    }

    /// Sources that call the X API and so need credentials and a single
    /// producer.
    pub fn uses_x_api(self) -> bool {
        matches!(self, Source::XSearch | Source::XStream)
    }
}

/// How log lines are written to stderr, by the workers and the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl LogFormat {
    /// Installs the process's tracing subscriber, writing to stderr in this
    /// format: the one logging setup of the operator and both workers.
    /// `RUST_LOG` overrides `default_filter` (e.g. `info`).
    pub fn install(self, default_filter: &str) {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        match self {
            LogFormat::Json => builder.json().init(),
            LogFormat::Text => builder.init(),
        }
    }
}

/// Environment variables the workers read as part of this contract: every
/// flag's `TWS_*` variable, and the X API credentials when no credentials
/// directory is mounted. A TwitterStream's `env` may not set them (the CRD
/// rejects them at admission): otherwise whoever may edit the resource could
/// change what the operator decided, e.g. send the stream's bearer token to a
/// host of their choosing with `TWS_X_API_BASE_URL`.
pub mod reserved_env {
    /// Prefix of every flag's variable.
    pub const PREFIX: &str = "TWS_";
    /// The X API credentials, as variables.
    pub const X_CREDENTIALS: [&str; 5] = [
        "X_CONSUMER_KEY",
        "X_CONSUMER_SECRET",
        "X_ACCESS_TOKEN",
        "X_ACCESS_TOKEN_SECRET",
        "X_BEARER_TOKEN",
    ];
}

/// Headers the producer stamps on every tweet record.
pub mod header {
    /// The TwitterStream's name: consumers skip records of other streams
    /// sharing the topic.
    pub const STREAM: &str = "stream";
    pub const KEYWORD: &str = "keyword";
    pub const SOURCE: &str = "source";
    /// When the producer read the tweet (RFC 3339).
    pub const INGESTED_AT: &str = "ingested_at";
    /// Position in a replayable source (synthetic index, replay line
    /// number): what a restarted producer resumes after. Absent for X API
    /// sources, which resume from the newest tweet id instead.
    pub const SEQ: &str = "seq";
}

/// The command line that parses back into `args`: `--flag=value` for each
/// value that differs from its flag's default, and for the flags named in
/// `spelled` (by field name) whatever their value, in the order the flags
/// are declared. Leaving defaults out lets a `TWS_*` variable in the pod's
/// environment still set them; `spelled` is for values the Deployment's own
/// fields depend on (the listen address its ports and probes name).
/// `--flag=value` keeps a value that starts with `-` (a keyword like
/// `-is:retweet`) from reading as a flag. Unset options and fields that are
/// not serialised (`--print-config`) are left out.
pub fn to_args<T: clap::CommandFactory + Serialize>(args: &T, spelled: &[&str]) -> Vec<String> {
    let values = match serde_json::to_value(args) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => return Vec::new(),
    };
    let command = T::command();
    let mut out = Vec::new();
    for arg in command.get_arguments() {
        let (Some(long), Some(value)) = (arg.get_long(), values.get(arg.get_id().as_str())) else {
            continue;
        };
        if !arg.get_action().takes_values() {
            // A switch: present when true.
            if value.as_bool() == Some(true) {
                out.push(format!("--{long}"));
            }
            continue;
        }
        let Some(rendered) = render(value, arg.get_value_delimiter()) else {
            continue;
        };
        let default: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|d| d.to_string_lossy().into_owned())
            .collect();
        if is_default(&rendered, &default) && !spelled.contains(&arg.get_id().as_str()) {
            continue;
        }
        out.push(format!("--{long}={rendered}"));
    }
    out
}

/// Parses a command line from [`to_args`] as the worker does, except that
/// the environment's `TWS_*` variables are not read: what the rendering
/// left out takes the flags' defaults. For tests of rendered arguments.
pub fn parse_rendered<T: clap::Parser>(args: &[String]) -> Result<T, clap::Error> {
    let mut command = T::command();
    let ids: Vec<String> = command
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .collect();
    for id in ids {
        command = command.mut_arg(id, |a| a.env(None::<&str>));
    }
    let bin = command.get_name().to_owned();
    let matches = command.try_get_matches_from(std::iter::once(bin).chain(args.iter().cloned()))?;
    T::from_arg_matches(&matches)
}

/// A serialised value as clap reads it; `None` for an unset option.
fn render(value: &serde_json::Value, delimiter: Option<char>) -> Option<String> {
    use serde_json::Value;
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().filter_map(|v| render(v, None)).collect();
            Some(parts.join(&delimiter.unwrap_or(',').to_string()))
        }
        other => Some(other.to_string()),
    }
}

/// Whether `rendered` is what the flag means without it: the same text, or
/// the same number (`100.0` and the default `100`).
fn is_default(rendered: &str, default: &[String]) -> bool {
    let [default] = default else {
        return false;
    };
    if rendered == default {
        return true;
    }
    match (rendered.parse::<f64>(), default.parse::<f64>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_worker_flag_reads_a_reserved_variable() {
        use clap::CommandFactory;
        for cmd in [ProducerArgs::command(), ConsumerArgs::command()] {
            for arg in cmd.get_arguments() {
                if let Some(env) = arg.get_env() {
                    let env = env.to_string_lossy();
                    assert!(
                        env.starts_with(reserved_env::PREFIX),
                        "{}: --{:?} reads {env}, which a TwitterStream's env could set",
                        cmd.get_name(),
                        arg.get_long()
                    );
                }
            }
        }
    }

    #[test]
    fn source_names_agree_with_clap_and_serde() {
        use clap::ValueEnum;
        for s in Source::value_variants() {
            let clap = s.to_possible_value().map(|v| v.get_name().to_owned());
            let serde = serde_json::to_value(s).ok();
            assert_eq!(clap.as_deref(), Some(s.as_str()));
            assert_eq!(serde, Some(serde_json::Value::from(s.as_str())));
        }
    }

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    /// `new` gives exactly what the parser gives for the required flags
    /// alone: the defaults agree.
    #[test]
    fn new_holds_the_parsers_defaults() {
        let p: ProducerArgs = parse_rendered(&strings(&[
            "--source=synthetic",
            "--brokers=k:9092",
            "--topic=t",
            "--stream-name=demo",
        ]))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            p,
            ProducerArgs::new(Source::Synthetic, "demo", vec!["k:9092".into()], "t")
        );
        let c: ConsumerArgs = parse_rendered(&strings(&[
            "--brokers=k:9092",
            "--topic=t",
            "--stream-name=demo",
        ]))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c, ConsumerArgs::new("demo", vec!["k:9092".into()], "t"));
    }

    #[test]
    fn rendered_arguments_parse_back_into_the_same_values() {
        let mut p = ProducerArgs::new(Source::Synthetic, "demo", vec!["k:9092".into()], "t");
        assert_eq!(
            to_args(&p, &["http_addr"]),
            [
                "--source=synthetic",
                "--brokers=k:9092",
                "--topic=t",
                "--stream-name=demo",
                "--http-addr=0.0.0.0:8080"
            ],
            "defaults are left out unless spelled; unset options always"
        );
        p.keyword = Some("-is:retweet lang:en".into());
        p.include_retweets = true;
        p.synthetic_rate = 2.5;
        p.brokers.push("k2:9092".into());
        p.log_format = LogFormat::Json;
        let back: ProducerArgs =
            parse_rendered(&to_args(&p, &[])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, p);

        let mut c = ConsumerArgs::new("demo", vec!["k:9092".into()], "t");
        c.slide_seconds = Some(5);
        c.time_mode = consumer::TimeMode::Processing;
        c.print = Some(false);
        c.output_topic = Some("out".into());
        let back: ConsumerArgs =
            parse_rendered(&to_args(&c, &[])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, c);
    }
}
