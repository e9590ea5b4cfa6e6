//! The producer binary end to end: the real Kafka broker from
//! `tests/env/up`, the local X API v2 server (`support::xapi`), and the
//! built `twitterstream-producer` run as a child process, so a restart is a
//! real process kill.
//!
//! What is asserted is what a consumer sees with `read_committed`: the exact
//! set of tweets, once each, their JSON as X served it, and the headers.

// This crate is test code throughout; clippy's allow-unwrap-in-tests only
// covers #[test] functions, not the helpers they share.
#![allow(clippy::unwrap_used)]

use chrono::{TimeDelta, Utc};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use twitterstream_tests::kafka::create_topic;
use twitterstream_tests::process::free_port;
use twitterstream_tests::xapi::{Fault, SeenAuth, TweetSpec, UserKeys, XApiServer};
use twitterstream_tests::{eventually, kafka_brokers, unique_name};
use twitterstream_workers::producer::clock::ManualClock;
use twitterstream_workers::producer::synthetic::SyntheticGenerator;
use twitterstream_workers::producer::xapi::TWEET_FIELDS;

const CK: &str = "pp-consumer-key-Zq81";
const CS: &str = "pp-consumer-secret-Hh27xk";
const AT: &str = "4242-pp-access-token-Ly0p";
const ATS: &str = "pp-access-token-secret-Wv93q";
const BEARER: &str = "AAAApp-bearer-token-Tn55m";

/// The producer binary (built on first use); `TWS_PRODUCER_BIN` overrides.
fn producer_bin() -> PathBuf {
    match std::env::var("TWS_PRODUCER_BIN") {
        Ok(p) => PathBuf::from(p),
        Err(_) => {
            twitterstream_tests::process::binary("twitterstream-workers", "twitterstream-producer")
        }
    }
}

/// A running producer process; killed when dropped.
struct Producer {
    child: Child,
    log: PathBuf,
    port: u16,
}

impl Producer {
    fn start(args: &[&str], env: &[(&str, &str)], log_dir: &Path, tag: &str) -> Self {
        let port = free_port();
        let log = log_dir.join(format!("{tag}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(producer_bin());
        cmd.args(args)
            .args(["--brokers", &kafka_brokers()])
            .args(["--http-addr", &format!("127.0.0.1:{port}")])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        for k in ["X_CONSUMER_KEY", "X_CONSUMER_SECRET", "X_ACCESS_TOKEN"] {
            cmd.env_remove(k);
        }
        cmd.env_remove("X_ACCESS_TOKEN_SECRET")
            .env_remove("X_BEARER_TOKEN")
            // These tests wait for finite sources to exit; in a pod the
            // producer idles instead (see the test of that below).
            .env("TWS_EXIT_WHEN_DONE", "true");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        Self { child, log, port }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// Waits for the process to exit; returns its exit code.
    async fn wait_exit(&mut self, timeout: Duration) -> i32 {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code().unwrap_or(-1);
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "producer did not exit within {timeout:?}; log:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn http(&self, path: &str) -> Option<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .ok()?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Some((status, body))
    }

    /// The value of an unlabelled metric (or the sum over its labels).
    async fn metric(&self, name: &str) -> f64 {
        let (_, body) = self.http("/metrics").await.unwrap_or_default();
        body.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Debug, Clone)]
struct Record {
    key: String,
    value: String,
    headers: HashMap<String, String>,
}

/// Everything committed in the topic, in partition order.
fn read_topic_blocking(topic: &str) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", unique_name("pp-reader"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.max.bytes", "52428800")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let parts: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let mut tpl = TopicPartitionList::new();
    for p in &parts {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut eof: HashSet<i32> = HashSet::new();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while eof.len() < parts.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "reading {topic} timed out"
        );
        match consumer.poll(Duration::from_millis(500)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                eof.insert(p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            Some(Ok(m)) => {
                eof.remove(&m.partition());
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Record {
                    key: String::from_utf8(m.key().unwrap_or_default().to_vec()).unwrap(),
                    value: String::from_utf8(m.payload().unwrap_or_default().to_vec()).unwrap(),
                    headers,
                });
            }
        }
    }
    out
}

async fn read_topic(topic: &str) -> Vec<Record> {
    let t = topic.to_owned();
    tokio::task::spawn_blocking(move || read_topic_blocking(&t))
        .await
        .unwrap()
}

/// Waits until the topic holds `n` committed records (and not more).
async fn wait_for_count(topic: &str, n: usize, producer: &Producer) -> Vec<Record> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let recs = read_topic(topic).await;
        assert!(
            recs.len() <= n,
            "{} records in {topic}, expected {n}; log:\n{}",
            recs.len(),
            producer.log_text()
        );
        if recs.len() == n {
            return recs;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "{} of {n} records in {topic} after 120 s; log:\n{}",
                recs.len(),
                producer.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn log_dir() -> PathBuf {
    let d = std::env::temp_dir().join(unique_name("pp-logs"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_credentials(dir: &Path, consumer_secret: &str) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, value) in [
        ("consumerKey", CK),
        ("consumerSecret", consumer_secret),
        ("accessToken", AT),
        ("accessTokenSecret", ATS),
    ] {
        // Replace by rename, as a Secret update does: a new inode.
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, format!("{value}\n")).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

/// What a search test starts from: the X server, a topic of `partitions`,
/// the log directory and, in it, a credentials directory `creds`.
async fn search_setup(
    tag: &str,
    partitions: i32,
    creds: &str,
) -> (XApiServer, String, PathBuf, PathBuf) {
    let s = server().await;
    let topic = unique_name(tag);
    create_topic(&topic, partitions, 1).await;
    let logs = log_dir();
    let creds = logs.join(creds);
    write_credentials(&creds, CS);
    (s, topic, logs, creds)
}

async fn server() -> XApiServer {
    let s = XApiServer::start().await;
    s.set_user(Some(UserKeys::new(CK, CS, AT, ATS)));
    s.set_bearer(Some(BEARER));
    s
}

/// `n` tweets matching "superbowl", one every 7 s, the newest `ago` old,
/// plus noise the query excludes.
fn tweets(n: usize, ago: TimeDelta, salt: u16) -> Vec<TweetSpec> {
    let end = Utc::now() - ago;
    let mut v: Vec<TweetSpec> = (0..n)
        .map(|i| {
            TweetSpec::new(
                end - TimeDelta::seconds(7 * i as i64),
                salt.wrapping_add(i as u16) % 4000,
                format!("superbowl take {salt}-{i} #SB{}", i % 5),
            )
            .likes(i as u64 % 20)
        })
        .collect();
    v.push(TweetSpec::new(end, 4001, "unrelated chatter"));
    v.push(TweetSpec::new(end, 4002, "superbowl retweet").retweet());
    v
}

fn search_args<'a>(
    topic: &'a str,
    stream: &'a str,
    server: &'a str,
    creds: &'a str,
) -> Vec<&'a str> {
    vec![
        "--source",
        "x-search",
        "--keyword",
        "superbowl",
        "--topic",
        topic,
        "--stream-name",
        stream,
        "--x-api-base-url",
        server,
        "--credentials-dir",
        creds,
        "--poll-interval-seconds",
        "1",
        // These corpora reach 90 minutes back; the default lookback (10
        // minutes) is tested in xapi_search.rs.
        "--lookback-seconds",
        "86400",
    ]
}

/// Asserts the topic holds exactly `expected` (once each) with the JSON the
/// server served and the producer's headers.
fn assert_exact(records: &[Record], expected: &BTreeSet<String>, s: &XApiServer, stream: &str) {
    let keys: Vec<&String> = records.iter().map(|r| &r.key).collect();
    let unique: BTreeSet<String> = keys.iter().map(|k| (*k).clone()).collect();
    assert_eq!(unique.len(), keys.len(), "duplicates in the topic");
    assert_eq!(
        &unique, expected,
        "the topic holds a different set of tweets"
    );
    let fields: Vec<&str> = TWEET_FIELDS.split(',').collect();
    for r in records {
        let got: Value = serde_json::from_str(&r.value).unwrap();
        assert_eq!(
            Some(got),
            s.served_json(&r.key, &fields),
            "record {} differs from what X served",
            r.key
        );
        assert_eq!(r.headers["stream"], stream);
        assert_eq!(r.headers["keyword"], "superbowl");
        assert_eq!(r.headers["source"], "x-search");
        chrono::DateTime::parse_from_rfc3339(&r.headers["ingested_at"]).unwrap();
    }
}

fn ids(v: &[String]) -> BTreeSet<String> {
    v.iter().cloned().collect()
}

/// Matching tweets of an `add` (the last two are noise).
fn matching(added: Vec<String>) -> Vec<String> {
    let n = added.len() - 2;
    added.into_iter().take(n).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_exactly_once_over_polls_and_a_killed_producer() {
    let (s, topic, logs, creds) = search_setup("pp-search", 3, "creds").await;
    let stream = "superbowl-live";
    let mut expected = ids(&matching(s.add(tweets(230, TimeDelta::minutes(30), 0))));
    let base = s.base_url();
    let args = search_args(&topic, stream, &base, creds.to_str().unwrap());

    let mut p = Producer::start(&args, &[], &logs, "first");
    let recs = wait_for_count(&topic, expected.len(), &p).await;
    assert_exact(&recs, &expected, &s, stream);

    // Later polls pick up only what is new.
    expected.extend(matching(s.add(tweets(40, TimeDelta::minutes(5), 500))));
    let recs = wait_for_count(&topic, expected.len(), &p).await;
    assert_exact(&recs, &expected, &s, stream);
    assert_eq!(p.http("/healthz").await.map(|r| r.0), Some(200));
    assert_eq!(p.http("/readyz").await.map(|r| r.0), Some(200));
    assert!(
        p.metric("twitterstream_producer_tweets_published_total")
            .await
            >= expected.len() as f64
    );

    // A hard kill, new tweets meanwhile, a new process: it resumes after the
    // newest tweet in the topic.
    p.kill();
    let newest = expected
        .iter()
        .max_by_key(|i| i.parse::<u64>().unwrap())
        .unwrap()
        .clone();
    let before = s.requests().len();
    expected.extend(matching(s.add(tweets(25, TimeDelta::minutes(2), 900))));
    let p2 = Producer::start(&args, &[], &logs, "second");
    let recs = wait_for_count(&topic, expected.len(), &p2).await;
    assert_exact(&recs, &expected, &s, stream);
    let first_after = s.requests()[before..]
        .iter()
        .find(|r| r.status == 200)
        .cloned()
        .unwrap();
    assert_eq!(first_after.param("since_id"), Some(newest.as_str()));

    // A few more polls happen without publishing anything again.
    let n = s.requests().len();
    eventually("two more polls", Duration::from_secs(30), || {
        std::future::ready((s.requests().len() >= n + 2).then_some(()))
    })
    .await;
    let recs = read_topic(&topic).await;
    assert_exact(&recs, &expected, &s, stream);
}

/// Item 7 of #12: a poll larger than the buffer is committed a part at a
/// time, so no transaction stays open through a rate-limit wait (one open
/// for longer than the transaction timeout is aborted by the broker, and the
/// poll was fetched again forever, freezing `read_committed` readers
/// meanwhile). A restart during the wait fetches only the rest of the poll
/// (`until_id`), and the topic ends up with every tweet once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_larger_than_the_buffer_commits_in_parts_and_resumes_its_rest() {
    let (s, topic, logs, creds) = search_setup("pp-parts", 2, "creds-parts").await;
    let stream = "backfill";
    let expected = ids(&matching(s.add(tweets(320, TimeDelta::minutes(20), 0))));
    let base = s.base_url();
    let args = search_args(&topic, stream, &base, creds.to_str().unwrap());
    // Two pages (100 tweets each, ~40 KB), then a 429 whose reset is 60 s
    // away; each page is more than the 20 KB buffer.
    s.push_faults([
        Fault::Delay(Duration::ZERO),
        Fault::Delay(Duration::ZERO),
        Fault::RateLimited {
            reset_in: Duration::from_secs(60),
        },
    ]);
    let env = [("TWS_POLL_BUFFER_BYTES", "20000")];
    let mut p = Producer::start(&args, &env, &logs, "parts1");
    let seen = eventually(
        "the first pages committed during the wait",
        Duration::from_secs(40),
        || async {
            let recs = read_topic(&topic).await;
            (recs.len() >= 200 && s.pending_faults() == 0).then_some(recs)
        },
    )
    .await;
    let part: BTreeSet<String> = seen.iter().map(|r| r.key.clone()).collect();
    assert_eq!(part.len(), seen.len(), "duplicates in the committed parts");
    assert!(part.is_subset(&expected));
    let oldest = part
        .iter()
        .min_by_key(|i| i.parse::<u64>().unwrap())
        .unwrap()
        .clone();

    // Killed in the wait: the next process asks only for what is older than
    // the committed parts, then carries on after the newest tweet.
    p.kill();
    let before = s.requests().len();
    let p2 = Producer::start(&args, &env, &logs, "parts2");
    let recs = wait_for_count(&topic, expected.len(), &p2).await;
    assert_exact(&recs, &expected, &s, stream);
    let first = s.requests()[before..]
        .iter()
        .find(|r| r.status == 200)
        .cloned()
        .unwrap();
    assert_eq!(first.param("until_id"), Some(oldest.as_str()), "{first:?}");
    let newest = expected
        .iter()
        .max_by_key(|i| i.parse::<u64>().unwrap())
        .unwrap()
        .clone();
    let n = s.requests().len();
    eventually("a poll after the rest", Duration::from_secs(30), || {
        std::future::ready(
            s.requests()[n..]
                .iter()
                .any(|r| {
                    r.param("since_id") == Some(newest.as_str()) && r.param("until_id").is_none()
                })
                .then_some(()),
        )
    })
    .await;
    assert_exact(&read_topic(&topic).await, &expected, &s, stream);
}

/// The value of a metric the producer must export (an older binary does not).
async fn required_metric(p: &Producer, name: &str) -> f64 {
    let (_, body) = p.http("/metrics").await.unwrap_or_default();
    assert!(
        body.lines().any(|l| l.starts_with(name)),
        "no {name} in:\n{body}"
    );
    p.metric(name).await
}

/// Item 9 of #12: a restart reads the stream's checkpoint instead of the
/// topic, so it does not matter how much other streams wrote since (the
/// read-back took time in proportion, and past its limit the producer
/// restarted forever). A stream new to a busy shared topic looks back a
/// bounded number of records, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_reads_its_checkpoint_however_much_others_wrote() {
    let topic = unique_name("pp-ckpt");
    create_topic(&topic, 2, 1).await;
    let logs = log_dir();
    let synthetic = |stream: &'static str, seed: &'static str, count: &'static str| {
        vec![
            "--source".to_owned(),
            "synthetic".into(),
            "--topic".into(),
            topic.clone(),
            "--stream-name".into(),
            stream.into(),
            "--seed".into(),
            seed.into(),
            "--synthetic-rate".into(),
            "0".into(),
            "--synthetic-count".into(),
            count.into(),
        ]
    };
    let of = |recs: &[Record], stream: &str| -> Vec<Record> {
        recs.iter()
            .filter(|r| r.headers["stream"] == stream)
            .cloned()
            .collect()
    };
    // Runs a stream's producer until its `count` tweets are in the topic
    // and returns how many records it read back to find where to resume.
    let resume = |stream: &'static str, seed: &'static str, count: &'static str, tag| {
        let args = synthetic(stream, seed, count);
        let logs = &logs;
        let topic = &topic;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let idle = [("TWS_EXIT_WHEN_DONE", "false")];
            let p = Producer::start(&args, &idle, logs, tag);
            let n: usize = count.parse().unwrap();
            eventually(
                &format!("{stream}'s {count}"),
                Duration::from_secs(120),
                || async { (of(&read_topic(topic).await, stream).len() >= n).then_some(()) },
            )
            .await;
            required_metric(&p, "twitterstream_producer_resume_records_scanned_total").await
        }
    };
    assert_eq!(
        resume("mine", "5", "1000", "ckpt-mine1").await,
        0.0,
        "a new topic"
    );
    // Another stream buries it under 400,000 records.
    resume("other", "6", "400000", "ckpt-other").await;
    // The restart continues at 1000 without reading the topic back.
    assert_eq!(resume("mine", "5", "3000", "ckpt-mine2").await, 0.0);

    // A new stream on the busy topic looks back a bounded span, then has a
    // checkpoint: its own restart reads nothing back.
    let scanned = resume("newcomer", "8", "10", "ckpt-new1").await;
    let bound = 2.0 * twitterstream_workers::producer::resume::MAX_SPAN as f64;
    assert!(
        scanned > 0.0 && scanned <= bound,
        "scanned {scanned}, bound {bound}"
    );
    assert_eq!(resume("newcomer", "8", "20", "ckpt-new2").await, 0.0);
    let recs = read_topic(&topic).await;
    assert_synthetic(&of(&recs, "newcomer"), 8, 20, "newcomer");
    assert_synthetic(&of(&recs, "mine"), 5, 3000, "mine");
    assert_eq!(of(&recs, "other").len(), 400_000);
}

/// Item 12 of #12: an --end-time in the past: one poll covers it, then the
/// producer stops asking (it polled the same finished span forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_past_its_end_time_stops_polling() {
    let (s, topic, logs, creds) = search_setup("pp-ended", 1, "creds-ended").await;
    let expected = ids(&matching(s.add(tweets(30, TimeDelta::minutes(90), 0))));
    let base = s.base_url();
    let start = (Utc::now() - TimeDelta::hours(3)).to_rfc3339();
    let end = (Utc::now() - TimeDelta::minutes(1)).to_rfc3339();
    let mut args = search_args(&topic, "ended", &base, creds.to_str().unwrap());
    args.extend(["--start-time", &start, "--end-time", &end]);
    let mut p = Producer::start(&args, &[], &logs, "ended");
    assert_eq!(
        p.wait_exit(Duration::from_secs(60)).await,
        0,
        "{}",
        p.log_text()
    );
    assert!(
        p.log_text().contains("nothing more to fetch"),
        "{}",
        p.log_text()
    );
    let recs = read_topic(&topic).await;
    assert_exact(&recs, &expected, &s, "ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_rides_out_every_server_fault() {
    let (s, topic, logs, creds) = search_setup("pp-faults", 2, "creds").await;
    let stream = "faults";
    let mut expected = ids(&matching(s.add(tweets(120, TimeDelta::minutes(40), 0))));
    let base = s.base_url();
    let args = search_args(&topic, stream, &base, creds.to_str().unwrap());
    let p = Producer::start(&args, &[], &logs, "faults");
    wait_for_count(&topic, expected.len(), &p).await;

    let faults = [
        Fault::RateLimited {
            reset_in: Duration::from_secs(2),
        },
        Fault::Status(503),
        Fault::Delay(Duration::from_secs(2)),
        Fault::MalformedTweets,
        Fault::PartialErrors,
        Fault::Truncated,
        Fault::SinceIdTooOld,
        Fault::QuotaExhausted {
            reset_in: Duration::from_secs(2),
        },
    ];
    for (round, fault) in faults.into_iter().enumerate() {
        let salt = 1000 + 300 * round as u16;
        expected.extend(matching(s.add(tweets(
            15,
            TimeDelta::minutes(30 - 3 * round as i64),
            salt,
        ))));
        s.push_faults([fault.clone()]);
        let recs = wait_for_count(&topic, expected.len(), &p).await;
        assert_exact(&recs, &expected, &s, stream);
        assert_eq!(s.pending_faults(), 0, "{fault:?} was not consumed");
    }
    let statuses: BTreeMap<u16, usize> = s.requests().iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.status).or_default() += 1;
        m
    });
    assert!(
        statuses.contains_key(&429) && statuses.contains_key(&503) && statuses.contains_key(&400),
        "{statuses:?}"
    );
    assert!(
        p.metric("twitterstream_producer_tweets_malformed_total")
            .await
            >= 2.0
    );
    assert!(
        p.metric("twitterstream_producer_rate_limited_seconds_total")
            .await
            >= 2.0
    );
    let body = p.http("/metrics").await.unwrap().1;
    assert!(
        body.contains("api_requests_total{status=\"429\"}"),
        "{body}"
    );
    assert!(
        body.contains("api_requests_total{status=\"503\"}"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signature_recovers_on_rotation_and_secrets_never_logged() {
    let s = server().await;
    let topic = unique_name("pp-auth");
    create_topic(&topic, 1, 1).await;
    let logs = log_dir();
    let creds = logs.join("creds");
    let wrong = "pp-wrong-consumer-secret-Qx11";
    write_credentials(&creds, wrong);
    let stream = "auth";
    let expected = ids(&matching(s.add(tweets(30, TimeDelta::minutes(10), 0))));
    let base = s.base_url();
    let mut args = search_args(&topic, stream, &base, creds.to_str().unwrap());
    args.extend(["--log-format", "json"]);
    // The bearer token sits in the environment as well (unused for recent
    // search with user context present), to check it never leaks either.
    let mut p = Producer::start(
        &args,
        &[("X_BEARER_TOKEN", BEARER), ("RUST_LOG", "debug")],
        &logs,
        "auth",
    );
    eventually(
        "a 401 for the bad signature",
        Duration::from_secs(60),
        || {
            std::future::ready(
                s.requests()
                    .iter()
                    .any(|r| {
                        r.status == 401 && r.auth == SeenAuth::Rejected("signature mismatch".into())
                    })
                    .then_some(()),
            )
        },
    )
    .await;
    assert!(read_topic(&topic).await.is_empty());
    write_credentials(&creds, CS);
    let recs = wait_for_count(&topic, expected.len(), &p).await;
    assert_exact(&recs, &expected, &s, stream);
    assert!(
        p.metric("twitterstream_producer_api_requests_total{status=\"401\"}")
            .await
            >= 1.0
    );
    p.signal("-TERM");
    assert_eq!(p.wait_exit(Duration::from_secs(30)).await, 0);
    let log = p.log_text();
    assert!(
        log.contains("\"level\":\"INFO\""),
        "JSON logs expected:\n{log}"
    );
    for secret in [CK, CS, AT, ATS, BEARER, wrong] {
        assert!(
            !log.contains(secret),
            "{secret} leaked into the log:\n{log}"
        );
    }
}

fn synthetic_texts(seed: u64, n: usize) -> Vec<String> {
    let mut g = SyntheticGenerator::new(seed, ManualClock::new(Utc::now()));
    (0..n).map(|_| g.next_tweet().text).collect()
}

/// Checks a synthetic topic: positions 0..n once each, each the
/// generator's tweet for that position.
fn assert_synthetic(records: &[Record], seed: u64, n: usize, stream: &str) {
    let texts = synthetic_texts(seed, n);
    let mut seen = vec![false; n];
    let mut keys = HashSet::new();
    for r in records {
        let seq: usize = r.headers["seq"].parse().unwrap();
        assert!(seq < n, "seq {seq} beyond {n}");
        assert!(!seen[seq], "seq {seq} published twice");
        seen[seq] = true;
        assert!(keys.insert(r.key.clone()), "key {} twice", r.key);
        assert_eq!(r.headers["stream"], stream);
        assert_eq!(r.headers["source"], "synthetic");
        let v: Value = serde_json::from_str(&r.value).unwrap();
        assert_eq!(v["id"], r.key);
        assert_eq!(v["text"], texts[seq], "seq {seq}");
    }
    assert!(seen.iter().all(|s| *s), "gaps in the sequence");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthetic_resumes_after_a_kill_and_stops_on_sigterm() {
    let topic = unique_name("pp-syn");
    create_topic(&topic, 3, 1).await;
    let logs = log_dir();
    let stream = "syn";
    let n = 60_000usize;
    let count = n.to_string();
    let args = [
        "--source",
        "synthetic",
        "--topic",
        &topic,
        "--stream-name",
        stream,
        "--seed",
        "42",
        "--synthetic-rate",
        "20000",
        "--synthetic-count",
        &count,
    ];
    let mut p = Producer::start(&args, &[], &logs, "syn1");
    eventually(
        "some committed batches",
        Duration::from_secs(120),
        || async {
            let n = read_topic(&topic).await.len();
            (n >= 5_000).then_some(())
        },
    )
    .await;
    p.kill();
    let partial = read_topic(&topic).await.len();
    assert!(partial < n, "the kill came too late to test a resume");

    // The second process runs to the end and exits 0.
    let mut p2 = Producer::start(&args, &[], &logs, "syn2");
    assert_eq!(
        p2.wait_exit(Duration::from_secs(180)).await,
        0,
        "{}",
        p2.log_text()
    );
    let recs = read_topic(&topic).await;
    assert_eq!(recs.len(), n);
    assert_synthetic(&recs, 42, n, stream);

    // SIGTERM mid-run: a clean exit, and what was committed is a gapless prefix.
    let topic2 = unique_name("pp-syn-term");
    create_topic(&topic2, 2, 1).await;
    let args2 = [
        "--source",
        "synthetic",
        "--topic",
        &topic2,
        "--stream-name",
        stream,
        "--seed",
        "42",
        "--synthetic-rate",
        "5000",
    ];
    let mut p3 = Producer::start(&args2, &[], &logs, "syn3");
    eventually("records flowing", Duration::from_secs(60), || async {
        (!read_topic(&topic2).await.is_empty()).then_some(())
    })
    .await;
    p3.signal("-TERM");
    assert_eq!(
        p3.wait_exit(Duration::from_secs(30)).await,
        0,
        "{}",
        p3.log_text()
    );
    let recs = read_topic(&topic2).await;
    assert_synthetic(&recs, 42, recs.len(), stream);
}

/// Two namespaces, each with a stream named `demo` on its own topic, sharing
/// one Kafka cluster: both producers run side by side to their end. Before
/// the namespace was part of the transactional id, the second fenced the
/// first within seconds ("fenced by a newer instance?").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equally_named_streams_in_two_namespaces_do_not_fence_each_other() {
    let logs = log_dir();
    let n = 40_000usize;
    let count = n.to_string();
    let mut runs = Vec::new();
    for ns in ["team-a", "team-b"] {
        let topic = unique_name(&format!("pp-ns-{ns}"));
        create_topic(&topic, 2, 1).await;
        runs.push((ns, topic));
    }
    let mut producers = Vec::new();
    for (ns, topic) in &runs {
        let args = [
            "--source",
            "synthetic",
            "--topic",
            topic,
            "--stream-name",
            "demo",
            "--seed",
            "7",
            "--synthetic-rate",
            "8000",
            "--synthetic-count",
            &count,
        ];
        // Through the environment, as an older binary would ignore it.
        let p = Producer::start(&args, &[("TWS_NAMESPACE", ns)], &logs, &format!("ns-{ns}"));
        producers.push(p);
    }
    for p in &mut producers {
        assert_eq!(
            p.wait_exit(Duration::from_secs(180)).await,
            0,
            "{}",
            p.log_text()
        );
    }
    for (_, topic) in &runs {
        let recs = read_topic(topic).await;
        assert_eq!(recs.len(), n, "{topic}");
        assert_synthetic(&recs, 7, n, "demo");
    }
}

/// Item 12 of #12: a finite source that is done does not exit (a Deployment
/// would restart it into CrashLoopBackOff): the producer stays up, ready,
/// and exits 0 on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_source_idles_until_stopped() {
    let topic = unique_name("pp-idle");
    create_topic(&topic, 1, 1).await;
    let logs = log_dir();
    let args = [
        "--source",
        "synthetic",
        "--topic",
        &topic,
        "--stream-name",
        "idle",
        "--synthetic-rate",
        "0",
        "--synthetic-count",
        "500",
    ];
    let mut p = Producer::start(&args, &[("TWS_EXIT_WHEN_DONE", "false")], &logs, "idle");
    eventually("all 500 published", Duration::from_secs(60), || async {
        (read_topic(&topic).await.len() == 500).then_some(())
    })
    .await;
    eventually("the idle log line", Duration::from_secs(30), || {
        std::future::ready(
            p.log_text()
                .contains("the source is finished")
                .then_some(()),
        )
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        p.http("/readyz").await.map(|r| r.0),
        Some(200),
        "still up and ready: {}",
        p.log_text()
    );
    p.signal("-TERM");
    assert_eq!(
        p.wait_exit(Duration::from_secs(30)).await,
        0,
        "{}",
        p.log_text()
    );
    assert_eq!(read_topic(&topic).await.len(), 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthetic_publishes_a_million_tweets() {
    let topic = unique_name("pp-million");
    create_topic(&topic, 4, 1).await;
    let logs = log_dir();
    let n: u64 = 1_000_000;
    let count = n.to_string();
    let mut p = Producer::start(
        &[
            "--source",
            "synthetic",
            "--topic",
            &topic,
            "--stream-name",
            "million",
            "--synthetic-rate",
            "0",
            "--synthetic-count",
            &count,
        ],
        &[],
        &logs,
        "million",
    );
    assert_eq!(
        p.wait_exit(Duration::from_secs(600)).await,
        0,
        "{}",
        p.log_text()
    );
    let recs = read_topic(&topic).await;
    assert_eq!(recs.len() as u64, n);
    let seqs: HashSet<u64> = recs
        .iter()
        .map(|r| r.headers["seq"].parse().unwrap())
        .collect();
    assert_eq!(seqs.len() as u64, n, "duplicates");
    assert_eq!(seqs.iter().max(), Some(&(n - 1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_publishes_v2_and_v1_lines_once_and_skips_junk() {
    let topic = unique_name("pp-replay");
    create_topic(&topic, 2, 1).await;
    let logs = log_dir();
    let file = logs.join("replay.jsonl");
    let v2 = |i: u64| {
        format!(
            r#"{{"id":"{}","text":"replayed {i} #Replay","created_at":"2024-02-11T23:{:02}:00.000Z","lang":"en","edit_history_tweet_ids":["{}"],"future_field":[1,2]}}"#,
            1_757_000_000_000_000_000u64 + i,
            i % 60,
            1_757_000_000_000_000_000u64 + i
        )
    };
    let v1 = r#"{"id":1050118621198921728,"id_str":"1050118621198921728","text":"old style #emoji","created_at":"Wed Oct 10 20:19:24 +0000 2018","lang":"en","user":{"id_str":"6253282"},"favorite_count":4,"entities":{"hashtags":[{"text":"emoji","indices":[10,16]}]}}"#;
    let mut lines: Vec<String> = (0..40).map(v2).collect();
    lines.insert(5, "{not json".into());
    lines.insert(9, String::new());
    lines.insert(12, r#"{"text":"no id"}"#.into());
    lines.insert(20, v1.into());
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let args = [
        "--source",
        "replay",
        "--replay-file",
        file.to_str().unwrap(),
        "--topic",
        &topic,
        "--stream-name",
        "replay",
        "--replay-speed",
        "0",
    ];
    let mut p = Producer::start(&args, &[], &logs, "replay1");
    assert_eq!(
        p.wait_exit(Duration::from_secs(60)).await,
        0,
        "{}",
        p.log_text()
    );
    let recs = read_topic(&topic).await;
    assert_eq!(recs.len(), 41);
    let by_key: HashMap<&str, &Record> = recs.iter().map(|r| (r.key.as_str(), r)).collect();
    assert_eq!(by_key.len(), 41);
    for i in 0..40 {
        let line = v2(i);
        let id = (1_757_000_000_000_000_000u64 + i).to_string();
        assert_eq!(
            by_key[id.as_str()].value,
            line,
            "v2 lines are published verbatim"
        );
    }
    let old: Value = serde_json::from_str(&by_key["1050118621198921728"].value).unwrap();
    assert_eq!(old["created_at"], "2018-10-10T20:19:24.000Z");
    assert_eq!(old["public_metrics"]["like_count"], 4);
    assert!(p.log_text().contains("malformed replay line"));

    // Running it again resumes after the last line: nothing twice.
    let mut p2 = Producer::start(&args, &[], &logs, "replay2");
    assert_eq!(p2.wait_exit(Duration::from_secs(60)).await, 0);
    assert_eq!(read_topic(&topic).await.len(), 41);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_stream_syncs_its_rule_filters_and_reconnects() {
    use twitterstream_tests::xapi::StreamFault;
    let s = server().await;
    let foreign = s.add_stream_rule("halftime", Some("twitterstream:other"));
    s.add_stream_rule("an old query", Some("twitterstream:live"));
    let topic = unique_name("pp-stream");
    create_topic(&topic, 2, 1).await;
    let logs = log_dir();
    let base = s.base_url();
    let args = [
        "--source",
        "x-stream",
        "--keyword",
        "superbowl",
        "--topic",
        &topic,
        "--stream-name",
        "live",
        "--x-api-base-url",
        &base,
    ];
    let p = Producer::start(&args, &[("X_BEARER_TOKEN", BEARER)], &logs, "stream");
    let connected = |n: usize| {
        let s = &s;
        move || {
            std::future::ready(
                (s.stream_connections().0 == 1 && s.stream_connections().1 >= n).then_some(()),
            )
        }
    };
    eventually("a stream connection", Duration::from_secs(60), connected(1)).await;
    // Ours replaced (value changed), the other stream's rule untouched.
    let rules = s.stream_rules();
    assert_eq!(rules.len(), 2, "{rules:?}");
    assert!(rules.iter().any(|r| r.0 == foreign));
    assert!(rules.iter().any(|r| r.1 == "superbowl -is:retweet" && r.2.as_deref() == Some("twitterstream:live")));

    let now = Utc::now();
    let batch = |salt: u16, n: usize| -> Vec<TweetSpec> {
        (0..n)
            .map(|i| {
                TweetSpec::new(
                    now + TimeDelta::milliseconds(i as i64),
                    salt + i as u16,
                    format!("superbowl live {salt}-{i}"),
                )
            })
            .collect()
    };
    let mut expected = ids(&s.post_to_stream(batch(0, 20)));
    // Matches only the other stream's rule: filtered out.
    s.post_to_stream([TweetSpec::new(now, 3000, "halftime show")]);
    let recs = wait_for_count(&topic, expected.len(), &p).await;
    assert_eq!(
        recs.iter().map(|r| r.key.clone()).collect::<BTreeSet<_>>(),
        expected
    );

    // Dropped connection, then a 503 on reconnect (5 s backoff), then data.
    s.push_stream_fault(StreamFault::Status(503));
    s.push_stream_fault(StreamFault::Disconnect);
    eventually(
        "a reconnection after the 503",
        Duration::from_secs(60),
        connected(2),
    )
    .await;
    expected.extend(s.post_to_stream(batch(100, 10)));
    wait_for_count(&topic, expected.len(), &p).await;

    // A stalled connection (no keep-alive for 20 s) is reopened.
    s.push_stream_fault(StreamFault::Stall);
    eventually(
        "a reconnection after the stall",
        Duration::from_secs(60),
        connected(3),
    )
    .await;
    expected.extend(s.post_to_stream(batch(200, 10)));
    let recs = wait_for_count(&topic, expected.len(), &p).await;
    assert_eq!(
        recs.iter().map(|r| r.key.clone()).collect::<BTreeSet<_>>(),
        expected
    );
    for r in &recs {
        assert_eq!(r.headers["source"], "x-stream");
        let v: Value = serde_json::from_str(&r.value).unwrap();
        assert_eq!(v["id"], r.key);
        assert!(v.get("created_at").is_some(), "tweet.fields were requested");
    }
    assert!(
        s.requests()
            .iter()
            .any(|r| r.path.ends_with("/stream") && r.status == 503)
    );
    assert!(
        p.metric("twitterstream_producer_tweets_filtered_total")
            .await
            >= 1.0
    );
}

/// Incomplete credentials are a configuration error: the producer exits 2 and
/// writes the reason, naming the missing key and no secret, to the
/// termination log, which Kubernetes shows as the container's termination
/// message (and the operator as ProducerReady=False CrashLoopBackOff).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incomplete_credentials_exit_2_with_a_termination_message() {
    let (s, topic, logs, creds) = search_setup("pp-incomplete", 1, "creds").await;
    std::fs::remove_file(creds.join("accessTokenSecret")).unwrap();
    let termination = logs.join("termination-log");
    let base = s.base_url();
    let args = search_args(&topic, "incomplete", &base, creds.to_str().unwrap());
    let mut p = Producer::start(
        &args,
        &[("TWS_TERMINATION_LOG", termination.to_str().unwrap())],
        &logs,
        "incomplete",
    );
    let code = p.wait_exit(Duration::from_secs(60)).await;
    assert_eq!(
        code,
        2,
        "log:\n{}",
        std::fs::read_to_string(&p.log).unwrap_or_default()
    );
    let message = std::fs::read_to_string(&termination).expect("termination log written");
    assert!(message.starts_with("producer failed: "), "{message}");
    assert!(message.contains("accessTokenSecret"), "{message}");
    for secret in [CS, AT] {
        assert!(
            !message.contains(secret),
            "a secret in the termination message: {message}"
        );
    }
    assert!(
        s.requests().is_empty(),
        "no request without complete credentials"
    );
}
