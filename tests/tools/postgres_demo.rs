//! The README's PostgreSQL queries, run on a demo (not a test): a day of
//! synthetic tweets (the producer's generator, seed 42, one tweet every
//! 288 ms of event time, 300,000 in all) into a fresh topic, one
//! `twitterstream-consumer` replica writing its windows to a fresh database
//! of the environment's PostgreSQL, then each query of `QUERIES` through
//! `psql`, printed as the README shows it.
//!
//!   eval "$(tests/env/up)"
//!   cargo build --release -p twitterstream-workers --bin twitterstream-consumer
//!   cargo run --release -p twitterstream-tests --bin postgres-demo -- target/release/twitterstream-consumer

use chrono::{DateTime, Utc};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::process::{Command, Stdio};
use std::time::Duration;
use twitterstream_tests::postgres::Database;
use twitterstream_tests::{env_var, kafka, kafka_brokers, unique_name};
use twitterstream_workers::producer::clock::ManualClock;
use twitterstream_workers::producer::synthetic::{Scratch, SyntheticGenerator};

const TWEETS: usize = 300_000;
const STEP: Duration = Duration::from_millis(288);
const PARTITIONS: i32 = 3;
const NAMESPACE: &str = "demo";
const STREAM: &str = "superbowl";

/// The README's queries: (what it answers, SQL).
const QUERIES: [(&str, &str); 3] = [
    (
        "Top 3 hashtags per hour (first 3 hours)",
        "SELECT hour, tag, tweets FROM (
  SELECT date_trunc('hour', window_start) AS hour, h.tag, sum(h.count) AS tweets,
         rank() OVER (PARTITION BY date_trunc('hour', window_start) ORDER BY sum(h.count) DESC) AS r
  FROM twitterstream.windows w CROSS JOIN jsonb_to_recordset(w.hashtags) AS h(tag text, count bigint)
  WHERE namespace = 'demo' AND stream = 'superbowl' AND window_start < '2026-11-27 03:00Z'
  GROUP BY 1, 2) t
WHERE r <= 3 ORDER BY hour, tweets DESC;",
    ),
    (
        "Language share over the day",
        "SELECT l.lang, sum(l.n::bigint) AS tweets,
       round(100.0 * sum(l.n::bigint) / sum(sum(l.n::bigint)) OVER (), 1) AS percent
FROM twitterstream.windows w CROSS JOIN jsonb_each_text(w.languages) AS l(lang, n)
WHERE namespace = 'demo' AND stream = 'superbowl'
  AND window_start >= '2026-11-27' AND window_start < '2026-11-28'
GROUP BY 1 ORDER BY 2 DESC;",
    ),
    (
        "The latest minutes: tweets, likes, mean sentiment and windows",
        "SELECT date_trunc('minute', window_start) AS minute, sum(tweets) AS tweets, sum(likes) AS likes,
       round(avg(sentiment_mean)::numeric, 3) AS sentiment, count(*) AS windows
FROM twitterstream.windows
WHERE namespace = 'demo' AND stream = 'superbowl'
GROUP BY 1 ORDER BY 1 DESC LIMIT 5;",
    ),
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let consumer = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/release/twitterstream-consumer".to_owned());
    let start: DateTime<Utc> = "2026-11-27T00:00:00Z".parse()?;
    let topic = unique_name("demo-tweets");
    kafka::create_topic(&topic, PARTITIONS, 1).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("linger.ms", "20")
        .create()?;
    let clock = ManualClock::new(start);
    let mut generator = SyntheticGenerator::new(42, clock.clone());
    let mut scratch = Scratch::default();
    let mut tweet = |g: &mut SyntheticGenerator| {
        let mut json = String::new();
        g.next_into(&mut scratch, &mut json);
        json.into_bytes()
    };
    let mut batch = Vec::new();
    for i in 0..=TWEETS {
        if i == TWEETS {
            // A day later on every partition: closes the last windows.
            clock.advance(Duration::from_secs(3600));
        }
        batch.push(((i % PARTITIONS as usize) as i32, tweet(&mut generator)));
        clock.advance(STEP);
        if batch.len() == 10_000 || i == TWEETS {
            let sends = batch.iter().map(|(p, v)| {
                producer.send(
                    FutureRecord::<(), _>::to(&topic).partition(*p).payload(v),
                    Duration::from_secs(60),
                )
            });
            for r in futures::future::join_all(sends).await {
                r.map_err(|(e, _)| e)?;
            }
            batch.clear();
        }
    }
    for p in 1..PARTITIONS {
        let v = tweet(&mut generator);
        producer
            .send(
                FutureRecord::<(), _>::to(&topic).partition(p).payload(&v),
                Duration::from_secs(60),
            )
            .await
            .map_err(|(e, _)| e)?;
    }
    let db = Database::create("demo").await;
    let windows = (TWEETS as u32 * STEP).as_secs().div_ceil(10) as usize;
    eprintln!(
        "{TWEETS} tweets into {topic}; about {windows} windows into {}",
        db.name
    );
    let mut child = Command::new(&consumer)
        .args([
            "--brokers",
            &kafka_brokers(),
            "--topic",
            &topic,
            "--stream-name",
            STREAM,
            "--stream-namespace",
            NAMESPACE,
            "--group-id",
            &unique_name("demo"),
            "--print",
            "false",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .args(db.flags(&db.secret_dir, "twitterstream", "windows"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (rows, _) = db.windows("twitterstream.windows", NAMESPACE, STREAM).await;
        if rows.len() >= windows || tokio::time::Instant::now() > deadline {
            eprintln!("{} rows", rows.len());
            break;
        }
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let conninfo = format!(
        "host={} port={} dbname={} user={} sslmode=verify-full sslrootcert={}",
        env_var("POSTGRES_HOST"),
        env_var("POSTGRES_PORT"),
        db.name,
        db.user,
        env_var("POSTGRES_CA")
    );
    for (what, sql) in QUERIES {
        let out = Command::new("psql")
            .args([&conninfo, "-X", "-c", sql])
            .env("PGPASSWORD", &db.password)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        println!(
            "{what}:\n\n```sql\n{sql}\n```\n\n```\n{}```\n",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(())
}
