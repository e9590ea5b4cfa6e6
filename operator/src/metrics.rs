//! Prometheus metrics of the operator.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FailureLabels {
    pub(crate) reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ScalingLabels {
    pub(crate) direction: &'static str,
}

/// One TwitterStream.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabels {
    pub namespace: String,
    pub name: String,
}

/// What `status.throughput` says of each stream, for dashboards and alerts
/// (the chart's PrometheusRule compares the window delay with the window
/// length, and watches the lag grow). A series lives as long as its stream.
#[derive(Default)]
pub(crate) struct StreamGauges {
    lag: Family<StreamLabels, Gauge>,
    published: Family<StreamLabels, Gauge<f64, AtomicU64>>,
    consumed: Family<StreamLabels, Gauge<f64, AtomicU64>>,
    window_delay: Family<StreamLabels, Gauge>,
    window_seconds: Family<StreamLabels, Gauge>,
    consumer_replicas: Family<StreamLabels, Gauge>,
}

/// A stream's figures, as its last throughput sample and spec give them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamFigures {
    pub lag: i64,
    pub published_per_second: Option<f64>,
    pub consumed_per_second: Option<f64>,
    pub last_window_delay_seconds: Option<i64>,
    pub window_seconds: i64,
    pub consumer_replicas: i64,
}

pub struct Metrics {
    pub(crate) registry: Registry,
    pub(crate) streams: StreamGauges,
    pub(crate) scalings: Family<ScalingLabels, Counter>,
    pub(crate) reconciles: Counter,
    pub(crate) failures: Family<FailureLabels, Counter>,
    pub(crate) duration: Histogram,
    pub(crate) managed: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("twitterstream_operator");
        let reconciles = Counter::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let managed = Gauge::default();
        let scalings = Family::<ScalingLabels, Counter>::default();
        let streams = StreamGauges::default();
        for (name, help, family) in [
            (
                "stream_lag_records",
                "Records of a stream's input topic its consumers have not read (status.throughput.lag)",
                &streams.lag,
            ),
            (
                "stream_last_window_delay_seconds",
                "Seconds from the end of a stream's last published window to its sample (status.throughput.lastWindowDelaySeconds)",
                &streams.window_delay,
            ),
            (
                "stream_window_seconds",
                "A stream's window length (spec.window.seconds)",
                &streams.window_seconds,
            ),
            (
                "stream_consumer_replicas",
                "A stream's consumer replicas (spec.consumer.replicas)",
                &streams.consumer_replicas,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "stream_published_per_second",
            "Records per second appended to a stream's input topic (status.throughput.publishedPerSecond)",
            streams.published.clone(),
        );
        registry.register(
            "stream_consumed_per_second",
            "Records per second a stream's consumers read (status.throughput.consumedPerSecond)",
            streams.consumed.clone(),
        );
        registry.register(
            "consumer_scalings",
            "Changes of consumer replicas made by spec.consumer.autoscaling, by direction (up, down)",
            scalings.clone(),
        );
        registry.register("reconciles", "Reconciliations started", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciliations that failed, by reason",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time a reconciliation took",
            duration.clone(),
        );
        registry.register(
            "managed_resources",
            "TwitterStream resources this replica manages",
            managed.clone(),
        );
        Self {
            registry,
            streams,
            scalings,
            reconciles,
            failures,
            duration,
            managed,
        }
    }
}

impl Metrics {
    /// Counts a reconcile and returns a guard that records its duration when dropped.
    pub fn start(&self) -> ReconcileTimer<'_> {
        self.reconciles.inc();
        ReconcileTimer {
            metrics: self,
            start: Instant::now(),
        }
    }

    pub fn failed(&self, reason: &str) {
        self.failures
            .get_or_create(&FailureLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn scaled(&self, direction: &'static str) {
        self.scalings
            .get_or_create(&ScalingLabels { direction })
            .inc();
    }

    /// Sets a stream's series to `f` (a rate not sampled yet has none).
    pub fn stream(&self, labels: &StreamLabels, f: &StreamFigures) {
        let g = &self.streams;
        g.lag.get_or_create(labels).set(f.lag);
        g.window_seconds.get_or_create(labels).set(f.window_seconds);
        g.consumer_replicas
            .get_or_create(labels)
            .set(f.consumer_replicas);
        for (family, value) in [
            (&g.published, f.published_per_second),
            (&g.consumed, f.consumed_per_second),
        ] {
            match value {
                Some(v) => {
                    family.get_or_create(labels).set(v);
                }
                None => {
                    family.remove(labels);
                }
            }
        }
        match f.last_window_delay_seconds {
            Some(d) => {
                g.window_delay.get_or_create(labels).set(d);
            }
            None => {
                g.window_delay.remove(labels);
            }
        }
    }

    /// Drops a deleted stream's series.
    pub(crate) fn forget_stream(&self, labels: &StreamLabels) {
        let g = &self.streams;
        g.lag.remove(labels);
        g.published.remove(labels);
        g.consumed.remove(labels);
        g.window_delay.remove(labels);
        g.window_seconds.remove(labels);
        g.consumer_replicas.remove(labels);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .duration
            .observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_has_its_series_until_it_is_forgotten() {
        let m = Metrics::default();
        let demo = StreamLabels {
            namespace: "ns1".into(),
            name: "demo".into(),
        };
        m.stream(
            &demo,
            &StreamFigures {
                lag: 42,
                published_per_second: Some(12.5),
                consumed_per_second: None,
                last_window_delay_seconds: Some(14),
                window_seconds: 10,
                consumer_replicas: 3,
            },
        );
        let text = m.encode();
        for line in [
            "twitterstream_operator_stream_lag_records{namespace=\"ns1\",name=\"demo\"} 42",
            "twitterstream_operator_stream_published_per_second{namespace=\"ns1\",name=\"demo\"} 12.5",
            "twitterstream_operator_stream_last_window_delay_seconds{namespace=\"ns1\",name=\"demo\"} 14",
            "twitterstream_operator_stream_window_seconds{namespace=\"ns1\",name=\"demo\"} 10",
            "twitterstream_operator_stream_consumer_replicas{namespace=\"ns1\",name=\"demo\"} 3",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(!text.contains("stream_consumed_per_second{"), "{text}");
        m.forget_stream(&demo);
        assert!(!m.encode().contains("demo"), "{}", m.encode());
    }
}
