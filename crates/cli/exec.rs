//! The commands that talk to hosts: `exec`, `rollback` and `retire` check everything that can be
//! checked locally, then hand their plan to the SSH backend and print its progress; `status`,
//! `lock` and `history` print what the backend's operations read.

use super::Failure;
use bluegreen_core::plan::Action;
use bluegreen_core::{Config, Plan, Word};
use bluegreen_ssh::{ops, ExecOptions, Status};
use clap::Args;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Options of `exec`, `rollback` and `retire`.
#[derive(Args)]
pub(crate) struct RunArgs {
    /// Show the remote commands as they run.
    #[arg(short, long)]
    verbose: bool,
    /// When another run holds the deploy lock, retry every second for this long (`30s`, `5m`)
    /// instead of failing at once (exit 3).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    lock_wait: Option<Duration>,
}

/// Options of `rollback`.
#[derive(Args)]
pub(crate) struct RollbackArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Go back to this release instead of the previous one: a prefix of its sha256 (4 characters
    /// at least) or the start of the time of its deploy (`bluegreen releases`, `history`), started
    /// in the idle slot from the release kept on each host.
    #[arg(long, value_name = "RELEASE")]
    to: Option<String>,
}

/// Options of `retire`.
#[derive(Args)]
pub(crate) struct RetireArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Only when the rollback window (`retain`) since the last switch has passed; otherwise say
    /// how long it stays open and exit 0. For a cron job ending the window.
    #[arg(long)]
    if_expired: bool,
}

/// The environment variables that override `ssh.identity_file` and `ssh.known_hosts` (the rendered
/// script honours the same ones; Jenkins binds them from credentials).
const KEY_ENV: &str = "BG_SSH_KEY";
const KNOWN_HOSTS_ENV: &str = "BG_KNOWN_HOSTS";

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Loads the config for a command that connects to hosts: `$BG_SSH_KEY` / `$BG_KNOWN_HOSTS`
/// override the key and known_hosts files; a missing or malformed `${VAR}` is bad input, reported
/// before any host is touched. Only a deploy needs the artifact (and the variables it names).
fn load(config_path: &Path, action: Action) -> Result<Config, Failure> {
    let mut config = Config::load(config_path)?;
    if let Some(key) = env_nonempty(KEY_ENV) {
        config.ssh.identity_file = Some(Word::lit(key));
    }
    if let Some(kh) = env_nonempty(KNOWN_HOSTS_ENV) {
        config.ssh.known_hosts = Word::lit(kh);
    }
    if action != Action::Deploy {
        config.artifact = Word::lit("");
    }
    // Only what starts an instance needs the app's secrets (not a retire, status, the lock, ...).
    if !matches!(action, Action::Deploy | Action::Rollback) {
        config.secrets.clear();
    }
    config.check_env(&|name| std::env::var(name).ok())?;
    Ok(config)
}

/// `rollback [--to RELEASE]`.
pub(crate) fn rollback(config_path: &Path, args: &RollbackArgs) -> Result<(), Failure> {
    let Some(to) = &args.to else {
        return run(config_path, Action::Rollback, &args.run);
    };
    // Checked before the config is read or any host touched.
    let to =
        bluegreen_core::plan::rollback_target(to).map_err(|e| Failure::Input(e.to_string()))?;
    let config = load(config_path, Action::Rollback)?;
    let plan = Plan::rollback_to(&config, &to).map_err(|e| Failure::Input(e.to_string()))?;
    execute(&plan, Action::Rollback, &args.run)
}

/// `check --remote` (`fix` false) and `setup` (`fix` true).
pub(crate) fn check_remote(config_path: &Path, fix: bool, accept_new: bool) -> Result<(), Failure> {
    let mut config = load(config_path, Action::Retire)?;
    if accept_new {
        config.ssh.host_key_policy = bluegreen_core::config::HostKeyPolicy::AcceptNew;
    }
    let report = ops::check(&config, &ExecOptions::default(), fix)?;
    println!("{report}");
    if report.problems() > 0 {
        return Err(Failure::Quiet(1));
    }
    Ok(())
}

/// `takeover --port PORT` or `takeover --pid PID --host HOST`.
pub(crate) fn takeover(config_path: &Path, what: &ops::Takeover) -> Result<(), Failure> {
    let config = load(config_path, Action::Retire)?;
    let report = ops::takeover(&config, &ExecOptions::default(), what)?;
    println!("{report}");
    if !report.ok() {
        return Err(Failure::Quiet(1));
    }
    Ok(())
}

/// `releases [--json]`.
pub(crate) fn releases(config_path: &Path, json: bool) -> Result<(), Failure> {
    let config = load(config_path, Action::Retire)?;
    let report = ops::releases(&config, &ExecOptions::default())?;
    if json {
        println!("{}", report.to_json());
    } else {
        println!("{report}");
    }
    Ok(())
}

/// `exec`, `rollback`, `retire`.
pub(crate) fn run(config_path: &Path, action: Action, args: &RunArgs) -> Result<(), Failure> {
    let config = load(config_path, action)?;
    let plan = match action {
        Action::Deploy => Plan::new(&config),
        Action::Rollback => Plan::rollback(&config),
        Action::Retire => Plan::retire(&config),
    };
    execute(&plan, action, args)
}

/// Runs a plan, printing its progress; Ctrl-C undoes what it started.
fn execute(plan: &Plan, action: Action, args: &RunArgs) -> Result<(), Failure> {
    // Ctrl-C sets a flag the backend checks between steps and while polling: before the switch it
    // stops the new instances and leaves traffic where it was. A second Ctrl-C exits at once.
    let interrupt = Arc::new(AtomicBool::new(false));
    let flag = interrupt.clone();
    let what = action.name();
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("bluegreen: interrupted twice, exiting without cleaning up");
            std::process::exit(130);
        }
        eprintln!(
            "bluegreen: interrupted, undoing what this {what} started (Ctrl-C again to quit now)"
        );
    });
    let opts = ExecOptions {
        verbose: args.verbose,
        interrupt,
        lock_wait: args.lock_wait.unwrap_or(Duration::ZERO),
        ..ExecOptions::default()
    };
    let summary = bluegreen_ssh::run(plan, &opts, &mut |event| {
        // A line when a step ends; a started line only when it carries the remote command (-v).
        if event.status != Status::Started || event.command.is_some() {
            eprintln!("{event}");
        }
    })?;
    println!("{summary}");
    Ok(())
}

/// `retire [--if-expired]`.
pub(crate) fn retire(config_path: &Path, args: &RetireArgs) -> Result<(), Failure> {
    if args.if_expired {
        let config = load(config_path, Action::Retire)?;
        let report = ops::status(&config, &ExecOptions::default())?;
        if !report.retained() {
            println!("no idle slot is running: nothing to retire");
            return Ok(());
        }
        if let Some(d) = report.since_last_switch() {
            if d < config.retain {
                println!(
                    "the rollback window is open for another {} (last switch {} ago, retain: {}): nothing retired",
                    ops::ago((config.retain - d).as_secs()),
                    ops::ago(d.as_secs()),
                    humantime::format_duration(config.retain)
                );
                return Ok(());
            }
        }
    }
    run(config_path, Action::Retire, &args.run)
}

/// `status [--json]`: exit 1 when drift is found.
pub(crate) fn status(config_path: &Path, json: bool, fix: bool) -> Result<(), Failure> {
    let config = load(config_path, Action::Retire)?;
    let report = if fix {
        let repair = ops::repair(&config, &ExecOptions::default())?;
        for f in &repair.fixed {
            eprintln!("fixed: {f}");
        }
        for l in &repair.left {
            eprintln!("not fixed, a person must decide: {l}");
        }
        if repair.fixed.is_empty() && repair.left.is_empty() {
            eprintln!("nothing to fix");
        }
        repair.report
    } else {
        ops::status(&config, &ExecOptions::default())?
    };
    if json {
        println!("{}", report.to_json());
    } else {
        println!("{report}");
    }
    if report.consistent() {
        Ok(())
    } else {
        Err(Failure::Quiet(1))
    }
}

/// `lock show`.
pub(crate) fn lock_show(config_path: &Path) -> Result<(), Failure> {
    let config = load(config_path, Action::Retire)?;
    let lock = ops::lock_show(&config, &ExecOptions::default())?;
    println!("{}: {lock}", lock.path);
    if lock.held {
        let age = lock
            .age
            .map_or_else(|| "unknown".to_string(), |a| ops::ago(a.as_secs()));
        println!("  holder:  {}", lock.holder);
        println!("  since:   {} ({age} ago)", lock.time);
        println!("  message: {}", lock.message);
        if let Some(left) = lock.expires_in {
            println!("  expires: in {left}s unless its run renews it");
        }
        println!(
            "  stale:   {} (when not renewed for lock.stale_after: {})",
            if lock.stale() { "YES" } else { "no" },
            humantime::format_duration(lock.stale_after)
        );
    }
    Ok(())
}

/// `lock release [--force]`.
pub(crate) fn lock_release(config_path: &Path, force: bool) -> Result<(), Failure> {
    let config = load(config_path, Action::Retire)?;
    let (lock, said) = ops::lock_release(&config, &ExecOptions::default(), force)?;
    if lock.held {
        println!("{said} (it was {lock}); recorded in the audit log");
    } else {
        println!("{said}");
    }
    Ok(())
}

/// `history [--json] [-n N]`.
pub(crate) fn history(config_path: &Path, json: bool, count: usize) -> Result<(), Failure> {
    let config = load(config_path, Action::Retire)?;
    let events = ops::history(&config, &ExecOptions::default(), count)?;
    for e in &events {
        if json {
            println!("{e}");
        } else {
            println!("{}", ops::history_line(e));
        }
    }
    if events.is_empty() && !json {
        eprintln!("no events recorded yet");
    }
    Ok(())
}
