//! `bluegreen-load`: continuous requests through nginx, with a live failure counter.

use bluegreen_loadgen::{Load, Mode, Options};
use clap::Parser;
use std::net::ToSocketAddrs;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Send requests without pause and count every failure by kind")]
struct Args {
    /// host:port of nginx.
    addr: String,
    /// Path to request.
    #[arg(long, default_value = "/version")]
    path: String,
    /// `new` (a connection per request) or `keepalive`.
    #[arg(long, default_value = "new")]
    mode: String,
    /// Concurrent workers.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Stop after this many seconds (0: until interrupted or --until-file exists).
    #[arg(long, default_value_t = 0)]
    seconds: u64,
    /// Stop once this file exists.
    #[arg(long)]
    until_file: Option<std::path::PathBuf>,
    /// Extra workers that keep slow requests in flight (requesting --slow-path).
    #[arg(long, default_value_t = 0)]
    slow_workers: usize,
    /// Path of the slow requests (the demo app's slow endpoint).
    #[arg(long, default_value = "/slow?ms=1500")]
    slow_path: String,
    /// Retry once when a reused keep-alive connection is reset, as browsers do.
    #[arg(long)]
    retry_reset: bool,
    /// Print the final counts as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let Some(addr) = args.addr.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
        eprintln!("error: `{}` is not host:port", args.addr);
        return ExitCode::from(2);
    };
    let mode = match args.mode.as_str() {
        "new" => Mode::NewConnection,
        "keepalive" => Mode::KeepAlive,
        other => {
            eprintln!("error: --mode `{other}`: use `new` or `keepalive`");
            return ExitCode::from(2);
        }
    };
    let mut opts = Options::new(addr, mode);
    opts.path = args.path;
    opts.workers = args.workers;
    opts.retry_reset = args.retry_reset;
    opts.slow_workers = args.slow_workers;
    opts.slow_path = args.slow_path;
    let load = Load::start(opts);
    let started = Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let c = load.snapshot();
        eprintln!("[load {:>4}s] {}", started.elapsed().as_secs(), c.line());
        if (args.seconds > 0 && started.elapsed().as_secs() >= args.seconds)
            || args.until_file.as_ref().is_some_and(|f| f.exists())
        {
            break;
        }
    }
    let c = load.stop();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&c).unwrap_or_default());
    } else {
        println!("{}", c.line());
    }
    if c.failures() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
