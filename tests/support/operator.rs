//! The operator as a real process against the real control plane.

use crate::process::{ChildProcess, binary, free_port};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

pub const TEST_WORKER_IMAGE: &str = "registry.test/twitterstream-workers:test";

/// Installs (server-side applies) the checked-in CRD and waits until it is served.
pub async fn install_crd(client: &Client) {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crds/twitterstream.io_twitterstreams.yaml"
    ))
    .expect("reading crds/");
    let crd: CustomResourceDefinition = serde_yaml::from_str(&text).expect("CRD YAML");
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    api.patch(
        "twitterstreams.twitterstream.io",
        &PatchParams::apply("twitterstream-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("applying the CRD");
    crate::eventually("CRD Established", Duration::from_secs(30), || {
        let api = api.clone();
        async move {
            let c = api.get("twitterstreams.twitterstream.io").await.ok()?;
            c.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        }
    })
    .await;
}

pub struct Operator {
    pub process: ChildProcess,
    pub http_port: u16,
}

impl Operator {
    /// Starts the operator binary watching only `namespace` (so tests sharing
    /// the cluster do not see each other's resources), with `kubeconfig`
    /// (default: the admin one from tests/env/up).
    pub fn start(namespace: &str, kubeconfig: Option<&Path>, extra: &[&str]) -> Self {
        Self::start_with_env(namespace, kubeconfig, extra, &[])
    }

    /// Like [`start`](Self::start), with environment variables (settings an
    /// older build, run through TWS_OPERATOR_BIN, ignores instead of failing
    /// on an unknown flag).
    pub fn start_with_env(
        namespace: &str,
        kubeconfig: Option<&Path>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let http_port = free_port();
        // TWS_OPERATOR_BIN runs a test against another build (an older one).
        let bin = std::env::var("TWS_OPERATOR_BIN").map_or_else(
            |_| binary("twitterstream-operator", "twitterstream-operator"),
            std::path::PathBuf::from,
        );
        let mut cmd = Command::new(bin);
        cmd.args([
            "--watch-namespaces",
            namespace,
            "--http-addr",
            &format!("127.0.0.1:{http_port}"),
            "--kafka-timeout-seconds",
            "5",
        ]);
        // A test may name the image the pods really run (`crate::pods::workers_image`).
        if !extra.iter().any(|a| a.starts_with("--worker-image")) {
            cmd.args(["--worker-image", TEST_WORKER_IMAGE]);
        }
        cmd.args(extra)
            .env("RUST_LOG", "info,twitterstream_operator=debug");
        if let Some(k) = kubeconfig {
            cmd.env("KUBECONFIG", k);
        }
        cmd.envs(env.iter().copied());
        let name = format!("operator-{namespace}-{}", crate::unique_name("run"));
        Self {
            process: ChildProcess::spawn(cmd, &name),
            http_port,
        }
    }

    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.http_port, path).await
    }
}

/// A minimal HTTP/1.0 GET against 127.0.0.1 (status, body).
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}
