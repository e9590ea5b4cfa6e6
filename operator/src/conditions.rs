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

/// The components' pod problems that are new since `previous` (a component
/// not ready for a reason of its pods', e.g. `CrashLoopBackOff` with the
/// container's termination message): each is worth one Warning Event. A
/// rollout in progress or a suspended stream is not a problem.
pub(crate) fn new_pod_problems<'a>(
    previous: &[Condition],
    current: &'a [Condition],
) -> Vec<&'a Condition> {
    current
        .iter()
        .filter(|c| c.type_ == PRODUCER_READY || c.type_ == CONSUMER_READY)
        .filter(|c| c.status == "False" && c.reason != "RollingOut" && c.reason != "Suspended")
        .filter(|c| {
            !previous
                .iter()
                .any(|p| p.type_ == c.type_ && p.status == c.status && p.reason == c.reason)
        })
        .collect()
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

    #[test]
    fn a_pod_problem_is_reported_once_when_it_appears() {
        let t = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let at = |obs: &[Observation], prev: &[Condition]| merge(prev, obs, Some(1), &t);
        let rolling = at(
            &[Observation::new(
                PRODUCER_READY,
                false,
                "RollingOut",
                "0/1 pods ready",
            )],
            &[],
        );
        assert!(
            new_pod_problems(&[], &rolling).is_empty(),
            "a rollout is no problem"
        );
        let crashing = at(
            &[
                Observation::new(
                    PRODUCER_READY,
                    false,
                    "CrashLoopBackOff",
                    "pod p: exited with code 1: could not log in",
                ),
                Observation::new(CONSUMER_READY, true, "AllReplicasReady", "1/1 pods ready"),
                Observation::new(TOPIC_READY, false, "KafkaUnreachable", "down"),
            ],
            &rolling,
        );
        let new = new_pod_problems(&rolling, &crashing);
        assert_eq!(new.len(), 1);
        assert_eq!(new[0].reason, "CrashLoopBackOff");
        // The same problem on the next reconcile: not again.
        assert!(new_pod_problems(&crashing, &crashing).is_empty());
    }
}
