//! Where tweets come from: the [`TweetSource`] trait and its four
//! implementations, one file each under `source/`.
//!
//! A source fills one Kafka transaction at a time and says which position
//! the batch reaches; the transactional sink (`sink.rs`) owns the
//! transaction: it begins, commits with the checkpoint, and on a failure
//! aborts, backs off and does what the source's [`Recovery`] says. A source
//! never touches a transaction, and the sink knows nothing of the X API.

pub(crate) mod replay;
pub(crate) mod search;
pub(crate) mod stream;
pub(crate) mod synthetic;

use super::checkpoint::Checkpoint;
use super::error::RunError;
use crate::shutdown::Shutdown;
use std::time::{Duration, Instant};

/// Records per replay/stream transaction: large enough that the commit
/// round trip is a small share of the time, small enough to keep in memory
/// for a re-send.
pub(crate) const BATCH_RECORDS: usize = 50_000;
/// A batch is committed after this long even if not full, so paced sources
/// become visible to `read_committed` readers promptly.
pub(crate) const BATCH_AGE: Duration = Duration::from_secs(1);

/// What the sink does after a batch failed to commit (and was aborted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recovery {
    /// Send the same records again: the sink keeps a copy of each batch.
    /// For sources that cannot produce the batch again (a live stream) or
    /// whose re-reading would cost more than the copy (a file).
    Resend,
    /// The source starts again at the batch's first position and produces
    /// the same records ([`TweetSource::rewind`]): deterministic sources.
    Rewind,
    /// The source fetches again from its last committed position, which
    /// may bring more tweets than the failed batch ([`TweetSource::rewind`]).
    Refetch,
}

/// What one [`TweetSource::fill`] produced.
#[derive(Debug)]
pub(crate) enum Fill {
    /// A batch is complete: commit what was sent with this checkpoint
    /// (`None`: the source has no position to record). Nothing sent and no
    /// checkpoint means nothing to commit; the batch counts as committed.
    Batch(Option<Checkpoint>),
    /// The source is finished, or shutdown was requested; nothing was sent.
    End,
}

/// The open batch a source sends its records into.
pub(crate) trait Batch {
    /// Sends one record (key = tweet id, value = its JSON, `seq` = its
    /// position for sources that resume by position). False once the batch
    /// is bound to be aborted and produced again by the source
    /// ([`Recovery::Rewind`], [`Recovery::Refetch`]): the source may stop
    /// filling it. With [`Recovery::Resend`] the sink re-sends its copy of
    /// the batch, so it stays true and the batch is filled to its end.
    fn send(&mut self, key: &str, value: &str, seq: Option<u64>) -> bool;
    /// Records sent into this batch so far.
    fn len(&self) -> usize;
    /// When the first record was sent, which bounds a batch's age.
    fn opened(&self) -> Option<Instant>;
}

/// A source of tweets, driven by the transactional sink.
pub(crate) trait TweetSource {
    /// What the sink does with a batch that did not commit.
    fn recovery(&self) -> Recovery;
    /// Fills the next batch; returns when it is complete, or with
    /// [`Fill::End`] when there is nothing more (or shutdown).
    async fn fill(
        &mut self,
        batch: &mut impl Batch,
        shutdown: &mut Shutdown,
    ) -> Result<Fill, RunError>;
    /// The last filled batch is committed: the source's cursor moves past it.
    fn committed(&mut self);
    /// The last filled batch was aborted ([`Recovery::Rewind`] or
    /// [`Recovery::Refetch`]): the next fill starts where the last committed
    /// batch ended.
    fn rewind(&mut self) -> Result<(), RunError> {
        Ok(())
    }
    /// Stops the source; its background work's error, if any, is the run's.
    async fn close(self) -> Result<(), RunError>
    where
        Self: Sized,
    {
        Ok(())
    }
}
