//! What the consumer tells the ops server (`crate::ops`).

use crate::consumer::metrics::{Health, Metrics};
use crate::kafka::AuthWatch;
use crate::ops::Probes;
use std::sync::Arc;

pub(crate) struct ConsumerProbes {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) health: Arc<Health>,
    pub(crate) auth: AuthWatch,
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
        if let Some(why) = self.auth.current() {
            return Err(format!("Kafka refuses this consumer: {why}"));
        }
        self.health
            .ready(chrono::Utc::now().timestamp_millis())
            .map_err(str::to_owned)
    }

    fn metrics(&self) -> Option<String> {
        self.metrics.encode().ok()
    }
}
