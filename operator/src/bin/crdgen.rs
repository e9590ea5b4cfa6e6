//! Writes the TwitterStream CRD to `crds/twitterstream.io_twitterstreams.yaml`
//! (or to stdout with `-`), so the checked-in file is always generated.

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let yaml = twitterstream_operator::crd_yaml()?;
    match std::env::args().nth(1).as_deref() {
        Some("-") => print!("{yaml}"),
        other => {
            let path = other.map(PathBuf::from).unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("../crds/twitterstream.io_twitterstreams.yaml")
            });
            std::fs::write(&path, yaml)?;
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(())
}
