//! `bluegreen-bench`: the benchmark suite. It brings up testbeds (`tests/testbed/testbed.sh`), deploys
//! the demo app (`tests/app`) under continuous load, and writes `BENCHMARKS.md` with tables and SVG
//! plots (under `crates/bench/plots/`):
//!
//! 1. zero downtime over consecutive deploys at the highest sustained request rate, both client modes;
//! 2. the switch gap (last host healthy → proxy serving the new version);
//! 3. bluegreen against a seed-style bash deploy (`tests/baseline/seed-style.sh`);
//! 4. scaling over app hosts: the demo JVM app at 1..16 hosts (deploy time by phase, peak memory),
//!    the light app (`tests/lightapp`) at 1..50 (wall time, the runner's CPU and memory, the
//!    remote CPU per host from the hosts' cgroups, every remote call's time), before and after;
//! 5. upload throughput against OpenSSH `scp`, and peak memory against artifact size;
//! 6. rollback to a retained slot.
//!
//! `bluegreen-bench` runs the full suite (release build: `cargo run --release -p bluegreen-bench`);
//! `bluegreen-bench --smoke` runs each measurement minimally, checks that it produced sane numbers, and
//! writes its report to a temporary directory (CI). Needs root, like the testbed.
//!
//! `--only 4` runs the scaling section alone (`--only 4 --light-only`: only its light-app part);
//! `BLUEGREEN_BIN=PATH` measures another build's binary, and `--write-before FILE` writes that
//! part's numbers to FILE, which the report reads back as "before" (`crates/bench/baseline-*.md`).

mod before;
mod poller;
mod proc;
mod report;
mod suite;
mod svg;
mod testbed;

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

/// The suite's error type: every failure becomes a message in the report or on stderr.
pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(|p| p.parent())
        .map_or_else(|| PathBuf::from("."), PathBuf::from)
}

#[derive(Parser)]
#[command(
    name = "bluegreen-bench",
    about = "Benchmarks bluegreen on the namespace testbed and writes BENCHMARKS.md"
)]
struct Cli {
    /// Run every measurement minimally and check the numbers are sane (CI); never touches BENCHMARKS.md
    /// unless --out says so.
    #[arg(long)]
    smoke: bool,
    /// Where to write the report (default: BENCHMARKS.md at the workspace root; with --smoke, a
    /// temporary directory).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where to write the plots (default: crates/bench/plots; with --smoke or --out, `plots` next to
    /// the report).
    #[arg(long)]
    plots: Option<PathBuf>,
    /// Run only these items (comma-separated numbers 1-6; 1 includes 2).
    #[arg(long, value_delimiter = ',')]
    only: Vec<u8>,
    /// Item 4 without its demo-JVM part: only the light app over the host counts.
    #[arg(long)]
    light_only: bool,
    /// Write item 4's light-app numbers to this file as a "before" the report can read back
    /// (measure the old build with BLUEGREEN_BIN=PATH).
    #[arg(long, value_name = "FILE")]
    write_before: Option<PathBuf>,
    /// What to call the measured build in the --write-before file (e.g. its commit).
    #[arg(long, default_value = "an earlier build")]
    before_label: String,
    /// The "before" numbers the report compares with (default: crates/bench/baseline-4c4a749.md).
    #[arg(long, value_name = "FILE")]
    before: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__rss") {
        return proc::rss_main(&args[2..]);
    }
    let cli = Cli::parse();
    match run(&cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bluegreen-bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<bool> {
    if proc::text_of("id", &["-u"]) != "0" {
        return Err("needs root: the testbed uses network, mount and PID namespaces".into());
    }
    let mut sizes = if cli.smoke {
        suite::Sizes::smoke()
    } else {
        suite::Sizes::full()
    };
    if cli.light_only {
        sizes.scaling_hosts.clear();
    }
    let tmp_out =
        std::env::temp_dir().join(format!("bluegreen-bench-smoke-{}", std::process::id()));
    let out = cli.out.clone().unwrap_or_else(|| {
        if cli.smoke {
            tmp_out.join("BENCHMARKS.md")
        } else {
            root().join("BENCHMARKS.md")
        }
    });
    let plots = cli.plots.clone().unwrap_or_else(|| {
        if cli.smoke || cli.out.is_some() {
            out.parent()
                .map_or_else(|| tmp_out.clone(), |p| p.join("plots"))
        } else {
            root().join("crates/bench/plots")
        }
    });
    let want = |n: u8| cli.only.is_empty() || cli.only.contains(&n);
    let t0 = std::time::Instant::now();

    let bin = proc::bluegreen_bin()?;
    let machine = report::Machine::read(cli.smoke);
    let scratch = testbed::Scratch::new("run")?;
    eprintln!("bench: building the demo app's jars");
    let jars = suite::build_all(&scratch, &sizes, want)?;

    let mut r = report::Results::default();
    let item = |n: u8, what: &str| {
        eprintln!(
            "bench: [{:>4.0}s] item {n}: {what}",
            t0.elapsed().as_secs_f64()
        );
    };
    if want(1) || want(2) {
        item(1, "zero downtime and switch gap");
        r.zero = Some(suite::zero_downtime(&sizes, &jars, &scratch).map_err(|e| e.to_string()));
    }
    if want(3) {
        item(3, "seed-style baseline");
        r.baseline =
            Some(suite::baseline(&sizes, &jars, &bin, &scratch).map_err(|e| e.to_string()));
    }
    if want(4) {
        item(4, "scaling");
        r.scaling = Some(suite::scaling(&sizes, &jars, &bin, &scratch).map_err(|e| e.to_string()));
    }
    if want(5) {
        item(5, "upload");
        r.upload = Some(suite::upload(&sizes, &bin, &scratch).map_err(|e| e.to_string()));
    }
    if want(6) {
        item(6, "rollback");
        r.rollback =
            Some(suite::rollback(&sizes, &jars, &bin, &scratch).map_err(|e| e.to_string()));
    }
    r.seconds = t0.elapsed().as_secs_f64();

    if let (Some(path), Some(Ok(sc))) = (&cli.write_before, &r.scaling) {
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let text = format!(
            "Written by `bluegreen-bench --only 4 --light-only --write-before` with `BLUEGREEN_BIN={}` \
             (bluegreen at {}), the benchmark code of the tree it ran from; read back by the report \
             as \"before\". The light app (`tests/lightapp`), {} counted deploys per host count after a \
             warm-up deploy, no load. Machine: {}; load average when it finished: {} (the CPU \
             numbers, counted per process and per cgroup, hold on a busy machine; the wall times do \
             not: measure again on a quiet one). To measure again:\n\n```sh\n\
             git worktree add /tmp/bg-before COMMIT\n\
             (cd /tmp/bg-before && CARGO_TARGET_DIR=/tmp/bg-before-target cargo build --release --bin bluegreen)\n\
             BLUEGREEN_BIN=/tmp/bg-before-target/release/bluegreen cargo run --release -p bluegreen-bench -- \\\n    \
             --only 4 --light-only --write-before crates/bench/baseline-COMMIT.md --before-label COMMIT \\\n    \
             --out /tmp/before/BENCHMARKS.md\n```",
            sc.bin,
            cli.before_label,
            sizes.scaling_runs,
            machine.summary(),
            load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
        );
        before::write(
            path,
            &format!("Scaling baseline: bluegreen at {}", cli.before_label),
            &text,
            &before::Numbers::of(&sc.light),
        )?;
        eprintln!("bench: wrote {}", path.display());
    }
    r.before = before::read(&cli.before.clone().unwrap_or_else(before::default_path));
    let problems = report::check(&r, &sizes);
    report::write(&r, &sizes, &machine, &out, &plots)?;
    eprintln!(
        "bench: wrote {} and plots in {} after {:.0}s",
        out.display(),
        plots.display(),
        r.seconds
    );
    for p in &problems {
        eprintln!("bench: BROKEN MEASUREMENT: {p}");
    }
    Ok(problems.is_empty())
}
