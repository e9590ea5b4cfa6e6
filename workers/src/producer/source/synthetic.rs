//! `synthetic`: deterministic generated tweets (`producer/synthetic.rs`),
//! in batches of up to [`SYNTHETIC_BATCH`] tweets or a batch age. Each record
//! carries its generator index (`seq`); a restart resumes after the newest
//! committed one, and the continuation is the same sequence. A failed batch
//! is generated again from the generator's state at its start
//! ([`Recovery::Rewind`]) rather than kept for a re-send, which spares
//! holding and freeing a batch's worth of copies.

use super::{BATCH_AGE, Batch, Fill, Recovery, TweetSource};
use crate::producer::checkpoint::Checkpoint;
use crate::producer::clock::SystemClock;
use crate::producer::error::RunError;
use crate::producer::format::decimal;
use crate::producer::metrics::Metrics;
use crate::producer::synthetic::{Scratch, SyntheticGenerator};
use crate::shutdown::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::error::TryRecvError;
use twitterstream_contract::Source;
use twitterstream_contract::producer::ProducerArgs;

/// Synthetic batches are regenerated rather than kept for a re-send, so
/// they can be larger than other sources'; the batch age bounds them in
/// practice.
pub(crate) const SYNTHETIC_BATCH: u64 = 500_000;
/// The age bound of an unpaced synthetic batch (`--synthetic-rate 0`, a
/// bulk load). Each commit idles librdkafka's sender for the last
/// acknowledgements and two coordinator round trips, so bulk loads commit
/// less often; [`SYNTHETIC_BATCH`] bounds them in practice.
pub(crate) const UNPACED_BATCH_AGE: Duration = Duration::from_secs(5);

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

/// Sends a chunk's tweets into the batch; false if a send failed.
fn send_chunk(batch: &mut impl Batch, chunk: &Chunk) -> bool {
    let mut key = [0u8; 20];
    let mut from = 0;
    for (i, &(id, end)) in chunk.tweets.iter().enumerate() {
        let json = &chunk.json[from..end];
        from = end;
        if !batch.send(decimal(id, &mut key), json, Some(chunk.start + i as u64)) {
            return false;
        }
    }
    true
}

pub(crate) struct SyntheticSource {
    chunks: ChunkSource,
    total: u64,
    pace: Option<Pace>,
    max_age: Duration,
    metrics: Arc<Metrics>,
    /// The generator before the filled batch's first tweet, its position,
    /// and how many tweets the batch holds.
    snapshot: Option<SyntheticGenerator>,
    batch_start: u64,
    batch_len: u64,
    /// Tweets committed, counted from the first.
    published: u64,
    finished: bool,
}

impl SyntheticSource {
    /// Starts generating after the newest committed position `after`.
    pub(crate) fn start(
        args: &ProducerArgs,
        after: Option<u128>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, RunError> {
        let start = after.map_or(0, |s| {
            u64::try_from(s).unwrap_or(u64::MAX).saturating_add(1)
        });
        let total = args.synthetic_count.unwrap_or(u64::MAX);
        tracing::info!(seed = args.seed, resume_at = start, total = ?args.synthetic_count, rate = args.synthetic_rate, "synthetic source");
        let mut generator = SyntheticGenerator::new(args.seed, Arc::new(SystemClock));
        let finished = start >= total;
        if finished {
            tracing::info!("all synthetic tweets already published");
        } else {
            // The continuation must be the same sequence as an
            // uninterrupted run.
            let mut scratch = Scratch::default();
            let mut skipped = String::new();
            while generator.position() < start {
                skipped.clear();
                generator.next_into(&mut scratch, &mut skipped);
            }
        }
        let pace = (args.synthetic_rate.is_finite() && args.synthetic_rate > 0.0).then(|| Pace {
            from: Instant::now(),
            first: start,
            rate: args.synthetic_rate,
        });
        Ok(Self {
            chunks: ChunkSource::start(generator, total, pace)?,
            total,
            pace,
            max_age: if pace.is_some() {
                BATCH_AGE
            } else {
                UNPACED_BATCH_AGE
            },
            metrics,
            snapshot: None,
            batch_start: start,
            batch_len: 0,
            published: start,
            finished,
        })
    }
}

impl TweetSource for SyntheticSource {
    fn recovery(&self) -> Recovery {
        Recovery::Rewind
    }

    async fn fill(
        &mut self,
        batch: &mut impl Batch,
        shutdown: &mut Shutdown,
    ) -> Result<Fill, RunError> {
        if self.finished {
            return Ok(Fill::End);
        }
        let first = tokio::select! {
            c = self.chunks.rx.recv() => c,
            _ = shutdown.wait() => return Ok(Fill::End),
        };
        // None: the generator reached the count.
        let Some(first) = first else {
            tracing::info!(published = self.published, "synthetic count reached");
            self.finished = true;
            return Ok(Fill::End);
        };
        self.snapshot = Some(first.snapshot.clone());
        self.batch_start = first.start;
        let mut n = 0u64;
        let mut next = Some(first);
        // On shutdown the partial batch is still committed: its records are
        // complete, and committing is the clean way to finish.
        while let Some(chunk) = next.take() {
            let sent = send_chunk(batch, &chunk);
            n += chunk.tweets.len() as u64;
            self.chunks.recycle(chunk);
            let age = batch.opened().map_or(Duration::ZERO, |o| o.elapsed());
            let left = self.max_age.saturating_sub(age);
            if !sent || n >= SYNTHETIC_BATCH || left.is_zero() || shutdown.requested() {
                break;
            }
            next = match self.chunks.rx.try_recv() {
                Ok(c) => Some(c),
                Err(TryRecvError::Disconnected) => None,
                Err(TryRecvError::Empty) => tokio::select! {
                    c = self.chunks.rx.recv() => c,
                    _ = tokio::time::sleep(left) => None,
                    _ = shutdown.wait() => None,
                },
            };
        }
        self.batch_len = n;
        let last = (self.batch_start + n).checked_sub(1).map(u128::from);
        Ok(Fill::Batch(Some(Checkpoint::new(
            Source::Synthetic.as_str(),
            last,
        ))))
    }

    fn committed(&mut self) {
        self.published = self.batch_start + self.batch_len;
        self.metrics.tweets_fetched.inc_by(self.batch_len);
    }

    fn rewind(&mut self) -> Result<(), RunError> {
        // Stop the generator (it ran ahead) and start over at the batch.
        if let Some(snapshot) = self.snapshot.take() {
            self.chunks = ChunkSource::start(snapshot, self.total, self.pace)?;
        }
        Ok(())
    }
}
