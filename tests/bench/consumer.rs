//! Consumer throughput benchmark (not a test): pre-loads N ~1 KB synthetic
//! v2 tweets into a fresh 3-partition topic, then measures, in the same run,
//! `kcat` reading the whole topic (three times; the median counts) and one
//! `twitterstream-consumer` replica running its full pipeline (parse,
//! sentiment, windows, partials topic, merge, transactional output) over it.
//! Prints both rates, their ratio, and the window-close-to-emit latency
//! p50/p99 from the consumer's histogram.
//!
//! With `--postgres`, a second replica (a group of its own) then runs the
//! same pipeline over the same topic writing every window to PostgreSQL as
//! well (the environment's server, over TLS, a fresh database), and both
//! runs' tweets/s and windows/s are printed side by side; `--per-window N`
//! sets the tweets per 10 s window (fewer: more windows per tweet, the sink's
//! share grows).
//!
//! Run it through `tests/bench/consumer.sh`, which starts the environment and
//! builds release binaries.

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use twitterstream_tests::postgres::Database;
use twitterstream_tests::{kafka, kafka_brokers, unique_name};

const T0_MS: i64 = 1_704_067_200_000;
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
fn tweet(i: usize, per_window: usize) -> (i32, Vec<u8>) {
    let at =
        T0_MS + (i / per_window) as i64 * 10_000 + ((i % per_window) * 10_000 / per_window) as i64;
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

/// One replica's run over the whole topic.
struct Run {
    /// First record consumed to the last window emitted.
    steady_s: f64,
    /// Process start to the last window emitted.
    total_s: f64,
    metrics: String,
}

/// Runs one consumer replica (a group of its own) over `topic` until it has
/// emitted `windows` windows, with `extra` flags.
async fn run_consumer(
    consumer_bin: &str,
    topic: &str,
    output: &str,
    windows: f64,
    extra: &[String],
) -> anyhow::Result<Run> {
    let http = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .to_string();
    let spawned = Instant::now();
    let mut child = Command::new(consumer_bin)
        .args([
            "--brokers",
            &kafka_brokers(),
            "--topic",
            topic,
            "--stream-name",
            "bench",
            "--group-id",
            &unique_name("bench"),
            "--window-seconds",
            "10",
            "--output-topic",
            output,
            "--http-addr",
            &http,
        ])
        .args(extra)
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
    Ok(Run {
        steady_s: done.duration_since(first).as_secs_f64(),
        total_s: done.duration_since(spawned).as_secs_f64(),
        metrics: last_text,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut n: usize = 1_000_000;
    let mut per_window: usize = 10_000;
    let mut postgres = false;
    let mut consumer_bin = String::from("target/release/twitterstream-consumer");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--tweets" => n = args.next().and_then(|v| v.parse().ok()).unwrap_or(n),
            "--per-window" => {
                per_window = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|p| *p > 0)
                    .unwrap_or(per_window)
            }
            "--postgres" => postgres = true,
            "--consumer" => consumer_bin = args.next().unwrap_or(consumer_bin),
            other => anyhow::bail!(
                "unknown argument {other}; use --tweets N --per-window N --postgres --consumer PATH"
            ),
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
        let records: Vec<(i32, Vec<u8>)> = (i..end).map(|i| tweet(i, per_window)).collect();
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
        let (_, mut v) = tweet(n + 20 * per_window, per_window);
        v.shrink_to_fit();
        producer
            .send(
                FutureRecord::<(), _>::to(&topic).partition(p).payload(&v),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)?;
    }
    let windows = n.div_ceil(per_window) as f64;
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

    let kafka_only = run_consumer(&consumer_bin, &topic, &output, windows, &[]).await?;
    let kcat_rate = n as f64 / kcat_s;
    let rate = n as f64 / kafka_only.steady_s;
    let h = "twitterstream_consumer_emit_latency_seconds";
    println!("tweets                 {n} ({per_window} per window, {windows} windows)");
    println!(
        "kcat                   {kcat_s:.2} s  {kcat_rate:.0} tweets/s (median of {})",
        kcat_runs
            .iter()
            .map(|s| format!("{s:.2}"))
            .collect::<Vec<_>>()
            .join(" / ")
    );
    println!(
        "consumer pipeline      {:.2} s  {rate:.0} tweets/s  {:.1} windows/s (first record to last window; {:.2} s from process start)",
        kafka_only.steady_s,
        windows / kafka_only.steady_s,
        kafka_only.total_s
    );
    println!(
        "ratio consumer/kcat    {:.2}x (target >= 0.8x)",
        rate / kcat_rate
    );
    println!(
        "close-to-emit latency  p50 <= {:?} s, p99 <= {:?} s over {} windows",
        quantile(&kafka_only.metrics, h, 0.5),
        quantile(&kafka_only.metrics, h, 0.99),
        metric(&kafka_only.metrics, &format!("{h}_count"))
    );
    if postgres {
        let db = Database::create("bench").await;
        let output_pg = unique_name("bench-windows-pg");
        kafka::create_topic(&output_pg, 1, 1).await;
        let flags = db.flags(&db.secret_dir, "twitterstream", "windows");
        let pg = run_consumer(&consumer_bin, &topic, &output_pg, windows, &flags).await?;
        let (rows, n_rows) = db.windows("twitterstream.windows", "", "bench").await;
        anyhow::ensure!(
            rows.len() as f64 == windows && n_rows == rows.len(),
            "PostgreSQL holds {n_rows} rows of {} windows, {windows} expected",
            rows.len()
        );
        let w = "twitterstream_consumer_postgres_write_seconds";
        println!(
            "with PostgreSQL sink   {:.2} s  {:.0} tweets/s  {:.1} windows/s ({n_rows} rows, one per window; {:.2}x the Kafka-only run)",
            pg.steady_s,
            n as f64 / pg.steady_s,
            windows / pg.steady_s,
            kafka_only.steady_s / pg.steady_s
        );
        println!(
            "PostgreSQL writes      {} (one per commit cycle), p50 <= {:?} s, p99 <= {:?} s",
            metric(&pg.metrics, &format!("{w}_count")),
            quantile(&pg.metrics, w, 0.5),
            quantile(&pg.metrics, w, 0.99)
        );
    }
    Ok(())
}
