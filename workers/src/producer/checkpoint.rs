//! The producer's checkpoint: where the stream stands, committed in the same
//! Kafka transaction as the records it covers.
//!
//! Kafka keeps it as the offset metadata of a consumer group that no one
//! consumes with (`twitterstream-producer-<namespace>.<name>`, the same
//! string as the transactional id), on partition 0 of the stream's topic.
//! `send_offsets_to_transaction` makes the checkpoint and the records one
//! atomic commit, so a restart reads exactly how far the committed records
//! go, in one round trip, however large the topic is and however many other
//! streams write to it. (Reading the topic back instead took time in
//! proportion to the records since the stream's last one, and failed for
//! good once that passed its time limit: issue #12, item 9.)
//!
//! The committed offset itself (0) means nothing; lag tools that list this
//! group show a meaningless lag for it.

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

/// The checkpoint group of a stream (`qualified` is `<namespace>.<name>`).
pub(crate) fn group_id(qualified: &str) -> String {
    super::identity::transactional_id(qualified)
}
/// Kafka's default `offset.metadata.max.bytes`; a checkpoint is far smaller.
#[cfg(test)]
pub(crate) const MAX_ENCODED: usize = 4096;

/// Where a stream stands after a committed transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    /// The source that wrote it; another source's checkpoint is not used.
    pub(crate) source: String,
    /// The newest position whose records (and all before it) are committed:
    /// a tweet id for `x-search`, the `seq` header for synthetic and replay.
    /// `None` when nothing was published yet.
    #[serde(default, with = "decimal_opt")]
    pub(crate) after: Option<u128>,
    /// `x-search` only: a poll committed in parts, newest part first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) open_poll: Option<OpenPoll>,
}

/// A search poll of which the tweets in `[until, newest]` are committed and
/// those in `(after, until)` are not yet: a restart fetches the rest with
/// `since_id = after` and `until_id = until`, then moves `after` to `newest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OpenPoll {
    #[serde(with = "decimal")]
    pub newest: u128,
    #[serde(with = "decimal")]
    pub until: u128,
}

impl Checkpoint {
    pub(crate) fn new(source: &str, after: Option<u128>) -> Self {
        Self {
            source: source.to_owned(),
            after,
            open_poll: None,
        }
    }

    pub(crate) fn encode(&self) -> String {
        // Serialising plain strings and numbers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// `None` for metadata this version does not understand (another
    /// writer's, or none at all).
    pub(crate) fn decode(metadata: &str) -> Option<Self> {
        serde_json::from_str(metadata).ok()
    }

    /// The offsets to send with the transaction that reaches this point.
    pub(crate) fn offsets(
        &self,
        topic: &str,
    ) -> Result<TopicPartitionList, rdkafka::error::KafkaError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Offset(0))?;
        if let Some(mut e) = tpl.find_partition(topic, 0) {
            e.set_metadata(self.encode());
        }
        Ok(tpl)
    }
}

/// The group to commit checkpoints as: it never joins, so its generation is
/// -1, which the coordinator accepts for a group that only stores offsets.
pub(crate) struct CheckpointGroup {
    pub(crate) metadata: ConsumerGroupMetadata,
    pub(crate) topic: String,
}

impl std::fmt::Debug for CheckpointGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointGroup")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// Positions as decimal strings: tweet ids may outgrow JSON's safe integers.
mod decimal {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

mod decimal_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &Option<u128>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_str(&v.to_string()),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u128>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| s.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_reads_back_as_written() {
        let cases = [
            Checkpoint::new("synthetic", None),
            Checkpoint::new("replay", Some(41)),
            Checkpoint {
                source: "x-search".into(),
                after: Some(1_234_567_890_123_456_789_012),
                open_poll: Some(OpenPoll {
                    newest: u128::MAX,
                    until: 1_234_567_890_123_456_789_999,
                }),
            },
        ];
        for c in cases {
            let encoded = c.encode();
            assert!(encoded.len() < MAX_ENCODED, "{encoded}");
            assert_eq!(Checkpoint::decode(&encoded), Some(c));
        }
    }

    #[test]
    fn metadata_of_another_writer_is_not_a_checkpoint() {
        assert_eq!(Checkpoint::decode(""), None);
        assert_eq!(Checkpoint::decode("wm=12;idle"), None);
        assert_eq!(
            Checkpoint::decode(r#"{"source":"x-search","after":"x"}"#),
            None
        );
    }
}
