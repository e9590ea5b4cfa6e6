//! X API v2 wire types and the HTTP client for recent and full-archive search.

use super::auth::{Auth, encode_query};
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::time::Duration;

/// The tweet fields every search asks for.
pub const TWEET_FIELDS: &str = "created_at,lang,author_id,public_metrics,entities";

/// The search endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `/2/tweets/search/recent`: the last 7 days.
    Recent,
    /// `/2/tweets/search/all`: the full archive, app-only bearer tokens only.
    All,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Recent => "/2/tweets/search/recent",
            Endpoint::All => "/2/tweets/search/all",
        }
    }
}

/// A v2 tweet. Fields the producer does not know are kept in `other`, so a
/// re-serialised tweet still carries them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tweet {
    pub id: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_metrics: Option<PublicMetrics>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entities: Option<Entities>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl Tweet {
    pub fn like_count(&self) -> u64 {
        self.public_metrics.as_ref().map_or(0, |m| m.like_count)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PublicMetrics {
    #[serde(default)]
    pub retweet_count: u64,
    #[serde(default)]
    pub reply_count: u64,
    #[serde(default)]
    pub like_count: u64,
    #[serde(default)]
    pub quote_count: u64,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Entities {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hashtags: Vec<Hashtag>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<Mention>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hashtag {
    #[serde(default)]
    pub start: u64,
    #[serde(default)]
    pub end: u64,
    pub tag: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mention {
    #[serde(default)]
    pub start: u64,
    #[serde(default)]
    pub end: u64,
    pub username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// A tweet as received: the parsed view plus the exact JSON X sent, which is
/// what gets published (nothing dropped, nothing reordered).
#[derive(Debug, Clone)]
pub struct ReceivedTweet {
    pub tweet: Tweet,
    raw: Box<RawValue>,
}

impl ReceivedTweet {
    pub fn from_raw(raw: Box<RawValue>) -> Result<Self, serde_json::Error> {
        let tweet = serde_json::from_str(raw.get())?;
        Ok(Self { tweet, raw })
    }

    pub fn id(&self) -> &str {
        &self.tweet.id
    }

    /// The tweet object exactly as X returned it.
    pub fn raw_json(&self) -> &str {
        self.raw.get()
    }
}

/// `meta` of a search response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    #[serde(default)]
    pub newest_id: Option<String>,
    #[serde(default)]
    pub oldest_id: Option<String>,
    #[serde(default)]
    pub result_count: Option<u64>,
    #[serde(default)]
    pub next_token: Option<String>,
}

/// One element of `errors`: a partial error of a 200, a parameter error of
/// a 400 (`parameters` + `message`) or a v1.1-style `{code, message}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApiErrorItem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl ApiErrorItem {
    fn lenient(v: Value) -> Self {
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
    pub title: Option<String>,
    #[serde(default)]
    pub detail: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub errors: Vec<ApiErrorItem>,
}

impl ErrorBody {
    fn parse(body: &[u8]) -> Self {
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
    pub fn summary(&self) -> String {
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

/// The rate-limit headers X sends with every response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimit {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    /// When the window resets (`x-rate-limit-reset`, epoch seconds).
    pub reset: Option<DateTime<Utc>>,
}

impl RateLimit {
    pub fn from_headers(h: &HeaderMap) -> Self {
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

/// One page of search results.
#[derive(Debug, Clone)]
pub struct SearchPage {
    pub tweets: Vec<ReceivedTweet>,
    /// Elements of `data` that were not tweets; skipped, the rest kept.
    pub malformed: usize,
    pub includes: Option<Box<RawValue>>,
    /// Partial errors of a 200 response.
    pub errors: Vec<ApiErrorItem>,
    pub meta: Meta,
    pub rate_limit: RateLimit,
}

#[derive(Deserialize)]
struct RawSearchResponse {
    #[serde(default)]
    data: Option<Vec<Box<RawValue>>>,
    #[serde(default)]
    includes: Option<Box<RawValue>>,
    #[serde(default)]
    errors: Option<Vec<Value>>,
    #[serde(default)]
    meta: Option<Meta>,
}

impl SearchPage {
    /// Parses a 200 body tweet by tweet, so one bad element costs one tweet,
    /// not the page.
    pub fn parse(body: &[u8], rate_limit: RateLimit) -> Result<Self, serde_json::Error> {
        let raw: RawSearchResponse = serde_json::from_slice(body)?;
        let mut tweets = Vec::new();
        let mut malformed = 0;
        for element in raw.data.unwrap_or_default() {
            match ReceivedTweet::from_raw(element) {
                Ok(t) => tweets.push(t),
                Err(e) => {
                    malformed += 1;
                    tracing::warn!(error = %e, "skipping a malformed tweet in a search response");
                }
            }
        }
        Ok(Self {
            tweets,
            malformed,
            includes: raw.includes,
            errors: raw
                .errors
                .unwrap_or_default()
                .into_iter()
                .map(ApiErrorItem::lenient)
                .collect(),
            meta: raw.meta.unwrap_or_default(),
            rate_limit,
        })
    }
}

/// A 400 naming a parameter X refused because it lies too far back, with the
/// earliest time X says it would accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooOld {
    pub parameter: String,
    pub earliest: Option<DateTime<Utc>>,
}

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
    pub fn status(&self) -> Option<u16> {
        match self {
            XApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn rate_limit(&self) -> Option<RateLimit> {
        match self {
            XApiError::Status { rate_limit, .. } => Some(*rate_limit),
            _ => None,
        }
    }

    /// Recognises X's 400 for a `since_id` (or `start_time`) older than the
    /// endpoint allows, e.g. "'since_id' must be a tweet id created after
    /// 2024-05-01T00:00Z".
    pub fn too_old(&self) -> Option<TooOld> {
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

/// One search request (one page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchRequest {
    pub endpoint: Endpoint,
    pub query: String,
    pub since_id: Option<String>,
    /// Only tweets older than this id: the rest of a poll committed in part.
    pub until_id: Option<String>,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    pub max_results: u32,
    pub next_token: Option<String>,
}

impl SearchRequest {
    /// The query parameters, unencoded.
    pub fn params(&self) -> Vec<(String, String)> {
        let time = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
        let mut p = vec![
            ("query".to_owned(), self.query.clone()),
            ("tweet.fields".to_owned(), TWEET_FIELDS.to_owned()),
            ("max_results".to_owned(), self.max_results.to_string()),
        ];
        if let Some(s) = &self.since_id {
            p.push(("since_id".to_owned(), s.clone()));
        }
        if let Some(u) = &self.until_id {
            p.push(("until_id".to_owned(), u.clone()));
        }
        if let Some(t) = &self.start_time {
            p.push(("start_time".to_owned(), time(t)));
        }
        if let Some(t) = &self.end_time {
            p.push(("end_time".to_owned(), time(t)));
        }
        if let Some(t) = &self.next_token {
            p.push(("next_token".to_owned(), t.clone()));
        }
        p
    }
}

/// The search query: the keyword, narrowed by language and without retweets
/// unless asked. A keyword with a top-level `OR` is parenthesised because X
/// binds the implicit AND tighter than OR.
pub fn build_query(keyword: &str, language: Option<&str>, include_retweets: bool) -> String {
    let keyword = keyword.trim();
    let mut q = if keyword.split_whitespace().any(|w| w == "OR") {
        format!("({keyword})")
    } else {
        keyword.to_owned()
    };
    if let Some(lang) = language.map(str::trim).filter(|l| !l.is_empty()) {
        q.push_str(" lang:");
        q.push_str(lang);
    }
    if !include_retweets {
        q.push_str(" -is:retweet");
    }
    q
}

/// The creation time encoded in a snowflake tweet id.
pub fn snowflake_time(id: &str) -> Option<DateTime<Utc>> {
    const TWITTER_EPOCH_MS: i64 = 1_288_834_974_657;
    let id: u64 = id.parse().ok()?;
    let ms = i64::try_from(id >> 22).ok()? + TWITTER_EPOCH_MS;
    Utc.timestamp_millis_opt(ms).single()
}

/// HTTP client for the X API v2.
#[derive(Debug, Clone)]
pub struct XApiClient {
    http: reqwest::Client,
    base: reqwest::Url,
}

impl XApiClient {
    /// `timeout` bounds a whole request, so a stalled connection cannot hang
    /// a poll.
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self, XApiError> {
        crate::common::install_tls_provider();
        let base = reqwest::Url::parse(base_url.trim_end_matches('/')).map_err(|e| {
            XApiError::BaseUrl {
                url: base_url.to_owned(),
                reason: e.to_string(),
            }
        })?;
        if base.query().is_some() || base.cannot_be_a_base() {
            return Err(XApiError::BaseUrl {
                url: base_url.to_owned(),
                reason: "must be scheme://host[:port][/path] without a query".to_owned(),
            });
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!(
                "twitterstream-producer/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .map_err(XApiError::Client)?;
        Ok(Self { http, base })
    }

    fn url(&self, path: &str) -> String {
        // Url normalises scheme and host case and drops a default port, which
        // is what the OAuth signature base string requires.
        let mut u = self.base.clone();
        let joined = format!("{}{}", u.path().trim_end_matches('/'), path);
        u.set_path(&joined);
        u.to_string()
    }

    /// Fetches one page. Non-2xx answers are `XApiError::Status` with X's
    /// error body and the rate-limit headers.
    pub async fn search(&self, auth: &Auth, req: &SearchRequest) -> Result<SearchPage, XApiError> {
        let url = self.url(req.endpoint.path());
        let params = req.params();
        let mut header =
            HeaderValue::from_str(&auth.header("GET", &url, &params)).map_err(|e| {
                XApiError::BaseUrl {
                    url: url.clone(),
                    reason: format!("unusable Authorization header: {e}"),
                }
            })?;
        header.set_sensitive(true);
        let full = format!("{url}?{}", encode_query(&params));
        let wrap = |e: reqwest::Error| {
            if e.is_timeout() {
                XApiError::Timeout { url: url.clone() }
            } else {
                XApiError::Transport {
                    url: url.clone(),
                    source: e,
                }
            }
        };
        let resp = self
            .http
            .get(&full)
            .header(AUTHORIZATION, header)
            .send()
            .await
            .map_err(wrap)?;
        let status = resp.status();
        let rate_limit = RateLimit::from_headers(resp.headers());
        let body = resp.bytes().await.map_err(wrap)?;
        if !status.is_success() {
            return Err(XApiError::Status {
                url,
                status: status.as_u16(),
                body: Box::new(ErrorBody::parse(&body)),
                rate_limit,
            });
        }
        SearchPage::parse(&body, rate_limit).map_err(|source| XApiError::Malformed { url, source })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("v1.1 status has no id_str")]
    NoId,
    #[error("v1.1 status {id} has no text or full_text")]
    NoText { id: String },
    #[error("v1.1 status {id} has an unparseable created_at {value:?}")]
    CreatedAt { id: String, value: String },
}

/// Converts a v1.1 status (as in old replay files) to the v2 tweet JSON the
/// producer publishes.
pub fn v1_status_to_v2(status: &Value) -> Result<Value, ConvertError> {
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let n = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let id = s(status, "id_str").ok_or(ConvertError::NoId)?;
    let text = status
        .get("extended_tweet")
        .and_then(|e| s(e, "full_text"))
        .or_else(|| s(status, "full_text"))
        .or_else(|| s(status, "text"))
        .ok_or_else(|| ConvertError::NoText { id: id.clone() })?;
    let mut out = Map::new();
    out.insert("id".into(), Value::String(id.clone()));
    out.insert("text".into(), Value::String(text));
    if let Some(raw) = s(status, "created_at") {
        let t = DateTime::parse_from_str(&raw, "%a %b %d %H:%M:%S %z %Y").map_err(|_| {
            ConvertError::CreatedAt {
                id: id.clone(),
                value: raw,
            }
        })?;
        out.insert(
            "created_at".into(),
            Value::String(
                t.with_timezone(&Utc)
                    .to_rfc3339_opts(SecondsFormat::Millis, true),
            ),
        );
    }
    if let Some(lang) = s(status, "lang") {
        out.insert("lang".into(), Value::String(lang));
    }
    if let Some(author) = status.get("user").and_then(|u| s(u, "id_str")) {
        out.insert("author_id".into(), Value::String(author));
    }
    out.insert(
        "public_metrics".into(),
        serde_json::json!({
            "retweet_count": n(status, "retweet_count"),
            "reply_count": n(status, "reply_count"),
            "like_count": n(status, "favorite_count"),
            "quote_count": n(status, "quote_count"),
        }),
    );
    let entities = status
        .get("extended_tweet")
        .and_then(|e| e.get("entities"))
        .or_else(|| status.get("entities"));
    if let Some(ent) = entities {
        let indices = |v: &Value| {
            let i = v.get("indices").and_then(Value::as_array);
            let at = |k: usize| {
                i.and_then(|a| a.get(k))
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
            };
            (at(0), at(1))
        };
        let list = |k: &str| {
            ent.get(k)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let hashtags: Vec<Value> = list("hashtags")
            .iter()
            .filter_map(|h| {
                let (start, end) = indices(h);
                Some(serde_json::json!({"start": start, "end": end, "tag": s(h, "text")?}))
            })
            .collect();
        let mentions: Vec<Value> = list("user_mentions")
            .iter()
            .filter_map(|m| {
                let (start, end) = indices(m);
                let mut v = serde_json::json!({"start": start, "end": end, "username": s(m, "screen_name")?});
                if let (Some(obj), Some(uid)) = (v.as_object_mut(), s(m, "id_str")) {
                    obj.insert("id".into(), Value::String(uid));
                }
                Some(v)
            })
            .collect();
        let mut e = Map::new();
        if !hashtags.is_empty() {
            e.insert("hashtags".into(), Value::Array(hashtags));
        }
        if !mentions.is_empty() {
            e.insert("mentions".into(), Value::Array(mentions));
        }
        if !e.is_empty() {
            out.insert("entities".into(), Value::Object(e));
        }
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn page_keeps_good_tweets_and_counts_bad_ones() {
        let body = br#"{
            "data": [
                {"id":"2","text":"b","created_at":"2024-01-01T00:00:01.000Z","edit_history_tweet_ids":["2"],"future_field":{"x":1}},
                {"text":"no id"},
                17,
                {"id":"1","text":"a","public_metrics":{"like_count":5,"impression_count":9}}
            ],
            "errors": [{"title":"Not Found Error","detail":"gone","type":"https://api.twitter.com/2/problems/resource-not-found"}],
            "meta": {"newest_id":"2","oldest_id":"1","result_count":4,"next_token":"abc"},
            "unknown_top_level": true
        }"#;
        let page = SearchPage::parse(body, RateLimit::default()).unwrap();
        assert_eq!(page.tweets.len(), 2);
        assert_eq!(page.malformed, 2);
        assert_eq!(page.errors.len(), 1);
        assert_eq!(page.meta.next_token.as_deref(), Some("abc"));
        // The raw JSON is exactly what X sent, unknown fields included.
        let raw: Value = serde_json::from_str(page.tweets[0].raw_json()).unwrap();
        assert_eq!(raw["future_field"], json!({"x":1}));
        assert_eq!(raw["created_at"], "2024-01-01T00:00:01.000Z");
        // Re-serialising the parsed view keeps unknown fields too.
        let back = serde_json::to_value(&page.tweets[0].tweet).unwrap();
        assert_eq!(back["edit_history_tweet_ids"], json!(["2"]));
        assert_eq!(page.tweets[1].tweet.like_count(), 5);
    }

    #[test]
    fn truncated_body_is_an_error() {
        assert!(SearchPage::parse(br#"{"data":[{"id":"1","te"#, RateLimit::default()).is_err());
    }

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

    #[test]
    fn query_building() {
        assert_eq!(
            build_query("superbowl", Some("en"), false),
            "superbowl lang:en -is:retweet"
        );
        assert_eq!(build_query("a OR b", None, false), "(a OR b) -is:retweet");
        assert_eq!(build_query(" rust ", None, true), "rust");
    }

    #[test]
    fn request_params() {
        let r = SearchRequest {
            endpoint: Endpoint::Recent,
            query: "q".into(),
            since_id: Some("5".into()),
            until_id: Some("9".into()),
            start_time: Some(Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap()),
            end_time: None,
            max_results: 100,
            next_token: Some("t".into()),
        };
        let p = r.params();
        assert!(p.contains(&("start_time".into(), "2024-01-02T03:04:05Z".into())));
        assert!(p.contains(&("tweet.fields".into(), TWEET_FIELDS.into())));
        assert!(p.contains(&("next_token".into(), "t".into())));
        assert!(p.contains(&("until_id".into(), "9".into())));
    }

    #[test]
    fn snowflake_decodes() {
        // 1445078208190291968 was created 2021-10-04T17:33:44.9Z or so.
        let t = snowflake_time("1445078208190291968").unwrap();
        assert_eq!(t.format("%Y-%m-%d").to_string(), "2021-10-04");
        assert_eq!(snowflake_time("abc"), None);
    }

    #[test]
    fn converts_v1_status() {
        let v1 = json!({
            "id": 1050118621198921728u64,
            "id_str": "1050118621198921728",
            "text": "short…",
            "full_text": "To make room for more expression, we will now count all emojis as equal #emoji @TwitterDev",
            "created_at": "Wed Oct 10 20:19:24 +0000 2018",
            "lang": "en",
            "user": {"id_str": "6253282", "screen_name": "TwitterAPI"},
            "favorite_count": 42,
            "retweet_count": 7,
            "entities": {
                "hashtags": [{"text": "emoji", "indices": [72, 78]}],
                "user_mentions": [{"screen_name": "TwitterDev", "id_str": "2244994945", "indices": [79, 90]}]
            }
        });
        let v2 = v1_status_to_v2(&v1).unwrap();
        assert_eq!(v2["id"], "1050118621198921728");
        assert_eq!(v2["created_at"], "2018-10-10T20:19:24.000Z");
        assert_eq!(v2["author_id"], "6253282");
        let t: Tweet = serde_json::from_value(v2).unwrap();
        assert!(t.text.starts_with("To make room"));
        assert_eq!(t.lang.as_deref(), Some("en"));
        assert_eq!(t.like_count(), 42);
        assert_eq!(t.public_metrics.as_ref().unwrap().retweet_count, 7);
        let e = t.entities.unwrap();
        assert_eq!(e.hashtags[0].tag, "emoji");
        assert_eq!((e.hashtags[0].start, e.hashtags[0].end), (72, 78));
        assert_eq!(e.mentions[0].username, "TwitterDev");
        assert_eq!(
            t.created_at.unwrap(),
            Utc.with_ymd_and_hms(2018, 10, 10, 20, 19, 24).unwrap()
        );

        assert!(matches!(
            v1_status_to_v2(&json!({"text":"x"})),
            Err(ConvertError::NoId)
        ));
        assert!(matches!(
            v1_status_to_v2(&json!({"id_str":"1","text":"x","created_at":"yesterday"})),
            Err(ConvertError::CreatedAt { .. })
        ));
    }
}
