//! What the consumer tells the ops server (`crate::ops`).

use crate::consumer::metrics::{Health, Metrics};
use crate::ops::Probes;
use std::sync::Arc;

pub(crate) struct ConsumerProbes {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) health: Arc<Health>,
}

impl Probes for ConsumerProbes {
    fn live(&self) -> Result<(), String> {
        if self.health.live() {
            Ok(())
        } else {
            Err("a pipeline stage stopped".to_owned())
        }
    }

    fn ready(&self) -> Result<(), String> {
        self.health
            .ready(chrono::Utc::now().timestamp_millis())
            .map_err(str::to_owned)
    }

    fn metrics(&self) -> Option<String> {
        self.metrics.encode().ok()
    }
}
