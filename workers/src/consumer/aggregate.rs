//! What a window accumulates, in a form that merges exactly.
//!
//! Consumer replicas each see some partitions, so a window's total is the merge
//! of several partial aggregates. Every field is therefore a commutative,
//! associative and exact combination (integer sums, set union, map sums): the
//! merged result does not depend on arrival order or on how partitions were
//! split. Top-N lists are only cut at emit time, since top-N of parts is not
//! top-N of the whole.

use crate::consumer::sentiment::Polarity;
use crate::consumer::tweet::ParsedTweet;
use crate::consumer::window_key::WindowKey;
use chrono::{DateTime, SecondsFormat};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Compound scores are summed in millionths: floating-point sums depend on
/// the order of addition, and partials merge in any order.
const SENTIMENT_SCALE: f64 = 1_000_000.0;

/// The partial aggregate of one window. Serialised as JSON between replicas.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Aggregate {
    pub count: u64,
    pub(crate) authors: BTreeSet<String>,
    pub hashtags: BTreeMap<String, u64>,
    pub mentions: BTreeMap<String, u64>,
    pub languages: BTreeMap<String, u64>,
    pub likes: u64,
    pub(crate) sentiment: SentimentSums,
    /// Tweets that arrived after this window (or, see the window engine, an
    /// earlier already-emitted one) had closed.
    pub late: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SentimentSums {
    /// Sum of compound scores, in millionths.
    pub(crate) compound_micros: i64,
    pub(crate) positive: u64,
    pub(crate) negative: u64,
    pub(crate) neutral: u64,
}

/// X marks tweets whose language it could not determine as "und"; tweets
/// without the field are counted the same way.
pub(crate) const UNKNOWN_LANGUAGE: &str = "und";

impl Aggregate {
    pub(crate) fn add(&mut self, tweet: &ParsedTweet<'_>) {
        self.count = self.count.saturating_add(1);
        if let Some(author) = &tweet.author_id
            && !self.authors.contains(author.as_ref())
        {
            self.authors.insert(author.clone().into_owned());
        }
        for tag in &tweet.hashtags {
            bump(&mut self.hashtags, tag, 1);
        }
        for user in &tweet.mentions {
            bump(&mut self.mentions, user, 1);
        }
        bump(
            &mut self.languages,
            tweet.lang.as_deref().unwrap_or(UNKNOWN_LANGUAGE),
            1,
        );
        // Values from the wire are untrusted; saturate rather than wrap.
        self.likes = self.likes.saturating_add(tweet.likes);
        let s = &mut self.sentiment;
        // The cast saturates; compound scores are within [-1, 1] anyway.
        s.compound_micros = s
            .compound_micros
            .saturating_add((tweet.sentiment * SENTIMENT_SCALE).round() as i64);
        match Polarity::of(tweet.sentiment) {
            Polarity::Positive => s.positive += 1,
            Polarity::Negative => s.negative += 1,
            Polarity::Neutral => s.neutral += 1,
        }
    }

    pub(crate) fn add_late(&mut self, n: u64) {
        self.late = self.late.saturating_add(n);
    }

    /// Folds `other` in; exact, commutative and associative.
    pub(crate) fn merge(&mut self, other: &Aggregate) {
        self.count = self.count.saturating_add(other.count);
        self.authors.extend(other.authors.iter().cloned());
        for (map, theirs) in [
            (&mut self.hashtags, &other.hashtags),
            (&mut self.mentions, &other.mentions),
            (&mut self.languages, &other.languages),
        ] {
            for (k, n) in theirs {
                bump(map, k, *n);
            }
        }
        self.likes = self.likes.saturating_add(other.likes);
        let (s, o) = (&mut self.sentiment, &other.sentiment);
        s.compound_micros = s.compound_micros.saturating_add(o.compound_micros);
        s.positive = s.positive.saturating_add(o.positive);
        s.negative = s.negative.saturating_add(o.negative);
        s.neutral = s.neutral.saturating_add(o.neutral);
        self.late = self.late.saturating_add(other.late);
    }

    /// Splits this aggregate into pieces whose JSON stays within about
    /// `budget` bytes each, for a partial that would exceed the broker's
    /// record size (~100,000 authors in one window). Merging the pieces gives
    /// back this aggregate exactly: the counters go to the first piece, and
    /// every author and map entry to exactly one. Deterministic, so a replay
    /// splits the same way.
    pub(crate) fn split(self, budget: usize) -> Vec<Aggregate> {
        // Per author: quotes and a comma; per map entry also a colon and
        // the digits of a count.
        const AUTHOR_OVERHEAD: usize = 3;
        const ENTRY_OVERHEAD: usize = 24;
        let mut pieces = vec![Aggregate {
            count: self.count,
            likes: self.likes,
            sentiment: self.sentiment,
            late: self.late,
            ..Aggregate::default()
        }];
        // The counters and field names take a few hundred bytes.
        let mut used = 512;
        let mut room = |need: usize, pieces: &mut Vec<Aggregate>| {
            if used + need > budget && used > 512 {
                pieces.push(Aggregate::default());
                used = 512;
            }
            used += need;
        };
        for author in self.authors {
            room(author.len() + AUTHOR_OVERHEAD, &mut pieces);
            if let Some(last) = pieces.last_mut() {
                last.authors.insert(author);
            }
        }
        for (field, map) in [(0, self.hashtags), (1, self.mentions), (2, self.languages)] {
            for (k, n) in map {
                room(k.len() + ENTRY_OVERHEAD, &mut pieces);
                if let Some(last) = pieces.last_mut() {
                    let target = match field {
                        0 => &mut last.hashtags,
                        1 => &mut last.mentions,
                        _ => &mut last.languages,
                    };
                    target.insert(k, n);
                }
            }
        }
        pieces
    }

    /// Mean compound score of the counted tweets (0 for none).
    pub(crate) fn sentiment_mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sentiment.compound_micros as f64 / SENTIMENT_SCALE / self.count as f64
        }
    }

    /// The published form of this window.
    pub(crate) fn result(&self, stream: &str, window: WindowKey, top_n: usize) -> WindowResult {
        WindowResult {
            stream: stream.to_owned(),
            window_start: rfc3339(window.start_ms),
            window_end: rfc3339(window.end_ms),
            count: self.count,
            unique_authors: self.authors.len() as u64,
            hashtags: top(&self.hashtags, top_n),
            mentions: top(&self.mentions, top_n),
            languages: self.languages.clone(),
            likes: self.likes,
            sentiment: SentimentSummary {
                mean: self.sentiment_mean(),
                positive: self.sentiment.positive,
                negative: self.sentiment.negative,
                neutral: self.sentiment.neutral,
            },
            late: self.late,
        }
    }
}

fn bump(map: &mut BTreeMap<String, u64>, key: &str, n: u64) {
    // Looking up by &str first avoids allocating a key for every repeat.
    match map.get_mut(key) {
        Some(c) => *c = c.saturating_add(n),
        None => {
            map.insert(key.to_owned(), n);
        }
    }
}

/// The `n` largest counts; equal counts in tag order so output is stable.
pub(crate) fn top(counts: &BTreeMap<String, u64>, n: usize) -> Vec<TagCount> {
    let mut all: Vec<(&String, &u64)> = counts.iter().collect();
    // The map iterates in tag order and the sort is stable, so ties keep it.
    all.sort_by(|a, b| b.1.cmp(a.1));
    all.into_iter()
        .take(n)
        .map(|(tag, count)| TagCount {
            tag: tag.clone(),
            count: *count,
        })
        .collect()
}

fn rfc3339(ms: i64) -> String {
    // Window bounds derive from parsed RFC 3339 times, so they are in range;
    // a raw number beats a panic if that ever stops being true.
    DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
    )
}

/// One window's published result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowResult {
    pub stream: String,
    pub window_start: String,
    pub window_end: String,
    pub count: u64,
    pub unique_authors: u64,
    pub hashtags: Vec<TagCount>,
    pub mentions: Vec<TagCount>,
    pub languages: BTreeMap<String, u64>,
    pub likes: u64,
    pub(crate) sentiment: SentimentSummary,
    pub late: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagCount {
    pub tag: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SentimentSummary {
    pub(crate) mean: f64,
    pub(crate) positive: u64,
    pub(crate) negative: u64,
    pub(crate) neutral: u64,
}

/// One line for `--print`.
impl fmt::Display for WindowResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{}, {}) tweets={} authors={} likes={} late={} sentiment={:+.3} (+{} -{} ={})",
            self.stream,
            self.window_start,
            self.window_end,
            self.count,
            self.unique_authors,
            self.likes,
            self.late,
            self.sentiment.mean,
            self.sentiment.positive,
            self.sentiment.negative,
            self.sentiment.neutral,
        )?;
        let list = |f: &mut fmt::Formatter<'_>, name: &str, sigil: &str, v: &[TagCount]| {
            write!(f, " {name}=")?;
            if v.is_empty() {
                return write!(f, "-");
            }
            for (i, t) in v.iter().enumerate() {
                let sep = if i == 0 { "" } else { "," };
                write!(f, "{sep}{sigil}{}:{}", t.tag, t.count)?;
            }
            Ok(())
        };
        list(f, "hashtags", "#", &self.hashtags)?;
        list(f, "mentions", "@", &self.mentions)?;
        write!(f, " langs=")?;
        if self.languages.is_empty() {
            return write!(f, "-");
        }
        for (i, (lang, n)) in self.languages.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            write!(f, "{sep}{lang}:{n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::borrow::Cow;

    fn tweet<'a>(
        author: &'a str,
        lang: Option<&'a str>,
        tags: &[&'a str],
        users: &[&'a str],
        likes: u64,
        sentiment: f64,
    ) -> ParsedTweet<'a> {
        ParsedTweet {
            id: Cow::Borrowed("1"),
            created_at_ms: None,
            author_id: Some(Cow::Borrowed(author)),
            lang: lang.map(Cow::Borrowed),
            likes,
            hashtags: tags.iter().map(|t| Cow::Borrowed(*t)).collect(),
            mentions: users.iter().map(|t| Cow::Borrowed(*t)).collect(),
            sentiment,
        }
    }

    fn key(start_ms: i64, end_ms: i64) -> WindowKey {
        WindowKey { start_ms, end_ms }
    }

    #[test]
    fn add_counts_every_dimension() {
        let mut a = Aggregate::default();
        a.add(&tweet("u1", Some("en"), &["rust", "k8s"], &["bob"], 3, 0.5));
        a.add(&tweet("u2", Some("ja"), &["rust"], &[], 4, -0.5));
        a.add(&tweet("u1", None, &[], &["bob", "eve"], 0, 0.01));
        assert_eq!(a.count, 3);
        assert_eq!(a.authors.len(), 2);
        assert_eq!(a.hashtags.get("rust"), Some(&2));
        assert_eq!(a.hashtags.get("k8s"), Some(&1));
        assert_eq!(a.mentions.get("bob"), Some(&2));
        assert_eq!(a.mentions.get("eve"), Some(&1));
        assert_eq!(a.languages.get("en"), Some(&1));
        assert_eq!(a.languages.get("ja"), Some(&1));
        assert_eq!(a.languages.get(UNKNOWN_LANGUAGE), Some(&1));
        assert_eq!(a.likes, 7);
        assert_eq!(
            a.sentiment,
            SentimentSums {
                compound_micros: 10_000,
                positive: 1,
                negative: 1,
                neutral: 1
            }
        );
        assert!((a.sentiment_mean() - 0.01 / 3.0).abs() < 1e-9);
        assert_eq!(a.late, 0);
    }

    #[test]
    fn top_breaks_ties_by_tag() {
        let counts: BTreeMap<String, u64> = [("b", 2), ("a", 2), ("c", 5), ("d", 1), ("aa", 2)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let got: Vec<(String, u64)> = top(&counts, 4)
            .into_iter()
            .map(|t| (t.tag, t.count))
            .collect();
        let want = [("c", 5), ("a", 2), ("aa", 2), ("b", 2)].map(|(k, v)| (k.to_owned(), v));
        assert_eq!(got, want);
        assert!(top(&counts, 0).is_empty());
        assert_eq!(top(&counts, 99).len(), 5);
    }

    #[test]
    fn result_has_the_published_json_shape() {
        let mut a = Aggregate::default();
        a.add(&tweet("u1", Some("en"), &["rust"], &["bob"], 3, 0.5));
        a.add(&tweet("u2", Some("en"), &["rust", "go"], &[], 1, 0.0));
        a.add_late(2);
        let r = a.result("demo", key(1_700_000_000_000, 1_700_000_010_000), 1);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "stream": "demo",
                "window_start": "2023-11-14T22:13:20Z",
                "window_end": "2023-11-14T22:13:30Z",
                "count": 2,
                "unique_authors": 2,
                "hashtags": [{"tag": "rust", "count": 2}],
                "mentions": [{"tag": "bob", "count": 1}],
                "languages": {"en": 2},
                "likes": 4,
                "sentiment": {"mean": 0.25, "positive": 1, "negative": 0, "neutral": 1},
                "late": 2
            })
        );
        let back: WindowResult = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn sub_second_bounds_keep_their_milliseconds() {
        let r = Aggregate::default().result("s", key(-500, 0), 10);
        assert_eq!(r.window_start, "1969-12-31T23:59:59.500Z");
        assert_eq!(r.window_end, "1970-01-01T00:00:00Z");
        assert_eq!(r.sentiment.mean, 0.0);
    }

    #[test]
    fn display_is_one_line_with_the_essentials() {
        let mut a = Aggregate::default();
        a.add(&tweet("u1", Some("en"), &["rust"], &["bob"], 3, 0.5));
        a.add_late(1);
        let line = a.result("demo", key(0, 10_000), 10).to_string();
        assert!(!line.contains('\n'));
        for part in [
            "demo",
            "[1970-01-01T00:00:00Z, 1970-01-01T00:00:10Z)",
            "tweets=1",
            "authors=1",
            "likes=3",
            "late=1",
            "sentiment=+0.500",
            "#rust:1",
            "@bob:1",
            "langs=en:1",
        ] {
            assert!(line.contains(part), "{part:?} missing from {line:?}");
        }
    }

    #[test]
    fn partial_round_trips_through_json() {
        let mut a = Aggregate::default();
        a.add(&tweet("u1", Some("en"), &["rust"], &["bob"], 3, -0.3));
        a.add_late(4);
        let text = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Aggregate>(&text).unwrap(), a);
    }

    fn arb_tweet() -> impl Strategy<Value = (u8, u8, Vec<u8>, Vec<u8>, u16, i32)> {
        (
            0u8..6,
            0u8..4,
            prop::collection::vec(0u8..5, 0..3),
            prop::collection::vec(0u8..5, 0..3),
            any::<u16>(),
            -1_000_000i32..=1_000_000,
        )
    }

    fn add_raw(a: &mut Aggregate, raw: &(u8, u8, Vec<u8>, Vec<u8>, u16, i32)) {
        let author = format!("a{}", raw.0);
        let lang = ["en", "ja", "de", "und"][usize::from(raw.1)];
        let tags: Vec<String> = raw.2.iter().map(|t| format!("t{t}")).collect();
        let users: Vec<String> = raw.3.iter().map(|t| format!("u{t}")).collect();
        let t = ParsedTweet {
            id: "x".into(),
            created_at_ms: None,
            author_id: Some(author.as_str().into()),
            lang: Some(lang.into()),
            likes: u64::from(raw.4),
            hashtags: tags.iter().map(|s| s.as_str().into()).collect(),
            mentions: users.iter().map(|s| s.as_str().into()).collect(),
            sentiment: f64::from(raw.5) / 1e6,
        };
        a.add(&t);
    }

    proptest! {
        #[test]
        fn merge_of_any_split_equals_adding_everything(
            tweets in prop::collection::vec(arb_tweet(), 0..40),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
            late in prop::collection::vec(0u64..5, 0..4),
        ) {
            let mut whole = Aggregate::default();
            for t in &tweets {
                add_raw(&mut whole, t);
            }
            whole.add_late(late.iter().sum());

            let mut bounds: Vec<usize> = cuts.iter().map(|i| i.index(tweets.len() + 1)).collect();
            bounds.push(0);
            bounds.push(tweets.len());
            bounds.sort_unstable();
            let mut parts: Vec<Aggregate> = bounds
                .windows(2)
                .map(|w| {
                    let mut a = Aggregate::default();
                    for t in &tweets[w[0]..w[1]] {
                        add_raw(&mut a, t);
                    }
                    a
                })
                .collect();
            for (i, n) in late.iter().enumerate() {
                let len = parts.len();
                parts[i % len].add_late(*n);
            }
            // Merge in reverse, the opposite order from how they were built.
            let mut merged = Aggregate::default();
            for p in parts.iter().rev() {
                merged.merge(p);
            }
            prop_assert_eq!(&merged, &whole);
            prop_assert_eq!(merged.count, tweets.len() as u64);
            let likes: u64 = tweets.iter().map(|t| u64::from(t.4)).sum();
            prop_assert_eq!(merged.likes, likes);
        }

        #[test]
        fn pieces_merge_back_exactly_and_stay_within_the_budget(
            tweets in prop::collection::vec(arb_tweet(), 0..40),
            extra_authors in 0usize..3_000,
            budget in 4_000usize..40_000,
        ) {
            let mut whole = Aggregate::default();
            for t in &tweets {
                add_raw(&mut whole, t);
            }
            whole.authors.extend((0..extra_authors).map(|i| format!("{:019}", i * 7919)));
            whole.add_late(3);
            let pieces = whole.clone().split(budget);
            let mut merged = Aggregate::default();
            for p in pieces.iter().rev() {
                merged.merge(p);
            }
            prop_assert_eq!(&merged, &whole);
            for p in &pieces {
                let len = serde_json::to_vec(p).map(|v| v.len()).unwrap_or(usize::MAX);
                prop_assert!(len <= budget, "a piece of {} bytes over {}", len, budget);
            }
            let whole_len = serde_json::to_vec(&whole).map(|v| v.len()).unwrap_or(0);
            prop_assert!(pieces.len() <= whole_len / (budget / 2) + 1, "{} pieces", pieces.len());
        }
    }
}
