//! What one search request asks for: the endpoint, the query and its
//! parameters.

use super::wire::TWEET_FIELDS;
use chrono::{DateTime, SecondsFormat, Utc};

/// The search endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `/2/tweets/search/recent`: the last 7 days.
    Recent,
    /// `/2/tweets/search/all`: the full archive, app-only bearer tokens only.
    All,
}

impl Endpoint {
    pub(crate) fn path(self) -> &'static str {
        match self {
            Endpoint::Recent => "/2/tweets/search/recent",
            Endpoint::All => "/2/tweets/search/all",
        }
    }
}

/// One search request (one page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchRequest {
    pub endpoint: Endpoint,
    pub(crate) query: String,
    pub(crate) since_id: Option<String>,
    /// Only tweets older than this id: the rest of a poll committed in part.
    pub(crate) until_id: Option<String>,
    pub(crate) start_time: Option<DateTime<Utc>>,
    pub(crate) end_time: Option<DateTime<Utc>>,
    pub(crate) max_results: u32,
    pub(crate) next_token: Option<String>,
}

impl SearchRequest {
    /// The query parameters, unencoded.
    pub(crate) fn params(&self) -> Vec<(String, String)> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

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
}
