//! Combining per-replica partial aggregates into final windows, in the style
//! of a Kafka Streams repartition-and-reduce.
//!
//! Each consumer replica emits, per closed window, one [`Partial`] tagged with
//! the source partitions it covered. The [`Merger`] (keyed by window) declares
//! a window final once its partials cover every source partition `0..N`,
//! counting as covered the partitions it was told cannot contribute.
//!
//! Rebalances replay input, so the same partial can arrive twice, and a
//! replayed partition may come back grouped with different partitions. The
//! merger therefore keeps partials by partition set, ignores exact repeats, and
//! finalises from a set of partials that are pairwise disjoint, so no partition
//! is ever counted twice. A partial for a window that is already final is
//! dropped.

use crate::consumer::aggregate::Aggregate;
use crate::consumer::window_key::WindowKey;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// One replica's aggregate of one window over some source partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Partial {
    pub(crate) window: WindowKey,
    /// The source topic's partition count as its sender knew it (0: unknown).
    #[serde(default)]
    pub(crate) sources: i32,
    pub(crate) partitions: BTreeSet<i32>,
    /// Each covered partition's watermark when the partial was emitted; for
    /// diagnosis, as completeness comes from the partition sets.
    #[serde(default)]
    pub(crate) watermarks: BTreeMap<i32, i64>,
    pub(crate) aggregate: Aggregate,
    /// Set when the aggregate was too large for one record: this is one
    /// piece of it, and the partial counts once all its pieces are here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) piece: Option<Piece>,
}

/// Which piece of a split partial a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct Piece {
    pub(crate) index: u32,
    pub(crate) of: u32,
    /// Tells the pieces of one emission from those of a replay that was
    /// split differently (a hash of the whole partial).
    pub(crate) digest: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum MergeError {
    #[error("a merger needs at least one source partition")]
    NoPartitions,
    #[error("partition {partition} is not a source partition (the merger knows 0..{count})")]
    UnknownPartition { partition: i32, count: i32 },
    #[error("a partial must cover at least one partition")]
    EmptyPartial,
    #[error("piece {index} of a partial split in {of}")]
    BadPiece { index: u32, of: u32 },
}

/// What [`Merger::offer`] did with a partial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offer {
    Accepted,
    /// Same window and partition set as one already held.
    Duplicate,
    /// The window was already finalised (or is past every source's
    /// `closed_until`), so this is a replay.
    Stale,
}

#[derive(Debug, Default)]
struct Pending {
    partials: BTreeMap<BTreeSet<i32>, Aggregate>,
    /// Pieces of split partials not yet complete, per partition set and
    /// emission.
    pieces: BTreeMap<(BTreeSet<i32>, u64), BTreeMap<u32, Aggregate>>,
    no_data: BTreeSet<i32>,
}

/// Collects partials until windows are complete.
#[derive(Debug)]
pub(crate) struct Merger {
    count: i32,
    pending: BTreeMap<WindowKey, Pending>,
    /// Per source partition: all its partials for windows ending at or before
    /// this have been offered.
    closed: BTreeMap<i32, i64>,
    finalised: BTreeSet<WindowKey>,
}

impl Merger {
    /// A merger over source partitions `0..partitions`.
    pub(crate) fn new(partitions: i32) -> Result<Self, MergeError> {
        if partitions < 1 {
            return Err(MergeError::NoPartitions);
        }
        Ok(Merger {
            count: partitions,
            pending: BTreeMap::new(),
            closed: BTreeMap::new(),
            finalised: BTreeSet::new(),
        })
    }

    /// Takes `partition` (and a sender's partition count `sources`) as
    /// news that the source topic has grown: from then on a window also
    /// waits for the new partitions.
    fn check(&mut self, partition: i32, sources: i32) -> Result<(), MergeError> {
        if partition < 0 {
            return Err(MergeError::UnknownPartition {
                partition,
                count: self.count,
            });
        }
        self.count = self.count.max(sources).max(partition + 1);
        Ok(())
    }
    /// The source partitions this merger waits for.
    #[cfg(test)]
    pub(crate) fn source_partitions(&self) -> i32 {
        self.count
    }

    /// Windows ending at or before this are decided for every source.
    fn horizon(&self) -> Option<i64> {
        if self.closed.len() < self.count as usize {
            return None;
        }
        self.closed.values().min().copied()
    }

    fn is_stale(&self, window: &WindowKey) -> bool {
        self.finalised.contains(window) || self.horizon().is_some_and(|h| window.end_ms <= h)
    }

    pub(crate) fn offer(&mut self, partial: Partial) -> Result<Offer, MergeError> {
        if partial.partitions.is_empty() {
            return Err(MergeError::EmptyPartial);
        }
        for p in &partial.partitions {
            self.check(*p, partial.sources)?;
        }
        if self.is_stale(&partial.window) {
            return Ok(Offer::Stale);
        }
        let pending = self.pending.entry(partial.window).or_default();
        if pending.partials.contains_key(&partial.partitions) {
            return Ok(Offer::Duplicate);
        }
        let Some(piece) = partial.piece.filter(|p| p.of > 1) else {
            pending
                .partials
                .insert(partial.partitions, partial.aggregate);
            return Ok(Offer::Accepted);
        };
        if piece.index >= piece.of {
            return Err(MergeError::BadPiece {
                index: piece.index,
                of: piece.of,
            });
        }
        let key = (partial.partitions, piece.digest);
        let got = pending.pieces.entry(key.clone()).or_default();
        if got.contains_key(&piece.index) {
            return Ok(Offer::Duplicate);
        }
        got.insert(piece.index, partial.aggregate);
        if got.len() == piece.of as usize {
            let mut whole = Aggregate::default();
            for a in got.values() {
                whole.merge(a);
            }
            let (set, _) = key;
            pending.pieces.retain(|(s, _), _| *s != set);
            pending.partials.insert(set, whole);
        }
        Ok(Offer::Accepted)
    }
    /// Records that `partition` has nothing for `window`.
    #[cfg(test)]
    pub(crate) fn no_data(&mut self, window: WindowKey, partition: i32) -> Result<(), MergeError> {
        self.check(partition, 0)?;
        if !self.is_stale(&window) {
            self.pending
                .entry(window)
                .or_default()
                .no_data
                .insert(partition);
        }
        Ok(())
    }

    /// Records that every partial covering `partition` for windows ending at
    /// or before `closed_until` has been offered, so a window in that range
    /// without one has no data from it. The source must send this after those
    /// partials on the same ordered channel.
    pub(crate) fn source_closed(
        &mut self,
        partition: i32,
        closed_until: i64,
        sources: i32,
    ) -> Result<(), MergeError> {
        self.check(partition, sources)?;
        let c = self.closed.entry(partition).or_insert(closed_until);
        *c = (*c).max(closed_until);
        Ok(())
    }

    /// Removes and returns, in window order, every window now complete.
    pub(crate) fn take_final(&mut self) -> Vec<(WindowKey, Aggregate)> {
        let mut done = Vec::new();
        let mut dropped = Vec::new();
        for (window, pending) in &self.pending {
            if let Some(chosen) = self.cover(window, pending) {
                if chosen.is_empty() {
                    // Every source is known to be empty here: nothing to say.
                    dropped.push(*window);
                    continue;
                }
                let mut total = Aggregate::default();
                for set in chosen {
                    if let Some(a) = pending.partials.get(set) {
                        total.merge(a);
                    }
                }
                done.push((*window, total));
            }
        }
        for w in dropped {
            self.pending.remove(&w);
        }
        for (w, _) in &done {
            self.pending.remove(w);
            self.finalised.insert(*w);
        }
        // Replays of windows behind the horizon are recognised by the horizon
        // alone, which keeps this set from growing without bound.
        if let Some(h) = self.horizon() {
            self.finalised.retain(|w| w.end_ms > h);
            self.pending
                .retain(|w, p| w.end_ms > h || !p.partials.is_empty() || !p.pieces.is_empty());
        }
        done
    }

    /// Pairwise-disjoint partials that cover every partition that has data or
    /// might still send some, if such a choice exists.
    fn cover<'p>(
        &self,
        window: &WindowKey,
        pending: &'p Pending,
    ) -> Option<Vec<&'p BTreeSet<i32>>> {
        let with_data: BTreeSet<i32> = pending.partials.keys().flatten().copied().collect();
        let required: BTreeSet<i32> = (0..self.count)
            .filter(|p| {
                with_data.contains(p)
                    || !(pending.no_data.contains(p)
                        || self.closed.get(p).is_some_and(|c| window.end_ms <= *c))
            })
            .collect();
        let sets: Vec<&BTreeSet<i32>> = pending.partials.keys().collect();
        let mut chosen = Vec::new();
        exact_cover(&required, &sets, &mut BTreeSet::new(), &mut chosen).then_some(chosen)
    }

    /// Marks a window as finalised by an earlier owner of this merge (whose
    /// committed state says so), so that its partials, replayed from before
    /// the final emission, are recognised as stale.
    pub(crate) fn restore_final(&mut self, window: WindowKey) {
        self.pending.remove(&window);
        self.finalised.insert(window);
    }
    /// Windows holding partials or markers.
    #[cfg(test)]
    pub(crate) fn pending_windows(&self) -> usize {
        self.pending.len()
    }
}

/// Depth-first search for disjoint sets whose union is `required`. Sets are
/// tried in their (sorted) order, so the answer does not depend on arrival
/// order. Partials per window are few (one per replica, plus replays), so the
/// search stays small.
fn exact_cover<'p>(
    required: &BTreeSet<i32>,
    sets: &[&'p BTreeSet<i32>],
    covered: &mut BTreeSet<i32>,
    chosen: &mut Vec<&'p BTreeSet<i32>>,
) -> bool {
    let Some(first_missing) = required.iter().find(|p| !covered.contains(p)) else {
        return true;
    };
    for set in sets {
        if !set.contains(first_missing) || !set.is_disjoint(covered) {
            continue;
        }
        covered.extend(set.iter().copied());
        chosen.push(set);
        if exact_cover(required, sets, covered, chosen) {
            return true;
        }
        chosen.pop();
        for p in set.iter() {
            covered.remove(p);
        }
    }
    false
}

#[cfg(test)]
mod tests;
