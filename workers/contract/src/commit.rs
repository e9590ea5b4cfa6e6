//! What the consumer's offset commits on the input topic say in their
//! metadata: written by the consumer's aggregate stage, read back by the next
//! owner of the partition and by the operator (how far the stream's windows
//! have got, for `status.throughput`).

/// What a source partition's commit says, in its metadata.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceCommit {
    /// Every window ending at or before this has been published for the
    /// partition. The next owner resumes with it as the partition's floor.
    pub closed_until_ms: Option<i64>,
    /// The partition's watermark when committed (largest event time minus
    /// the allowed lateness), for the replicas that do not read it.
    pub watermark_ms: Option<i64>,
    /// It had delivered nothing for the idle timeout.
    pub idle: bool,
    /// Every record before this offset had been read: from it on, nothing of
    /// the partition is in any published window yet.
    pub read_until: Option<i64>,
    /// The committing replica's position: it had read every record before
    /// this offset. The committed offset itself stays behind the records of
    /// windows still open (a replica that takes the partition over replays
    /// them), so the consumer lag is the partition's end minus this.
    pub position: Option<i64>,
}

impl SourceCommit {
    /// The commit metadata: `v1` and `;name=value` fields (`;idle` alone).
    pub fn encode(&self) -> String {
        let mut s = "v1".to_owned();
        if let Some(t) = self.closed_until_ms {
            s.push_str(&format!(";closed={t}"));
        }
        if let Some(w) = self.watermark_ms {
            s.push_str(&format!(";wm={w}"));
        }
        if let Some(r) = self.read_until {
            s.push_str(&format!(";read={r}"));
        }
        if let Some(p) = self.position {
            s.push_str(&format!(";pos={p}"));
        }
        if self.idle {
            s.push_str(";idle");
        }
        s
    }

    /// Reads [`SourceCommit::encode`]'s output; fields it does not know, or
    /// cannot parse, are absent (metadata written by other clients too).
    pub fn decode(metadata: &str) -> Self {
        let field = |name: &str| {
            metadata
                .split(';')
                .find_map(|f| f.strip_prefix(name))
                .and_then(|t| t.parse().ok())
        };
        SourceCommit {
            closed_until_ms: field("closed="),
            watermark_ms: field("wm="),
            read_until: field("read="),
            position: field("pos="),
            idle: metadata.split(';').any(|f| f == "idle"),
        }
    }
}

/// The end of the last window every partition has closed, from the
/// partitions' commits: the earliest `closed_until` of the partitions that
/// are not idle (an idle partition holds no window back, as in the
/// consumer's watermark), or the latest of all when every one is idle.
/// `None` until a partition has closed a window.
pub fn closed_until(commits: &[SourceCommit]) -> Option<i64> {
    let active = commits
        .iter()
        .filter(|c| !c.idle)
        .map(|c| c.closed_until_ms);
    if commits.iter().any(|c| !c.idle) {
        // A partition that has closed nothing yet holds everything back.
        active.min().flatten()
    } else {
        commits.iter().filter_map(|c| c.closed_until_ms).max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips() {
        let full = SourceCommit {
            closed_until_ms: Some(-5),
            watermark_ms: Some(7),
            idle: true,
            read_until: Some(12),
            position: Some(40),
        };
        assert_eq!(SourceCommit::decode(&full.encode()), full);
        let empty = SourceCommit::default();
        assert_eq!(SourceCommit::decode(&empty.encode()), empty);
        assert_eq!(SourceCommit::decode(""), empty);
        // What earlier versions committed still reads.
        assert_eq!(SourceCommit::decode("v1;closed=9").closed_until_ms, Some(9));
    }

    fn at(closed: Option<i64>, idle: bool) -> SourceCommit {
        SourceCommit {
            closed_until_ms: closed,
            idle,
            ..SourceCommit::default()
        }
    }

    #[test]
    fn the_slowest_active_partition_decides() {
        assert_eq!(closed_until(&[]), None);
        assert_eq!(
            closed_until(&[at(Some(20), false), at(Some(10), false)]),
            Some(10)
        );
        // An idle partition far behind does not hold the windows back.
        assert_eq!(
            closed_until(&[at(Some(20), false), at(Some(0), true)]),
            Some(20)
        );
        // Nor does an idle one that never closed a window.
        assert_eq!(
            closed_until(&[at(Some(20), false), at(None, true)]),
            Some(20)
        );
        // An active partition that has closed nothing holds everything.
        assert_eq!(closed_until(&[at(Some(20), false), at(None, false)]), None);
        assert_eq!(
            closed_until(&[at(Some(20), true), at(Some(30), true)]),
            Some(30)
        );
    }
}
