//! The aggregate stage: reads this replica's share of the tweet topic into a
//! window engine and publishes each closed window as a partial aggregate of
//! the partitions it read, to the partials topic.
//!
//! Its state is exactly what the last committed transaction implies. Each
//! source partition's commit carries, in its metadata, the point up to which
//! its windows are published; whoever owns the partition next (this replica
//! after an error, another after a rebalance) starts its engine with that as
//! the partition's floor and replays from the committed offset. Every record
//! of a window above the floor is at or after that offset (offsets only commit
//! once their windows are out), so replayed partials are complete, and none
//! at or below the floor is published twice.

use crate::consumer::merge::Partial;
use crate::consumer::metrics::Metrics;
use crate::consumer::offsets::{DONE, OffsetTracker, SourceCommit};
use crate::consumer::partials::{self, InternalRecord};
use crate::consumer::stage::{Batch, Committed, GroupView, OutRecord, Processor};
use crate::consumer::tweet::{ParsedTweet, TweetError};
use crate::consumer::window::{RemotePartition, WindowEngine, WindowError, WindowSpec};
use std::collections::BTreeMap;
use std::sync::Arc;
use twitterstream_contract::consumer::TimeMode;

/// How often `Closed` markers are repeated when nothing changes, so that a
/// merger replaying from its committed offset learns them again.
const MARKER_HEARTBEAT_MS: i64 = 2_000;
/// At most one log line per this long about tweets dated in the future; the
/// metric counts every one.
const FUTURE_LOG_INTERVAL_MS: i64 = 10_000;

pub(crate) struct AggregateStage {
    spec: WindowSpec,
    mode: TimeMode,
    slide_ms: i64,
    /// Records whose `stream` header names another stream are skipped.
    stream: String,
    /// Per partition: records before this offset were judged by the
    /// previous owner against a publication point older than its last
    /// commit's floor, so whatever they gave to windows at or below the floor
    /// (counted, or a late unit) was published: a replay skips those windows.
    replay_until: BTreeMap<i32, i64>,
    /// Per partition: the publication point (`closed_until`) records are
    /// judged against now, and the first offset judged against it. Records
    /// from that offset on that were late have their late units in windows
    /// after it, which a commit at this point has not published; the commit
    /// says so (`read=`), so the next owner counts them again.
    judged: BTreeMap<i32, (Option<i64>, i64)>,
    partials_topic: Arc<str>,
    partials_partitions: i32,
    engine: WindowEngine,
    trackers: BTreeMap<i32, OffsetTracker>,
    /// What the last commit said, per partition: (offset, metadata).
    committed: BTreeMap<i32, (i64, SourceCommit)>,
    /// The batch being committed.
    in_flight: BTreeMap<i32, (i64, SourceCommit)>,
    /// The closed-until times the last committed markers said.
    markers_committed: BTreeMap<i32, i64>,
    /// Those of the markers in the batch being committed, and the cycle's
    /// time (the stage reads no clock of its own).
    markers_in_flight: Option<(BTreeMap<i32, i64>, i64)>,
    markers_at_ms: i64,
    /// The source topic's partition count as last seen; partials and
    /// markers carry it, so mergers learn of partitions added to the topic
    /// before any window could complete without them.
    sources: i32,
    /// Reset, and the group's commits not yet observed since.
    fresh: bool,
    /// Future-dated tweets since the last log line about them, and when that was.
    future_unlogged: u64,
    future_logged_ms: i64,
    metrics: Arc<Metrics>,
}

impl AggregateStage {
    pub(crate) fn new(
        stream: &str,
        spec: WindowSpec,
        mode: TimeMode,
        partials_topic: &str,
        partials_partitions: i32,
        source_partitions: i32,
        metrics: Arc<Metrics>,
    ) -> Result<Self, WindowError> {
        Ok(AggregateStage {
            engine: WindowEngine::with_mode(spec, mode)?,
            stream: stream.to_owned(),
            replay_until: BTreeMap::new(),
            judged: BTreeMap::new(),
            spec,
            mode,
            slide_ms: spec.slide.as_millis() as i64,
            partials_topic: partials_topic.into(),
            partials_partitions,
            trackers: BTreeMap::new(),
            committed: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            markers_committed: BTreeMap::new(),
            markers_in_flight: None,
            markers_at_ms: i64::MIN,
            sources: source_partitions,
            fresh: false,
            future_unlogged: 0,
            future_logged_ms: i64::MIN,
            metrics,
        })
    }

    /// Down to a multiple of the slide: every window ends on one, so this
    /// closes the same windows, and a watermark that follows the clock does
    /// not change the markers (and cause a commit) every cycle.
    fn closed_until(&self, partition: i32) -> Option<i64> {
        let c = self
            .engine
            .floor(partition)
            .max(self.engine.emitted_until())?;
        Some(c.div_euclid(self.slide_ms) * self.slide_ms)
    }

    /// Adds a tweet of this stream to its windows; when it is done (see
    /// `Ingested::done_at_ms`).
    fn count(
        &mut self,
        partition: i32,
        offset: i64,
        tweet: Result<ParsedTweet<'_>, TweetError>,
        now_ms: i64,
    ) -> i64 {
        let replayed = self
            .replay_until
            .get(&partition)
            .is_some_and(|r| offset < *r);
        match ingest(
            &mut self.engine,
            self.mode,
            partition,
            tweet,
            now_ms,
            replayed,
        ) {
            Ok(ingested) => {
                if ingested.late > 0 {
                    self.metrics.tweets_late.inc_by(u64::from(ingested.late));
                }
                ingested.done_at_ms
            }
            Err(RecordError::Window(e @ WindowError::Future { .. })) => {
                self.future(partition, offset, &e, now_ms);
                DONE
            }
            Err(e) => {
                self.metrics.records_malformed.inc();
                tracing::debug!(partition, offset, error = %e, "skipping malformed record");
                DONE
            }
        }
    }

    /// Whether some partition is still short of the records its previous
    /// owner had read (`replay_until`). A commit's `read=` must not fall
    /// below that point: the records in between were published up to the
    /// previous floor, and an owner after this one, trusting a lower
    /// `read=`, would count them late again for windows they were already
    /// published in. `read=` only moves when a window closes, so none closes
    /// until the replay is done. Found by `consumer::simulation` (its
    /// regression seeds): a replica rewound after an aborted transaction (or
    /// rebalanced) closed a window at offset 168 of a replay up to 240, the
    /// next reset came before offset 240 was committed, and two tweets in
    /// between were counted twice. Commits of versions that did not say
    /// (`i64::MAX`) are not waited for.
    fn replaying(&self) -> bool {
        self.trackers.iter().any(|(p, t)| {
            self.engine.floor(*p).is_some()
                && self
                    .replay_until
                    .get(p)
                    .is_some_and(|r| *r != i64::MAX && t.next() < *r)
        })
    }

    /// Records, per partition whose publication point moved, the offset from
    /// which records are judged against the new one. Called whenever it can
    /// move: after every `advance` and after the group's horizon is applied.
    fn note_publication_points(&mut self) {
        let ids: Vec<i32> = self.trackers.keys().copied().collect();
        for p in ids {
            let closed = self.closed_until(p);
            let next = self.trackers.get(&p).map_or(0, OffsetTracker::next);
            let mark = self.judged.entry(p).or_insert((closed, next));
            if mark.0 != closed {
                *mark = (closed, next);
            }
        }
    }

    /// Counts a tweet dated further ahead than the allowed skew, and logs a
    /// sample of them.
    fn future(&mut self, partition: i32, offset: i64, e: &WindowError, now_ms: i64) {
        self.metrics.tweets_future.inc();
        self.future_unlogged += 1;
        if now_ms.saturating_sub(self.future_logged_ms) >= FUTURE_LOG_INTERVAL_MS {
            tracing::warn!(
                partition,
                offset,
                error = %e,
                skipped_since_last_report = self.future_unlogged,
                "skipping tweets dated in the future"
            );
            self.future_unlogged = 0;
            self.future_logged_ms = now_ms;
        }
    }
}

impl Processor for AggregateStage {
    fn reset(&mut self, assigned: &[Committed], now_ms: i64) {
        // The spec was accepted by `new`, so this cannot fail; if it somehow
        // did, an engine reset keeps at least the emitted windows closed.
        match WindowEngine::with_mode(self.spec, self.mode) {
            Ok(e) => self.engine = e,
            Err(_) => self.engine.reset(),
        }
        self.trackers.clear();
        self.committed.clear();
        self.in_flight.clear();
        self.markers_committed.clear();
        self.markers_in_flight = None;
        self.markers_at_ms = i64::MIN;
        self.fresh = true;
        self.replay_until.clear();
        self.judged.clear();
        for c in assigned {
            let commit = SourceCommit::decode(&c.metadata);
            self.engine
                .assign_from(c.partition, now_ms, commit.closed_until_ms);
            // Commits of earlier versions do not say: all of it is a replay.
            let read_until = commit.read_until.unwrap_or(i64::MAX);
            self.replay_until.insert(c.partition, read_until);
            self.judged
                .insert(c.partition, (commit.closed_until_ms, read_until));
            self.trackers
                .insert(c.partition, OffsetTracker::new(c.offset));
        }
    }

    /// The record's `stream` header, and the parsed tweet.
    type Prepared<'a> = (Option<&'a [u8]>, Result<ParsedTweet<'a>, TweetError>);

    fn prepare<'a>(payload: Option<&'a [u8]>, stream: Option<&'a [u8]>) -> Self::Prepared<'a> {
        (stream, ParsedTweet::parse(payload.unwrap_or_default()))
    }

    fn record(&mut self, partition: i32, offset: i64, prepared: Self::Prepared<'_>, now_ms: i64) {
        self.metrics.records_consumed.inc();
        let (stream, tweet) = prepared;
        let done_at = if stream.is_some_and(|s| s != self.stream.as_bytes()) {
            // Another stream shares the topic: its tweets are its own.
            self.metrics.records_other_stream.inc();
            DONE
        } else {
            self.count(partition, offset, tweet, now_ms)
        };
        if let Some(t) = self.trackers.get_mut(&partition) {
            t.record(offset, done_at);
        }
    }

    fn cycle(&mut self, now_ms: i64) -> Batch {
        let mut batch = Batch::default();
        // No window closes while replaying what the previous owner had read
        // (see `replaying`).
        let closed = if self.replaying() {
            Vec::new()
        } else {
            self.engine.advance(now_ms)
        };
        let watermarks = self.engine.partition_watermarks();
        for (window, aggregate) in closed {
            let span = tracing::info_span!("window", start = window.start_ms, end = window.end_ms);
            let _entered = span.enter();
            // Partitions whose earlier owner already published this window
            // are not part of this partial.
            let covered: std::collections::BTreeSet<i32> = self
                .trackers
                .keys()
                .copied()
                .filter(|p| self.engine.floor(*p).is_none_or(|f| window.end_ms > f))
                .collect();
            if covered.is_empty() {
                continue;
            }
            tracing::debug!(count = aggregate.count, partitions = ?covered, "publishing partial");
            let partial = Partial {
                window,
                sources: self.sources,
                watermarks: watermarks
                    .iter()
                    .filter(|(p, _)| covered.contains(p))
                    .map(|(p, w)| (*p, *w))
                    .collect(),
                partitions: covered,
                aggregate,
                piece: None,
            };
            let partition = partials::partition_of(window, self.slide_ms, self.partials_partitions);
            for payload in partials::encode(partial, now_ms) {
                self.metrics.partials_published.inc();
                batch.records.push(OutRecord {
                    topic: self.partials_topic.clone(),
                    partition: Some(partition),
                    key: window.start_ms.to_string(),
                    payload,
                });
            }
        }
        let heartbeat = now_ms.saturating_sub(self.markers_at_ms) >= MARKER_HEARTBEAT_MS;
        let mut changed = !batch.records.is_empty();
        let mut state = BTreeMap::new();
        let status = self.engine.partition_status(now_ms);
        self.note_publication_points();
        let ids: Vec<i32> = self.trackers.keys().copied().collect();
        for p in ids {
            let commit = SourceCommit {
                closed_until_ms: self.closed_until(p),
                watermark_ms: status.get(&p).and_then(|s| s.watermark),
                idle: status.get(&p).is_some_and(|s| s.idle),
                read_until: self.judged.get(&p).map(|(_, from)| *from),
                position: self.position(p),
            };
            let engine = &self.engine;
            let Some(tracker) = self.trackers.get_mut(&p) else {
                continue;
            };
            let offset = tracker.commit_position(|d| engine.is_emitted(d));
            changed |= self.committed.get(&p) != Some(&(offset, commit));
            state.insert(p, (offset, commit));
        }
        let until: BTreeMap<i32, i64> = state
            .iter()
            .filter_map(|(p, (_, c))| c.closed_until_ms.map(|u| (*p, u)))
            .collect();
        let markers_due = !until.is_empty() && (heartbeat || until != self.markers_committed);
        if !(changed || markers_due) {
            return Batch::default();
        }
        for (p, (offset, commit)) in &state {
            batch.offsets.push((*p, *offset, commit.encode()));
        }
        // Markers follow the partials on every partition and say no more
        // than the offsets' metadata committed with them: one record per
        // partials partition for all of this replica's source partitions.
        if markers_due {
            let marker = InternalRecord::ClosedAll {
                until: until.clone(),
                sources: self.sources,
            };
            if let Ok(payload) = serde_json::to_vec(&marker) {
                let key = format!("closed-{}", until.keys().next().copied().unwrap_or(0));
                for q in 0..self.partials_partitions {
                    batch.records.push(OutRecord {
                        topic: self.partials_topic.clone(),
                        partition: Some(q),
                        key: key.clone(),
                        payload: payload.clone(),
                    });
                }
                self.markers_in_flight = Some((until, now_ms));
            }
        }
        self.in_flight = state;
        self.metrics
            .open_windows
            .set(self.engine.open_windows() as i64);
        if let Some(wm) = self.engine.watermark()
            && self.mode == TimeMode::Event
        {
            self.metrics
                .watermark_delay_seconds
                .set((now_ms - wm) as f64 / 1000.0);
        }
        batch
    }

    fn committed(&mut self) {
        self.committed = std::mem::take(&mut self.in_flight);
        if let Some((markers, at_ms)) = self.markers_in_flight.take() {
            self.markers_committed = markers;
            self.markers_at_ms = at_ms;
        }
    }

    fn position(&self, partition: i32) -> Option<i64> {
        self.trackers.get(&partition).map(OffsetTracker::next)
    }

    /// Every partition of a polled batch is active before the first of its
    /// records moves the watermark: a burst landing on several quiet
    /// partitions at once is not judged by whichever partition's records
    /// come first in the batch.
    fn arriving(&mut self, partitions: &std::collections::BTreeSet<i32>, now_ms: i64) {
        for p in partitions {
            self.engine.touch(*p, now_ms);
        }
    }

    /// Learns the partitions other replicas read (their watermarks and
    /// idleness hold back or release this replica's windows) and the
    /// topic's partition count. Right after a reset it also closes, for
    /// partitions without a floor of their own, every window the whole group
    /// has closed: such a partition was added to the topic (or never
    /// committed), and its tweets for windows the mergers may already have
    /// completed are late, not lost.
    fn observe(&mut self, view: &GroupView, _now_ms: i64) {
        self.sources = self.sources.max(view.partitions);
        let commits: Vec<(i32, SourceCommit)> = view
            .committed
            .iter()
            .map(|c| (c.partition, SourceCommit::decode(&c.metadata)))
            .collect();
        if std::mem::take(&mut self.fresh)
            && let Some(horizon) = commits.iter().filter_map(|(_, c)| c.closed_until_ms).min()
        {
            self.engine.close_until(horizon);
            self.note_publication_points();
        }
        let remote = commits
            .into_iter()
            .filter(|(p, _)| !self.trackers.contains_key(p))
            .map(|(p, c)| {
                let status = RemotePartition {
                    watermark: c.watermark_ms,
                    idle: c.idle,
                };
                (p, status)
            })
            .collect();
        self.engine.set_remote(remote);
    }
}

#[derive(Debug, thiserror::Error)]
enum RecordError {
    #[error(transparent)]
    Tweet(#[from] TweetError),
    #[error(transparent)]
    Window(#[from] WindowError),
}

fn ingest(
    engine: &mut WindowEngine,
    mode: TimeMode,
    partition: i32,
    tweet: Result<ParsedTweet<'_>, TweetError>,
    now_ms: i64,
    replayed: bool,
) -> Result<crate::consumer::window::Ingested, RecordError> {
    let tweet = tweet?;
    let t = match mode {
        TimeMode::Event => tweet.event_time_ms()?,
        TimeMode::Processing => now_ms,
    };
    Ok(engine.ingest_at(partition, t, &tweet, now_ms, replayed)?)
}

#[cfg(test)]
mod tests;
