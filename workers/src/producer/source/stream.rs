//! `x-stream`: the filtered stream, cut into time-bounded batches. A live
//! stream cannot be read again, so a failed batch is re-sent from the sink's
//! copy ([`Recovery::Resend`]), and tweets X sends while no producer is
//! connected are lost (X's `backfill_minutes` needs an enterprise project).

use super::{BATCH_AGE, BATCH_RECORDS, Batch, Fill, Recovery, TweetSource};
use crate::producer::credentials::CredentialsProvider;
use crate::producer::error::RunError;
use crate::producer::metrics::Metrics;
use crate::producer::search::SearchConfig;
use crate::producer::stream::{self, FilteredStream, StreamError, StreamTweet};
use crate::shutdown::Shutdown;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use twitterstream_contract::producer::ProducerArgs;

/// Tweets the connection may receive ahead of the batches.
const AHEAD: usize = 10_000;

pub(crate) struct StreamSource {
    rx: mpsc::Receiver<StreamTweet>,
    task: JoinHandle<Result<(), StreamError>>,
    done: bool,
}

impl StreamSource {
    /// Connects in the background; the connection stops on shutdown.
    pub(crate) fn start(
        args: &ProducerArgs,
        credentials: CredentialsProvider,
        metrics: Arc<Metrics>,
        shutdown: &Shutdown,
    ) -> Result<Self, RunError> {
        let config = SearchConfig::from_args(args)?;
        let (tx, rx) = mpsc::channel(AHEAD);
        let streamer = FilteredStream::new(
            &args.x_api_base_url,
            credentials,
            config.query(),
            stream::rule_tag(&args.qualified_stream()),
            config.min_faves,
            metrics,
        )?;
        let mut shutdown = shutdown.clone();
        let task = tokio::spawn(async move { streamer.run(tx, &mut shutdown).await });
        Ok(Self {
            rx,
            task,
            done: false,
        })
    }
}

impl TweetSource for StreamSource {
    fn recovery(&self) -> Recovery {
        Recovery::Resend
    }

    async fn fill(
        &mut self,
        batch: &mut impl Batch,
        shutdown: &mut Shutdown,
    ) -> Result<Fill, RunError> {
        if self.done {
            return Ok(Fill::End);
        }
        let first = tokio::select! {
            t = self.rx.recv() => t,
            _ = shutdown.wait() => None,
        };
        let Some(first) = first else {
            self.done = true;
            return Ok(Fill::End);
        };
        batch.send(&first.id, &first.json, None);
        // A batch is bounded by its age, not by shutdown: what arrived is
        // committed.
        while batch.len() < BATCH_RECORDS {
            let left = batch
                .opened()
                .map_or(BATCH_AGE, |o| BATCH_AGE.saturating_sub(o.elapsed()));
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some(t)) => {
                    batch.send(&t.id, &t.json, None);
                }
                Ok(None) => {
                    self.done = true;
                    break;
                }
                Err(_) => break,
            }
        }
        Ok(Fill::Batch(None))
    }

    fn committed(&mut self) {}

    async fn close(self) -> Result<(), RunError> {
        self.task.abort();
        match self.task.await {
            Ok(r) => r.map_err(RunError::from),
            Err(_) => Ok(()),
        }
    }
}
