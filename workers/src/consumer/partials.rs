//! The internal repartition topic `<group>-partials`, between the aggregate
//! stage (one per replica, over its source partitions) and the merge stage.
//!
//! Records are keyed by window start and routed by the window, so every
//! partial of a window meets in one partition and one merger sees them all.
//! Besides partials, each source partition's owner writes `Closed` markers to
//! every partition: they tell mergers which windows a source partition has no
//! more partials for, so windows it had no data in can still complete.

use crate::consumer::merge::{Partial, Piece};
use crate::consumer::window_key::WindowKey;
use crate::kafka::{AuthContext, KafkaClients};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use twitterstream_contract::kafka::KafkaSecurityError;
use twitterstream_contract::refusal::{Refusal, Resource};

/// One record of the partials topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum InternalRecord {
    Partial {
        partial: Box<Partial>,
        /// Wall-clock time the source closed the window, for the
        /// close-to-emit latency.
        closed_at_ms: i64,
    },
    /// For each source partition in `until`: every partial covering it for
    /// windows ending at or before its time precedes this record in this
    /// partition. One record per sender and partials partition, sent when a
    /// time moves (and as a heartbeat): one `Closed` per source partition on
    /// every cycle made the markers grow with the square of the partitions.
    ClosedAll {
        until: BTreeMap<i32, i64>,
        /// The source topic's partition count as the sender knew it.
        sources: i32,
    },
    /// One source partition's marker, as versions before `ClosedAll` wrote
    /// it; still read, so a partials topic they wrote to stays readable.
    Closed {
        partition: i32,
        until_ms: i64,
        /// The source topic's partition count as the sender knew it.
        #[serde(default)]
        sources: i32,
    },
}

/// The most JSON one partials record holds; a larger partial is split into
/// pieces. Brokers refuse records over `message.max.bytes` (1 MB by default)
/// and librdkafka over its own 1,000,000; half of that leaves room for
/// escaped characters. Before, such a partial was retried forever and its
/// window never published (issue #12, item 6).
pub(crate) const MAX_RECORD_JSON: usize = 512 * 1024;

/// The records of one partial: one, or its pieces when it is too large.
pub(crate) fn encode(partial: Partial, closed_at_ms: i64) -> Vec<Vec<u8>> {
    encode_within(partial, closed_at_ms, MAX_RECORD_JSON)
}

pub(crate) fn encode_within(partial: Partial, closed_at_ms: i64, budget: usize) -> Vec<Vec<u8>> {
    let record = InternalRecord::Partial {
        partial: Box::new(partial),
        closed_at_ms,
    };
    // Serialising plain data does not fail.
    let whole = serde_json::to_vec(&record).unwrap_or_default();
    let InternalRecord::Partial { partial, .. } = record else {
        return vec![whole];
    };
    if whole.len() <= budget {
        return vec![whole];
    }
    let digest = {
        use std::hash::BuildHasher;
        foldhash::fast::FixedState::with_seed(0x7477_735f_7061_7274).hash_one(&whole)
    };
    let Partial {
        window,
        sources,
        partitions,
        watermarks,
        aggregate,
        ..
    } = *partial;
    let pieces = aggregate.split(budget.saturating_sub(1024));
    let of = u32::try_from(pieces.len()).unwrap_or(u32::MAX);
    pieces
        .into_iter()
        .enumerate()
        .map(|(i, aggregate)| {
            let record = InternalRecord::Partial {
                partial: Box::new(Partial {
                    window,
                    sources,
                    partitions: partitions.clone(),
                    watermarks: watermarks.clone(),
                    aggregate,
                    piece: Some(Piece {
                        index: u32::try_from(i).unwrap_or(u32::MAX),
                        of,
                        digest,
                    }),
                }),
                closed_at_ms,
            };
            serde_json::to_vec(&record).unwrap_or_default()
        })
        .collect()
}

pub(crate) fn topic_name(group: &str) -> String {
    format!("{group}-partials")
}

/// The partials partition of a window. Consecutive windows go to consecutive
/// partitions, which spreads the merge work evenly.
pub(crate) fn partition_of(window: WindowKey, slide_ms: i64, partitions: i32) -> i32 {
    let n = i64::from(partitions.max(1));
    // rem_euclid by a positive i32 fits in i32.
    window.start_ms.div_euclid(slide_ms.max(1)).rem_euclid(n) as i32
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum TopologyError {
    #[error("reading metadata of topic {topic}: {source}")]
    Metadata { topic: String, source: KafkaError },
    #[error("Kafka security settings: {0}")]
    Security(#[from] KafkaSecurityError),
    #[error("topic {topic} does not exist (yet)")]
    Missing { topic: String },
    /// The ACLs deny what discovery needs: never "missing" (a CEO's check
    /// read "does not exist (yet)" while the broker logged a denied
    /// DESCRIBE).
    #[error("{0}")]
    Denied(Refusal),
    #[error("creating topic {topic}: {source}")]
    Create { topic: String, source: KafkaError },
    #[error("creating topic {topic}: {code}")]
    CreateRefused {
        topic: String,
        code: RDKafkaErrorCode,
    },
}

impl TopologyError {
    /// Whether the brokers answered (so the login works), whatever they
    /// said.
    pub(crate) fn answered(&self) -> bool {
        matches!(
            self,
            TopologyError::Missing { .. }
                | TopologyError::Denied(_)
                | TopologyError::CreateRefused { .. }
        )
    }
}

/// How long one metadata request may wait at the most, in slices between
/// which the client's events are served.
const METADATA_SLICE: Duration = Duration::from_secs(1);

/// Partition count and partition 0's replica count of a topic.
///
/// The client is polled between slices of the wait: a metadata request
/// alone never serves the client's events, so a refused login reached no
/// error callback and the consumer waited "for the topics" for ever (issue
/// #26: 200 s with a 60 s grace, six bad settings).
pub(crate) fn describe<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    timeout: Duration,
) -> Result<(i32, i32), TopologyError> {
    let deadline = std::time::Instant::now() + timeout;
    let md = loop {
        let slice =
            METADATA_SLICE.min(deadline.saturating_duration_since(std::time::Instant::now()));
        let r = consumer.fetch_metadata(Some(topic), slice);
        // Serves the error callbacks (a metadata client has no group, so
        // this is the main queue); messages there are none.
        while consumer.poll(Duration::ZERO).is_some() {}
        match r {
            Ok(md) => break md,
            Err(source) if std::time::Instant::now() >= deadline => {
                return Err(TopologyError::Metadata {
                    topic: topic.to_owned(),
                    source,
                });
            }
            Err(_) => {}
        }
    };
    let named = md.topics().iter().find(|t| t.name() == topic);
    if let Some(code) = named.and_then(|t| t.error())
        && let Some(refusal) =
            Refusal::denied(code.into(), "DESCRIBE", Resource::Topic(topic.to_owned()))
    {
        return Err(TopologyError::Denied(refusal));
    }
    let t = named
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .ok_or_else(|| TopologyError::Missing {
            topic: topic.to_owned(),
        })?;
    let partitions = t.partitions().len() as i32;
    let replicas = t
        .partitions()
        .iter()
        .find(|p| p.id() == 0)
        .map_or(1, |p| p.replicas().len() as i32)
        .max(1);
    Ok((partitions, replicas))
}

/// Creates the partials topic (the caller found it missing: a topic made
/// beforehand needs no CREATE grant).
pub(crate) async fn ensure_topic(
    kafka: &KafkaClients,
    topic: &str,
    partitions: i32,
    replication: i32,
) -> Result<(), TopologyError> {
    let admin: AdminClient<AuthContext> = kafka
        .config()?
        .create_with_context(kafka.context())
        .map_err(|source| TopologyError::Create {
            topic: topic.to_owned(),
            source,
        })?;
    let results = admin
        .create_topics(
            &[NewTopic::new(
                topic,
                partitions,
                TopicReplication::Fixed(replication),
            )],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .map_err(|source| TopologyError::Create {
            topic: topic.to_owned(),
            source,
        })?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(
                    match Refusal::denied(code, "CREATE", Resource::Topic(topic.clone())) {
                        Some(refusal) => TopologyError::Denied(refusal),
                        None => TopologyError::CreateRefused { topic, code },
                    },
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::aggregate::Aggregate;
    use std::collections::BTreeSet;

    #[test]
    fn windows_spread_over_partitions_and_each_has_one() {
        let w = |s: i64| WindowKey {
            start_ms: s,
            end_ms: s + 10_000,
        };
        let got: Vec<i32> = (0..6)
            .map(|i| partition_of(w(i * 10_000), 10_000, 3))
            .collect();
        assert_eq!(got, vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(partition_of(w(-10_000), 10_000, 3), 2);
        assert_eq!(partition_of(w(5_000), 5_000, 1), 0);
    }

    #[test]
    fn records_round_trip() {
        let records = [
            InternalRecord::Partial {
                partial: Box::new(Partial {
                    window: WindowKey {
                        start_ms: 0,
                        end_ms: 10,
                    },
                    sources: 3,
                    partitions: BTreeSet::from([0, 2]),
                    watermarks: BTreeMap::from([(0, 5)]),
                    aggregate: Aggregate::default(),
                    piece: None,
                }),
                closed_at_ms: 7,
            },
            InternalRecord::Closed {
                partition: 1,
                until_ms: 20,
                sources: 3,
            },
            InternalRecord::ClosedAll {
                until: BTreeMap::from([(0, 10), (4, -20)]),
                sources: 5,
            },
        ];
        for r in records {
            let json = serde_json::to_vec(&r).unwrap();
            assert_eq!(serde_json::from_slice::<InternalRecord>(&json).unwrap(), r);
        }
    }
}
