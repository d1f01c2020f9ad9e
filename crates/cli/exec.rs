//! `bluegreen exec`: checks everything that can be checked locally, then hands the plan to the SSH
//! backend.

use super::Failure;
use bluegreen_core::Config;
use std::path::Path;

pub(crate) fn run(config_path: &Path, verbose: bool) -> Result<(), Failure> {
    let config = Config::load(config_path)?;
    // A missing or malformed `${VAR}` is bad input: report it before any host is touched.
    config.check_env(&|name| std::env::var(name).ok())?;
    let _ = verbose;
    Err(Failure::Run(
        "exec: the SSH backend is not wired in yet".into(),
    ))
}
