//! The Kafka side shared by both stages: a consumer group member whose state
//! is rebuilt from committed offsets on every rebalance, and a transactional
//! producer that commits a stage's output together with its input offsets
//! (consume-transform-produce, KIP-447).
//!
//! Transactions are only ever open inside [`Driver::commit`], which runs
//! between polls; rebalance callbacks run inside polls. So a rebalance never
//! meets an open transaction, and a stage that lost its partitions can at most
//! try to commit with a stale generation, which the broker fences.

use crate::consumer::aggregate::WindowResult;
use crate::consumer::metrics::{Health, Metrics, PartitionLabels, StageLabels};
use crate::consumer::pace::Pace;
use crate::consumer::postgres::WindowSink;
use crate::kafka::{self, AuthContext, AuthWatch};
use crate::transaction::{self, TxnError};
use rdkafka::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::{ClientContext, Message};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use twitterstream_contract::kafka::{KafkaSecurity, KafkaSecurityError};
use twitterstream_contract::refusal::{Refusal, Resource};

const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);
/// The first slice of a [`Driver::bounded`] call; each next one is twice as
/// long, up to [`MAX_SLICE`]: a call slower than its slice is asked again
/// with more time.
const FIRST_SLICE: Duration = Duration::from_secs(1);
const MAX_SLICE: Duration = Duration::from_secs(8);
/// How often a stage that observes its group reads the group's commits.
const OBSERVE_INTERVAL: Duration = Duration::from_secs(1);
/// Records handled between two checks for a due commit.
const MAX_BATCH: usize = 5_000;
/// Records prepared per pool task: small enough that the serial fold starts
/// early and the cores finish a poll together.
const PREPARE_CHUNK: usize = 128;

/// Where a partition's consumption (and commit position) starts, and what
/// its last commit said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Committed {
    pub partition: i32,
    pub(crate) offset: i64,
    pub(crate) metadata: String,
}

/// The whole input topic as the group last committed it: what a stage
/// learns of the partitions other replicas read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct GroupView {
    /// The topic's partition count now.
    pub(crate) partitions: i32,
    /// Every partition's last commit (partitions never committed are absent).
    pub(crate) committed: Vec<Committed>,
}

/// A record for the stage's transaction.
#[derive(Debug, Clone)]
pub(crate) struct OutRecord {
    pub(crate) topic: Arc<str>,
    pub partition: Option<i32>,
    pub(crate) key: String,
    pub(crate) payload: Vec<u8>,
}

/// What one commit cycle publishes.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) records: Vec<OutRecord>,
    /// Partition, next offset, metadata.
    pub(crate) offsets: Vec<(i32, i64, String)>,
    /// Lines for stdout, written once the batch is committed (or, without a
    /// producer, before committing: at-least-once).
    pub(crate) lines: Vec<String>,
    /// Final windows for the stage's [`WindowSink`], written before the
    /// offsets are committed.
    pub(crate) windows: Vec<WindowResult>,
}

impl Batch {
    pub(crate) fn is_empty(&self) -> bool {
        self.records.is_empty()
            && self.offsets.is_empty()
            && self.lines.is_empty()
            && self.windows.is_empty()
    }
}

/// The stage-specific part: state built from records, rebuilt on rebalance.
pub(crate) trait Processor {
    /// A record's payload made ready for [`Processor::record`] (parsed,
    /// scored). Preparing is pure, so the driver prepares a poll's records
    /// on the worker pool, many at once, while `record` folds earlier ones
    /// into the state in order.
    type Prepared<'a>: Send;
    /// `stream` is the record's `stream` header, when it has one.
    fn prepare<'a>(payload: Option<&'a [u8]>, stream: Option<&'a [u8]>) -> Self::Prepared<'a>;
    /// Drops all state and starts over from these committed positions.
    fn reset(&mut self, assigned: &[Committed], now_ms: i64);
    fn record(&mut self, partition: i32, offset: i64, prepared: Self::Prepared<'_>, now_ms: i64);
    /// What to publish now; empty when nothing changed.
    fn cycle(&mut self, now_ms: i64) -> Batch;
    /// The last batch from `cycle` was committed.
    fn committed(&mut self);
    /// Read position of a partition, for lag.
    fn position(&self, partition: i32) -> Option<i64>;
    /// What the group committed for the whole topic: after every `reset`
    /// (before any record), then about once a second, when the stage's
    /// config asks for it.
    fn observe(&mut self, _view: &GroupView, _now_ms: i64) {}
    /// The partitions a polled batch holds records of, before any of them
    /// is handed to `record`.
    fn arriving(&mut self, _partitions: &BTreeSet<i32>, _now_ms: i64) {}
}

#[derive(Debug, Clone)]
pub(crate) struct StageConfig {
    pub stage: &'static str,
    pub(crate) brokers: String,
    /// TLS and SASL.
    pub(crate) security: KafkaSecurity,
    /// Where the clients' authentication failures are reported.
    pub(crate) auth: AuthWatch,
    pub(crate) group_id: String,
    pub(crate) topic: String,
    /// Without one, offsets are committed directly after printing.
    pub(crate) transactional_id: Option<String>,
    /// The topic the transactions write to, for naming a denied WRITE.
    pub(crate) writes_to: Option<String>,
    pub(crate) earliest: bool,
    pub(crate) commit_interval: Duration,
    /// Report per-partition lag (the source stage).
    pub(crate) report_lag: bool,
    /// Hand the processor the group's commits of the whole topic
    /// ([`Processor::observe`]).
    pub(crate) observe_group: bool,
    /// Set when the brokers refuse the clients and the credential files
    /// have changed: the session ends and new clients log in.
    pub(crate) relogin: Arc<AtomicBool>,
    /// At most this many records a second (`--max-tweets-per-second`).
    pub(crate) max_per_second: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum StageError {
    #[error("{stage}: {what}: {source}")]
    Kafka {
        stage: &'static str,
        what: &'static str,
        source: KafkaError,
    },
    #[error("{stage}: Kafka security settings: {source}")]
    Security {
        stage: &'static str,
        source: KafkaSecurityError,
    },
    #[error("{stage}: the consumer has no group metadata")]
    NoGroupMetadata { stage: &'static str },
    /// Not a failure: the credential files were rewritten (a rotated
    /// Secret), and new clients log in with them.
    #[error("{stage}: the Kafka credentials changed")]
    CredentialsChanged { stage: &'static str },
    /// The transaction failed and was aborted: nothing of it is visible,
    /// and the clients are still good.
    #[error("{stage}: transaction aborted: {source}")]
    Aborted {
        stage: &'static str,
        source: Box<StageError>,
    },
    /// Stopping while the sink could not write: nothing of the cycle is
    /// committed, and the next owner writes it.
    #[error("{stage}: stopped while the windows could not be written")]
    SinkStopped { stage: &'static str },
    #[error("{stage}: writing to stdout: {source}")]
    Stdout {
        stage: &'static str,
        source: std::io::Error,
    },
}

struct Ctx {
    stage: &'static str,
    /// The group and topic read, for naming a denied READ.
    group: String,
    topic: String,
    epoch: AtomicU64,
    auth: AuthWatch,
}

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.auth.client_log(fac, log_message);
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::warn!(stage = self.stage, fac, "librdkafka: {log_message}")
            }
            _ => tracing::debug!(stage = self.stage, fac, "librdkafka: {log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // librdkafka retries on its own; these are reports, not failures,
        // except that failing to authenticate never ends (`kafka.rs`).
        if !self.auth.client_error(&error, reason) {
            tracing::warn!(stage = self.stage, %error, reason, "Kafka client error");
        }
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let what = match rebalance {
            Rebalance::Assign(tpl) => format!("assign {:?}", partitions(tpl)),
            Rebalance::Revoke(tpl) => format!("revoke {:?}", partitions(tpl)),
            Rebalance::Error(e) => format!("error {e}"),
        };
        tracing::info!(stage = self.stage, "rebalance: {what}");
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }
}

/// Polls up to [`MAX_BATCH`] records into `out`, waiting up to `wait` for
/// the first. True when a rebalance happened meanwhile: what was polled
/// before it is dropped (the rebuilt state starts over from the committed
/// offsets, before those records), what came after it is kept.
fn poll_batch<'c>(
    consumer: &'c BaseConsumer<Ctx>,
    stage: &'static str,
    metrics: &Metrics,
    out: &mut Vec<BorrowedMessage<'c>>,
    mut wait: Duration,
    seen_epoch: &mut u64,
) -> bool {
    let mut rebalanced = false;
    while out.len() < MAX_BATCH {
        let next = consumer.poll(wait);
        wait = Duration::ZERO;
        let epoch = consumer.context().epoch.load(Ordering::SeqCst);
        if epoch != *seen_epoch {
            *seen_epoch = epoch;
            out.clear();
            rebalanced = true;
        }
        match next {
            None => break,
            Some(Ok(m)) => out.push(m),
            Some(Err(e)) => {
                metrics
                    .kafka_errors
                    .get_or_create(&StageLabels { stage })
                    .inc();
                let ctx = consumer.context();
                let denied = e.rdkafka_error_code().and_then(|code| match code {
                    RDKafkaErrorCode::GroupAuthorizationFailed => {
                        Refusal::denied(code, "READ", Resource::Group(ctx.group.clone()))
                    }
                    _ => Refusal::denied(code, "READ", Resource::Topic(ctx.topic.clone())),
                });
                match denied {
                    Some(refusal) => ctx.auth.denied(stage, refusal),
                    None => tracing::warn!(stage, error = %e, "consume error"),
                }
                break;
            }
        }
    }
    rebalanced
}

/// The value of a record's `stream` header (which stream published it).
fn stream_header<'a>(m: &'a BorrowedMessage<'_>) -> Option<&'a [u8]> {
    use rdkafka::message::Headers;
    m.headers()?
        .iter()
        .find(|h| h.key == twitterstream_contract::header::STREAM)?
        .value
}

fn partitions(tpl: &TopicPartitionList) -> Vec<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A blocking Kafka call, given up to `timeout` in growing slices, that
/// stops with [`StageError::CredentialsChanged`] once `relogin` is set. A
/// stage rewinding after a refused transaction sat in a refused
/// `committed_offsets` for its whole 30 s after a rotation (rotation test
/// logs, 2026-11-28), every window held up meanwhile.
fn bounded<T>(
    stage: &'static str,
    relogin: &AtomicBool,
    what: &'static str,
    timeout: Duration,
    mut call: impl FnMut(Duration) -> Result<T, KafkaError>,
) -> Result<T, StageError> {
    let deadline = Instant::now() + timeout;
    let mut slice = FIRST_SLICE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match call(left.min(slice)) {
            Err(e)
                if e.rdkafka_error_code() == Some(RDKafkaErrorCode::OperationTimedOut)
                    && Instant::now() < deadline =>
            {
                if relogin.swap(false, Ordering::SeqCst) {
                    return Err(StageError::CredentialsChanged { stage });
                }
                slice = (slice * 2).min(MAX_SLICE);
            }
            r => {
                return r.map_err(|source| StageError::Kafka {
                    stage,
                    what,
                    source,
                });
            }
        }
    }
}

/// Drops a finished session's clients on a thread of their own. Closing a
/// consumer whose brokers refuse its login can block (librdkafka's close
/// waits to leave the group), and a stage that must log in again should not
/// wait for it: a CI run's aggregate stage, told to log in again after a
/// rotation, never did, while nothing else in its session could block. The
/// old consumer leaves the group when its close ends (or its session times
/// out); the next producer with the same transactional id fences the old one.
fn close_in_background(
    stage: &'static str,
    consumer: BaseConsumer<Ctx>,
    producer: Option<Arc<ThreadedProducer<AuthContext>>>,
) {
    let closing = std::thread::Builder::new()
        .name(format!("{stage}-close"))
        .spawn(move || {
            let started = Instant::now();
            drop(producer);
            drop(consumer);
            tracing::info!(stage, took = ?started.elapsed(), "closed the previous session's Kafka clients");
        });
    if let Err(e) = closing {
        tracing::warn!(stage, error = %e, "no thread to close the previous clients on");
    }
}

/// A stage's transactional producer on `config`. Its client errors go to
/// `auth` like the consumer's: a CI run's consumer stayed refused for good
/// when only its producer was refused after a rotation (the watch never
/// heard of it, so no stage was told to log in again).
fn transactional_producer(
    mut config: ClientConfig,
    id: &str,
    auth: &AuthWatch,
) -> Result<ThreadedProducer<AuthContext>, KafkaError> {
    config
        .set("transactional.id", id)
        // A replica that died mid-transaction blocks read_committed
        // readers of its partitions until this expires (or it restarts
        // with the same id and fences the old transaction).
        .set("transaction.timeout.ms", "15000")
        // A cycle's few records go at once: the commit waits for
        // them, and the stage's cores idle while it waits.
        .set("linger.ms", "0")
        .set("compression.type", "zstd")
        .set("message.max.bytes", "16000000")
        .create_with_context(AuthContext {
            auth: auth.clone(),
            group: None,
        })
}

pub(crate) struct Driver<P> {
    cfg: StageConfig,
    processor: P,
    sink: Option<Box<dyn WindowSink>>,
    pool: Arc<rayon::ThreadPool>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: Arc<AtomicBool>,
}

impl<P: Processor> Driver<P> {
    pub(crate) fn new(
        cfg: StageConfig,
        processor: P,
        pool: Arc<rayon::ThreadPool>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        shutdown: Arc<AtomicBool>,
    ) -> Self {
        Driver {
            cfg,
            processor,
            sink: None,
            pool,
            metrics,
            health,
            shutdown,
        }
    }

    /// Final windows also go to `sink`, before their input offsets are
    /// committed.
    pub(crate) fn with_sink(mut self, sink: Box<dyn WindowSink>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Hands polled records to the processor in order, and polls the next
    /// ones into `next` meanwhile. Chunks are prepared on the pool while this
    /// thread polls and then folds in the chunks already prepared, so parsing
    /// uses every core and only the (cheap) folding and polling are serial.
    /// True when a rebalance happened while polling: `next` then holds only
    /// records of the new assignment, and the state needs rebuilding.
    fn handle<'c>(
        &mut self,
        consumer: &'c BaseConsumer<Ctx>,
        polled: &[BorrowedMessage<'c>],
        next: &mut Vec<BorrowedMessage<'c>>,
        seen_epoch: &mut u64,
    ) -> bool {
        let now = now_ms();
        if polled.len() <= PREPARE_CHUNK {
            for m in polled {
                let prepared = P::prepare(m.payload(), stream_header(m));
                self.processor
                    .record(m.partition(), m.offset(), prepared, now);
            }
            return false;
        }
        let pool = self.pool.clone();
        let (stage, metrics, processor) = (self.cfg.stage, &self.metrics, &mut self.processor);
        pool.in_place_scope(|scope| {
            let (tx, rx) = std::sync::mpsc::channel();
            for (k, chunk) in polled.chunks(PREPARE_CHUNK).enumerate() {
                let tx = tx.clone();
                scope.spawn(move |_| {
                    let prepared: Vec<_> = chunk
                        .iter()
                        .map(|m| P::prepare(m.payload(), stream_header(m)))
                        .collect();
                    // The receiver outlives the scope's tasks.
                    let _ = tx.send((k, prepared));
                });
            }
            drop(tx);
            let rebalanced = poll_batch(consumer, stage, metrics, next, Duration::ZERO, seen_epoch);
            let mut chunks = polled.chunks(PREPARE_CHUNK);
            let mut waiting = BTreeMap::new();
            let mut due = 0;
            for (k, prepared) in rx {
                waiting.insert(k, prepared);
                while let Some(prepared) = waiting.remove(&due) {
                    let Some(chunk) = chunks.next() else { break };
                    for (m, p) in chunk.iter().zip(prepared) {
                        processor.record(m.partition(), m.offset(), p, now);
                    }
                    due += 1;
                }
            }
            rebalanced
        })
    }

    fn labels(&self) -> StageLabels {
        StageLabels {
            stage: self.cfg.stage,
        }
    }

    /// Runs until shutdown. Failures never end the stage: the clients are
    /// dropped (aborting whatever was in flight), state is rebuilt from the
    /// committed offsets, and it starts over after a growing pause.
    pub(crate) fn run(mut self) {
        let mut backoff = Duration::from_millis(500);
        while !self.shutdown.load(Ordering::SeqCst) {
            let started = Instant::now();
            match self.session() {
                Ok(()) => break,
                Err(StageError::CredentialsChanged { .. }) => {
                    tracing::info!(
                        stage = self.cfg.stage,
                        "the Kafka credentials changed; logging in again with them"
                    );
                }
                Err(e) => {
                    if let Some(refusal) = self.denial(&e) {
                        self.cfg.auth.denied(self.cfg.stage, refusal);
                    }
                    self.metrics
                        .kafka_errors
                        .get_or_create(&self.labels())
                        .inc();
                    if started.elapsed() > Duration::from_secs(60) {
                        backoff = Duration::from_millis(500);
                    }
                    tracing::warn!(stage = self.cfg.stage, error = %e, retry_in = ?backoff, "stage failed; starting over from committed offsets");
                    let until = Instant::now() + backoff;
                    while Instant::now() < until && !self.shutdown.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
        tracing::info!(stage = self.cfg.stage, "stopped");
    }

    /// The ACL a failed session lacked, when an authorization error ended
    /// it: transactions need WRITE on their id and on the topic they write
    /// to, and READ on the group whose offsets they commit.
    fn denial(&self, e: &StageError) -> Option<Refusal> {
        let source = match e {
            StageError::Kafka { source, .. } => source,
            StageError::Aborted { source, .. } => match source.as_ref() {
                StageError::Kafka { source, .. } => source,
                _ => return None,
            },
            _ => return None,
        };
        let code = source.rdkafka_error_code()?;
        let cfg = &self.cfg;
        let (operation, resource) = match code {
            RDKafkaErrorCode::TransactionalIdAuthorizationFailed => (
                "WRITE",
                Resource::TransactionalId(cfg.transactional_id.clone().unwrap_or_default()),
            ),
            RDKafkaErrorCode::GroupAuthorizationFailed => {
                ("READ", Resource::Group(cfg.group_id.clone()))
            }
            _ => (
                "WRITE",
                Resource::Topic(cfg.writes_to.clone().unwrap_or_else(|| cfg.topic.clone())),
            ),
        };
        Refusal::denied(code, operation, resource)
    }

    fn kafka<T>(&self, what: &'static str, r: Result<T, KafkaError>) -> Result<T, StageError> {
        r.map_err(|source| StageError::Kafka {
            stage: self.cfg.stage,
            what,
            source,
        })
    }

    fn bounded<T>(
        &self,
        what: &'static str,
        timeout: Duration,
        call: impl FnMut(Duration) -> Result<T, KafkaError>,
    ) -> Result<T, StageError> {
        bounded(self.cfg.stage, &self.cfg.relogin, what, timeout, call)
    }

    /// A Kafka call that needed an authenticated connection succeeded.
    fn kafka_ok(&self) {
        self.health.kafka_ok(now_ms());
        self.cfg.auth.succeeded();
    }

    /// The brokers and the security settings, secrets read now.
    fn client_config(&self) -> Result<ClientConfig, StageError> {
        kafka::client_config(&self.cfg.brokers, &self.cfg.security).map_err(|source| {
            StageError::Security {
                stage: self.cfg.stage,
                source,
            }
        })
    }

    fn consumer(&self) -> Result<BaseConsumer<Ctx>, StageError> {
        let ctx = Ctx {
            stage: self.cfg.stage,
            group: self.cfg.group_id.clone(),
            topic: self.cfg.topic.clone(),
            epoch: AtomicU64::new(0),
            auth: self.cfg.auth.clone(),
        };
        let c = self
            .client_config()?
            .set("group.id", &self.cfg.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set(
                "auto.offset.reset",
                if self.cfg.earliest {
                    "earliest"
                } else {
                    "latest"
                },
            )
            // When the prefetch queue is full, librdkafka pauses fetching
            // for this long (default 1 s). A stage drains a full queue in
            // well under that, and then sat idle for the rest of the pause.
            .set("fetch.queue.backoff.ms", "20")
            // A killed replica's partitions move on after this long.
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "2000")
            // Partitions added to the topic are noticed (and the group
            // rebalanced onto them) within this, not librdkafka's 5 minutes.
            .set("topic.metadata.refresh.interval.ms", "5000")
            .create_with_context(ctx);
        self.kafka("creating consumer", c)
    }

    /// The stage's transactional producer, transactions initialised.
    fn producer(&self, id: &str) -> Result<ThreadedProducer<AuthContext>, StageError> {
        let p = self.kafka(
            "creating producer",
            transactional_producer(self.client_config()?, id, &self.cfg.auth),
        )?;
        self.kafka(
            "initialising transactions",
            p.init_transactions(KAFKA_TIMEOUT),
        )?;
        Ok(p)
    }

    /// One life of the clients.
    fn session(&mut self) -> Result<(), StageError> {
        self.processor.reset(&[], now_ms());
        let credentials = kafka::CredentialFiles::new(&self.cfg.security);
        let producer = match &self.cfg.transactional_id {
            Some(id) => Some(Arc::new(self.producer(&id.clone())?)),
            None => None,
        };
        let consumer = self.consumer()?;
        let ended = self.drive(&consumer, producer.as_ref(), credentials);
        if ended.is_err() {
            close_in_background(self.cfg.stage, consumer, producer);
        }
        ended
    }

    /// The session's loop, on its clients.
    fn drive(
        &mut self,
        consumer: &BaseConsumer<Ctx>,
        producer: Option<&Arc<ThreadedProducer<AuthContext>>>,
        mut credentials: kafka::CredentialFiles,
    ) -> Result<(), StageError> {
        self.kafka("subscribing", consumer.subscribe(&[&self.cfg.topic]))?;
        let mut seen_epoch = 0;
        // Polled, not yet handed to the processor (nor committed).
        let mut ready = Vec::new();
        let mut next_cycle = Instant::now() + self.cfg.commit_interval;
        let mut next_lag = Instant::now();
        let mut next_observe = Instant::now() + OBSERVE_INTERVAL;
        let mut pace = self
            .cfg
            .max_per_second
            .map(|r| Pace::new(r, Instant::now()));
        loop {
            if self.cfg.relogin.swap(false, Ordering::SeqCst) {
                return Err(StageError::CredentialsChanged {
                    stage: self.cfg.stage,
                });
            }
            let stopping = self.shutdown.load(Ordering::SeqCst);
            if stopping {
                // Commit whatever is complete; open windows resume elsewhere.
                self.commit(consumer, producer)?;
                tracing::info!(
                    stage = self.cfg.stage,
                    "committed; closing the Kafka clients"
                );
                return Ok(());
            }
            let wait = pace
                .as_mut()
                .map_or(Duration::ZERO, |p| p.wait(Instant::now()));
            if !wait.is_zero() {
                // Short naps: commits, lag reports and shutdown stay on time.
                std::thread::sleep(wait.min(Duration::from_millis(50)));
            } else if ready.is_empty()
                && poll_batch(
                    consumer,
                    self.cfg.stage,
                    &self.metrics,
                    &mut ready,
                    Duration::from_millis(100),
                    &mut seen_epoch,
                )
            {
                self.rebuild(consumer)?;
            }
            if !ready.is_empty() && wait.is_zero() {
                if let Some(p) = pace.as_mut() {
                    p.took(ready.len(), Instant::now());
                }
                let arriving = ready.iter().map(|m| m.partition()).collect();
                self.processor.arriving(&arriving, now_ms());
                let mut next = Vec::new();
                let rebalanced = self.handle(consumer, &ready, &mut next, &mut seen_epoch);
                ready = next;
                if rebalanced {
                    self.rebuild(consumer)?;
                }
                self.kafka_ok();
            }
            if Instant::now() >= next_cycle {
                match self.commit(consumer, producer) {
                    // Everything so far is committed: a good moment for new
                    // clients, which resume from exactly here.
                    Ok(()) if credentials.changed() => {
                        return Err(StageError::CredentialsChanged {
                            stage: self.cfg.stage,
                        });
                    }
                    Ok(()) => {}
                    Err(e @ StageError::Aborted { .. }) => {
                        // Start over from the committed offsets with the same
                        // clients: recreating them would leave and rejoin the
                        // group, and every replica would pause for the
                        // rebalance.
                        self.metrics
                            .kafka_errors
                            .get_or_create(&self.labels())
                            .inc();
                        // A denied write aborts every transaction, for ever:
                        // the watch ends the consumer after the grace.
                        if let Some(refusal) = self.denial(&e) {
                            self.cfg.auth.denied(self.cfg.stage, refusal);
                        }
                        tracing::warn!(stage = self.cfg.stage, error = %e, "transaction aborted; going back to the committed offsets");
                        ready.clear();
                        self.rewind(consumer)?;
                    }
                    Err(e) => return Err(e),
                }
                next_cycle = Instant::now() + self.cfg.commit_interval;
            }
            if self.cfg.report_lag && Instant::now() >= next_lag {
                self.report_lag(consumer);
                next_lag = Instant::now() + Duration::from_secs(2);
            }
            if self.cfg.observe_group && Instant::now() >= next_observe {
                // A missed look is retried on the next; windows only wait.
                match self.group_view(consumer, Duration::from_secs(5)) {
                    Ok(view) => self.processor.observe(&view, now_ms()),
                    Err(e @ StageError::CredentialsChanged { .. }) => return Err(e),
                    Err(e) => {
                        tracing::debug!(stage = self.cfg.stage, error = %e, "group commits unavailable")
                    }
                }
                next_observe = Instant::now() + OBSERVE_INTERVAL;
            }
        }
    }

    /// The topic's partition count and every partition's committed offset
    /// and metadata in this group.
    fn group_view(
        &self,
        consumer: &BaseConsumer<Ctx>,
        timeout: Duration,
    ) -> Result<GroupView, StageError> {
        let md = self.bounded("reading topic metadata", timeout, |t| {
            consumer.fetch_metadata(Some(&self.cfg.topic), t)
        })?;
        let partitions = md
            .topics()
            .iter()
            .find(|t| t.name() == self.cfg.topic)
            .map_or(0, |t| t.partitions().len() as i32);
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(&self.cfg.topic, p);
        }
        let committed = self.bounded("reading the group's commits", timeout, |t| {
            consumer.committed_offsets(tpl.clone(), t)
        })?;
        let committed = committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(offset) => Some(Committed {
                    partition: e.partition(),
                    offset,
                    metadata: e.metadata().to_owned(),
                }),
                _ => None,
            })
            .collect();
        Ok(GroupView {
            partitions,
            committed,
        })
    }

    fn report_lag(&self, consumer: &BaseConsumer<Ctx>) {
        let Ok(assignment) = consumer.assignment() else {
            return;
        };
        for e in assignment.elements() {
            let p = e.partition();
            match consumer.fetch_watermarks(e.topic(), p, Duration::from_secs(2)) {
                Ok((_, high)) => {
                    self.kafka_ok();
                    if let Some(pos) = self.processor.position(p) {
                        self.metrics
                            .consumer_lag
                            .get_or_create(&PartitionLabels {
                                partition: i64::from(p),
                            })
                            .set((high - pos).max(0));
                    }
                }
                Err(e) => tracing::debug!(partition = p, error = %e, "watermarks unavailable"),
            }
        }
    }

    /// State for the current assignment, from what was committed. librdkafka
    /// itself resumes fetching assigned partitions at the committed offsets.
    fn rebuild(&mut self, consumer: &BaseConsumer<Ctx>) -> Result<(), StageError> {
        self.metrics.rebalances.get_or_create(&self.labels()).inc();
        self.restore(consumer)
    }

    /// After an aborted transaction: moves every assigned partition back to
    /// its committed offset and rebuilds the state from there, as after a
    /// rebalance but without one.
    fn rewind(&mut self, consumer: &BaseConsumer<Ctx>) -> Result<(), StageError> {
        let committed = self.committed_positions(consumer)?;
        if !committed.is_empty() {
            let mut to = TopicPartitionList::new();
            for c in &committed {
                self.kafka(
                    "rewinding",
                    to.add_partition_offset(&self.cfg.topic, c.partition, Offset::Offset(c.offset)),
                )?;
            }
            let sought = self.kafka("rewinding", consumer.seek_partitions(to, KAFKA_TIMEOUT))?;
            for e in sought.elements() {
                if let Err(err) = e.error() {
                    return self.kafka("rewinding", Err(err));
                }
            }
        }
        self.restore_from(consumer, committed)
    }

    /// Rebuilds the processor's state from the committed offsets of the
    /// assigned partitions.
    fn restore(&mut self, consumer: &BaseConsumer<Ctx>) -> Result<(), StageError> {
        let committed = self.committed_positions(consumer)?;
        self.restore_from(consumer, committed)
    }

    /// Each assigned partition's committed offset and metadata; where nothing
    /// is committed, where `auto.offset.reset` starts.
    fn committed_positions(
        &self,
        consumer: &BaseConsumer<Ctx>,
    ) -> Result<Vec<Committed>, StageError> {
        let assignment = self.kafka("reading the assignment", consumer.assignment())?;
        if assignment.count() == 0 {
            return Ok(Vec::new());
        }
        let tpl = self.bounded("reading committed offsets", KAFKA_TIMEOUT, |t| {
            consumer.committed_offsets(assignment.clone(), t)
        })?;
        let mut out = Vec::new();
        for e in tpl.elements() {
            let offset = match e.offset() {
                Offset::Offset(o) => o,
                _ => {
                    let (low, high) =
                        self.bounded("reading partition bounds", KAFKA_TIMEOUT, |t| {
                            consumer.fetch_watermarks(e.topic(), e.partition(), t)
                        })?;
                    if self.cfg.earliest { low } else { high }
                }
            };
            out.push(Committed {
                partition: e.partition(),
                offset,
                metadata: e.metadata().to_owned(),
            });
        }
        Ok(out)
    }

    fn restore_from(
        &mut self,
        consumer: &BaseConsumer<Ctx>,
        committed: Vec<Committed>,
    ) -> Result<(), StageError> {
        self.kafka_ok();
        // Assigned: the group's ACLs let this stage in (a denied write
        // stays: a stage rewinds here after every aborted transaction).
        self.cfg.auth.allowed_where(self.cfg.stage, |r| {
            matches!(
                r,
                Refusal::Authorization {
                    resource: Resource::Group(_),
                    ..
                }
            )
        });
        if self.cfg.report_lag {
            self.health.assigned.store(true, Ordering::SeqCst);
        }
        tracing::info!(stage = self.cfg.stage, assigned = ?committed, "resuming from committed offsets");
        self.processor.reset(&committed, now_ms());
        if self.cfg.observe_group {
            let view = self.group_view(consumer, KAFKA_TIMEOUT)?;
            self.processor.observe(&view, now_ms());
        }
        Ok(())
    }

    fn commit(
        &mut self,
        consumer: &BaseConsumer<Ctx>,
        producer: Option<&Arc<ThreadedProducer<AuthContext>>>,
    ) -> Result<(), StageError> {
        let batch = self.processor.cycle(now_ms());
        if batch.is_empty() {
            return Ok(());
        }
        if let Some(sink) = self.sink.as_mut()
            && !batch.windows.is_empty()
        {
            let (shutdown, relogin) = (&self.shutdown, &self.cfg.relogin);
            let stop = || shutdown.load(Ordering::SeqCst) || relogin.load(Ordering::SeqCst);
            if sink.write(&batch.windows, &stop).is_err() {
                let stage = self.cfg.stage;
                return Err(if relogin.swap(false, Ordering::SeqCst) {
                    StageError::CredentialsChanged { stage }
                } else {
                    StageError::SinkStopped { stage }
                });
            }
        }
        let mut tpl = TopicPartitionList::new();
        for (p, offset, metadata) in &batch.offsets {
            let mut e = tpl.add_partition(&self.cfg.topic, *p);
            self.kafka("building offsets", e.set_offset(Offset::Offset(*offset)))?;
            e.set_metadata(metadata);
        }
        match producer {
            Some(producer) => {
                if let Err(e) = self.transaction(consumer, producer, &batch, &tpl) {
                    self.metrics
                        .transactions_aborted
                        .get_or_create(&self.labels())
                        .inc();
                    return Err(e);
                }
                self.metrics
                    .transactions
                    .get_or_create(&self.labels())
                    .inc();
                self.print(&batch.lines)?;
            }
            None => {
                self.print(&batch.lines)?;
                if tpl.count() > 0 {
                    self.kafka(
                        "committing offsets",
                        consumer.commit(&tpl, CommitMode::Sync),
                    )?;
                }
            }
        }
        self.kafka_ok();
        self.cfg.auth.allowed(self.cfg.stage);
        self.processor.committed();
        Ok(())
    }

    /// Publishes the batch and commits its input offsets in one transaction.
    /// `Aborted` when it failed and was aborted (the clients are still good);
    /// any other error means the clients are recreated.
    fn transaction(
        &self,
        consumer: &BaseConsumer<Ctx>,
        producer: &Arc<ThreadedProducer<AuthContext>>,
        batch: &Batch,
        tpl: &TopicPartitionList,
    ) -> Result<(), StageError> {
        let group = match tpl.count() {
            0 => None,
            _ => Some(
                consumer
                    .group_metadata()
                    .ok_or(StageError::NoGroupMetadata {
                        stage: self.cfg.stage,
                    })?,
            ),
        };
        transaction::begin(producer.as_ref()).map_err(|e| self.txn_error(e))?;
        for r in &batch.records {
            let mut record = BaseRecord::to(&r.topic).key(&r.key).payload(&r.payload);
            if let Some(p) = r.partition {
                record = record.partition(p);
            }
            // rdkafka's send hands the record back in its error, for a retry.
            #[allow(clippy::result_large_err)]
            let sent = transaction::send(record, |r| producer.send(r));
            if let Err(e) = sent {
                let relogin = || self.cfg.relogin.load(Ordering::SeqCst);
                let e = transaction::abort_after(
                    producer.as_ref(),
                    "producing",
                    e,
                    KAFKA_TIMEOUT,
                    &relogin,
                );
                return Err(self.txn_error(e));
            }
        }
        // A rotation the brokers already enforce refuses this commit's
        // login: it cannot finish, and the session must end to log in again.
        let relogin = || self.cfg.relogin.load(Ordering::SeqCst);
        if let Some(group) = group {
            transaction::send_offsets(producer, tpl, group, KAFKA_TIMEOUT, &relogin)
                .map_err(|e| self.txn_error(e))?;
        }
        transaction::commit(producer.as_ref(), None, KAFKA_TIMEOUT, &relogin)
            .map_err(|e| self.txn_error(e))
    }

    fn txn_error(&self, e: TxnError) -> StageError {
        let stage = self.cfg.stage;
        match e {
            TxnError::Aborted { op, source } => StageError::Aborted {
                stage,
                source: Box::new(StageError::Kafka {
                    stage,
                    what: op,
                    source,
                }),
            },
            TxnError::Interrupted { .. } => {
                self.cfg.relogin.store(false, Ordering::SeqCst);
                StageError::CredentialsChanged { stage }
            }
            TxnError::Fatal { op, source } => StageError::Kafka {
                stage,
                what: op,
                source,
            },
            TxnError::Stuck { op, waited } => {
                tracing::warn!(
                    stage,
                    op,
                    ?waited,
                    "a Kafka call did not return; new clients take over"
                );
                StageError::Kafka {
                    stage,
                    what: op,
                    source: KafkaError::Global(RDKafkaErrorCode::OperationTimedOut),
                }
            }
        }
    }

    fn print(&self, lines: &[String]) -> Result<(), StageError> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        for l in lines {
            writeln!(out, "{l}").map_err(|source| StageError::Stdout {
                stage: self.cfg.stage,
                source,
            })?;
        }
        out.flush().map_err(|source| StageError::Stdout {
            stage: self.cfg.stage,
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::DefaultProducerContext;

    /// A call its broker cannot answer (down, as refused brokers are to
    /// the client) stops within a slice of the stage being told to log in
    /// again, not at its 30 s timeout.
    #[test]
    fn a_blocked_call_stops_soon_after_the_stage_is_told_to_log_in_again() {
        let cluster = MockCluster::<DefaultProducerContext>::new(1).expect("mock cluster");
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("group.id", "blocked")
            .create()
            .expect("consumer");
        cluster.broker_down(1).expect("broker down");
        let relogin = Arc::new(AtomicBool::new(false));
        let setter = relogin.clone();
        let teller = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(2));
            setter.store(true, Ordering::SeqCst);
        });
        let started = Instant::now();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition("t", 0);
        let r = bounded(
            "test",
            &relogin,
            "reading committed offsets",
            KAFKA_TIMEOUT,
            |t| consumer.committed_offsets(tpl.clone(), t),
        );
        let took = started.elapsed();
        teller.join().expect("teller");
        assert!(
            matches!(r, Err(StageError::CredentialsChanged { .. })),
            "{r:?}"
        );
        assert!(took < Duration::from_secs(2) + MAX_SLICE, "took {took:?}");
        assert!(!relogin.load(Ordering::SeqCst), "the request was taken");
    }

    /// The transactional producer refused by its broker (here: TLS asked of
    /// a plaintext listener, as a rotated CA would) tells the auth watch,
    /// which then tells the stages to log in again.
    #[test]
    fn a_refused_transactional_producer_reaches_the_auth_watch() {
        let cluster = MockCluster::<DefaultProducerContext>::new(1).expect("mock cluster");
        let auth = AuthWatch::default();
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("security.protocol", "ssl");
        let producer = transactional_producer(config, "refused", &auth).expect("producer");
        assert!(producer.init_transactions(Duration::from_secs(3)).is_err());
        let deadline = Instant::now() + Duration::from_secs(10);
        while auth.current().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            auth.current().is_some(),
            "the watch never heard of the refusal"
        );
    }
}
