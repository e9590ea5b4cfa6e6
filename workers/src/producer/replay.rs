//! The replay source: a JSONL file of X API v2 tweet objects or v1.1
//! statuses (old archives), one per line. v2 lines are published exactly as
//! they are; v1.1 lines are converted with [`v1_status_to_v2`]. A line may
//! also be a filtered-stream or lookup envelope (`{"data": {...}}`).
//! Lines that are not tweets are counted and skipped.

use super::xapi::{ReceivedTweet, v1_status_to_v2};
use chrono::{DateTime, Utc};
use serde_json::Value;
use serde_json::value::RawValue;
use std::time::Duration;

/// A replayable tweet.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ReplayTweet {
    pub(crate) id: String,
    /// The v2 JSON to publish.
    pub(crate) json: String,
    pub(crate) created_at: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub(crate) enum LineError {
    #[error("not JSON: {0}")]
    Json(String),
    #[error("not a tweet: {0}")]
    NotATweet(String),
}

/// v1.1 statuses carry a numeric `id` next to `id_str`; v2 tweets only a
/// string `id`.
fn is_v1(v: &Value) -> bool {
    v.get("id_str").is_some() || v.get("id").is_some_and(Value::is_number)
}

/// Parses one line. `Ok(None)` for blank lines (not counted as malformed).
pub(crate) fn parse_line(line: &str) -> Result<Option<ReplayTweet>, LineError> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(None);
    }
    let raw: Box<RawValue> =
        serde_json::from_str(line).map_err(|e| LineError::Json(e.to_string()))?;
    // Peek at the shape without copying the tweet.
    let v: Value = serde_json::from_str(raw.get()).map_err(|e| LineError::Json(e.to_string()))?;
    let (raw, v) = match v.get("data") {
        Some(d) if d.is_object() && v.get("id").is_none() => {
            #[derive(serde::Deserialize)]
            struct Envelope {
                data: Box<RawValue>,
            }
            let env: Envelope =
                serde_json::from_str(raw.get()).map_err(|e| LineError::Json(e.to_string()))?;
            (env.data, d.clone())
        }
        _ => (raw, v),
    };
    if is_v1(&v) {
        let v2 = v1_status_to_v2(&v).map_err(|e| LineError::NotATweet(e.to_string()))?;
        let json = v2.to_string();
        let t = ReceivedTweet::from_raw(
            RawValue::from_string(json.clone()).map_err(|e| LineError::Json(e.to_string()))?,
        )
        .map_err(|e| LineError::NotATweet(e.to_string()))?;
        return Ok(Some(ReplayTweet {
            id: t.id().to_owned(),
            created_at: t.tweet.created_at,
            json,
        }));
    }
    let t = ReceivedTweet::from_raw(raw).map_err(|e| LineError::NotATweet(e.to_string()))?;
    if t.id().is_empty() || !t.id().bytes().all(|b| b.is_ascii_digit()) {
        return Err(LineError::NotATweet(format!(
            "id {:?} is not numeric",
            t.id()
        )));
    }
    Ok(Some(ReplayTweet {
        id: t.id().to_owned(),
        created_at: t.tweet.created_at,
        json: t.raw_json().to_owned(),
    }))
}

/// Paces a replay: each tweet is due `speed` times faster than its
/// `created_at` distance from the first tweet's. `speed` 0 means no pacing.
#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    speed: f64,
    first: Option<DateTime<Utc>>,
}

impl Pacer {
    pub(crate) fn new(speed: f64) -> Self {
        Self { speed, first: None }
    }

    /// How long after the replay started this tweet is due.
    pub(crate) fn offset(&mut self, created_at: Option<DateTime<Utc>>) -> Option<Duration> {
        if self.speed <= 0.0 || !self.speed.is_finite() {
            return None;
        }
        let t = created_at?;
        let first = *self.first.get_or_insert(t);
        let d = (t - first).to_std().ok()?;
        Some(d.div_f64(self.speed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_lines_are_kept_verbatim() {
        let line = r#"{"id":"1445078208190291968","text":"hi #rust","created_at":"2021-10-04T17:33:44.000Z","lang":"en","future":{"a":1}}"#;
        let t = parse_line(line).unwrap().unwrap();
        assert_eq!(t.id, "1445078208190291968");
        assert_eq!(t.json, line);
        assert!(t.created_at.is_some());
        let env = format!(r#"{{"data":{line},"matching_rules":[{{"id":"1","tag":"x"}}]}}"#);
        assert_eq!(parse_line(&env).unwrap().unwrap().json, line);
    }

    #[test]
    fn v1_lines_are_converted() {
        let line = r#"{"id":1050118621198921728,"id_str":"1050118621198921728","text":"x #a","created_at":"Wed Oct 10 20:19:24 +0000 2018","user":{"id_str":"6253282"},"favorite_count":3,"entities":{"hashtags":[{"text":"a","indices":[2,4]}]}}"#;
        let t = parse_line(line).unwrap().unwrap();
        let v: Value = serde_json::from_str(&t.json).unwrap();
        assert_eq!(v["id"], "1050118621198921728");
        assert_eq!(v["public_metrics"]["like_count"], 3);
        assert_eq!(v["entities"]["hashtags"][0]["tag"], "a");
    }

    #[test]
    fn junk_is_an_error_and_blank_is_nothing() {
        assert_eq!(parse_line("  "), Ok(None));
        assert!(matches!(parse_line("{\"id\":"), Err(LineError::Json(_))));
        assert!(matches!(parse_line("[1,2]"), Err(LineError::NotATweet(_))));
        assert!(matches!(
            parse_line(r#"{"text":"no id"}"#),
            Err(LineError::NotATweet(_))
        ));
        assert!(matches!(
            parse_line(r#"{"id":"abc","text":"t"}"#),
            Err(LineError::NotATweet(_))
        ));
    }

    #[test]
    fn pacing_follows_created_at() {
        let t = |s: &str| Some(DateTime::parse_from_rfc3339(s).unwrap().to_utc());
        let mut p = Pacer::new(2.0);
        assert_eq!(p.offset(t("2024-01-01T00:00:00Z")), Some(Duration::ZERO));
        assert_eq!(
            p.offset(t("2024-01-01T00:00:10Z")),
            Some(Duration::from_secs(5))
        );
        assert_eq!(p.offset(None), None);
        let mut fast = Pacer::new(0.0);
        assert_eq!(fast.offset(t("2024-01-01T00:00:10Z")), None);
    }
}
