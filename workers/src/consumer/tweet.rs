//! The slice of an X API v2 tweet that the window aggregates need, parsed from
//! a Kafka record value.
//!
//! Only the fields used downstream are read; strings borrow from the record
//! when JSON escaping allows, so a tweet costs few allocations on the hot path.

use crate::consumer::sentiment;
use serde::Deserialize;
use std::borrow::Cow;

/// A record value that is not a usable tweet.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TweetError {
    #[error("not a tweet object: {0}")]
    Json(#[from] serde_json::Error),
    #[error("created_at {value:?} is not RFC 3339: {source}")]
    CreatedAt {
        value: String,
        source: chrono::ParseError,
    },
    #[error("tweet {id} has no created_at, which event-time windows need")]
    NoCreatedAt { id: String },
}

/// What one tweet contributes to a window.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ParsedTweet<'a> {
    pub(crate) id: Cow<'a, str>,
    /// `created_at` in milliseconds since the Unix epoch.
    pub(crate) created_at_ms: Option<i64>,
    pub(crate) author_id: Option<Cow<'a, str>>,
    pub(crate) lang: Option<Cow<'a, str>>,
    pub likes: u64,
    /// Lower-cased and deduplicated: `#Rust` and `#rust` are one topic, and a
    /// tweet repeating a tag still counts once for it.
    pub hashtags: Vec<Cow<'a, str>>,
    /// Deduplicated usernames, as X spells them in the tweet.
    pub mentions: Vec<Cow<'a, str>>,
    /// VADER compound score of the text.
    pub(crate) sentiment: f64,
}

impl<'a> ParsedTweet<'a> {
    /// Parses a record value and scores its text.
    pub(crate) fn parse(value: &'a [u8]) -> Result<Self, TweetError> {
        let raw: RawTweet<'a> = serde_json::from_slice(value)?;
        let created_at_ms = match raw.created_at {
            None => None,
            Some(Str(s)) => Some(
                chrono::DateTime::parse_from_rfc3339(&s)
                    .map_err(|source| TweetError::CreatedAt {
                        value: s.clone().into_owned(),
                        source,
                    })?
                    .timestamp_millis(),
            ),
        };
        let entities = raw.entities.unwrap_or_default();
        let mut hashtags: Vec<_> = entities
            .hashtags
            .into_iter()
            .map(|t| lowercase(t.tag.0))
            .collect();
        hashtags.sort_unstable();
        hashtags.dedup();
        let mut mentions: Vec<_> = entities
            .mentions
            .into_iter()
            .map(|m| m.username.0)
            .collect();
        mentions.sort_unstable();
        mentions.dedup();
        Ok(ParsedTweet {
            sentiment: sentiment::compound(&raw.text.0),
            id: raw.id.0,
            created_at_ms,
            author_id: raw.author_id.map(|s| s.0),
            lang: raw.lang.map(|s| s.0),
            likes: raw.public_metrics.map_or(0, |m| m.like_count),
            hashtags,
            mentions,
        })
    }

    /// The event time, for windows that need one.
    pub(crate) fn event_time_ms(&self) -> Result<i64, TweetError> {
        self.created_at_ms.ok_or_else(|| TweetError::NoCreatedAt {
            id: self.id.clone().into_owned(),
        })
    }
}

/// Borrows unless the lower-case form differs, which for hashtags is rare.
fn lowercase(s: Cow<'_, str>) -> Cow<'_, str> {
    let unchanged = s.chars().all(|c| {
        let mut lower = c.to_lowercase();
        lower.next() == Some(c) && lower.next().is_none()
    });
    if unchanged {
        s
    } else {
        Cow::Owned(s.to_lowercase())
    }
}

// serde only borrows a `Cow<str>` that is a field's whole type, not one inside
// `Option` or `Vec`; this wrapper makes each string such a field.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
struct Str<'a>(#[serde(borrow)] Cow<'a, str>);

#[derive(Deserialize)]
struct RawTweet<'a> {
    #[serde(borrow)]
    id: Str<'a>,
    #[serde(borrow)]
    text: Str<'a>,
    #[serde(borrow, default)]
    created_at: Option<Str<'a>>,
    #[serde(borrow, default)]
    author_id: Option<Str<'a>>,
    #[serde(borrow, default)]
    lang: Option<Str<'a>>,
    #[serde(default)]
    public_metrics: Option<PublicMetrics>,
    #[serde(borrow, default)]
    entities: Option<Entities<'a>>,
}

#[derive(Deserialize)]
struct PublicMetrics {
    #[serde(default)]
    like_count: u64,
}

#[derive(Default, Deserialize)]
struct Entities<'a> {
    #[serde(borrow, default)]
    hashtags: Vec<Hashtag<'a>>,
    #[serde(borrow, default)]
    mentions: Vec<Mention<'a>>,
}

#[derive(Deserialize)]
struct Hashtag<'a> {
    #[serde(borrow)]
    tag: Str<'a>,
}

#[derive(Deserialize)]
struct Mention<'a> {
    #[serde(borrow)]
    username: Str<'a>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FULL: &str = r#"{
        "id": "1790000000000000001",
        "text": "Loving the new release of #Rust and #rust, great work @alice @bob @alice!",
        "created_at": "2024-05-13T10:00:05.250Z",
        "lang": "en",
        "author_id": "42",
        "edit_history_tweet_ids": ["1790000000000000001"],
        "public_metrics": {"retweet_count": 3, "reply_count": 1, "like_count": 17, "quote_count": 0},
        "entities": {
            "hashtags": [{"start": 26, "end": 31, "tag": "Rust"}, {"start": 36, "end": 41, "tag": "rust"}],
            "mentions": [{"start": 54, "end": 60, "username": "alice", "id": "7"},
                         {"start": 61, "end": 65, "username": "bob", "id": "8"},
                         {"start": 66, "end": 72, "username": "alice", "id": "7"}],
            "urls": [{"start": 0, "end": 1, "url": "https://t.co/x"}]
        }
    }"#;

    #[test]
    fn reads_the_fields_aggregates_need() {
        let t = ParsedTweet::parse(FULL.as_bytes()).unwrap();
        assert_eq!(t.id, "1790000000000000001");
        // 2024-05-13T10:00:05.250Z, computed independently of chrono.
        let days_since_epoch = 19_856;
        assert_eq!(
            t.created_at_ms,
            Some(days_since_epoch * 86_400_000 + 10 * 3_600_000 + 5_250)
        );
        assert_eq!(t.author_id.as_deref(), Some("42"));
        assert_eq!(t.lang.as_deref(), Some("en"));
        assert_eq!(t.likes, 17);
        assert_eq!(t.hashtags, vec!["rust"]);
        assert_eq!(t.mentions, vec!["alice", "bob"]);
        assert!(t.sentiment > sentiment::POSITIVE_THRESHOLD);
        assert_eq!(t.event_time_ms().unwrap(), t.created_at_ms.unwrap());
    }

    #[test]
    fn borrows_unescaped_strings_from_the_record() {
        let t = ParsedTweet::parse(FULL.as_bytes()).unwrap();
        assert!(matches!(t.id, Cow::Borrowed(_)));
        assert!(matches!(t.author_id, Some(Cow::Borrowed(_))));
        assert!(matches!(t.lang, Some(Cow::Borrowed(_))));
        assert!(matches!(t.mentions[0], Cow::Borrowed(_)));
        let t = ParsedTweet::parse(
            br#"{"id":"1","text":"x","entities":{"hashtags":[{"tag":"rust"}]}}"#,
        )
        .unwrap();
        assert!(matches!(t.hashtags[0], Cow::Borrowed(_)));
    }

    #[test]
    fn escaped_and_upper_case_strings_are_owned_but_correct() {
        let json = r#"{"id":"1","text":"x","author_id":"a\u0062c","entities":{"hashtags":[{"tag":"ÉTÉ"}]}}"#;
        let t = ParsedTweet::parse(json.as_bytes()).unwrap();
        assert_eq!(t.author_id.as_deref(), Some("abc"));
        assert_eq!(t.hashtags, vec!["été"]);
    }

    #[test]
    fn optional_fields_may_be_missing() {
        let t = ParsedTweet::parse(br#"{"id":"9","text":"hello"}"#).unwrap();
        assert_eq!(t.created_at_ms, None);
        assert_eq!(t.author_id, None);
        assert_eq!(t.lang, None);
        assert_eq!(t.likes, 0);
        assert!(t.hashtags.is_empty() && t.mentions.is_empty());
        assert!(matches!(
            t.event_time_ms(),
            Err(TweetError::NoCreatedAt { id }) if id == "9"
        ));
    }

    #[test]
    fn offsets_are_kept_in_created_at() {
        let t = ParsedTweet::parse(
            br#"{"id":"1","text":"x","created_at":"1970-01-01T01:00:00+01:00"}"#,
        )
        .unwrap();
        assert_eq!(t.created_at_ms, Some(0));
    }

    #[test]
    fn malformed_records_are_errors() {
        for bad in [
            &b""[..],
            b"null",
            b"[]",
            b"{",
            b"\xff\xfe",
            br#"{"text":"no id"}"#,
            br#"{"id":"1"}"#,
            br#"{"id":1,"text":"numeric id"}"#,
            br#"{"id":"1","text":"x","public_metrics":{"like_count":-1}}"#,
            br#"{"id":"1","text":"x","entities":{"hashtags":[{"start":0}]}}"#,
        ] {
            assert!(
                matches!(ParsedTweet::parse(bad), Err(TweetError::Json(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(matches!(
            ParsedTweet::parse(br#"{"id":"1","text":"x","created_at":"yesterday"}"#),
            Err(TweetError::CreatedAt { value, .. }) if value == "yesterday"
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = ParsedTweet::parse(&bytes);
        }

        #[test]
        fn hashtags_fold_to_one_lower_case_entry(tag in "[a-zA-Z0-9_]{1,12}") {
            let json = serde_json::json!({
                "id": "1", "text": "t",
                "entities": {"hashtags": [
                    {"tag": tag.to_uppercase()}, {"tag": tag.to_lowercase()}, {"tag": tag.clone()}
                ]}
            });
            let bytes = serde_json::to_vec(&json).unwrap();
            let t = ParsedTweet::parse(&bytes).unwrap();
            prop_assert_eq!(t.hashtags, vec![Cow::Owned::<str>(tag.to_lowercase())]);
        }
    }
}
