//! Deploys with a config file and prints every event: `cargo run -p bluegreen-ssh --example deploy --
//! CONFIG [--verbose]`. A stand-in for `bluegreen exec` while the CLI is being written.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.iter().find(|a| !a.starts_with("--")) else {
        eprintln!("usage: deploy CONFIG [--verbose]");
        return std::process::ExitCode::from(2);
    };
    let config = match bluegreen_core::Config::load(path.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let plan = bluegreen_core::Plan::new(&config);
    let interrupt = Arc::new(AtomicBool::new(false));
    if let Ok(ms) = std::env::var("DEPLOY_INTERRUPT_AFTER_MS") {
        // For trying out Ctrl-C handling without a terminal.
        let flag = interrupt.clone();
        let ms: u64 = ms.parse().unwrap_or(0);
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(ms));
            flag.store(true, Ordering::SeqCst);
        });
    }
    let opts = bluegreen_ssh::ExecOptions {
        verbose: args.iter().any(|a| a == "--verbose"),
        interrupt,
        ..Default::default()
    };
    let result = bluegreen_ssh::deploy(&plan, &opts, &mut |e| {
        if e.status != bluegreen_ssh::Status::Started || e.command.is_some() {
            println!("{e}");
        }
    });
    match result {
        Ok(summary) => {
            println!("{summary}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
