//! `cargo xtask docs`: rewrites every generated region of the docs — the
//! TwitterStream reference in docs/reference.md (from the CRD schema) here,
//! then the metrics list in docs/metrics.md (from the real registries, by the
//! docs test in update mode). The staleness tests fail while any region is
//! out of date.

use anyhow::Context as _;
use std::process::Command;
use xtask::readme::{doc_path, replace_region};
use xtask::reference::{PAGE, REGION, markdown};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["docs"] => docs(),
        _ => anyhow::bail!("usage: cargo xtask docs"),
    }
}

fn docs() -> anyhow::Result<()> {
    write_reference()?;
    // The metrics list is built from the registries the docs test already
    // constructs as the binaries do.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["test", "-q", "-p", "twitterstream-tests", "--test", "docs"])
        .env("TWS_UPDATE_DOCS", "1")
        .status()
        .context("running the docs test in update mode")?;
    anyhow::ensure!(status.success(), "the docs test failed: {status}");
    Ok(())
}

/// Rewrites only the reference region, leaving the rest of the file as it is.
fn write_reference() -> anyhow::Result<()> {
    let path = doc_path(PAGE);
    let page =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let generated = markdown(&twitterstream_operator::crd::definition());
    let updated = replace_region(&page, REGION, &generated)
        .with_context(|| format!("in {}", path.display()))?;
    if updated == page {
        eprintln!("{} region of {} is up to date", REGION, path.display());
    } else {
        std::fs::write(&path, updated)?;
        eprintln!("rewrote the {} region of {}", REGION, path.display());
    }
    Ok(())
}
