//! A seeded randomized campaign (Jepsen-style) against the real broker. Each
//! scenario draws, from its seed, a topology (1-12 partitions, 1-4 replicas,
//! tumbling or hopping windows, lateness), a traffic shape and operations,
//! runs real `twitterstream-consumer` replicas through them, and checks
//! every published window against the truth computed from the raw topic
//! read with `read_committed` (`support/truth.rs`):
//!
//! - no window is published twice, and none holds what the truth does not
//!   (every count, author, hashtag, mention, language and like is at most
//!   the truth's);
//! - nothing is lost: every window membership the truth has is either
//!   counted in its window or reported as `late` in some published window
//!   (the documented rule), so the published `count + late` add up to the
//!   truth's counts exactly;
//! - when nothing was late, every window equals the truth exactly.
//!
//! Operations: replica kill -9 and restart, replica added, scale to 0 and
//! back, partitions added, an aborted transaction on the topic, a window
//! change (a new generation) and, less often, a broker kill -9 and restart
//! (`tests/env/kill-broker`).
//!
//! The README's test command runs the fixed seeds 1..=20. More:
//!
//! ```text
//! TWS_CAMPAIGN_SCENARIOS=200 cargo test -p twitterstream-tests --test campaign -- --nocapture
//! TWS_CAMPAIGN_SEED=1234 cargo test -p twitterstream-tests --test campaign      # replays one seed
//! ```

use futures::StreamExt;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;
use twitterstream_tests::consumer::{Replica, ReplicaArgs, read_output};
use twitterstream_tests::kafka::{self, produce_aborted, produce_as, read_committed_records};
use twitterstream_tests::truth::{self, Rules, Tweet, Window};
use twitterstream_tests::unique_name;
use twitterstream_workers::consumer::window::WindowSpec;

const STREAM: &str = "camp";
/// Scenarios run at once: they mostly wait for windows to close.
const PARALLEL: usize = 7;
const AUTHORS: [&str; 7] = ["ann", "bob", "cy", "dee", "eve", "fay", "gus"];
const TAGS: [&str; 5] = ["SuperBowl", "superbowl", "NFL", "halftime", "Rust"];
const LANGS: [Option<&str>; 4] = [Some("en"), Some("es"), Some("ja"), None];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Shape {
    Uniform,
    OnePartition,
    SomeEmpty,
    BurstsAndSilences,
    OutOfOrder,
    Duplicates,
    FarFutureAndAncient,
    Malformed,
    SecondStream,
}

const SHAPES: [Shape; 9] = [
    Shape::Uniform,
    Shape::OnePartition,
    Shape::SomeEmpty,
    Shape::BurstsAndSilences,
    Shape::OutOfOrder,
    Shape::Duplicates,
    Shape::FarFutureAndAncient,
    Shape::Malformed,
    Shape::SecondStream,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    None,
    KillReplica,
    AddReplica,
    ScaleToZeroAndBack,
    GrowPartitions,
    AbortedTransaction,
    /// The window shape changes, as `kubectl patch` of `spec.window` does:
    /// the replicas roll into the new generation's group.
    WindowChange,
    /// `kill -9` of the broker (node 1) and a restart 0-2 s later. Drawn
    /// less often, and run with no other scenario at the same time: the
    /// broker is shared.
    BrokerKill,
}

const OPS: [Op; 7] = [
    Op::None,
    Op::KillReplica,
    Op::AddReplica,
    Op::ScaleToZeroAndBack,
    Op::GrowPartitions,
    Op::AbortedTransaction,
    Op::WindowChange,
];

/// Everything a seed decides.
#[derive(Debug, Clone)]
struct Scenario {
    seed: u64,
    partitions: i32,
    replicas: usize,
    size_s: i64,
    slide_s: i64,
    lateness_s: i64,
    shapes: Vec<Shape>,
    /// One operation after each phase but the last.
    ops: Vec<Op>,
    /// Wall-clock pause after each phase, in ms (some longer than the idle timeout).
    pauses_ms: Vec<u64>,
}

/// Idle timeout of every scenario: short, so silences longer than it are cheap.
const IDLE_S: i64 = 3;
const PHASES: usize = 3;

impl Scenario {
    fn draw(seed: u64) -> Scenario {
        let mut rng = StdRng::seed_from_u64(seed);
        let partitions = rng.random_range(1..=12);
        let replicas = rng.random_range(1..=partitions.min(4) as usize);
        let hopping = rng.random_bool(0.3);
        let mut shapes = vec![SHAPES[rng.random_range(0..SHAPES.len())]];
        if rng.random_bool(0.5) {
            shapes.push(SHAPES[rng.random_range(0..SHAPES.len())]);
        }
        shapes.sort();
        shapes.dedup();
        let ops: Vec<Op> = (0..PHASES - 1)
            .map(|_| {
                if rng.random_bool(0.05) {
                    Op::BrokerKill
                } else {
                    OPS[rng.random_range(0..OPS.len())]
                }
            })
            .collect();
        let pauses_ms = (0..PHASES)
            .map(|_| {
                if rng.random_bool(0.4) {
                    // A silence longer than the idle timeout.
                    rng.random_range(IDLE_S as u64 * 1000 + 500..=IDLE_S as u64 * 1000 + 3000)
                } else {
                    rng.random_range(0..1500)
                }
            })
            .collect();
        Scenario {
            seed,
            partitions,
            replicas,
            size_s: 10,
            slide_s: if hopping { 5 } else { 10 },
            lateness_s: rng.random_range(0..=3),
            shapes,
            ops,
            pauses_ms,
        }
    }

    fn has(&self, s: Shape) -> bool {
        self.shapes.contains(&s)
    }

    fn replay_command(&self) -> String {
        format!(
            "TWS_CAMPAIGN_SEED={} cargo test -p twitterstream-tests --test campaign",
            self.seed
        )
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {}: {} partitions, {} replicas, window {}s/{}s, lateness {}s, traffic {:?}, ops {:?}",
            self.seed,
            self.partitions,
            self.replicas,
            self.size_s,
            self.slide_s,
            self.lateness_s,
            self.shapes,
            self.ops
        )
    }
}

/// The records of one phase: `(partition, value)` for this stream and for a
/// second one sharing the topic.
struct Phase {
    ours: Vec<(i32, Vec<u8>)>,
    theirs: Vec<(i32, Vec<u8>)>,
}

fn tweet(rng: &mut StdRng, id: String, at_ms: i64) -> Vec<u8> {
    let tags: Vec<&str> = TAGS
        .iter()
        .copied()
        .filter(|_| rng.random_bool(0.3))
        .collect();
    let mentions: Vec<&str> = ["nfl", "rustlang"]
        .into_iter()
        .filter(|_| rng.random_bool(0.3))
        .collect();
    Tweet {
        id,
        at_ms,
        author: AUTHORS[rng.random_range(0..AUTHORS.len())],
        lang: LANGS[rng.random_range(0..LANGS.len())],
        hashtags: &tags,
        mentions: &mentions,
        likes: rng.random_range(0..100),
    }
    .json()
}

/// Phase `k`'s traffic: event times over `[from_ms, from_ms + 20 s)`.
fn phase(sc: &Scenario, rng: &mut StdRng, k: usize, from_ms: i64, partitions: i32) -> Phase {
    let span_ms = 20_000;
    let n = if sc.has(Shape::BurstsAndSilences) {
        [400, 10, 250][k % 3]
    } else {
        rng.random_range(60..=200)
    };
    let targets: Vec<i32> = if sc.has(Shape::OnePartition) {
        vec![rng.random_range(0..partitions)]
    } else if sc.has(Shape::SomeEmpty) && partitions > 1 {
        let mut all: Vec<i32> = (0..partitions).collect();
        all.shuffle(rng);
        all.truncate(rng.random_range(1..partitions as usize));
        all
    } else {
        (0..partitions).collect()
    };
    let mut by_partition: BTreeMap<i32, Vec<(i64, Vec<u8>)>> = BTreeMap::new();
    for i in 0..n {
        let mut at = from_ms + rng.random_range(0..span_ms);
        if sc.has(Shape::OutOfOrder) && rng.random_bool(0.1) {
            // Beyond the lateness: up to a whole phase back.
            at -= rng.random_range(0..=span_ms);
        }
        let p = targets[rng.random_range(0..targets.len())];
        let v = tweet(rng, format!("{}-{k}-{i}", sc.seed), at);
        by_partition.entry(p).or_default().push((at, v));
    }
    let mut ours = Vec::new();
    for (p, mut list) in by_partition {
        if sc.has(Shape::OutOfOrder) {
            // Shuffled within a partition: out of order within the lateness
            // and beyond it.
            list.shuffle(rng);
        } else {
            list.sort_by_key(|(at, _)| *at);
        }
        for (_, v) in list {
            if sc.has(Shape::Duplicates) && rng.random_bool(0.1) {
                ours.push((p, v.clone()));
            }
            ours.push((p, v));
        }
    }
    let mut extra = |ours: &mut Vec<(i32, Vec<u8>)>, v: Vec<u8>| {
        let p = rng.random_range(0..partitions);
        let at = rng.random_range(0..=ours.len());
        ours.insert(at, (p, v));
    };
    if sc.has(Shape::FarFutureAndAncient) {
        for (i, at) in [
            "9999-12-31T23:59:59Z",
            "2099-01-01T00:00:00Z",
            "1970-01-01T00:00:01Z",
            "2001-09-09T01:46:40Z",
        ]
        .iter()
        .enumerate()
        {
            let v = serde_json::json!({"id": format!("odd-{k}-{i}"), "text": "odd time", "created_at": at, "author_id": "odd"});
            extra(&mut ours, serde_json::to_vec(&v).expect("json"));
        }
    }
    if sc.has(Shape::Malformed) {
        for junk in [
            b"{not json".to_vec(),
            br#"{"id":"nt","text":"no time"}"#.to_vec(),
            br#"{"id":"bt","text":"bad","created_at":"yesterday"}"#.to_vec(),
            br#"[1,2,3]"#.to_vec(),
            Vec::new(),
        ] {
            extra(&mut ours, junk);
        }
    }
    let theirs = if sc.has(Shape::SecondStream) {
        (0..n / 2)
            .map(|i| {
                let at = from_ms + rng.random_range(0..span_ms);
                let v = tweet(rng, format!("theirs-{k}-{i}"), at);
                (rng.random_range(0..partitions), v)
            })
            .collect()
    } else {
        Vec::new()
    };
    Phase { ours, theirs }
}

struct Run {
    sc: Scenario,
    topic: String,
    output: String,
    /// The group's name before the window generation, as the operator
    /// builds it.
    group: String,
    /// The window shape (size, slide) of each generation, the current last.
    shapes: Vec<(i64, i64)>,
    replicas: Vec<Replica>,
    started: usize,
}

/// The generation name the operator and the consumer give a window shape.
fn generation((size, slide): (i64, i64)) -> String {
    let seconds = |s: i64| Duration::from_secs(s.unsigned_abs());
    WindowSpec {
        size: seconds(size),
        slide: seconds(slide),
        allowed_lateness: Duration::ZERO,
        idle_timeout: Duration::ZERO,
        max_future_skew: None,
    }
    .generation()
}

impl Run {
    fn shape(&self) -> (i64, i64) {
        self.shapes.last().copied().unwrap_or((10, 10))
    }

    fn group_id(&self) -> String {
        format!("{}.{}", self.group, generation(self.shape()))
    }

    fn args(&self) -> Vec<String> {
        let group = self.group_id();
        let args = ReplicaArgs {
            topic: &self.topic,
            stream: STREAM,
            group: &group,
            output: &self.output,
            window: self.shape(),
        };
        let (lateness, idle) = (self.sc.lateness_s.to_string(), IDLE_S.to_string());
        args.with(&[
            "--allowed-lateness-seconds",
            &lateness,
            "--idle-partition-seconds",
            &idle,
            "--threads",
            "1",
        ])
    }

    fn start_replica(&mut self) {
        let name = format!("{}-r{}", self.group_id(), self.started);
        self.started += 1;
        let r = Replica::start(&name, &self.args());
        self.replicas.push(r);
    }

    async fn operate(&mut self, op: Op, rng: &mut StdRng, partitions: &mut i32) {
        match op {
            Op::None => {}
            Op::KillReplica => {
                if !self.replicas.is_empty() {
                    let i = rng.random_range(0..self.replicas.len());
                    self.replicas[i].kill();
                    tokio::time::sleep(Duration::from_millis(rng.random_range(0..2000))).await;
                    // Restarted under the same name: it fences what the
                    // killed process left open.
                    self.replicas[i].spawn();
                }
            }
            Op::AddReplica => {
                if (self.replicas.len() as i32) < *partitions {
                    self.start_replica();
                }
            }
            Op::ScaleToZeroAndBack => {
                let n = self.replicas.len();
                for r in &mut self.replicas {
                    r.terminate().await;
                }
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..3000))).await;
                for r in &mut self.replicas {
                    r.spawn();
                }
                assert_eq!(self.replicas.len(), n);
            }
            Op::GrowPartitions => {
                let grown = (*partitions + rng.random_range(1..=3)).min(12);
                if grown > *partitions {
                    let admin = kafka::admin();
                    let r = admin
                        .create_partitions(
                            &[rdkafka::admin::NewPartitions::new(
                                &self.topic,
                                grown as usize,
                            )],
                            &rdkafka::admin::AdminOptions::new(),
                        )
                        .await
                        .expect("CreatePartitions request");
                    for r in r {
                        r.unwrap_or_else(|(t, e)| panic!("growing {t}: {e}"));
                    }
                    *partitions = grown;
                }
            }
            Op::WindowChange => {
                let (size, _) = self.shape();
                let new_size = [10, 20, 30]
                    .into_iter()
                    .filter(|s| *s != size)
                    .collect::<Vec<i64>>()[rng.random_range(0..2)];
                let slide = if rng.random_bool(0.3) {
                    new_size / 2
                } else {
                    new_size
                };
                // A rolling update: the old replicas stop, as many of the
                // new generation start.
                let n = self.replicas.len();
                for r in &mut self.replicas {
                    r.terminate().await;
                }
                self.replicas.clear();
                self.shapes.push((new_size, slide));
                for _ in 0..n {
                    self.start_replica();
                }
            }
            Op::BrokerKill => {
                let down = rng.random_range(0..3).to_string();
                let script = concat!(env!("CARGO_MANIFEST_DIR"), "/env/kill-broker");
                let status = tokio::task::spawn_blocking(move || {
                    std::process::Command::new("bash")
                        .args([script, "1", &down])
                        .status()
                })
                .await
                .expect("kill-broker task")
                .expect("running tests/env/kill-broker");
                assert!(status.success(), "tests/env/kill-broker failed");
            }
            Op::AbortedTransaction => {
                let v = serde_json::json!({"id": "aborted", "text": "never committed", "created_at": truth::rfc3339(base_ms()), "author_id": "ghost"});
                let records: Vec<(i32, Vec<u8>)> = (0..*partitions)
                    .map(|p| (p, serde_json::to_vec(&v).expect("json")))
                    .collect();
                produce_aborted(&self.topic, &records).await;
            }
        }
    }
}

/// Ten minutes ago, on a minute boundary.
fn base_ms() -> i64 {
    let t = chrono::Utc::now().timestamp_millis() - 600_000;
    t - t.rem_euclid(60_000)
}

/// What the check found; `Err` names the first broken rule.
struct Outcome {
    windows: usize,
    late: u64,
}

/// Every published window holds at most what the truth has (a generation
/// that was replaced publishes only some windows).
fn check_within(got: &BTreeMap<i64, Window>, want: &BTreeMap<i64, Window>) -> Result<(), String> {
    let le = |a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>| {
        a.iter().all(|(k, n)| b.get(k).is_some_and(|m| n <= m))
    };
    let empty = Window::default();
    for (start, g) in got {
        let w = want.get(start).unwrap_or(&empty);
        let within = g.count <= w.count
            && g.unique_authors <= w.unique_authors
            && g.likes <= w.likes
            && le(&g.hashtags, &w.hashtags)
            && le(&g.mentions, &w.mentions)
            && le(&g.languages, &w.languages);
        if !within {
            return Err(format!(
                "window {} holds more than the truth: published {g:?}, truth {w:?}",
                truth::rfc3339(*start)
            ));
        }
    }
    Ok(())
}

fn check(got: &BTreeMap<i64, Window>, want: &BTreeMap<i64, Window>) -> Result<Outcome, String> {
    check_within(got, want)?;
    let late: u64 = got.values().map(|g| g.late).sum();
    let counted: u64 = got.values().map(|g| g.count).sum();
    let truth: u64 = want.values().map(|w| w.count).sum();
    if counted + late != truth {
        let windows: Vec<String> = want
            .keys()
            .chain(got.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(|k| {
                let (g, w) = (got.get(k), want.get(k));
                format!(
                    "{} {}/{}+{}",
                    truth::rfc3339(*k),
                    w.map_or(0, |w| w.count),
                    g.map_or(0, |g| g.count),
                    g.map_or(0, |g| g.late)
                )
            })
            .collect();
        return Err(format!(
            "published count {counted} + late {late} != truth {truth} (window memberships); \
             per window (truth/published+late): {}",
            windows.join(", ")
        ));
    }
    if late == 0 && got.iter().any(|(k, g)| want.get(k) != Some(g)) {
        truth::assert_exact(got, want);
    }
    Ok(Outcome {
        windows: want.len(),
        late,
    })
}

async fn run(sc: Scenario) -> Result<Outcome, String> {
    let mut rng = StdRng::seed_from_u64(sc.seed ^ 0x5eed);
    let mut run = Run {
        topic: unique_name(&format!("camp{}", sc.seed)),
        output: unique_name(&format!("camp{}-out", sc.seed)),
        group: unique_name(&format!("camp{}", sc.seed)),
        shapes: vec![(sc.size_s, sc.slide_s)],
        replicas: Vec::new(),
        started: 0,
        sc: sc.clone(),
    };
    kafka::create_topic(&run.topic, sc.partitions, 1).await;
    kafka::create_topic(&run.output, 1, 1).await;
    for _ in 0..sc.replicas {
        run.start_replica();
    }
    let mut partitions = sc.partitions;
    let t0 = base_ms();
    for k in 0..PHASES {
        let from = t0 + k as i64 * 20_000;
        let ph = phase(&sc, &mut rng, k, from, partitions);
        produce_as(&run.topic, Some(STREAM), &ph.ours).await;
        if !ph.theirs.is_empty() {
            produce_as(&run.topic, Some("other"), &ph.theirs).await;
        }
        tokio::time::sleep(Duration::from_millis(sc.pauses_ms[k])).await;
        if let Some(op) = sc.ops.get(k) {
            run.operate(*op, &mut rng, &mut partitions).await;
        }
    }
    let raw = read_committed_records(&run.topic).await;
    let future_after_ms = chrono::Utc::now().timestamp_millis() + 300_000;
    let truth_of = |(size, slide): (i64, i64)| {
        let rules = Rules {
            stream: STREAM,
            size_ms: size * 1000,
            slide_ms: slide * 1000,
            future_after_ms,
        };
        truth::expected(&raw, &rules)
    };
    let last = run.shape();
    let want = truth_of(last);
    let total: u64 = want.values().map(|w| w.count).sum();
    // Every membership is either counted or late once all windows are out:
    // within window + lateness + idle timeout of the last one, and the
    // commits and merges after it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let got = loop {
        let output = run.output.clone();
        let got = tokio::task::spawn_blocking(move || read_output(&output))
            .await
            .expect("reader task");
        let got = truth::published_by_generation(STREAM, &got);
        let sum: u64 = got
            .get(&generation(last))
            .map_or(0, |g| g.values().map(|g| g.count + g.late).sum());
        if sum >= total || tokio::time::Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    for r in &mut run.replicas {
        r.kill();
    }
    // Earlier generations were replaced part-way: what they published holds
    // no more than the truth; the last one recomputed everything.
    for (name, windows) in &got {
        let shape = run.shapes.iter().rev().find(|s| generation(**s) == *name);
        let Some(shape) = shape else {
            return Err(format!("windows of an unknown generation {name}"));
        };
        if *shape != last {
            check_within(windows, &truth_of(*shape))?;
        }
    }
    let empty = BTreeMap::new();
    check(got.get(&generation(last)).unwrap_or(&empty), &want)
}

/// Scenarios share the broker; one that kills it runs alone.
static BROKER: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

struct Tally {
    scenarios: usize,
    windows: usize,
    late: u64,
    shapes: BTreeMap<Shape, usize>,
    ops: BTreeMap<Op, usize>,
}

async fn campaign(seeds: Vec<u64>) {
    let mut tally = Tally {
        scenarios: 0,
        windows: 0,
        late: 0,
        shapes: BTreeMap::new(),
        ops: BTreeMap::new(),
    };
    let mut failures = Vec::new();
    let mut results = futures::stream::iter(seeds.iter().map(|s| Scenario::draw(*s)))
        .map(|sc| async move {
            // A broker kill would hit every scenario running at the time.
            let r = if sc.ops.contains(&Op::BrokerKill) {
                let _alone = BROKER.write().await;
                tokio::spawn(run(sc.clone())).await
            } else {
                let _shared = BROKER.read().await;
                tokio::spawn(run(sc.clone())).await
            };
            (sc, r)
        })
        .buffer_unordered(PARALLEL);
    while let Some((sc, r)) = results.next().await {
        eprintln!("scenario {sc}");
        let r = match r {
            Ok(r) => r,
            Err(e) => Err(format!("panicked: {e}")),
        };
        match r {
            Ok(o) => {
                tally.scenarios += 1;
                tally.windows += o.windows;
                tally.late += o.late;
                for s in &sc.shapes {
                    *tally.shapes.entry(*s).or_default() += 1;
                }
                for op in &sc.ops {
                    *tally.ops.entry(*op).or_default() += 1;
                }
            }
            Err(e) => failures.push(format!("{sc}\n  {e}\n  replay: {}", sc.replay_command())),
        }
    }
    eprintln!(
        "campaign: {} scenarios passed, {} windows checked, {} late memberships; shapes {:?}; ops {:?}",
        tally.scenarios, tally.windows, tally.late, tally.shapes, tally.ops
    );
    assert!(
        failures.is_empty(),
        "{} of {} scenarios failed:\n{}",
        failures.len(),
        seeds.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_scenarios_publish_every_window_exactly_once() {
    let seeds: Vec<u64> = match std::env::var("TWS_CAMPAIGN_SEED") {
        // One seed, or several separated by commas.
        Ok(s) => s
            .split(',')
            .map(|s| s.trim().parse().expect("TWS_CAMPAIGN_SEED is a number"))
            .collect(),
        Err(_) => {
            let mut seeds: Vec<u64> = (1..=20).collect();
            if let Ok(n) = std::env::var("TWS_CAMPAIGN_SCENARIOS") {
                let n: u64 = n.parse().expect("TWS_CAMPAIGN_SCENARIOS is a number");
                let base = chrono::Utc::now().timestamp_millis() as u64 % 1_000_000 * 1000;
                eprintln!("campaign: {n} more scenarios from seed {base}");
                seeds.extend(base..base + n);
            }
            seeds
        }
    };
    campaign(seeds).await;
}
