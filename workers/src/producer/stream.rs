//! The `x-stream` source: X API v2 filtered stream
//! (`GET /2/tweets/search/stream`, app-only bearer token), with the stream's
//! rule kept in sync through `/2/tweets/search/stream/rules`.
//!
//! One app has one rule set and one connection, which delivers tweets of
//! every rule; each rule this producer manages carries the tag
//! `twitterstream:<stream>`, and tweets matched only by other rules are
//! filtered out.
//!
//! Reconnection follows X's documented policy: when neither data nor the
//! keep-alive newline (sent every 20 s) arrived for 20 s the connection is
//! considered stalled and reopened; network errors back off linearly
//! (+250 ms per attempt, up to 16 s), HTTP errors exponentially (from 5 s,
//! up to 320 s), and 429 exponentially from 1 minute.

use super::auth::Auth;
use super::credentials::CredentialsProvider;
use super::metrics::Metrics;
use super::xapi::{ReceivedTweet, TWEET_FIELDS, XApiError};
use crate::shutdown::Shutdown;
use futures::StreamExt;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

pub(crate) const STREAM_PATH: &str = "/2/tweets/search/stream";
pub(crate) const RULES_PATH: &str = "/2/tweets/search/stream/rules";
/// X sends a keep-alive newline every 20 s; silence that long means stall.
pub(crate) const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The tag marking the rules this producer manages for a stream
/// (`qualified` is `<namespace>.<name>`, so equally named streams in two
/// namespaces sharing an X app keep their own rules).
pub(crate) fn rule_tag(qualified: &str) -> String {
    format!("twitterstream:{qualified}")
}

/// X's reconnection policy for the filtered stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ReconnectBackoff {
    network: u32,
    http: u32,
    rate_limited: u32,
}

impl ReconnectBackoff {
    const NETWORK_STEP: Duration = Duration::from_millis(250);
    const NETWORK_MAX: Duration = Duration::from_secs(16);
    const HTTP_INITIAL: Duration = Duration::from_secs(5);
    const HTTP_MAX: Duration = Duration::from_secs(320);
    const RATE_INITIAL: Duration = Duration::from_secs(60);
    /// X gives no ceiling for 429; 16 minutes outlasts any 15-minute window.
    const RATE_MAX: Duration = Duration::from_secs(960);

    /// TCP/IP trouble, stalls, dropped connections: linear.
    pub(crate) fn network_error(&mut self) -> Duration {
        self.network = self.network.saturating_add(1);
        Self::NETWORK_STEP
            .saturating_mul(self.network)
            .min(Self::NETWORK_MAX)
    }

    /// HTTP errors other than 429: exponential from 5 s.
    pub(crate) fn http_error(&mut self) -> Duration {
        let d = exp(Self::HTTP_INITIAL, self.http, Self::HTTP_MAX);
        self.http = self.http.saturating_add(1);
        d
    }

    /// 429: exponential from 1 minute.
    pub(crate) fn rate_limited(&mut self) -> Duration {
        let d = exp(Self::RATE_INITIAL, self.rate_limited, Self::RATE_MAX);
        self.rate_limited = self.rate_limited.saturating_add(1);
        d
    }

    /// A connection delivered data: the next trouble starts from scratch.
    pub(crate) fn reset(&mut self) {
        *self = Self::default();
    }
}

fn exp(initial: Duration, attempt: u32, max: Duration) -> Duration {
    initial.saturating_mul(1u32 << attempt.min(16)).min(max)
}

/// One line of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StreamLine {
    KeepAlive,
    Data(String),
}

/// Splits the chunked body into lines (`\r\n`-terminated, as X sends them),
/// however the chunks fall.
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Vec<StreamLine> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=pos).collect();
            let text = String::from_utf8_lossy(&line);
            let text = text.trim();
            if text.is_empty() {
                out.push(StreamLine::KeepAlive);
            } else {
                out.push(StreamLine::Data(text.to_owned()));
            }
        }
        out
    }
}

/// A tweet received from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamTweet {
    pub(crate) id: String,
    /// The `data` object exactly as X sent it.
    pub(crate) json: String,
}

#[derive(Debug, Deserialize)]
struct MatchingRule {
    #[serde(default)]
    tag: Option<String>,
}

#[derive(Debug, Deserialize)]
struct StreamMessage {
    #[serde(default)]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    matching_rules: Vec<MatchingRule>,
    #[serde(default)]
    errors: Option<serde_json::Value>,
}

/// What a data line means for this stream.
#[derive(Debug, PartialEq)]
pub(crate) enum Parsed {
    Tweet(StreamTweet, Box<ReceivedTweet>),
    /// Matched only rules of other streams.
    Foreign,
    /// An operational message (`errors`, e.g. an announced disconnect).
    Notice(String),
    Malformed(String),
}

impl PartialEq for ReceivedTweet {
    fn eq(&self, other: &Self) -> bool {
        self.raw_json() == other.raw_json()
    }
}

pub(crate) fn parse_line(line: &str, tag: &str) -> Parsed {
    let msg: StreamMessage = match serde_json::from_str(line) {
        Ok(m) => m,
        Err(e) => return Parsed::Malformed(e.to_string()),
    };
    let Some(data) = msg.data else {
        return match msg.errors {
            Some(e) => Parsed::Notice(e.to_string()),
            None => Parsed::Malformed("neither data nor errors".into()),
        };
    };
    if !msg
        .matching_rules
        .iter()
        .any(|r| r.tag.as_deref() == Some(tag))
    {
        return Parsed::Foreign;
    }
    match ReceivedTweet::from_raw(data) {
        Ok(t) => Parsed::Tweet(
            StreamTweet {
                id: t.id().to_owned(),
                json: t.raw_json().to_owned(),
            },
            Box::new(t),
        ),
        Err(e) => Parsed::Malformed(e.to_string()),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    XApi(#[from] XApiError),
    #[error("the filtered stream needs an app-only bearer token (X_BEARER_TOKEN or bearerToken)")]
    NoBearer,
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

#[derive(Debug, Deserialize)]
struct Rule {
    id: String,
    value: String,
    #[serde(default)]
    tag: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RulesResponse {
    #[serde(default)]
    data: Vec<Rule>,
}

/// Why a connection attempt ended.
enum Outcome {
    Network(String),
    Http(u16, String),
    RateLimited,
    Closed,
}

/// The filtered-stream client; see the module documentation.
pub(crate) struct FilteredStream {
    http: reqwest::Client,
    base: String,
    credentials: CredentialsProvider,
    query: String,
    tag: String,
    min_faves: Option<u64>,
    metrics: Arc<Metrics>,
}

impl FilteredStream {
    pub(crate) fn new(
        base_url: &str,
        credentials: CredentialsProvider,
        query: String,
        tag: String,
        min_faves: Option<u64>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StreamError> {
        crate::common::install_tls_provider();
        let http = reqwest::Client::builder()
            // No overall timeout: the response is endless. Stalls are caught
            // by the keep-alive watchdog.
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!(
                "twitterstream-producer/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .map_err(StreamError::Client)?;
        Ok(Self {
            http,
            base: base_url.trim_end_matches('/').to_owned(),
            credentials,
            query,
            tag,
            min_faves,
            metrics,
        })
    }

    fn bearer(&self) -> Result<HeaderValue, StreamError> {
        let creds = self
            .credentials
            .current()
            .map_err(|_| StreamError::NoBearer)?;
        let token = creds.bearer.clone().ok_or(StreamError::NoBearer)?;
        let mut h = HeaderValue::from_str(&Auth::Bearer(token).header("GET", "", &[]))
            .map_err(|_| StreamError::NoBearer)?;
        h.set_sensitive(true);
        Ok(h)
    }

    /// Makes the rules tagged for this stream exactly `{query}`.
    async fn sync_rules(&self) -> Result<(), Outcome> {
        let auth = self
            .bearer()
            .map_err(|e| Outcome::Http(401, e.to_string()))?;
        let url = format!("{}{RULES_PATH}", self.base);
        let resp = self
            .http
            .get(&url)
            .header(AUTHORIZATION, auth.clone())
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| Outcome::Network(e.to_string()))?;
        let status = resp.status().as_u16();
        self.metrics.request(status.to_string());
        if status == 429 {
            return Err(Outcome::RateLimited);
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| Outcome::Network(e.to_string()))?;
        if status != 200 {
            return Err(Outcome::Http(status, String::from_utf8_lossy(&body).into()));
        }
        let rules: RulesResponse = serde_json::from_slice(&body)
            .map_err(|e| Outcome::Http(status, format!("malformed rules response: {e}")))?;
        let ours: Vec<&Rule> = rules
            .data
            .iter()
            .filter(|r| r.tag.as_deref() == Some(self.tag.as_str()))
            .collect();
        if ours.len() == 1 && ours[0].value == self.query {
            return Ok(());
        }
        let mut bodies = Vec::new();
        if !ours.is_empty() {
            let ids: Vec<&str> = ours.iter().map(|r| r.id.as_str()).collect();
            bodies.push(serde_json::json!({"delete": {"ids": ids}}));
        }
        bodies.push(serde_json::json!({"add": [{"value": self.query, "tag": self.tag}]}));
        for body in bodies {
            let resp = self
                .http
                .post(&url)
                .header(AUTHORIZATION, auth.clone())
                .json(&body)
                .timeout(Duration::from_secs(30))
                .send()
                .await
                .map_err(|e| Outcome::Network(e.to_string()))?;
            let status = resp.status().as_u16();
            self.metrics.request(status.to_string());
            if status == 429 {
                return Err(Outcome::RateLimited);
            }
            if !(200..300).contains(&status) {
                let text = resp.text().await.unwrap_or_default();
                return Err(Outcome::Http(status, text));
            }
        }
        tracing::info!(tag = %self.tag, query = %self.query, "filtered-stream rule set");
        Ok(())
    }

    /// Connects once and forwards tweets until the connection ends.
    async fn connect_once(
        &self,
        tx: &mpsc::Sender<StreamTweet>,
        backoff: &mut ReconnectBackoff,
        shutdown: &mut Shutdown,
    ) -> Result<Outcome, StreamError> {
        let auth = self.bearer()?;
        let url = format!("{}{STREAM_PATH}?tweet.fields={TWEET_FIELDS}", self.base);
        let resp = tokio::select! {
            r = self.http.get(&url).header(AUTHORIZATION, auth).send() => r,
            _ = shutdown.wait() => return Ok(Outcome::Closed),
        };
        let resp = match resp {
            Ok(r) => r,
            Err(e) => return Ok(Outcome::Network(e.to_string())),
        };
        let status = resp.status().as_u16();
        self.metrics.request(status.to_string());
        if status == 429 {
            return Ok(Outcome::RateLimited);
        }
        if status != 200 {
            let text = resp.text().await.unwrap_or_default();
            return Ok(Outcome::Http(status, text));
        }
        tracing::info!("connected to the filtered stream");
        let mut body = resp.bytes_stream();
        let mut lines = LineSplitter::default();
        loop {
            let next = tokio::select! {
                n = tokio::time::timeout(KEEP_ALIVE_TIMEOUT, body.next()) => n,
                _ = shutdown.wait() => return Ok(Outcome::Closed),
            };
            let chunk = match next {
                Err(_) => {
                    return Ok(Outcome::Network(format!(
                        "no data or keep-alive for {KEEP_ALIVE_TIMEOUT:?}"
                    )));
                }
                Ok(None) => return Ok(Outcome::Network("the server closed the stream".into())),
                Ok(Some(Err(e))) => return Ok(Outcome::Network(e.to_string())),
                Ok(Some(Ok(c))) => c,
            };
            for line in lines.push(&chunk) {
                backoff.reset();
                let StreamLine::Data(text) = line else {
                    continue;
                };
                match parse_line(&text, &self.tag) {
                    Parsed::Tweet(t, parsed) => {
                        self.metrics.tweets_fetched.inc();
                        if self
                            .min_faves
                            .is_some_and(|m| parsed.tweet.like_count() < m)
                        {
                            self.metrics.tweets_filtered.inc();
                            continue;
                        }
                        if tx.send(t).await.is_err() {
                            return Ok(Outcome::Closed);
                        }
                    }
                    Parsed::Foreign => {
                        self.metrics.tweets_filtered.inc();
                    }
                    Parsed::Notice(n) => tracing::warn!(notice = %n, "filtered stream notice"),
                    Parsed::Malformed(e) => {
                        self.metrics.tweets_malformed.inc();
                        tracing::warn!(error = %e, "skipping a malformed stream line");
                    }
                }
            }
        }
    }

    /// Keeps the rule in sync and the connection open until shutdown.
    pub(crate) async fn run(
        self,
        tx: mpsc::Sender<StreamTweet>,
        shutdown: &mut Shutdown,
    ) -> Result<(), StreamError> {
        let mut backoff = ReconnectBackoff::default();
        let mut rules_synced = false;
        while !shutdown.requested() {
            let outcome = if rules_synced {
                self.connect_once(&tx, &mut backoff, shutdown).await?
            } else {
                match self.sync_rules().await {
                    Ok(()) => {
                        rules_synced = true;
                        continue;
                    }
                    Err(o) => o,
                }
            };
            let delay = match outcome {
                Outcome::Closed => return Ok(()),
                Outcome::Network(e) => {
                    let d = backoff.network_error();
                    tracing::warn!(error = %e, retry_in = ?d, "filtered stream network error; reconnecting");
                    d
                }
                Outcome::Http(status, body) => {
                    let d = backoff.http_error();
                    tracing::warn!(status, body = %body.chars().take(300).collect::<String>(), retry_in = ?d, "filtered stream HTTP error; reconnecting");
                    d
                }
                Outcome::RateLimited => {
                    let d = backoff.rate_limited();
                    self.metrics.rate_limited_seconds.inc_by(d.as_secs_f64());
                    tracing::warn!(retry_in = ?d, "filtered stream rate limited (429)");
                    d
                }
            };
            self.metrics.stream_reconnects.inc();
            if !shutdown.sleep(delay).await {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_backoffs() {
        let mut b = ReconnectBackoff::default();
        let net: Vec<_> = (0..70).map(|_| b.network_error()).collect();
        assert_eq!(net[0], Duration::from_millis(250));
        assert_eq!(net[1], Duration::from_millis(500));
        assert_eq!(net[3], Duration::from_secs(1));
        assert_eq!(net[63], Duration::from_secs(16));
        assert_eq!(net[69], Duration::from_secs(16));

        let http: Vec<_> = (0..10).map(|_| b.http_error()).collect();
        assert_eq!(
            &http[..7],
            &[5, 10, 20, 40, 80, 160, 320].map(Duration::from_secs)
        );
        assert_eq!(http[9], Duration::from_secs(320));

        let rl: Vec<_> = (0..3).map(|_| b.rate_limited()).collect();
        assert_eq!(rl, [60, 120, 240].map(Duration::from_secs));

        b.reset();
        assert_eq!(b.network_error(), Duration::from_millis(250));
        assert_eq!(b.http_error(), Duration::from_secs(5));
        assert_eq!(b.rate_limited(), Duration::from_secs(60));
    }

    #[test]
    fn lines_split_across_chunks_and_keep_alives() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"\r\n"), vec![StreamLine::KeepAlive]);
        assert_eq!(s.push(b"{\"data\":{\"id\":\"1\""), vec![]);
        assert_eq!(
            s.push(b",\"text\":\"a\"}}\r\n\r\n{\"da"),
            vec![
                StreamLine::Data("{\"data\":{\"id\":\"1\",\"text\":\"a\"}}".into()),
                StreamLine::KeepAlive
            ]
        );
        assert_eq!(
            s.push(b"ta\":1}\r\n"),
            vec![StreamLine::Data("{\"data\":1}".into())]
        );
    }

    #[test]
    fn keeps_only_tweets_of_our_rule() {
        let tag = rule_tag("s1");
        let ours = r#"{"data":{"id":"5","text":"hi","future":1},"matching_rules":[{"id":"9","tag":"twitterstream:s1"}]}"#;
        match parse_line(ours, &tag) {
            Parsed::Tweet(t, _) => {
                assert_eq!(t.id, "5");
                assert_eq!(t.json, r#"{"id":"5","text":"hi","future":1}"#);
            }
            other => panic!("{other:?}"),
        }
        let foreign = r#"{"data":{"id":"6","text":"x"},"matching_rules":[{"id":"8","tag":"twitterstream:other"}]}"#;
        assert_eq!(parse_line(foreign, &tag), Parsed::Foreign);
        assert!(matches!(
            parse_line(r#"{"errors":[{"title":"operational-disconnect"}]}"#, &tag),
            Parsed::Notice(_)
        ));
        assert!(matches!(parse_line("{", &tag), Parsed::Malformed(_)));
    }
}
