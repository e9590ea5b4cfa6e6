//! The producer process, wired: the ops server, the transactional sink,
//! where the stream resumes, and the configured source.
//!
//! How each source resumes and recovers is in its file under `source/`; how
//! batches become transactions is in `sink.rs`.

use super::checkpoint::Checkpoint;
use super::credentials::{CredentialSource, CredentialsProvider};
pub use super::error::RunError;
use super::metrics::{self, Metrics, ReadyCheck};
use super::publisher::{Publisher, PublisherConfig};
use super::resume::{self, Position, ResumeQuery};
use super::sink::TransactionalSink;
use super::source::replay::ReplaySource;
use super::source::search::SearchSource;
use super::source::stream::StreamSource;
use super::source::synthetic::SyntheticSource;
use crate::kafka::{AuthWatch, CredentialFiles};
use crate::shutdown::Shutdown;
use std::sync::Arc;
use std::time::Duration;
use twitterstream_contract::Source;
use twitterstream_contract::producer::ProducerArgs;

/// Runs the producer until the source ends or shutdown is requested.
pub async fn run(args: ProducerArgs, mut shutdown: Shutdown) -> Result<(), RunError> {
    args.validate()
        .map_err(|e| RunError::Config(e.to_string()))?;
    let source = args.source.as_str();
    let metrics = Arc::new(Metrics::new());
    let auth = AuthWatch::default();
    let ready = ReadyCheck::default();
    let probes = metrics::ProducerProbes {
        metrics: metrics.clone(),
        ready: ready.probe(),
        auth: auth.clone(),
    };
    let (addr, _server) = crate::ops::serve(args.http_addr, probes, shutdown.clone())
        .await
        .map_err(|source| RunError::Http {
            addr: args.http_addr,
            source,
        })?;
    tracing::info!(
        %addr,
        source,
        topic = %args.topic,
        stream = %args.stream_name,
        keyword = args.keyword.as_deref().unwrap_or(""),
        "producer starting"
    );
    // One life of the Kafka clients per turn: a rotated Secret ends one
    // after a commit, and the next logs in with the new files and resumes
    // from the checkpoint that commit wrote.
    let result = loop {
        let credentials = CredentialFiles::new(&args.kafka_security);
        let publisher = Publisher::new(PublisherConfig {
            brokers: brokers(&args),
            topic: args.topic.clone(),
            stream: args.stream_name.clone(),
            qualified_stream: args.qualified_stream(),
            keyword: args.keyword.clone(),
            source,
            compression: "lz4",
            security: args.kafka_security.clone(),
            auth: auth.clone(),
        })?;
        ready.set(publisher.readiness_probe());
        let mut sink =
            TransactionalSink::new(publisher, metrics.clone()).watching(credentials.clone());
        let life = ClientsLife {
            args: &args,
            metrics: &metrics,
            auth: &auth,
            credentials,
        };
        let result = life.run(&mut sink, &mut shutdown).await;
        match result {
            Err(RunError::CredentialsChanged { refused }) => {
                // Refused clients can neither abort nor flush: the next
                // ones fence them, which aborts their open transaction.
                if !refused {
                    sink.close().await;
                }
                tracing::info!(
                    refused,
                    "the Kafka credentials changed; logging in again with them"
                )
            }
            result => {
                sink.close().await;
                break result;
            }
        }
    };
    if result.is_ok() && !shutdown.requested() && !args.exit_when_done {
        tracing::info!(
            source,
            "the source is finished; idling until stopped (--exit-when-done exits instead)"
        );
        shutdown.wait().await;
    }
    result
}

/// One life of the Kafka clients: what they need and were built from.
struct ClientsLife<'a> {
    args: &'a ProducerArgs,
    metrics: &'a Arc<Metrics>,
    auth: &'a AuthWatch,
    credentials: CredentialFiles,
}

impl ClientsLife<'_> {
    /// Initialises the transactions, resumes and drives the source, until
    /// the source ends, shutdown, the clients fail to log in for the grace
    /// period, or the credential files change.
    async fn run(
        self,
        sink: &mut TransactionalSink,
        shutdown: &mut Shutdown,
    ) -> Result<(), RunError> {
        let (args, metrics) = (self.args, self.metrics);
        let work = async {
            match sink.init(shutdown).await {
                Ok(true) => match start(args, sink, metrics, self.auth, shutdown).await {
                    Ok(Some(start)) => drive(args, start, sink, metrics, shutdown).await,
                    other => other.map(|_| ()),
                },
                other => other.map(|_| ()),
            }
        };
        let grace = Duration::from_secs(args.kafka_security.kafka_auth_grace_seconds);
        let refused = RunError::KafkaRefused;
        let ended = tokio::select! {
            r = work => r,
            () = self.auth.refused_after_rotation(self.credentials.clone()) => {
                return Err(RunError::CredentialsChanged { refused: true });
            }
            last = self.auth.failed_for(grace) => return Err(refused(last)),
        };
        match ended {
            // The clients failed because the brokers refuse them (a commit,
            // then its abort, fail with the login): wait for new credentials
            // or the grace period rather than end with the failure.
            Err(e) if self.auth.current().is_some() => {
                tracing::warn!(error = %e, "the brokers refuse this producer's login; waiting for new credentials");
                tokio::select! {
                    () = self.auth.refused_after_rotation(self.credentials) => {
                        Err(RunError::CredentialsChanged { refused: true })
                    }
                    last = self.auth.failed_for(grace) => Err(refused(last)),
                }
            }
            ended => ended,
        }
    }
}

fn brokers(args: &ProducerArgs) -> Vec<String> {
    args.brokers
        .iter()
        .map(|b| b.trim().to_owned())
        .filter(|b| !b.is_empty())
        .collect()
}

/// Where the stream resumes, with a checkpoint committed from then on
/// (x-stream has no position: a live stream cannot be re-read). `None` on
/// shutdown.
async fn start(
    args: &ProducerArgs,
    sink: &mut TransactionalSink,
    metrics: &Metrics,
    auth: &AuthWatch,
    shutdown: &mut Shutdown,
) -> Result<Option<Checkpoint>, RunError> {
    let source = args.source.as_str();
    let position = match args.source {
        Source::XSearch => Position::TweetId,
        Source::Synthetic | Source::Replay => Position::Seq,
        Source::XStream => return Ok(Some(Checkpoint::new(source, None))),
    };
    let query = ResumeQuery {
        brokers: brokers(args),
        topic: args.topic.clone(),
        stream: args.stream_name.clone(),
        qualified: args.qualified_stream(),
        source: source.to_owned(),
        position,
        timeout: Duration::from_secs(120),
        security: args.kafka_security.clone(),
        auth: auth.clone(),
    };
    let Some(found) = resume::resume_retrying(query, metrics, shutdown).await? else {
        return Ok(None);
    };
    sink.set_checkpoint_group(found.group);
    // Later restarts read this instead of the topic.
    if !found.from_checkpoint && !sink.commit_checkpoint(&found.checkpoint, shutdown).await? {
        return Ok(None);
    }
    Ok(Some(found.checkpoint))
}

/// Runs the configured source from `start` through the sink.
async fn drive(
    args: &ProducerArgs,
    start: Checkpoint,
    sink: &mut TransactionalSink,
    metrics: &Arc<Metrics>,
    shutdown: &mut Shutdown,
) -> Result<(), RunError> {
    let credentials = || {
        CredentialsProvider::new(match &args.credentials_dir {
            Some(d) => CredentialSource::Dir(d.clone()),
            None => CredentialSource::Env,
        })
    };
    let metrics = metrics.clone();
    match args.source {
        Source::XSearch => {
            let source = SearchSource::new(args, start, credentials()?, metrics)?;
            sink.drive(source, shutdown).await
        }
        Source::XStream => {
            let source = StreamSource::start(args, credentials()?, metrics, shutdown)?;
            sink.drive(source, shutdown).await
        }
        Source::Replay => {
            let path = args.replay_file.clone().ok_or_else(|| {
                RunError::Config("--replay-file is required for --source replay".into())
            })?;
            let source = ReplaySource::open(path, start.after, args.replay_speed, metrics).await?;
            sink.drive(source, shutdown).await
        }
        Source::Synthetic => {
            let source = SyntheticSource::start(args, start.after, metrics)?;
            sink.drive(source, shutdown).await
        }
    }
}
