//! The X project's post usage (`GET /2/usage/tweets`): what the monthly post
//! cap allows, what was read, and the day of the month it resets.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use serde::Deserialize;

/// One answer of `GET /2/usage/tweets`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProjectUsage {
    /// Posts read this period, across the project's apps.
    pub usage: u64,
    /// Posts the project may read in a period.
    pub cap: u64,
    /// The day of the month (1-31) the period starts again, at 00:00 UTC.
    pub cap_reset_day: u32,
}

/// X writes the figures as strings ("project_usage": "1234"); a number is
/// taken too.
#[derive(Deserialize)]
#[serde(untagged)]
enum Figure {
    Number(u64),
    Text(String),
}

impl Figure {
    fn value(self) -> Result<u64, serde_json::Error> {
        match self {
            Figure::Number(n) => Ok(n),
            Figure::Text(s) => s
                .trim()
                .parse()
                .map_err(|_| serde::de::Error::custom(format!("not a number of posts: {s:?}"))),
        }
    }
}

#[derive(Deserialize)]
struct Raw {
    data: RawData,
}

#[derive(Deserialize)]
struct RawData {
    project_usage: Figure,
    project_cap: Figure,
    cap_reset_day: u32,
}

impl ProjectUsage {
    pub(crate) fn parse(body: &[u8]) -> Result<Self, serde_json::Error> {
        let raw: Raw = serde_json::from_slice(body)?;
        if !(1..=31).contains(&raw.data.cap_reset_day) {
            return Err(serde::de::Error::custom(format!(
                "cap_reset_day {} is not a day of the month",
                raw.data.cap_reset_day
            )));
        }
        Ok(Self {
            usage: raw.data.project_usage.value()?,
            cap: raw.data.project_cap.value()?,
            cap_reset_day: raw.data.cap_reset_day,
        })
    }

    /// When the cap is lifted next after `now`: 00:00 UTC on the reset day
    /// (the month's last day in a month too short for it).
    pub fn next_reset(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let (mut year, mut month) = (now.year(), now.month());
        loop {
            let day = (1..=self.cap_reset_day)
                .rev()
                .find_map(|d| NaiveDate::from_ymd_opt(year, month, d));
            if let Some(reset) = day.and_then(|d| d.and_hms_opt(0, 0, 0))
                && let Some(reset) = Utc.from_local_datetime(&reset).single()
                && reset > now
            {
                return reset;
            }
            (year, month) = if month == 12 {
                (year + 1, 1)
            } else {
                (year, month + 1)
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0)
            .single()
            .unwrap_or_default()
    }

    #[test]
    fn figures_as_x_writes_them() {
        let u = ProjectUsage::parse(
            br#"{"data":{"cap_reset_day":19,"project_cap":"10000","project_id":"1","project_usage":"9998"}}"#,
        );
        assert_eq!(
            u.ok(),
            Some(ProjectUsage {
                usage: 9998,
                cap: 10000,
                cap_reset_day: 19
            })
        );
        let n = ProjectUsage::parse(
            br#"{"data":{"cap_reset_day":1,"project_cap":5,"project_usage":0}}"#,
        );
        assert_eq!(n.map(|u| u.cap).ok(), Some(5));
        for bad in [
            &br#"{"data":{"cap_reset_day":0,"project_cap":"5","project_usage":"1"}}"#[..],
            br#"{"data":{"cap_reset_day":3,"project_cap":"many","project_usage":"1"}}"#,
            br#"{"errors":[]}"#,
        ] {
            assert!(
                ProjectUsage::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn the_next_reset_is_the_next_reset_day_at_midnight() {
        let u = |day| ProjectUsage {
            usage: 0,
            cap: 1,
            cap_reset_day: day,
        };
        assert_eq!(u(19).next_reset(at(2026, 12, 7, 20)), at(2026, 12, 19, 0));
        assert_eq!(u(7).next_reset(at(2026, 12, 7, 20)), at(2027, 1, 7, 0));
        assert_eq!(u(7).next_reset(at(2026, 12, 6, 23)), at(2026, 12, 7, 0));
        // A day February lacks: its last day.
        assert_eq!(u(31).next_reset(at(2027, 2, 3, 0)), at(2027, 2, 28, 0));
        assert_eq!(u(31).next_reset(at(2027, 2, 28, 1)), at(2027, 3, 31, 0));
    }
}
