//! The measurements, one function per item of the benchmark issue. Each brings up its own testbed and
//! tears it down before returning; every load loop and poller stops by itself.

use crate::poller::Poller;
use crate::proc::{self, measured, Measured};
use crate::testbed::{build_jars, Scratch, Testbed, Workdir, DEADLINE};
use crate::{root, Result};
use bluegreen_loadgen::{Counts, Load, Mode, Options};
use bluegreen_ssh::{ExecOptions, Status};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How much of everything to run.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Deploys per load series (item 1).
    pub deploys: usize,
    /// Worker counts tried when looking for the highest sustained rate, and seconds per try.
    pub calib_workers: Vec<usize>,
    /// Seconds per calibration step.
    pub calib_secs: f64,
    /// Counted deploys per tool (item 3).
    pub baseline_runs: usize,
    /// App host counts (item 4) with the demo JVM app.
    pub scaling_hosts: Vec<usize>,
    /// App host counts (item 4) with the light app (`tests/lightapp`).
    pub light_hosts: Vec<usize>,
    /// Counted deploys per host count.
    pub scaling_runs: usize,
    /// Artifact sizes in MiB (item 5); a plain jar is measured as well.
    pub upload_mib: Vec<u64>,
    /// Repetitions per size and tool.
    pub upload_runs: usize,
    /// Rollbacks (item 6).
    pub rollback_runs: usize,
}

impl Sizes {
    /// The full suite.
    pub fn full() -> Sizes {
        Sizes {
            deploys: 20,
            calib_workers: vec![1, 2, 4, 8, 16, 32, 64],
            calib_secs: 2.0,
            baseline_runs: 5,
            scaling_hosts: vec![1, 2, 4, 8, 16],
            light_hosts: vec![1, 8, 32, 50],
            scaling_runs: 3,
            upload_mib: vec![64, 256],
            upload_runs: 3,
            rollback_runs: 5,
        }
    }

    /// Each measurement once, minimally.
    pub fn smoke() -> Sizes {
        Sizes {
            deploys: 2,
            calib_workers: vec![1, 2],
            calib_secs: 0.5,
            baseline_runs: 1,
            scaling_hosts: vec![1, 2],
            light_hosts: vec![1, 2],
            scaling_runs: 1,
            upload_mib: vec![4],
            upload_runs: 1,
            rollback_runs: 1,
        }
    }
}

/// The app jars every measurement deploys, built once, and the light app's scripts.
pub struct Jars {
    /// Where they are (`app-VERSION.jar`, `light-VERSION.pl`).
    pub dir: PathBuf,
}

/// A deploy run in-process, with the moments the suite cares about.
pub struct InProcess {
    /// The summary.
    pub summary: bluegreen_ssh::Summary,
    /// When `deploy` was called.
    pub started: Instant,
    /// When the last host's health check succeeded.
    pub last_health_ok: Option<Instant>,
    /// When the switch step started.
    pub switch_started: Option<Instant>,
}

/// Runs a deploy with `config` in this process, timestamping its events as they arrive.
pub fn deploy_in_process(config: &Path) -> Result<InProcess> {
    let cfg = bluegreen_core::Config::load(config)?;
    let plan = bluegreen_core::Plan::new(&cfg);
    let opts = ExecOptions {
        deployer: Some("bench@bluegreen-bench".into()),
        ..ExecOptions::default()
    };
    let started = Instant::now();
    let mut last_health_ok = None;
    let mut switch_started = None;
    let mut log = Vec::new();
    let result = bluegreen_ssh::run(&plan, &opts, &mut |e| {
        let now = Instant::now();
        match (e.step.as_str(), e.status, e.cleanup) {
            ("health", Status::Ok, false) => last_health_ok = Some(now),
            ("switch", Status::Started, false) => switch_started = Some(now),
            _ => {}
        }
        if e.status != Status::Started {
            log.push(e.to_string());
        }
    });
    match result {
        Ok(summary) => Ok(InProcess {
            summary,
            started,
            last_health_ok,
            switch_started,
        }),
        Err(e) => Err(format!("deploy failed: {e}\n{}", log.join("\n")).into()),
    }
}

fn cli_deploy(bin: &Path, wd: &Workdir) -> Result<Measured> {
    let cfg = wd.config();
    let m = measured(bin, &["-c", &cfg.display().to_string(), "exec"], &wd.dir)?;
    if !m.ok {
        return Err(format!("bluegreen exec failed:\n{}{}", m.stdout, m.stderr).into());
    }
    Ok(m)
}

fn versions(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// Builds every jar the items `want` says deploy (small ones; the upload item builds its own), and
/// the light app's scripts.
pub fn build_all(scratch: &Scratch, s: &Sizes, want: impl Fn(u8) -> bool) -> Result<Jars> {
    let dir = scratch.path().join("jars");
    let mut v = Vec::new();
    if want(1) || want(2) {
        v.extend(versions("z", 4 * s.deploys + 1));
    }
    if want(3) {
        v.extend(versions("b", 2 * s.baseline_runs + 2));
    }
    if want(4) {
        // The JVM boot's CPU is measured with s0 even when no host count deploys the demo app.
        v.extend(versions("s", s.scaling_runs + 1));
    }
    if want(6) {
        v.extend(versions("r", s.rollback_runs + 2));
    }
    if !v.is_empty() {
        build_jars(&dir, &v, 0)?;
    }
    let light = versions("l", s.scaling_runs + 1);
    let light: Vec<&str> = light.iter().map(String::as_str).collect();
    bluegreen_testbed::build_light_apps(&dir, &light)?;
    Ok(Jars { dir })
}

// ---------------------------------------------------------------------------------------------
// 1 and 2: zero downtime under the highest sustained load, and the switch gap

/// The name of the series without load.
pub const NO_LOAD: &str = "no load (poller only)";

/// Requests per second at one worker count.
#[derive(Debug, Clone)]
pub struct CalibPoint {
    /// Workers.
    pub workers: usize,
    /// Good answers per second.
    pub rps: f64,
    /// Failures while measuring.
    pub failures: u64,
}

/// The highest sustained rate for one client mode.
#[derive(Debug, Clone)]
pub struct Calibration {
    /// `new-connection` or `keep-alive`.
    pub mode: Mode,
    /// Every point tried.
    pub points: Vec<CalibPoint>,
    /// The fewest workers reaching 95% of the best rate.
    pub chosen: usize,
}

/// One deploy under load.
#[derive(Debug, Clone)]
pub struct LoadedDeploy {
    /// Deploy wall time.
    pub total: Duration,
    /// Last host healthy → proxy first serving the new version.
    pub gap: Option<Duration>,
    /// Last host healthy → switch step started.
    pub to_switch_step: Option<Duration>,
    /// Switch step started → proxy first serving the new version.
    pub switch_to_served: Option<Duration>,
    /// Failures of this deploy's window, by kind.
    pub counts: Counts,
}

/// A series of consecutive deploys under one client.
#[derive(Debug, Clone)]
pub struct Series {
    /// Label.
    pub name: String,
    /// Client mode.
    pub mode: Mode,
    /// One retry of a reset reused connection.
    pub retry: bool,
    /// Whether the load client ran (the last series runs the poller alone).
    pub loaded: bool,
    /// Load workers.
    pub workers: usize,
    /// Good answers per second over the whole series.
    pub rps: f64,
    /// Every deploy.
    pub deploys: Vec<LoadedDeploy>,
    /// The whole series' counts.
    pub counts: Counts,
    /// The poller's resolution.
    pub poll_resolution: Duration,
}

/// Items 1 and 2.
pub struct ZeroDowntime {
    /// Per mode.
    pub calibrations: Vec<Calibration>,
    /// New-connection, keep-alive, keep-alive with one retry.
    pub series: Vec<Series>,
}

fn calibrate(addr: std::net::SocketAddr, mode: Mode, s: &Sizes) -> Calibration {
    let mut points = Vec::new();
    for &w in &s.calib_workers {
        let mut o = Options::new(addr, mode);
        o.workers = w;
        let load = Load::start(o);
        std::thread::sleep(Duration::from_millis(300));
        let a = load.snapshot();
        let t = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(s.calib_secs));
        let b = load.snapshot();
        let secs = t.elapsed().as_secs_f64();
        let _ = load.stop();
        points.push(CalibPoint {
            workers: w,
            rps: (b.ok - a.ok) as f64 / secs,
            failures: b.failures() - a.failures(),
        });
    }
    let best = points.iter().map(|p| p.rps).fold(0.0, f64::max);
    let chosen = points
        .iter()
        .find(|p| p.rps >= 0.95 * best)
        .map_or(1, |p| p.workers);
    Calibration {
        mode,
        points,
        chosen,
    }
}

/// Counts of `b` minus those of `a` (the numbers only).
pub fn delta(a: &Counts, b: &Counts) -> Counts {
    Counts {
        ok: b.ok - a.ok,
        connect_error: b.connect_error - a.connect_error,
        reset: b.reset - a.reset,
        timeout: b.timeout - a.timeout,
        http_5xx: b.http_5xx - a.http_5xx,
        http_other: b.http_other - a.http_other,
        wrong_version: b.wrong_version - a.wrong_version,
        reset_retried_ok: b.reset_retried_ok - a.reset_retried_ok,
        ..Counts::default()
    }
}

/// Items 1 and 2 on a two-host testbed (the seed's topology).
pub fn zero_downtime(s: &Sizes, jars: &Jars, scratch: &Scratch) -> Result<ZeroDowntime> {
    let tb = Testbed::up(2)?;
    let wd = Workdir::new(&tb, &scratch.path().join("zd"), &jars.dir, DEADLINE, "")?;
    let addr = tb.proxy_http().parse()?;
    let mut next = versions("z", 4 * s.deploys + 1).into_iter();
    let mut live = next.next().ok_or("no versions")?;
    wd.stage(&live)?;
    deploy_in_process(&wd.config())?;

    let calibrations: Vec<Calibration> = [Mode::NewConnection, Mode::KeepAlive]
        .into_iter()
        .map(|m| calibrate(addr, m, s))
        .collect();
    let mut series = Vec::new();
    for (name, mode, retry, loaded) in [
        (
            "new connection per request",
            Mode::NewConnection,
            false,
            true,
        ),
        ("keep-alive", Mode::KeepAlive, false, true),
        (
            "keep-alive, one retry on reset",
            Mode::KeepAlive,
            true,
            true,
        ),
        // The switch gap without the load competing for the CPU: only the poller runs.
        (NO_LOAD, Mode::NewConnection, false, false),
    ] {
        let workers = calibrations
            .iter()
            .find(|c| c.mode == mode)
            .map_or(2, |c| c.chosen);
        let mut o = Options::new(addr, mode);
        o.workers = workers;
        o.retry_reset = retry;
        let load = loaded.then(|| Load::start(o));
        let snapshot = |l: &Option<Load>| l.as_ref().map(Load::snapshot).unwrap_or_default();
        let allow = |l: &Option<Load>, v: &[&str]| {
            if let Some(l) = l {
                l.allow(v);
            }
        };
        let poller = Poller::start(addr);
        allow(&load, &[&live]);
        std::thread::sleep(Duration::from_millis(300));
        let t_series = Instant::now();
        let first = snapshot(&load);
        let mut deploys = Vec::new();
        let n = if loaded {
            s.deploys
        } else {
            s.deploys.div_ceil(2)
        };
        for _ in 0..n {
            let version = next.next().ok_or("ran out of versions")?;
            wd.stage(&version)?;
            allow(&load, &[&live, &version]);
            let before = snapshot(&load);
            let d = deploy_in_process(&wd.config());
            // After the deploy returns, only the new version may answer.
            allow(&load, &[&version]);
            let d = d?;
            let served = poller.first_after(&version, d.started, Duration::from_secs(5));
            std::thread::sleep(Duration::from_millis(200));
            let after = snapshot(&load);
            let since = |a: Option<Instant>, b: Option<Instant>| match (a, b) {
                (Some(a), Some(b)) => Some(b.saturating_duration_since(a)),
                _ => None,
            };
            deploys.push(LoadedDeploy {
                total: d.summary.total,
                gap: since(d.last_health_ok, served),
                to_switch_step: since(d.last_health_ok, d.switch_started),
                switch_to_served: since(d.switch_started, served),
                counts: delta(&before, &after),
            });
            eprintln!(
                "bench: [{name}] {version}: {:.2}s, gap {:?}, {}",
                d.summary.total.as_secs_f64(),
                deploys.last().and_then(|x| x.gap),
                deploys.last().map(|x| x.counts.line()).unwrap_or_default()
            );
            live = version;
        }
        let last = snapshot(&load);
        let secs = t_series.elapsed().as_secs_f64();
        let poll_resolution = poller.mean_request();
        drop(poller);
        if let Some(l) = load {
            let _ = l.stop();
        }
        let mut counts = delta(&first, &last);
        counts.samples = last.samples.clone();
        series.push(Series {
            name: name.into(),
            mode,
            retry,
            loaded,
            workers: if loaded { workers } else { 0 },
            rps: counts.ok as f64 / secs,
            deploys,
            counts,
            poll_resolution,
        });
    }
    Ok(ZeroDowntime {
        calibrations,
        series,
    })
}

// ---------------------------------------------------------------------------------------------
// 3: against a seed-style baseline

/// One deploy by one tool.
#[derive(Debug, Clone)]
pub struct ToolRun {
    /// Command start to exit.
    pub total: Duration,
    /// Command start to the proxy first serving the new version.
    pub to_switch: Duration,
}

/// Item 3.
pub struct Baseline {
    /// bluegreen (`bluegreen exec`).
    pub bluegreen: Vec<ToolRun>,
    /// bluegreen's phases, per run.
    pub phases: Vec<Vec<(String, Duration)>>,
    /// `tests/baseline/seed-style.sh`.
    pub seed: Vec<ToolRun>,
    /// App hosts.
    pub hosts: usize,
}

/// Item 3: both tools on one two-host testbed, one after the other, each after a warm-up deploy.
pub fn baseline(s: &Sizes, jars: &Jars, bin: &Path, scratch: &Scratch) -> Result<Baseline> {
    let tb = Testbed::up(2)?;
    let addr = tb.proxy_http().parse()?;
    let poller = Poller::start(addr);
    let mut v = versions("b", 2 * s.baseline_runs + 2).into_iter();
    let script = root().join("tests/baseline/seed-style.sh");
    let mut seed = Vec::new();
    for i in 0..=s.baseline_runs {
        let version = v.next().ok_or("ran out of versions")?;
        let jar = jars.dir.join(format!("app-{version}.jar"));
        let t0 = Instant::now();
        let m = measured(
            Path::new("bash"),
            &[
                &script.display().to_string(),
                &tb.env_file().display().to_string(),
                &jar.display().to_string(),
            ],
            &root(),
        )?;
        if !m.ok {
            return Err(format!("seed-style.sh failed:\n{}{}", m.stdout, m.stderr).into());
        }
        let served = poller
            .first_after(&version, t0, Duration::from_secs(5))
            .ok_or_else(|| format!("seed-style: the proxy never served {version}"))?;
        if i > 0 {
            seed.push(ToolRun {
                total: m.wall,
                to_switch: served - t0,
            });
        }
        eprintln!("bench: seed-style {version}: {:.2}s", m.wall.as_secs_f64());
    }
    tb.reset_apps()?;
    let wd = Workdir::new(
        &tb,
        &scratch.path().join("baseline"),
        &jars.dir,
        DEADLINE,
        "",
    )?;
    let mut bg = Vec::new();
    let mut phases = Vec::new();
    for i in 0..=s.baseline_runs {
        let version = v.next().ok_or("ran out of versions")?;
        wd.stage(&version)?;
        let t0 = Instant::now();
        let m = cli_deploy(bin, &wd)?;
        let served = poller
            .first_after(&version, t0, Duration::from_secs(5))
            .ok_or_else(|| format!("bluegreen: the proxy never served {version}"))?;
        if i > 0 {
            bg.push(ToolRun {
                total: m.wall,
                to_switch: served - t0,
            });
            phases.push(proc::parse_summary(&m.stdout).map_or_else(Vec::new, |(_, p)| p));
        }
        eprintln!("bench: bluegreen {version}: {:.2}s", m.wall.as_secs_f64());
    }
    Ok(Baseline {
        bluegreen: bg,
        phases,
        seed,
        hosts: 2,
    })
}

// ---------------------------------------------------------------------------------------------
// 4: scaling

/// Deploys at one host count.
#[derive(Debug, Clone)]
pub struct ScalePoint {
    /// App hosts.
    pub hosts: usize,
    /// Wall time of each counted deploy.
    pub totals: Vec<Duration>,
    /// Phases of each counted deploy.
    pub phases: Vec<Vec<(String, Duration)>>,
    /// Peak RSS of `bluegreen exec` over the counted deploys, KiB.
    pub max_rss_kib: u64,
}

/// Item 4, plus what one app JVM boot costs in CPU (the cause of what does not scale on 2 cores).
pub struct Scaling {
    /// Per host count, the demo JVM app.
    pub points: Vec<ScalePoint>,
    /// CPU time (user + system) one demo JVM spends until its health answers 200, and the wall time.
    pub jvm_boot_cpu: Option<(Duration, Duration)>,
    /// Per host count, the light app: what the deploy tool itself costs.
    pub light: Vec<LightPoint>,
    /// The light app on one host with bluegreen's default health rule (one good answer, polled
    /// every 500 ms) instead of the suite's (two good answers 200 ms apart).
    pub light_default_health: Option<LightPoint>,
    /// The binary measured (`$BLUEGREEN_BIN` or this build's).
    pub bin: String,
}

/// One counted deploy of the light app, with what it cost where.
#[derive(Debug, Clone)]
pub struct LightRun {
    /// `bluegreen exec` wall time, spawn to exit.
    pub wall: Duration,
    /// `bluegreen exec`'s own CPU (user + system, from `wait4`'s rusage).
    pub runner_cpu: Duration,
    /// Its peak RSS, KiB.
    pub max_rss_kib: u64,
    /// CPU each app host used outside its app during the deploy (sshd, shells, the remote library).
    pub remote_cpu: Vec<Duration>,
    /// The same on the proxy (nginx's reload included).
    pub proxy_cpu: Duration,
    /// The app instances' CPU on all app hosts (excluded from `remote_cpu`).
    pub app_cpu: Duration,
    /// CPU time every process of the machine used during the deploy (`/proc/stat`), all cores.
    pub machine_cpu: Duration,
    /// Every remote call: (`proxy` or `app`, call kind, time).
    pub calls: Vec<(String, String, Duration)>,
}

/// The light app at one host count.
#[derive(Debug, Clone)]
pub struct LightPoint {
    /// App hosts.
    pub hosts: usize,
    /// Counted deploys.
    pub runs: Vec<LightRun>,
    /// `Testbed::up` for this many hosts.
    pub up: Duration,
}

/// CPU time of all processes on the machine so far (`/proc/stat`'s `cpu` line: user, nice, system,
/// irq, softirq, steal; idle and iowait left out).
pub fn machine_busy() -> Duration {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = text.lines().find(|l| l.starts_with("cpu ")).map_or(0, |l| {
        l.split_whitespace()
            .skip(1)
            .take(8)
            .enumerate()
            .filter(|(i, _)| *i != 3 && *i != 4)
            .filter_map(|(_, v)| v.parse::<u64>().ok())
            .sum()
    });
    Duration::from_millis(ticks * 1000 / clock_ticks())
}

fn clock_ticks() -> u64 {
    static HZ: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        proc::text_of("getconf", &["CLK_TCK"])
            .parse::<u64>()
            .unwrap_or(100)
            .max(1)
    })
}

/// The remote calls in `bluegreen exec -v`'s event lines, timed by when the lines arrived: a call
/// runs from its `[HOST] STEP .. $ bg_main CALL ...` line to the next line of the same host. Steps
/// that show no call (`connect`, `health`: the runner's own work, or older builds) count with the
/// time their `ok` line reports.
pub fn remote_calls(lines: &[(Duration, String)]) -> Vec<(String, String, Duration)> {
    struct Ev<'a> {
        t: Duration,
        host: &'a str,
        step: &'a str,
        word: &'a str,
        rest: Vec<&'a str>,
    }
    let evs: Vec<Ev> = lines
        .iter()
        .filter_map(|(t, l)| {
            let (host, rest) = l.strip_prefix('[')?.split_once("] ")?;
            let mut w = rest.split_whitespace();
            let step = w.next()?;
            let word = w.next()?;
            Some(Ev {
                t: *t,
                host,
                step,
                word,
                rest: w.collect(),
            })
        })
        .collect();
    let kind = |h: &str| if h == "proxy" { "proxy" } else { "app" }.to_string();
    let mut calls = Vec::new();
    let mut with_calls: Vec<(&str, &str)> = Vec::new();
    for (i, e) in evs.iter().enumerate() {
        if e.word != ".." || e.rest.first() != Some(&"$") {
            continue;
        }
        let Some(call) = e.rest.iter().skip_while(|w| **w != "bg_main").nth(1) else {
            continue;
        };
        with_calls.push((e.host, e.step));
        if let Some(next) = evs[i + 1..].iter().find(|n| n.host == e.host) {
            calls.push((kind(e.host), call.to_string(), next.t.saturating_sub(e.t)));
        }
    }
    for e in &evs {
        if e.word == "ok"
            && e.host != bluegreen_ssh::LOCAL
            && !with_calls.contains(&(e.host, e.step))
        {
            if let Some(d) = e.rest.first().and_then(|d| proc::parse_human(d)) {
                calls.push((kind(e.host), e.step.trim_end_matches('*').to_string(), d));
            }
        }
    }
    calls
}

/// Item 4: one testbed per host count; the demo JVM app at `s.scaling_hosts`, then (apps reset)
/// the light app at `s.light_hosts`.
pub fn scaling(s: &Sizes, jars: &Jars, bin: &Path, scratch: &Scratch) -> Result<Scaling> {
    let mut points = Vec::new();
    let mut light = Vec::new();
    let mut light_default_health = None;
    let mut counts: Vec<usize> = s
        .scaling_hosts
        .iter()
        .chain(&s.light_hosts)
        .copied()
        .collect();
    counts.sort_unstable();
    counts.dedup();
    for n in counts {
        let t = Instant::now();
        let tb = Testbed::up(n)?;
        let up = t.elapsed();
        eprintln!(
            "bench: testbed with {n} app host(s) up in {:.1}s",
            up.as_secs_f64()
        );
        if s.scaling_hosts.contains(&n) {
            points.push(scale_jvm(s, jars, bin, scratch, &tb, n)?);
            tb.reset_apps()?;
        }
        if s.light_hosts.contains(&n) {
            let opts = bluegreen_testbed::DeployOptions::new(DEADLINE)
                .light()
                .app_cgroup();
            let mut p = scale_light(s, jars, scratch, &tb, n, bin, &opts, "light")?;
            p.up = up;
            light.push(p);
            if n == 1 {
                let opts = opts.default_health_rule();
                light_default_health = Some(scale_light(
                    s, jars, scratch, &tb, n, bin, &opts, "light-dh",
                )?);
            }
        }
    }
    Ok(Scaling {
        points,
        jvm_boot_cpu: jvm_boot_cpu(&jars.dir.join("app-s0.jar")).ok(),
        light,
        light_default_health,
        bin: bin.display().to_string(),
    })
}

fn scale_jvm(
    s: &Sizes,
    jars: &Jars,
    bin: &Path,
    scratch: &Scratch,
    tb: &Testbed,
    n: usize,
) -> Result<ScalePoint> {
    let wd = Workdir::new(
        tb,
        &scratch.path().join(format!("scale{n}")),
        &jars.dir,
        DEADLINE,
        "",
    )?;
    let mut totals = Vec::new();
    let mut phases = Vec::new();
    let mut max_rss_kib = 0;
    for (i, version) in versions("s", s.scaling_runs + 1).iter().enumerate() {
        wd.stage(version)?;
        let m = cli_deploy(bin, &wd)?;
        if i == 0 {
            continue; // the first deploy starts from nothing: not a steady-state deploy
        }
        let (total, p) = proc::parse_summary(&m.stdout)
            .ok_or_else(|| format!("no summary line in {:?}", m.stdout))?;
        totals.push(total);
        phases.push(p);
        max_rss_kib = max_rss_kib.max(m.max_rss_kib);
        eprintln!(
            "bench: {n} host(s) {version}: {:.2}s, {} KiB",
            total.as_secs_f64(),
            m.max_rss_kib
        );
    }
    Ok(ScalePoint {
        hosts: n,
        totals,
        phases,
        max_rss_kib,
    })
}

/// The light app deployed to `n` hosts as `opts` says (in a workspace named `name` and `n`).
#[allow(clippy::too_many_arguments)]
fn scale_light(
    s: &Sizes,
    jars: &Jars,
    scratch: &Scratch,
    tb: &Testbed,
    n: usize,
    bin: &Path,
    opts: &bluegreen_testbed::DeployOptions,
    name: &str,
) -> Result<LightPoint> {
    let wd = Workdir::with(
        tb,
        &scratch.path().join(format!("{name}{n}")),
        &jars.dir,
        opts,
    )?;
    let hosts: Vec<String> = (1..=n).map(|i| format!("app{i}")).collect();
    let cpu = |h: &str| -> Result<bluegreen_testbed::HostCpu> {
        tb.host_cpu(h).ok_or_else(|| {
            format!("no cgroup CPU numbers for {h} (no writable cgroup v2 mount?)").into()
        })
    };
    let mut runs = Vec::new();
    for (i, version) in versions("l", s.scaling_runs + 1).iter().enumerate() {
        wd.stage(version)?;
        let before: Vec<_> = hosts.iter().map(|h| cpu(h)).collect::<Result<_>>()?;
        let proxy_before = cpu("proxy")?;
        let busy_before = machine_busy();
        let cfg = wd.config().display().to_string();
        let (m, lines) = proc::measured_lines(bin, &["-c", &cfg, "exec", "-v"], &wd.dir)?;
        let busy = machine_busy().saturating_sub(busy_before);
        if !m.ok {
            return Err(format!("bluegreen exec failed:\n{}{}", m.stdout, m.stderr).into());
        }
        let after: Vec<_> = hosts.iter().map(|h| cpu(h)).collect::<Result<_>>()?;
        let proxy = cpu("proxy")?.since(&proxy_before);
        let used: Vec<_> = after.iter().zip(&before).map(|(a, b)| a.since(b)).collect();
        let run = LightRun {
            wall: m.wall,
            runner_cpu: m.cpu(),
            max_rss_kib: m.max_rss_kib,
            remote_cpu: used
                .iter()
                .map(|u| Duration::from_micros(u.tool_usec()))
                .collect(),
            proxy_cpu: Duration::from_micros(proxy.tool_usec()),
            app_cpu: Duration::from_micros(used.iter().map(|u| u.app_usec).sum()),
            machine_cpu: busy,
            calls: remote_calls(&lines),
        };
        eprintln!(
            "bench: light app, {n} host(s) {version}: {:.2}s, runner {:.0} ms CPU, {} KiB, remote {:.0} ms CPU per host, proxy {:.0} ms, machine {:.2} s CPU{}",
            run.wall.as_secs_f64(),
            run.runner_cpu.as_secs_f64() * 1000.0,
            run.max_rss_kib,
            run.remote_cpu.iter().sum::<Duration>().as_secs_f64() * 1000.0 / n as f64,
            run.proxy_cpu.as_secs_f64() * 1000.0,
            run.machine_cpu.as_secs_f64(),
            if i == 0 { " (warm-up, not counted)" } else { "" }
        );
        if i > 0 {
            runs.push(run);
        }
    }
    Ok(LightPoint {
        hosts: n,
        runs,
        up: Duration::ZERO,
    })
}

/// Starts the demo app on 127.0.0.1 with the testbed's JVM flags, waits for its health to answer 200,
/// and reads its CPU time (user + system) from /proc; then stops it.
fn jvm_boot_cpu(jar: &Path) -> Result<(Duration, Duration)> {
    let port = 18_000 + (std::process::id() % 1000) as u16;
    let t0 = Instant::now();
    let mut child = std::process::Command::new("java")
        .args([
            "-Xmx64m",
            "-Xss512k",
            "-XX:TieredStopAtLevel=1",
            "-XX:+UseSerialGC",
            "-XX:-UsePerfData",
            "-jar",
        ])
        .arg(jar)
        .arg(format!("--server.port={port}"))
        .arg("--server.address=127.0.0.1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let mut result = Err("the JVM did not turn healthy in 30s".into());
    while t0.elapsed() < Duration::from_secs(30) {
        if health_ok(addr) {
            let wall = t0.elapsed();
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id()))?;
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map_or("", |(_, r)| r)
                .split_whitespace()
                .collect();
            // utime and stime are fields 14 and 15 of /proc/PID/stat: 12 and 13 after the comm.
            let ticks: u64 = fields
                .get(11..13)
                .map_or(0, |f| f.iter().filter_map(|x| x.parse::<u64>().ok()).sum());
            let hz = proc::text_of("getconf", &["CLK_TCK"])
                .parse::<u64>()
                .unwrap_or(100);
            result = Ok((Duration::from_millis(ticks * 1000 / hz.max(1)), wall));
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn health_ok(addr: std::net::SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /actuator/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    buf.starts_with(b"HTTP/1.1 200")
}

// ---------------------------------------------------------------------------------------------
// 5: upload

/// One artifact size.
#[derive(Debug, Clone)]
pub struct UploadPoint {
    /// Artifact bytes.
    pub bytes: u64,
    /// bluegreen's SFTP transfer time, per run (from the copy step's report).
    pub bg_transfer: Vec<Duration>,
    /// bluegreen's whole copy step (prepare, transfer, remote sha256 check), per run.
    pub bg_copy_step: Vec<Duration>,
    /// Peak RSS of `bluegreen exec`, KiB (max over runs).
    pub bg_rss_kib: u64,
    /// `scp` wall time (connection set-up included), per run.
    pub scp_wall: Vec<Duration>,
    /// Peak RSS of `scp`, KiB.
    pub scp_rss_kib: u64,
}

/// Item 5.
pub struct Upload {
    /// Per size, smallest (the plain jar) first.
    pub points: Vec<UploadPoint>,
    /// `ssh HOST true` wall time (connection set-up and authentication), per run.
    pub ssh_setup: Vec<Duration>,
}

/// Parses the copy step's event line: `... 64.0 MiB to DIR in 0.91s (70 MiB/s over sftp) ...`.
fn copy_line(stderr: &str) -> Option<(Duration, Duration)> {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("[app1] copy") && l.contains(" ok "))?;
    let after_ok = line.split(" ok ").nth(1)?.trim_start();
    let step = proc::parse_human(after_ok.split_whitespace().next()?)?;
    let transfer = line
        .rsplit_once(" in ")?
        .1
        .split_whitespace()
        .next()
        .and_then(proc::parse_human)?;
    Some((step, transfer))
}

/// Item 5 on a one-host testbed: bluegreen's upload and OpenSSH `scp` of the same files to the same host.
pub fn upload(s: &Sizes, bin: &Path, scratch: &Scratch) -> Result<Upload> {
    let tb = Testbed::up(1)?;
    let host = tb.app_addrs().into_iter().next().ok_or("no app host")?;
    let dir = scratch.path().join("upload");
    let wd = Workdir::new(&tb, &dir.join("wd"), &dir, DEADLINE, "")?;
    let ssh_opts = |cmd: &mut std::process::Command| {
        cmd.args([
            "-i",
            tb.var("SSH_KEY"),
            "-o",
            &format!("UserKnownHostsFile={}", tb.var("KNOWN_HOSTS")),
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
        ]);
    };
    let mut ssh_setup = Vec::new();
    for _ in 0..s.upload_runs.max(3) {
        let mut c = std::process::Command::new("ssh");
        ssh_opts(&mut c);
        let t = Instant::now();
        let st = c
            .arg(format!("{}@{host}", tb.var("SSH_USER")))
            .arg("true")
            .status()?;
        if !st.success() {
            return Err("ssh HOST true failed".into());
        }
        ssh_setup.push(t.elapsed());
    }
    let mut points = Vec::new();
    let mut sizes = vec![0];
    sizes.extend(&s.upload_mib);
    for mib in sizes {
        let version = format!("u{mib}");
        build_jars(&dir, std::slice::from_ref(&version), mib * 1024)?;
        let jar = dir.join(format!("app-{version}.jar"));
        let bytes = std::fs::metadata(&jar)?.len();
        let _ = std::fs::remove_file(dir.join("app.jar"));
        let mut p = UploadPoint {
            bytes,
            bg_transfer: Vec::new(),
            bg_copy_step: Vec::new(),
            bg_rss_kib: 0,
            scp_wall: Vec::new(),
            scp_rss_kib: 0,
        };
        wd.stage(&version)?;
        cli_deploy(bin, &wd)?; // warm-up: page cache, both slots used once
        for _ in 0..s.upload_runs {
            let m = cli_deploy(bin, &wd)?;
            let (step, transfer) =
                copy_line(&m.stderr).ok_or_else(|| format!("no copy line in:\n{}", m.stderr))?;
            p.bg_copy_step.push(step);
            p.bg_transfer.push(transfer);
            p.bg_rss_kib = p.bg_rss_kib.max(m.max_rss_kib);
            let target = format!(
                "{}@{host}:{}/scp-bench.jar",
                tb.var("SSH_USER"),
                tb.var("DEPLOY_DIR")
            );
            let known = format!("UserKnownHostsFile={}", tb.var("KNOWN_HOSTS"));
            let jar_s = jar.display().to_string();
            let args = [
                "-q",
                "-i",
                tb.var("SSH_KEY"),
                "-o",
                &known,
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                &jar_s,
                &target,
            ];
            let m = measured(Path::new("scp"), &args, &root())?;
            if !m.ok {
                return Err(format!("scp failed: {}", m.stderr).into());
            }
            p.scp_wall.push(m.wall);
            p.scp_rss_kib = p.scp_rss_kib.max(m.max_rss_kib);
            eprintln!(
                "bench: upload {mib} MiB: bluegreen {:.2}s, scp {:.2}s",
                transfer.as_secs_f64(),
                m.wall.as_secs_f64()
            );
        }
        let _ = std::fs::remove_file(jar);
        points.push(p);
    }
    Ok(Upload { points, ssh_setup })
}

// ---------------------------------------------------------------------------------------------
// 6: rollback

/// Item 6.
// One value per suite run: the size of `Counts` in `Done` does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Rollback {
    /// `bluegreen rollback` does not exist yet.
    Pending(String),
    /// Measured.
    Done {
        /// Command start → proxy serving the old version, per run.
        to_old: Vec<Duration>,
        /// Command wall time, per run.
        command: Vec<Duration>,
        /// Load failures (new connection per request) during the rollbacks.
        counts: Counts,
    },
}

/// Item 6 on a two-host testbed with `retain: 10m`.
pub fn rollback(s: &Sizes, jars: &Jars, bin: &Path, scratch: &Scratch) -> Result<Rollback> {
    let help = std::process::Command::new(bin)
        .args(["rollback", "--help"])
        .output()?;
    if !help.status.success() {
        return Ok(Rollback::Pending(
            String::from_utf8_lossy(&help.stderr)
                .lines()
                .next()
                .unwrap_or("")
                .to_string(),
        ));
    }
    let tb = Testbed::up(2)?;
    let addr = tb.proxy_http().parse()?;
    let wd = Workdir::new(
        &tb,
        &scratch.path().join("rollback"),
        &jars.dir,
        DEADLINE,
        "retain: 10m\n",
    )?;
    let mut v = versions("r", s.rollback_runs + 2).into_iter();
    let old = v.next().ok_or("no versions")?;
    wd.stage(&old)?;
    deploy_in_process(&wd.config())?;
    let poller = Poller::start(addr);
    let mut o = Options::new(addr, Mode::NewConnection);
    o.workers = 2;
    let load = Load::start(o);
    let mut to_old = Vec::new();
    let mut command = Vec::new();
    let mut counts = Counts::default();
    for _ in 0..s.rollback_runs {
        let new = v.next().ok_or("ran out of versions")?;
        wd.stage(&new)?;
        let d = deploy_in_process(&wd.config())?;
        poller
            .first_after(&new, d.started, Duration::from_secs(5))
            .ok_or("the new version was never served")?;
        std::thread::sleep(Duration::from_millis(300));
        let before = load.snapshot();
        let t0 = Instant::now();
        let cfg = wd.config().display().to_string();
        let m = measured(bin, &["-c", &cfg, "rollback"], &wd.dir)?;
        if !m.ok {
            return Err(format!("bluegreen rollback failed:\n{}{}", m.stdout, m.stderr).into());
        }
        let served = poller
            .first_after(&old, t0, Duration::from_secs(10))
            .ok_or("the old version was never served after the rollback")?;
        std::thread::sleep(Duration::from_millis(200));
        let d = delta(&before, &load.snapshot());
        eprintln!(
            "bench: rollback to {old}: {:.3}s to traffic, command {:.2}s, {}",
            (served - t0).as_secs_f64(),
            m.wall.as_secs_f64(),
            d.line()
        );
        to_old.push(served - t0);
        command.push(m.wall);
        counts = add(&counts, &d);
    }
    let _ = load.stop();
    Ok(Rollback::Done {
        to_old,
        command,
        counts,
    })
}

fn add(a: &Counts, b: &Counts) -> Counts {
    Counts {
        ok: a.ok + b.ok,
        connect_error: a.connect_error + b.connect_error,
        reset: a.reset + b.reset,
        timeout: a.timeout + b.timeout,
        http_5xx: a.http_5xx + b.http_5xx,
        http_other: a.http_other + b.http_other,
        wrong_version: a.wrong_version + b.wrong_version,
        reset_retried_ok: a.reset_retried_ok + b.reset_retried_ok,
        ..Counts::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_remote_calls_by_line_arrival() {
        let ms = Duration::from_millis;
        let lines: Vec<(Duration, String)> = [
            (0, "[proxy] connect    ok  64ms  bgdeploy@10.0.0.2:22"),
            (10, "[proxy] lock       ..  $ bg_main lock /var/lib/bluegreen demo x 20 'deploy of demo'"),
            (12, "[app1] copy       ..  $ bg_main prepare /srv/bluegreen/green"),
            (95, "[proxy] lock       ok  86ms  lock taken by x"),
            (130, "[app1] copy       ..  $ bg_main install /srv/bluegreen/green .u demo.jar abc"),
            (200, "[app1] copy       ok  180ms  0.0 MiB to /srv/bluegreen/green"),
            (210, "[app1] health     ok  204ms  healthy after 204ms"),
            (220, "[local] drain      ok  0ms  waited 0ms"),
            (230, "[app1] stop*      ..  $ bg_main stop /srv/bluegreen/blue 8080 TERM 20"),
            (290, "[app1] stop*      ok  60ms  stopped"),
            (300, "deployed demo abc to green (previous: blue) in 0.30s: connect 64ms"),
        ]
        .into_iter()
        .map(|(t, l)| (ms(t), l.to_string()))
        .collect();
        let c = |h: &str, n: &str, t: u64| (h.to_string(), n.to_string(), ms(t));
        assert_eq!(
            remote_calls(&lines),
            vec![
                c("proxy", "lock", 85),
                c("app", "prepare", 118),
                c("app", "install", 70),
                c("app", "stop", 60),
                c("proxy", "connect", 64),
                c("app", "health", 204),
            ]
        );
    }

    #[test]
    fn parses_the_copy_event() {
        let (step, transfer) = copy_line(
            "[app1] start      ok  1.20s  x\n[app1] copy       ok  1.23s  64.0 MiB to /srv/bluegreen/green in 0.98s (65 MiB/s over sftp), sha256 checked\n",
        )
        .unwrap();
        assert_eq!(step, Duration::from_millis(1230));
        assert_eq!(transfer, Duration::from_millis(980));
    }
}
