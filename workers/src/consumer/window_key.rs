//! The key of one window: a leaf that the window engine, the aggregates,
//! the partials and the merger all name, so that none of them depends on
//! another for it.

use serde::{Deserialize, Serialize};

/// The half-open interval `[start_ms, end_ms)` of one window, in milliseconds
/// since the Unix epoch. Ordered by start, which is emission order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) struct WindowKey {
    pub(crate) start_ms: i64,
    pub(crate) end_ms: i64,
}

impl WindowKey {
    #[cfg(test)]
    pub(crate) fn contains(&self, t_ms: i64) -> bool {
        self.start_ms <= t_ms && t_ms < self.end_ms
    }
}
