//! `--max-tweets-per-second`: a cap on the records a stage takes in, so one
//! replica's capacity is a known figure (the autoscaling test sets it) or a
//! shared broker is spared. A token bucket: credit accrues at the rate, up
//! to one second's worth, so a pause is not followed by a burst.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub(crate) struct Pace {
    per_second: f64,
    /// Records that may be taken now (negative: taken ahead of the rate).
    credit: f64,
    at: Instant,
}

impl Pace {
    pub(crate) fn new(per_second: f64, now: Instant) -> Self {
        Self {
            per_second,
            credit: 0.0,
            at: now,
        }
    }

    fn accrue(&mut self, now: Instant) {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * self.per_second;
        self.credit = (self.credit + earned).min(self.per_second);
        self.at = now;
    }

    /// How long to wait before taking more records (zero: take them now).
    pub(crate) fn wait(&mut self, now: Instant) -> Duration {
        self.accrue(now);
        if self.credit >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.credit / self.per_second)
        }
    }

    /// `n` records were taken.
    pub(crate) fn took(&mut self, n: usize, now: Instant) {
        self.accrue(now);
        self.credit -= n as f64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_taken_ahead_waits_out_its_share_of_the_rate() {
        let t0 = Instant::now();
        let mut p = Pace::new(1_000.0, t0);
        assert_eq!(p.wait(t0), Duration::ZERO);
        p.took(500, t0);
        assert_eq!(p.wait(t0), Duration::from_millis(500));
        assert_eq!(
            p.wait(t0 + Duration::from_millis(200)),
            Duration::from_millis(300)
        );
        assert_eq!(p.wait(t0 + Duration::from_millis(500)), Duration::ZERO);
    }

    #[test]
    fn a_long_pause_earns_at_most_one_second() {
        let t0 = Instant::now();
        let mut p = Pace::new(1_000.0, t0);
        let later = t0 + Duration::from_secs(60);
        p.took(3_000, later);
        assert_eq!(p.wait(later), Duration::from_secs(2));
    }

    #[test]
    fn over_a_long_run_the_rate_holds() {
        // Polls of 700 records whenever allowed, for 10 simulated seconds.
        let t0 = Instant::now();
        let mut p = Pace::new(2_500.0, t0);
        let (mut now, mut taken) = (t0, 0usize);
        while now < t0 + Duration::from_secs(10) {
            let w = p.wait(now);
            if w.is_zero() {
                p.took(700, now);
                taken += 700;
            } else {
                now += w;
            }
        }
        // 10 s at 2,500/s, plus the batch taken at the last instant.
        assert!((25_000..=25_700).contains(&taken), "{taken}");
    }
}
