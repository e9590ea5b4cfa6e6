//! What goes wrong talking to X: the error bodies X sends and [`XApiError`].

use super::rate_limit::RateLimit;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One element of `errors`: a partial error of a 200, a parameter error of
/// a 400 (`parameters` + `message`) or a v1.1-style `{code, message}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApiErrorItem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) detail: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub(crate) kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) code: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) parameters: Option<Map<String, Value>>,
    #[serde(flatten)]
    pub(crate) other: Map<String, Value>,
}

impl ApiErrorItem {
    pub(super) fn lenient(v: Value) -> Self {
        serde_json::from_value(v.clone()).unwrap_or_else(|_| ApiErrorItem {
            detail: Some(v.to_string()),
            ..Default::default()
        })
    }

    fn text(&self) -> String {
        [&self.title, &self.detail, &self.message]
            .into_iter()
            .flatten()
            .cloned()
            .collect::<Vec<_>>()
            .join(": ")
    }
}

/// An error response: the problem format (`title`, `detail`, `type`,
/// `status`), optionally with `errors`, or just `{"errors": [...]}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub(crate) title: Option<String>,
    #[serde(default)]
    pub(crate) detail: Option<String>,
    #[serde(default, rename = "type")]
    pub(crate) kind: Option<String>,
    #[serde(default)]
    pub(crate) status: Option<u16>,
    #[serde(default)]
    pub(crate) errors: Vec<ApiErrorItem>,
}

impl ErrorBody {
    pub(super) fn parse(body: &[u8]) -> Self {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(mut m)) => {
                let errors = match m.remove("errors") {
                    Some(Value::Array(a)) => a.into_iter().map(ApiErrorItem::lenient).collect(),
                    _ => Vec::new(),
                };
                let mut b: ErrorBody = serde_json::from_value(Value::Object(m)).unwrap_or_default();
                b.errors = errors;
                b
            }
            _ => ErrorBody {
                detail: Some(snippet(body)),
                ..Default::default()
            },
        }
    }

    /// One line for logs and error messages.
    pub(crate) fn summary(&self) -> String {
        let mut parts: Vec<String> = [&self.title, &self.detail]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        parts.extend(
            self.errors
                .iter()
                .map(ApiErrorItem::text)
                .filter(|t| !t.is_empty()),
        );
        if parts.is_empty() {
            "(no error body)".to_owned()
        } else {
            parts.join("; ")
        }
    }
}

fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let mut out: String = s.chars().take(200).collect();
    if s.chars().nth(200).is_some() {
        out.push('…');
    }
    out
}

/// A 400 naming a parameter X refused because it lies too far back, with the
/// earliest time X says it would accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TooOld {
    pub(crate) parameter: String,
    pub(crate) earliest: Option<DateTime<Utc>>,
}

/// The problem type of a reached post cap.
pub(crate) const USAGE_CAPPED: &str = "https://api.twitter.com/2/problems/usage-capped";

#[derive(Debug, thiserror::Error)]
pub enum XApiError {
    #[error("invalid X API base URL {url:?}: {reason}")]
    BaseUrl { url: String, reason: String },
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("request to {url} timed out")]
    Timeout { url: String },
    #[error("request to {url} failed: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("X API answered {status} to {url}: {}", body.summary())]
    Status {
        url: String,
        status: u16,
        body: Box<ErrorBody>,
        rate_limit: RateLimit,
    },
    #[error("malformed response from {url}: {source}")]
    Malformed {
        url: String,
        #[source]
        source: serde_json::Error,
    },
}

impl XApiError {
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            XApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub(crate) fn rate_limit(&self) -> Option<RateLimit> {
        match self {
            XApiError::Status { rate_limit, .. } => Some(*rate_limit),
            _ => None,
        }
    }

    /// X's answer once the project's monthly post cap is reached: 429 with the
    /// `usage-capped` problem (title `UsageCapExceeded`), until the cap's
    /// reset day; a rate limit's 429 lifts within 15 minutes.
    pub(crate) fn usage_capped(&self) -> bool {
        matches!(self, XApiError::Status { status: 429, body, .. }
            if body.kind.as_deref() == Some(USAGE_CAPPED))
    }

    /// Recognises X's 400 for a `since_id` (or `start_time`) older than the
    /// endpoint allows, e.g. "'since_id' must be a tweet id created after
    /// 2024-05-01T00:00Z".
    pub(crate) fn too_old(&self) -> Option<TooOld> {
        let XApiError::Status {
            status: 400, body, ..
        } = self
        else {
            return None;
        };
        for e in &body.errors {
            let message = e.text();
            for parameter in ["since_id", "start_time"] {
                let named = e
                    .parameters
                    .as_ref()
                    .is_some_and(|p| p.contains_key(parameter))
                    || message.contains(&format!("'{parameter}'"));
                let about_age =
                    message.contains("created after") || message.contains("on or after");
                if named && about_age {
                    return Some(TooOld {
                        parameter: parameter.to_owned(),
                        earliest: time_after(&message),
                    });
                }
            }
        }
        None
    }
}

/// The timestamp following "after " in an X error message.
fn time_after(message: &str) -> Option<DateTime<Utc>> {
    let (_, rest) = message.split_once("after ")?;
    let token: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '\'' && *c != '"' && *c != ',')
        .collect();
    let token = token.trim_end_matches('.');
    if let Ok(t) = DateTime::parse_from_rfc3339(token) {
        return Some(t.with_timezone(&Utc));
    }
    // X sometimes leaves the seconds out ("2024-05-01T00:00Z").
    chrono::NaiveDateTime::parse_from_str(token, "%Y-%m-%dT%H:%MZ")
        .ok()
        .map(|n| n.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn recognises_since_id_too_old() {
        let body = ErrorBody::parse(
            br#"{"errors":[{"parameters":{"since_id":["1"]},"message":"Invalid 'since_id':'1'. 'since_id' must be a tweet id created after 2024-05-01T00:00Z. Please use a 'since_id' that is larger than 1785000000000000000"}],
                "title":"Invalid Request","detail":"One or more parameters to your request was invalid.","type":"https://api.twitter.com/2/problems/invalid-request"}"#,
        );
        let e = XApiError::Status {
            url: "u".into(),
            status: 400,
            body: Box::new(body),
            rate_limit: RateLimit::default(),
        };
        let t = e.too_old().unwrap();
        assert_eq!(t.parameter, "since_id");
        assert_eq!(
            t.earliest,
            Some(Utc.with_ymd_and_hms(2024, 5, 1, 0, 0, 0).unwrap())
        );
        assert!(e.to_string().contains("Invalid Request"));

        let other = XApiError::Status {
            url: "u".into(),
            status: 400,
            body: Box::new(ErrorBody::parse(
                br#"{"errors":[{"parameters":{"query":["x"]},"message":"bad query"}]}"#,
            )),
            rate_limit: RateLimit::default(),
        };
        assert_eq!(other.too_old(), None);
    }

    #[test]
    fn a_reached_post_cap_is_told_from_a_rate_limit_by_its_problem_type() {
        let answer = |status, body: &[u8]| XApiError::Status {
            url: "u".into(),
            status,
            body: Box::new(ErrorBody::parse(body)),
            rate_limit: RateLimit::default(),
        };
        // X's answer, as its docs show it.
        let capped = answer(
            429,
            br#"{"title":"UsageCapExceeded","detail":"Usage cap exceeded: Monthly product cap","type":"https://api.twitter.com/2/problems/usage-capped","period":"Monthly","scope":"Product"}"#,
        );
        assert!(capped.usage_capped());
        assert!(capped.to_string().contains("UsageCapExceeded"));
        let rate_limited = answer(
            429,
            br#"{"title":"Too Many Requests","detail":"Too Many Requests","type":"about:blank","status":429}"#,
        );
        assert!(!rate_limited.usage_capped());
        // The type decides, not the words.
        let worded = answer(429, br#"{"title":"UsageCapExceeded","type":"about:blank"}"#);
        assert!(!worded.usage_capped());
    }

    #[test]
    fn error_formats_parse() {
        let b = ErrorBody::parse(br#"{"title":"Unauthorized","type":"about:blank","status":401,"detail":"Unauthorized"}"#);
        assert_eq!(b.status, Some(401));
        assert_eq!(b.summary(), "Unauthorized; Unauthorized");
        let b =
            ErrorBody::parse(br#"{"errors":[{"message":"Bad Authentication data.","code":215}]}"#);
        assert_eq!(b.errors[0].code, Some(215));
        let b = ErrorBody::parse(b"<html>bad gateway</html>");
        assert!(b.summary().contains("bad gateway"));
    }
}
