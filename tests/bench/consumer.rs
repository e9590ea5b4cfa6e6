//! Consumer throughput benchmark (not a test): pre-loads N ~1 KB synthetic
//! v2 tweets into a fresh 3-partition topic, then measures, in the same run,
//! `kcat` reading the whole topic (three times; the median counts) and one
//! `twitterstream-consumer` replica running its full pipeline (parse,
//! sentiment, windows, partials topic, merge, transactional output) over it.
//! Prints both rates, their ratio, and the window-close-to-emit latency
//! p50/p99 from the consumer's histogram.
//!
//! Run it through `tests/bench/consumer.sh`, which starts the environment and
//! builds release binaries.

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use twitterstream_tests::{kafka, kafka_brokers, unique_name};

const T0_MS: i64 = 1_704_067_200_000;
const PER_WINDOW: usize = 10_000;
const PARTITIONS: i32 = 3;
const KCAT_RUNS: usize = 3;
const LANGS: &[&str] = &["en", "ja", "de", "es"];

const WORDS: &[&str] = &[
    "great", "release", "today", "the", "new", "cluster", "is", "not", "bad", "love", "slow",
    "build", "happy", "terrible", "latency", "stream", "kafka", "rust", "operator", "window",
];

/// Longest `text` the X API v2 returns: longer posts come truncated to it
/// (their full text is only in `note_tweet`, which the producer does not
/// request). Sentiment is scored per word, so the text's length sets much of
/// the consumer's cost per tweet.
const MAX_TEXT_CHARS: usize = 280;

/// A v2 tweet of about 1 KB, shaped like what the producer publishes from
/// search (`tweet.fields=created_at,lang,author_id,public_metrics,entities`):
/// up to 280 characters of text, and entities with hashtags, a mention and a
/// link with its preview.
fn tweet(i: usize) -> (i32, Vec<u8>) {
    let at = T0_MS + (i / PER_WINDOW) as i64 * 10_000 + (i % PER_WINDOW) as i64;
    let mut text = String::with_capacity(MAX_TEXT_CHARS);
    let mut k = i;
    loop {
        let word = WORDS[k % WORDS.len()];
        if text.len() + word.len() + 1 > MAX_TEXT_CHARS - 24 {
            break;
        }
        text.push_str(word);
        text.push(' ');
        k = k.wrapping_mul(31).wrapping_add(7);
    }
    text.push_str("https://t.co/Ab3dE5gH7j");
    let id = format!("{}", 1_790_000_000_000_000_000u64 + i as u64);
    let v = serde_json::json!({
        "id": id,
        "text": text,
        "created_at": chrono::DateTime::from_timestamp_millis(at).map(|t| t.to_rfc3339()),
        "author_id": format!("{}", 100_000 + i % 1000),
        "lang": LANGS[i % LANGS.len()],
        "edit_history_tweet_ids": [id],
        "public_metrics": {"retweet_count": i % 7, "reply_count": 1, "like_count": i % 13, "quote_count": 0, "bookmark_count": i % 3, "impression_count": 40 + i % 900},
        "entities": {
            "hashtags": [{"start": 0, "end": 5, "tag": format!("tag{}", i % 50)}, {"start": 6, "end": 11, "tag": "Rust"}],
            "mentions": [{"start": 12, "end": 18, "username": format!("user{}", i % 30), "id": "7"}],
            "urls": [{
                "start": text.len() - 23, "end": text.len(), "url": "https://t.co/Ab3dE5gH7j",
                "expanded_url": format!("https://example.com/blog/release-{}", i % 97),
                "display_url": "example.com/blog/rele\u{2026}",
                "status": 200,
                "title": "Release notes: faster streaming",
                "description": "What changed in this release, and how to upgrade.",
                "unwound_url": format!("https://example.com/blog/release-{}", i % 97)
            }]
        }
    });
    (
        (i % PARTITIONS as usize) as i32,
        serde_json::to_vec(&v).unwrap_or_default(),
    )
}

async fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The bucket bound at quantile `q` of a cumulative histogram.
fn quantile(text: &str, name: &str, q: f64) -> Option<f64> {
    let prefix = format!("{name}_bucket{{le=\"");
    let buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (le, rest) = rest.split_once("\"}")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, rest.trim().parse().ok()?))
        })
        .collect();
    let total = buckets.last()?.1;
    buckets
        .iter()
        .find(|(_, c)| *c >= q * total)
        .map(|(le, _)| *le)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut n: usize = 1_000_000;
    let mut consumer_bin = String::from("target/release/twitterstream-consumer");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--tweets" => n = args.next().and_then(|v| v.parse().ok()).unwrap_or(n),
            "--consumer" => consumer_bin = args.next().unwrap_or(consumer_bin),
            other => anyhow::bail!("unknown argument {other}; use --tweets N --consumer PATH"),
        }
    }
    let brokers = kafka_brokers();
    let topic = unique_name("bench-tweets");
    let output = unique_name("bench-windows");
    kafka::create_topic(&topic, PARTITIONS, 1).await;
    kafka::create_topic(&output, 1, 1).await;

    eprintln!("pre-loading {n} tweets into {topic}");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .create()?;
    let started = Instant::now();
    let mut bytes = 0usize;
    let mut i = 0;
    while i < n {
        let end = (i + 20_000).min(n);
        let records: Vec<(i32, Vec<u8>)> = (i..end).map(tweet).collect();
        bytes += records.iter().map(|r| r.1.len()).sum::<usize>();
        let sends = records.iter().map(|(p, v)| {
            producer.send(
                FutureRecord::<(), _>::to(&topic).partition(*p).payload(v),
                Duration::from_secs(120),
            )
        });
        for r in futures::future::join_all(sends).await {
            r.map_err(|(e, _)| e)?;
        }
        i = end;
    }
    // One far-later tweet per partition closes the last real window.
    for p in 0..PARTITIONS {
        let (_, mut v) = tweet(n + 20 * PER_WINDOW);
        v.shrink_to_fit();
        producer
            .send(
                FutureRecord::<(), _>::to(&topic).partition(p).payload(&v),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)?;
    }
    let windows = n.div_ceil(PER_WINDOW) as f64;
    eprintln!(
        "loaded {n} tweets, {:.0} bytes each on average, in {:.1?}",
        bytes as f64 / n as f64,
        started.elapsed()
    );

    // kcat's rate on this machine varies by half from one run to the next:
    // its median of three is the reference.
    let mut kcat_runs = Vec::with_capacity(KCAT_RUNS);
    for _ in 0..KCAT_RUNS {
        let t = Instant::now();
        let status = Command::new("kcat")
            .args([
                "-C",
                "-b",
                &brokers,
                "-t",
                &topic,
                "-e",
                "-o",
                "beginning",
                "-q",
            ])
            .stdout(Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "kcat failed");
        kcat_runs.push(t.elapsed().as_secs_f64());
    }
    kcat_runs.sort_by(f64::total_cmp);
    let kcat_s = kcat_runs[KCAT_RUNS / 2];

    let http = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .to_string();
    let spawned = Instant::now();
    let mut child = Command::new(&consumer_bin)
        .args([
            "--brokers",
            &brokers,
            "--topic",
            &topic,
            "--stream-name",
            "bench",
            "--group-id",
            &unique_name("bench"),
            "--window-seconds",
            "10",
            "--output-topic",
            &output,
            "--http-addr",
            &http,
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    let mut first: Option<Instant> = None;
    let mut last_text = String::new();
    let deadline = Instant::now() + Duration::from_secs(3600);
    let done = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if Instant::now() > deadline {
            break None;
        }
        let Some(text) = http_get(&http, "/metrics").await else {
            continue;
        };
        let consumed = metric(&text, "twitterstream_consumer_records_consumed_total");
        if consumed > 0.0 && first.is_none() {
            first = Some(Instant::now());
        }
        let emitted = metric(&text, "twitterstream_consumer_windows_emitted_total");
        last_text = text;
        if emitted >= windows {
            break Some(Instant::now());
        }
    };
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let done = done.ok_or_else(|| anyhow::anyhow!("the consumer did not finish"))?;
    let first = first.unwrap_or(spawned);
    let steady_s = done.duration_since(first).as_secs_f64();
    let total_s = done.duration_since(spawned).as_secs_f64();
    let kcat_rate = n as f64 / kcat_s;
    let rate = n as f64 / steady_s;
    let h = "twitterstream_consumer_emit_latency_seconds";
    println!("tweets                 {n}");
    println!(
        "kcat                   {kcat_s:.2} s  {kcat_rate:.0} tweets/s (median of {})",
        kcat_runs
            .iter()
            .map(|s| format!("{s:.2}"))
            .collect::<Vec<_>>()
            .join(" / ")
    );
    println!(
        "consumer pipeline      {steady_s:.2} s  {rate:.0} tweets/s (first record to last window; {total_s:.2} s from process start)"
    );
    println!(
        "ratio consumer/kcat    {:.2}x (target >= 0.8x)",
        rate / kcat_rate
    );
    println!(
        "close-to-emit latency  p50 <= {:?} s, p99 <= {:?} s over {} windows",
        quantile(&last_text, h, 0.5),
        quantile(&last_text, h, 0.99),
        metric(&last_text, &format!("{h}_count"))
    );
    Ok(())
}
