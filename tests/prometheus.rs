//! The chart's alerts on a real Prometheus (`$PROMETHEUS`, built from its Go
//! module by `tests/env/build`): it scrapes the operator (a local process)
//! and the workers (`LocalPods`, found through a file of targets the test
//! keeps current, as a PodMonitor would), evaluates the rules `helm template`
//! renders with short durations, and the lag alert fires while the
//! consumers are scaled to 0 and resolves after they return.

use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use twitterstream_operator::crd::TwitterStream;
use twitterstream_tests::chart;
use twitterstream_tests::k8s::{TestNamespace, admin_client};
use twitterstream_tests::local_pods::LocalPods;
use twitterstream_tests::operator::{Operator, install_crd};
use twitterstream_tests::process::{ChildProcess, free_port};
use twitterstream_tests::{env_var, eventually, kafka_brokers, unique_name};

const STREAM: &str = "alerting";
/// The release the rules are rendered for: their job selector names it.
const RELEASE: &str = "tws";

fn report(line: &str) {
    let _ = writeln!(std::io::stderr(), "[prometheus] {line}");
}

/// The chart's alert rules as a Prometheus rule file, with `set` values.
fn rule_file(dir: &Path, set: &[(&str, &str)]) -> PathBuf {
    let mut all = vec![("prometheusRule.enabled", "true")];
    all.extend_from_slice(set);
    let yaml = chart::template(RELEASE, "monitoring", &all);
    let rule = serde_yaml::Deserializer::from_str(&yaml)
        .map(|d| {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(d).expect("YAML");
            serde_json::to_value(v).expect("JSON")
        })
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("a PrometheusRule");
    let path = dir.join("rules.yml");
    let text = serde_yaml::to_string(&json!({ "groups": rule["spec"]["groups"] })).expect("YAML");
    std::fs::write(&path, text).expect("rules.yml");
    path
}

struct Prometheus {
    _process: ChildProcess,
    port: u16,
    targets: PathBuf,
}

impl Prometheus {
    /// Scrapes the operator on `operator_port` every second (as the chart's
    /// ServiceMonitor: its job, honouring the streams' namespace labels)
    /// and the workers listed in the targets file.
    fn start(dir: &Path, operator_port: u16, rules: &Path) -> Self {
        let port = free_port();
        let targets = dir.join("workers.json");
        std::fs::write(&targets, "[]").expect("targets");
        let config = json!({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [rules],
            "scrape_configs": [
                {
                    "job_name": format!("{}-metrics", chart::fullname(RELEASE)),
                    "honor_labels": true,
                    "static_configs": [{
                        "targets": [format!("127.0.0.1:{operator_port}")],
                        "labels": {"namespace": "monitoring"},
                    }],
                },
                {
                    "job_name": "workers",
                    "file_sd_configs": [{"files": [targets], "refresh_interval": "1s"}],
                },
            ],
        });
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, serde_yaml::to_string(&config).expect("YAML"))
            .expect("config");
        let mut cmd = Command::new(env_var("PROMETHEUS"));
        cmd.arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"));
        let process = ChildProcess::spawn(cmd, &unique_name("prometheus"));
        Self {
            _process: process,
            port,
            targets,
        }
    }

    /// Lists the worker processes as scrape targets, labelled as the
    /// PodMonitor labels the pods.
    fn set_workers(&self, pods: &LocalPods) {
        let groups: Vec<Value> = pods
            .pods()
            .into_iter()
            .filter_map(|p| {
                let port = p.ports.get(&8080)?;
                let component = if p.deployment.ends_with("-producer") {
                    "producer"
                } else {
                    "consumer"
                };
                Some(json!({
                    "targets": [format!("127.0.0.1:{port}")],
                    "labels": {
                        "namespace": pods.namespace,
                        "pod": p.name,
                        "app_kubernetes_io_instance": STREAM,
                        "app_kubernetes_io_component": component,
                    },
                }))
            })
            .collect();
        let tmp = self.targets.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&groups).expect("JSON")).expect("targets");
        std::fs::rename(&tmp, &self.targets).expect("targets");
    }

    async fn get(&self, path: &str) -> Option<Value> {
        let (status, body) = twitterstream_tests::operator::http_get(self.port, path).await?;
        (status == 200)
            .then(|| serde_json::from_str::<Value>(&body).ok())
            .flatten()
            .map(|v| v["data"].clone())
    }

    /// The alerts named `name` in state `state`.
    async fn alerts(&self, name: &str, state: &str) -> Vec<Value> {
        let data = self.get("/api/v1/alerts").await.unwrap_or_default();
        data["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["labels"]["alertname"] == name && a["state"] == state)
            .cloned()
            .collect()
    }

    /// The value of an instant query's first series.
    async fn value(&self, query: &str) -> Option<f64> {
        let query =
            percent_encoding::utf8_percent_encode(query, percent_encoding::NON_ALPHANUMERIC);
        let path = format!("/api/v1/query?query={query}");
        let data = self.get(&path).await?;
        data["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

async fn set_consumers(api: &Api<TwitterStream>, replicas: i32) {
    api.patch_scale(
        STREAM,
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": replicas}})),
    )
    .await
    .expect("scale");
    report(&format!("consumers scaled to {replicas}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lag_alert_fires_while_consumers_are_down_and_resolves_after() {
    let client = admin_client().await;
    install_crd(&client).await;
    let ns = TestNamespace::create(&client, "alerts").await;
    let dir = std::env::temp_dir().join(unique_name("prometheus"));
    std::fs::create_dir_all(&dir).expect("dir");
    // The chart's rules with durations a test can wait for.
    let rules = rule_file(
        &dir,
        &[
            ("prometheusRule.lagGrowingOver", "10s"),
            ("prometheusRule.lagGrowingFor", "10s"),
        ],
    );
    let operator = Operator::start_with_env(
        &ns.name,
        None,
        &[],
        &[("TWS_THROUGHPUT_INTERVAL_SECONDS", "2")],
    );
    let prometheus = Prometheus::start(&dir, operator.http_port, &rules);
    let pods = LocalPods::start(client.clone(), &ns.name, None);
    let topic = unique_name("alerts");
    let api: Api<TwitterStream> = Api::namespaced(client.clone(), &ns.name);
    let tws: TwitterStream = serde_json::from_value(json!({
        "apiVersion": "twitterstream.io/v1alpha1",
        "kind": "TwitterStream",
        "metadata": {"name": STREAM},
        "spec": {
            "keyword": "alerts",
            "source": "synthetic",
            "synthetic": {"rate": 200, "seed": 3},
            "kafka": {
                "brokers": kafka_brokers().split(',').collect::<Vec<_>>(),
                "topic": topic,
                "outputTopic": format!("{topic}-windows"),
                "partitions": 3,
                "replicationFactor": 1,
            },
            "window": {"seconds": 10},
        },
    }))
    .expect("TwitterStream");
    api.create(&PostParams::default(), &tws)
        .await
        .expect("create");

    // Both kinds of targets up, and the stream's lag in Prometheus.
    let up = |job: &'static str| format!("sum(up{{job=\"{job}\"}})");
    let operator_job: &'static str =
        Box::leak(format!("{}-metrics", chart::fullname(RELEASE)).into_boxed_str());
    let lag = format!(
        "twitterstream_operator_stream_lag_records{{namespace=\"{}\",name=\"{STREAM}\"}}",
        ns.name
    );
    eventually(
        "the operator, both workers and the lag scraped",
        Duration::from_secs(120),
        || {
            prometheus.set_workers(&pods);
            let (p, up_op, up_workers, lag) =
                (&prometheus, up(operator_job), up("workers"), lag.clone());
            async move {
                let scraped = (
                    p.value(&up_op).await?,
                    p.value(&up_workers).await?,
                    p.value(&lag).await?,
                );
                (scraped.0 >= 1.0 && scraped.1 >= 2.0).then_some(scraped)
            }
        },
    )
    .await;
    let consumed = format!(
        "sum(twitterstream_consumer_records_consumed_total{{namespace=\"{}\"}})",
        ns.name
    );
    eventually(
        "the consumer's own metrics scraped",
        Duration::from_secs(60),
        || {
            let (p, q) = (&prometheus, consumed.clone());
            async move { p.value(&q).await.filter(|v| *v > 0.0) }
        },
    )
    .await;
    assert!(
        prometheus
            .alerts("TwitterStreamLagGrowing", "firing")
            .await
            .is_empty(),
        "no lag alert while the consumer keeps up"
    );

    // No consumers: the lag grows and the alert fires.
    set_consumers(&api, 0).await;
    let down = Instant::now();
    let firing = eventually(
        "TwitterStreamLagGrowing to fire",
        Duration::from_secs(120),
        || {
            prometheus.set_workers(&pods);
            let p = &prometheus;
            async move {
                let a = p.alerts("TwitterStreamLagGrowing", "firing").await;
                (!a.is_empty()).then_some(a)
            }
        },
    )
    .await;
    report(&format!(
        "fired {:.0} s after the consumers went: {}",
        down.elapsed().as_secs_f64(),
        firing[0]
    ));
    assert_eq!(firing[0]["labels"]["namespace"], ns.name.as_str());
    assert_eq!(firing[0]["labels"]["name"], STREAM);
    assert_eq!(firing[0]["labels"]["severity"], "warning");
    assert!(
        firing[0]["annotations"]["description"]
            .as_str()
            .is_some_and(|d| d.contains(STREAM)),
        "{}",
        firing[0]
    );

    // The consumer returns, works the lag off: the alert resolves.
    set_consumers(&api, 1).await;
    let back = Instant::now();
    eventually(
        "TwitterStreamLagGrowing to resolve",
        Duration::from_secs(120),
        || {
            prometheus.set_workers(&pods);
            let p = &prometheus;
            async move {
                let firing = p.alerts("TwitterStreamLagGrowing", "firing").await;
                let pending = p.alerts("TwitterStreamLagGrowing", "pending").await;
                (firing.is_empty() && pending.is_empty()).then_some(())
            }
        },
    )
    .await;
    report(&format!(
        "resolved {:.0} s after the consumer returned; lag now {:?}",
        back.elapsed().as_secs_f64(),
        prometheus.value(&lag).await
    ));
}
