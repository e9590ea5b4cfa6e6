//! The consumer under realistic traffic on the real broker: quiet and empty
//! partitions, far-future timestamps, a topic that grows while it runs.
//! Replicas are real `twitterstream-consumer` processes; every published
//! window is checked against the truth computed from the raw topic, read
//! with `read_committed` (`support/truth.rs`).

use std::collections::BTreeMap;
use std::time::Duration;
use twitterstream_tests::consumer::{Replica, ReplicaArgs, metric, read_output, wait_ready};
use twitterstream_tests::kafka::{self, produce, produce_as, read_committed_records};
use twitterstream_tests::truth::{self, Rules, Tweet, Window};
use twitterstream_tests::unique_name;

const STREAM: &str = "demo";
const AUTHORS: [&str; 5] = ["ann", "bob", "cy", "dee", "eve"];
const TAGS: [&str; 4] = ["SuperBowl", "superbowl", "NFL", "halftime"];

struct Pipeline {
    topic: String,
    output: String,
    group: String,
}

impl Pipeline {
    async fn new(partitions: i32) -> Self {
        let p = Pipeline {
            topic: unique_name("tr-tweets"),
            output: unique_name("tr-windows"),
            group: unique_name("tr-cg"),
        };
        kafka::create_topic(&p.topic, partitions, 1).await;
        kafka::create_topic(&p.output, 1, 1).await;
        p
    }

    /// Replicas named `names`, once each is ready.
    async fn ready_replicas<const N: usize>(&self, names: [&str; N]) -> [Replica; N] {
        let replicas = names.map(|n| self.replica(n));
        for r in &replicas {
            wait_ready(r).await;
        }
        replicas
    }

    /// 10 s tumbling windows; a partition is idle after 5 s without data.
    fn replica(&self, name: &str) -> Replica {
        self.replica_with(name, &["--idle-partition-seconds", "5"])
    }

    /// 10 s tumbling windows, all 1000 top hashtags and mentions, and `settings`.
    fn replica_with(&self, name: &str, settings: &[&str]) -> Replica {
        let args = ReplicaArgs {
            topic: &self.topic,
            stream: STREAM,
            group: &self.group,
            output: &self.output,
            window: (10, 10),
        };
        Replica::start(&format!("{}-{name}", self.group), &args.with(settings))
    }

    async fn truth(&self) -> BTreeMap<i64, Window> {
        let raw = read_committed_records(&self.topic).await;
        truth::expected(&raw, &Rules::tumbling(STREAM, 10))
    }

    async fn published(&self) -> BTreeMap<i64, Window> {
        let output = self.output.clone();
        let got = tokio::task::spawn_blocking(move || read_output(&output))
            .await
            .expect("reader task");
        truth::published(STREAM, &got)
    }

    /// Waits until at least `n` windows are published.
    async fn wait_for_windows(&self, n: usize, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.published().await.len() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "fewer than {n} windows published within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Waits until every window of the truth is published, then checks
    /// each exactly (and that nothing else was); on time-out the check's
    /// message lists what is missing.
    async fn assert_every_window(&self, timeout: Duration) {
        let want = self.truth().await;
        assert!(!want.is_empty());
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.published().await;
            if want.keys().all(|k| got.contains_key(k)) || tokio::time::Instant::now() > deadline {
                truth::assert_exact(&got, &want);
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// One tweet at `at_ms` on each of `partitions`, and a pause for the
/// replicas to read them: a partition idle for the idle timeout does not hold
/// the watermark back, so a burst that lands on idle partitions at once is
/// partly late wherever one replica reads its share before another (as in
/// Flink). Waking every partition first keeps the burst on time.
async fn wake(topic: &str, tag: &str, at_ms: i64, partitions: &[i32]) {
    let records: Vec<(i32, Vec<u8>)> = partitions
        .iter()
        .map(|p| {
            (
                *p,
                tweets(&format!("{tag}{p}"), at_ms, 1, 1, &[*p]).remove(0).1,
            )
        })
        .collect();
    produce(topic, &records).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
}

/// `n` tweets spread over `[from_ms, from_ms + span_ms)`, round-robin over
/// `partitions`, with varied authors, tags, mentions and languages.
fn tweets(
    tag: &str,
    from_ms: i64,
    span_ms: i64,
    n: usize,
    partitions: &[i32],
) -> Vec<(i32, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let at = from_ms + span_ms * i as i64 / n as i64;
            let t = Tweet {
                id: format!("{tag}-{i}"),
                at_ms: at,
                author: AUTHORS[i % AUTHORS.len()],
                lang: [Some("en"), Some("es"), None][i % 3],
                hashtags: &TAGS[i % 3..(i % 3 + 2)],
                mentions: &["nfl"][..i % 2],
                likes: (i % 7) as u64,
            };
            (partitions[i % partitions.len()], t.json())
        })
        .collect()
}

/// Item 1 of #12: 3 partitions, 3 replicas, tweets only on partitions 1 and
/// 2. The replica reading partition 0 never gets a record; before, it never
/// said its partition was closed, and not one window was published (with one
/// replica, all were).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_that_never_gets_a_tweet_holds_back_no_window() {
    let p = Pipeline::new(3).await;
    let replicas: Vec<Replica> = ["a", "b", "c"].iter().map(|n| p.replica(n)).collect();
    for r in &replicas {
        wait_ready(r).await;
    }
    let t0 = truth::live_base_ms();
    wake(&p.topic, "wake", t0, &[1, 2]).await;
    // Six windows of traffic on partitions 1 and 2, then a burst a little
    // later on both, as the reproduction had.
    let mut records = tweets("q", t0, 60_000, 300, &[1, 2]);
    records.extend(tweets("closer", t0 + 75_000, 1_000, 4, &[1, 2]));
    produce(&p.topic, &records).await;
    p.assert_every_window(Duration::from_secs(120)).await;
}

/// Item 2 of #12: one tweet dated 9999-12-31 and one dated 2099 on
/// partition 0, among live tweets, with 2 replicas; then a silence longer
/// than the idle timeout, and more tweets. Before, once every partition was
/// idle the year 9999 set the watermark, and every later tweet was late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_future_tweets_are_skipped_and_silence_nothing() {
    let p = Pipeline::new(3).await;
    let [a, b] = p.ready_replicas(["a", "b"]).await;
    let t0 = truth::live_base_ms();
    wake(&p.topic, "wake", t0, &[0, 1, 2]).await;
    let mut records = tweets("early", t0, 10_000, 60, &[0, 1, 2]);
    for (id, at) in [
        ("y9999", "9999-12-31T23:59:59Z"),
        ("y2099", "2099-01-01T00:00:00.000Z"),
    ] {
        let v = serde_json::json!({"id": id, "text": "from the future", "created_at": at, "author_id": "zed"});
        records.push((0, serde_json::to_vec(&v).expect("json")));
    }
    records.extend(tweets("later", t0 + 10_000, 50_000, 300, &[0, 1, 2]));
    produce(&p.topic, &records).await;
    p.wait_for_windows(4, Duration::from_secs(60)).await;
    // Every partition goes idle, then the stream goes on.
    tokio::time::sleep(Duration::from_secs(8)).await;
    wake(&p.topic, "rewake", t0 + 120_000, &[0, 1, 2]).await;
    produce(
        &p.topic,
        &tweets("after", t0 + 120_000, 40_000, 240, &[0, 1, 2]),
    )
    .await;
    p.assert_every_window(Duration::from_secs(120)).await;
    let mut future = 0.0;
    for r in [&a, &b] {
        let m = r.get("/metrics").await.expect("metrics").1;
        future += metric(&m, "twitterstream_consumer_tweets_future_total");
    }
    assert_eq!(future, 2.0, "both future tweets counted once");
}

/// Item 4 of #12: 2 replicas on 3 partitions; the topic grows to 6 and a
/// third replica joins; traffic then lands on all 6. Before, consumers knew
/// the partition count from their start and dropped every partial naming a
/// new partition: windows were published without that data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_grown_while_running_loses_nothing() {
    let p = Pipeline::new(3).await;
    // Named, so they live to the end of the test.
    let _first_two = p.ready_replicas(["a", "b"]).await;
    let t0 = truth::live_base_ms();
    wake(&p.topic, "wake", t0, &[0, 1, 2]).await;
    produce(&p.topic, &tweets("before", t0, 50_000, 300, &[0, 1, 2])).await;
    p.wait_for_windows(3, Duration::from_secs(60)).await;

    let admin = kafka::admin();
    let grown = admin
        .create_partitions(
            &[rdkafka::admin::NewPartitions::new(&p.topic, 6)],
            &rdkafka::admin::AdminOptions::new(),
        )
        .await
        .expect("CreatePartitions request");
    for r in grown {
        r.unwrap_or_else(|(t, e)| panic!("growing {t}: {e}"));
    }
    let c = p.replica("c");
    wait_ready(&c).await;
    // The group notices the new partitions (metadata refresh, 5 s) and
    // rebalances onto them; then traffic lands on all six, far later in
    // event time than the silence since the first batch moves the watermark.
    tokio::time::sleep(Duration::from_secs(10)).await;
    wake(&p.topic, "rewake", t0 + 300_000, &[0, 1, 2, 3, 4, 5]).await;
    produce(
        &p.topic,
        &tweets("after", t0 + 300_000, 50_000, 600, &[0, 1, 2, 3, 4, 5]),
    )
    .await;
    p.assert_every_window(Duration::from_secs(120)).await;
}

/// Item 8 of #12: two streams publish to one topic (each record carries its
/// `stream` header). Before, each stream's consumers counted both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_stream_on_the_topic_is_not_counted() {
    let p = Pipeline::new(2).await;
    let a = p.replica("a");
    wait_ready(&a).await;
    let t0 = truth::live_base_ms();
    wake(&p.topic, "wake", t0, &[0, 1]).await;
    let ours = tweets("ours", t0, 30_000, 120, &[0, 1]);
    // Later than ours: counted, they would make windows of their own.
    let theirs = tweets("theirs", t0 + 30_000, 30_000, 90, &[1, 0]);
    produce_as(&p.topic, Some(STREAM), &ours).await;
    produce_as(&p.topic, Some("other"), &theirs).await;
    p.assert_every_window(Duration::from_secs(120)).await;
    let m = a.get("/metrics").await.expect("metrics").1;
    assert_eq!(
        metric(&m, "twitterstream_consumer_records_other_stream_total"),
        90.0
    );
}

/// Done-when of #12: a keyword in the superbowl example's shape (a few
/// tweets a minute over 3 partitions, 2 consumers, 10 s windows, 5 s
/// lateness, the default 30 s idle timeout), live: every window is
/// published within window + lateness + idle timeout of its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_keyword_publishes_every_window_soon_after_its_end() {
    let p = Pipeline::new(3).await;
    // The example's lateness, and the default idle timeout (30 s).
    let lateness = ["--allowed-lateness-seconds", "5"];
    let a = p.replica_with("a", &lateness);
    let b = p.replica_with("b", &lateness);
    wait_ready(&a).await;
    wait_ready(&b).await;
    // Eight tweets, one every 8 s, each to a partition of its own choosing,
    // created as they are sent.
    for i in 0..8usize {
        let now = chrono::Utc::now().timestamp_millis();
        let mut t = tweets(&format!("live{i}"), now, 1, 1, &[0]);
        t[0].0 = [2, 0, 0, 1, 2, 2, 1, 0][i];
        produce(&p.topic, &t).await;
        tokio::time::sleep(Duration::from_secs(8)).await;
    }
    let budget_ms = (10 + 5 + 30) * 1000;
    p.assert_every_window(Duration::from_secs(60)).await;
    let published = read_committed_records(&p.output).await;
    assert!(!published.is_empty());
    for r in published {
        let w: twitterstream_workers::consumer::aggregate::WindowResult =
            serde_json::from_slice(&r.value).expect("window JSON");
        let end = chrono::DateTime::parse_from_rfc3339(&w.window_end)
            .expect("window_end")
            .timestamp_millis();
        let at = r.timestamp_ms.expect("record timestamp");
        eprintln!(
            "window ending {} published {} ms after its end",
            w.window_end,
            at - end
        );
        assert!(
            at - end <= budget_ms,
            "window ending {} published {} ms after its end (budget {budget_ms} ms)",
            w.window_end,
            at - end
        );
    }
    drop((a, b));
}

/// Item 6 of #12: one window with 200,000 tweets by as many authors, read
/// by one replica. Its partial lists every author: 4.4 MB of JSON, about
/// 2 MB compressed, more than the broker takes in one record (1 MB by
/// default). Before, the aggregate stage retried that transaction forever
/// and the window was never published; now the partial travels in pieces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_larger_than_a_kafka_record_is_published_whole() {
    let p = Pipeline::new(2).await;
    let [a] = p.ready_replicas(["a"]).await;
    let t0 = truth::live_base_ms();
    let n = 200_000u64;
    // Ids as X's look: 19 digits without a pattern a compressor could use.
    let authors: Vec<String> = (0..n)
        .map(|i| {
            let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
            x ^= x >> 31;
            format!("{:019}", x % 10_000_000_000_000_000_000)
        })
        .collect();
    let mut records: Vec<(i32, Vec<u8>)> = authors
        .iter()
        .enumerate()
        .map(|(i, author)| {
            let t = Tweet {
                id: format!("crowd-{i}"),
                at_ms: t0 + (i as i64 % 9_000),
                author,
                lang: Some("en"),
                hashtags: &TAGS[i % 3..(i % 3 + 1)],
                mentions: &[],
                likes: (i % 5) as u64,
            };
            ((i % 2) as i32, t.json())
        })
        .collect();
    records.extend(tweets("closer", t0 + 25_000, 1_000, 4, &[0, 1]));
    produce(&p.topic, &records).await;
    p.assert_every_window(Duration::from_secs(120)).await;
    let want = p.truth().await;
    assert!(want.values().any(|w| w.unique_authors > 190_000));
    drop(a);
}

/// Item 13 of #12: 12 partitions and one replica under live traffic. The
/// replica told every merger about each of its partitions in a record of
/// its own, on every cycle that committed anything: 12 × 12 records per
/// cycle. Now one record per partials partition carries them all, and only
/// when a closed-until time moves or every 2 s as a heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_markers_do_not_grow_with_the_square_of_the_partitions() {
    let started = std::time::Instant::now();
    let p = Pipeline::new(12).await;
    let [a] = p.ready_replicas(["a"]).await;
    let all: Vec<i32> = (0..12).collect();
    for i in 0..20usize {
        let now = chrono::Utc::now().timestamp_millis();
        produce(&p.topic, &tweets(&format!("live{i}"), now, 500, 24, &all)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    p.assert_every_window(Duration::from_secs(90)).await;
    let partials = read_committed_records(&format!("{}-partials", p.group)).await;
    let markers = partials
        .iter()
        .filter(|r| r.value.starts_with(b"{\"closed"))
        .count();
    // One record per partials partition (12) for each time a closed-until
    // moves (once per 10 s window, at most) or the 2 s heartbeat fires, and
    // after each (re)assignment.
    let elapsed = started.elapsed().as_secs() as usize;
    let bound = 12 * (elapsed / 2 + elapsed / 10 + 4);
    eprintln!("{markers} marker records in {elapsed} s (bound {bound})");
    assert!(markers > 0);
    assert!(
        markers <= bound,
        "{markers} marker records in {elapsed} s, bound {bound}"
    );
    drop(a);
}

/// The sum of a metric over replicas.
async fn total(replicas: &[&Replica], name: &str) -> f64 {
    let mut sum = 0.0;
    for r in replicas {
        let m = r.get("/metrics").await.expect("metrics").1;
        sum += metric(&m, name);
    }
    sum
}

/// Item 13 of #12: the output topic refuses every window (its
/// `max.message.bytes` is 200) until it is reconfigured. Each refusal
/// aborts the merge stage's transaction; before, every one recreated the
/// stage's clients, which left and rejoined the group and made every
/// replica rebalance. Now the stage goes back to its committed offsets with
/// the same clients, and once the topic takes the records every window is
/// published exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_transaction_does_not_rebalance_the_group() {
    let p = Pipeline::new(2).await;
    kafka::set_topic_config(&p.output, "max.message.bytes", "200").await;
    let [a, b] = p.ready_replicas(["a", "b"]).await;
    let t0 = truth::live_base_ms();
    wake(&p.topic, "wake", t0, &[0, 1]).await;
    produce(&p.topic, &tweets("q", t0, 40_000, 200, &[0, 1])).await;
    produce(&p.topic, &tweets("closer", t0 + 55_000, 1_000, 2, &[0, 1])).await;
    let both = [&a, &b];
    let aborted = "twitterstream_consumer_transactions_aborted_total";
    let rebalances = "twitterstream_consumer_rebalances_total";
    tokio::time::timeout(Duration::from_secs(60), async {
        while total(&both, aborted).await < 2.0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await
    .expect("the output topic refused a window");
    let before = total(&both, rebalances).await;
    let aborts = total(&both, aborted).await;
    tokio::time::timeout(Duration::from_secs(90), async {
        while total(&both, aborted).await < aborts + 3.0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await
    .expect("more refusals");
    assert_eq!(
        total(&both, rebalances).await,
        before,
        "rebalances while transactions were being aborted"
    );
    kafka::set_topic_config(&p.output, "max.message.bytes", "1048588").await;
    p.assert_every_window(Duration::from_secs(120)).await;
}
