//! Kafka transaction helpers both workers share.

use rdkafka::error::KafkaResult;
use rdkafka::producer::{Partitioner, Producer, ProducerContext};
use std::time::{Duration, Instant};

/// How often the in-flight count is checked while a commit waits for
/// delivery.
const DRAIN_CHECK: Duration = Duration::from_micros(500);

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
pub fn commit<C, Part, P>(producer: &P, timeout: Duration) -> KafkaResult<()>
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
