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
use std::sync::Arc;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

/// How often the in-flight count is checked while a commit waits for
/// delivery.
const DRAIN_CHECK: Duration = Duration::from_micros(500);
/// How long a send waits for room when librdkafka's queue is full; its
/// polling thread drains delivery reports meanwhile.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(2);
/// Attempts of a commit or abort that fails with a retriable error.
const ATTEMPTS: u32 = 5;
/// How long one `commit_transaction` call may block before the caller's
/// interruption is looked at again. A commit whose brokers refuse the
/// client's login blocked for its whole 5 × 30 s otherwise (a rotation test
/// timed out waiting on it, 1 run in 4, 2026-11-28); a timed-out commit is
/// resumed by calling again, which librdkafka allows.
const INTERRUPT_CHECK: Duration = Duration::from_millis(250);

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
    /// The caller interrupted a commit that could not finish (its brokers
    /// unreachable or refusing the login): the transaction is still open;
    /// the producer is dropped, and the next one with the same
    /// transactional id aborts it when it initialises.
    #[error("Kafka transaction left open: {op} was interrupted")]
    Interrupted { op: &'static str },
    /// `op` did not return long after its timeout (librdkafka's coordinator
    /// requests ignore it: its issue #5456): the transaction is left open,
    /// the producer is dropped once the call returns, and the next one with
    /// the same transactional id fences it and aborts what is left.
    #[error("Kafka transaction left open: {op} did not return within {waited:?}")]
    Stuck { op: &'static str, waited: Duration },
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
/// are retried; any other failure aborts the transaction. While it waits,
/// `interrupted` is asked at least every [`INTERRUPT_CHECK`]; once it says
/// yes, the commit stops with [`TxnError::Interrupted`].
pub(crate) fn commit<C, Part, P>(
    producer: &P,
    offsets: Option<(&TopicPartitionList, &ConsumerGroupMetadata)>,
    timeout: Duration,
    interrupted: &dyn Fn() -> bool,
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
            interrupted,
        ));
    }
    let mut attempts = 0;
    loop {
        attempts += 1;
        match drain_and_commit(producer, timeout, interrupted) {
            Ok(()) => return Ok(()),
            Err(e) if interrupted() => {
                tracing::warn!(error = %e, attempts, "commit_transaction interrupted; leaving the transaction to the next producer");
                return Err(TxnError::Interrupted {
                    op: "commit_transaction",
                });
            }
            Err(e) if is_retriable(&e) && attempts < ATTEMPTS => {
                tracing::warn!(error = %e, attempts, "commit_transaction failed with a retriable error; retrying");
                std::thread::sleep(Duration::from_millis(200) * attempts);
            }
            Err(e) => {
                return Err(abort_after(
                    producer,
                    "commit_transaction",
                    e,
                    timeout,
                    interrupted,
                ));
            }
        }
    }
}

/// How long past its own timeout a `send_offsets_to_transaction` is waited
/// for before it counts as stuck.
const STUCK_AFTER: Duration = Duration::from_secs(5);

/// Adds `offsets` (a consumer's positions in `group`) to the open
/// transaction, on a thread of its own, asking `interrupted` at least every
/// [`INTERRUPT_CHECK`] while it waits. librdkafka's
/// `send_offsets_to_transaction` blocks past its timeout for as long as the
/// group coordinator cannot be reached (its issue #5456): after a rotation
/// whose new password the brokers already enforced, a CI run's aggregate
/// stage sat in it for 2 min, never logged in again, and its windows never
/// came (2026-12-07). Interrupted, or still blocked [`STUCK_AFTER`] past
/// `timeout`, the call is left to its thread, which holds the producer until
/// it returns; the caller ends its session.
pub(crate) fn send_offsets<C, Part, P>(
    producer: &Arc<P>,
    offsets: &TopicPartitionList,
    group: ConsumerGroupMetadata,
    timeout: Duration,
    interrupted: &dyn Fn() -> bool,
) -> Result<(), TxnError>
where
    C: ProducerContext<Part>,
    Part: Partitioner,
    P: Producer<C, Part> + Send + Sync + 'static,
{
    const OP: &str = "send_offsets_to_transaction";
    let (tx, rx) = std::sync::mpsc::channel();
    let (waiting, tpl) = (Arc::clone(producer), offsets.clone());
    let spawned = std::thread::Builder::new()
        .name("send-offsets".to_owned())
        .spawn(move || {
            let sent = waiting.send_offsets_to_transaction(&tpl, &group, timeout);
            // The caller may have stopped waiting.
            let _ = tx.send(sent);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no thread for send_offsets_to_transaction");
        return Err(TxnError::Stuck {
            op: OP,
            waited: Duration::ZERO,
        });
    }
    let started = Instant::now();
    loop {
        match rx.recv_timeout(INTERRUPT_CHECK) {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => return Err(abort_after(producer.as_ref(), OP, e, timeout, interrupted)),
            Err(RecvTimeoutError::Timeout) if interrupted() => {
                return Err(TxnError::Interrupted { op: OP });
            }
            Err(RecvTimeoutError::Timeout) if started.elapsed() > timeout + STUCK_AFTER => {
                return Err(TxnError::Stuck {
                    op: OP,
                    waited: started.elapsed(),
                });
            }
            Err(RecvTimeoutError::Timeout) => {}
            // The thread ended without an answer (it panicked).
            Err(RecvTimeoutError::Disconnected) => {
                return Err(TxnError::Stuck {
                    op: OP,
                    waited: started.elapsed(),
                });
            }
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
    interrupted: &dyn Fn() -> bool,
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
    match abort(producer, timeout, interrupted) {
        Ok(()) => TxnError::Aborted { op, source: e },
        Err(abort) => abort,
    }
}

/// Aborts the open transaction, discarding its records: retried for up to
/// `ATTEMPTS` times `timeout`, in short calls, so that `interrupted` (the
/// brokers refuse a rotated login) stops it with
/// [`TxnError::Interrupted`]: a CI run's stage sat in a refused abort for
/// over a minute and never logged in again. The next producer with the
/// same transactional id aborts what is left open.
pub(crate) fn abort<C, Part, P>(
    producer: &P,
    timeout: Duration,
    interrupted: &dyn Fn() -> bool,
) -> Result<(), TxnError>
where
    C: ProducerContext<Part>,
    Part: Partitioner,
    P: Producer<C, Part>,
{
    let deadline = Instant::now() + timeout * ATTEMPTS;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match producer.abort_transaction(left.min(INTERRUPT_CHECK)) {
            Ok(()) => return Ok(()),
            Err(_) if interrupted() => {
                return Err(TxnError::Interrupted {
                    op: "abort_transaction",
                });
            }
            // A timed-out abort is resumed by calling it again.
            Err(e) if is_retriable(&e) && !left.is_zero() => {}
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
/// be acknowledged. Returns librdkafka's retriable "timed out" early when
/// `interrupted` says so.
///
/// rdkafka's `commit_transaction` flushes first, and its flush polls the
/// producer's queue for up to 100 ms per round. When another thread polls the
/// producer (a `ThreadedProducer`'s own, or the producer worker's), that
/// thread takes the delivery reports the flush waits for, so every commit with
/// records in flight stalled for the whole 100 ms (a consumer stage that
/// commits every 100 ms spent half its time there). Once nothing is in flight
/// that flush returns at once; it still guarantees delivery or reports the
/// failure.
fn drain_and_commit<C, Part, P>(
    producer: &P,
    timeout: Duration,
    interrupted: &dyn Fn() -> bool,
) -> KafkaResult<()>
where
    C: ProducerContext<Part>,
    Part: Partitioner,
    P: Producer<C, Part>,
{
    let deadline = Instant::now() + timeout;
    // A zero-timeout flush only wakes the broker threads so that records
    // waiting out linger.ms go now; its "timed out" is expected.
    let _ = producer.flush(Duration::ZERO);
    let mut next_check = Instant::now() + INTERRUPT_CHECK;
    while producer.in_flight_count() > 0 && Instant::now() < deadline {
        std::thread::sleep(DRAIN_CHECK);
        if Instant::now() >= next_check {
            if interrupted() {
                break;
            }
            next_check = Instant::now() + INTERRUPT_CHECK;
        }
    }
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match producer.commit_transaction(left.min(INTERRUPT_CHECK)) {
            Err(e) if timed_out(&e) && Instant::now() < deadline && !interrupted() => {}
            r => return r,
        }
    }
}

/// rdkafka's `commit_transaction` flushes first, so its time can run out
/// in the flush (records undelivered) or in the commit itself.
fn timed_out(e: &KafkaError) -> bool {
    match e {
        KafkaError::Flush(code) => *code == RDKafkaErrorCode::OperationTimedOut,
        KafkaError::Transaction(t) => t.code() == RDKafkaErrorCode::OperationTimedOut,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::ClientConfig;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{DefaultProducerContext, ThreadedProducer};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A transaction with a record in flight, on librdkafka's in-process
    /// mock cluster, whose only broker then goes down: its commit cannot
    /// finish.
    fn stuck_transaction(
        cluster: &MockCluster<'static, DefaultProducerContext>,
    ) -> ThreadedProducer<DefaultProducerContext> {
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("transactional.id", "stuck")
            .create()
            .expect("producer");
        producer
            .init_transactions(Duration::from_secs(10))
            .expect("init_transactions");
        begin(&producer).expect("begin");
        // rdkafka's send hands the record back in its error, for a retry.
        #[allow(clippy::result_large_err)]
        send(BaseRecord::<str, str>::to("t").payload("x"), |r| {
            producer.send(r)
        })
        .expect("send");
        cluster.broker_down(1).expect("broker down");
        producer
    }

    /// A consumer group's metadata on the mock cluster, for offsets.
    fn group_metadata(
        cluster: &MockCluster<'static, DefaultProducerContext>,
    ) -> (ConsumerGroupMetadata, TopicPartitionList) {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("group.id", "stuck-group")
            .create()
            .expect("consumer");
        let group = consumer.group_metadata().expect("group metadata");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("in", 0, rdkafka::Offset::Offset(1))
            .expect("offset");
        (group, tpl)
    }

    /// With the group coordinator down, librdkafka's own call blocks past
    /// its timeout (its issue #5456); `send_offsets` returns once asked to.
    #[test]
    fn offsets_sent_to_a_coordinator_that_is_down_stop_soon_after_an_interruption() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        let (group, tpl) = group_metadata(&cluster);
        let producer = Arc::new(stuck_transaction(&cluster));
        interrupted_soon("send", |stop| {
            send_offsets(&producer, &tpl, group, Duration::from_secs(20), stop)
        });
    }

    /// Not interrupted, it still ends within its timeout and
    /// [`STUCK_AFTER`], whatever librdkafka does.
    #[test]
    fn offsets_sent_to_a_coordinator_that_is_down_end_after_their_timeout() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        let (group, tpl) = group_metadata(&cluster);
        let producer = Arc::new(stuck_transaction(&cluster));
        let started = Instant::now();
        let r = send_offsets(&producer, &tpl, group, Duration::from_secs(1), &|| false);
        let took = started.elapsed();
        assert!(r.is_err(), "the coordinator is down, yet {r:?}");
        assert!(
            took < Duration::from_secs(1) + STUCK_AFTER + Duration::from_secs(2),
            "the send took {took:?}"
        );
    }

    #[test]
    fn a_stuck_commit_stops_soon_after_it_is_interrupted() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        let producer = stuck_transaction(&cluster);
        // Before the check, the commit blocked for its whole timeout (here
        // 20 s, 5 times).
        interrupted_soon("commit", |stop| {
            commit(&producer, None, Duration::from_secs(20), stop)
        });
    }

    /// Runs `call`, asked to stop 0.5 s in, and asserts that it stopped as
    /// interrupted within 3 s (it checks every 0.25 s).
    fn interrupted_soon(what: &str, call: impl FnOnce(&dyn Fn() -> bool) -> Result<(), TxnError>) {
        let stop = Arc::new(AtomicBool::new(false));
        let setter = stop.clone();
        let interrupter = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            setter.store(true, Ordering::SeqCst);
        });
        let started = Instant::now();
        let r = call(&|| stop.load(Ordering::SeqCst));
        let took = started.elapsed();
        interrupter.join().expect("interrupter");
        assert!(
            matches!(r, Err(TxnError::Interrupted { .. })),
            "expected an interrupted {what}, got {r:?}"
        );
        assert!(took < Duration::from_secs(3), "the {what} took {took:?}");
    }

    #[test]
    fn an_uninterrupted_commit_waits_for_the_broker_and_succeeds() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        let producer = stuck_transaction(&cluster);
        let r = std::thread::scope(|s| {
            let committing =
                s.spawn(|| commit(&producer, None, Duration::from_secs(20), &|| false));
            std::thread::sleep(Duration::from_millis(1500));
            cluster.broker_up(1).expect("broker up");
            committing.join().expect("committing thread")
        });
        assert!(r.is_ok(), "the commit failed: {r:?}");
    }
}
