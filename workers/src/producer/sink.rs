//! The transactional sink: the only place the producer begins, commits and
//! aborts Kafka transactions.
//!
//! Exactly-once per stream: a source fills a batch, the sink commits it with
//! the checkpoint (the position the batch reaches, `checkpoint.rs`) in the
//! same transaction, and only then tells the source to move its cursor. A
//! batch that fails is aborted, so none of it is visible to `read_committed`
//! readers, and after a backoff it is re-sent, regenerated or fetched again,
//! as the source's [`Recovery`] says. All sources share one
//! `transactional.id` per stream, so each stream runs as a single producer
//! replica; a second one fences the first, which exits.

use super::checkpoint::{Checkpoint, CheckpointGroup};
use super::error::RunError;
use super::metrics::Metrics;
use super::publisher::{PublishError, Publisher, Transactions, TweetRecord};
use super::source::{Batch, Fill, Recovery, TweetSource};
use crate::kafka::CredentialFiles;
use crate::shutdown::Shutdown;
use chrono::{SecondsFormat, Utc};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The first backoff after a failed batch; it doubles per failure in a row.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(crate) struct TransactionalSink<P = Publisher> {
    publisher: P,
    metrics: Arc<Metrics>,
    backoff: Duration,
    /// The credential files the publisher was built from; when they change,
    /// `drive` ends after a commit with `RunError::CredentialsChanged`.
    credentials: Option<CredentialFiles>,
}

/// The batch a source is filling: the transaction begins with its first
/// record (all of them get the same `ingested_at`).
struct Open<'a, P> {
    publisher: &'a mut P,
    metrics: &'a Metrics,
    recovery: Recovery,
    ingested_at: String,
    opened: Option<Instant>,
    len: usize,
    failed: bool,
    /// A failure that ends the run (the transaction could not begin).
    fatal: Option<PublishError>,
    /// Copies of the records for a re-send ([`Recovery::Resend`]).
    kept: Vec<TweetRecord>,
}

impl<P: Transactions> Batch for Open<'_, P> {
    fn send(&mut self, key: &str, value: &str, seq: Option<u64>) -> bool {
        self.len += 1;
        if self.recovery == Recovery::Resend {
            self.kept.push(TweetRecord {
                key: key.to_owned(),
                value: value.to_owned(),
                seq,
            });
        }
        // A source that resends keeps filling after a failure: the sink
        // re-sends its copy, which must hold the whole batch.
        let go_on = self.recovery == Recovery::Resend && self.fatal.is_none();
        if self.failed {
            return go_on;
        }
        if self.opened.is_none() {
            if let Err(e) = self.publisher.begin() {
                self.fatal = Some(e);
                self.failed = true;
                return false;
            }
            self.ingested_at = now_rfc3339();
            self.opened = Some(Instant::now());
        }
        if let Err(e) = self.publisher.send(key, value, seq, &self.ingested_at) {
            self.metrics.publish_errors.inc();
            tracing::warn!(error = %e, recovery = ?self.recovery, "send failed; the batch will be aborted");
            self.failed = true;
            return go_on;
        }
        true
    }

    fn len(&self) -> usize {
        self.len
    }

    fn opened(&self) -> Option<Instant> {
        self.opened
    }
}

impl TransactionalSink<Publisher> {
    /// Fences any predecessor with the same transactional id: its open
    /// transaction is aborted, so what is read back afterwards is exactly
    /// what was committed. False on shutdown.
    pub(crate) async fn init(&self, shutdown: &mut Shutdown) -> Result<bool, RunError> {
        tokio::select! {
            r = self.publisher.init_transactions() => r?,
            _ = shutdown.wait() => return Ok(false),
        }
        tracing::info!("Kafka transactions initialised");
        Ok(true)
    }

    /// Where later commits write the checkpoint.
    pub(crate) fn set_checkpoint_group(&mut self, group: CheckpointGroup) {
        self.publisher.set_checkpoint_group(group);
    }

    /// Leaves no transaction open and nothing unflushed.
    pub(crate) async fn close(&mut self) {
        if let Err(e) = self.publisher.abort().await {
            tracing::warn!(error = %e, "aborting the open transaction on exit failed");
        }
        if let Err(e) = self.publisher.flush(Duration::from_secs(30)).await {
            tracing::warn!(error = %e, "flushing on exit failed");
        }
    }
}

impl<P: Transactions> TransactionalSink<P> {
    pub(crate) fn new(publisher: P, metrics: Arc<Metrics>) -> Self {
        Self {
            publisher,
            metrics,
            backoff: FIRST_BACKOFF,
            credentials: None,
        }
    }

    /// Ends `drive` at the first commit after these files change.
    pub(crate) fn watching(mut self, credentials: CredentialFiles) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Commits a checkpoint alone (retrying until it is committed), so that
    /// later restarts read it instead of the topic. False on shutdown.
    pub(crate) async fn commit_checkpoint(
        &mut self,
        checkpoint: &Checkpoint,
        shutdown: &mut Shutdown,
    ) -> Result<bool, RunError> {
        while !self.commit(0, Some(checkpoint)).await? {
            tracing::warn!(retry_in = ?self.backoff, "cannot commit the first checkpoint; retrying");
            if !self.back_off(shutdown).await {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Runs `source` to its end (or shutdown), one transaction per batch.
    pub(crate) async fn drive<S: TweetSource>(
        &mut self,
        mut source: S,
        shutdown: &mut Shutdown,
    ) -> Result<(), RunError> {
        let result = self.pump(&mut source, shutdown).await;
        let closed = source.close().await;
        result.and(closed)
    }

    async fn pump<S: TweetSource>(
        &mut self,
        source: &mut S,
        shutdown: &mut Shutdown,
    ) -> Result<(), RunError> {
        let recovery = source.recovery();
        while !shutdown.requested() {
            let mut open = Open {
                publisher: &mut self.publisher,
                metrics: &self.metrics,
                recovery,
                ingested_at: String::new(),
                opened: None,
                len: 0,
                failed: false,
                fatal: None,
                kept: Vec::new(),
            };
            let fill = source.fill(&mut open, shutdown).await;
            let Open {
                opened,
                len,
                failed,
                fatal,
                kept,
                ingested_at,
                ..
            } = open;
            if let Some(e) = fatal {
                return Err(e.into());
            }
            let checkpoint = match fill? {
                Fill::End => return Ok(()),
                Fill::Batch(checkpoint) => checkpoint,
            };
            let committed = if opened.is_none() && checkpoint.is_none() {
                // Nothing to commit (an empty poll).
                self.metrics.mark_success();
                true
            } else if failed {
                self.publisher.abort().await?;
                false
            } else {
                self.commit(len, checkpoint.as_ref()).await?
            };
            if !committed {
                self.count_abort();
                let recovered = match recovery {
                    Recovery::Resend => {
                        self.resend(&kept, &ingested_at, checkpoint.as_ref(), shutdown)
                            .await?
                    }
                    Recovery::Rewind | Recovery::Refetch => {
                        source.rewind()?;
                        self.back_off(shutdown).await;
                        false
                    }
                };
                if !recovered {
                    continue;
                }
            }
            source.committed();
            // Everything so far is committed: new clients resume from here.
            if self
                .credentials
                .as_mut()
                .is_some_and(CredentialFiles::changed)
            {
                return Err(RunError::CredentialsChanged { refused: false });
            }
        }
        Ok(())
    }

    /// Commits the open transaction (beginning one for a checkpoint alone).
    /// False when it was aborted: nothing of it is visible.
    async fn commit(
        &mut self,
        records: usize,
        checkpoint: Option<&Checkpoint>,
    ) -> Result<bool, RunError> {
        if !self.publisher.in_transaction() {
            self.publisher.begin()?;
        }
        match self.publisher.commit(checkpoint).await {
            Ok(()) => {
                if records > 0 {
                    self.metrics.transaction("committed");
                    self.metrics.tweets_published.inc_by(records as u64);
                }
                self.metrics.mark_success();
                self.backoff = FIRST_BACKOFF;
                Ok(true)
            }
            Err(e) if e.is_fatal() => Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, records, "batch not committed");
                Ok(false)
            }
        }
    }

    /// Sends a failed batch again in new transactions until one commits.
    /// False on shutdown (nothing of the batch is visible then).
    async fn resend(
        &mut self,
        records: &[TweetRecord],
        ingested_at: &str,
        checkpoint: Option<&Checkpoint>,
        shutdown: &mut Shutdown,
    ) -> Result<bool, RunError> {
        loop {
            if !self.back_off(shutdown).await {
                return Ok(false);
            }
            self.publisher.begin()?;
            let sent = records.iter().all(|r| {
                let sent = self.publisher.send(&r.key, &r.value, r.seq, ingested_at);
                if let Err(e) = &sent {
                    self.metrics.publish_errors.inc();
                    tracing::warn!(error = %e, "re-send failed");
                }
                sent.is_ok()
            });
            if sent && self.commit(records.len(), checkpoint).await? {
                return Ok(true);
            }
            self.publisher.abort().await?;
            self.count_abort();
        }
    }

    fn count_abort(&self) {
        self.metrics.transaction("aborted");
        self.metrics.publish_errors.inc();
    }

    /// Waits out the backoff, doubling it for the next failure in a row.
    /// False on shutdown.
    async fn back_off(&mut self, shutdown: &mut Shutdown) -> bool {
        let delay = self.backoff;
        self.backoff = (delay * 2).min(MAX_BACKOFF);
        shutdown.sleep(delay).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::producer::publisher::PublishError;
    use crate::transaction::TxnError;
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    use std::cell::{Cell, RefCell};
    use std::collections::VecDeque;

    #[derive(Debug, Clone, Copy)]
    enum Outcome {
        Commit,
        Abort,
        Fatal,
    }

    fn kafka_error() -> KafkaError {
        KafkaError::MessageProduction(RDKafkaErrorCode::BrokerTransportFailure)
    }

    /// A transactional producer whose sends and commits fail on cue, and
    /// which keeps what a `read_committed` reader would see.
    #[derive(Default)]
    struct FakeKafka {
        open: RefCell<Option<Vec<String>>>,
        visible: Vec<String>,
        checkpoints: Vec<Option<u128>>,
        sends: Cell<usize>,
        /// Indexes (counting every send) of the sends that fail.
        failing_sends: Vec<usize>,
        /// Per commit; commits beyond the list succeed.
        commits: VecDeque<Outcome>,
        begun: usize,
    }

    impl Transactions for FakeKafka {
        fn in_transaction(&self) -> bool {
            self.open.borrow().is_some()
        }
        fn begin(&mut self) -> Result<(), PublishError> {
            assert!(!self.in_transaction(), "begin with a transaction open");
            self.begun += 1;
            *self.open.borrow_mut() = Some(Vec::new());
            Ok(())
        }
        fn send(&self, key: &str, _: &str, _: Option<u64>, _: &str) -> Result<(), PublishError> {
            let n = self.sends.replace(self.sends.get() + 1);
            if self.failing_sends.contains(&n) {
                return Err(PublishError::Send {
                    topic: "t".into(),
                    source: kafka_error(),
                });
            }
            match self.open.borrow_mut().as_mut() {
                Some(open) => open.push(key.to_owned()),
                None => panic!("send outside a transaction"),
            }
            Ok(())
        }
        async fn commit(&mut self, checkpoint: Option<&Checkpoint>) -> Result<(), PublishError> {
            let open = self
                .open
                .borrow_mut()
                .take()
                .expect("commit without a transaction");
            let op = "commit_transaction";
            match self.commits.pop_front().unwrap_or(Outcome::Commit) {
                Outcome::Commit => {
                    self.visible.extend(open);
                    self.checkpoints.push(checkpoint.and_then(|c| c.after));
                    Ok(())
                }
                Outcome::Abort => Err(TxnError::Aborted {
                    op,
                    source: kafka_error(),
                }
                .into()),
                Outcome::Fatal => Err(TxnError::Fatal {
                    op,
                    source: kafka_error(),
                }
                .into()),
            }
        }
        async fn abort(&mut self) -> Result<(), PublishError> {
            self.open.borrow_mut().take();
            Ok(())
        }
    }

    /// Batches of positions; the cursor moves only on `committed`.
    struct Script {
        batches: Vec<Vec<u64>>,
        next: usize,
        recovery: Recovery,
        rewinds: usize,
        committed: Vec<usize>,
    }

    impl Script {
        fn new(recovery: Recovery, batches: &[&[u64]]) -> Self {
            Self {
                batches: batches.iter().map(|b| b.to_vec()).collect(),
                next: 0,
                recovery,
                rewinds: 0,
                committed: Vec::new(),
            }
        }
        fn all(&self) -> Vec<String> {
            self.batches.iter().flatten().map(u64::to_string).collect()
        }
    }

    impl TweetSource for &mut Script {
        fn recovery(&self) -> Recovery {
            self.recovery
        }
        async fn fill(
            &mut self,
            batch: &mut impl Batch,
            _: &mut Shutdown,
        ) -> Result<Fill, RunError> {
            let Some(ids) = self.batches.get(self.next) else {
                return Ok(Fill::End);
            };
            for id in ids {
                if !batch.send(&id.to_string(), "{}", Some(*id)) {
                    break;
                }
            }
            let last = ids.last().map(|&id| u128::from(id));
            Ok(Fill::Batch(
                last.map(|l| Checkpoint::new("synthetic", Some(l))),
            ))
        }
        fn committed(&mut self) {
            self.committed.push(self.next);
            self.next += 1;
        }
        fn rewind(&mut self) -> Result<(), RunError> {
            self.rewinds += 1;
            Ok(())
        }
    }

    async fn drive(kafka: FakeKafka, script: &mut Script) -> (FakeKafka, Result<(), RunError>) {
        let (_keep, mut shutdown) = Shutdown::new();
        let mut sink = TransactionalSink::new(kafka, Arc::new(Metrics::new()));
        let r = sink.drive(script, &mut shutdown).await;
        (sink.publisher, r)
    }

    const BATCHES: &[&[u64]] = &[&[0, 1, 2], &[3, 4], &[5, 6, 7, 8]];

    #[tokio::test]
    async fn an_aborted_commit_is_resent_and_every_record_is_visible_once() {
        let mut script = Script::new(Recovery::Resend, BATCHES);
        let kafka = FakeKafka {
            commits: [Outcome::Commit, Outcome::Abort, Outcome::Abort].into(),
            ..FakeKafka::default()
        };
        let (kafka, r) = drive(kafka, &mut script).await;
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(kafka.visible, script.all());
        assert_eq!(kafka.checkpoints, [Some(2), Some(4), Some(8)]);
        assert_eq!(script.committed, [0, 1, 2]);
        // The source filled each batch once: the sink re-sent its copy.
        assert_eq!(script.rewinds, 0);
        assert_eq!(kafka.begun, 5);
    }

    #[tokio::test]
    async fn a_failed_send_rewinds_the_source_and_the_batch_is_produced_again() {
        for recovery in [Recovery::Rewind, Recovery::Refetch] {
            let mut script = Script::new(recovery, BATCHES);
            let kafka = FakeKafka {
                failing_sends: vec![4],
                commits: [Outcome::Commit, Outcome::Commit, Outcome::Abort].into(),
                ..FakeKafka::default()
            };
            let (kafka, r) = drive(kafka, &mut script).await;
            assert!(r.is_ok(), "{r:?}");
            assert_eq!(kafka.visible, script.all(), "{recovery:?}");
            assert_eq!(script.rewinds, 2, "{recovery:?}");
            assert_eq!(script.committed, [0, 1, 2]);
        }
    }

    #[tokio::test]
    async fn a_failed_send_of_a_resent_batch_is_resent_again() {
        let mut script = Script::new(Recovery::Resend, BATCHES);
        let kafka = FakeKafka {
            // The first send of batch 1 and the first of its re-send.
            failing_sends: vec![3, 4],
            ..FakeKafka::default()
        };
        let (kafka, r) = drive(kafka, &mut script).await;
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(kafka.visible, script.all());
    }

    #[tokio::test]
    async fn a_fenced_producer_ends_the_run_without_moving_the_cursor() {
        let mut script = Script::new(Recovery::Resend, BATCHES);
        let kafka = FakeKafka {
            commits: [Outcome::Commit, Outcome::Fatal].into(),
            ..FakeKafka::default()
        };
        let (kafka, r) = drive(kafka, &mut script).await;
        assert!(
            matches!(r, Err(RunError::Publish(ref e)) if e.is_fatal()),
            "{r:?}"
        );
        assert_eq!(kafka.visible, ["0", "1", "2"]);
        assert_eq!(script.committed, [0]);
    }

    #[tokio::test]
    async fn a_batch_with_nothing_to_commit_opens_no_transaction() {
        let mut script = Script::new(Recovery::Refetch, &[&[], &[1]]);
        let (kafka, r) = drive(FakeKafka::default(), &mut script).await;
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(kafka.begun, 1);
        assert_eq!(kafka.visible, ["1"]);
        assert_eq!(script.committed, [0, 1]);
    }

    #[tokio::test]
    async fn rewritten_credentials_end_the_drive_right_after_a_commit() {
        let dir = std::env::temp_dir().join(format!("tws-sink-creds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let password = dir.join("password");
        std::fs::write(&password, "old").expect("write");
        let security = twitterstream_contract::kafka::KafkaSecurity {
            kafka_sasl_password_file: Some(password.clone()),
            ..Default::default()
        };
        let credentials = CredentialFiles::new(&security).check_now();
        std::fs::write(&password, "rotated").expect("write");
        let mut script = Script::new(Recovery::Refetch, BATCHES);
        let (_keep, mut shutdown) = Shutdown::new();
        let mut sink = TransactionalSink::new(FakeKafka::default(), Arc::new(Metrics::new()))
            .watching(credentials);
        let r = sink.drive(&mut script, &mut shutdown).await;
        assert!(
            matches!(r, Err(RunError::CredentialsChanged { refused: false })),
            "{r:?}"
        );
        // The first batch was committed, and nothing after it was begun:
        // new clients resume from that commit's checkpoint.
        assert_eq!(sink.publisher.visible, ["0", "1", "2"]);
        assert_eq!(sink.publisher.checkpoints, [Some(2)]);
        assert_eq!(sink.publisher.begun, 1);
        assert_eq!(script.committed, [0]);
    }
}
