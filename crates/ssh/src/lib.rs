//! Run a bluegreen plan over SSH (libssh2).
//!
//! [`deploy`] carries out a [`Plan`] computed by `bluegreen-core`: it resolves the environment,
//! finds and hashes the artifact, connects to every host at once (one libssh2 session per host, each
//! owned by its own thread), then runs the phases in order. Every remote step is a call of a function
//! of the core's bash library, sent to `bash -s` on the host, so this backend and the rendered script
//! run the very same commands.
//!
//! Progress is reported as [`Event`]s, one per host and step, as it happens. When a phase fails, its
//! `on_failure` steps run best effort (stop the new instances, switch back, release the lock) and the
//! original error is returned. Ctrl-C (the CLI sets [`ExecOptions::interrupt`]) is handled the same
//! way: before the switch it leaves traffic untouched.
//!
//! ```no_run
//! use bluegreen_ssh::{deploy, ExecOptions};
//! let config = bluegreen_core::Config::load("bluegreen.yaml".as_ref())?;
//! let plan = bluegreen_core::Plan::new(&config);
//! let summary = deploy(&plan, &ExecOptions::default(), &mut |e| eprintln!("{e}"))?;
//! println!("{summary}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod conn;
mod error;
mod event;
mod http;
mod run;
mod runtime;

pub use error::{Error, HostKeyProblem};
pub use event::{Event, Status, LOCAL};
pub use runtime::Live;

use bluegreen_core::{PhaseKind, Plan};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// The environment variable holding the passphrase of `ssh.identity_file`, if it has one.
pub const PASSPHRASE_ENV: &str = "BLUEGREEN_SSH_PASSPHRASE";

/// An environment lookup: `Some(value)` when the variable is set.
pub type EnvLookup = dyn Fn(&str) -> Option<String> + Send + Sync;

/// How [`deploy`] runs.
pub struct ExecOptions {
    /// Adds the resolved `bg_main ...` call line to step events.
    pub verbose: bool,
    /// Who deploys, recorded in the lock and the state file; default `$USER@hostname`.
    pub deployer: Option<String>,
    /// Looks up environment variables; default [`std::env::var`].
    pub env: Box<EnvLookup>,
    /// Set by the CLI's Ctrl-C handler; checked between steps and while polling.
    pub interrupt: Arc<AtomicBool>,
}

impl Default for ExecOptions {
    fn default() -> ExecOptions {
        ExecOptions {
            verbose: false,
            deployer: None,
            env: Box::new(|name| std::env::var(name).ok()),
            interrupt: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl fmt::Debug for ExecOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecOptions")
            .field("verbose", &self.verbose)
            .field("deployer", &self.deployer)
            .field("interrupt", &self.interrupt)
            .finish_non_exhaustive()
    }
}

/// What a successful deploy did.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The app.
    pub app: String,
    /// The slot now serving traffic (`blue` or `green`).
    pub target: String,
    /// The slot that served traffic before (`blue`, `green` or `none`).
    pub previous: String,
    /// The artifact's sha256 (hex).
    pub release: String,
    /// The artifact deployed.
    pub artifact: PathBuf,
    /// Its size in bytes.
    pub artifact_bytes: u64,
    /// Who deployed.
    pub deployer: String,
    /// Time spent connecting to every host.
    pub connect: Duration,
    /// Time spent in each phase, in order.
    pub phases: Vec<(PhaseKind, Duration)>,
    /// Wall time of the whole deploy.
    pub total: Duration,
}

impl fmt::Display for Summary {
    /// `deployed shop 0123456789ab to green (previous: blue) in 12.34s: connect 0.20s, prepare ...`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "deployed {} {} to {} (previous: {}) in {}: connect {}",
            self.app,
            short(&self.release),
            self.target,
            self.previous,
            error::human(self.total),
            error::human(self.connect)
        )?;
        for (k, d) in &self.phases {
            write!(f, ", {} {}", k.name(), error::human(*d))?;
        }
        Ok(())
    }
}

/// The first 12 hex digits of a sha256.
pub(crate) fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// Runs `plan`, reporting progress to `out` (called on the calling thread only).
///
/// Nothing touches a host before the environment, the artifact and every connection are ready.
pub fn deploy(
    plan: &Plan,
    opts: &ExecOptions,
    out: &mut dyn FnMut(&Event),
) -> Result<Summary, Error> {
    run::deploy(plan, opts, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_line() {
        let s = Summary {
            app: "shop".into(),
            target: "green".into(),
            previous: "blue".into(),
            release: "0123456789abcdef".into(),
            artifact: "a.jar".into(),
            artifact_bytes: 1,
            deployer: "me@host".into(),
            connect: Duration::from_millis(200),
            phases: vec![
                (PhaseKind::Prepare, Duration::from_millis(120)),
                (PhaseKind::Upload, Duration::from_millis(1500)),
            ],
            total: Duration::from_millis(1820),
        };
        assert_eq!(
            s.to_string(),
            "deployed shop 0123456789ab to green (previous: blue) in 1.82s: connect 200ms, prepare 120ms, upload 1.50s"
        );
    }

    #[test]
    fn options_are_shareable() {
        fn sync<T: Send + Sync>() {}
        sync::<ExecOptions>();
        let o = ExecOptions::default();
        assert!(format!("{o:?}").contains("verbose: false"));
    }
}
