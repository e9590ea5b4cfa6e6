//! Deterministic synthetic tweets: realistic X API v2 objects whose hashtags,
//! mentions and authors follow Zipf laws (a few are everywhere, most are
//! rare, as on X), in several languages, with heavy-tailed like counts.
//!
//! Everything but `created_at` (and the id, a snowflake of `created_at`)
//! depends only on the seed and the tweet's index, so tests and benchmarks
//! can regenerate exactly what the producer published; `created_at` comes
//! from an injected [`Clock`], so tests pin it too.

use super::search::Clock;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use rand::distr::Distribution;
use rand::distr::weighted::WeightedIndex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::LogNormal;
use rand_distr::weighted::WeightedAliasIndex;
use serde::Serialize;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// X's epoch for snowflake ids (2010-11-04T01:42:54.657Z).
const TWITTER_EPOCH_MS: i64 = 1_288_834_974_657;

const HASHTAGS: usize = 2_000;
const USERS: usize = 50_000;
const AUTHORS: usize = 200_000;

/// (language, share in percent, words).
const LANGUAGES: &[(&str, u32, &[&str])] = &[
    (
        "en",
        48,
        &[
            "the", "game", "tonight", "is", "amazing", "what", "a", "play", "can't", "believe",
            "this", "happened", "love", "watching", "with", "friends", "best", "day", "ever", "so",
            "good", "terrible", "call", "by", "refs", "halftime", "show", "was", "great",
        ],
    ),
    (
        "es",
        16,
        &[
            "qué",
            "partido",
            "increíble",
            "esta",
            "noche",
            "no",
            "puedo",
            "creer",
            "lo",
            "que",
            "pasó",
            "me",
            "encanta",
            "el",
            "mejor",
            "día",
            "con",
            "amigos",
            "vamos",
        ],
    ),
    (
        "ja",
        10,
        &[
            "今日",
            "の",
            "試合",
            "は",
            "最高",
            "でした",
            "すごい",
            "信じられない",
            "友達",
            "と",
            "見て",
            "いる",
            "楽しい",
        ],
    ),
    (
        "pt",
        9,
        &[
            "que",
            "jogo",
            "incrível",
            "hoje",
            "não",
            "acredito",
            "no",
            "que",
            "aconteceu",
            "melhor",
            "dia",
            "com",
            "amigos",
            "bora",
        ],
    ),
    (
        "fr",
        6,
        &[
            "quel",
            "match",
            "incroyable",
            "ce",
            "soir",
            "je",
            "n'arrive",
            "pas",
            "à",
            "croire",
            "meilleur",
            "jour",
            "avec",
            "les",
            "copains",
        ],
    ),
    (
        "de",
        5,
        &[
            "was",
            "für",
            "ein",
            "spiel",
            "heute",
            "abend",
            "unglaublich",
            "bester",
            "tag",
            "mit",
            "freunden",
            "los",
            "geht's",
        ],
    ),
    (
        "ar",
        3,
        &[
            "مباراة",
            "رائعة",
            "الليلة",
            "لا",
            "أصدق",
            "ما",
            "حدث",
            "أفضل",
            "يوم",
            "مع",
            "الأصدقاء",
        ],
    ),
    (
        "hi",
        3,
        &[
            "क्या",
            "मैच",
            "है",
            "आज",
            "रात",
            "अविश्वसनीय",
            "सबसे",
            "अच्छा",
            "दिन",
            "दोस्तों",
            "के",
            "साथ",
        ],
    ),
];

/// Popular tags get real names; the long tail is numbered.
const NAMED_TAGS: &[&str] = &[
    "SuperBowl",
    "NFL",
    "Rust",
    "Kafka",
    "Kubernetes",
    "AI",
    "WorldCup",
    "Music",
    "Breaking",
    "Crypto",
    "Elections",
    "Climate",
    "Gaming",
    "Movies",
    "Tech",
    "Football",
    "NBA",
    "Anime",
    "Travel",
    "Food",
];

/// A manually driven clock: `now` is what was last set, `sleep` advances it
/// at once. Tests and `dump-synthetic` use it to pin `created_at`.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Arc<Self> {
        Arc::new(Self {
            now: Mutex::new(start),
        })
    }

    pub fn set(&self, t: DateTime<Utc>) {
        *self.now.lock().unwrap_or_else(|e| e.into_inner()) = t;
    }

    pub fn advance(&self, d: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now += TimeDelta::from_std(d).unwrap_or(TimeDelta::zero());
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.advance(duration);
        Box::pin(std::future::ready(()))
    }
}

/// One generated tweet: the fields tests compute expectations from, and the
/// v2 JSON the producer publishes.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticTweet {
    /// Position in the sequence of this seed (0-based).
    pub index: u64,
    pub id: u64,
    pub created_at: DateTime<Utc>,
    pub lang: &'static str,
    pub author_id: u64,
    pub text: String,
    pub hashtags: Vec<String>,
    pub mentions: Vec<String>,
    pub like_count: u64,
    pub retweet_count: u64,
    /// The tweet as an X API v2 object (what goes into the Kafka record).
    pub json: String,
}

impl SyntheticTweet {
    pub fn id_string(&self) -> String {
        self.id.to_string()
    }
}

#[derive(Serialize)]
struct JsonTweet<'a> {
    id: &'a str,
    text: &'a str,
    created_at: String,
    lang: &'a str,
    author_id: String,
    edit_history_tweet_ids: [&'a str; 1],
    public_metrics: JsonMetrics,
    #[serde(skip_serializing_if = "JsonEntities::is_empty")]
    entities: JsonEntities<'a>,
}

#[derive(Serialize)]
struct JsonMetrics {
    retweet_count: u64,
    reply_count: u64,
    like_count: u64,
    quote_count: u64,
    bookmark_count: u64,
    impression_count: u64,
}

#[derive(Serialize)]
struct JsonEntities<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    hashtags: Vec<JsonTag<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    mentions: Vec<JsonMention<'a>>,
}

impl JsonEntities<'_> {
    fn is_empty(&self) -> bool {
        self.hashtags.is_empty() && self.mentions.is_empty()
    }
}

#[derive(Serialize)]
struct JsonTag<'a> {
    start: usize,
    end: usize,
    tag: &'a str,
}

#[derive(Serialize)]
struct JsonMention<'a> {
    start: usize,
    end: usize,
    username: &'a str,
    id: String,
}

/// The generator; see the module documentation. A clone continues with the
/// same sequence (a snapshot to regenerate a batch from).
#[derive(Clone)]
pub struct SyntheticGenerator {
    rng: StdRng,
    clock: Arc<dyn Clock>,
    index: u64,
    last_id: u64,
    languages: WeightedIndex<u32>,
    hashtag: Arc<WeightedAliasIndex<f64>>,
    user: Arc<WeightedAliasIndex<f64>>,
    author: Arc<WeightedAliasIndex<f64>>,
    likes: LogNormal<f64>,
}

impl std::fmt::Debug for SyntheticGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyntheticGenerator")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// Zipf exponents: hashtags and mentions are steep (a handful trend),
/// authors flatter (many people tweet a little).
const HASHTAG_S: f64 = 1.1;
const USER_S: f64 = 1.05;
const AUTHOR_S: f64 = 0.8;

/// A finite Zipf law over ranks 1..=n (weight of rank k: 1/k^s) as an alias
/// table: O(1) per sample, where rejection sampling needs `powf` calls,
/// which showed up as a large share of the generator's time.
fn zipf(n: usize, s: f64) -> Arc<WeightedAliasIndex<f64>> {
    let weights: Vec<f64> = (1..=n).map(|k| (k as f64).powf(-s)).collect();
    #[allow(clippy::unwrap_used)] // n >= 1 positive finite weights
    Arc::new(WeightedAliasIndex::new(weights).unwrap())
}

impl SyntheticGenerator {
    pub fn new(seed: u64, clock: Arc<dyn Clock>) -> Self {
        let weights: Vec<u32> = LANGUAGES.iter().map(|l| l.1).collect();
        #[allow(clippy::unwrap_used)] // constant, non-empty, positive weights
        let languages = WeightedIndex::new(weights).unwrap();
        #[allow(clippy::unwrap_used)] // constant, valid parameters
        let likes = LogNormal::new(1.0, 1.6).unwrap();
        Self {
            rng: StdRng::seed_from_u64(seed),
            clock,
            index: 0,
            last_id: 0,
            languages,
            hashtag: zipf(HASHTAGS, HASHTAG_S),
            user: zipf(USERS, USER_S),
            author: zipf(AUTHORS, AUTHOR_S),
            likes,
        }
    }

    /// Index of the next tweet.
    pub fn position(&self) -> u64 {
        self.index
    }

    /// The name of the `rank`-th most popular hashtag (1-based).
    pub fn hashtag_name(rank: usize) -> String {
        match NAMED_TAGS.get(rank.wrapping_sub(1)) {
            Some(n) => (*n).to_owned(),
            None => format!("topic{rank}"),
        }
    }

    pub fn next_tweet(&mut self) -> SyntheticTweet {
        let index = self.index;
        self.index += 1;
        let (lang, _, words) = LANGUAGES[self.languages.sample(&mut self.rng)];
        let n_words = self.rng.random_range(4..=14);
        let n_tags = match self.rng.random_range(0..100) {
            0..40 => 0,
            40..75 => 1,
            75..92 => 2,
            _ => 3,
        };
        let n_mentions = match self.rng.random_range(0..100) {
            0..65 => 0,
            65..90 => 1,
            _ => 2,
        };
        let author_rank = self.author.sample(&mut self.rng) + 1;
        let author_id = 1_000_000_000 + author_rank as u64 * 7_919;
        let like_count = (self.likes.sample(&mut self.rng) as u64).min(5_000_000);
        let retweet_count = like_count / self.rng.random_range(3..12);

        // Mentions lead, as replies do; hashtags trail.
        let mut text = String::with_capacity(160);
        let mut char_len = 0usize;
        let mut push = |text: &mut String, s: &str| {
            if !text.is_empty() {
                text.push(' ');
                char_len += 1;
            }
            let start = char_len;
            text.push_str(s);
            char_len += s.chars().count();
            (start, char_len)
        };
        let mut mentions = Vec::with_capacity(n_mentions);
        let mut mention_spans = Vec::with_capacity(n_mentions);
        for _ in 0..n_mentions {
            let rank = self.user.sample(&mut self.rng) + 1;
            let name = format!("user{rank}");
            let span = push(&mut text, &format!("@{name}"));
            mention_spans.push((span, rank));
            mentions.push(name);
        }
        for _ in 0..n_words {
            let w = words[self.rng.random_range(0..words.len())];
            push(&mut text, w);
        }
        let mut hashtags = Vec::with_capacity(n_tags);
        let mut tag_spans = Vec::with_capacity(n_tags);
        for _ in 0..n_tags {
            let rank = self.hashtag.sample(&mut self.rng) + 1;
            let tag = Self::hashtag_name(rank);
            tag_spans.push(push(&mut text, &format!("#{tag}")));
            hashtags.push(tag);
        }

        let created_at = self.clock.now();
        let ms = (created_at.timestamp_millis() - TWITTER_EPOCH_MS).max(0) as u64;
        // Strictly increasing even when the clock stands still, as X's are
        // (ids order like creation times).
        let id = (ms << 22 | (index & 0xfff)).max(self.last_id + 1);
        self.last_id = id;
        let id_str = id.to_string();
        let json = serde_json::to_string(&JsonTweet {
            id: &id_str,
            text: &text,
            created_at: created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            lang,
            author_id: author_id.to_string(),
            edit_history_tweet_ids: [&id_str],
            public_metrics: JsonMetrics {
                retweet_count,
                reply_count: retweet_count / 2,
                like_count,
                quote_count: retweet_count / 4,
                bookmark_count: like_count / 10,
                impression_count: like_count * 37 + 11,
            },
            entities: JsonEntities {
                hashtags: tag_spans
                    .iter()
                    .zip(&hashtags)
                    .map(|(&(start, end), tag)| JsonTag {
                        start,
                        end,
                        tag: &tag[..],
                    })
                    .collect(),
                mentions: mention_spans
                    .iter()
                    .zip(&mentions)
                    .map(|(&((start, end), rank), username)| JsonMention {
                        start,
                        end,
                        username: &username[..],
                        id: (2_000_000_000 + rank as u64 * 104_729).to_string(),
                    })
                    .collect(),
            },
        })
        // Serialising plain strings and integers cannot fail.
        .unwrap_or_default();
        SyntheticTweet {
            index,
            id,
            created_at,
            lang,
            author_id,
            text,
            hashtags,
            mentions,
            like_count,
            retweet_count,
            json,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::producer::xapi::Tweet;
    use chrono::TimeZone;
    use std::collections::HashMap;

    fn clock() -> Arc<ManualClock> {
        ManualClock::new(Utc.with_ymd_and_hms(2025, 2, 9, 23, 30, 0).unwrap())
    }

    #[test]
    fn same_seed_same_tweets() {
        let mut a = SyntheticGenerator::new(7, clock());
        let mut b = SyntheticGenerator::new(7, clock());
        let mut c = SyntheticGenerator::new(8, clock());
        let xs: Vec<_> = (0..100).map(|_| a.next_tweet()).collect();
        let ys: Vec<_> = (0..100).map(|_| b.next_tweet()).collect();
        let zs: Vec<_> = (0..100).map(|_| c.next_tweet()).collect();
        assert_eq!(xs, ys);
        assert_ne!(
            xs.iter().map(|t| &t.text).collect::<Vec<_>>(),
            zs.iter().map(|t| &t.text).collect::<Vec<_>>()
        );
    }

    #[test]
    fn tweets_are_valid_v2_with_consistent_entities() {
        let clock = clock();
        let mut g = SyntheticGenerator::new(1, clock.clone());
        let mut last = 0;
        for i in 0..2_000 {
            clock.advance(Duration::from_millis(i % 3));
            let t = g.next_tweet();
            assert!(t.id > last, "ids increase");
            last = t.id;
            let v: Tweet = serde_json::from_str(&t.json).unwrap();
            assert_eq!(v.id, t.id_string());
            assert_eq!(v.text, t.text);
            assert_eq!(v.created_at, Some(t.created_at.trunc_subsecs_ms()));
            assert_eq!(v.lang.as_deref(), Some(t.lang));
            assert_eq!(v.like_count(), t.like_count);
            let e = v.entities.unwrap_or_default();
            let tags: Vec<_> = e.hashtags.iter().map(|h| h.tag.clone()).collect();
            assert_eq!(tags, t.hashtags);
            let chars: Vec<char> = t.text.chars().collect();
            for h in &e.hashtags {
                let s: String = chars[h.start as usize..h.end as usize].iter().collect();
                assert_eq!(s, format!("#{}", h.tag));
            }
            for m in &e.mentions {
                let s: String = chars[m.start as usize..m.end as usize].iter().collect();
                assert_eq!(s, format!("@{}", m.username));
            }
            // The id is a snowflake of created_at (or just past it).
            let t_id = crate::producer::xapi::snowflake_time(&t.id_string()).unwrap();
            assert!(t_id >= t.created_at.trunc_subsecs_ms());
        }
    }

    trait TruncMs {
        fn trunc_subsecs_ms(self) -> Self;
    }
    impl TruncMs for DateTime<Utc> {
        fn trunc_subsecs_ms(self) -> Self {
            chrono::SubsecRound::trunc_subsecs(self, 3)
        }
    }

    #[test]
    fn hashtags_are_zipf_distributed() {
        let mut g = SyntheticGenerator::new(3, clock());
        let mut counts: HashMap<String, u64> = HashMap::new();
        let mut langs: HashMap<&str, u64> = HashMap::new();
        for _ in 0..50_000 {
            let t = g.next_tweet();
            for h in t.hashtags {
                *counts.entry(h).or_default() += 1;
            }
            *langs.entry(t.lang).or_default() += 1;
        }
        let top = counts[&SyntheticGenerator::hashtag_name(1)];
        let second = counts[&SyntheticGenerator::hashtag_name(2)];
        let tenth = counts[&SyntheticGenerator::hashtag_name(10)];
        // Zipf with s = 1.1: rank 2 has ~1/2^1.1 of rank 1, rank 10 ~1/10^1.1.
        let r2 = second as f64 / top as f64;
        let r10 = tenth as f64 / top as f64;
        assert!((0.38..0.56).contains(&r2), "{r2}");
        assert!((0.05..0.12).contains(&r10), "{r10}");
        assert!(counts.len() > 300, "a long tail: {}", counts.len());
        assert!(langs.len() >= 6);
        assert!(langs["en"] > langs["es"] && langs["es"] > langs["de"]);
    }
}
