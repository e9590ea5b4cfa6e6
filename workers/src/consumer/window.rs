//! The window engine: assigns tweets to epoch-aligned tumbling or hopping
//! windows and closes windows as the watermark passes them.
//!
//! The engine is pure: it never reads a clock. The caller passes the event time
//! of every tweet and a processing-time `now_ms` that only drives partition
//! idleness (event time) or the watermark itself (processing time).
//!
//! Watermark: per partition, the largest event time seen minus the allowed
//! lateness. The stream watermark is the minimum over partitions that are not
//! idle, so a slow partition holds windows open rather than having its tweets
//! declared late. A partition that has not delivered a record for the idle
//! timeout stops holding it back (Flink's and Kafka Streams' idleness). When
//! every partition is idle, the most advanced one sets it, and from then on
//! it follows the clock: a silence longer than the idle timeout is taken to
//! be a silence in event time too, so the last windows of a quiet stream
//! close within lateness + idle timeout of their end instead of waiting for
//! the next tweet. The watermark never goes backwards.
//!
//! Partitions read by other replicas count too ([`WindowEngine::set_remote`]):
//! their owners publish each partition's watermark and idleness in the
//! commit metadata, so a replica whose own partitions are empty or quiet
//! still closes windows as the whole topic's event time moves on.
//!
//! Event times further ahead of the clock than the allowed skew are refused
//! ([`WindowError::Future`]): one tweet dated 2099 would otherwise move its
//! partition's watermark decades ahead and make every later tweet late.
//!
//! Late tweets: a tweet is counted in each of its windows that is still open
//! and as `late` in each that has closed (watermark >= end), so every tweet adds
//! exactly one to `count + late` of each window it belongs to. The late unit
//! goes to the window itself while it is still tracked (closed, not yet
//! emitted); once a window has been emitted it cannot change, so the unit goes
//! to the next window to be emitted instead. That choice keeps late tweets
//! visible in the output without ever re-emitting a window.

use crate::consumer::aggregate::Aggregate;
use crate::consumer::tweet::ParsedTweet;
use crate::consumer::window_key::WindowKey;
use std::collections::BTreeMap;
use std::time::Duration;
use twitterstream_contract::consumer::TimeMode;

/// Times the engine accepts: the years 0000 to 9999 that RFC 3339 can write.
/// Bounding them also keeps all window arithmetic far from overflow.
pub(crate) const MIN_TIME_MS: i64 = -62_167_219_200_000;
pub(crate) const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// The shape of the windows and the tolerance for disorder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    pub size: Duration,
    /// Equal to `size` for tumbling windows; must divide it.
    pub slide: Duration,
    pub allowed_lateness: Duration,
    pub idle_timeout: Duration,
    /// How far ahead of `now_ms` an event time may be; `None`: unbounded.
    pub max_future_skew: Option<Duration>,
}

impl WindowSpec {
    /// Names the window shape: `w10s` (tumbling), `w60s-10s` (60 s every
    /// 10 s); the operator ends the consumer group's name with the same, and
    /// the output keys carry it, so the windows of a changed spec never
    /// share keys with the old ones. Sizes that are not whole seconds are
    /// named in milliseconds.
    pub fn generation(&self) -> String {
        let name = |d: Duration| {
            if d.subsec_millis() == 0 {
                format!("{}s", d.as_secs())
            } else {
                format!("{}ms", d.as_millis())
            }
        };
        if self.slide == self.size {
            format!("w{}", name(self.size))
        } else {
            format!("w{}-{}", name(self.size), name(self.slide))
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WindowError {
    #[error("window size and slide must be at least 1 ms")]
    Empty,
    #[error("slide ({slide_ms} ms) must divide the window size ({size_ms} ms)")]
    SlideDoesNotDivide { size_ms: i64, slide_ms: i64 },
    #[error("{what} of {ms} ms is out of range")]
    OutOfRange { what: &'static str, ms: u128 },
    #[error("event time {0} ms is outside the years 0000-9999")]
    EventTime(i64),
    #[error(
        "event time {event_ms} ms is {ahead_ms} ms ahead of the clock (more than the allowed skew)"
    )]
    Future { event_ms: i64, ahead_ms: i64 },
}

/// What one `ingest` did with a tweet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ingested {
    /// Windows the tweet was counted in.
    pub(crate) counted: u32,
    /// Windows it was too late for (counted as late instead).
    pub late: u32,
    /// The tweet is fully reflected in emitted output, so its record's offset
    /// may be committed, once [`WindowEngine::is_emitted`] holds for this.
    /// `i64::MIN` when every window of the tweet is below the partition's
    /// floor: it is done already.
    pub(crate) done_at_ms: i64,
}

#[derive(Debug, Clone, Copy)]
struct PartitionState {
    max_event_ms: Option<i64>,
    last_record_ms: i64,
    /// Windows ending at or before this were emitted for this partition by an
    /// earlier owner; see [`WindowEngine::assign_from`].
    floor_ms: Option<i64>,
}

/// What another replica's commit says of a partition it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RemotePartition {
    /// Its watermark (largest event time minus the allowed lateness).
    pub(crate) watermark: Option<i64>,
    /// It has delivered nothing for the idle timeout.
    pub(crate) idle: bool,
}

/// Windows of one consumer, over the partitions it reads.
#[derive(Debug)]
pub(crate) struct WindowEngine {
    size_ms: i64,
    slide_ms: i64,
    lateness_ms: i64,
    idle_ms: i64,
    mode: TimeMode,
    future_skew_ms: Option<i64>,
    partitions: BTreeMap<i32, PartitionState>,
    remote: BTreeMap<i32, RemotePartition>,
    /// Since when every partition has been idle, and the watermark then.
    all_idle: Option<(i64, i64)>,
    open: BTreeMap<WindowKey, Aggregate>,
    watermark: Option<i64>,
    /// Every window ending at or before this has been emitted (or was empty).
    emitted_until: Option<i64>,
}

fn millis(what: &'static str, d: Duration) -> Result<i64, WindowError> {
    let ms = d.as_millis();
    // Bounded well inside i64 so that time + duration never overflows.
    if ms > (MAX_TIME_MS - MIN_TIME_MS) as u128 {
        return Err(WindowError::OutOfRange { what, ms });
    }
    Ok(ms as i64)
}

impl WindowEngine {
    /// An event-time engine.
    #[cfg(test)]
    pub(crate) fn new(spec: WindowSpec) -> Result<Self, WindowError> {
        Self::with_mode(spec, TimeMode::Event)
    }

    /// In processing-time mode the caller passes `now_ms` as each tweet's
    /// time and the watermark follows `now_ms`, so windows close on the clock
    /// even when no data arrives.
    pub(crate) fn with_mode(spec: WindowSpec, mode: TimeMode) -> Result<Self, WindowError> {
        let size_ms = millis("window size", spec.size)?;
        let slide_ms = millis("slide", spec.slide)?;
        if size_ms == 0 || slide_ms == 0 {
            return Err(WindowError::Empty);
        }
        if size_ms % slide_ms != 0 {
            return Err(WindowError::SlideDoesNotDivide { size_ms, slide_ms });
        }
        Ok(WindowEngine {
            size_ms,
            slide_ms,
            lateness_ms: millis("allowed lateness", spec.allowed_lateness)?,
            idle_ms: millis("idle timeout", spec.idle_timeout)?,
            mode,
            future_skew_ms: spec
                .max_future_skew
                .map(|d| millis("future skew", d))
                .transpose()?,
            partitions: BTreeMap::new(),
            remote: BTreeMap::new(),
            all_idle: None,
            open: BTreeMap::new(),
            watermark: None,
            emitted_until: None,
        })
    }

    /// The windows containing `t_ms`, earliest first: `size / slide` of them,
    /// each starting at a multiple of the slide since the epoch.
    pub(crate) fn windows_of(&self, t_ms: i64) -> impl Iterator<Item = WindowKey> + use<> {
        let (size, slide) = (self.size_ms, self.slide_ms);
        let last_start = t_ms.div_euclid(slide) * slide;
        let n = size / slide;
        (0..n).rev().map(move |k| {
            let start_ms = last_start - k * slide;
            WindowKey {
                start_ms,
                end_ms: start_ms + size,
            }
        })
    }

    #[cfg(test)]
    /// Starts tracking a partition before its first record, so that it holds
    /// the watermark back (until idle) instead of having its backlog arrive
    /// late. Call it for every partition on assignment: a partition the engine
    /// has not heard of cannot hold anything back.
    pub(crate) fn assign(&mut self, partition: i32, now_ms: i64) {
        self.assign_from(partition, now_ms, None);
    }

    /// Like [`assign`](Self::assign), for a partition taken over from another
    /// owner (or an earlier run) that had already emitted its windows ending
    /// at or before `floor_ms`. Replaying the partition from its committed
    /// offset re-reads some tweets of those windows; they are skipped for
    /// them, because emitting a window a second time with only the replayed
    /// part would be wrong, and the earlier emission already has them.
    pub(crate) fn assign_from(&mut self, partition: i32, now_ms: i64, floor_ms: Option<i64>) {
        self.remote.remove(&partition);
        let p = self.partitions.entry(partition).or_insert(PartitionState {
            max_event_ms: None,
            last_record_ms: now_ms,
            floor_ms,
        });
        p.floor_ms = p.floor_ms.max(floor_ms);
    }

    /// Marks activity on a partition before its records are ingested (they
    /// were polled together with other partitions'): it is not idle, so a
    /// burst landing on several quiet partitions at once is not judged by
    /// whichever partition's records happen to come first.
    pub(crate) fn touch(&mut self, partition: i32, now_ms: i64) {
        if let Some(p) = self.partitions.get_mut(&partition) {
            p.last_record_ms = p.last_record_ms.max(now_ms);
        }
    }

    /// What the owners of the partitions this engine does not read last
    /// committed about them; replaces what was known before. Partitions this
    /// engine reads are ignored.
    pub(crate) fn set_remote(&mut self, remote: BTreeMap<i32, RemotePartition>) {
        self.remote = remote;
        self.remote.retain(|p, _| !self.partitions.contains_key(p));
    }

    /// Treats every window ending at or before `until_ms` as emitted: the
    /// group has published them, so tweets for them are late. For
    /// partitions that have no floor of their own (new ones, after the topic
    /// grew); a floor still skips what its earlier owner published.
    pub(crate) fn close_until(&mut self, until_ms: i64) {
        self.emitted_until = self.emitted_until.max(Some(until_ms));
        self.watermark = self.watermark.max(Some(until_ms));
    }

    /// Each partition this engine reads: its watermark, and whether it is
    /// idle at `now_ms`.
    pub(crate) fn partition_status(&self, now_ms: i64) -> BTreeMap<i32, RemotePartition> {
        self.partitions
            .iter()
            .map(|(p, s)| {
                let status = RemotePartition {
                    watermark: s.max_event_ms.map(|m| m - self.lateness_ms),
                    idle: self.is_idle(s, now_ms),
                };
                (*p, status)
            })
            .collect()
    }

    fn is_idle(&self, p: &PartitionState, now_ms: i64) -> bool {
        now_ms.saturating_sub(p.last_record_ms) >= self.idle_ms
    }

    /// The floor a partition was assigned with.
    pub(crate) fn floor(&self, partition: i32) -> Option<i64> {
        self.partitions.get(&partition).and_then(|p| p.floor_ms)
    }

    #[cfg(test)]
    /// Stops tracking a partition's watermark. Its tweets already aggregated
    /// stay in their windows; a caller that hands the partition to another
    /// replica and wants no double counting resets and replays instead.
    pub(crate) fn revoke(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }

    /// Drops open windows and partition state, but remembers what was emitted
    /// so that replayed tweets cannot emit a window a second time.
    pub(crate) fn reset(&mut self) {
        self.partitions.clear();
        self.open.clear();
    }

    #[cfg(test)]
    /// Adds one tweet read from `partition` at processing time `now_ms`, as
    /// a replay: see [`ingest_at`](Self::ingest_at).
    pub(crate) fn ingest(
        &mut self,
        partition: i32,
        event_time_ms: i64,
        tweet: &ParsedTweet<'_>,
        now_ms: i64,
    ) -> Result<Ingested, WindowError> {
        self.ingest_at(partition, event_time_ms, tweet, now_ms, true)
    }

    /// Adds one tweet read from `partition` at processing time `now_ms`.
    /// `replayed`: the partition's earlier owner had read it before its last
    /// commit, so its windows at or below the floor already hold it (or its
    /// late unit) and are skipped. A tweet nobody had read is late for them
    /// instead: skipping it would lose it.
    pub(crate) fn ingest_at(
        &mut self,
        partition: i32,
        event_time_ms: i64,
        tweet: &ParsedTweet<'_>,
        now_ms: i64,
        replayed: bool,
    ) -> Result<Ingested, WindowError> {
        if !(MIN_TIME_MS..=MAX_TIME_MS).contains(&event_time_ms) {
            return Err(WindowError::EventTime(event_time_ms));
        }
        if let Some(skew) = self.future_skew_ms
            && self.mode == TimeMode::Event
            && event_time_ms > now_ms.saturating_add(skew)
        {
            return Err(WindowError::Future {
                event_ms: event_time_ms,
                ahead_ms: event_time_ms - now_ms,
            });
        }
        // Lateness is judged against the watermark before this tweet moves it.
        self.refresh(now_ms);
        let floor = self.floor(partition);
        // Windows ending at or before this are published for this partition.
        let published_until = self.emitted_until.max(floor);
        let closed_until = self.watermark.max(published_until);
        let mut out = Ingested {
            counted: 0,
            late: 0,
            done_at_ms: i64::MIN,
        };
        for key in self.windows_of(event_time_ms) {
            if replayed && floor.is_some_and(|f| key.end_ms <= f) {
                continue;
            }
            let target = if closed_until.is_none_or(|c| key.end_ms > c) {
                out.counted += 1;
                self.open.entry(key).or_default().add(tweet);
                key
            } else {
                out.late += 1;
                let target = match published_until {
                    Some(e) if key.end_ms <= e => self.next_to_emit(e),
                    _ => key,
                };
                self.open.entry(target).or_default().add_late(1);
                target
            };
            out.done_at_ms = out.done_at_ms.max(target.end_ms);
        }
        let p = self.partitions.entry(partition).or_insert(PartitionState {
            max_event_ms: None,
            last_record_ms: now_ms,
            floor_ms: None,
        });
        p.max_event_ms = p.max_event_ms.max(Some(event_time_ms));
        p.last_record_ms = p.last_record_ms.max(now_ms);
        Ok(out)
    }

    /// The earliest window not yet emitted, given everything ending at or
    /// before `emitted_until` has been.
    fn next_to_emit(&self, emitted_until: i64) -> WindowKey {
        let start_ms = (emitted_until - self.size_ms).div_euclid(self.slide_ms) * self.slide_ms
            + self.slide_ms;
        WindowKey {
            start_ms,
            end_ms: start_ms + self.size_ms,
        }
    }

    fn refresh(&mut self, now_ms: i64) {
        let candidate = match self.mode {
            TimeMode::Processing => Some(now_ms.saturating_sub(self.lateness_ms)),
            TimeMode::Event => self.event_watermark(now_ms),
        };
        self.watermark = self.watermark.max(candidate);
    }

    /// Every partition's (watermark, idle), local and remote.
    fn all_partitions(&self, now_ms: i64) -> impl Iterator<Item = (Option<i64>, bool)> + '_ {
        let local = self.partitions.values().map(move |p| {
            (
                p.max_event_ms.map(|m| m - self.lateness_ms),
                self.is_idle(p, now_ms),
            )
        });
        let remote = self.remote.values().map(|r| (r.watermark, r.idle));
        local.chain(remote)
    }

    fn event_watermark(&mut self, now_ms: i64) -> Option<i64> {
        let mut any_active = false;
        let mut waiting = false;
        let mut min: Option<i64> = None;
        let mut max: Option<i64> = None;
        for (watermark, idle) in self.all_partitions(now_ms) {
            max = max.max(watermark);
            if idle {
                continue;
            }
            any_active = true;
            match watermark {
                Some(w) => min = Some(min.map_or(w, |m| m.min(w))),
                // An active partition with no data yet says nothing about
                // time, so nothing may close until it delivers or goes idle.
                None => waiting = true,
            }
        }
        if any_active {
            self.all_idle = None;
            return if waiting { None } else { min };
        }
        let base = max.max(self.watermark)?;
        let (since, base) = *self.all_idle.get_or_insert((now_ms, base));
        Some(base.saturating_add(now_ms.saturating_sub(since).max(0)))
    }

    /// Emits, in window order, every window the watermark has passed.
    pub(crate) fn advance(&mut self, now_ms: i64) -> Vec<(WindowKey, Aggregate)> {
        self.refresh(now_ms);
        let Some(wm) = self.watermark else {
            return Vec::new();
        };
        let mut closed = Vec::new();
        while let Some(entry) = self.open.first_entry() {
            if entry.key().end_ms > wm {
                break;
            }
            closed.push(entry.remove_entry());
        }
        self.emitted_until = self.emitted_until.max(Some(wm));
        trace_emitted(&closed);
        closed
    }

    #[cfg(test)]
    /// Emits every tracked window regardless of the watermark, for shutdown.
    pub(crate) fn flush_all(&mut self) -> Vec<(WindowKey, Aggregate)> {
        let closed: Vec<_> = std::mem::take(&mut self.open).into_iter().collect();
        if let Some((last, _)) = closed.last() {
            self.emitted_until = self.emitted_until.max(Some(last.end_ms));
        }
        trace_emitted(&closed);
        closed
    }

    /// Whether everything ending at or before `t_ms` has been emitted; with
    /// [`Ingested::done_at_ms`], whether a record may be committed.
    pub(crate) fn is_emitted(&self, t_ms: i64) -> bool {
        self.emitted_until.is_some_and(|e| t_ms <= e)
    }

    /// Every window ending at or before this has been emitted.
    pub(crate) fn emitted_until(&self) -> Option<i64> {
        self.emitted_until
    }

    pub(crate) fn watermark(&self) -> Option<i64> {
        self.watermark
    }

    /// Per partition with data, its own watermark (largest event time minus
    /// the allowed lateness).
    pub(crate) fn partition_watermarks(&self) -> BTreeMap<i32, i64> {
        self.partitions
            .iter()
            .filter_map(|(p, s)| s.max_event_ms.map(|m| (*p, m - self.lateness_ms)))
            .collect()
    }

    /// Windows holding state: the engine's memory is proportional to this.
    pub(crate) fn open_windows(&self) -> usize {
        self.open.len()
    }
}

fn trace_emitted(closed: &[(WindowKey, Aggregate)]) {
    for (key, agg) in closed {
        let span = tracing::info_span!("window", start = key.start_ms, end = key.end_ms);
        span.in_scope(|| tracing::debug!(count = agg.count, late = agg.late, "window closed"));
    }
}

#[cfg(test)]
mod tests;
