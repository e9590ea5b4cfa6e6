//! The Helm chart in `charts/twitterstream-operator`, driven through the pinned
//! Helm binary (`$HELM`, exported by `tests/env/up`) against the test cluster.

use std::path::PathBuf;
use std::process::{Command, Output};

/// The chart's name, and the suffix of its resource names.
pub const CHART_NAME: &str = "twitterstream-operator";

/// How long `helm install/upgrade --wait` may wait for the operator Deployment.
pub const WAIT_TIMEOUT: &str = "180s";

/// Path of the chart.
pub fn chart_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/twitterstream-operator")
}

/// The chart directory as a `helm` argument.
pub fn chart_arg() -> String {
    chart_dir().display().to_string()
}

/// Runs `$HELM <args>` with the environment's `KUBECONFIG`, whatever its outcome.
pub fn helm(args: &[&str]) -> Output {
    crate::env_var("KUBECONFIG");
    let helm = crate::env_var("HELM");
    Command::new(&helm)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {helm}: {e}"))
}

/// Runs `$HELM <args>` and returns its stdout, panicking with its output when
/// it fails.
pub fn helm_ok(args: &[&str]) -> String {
    let out = helm(args);
    assert!(
        out.status.success(),
        "helm {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `--set key=value` arguments. Lists use Helm's brace syntax, e.g.
/// `("watchNamespaces", "{ns1,ns2}")`.
pub fn set_args(set: &[(&str, &str)]) -> Vec<String> {
    set.iter()
        .flat_map(|(k, v)| ["--set".to_string(), format!("{k}={v}")])
        .collect()
}

/// The cluster's Kubernetes version (`v1.33.13`). `helm template` does not ask
/// the cluster, and this Helm build's default (v1.20) fails the chart's
/// kubeVersion, so rendering passes it explicitly.
pub fn server_version() -> String {
    let out = Command::new("kubectl")
        .args(["version", "-o", "json"])
        .env("KUBECONFIG", crate::env_var("KUBECONFIG"))
        .output()
        .expect("running kubectl version");
    assert!(out.status.success(), "kubectl version failed: {out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("kubectl version JSON");
    v["serverVersion"]["gitVersion"]
        .as_str()
        .expect("serverVersion.gitVersion")
        .to_string()
}

/// `helm template` of the chart (tests included), as the manifest text.
pub fn template(release: &str, namespace: &str, set: &[(&str, &str)]) -> String {
    let version = server_version();
    let chart = chart_arg();
    let sets = set_args(set);
    let mut args = vec![
        "template",
        release,
        &chart,
        "--namespace",
        namespace,
        "--kube-version",
        &version,
    ];
    args.extend(sets.iter().map(String::as_str));
    helm_ok(&args)
}

/// The NOTES.txt `helm install` would print, rendered without installing.
pub fn notes(release: &str, namespace: &str, set: &[(&str, &str)]) -> String {
    let chart = chart_arg();
    let sets = set_args(set);
    let mut args = vec![
        "install",
        release,
        &chart,
        "--namespace",
        namespace,
        "--dry-run=client",
    ];
    args.extend(sets.iter().map(String::as_str));
    let out = helm_ok(&args);
    out.split_once("\nNOTES:\n")
        .map(|(_, notes)| notes.to_string())
        .unwrap_or_else(|| panic!("no NOTES in:\n{out}"))
}

/// The chart's resource name for a release (its `fullname` helper, without
/// overrides): the release name when it contains the chart name, otherwise
/// `<release>-twitterstream-operator`, cut to 52 characters.
pub fn fullname(release: &str) -> String {
    let full = if release.contains(CHART_NAME) {
        release.to_string()
    } else {
        format!("{release}-{CHART_NAME}")
    };
    full.chars()
        .take(52)
        .collect::<String>()
        .trim_end_matches('-')
        .to_string()
}

/// An installed release, uninstalled when dropped unless [`Release::uninstall`]
/// already did.
pub struct Release {
    pub name: String,
    pub namespace: String,
    uninstalled: bool,
}

/// `helm install <release> <chart> -n <namespace> --set ... --wait`: the CRD
/// (when missing), RBAC, ServiceAccount, Service and the operator Deployment,
/// waited for until Available. Pass `("watchNamespaces", "{<ns>}")` to keep
/// the operator and its RBAC out of other tests' namespaces; the namespace
/// must exist.
pub fn install(release: &str, namespace: &str, set: &[(&str, &str)]) -> Release {
    let chart = chart_arg();
    let sets = set_args(set);
    let mut args = vec![
        "install",
        release,
        &chart,
        "--namespace",
        namespace,
        "--wait",
        "--timeout",
        WAIT_TIMEOUT,
    ];
    args.extend(sets.iter().map(String::as_str));
    let out = helm(&args);
    if !out.status.success() {
        // A failed install still leaves a release (and maybe cluster-scoped
        // RBAC) behind.
        let _ = helm(&["uninstall", release, "--namespace", namespace]);
        panic!(
            "helm {} failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Release {
        name: release.to_string(),
        namespace: namespace.to_string(),
        uninstalled: false,
    }
}

impl Release {
    /// The chart's resource name in this release (Deployment, ServiceAccount, Roles).
    pub fn fullname(&self) -> String {
        fullname(&self.name)
    }

    /// `helm upgrade --wait` with exactly these values (others back to the
    /// chart's defaults, as `helm upgrade` does without `--reuse-values`).
    pub fn upgrade(&self, set: &[(&str, &str)]) -> String {
        let chart = chart_arg();
        let sets = set_args(set);
        let mut args = vec![
            "upgrade",
            &self.name,
            &chart,
            "--namespace",
            &self.namespace,
            "--wait",
            "--timeout",
            WAIT_TIMEOUT,
        ];
        args.extend(sets.iter().map(String::as_str));
        helm_ok(&args)
    }

    /// `helm test`, whatever its outcome.
    pub fn test(&self) -> Output {
        helm(&[
            "test",
            &self.name,
            "--namespace",
            &self.namespace,
            "--timeout",
            WAIT_TIMEOUT,
        ])
    }

    /// `helm uninstall --wait`; panics when it fails.
    pub fn uninstall(&mut self) -> String {
        let out = helm_ok(&[
            "uninstall",
            &self.name,
            "--namespace",
            &self.namespace,
            "--wait",
            "--timeout",
            WAIT_TIMEOUT,
        ]);
        self.uninstalled = true;
        out
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        if !self.uninstalled {
            // Best effort, so that a failed test does not leave cluster-scoped
            // RBAC behind; the namespace's deletion takes the rest.
            let _ = helm(&["uninstall", &self.name, "--namespace", &self.namespace]);
        }
    }
}
