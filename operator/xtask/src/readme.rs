//! The generated regions of the Markdown docs (README.md and docs/*.md): the
//! text between a line that starts with `<!-- BEGIN <name>` and the line
//! `<!-- END <name> -->`, rewritten by `cargo xtask docs` and compared by the
//! staleness tests.

/// A generated region: the text between the line that starts with
/// `<!-- BEGIN <name>` and the line `<!-- END <name> -->`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegionError {
    #[error("no line starting with `<!-- BEGIN {0}`")]
    NoBegin(String),
    #[error("no `<!-- END {0} -->` after its BEGIN line")]
    NoEnd(String),
}

fn region_bounds(text: &str, name: &str) -> Result<(usize, usize), RegionError> {
    let begin_prefix = format!("<!-- BEGIN {name}");
    let end_line = format!("<!-- END {name} -->");
    let mut offset = 0;
    let mut start = None;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_end();
        match start {
            None if trimmed.starts_with(&begin_prefix)
                && trimmed[begin_prefix.len()..].starts_with([' ', '-']) =>
            {
                start = Some(offset + line.len());
            }
            Some(s) if trimmed == end_line => return Ok((s, offset)),
            _ => {}
        }
        offset += line.len();
    }
    Err(match start {
        None => RegionError::NoBegin(name.to_string()),
        Some(_) => RegionError::NoEnd(name.to_string()),
    })
}

/// The current contents of a generated region.
pub fn region<'a>(text: &'a str, name: &str) -> Result<&'a str, RegionError> {
    let (start, end) = region_bounds(text, name)?;
    Ok(&text[start..end])
}

/// `text` with a generated region's contents replaced; the marker lines stay.
/// The contents get a blank line on either side, so Markdown never reads a
/// marker as part of the table or paragraph next to it; compare regions with
/// [`same_contents`].
pub fn replace_region(text: &str, name: &str, contents: &str) -> Result<String, RegionError> {
    let (start, end) = region_bounds(text, name)?;
    let contents = contents.trim();
    let contents = if contents.is_empty() {
        String::new()
    } else {
        format!("\n{contents}\n\n")
    };
    Ok(format!("{}{contents}{}", &text[..start], &text[end..]))
}

/// Whether a region holds `generated`, ignoring the blank lines around it.
pub fn same_contents(region: &str, generated: &str) -> bool {
    region.trim() == generated.trim()
}

/// The workspace's root directory.
pub fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where the README is.
pub fn readme_path() -> std::path::PathBuf {
    root().join("README.md")
}

/// Where a page of the docs is: `doc_path("reference.md")` is
/// `docs/reference.md` under the workspace root.
pub fn doc_path(page: &str) -> std::path::PathBuf {
    root().join("docs").join(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_found_and_replaced_between_their_markers() {
        let text = "a\n<!-- BEGIN x (generated) -->\nold\n<!-- END x -->\n<!-- BEGIN xy -->\nkeep\n<!-- END xy -->\n";
        assert_eq!(region(text, "x").unwrap(), "old\n");
        assert_eq!(region(text, "xy").unwrap(), "keep\n");
        let new = replace_region(text, "x", "new\nlines\n").unwrap();
        assert_eq!(
            new,
            "a\n<!-- BEGIN x (generated) -->\n\nnew\nlines\n\n<!-- END x -->\n<!-- BEGIN xy -->\nkeep\n<!-- END xy -->\n"
        );
        assert!(same_contents(region(&new, "x").unwrap(), "new\nlines\n"));
        assert!(!same_contents(region(&new, "x").unwrap(), "new\n"));
        assert_eq!(region("", "x"), Err(RegionError::NoBegin("x".into())));
        assert_eq!(
            region("<!-- BEGIN x -->\n", "x"),
            Err(RegionError::NoEnd("x".into()))
        );
    }
}
