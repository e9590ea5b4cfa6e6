//! The consumer pipeline end to end on the real broker: replicas are real
//! `twitterstream-consumer` processes; the tests write the tweets, compute
//! what every window must hold on their own, and read the output topic with
//! isolation.level=read_committed.

use std::collections::BTreeMap;
use std::time::Duration;
use twitterstream_tests::consumer::{Replica, metric, read_output, wait_for_windows, wait_ready};
use twitterstream_tests::kafka::produce;
use twitterstream_tests::{kafka, kafka_brokers, unique_name};
use twitterstream_workers::consumer::aggregate::WindowResult;

/// 2024-01-01T00:00:00Z.
const T0_MS: i64 = 1_704_067_200_000;
const WINDOW_MS: i64 = 10_000;
const TWEETS: usize = 100_000;
/// Tweet `i` happens at `T0 + i * STEP_MS`: 300 s, 30 windows.
const STEP_MS: i64 = 3;
const SOURCE_PARTITIONS: i32 = 3;

/// What a window must hold, computed from the tweets without the library.
#[derive(Debug, Default, Clone, PartialEq)]
struct Expected {
    count: u64,
    hashtags: BTreeMap<String, u64>,
    languages: BTreeMap<String, u64>,
    late: u64,
}

struct Synthetic {
    /// (partition, value) in production order.
    records: Vec<(i32, Vec<u8>)>,
    expected: BTreeMap<String, Expected>,
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .expect("in range")
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

fn tweet_json(id: &str, at_ms: i64, lang: Option<&str>, tags: &[String], author: &str) -> Vec<u8> {
    let mut v = serde_json::json!({
        "id": id,
        "text": format!("tweet {id} is great news about #rust"),
        "created_at": rfc3339(at_ms),
        "author_id": author,
        "public_metrics": {"like_count": 1, "retweet_count": 0},
        "entities": {
            "hashtags": tags.iter().map(|t| serde_json::json!({"tag": t})).collect::<Vec<_>>(),
            "mentions": [{"username": "alice"}]
        }
    });
    if let Some(l) = lang {
        v["lang"] = serde_json::json!(l);
    }
    serde_json::to_vec(&v).expect("json")
}

/// `TWEETS` tweets over 30 windows in event-time order per partition, some
/// malformed records in between, and one far-later tweet per partition that
/// moves the watermark past every real window.
fn synthetic(range: std::ops::Range<usize>, sentinels: bool) -> Synthetic {
    let mut records = Vec::new();
    let mut expected: BTreeMap<String, Expected> = BTreeMap::new();
    for i in range {
        let at = T0_MS + i as i64 * STEP_MS;
        let partition = (i % SOURCE_PARTITIONS as usize) as i32;
        let lang = match i % 7 {
            0..=2 => Some("en"),
            3 => Some("ja"),
            4 => Some("de"),
            5 => None,
            _ => Some("es"),
        };
        let mut tags = Vec::new();
        if i % 5 == 0 {
            // Two spellings of one tag count once.
            tags.push("Rust".to_owned());
            tags.push("rust".to_owned());
        }
        if i % 3 == 1 {
            tags.push("K8s".to_owned());
        }
        if i % 11 == 0 {
            tags.push(format!("tag{}", (i / 11) % 4));
        }
        records.push((
            partition,
            tweet_json(&i.to_string(), at, lang, &tags, &format!("u{}", i % 500)),
        ));
        let e = expected
            .entry(rfc3339(at.div_euclid(WINDOW_MS) * WINDOW_MS))
            .or_default();
        e.count += 1;
        *e.languages
            .entry(lang.unwrap_or("und").to_owned())
            .or_default() += 1;
        let mut lower: Vec<String> = tags.iter().map(|t| t.to_lowercase()).collect();
        lower.sort();
        lower.dedup();
        for t in lower {
            *e.hashtags.entry(t).or_default() += 1;
        }
        if i % 3333 == 7 {
            records.push((partition, b"{not a tweet".to_vec()));
            records.push((partition, br#"{"id":"x","text":"no time"}"#.to_vec()));
        }
    }
    if sentinels {
        for p in 0..SOURCE_PARTITIONS {
            let at = T0_MS + 400_000;
            records.push((p, tweet_json(&format!("s{p}"), at, Some("en"), &[], "s")));
        }
    }
    Synthetic { records, expected }
}

fn assert_windows(stream: &str, got: &[(String, WindowResult)], want: &BTreeMap<String, Expected>) {
    let mut seen = BTreeMap::new();
    for (key, r) in got {
        assert!(
            key.starts_with(&format!("{stream}@{}/w", r.window_start)),
            "{key}"
        );
        assert!(
            seen.insert(r.window_start.clone(), r).is_none(),
            "window {} published twice",
            r.window_start
        );
    }
    let starts: Vec<&String> = seen.keys().collect();
    let expected_starts: Vec<&String> = want.keys().collect();
    assert_eq!(starts, expected_starts, "the set of windows");
    for (start, e) in want {
        let r = seen[start];
        let hashtags: BTreeMap<String, u64> = r
            .hashtags
            .iter()
            .map(|t| (t.tag.clone(), t.count))
            .collect();
        let got = Expected {
            count: r.count,
            hashtags,
            languages: r.languages.clone(),
            late: r.late,
        };
        assert_eq!(&got, e, "window {start}");
        assert_eq!(r.stream, stream);
    }
}

fn replica_args(topic: &str, group: &str, output: &str, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "--brokers",
        &kafka_brokers(),
        "--topic",
        topic,
        "--stream-name",
        "demo",
        "--group-id",
        group,
        "--window-seconds",
        "10",
        "--output-topic",
        output,
        "--top-n",
        "100",
        "--idle-partition-seconds",
        "300",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_publish_every_window_exactly_once_with_exact_totals() {
    let topic = unique_name("tweets");
    let output = unique_name("windows");
    let group = unique_name("cg");
    kafka::create_topic(&topic, SOURCE_PARTITIONS, 1).await;
    kafka::create_topic(&output, 1, 1).await;
    let data = synthetic(0..TWEETS, true);
    assert_eq!(data.expected.len(), 30);
    produce(&topic, &data.records).await;

    let args = replica_args(&topic, &group, &output, &[]);
    let mut a = Replica::start(&format!("{group}-a"), &args);
    let mut b = Replica::start(&format!("{group}-b"), &args);
    wait_ready(&a).await;
    wait_ready(&b).await;
    assert_eq!(a.get("/healthz").await.map(|r| r.0), Some(200));
    wait_for_windows(&output, 30, Duration::from_secs(300)).await;

    // Both replicas did part of the work, and the bad records were skipped.
    let (ma, mb) = (
        a.get("/metrics").await.expect("metrics a").1,
        b.get("/metrics").await.expect("metrics b").1,
    );
    let consumed = metric(&ma, "twitterstream_consumer_records_consumed_total")
        + metric(&mb, "twitterstream_consumer_records_consumed_total");
    let malformed = metric(&ma, "twitterstream_consumer_records_malformed_total")
        + metric(&mb, "twitterstream_consumer_records_malformed_total");
    assert!(consumed >= (TWEETS + 3) as f64, "consumed {consumed}");
    assert!(malformed >= 60.0, "malformed {malformed}");
    let emitted = metric(&ma, "twitterstream_consumer_windows_emitted_total")
        + metric(&mb, "twitterstream_consumer_windows_emitted_total");
    assert_eq!(emitted, 30.0, "windows emitted across replicas");
    assert!(
        metric(&ma, "twitterstream_consumer_emit_latency_seconds_count") > 0.0
            || metric(&mb, "twitterstream_consumer_emit_latency_seconds_count") > 0.0
    );

    a.terminate().await;
    b.terminate().await;
    let got = read_output(&output);
    assert_windows("demo", &got, &data.expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_run_loses_and_doubles_nothing() {
    let topic = unique_name("tweets");
    let output = unique_name("windows");
    let group = unique_name("cg");
    kafka::create_topic(&topic, SOURCE_PARTITIONS, 1).await;
    kafka::create_topic(&output, 1, 1).await;
    let first = synthetic(0..TWEETS / 2, false);
    let second = synthetic(TWEETS / 2..TWEETS, true);
    let mut expected = first.expected.clone();
    for (k, v) in second.expected {
        let e = expected.entry(k).or_default();
        e.count += v.count;
        for (t, n) in v.hashtags {
            *e.hashtags.entry(t).or_default() += n;
        }
        for (l, n) in v.languages {
            *e.languages.entry(l).or_default() += n;
        }
    }
    assert_eq!(expected.len(), 30);
    produce(&topic, &first.records).await;

    let args = replica_args(&topic, &group, &output, &[]);
    let mut a = Replica::start(&format!("{group}-a"), &args);
    let mut b = Replica::start(&format!("{group}-b"), &args);
    wait_for_windows(&output, 3, Duration::from_secs(300)).await;
    let before = read_output(&output).len();
    assert!(before < 30, "the run is still in progress");

    b.kill();
    produce(&topic, &second.records).await;
    b.spawn();
    wait_for_windows(&output, 30, Duration::from_secs(300)).await;
    a.terminate().await;
    b.terminate().await;
    let got = read_output(&output);
    assert_windows("demo", &got, &expected);
}

/// Window 10 s, allowed lateness 5 s, two partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_and_late_tweets_follow_the_watermark() {
    let topic = unique_name("tweets");
    let output = unique_name("windows");
    let group = unique_name("cg");
    kafka::create_topic(&topic, 2, 1).await;
    kafka::create_topic(&output, 1, 1).await;
    let t = |p: i32, s: i64| {
        let id = format!("p{p}-{s}");
        (p, tweet_json(&id, T0_MS + s * 1000, Some("en"), &[], "a"))
    };
    // Partition 1 trails partition 0 but holds the watermark, so its tweets
    // are on time; 9 s after 12 s is within the lateness. The watermark ends
    // at min(26, 24) - 5 = 19 s: [0, 10) closes, [10, 20) stays open.
    let phase1 = [
        t(0, 1),
        t(0, 8),
        t(0, 12),
        t(0, 9),
        t(0, 26),
        t(1, 2),
        t(1, 11),
        t(1, 13),
        t(1, 24),
    ];
    produce(&topic, &phase1).await;
    let args = replica_args(
        &topic,
        &group,
        &output,
        &["--allowed-lateness-seconds", "5"],
    );
    let mut r = Replica::start(&format!("{group}-a"), &args);
    wait_for_windows(&output, 1, Duration::from_secs(120)).await;

    // 5 s belongs to [0, 10), which is published and cannot change: it is
    // late, reported with the next window. 14 s is on time (watermark 19 s).
    // Then the watermark moves to min(40, 41) - 5 = 35 s.
    let phase2 = [t(1, 5), t(1, 14), t(1, 41), t(0, 40)];
    produce(&topic, &phase2).await;
    wait_for_windows(&output, 3, Duration::from_secs(120)).await;
    r.terminate().await;

    let got = read_output(&output);
    let w = |s: i64, count: u64, late: u64| {
        (
            rfc3339(T0_MS + s * 1000),
            Expected {
                count,
                hashtags: BTreeMap::new(),
                languages: BTreeMap::from([("en".to_owned(), count)]),
                late,
            },
        )
    };
    let want = BTreeMap::from([w(0, 4, 0), w(10, 4, 1), w(20, 2, 0)]);
    assert_windows("demo", &got, &want);
}
