//! Capped exponential backoff with jitter for transient X API failures.
//!
//! "Equal jitter": half the exponential delay is fixed and half random, so
//! retries never collapse to zero (hammering a failing API) yet many
//! producers failing together spread out.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Delay ceiling of the first retry.
    pub(crate) initial: Duration,
    /// Ceiling of every delay.
    pub(crate) max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(5 * 60),
        }
    }
}

/// Failure counter of one kind of retry; reset after a success.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    config: BackoffConfig,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(config: BackoffConfig) -> Self {
        Self { config, attempt: 0 }
    }

    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The delay before the next retry; `unit` in [0, 1) supplies the jitter.
    pub(crate) fn next_delay_with(&mut self, unit: f64) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + half.mul_f64(unit.clamp(0.0, 1.0))
    }

    /// The delay before the next retry, with random jitter.
    pub(crate) fn next_delay(&mut self) -> Duration {
        self.next_delay_with(rand::random::<f64>())
    }

    fn ceiling(&self) -> Duration {
        // 2^20 times the initial delay is far past any sane cap; stopping the
        // exponent there keeps the multiplication from overflowing.
        let factor = 1u32 << self.attempt.min(20);
        self.config
            .initial
            .saturating_mul(factor)
            .min(self.config.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps() {
        let mut b = Backoff::new(BackoffConfig {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        });
        let maxed: Vec<_> = (0..10).map(|_| b.next_delay_with(1.0)).collect();
        assert_eq!(maxed[0], Duration::from_secs(1));
        assert_eq!(maxed[1], Duration::from_secs(2));
        assert_eq!(maxed[5], Duration::from_secs(32));
        assert_eq!(maxed[6], Duration::from_secs(60));
        assert_eq!(maxed[9], Duration::from_secs(60));
        b.reset();
        assert_eq!(b.next_delay_with(0.0), Duration::from_millis(500));
        for _ in 0..1000 {
            b.next_delay();
        }
        let d = b.next_delay();
        assert!(
            d >= Duration::from_secs(30) && d <= Duration::from_secs(60),
            "{d:?}"
        );
    }
}
