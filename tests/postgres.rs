//! The PostgreSQL sink on the real broker and the real PostgreSQL of
//! `tests/env/up` (TLS, password login): consumer replicas are real
//! `twitterstream-consumer` processes, the table's rows are compared with
//! the truth computed from the raw topic (read_committed), window by window,
//! and with what the same replicas published to the output topic.

use std::collections::BTreeMap;
use std::time::Duration;
use twitterstream_tests::consumer::{Replica, ReplicaArgs, metric, read_output, wait_ready};
use twitterstream_tests::kafka::{self, produce, produce_as, read_committed_records};
use twitterstream_tests::postgres::{self, Database};
use twitterstream_tests::truth::{self, Rules, Tweet, Window};
use twitterstream_tests::{eventually, unique_name};

const STREAM: &str = "demo";
const NAMESPACE: &str = "team-a";
const SCHEMA: &str = "analytics";
const TABLE: &str = "tweet_windows";
const AUTHORS: [&str; 5] = ["ann", "bob", "cy", "dee", "eve"];
const TAGS: [&str; 4] = ["SuperBowl", "superbowl", "NFL", "halftime"];

/// `n` tweets over `[from_ms, from_ms + span_ms)`, round-robin over
/// `partitions` (repeat one to skew the traffic onto it), in a shuffled
/// order within each 2 s (out of order, never late).
fn tweets(
    tag: &str,
    from_ms: i64,
    span_ms: i64,
    n: usize,
    partitions: &[i32],
) -> Vec<(i32, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let jitter = ((i * 7919) % 2000) as i64;
            let at = (from_ms + span_ms * i as i64 / n as i64 - jitter).max(from_ms);
            let t = Tweet {
                id: format!("{tag}-{i}"),
                at_ms: at,
                author: AUTHORS[i % AUTHORS.len()],
                lang: [Some("en"), Some("es"), None, Some("pt")][i % 4],
                hashtags: &TAGS[i % 3..(i % 3 + 2)],
                mentions: &["nfl", "espn"][..i % 3],
                likes: (i % 11) as u64,
            };
            (partitions[i % partitions.len()], t.json())
        })
        .collect()
}

/// Malformed records and far-future tweets, which count nowhere.
fn junk(partition: i32) -> Vec<(i32, Vec<u8>)> {
    let future = serde_json::json!({"id": "y2099", "text": "from the future", "created_at": "2099-01-01T00:00:00Z", "author_id": "zed"});
    vec![
        (partition, b"{not json".to_vec()),
        (partition, br#"{"id":"x","text":"no time"}"#.to_vec()),
        (partition, serde_json::to_vec(&future).expect("json")),
    ]
}

struct Pipeline {
    topic: String,
    output: String,
    group: String,
    db: Database,
}

impl Pipeline {
    async fn new(partitions: i32) -> Self {
        let p = Pipeline {
            topic: unique_name("pg-tweets"),
            output: unique_name("pg-windows"),
            group: unique_name("pg-cg"),
            db: Database::create("tws_sink").await,
        };
        kafka::create_topic(&p.topic, partitions, 1).await;
        kafka::create_topic(&p.output, 1, 1).await;
        p
    }

    /// 10 s tumbling windows that wait 5 s for out-of-order tweets (the
    /// traffic's are at most 2 s out of order), an idle partition after 5 s,
    /// to the output
    /// topic and to PostgreSQL with the Secret in `secret`, and `extra`.
    fn replica(&self, name: &str, secret: &std::path::Path, extra: &[&str]) -> Replica {
        let args = ReplicaArgs {
            topic: &self.topic,
            stream: STREAM,
            group: &self.group,
            output: &self.output,
            window: (10, 10),
        };
        let mut flags = self.db.flags(secret, SCHEMA, TABLE);
        flags.extend(
            [
                "--idle-partition-seconds",
                "5",
                "--allowed-lateness-seconds",
                "5",
                "--stream-namespace",
                NAMESPACE,
            ]
            .iter()
            .chain(extra)
            .map(|s| s.to_string()),
        );
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        Replica::start(&format!("{}-{name}", self.group), &args.with(&flags))
    }

    async fn truth(&self) -> BTreeMap<i64, Window> {
        let raw = read_committed_records(&self.topic).await;
        truth::expected(&raw, &Rules::tumbling(STREAM, 10))
    }

    async fn rows(&self) -> (BTreeMap<i64, Window>, usize) {
        self.db
            .windows(&format!("{SCHEMA}.{TABLE}"), NAMESPACE, STREAM)
            .await
    }

    /// Waits until the table holds every window of the truth, then checks
    /// each exactly, that nothing else is there and no window has two rows.
    async fn assert_table_is_the_truth(&self, timeout: Duration) -> usize {
        let want = self.truth().await;
        assert!(!want.is_empty());
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (got, rows) = self.rows().await;
            if want.keys().all(|k| got.contains_key(k)) || tokio::time::Instant::now() > deadline {
                truth::assert_exact(&got, &want);
                assert_eq!(rows, got.len(), "a window has two rows");
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Sum of a metric over replicas.
async fn total(replicas: &[&Replica], name: &str) -> f64 {
    let mut sum = 0.0;
    for r in replicas {
        if let Some((_, m)) = r.get("/metrics").await {
            sum += metric(&m, name);
        }
    }
    sum
}

/// Skewed, sparse traffic (most on partition 0, partition 2 silent for the
/// first half, a silence longer than the idle timeout, malformed and
/// far-future records, a second stream on the topic) through two replicas,
/// across a rebalance (the second replica joining), a PostgreSQL restart
/// (`pg_ctl stop -m immediate`, then start) and a SIGKILL of a replica. The
/// table then equals the truth, one row per window, and the output topic
/// says the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_window_is_one_row_across_a_rebalance_a_postgres_restart_and_a_kill() {
    let p = Pipeline::new(3).await;
    let secret = p.db.secret_dir.clone();
    let mut a = p.replica("a", &secret, &[]);
    wait_ready(&a).await;
    let t0 = truth::live_base_ms();
    let mut first = tweets("one", t0, 40_000, 800, &[0, 0, 0, 1]);
    first.extend(junk(1));
    produce(&p.topic, &first).await;
    produce_as(
        &p.topic,
        Some("other"),
        &tweets("other", t0, 40_000, 50, &[0, 1]),
    )
    .await;
    eventually("rows in PostgreSQL", Duration::from_secs(90), || async {
        (p.rows().await.0.len() >= 2).then_some(())
    })
    .await;

    // A rebalance: a second replica joins.
    let mut b = p.replica("b", &secret, &[]);
    wait_ready(&b).await;
    produce(
        &p.topic,
        &tweets("two", t0 + 40_000, 40_000, 900, &[0, 0, 1, 2]),
    )
    .await;

    // PostgreSQL stops at once and comes back while windows are due.
    postgres::restart(&[]);
    produce(
        &p.topic,
        &tweets("three", t0 + 80_000, 30_000, 600, &[0, 2]),
    )
    .await;

    // A replica killed mid-run, and a silence longer than the idle timeout.
    b.kill();
    tokio::time::sleep(Duration::from_secs(7)).await;
    b.spawn();
    produce(
        &p.topic,
        &tweets("four", t0 + 110_000, 40_000, 700, &[0, 0, 0, 1, 2]),
    )
    .await;

    let rows = p.assert_table_is_the_truth(Duration::from_secs(180)).await;
    let output = p.output.clone();
    let published = tokio::task::spawn_blocking(move || read_output(&output))
        .await
        .expect("reader");
    let published = truth::published(STREAM, &published);
    assert_eq!(
        published,
        p.rows().await.0,
        "the table and the output topic agree"
    );
    let errors = total(&[&a, &b], "twitterstream_consumer_postgres_errors_total").await;
    eprintln!(
        "{rows} rows; {errors} failed writes retried (b's from before its kill are lost with it)"
    );
    a.terminate().await;
    b.terminate().await;
    assert!(
        a.log_text()
            .contains("writing windows to PostgreSQL failed"),
        "replica a never saw PostgreSQL stop"
    );
}

/// A wrong password, a missing database, a user without privileges on the
/// database and a server that does not answer each end the consumer after
/// its grace period with the reason (the pod's termination message), counted by reason in the
/// metrics; then with the right Secret a new replica writes every window,
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_end_the_consumer_with_the_reason_and_lose_nothing() {
    let p = Pipeline::new(2).await;
    let t0 = truth::live_base_ms();
    produce(&p.topic, &tweets("one", t0, 30_000, 300, &[0, 0, 1])).await;
    let reader = format!("{}_reader", p.db.name);
    postgres::admin(&format!("CREATE ROLE {reader} LOGIN PASSWORD 'reader'")).await;
    let cases = [
        (
            "wrong-password",
            vec![("password", "not-it")],
            "PostgresAuthentication",
        ),
        (
            "no-database",
            vec![("database", "no_such_db")],
            "PostgresDatabaseMissing",
        ),
        (
            "read-only",
            vec![("user", reader.as_str()), ("password", "reader")],
            "PostgresPermissionDenied",
        ),
        // Nothing listens on port 1: a server down for longer than the grace.
        ("unreachable", vec![("port", "1")], "PostgresUnavailable"),
    ];
    for (name, overrides, reason) in cases {
        let dir = std::env::temp_dir().join(format!("{}-{name}", p.db.name));
        p.db.write_secret(&dir, &overrides);
        let mut r = p.replica(name, &dir, &["--postgres-grace-seconds", "5"]);
        eventually(
            &format!("{reason} counted"),
            Duration::from_secs(60),
            || async {
                let m = r.get("/metrics").await?.1;
                let line =
                    format!("twitterstream_consumer_postgres_errors_total{{reason=\"{reason}\"}}");
                m.lines().any(|l| l.starts_with(&line)).then_some(())
            },
        )
        .await;
        let log = eventually(
            &format!("{name}: the consumer to exit"),
            Duration::from_secs(60),
            || {
                let log = r.log_text();
                std::future::ready(log.contains("could not write to PostgreSQL").then_some(log))
            },
        )
        .await;
        assert!(
            log.contains(reason),
            "{name}: the exit names {reason}:\n{log}"
        );
        assert!(
            !log.contains(&p.db.password),
            "{name}: the password is in the log"
        );
        r.kill();
    }
    assert!(
        p.rows().await.0.is_empty(),
        "nothing written by the refused replicas"
    );
    let secret = p.db.secret_dir.clone();
    let mut good = p.replica("good", &secret, &[]);
    produce(&p.topic, &tweets("two", t0 + 30_000, 30_000, 300, &[0, 1])).await;
    p.assert_table_is_the_truth(Duration::from_secs(120)).await;
    good.terminate().await;
}
