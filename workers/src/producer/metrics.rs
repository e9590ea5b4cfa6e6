//! The producer's Prometheus metrics, and what it tells the ops server
//! (`crate::ops`).

use super::search::SearchEvent;
use crate::kafka::AuthWatch;
use crate::ops::Probes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StatusLabel {
    /// HTTP status, or `error` for timeouts and transport failures.
    pub(crate) status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub(crate) outcome: String,
}

/// The producer's metrics; cheap to share.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub(crate) tweets_fetched: Counter,
    pub(crate) tweets_published: Counter,
    pub(crate) tweets_filtered: Counter,
    pub(crate) tweets_malformed: Counter,
    pub(crate) api_requests: Family<StatusLabel, Counter>,
    pub(crate) rate_limited_seconds: Counter<f64, AtomicU64>,
    pub(crate) publish_errors: Counter,
    pub transactions: Family<OutcomeLabel, Counter>,
    pub(crate) last_successful_poll: Gauge<f64, AtomicU64>,
    pub(crate) stream_reconnects: Counter,
    pub(crate) resume_records_scanned: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("twitterstream_producer");
        let m = Self {
            tweets_fetched: Counter::default(),
            tweets_published: Counter::default(),
            tweets_filtered: Counter::default(),
            tweets_malformed: Counter::default(),
            api_requests: Family::default(),
            rate_limited_seconds: Counter::default(),
            publish_errors: Counter::default(),
            transactions: Family::default(),
            last_successful_poll: Gauge::default(),
            stream_reconnects: Counter::default(),
            resume_records_scanned: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "tweets_fetched",
            "Tweets received from the source",
            m.tweets_fetched.clone(),
        );
        registry.register(
            "tweets_published",
            "Tweets in committed Kafka transactions",
            m.tweets_published.clone(),
        );
        registry.register(
            "tweets_filtered",
            "Tweets dropped by filters (min likes, foreign stream rules)",
            m.tweets_filtered.clone(),
        );
        registry.register(
            "tweets_malformed",
            "Source elements or lines that were not tweets",
            m.tweets_malformed.clone(),
        );
        registry.register(
            "api_requests",
            "X API requests by answer status",
            m.api_requests.clone(),
        );
        registry.register(
            "rate_limited_seconds",
            "Seconds spent waiting for X API rate-limit resets",
            m.rate_limited_seconds.clone(),
        );
        registry.register(
            "publish_errors",
            "Failed Kafka sends, deliveries and transactions (retried)",
            m.publish_errors.clone(),
        );
        registry.register(
            "transactions",
            "Kafka transactions by outcome",
            m.transactions.clone(),
        );
        registry.register(
            "last_successful_poll_timestamp_seconds",
            "Unix time of the last poll (or batch) whose tweets were committed",
            m.last_successful_poll.clone(),
        );
        registry.register(
            "stream_reconnects",
            "Filtered stream reconnections",
            m.stream_reconnects.clone(),
        );
        registry.register(
            "resume_records_scanned",
            "Records read back from the topic to find where to resume (0 with a checkpoint)",
            m.resume_records_scanned.clone(),
        );
        Self { registry, ..m }
    }

    pub fn request(&self, status: impl Into<String>) {
        self.api_requests
            .get_or_create(&StatusLabel {
                status: status.into(),
            })
            .inc();
    }

    pub fn transaction(&self, outcome: &str) {
        self.transactions
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub(crate) fn mark_success(&self) {
        let now = chrono::Utc::now();
        self.last_successful_poll
            .set(now.timestamp_millis() as f64 / 1000.0);
    }

    /// Counts what the search poller reports between successful pages.
    pub(crate) fn search_event(&self, e: &SearchEvent) {
        match e {
            SearchEvent::Unauthorized { status, .. } => self.request(status.to_string()),
            SearchEvent::RateLimited { wait, .. } => {
                self.request("429");
                self.rate_limited_seconds.inc_by(wait.as_secs_f64());
            }
            SearchEvent::QuotaExhausted { wait, .. } => {
                self.rate_limited_seconds.inc_by(wait.as_secs_f64());
            }
            SearchEvent::Transient { status, .. } => {
                self.request(status.map_or_else(|| "error".to_owned(), |s| s.to_string()))
            }
            SearchEvent::CursorTooOld { .. } => self.request("400"),
            SearchEvent::UsageCapped { .. } => self.request("429"),
            SearchEvent::CredentialsUnavailable { .. } | SearchEvent::PartialErrors { .. } => {}
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The readiness check of the current Kafka clients, which are replaced
/// when the credentials rotate: not ready while there are none.
#[derive(Clone, Default)]
pub(crate) struct ReadyCheck(Arc<RwLock<Option<ReadyFn>>>);

type ReadyFn = Arc<dyn Fn(Duration) -> bool + Send + Sync>;

impl ReadyCheck {
    pub(crate) fn set(&self, check: impl Fn(Duration) -> bool + Send + Sync + 'static) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(check));
    }

    /// A probe that asks whichever clients are current.
    pub(crate) fn probe(&self) -> impl Fn(Duration) -> bool + Send + Sync + 'static {
        let slot = self.0.clone();
        move |timeout| {
            let current = slot.read().unwrap_or_else(|p| p.into_inner()).clone();
            current.is_some_and(|check| check(timeout))
        }
    }
}

/// What the producer tells the ops server (`crate::ops`): ready while Kafka
/// answers a metadata request for the topic (`ready`, given a timeout).
pub(crate) struct ProducerProbes<F> {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) ready: F,
    pub(crate) auth: AuthWatch,
}

impl<F: Fn(Duration) -> bool + Send + Sync + 'static> Probes for ProducerProbes<F> {
    fn ready(&self) -> Result<(), String> {
        if let Some(why) = self.auth.current() {
            return Err(format!("Kafka refuses this producer: {why}"));
        }
        if (self.ready)(Duration::from_secs(3)) {
            Ok(())
        } else {
            Err("Kafka metadata for the topic is not reachable".to_owned())
        }
    }

    fn metrics(&self) -> Option<String> {
        Some(self.metrics.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_documented_names() {
        let m = Metrics::new();
        m.tweets_published.inc_by(3);
        m.request("200");
        m.search_event(&SearchEvent::RateLimited {
            until: None,
            wait: Duration::from_secs(2),
        });
        let text = m.encode();
        for needle in [
            "twitterstream_producer_tweets_published_total 3",
            "twitterstream_producer_api_requests_total{status=\"200\"} 1",
            "twitterstream_producer_api_requests_total{status=\"429\"} 1",
            "twitterstream_producer_rate_limited_seconds_total 2.0",
            "twitterstream_producer_last_successful_poll_timestamp_seconds",
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
    }
}
