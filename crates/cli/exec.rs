//! `bluegreen exec`: checks everything that can be checked locally, then hands the plan to the SSH
//! backend and prints its progress.

use super::Failure;
use bluegreen_core::{Config, Plan};
use bluegreen_ssh::{Error, ExecOptions, Status};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub(crate) fn run(config_path: &Path, verbose: bool) -> Result<(), Failure> {
    let config = Config::load(config_path)?;
    // A missing or malformed `${VAR}` is bad input: report it before any host is touched.
    config.check_env(&|name| std::env::var(name).ok())?;
    let plan = Plan::new(&config);

    // Ctrl-C sets a flag the backend checks between steps and while polling: before the switch it
    // stops the new instances and leaves traffic where it was. A second Ctrl-C exits at once.
    let interrupt = Arc::new(AtomicBool::new(false));
    let flag = interrupt.clone();
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("bluegreen: interrupted twice, exiting without cleaning up");
            std::process::exit(130);
        }
        eprintln!(
            "bluegreen: interrupted, undoing what this deploy started (Ctrl-C again to quit now)"
        );
    });
    let opts = ExecOptions {
        verbose,
        interrupt,
        ..ExecOptions::default()
    };
    let result = bluegreen_ssh::deploy(&plan, &opts, &mut |event| {
        // A line when a step ends; a started line only when it carries the remote command (-v).
        if event.status != Status::Started || event.command.is_some() {
            eprintln!("{event}");
        }
    });
    match result {
        Ok(summary) => {
            println!("{summary}");
            Ok(())
        }
        // Found before any host was touched: bad input.
        Err(e @ (Error::Env(_) | Error::Artifact { .. })) => Err(Failure::Input(e.to_string())),
        Err(e) => Err(Failure::Run(e.to_string())),
    }
}
