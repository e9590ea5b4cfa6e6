//! The Helm chart `charts/twitterstream-operator`: its CRD copy, lint and
//! schema, the rendered manifests against the real API server (server-side
//! dry run, Pod Security "restricted"), its least-privilege RBAC, and a real
//! install / upgrade / `helm test` / uninstall with the pinned Helm.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;
use twitterstream_tests::chart::{self, CHART_NAME, chart_dir, helm};
use twitterstream_tests::k8s::{TestNamespace, admin_client};
use twitterstream_tests::{env_var, eventually, unique_name};

/// RBAC rules flattened to (apiGroup, resource) -> verbs.
type Rules = BTreeMap<(String, String), BTreeSet<String>>;

/// Every call the operator makes, nothing else.
fn expected_rules() -> Rules {
    [
        (
            "twitterstream.io",
            "twitterstreams",
            &["get", "list", "watch", "patch"][..],
        ),
        (
            "twitterstream.io",
            "twitterstreams/status",
            &["get", "patch"],
        ),
        ("twitterstream.io", "twitterstreams/finalizers", &["update"]),
        // spec.consumer.autoscaling sets the replicas as `kubectl scale` does.
        ("twitterstream.io", "twitterstreams/scale", &["patch"]),
        (
            "apps",
            "deployments",
            &["get", "list", "watch", "create", "patch"],
        ),
        (
            "networking.k8s.io",
            "networkpolicies",
            &["create", "patch", "delete"],
        ),
        ("", "pods", &["list", "watch"]),
        ("", "events", &["list"]),
        ("events.k8s.io", "events", &["create", "patch"]),
    ]
    .into_iter()
    .map(|(g, r, v)| {
        (
            (g.to_string(), r.to_string()),
            v.iter().map(|s| s.to_string()).collect(),
        )
    })
    .collect()
}

/// Leader election in the release namespace.
fn expected_lease_rules() -> Rules {
    let verbs = ["get", "create", "patch"].map(String::from).into();
    [(
        ("coordination.k8s.io".to_string(), "leases".to_string()),
        verbs,
    )]
    .into()
}

/// The documents of a multi-document YAML stream (empty ones dropped).
fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(d).expect("rendered YAML");
            serde_json::to_value(v).expect("YAML as JSON")
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Flattens a Role's or ClusterRole's rules to (apiGroup, resource) -> verbs,
/// after checking that none of them mentions Secrets or ConfigMaps or uses a
/// wildcard.
fn rules_of(role: &Value) -> Rules {
    let name = &role["metadata"]["name"];
    let mut out = Rules::new();
    for rule in role["rules"].as_array().expect("rules") {
        let text = rule.to_string().to_lowercase();
        assert!(
            !text.contains("secret") && !text.contains("configmap"),
            "{name}: rule {rule} touches Secrets or ConfigMaps"
        );
        assert!(!text.contains('*'), "{name}: wildcard in rule {rule}");
        for group in strs(&rule["apiGroups"]) {
            for resource in strs(&rule["resources"]) {
                out.entry((group.clone(), resource))
                    .or_default()
                    .extend(strs(&rule["verbs"]));
            }
        }
    }
    out
}

fn container_args(docs: &[Value]) -> Vec<String> {
    let deployments = of_kind(docs, "Deployment");
    assert_eq!(deployments.len(), 1, "one operator Deployment");
    strs(&deployments[0]["spec"]["template"]["spec"]["containers"][0]["args"])
}

/// `kubectl apply --dry-run=server -f -` of `docs`: the API server validates
/// and admits them (schemas, RBAC escalation checks, Pod Security) without
/// storing anything. Returns stderr, where warnings land.
fn server_dry_run(docs: &[&Value]) -> String {
    let list = json!({ "apiVersion": "v1", "kind": "List", "items": docs });
    let mut child = Command::new("kubectl")
        .args(["apply", "--dry-run=server", "-f", "-"])
        .env("KUBECONFIG", env_var("KUBECONFIG"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running kubectl");
    child
        .stdin
        .take()
        .expect("kubectl stdin")
        .write_all(list.to_string().as_bytes())
        .expect("writing manifests to kubectl");
    let out = child.wait_with_output().expect("kubectl apply");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "server-side dry run rejected the chart:\n{stdout}{stderr}"
    );
    assert_eq!(
        stdout.matches("(server dry run)").count(),
        docs.len(),
        "every object is accepted: {stdout}"
    );
    stderr
}

/// `kubectl auth can-i <verb> <resource> -n <ns> --as <sa>`: what the API
/// server's authorizer decides for the ServiceAccount.
fn can_i(sa: &str, verb: &str, resource: &str, namespace: &str) -> bool {
    let mut args = vec!["auth", "can-i", verb, "-n", namespace, "--as", sa];
    match resource.split_once('/') {
        Some((resource, sub)) => args.extend([resource, "--subresource", sub]),
        None => args.push(resource),
    }
    let out = Command::new("kubectl")
        .args(&args)
        .env("KUBECONFIG", env_var("KUBECONFIG"))
        .output()
        .expect("kubectl auth can-i");
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

/// Makes `ns` enforce (and warn about) Pod Security "restricted", so that the
/// chart's pods are admitted only if their securityContext complies.
async fn restricted(client: &Client, ns: &str) {
    let patch = json!({ "metadata": { "labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/warn": "restricted",
    }}});
    Api::<Namespace>::all(client.clone())
        .patch(ns, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("labelling the namespace for Pod Security");
}

/// The workspace version in /Cargo.toml's [workspace.package].
fn workspace_version() -> String {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"))
        .expect("reading Cargo.toml");
    let package = text
        .split("[workspace.package]")
        .nth(1)
        .expect("[workspace.package] in Cargo.toml");
    package
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("version in [workspace.package]")
        .to_string()
}

#[test]
fn chart_crd_is_a_byte_identical_copy_of_crds() {
    let name = "twitterstream.io_twitterstreams.yaml";
    let top = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crds/twitterstream.io_twitterstreams.yaml"
    ))
    .expect("reading crds/");
    let copy =
        std::fs::read(chart_dir().join("crds").join(name)).expect("reading the chart's crds/");
    assert!(
        top == copy,
        "charts/{CHART_NAME}/crds/{name} differs from crds/{name}: \
         run `cargo run -p twitterstream-operator --bin crdgen`, which writes both"
    );
    // The chart ships nothing else as a CRD: Helm would install it too.
    let entries: Vec<_> = std::fs::read_dir(chart_dir().join("crds"))
        .expect("listing the chart's crds/")
        .map(|e| e.expect("dir entry").file_name())
        .collect();
    assert_eq!(entries, [name], "the chart's crds/ holds exactly the CRD");
}

#[test]
fn chart_versions_follow_the_workspace() {
    let chart: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(chart_dir().join("Chart.yaml")).expect("Chart.yaml"),
    )
    .expect("Chart.yaml is YAML");
    let version = workspace_version();
    assert_eq!(chart["appVersion"].as_str(), Some(version.as_str()));
    assert_eq!(chart["name"].as_str(), Some(CHART_NAME));
    assert_eq!(chart["kubeVersion"].as_str(), Some(">=1.29.0-0"));
    let values: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(chart_dir().join("values.yaml")).expect("values.yaml"),
    )
    .expect("values.yaml is YAML");
    assert_eq!(
        values["workerImage"].as_str(),
        Some(format!("ghcr.io/twitterstream-io/twitterstream-workers:{version}").as_str()),
        "the default worker image is the release's"
    );
    // The operator image tag defaults to appVersion.
    let docs = documents(&chart::template("v", "default", &[]));
    let image =
        &of_kind(&docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["image"];
    assert_eq!(
        image.as_str(),
        Some(format!("ghcr.io/twitterstream-io/twitterstream-operator:{version}").as_str())
    );
}

#[test]
fn every_value_is_documented() {
    let text = std::fs::read_to_string(chart_dir().join("values.yaml")).expect("values.yaml");
    let lines: Vec<&str> = text.lines().collect();
    let mut undocumented = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let is_key = trimmed
            .split_once(':')
            .is_some_and(|(k, _)| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric()));
        // Quantities under resources.requests/limits are Kubernetes' own keys,
        // documented by the comment on `resources`.
        let under_quantities = indent >= 4
            && lines[..i]
                .iter()
                .rev()
                .find(|l| l.len() - l.trim_start().len() < indent)
                .is_some_and(|p| matches!(p.trim(), "requests:" | "limits:"));
        if !is_key || trimmed.starts_with('#') || under_quantities {
            continue;
        }
        let above = lines[..i].iter().rev().find(|l| !l.trim().is_empty());
        if !above.is_some_and(|l| l.trim_start().starts_with('#')) {
            undocumented.push(format!("line {}: {line}", i + 1));
        }
    }
    assert!(
        undocumented.is_empty(),
        "values.yaml keys without a comment above them:\n{}",
        undocumented.join("\n")
    );
}

#[test]
fn lint_is_clean_and_the_schema_rejects_bad_values() {
    let chart = chart::chart_arg();
    let out = helm(&["lint", "--strict", &chart]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "helm lint --strict failed:\n{text}");
    assert!(
        !text.contains("[WARNING]") && !text.contains("[ERROR]"),
        "helm lint --strict reports problems:\n{text}"
    );
    assert!(text.contains("0 chart(s) failed"), "{text}");

    // Each bad value fails lint (and therefore install) with a message naming it.
    let cases: &[(&str, &[&str])] = &[
        ("replicas=two", &["/replicas", "want integer"]),
        ("replicas=0", &["/replicas", "minimum"]),
        (
            "replica=2",
            &["additional properties 'replica' not allowed"],
        ),
        ("logFormat=xml", &["/logFormat", "json", "text"]),
        (
            "serviceMonitor.enable=true",
            &[
                "/serviceMonitor",
                "additional properties 'enable' not allowed",
            ],
        ),
        ("watchNamespaces={Not_A_Namespace}", &["/watchNamespaces/0"]),
        (
            "image.pullPolicy=Sometimes",
            &["/image/pullPolicy", "IfNotPresent"],
        ),
        (
            "kafkaTimeoutSeconds=-1",
            &["/kafkaTimeoutSeconds", "minimum"],
        ),
    ];
    for (set, expected) in cases {
        let out = helm(&["lint", "--strict", &chart, "--set", set]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "--set {set} passed lint:\n{text}");
        assert!(
            text.contains("values don't meet the specifications of the schema"),
            "--set {set}: not a schema error:\n{text}"
        );
        for e in *expected {
            assert!(text.contains(e), "--set {set}: expected {e:?} in:\n{text}");
        }
    }

    // A setting the schema cannot express fails rendering (lint only reports
    // a template's `fail` as [INFO]) with a clear message.
    let version = chart::server_version();
    let out = helm(&[
        "template",
        "x",
        &chart,
        "--kube-version",
        &version,
        "--set",
        "serviceAccount.create=false",
    ]);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("serviceAccount.name must name an existing ServiceAccount"),
        "{text}"
    );
}

#[tokio::test]
async fn rendered_chart_passes_a_server_side_dry_run_with_least_privilege_rbac() {
    let client = admin_client().await;
    let ns = TestNamespace::create(&client, "chart-render").await;
    let watched_a = TestNamespace::create(&client, "chart-watch-a").await;
    let watched_b = TestNamespace::create(&client, "chart-watch-b").await;
    for n in [&ns, &watched_a, &watched_b] {
        restricted(&client, &n.name).await;
    }
    let release = unique_name("render");
    let fullname = chart::fullname(&release);
    let sa = format!("system:serviceaccount:{}:{fullname}", ns.name);

    // Default values: all namespaces, one replica, no leader election.
    let docs = documents(&chart::template(&release, &ns.name, &[]));
    let kinds: BTreeSet<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Job",
            "Service",
            "ServiceAccount"
        ]
        .into(),
        "default objects"
    );
    let cluster_roles = of_kind(&docs, "ClusterRole");
    assert_eq!(rules_of(cluster_roles[0]), expected_rules());
    let binding = &of_kind(&docs, "ClusterRoleBinding")[0];
    assert_eq!(
        binding["roleRef"]["name"],
        cluster_roles[0]["metadata"]["name"]
    );
    assert_eq!(
        binding["subjects"],
        json!([{ "kind": "ServiceAccount", "name": fullname, "namespace": ns.name }])
    );
    let args = container_args(&docs);
    assert!(
        !args.iter().any(|a| a.starts_with("--leader-elect")),
        "{args:?}"
    );
    assert!(
        !args.iter().any(|a| a.starts_with("--watch-namespaces")),
        "{args:?}"
    );
    for a in ["--log-format=json", "--http-addr=0.0.0.0:8080"] {
        assert!(args.iter().any(|x| x == a), "{a} in {args:?}");
    }
    let stderr = server_dry_run(&docs.iter().collect::<Vec<_>>());
    assert!(
        !stderr.contains("PodSecurity"),
        "the pods break Pod Security restricted:\n{stderr}"
    );

    // Everything on: two watched namespaces, two replicas, monitoring, policy.
    let watch = format!("{{{},{}}}", watched_a.name, watched_b.name);
    let set = [
        ("watchNamespaces", watch.as_str()),
        ("replicas", "2"),
        ("serviceMonitor.enabled", "true"),
        ("prometheusRule.enabled", "true"),
        ("networkPolicy.enabled", "true"),
        (
            "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name",
            "monitoring",
        ),
    ];
    let docs = documents(&chart::template(&release, &ns.name, &set));
    assert!(
        of_kind(&docs, "ClusterRole").is_empty(),
        "no ClusterRole when namespaces are listed"
    );
    assert!(of_kind(&docs, "ClusterRoleBinding").is_empty());
    let args = container_args(&docs);
    assert!(
        args.iter().any(|a| a == "--leader-elect"),
        "replicas 2 elect a leader: {args:?}"
    );
    let watch_arg = format!("--watch-namespaces={},{}", watched_a.name, watched_b.name);
    assert!(args.contains(&watch_arg), "{args:?}");
    let lease_name = args
        .iter()
        .find_map(|a| a.strip_prefix("--lease-name="))
        .expect("--lease-name");
    let mut roles: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for r in of_kind(&docs, "Role") {
        let n = r["metadata"]["namespace"].as_str().expect("Role namespace");
        roles.entry(n.to_string()).or_default().push(r);
    }
    assert_eq!(
        roles.keys().cloned().collect::<BTreeSet<_>>(),
        [
            ns.name.clone(),
            watched_a.name.clone(),
            watched_b.name.clone()
        ]
        .into()
    );
    for watched in [&watched_a.name, &watched_b.name] {
        assert_eq!(roles[watched].len(), 1);
        assert_eq!(
            rules_of(roles[watched][0]),
            expected_rules(),
            "Role in {watched}"
        );
    }
    assert_eq!(
        roles[&ns.name].len(),
        1,
        "only the Lease Role in the release namespace"
    );
    let lease_role = roles[&ns.name][0];
    assert_eq!(rules_of(lease_role), expected_lease_rules());
    for rule in lease_role["rules"].as_array().expect("rules") {
        let verbs = strs(&rule["verbs"]);
        if verbs.iter().any(|v| v != "create") {
            // get/patch only on the release's own Lease.
            assert_eq!(strs(&rule["resourceNames"]), [lease_name], "{rule}");
        }
    }
    for b in of_kind(&docs, "RoleBinding") {
        assert_eq!(
            b["subjects"],
            json!([{ "kind": "ServiceAccount", "name": fullname, "namespace": ns.name }])
        );
    }
    let pdbs = of_kind(&docs, "PodDisruptionBudget");
    assert_eq!(pdbs.len(), 1, "a PodDisruptionBudget with 2 replicas");
    let deployment = of_kind(&docs, "Deployment")[0];
    assert_eq!(
        pdbs[0]["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    // With a standby pod that /readyz reports unready, readiness must not
    // gate on /readyz, or rollouts and drains could never make progress.
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(
        deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        0
    );

    // The ServiceMonitor scrapes the metrics Service's port.
    let service = of_kind(&docs, "Service")[0];
    let monitor = of_kind(&docs, "ServiceMonitor")[0];
    let port = &service["spec"]["ports"][0];
    assert_eq!(
        (port["name"].as_str(), port["port"].as_i64()),
        (Some("http-metrics"), Some(8080))
    );
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "http-metrics");
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("selector")
    {
        assert_eq!(&service["metadata"]["labels"][k], v, "Service label {k}");
    }
    assert_eq!(
        monitor["spec"]["namespaceSelector"]["matchNames"],
        json!([ns.name])
    );
    // The alerts query metrics the operator exports, under the Service's job.
    let metrics = twitterstream_operator::metrics::Metrics::default();
    drop(metrics.start());
    metrics.failed("KubernetesApiError");
    metrics.stream(
        &twitterstream_operator::metrics::StreamLabels {
            namespace: "a".into(),
            name: "b".into(),
        },
        &twitterstream_operator::metrics::StreamFigures {
            last_window_delay_seconds: Some(1),
            ..Default::default()
        },
    );
    let exported = metrics.encode();
    let rule = of_kind(&docs, "PrometheusRule")[0];
    let exprs: Vec<&str> = rule["spec"]["groups"][0]["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| r["expr"].as_str().expect("expr"))
        .collect();
    assert_eq!(exprs.len(), 7, "{exprs:?}");
    let job = format!(
        "job=\"{}\"",
        service["metadata"]["name"].as_str().expect("Service name")
    );
    for expr in &exprs {
        let of_operator = expr.contains("twitterstream_operator_") || expr.contains("up{");
        assert!(!of_operator || expr.contains(&job), "{expr} selects {job}");
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("twitterstream_operator_") {
                assert!(
                    exported.lines().any(|l| l.starts_with(word)),
                    "{word} is not exported by the operator:\n{exported}"
                );
            }
        }
    }
    assert!(exprs.iter().any(|e| e.contains("twitterstream_operator_")));

    // The Prometheus Operator's CRDs are not installed here: ServiceMonitor and
    // PrometheusRule are checked above, everything else by the API server.
    let core: Vec<&Value> = docs
        .iter()
        .filter(|d| {
            !matches!(
                d["kind"].as_str(),
                Some("ServiceMonitor" | "PrometheusRule")
            )
        })
        .collect();
    assert!(core.iter().any(|d| d["kind"] == "NetworkPolicy"));
    let stderr = server_dry_run(&core);
    assert!(
        !stderr.contains("PodSecurity"),
        "the pods break Pod Security restricted:\n{stderr}"
    );
    // The example in NOTES.txt is a valid TwitterStream.
    twitterstream_tests::operator::install_crd(&client).await;
    // (Helm's client dry run still maps kinds through the API server, which
    // has no ServiceMonitor/PrometheusRule here.)
    let notes = chart::notes(&release, &ns.name, &[("watchNamespaces", watch.as_str())]);
    let example: String = notes
        .lines()
        .skip_while(|l| !l.contains("<<'YAML'"))
        .skip(1)
        .take_while(|l| l.trim() != "YAML")
        .map(|l| format!("{}\n", l.strip_prefix("  ").unwrap_or(l)))
        .collect();
    let example: Value = serde_yaml::from_str(&example).expect("NOTES example is YAML");
    assert_eq!(example["kind"], "TwitterStream", "{notes}");
    let mut example = example;
    example["metadata"]["namespace"] = json!(watched_a.name);
    server_dry_run(&[&example]);
    assert!(
        notes.contains(&format!("kubectl get tws -n {}", watched_a.name)),
        "{notes}"
    );

    // Nothing was stored, so the ServiceAccount has no permission yet.
    assert!(!can_i(
        &sa,
        "list",
        "twitterstreams.twitterstream.io",
        &watched_a.name
    ));
}

/// The Deployment's current ReplicaSet: (revision, pod-template-hash).
async fn current_replica_set(client: &Client, ns: &str, release: &str) -> Option<(String, String)> {
    let deployments = Api::<Deployment>::namespaced(client.clone(), ns);
    let d = deployments.get(&chart::fullname(release)).await.ok()?;
    let revision = d
        .metadata
        .annotations?
        .get("deployment.kubernetes.io/revision")?
        .clone();
    let selector =
        format!("app.kubernetes.io/instance={release},app.kubernetes.io/component=operator");
    let sets = Api::<ReplicaSet>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&selector))
        .await
        .ok()?;
    sets.items.into_iter().find_map(|rs| {
        let meta = rs.metadata;
        let rev = meta
            .annotations?
            .get("deployment.kubernetes.io/revision")?
            .clone();
        let hash = meta.labels?.get("pod-template-hash")?.clone();
        let ready = rs.status?.ready_replicas.unwrap_or(0);
        (rev == revision && ready == 1).then_some((rev, hash))
    })
}

/// Waits until the operator Deployment has rolled out its latest template and
/// reports Available.
async fn wait_available(client: &Client, ns: &str, name: &str) -> Deployment {
    let api = Api::<Deployment>::namespaced(client.clone(), ns);
    eventually(
        "the operator Deployment to be Available",
        Duration::from_secs(120),
        || {
            let api = api.clone();
            async move {
                let d = api.get(name).await.ok()?;
                let status = d.status.clone()?;
                let rolled_out = status.observed_generation == d.metadata.generation
                    && status.updated_replicas == Some(1)
                    && status.replicas == Some(1)
                    && status.available_replicas == Some(1);
                let available = status
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Available" && c.status == "True");
                (rolled_out && available).then_some(d)
            }
        },
    )
    .await
}

fn container_of(d: &Deployment) -> &k8s_openapi::api::core::v1::Container {
    &d.spec
        .as_ref()
        .expect("spec")
        .template
        .spec
        .as_ref()
        .expect("pod spec")
        .containers[0]
}

#[tokio::test]
async fn install_upgrade_test_and_uninstall() {
    let client = admin_client().await;
    // Other tests install the CRD too; make it exist up front so this test is
    // always the "Helm finds the CRD already there" case it must survive.
    twitterstream_tests::operator::install_crd(&client).await;
    let ns = TestNamespace::create(&client, "chart-install").await;
    let other = TestNamespace::create(&client, "chart-other").await;
    restricted(&client, &ns.name).await;
    let release_name = unique_name("tws");
    let watch = format!("{{{}}}", ns.name);
    let worker_v1 = "registry.test/twitterstream-workers:v1";
    let worker_v2 = "registry.test/twitterstream-workers:v2";

    let mut release = chart::install(
        &release_name,
        &ns.name,
        &[("watchNamespaces", &watch), ("workerImage", worker_v1)],
    );
    let fullname = release.fullname();
    let d = wait_available(&client, &ns.name, &fullname).await;
    let c = container_of(&d);
    assert_eq!(
        c.command.as_deref(),
        Some(&["twitterstream-operator".to_string()][..])
    );
    let args = c.args.clone().unwrap_or_default();
    for a in [
        format!("--worker-image={worker_v1}"),
        format!("--watch-namespaces={}", ns.name),
        "--log-format=json".to_string(),
    ] {
        assert!(args.contains(&a), "{a} in {args:?}");
    }
    let env: BTreeMap<String, String> = c
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| Some((e.name, e.value_from?.field_ref?.field_path)))
        .collect();
    assert_eq!(
        env.get("POD_NAMESPACE").map(String::as_str),
        Some("metadata.namespace")
    );
    assert_eq!(
        env.get("POD_NAME").map(String::as_str),
        Some("metadata.name")
    );
    let before = eventually(
        "the first ReplicaSet ready",
        Duration::from_secs(60),
        || current_replica_set(&client, &ns.name, &release_name),
    )
    .await;

    // The installed RBAC, as the API server's authorizer sees it.
    let sa = format!("system:serviceaccount:{}:{fullname}", ns.name);
    for (verb, resource) in [
        ("watch", "twitterstreams.twitterstream.io"),
        ("patch", "twitterstreams.twitterstream.io/status"),
        ("update", "twitterstreams.twitterstream.io/finalizers"),
        ("create", "deployments.apps"),
        ("patch", "deployments.apps"),
        ("watch", "pods"),
        ("list", "events"),
        ("create", "events.events.k8s.io"),
    ] {
        assert!(
            can_i(&sa, verb, resource, &ns.name),
            "{sa} may {verb} {resource}"
        );
    }
    for (verb, resource, namespace) in [
        ("get", "secrets", ns.name.as_str()),
        ("list", "secrets", ns.name.as_str()),
        ("get", "configmaps", ns.name.as_str()),
        ("delete", "deployments.apps", ns.name.as_str()),
        ("update", "deployments.apps", ns.name.as_str()),
        ("create", "pods", ns.name.as_str()),
        (
            "delete",
            "twitterstreams.twitterstream.io",
            ns.name.as_str(),
        ),
        ("create", "leases.coordination.k8s.io", ns.name.as_str()),
        (
            "list",
            "twitterstreams.twitterstream.io",
            other.name.as_str(),
        ),
        ("create", "deployments.apps", other.name.as_str()),
    ] {
        assert!(
            !can_i(&sa, verb, resource, namespace),
            "{sa} must not {verb} {resource} in {namespace}"
        );
    }

    // A changed value rolls the operator: a new ReplicaSet with a new template.
    release.upgrade(&[
        ("watchNamespaces", &watch),
        ("workerImage", worker_v2),
        ("logFormat", "text"),
    ]);
    let d = wait_available(&client, &ns.name, &fullname).await;
    let args = container_of(&d).args.clone().unwrap_or_default();
    assert!(
        args.contains(&format!("--worker-image={worker_v2}")),
        "{args:?}"
    );
    assert!(args.contains(&"--log-format=text".to_string()), "{args:?}");
    let after = eventually("a new ReplicaSet ready", Duration::from_secs(60), || {
        let before = before.clone();
        let client = client.clone();
        let (ns, rel) = (ns.name.clone(), release_name.clone());
        async move {
            let now = current_replica_set(&client, &ns, &rel).await?;
            (now.0 != before.0).then_some(now)
        }
    })
    .await;
    assert_ne!(after.1, before.1, "pod-template-hash changed");

    // `helm test`: its Job fetches /readyz through the metrics Service.
    let out = release.test();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "helm test failed:\n{text}");
    assert!(
        text.contains(&format!("{fullname}-test")) && text.contains("Succeeded"),
        "{text}"
    );

    // Uninstall removes everything but the CRD (Helm never deletes crds/).
    release.uninstall();
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns.name);
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), &ns.name);
    let roles = Api::<Role>::namespaced(client.clone(), &ns.name);
    let bindings = Api::<RoleBinding>::namespaced(client.clone(), &ns.name);
    let services = Api::<Service>::namespaced(client.clone(), &ns.name);
    eventually(
        "uninstall to remove the release's objects",
        Duration::from_secs(60),
        || {
            let (deployments, accounts, roles, bindings, services) = (
                deployments.clone(),
                accounts.clone(),
                roles.clone(),
                bindings.clone(),
                services.clone(),
            );
            let (name, metrics) = (fullname.clone(), format!("{fullname}-metrics"));
            async move {
                let gone = deployments.get_opt(&name).await.ok()?.is_none()
                    && accounts.get_opt(&name).await.ok()?.is_none()
                    && roles.get_opt(&name).await.ok()?.is_none()
                    && bindings.get_opt(&name).await.ok()?.is_none()
                    && services.get_opt(&metrics).await.ok()?.is_none();
                gone.then_some(())
            }
        },
    )
    .await;
    assert!(!can_i(
        &sa,
        "watch",
        "twitterstreams.twitterstream.io",
        &ns.name
    ));
    let crd = Api::<CustomResourceDefinition>::all(client.clone())
        .get_opt("twitterstreams.twitterstream.io")
        .await
        .expect("reading the CRD");
    assert!(crd.is_some(), "helm uninstall kept the CRD");
}

/// `promtool test rules` (tests/prometheus/alerts.test.yml) on the chart's
/// alert rules as `helm template` renders them with the default durations.
/// The annotations are left out of what promtool sees (its tests compare
/// them whole); here every alert must have a summary and a description.
#[test]
fn alert_rules_pass_promtool_unit_tests() {
    let promtool = twitterstream_tests::env_var("PROMTOOL");
    let docs = documents(&chart::template(
        "tws",
        "monitoring",
        &[("prometheusRule.enabled", "true")],
    ));
    let mut groups = of_kind(&docs, "PrometheusRule")[0]["spec"]["groups"].clone();
    let mut alerts = Vec::new();
    for group in groups.as_array_mut().expect("groups") {
        for rule in group["rules"].as_array_mut().expect("rules") {
            let name = rule["alert"].as_str().expect("alert").to_string();
            let annotations = rule
                .as_object_mut()
                .and_then(|r| r.remove("annotations"))
                .unwrap_or_default();
            for key in ["summary", "description"] {
                assert!(
                    annotations[key]
                        .as_str()
                        .is_some_and(|s| !s.trim().is_empty()),
                    "{name} has no {key}"
                );
            }
            alerts.push(name);
        }
    }
    let dir = std::env::temp_dir().join(twitterstream_tests::unique_name("promtool"));
    std::fs::create_dir_all(&dir).expect("dir");
    let rules = serde_yaml::to_string(&json!({ "groups": groups })).expect("YAML");
    std::fs::write(dir.join("rules.yml"), rules).expect("rules.yml");
    let tests = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("prometheus/alerts.test.yml"),
    )
    .expect("alerts.test.yml");
    for alert in &alerts {
        assert!(
            tests.contains(&format!("alertname: {alert}\n")),
            "{alert} has no promtool test"
        );
    }
    std::fs::write(dir.join("alerts.test.yml"), tests).expect("test file");
    let out = std::process::Command::new(&promtool)
        .args(["test", "rules", "alerts.test.yml"])
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| panic!("running {promtool}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool test rules failed:\n{text}");
    println!(
        "promtool test rules, {} alerts: {}",
        alerts.len(),
        text.trim()
    );
}
