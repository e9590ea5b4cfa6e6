//! Linters over the files that build the images and run CI, each run on the
//! real files with the pinned version `tests/env/build` installs into
//! `$TWS_CACHE_DIR/lint/bin`:
//!
//! - hadolint: `operator/Dockerfile`, `workers/Dockerfile`
//! - actionlint: `.github/workflows/*`, with shellcheck for their `run:` steps
//! - shellcheck: the shell scripts of `tests/env`, `tests/kind`, `tests/bench`,
//!   `tests/tools`, and `tests/run`, `tests/lanes`, `tests/demo` and `.ci/run`
//!
//! Plus the facts the images share with the rest of the repository: the
//! version label, and the binaries and user the operator's Deployments expect.
//!
//! These need neither Kubernetes nor Kafka. A missing linter fails the test
//! with a message naming `tests/env/build`, never skips it.

use std::path::{Path, PathBuf};
use std::process::Command;

use twitterstream_operator::crd::TwitterStream;
use twitterstream_operator::render::{self, Component, RenderConfig};
use twitterstream_tests::examples::superbowl_spec;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `$TWS_CACHE_DIR`, defaulted as tests/env/lib.sh does.
fn cache_dir() -> PathBuf {
    let non_empty = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if let Some(dir) = non_empty("TWS_CACHE_DIR") {
        return dir.into();
    }
    let base = non_empty("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(non_empty("HOME").expect("HOME is set")).join(".cache"));
    base.join("twitterstream-operator")
}

/// The pinned linter, or a failure that says how to install it.
fn linter(name: &str) -> PathBuf {
    let path = cache_dir().join("lint").join("bin").join(name);
    assert!(
        path.exists(),
        "{name} is missing at {}: run tests/env/build, which installs the pinned linters",
        path.display()
    );
    path
}

/// Runs a linter from the repository root and fails with its whole output
/// unless it exits 0.
fn assert_clean(linter: &Path, args: &[&str], files: &[String]) {
    assert!(
        !files.is_empty(),
        "no files to lint with {}",
        linter.display()
    );
    let out = Command::new(linter)
        .current_dir(repo_root())
        .args(args)
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", linter.display()));
    assert!(
        out.status.success(),
        "{} reported problems ({}) in {files:?}:\n{}{}",
        linter.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_root().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

const DOCKERFILES: [&str; 2] = ["operator/Dockerfile", "workers/Dockerfile"];

/// hadolint's configuration, passed explicitly so a user's own
/// ~/.config/hadolint.yaml cannot change the result: every finding fails
/// (style included), base images come only from Docker Hub (rust) and gcr.io
/// (distroless), and the final images carry the OCI labels.
const HADOLINT_CONFIG: &str = "\
failure-threshold: style
trustedRegistries:
  - docker.io
  - gcr.io
label-schema:
  org.opencontainers.image.title: text
  org.opencontainers.image.description: text
  org.opencontainers.image.source: url
  org.opencontainers.image.licenses: spdx
  org.opencontainers.image.version: text
strict-labels: true
";

#[test]
fn dockerfiles_pass_hadolint() {
    let config = std::env::temp_dir().join(format!("tws-hadolint-{}.yaml", std::process::id()));
    std::fs::write(&config, HADOLINT_CONFIG).expect("writing hadolint config");
    let files: Vec<String> = DOCKERFILES.iter().map(|f| f.to_string()).collect();
    let config_arg = config.display().to_string();
    assert_clean(
        &linter("hadolint"),
        &["--no-color", "--config", &config_arg],
        &files,
    );
    let _ = std::fs::remove_file(&config);
}

#[test]
fn workflows_pass_actionlint() {
    let dir = repo_root().join(".github/workflows");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| {
            e.expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".yml") || n.ends_with(".yaml"))
        .map(|n| format!(".github/workflows/{n}"))
        .collect();
    files.sort();
    assert!(
        files.iter().any(|f| f == ".github/workflows/ci.yml"),
        "the CI workflow is missing: {files:?}"
    );
    let shellcheck = linter("shellcheck").display().to_string();
    // pyflakes off: no workflow step runs Python, and whether it is installed
    // must not change the result.
    assert_clean(
        &linter("actionlint"),
        &["-no-color", "-shellcheck", &shellcheck, "-pyflakes", ""],
        &files,
    );
}

/// The shell scripts to lint: every file with a shell shebang, or named
/// *.sh, directly in the listed directories, plus tests/run and .ci/run.
fn shell_scripts() -> Vec<String> {
    let root = repo_root();
    let mut scripts = vec![
        "tests/run".to_string(),
        "tests/lanes".to_string(),
        "tests/demo".to_string(),
        "tests/release".to_string(),
        "tests/release-chart".to_string(),
        ".ci/run".to_string(),
    ];
    for dir in ["tests/env", "tests/kind", "tests/bench", "tests/tools"] {
        let entries =
            std::fs::read_dir(root.join(dir)).unwrap_or_else(|e| panic!("reading {dir}: {e}"));
        for entry in entries {
            let entry = entry.expect("directory entry");
            if !entry.file_type().expect("file type").is_file() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let first_line = std::fs::read(entry.path())
                .map(|b| {
                    let end = b.iter().position(|&c| c == b'\n').unwrap_or(b.len());
                    String::from_utf8_lossy(&b[..end]).into_owned()
                })
                .unwrap_or_default();
            let shebang = first_line.starts_with("#!")
                && (first_line.contains("bash") || first_line.ends_with("/sh"));
            if shebang || name.ends_with(".sh") {
                scripts.push(format!("{dir}/{name}"));
            }
        }
    }
    scripts.sort();
    scripts
}

#[test]
fn shell_scripts_pass_shellcheck() {
    let scripts = shell_scripts();
    // The discovery must find the scripts that exist today, or the test would
    // pass by checking nothing.
    for expected in [
        "tests/env/build",
        "tests/env/lib.sh",
        "tests/env/up",
        "tests/env/down",
        "tests/kind/up",
        "tests/kind/check",
        "tests/kind/down",
        "tests/kind/lib.sh",
        "tests/bench/producer.sh",
        "tests/run",
        "tests/release",
        "tests/env/registry.sh",
        ".ci/run",
    ] {
        assert!(
            scripts.iter().any(|s| s == expected),
            "{expected} not found among {scripts:?}"
        );
    }
    // -x -P SCRIPTDIR: follow `source "$(dirname ...)/lib.sh"`, so variables
    // and functions from the sourced file count as defined. --norc: a user's
    // ~/.shellcheckrc cannot change the result.
    assert_clean(
        &linter("shellcheck"),
        &[
            "--norc",
            "--shell=bash",
            "--external-sources",
            "--source-path=SCRIPTDIR",
        ],
        &scripts,
    );
}

/// `version` of `[workspace.package]` in the root Cargo.toml.
fn workspace_version() -> String {
    let manifest = read("Cargo.toml");
    let mut in_section = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_section = line == "[workspace.package]";
        } else if in_section && let Some(rest) = line.strip_prefix("version") {
            let value = rest.trim_start().trim_start_matches('=').trim();
            return value.trim_matches('"').to_string();
        }
    }
    panic!("no version in [workspace.package] of Cargo.toml");
}

/// The instructions of a Dockerfile's last stage (after its last FROM).
fn final_stage(dockerfile: &str) -> Vec<String> {
    let text = read(dockerfile).replace("\\\n", " ");
    let lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    let from = lines
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .unwrap_or_else(|| panic!("{dockerfile} has no FROM"));
    lines[from..].to_vec()
}

#[test]
fn images_are_labelled_with_the_workspace_version() {
    let version = workspace_version();
    for dockerfile in DOCKERFILES {
        let text = read(dockerfile);
        assert!(
            text.lines()
                .any(|l| l.trim() == format!("ARG VERSION={version}")),
            "{dockerfile} must default ARG VERSION to the workspace version {version}"
        );
        let stage = final_stage(dockerfile);
        assert!(
            stage.iter().any(|l| l == "ARG VERSION")
                && stage
                    .iter()
                    .any(|l| l.contains("org.opencontainers.image.version=\"${VERSION}\"")),
            "{dockerfile}'s final stage must label org.opencontainers.image.version with ${{VERSION}}: {stage:#?}"
        );
    }
}

#[test]
fn workers_image_has_what_the_operator_deployments_run() {
    let tws = TwitterStream::new(
        "lint",
        serde_json::from_value(superbowl_spec(&["kafka:9092"], "lint")).expect("example spec"),
    );
    let cfg = RenderConfig::new("ghcr.io/twitterstream-io/twitterstream-workers:lint");
    let stage = final_stage("workers/Dockerfile");
    let copy = stage
        .iter()
        .find(|l| l.starts_with("COPY --from=builder"))
        .expect("workers/Dockerfile's final stage copies the binaries from the builder");
    assert!(
        copy.ends_with(" /usr/local/bin/"),
        "binaries must land on the image's PATH: {copy}"
    );
    for component in [Component::Producer, Component::Consumer] {
        let deployment = render::deployment(&tws, component, &cfg);
        let pod = deployment
            .spec
            .and_then(|s| s.template.spec)
            .expect("rendered pod spec");
        let container = &pod.containers[0];
        let binary = container
            .command
            .as_ref()
            .and_then(|c| c.first())
            .expect("the operator sets the container command");
        assert!(
            copy.split_whitespace()
                .any(|w| w == format!("/out/{binary}")),
            "workers/Dockerfile does not install {binary}, which the {component:?} Deployment runs: {copy}"
        );
        let uid = pod
            .security_context
            .as_ref()
            .and_then(|s| s.run_as_user)
            .expect("the operator sets runAsUser");
        assert!(
            stage.iter().any(|l| l == &format!("USER {uid}:{uid}")),
            "workers/Dockerfile must run as {uid}:{uid}, the {component:?} pod's runAsUser"
        );
        let read_only = container
            .security_context
            .as_ref()
            .and_then(|s| s.read_only_root_filesystem);
        assert_eq!(
            read_only,
            Some(true),
            "the workers image is built for a read-only root filesystem"
        );
    }
}
