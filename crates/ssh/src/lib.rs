//! Run a bluegreen plan over SSH (libssh2).
//!
//! [`run`] carries out a [`Plan`] computed by `bluegreen-core` (a deploy, a rollback or a retire):
//! it resolves the environment, finds and hashes the artifact (deploys only), connects to every host at once (one libssh2 session per host, each
//! owned by its own thread), then runs the phases in order. Every remote step is a call of a function
//! of the core's bash library, sent to `bash -s` on the host, so this backend and the rendered script
//! run the very same commands.
//!
//! Progress is reported as [`Event`]s, one per host and step, as it happens. When a phase fails, its
//! `on_failure` steps run best effort (stop the new instances, switch back, release the lock) and the
//! original error is returned. Ctrl-C (the CLI sets [`ExecOptions::interrupt`]) is handled the same
//! way: before the switch it leaves traffic untouched.
//!
//! The [`ops`] module answers questions without changing anything: [`ops::status`],
//! [`ops::lock_show`], [`ops::history`]; [`ops::lock_release`] breaks a stale lock.
//!
//! ```no_run
//! use bluegreen_ssh::{run, ExecOptions};
//! let config = bluegreen_core::Config::load("bluegreen.yaml".as_ref())?;
//! let plan = bluegreen_core::Plan::new(&config);
//! let summary = run(&plan, &ExecOptions::default(), &mut |e| eprintln!("{e}"))?;
//! println!("{summary}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod conn;
mod error;
mod event;
mod fleet;
mod http;
mod known_hosts;
pub mod ops;
mod run;
mod runtime;
mod shell;

pub use error::{Error, HostKeyProblem};
pub use event::{Event, Status, LOCAL};
pub use runtime::{runner_paths, Live};

use bluegreen_core::plan::Action;
use bluegreen_core::wording;
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
    /// How long to keep retrying (every second) when another run holds the deploy lock; zero
    /// fails at once with [`Error::LockHeld`].
    pub lock_wait: Duration,
}

impl Default for ExecOptions {
    fn default() -> ExecOptions {
        ExecOptions {
            verbose: false,
            deployer: None,
            env: Box::new(|name| std::env::var(name).ok()),
            interrupt: Arc::new(AtomicBool::new(false)),
            lock_wait: Duration::ZERO,
        }
    }
}

impl fmt::Debug for ExecOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecOptions")
            .field("verbose", &self.verbose)
            .field("deployer", &self.deployer)
            .field("interrupt", &self.interrupt)
            .field("lock_wait", &self.lock_wait)
            .finish_non_exhaustive()
    }
}

/// What a successful run did.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Deploy, rollback or retire.
    pub action: Action,
    /// The app.
    pub app: String,
    /// The slot now serving traffic (`blue` or `green`); for a retire, the slot stopped.
    pub target: String,
    /// The slot that served traffic before (`blue`, `green` or `none`); for a retire, the live slot.
    pub previous: String,
    /// The release now live: the artifact's sha256 (hex), or the release kept in the slot rolled
    /// back to; empty for a retire.
    pub release: String,
    /// The artifact deployed (empty for a rollback or a retire).
    pub artifact: PathBuf,
    /// Its size in bytes (0 for a rollback or a retire).
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
    /// `deployed shop 0123456789ab to green (previous: blue) in 12.34s: connect 0.20s, prepare ...`,
    /// `rolled back shop to 0123456789ab on blue (from: green) in ...`,
    /// `retired the blue slot of shop (live: green) in ...`
    /// (Core's wording, [`bluegreen_core::wording::summary`], which the rendered script shares.)
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let took = error::human(self.total);
        let phases = wording::phase_times(
            std::iter::once(("connect", self.connect.as_millis()))
                .chain(self.phases.iter().map(|(k, d)| (k.name(), d.as_millis()))),
        );
        let line = wording::summary(self.action)
            .fill(|n| match n {
                "app" => Some(self.app.as_str()),
                "release" => Some(short(&self.release)),
                "target" => Some(self.target.as_str()),
                "previous" => Some(self.previous.as_str()),
                "took" => Some(took.as_str()),
                "phases" => Some(phases.as_str()),
                _ => None,
            })
            .map_err(|_| fmt::Error)?;
        f.write_str(&line)
    }
}

/// The first 12 hex digits of a sha256.
pub(crate) fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// Runs `plan` (a deploy, a rollback or a retire), reporting progress to `out` (called on the
/// calling thread only).
///
/// Nothing touches a host before the environment, the artifact (deploys only) and every connection
/// are ready. A rollback or retire with nothing to act on fails with [`Error::Refused`] having
/// changed nothing; a lock held by another run fails with [`Error::LockHeld`].
pub fn run(plan: &Plan, opts: &ExecOptions, out: &mut dyn FnMut(&Event)) -> Result<Summary, Error> {
    run::run(plan, opts, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_line() {
        let mut s = Summary {
            action: Action::Deploy,
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
        s.action = Action::Rollback;
        s.phases.truncate(1);
        assert_eq!(
            s.to_string(),
            "rolled back shop to 0123456789ab on green (from: blue) in 1.82s: connect 200ms, prepare 120ms"
        );
        s.action = Action::Retire;
        assert_eq!(
            s.to_string(),
            "retired the green slot of shop (live: blue) in 1.82s: connect 200ms, prepare 120ms"
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
