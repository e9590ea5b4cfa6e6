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
use crate::kafka::{self, AuthWatch};
use crate::transaction::{self, TxnError};
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
use twitterstream_contract::kafka::{KafkaSecurity, KafkaSecurityError};
use twitterstream_contract::refusal::{Refusal, Resource};

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
    #[error("Kafka security settings: {0}")]
    Security(#[source] KafkaSecurityError),
    #[error("Kafka init_transactions failed: {0}")]
    Init(#[source] KafkaError),
    /// A transaction that did not commit: `Aborted` (its records are not
    /// visible; the caller sends or fetches them again) or `Fatal`.
    #[error(transparent)]
    Transaction(#[from] TxnError),
    #[error("cannot add the checkpoint to the transaction: {0}")]
    Checkpoint(#[source] KafkaError),
    #[error("producing to {topic} failed: {source}")]
    Send {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("flushing the Kafka producer failed: {0}")]
    Flush(#[source] KafkaError),
    #[error("a Kafka producer call panicked or was cancelled: {0}")]
    Join(String),
}

impl PublishError {
    /// Another producer with the same transactional id took over, or the
    /// producer is unusable: this process must stop.
    pub(crate) fn is_fatal(&self) -> bool {
        match self {
            PublishError::Transaction(e) => e.is_fatal(),
            PublishError::Create { .. } | PublishError::Init(_) | PublishError::Security(_) => true,
            _ => false,
        }
    }
}

/// Delivery outcomes, counted by librdkafka's delivery callback.
#[derive(Debug, Default)]
pub(crate) struct DeliveryStats {
    pub(crate) delivered: AtomicU64,
    pub(crate) failed: AtomicU64,
}

/// Routes librdkafka's logs and delivery reports into tracing and counters.
#[derive(Debug, Clone)]
pub(crate) struct DeliveryContext {
    stats: Arc<DeliveryStats>,
    auth: AuthWatch,
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.auth.client_log(fac, log_message);
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
        if !self.auth.client_error(&error, reason) {
            tracing::warn!(target: "librdkafka", %error, reason, "Kafka client error");
        }
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
pub(crate) struct PublisherConfig {
    pub(crate) brokers: Vec<String>,
    pub(crate) topic: String,
    /// The stream's name, stamped on every record.
    pub stream: String,
    /// `<namespace>.<name>`: the transactional id's base.
    pub(crate) qualified_stream: String,
    pub(crate) keyword: Option<String>,
    pub(crate) source: &'static str,
    /// `lz4` or `zstd`.
    pub(crate) compression: &'static str,
    /// TLS and SASL.
    pub(crate) security: KafkaSecurity,
    /// Where the producer's authentication failures are reported.
    pub(crate) auth: AuthWatch,
}

impl PublisherConfig {
    pub(crate) fn client_config(&self) -> Result<ClientConfig, KafkaSecurityError> {
        let mut c = kafka::client_config(&self.brokers.join(","), &self.security)?;
        c.set("client.id", transactional_id(&self.qualified_stream))
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
        Ok(c)
    }
}

/// One Kafka record: key = tweet id, value = the tweet's JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TweetRecord {
    pub(crate) key: String,
    pub(crate) value: String,
    pub(crate) seq: Option<u64>,
}

/// A transactional producer for one stream's topic.
///
/// A `BaseProducer` with its own polling thread rather than rdkafka's
/// `ThreadedProducer`, whose drop joins that thread, which polls in 100 ms
/// slices: every exit waited up to that long.
pub(crate) struct Publisher {
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

/// Who asks, for the watch's denials.
const INIT: &str = "producer transactions";

fn retriable(e: &KafkaError) -> bool {
    matches!(e, KafkaError::Transaction(t) if t.is_retriable())
}

impl Publisher {
    pub(crate) fn new(config: PublisherConfig) -> Result<Self, PublishError> {
        let stats = Arc::new(DeliveryStats::default());
        let producer: Arc<BaseProducer<DeliveryContext>> = Arc::new(
            config
                .client_config()
                .map_err(PublishError::Security)?
                .create_with_context(DeliveryContext {
                    stats: stats.clone(),
                    auth: config.auth.clone(),
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

    /// A cheap handle for readiness checks from other tasks.
    pub(crate) fn readiness_probe(&self) -> impl Fn(Duration) -> bool + Send + Sync + 'static {
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
    pub(crate) async fn init_transactions(&self) -> Result<(), PublishError> {
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
                Ok(()) => {
                    self.config.auth.succeeded();
                    return Ok(());
                }
                Err(e)
                    if retriable(&e)
                        || matches!(&e, KafkaError::Transaction(t) if t.code() == RDKafkaErrorCode::OperationTimedOut) =>
                {
                    tracing::warn!(error = %e, ?delay, "init_transactions failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
                Err(e)
                    if e.rdkafka_error_code()
                        == Some(RDKafkaErrorCode::TransactionalIdAuthorizationFailed) =>
                {
                    // Fatal for this client: waits for the grace, which ends
                    // the run naming the grant (kafka.rs).
                    let id = transactional_id(&self.config.qualified_stream);
                    if let Some(refusal) = Refusal::denied(
                        RDKafkaErrorCode::TransactionalIdAuthorizationFailed,
                        "WRITE",
                        Resource::TransactionalId(id),
                    ) {
                        self.config.auth.denied(INIT, refusal);
                    }
                    std::future::pending::<()>().await;
                }
                Err(e) => return Err(PublishError::Init(e)),
            }
        }
    }

    /// Where [`Publisher::commit`] writes checkpoints.
    pub(crate) fn set_checkpoint_group(&mut self, group: CheckpointGroup) {
        self.checkpoints = Some(Arc::new(group));
    }

    /// Waits for every enqueued record's delivery report.
    pub(crate) async fn flush(&self, timeout: Duration) -> Result<(), PublishError> {
        self.blocking(move |p| p.flush(timeout))
            .await?
            .map_err(PublishError::Flush)
    }
}

/// A transactional producer as the sink drives it: [`Publisher`], or a fake
/// in the sink's tests.
pub(crate) trait Transactions {
    fn in_transaction(&self) -> bool;
    fn begin(&mut self) -> Result<(), PublishError>;
    fn send(
        &self,
        key: &str,
        value: &str,
        seq: Option<u64>,
        ingested_at: &str,
    ) -> Result<(), PublishError>;
    async fn commit(&mut self, checkpoint: Option<&Checkpoint>) -> Result<(), PublishError>;
    async fn abort(&mut self) -> Result<(), PublishError>;
}

impl Transactions for Publisher {
    fn in_transaction(&self) -> bool {
        self.in_transaction
    }

    fn begin(&mut self) -> Result<(), PublishError> {
        transaction::begin(self.producer.as_ref())?;
        self.in_transaction = true;
        Ok(())
    }

    /// Enqueues one record of the open transaction. Waits (briefly, by
    /// blocking) while librdkafka's queue is full rather than dropping.
    fn send(
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
        let r = BaseRecord::to(&self.config.topic)
            .key(key)
            .payload(value)
            .headers(headers);
        // rdkafka's send hands the record back in its error, for a retry.
        #[allow(clippy::result_large_err)]
        let sent = transaction::send(r, |r| self.producer.send(r));
        sent.map_err(|source| PublishError::Send {
            topic: self.config.topic.clone(),
            source,
        })
    }

    /// Commits the open transaction (flushing its records first), with the
    /// checkpoint it reaches when there is one (and a checkpoint group). On
    /// an abortable failure the transaction is aborted and `Aborted`
    /// returned: none of its records are visible, the caller sends them again.
    async fn commit(&mut self, checkpoint: Option<&Checkpoint>) -> Result<(), PublishError> {
        let offsets = match (checkpoint, self.checkpoints.clone()) {
            (Some(c), Some(group)) => Some((
                c.offsets(&group.topic).map_err(PublishError::Checkpoint)?,
                group,
            )),
            _ => None,
        };
        let r = self
            .blocking(move |p| {
                let offsets = offsets.as_ref().map(|(tpl, g)| (tpl, &g.metadata));
                // An interrupted commit is abandoned by its caller's select
                // (rotation, shutdown), not here.
                transaction::commit(p, offsets, TXN_CALL_TIMEOUT, &|| false)
            })
            .await?;
        // Committed, aborted or fatal: no transaction is open any more.
        self.in_transaction = false;
        if r.is_ok() {
            self.config.auth.succeeded();
        }
        Ok(r?)
    }

    /// Aborts the open transaction, discarding its records.
    async fn abort(&mut self) -> Result<(), PublishError> {
        if !self.in_transaction {
            return Ok(());
        }
        let r = self
            .blocking(|p| transaction::abort(p, TXN_CALL_TIMEOUT, &|| false))
            .await?;
        self.in_transaction = false;
        Ok(r?)
    }
}
