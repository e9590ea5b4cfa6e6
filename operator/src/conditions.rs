//! Status conditions in the Kubernetes style: a condition's
//! `lastTransitionTime` changes only when its status does.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub(crate) const READY: &str = "Ready";
pub(crate) const TOPIC_READY: &str = "TopicReady";
pub(crate) const PRODUCER_READY: &str = "ProducerReady";
pub(crate) const CONSUMER_READY: &str = "ConsumerReady";
/// Present only while a worker image is refused (`policy.rs`).
pub(crate) const IMAGES_ALLOWED: &str = "ImagesAllowed";

/// What the reconciler concluded about one aspect of the resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Observation {
    pub(crate) type_: &'static str,
    pub(crate) ok: bool,
    pub(crate) reason: String,
    pub(crate) message: String,
}

impl Observation {
    pub(crate) fn new(
        type_: &'static str,
        ok: bool,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            ok,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// Turns observations into conditions, keeping the previous transition time
/// of each condition whose status did not change.
pub(crate) fn merge(
    previous: &[Condition],
    observed: &[Observation],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    observed
        .iter()
        .map(|o| {
            let status = if o.ok { "True" } else { "False" }.to_string();
            let last_transition_time = previous
                .iter()
                .find(|c| c.type_ == o.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: o.type_.to_string(),
                status,
                reason: o.reason.clone(),
                message: o.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// The summary condition: Ready when every other observation is.
pub(crate) fn ready(parts: &[Observation], suspended: bool) -> Observation {
    if suspended {
        return Observation::new(
            READY,
            false,
            "Suspended",
            "spec.suspend is true: both components are scaled to zero",
        );
    }
    match parts.iter().find(|o| !o.ok) {
        Some(bad) => Observation::new(
            READY,
            false,
            bad.reason.clone(),
            format!("{}: {}", bad.type_, bad.message),
        ),
        None => Observation::new(
            READY,
            true,
            "PipelineReady",
            "topic exists and producer and consumer pods are ready",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    #[test]
    fn transition_time_is_kept_while_status_is_unchanged() {
        let t0 = time("2026-01-01T00:00:00Z");
        let t1 = time("2026-01-01T00:05:00Z");
        let first = merge(
            &[],
            &[Observation::new(TOPIC_READY, true, "Exists", "ok")],
            Some(1),
            &t0,
        );
        assert_eq!(first[0].last_transition_time, t0);
        let same = merge(
            &first,
            &[Observation::new(TOPIC_READY, true, "Exists", "still ok")],
            Some(2),
            &t1,
        );
        assert_eq!(same[0].last_transition_time, t0);
        assert_eq!(same[0].message, "still ok");
        assert_eq!(same[0].observed_generation, Some(2));
        let flipped = merge(
            &same,
            &[Observation::new(
                TOPIC_READY,
                false,
                "KafkaUnreachable",
                "down",
            )],
            Some(2),
            &t1,
        );
        assert_eq!(flipped[0].last_transition_time, t1);
        assert_eq!(flipped[0].status, "False");
    }

    #[test]
    fn ready_names_the_first_failing_part() {
        let parts = [
            Observation::new(TOPIC_READY, true, "Exists", "ok"),
            Observation::new(
                PRODUCER_READY,
                false,
                "CreateContainerConfigError",
                "secret \"x-api\" not found",
            ),
        ];
        let r = ready(&parts, false);
        assert!(!r.ok);
        assert_eq!(r.reason, "CreateContainerConfigError");
        assert!(r.message.contains("ProducerReady"));
        assert!(ready(&parts[..1], false).ok);
        assert_eq!(ready(&parts[..1], true).reason, "Suspended");
    }
}
