//! The rate-limit headers of a response.

use chrono::{DateTime, TimeZone, Utc};
use reqwest::header::HeaderMap;

/// The rate-limit headers X sends with every response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimit {
    pub(crate) limit: Option<u64>,
    pub remaining: Option<u64>,
    /// When the window resets (`x-rate-limit-reset`, epoch seconds).
    pub(crate) reset: Option<DateTime<Utc>>,
}

impl RateLimit {
    pub(crate) fn from_headers(h: &HeaderMap) -> Self {
        let num = |name: &str| h.get(name)?.to_str().ok()?.trim().parse::<u64>().ok();
        Self {
            limit: num("x-rate-limit-limit"),
            remaining: num("x-rate-limit-remaining"),
            reset: num("x-rate-limit-reset")
                .and_then(|s| i64::try_from(s).ok())
                .and_then(|s| Utc.timestamp_opt(s, 0).single()),
        }
    }
}
