//! How far a stream's consumer group has got on its input topic: each
//! partition's end (the last stable offset, as the consumers read with
//! `read_committed`) and the group's committed offset with its metadata.

use super::{TopicError, Topics};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use twitterstream_contract::commit::SourceCommit;

/// One partition of the input topic, as the group sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PartitionProgress {
    pub(crate) partition: i32,
    /// The offset the next record appended will get, up to which records
    /// are readable with `read_committed`.
    pub(crate) end: i64,
    /// The group's committed offset; `None` before its first commit.
    pub(crate) committed: Option<i64>,
    /// What that commit says (how far its windows have closed).
    pub(crate) commit: SourceCommit,
}

impl Topics {
    /// The group's progress on every partition of `topic`. One short-lived
    /// client per call: librdkafka reads a group's commits only for the
    /// `group.id` a client is created with, and a client per stream kept
    /// alive would hold its threads and connections for every stream.
    pub(crate) async fn group_progress(
        &self,
        brokers: &str,
        group: &str,
        topic: &str,
        partitions: i32,
    ) -> Result<Vec<PartitionProgress>, TopicError> {
        let _permit = self.progress_probes.acquire().await.ok();
        let mut config = self.config(brokers)?;
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed");
        let (topic, timeout) = (topic.to_string(), self.timeout);
        let brokers = brokers.to_string();
        let unreachable = move |source| TopicError::Unreachable {
            brokers: brokers.clone(),
            source,
        };
        // Blocking calls, and destroying the client joins its threads.
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = config.create()?;
            let all = |offset: Offset| -> Result<TopicPartitionList, TopicError> {
                let mut tpl = TopicPartitionList::with_capacity(partitions as usize);
                for p in 0..partitions {
                    tpl.add_partition_offset(&topic, p, offset)?;
                }
                Ok(tpl)
            };
            // A "timestamp" of -1 (Offset::End) asks for the latest offsets.
            let ends = consumer
                .offsets_for_times(all(Offset::End)?, timeout)
                .map_err(&unreachable)?;
            let committed = consumer
                .committed_offsets(all(Offset::Invalid)?, timeout)
                .map_err(&unreachable)?;
            Ok((0..partitions)
                .map(|p| {
                    let end = ends
                        .find_partition(&topic, p)
                        .and_then(|e| e.offset().to_raw())
                        .unwrap_or(0)
                        .max(0);
                    let c = committed.find_partition(&topic, p);
                    PartitionProgress {
                        partition: p,
                        end,
                        committed: c
                            .as_ref()
                            .and_then(|c| c.offset().to_raw())
                            .filter(|o| *o >= 0),
                        commit: c
                            .map(|c| SourceCommit::decode(c.metadata()))
                            .unwrap_or_default(),
                    }
                })
                .collect())
        })
        .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::ClientConfig;
    use rdkafka::consumer::CommitMode;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    use std::time::Duration;

    /// On librdkafka's in-process mock cluster: 7 records on partition 0,
    /// 3 on partition 1, none on partition 2; the group committed 5 of
    /// partition 0 (with window metadata) and nothing else.
    #[tokio::test]
    async fn reads_the_ends_and_the_groups_commits_with_their_metadata() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("raw", 3, 1).expect("topic");
        let brokers = cluster.bootstrap_servers();
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .expect("producer");
        for (partition, n) in [(0, 7), (1, 3)] {
            for _ in 0..n {
                producer
                    .send(
                        BaseRecord::<str, str>::to("raw")
                            .partition(partition)
                            .payload("t"),
                    )
                    .map_err(|(e, _)| e)
                    .expect("send");
            }
        }
        producer.flush(Duration::from_secs(10)).expect("flush");
        let committer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "g")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("raw", 0, Offset::Offset(5))
            .expect("offset");
        let metadata = SourceCommit {
            closed_until_ms: Some(20_000),
            ..SourceCommit::default()
        }
        .encode();
        tpl.find_partition("raw", 0)
            .expect("partition 0")
            .set_metadata(metadata);
        committer.commit(&tpl, CommitMode::Sync).expect("commit");

        let topics = Topics::new(Duration::from_secs(10));
        let progress = topics
            .group_progress(&brokers, "g", "raw", 3)
            .await
            .expect("progress");
        let got: Vec<_> = progress
            .iter()
            .map(|p| (p.partition, p.end, p.committed, p.commit.closed_until_ms))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 7, Some(5), Some(20_000)),
                (1, 3, None, None),
                (2, 0, None, None)
            ]
        );
    }
}
