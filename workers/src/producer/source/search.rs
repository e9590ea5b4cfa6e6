//! `x-search`: every poll of the search endpoint (all its pages) is one
//! batch; the poller's cursor moves only once the batch is committed. A
//! failed batch is fetched again ([`Recovery::Refetch`]).

use super::{Batch, Fill, Recovery, TweetSource};
use crate::producer::checkpoint::{Checkpoint, OpenPoll as CheckpointedPoll};
use crate::producer::clock::SystemClock;
use crate::producer::credentials::CredentialsProvider;
use crate::producer::error::RunError;
use crate::producer::metrics::Metrics;
use crate::producer::publisher::TweetRecord;
use crate::producer::search::{OpenPoll, SearchConfig, SearchPoller, id_cmp};
use crate::producer::xapi::XApiClient;
use crate::shutdown::Shutdown;
use std::sync::Arc;
use std::time::Duration;
use twitterstream_contract::Source;
use twitterstream_contract::producer::ProducerArgs;

/// What the cursor does once the filled batch commits.
#[derive(Debug)]
enum Pending {
    /// A whole poll: the cursor moves to its `since_id` (if it found tweets).
    Poll(Option<String>),
    /// A part of a poll larger than the buffer.
    Part(Option<OpenPoll>),
}

pub(crate) struct SearchSource {
    poller: SearchPoller,
    metrics: Arc<Metrics>,
    buffer_limit: usize,
    pending: Option<Pending>,
    finished: bool,
}

fn parse_id(id: &str) -> Option<u128> {
    id.parse().ok()
}

impl SearchSource {
    pub(crate) fn new(
        args: &ProducerArgs,
        start: Checkpoint,
        credentials: CredentialsProvider,
        metrics: Arc<Metrics>,
    ) -> Result<Self, RunError> {
        let client = XApiClient::new(&args.x_api_base_url, Duration::from_secs(30))?;
        let config = SearchConfig::from_args(args)?;
        let since_id = start.after.map(|v| v.to_string());
        let open = start.open_poll.map(|o| OpenPoll {
            newest: o.newest.to_string(),
            until: o.until.to_string(),
        });
        tracing::info!(since_id = ?since_id, open_poll = ?open, "resuming search after the committed checkpoint");
        let events = metrics.clone();
        let poller = SearchPoller::new(client, credentials, config)
            .with_clock(Arc::new(SystemClock))
            .with_since_id(since_id)
            .with_open_poll(open)
            .on_event(move |e| events.search_event(e));
        Ok(Self {
            poller,
            metrics,
            buffer_limit: usize::try_from(args.poll_buffer_bytes).unwrap_or(usize::MAX),
            pending: None,
            finished: false,
        })
    }

    fn checkpoint(&self, after: Option<u128>) -> Checkpoint {
        Checkpoint::new(Source::XSearch.as_str(), after)
    }

    /// The checkpoint of a part of the poll: the part's oldest tweet says
    /// which part of the poll is done.
    fn part(&mut self, fetched: &[TweetRecord]) -> Checkpoint {
        let until = fetched
            .iter()
            .map(|r| r.key.as_str())
            .min_by(|a, b| id_cmp(a, b))
            .map(str::to_owned);
        let open = until.as_deref().and_then(|u| self.poller.open_part(u));
        let after = self.poller.since_id().and_then(parse_id);
        let checkpoint = match &open {
            Some(open) => Checkpoint {
                open_poll: parse_id(&open.newest)
                    .zip(parse_id(&open.until))
                    .map(|(newest, until)| CheckpointedPoll { newest, until }),
                ..self.checkpoint(after)
            },
            None => self.checkpoint(after),
        };
        self.pending = Some(Pending::Part(open));
        checkpoint
    }
}

/// Sends a poll's tweets (newest first, as fetched) oldest first:
/// consumers window by event time, so a poll published newest first would
/// put every tweet after the newest behind the watermark, counted late.
fn send_oldest_first(batch: &mut impl Batch, fetched: Vec<TweetRecord>) {
    for record in fetched.into_iter().rev() {
        if !batch.send(&record.key, &record.value, None) {
            return; // the poll is aborted and fetched again
        }
    }
}

impl TweetSource for SearchSource {
    fn recovery(&self) -> Recovery {
        Recovery::Refetch
    }

    async fn fill(
        &mut self,
        batch: &mut impl Batch,
        shutdown: &mut Shutdown,
    ) -> Result<Fill, RunError> {
        if self.finished {
            return Ok(Fill::End);
        }
        let mut fetched: Vec<TweetRecord> = Vec::new();
        let mut fetched_bytes = 0usize;
        loop {
            let page = tokio::select! {
                b = self.poller.next_batch() => b?,
                // A poll cut short is not committed: the next process
                // fetches it (or its rest) again.
                _ = shutdown.wait() => return Ok(Fill::End),
            };
            self.metrics.request("200");
            self.metrics.tweets_fetched.inc_by(page.tweets.len() as u64);
            self.metrics.tweets_filtered.inc_by(page.filtered as u64);
            self.metrics.tweets_malformed.inc_by(page.malformed as u64);
            for t in &page.tweets {
                fetched_bytes += t.raw_json().len();
                fetched.push(TweetRecord {
                    key: t.id().to_owned(),
                    value: t.raw_json().to_owned(),
                    seq: None,
                });
            }
            if !page.end_of_poll && fetched_bytes > self.buffer_limit {
                // A poll larger than the buffer (a long backfill) is
                // committed a part at a time, newest part first. No
                // transaction stays open across pages and rate-limit waits,
                // which could outlast the transaction timeout; a restart
                // fetches only the rest. Parts after the first are older,
                // so consumers may count them late.
                tracing::warn!(
                    bytes = fetched_bytes,
                    limit = self.buffer_limit,
                    "a poll larger than the buffer is committed in parts; windows may count some of it as late"
                );
                let checkpoint = self.part(&fetched);
                send_oldest_first(batch, fetched);
                return Ok(Fill::Batch(Some(checkpoint)));
            }
            if !page.end_of_poll {
                continue;
            }
            let moves = page.commit.as_deref().is_some_and(|c| {
                self.poller
                    .since_id()
                    .is_none_or(|cur| id_cmp(c, cur).is_gt())
            });
            let after = page
                .commit
                .as_deref()
                .filter(|_| moves)
                .or(self.poller.since_id())
                .and_then(parse_id);
            self.pending = Some(Pending::Poll(page.commit));
            if fetched.is_empty() && !moves {
                return Ok(Fill::Batch(None));
            }
            send_oldest_first(batch, fetched);
            return Ok(Fill::Batch(Some(self.checkpoint(after))));
        }
    }

    fn committed(&mut self) {
        match self.pending.take() {
            Some(Pending::Part(Some(open))) => self.poller.commit_part(open),
            Some(Pending::Poll(commit)) => {
                if let Some(c) = &commit {
                    self.poller.commit(c);
                }
                tracing::debug!(since_id = ?self.poller.since_id(), "poll committed");
                if self.poller.window_closed() {
                    // Every later poll would ask for the same, finished span.
                    tracing::info!("the search has covered --end-time: nothing more to fetch");
                    self.finished = true;
                }
            }
            Some(Pending::Part(None)) | None => {}
        }
    }

    fn rewind(&mut self) -> Result<(), RunError> {
        // A failed poll leaves the cursor where it was, so the next poll
        // fetches it again; a failed part starts the poll again after the
        // last committed part.
        if let Some(Pending::Part(_)) = self.pending.take() {
            self.poller.abandon_poll();
        }
        Ok(())
    }
}
