//! "Is it keeping up?": a stream's lag, rates and last window, computed from
//! two samples of its group's progress on the input topic (pure), and when a
//! stream is due for the next sample.

use crate::crd::ThroughputStatus;
use crate::topic::PartitionProgress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::time::Duration;
use twitterstream_contract::commit::{self, SourceCommit};

/// The shortest time between two samples of a stream, unless the operator
/// is told otherwise (`--throughput-interval-seconds`).
pub(crate) const MIN_REFRESH: Duration = Duration::from_secs(15);
/// Samples per second across all streams, at most: each is a client
/// created for one group (~10 ms of the operator's CPU and a connection
/// per broker). At 1,000 streams a stream is sampled every 100 s.
const SAMPLES_PER_SECOND: u64 = 10;

/// How often each of `streams` streams is sampled, `min` apart at least.
pub(crate) fn refresh_interval(min: Duration, streams: usize) -> Duration {
    min.max(Duration::from_secs(streams as u64 / SAMPLES_PER_SECOND))
}

/// The totals a rate is computed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sample {
    /// Wall clock, milliseconds since the epoch.
    pub(crate) at_ms: i64,
    /// The partitions' ends, summed.
    pub(crate) end: i64,
    /// How far the group has read, summed (see [`read`]).
    pub(crate) read: i64,
}

/// How far the group has read a partition: the position its last commit
/// records, or the committed offset itself (commits of older consumers say
/// no position), which stays behind the records of windows still open (at
/// 300 tweets/s and 10 s windows, ~3,000 records of "lag" that were read).
fn read(p: &PartitionProgress) -> i64 {
    let committed = p.committed.unwrap_or(0);
    p.commit
        .position
        .filter(|_| p.committed.is_some())
        .map_or(committed, |pos| pos.clamp(committed, p.end.max(committed)))
}

/// The status for `progress` sampled at `now_ms`, with rates against
/// `previous` (none on the first sample, after a gap shorter than a
/// second, or when a total went down: a topic deleted and made again).
pub(crate) fn throughput(
    progress: &[PartitionProgress],
    previous: Option<Sample>,
    now_ms: i64,
) -> (ThroughputStatus, Sample) {
    // Before its first commit a partition's every record is still to read.
    let lags = progress.iter().map(|p| (p.end - read(p)).max(0));
    let sample = Sample {
        at_ms: now_ms,
        end: progress.iter().map(|p| p.end).sum(),
        read: progress.iter().map(read).sum(),
    };
    let rate = |now: i64, before: i64, prev: &Sample| {
        let secs = (now_ms - prev.at_ms) as f64 / 1000.0;
        (secs >= 1.0 && now >= before).then(|| round((now - before) as f64 / secs))
    };
    let commits: Vec<SourceCommit> = progress.iter().map(|p| p.commit).collect();
    let window_end = commit::closed_until(&commits);
    let status = ThroughputStatus {
        lag: lags.clone().sum(),
        max_partition_lag: lags.max().unwrap_or(0),
        published_per_second: previous.and_then(|p| rate(sample.end, p.end, &p)),
        consumed_per_second: previous.and_then(|p| rate(sample.read, p.read, &p)),
        last_window_end: window_end.and_then(time),
        last_window_delay_seconds: window_end.map(|end| (now_ms - end).max(0) / 1000),
        sampled_at: time(now_ms),
    };
    (status, sample)
}

/// Rates to a tenth of a record per second: finer digits only make the
/// status differ on every sample.
fn round(rate: f64) -> f64 {
    (rate * 10.0).round() / 10.0
}

fn time(ms: i64) -> Option<Time> {
    k8s_openapi::jiff::Timestamp::from_millisecond(ms)
        .ok()
        .map(Time)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(
        partition: i32,
        end: i64,
        committed: Option<i64>,
        closed: Option<i64>,
    ) -> PartitionProgress {
        PartitionProgress {
            partition,
            end,
            committed,
            commit: SourceCommit {
                closed_until_ms: closed,
                ..SourceCommit::default()
            },
        }
    }

    #[test]
    fn lag_is_what_the_group_has_not_committed() {
        let progress = [
            partition(0, 100, Some(90), Some(20_000)),
            partition(1, 50, None, None),
            partition(2, 7, Some(7), Some(30_000)),
        ];
        let (status, sample) = throughput(&progress, None, 40_000);
        assert_eq!(status.lag, 10 + 50);
        assert_eq!(status.max_partition_lag, 50);
        assert_eq!((sample.end, sample.read), (157, 97));
        // No rates from one sample.
        assert_eq!(status.published_per_second, None);
        // Partition 1 has closed nothing: no window is complete yet.
        assert_eq!(status.last_window_end, None);
    }

    #[test]
    fn lag_counts_from_the_position_a_commit_records() {
        let mut p = partition(0, 1_000, Some(400), Some(20_000));
        p.commit.position = Some(990);
        let (status, sample) = throughput(std::slice::from_ref(&p), None, 40_000);
        // 590 records of open windows were read: not lag.
        assert_eq!((status.lag, sample.read), (10, 990));
        // A position from before the committed offset (a commit of an
        // older owner) or past the end counts as neither.
        p.commit.position = Some(100);
        assert_eq!(throughput(std::slice::from_ref(&p), None, 0).0.lag, 600);
        p.commit.position = Some(5_000);
        assert_eq!(throughput(&[p], None, 0).0.lag, 0);
    }

    #[test]
    fn rates_come_from_two_samples() {
        let before = [
            partition(0, 100, Some(40), Some(10_000)),
            partition(1, 0, Some(0), Some(20_000)),
        ];
        let (_, first) = throughput(&before, None, 100_000);
        let after = [
            partition(0, 400, Some(240), Some(20_000)),
            partition(1, 100, Some(100), Some(30_000)),
        ];
        let (status, _) = throughput(&after, Some(first), 120_000);
        assert_eq!(status.published_per_second, Some(20.0));
        assert_eq!(status.consumed_per_second, Some(15.0));
        assert_eq!(status.lag, 160);
        assert_eq!(status.last_window_end, time(20_000));
        assert_eq!(status.last_window_delay_seconds, Some(100));
    }

    #[test]
    fn no_rate_when_a_total_went_down_or_too_little_time_passed() {
        let (_, first) = throughput(&[partition(0, 100, Some(100), None)], None, 0);
        let (status, _) = throughput(&[partition(0, 5, Some(5), None)], Some(first), 60_000);
        assert_eq!(status.published_per_second, None);
        assert_eq!(status.consumed_per_second, None);
        let (status, _) = throughput(&[partition(0, 200, Some(100), None)], Some(first), 500);
        assert_eq!(status.published_per_second, None);
    }

    #[test]
    fn the_interval_grows_with_the_streams() {
        assert_eq!(refresh_interval(MIN_REFRESH, 1), MIN_REFRESH);
        assert_eq!(refresh_interval(MIN_REFRESH, 150), MIN_REFRESH);
        assert_eq!(
            refresh_interval(MIN_REFRESH, 1_000),
            Duration::from_secs(100)
        );
        let min = Duration::from_secs(2);
        assert_eq!(refresh_interval(min, 1), min);
        assert_eq!(refresh_interval(min, 1_000), Duration::from_secs(100));
    }
}
