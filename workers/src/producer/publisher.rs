//! The Kafka side: one record per tweet, published in transactions.
//!
//! A transaction is the unit of progress. The caller begins one, sends a
//! poll's (or a batch's) records, commits, and only then advances its cursor.
//! A failed delivery makes librdkafka put the transaction in an abortable
//! state, so the commit fails, the transaction is aborted and the caller
//! re-sends (or re-fetches) the same tweets: nothing is dropped silently and
//! nothing half-delivered becomes visible to `read_committed` readers. The
//! stable `transactional.id` per stream makes a restarted producer fence its
//! predecessor (a zombie that is still running, or the open transaction a
//! killed process left behind) in `init_transactions`.

use super::checkpoint::{Checkpoint, CheckpointGroup};
use super::format::decimal;
use super::identity::transactional_id;
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use twitterstream_contract::header;

/// How long a transaction may stay open. A search poll is one transaction
/// and may page through rate-limit waits, so this is generous; brokers cap
/// it at `transaction.max.timeout.ms` (15 minutes by default).
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(600);
/// Bounds commit/abort/init calls, which block on broker round trips.
const TXN_CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the polling thread waits for librdkafka events per call.
/// rdkafka's poll spins through the last millisecond of each call, so
/// shorter intervals cost CPU.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot create the Kafka producer for {brokers}: {source}")]
    Create {
        brokers: String,
        #[source]
        source: KafkaError,
    },
    #[error("Kafka transaction {op} failed: {source}")]
    Transaction {
        op: &'static str,
        #[source]
        source: KafkaError,
    },
    /// The transaction was aborted: its records are not visible, so the
    /// caller sends them again (or re-fetches them).
    #[error("Kafka transaction aborted after {op} failed: {source}")]
    Aborted {
        op: &'static str,
        #[source]
        source: KafkaError,
    },
    /// Another producer with the same transactional id took over, or
    /// librdkafka hit an unrecoverable error: this process must stop.
    #[error("fatal Kafka producer error during {op} (fenced by a newer instance?): {source}")]
    Fatal {
        op: &'static str,
        #[source]
        source: KafkaError,
    },
    #[error("producing to {topic} failed: {source}")]
    Send {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("a Kafka producer call panicked or was cancelled: {0}")]
    Join(String),
}

impl PublishError {
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            PublishError::Fatal { .. } | PublishError::Create { .. }
        )
    }
}

/// Delivery outcomes, counted by librdkafka's delivery callback.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
}

/// Routes librdkafka's logs and delivery reports into tracing and counters.
#[derive(Debug, Clone)]
pub struct DeliveryContext {
    stats: Arc<DeliveryStats>,
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", fac, "{log_message}"),
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", fac, "{log_message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", fac, "{log_message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", fac, "{log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", %error, reason, "Kafka client error");
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                let n = self.stats.failed.fetch_add(1, Ordering::Relaxed);
                // One line per failure would flood the log when a broker is
                // down; the count is in the metrics.
                if n.is_power_of_two() || n == 0 {
                    tracing::warn!(error = %e, failed_so_far = n + 1, "Kafka delivery failed; the transaction will be aborted and retried");
                }
            }
        }
    }
}

/// Where and what to publish.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    pub brokers: Vec<String>,
    pub topic: String,
    /// The stream's name, stamped on every record.
    pub stream: String,
    /// `<namespace>.<name>`: the transactional id's base.
    pub qualified_stream: String,
    pub keyword: Option<String>,
    pub source: &'static str,
    /// `lz4` or `zstd`.
    pub compression: &'static str,
}

impl PublisherConfig {
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.brokers.join(","))
            .set("client.id", transactional_id(&self.qualified_stream))
            .set("transactional.id", transactional_id(&self.qualified_stream))
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("max.in.flight.requests.per.connection", "5")
            .set("compression.type", self.compression)
            .set(
                "transaction.timeout.ms",
                TRANSACTION_TIMEOUT.as_millis().to_string(),
            )
            // Below the transaction timeout, as librdkafka requires; within
            // it the idempotent producer retries a delivery indefinitely.
            .set("message.timeout.ms", "300000")
            // Large batches and a short linger: throughput without holding a
            // poll's records back noticeably.
            .set("linger.ms", "20")
            .set("batch.size", "1000000")
            .set("queue.buffering.max.messages", "1000000")
            // 64 MB keeps librdkafka's sender busy (five requests of three
            // 1 MB batches in flight, and as much again queued) while the
            // records it copies and compresses are still in cache. With 1 GB
            // an unpaced source queued a second or more of records ahead:
            // every commit waited for that backlog, and the sender copied
            // records long out of cache.
            .set("queue.buffering.max.kbytes", "65536")
            // A report per delivered record, although the commit alone says
            // whether all were delivered: with reports, librdkafka hands the
            // delivered records to the polling thread, which frees them.
            // Without, its sending thread frees them itself, and that thread
            // is the bottleneck: reports cut its CPU by about a quarter
            // (500k records: 1.03-1.30 s of its CPU -> 0.84-0.89 s).
            .set("delivery.report.only.error", "false");
        c
    }
}

/// One Kafka record: key = tweet id, value = the tweet's JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TweetRecord {
    pub key: String,
    pub value: String,
    pub seq: Option<u64>,
}

/// A transactional producer for one stream's topic.
///
/// A `BaseProducer` with its own polling thread rather than rdkafka's
/// `ThreadedProducer`, whose drop joins that thread, which polls in 100 ms
/// slices: every exit waited up to that long.
pub struct Publisher {
    producer: Arc<BaseProducer<DeliveryContext>>,
    stop_polling: Arc<AtomicBool>,
    config: PublisherConfig,
    in_transaction: bool,
    checkpoints: Option<Arc<CheckpointGroup>>,
}

impl Drop for Publisher {
    /// Stops the polling thread without waiting for it: it ends within a
    /// poll interval and releases the producer then (librdkafka's teardown
    /// runs there, or not at all if the process exits first, which loses
    /// nothing: records are only ever acknowledged by committing).
    fn drop(&mut self) {
        self.stop_polling.store(true, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("config", &self.config)
            .field("in_transaction", &self.in_transaction)
            .finish_non_exhaustive()
    }
}

/// What to do with a failed transactional call.
fn classify(op: &'static str, e: KafkaError) -> PublishError {
    match &e {
        KafkaError::Transaction(t) if t.is_fatal() => PublishError::Fatal { op, source: e },
        _ => PublishError::Transaction { op, source: e },
    }
}

fn requires_abort(e: &KafkaError) -> bool {
    matches!(e, KafkaError::Transaction(t) if t.txn_requires_abort())
}

fn retriable(e: &KafkaError) -> bool {
    matches!(e, KafkaError::Transaction(t) if t.is_retriable())
}

impl Publisher {
    pub fn new(config: PublisherConfig) -> Result<Self, PublishError> {
        let stats = Arc::new(DeliveryStats::default());
        let producer: Arc<BaseProducer<DeliveryContext>> = Arc::new(
            config
                .client_config()
                .create_with_context(DeliveryContext {
                    stats: stats.clone(),
                })
                .map_err(|source| PublishError::Create {
                    brokers: config.brokers.join(","),
                    source,
                })?,
        );
        // Serves librdkafka's event queue: delivery failures, client errors.
        let stop = Arc::new(AtomicBool::new(false));
        {
            let producer = producer.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("kafka-poll".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        producer.poll(POLL_INTERVAL);
                    }
                })
                .map_err(|e| PublishError::Join(format!("cannot start the polling thread: {e}")))?;
        }
        Ok(Self {
            producer,
            stop_polling: stop,
            config,
            in_transaction: false,
            checkpoints: None,
        })
    }

    pub fn in_transaction(&self) -> bool {
        self.in_transaction
    }

    /// A cheap handle for readiness checks from other tasks.
    pub fn readiness_probe(&self) -> impl Fn(Duration) -> bool + Send + Sync + 'static {
        let producer = self.producer.clone();
        let topic = self.config.topic.clone();
        move |timeout| {
            producer
                .client()
                .fetch_metadata(Some(&topic), timeout)
                .is_ok_and(|md| {
                    md.topics()
                        .iter()
                        .any(|t| t.name() == topic && t.error().is_none())
                })
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&BaseProducer<DeliveryContext>) -> T + Send + 'static,
    ) -> Result<T, PublishError> {
        let p = self.producer.clone();
        tokio::task::spawn_blocking(move || f(&p))
            .await
            .map_err(|e| PublishError::Join(e.to_string()))
    }

    /// Registers the transactional id with the coordinator, fencing any
    /// earlier producer with the same id and aborting its open transaction.
    /// Retries retriable errors (e.g. the coordinator is still loading).
    pub async fn init_transactions(&self) -> Result<(), PublishError> {
        // Connect to the cluster first. The first metadata answer comes over
        // the bootstrap connection, which librdkafka then retires; the second
        // makes it connect to the broker proper. Without a usable broker,
        // init_transactions waits for a 500 ms retry timer, which was most of
        // a short run's start-up. Failures here are not errors: the
        // transactional calls below retry and report them.
        for _ in 0..2 {
            let topic = self.config.topic.clone();
            self.blocking(move |p| {
                p.client()
                    .fetch_metadata(Some(&topic), Duration::from_secs(10))
                    .is_ok()
            })
            .await?;
        }
        let mut delay = Duration::from_millis(200);
        loop {
            match self
                .blocking(|p| p.init_transactions(TXN_CALL_TIMEOUT))
                .await?
            {
                Ok(()) => return Ok(()),
                Err(e)
                    if retriable(&e)
                        || matches!(&e, KafkaError::Transaction(t) if t.code() == RDKafkaErrorCode::OperationTimedOut) =>
                {
                    tracing::warn!(error = %e, ?delay, "init_transactions failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
                Err(e) => return Err(classify("init_transactions", e)),
            }
        }
    }

    pub fn begin(&mut self) -> Result<(), PublishError> {
        self.producer
            .begin_transaction()
            .map_err(|e| classify("begin_transaction", e))?;
        self.in_transaction = true;
        Ok(())
    }

    /// Enqueues one record of the open transaction. Waits (briefly, by
    /// blocking) while librdkafka's queue is full rather than dropping.
    pub fn send_record(&self, record: &TweetRecord, ingested_at: &str) -> Result<(), PublishError> {
        self.send(&record.key, &record.value, record.seq, ingested_at)
    }

    /// Like [`Publisher::send_record`] without building a record first.
    pub fn send(
        &self,
        key: &str,
        value: &str,
        seq: Option<u64>,
        ingested_at: &str,
    ) -> Result<(), PublishError> {
        let mut seq_digits = [0u8; 20];
        let mut headers = OwnedHeaders::new_with_capacity(5)
            .insert(Header {
                key: header::STREAM,
                value: Some(self.config.stream.as_str()),
            })
            .insert(Header {
                key: header::KEYWORD,
                value: Some(self.config.keyword.as_deref().unwrap_or("")),
            })
            .insert(Header {
                key: header::SOURCE,
                value: Some(self.config.source),
            })
            .insert(Header {
                key: header::INGESTED_AT,
                value: Some(ingested_at),
            });
        if let Some(seq) = seq {
            headers = headers.insert(Header {
                key: header::SEQ,
                value: Some(decimal(seq, &mut seq_digits)),
            });
        }
        let mut r = BaseRecord::to(&self.config.topic)
            .key(key)
            .payload(value)
            .headers(headers);
        loop {
            match self.producer.send(r) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    r = back;
                    // The polling thread drains delivery reports meanwhile.
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((source, _)) => {
                    return Err(PublishError::Send {
                        topic: self.config.topic.clone(),
                        source,
                    });
                }
            }
        }
    }

    /// Where [`Publisher::commit`] writes checkpoints.
    pub fn set_checkpoint_group(&mut self, group: CheckpointGroup) {
        self.checkpoints = Some(Arc::new(group));
    }

    /// Commits the open transaction (flushing its records first), with the
    /// checkpoint it reaches when there is one (and a checkpoint group). On
    /// an abortable failure the transaction is aborted and `Aborted`
    /// returned: none of its records are visible, the caller sends them again.
    pub async fn commit(&mut self, checkpoint: Option<&Checkpoint>) -> Result<(), PublishError> {
        if let (Some(c), Some(group)) = (checkpoint, self.checkpoints.clone()) {
            let tpl = c
                .offsets(&group.topic)
                .map_err(|e| classify("send_offsets_to_transaction", e))?;
            let r = self
                .blocking(move |p| {
                    p.send_offsets_to_transaction(&tpl, &group.metadata, TXN_CALL_TIMEOUT)
                })
                .await?;
            if let Err(e) = r {
                if matches!(&e, KafkaError::Transaction(t) if t.is_fatal()) {
                    self.in_transaction = false;
                    return Err(PublishError::Fatal {
                        op: "send_offsets_to_transaction",
                        source: e,
                    });
                }
                tracing::warn!(error = %e, "adding the checkpoint to the transaction failed; aborting it");
                self.abort().await?;
                return Err(PublishError::Aborted {
                    op: "send_offsets_to_transaction",
                    source: e,
                });
            }
        }
        let mut attempts = 0;
        loop {
            attempts += 1;
            let r = self
                .blocking(|p| crate::transaction::commit(p, TXN_CALL_TIMEOUT))
                .await?;
            match r {
                Ok(()) => {
                    self.in_transaction = false;
                    return Ok(());
                }
                Err(e) if retriable(&e) && attempts < 5 => {
                    tracing::warn!(error = %e, attempts, "commit_transaction failed with a retriable error; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * attempts)).await;
                }
                Err(e) if matches!(&e, KafkaError::Transaction(t) if t.is_fatal()) => {
                    self.in_transaction = false;
                    return Err(PublishError::Fatal {
                        op: "commit_transaction",
                        source: e,
                    });
                }
                Err(e) => {
                    let must_abort = requires_abort(&e);
                    tracing::warn!(error = %e, must_abort, "commit_transaction failed; aborting the transaction");
                    self.abort().await?;
                    return Err(PublishError::Aborted {
                        op: "commit_transaction",
                        source: e,
                    });
                }
            }
        }
    }

    /// Aborts the open transaction, discarding its records.
    pub async fn abort(&mut self) -> Result<(), PublishError> {
        if !self.in_transaction {
            return Ok(());
        }
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self
                .blocking(|p| p.abort_transaction(TXN_CALL_TIMEOUT))
                .await?
            {
                Ok(()) => {
                    self.in_transaction = false;
                    return Ok(());
                }
                Err(e) if retriable(&e) && attempts < 5 => {
                    tracing::warn!(error = %e, attempts, "abort_transaction failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * attempts)).await;
                }
                Err(e) => {
                    self.in_transaction = false;
                    return Err(PublishError::Fatal {
                        op: "abort_transaction",
                        source: e,
                    });
                }
            }
        }
    }

    /// Waits for every enqueued record's delivery report.
    pub async fn flush(&self, timeout: Duration) -> Result<(), PublishError> {
        self.blocking(move |p| p.flush(timeout))
            .await?
            .map_err(|e| classify("flush", e))
    }
}
