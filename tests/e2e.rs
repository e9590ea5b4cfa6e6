//! End to end, as a user meets the product: `helm install` the chart,
//! create the credentials Secret, `kubectl apply -f examples/superbowl.yaml`,
//! and read window results from the output topic.
//!
//! Everything is real except the X API, which is the test suite's v2 server
//! (it checks the producer's OAuth 1.0a signatures): the chart's operator and
//! the Deployments it renders run as pods on the environment's real node, in
//! containers of the images built from the Dockerfiles (`tests/env/images`),
//! the operator with its ServiceAccount token and in-cluster config, the
//! producer with the kubelet-mounted credentials Secret. Only when
//! `tests/env/up` could not start that node (it says why) do they run as local
//! processes with exactly their containers' command, args and env
//! (`LocalPods` plays the kubelet).

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;
use twitterstream_tests::k8s::admin_client;
use twitterstream_tests::pods::{NamespacePods, namespace_on_real_node};
use twitterstream_tests::postgres::Database;
use twitterstream_tests::process::run;
use twitterstream_tests::xapi::{TweetSpec, UserKeys, XApiServer};
use twitterstream_tests::{eventually, kafka, kafka_brokers, unique_name};
use twitterstream_workers::consumer::aggregate::WindowResult;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// Writes straight to stderr: libtest captures `println!`/`eprintln!` of
/// passing tests, and the README's test command should show what was checked.
fn report(line: &str) {
    let _ = writeln!(std::io::stderr(), "[e2e] {line}");
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

/// `kubectl apply -f -` of one document.
fn apply(ns: &str, doc: &serde_yaml::Value) {
    let yaml = serde_yaml::to_string(doc).expect("YAML");
    kubectl(&["-n", ns, "apply", "-f", "-"], Some(&yaml));
}

/// `kubectl patch` of a stream's `spec.suspend`.
fn set_suspend(ns: &str, name: &str, suspend: bool) {
    let patch = format!(r#"{{"spec":{{"suspend":{suspend}}}}}"#);
    kubectl(
        &[
            "-n", ns, "patch", "tws", name, "--type", "merge", "-p", &patch,
        ],
        None,
    );
}

/// The example's credentials Secret (`x-api`) holding `keys`.
fn credentials_secret(keys: &UserKeys) -> Secret {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "x-api"},
        "stringData": {
            "consumerKey": keys.consumer_key, "consumerSecret": keys.consumer_secret,
            "accessToken": keys.token, "accessTokenSecret": keys.token_secret,
        }
    }))
    .expect("Secret")
}

/// The user's Secret for `spec.sink.postgres`: the connection's keys and
/// the CA of the server's certificate.
fn postgres_secret(db: &Database) -> Secret {
    let file = |k: &str| {
        std::fs::read_to_string(db.secret_dir.join(k)).unwrap_or_else(|e| panic!("{k}: {e}"))
    };
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "pg-writer"},
        "stringData": {
            "host": file("host"), "port": file("port"), "database": file("database"),
            "user": file("user"), "password": file("password"), "ca.crt": file("ca.crt"),
        }
    }))
    .expect("Secret")
}

/// The host PID of a real pod's (first) container, from the CRI
/// (`crictl inspect`, through the node's containerd).
fn container_pid(ns: &str, pod: &str) -> u32 {
    let id = kubectl(
        &[
            "-n",
            ns,
            "get",
            "pod",
            pod,
            "-o",
            "jsonpath={.status.containerStatuses[0].containerID}",
        ],
        None,
    );
    let id = id.trim().trim_start_matches("containerd://");
    let crictl = std::env::var("TWS_CRICTL").unwrap_or_else(|_| "crictl".into());
    let out = on_node(&[&crictl, "inspect", id]);
    let info: serde_json::Value = serde_json::from_slice(&out).expect("crictl inspect JSON");
    let pid = info["info"]["pid"].as_u64().expect("the container's pid");
    u32::try_from(pid).expect("a pid")
}

/// Runs a command on the real node: here (tests/env's node shares this
/// machine's PID namespace and mounts), or through `TWS_NODE_EXEC` (kind's
/// `docker exec <node>`, tests/kind/e2e). Returns its stdout.
fn on_node(argv: &[&str]) -> Vec<u8> {
    let prefix = std::env::var("TWS_NODE_EXEC").unwrap_or_default();
    let mut all: Vec<&str> = prefix.split_whitespace().collect();
    all.extend_from_slice(argv);
    run(all[0], &all[1..], None).stdout
}

/// What runc enforced on a running container, read from the node's /proc:
/// its user, its effective capabilities, no_new_privs, and whether its root
/// file system is mounted read-only.
fn enforced(pid: u32) -> (String, String, String, bool) {
    let status =
        String::from_utf8_lossy(&on_node(&["cat", &format!("/proc/{pid}/status")])).into_owned();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    let mountinfo =
        String::from_utf8_lossy(&on_node(&["cat", &format!("/proc/{pid}/mountinfo")])).into_owned();
    // Field 5 is the mount point, field 6 its options.
    let root_ro = mountinfo.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(4) == Some(&"/") && f.get(5).is_some_and(|o| o.split(',').any(|x| x == "ro"))
    });
    (field("Uid"), field("CapEff"), field("NoNewPrivs"), root_ro)
}

/// `kubectl logs -f` of a pod, until its container ends.
fn follow_logs(ns: &str, pod: &str) -> std::process::Child {
    Command::new("kubectl")
        .args(["-n", ns, "logs", "-f", pod])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl logs -f")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn helm_install_then_superbowl_example_publishes_exact_windows() {
    let client = admin_client().await;
    let ns = namespace_on_real_node(&client, "e2e").await;
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
    Api::<Secret>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &credentials_secret(&keys))
        .await
        .expect("creating the credentials Secret");
    let base = (Utc::now() - TimeDelta::seconds(300))
        .duration_trunc(TimeDelta::seconds(10))
        .expect("aligned base");
    let (tweets, want) = corpus(base);
    xapi.add(tweets);

    // 3. Every Deployment of the namespace (the chart's operator, then the
    //    pipeline it renders) runs as pods on the real node (or local processes).
    let pods = NamespacePods::start(client.clone(), &ns.name);
    let operator = eventually(
        "the chart's operator running",
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

    // The windows also go to PostgreSQL, through a Secret of the user's: a
    // database and role of this test's on the environment's server (TLS,
    // verify-full against the CA in the Secret).
    let db = Database::create("e2e").await;
    Api::<Secret>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &postgres_secret(&db))
        .await
        .expect("creating the PostgreSQL Secret");

    // 4. kubectl apply -f examples/superbowl.yaml.
    let topic = unique_name("e2e-raw");
    let output = format!("{topic}-windows");
    let mut doc = superbowl_manifest(&topic);
    doc["spec"]["sink"] = serde_yaml::from_str("postgres: {secretName: pg-writer}").expect("YAML");
    let manifest = serde_yaml::to_string(&doc).expect("YAML");
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
    let mut killed = None;
    if pods.is_real() {
        let node = twitterstream_tests::pods::real_node().unwrap_or_default();
        report(&format!(
            "kubectl get nodes -o wide:\n{}",
            kubectl(&["get", "nodes", "-o", "wide"], None)
        ));
        let selector = format!("spec.nodeName={node}");
        let wide = kubectl(
            &[
                "get",
                "pods",
                "-A",
                "-o",
                "wide",
                "--field-selector",
                &selector,
            ],
            None,
        );
        report(&format!(
            "kubectl get pods -A -o wide --field-selector {selector}:\n{wide}"
        ));
        for what in ["-operator-", "superbowl-producer-", "superbowl-consumer-"] {
            assert!(
                wide.lines().any(|l| l.starts_with(&format!("{} ", ns.name))
                    && l.contains(what)
                    && l.contains(" Running ")),
                "no {what} pod Running on {node}:\n{wide}"
            );
        }
        // runc enforces the pod's securityContext: runAsUser 65532, no
        // capabilities, no_new_privs, a read-only root file system.
        for p in [&producers[0], &pods.pods_of("superbowl-consumer")[0]] {
            let (uid, cap, nnp, ro) = enforced(container_pid(&ns.name, &p.name));
            report(&format!(
                "{}: Uid {uid}, CapEff {cap}, NoNewPrivs {nnp}, root read-only {ro}",
                p.name
            ));
            assert_eq!(uid, "65532 65532 65532 65532", "{} runs as 65532", p.name);
            assert_eq!(cap, "0000000000000000", "{} has no capabilities", p.name);
            assert_eq!(nnp, "1", "{} cannot gain privileges", p.name);
            assert!(ro, "{}'s root file system is read-only", p.name);
        }
        // A consumer killed mid-run: the kubelet restarts its container, and
        // the totals below stay exact.
        let victim = pods.pods_of("superbowl-consumer")[0].clone();
        let pid = container_pid(&ns.name, &victim.name);
        on_node(&["kill", "-KILL", &pid.to_string()]);
        report(&format!(
            "SIGKILL to consumer {} (host pid {pid})",
            victim.name
        ));
        killed = Some(victim.name);
    }

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
    // The same windows in PostgreSQL, one row each.
    let (rows, n_rows) = eventually(
        "the six windows in PostgreSQL",
        Duration::from_secs(60),
        || async {
            let (rows, n_rows) = db
                .windows("twitterstream.windows", &ns.name, "superbowl")
                .await;
            (rows.len() >= want.len()).then_some((rows, n_rows))
        },
    )
    .await;
    assert_eq!(n_rows, rows.len(), "a window has two rows");
    let output_now = output_windows(&output, "superbowl").await;
    for (start, row) in &rows {
        let key = twitterstream_tests::truth::rfc3339(*start);
        let r = output_now
            .get(&key)
            .unwrap_or_else(|| panic!("row {key} is not on the output topic"));
        let hashtags: BTreeMap<String, u64> = r
            .hashtags
            .iter()
            .map(|t| (t.tag.clone(), t.count))
            .collect();
        assert_eq!(
            (row.count, row.likes, &row.languages, &row.hashtags),
            (r.count, r.likes, &r.languages, &hashtags),
            "row {key} and the output topic"
        );
    }
    for start in want.keys() {
        let key = start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        assert!(
            rows.contains_key(&start.timestamp_millis()),
            "window {key} is not in PostgreSQL"
        );
    }
    report(&format!(
        "PostgreSQL {}: {n_rows} rows, one per window, each equal to the output topic's",
        db.name
    ));

    // 7. `kubectl get tws` shows the lag, the rate and the last window moving:
    // the operator samples the group's offsets every 15 s.
    let last_end = want.keys().max().copied().expect("windows") + TimeDelta::seconds(10);
    let throughput = eventually(
        "status.throughput with the last window closed and a rate",
        Duration::from_secs(90),
        || {
            let t = kubectl(
                &[
                    "-n",
                    &ns.name,
                    "get",
                    "tws",
                    "superbowl",
                    "-o",
                    "jsonpath={.status.throughput}",
                ],
                None,
            );
            let v: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
            let end = v["lastWindowEnd"]
                .as_str()
                .and_then(|e| DateTime::parse_from_rfc3339(e).ok())
                .map(|e| e.with_timezone(&Utc));
            // A rate needs two samples (the first comes 15 s after the
            // operator first saw the stream, the next 15 s later).
            let rate = v["publishedPerSecond"].as_f64().is_some();
            std::future::ready((end >= Some(last_end) && rate).then_some(v))
        },
    )
    .await;
    let later = kubectl(&["-n", &ns.name, "get", "tws"], None);
    report(&format!(
        "kubectl get tws, then (at Ready) and now:\n{table}{later}status.throughput: {throughput}"
    ));
    assert!(
        throughput["lag"].as_i64().is_some_and(|l| l >= 0),
        "{throughput}"
    );
    assert_ne!(table, later, "the table moved");
    if let Some(victim) = &killed {
        let restarted = eventually(
            "the kubelet restarting the killed consumer",
            Duration::from_secs(60),
            || {
                let p = pods
                    .pods_of("superbowl-consumer")
                    .into_iter()
                    .find(|p| &p.name == victim && p.restarts >= 1);
                std::future::ready(p)
            },
        )
        .await;
        report(&format!(
            "consumer {victim}: restarted by the kubelet ({} restart), totals above exact",
            restarted.restarts
        ));
        let logs = kubectl(
            &[
                "-n",
                &ns.name,
                "logs",
                "deployment/superbowl-consumer",
                "--tail=3",
            ],
            None,
        );
        assert!(
            !logs.trim().is_empty(),
            "kubectl logs returns the consumer's log"
        );
        report(&format!(
            "kubectl logs deployment/superbowl-consumer --tail=3:\n{logs}"
        ));
        let version = kubectl(
            &[
                "-n",
                &ns.name,
                "exec",
                &producers[0].name,
                "--",
                "twitterstream-producer",
                "--version",
            ],
            None,
        );
        assert!(
            version.contains("0."),
            "kubectl exec runs in the container: {version}"
        );
        report(&format!(
            "kubectl exec {} -- twitterstream-producer --version: {}",
            producers[0].name,
            version.trim()
        ));
    }
    assert!(
        xapi.requests()
            .iter()
            .all(|r| r.param("query").is_none_or(|q| q.contains("superbowl"))),
        "every search asked for the keyword"
    );

    // 6b. On the real node: the credentials Secret rotated in the API
    //     reaches the running producer through the kubelet's atomic update
    //     of its volume; the producer signs with the new keys, unrestarted.
    if pods.is_real() {
        let producer = pods.pods_of("superbowl-producer")[0].clone();
        let rotated = UserKeys::new("ck-e2e-2", "cs-e2e-2", "at-e2e-2", "ats-e2e-2");
        let secret = credentials_secret(&rotated);
        let since = xapi.requests().len();
        xapi.set_user(Some(rotated.clone()));
        Api::<Secret>::namespaced(client.clone(), &ns.name)
            .patch(
                "x-api",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&secret),
            )
            .await
            .expect("rotating the credentials Secret");
        let accepted = eventually(
            "a search signed with the rotated keys",
            Duration::from_secs(120),
            || {
                std::future::ready(xapi.requests().into_iter().skip(since).find(|r| {
                    r.status == 200
                        && matches!(&r.auth, twitterstream_tests::xapi::SeenAuth::OAuth1 { consumer_key, .. } if consumer_key == "ck-e2e-2")
                }))
            },
        )
        .await;
        let refused = xapi
            .requests()
            .into_iter()
            .skip(since)
            .filter(|r| r.status == 401)
            .count();
        let now = pods.pods_of("superbowl-producer");
        assert_eq!(now.len(), 1, "one producer");
        assert_eq!(now[0].name, producer.name, "the same producer pod");
        assert_eq!(
            now[0].restarts, producer.restarts,
            "the producer was not restarted"
        );
        report(&format!(
            "rotation: Secret x-api patched; {} answered 200 to consumer key {:?} after {refused} searches refused with the old keys; same pod, {} restarts",
            accepted.path, "ck-e2e-2", now[0].restarts
        ));
    }

    // 7. An update rolls the producer onto the new keyword.
    let mut changed = superbowl_manifest(&topic);
    changed["spec"]["keyword"] = "superbowl halftime".into();
    apply(&ns.name, &changed);
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

    // 8. Suspend: no pods, Ready=False Suspended.
    set_suspend(&ns.name, "superbowl", true);
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
    set_suspend(&ns.name, "superbowl", false);
    eventually(
        "resumed: 1 producer and 2 consumers",
        Duration::from_secs(90),
        || {
            let p = pods.pods_of("superbowl-producer").len();
            let c = pods.pods_of("superbowl-consumer").len();
            std::future::ready((p == 1 && c == 2).then_some(()))
        },
    )
    .await;
    report("resume: 1 producer, 2 consumers running again");

    // 9. Delete. On the real node the kubelet stops the pods with SIGTERM and
    //    the grace period, and the workers' logs (followed until their
    //    containers end) show them committing what is complete first.
    let followed: Vec<(String, std::process::Child)> = if pods.is_real() {
        pods.pods()
            .into_iter()
            .filter(|p| p.deployment.starts_with("superbowl-"))
            .map(|p| (p.name.clone(), follow_logs(&ns.name, &p.name)))
            .collect()
    } else {
        Vec::new()
    };
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
    for (pod, child) in followed {
        let out = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .expect("join")
            .expect("kubectl logs -f output");
        let log = String::from_utf8_lossy(&out.stdout);
        let last = if pod.contains("-producer-") {
            "producer stopped"
        } else {
            "shutting down: committing what is complete"
        };
        assert!(
            log.contains("SIGTERM") && log.contains(last),
            "{pod} ended without SIGTERM and \"{last}\" in its log:\n{log}"
        );
        report(&format!("delete: {pod} got SIGTERM, then \"{last}\""));
    }

    // 10. On the real node: a producer whose Secret lacks a key exits with
    //     the reason, which the kubelet makes the container's termination
    //     message, and the operator puts in the TwitterStream's status.
    if pods.is_real() {
        let incomplete: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "x-api-incomplete"},
            "stringData": {"consumerKey": "ck", "consumerSecret": "cs", "accessToken": "at"}
        }))
        .expect("Secret");
        Api::<Secret>::namespaced(client.clone(), &ns.name)
            .create(&PostParams::default(), &incomplete)
            .await
            .expect("creating the incomplete Secret");
        let mut manifest = superbowl_manifest(&unique_name("e2e-incomplete"));
        manifest["metadata"]["name"] = "incomplete".into();
        manifest["spec"]["credentialsSecret"] = "x-api-incomplete".into();
        manifest["spec"]["consumer"]["replicas"] = 1.into();
        apply(&ns.name, &manifest);
        let message = eventually(
            "ProducerReady=False with the producer's termination message",
            Duration::from_secs(180),
            || {
                let c = condition(&ns.name, "incomplete", "ProducerReady");
                let message = kubectl(
                    &[
                        "-n",
                        &ns.name,
                        "get",
                        "tws",
                        "incomplete",
                        "-o",
                        "jsonpath={.status.conditions[?(@.type==\"ProducerReady\")].message}",
                    ],
                    None,
                );
                std::future::ready(
                    (c.as_ref().is_some_and(|c| c.0 == "False")
                        && message.contains("accessTokenSecret"))
                    .then(|| format!("{c:?}: {message}")),
                )
            },
        )
        .await;
        report(&format!("incomplete credentials: ProducerReady {message}"));
        kubectl(
            &["-n", &ns.name, "delete", "tws", "incomplete", "--wait=true"],
            None,
        );
    }

    let errors = pods.errors();
    pods.stop();
    // Sync errors are retried (the flow above is the proof); shown for diagnosis.
    if !errors.is_empty() {
        report(&format!("local pods retried after: {errors:?}"));
    }
    chart.uninstall();
    report(&format!("helm uninstall {release}: done"));
}
