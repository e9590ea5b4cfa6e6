//! Deterministic synthetic tweets: realistic X API v2 objects whose hashtags,
//! mentions and authors follow Zipf laws (a few are everywhere, most are
//! rare, as on X), in several languages, with heavy-tailed like counts.
//!
//! Everything but `created_at` (and the id, a snowflake of `created_at`)
//! depends only on the seed and the tweet's index, so tests and benchmarks
//! can regenerate exactly what the producer published; `created_at` comes
//! from an injected [`Clock`], so tests pin it too.

use super::clock::Clock;
use super::format::{decimal, push_json_str};
use chrono::{DateTime, SecondsFormat, Utc};
use rand::distr::Distribution;
use rand::distr::weighted::WeightedIndex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::LogNormal;
use rand_distr::weighted::WeightedAliasIndex;
use std::sync::Arc;

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

/// One generated tweet: the fields tests compute expectations from, and the
/// v2 JSON the producer publishes.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticTweet {
    /// Position in the sequence of this seed (0-based).
    pub(crate) index: u64,
    pub(crate) id: u64,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) lang: &'static str,
    pub(crate) author_id: u64,
    pub text: String,
    pub hashtags: Vec<String>,
    pub mentions: Vec<String>,
    pub(crate) like_count: u64,
    pub(crate) retweet_count: u64,
    /// The tweet as an X API v2 object (what goes into the Kafka record).
    pub(crate) json: String,
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
    /// `created_at` of the last tweet as epoch milliseconds and as text.
    created_text: (Option<i64>, String),
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
            created_text: (None, String::new()),
        }
    }

    /// Index of the next tweet.
    pub(crate) fn position(&self) -> u64 {
        self.index
    }

    /// The name of the `rank`-th most popular hashtag (1-based).
    pub(crate) fn hashtag_name(rank: usize) -> String {
        match NAMED_TAGS.get(rank.wrapping_sub(1)) {
            Some(n) => (*n).to_owned(),
            None => format!("topic{rank}"),
        }
    }

    pub fn next_tweet(&mut self) -> SyntheticTweet {
        let mut scratch = Scratch::default();
        let mut json = String::with_capacity(512);
        let d = self.generate(&mut scratch, &mut json);
        SyntheticTweet {
            index: d.index,
            id: d.id,
            created_at: d.created_at,
            lang: d.lang,
            author_id: d.author_id,
            hashtags: scratch
                .tags
                .iter()
                .map(|&(_, _, rank)| Self::hashtag_name(rank))
                .collect(),
            mentions: scratch
                .mentions
                .iter()
                .map(|&(_, _, rank)| format!("user{rank}"))
                .collect(),
            text: scratch.text,
            like_count: d.like_count,
            retweet_count: d.retweet_count,
            json,
        }
    }

    /// Appends the next tweet's JSON to `json` (exactly what
    /// [`SyntheticGenerator::next_tweet`] puts in `json`) and returns its
    /// index and id. The producer's path: no per-tweet allocation once
    /// `json` and `scratch` have grown, which at hundreds of thousands of
    /// tweets per second is a large share of generating them.
    pub fn next_into(&mut self, scratch: &mut Scratch, json: &mut String) -> (u64, u64) {
        let d = self.generate(scratch, json);
        (d.index, d.id)
    }

    /// Draws the next tweet (into `scratch`) and appends its JSON to `json`.
    /// The order of the random draws is the sequence's definition: changing
    /// it changes every seed's tweets.
    fn generate(&mut self, scratch: &mut Scratch, json: &mut String) -> Drawn {
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

        // Mentions lead, as replies do; hashtags trail. Spans count
        // characters, as X's entity offsets do.
        let Scratch {
            text,
            mentions,
            tags,
        } = scratch;
        text.clear();
        mentions.clear();
        tags.clear();
        let mut char_len = 0usize;
        let sep = |text: &mut String, char_len: &mut usize| {
            if !text.is_empty() {
                text.push(' ');
                *char_len += 1;
            }
        };
        let mut digits = [0u8; 20];
        for _ in 0..n_mentions {
            let rank = self.user.sample(&mut self.rng) + 1;
            sep(text, &mut char_len);
            let start = char_len;
            let before = text.len();
            text.push_str("@user");
            text.push_str(decimal(rank as u64, &mut digits));
            char_len += text.len() - before; // ASCII
            mentions.push((start, char_len, rank));
        }
        for _ in 0..n_words {
            let w = words[self.rng.random_range(0..words.len())];
            sep(text, &mut char_len);
            text.push_str(w);
            char_len += w.chars().count();
        }
        for _ in 0..n_tags {
            let rank = self.hashtag.sample(&mut self.rng) + 1;
            sep(text, &mut char_len);
            let start = char_len;
            let before = text.len();
            text.push('#');
            push_hashtag_name(text, rank);
            char_len += text.len() - before; // ASCII
            tags.push((start, char_len, rank));
        }

        let created_at = self.clock.now();
        let ms = created_at.timestamp_millis();
        // Strictly increasing even when the clock stands still, as X's are
        // (ids order like creation times).
        let id = ((ms - TWITTER_EPOCH_MS).max(0) as u64) << 22 | (index & 0xfff);
        let id = id.max(self.last_id + 1);
        self.last_id = id;
        // Consecutive tweets mostly share a millisecond: format it once.
        if self.created_text.0 != Some(ms) {
            self.created_text = (
                Some(ms),
                created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            );
        }

        // The v2 object, field by field in the order serde wrote it before
        // (tests hold that reference): id, text, created_at, lang,
        // author_id, edit_history_tweet_ids, public_metrics, entities.
        let mut id_digits = [0u8; 20];
        let id_str = decimal(id, &mut id_digits);
        json.push_str("{\"id\":\"");
        json.push_str(id_str);
        json.push_str("\",\"text\":");
        push_json_str(json, text);
        json.push_str(",\"created_at\":");
        push_json_str(json, &self.created_text.1);
        json.push_str(",\"lang\":");
        push_json_str(json, lang);
        json.push_str(",\"author_id\":\"");
        json.push_str(decimal(author_id, &mut digits));
        json.push_str("\",\"edit_history_tweet_ids\":[\"");
        json.push_str(id_str);
        json.push_str("\"],\"public_metrics\":{");
        let metrics = [
            ("retweet_count", retweet_count),
            ("reply_count", retweet_count / 2),
            ("like_count", like_count),
            ("quote_count", retweet_count / 4),
            ("bookmark_count", like_count / 10),
            ("impression_count", like_count * 37 + 11),
        ];
        for (i, (name, v)) in metrics.iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            json.push('"');
            json.push_str(name);
            json.push_str("\":");
            json.push_str(decimal(*v, &mut digits));
        }
        json.push('}');
        if !tags.is_empty() || !mentions.is_empty() {
            json.push_str(",\"entities\":{");
            if !tags.is_empty() {
                json.push_str("\"hashtags\":[");
                for (i, &(start, end, rank)) in tags.iter().enumerate() {
                    if i > 0 {
                        json.push(',');
                    }
                    push_span(json, start, end, &mut digits);
                    // Tag names are ASCII letters and digits: nothing to escape.
                    json.push_str(",\"tag\":\"");
                    push_hashtag_name(json, rank);
                    json.push_str("\"}");
                }
                json.push(']');
            }
            if !mentions.is_empty() {
                if !tags.is_empty() {
                    json.push(',');
                }
                json.push_str("\"mentions\":[");
                for (i, &(start, end, rank)) in mentions.iter().enumerate() {
                    if i > 0 {
                        json.push(',');
                    }
                    push_span(json, start, end, &mut digits);
                    json.push_str(",\"username\":\"user");
                    json.push_str(decimal(rank as u64, &mut digits));
                    json.push_str("\",\"id\":\"");
                    json.push_str(decimal(2_000_000_000 + rank as u64 * 104_729, &mut digits));
                    json.push_str("\"}");
                }
                json.push(']');
            }
            json.push('}');
        }
        json.push('}');
        Drawn {
            index,
            id,
            created_at,
            lang,
            author_id,
            like_count,
            retweet_count,
        }
    }
}

/// Reusable buffers of [`SyntheticGenerator::next_into`]: the text and the
/// (start, end, rank) spans of its mentions and hashtags.
#[derive(Debug, Default, Clone)]
pub struct Scratch {
    text: String,
    mentions: Vec<(usize, usize, usize)>,
    tags: Vec<(usize, usize, usize)>,
}

/// What [`SyntheticGenerator::generate`] drew besides the text and JSON.
struct Drawn {
    index: u64,
    id: u64,
    created_at: DateTime<Utc>,
    lang: &'static str,
    author_id: u64,
    like_count: u64,
    retweet_count: u64,
}

/// Opens an entity object with its `start` and `end` offsets.
fn push_span(json: &mut String, start: usize, end: usize, digits: &mut [u8; 20]) {
    json.push_str("{\"start\":");
    json.push_str(decimal(start as u64, digits));
    json.push_str(",\"end\":");
    json.push_str(decimal(end as u64, digits));
}

fn push_hashtag_name(out: &mut String, rank: usize) {
    match NAMED_TAGS.get(rank.wrapping_sub(1)) {
        Some(n) => out.push_str(n),
        None => {
            out.push_str("topic");
            out.push_str(decimal(rank as u64, &mut [0u8; 20]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::producer::clock::ManualClock;
    use crate::producer::xapi::Tweet;
    use chrono::TimeZone;
    use std::collections::HashMap;
    use std::time::Duration;

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
            assert_eq!(v.id, t.id.to_string());
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
            let t_id = crate::producer::xapi::snowflake_time(&t.id.to_string()).unwrap();
            assert!(t_id >= t.created_at.trunc_subsecs_ms());
        }
    }

    /// The serde serialisation the generator used to run through: the
    /// hand-written JSON must stay byte for byte what it produced.
    fn reference_json(t: &SyntheticTweet) -> String {
        #[derive(serde::Serialize)]
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
        #[derive(serde::Serialize)]
        struct JsonMetrics {
            retweet_count: u64,
            reply_count: u64,
            like_count: u64,
            quote_count: u64,
            bookmark_count: u64,
            impression_count: u64,
        }
        #[derive(serde::Serialize)]
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
        #[derive(serde::Serialize)]
        struct JsonTag<'a> {
            start: usize,
            end: usize,
            tag: &'a str,
        }
        #[derive(serde::Serialize)]
        struct JsonMention<'a> {
            start: usize,
            end: usize,
            username: &'a str,
            id: String,
        }
        // Spans from the text: tokens are space-separated, mentions lead
        // with '@', hashtags with '#', no word starts with either.
        let mut tags = Vec::new();
        let mut mentions = Vec::new();
        let mut pos = 0;
        for token in t.text.split(' ') {
            let len = token.chars().count();
            if let Some(name) = token.strip_prefix('#') {
                tags.push(JsonTag {
                    start: pos,
                    end: pos + len,
                    tag: name,
                });
            } else if let Some(name) = token.strip_prefix('@') {
                let rank: u64 = name.trim_start_matches("user").parse().unwrap();
                mentions.push(JsonMention {
                    start: pos,
                    end: pos + len,
                    username: name,
                    id: (2_000_000_000 + rank * 104_729).to_string(),
                });
            }
            pos += len + 1;
        }
        let id = t.id.to_string();
        serde_json::to_string(&JsonTweet {
            id: &id,
            text: &t.text,
            created_at: t.created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            lang: t.lang,
            author_id: t.author_id.to_string(),
            edit_history_tweet_ids: [&id],
            public_metrics: JsonMetrics {
                retweet_count: t.retweet_count,
                reply_count: t.retweet_count / 2,
                like_count: t.like_count,
                quote_count: t.retweet_count / 4,
                bookmark_count: t.like_count / 10,
                impression_count: t.like_count * 37 + 11,
            },
            entities: JsonEntities {
                hashtags: tags,
                mentions,
            },
        })
        .unwrap()
    }

    #[test]
    fn json_is_what_serde_wrote_and_next_into_matches_next_tweet() {
        let clock = clock();
        let mut a = SyntheticGenerator::new(5, clock.clone());
        let mut b = a.clone();
        let mut scratch = Scratch::default();
        let mut buf = String::new();
        for i in 0..20_000u64 {
            let t = a.next_tweet();
            assert_eq!(t.json, reference_json(&t), "tweet {i}");
            buf.clear();
            assert_eq!(b.next_into(&mut scratch, &mut buf), (t.index, t.id));
            assert_eq!(buf, t.json);
            // Sometimes the clock moves between tweets, sometimes not.
            clock.advance(Duration::from_millis(i % 3 / 2));
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
