//! What the consumer reports: Prometheus metrics and the health state behind
//! `/healthz` and `/readyz`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub partition: i64,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub(crate) records_consumed: Counter,
    pub(crate) records_malformed: Counter,
    pub(crate) tweets_future: Counter,
    pub(crate) records_other_stream: Counter,
    pub(crate) tweets_late: Counter,
    pub(crate) partials_published: Counter,
    pub(crate) windows_emitted: Counter,
    pub consumer_lag: Family<PartitionLabels, Gauge>,
    pub(crate) watermark_delay_seconds: Gauge<f64, AtomicU64>,
    pub(crate) emit_latency_seconds: Histogram,
    pub transactions: Family<StageLabels, Counter>,
    pub transactions_aborted: Family<StageLabels, Counter>,
    pub rebalances: Family<StageLabels, Counter>,
    pub kafka_errors: Family<StageLabels, Counter>,
    pub(crate) open_windows: Gauge,
    pub(crate) postgres_windows_written: Counter,
    pub(crate) postgres_windows_skipped: Counter,
    pub postgres_errors: Family<ReasonLabels, Counter>,
    pub(crate) postgres_write_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("twitterstream_consumer");
        let m = Metrics {
            records_consumed: Counter::default(),
            records_malformed: Counter::default(),
            tweets_future: Counter::default(),
            records_other_stream: Counter::default(),
            tweets_late: Counter::default(),
            partials_published: Counter::default(),
            windows_emitted: Counter::default(),
            consumer_lag: Family::default(),
            watermark_delay_seconds: Gauge::default(),
            // 1 ms to about 33 s.
            emit_latency_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            transactions: Family::default(),
            transactions_aborted: Family::default(),
            rebalances: Family::default(),
            kafka_errors: Family::default(),
            open_windows: Gauge::default(),
            postgres_windows_written: Counter::default(),
            postgres_windows_skipped: Counter::default(),
            postgres_errors: Family::default(),
            // 1 ms to about 16 s.
            postgres_write_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            registry: Registry::default(),
        };
        registry.register(
            "records_consumed",
            "Records read from the tweet topic",
            m.records_consumed.clone(),
        );
        registry.register(
            "records_malformed",
            "Records skipped because they are not usable tweets",
            m.records_malformed.clone(),
        );
        registry.register(
            "tweets_future",
            "Tweets skipped because their created_at is further ahead of the clock than --max-future-skew-seconds",
            m.tweets_future.clone(),
        );
        registry.register(
            "records_other_stream",
            "Records skipped because their stream header names another stream sharing the topic",
            m.records_other_stream.clone(),
        );
        registry.register(
            "tweets_late",
            "Window memberships counted as late instead of in their window",
            m.tweets_late.clone(),
        );
        registry.register(
            "partials_published",
            "Partial window aggregates written to the partials topic",
            m.partials_published.clone(),
        );
        registry.register(
            "windows_emitted",
            "Final window results published (or printed)",
            m.windows_emitted.clone(),
        );
        registry.register(
            "lag",
            "Records between the consumer's position and the end of each source partition",
            m.consumer_lag.clone(),
        );
        registry.register(
            "watermark_delay_seconds",
            "Wall clock minus this replica's event-time watermark",
            m.watermark_delay_seconds.clone(),
        );
        registry.register(
            "emit_latency_seconds",
            "From a window closing at its last source to its result being published",
            m.emit_latency_seconds.clone(),
        );
        registry.register(
            "transactions",
            "Kafka transactions committed",
            m.transactions.clone(),
        );
        registry.register(
            "transactions_aborted",
            "Kafka transactions aborted (rebalance, broker error)",
            m.transactions_aborted.clone(),
        );
        registry.register(
            "rebalances",
            "Partition assignment changes",
            m.rebalances.clone(),
        );
        registry.register(
            "kafka_errors",
            "Kafka errors seen (retried)",
            m.kafka_errors.clone(),
        );
        registry.register(
            "open_windows",
            "Windows this replica holds state for",
            m.open_windows.clone(),
        );
        registry.register(
            "postgres_windows_written",
            "Final windows written to PostgreSQL",
            m.postgres_windows_written.clone(),
        );
        registry.register(
            "postgres_windows_skipped",
            "Final windows PostgreSQL already had (replayed after a failure, not written twice)",
            m.postgres_windows_skipped.clone(),
        );
        registry.register(
            "postgres_errors",
            "Failed PostgreSQL writes (retried), by reason",
            m.postgres_errors.clone(),
        );
        registry.register(
            "postgres_write_seconds",
            "Time to write one commit cycle's windows to PostgreSQL",
            m.postgres_write_seconds.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Liveness and readiness, shared by the stages and the HTTP server.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// The aggregate stage has joined its group and received an assignment.
    pub(crate) assigned: AtomicBool,
    /// Wall-clock ms of the last successful exchange with Kafka.
    pub(crate) kafka_ok_at_ms: AtomicI64,
    /// A stage thread ended unexpectedly.
    pub(crate) broken: AtomicBool,
}

/// How long without a successful Kafka exchange before not ready.
pub(crate) const KAFKA_STALE_MS: i64 = 30_000;

impl Health {
    pub(crate) fn kafka_ok(&self, now_ms: i64) {
        self.kafka_ok_at_ms.fetch_max(now_ms, Ordering::Relaxed);
    }

    pub(crate) fn ready(&self, now_ms: i64) -> Result<(), &'static str> {
        if !self.assigned.load(Ordering::Relaxed) {
            return Err("not assigned partitions yet");
        }
        if now_ms - self.kafka_ok_at_ms.load(Ordering::Relaxed) > KAFKA_STALE_MS {
            return Err("Kafka not reachable");
        }
        Ok(())
    }

    pub(crate) fn live(&self) -> bool {
        !self.broken.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_encode_with_prefix() {
        let m = Metrics::new();
        m.records_consumed.inc();
        m.consumer_lag
            .get_or_create(&PartitionLabels { partition: 2 })
            .set(7);
        m.emit_latency_seconds.observe(0.01);
        let text = m.encode().unwrap();
        assert!(text.contains("twitterstream_consumer_records_consumed_total 1"));
        assert!(text.contains("twitterstream_consumer_lag{partition=\"2\"} 7"));
        assert!(text.contains("twitterstream_consumer_emit_latency_seconds_bucket"));
    }

    #[test]
    fn ready_needs_assignment_and_recent_kafka() {
        let h = Health::default();
        assert!(h.ready(1_000).is_err());
        h.assigned.store(true, Ordering::Relaxed);
        h.kafka_ok(1_000);
        assert!(h.ready(2_000).is_ok());
        assert!(h.ready(1_000 + KAFKA_STALE_MS + 1).is_err());
    }
}
