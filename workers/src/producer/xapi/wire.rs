//! The v2 wire types: tweets as X sends them, search pages, and what a
//! tweet id (a snowflake) encodes.

use super::error::ApiErrorItem;
use super::rate_limit::RateLimit;
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// The tweet fields every search asks for.
pub const TWEET_FIELDS: &str = "created_at,lang,author_id,public_metrics,entities";

/// A v2 tweet. Fields the producer does not know are kept in `other`, so a
/// re-serialised tweet still carries them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tweet {
    pub(crate) id: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) created_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) lang: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) author_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) public_metrics: Option<PublicMetrics>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entities: Option<Entities>,
    #[serde(flatten)]
    pub(crate) other: Map<String, Value>,
}

impl Tweet {
    pub fn like_count(&self) -> u64 {
        self.public_metrics.as_ref().map_or(0, |m| m.like_count)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PublicMetrics {
    #[serde(default)]
    pub(crate) retweet_count: u64,
    #[serde(default)]
    pub(crate) reply_count: u64,
    #[serde(default)]
    pub(crate) like_count: u64,
    #[serde(default)]
    pub(crate) quote_count: u64,
    #[serde(flatten)]
    pub(crate) other: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Entities {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hashtags: Vec<Hashtag>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<Mention>,
    #[serde(flatten)]
    pub(crate) other: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hashtag {
    #[serde(default)]
    pub(crate) start: u64,
    #[serde(default)]
    pub(crate) end: u64,
    pub tag: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mention {
    #[serde(default)]
    pub(crate) start: u64,
    #[serde(default)]
    pub(crate) end: u64,
    pub(crate) username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<String>,
}

/// A tweet as received: the parsed view plus the exact JSON X sent, which is
/// what gets published (nothing dropped, nothing reordered).
#[derive(Debug, Clone)]
pub struct ReceivedTweet {
    pub tweet: Tweet,
    raw: Box<RawValue>,
}

impl ReceivedTweet {
    pub(crate) fn from_raw(raw: Box<RawValue>) -> Result<Self, serde_json::Error> {
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
    pub(crate) newest_id: Option<String>,
    #[serde(default)]
    pub(crate) oldest_id: Option<String>,
    #[serde(default)]
    pub(crate) result_count: Option<u64>,
    #[serde(default)]
    pub(crate) next_token: Option<String>,
}

/// One page of search results.
#[derive(Debug, Clone)]
pub struct SearchPage {
    pub tweets: Vec<ReceivedTweet>,
    /// Elements of `data` that were not tweets; skipped, the rest kept.
    pub malformed: usize,
    /// Partial errors of a 200 response.
    pub(crate) errors: Vec<ApiErrorItem>,
    pub(crate) meta: Meta,
    pub(crate) rate_limit: RateLimit,
}

#[derive(Deserialize)]
struct RawSearchResponse {
    #[serde(default)]
    data: Option<Vec<Box<RawValue>>>,
    #[serde(default)]
    errors: Option<Vec<Value>>,
    #[serde(default)]
    meta: Option<Meta>,
}

impl SearchPage {
    /// Parses a 200 body tweet by tweet, so one bad element costs one tweet,
    /// not the page.
    pub(crate) fn parse(body: &[u8], rate_limit: RateLimit) -> Result<Self, serde_json::Error> {
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

/// The creation time encoded in a snowflake tweet id.
pub fn snowflake_time(id: &str) -> Option<DateTime<Utc>> {
    const TWITTER_EPOCH_MS: i64 = 1_288_834_974_657;
    let id: u64 = id.parse().ok()?;
    let ms = i64::try_from(id >> 22).ok()? + TWITTER_EPOCH_MS;
    Utc.timestamp_millis_opt(ms).single()
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
    fn snowflake_decodes() {
        // 1445078208190291968 was created 2021-10-04T17:33:44.9Z or so.
        let t = snowflake_time("1445078208190291968").unwrap();
        assert_eq!(t.format("%Y-%m-%d").to_string(), "2021-10-04");
        assert_eq!(snowflake_time("abc"), None);
    }
}
