//! Which offset of a partition may be committed, and what a commit carries in
//! its metadata (a source partition's: the contract's `commit` module, which
//! the operator reads too).
//!
//! A record may only be committed once everything it contributed to has been
//! published (window.rs, `Ingested::done_at_ms`). Records become done roughly
//! in order, so the tracker keeps runs of consecutive records sharing a
//! `done_at` rather than one entry per record: memory stays proportional to the
//! number of open windows, not to the backlog.

use std::collections::VecDeque;

/// `done_at` of a record that is done as soon as it is read (malformed, or
/// below the partition's floor).
pub(crate) const DONE: i64 = i64::MIN;

/// Commit bookkeeping for one partition.
#[derive(Debug, Clone)]
pub(crate) struct OffsetTracker {
    /// `(first offset, done_at)` of each run, in offset order.
    runs: VecDeque<(i64, i64)>,
    /// The offset after the last record read: the commit position once every
    /// run is done.
    next: i64,
}

impl OffsetTracker {
    /// A partition whose consumption starts (and whose commit position is) at
    /// `start`.
    pub(crate) fn new(start: i64) -> Self {
        OffsetTracker {
            runs: VecDeque::new(),
            next: start,
        }
    }

    /// Records that `offset` was read and is done once `done_at` is emitted.
    pub(crate) fn record(&mut self, offset: i64, done_at: i64) {
        let extends = self.runs.back().is_some_and(|(_, d)| *d == done_at);
        // A done record after only done records needs no run of its own.
        let needless = done_at == DONE && self.runs.is_empty();
        if !extends && !needless {
            self.runs.push_back((offset, done_at));
        }
        self.next = self.next.max(offset + 1);
    }

    /// Drops the runs that are done and returns the offset to commit: the
    /// first record not done, or the position after the last record read.
    pub(crate) fn commit_position(&mut self, is_done: impl Fn(i64) -> bool) -> i64 {
        while let Some((_, done_at)) = self.runs.front() {
            if *done_at == DONE || is_done(*done_at) {
                self.runs.pop_front();
            } else {
                break;
            }
        }
        self.runs.front().map_or(self.next, |(offset, _)| *offset)
    }

    /// The offset after the last record read.
    pub(crate) fn next(&self) -> i64 {
        self.next
    }
    /// Runs waiting for their windows.
    #[cfg(test)]
    pub(crate) fn pending_runs(&self) -> usize {
        self.runs.len()
    }
}

pub(crate) use twitterstream_contract::commit::SourceCommit;

/// Commit metadata of a merge (partials) partition: the start times of
/// windows already emitted that still have partials at or after the committed
/// offset. The next owner replays those partials and must not emit the window
/// again.
pub(crate) fn encode_merge(final_starts: impl IntoIterator<Item = i64>) -> String {
    let list: Vec<String> = final_starts.into_iter().map(|s| s.to_string()).collect();
    format!("v1;final={}", list.join(","))
}

pub(crate) fn decode_merge(metadata: &str) -> Vec<i64> {
    metadata
        .split(';')
        .find_map(|f| f.strip_prefix("final="))
        .map(|l| l.split(',').filter_map(|s| s.parse().ok()).collect())
        .unwrap_or_default()
}

/// Brokers accept 4096 bytes of commit metadata by default
/// (`offset.metadata.max.bytes`); stay well below.
pub(crate) const MAX_METADATA_BYTES: usize = 3_500;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_up_to_the_first_record_not_done() {
        let mut t = OffsetTracker::new(5);
        assert_eq!(t.commit_position(|_| false), 5);
        t.record(5, 10);
        t.record(6, 10);
        t.record(7, 20);
        t.record(8, 10);
        assert_eq!(t.pending_runs(), 3);
        assert_eq!(t.commit_position(|_| false), 5);
        assert_eq!(t.commit_position(|d| d <= 10), 7);
        assert_eq!(t.commit_position(|d| d <= 20), 9);
        assert_eq!(t.pending_runs(), 0);
        assert_eq!(t.next(), 9);
    }

    #[test]
    fn done_records_commit_at_once_unless_behind_a_pending_one() {
        let mut t = OffsetTracker::new(0);
        t.record(0, DONE);
        t.record(1, DONE);
        assert_eq!(t.commit_position(|_| false), 2);
        t.record(2, 10);
        t.record(3, DONE);
        assert_eq!(t.commit_position(|_| false), 2);
        assert_eq!(t.commit_position(|d| d <= 10), 4);
    }

    #[test]
    fn gaps_in_offsets_are_fine() {
        // Transaction markers occupy offsets that are never delivered.
        let mut t = OffsetTracker::new(0);
        t.record(3, 10);
        t.record(9, 20);
        assert_eq!(t.commit_position(|d| d <= 10), 9);
        assert_eq!(t.commit_position(|_| true), 10);
    }

    #[test]
    fn merge_metadata_round_trips() {
        assert_eq!(decode_merge(&encode_merge([1, -2, 3])), vec![1, -2, 3]);
        assert!(decode_merge(&encode_merge([])).is_empty());
        assert!(decode_merge("garbage").is_empty());
    }
}
