//! Where a restarted producer picks up.
//!
//! First from the stream's checkpoint (see [`super::checkpoint`]): one
//! round trip, whatever the size of the topic. A stream without one (new, or
//! last run by a version that did not write checkpoints) reads back the tail
//! of every partition of the topic (committed records only) and finds the
//! newest position this stream already published; the producer then commits
//! a checkpoint at once, so this happens at most once per stream.
//!
//! The read-back is bounded: it looks at most [`MAX_SPAN`] records back per
//! partition. A stream whose last record lies further back than that (or
//! that never published to a topic others fill) starts as new. Without the
//! bound, a new stream on a busy shared topic read every partition whole,
//! and past the time limit the producer failed and restarted forever.
//!
//! Positions grow across transactions (tweet ids per search poll, sequence
//! numbers per synthetic or replay batch), but not necessarily within one:
//! a search poll is published newest page first. So per partition, the
//! newest position is the maximum over a window that holds the whole last
//! transaction, which is certain once the window shows a rise (the start of
//! a later transaction) or reaches the start of the partition. The window
//! starts small and grows until it does.

use super::checkpoint::{self, Checkpoint, CheckpointGroup};
use super::metrics::Metrics;
use crate::kafka::{self, AuthContext, AuthWatch};
use crate::shutdown::Shutdown;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use std::time::{Duration, Instant};
use twitterstream_contract::header;
use twitterstream_contract::kafka::{KafkaSecurity, KafkaSecurityError};
use twitterstream_contract::refusal::{Refusal, Resource};

/// Which position a stream resumes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Position {
    /// The record key, a tweet id (x-search: the next poll's `since_id`).
    TweetId,
    /// The `seq` header (synthetic and replay).
    Seq,
}

#[derive(Debug, Clone)]
pub(crate) struct ResumeQuery {
    pub(crate) brokers: Vec<String>,
    pub(crate) topic: String,
    pub stream: String,
    /// `<namespace>.<name>`: names the checkpoint group.
    pub(crate) qualified: String,
    /// Records and checkpoints of this source count; others (a stream that
    /// switched source) are ignored.
    pub(crate) source: String,
    pub(crate) position: Position,
    /// Gives up after this long (a broker that does not answer).
    pub(crate) timeout: Duration,
    /// TLS and SASL.
    pub(crate) security: KafkaSecurity,
    /// Where denied reads are reported.
    pub(crate) auth: AuthWatch,
}

/// Who asks, for the watch's denials.
const RESUME: &str = "producer resume";

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
    #[error("Kafka security settings: {0}")]
    Security(#[source] KafkaSecurityError),
    #[error("the resume reader panicked: {0}")]
    Join(String),
}

impl ResumeError {
    /// The ACL the reader lacked: DESCRIBE on the topic (its offsets and
    /// records), READ on the checkpoint group.
    fn denial(&self, q: &ResumeQuery) -> Option<Refusal> {
        let ResumeError::Kafka { source, .. } = self else {
            return None;
        };
        let code = source.rdkafka_error_code()?;
        match code {
            RDKafkaErrorCode::GroupAuthorizationFailed => Refusal::denied(
                code,
                "READ",
                Resource::Group(checkpoint::group_id(&q.qualified)),
            ),
            _ => Refusal::denied(code, "DESCRIBE", Resource::Topic(q.topic.clone())),
        }
    }

    /// Whether trying again later can help (the broker is away or slow).
    pub(crate) fn is_transient(&self) -> bool {
        matches!(
            self,
            ResumeError::Kafka { .. } | ResumeError::Timeout { .. }
        )
    }
}

const INITIAL_SPAN: i64 = 2_048;
/// How far back the read-back looks per partition: three growth steps.
pub const MAX_SPAN: i64 = INITIAL_SPAN * 64;

/// Where the stream resumes, and how that was found.
#[derive(Debug)]
pub(crate) struct Resume {
    pub(crate) checkpoint: Checkpoint,
    /// False when it came from reading the topic back (or nothing was
    /// found): the producer commits a checkpoint before anything else.
    pub(crate) from_checkpoint: bool,
    /// Records the read-back looked at (0 with a checkpoint).
    pub(crate) scanned: u64,
    /// What to commit checkpoints as.
    pub(crate) group: CheckpointGroup,
}

/// Where the stream resumes: its checkpoint, or the newest position of the
/// stream in the topic (`after: None` when it published nothing yet or the
/// topic does not exist yet).
pub(crate) async fn resume(q: ResumeQuery) -> Result<Resume, ResumeError> {
    tokio::task::spawn_blocking(move || resume_blocking(&q))
        .await
        .map_err(|e| ResumeError::Join(e.to_string()))?
}

/// [`resume`], tried again with a growing delay while Kafka is away or slow.
/// `None` on shutdown.
pub(crate) async fn resume_retrying(
    q: ResumeQuery,
    metrics: &Metrics,
    shutdown: &mut Shutdown,
) -> Result<Option<Resume>, ResumeError> {
    let mut delay = Duration::from_secs(1);
    loop {
        let r = tokio::select! {
            r = resume(q.clone()) => r,
            _ = shutdown.wait() => return Ok(None),
        };
        match r {
            Ok(found) => {
                q.auth.allowed(RESUME);
                metrics.resume_records_scanned.inc_by(found.scanned);
                tracing::info!(
                    from_checkpoint = found.from_checkpoint,
                    scanned = found.scanned,
                    checkpoint = %found.checkpoint.encode(),
                    "resuming"
                );
                return Ok(Some(found));
            }
            Err(e) if e.is_transient() => {
                if let Some(refusal) = e.denial(&q) {
                    q.auth.denied(RESUME, refusal);
                }
                metrics.publish_errors.inc();
                tracing::warn!(error = %e, retry_in = ?delay, "cannot find where to resume; retrying");
                if !shutdown.sleep(delay).await {
                    return Ok(None);
                }
                delay = (delay * 2).min(Duration::from_secs(60));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The maximum of `values` when they prove to cover the partition's last
/// transaction; `None` when the window must grow.
pub(crate) fn window_max(values: &[u128], at_partition_start: bool) -> Option<Option<u128>> {
    let rises = values.windows(2).any(|w| w[1] > w[0]);
    if rises || at_partition_start {
        Some(values.iter().copied().max())
    } else {
        None
    }
}

pub(crate) fn resume_blocking(q: &ResumeQuery) -> Result<Resume, ResumeError> {
    let deadline = Instant::now() + q.timeout;
    let consumer: BaseConsumer<AuthContext> =
        kafka::client_config(&q.brokers.join(","), &q.security)
            .map_err(ResumeError::Security)?
            .set("group.id", checkpoint::group_id(&q.qualified))
            // Also makes the offset fetch wait for a checkpoint whose
            // transaction is still being completed (KIP-447's require_stable).
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .create_with_context(AuthContext::for_group(
                &q.auth,
                RESUME,
                checkpoint::group_id(&q.qualified),
            ))
            .map_err(|source| ResumeError::Create {
                brokers: q.brokers.join(","),
                source: Box::new(source),
            })?;
    let result = find(&consumer, q, deadline).and_then(|(checkpoint, from_checkpoint, scanned)| {
        let metadata = consumer
            .group_metadata()
            .ok_or_else(|| ResumeError::Kafka {
                topic: q.topic.clone(),
                what: "checkpoint group".into(),
                source: Box::new(KafkaError::Global(RDKafkaErrorCode::InvalidGroupId)),
            })?;
        Ok(Resume {
            checkpoint,
            from_checkpoint,
            scanned,
            group: CheckpointGroup {
                metadata,
                topic: q.topic.clone(),
            },
        })
    });
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

fn find(
    consumer: &BaseConsumer<AuthContext>,
    q: &ResumeQuery,
    deadline: Instant,
) -> Result<(Checkpoint, bool, u64), ResumeError> {
    if let Some(c) = read_checkpoint(consumer, q, deadline)? {
        return Ok((c, true, 0));
    }
    let (after, scanned) = read_back(consumer, q, deadline)?;
    Ok((Checkpoint::new(&q.source, after), false, scanned))
}

/// The group's committed offsets of `tpl`, asked in slices between which the
/// client's events are served: a group the ACLs deny fails only the
/// coordinator lookup, reported to the error callback, which a consumer
/// with a group serves only when polled (the call sat out its 120 s, and
/// the producer said nothing).
fn committed_serving_events(
    consumer: &BaseConsumer<AuthContext>,
    tpl: &TopicPartitionList,
    deadline: Instant,
) -> Result<TopicPartitionList, KafkaError> {
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let slice = remaining.min(Duration::from_secs(1));
        let r = consumer.committed_offsets(tpl.clone(), Timeout::After(slice));
        // No partition is assigned yet: this serves events only.
        while consumer.poll(Duration::ZERO).is_some() {}
        match r {
            Err(KafkaError::OffsetFetch(RDKafkaErrorCode::OperationTimedOut))
                if Instant::now() < deadline => {}
            r => return r,
        }
    }
}

/// The stream's committed checkpoint, if it has one from this source.
fn read_checkpoint(
    consumer: &BaseConsumer<AuthContext>,
    q: &ResumeQuery,
    deadline: Instant,
) -> Result<Option<Checkpoint>, ResumeError> {
    let kafka = |what: &str, source| ResumeError::Kafka {
        topic: q.topic.clone(),
        what: what.to_owned(),
        source: Box::new(source),
    };
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&q.topic, 0);
    let committed = match committed_serving_events(consumer, &tpl, deadline) {
        Ok(c) => c,
        // The topic does not exist yet: nothing was published.
        Err(KafkaError::OffsetFetch(RDKafkaErrorCode::UnknownTopicOrPartition)) => {
            return Ok(None);
        }
        Err(e) => return Err(kafka("fetching the checkpoint", e)),
    };
    let Some(e) = committed.find_partition(&q.topic, 0) else {
        return Ok(None);
    };
    if let Err(err) = e.error()
        && err.rdkafka_error_code() != Some(RDKafkaErrorCode::UnknownTopicOrPartition)
    {
        return Err(kafka("fetching the checkpoint", err));
    }
    let found = Checkpoint::decode(e.metadata());
    Ok(match found {
        Some(c) if c.source == q.source => Some(c),
        Some(c) => {
            tracing::info!(
                previous = %c.source,
                source = %q.source,
                "the checkpoint is another source's; reading the topic back"
            );
            None
        }
        None => None,
    })
}

/// The newest position of the stream within [`MAX_SPAN`] records of the end
/// of each partition, and how many records that read.
fn read_back(
    consumer: &BaseConsumer<AuthContext>,
    q: &ResumeQuery,
    deadline: Instant,
) -> Result<(Option<u128>, u64), ResumeError> {
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
        return Ok((None, 0));
    };
    if let Some(e) = topic.error() {
        let code = RDKafkaErrorCode::from(e);
        if code == RDKafkaErrorCode::UnknownTopicOrPartition {
            return Ok((None, 0));
        }
        return Err(kafka("metadata", KafkaError::MetadataFetch(code)));
    }
    let partitions: Vec<i32> = topic.partitions().iter().map(|p| p.id()).collect();
    let mut best: Option<u128> = None;
    let mut scanned = 0u64;
    for p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(&q.topic, p, remaining())
            .map_err(|e| kafka("watermarks", e))?;
        if high <= low {
            continue;
        }
        let mut span = INITIAL_SPAN;
        // Each step reads only the records before the previous one.
        let mut values: Vec<u128> = Vec::new();
        let mut end = high;
        loop {
            let start = (high - span).max(low);
            let mut earlier = read_window(consumer, q, p, start, end, deadline)?;
            scanned += u64::try_from(end - start).unwrap_or(0);
            earlier.append(&mut values);
            values = earlier;
            end = start;
            let found = match q.position {
                // Sequence numbers rise within a transaction too.
                Position::Seq if !values.is_empty() => Some(values.iter().copied().max()),
                _ => window_max(&values, start == low),
            };
            if let Some(m) = found {
                best = best.max(m);
                break;
            }
            if span >= MAX_SPAN {
                // What was seen is part of the last transaction at best.
                best = best.max(values.iter().copied().max());
                tracing::warn!(
                    partition = p,
                    records = span,
                    "no complete transaction of this stream near the end of the partition; not looking further back"
                );
                break;
            }
            span = span.saturating_mul(8).min(MAX_SPAN);
        }
    }
    Ok((best, scanned))
}

/// The positions of this stream's records in `[start, end)`, in offset order.
fn read_window(
    consumer: &BaseConsumer<AuthContext>,
    q: &ResumeQuery,
    partition: i32,
    start: i64,
    end: i64,
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
                // Past the end: commit markers and aborted records before
                // `end` are never delivered, so the first record after it
                // (or the partition's end) is where this window stops.
                if offset >= end {
                    break;
                }
                if let Some(v) = position_of(&m, q) {
                    values.push(v);
                }
                if offset + 1 >= end {
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
            header::STREAM => stream_ok = value == Some(q.stream.as_str()),
            header::SOURCE => source_ok = value == Some(q.source.as_str()),
            header::SEQ => seq = value.and_then(|v| v.parse::<u128>().ok()),
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
