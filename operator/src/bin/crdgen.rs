//! Writes the TwitterStream CRD to `crds/twitterstream.io_twitterstreams.yaml`
//! and to the Helm chart's copy in `charts/twitterstream-operator/crds/` (or
//! to stdout with `-`, or to one given path), so the checked-in files are
//! always generated and identical.
//!
//! `crdgen --reference` instead rewrites the field reference between the
//! `crd-reference` markers of README.md (`crdgen --reference -` prints it).

use anyhow::Context as _;
use kube::CustomResourceExt;
use std::path::PathBuf;
use twitterstream_operator::reference;

/// Where the CRD is checked in, relative to the workspace root: the plain
/// manifests and the chart (Helm installs `crds/` only from inside a chart).
const CHECKED_IN: [&str; 2] = [
    "crds/twitterstream.io_twitterstreams.yaml",
    "charts/twitterstream-operator/crds/twitterstream.io_twitterstreams.yaml",
];

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["--reference"] => write_reference(),
        ["--reference", "-"] => {
            print!("{}", reference_markdown());
            Ok(())
        }
        [] => write_crd(None),
        [target] if !target.starts_with("--") => write_crd(Some(target)),
        _ => anyhow::bail!("usage: crdgen [- | <path>]  or  crdgen --reference [-]"),
    }
}

fn write_crd(target: Option<&str>) -> anyhow::Result<()> {
    let yaml = twitterstream_operator::crd_yaml()?;
    let paths: Vec<PathBuf> = match target {
        Some("-") => {
            print!("{yaml}");
            return Ok(());
        }
        Some(path) => vec![PathBuf::from(path)],
        None => CHECKED_IN
            .iter()
            .map(|p| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(p))
            .collect(),
    };
    for path in paths {
        std::fs::write(&path, &yaml)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn reference_markdown() -> String {
    reference::markdown(&twitterstream_operator::crd::TwitterStream::crd())
}

/// Rewrites only the README region, leaving the rest of the file as it is.
fn write_reference() -> anyhow::Result<()> {
    let path = reference::readme_path();
    let readme =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let updated =
        reference::replace_region(&readme, reference::README_REGION, &reference_markdown())
            .with_context(|| format!("in {}", path.display()))?;
    if updated == readme {
        eprintln!("{} is up to date", path.display());
    } else {
        std::fs::write(&path, updated)?;
        eprintln!(
            "rewrote the {} region of {}",
            reference::README_REGION,
            path.display()
        );
    }
    Ok(())
}
