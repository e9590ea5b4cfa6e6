//! A release, installed the way a user installs it: `tests/release`
//! publishes both images and the chart to the environment's OCI registry
//! (tests/env/registry.sh), and the chart is installed from `oci://` on the
//! real node, which pulls every image by digest from that registry (nothing
//! is loaded into it for this test: the images go by the registry's name).
//! With a stream running, release X+1 is published and `helm upgrade`d to:
//! the operator and the workers roll onto the new digests, and every window
//! of the stream is exact, none lost, none twice. Then `helm uninstall`, and
//! what the install page says remains does.

use chrono::Utc;
use std::collections::BTreeMap;
use std::io::Write;
use std::process::Command;
use std::time::Duration;
use twitterstream_tests::k8s::admin_client;
use twitterstream_tests::pods::{namespace_on_real_node, no_node_reason, real_node};
use twitterstream_tests::truth::{self, Rules};
use twitterstream_tests::{env_var, eventually, kafka, kafka_brokers, unique_name};
use twitterstream_workers::consumer::aggregate::WindowResult;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
/// Tweets of the test's stream: 60 s at 100 a second, so the upgrade falls
/// in its middle.
const TWEETS: usize = 6000;

fn report(line: &str) {
    // Straight to stderr: libtest captures println! of passing tests.
    let _ = writeln!(std::io::stderr(), "[release] {line}");
}

/// Runs a command; its stdout, or a panic with its output.
fn run(program: &str, args: &[&str], stdin: Option<&str>) -> String {
    let out = twitterstream_tests::process::run(program, args, stdin);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What `tests/release` published: its release.env.
struct Published {
    version: String,
    chart: String,
    operator_image: String,
    workers_image: String,
    /// cosign, its public key and the (empty) trusted root of key-based,
    /// log-less signatures.
    cosign: String,
    public_key: String,
    trusted_root: String,
}

impl Published {
    /// `cosign verify` of an image by digest, as a user checks it: the
    /// signed digest is the image's, and the report.
    fn verify(&self, image: &str) -> String {
        let out = Command::new(&self.cosign)
            .args([
                "verify",
                "--key",
                &self.public_key,
                "--insecure-ignore-tlog=true",
                "--trusted-root",
                &self.trusted_root,
                image,
            ])
            .env("SSL_CERT_FILE", trust_bundle())
            .output()
            .expect("cosign");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "cosign verify {image}: {stderr}");
        let payload: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("cosign's JSON");
        let (_, digest) = image.split_once('@').expect("an image by digest");
        assert_eq!(
            payload[0]["critical"]["image"]["docker-manifest-digest"], digest,
            "{payload}"
        );
        stderr
            .lines()
            .filter(|l| !l.starts_with("WARNING") && !l.trim().is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The system's CAs and the registry's, for cosign (Go reads SSL_CERT_FILE).
fn trust_bundle() -> String {
    let path = std::env::temp_dir().join("tws-release-trust.pem");
    let system = std::fs::read_to_string("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default();
    let ca = std::fs::read_to_string(env_var("TWS_REGISTRY_CA")).expect("the registry's CA");
    std::fs::write(&path, format!("{system}\n{ca}")).expect("trust bundle");
    path.display().to_string()
}

/// The environment's OCI registry (`host:port`).
fn registry() -> String {
    std::env::var("TWS_REGISTRY")
        .ok()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| {
            panic!(
                "TWS_REGISTRY is not set: the release test publishes to the environment's OCI \
                 registry, which `tests/env/build --tests` builds and `tests/env/up` then starts"
            )
        })
}

fn publish(version: &str) -> Published {
    let out = std::env::temp_dir().join(unique_name(&format!("release-{version}")));
    let out = out.display().to_string();
    let printed = run(
        &format!("{ROOT}/tests/release"),
        &[
            "--registry",
            &registry(),
            "--version",
            version,
            "--ca",
            &env_var("TWS_REGISTRY_CA"),
            "--out",
            &out,
        ],
        None,
    );
    report(&format!("tests/release --version {version}:\n{printed}"));
    let env: BTreeMap<String, String> = std::fs::read_to_string(format!("{out}/release.env"))
        .expect("release.env")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let get = |k: &str| {
        env.get(k)
            .cloned()
            .unwrap_or_else(|| panic!("{k} in release.env"))
    };
    Published {
        version: get("VERSION"),
        chart: get("CHART"),
        operator_image: get("OPERATOR_IMAGE"),
        workers_image: get("WORKERS_IMAGE"),
        cosign: get("COSIGN"),
        public_key: get("PUBLIC_KEY"),
        trusted_root: get("TRUSTED_ROOT"),
    }
}

fn helm() -> String {
    env_var("HELM")
}

/// `helm install` or `helm upgrade` of a published chart, watching `ns`.
fn helm_apply(verb: &str, release: &str, ns: &str, p: &Published) {
    let watch = format!("watchNamespaces={{{ns}}}");
    let out = run(
        &helm(),
        &[
            verb,
            release,
            &p.chart,
            "--version",
            &p.version,
            "--ca-file",
            &env_var("TWS_REGISTRY_CA"),
            "--namespace",
            ns,
            "--set",
            &watch,
            "--wait",
            "--timeout",
            "5m",
        ],
        None,
    );
    report(&format!(
        "helm {verb} {release} {} --version {}: {}",
        p.chart,
        p.version,
        out.lines().find(|l| l.starts_with("STATUS")).unwrap_or("?")
    ));
}

/// The image IDs of the running containers of the pods `selector` picks,
/// with their pods' names.
fn image_ids(ns: &str, selector: &str) -> Vec<(String, String)> {
    let out = run(
        "kubectl",
        &[
            "-n",
            ns,
            "get",
            "pods",
            "-l",
            selector,
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.status.containerStatuses[0].imageID}{\"\\n\"}{end}",
        ],
        None,
    );
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(p, i)| (p.to_owned(), i.to_owned()))
        .collect()
}

/// Waits until every pod `selector` picks runs `image` (and there are
/// `at_least` of them); their names and image IDs.
async fn running(ns: &str, selector: &str, image: &str, at_least: usize) -> Vec<(String, String)> {
    eventually(
        &format!("pods {selector} on {image}"),
        Duration::from_secs(240),
        || {
            let ids = image_ids(ns, selector);
            let all = ids.len() >= at_least && ids.iter().all(|(_, id)| id == image);
            std::future::ready(all.then_some(ids))
        },
    )
    .await
}

fn kubectl_apply(ns: &str, yaml: &str) {
    run("kubectl", &["-n", ns, "apply", "-f", "-"], Some(yaml));
}

/// examples/synthetic.yaml onto this machine's Kafka, its topics made
/// unique, and finite.
fn synthetic_example(suffix: &str) -> (String, String, String) {
    let text = std::fs::read_to_string(format!("{ROOT}/examples/synthetic.yaml"))
        .expect("examples/synthetic.yaml");
    let mut v: serde_yaml::Value = serde_yaml::from_str(&text).expect("example YAML");
    let spec = &mut v["spec"];
    spec["synthetic"]["rate"] = 100.into();
    spec["synthetic"]["count"] = (TWEETS as u64).into();
    let kafka = &mut spec["kafka"];
    kafka["brokers"] = kafka_brokers()
        .split(',')
        .map(|b| serde_yaml::Value::from(b.to_owned()))
        .collect::<Vec<_>>()
        .into();
    let topic = format!("synthetic-tweets-{suffix}");
    let output = format!("synthetic-windows-{suffix}");
    kafka["topic"] = topic.clone().into();
    kafka["outputTopic"] = output.clone().into();
    (serde_yaml::to_string(&v).expect("YAML"), topic, output)
}

fn windows(got: &[(String, Vec<u8>)]) -> Vec<(String, WindowResult)> {
    got.iter()
        .map(|(k, v)| (k.clone(), serde_json::from_slice(v).expect("window JSON")))
        .collect()
}

/// The windows without their top lists: the generator's hashtags and
/// mentions outnumber any top N (their listed counts are checked by the
/// other tests).
fn counts(m: BTreeMap<i64, truth::Window>) -> BTreeMap<i64, truth::Window> {
    m.into_iter()
        .map(|(k, mut w)| {
            w.hashtags.clear();
            w.mentions.clear();
            (k, w)
        })
        .collect()
}

/// The next patch version.
fn next(version: &str) -> String {
    let (core, _) = version.split_once('-').unwrap_or((version, ""));
    let mut parts: Vec<u64> = core
        .split('.')
        .map(|p| p.parse().expect("SemVer"))
        .collect();
    parts[2] += 1;
    format!("{}.{}.{}", parts[0], parts[1], parts[2])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_installs_from_the_registry_and_upgrades_without_losing_a_window() {
    if real_node().is_none() {
        // Pulling by digest needs a node with a container runtime.
        report(&format!("skipped: no real node ({})", no_node_reason()));
        return;
    }
    let client = admin_client().await;
    let x = publish(env!("CARGO_PKG_VERSION"));
    let x1 = publish(&next(env!("CARGO_PKG_VERSION")));
    for (a, b) in [
        (&x.operator_image, &x1.operator_image),
        (&x.workers_image, &x1.workers_image),
    ] {
        assert_ne!(
            a, b,
            "release X+1 changed nothing: the images' version labels differ"
        );
    }

    // Signatures first, as a careful user checks them.
    for image in [&x.operator_image, &x.workers_image] {
        report(&format!("cosign verify {image}: {}", x.verify(image)));
    }
    // Each release was signed with a key of its own here: X's image does
    // not verify with X+1's key.
    let refused = Command::new(&x.cosign)
        .args([
            "verify",
            "--key",
            &x1.public_key,
            "--insecure-ignore-tlog=true",
            "--trusted-root",
            &x.trusted_root,
            &x.operator_image,
        ])
        .env("SSL_CERT_FILE", trust_bundle())
        .output()
        .expect("cosign");
    assert!(
        !refused.status.success(),
        "X's image verified with X+1's key"
    );

    // Install X: the operator pulls its image by digest.
    let ns = namespace_on_real_node(&client, "release").await;
    let release = "twitterstream-operator";
    helm_apply("install", release, &ns.name, &x);
    let operator = "app.kubernetes.io/name=twitterstream-operator";
    let pods = running(&ns.name, operator, &x.operator_image, 1).await;
    report(&format!("operator pods' imageID: {pods:?}"));

    // The synthetic example, as a user applies it.
    let suffix = unique_name("rel");
    let (yaml, topic, output) = synthetic_example(&suffix);
    kubectl_apply(&ns.name, &yaml);
    let workers = "app.kubernetes.io/instance=synthetic";
    let pods = running(&ns.name, workers, &x.workers_image, 3).await;
    report(&format!("worker pods' imageID on {}: {pods:?}", x.version));
    eventually("a first window", Duration::from_secs(120), || {
        let output = output.clone();
        async move { (!kafka::read_committed(&output).await.is_empty()).then_some(()) }
    })
    .await;
    let before = kafka::read_committed(&output).await.len();
    report(&format!("{before} windows published on {}", x.version));

    // Upgrade to X+1 with the stream running.
    let upgraded_at = Utc::now();
    helm_apply("upgrade", release, &ns.name, &x1);
    let pods = running(&ns.name, operator, &x1.operator_image, 1).await;
    report(&format!(
        "operator pods' imageID after the upgrade: {pods:?}"
    ));
    let pods = running(&ns.name, workers, &x1.workers_image, 3).await;
    report(&format!(
        "worker pods' imageID on {} ({} s after the upgrade began): {pods:?}",
        x1.version,
        (Utc::now() - upgraded_at).num_seconds()
    ));

    // Every window of the whole run, against the truth from the raw topic.
    let (got, want) = eventually("every window of the run", Duration::from_secs(240), || {
        let (topic, output) = (topic.clone(), output.clone());
        async move {
            let raw = kafka::read_committed_records(&topic).await;
            if raw.len() < TWEETS {
                return None;
            }
            let want = counts(truth::expected(&raw, &Rules::tumbling("synthetic", 10)));
            let got = counts(truth::published(
                "synthetic",
                &windows(&kafka::read_committed(&output).await),
            ));
            want.keys()
                .all(|k| got.contains_key(k))
                .then_some((got, want))
        }
    })
    .await;
    truth::assert_exact(&got, &want);
    let tweets: u64 = got.values().map(|w| w.count).sum();
    report(&format!(
        "{} windows ({before} before the upgrade), {tweets} tweets: each window once and exact, 0 lost, 0 duplicated",
        got.len()
    ));

    // Uninstall: what docs/install.md says remains, remains.
    run(
        &helm(),
        &[
            "uninstall",
            release,
            "--namespace",
            &ns.name,
            "--wait",
            "--timeout",
            "5m",
        ],
        None,
    );
    let left = |what: &str| {
        run(
            "kubectl",
            &["-n", &ns.name, "get", what, "-o", "name"],
            None,
        )
        .lines()
        .map(str::to_owned)
        .collect::<Vec<_>>()
    };
    let deployments = left("deployments");
    assert_eq!(
        deployments,
        [
            "deployment.apps/synthetic-consumer",
            "deployment.apps/synthetic-producer"
        ],
        "the operator's Deployment is gone, the stream's stay"
    );
    assert_eq!(
        left("twitterstreams"),
        ["twitterstream.twitterstream.io/synthetic"]
    );
    run(
        "kubectl",
        &["get", "crd", "twitterstreams.twitterstream.io"],
        None,
    );
    assert!(
        kafka::describe_topic(&topic).await.is_some(),
        "{topic} stays"
    );
    assert!(
        kafka::describe_topic(&output).await.is_some(),
        "{output} stays"
    );
    report(&format!(
        "helm uninstall: left the CRD, tws/synthetic, {deployments:?}, topics {topic} and {output}"
    ));
}
