//! End to end, as a user meets the product: `helm install` the chart,
//! create the credentials Secret, `kubectl apply -f examples/superbowl.yaml`,
//! and read window results from the output topic.
//!
//! Everything is real except where this machine cannot be: the chart's
//! operator and the Deployments it renders run as local processes started
//! with exactly their containers' command, args and env (`LocalPods` plays
//! the kubelet, since kwok runs no containers), the operator authenticating
//! with the chart's ServiceAccount token and nothing more; and the X API is
//! the test suite's v2 server, which checks the producer's OAuth 1.0a
//! signatures.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use twitterstream_tests::k8s::{TestNamespace, admin_client};
use twitterstream_tests::local_pods::LocalPods;
use twitterstream_tests::xapi::{TweetSpec, UserKeys, XApiServer};
use twitterstream_tests::{eventually, kafka, kafka_brokers, unique_name};
use twitterstream_workers::consumer::aggregate::WindowResult;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// Writes straight to stderr: libtest captures `println!`/`eprintln!` of
/// passing tests, and the README's test command should show what was checked.
fn report(line: &str) {
    let _ = writeln!(std::io::stderr(), "[e2e] {line}");
}

fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    if let Some(input) = stdin
        && let Some(mut pipe) = child.stdin.take()
    {
        pipe.write_all(input.as_bytes()).expect("writing stdin");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("waiting for command");
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn kubectl(args: &[&str], stdin: Option<&str>) -> String {
    String::from_utf8_lossy(&run("kubectl", args, stdin).stdout).into_owned()
}

/// examples/superbowl.yaml as a user on this machine would adapt it: the
/// local brokers and topics of its own (the broker is shared by all tests).
/// (The X API address is the chart's `xApiBaseUrl`.)
fn superbowl_manifest(topic: &str) -> serde_yaml::Value {
    let text = std::fs::read_to_string(format!("{ROOT}/examples/superbowl.yaml"))
        .expect("reading examples/superbowl.yaml");
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("example YAML");
    let spec = &mut doc["spec"];
    let brokers: Vec<serde_yaml::Value> = kafka_brokers()
        .split(',')
        .map(|b| b.to_string().into())
        .collect();
    spec["kafka"]["brokers"] = brokers.into();
    spec["kafka"]["topic"] = topic.into();
    spec["kafka"]["outputTopic"] = format!("{topic}-windows").into();
    doc
}

/// Per window start: (count, likes, languages, hashtags).
type Expected = BTreeMap<DateTime<Utc>, (u64, u64, BTreeMap<String, u64>, BTreeMap<String, u64>)>;

/// The corpus: 180 tweets over six 10 s windows; a third are below the
/// example's minFaves (60,000), which the producer filters out, and a quarter
/// are in Spanish, which the search's `lang:en` excludes.
fn corpus(base: DateTime<Utc>) -> (Vec<TweetSpec>, Expected) {
    let tags = ["SBLVIII", "Chiefs", "49ers", "HalftimeShow"];
    let mut tweets = Vec::new();
    let mut want = Expected::new();
    for i in 0..180u32 {
        let at = base + TimeDelta::milliseconds(i64::from(i) * 333);
        let tag = tags[(i as usize * 7 + i as usize / 5) % tags.len()];
        let likes = if i % 3 == 0 {
            59_999
        } else {
            60_000 + u64::from(i)
        };
        let lang = if i % 4 == 0 { "es" } else { "en" };
        let mut t = TweetSpec::new(at, (i % 1000) as u16, format!("superbowl tonight #{tag}"))
            .lang(lang)
            .likes(likes);
        t.author_id = format!("{}", 1000 + i % 17);
        // The example asks for `lang:en` and minFaves 60,000.
        if likes >= 60_000 && lang == "en" {
            let w = at.duration_trunc(TimeDelta::seconds(10)).expect("window");
            let e = want.entry(w).or_default();
            e.0 += 1;
            e.1 += likes;
            *e.2.entry(lang.to_string()).or_default() += 1;
            // Hashtags count case-insensitively, as on X.
            *e.3.entry(tag.to_lowercase()).or_default() += 1;
        }
        tweets.push(t);
    }
    // Later tweets move event time past the six windows. Each consumer
    // replica closes windows by the watermark of its own partitions (idle
    // ones do not hold it back, but do not advance it either, as in Flink
    // and Kafka Streams), so every partition needs one: 30 tweets leave a
    // partition without one with odds of 3 * (2/3)^30, about 1 in 60,000.
    for k in 0..30u16 {
        tweets.push(
            TweetSpec::new(
                base + TimeDelta::seconds(100),
                900 + k,
                "superbowl after the game",
            )
            .likes(70_000),
        );
    }
    (tweets, want)
}

async fn output_windows(topic: &str, stream: &str) -> BTreeMap<String, WindowResult> {
    let mut out = BTreeMap::new();
    for (key, value) in kafka::read_committed(topic).await {
        let r: WindowResult = serde_json::from_slice(&value).expect("window result JSON");
        assert_eq!(
            key,
            format!("{stream}@{}/w10s", r.window_start),
            "record key"
        );
        assert!(
            out.insert(r.window_start.clone(), r).is_none(),
            "a window was published twice"
        );
    }
    out
}

fn condition(ns: &str, name: &str, ty: &str) -> Option<(String, String)> {
    let out = Command::new("kubectl")
        .args([
            "-n",
            ns,
            "get",
            "tws",
            name,
            "-o",
            &format!(
                "jsonpath={{.status.conditions[?(@.type==\"{ty}\")].status}}/{{.status.conditions[?(@.type==\"{ty}\")].reason}}"
            ),
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (status, reason) = text.split_once('/')?;
    (!status.is_empty()).then(|| (status.to_string(), reason.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn helm_install_then_superbowl_example_publishes_exact_windows() {
    let client = admin_client().await;
    let ns = TestNamespace::create(&client, "e2e").await;
    let release = unique_name("tws").chars().take(40).collect::<String>();

    // 1. The chart, watching this namespace only, its producers pointed at
    // the test suite's X API server (the operator's setting: a resource
    // cannot send its credentials elsewhere).
    let xapi = XApiServer::start().await;
    let watch = format!("{{{}}}", ns.name);
    let base = xapi.base_url();
    let mut chart = twitterstream_tests::chart::install(
        &release,
        &ns.name,
        &[("watchNamespaces", &watch), ("xApiBaseUrl", &base)],
    );
    report(&format!("helm install {release}: deployed"));

    // 2. The credentials Secret.
    let keys = UserKeys::new("ck-e2e", "cs-e2e", "at-e2e", "ats-e2e");
    xapi.set_user(Some(keys.clone()));
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "x-api"},
        "stringData": {
            "consumerKey": keys.consumer_key, "consumerSecret": keys.consumer_secret,
            "accessToken": keys.token, "accessTokenSecret": keys.token_secret,
        }
    }))
    .expect("Secret");
    Api::<Secret>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &secret)
        .await
        .expect("creating the credentials Secret");
    let base = (Utc::now() - TimeDelta::seconds(300))
        .duration_trunc(TimeDelta::seconds(10))
        .expect("aligned base");
    let (tweets, want) = corpus(base);
    xapi.add(tweets);

    // 3. Every Deployment of the namespace (the chart's operator, then the
    //    pipeline it renders) runs as local processes.
    let pods = LocalPods::start(client.clone(), &ns.name, None);
    let operator = eventually(
        "the chart's operator running locally",
        Duration::from_secs(60),
        || {
            let p = pods
                .pods()
                .into_iter()
                .find(|p| p.argv[0] == "twitterstream-operator");
            std::future::ready(p)
        },
    )
    .await;
    report(&format!("operator: {}", operator.argv.join(" ")));
    assert!(
        operator
            .argv
            .iter()
            .any(|a| a.starts_with("--watch-namespaces") && a.ends_with(&ns.name)),
        "the chart passes --watch-namespaces"
    );

    // 4. kubectl apply -f examples/superbowl.yaml.
    let topic = unique_name("e2e-raw");
    let output = format!("{topic}-windows");
    let manifest = serde_yaml::to_string(&superbowl_manifest(&topic)).expect("YAML");
    kubectl(&["-n", &ns.name, "apply", "-f", "-"], Some(&manifest));

    eventually("tws/superbowl Ready=True", Duration::from_secs(120), || {
        std::future::ready(
            (condition(&ns.name, "superbowl", "Ready").map(|c| c.0) == Some("True".into()))
                .then_some(()),
        )
    })
    .await;
    let table = kubectl(&["-n", &ns.name, "get", "tws"], None);
    report(&format!("kubectl get tws:\n{table}"));
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ready_col = header
        .iter()
        .position(|h| *h == "READY")
        .expect("READY column");
    assert_eq!(row.get(ready_col), Some(&"True"), "{table}");

    // 5. The producer (1) and consumers (2) run with the rendered arguments.
    let producers = eventually(
        "1 producer and 2 consumers",
        Duration::from_secs(60),
        || {
            let p = pods.pods_of("superbowl-producer");
            let c = pods.pods_of("superbowl-consumer");
            std::future::ready((p.len() == 1 && c.len() == 2).then_some(p))
        },
    )
    .await;
    report(&format!("producer: {}", producers[0].argv.join(" ")));
    assert!(
        !producers[0]
            .argv
            .iter()
            .any(|a| a.contains(&keys.consumer_secret)),
        "credentials never on the command line"
    );

    // 6. Window results with the expected totals.
    let n = want.len();
    let got = eventually(
        "six closed windows on the output topic",
        Duration::from_secs(180),
        || {
            let output = output.clone();
            async move {
                let w = output_windows(&output, "superbowl").await;
                (w.len() >= n).then_some(w)
            }
        },
    )
    .await;
    let mut total = 0;
    for (start, (count, likes, langs, tags)) in &want {
        let key = start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let r = got
            .get(&key)
            .unwrap_or_else(|| panic!("no window {key}; got {:?}", got.keys()));
        assert_eq!(r.count, *count, "count of {key}");
        assert_eq!(r.likes, *likes, "likes of {key}");
        assert_eq!(&r.languages, langs, "languages of {key}");
        let hashtags: BTreeMap<String, u64> = r
            .hashtags
            .iter()
            .map(|t| (t.tag.clone(), t.count))
            .collect();
        assert_eq!(&hashtags, tags, "hashtags of {key}");
        assert_eq!(r.late, 0, "late of {key}");
        total += r.count;
        report(&format!(
            "window {key}: count {} (expected {count}), likes {} (expected {likes}), languages {:?}, hashtags {:?}",
            r.count, r.likes, r.languages, hashtags
        ));
    }
    report(&format!(
        "{} windows, {total} tweets: equal to the corpus filtered by lang:en and minFaves (90 of 180 kept)",
        want.len()
    ));
    assert!(
        xapi.requests()
            .iter()
            .all(|r| r.param("query").is_none_or(|q| q.contains("superbowl"))),
        "every search asked for the keyword"
    );

    // 7. An update rolls the producer onto the new keyword.
    let mut changed = superbowl_manifest(&topic);
    changed["spec"]["keyword"] = "superbowl halftime".into();
    kubectl(
        &["-n", &ns.name, "apply", "-f", "-"],
        Some(&serde_yaml::to_string(&changed).expect("YAML")),
    );
    let rolled = eventually(
        "the producer restarted with the new keyword",
        Duration::from_secs(60),
        || {
            let p = pods.pods_of("superbowl-producer");
            std::future::ready(
                p.into_iter()
                    .find(|p| p.argv.iter().any(|a| a == "--keyword=superbowl halftime")),
            )
        },
    )
    .await;
    assert_ne!(rolled.template, producers[0].template, "a new pod template");
    eventually(
        "a search for the new keyword",
        Duration::from_secs(60),
        || {
            std::future::ready(
                xapi.requests()
                    .iter()
                    .any(|r| {
                        r.param("query")
                            .is_some_and(|q| q.contains("superbowl halftime"))
                    })
                    .then_some(()),
            )
        },
    )
    .await;
    report("update: the producer rolled to keyword \"superbowl halftime\" and searched for it");

    // 8. Suspend: no pods, Ready=False Suspended; resume is covered by the operator tests.
    kubectl(
        &[
            "-n",
            &ns.name,
            "patch",
            "tws",
            "superbowl",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"suspend":true}}"#,
        ],
        None,
    );
    eventually(
        "suspended: no local pods, Ready=False/Suspended",
        Duration::from_secs(60),
        || {
            let none = pods.pods_of("superbowl-producer").is_empty()
                && pods.pods_of("superbowl-consumer").is_empty();
            let cond = condition(&ns.name, "superbowl", "Ready");
            std::future::ready(
                (none && cond == Some(("False".into(), "Suspended".into()))).then_some(()),
            )
        },
    )
    .await;
    report("suspend: 0 producers, 0 consumers, Ready=False reason Suspended");

    // 9. Delete: the garbage collector removes the Deployments.
    kubectl(
        &["-n", &ns.name, "delete", "tws", "superbowl", "--wait=true"],
        None,
    );
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns.name);
    eventually(
        "the pipeline's Deployments deleted",
        Duration::from_secs(60),
        || {
            let deployments = deployments.clone();
            async move {
                let names: Vec<String> = deployments
                    .list(&Default::default())
                    .await
                    .ok()?
                    .items
                    .iter()
                    .map(|d| d.name_any())
                    .collect();
                (!names.iter().any(|n| n.starts_with("superbowl-"))).then_some(())
            }
        },
    )
    .await;
    report("delete: superbowl-producer and superbowl-consumer garbage-collected");

    let errors = pods.errors();
    pods.stop();
    // Sync errors are retried (the flow above is the proof); shown for diagnosis.
    if !errors.is_empty() {
        report(&format!("local pods retried after: {errors:?}"));
    }
    chart.uninstall();
    report(&format!("helm uninstall {release}: done"));
}
