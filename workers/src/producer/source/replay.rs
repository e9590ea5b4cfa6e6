//! `replay`: a JSONL file, line by line (see `producer/replay.rs` for the
//! line formats), in batches of up to [`BATCH_RECORDS`] records or
//! [`BATCH_AGE`]. Each record carries its line number (`seq`); a restart
//! resumes after the newest committed line. A failed batch is re-sent from
//! the sink's copy ([`Recovery::Resend`]).

use super::{BATCH_AGE, BATCH_RECORDS, Batch, Fill, Recovery, TweetSource};
use crate::producer::checkpoint::Checkpoint;
use crate::producer::error::RunError;
use crate::producer::metrics::Metrics;
use crate::producer::replay::{self, Pacer, ReplayTweet};
use crate::shutdown::Shutdown;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncBufReadExt, BufReader};
use twitterstream_contract::Source;

pub(crate) struct ReplaySource {
    path: PathBuf,
    reader: BufReader<tokio::fs::File>,
    /// The newest committed line (0-based), from the checkpoint.
    after: Option<u128>,
    pacer: Pacer,
    metrics: Arc<Metrics>,
    /// Lines read so far.
    line_no: u64,
    eof: bool,
    /// When the first paced tweet was due.
    started: Option<Instant>,
    line: Vec<u8>,
}

impl ReplaySource {
    pub(crate) async fn open(
        path: PathBuf,
        after: Option<u128>,
        speed: f64,
        metrics: Arc<Metrics>,
    ) -> Result<Self, RunError> {
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|source| RunError::ReplayFile {
                path: path.clone(),
                source,
            })?;
        tracing::info!(file = %path.display(), resume_after_line = ?after, speed, "replay source");
        Ok(Self {
            path,
            reader: BufReader::with_capacity(1 << 20, file),
            after,
            pacer: Pacer::new(speed),
            metrics,
            line_no: 0,
            eof: false,
            started: None,
            line: Vec::new(),
        })
    }

    /// The next tweet not yet committed, with its line number; `None` at
    /// the end of the file.
    async fn next_tweet(&mut self) -> Result<Option<(u64, ReplayTweet)>, RunError> {
        loop {
            self.line.clear();
            let n = self
                .reader
                .read_until(b'\n', &mut self.line)
                .await
                .map_err(|source| RunError::ReplayFile {
                    path: self.path.clone(),
                    source,
                })?;
            if n == 0 {
                self.eof = true;
                tracing::info!(lines = self.line_no, "replay file finished");
                return Ok(None);
            }
            let this_line = self.line_no;
            self.line_no += 1;
            if self.after.is_some_and(|a| u128::from(this_line) <= a) {
                continue;
            }
            match std::str::from_utf8(&self.line)
                .map_err(|e| replay::LineError::Json(e.to_string()))
                .and_then(replay::parse_line)
            {
                Ok(Some(t)) => return Ok(Some((this_line, t))),
                Ok(None) => {}
                Err(e) => {
                    self.metrics.tweets_malformed.inc();
                    tracing::warn!(line = this_line + 1, error = %e, "skipping a malformed replay line");
                }
            }
        }
    }
}

impl TweetSource for ReplaySource {
    fn recovery(&self) -> Recovery {
        Recovery::Resend
    }

    async fn fill(
        &mut self,
        batch: &mut impl Batch,
        shutdown: &mut Shutdown,
    ) -> Result<Fill, RunError> {
        let mut last = None;
        while !self.eof
            && !shutdown.requested()
            && batch.len() < BATCH_RECORDS
            && batch.opened().is_none_or(|o| o.elapsed() < BATCH_AGE)
        {
            let Some((line, tweet)) = self.next_tweet().await? else {
                break;
            };
            self.metrics.tweets_fetched.inc();
            if let Some(offset) = self.pacer.offset(tweet.created_at) {
                let due = *self.started.get_or_insert_with(Instant::now) + offset;
                let now = Instant::now();
                if due > now && !shutdown.sleep(due - now).await {
                    // Not sent, so not committed: the restart reads this
                    // line again.
                    break;
                }
            }
            batch.send(&tweet.id, &tweet.json, Some(line));
            last = Some(line);
        }
        // The batch's position is its last line.
        Ok(match last {
            Some(line) => Fill::Batch(Some(Checkpoint::new(
                Source::Replay.as_str(),
                Some(u128::from(line)),
            ))),
            None => Fill::End,
        })
    }

    fn committed(&mut self) {}
}
