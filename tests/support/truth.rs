//! What every window must hold, computed from the raw tweet topic (read with
//! `read_committed`) without the consumer's code, and its comparison with
//! what the consumer published.
//!
//! The rules are the consumer's documented ones: a record counts when its
//! `stream` header (if any) names the stream and it is a
//! JSON object with a string `id`, a string `text` and an RFC 3339
//! `created_at` no further ahead of the reading clock than the allowed skew;
//! it counts once in each epoch-aligned window containing its `created_at`;
//! hashtags are lower-cased and, like mentions, counted once per tweet; a
//! tweet without `lang` counts as `und`.

use crate::kafka::Record;
use std::collections::{BTreeMap, BTreeSet};
use twitterstream_workers::consumer::aggregate::WindowResult;

/// What decides which tweets count and where.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// The stream whose records count (another stream may share the topic).
    pub stream: &'static str,
    pub size_ms: i64,
    pub slide_ms: i64,
    /// Tweets dated after this are skipped (the reading clock plus the
    /// allowed skew; the tests' future tweets are years ahead of it).
    pub future_after_ms: i64,
}

impl Rules {
    /// Tumbling windows of `seconds`, the default skew of 300 s from now.
    pub fn tumbling(stream: &'static str, seconds: i64) -> Self {
        Rules {
            stream,
            size_ms: seconds * 1000,
            slide_ms: seconds * 1000,
            future_after_ms: chrono::Utc::now().timestamp_millis() + 300_000,
        }
    }
}

/// One window's content, as published or as it must be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Window {
    pub count: u64,
    pub unique_authors: u64,
    pub hashtags: BTreeMap<String, u64>,
    pub mentions: BTreeMap<String, u64>,
    pub languages: BTreeMap<String, u64>,
    pub likes: u64,
    pub late: u64,
}

/// A tweet as the X API returns it (the fields the consumer reads).
#[derive(Debug, Clone)]
pub struct Tweet<'a> {
    pub id: String,
    pub at_ms: i64,
    pub author: &'a str,
    pub lang: Option<&'a str>,
    pub hashtags: &'a [&'a str],
    pub mentions: &'a [&'a str],
    pub likes: u64,
}

impl Tweet<'_> {
    pub fn json(&self) -> Vec<u8> {
        let mut v = serde_json::json!({
            "id": self.id,
            "text": format!("tweet {} about the game", self.id),
            "created_at": rfc3339(self.at_ms),
            "author_id": self.author,
            "public_metrics": {"like_count": self.likes, "retweet_count": 0},
            "entities": {
                "hashtags": self.hashtags.iter().map(|t| serde_json::json!({"tag": t})).collect::<Vec<_>>(),
                "mentions": self.mentions.iter().map(|u| serde_json::json!({"username": u})).collect::<Vec<_>>(),
            }
        });
        if let Some(l) = self.lang {
            v["lang"] = serde_json::json!(l);
        }
        serde_json::to_vec(&v).expect("json")
    }
}

/// Ten minutes ago, on a 10 s window boundary: live traffic, well inside
/// the consumer's future skew, old enough that no window waits on the clock.
pub fn live_base_ms() -> i64 {
    let t = chrono::Utc::now().timestamp_millis() - 600_000;
    t - t.rem_euclid(10_000)
}

pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .expect("in range")
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

fn parse_time(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

struct Acc {
    window: Window,
    authors: BTreeSet<String>,
}

/// Every window with at least one tweet, by start (ms), from the raw records.
pub fn expected(records: &[Record], rules: &Rules) -> BTreeMap<i64, Window> {
    let mut acc: BTreeMap<i64, Acc> = BTreeMap::new();
    for r in records {
        if r.headers.get("stream").is_some_and(|s| s != rules.stream) {
            continue;
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&r.value) else {
            continue;
        };
        let (Some(_), Some(_), Some(at)) = (
            v["id"].as_str(),
            v["text"].as_str(),
            v["created_at"].as_str().and_then(parse_time),
        ) else {
            continue;
        };
        if at > rules.future_after_ms {
            continue;
        }
        let set = |field: &str, key: &str, lower: bool| -> BTreeSet<String> {
            v["entities"][field]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e[key].as_str())
                .map(|s| {
                    if lower {
                        s.to_lowercase()
                    } else {
                        s.to_owned()
                    }
                })
                .collect()
        };
        let hashtags = set("hashtags", "tag", true);
        let mentions = set("mentions", "username", false);
        let lang = v["lang"].as_str().unwrap_or("und").to_owned();
        let likes = v["public_metrics"]["like_count"].as_u64().unwrap_or(0);
        let last_start = at.div_euclid(rules.slide_ms) * rules.slide_ms;
        for k in 0..rules.size_ms / rules.slide_ms {
            let a = acc.entry(last_start - k * rules.slide_ms).or_insert(Acc {
                window: Window::default(),
                authors: BTreeSet::new(),
            });
            let w = &mut a.window;
            w.count += 1;
            if let Some(author) = v["author_id"].as_str() {
                a.authors.insert(author.to_owned());
            }
            for t in &hashtags {
                *w.hashtags.entry(t.clone()).or_default() += 1;
            }
            for u in &mentions {
                *w.mentions.entry(u.clone()).or_default() += 1;
            }
            *w.languages.entry(lang.clone()).or_default() += 1;
            w.likes += likes;
        }
    }
    acc.into_iter()
        .map(|(start, mut a)| {
            a.window.unique_authors = a.authors.len() as u64;
            (start, a.window)
        })
        .collect()
}

/// The published windows by start (ms), all of one window generation.
/// Panics on a window published twice, under another key than
/// `<stream>@<start>/<generation>`, or under two generations. Hashtags and
/// mentions are the published top lists: read them with a top-N above every
/// count.
pub fn published(stream: &str, got: &[(String, WindowResult)]) -> BTreeMap<i64, Window> {
    let mut by = published_by_generation(stream, got);
    assert!(
        by.len() <= 1,
        "windows of several generations: {:?}",
        by.keys()
    );
    by.pop_first().map(|(_, w)| w).unwrap_or_default()
}

/// The published windows per window generation (`w10s`, `w60s-10s`: the
/// last part of the key), by start (ms); panics like [`published`].
pub fn published_by_generation(
    stream: &str,
    got: &[(String, WindowResult)],
) -> BTreeMap<String, BTreeMap<i64, Window>> {
    let mut out: BTreeMap<String, BTreeMap<i64, Window>> = BTreeMap::new();
    for (key, r) in got {
        let prefix = format!("{stream}@{}/", r.window_start);
        let generation = key
            .strip_prefix(&prefix)
            .filter(|g| g.starts_with('w'))
            .unwrap_or_else(|| panic!("output key {key:?}: not {prefix}<generation>"));
        assert_eq!(r.stream, stream);
        let start = parse_time(&r.window_start).expect("window_start is RFC 3339");
        let tags = |v: &[twitterstream_workers::consumer::aggregate::TagCount]| {
            v.iter().map(|t| (t.tag.clone(), t.count)).collect()
        };
        let w = Window {
            count: r.count,
            unique_authors: r.unique_authors,
            hashtags: tags(&r.hashtags),
            mentions: tags(&r.mentions),
            languages: r.languages.clone(),
            likes: r.likes,
            late: r.late,
        };
        assert!(
            out.entry(generation.to_owned())
                .or_default()
                .insert(start, w)
                .is_none(),
            "window {key} published twice"
        );
    }
    out
}

/// Every window exactly as `want`: none missing, none extra, every field.
pub fn assert_exact(got: &BTreeMap<i64, Window>, want: &BTreeMap<i64, Window>) {
    let missing: Vec<String> = want
        .keys()
        .filter(|k| !got.contains_key(k))
        .map(|k| rfc3339(*k))
        .collect();
    let extra: Vec<String> = got
        .keys()
        .filter(|k| !want.contains_key(k))
        .map(|k| rfc3339(*k))
        .collect();
    let wrong: Vec<String> = want
        .iter()
        .filter_map(|(k, w)| {
            let g = got.get(k)?;
            (g != w).then(|| format!("{}: published {g:?}, truth {w:?}", rfc3339(*k)))
        })
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && wrong.is_empty(),
        "{} of {} windows missing {missing:?}; extra {extra:?}; wrong:\n{}",
        missing.len(),
        want.len(),
        wrong.join("\n")
    );
}

/// [`assert_exact`] for windows published with top lists shorter than the
/// truth's (a synthetic stream has 2,000 hashtags and 50,000 users): every
/// listed hashtag and mention has the truth's count, each list is as long
/// as `top_n` allows, and the rest is exact.
pub fn assert_exact_with_top_lists(
    got: &BTreeMap<i64, Window>,
    want: &BTreeMap<i64, Window>,
    top_n: usize,
) {
    let mut short = BTreeMap::new();
    for (start, w) in want {
        let mut w = w.clone();
        if let Some(g) = got.get(start) {
            for (listed, all) in [
                (&g.hashtags, &mut w.hashtags),
                (&g.mentions, &mut w.mentions),
            ] {
                assert_eq!(
                    listed.len(),
                    all.len().min(top_n),
                    "window {}: a top list of {} of {} entries",
                    rfc3339(*start),
                    listed.len(),
                    all.len()
                );
                all.retain(|k, _| listed.contains_key(k));
            }
        }
        short.insert(*start, w);
    }
    assert_exact(got, &short);
}
