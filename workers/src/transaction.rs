//! The one Kafka transaction code path both workers use: begin, send, add
//! the input offsets (or the producer's checkpoint), commit, and abort
//! whatever failed.
//!
//! Every call here blocks on broker round trips, so async callers run them
//! on a blocking thread. A transaction ends in one of three ways: committed;
//! [`TxnError::Aborted`] (nothing of it is visible and the producer is still
//! good: the caller sends or computes the same records again); or
//! [`TxnError::Fatal`] (fenced by a newer instance, or the abort failed too:
//! the producer must be recreated, or the process stop).

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::ToBytes;
use rdkafka::producer::{BaseRecord, Partitioner, Producer, ProducerContext};
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::util::IntoOpaque;
use std::time::{Duration, Instant};

/// How often the in-flight count is checked while a commit waits for
/// delivery.
const DRAIN_CHECK: Duration = Duration::from_micros(500);
/// How long a send waits for room when librdkafka's queue is full; its
/// polling thread drains delivery reports meanwhile.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(2);
/// Attempts of a commit or abort that fails with a retriable error.
const ATTEMPTS: u32 = 5;

/// How a transaction failed.
#[derive(Debug, thiserror::Error)]
pub enum TxnError {
    /// Aborted: none of its records are visible; the producer is usable.
    #[error("Kafka transaction aborted after {op} failed: {source}")]
    Aborted {
        op: &'static str,
        #[source]
        source: KafkaError,
    },
    /// The producer cannot go on: fenced by a newer instance with the same
    /// transactional id, a fatal librdkafka error, or a failed abort.
    #[error("fatal Kafka producer error during {op} (fenced by a newer instance?): {source}")]
    Fatal {
        op: &'static str,
        #[source]
        source: KafkaError,
    },
}

impl TxnError {
    pub(crate) fn is_fatal(&self) -> bool {
        matches!(self, TxnError::Fatal { .. })
    }
}

fn is_fatal(e: &KafkaError) -> bool {
    matches!(e, KafkaError::Transaction(t) if t.is_fatal())
}

fn is_retriable(e: &KafkaError) -> bool {
    matches!(e, KafkaError::Transaction(t) if t.is_retriable())
}

/// Begins a transaction. A failure is [`TxnError::Fatal`]: beginning fails
/// only when the producer is in the wrong state (a transaction still open,
/// or fenced), which retrying the same producer does not fix.
pub(crate) fn begin<C, Part, P>(producer: &P) -> Result<(), TxnError>
where
    C: ProducerContext<Part>,
    Part: Partitioner,
    P: Producer<C, Part>,
{
    producer
        .begin_transaction()
        .map_err(|source| TxnError::Fatal {
            op: "begin_transaction",
            source,
        })
}

/// Enqueues a record of the open transaction, waiting (by blocking briefly)
/// while librdkafka's queue is full rather than dropping it. A failure
/// leaves the transaction open: the caller [`abort`]s it.
pub(crate) fn send<'a, K, V, D>(
    mut record: BaseRecord<'a, K, V, D>,
    mut try_send: impl FnMut(
        BaseRecord<'a, K, V, D>,
    ) -> Result<(), (KafkaError, BaseRecord<'a, K, V, D>)>,
) -> KafkaResult<()>
where
    K: ToBytes + ?Sized,
    V: ToBytes + ?Sized,
    D: IntoOpaque,
{
    loop {
        match try_send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                std::thread::sleep(QUEUE_FULL_WAIT);
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Commits the open transaction together with `offsets` (a consumer's input
/// positions, or the producer's checkpoint) when given. Retriable failures
/// are retried; any other failure aborts the transaction.
pub(crate) fn commit<C, Part, P>(
    producer: &P,
    offsets: Option<(&TopicPartitionList, &ConsumerGroupMetadata)>,
    timeout: Duration,
) -> Result<(), TxnError>
where
    C: ProducerContext<Part>,
    Part: Partitioner,
    P: Producer<C, Part>,
{
    if let Some((tpl, group)) = offsets
        && let Err(e) = producer.send_offsets_to_transaction(tpl, group, timeout)
    {
        return Err(abort_after(
            producer,
            "send_offsets_to_transaction",
            e,
            timeout,
        ));
    }
    let mut attempts = 0;
    loop {
        attempts += 1;
        match drain_and_commit(producer, timeout) {
            Ok(()) => return Ok(()),
            Err(e) if is_retriable(&e) && attempts < ATTEMPTS => {
                tracing::warn!(error = %e, attempts, "commit_transaction failed with a retriable error; retrying");
                std::thread::sleep(Duration::from_millis(200) * attempts);
            }
            Err(e) => return Err(abort_after(producer, "commit_transaction", e, timeout)),
        }
    }
}

/// Aborts the open transaction after `op` failed with `e`, and says which
/// way the transaction ended.
pub(crate) fn abort_after<C, Part, P>(
    producer: &P,
    op: &'static str,
    e: KafkaError,
    timeout: Duration,
) -> TxnError
where
    C: ProducerContext<Part>,
    Part: Partitioner,
    P: Producer<C, Part>,
{
    if is_fatal(&e) {
        return TxnError::Fatal { op, source: e };
    }
    tracing::warn!(error = %e, op, "the transaction failed; aborting it");
    match abort(producer, timeout) {
        Ok(()) => TxnError::Aborted { op, source: e },
        Err(abort) => abort,
    }
}

/// Aborts the open transaction, discarding its records; retriable failures
/// are retried.
pub(crate) fn abort<C, Part, P>(producer: &P, timeout: Duration) -> Result<(), TxnError>
where
    C: ProducerContext<Part>,
    Part: Partitioner,
    P: Producer<C, Part>,
{
    let mut attempts = 0;
    loop {
        attempts += 1;
        match producer.abort_transaction(timeout) {
            Ok(()) => return Ok(()),
            Err(e) if is_retriable(&e) && attempts < ATTEMPTS => {
                tracing::warn!(error = %e, attempts, "abort_transaction failed; retrying");
                std::thread::sleep(Duration::from_millis(200) * attempts);
            }
            Err(source) => {
                return Err(TxnError::Fatal {
                    op: "abort_transaction",
                    source,
                });
            }
        }
    }
}

/// Commits the open transaction, first waiting for every produced record to
/// be acknowledged.
///
/// rdkafka's `commit_transaction` flushes first, and its flush polls the
/// producer's queue for up to 100 ms per round. When another thread polls the
/// producer (a `ThreadedProducer`'s own, or the producer worker's), that
/// thread takes the delivery reports the flush waits for, so every commit with
/// records in flight stalled for the whole 100 ms (a consumer stage that
/// commits every 100 ms spent half its time there). Once nothing is in flight
/// that flush returns at once; it still guarantees delivery or reports the
/// failure.
fn drain_and_commit<C, Part, P>(producer: &P, timeout: Duration) -> KafkaResult<()>
where
    C: ProducerContext<Part>,
    Part: Partitioner,
    P: Producer<C, Part>,
{
    let deadline = Instant::now() + timeout;
    // A zero-timeout flush only wakes the broker threads so that records
    // waiting out linger.ms go now; its "timed out" is expected.
    let _ = producer.flush(Duration::ZERO);
    while producer.in_flight_count() > 0 && Instant::now() < deadline {
        std::thread::sleep(DRAIN_CHECK);
    }
    producer.commit_transaction(deadline.saturating_duration_since(Instant::now()))
}
