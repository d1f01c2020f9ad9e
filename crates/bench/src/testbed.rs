//! The testbed, the demo app's jars and the deploy config come from `bluegreen-testbed`, shared with
//! the integration tests so that both deploy the same way; a scratch directory is the suite's own.

use crate::Result;
use std::path::Path;

pub use bluegreen_testbed::{Testbed, Workdir};

/// Every measurement allows this long for new instances to turn healthy (16 JVMs booting at once on
/// two cores take a few seconds).
pub const DEADLINE: &str = "120s";

/// Builds the demo app's jars `app-VERSION.jar` into `out` (`pad_kib` of incompressible padding each).
pub fn build_jars(out: &Path, versions: &[String], pad_kib: u64) -> Result<()> {
    let v: Vec<&str> = versions.iter().map(String::as_str).collect();
    bluegreen_testbed::build_jars(out, &v, pad_kib)
}

/// A scratch directory for jars and configs, removed on drop.
pub struct Scratch(tempfile::TempDir);

impl Scratch {
    /// A fresh directory under the system temp dir.
    pub fn new(tag: &str) -> Result<Scratch> {
        Ok(Scratch(
            tempfile::Builder::new()
                .prefix(&format!("bluegreen-bench-{tag}-"))
                .tempdir()?,
        ))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}
