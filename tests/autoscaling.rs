//! `spec.consumer.autoscaling` on the real broker: the operator (a local
//! process) samples the consumer group's lag and rates every 5 s
//! (`--throughput-interval-seconds`; at 3 s a 4 s pause of a starting
//! replica spanned two samples and scaled it up at 300 tweets/s), and the
//! consumer Deployment's replicas
//! run as local processes (`LocalPods`) whose rate is capped at
//! [`CAP`] tweets/s each: the documented test setting
//! `TWS_MAX_TWEETS_PER_SECOND`, which the "node" adds to every process, so
//! one replica's capacity is a known figure on any machine.
//!
//! The synthetic producer's rate steps from [`LOW`] to [`HIGH`] tweets/s and
//! back (a `spec.synthetic.rate` change: the producer is replaced and resumes
//! from its checkpoint). The consumers must rise until the lag stops
//! growing and is worked off, fall back to the minimum after the rate drops,
//! change in one direction per step (no flapping), say every change in a
//! `Scaled` Event with its figures, and publish every window exactly as the
//! truth computed from the raw topic (`read_committed`) says, through the
//! rebalances of every change.
//!
//! The timeline is printed and written to `$TWS_ENV_DIR/logs/autoscaling.csv`;
//! `tests/tools/plot-autoscaling` draws it (`docs/autoscaling.png`).

use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, Instant};
use twitterstream_operator::crd::TwitterStream;
use twitterstream_tests::consumer::{read_output, wait_for_windows};
use twitterstream_tests::k8s::{TestNamespace, admin_client};
use twitterstream_tests::kafka::read_committed_records;
use twitterstream_tests::local_pods::LocalPods;
use twitterstream_tests::operator::{Operator, install_crd};
use twitterstream_tests::truth::{self, Rules};
use twitterstream_tests::{env_var, eventually, kafka_brokers, unique_name};

const STREAM: &str = "autoscaled";
/// Tweets per second one consumer replica takes in.
const CAP: u32 = 800;
const LOW: u32 = 300;
const HIGH: u32 = 6_000;
const PARTITIONS: i32 = 12;
const TOP_N: usize = 1_000;

fn report(line: &str) {
    // Straight to stderr: libtest captures println! of passing tests.
    let _ = writeln!(std::io::stderr(), "[autoscaling] {line}");
}

/// One look at the stream.
#[derive(Debug, Clone)]
struct Point {
    at: Duration,
    /// `spec.synthetic.rate` at the time.
    rate: u32,
    /// `spec.consumer.replicas`: what the autoscaler set.
    replicas: i32,
    /// Consumer processes running.
    running: usize,
    lag: Option<i64>,
    published: Option<f64>,
    consumed: Option<f64>,
}

struct Stream {
    api: Api<TwitterStream>,
    pods: LocalPods,
    started: Instant,
    timeline: Vec<Point>,
    rate: u32,
}

impl Stream {
    async fn look(&mut self) -> Point {
        let tws = self.api.get(STREAM).await.expect("get tws");
        let t = tws.status.as_ref().and_then(|s| s.throughput.as_ref());
        let point = Point {
            at: self.started.elapsed(),
            rate: self.rate,
            replicas: tws.spec.consumer.replicas,
            running: self.pods.pods_of(&format!("{STREAM}-consumer")).len(),
            lag: t.map(|t| t.lag),
            published: t.and_then(|t| t.published_per_second),
            consumed: t.and_then(|t| t.consumed_per_second),
        };
        report(&format!(
            "{:>5.0} s rate {:>5} replicas {:>2} running {:>2} lag {:>8} published {:>8} consumed {:>8}",
            point.at.as_secs_f64(),
            point.rate,
            point.replicas,
            point.running,
            opt(point.lag),
            opt(point.published),
            opt(point.consumed)
        ));
        self.timeline.push(point.clone());
        point
    }

    /// Looks every second for `d`.
    async fn watch(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.look().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Looks every second until `done` holds for a look (or `within`
    /// passes: the test then fails, naming `what`).
    async fn watch_until(&mut self, what: &str, within: Duration, done: impl Fn(&[Point]) -> bool) {
        let until = Instant::now() + within;
        loop {
            self.look().await;
            if done(&self.timeline) {
                return;
            }
            assert!(
                Instant::now() < until,
                "{what} within {within:?}: {}",
                csv(&self.timeline)
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn patch(&mut self, spec: serde_json::Value) {
        self.api
            .patch(
                STREAM,
                &PatchParams::default(),
                &Patch::Merge(&serde_json::json!({ "spec": spec })),
            )
            .await
            .expect("patch tws");
    }

    async fn set_rate(&mut self, rate: u32) {
        self.rate = rate;
        self.patch(serde_json::json!({"synthetic": {"rate": rate}}))
            .await;
        report(&format!("synthetic.rate set to {rate}/s"));
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

fn csv(timeline: &[Point]) -> String {
    let mut out = String::from(
        "seconds,rate,replicas,running,lag,published_per_second,consumed_per_second\n",
    );
    for p in timeline {
        let _ = writeln!(
            out,
            "{:.1},{},{},{},{},{},{}",
            p.at.as_secs_f64(),
            p.rate,
            p.replicas,
            p.running,
            p.lag.map_or(String::new(), |v| v.to_string()),
            p.published.map_or(String::new(), |v| v.to_string()),
            p.consumed.map_or(String::new(), |v| v.to_string()),
        );
    }
    out
}

async fn create_stream(client: &Client, ns: &str, topic: &str, output: &str) -> Api<TwitterStream> {
    let api: Api<TwitterStream> = Api::namespaced(client.clone(), ns);
    let tws: TwitterStream = serde_json::from_value(serde_json::json!({
        "apiVersion": "twitterstream.io/v1alpha1",
        "kind": "TwitterStream",
        "metadata": {"name": STREAM},
        "spec": {
            "keyword": "autoscaling",
            "source": "synthetic",
            "synthetic": {"rate": LOW, "seed": 7},
            "kafka": {
                "brokers": kafka_brokers().split(',').collect::<Vec<_>>(),
                "topic": topic,
                "outputTopic": output,
                "partitions": PARTITIONS,
                "replicationFactor": 1,
            },
            "window": {"seconds": 10},
            "consumer": {
                "replicas": 1,
                "topN": TOP_N,
                "autoscaling": {
                    "minReplicas": 1,
                    "maxReplicas": PARTITIONS,
                    "catchUpSeconds": 30,
                    "targetUtilizationPercent": 80,
                    "scaleDownStabilizationSeconds": 30,
                    "scaleUpCooldownSeconds": 10,
                },
            },
        },
    }))
    .expect("TwitterStream");
    api.create(&PostParams::default(), &tws)
        .await
        .expect("create tws");
    api
}

/// The replicas the autoscaler set, each change once, in order.
fn changes(timeline: &[Point]) -> Vec<i32> {
    let mut out: Vec<i32> = Vec::new();
    for p in timeline {
        if out.last() != Some(&p.replicas) {
            out.push(p.replicas);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_follow_a_step_in_the_rate_up_and_back_without_flapping() {
    let client = admin_client().await;
    install_crd(&client).await;
    let ns = TestNamespace::create(&client, "autoscale").await;
    let _operator = Operator::start_with_env(
        &ns.name,
        None,
        &[],
        &[("TWS_THROUGHPUT_INTERVAL_SECONDS", "5")],
    );
    let cap = CAP.to_string();
    let pods = LocalPods::start_on_node(
        client.clone(),
        &ns.name,
        None,
        &[("TWS_MAX_TWEETS_PER_SECOND", cap.as_str())],
    );
    let topic = unique_name("autoscale");
    let output = format!("{topic}-windows");
    let api = create_stream(&client, &ns.name, &topic, &output).await;
    let mut s = Stream {
        api,
        pods,
        started: Instant::now(),
        timeline: Vec::new(),
        rate: LOW,
    };

    // The low rate: one replica keeps up; nothing changes.
    s.watch_until(
        "a first rate in status.throughput",
        Duration::from_secs(90),
        |t| t.last().is_some_and(|p| p.consumed.is_some()),
    )
    .await;
    s.watch(Duration::from_secs(20)).await;
    assert_eq!(changes(&s.timeline), vec![1], "at {LOW}/s one replica does");

    // The step up: replicas rise until the lag stops growing, and the
    // backlog is worked off.
    s.set_rate(HIGH).await;
    let step_up = s.timeline.len();
    // 240 s: on 2026-12-07 the backlog peaked at 363,283 records (three
    // rebalances at 8, 9 and 12 replicas, each a few seconds of nothing
    // consumed) and drained at 9,750/s, the replicas' cap; 16,497 were
    // left at 180 s, twice, alone on the machine.
    s.watch_until(
        "the backlog of the step up worked off",
        Duration::from_secs(240),
        |t| {
            let high = &t[step_up..];
            let peak = high.iter().filter_map(|p| p.lag).max().unwrap_or(0);
            let now = high.last().and_then(|p| p.lag).unwrap_or(i64::MAX);
            let need = HIGH.div_ceil(CAP) as i32;
            high.last().is_some_and(|p| p.replicas >= need)
                && peak > 0
                && now < i64::from(HIGH) * 2
                && now * 5 < peak
        },
    )
    .await;
    s.watch(Duration::from_secs(15)).await;
    let peak_replicas = s.timeline.iter().map(|p| p.replicas).max().unwrap_or(0);

    // The step down: back to the minimum after the stabilization window.
    s.set_rate(LOW).await;
    s.watch_until("back to one replica", Duration::from_secs(150), |t| {
        t.last().is_some_and(|p| p.replicas == 1 && p.running == 1)
    })
    .await;

    // Stop producing; every window closes and is published.
    s.patch(serde_json::json!({"producer": {"replicas": 0}}))
        .await;
    eventually("the producer to stop", Duration::from_secs(60), || {
        std::future::ready(
            s.pods
                .pods_of(&format!("{STREAM}-producer"))
                .is_empty()
                .then_some(()),
        )
    })
    .await;
    let timeline = s.timeline.clone();
    let table = csv(&timeline);
    let path = std::path::PathBuf::from(env_var("TWS_ENV_DIR")).join("logs/autoscaling.csv");
    std::fs::write(&path, &table).expect("writing the timeline");
    report(&format!("timeline: {}", path.display()));

    // One direction per step: up to the peak, then down to one.
    let seq = changes(&timeline);
    let top = seq.iter().position(|r| *r == peak_replicas).unwrap_or(0);
    assert!(
        seq[..=top].windows(2).all(|w| w[0] < w[1]) && seq[top..].windows(2).all(|w| w[0] > w[1]),
        "the replicas flapped: {seq:?}"
    );
    assert!(peak_replicas <= PARTITIONS, "{seq:?}");

    // Every change is an Event with its figures.
    let events: Api<Event> = Api::namespaced(client.clone(), &ns.name);
    let scaled: Vec<String> = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("Scaled"))
        .filter_map(|e| e.note)
        .collect();
    for note in &scaled {
        report(&format!("Event Scaled: {note}"));
        assert!(note.contains("lag ") && note.contains("->"), "{note}");
    }
    assert_eq!(
        scaled.len(),
        seq.len() - 1,
        "an Event per change: {seq:?} {scaled:#?}"
    );

    // Exactly the truth, through every rebalance.
    let records = read_committed_records(&topic).await;
    let want = truth::expected(&records, &Rules::tumbling(STREAM, 10));
    wait_for_windows(&output, want.len(), Duration::from_secs(120)).await;
    let got = truth::published(STREAM, &read_output(&output));
    truth::assert_exact_with_top_lists(&got, &want, TOP_N);
    report(&format!(
        "{} tweets, {} windows exact; replicas {seq:?}; peak lag {}",
        records.len(),
        got.len(),
        timeline.iter().filter_map(|p| p.lag).max().unwrap_or(0)
    ));
}
