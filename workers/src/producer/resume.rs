//! Where a restarted producer picks up: read back the tail of every
//! partition of the topic (committed records only) and find the newest
//! position this stream already published.
//!
//! The topic is the source of truth, not a side file, so a crash at any
//! point neither re-publishes nor skips: a transaction that committed is in
//! the topic and is resumed after; one that did not is invisible to
//! `read_committed` and is fetched again.
//!
//! Positions grow across transactions (tweet ids per search poll, sequence
//! numbers per synthetic or replay batch), but not necessarily within one:
//! a search poll is published newest page first. So per partition, the
//! newest position is the maximum over a window that holds the whole last
//! transaction, which is certain once the window shows a rise (the start of
//! a later transaction) or reaches the start of the partition. The window
//! starts small and grows until it does.

use super::publisher::{HEADER_SEQ, HEADER_SOURCE, HEADER_STREAM};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, util::Timeout};
use std::time::{Duration, Instant};

/// Which position a stream resumes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// The record key, a tweet id (x-search: the next poll's `since_id`).
    TweetId,
    /// The `seq` header (synthetic and replay).
    Seq,
}

#[derive(Debug, Clone)]
pub struct ResumeQuery {
    pub brokers: Vec<String>,
    pub topic: String,
    pub stream: String,
    /// Records of these sources count; others (a stream that switched
    /// source) are ignored.
    pub sources: Vec<String>,
    pub position: Position,
    /// Gives up after this long (a broker that does not answer).
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error("cannot create the Kafka reader for {brokers}: {source}")]
    Create {
        brokers: String,
        #[source]
        source: Box<KafkaError>,
    },
    #[error("reading back topic {topic}: {what}: {source}")]
    Kafka {
        topic: String,
        what: String,
        #[source]
        source: Box<KafkaError>,
    },
    #[error("reading back topic {topic} took longer than {timeout:?}")]
    Timeout { topic: String, timeout: Duration },
    #[error("the resume reader panicked: {0}")]
    Join(String),
}

const INITIAL_SPAN: i64 = 2_048;

/// The newest position of the stream in the topic, `None` when it has
/// published nothing yet (or the topic does not exist yet).
pub async fn newest_position(q: ResumeQuery) -> Result<Option<u128>, ResumeError> {
    tokio::task::spawn_blocking(move || newest_position_blocking(&q))
        .await
        .map_err(|e| ResumeError::Join(e.to_string()))?
}

/// The maximum of `values` when they prove to cover the partition's last
/// transaction; `None` when the window must grow.
pub fn window_max(values: &[u128], at_partition_start: bool) -> Option<Option<u128>> {
    let rises = values.windows(2).any(|w| w[1] > w[0]);
    if rises || at_partition_start {
        Some(values.iter().copied().max())
    } else {
        None
    }
}

pub fn newest_position_blocking(q: &ResumeQuery) -> Result<Option<u128>, ResumeError> {
    let deadline = Instant::now() + q.timeout;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", q.brokers.join(","))
        .set("group.id", format!("twitterstream-resume-{}", q.stream))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(|source| ResumeError::Create {
            brokers: q.brokers.join(","),
            source: Box::new(source),
        })?;
    let result = read_back(&consumer, q, deadline);
    // Closing the reader can wait on librdkafka's internal timers (100 ms
    // and more); nothing depends on it, so the producer does not wait.
    let closer = std::thread::Builder::new()
        .name("resume-close".into())
        .spawn(move || drop(consumer));
    if let Err(e) = closer {
        // The closure, and the reader with it, was dropped here.
        tracing::debug!(error = %e, "closed the resume reader inline");
    }
    result
}

fn read_back(
    consumer: &BaseConsumer,
    q: &ResumeQuery,
    deadline: Instant,
) -> Result<Option<u128>, ResumeError> {
    let kafka = |what: &str, source| ResumeError::Kafka {
        topic: q.topic.clone(),
        what: what.to_owned(),
        source: Box::new(source),
    };
    let remaining = || Timeout::After(deadline.saturating_duration_since(Instant::now()));
    let md = consumer
        .fetch_metadata(Some(&q.topic), remaining())
        .map_err(|e| kafka("metadata", e))?;
    let Some(topic) = md.topics().iter().find(|t| t.name() == q.topic) else {
        return Ok(None);
    };
    if let Some(e) = topic.error() {
        let code = RDKafkaErrorCode::from(e);
        if code == RDKafkaErrorCode::UnknownTopicOrPartition {
            return Ok(None);
        }
        return Err(kafka("metadata", KafkaError::MetadataFetch(code)));
    }
    let partitions: Vec<i32> = topic.partitions().iter().map(|p| p.id()).collect();
    let mut best: Option<u128> = None;
    for p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(&q.topic, p, remaining())
            .map_err(|e| kafka("watermarks", e))?;
        if high <= low {
            continue;
        }
        let mut span = INITIAL_SPAN;
        loop {
            let start = (high - span).max(low);
            let values = read_window(consumer, q, p, start, high, deadline)?;
            let found = match q.position {
                // Sequence numbers rise within a transaction too.
                Position::Seq if !values.is_empty() => Some(values.iter().copied().max()),
                _ => window_max(&values, start == low),
            };
            if let Some(m) = found {
                best = best.max(m);
                break;
            }
            span = span.saturating_mul(8);
        }
    }
    Ok(best)
}

/// The positions of this stream's records in `[start, end of partition)`,
/// in offset order.
fn read_window(
    consumer: &BaseConsumer,
    q: &ResumeQuery,
    partition: i32,
    start: i64,
    high: i64,
    deadline: Instant,
) -> Result<Vec<u128>, ResumeError> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&q.topic, partition, Offset::Offset(start))
        .map_err(|e| ResumeError::Kafka {
            topic: q.topic.clone(),
            what: "assign".into(),
            source: Box::new(e),
        })?;
    consumer.assign(&tpl).map_err(|e| ResumeError::Kafka {
        topic: q.topic.clone(),
        what: "assign".into(),
        source: Box::new(e),
    })?;
    let mut values = Vec::new();
    loop {
        if Instant::now() >= deadline {
            return Err(ResumeError::Timeout {
                topic: q.topic.clone(),
                timeout: q.timeout,
            });
        }
        match consumer.poll(Duration::from_millis(500)) {
            None => continue,
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => {
                return Err(ResumeError::Kafka {
                    topic: q.topic.clone(),
                    what: format!("reading partition {partition}"),
                    source: Box::new(e),
                });
            }
            Some(Ok(m)) => {
                let offset = m.offset();
                if let Some(v) = position_of(&m, q) {
                    values.push(v);
                }
                // The last data record is followed by at most a commit marker.
                if offset + 1 >= high {
                    break;
                }
            }
        }
    }
    Ok(values)
}

fn position_of<M: Message>(m: &M, q: &ResumeQuery) -> Option<u128> {
    let headers = m.headers()?;
    let mut stream_ok = false;
    let mut source_ok = false;
    let mut seq = None;
    for h in headers.iter() {
        let value = h.value.and_then(|v| std::str::from_utf8(v).ok());
        match h.key {
            HEADER_STREAM => stream_ok = value == Some(q.stream.as_str()),
            HEADER_SOURCE => source_ok = value.is_some_and(|s| q.sources.iter().any(|x| x == s)),
            HEADER_SEQ => seq = value.and_then(|v| v.parse::<u128>().ok()),
            _ => {}
        }
    }
    if !(stream_ok && source_ok) {
        return None;
    }
    match q.position {
        Position::Seq => seq,
        Position::TweetId => std::str::from_utf8(m.key()?).ok()?.parse::<u128>().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_covers_the_last_transaction_only_after_a_rise() {
        // Two polls, each newest first: [9 8 7] then [15 14 12].
        assert_eq!(window_max(&[9, 8, 7, 15, 14, 12], false), Some(Some(15)));
        // Only the tail of the last poll: it might continue further back.
        assert_eq!(window_max(&[14, 12], false), None);
        assert_eq!(window_max(&[14, 12], true), Some(Some(14)));
        assert_eq!(window_max(&[], false), None);
        assert_eq!(window_max(&[], true), Some(None));
        assert_eq!(window_max(&[3, 4], false), Some(Some(4)));
    }
}
