//! The producer process: ops server, Kafka transactions, resume, and the
//! loop of the configured source.
//!
//! Exactly-once per stream, by source:
//! - `x-search`: every poll (all its pages) is one Kafka transaction; the
//!   poller's cursor advances only after the commit. A restart resumes
//!   after the newest tweet id of the stream in the topic.
//! - `synthetic` and `replay`: batches of up to [`BATCH_RECORDS`] records
//!   (or [`BATCH_AGE`] of them) per transaction, each record stamped with
//!   its position (`seq` header: generator index or file line). A restart
//!   resumes after the newest committed position; the generator is
//!   deterministic, so the continuation is the same sequence.
//! - `x-stream`: time-bounded batches per transaction. A live stream cannot
//!   be re-read, so tweets X sends while no producer is connected are lost
//!   (X's `backfill_minutes` needs an enterprise project).
//!
//! All sources share one `transactional.id` per stream, so each stream runs
//! as a single producer replica; a second one fences the first, which exits.

use super::checkpoint::{Checkpoint, OpenPoll as CheckpointedPoll};
use super::clock::SystemClock;
use super::credentials::{CredentialSource, CredentialsError, CredentialsProvider};
use super::format::decimal;
use super::metrics::{self, Metrics};
use super::publisher::{PublishError, Publisher, PublisherConfig, TweetRecord};
use super::replay::{self, Pacer};
use super::resume::{self, Position, ResumeError, ResumeQuery};
use super::search::{OpenPoll, SearchConfig, SearchError, SearchPoller, id_cmp};
use super::stream::{self, StreamError};
use super::synthetic::{Scratch, SyntheticGenerator};
use super::xapi::{XApiClient, XApiError};
use crate::shutdown::Shutdown;
use chrono::{SecondsFormat, Utc};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use twitterstream_contract::Source;
use twitterstream_contract::producer::ProducerArgs;

/// Records per synthetic/replay transaction: large enough that the commit
/// round trip is a small share of the time, small enough to keep in memory
/// for a re-send.
pub const BATCH_RECORDS: usize = 50_000;
/// A batch is committed after this long even if not full, so paced sources
/// become visible to `read_committed` readers promptly.
pub const BATCH_AGE: Duration = Duration::from_secs(1);
/// Synthetic batches are regenerated rather than kept for a re-send, so
/// they can be larger; [`BATCH_AGE`] bounds them in practice.
pub const SYNTHETIC_BATCH: u64 = 500_000;
/// The age bound of an unpaced synthetic batch (`--synthetic-rate 0`, a
/// bulk load). Each commit idles librdkafka's sender for the last
/// acknowledgements and two coordinator round trips, so bulk loads commit
/// less often; [`SYNTHETIC_BATCH`] bounds them in practice.
pub const UNPACED_BATCH_AGE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("cannot resume: {0}")]
    Resume(#[from] ResumeError),
    #[error(transparent)]
    Search(#[from] SearchError),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error(transparent)]
    XApi(#[from] XApiError),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error("cannot serve {addr}: {source}")]
    Http {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read replay file {path}: {source}")]
    ReplayFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
}

fn source_name(s: Source) -> &'static str {
    match s {
        Source::XSearch => "x-search",
        Source::XStream => "x-stream",
        Source::Replay => "replay",
        Source::Synthetic => "synthetic",
    }
}

fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Runs the producer until the source ends or shutdown is requested.
pub async fn run(args: ProducerArgs, mut shutdown: Shutdown) -> Result<(), RunError> {
    args.validate()
        .map_err(|e| RunError::Config(e.to_string()))?;
    let source = source_name(args.source);
    let metrics = Arc::new(Metrics::new());
    let brokers: Vec<String> = args
        .brokers
        .iter()
        .map(|b| b.trim().to_owned())
        .filter(|b| !b.is_empty())
        .collect();
    let mut publisher = Publisher::new(PublisherConfig {
        brokers: brokers.clone(),
        topic: args.topic.clone(),
        stream: args.stream_name.clone(),
        qualified_stream: args.qualified_stream(),
        keyword: args.keyword.clone(),
        source,
        compression: "lz4",
    })?;
    let probes = metrics::ProducerProbes {
        metrics: metrics.clone(),
        ready: publisher.readiness_probe(),
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

    // Fence any predecessor first: its open transaction is aborted, so the
    // read-back below sees exactly what was committed.
    tokio::select! {
        r = publisher.init_transactions() => r?,
        _ = shutdown.wait() => return Ok(()),
    }
    tracing::info!("Kafka transactions initialised");

    let position = match args.source {
        Source::XSearch => Some(Position::TweetId),
        Source::Synthetic | Source::Replay => Some(Position::Seq),
        Source::XStream => None,
    };
    let start = match position {
        Some(position) => {
            let query = ResumeQuery {
                brokers: brokers.clone(),
                topic: args.topic.clone(),
                stream: args.stream_name.clone(),
                qualified: args.qualified_stream(),
                source: source.to_owned(),
                position,
                timeout: Duration::from_secs(120),
            };
            let Some(start) = resume_at(query, &mut publisher, &metrics, &mut shutdown).await?
            else {
                return Ok(());
            };
            start
        }
        None => Checkpoint::new(source, None),
    };
    let result = match args.source {
        Source::XSearch => run_search(&args, start, &mut publisher, &metrics, &mut shutdown).await,
        Source::Synthetic => {
            run_synthetic(&args, start.after, &mut publisher, &metrics, &mut shutdown).await
        }
        Source::Replay => {
            run_replay(&args, start.after, &mut publisher, &metrics, &mut shutdown).await
        }
        Source::XStream => run_stream(&args, &mut publisher, &metrics, &mut shutdown).await,
    };
    // Whatever happened, leave no transaction open and nothing unflushed.
    if publisher.in_transaction()
        && let Err(e) = publisher.abort().await
    {
        tracing::warn!(error = %e, "aborting the open transaction on exit failed");
    }
    if let Err(e) = publisher.flush(Duration::from_secs(30)).await {
        tracing::warn!(error = %e, "flushing on exit failed");
    }
    if result.is_ok() && !shutdown.requested() && !args.exit_when_done {
        tracing::info!(
            source,
            "the source is finished; idling until stopped (--exit-when-done exits instead)"
        );
        shutdown.wait().await;
    }
    result
}

/// Finds where the stream resumes, retrying while Kafka is away, and makes
/// sure it has a checkpoint from then on. `None` on shutdown.
async fn resume_at(
    query: ResumeQuery,
    publisher: &mut Publisher,
    metrics: &Metrics,
    shutdown: &mut Shutdown,
) -> Result<Option<Checkpoint>, RunError> {
    let mut delay = Duration::from_secs(1);
    let found = loop {
        let r = tokio::select! {
            r = resume::resume(query.clone()) => r,
            _ = shutdown.wait() => return Ok(None),
        };
        match r {
            Ok(found) => break found,
            Err(e) if e.is_transient() => {
                metrics.publish_errors.inc();
                tracing::warn!(error = %e, retry_in = ?delay, "cannot find where to resume; retrying");
                if !shutdown.sleep(delay).await {
                    return Ok(None);
                }
                delay = (delay * 2).min(Duration::from_secs(60));
            }
            Err(e) => return Err(e.into()),
        }
    };
    metrics.resume_records_scanned.inc_by(found.scanned);
    tracing::info!(
        from_checkpoint = found.from_checkpoint,
        scanned = found.scanned,
        checkpoint = %found.checkpoint.encode(),
        "resuming"
    );
    publisher.set_checkpoint_group(found.group);
    if !found.from_checkpoint {
        // Later restarts read this instead of the topic.
        let mut delay = Duration::from_millis(200);
        loop {
            publisher.begin()?;
            match publisher.commit(Some(&found.checkpoint)).await {
                Ok(()) => break,
                Err(e) if e.is_fatal() => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?delay, "cannot commit the first checkpoint; retrying");
                    if !shutdown.sleep(delay).await {
                        return Ok(None);
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
    Ok(Some(found.checkpoint))
}

fn parse_id(id: &str) -> Option<u128> {
    id.parse().ok()
}

async fn run_search(
    args: &ProducerArgs,
    start: Checkpoint,
    publisher: &mut Publisher,
    metrics: &Arc<Metrics>,
    shutdown: &mut Shutdown,
) -> Result<(), RunError> {
    let credentials = CredentialsProvider::new(match &args.credentials_dir {
        Some(d) => CredentialSource::Dir(d.clone()),
        None => CredentialSource::Env,
    })?;
    let client = XApiClient::new(&args.x_api_base_url, Duration::from_secs(30))?;
    let config = SearchConfig::from_args(args)?;
    let since_id = start.after.map(|v| v.to_string());
    let open = start.open_poll.map(|o| OpenPoll {
        newest: o.newest.to_string(),
        until: o.until.to_string(),
    });
    tracing::info!(since_id = ?since_id, open_poll = ?open, "resuming search after the committed checkpoint");
    let sink = metrics.clone();
    let mut poller = SearchPoller::new(client, credentials, config)
        .with_clock(Arc::new(SystemClock))
        .with_since_id(since_id)
        .with_open_poll(open)
        .on_event(move |e| sink.search_event(e));
    let buffer_limit = usize::try_from(args.poll_buffer_bytes).unwrap_or(usize::MAX);

    let mut poll_tweets = 0u64;
    // The API pages newest first; consumers window by event time, so a poll
    // is published oldest first, or every tweet after the newest would land
    // behind the watermark and count as late.
    let mut pending: Vec<TweetRecord> = Vec::new();
    let mut pending_bytes = 0usize;
    loop {
        let batch = tokio::select! {
            b = poller.next_batch() => b?,
            _ = shutdown.wait() => break,
        };
        metrics.request("200");
        metrics.tweets_fetched.inc_by(batch.tweets.len() as u64);
        metrics.tweets_filtered.inc_by(batch.filtered as u64);
        metrics.tweets_malformed.inc_by(batch.malformed as u64);
        for t in &batch.tweets {
            pending_bytes += t.raw_json().len();
            pending.push(TweetRecord {
                key: t.id().to_owned(),
                value: t.raw_json().to_owned(),
                seq: None,
            });
        }
        poll_tweets += batch.tweets.len() as u64;
        if !batch.end_of_poll && pending_bytes > buffer_limit {
            // A poll larger than the buffer (a long backfill) is committed a
            // part at a time, newest part first, each with a checkpoint that
            // says which part of the poll is done. No transaction stays open
            // across pages and rate-limit waits, which could outlast the
            // transaction timeout; a restart fetches only the rest. Parts
            // after the first are older, so consumers may count them late.
            tracing::warn!(
                bytes = pending_bytes,
                limit = buffer_limit,
                "a poll larger than the buffer is committed in parts; windows may count some of it as late"
            );
            let until = pending
                .iter()
                .map(|r| r.key.as_str())
                .min_by(|a, b| id_cmp(a, b))
                .map(str::to_owned);
            let open = until.as_deref().and_then(|u| poller.open_part(u));
            let part = match &open {
                Some(open) => Checkpoint {
                    source: start.source.clone(),
                    after: poller.since_id().and_then(parse_id),
                    open_poll: parse_id(&open.newest)
                        .zip(parse_id(&open.until))
                        .map(|(newest, until)| CheckpointedPoll { newest, until }),
                },
                None => Checkpoint::new(&start.source, poller.since_id().and_then(parse_id)),
            };
            pending_bytes = 0;
            // Only a delivered part moves the poller: one that failed is
            // fetched again.
            if deliver(publisher, &mut pending, &part, metrics).await? {
                metrics.tweets_published.inc_by(poll_tweets);
                if let Some(open) = open {
                    poller.commit_part(open);
                }
            } else {
                // The next poll starts again after the last committed part.
                poller.abandon_poll();
            }
            poll_tweets = 0;
            continue;
        }
        if !batch.end_of_poll {
            continue;
        }
        let moves = batch
            .commit
            .as_deref()
            .is_some_and(|c| poller.since_id().is_none_or(|cur| id_cmp(c, cur).is_gt()));
        let checkpoint = Checkpoint::new(
            &start.source,
            batch
                .commit
                .as_deref()
                .filter(|_| moves)
                .or(poller.since_id())
                .and_then(parse_id),
        );
        let committed = if pending.is_empty() && !moves {
            true
        } else {
            deliver(publisher, &mut pending, &checkpoint, metrics).await?
        };
        pending_bytes = 0;
        if committed {
            metrics.tweets_published.inc_by(poll_tweets);
            metrics.mark_success();
            if let Some(c) = &batch.commit {
                poller.commit(c);
            }
            tracing::debug!(tweets = poll_tweets, since_id = ?poller.since_id(), "poll committed");
            if poller.window_closed() {
                // Every later poll would ask for the same, finished span.
                tracing::info!("the search has covered --end-time: nothing more to fetch");
                break;
            }
        }
        poll_tweets = 0;
    }
    // A poll cut short by shutdown is aborted (in `run`): its cursor was not
    // committed, so the next process fetches it (or its rest) again.
    Ok(())
}

/// Publishes `pending` (a poll or a part of one, newest first as fetched)
/// oldest first in one transaction with `checkpoint`; a checkpoint alone is
/// committed too. False when that failed and the transaction was aborted:
/// the caller fetches the tweets again. Empties `pending` either way.
async fn deliver(
    publisher: &mut Publisher,
    pending: &mut Vec<TweetRecord>,
    checkpoint: &Checkpoint,
    metrics: &Metrics,
) -> Result<bool, RunError> {
    if !publisher.in_transaction() {
        publisher.begin()?;
    }
    let any = !pending.is_empty();
    let committed = send_oldest_first(publisher, pending, metrics)?
        && match publisher.commit(Some(checkpoint)).await {
            Ok(()) => true,
            Err(e) if e.is_fatal() => return Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, "poll not committed; it will be fetched again");
                false
            }
        };
    pending.clear();
    if committed {
        if any {
            metrics.transaction("committed");
        }
        metrics.mark_success();
    } else {
        // A failed send left the transaction open; a failed commit aborted it.
        publisher.abort().await?;
        metrics.transaction("aborted");
        metrics.publish_errors.inc();
    }
    Ok(committed)
}

/// Sends the buffered tweets (newest first, as fetched) oldest first in the
/// poll's transaction. False when a send failed: the poll is then aborted and
/// fetched again.
fn send_oldest_first(
    publisher: &mut Publisher,
    pending: &mut Vec<TweetRecord>,
    metrics: &Metrics,
) -> Result<bool, RunError> {
    if pending.is_empty() {
        return Ok(true);
    }
    if !publisher.in_transaction() {
        publisher.begin()?;
    }
    let ingested_at = now_rfc3339();
    for record in pending.drain(..).rev() {
        if let Err(e) = publisher.send_record(&record, &ingested_at) {
            metrics.publish_errors.inc();
            tracing::warn!(error = %e, "send failed; this poll will be aborted and fetched again");
            // Dropping the drain empties the rest of the buffer.
            return Ok(false);
        }
    }
    Ok(true)
}

/// Sends `records` in the open transaction and commits, re-sending in new
/// transactions until a commit succeeds. `sent` says whether the records
/// were already sent successfully in the open transaction. Returns false
/// if shutdown interrupted the retries (nothing of the batch is visible).
async fn commit_batch(
    publisher: &mut Publisher,
    metrics: &Metrics,
    records: &[TweetRecord],
    ingested_at: &str,
    mut sent: bool,
    shutdown: &mut Shutdown,
) -> Result<bool, RunError> {
    // Replay's position: the last line of the batch (x-stream has none).
    let checkpoint = records
        .iter()
        .filter_map(|r| r.seq)
        .max()
        .map(|seq| Checkpoint::new(source_name(Source::Replay), Some(u128::from(seq))));
    let mut delay = Duration::from_millis(200);
    loop {
        if sent {
            match publisher.commit(checkpoint.as_ref()).await {
                Ok(()) => {
                    metrics.transaction("committed");
                    metrics.tweets_published.inc_by(records.len() as u64);
                    metrics.mark_success();
                    return Ok(true);
                }
                Err(e) if e.is_fatal() => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(error = %e, records = records.len(), ?delay, "batch not committed; re-sending it")
                }
            }
        } else {
            publisher.abort().await?;
        }
        metrics.transaction("aborted");
        metrics.publish_errors.inc();
        if !shutdown.sleep(delay).await {
            return Ok(false);
        }
        delay = (delay * 2).min(Duration::from_secs(10));
        publisher.begin()?;
        sent = true;
        for r in records {
            if let Err(e) = publisher.send_record(r, ingested_at) {
                metrics.publish_errors.inc();
                tracing::warn!(error = %e, "re-send failed");
                sent = false;
                break;
            }
        }
    }
}

/// Tweets per chunk the generator thread hands to the sender (unpaced).
const CHUNK_TWEETS: usize = 2_048;
/// How many chunks the generator may run ahead of the sender: enough to
/// keep generating through a commit (~100 ms at a few hundred thousand
/// tweets/s) while holding ~16 MB at most.
const CHUNKS_AHEAD: usize = 16;

/// Consecutive synthetic tweets, generated ahead of sending.
struct Chunk {
    /// The generator before this chunk's first tweet: a transaction that
    /// began with this chunk and failed is generated again from here.
    snapshot: SyntheticGenerator,
    /// Position of the first tweet.
    start: u64,
    /// The tweets' JSON objects, back to back.
    json: String,
    /// Per tweet: its id and where its JSON ends in `json`.
    tweets: Vec<(u64, usize)>,
}

/// Generation on its own thread, so it overlaps the sending, librdkafka's
/// batching and compression, and the waits on commits. Dropping it stops
/// the thread (at its next chunk).
struct ChunkSource {
    rx: tokio::sync::mpsc::Receiver<Chunk>,
    recycle: std::sync::mpsc::Sender<Chunk>,
}

/// Pacing of a rate-limited synthetic source: tweet `i` is due at
/// `from + (i - first) / rate`.
#[derive(Debug, Clone, Copy)]
struct Pace {
    from: Instant,
    first: u64,
    rate: f64,
}

impl ChunkSource {
    fn start(
        generator: SyntheticGenerator,
        total: u64,
        pace: Option<Pace>,
    ) -> Result<Self, RunError> {
        // A paced chunk holds ~10 ms of tweets, so slow rates are not held
        // back waiting for a chunk to fill.
        let chunk_len = match pace {
            Some(p) => (p.rate / 100.0).clamp(1.0, CHUNK_TWEETS as f64) as usize,
            None => CHUNK_TWEETS,
        };
        let (tx, rx) = tokio::sync::mpsc::channel(CHUNKS_AHEAD);
        let (recycle, recycled) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("synthetic-gen".into())
            .spawn(move || generate_chunks(generator, total, pace, chunk_len, &tx, &recycled))
            .map_err(|e| RunError::Config(format!("cannot start the generator thread: {e}")))?;
        Ok(Self { rx, recycle })
    }

    /// Hands a sent chunk's buffers back for reuse.
    fn recycle(&self, chunk: Chunk) {
        // Fails only once the thread has finished: then it is simply freed.
        let _ = self.recycle.send(chunk);
    }
}

fn generate_chunks(
    mut generator: SyntheticGenerator,
    total: u64,
    pace: Option<Pace>,
    chunk_len: usize,
    tx: &tokio::sync::mpsc::Sender<Chunk>,
    recycled: &std::sync::mpsc::Receiver<Chunk>,
) {
    let mut scratch = Scratch::default();
    while generator.position() < total {
        let mut chunk = match recycled.try_recv() {
            Ok(mut c) => {
                c.snapshot = generator.clone();
                c.json.clear();
                c.tweets.clear();
                c
            }
            Err(_) => Chunk {
                snapshot: generator.clone(),
                start: 0,
                json: String::with_capacity(chunk_len * 512),
                tweets: Vec::with_capacity(chunk_len),
            },
        };
        chunk.start = generator.position();
        while chunk.tweets.len() < chunk_len && generator.position() < total {
            if let Some(p) = pace {
                let due = p.from
                    + Duration::from_secs_f64((generator.position() - p.first) as f64 / p.rate);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
            let (_, id) = generator.next_into(&mut scratch, &mut chunk.json);
            chunk.tweets.push((id, chunk.json.len()));
        }
        if tx.blocking_send(chunk).is_err() {
            return; // the sender stopped (shutdown, or a batch to regenerate)
        }
    }
}

/// Sends a chunk's tweets in the open transaction; false if a send failed.
fn send_chunk(publisher: &Publisher, chunk: &Chunk, ingested_at: &str, metrics: &Metrics) -> bool {
    let mut key = [0u8; 20];
    let mut from = 0;
    for (i, &(id, end)) in chunk.tweets.iter().enumerate() {
        let json = &chunk.json[from..end];
        from = end;
        let seq = chunk.start + i as u64;
        if let Err(e) = publisher.send(decimal(id, &mut key), json, Some(seq), ingested_at) {
            metrics.publish_errors.inc();
            tracing::warn!(error = %e, "send failed; the batch will be generated and sent again");
            return false;
        }
    }
    true
}

async fn run_synthetic(
    args: &ProducerArgs,
    after: Option<u128>,
    publisher: &mut Publisher,
    metrics: &Arc<Metrics>,
    shutdown: &mut Shutdown,
) -> Result<(), RunError> {
    let start = after.map_or(0, |s| {
        u64::try_from(s).unwrap_or(u64::MAX).saturating_add(1)
    });
    let total = args.synthetic_count.unwrap_or(u64::MAX);
    tracing::info!(seed = args.seed, resume_at = start, total = ?args.synthetic_count, rate = args.synthetic_rate, "synthetic source");
    if start >= total {
        tracing::info!("all synthetic tweets already published");
        return Ok(());
    }
    let mut generator = SyntheticGenerator::new(args.seed, Arc::new(SystemClock));
    // The continuation must be the same sequence as an uninterrupted run.
    let mut scratch = Scratch::default();
    let mut skipped = String::new();
    while generator.position() < start {
        skipped.clear();
        generator.next_into(&mut scratch, &mut skipped);
    }
    let pace = (args.synthetic_rate.is_finite() && args.synthetic_rate > 0.0).then(|| Pace {
        from: Instant::now(),
        first: start,
        rate: args.synthetic_rate,
    });
    let max_age = if pace.is_some() {
        BATCH_AGE
    } else {
        UNPACED_BATCH_AGE
    };
    let mut source = ChunkSource::start(generator, total, pace)?;
    let mut published = start;
    let mut delay = Duration::from_millis(200);
    while !shutdown.requested() {
        let first = tokio::select! {
            c = source.rx.recv() => c,
            _ = shutdown.wait() => None,
        };
        // None: the generator reached the count (or shutdown).
        let Some(first) = first else { break };
        // Records are not kept for a re-send: a failed batch is generated
        // again from this snapshot (same tweets, fresh created_at), which
        // spares holding and freeing a batch's worth of copies.
        let snapshot = first.snapshot.clone();
        let batch_start = first.start;
        publisher.begin()?;
        let ingested_at = now_rfc3339();
        let opened = Instant::now();
        let mut n = 0u64;
        let mut sent = true;
        let mut next = Some(first);
        while let Some(chunk) = next.take() {
            sent = send_chunk(publisher, &chunk, &ingested_at, metrics);
            n += chunk.tweets.len() as u64;
            source.recycle(chunk);
            let left = max_age.saturating_sub(opened.elapsed());
            if !sent || n >= SYNTHETIC_BATCH || left.is_zero() || shutdown.requested() {
                break;
            }
            next = match source.rx.try_recv() {
                Ok(c) => Some(c),
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => None,
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => tokio::select! {
                    c = source.rx.recv() => c,
                    _ = tokio::time::sleep(left) => None,
                    _ = shutdown.wait() => None,
                },
            };
        }
        let filled = opened.elapsed();
        // On shutdown the partial batch is still committed: its records are
        // complete, and committing is the clean way to finish.
        let checkpoint = Checkpoint::new(
            source_name(Source::Synthetic),
            (batch_start + n).checked_sub(1).map(u128::from),
        );
        let committed = if sent {
            match publisher.commit(Some(&checkpoint)).await {
                Ok(()) => true,
                Err(e) if e.is_fatal() => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(error = %e, records = n, ?delay, "batch not committed; generating it again");
                    false
                }
            }
        } else {
            publisher.abort().await?;
            false
        };
        if committed {
            published = batch_start + n;
            metrics.transaction("committed");
            metrics.tweets_fetched.inc_by(n);
            metrics.tweets_published.inc_by(n);
            metrics.mark_success();
            delay = Duration::from_millis(200);
            tracing::debug!(records = n, ?filled, commit = ?(opened.elapsed() - filled), "synthetic batch committed");
        } else {
            metrics.transaction("aborted");
            metrics.publish_errors.inc();
            // Stop the generator (it ran ahead) and start over at the batch.
            source = ChunkSource::start(snapshot, total, pace)?;
            if !shutdown.sleep(delay).await {
                break;
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }
    if published >= total {
        tracing::info!(published, "synthetic count reached");
    }
    Ok(())
}

async fn run_replay(
    args: &ProducerArgs,
    after: Option<u128>,
    publisher: &mut Publisher,
    metrics: &Arc<Metrics>,
    shutdown: &mut Shutdown,
) -> Result<(), RunError> {
    let path = args
        .replay_file
        .clone()
        .ok_or_else(|| RunError::Config("--replay-file is required for --source replay".into()))?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|source| RunError::ReplayFile {
            path: path.clone(),
            source,
        })?;
    let mut reader = tokio::io::BufReader::with_capacity(1 << 20, file);
    tracing::info!(file = %path.display(), resume_after_line = ?after, speed = args.replay_speed, "replay source");
    let mut pacer = Pacer::new(args.replay_speed);
    let mut line = Vec::new();
    let mut line_no: u64 = 0;
    let mut eof = false;
    let mut started: Option<Instant> = None;
    while !eof && !shutdown.requested() {
        let mut records: Vec<TweetRecord> = Vec::new();
        let mut sent = true;
        let mut ingested_at = String::new();
        let mut opened: Option<Instant> = None;
        while records.len() < BATCH_RECORDS && opened.is_none_or(|o| o.elapsed() < BATCH_AGE) {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .await
                .map_err(|source| RunError::ReplayFile {
                    path: path.clone(),
                    source,
                })?;
            if n == 0 {
                eof = true;
                break;
            }
            let this_line = line_no;
            line_no += 1;
            if after.is_some_and(|a| u128::from(this_line) <= a) {
                continue;
            }
            let tweet = match std::str::from_utf8(&line)
                .map_err(|e| replay::LineError::Json(e.to_string()))
                .and_then(replay::parse_line)
            {
                Ok(Some(t)) => t,
                Ok(None) => continue,
                Err(e) => {
                    metrics.tweets_malformed.inc();
                    tracing::warn!(line = this_line + 1, error = %e, "skipping a malformed replay line");
                    continue;
                }
            };
            metrics.tweets_fetched.inc();
            if let Some(offset) = pacer.offset(tweet.created_at) {
                let due = *started.get_or_insert_with(Instant::now) + offset;
                let now = Instant::now();
                if due > now && !shutdown.sleep(due - now).await {
                    // Not yet sent: the restart reads this line again.
                    break;
                }
            }
            if opened.is_none() {
                publisher.begin()?;
                ingested_at = now_rfc3339();
                opened = Some(Instant::now());
            }
            let record = TweetRecord {
                key: tweet.id,
                value: tweet.json,
                seq: Some(this_line),
            };
            if sent && let Err(e) = publisher.send_record(&record, &ingested_at) {
                metrics.publish_errors.inc();
                tracing::warn!(error = %e, "send failed; the batch will be re-sent");
                sent = false;
            }
            records.push(record);
        }
        if opened.is_some()
            && !commit_batch(publisher, metrics, &records, &ingested_at, sent, shutdown).await?
        {
            break;
        }
    }
    if eof {
        tracing::info!(lines = line_no, "replay file finished");
    }
    Ok(())
}

async fn run_stream(
    args: &ProducerArgs,
    publisher: &mut Publisher,
    metrics: &Arc<Metrics>,
    shutdown: &mut Shutdown,
) -> Result<(), RunError> {
    let credentials = CredentialsProvider::new(match &args.credentials_dir {
        Some(d) => CredentialSource::Dir(d.clone()),
        None => CredentialSource::Env,
    })?;
    let config = SearchConfig::from_args(args)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<stream::StreamTweet>(10_000);
    let streamer = stream::FilteredStream::new(
        &args.x_api_base_url,
        credentials,
        config.query(),
        stream::rule_tag(&args.qualified_stream()),
        config.min_faves,
        metrics.clone(),
    )?;
    let mut stream_shutdown = shutdown.clone();
    let task = tokio::spawn(async move { streamer.run(tx, &mut stream_shutdown).await });
    let mut done = false;
    while !done {
        let first = tokio::select! {
            t = rx.recv() => t,
            _ = shutdown.wait() => None,
        };
        let Some(first) = first else { break };
        publisher.begin()?;
        let ingested_at = now_rfc3339();
        let opened = Instant::now();
        let mut records = Vec::new();
        let mut sent = true;
        let mut next = Some(first);
        loop {
            if let Some(t) = next.take() {
                let record = TweetRecord {
                    key: t.id,
                    value: t.json,
                    seq: None,
                };
                if sent && let Err(e) = publisher.send_record(&record, &ingested_at) {
                    metrics.publish_errors.inc();
                    tracing::warn!(error = %e, "send failed; the batch will be re-sent");
                    sent = false;
                }
                records.push(record);
            }
            let left = BATCH_AGE.saturating_sub(opened.elapsed());
            if records.len() >= BATCH_RECORDS || left.is_zero() {
                break;
            }
            match tokio::time::timeout(left, rx.recv()).await {
                Ok(Some(t)) => next = Some(t),
                Ok(None) => {
                    done = true;
                    break;
                }
                Err(_) => break,
            }
        }
        if !commit_batch(publisher, metrics, &records, &ingested_at, sent, shutdown).await? {
            break;
        }
    }
    task.abort();
    match task.await {
        Ok(r) => r.map_err(RunError::from),
        Err(_) => Ok(()),
    }
}
