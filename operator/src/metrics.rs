//! Prometheus metrics of the operator.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FailureLabels {
    pub(crate) reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ScalingLabels {
    pub(crate) direction: &'static str,
}

pub struct Metrics {
    pub(crate) registry: Registry,
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
