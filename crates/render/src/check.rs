//! `render --check`: whether a rendered file on disk is what would be rendered now.

use crate::Error;
use std::path::Path;

/// Compares `fresh` with the file at `path`; [`Error::Stale`] carries a diff when they differ.
pub fn check(fresh: &str, path: &Path) -> Result<(), Error> {
    let on_disk = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if on_disk == fresh {
        return Ok(());
    }
    let diff = similar::TextDiff::from_lines(on_disk.as_str(), fresh)
        .unified_diff()
        .context_radius(3)
        .header(&path.display().to_string(), "rendered now")
        .to_string();
    Err(Error::Stale {
        path: path.to_path_buf(),
        diff,
    })
}
