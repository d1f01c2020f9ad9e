//! End to end on the testbed (a proxy with nginx and two app hosts, each with its own sshd, in network
//! namespaces), with a real JVM app and continuous traffic through nginx counted request by request.
//! The same series runs with each backend: `bluegreen exec`, the rendered bash script, and the rendered
//! Jenkinsfile run by the Groovy harness with its `sh` steps executed for real. They must reach the
//! same end state.
//!
//! The app is deployed with realistic timings ([`realistic`]): it binds its port a second after it
//! starts, as Spring Boot does, and its graceful shutdown takes three seconds; slow requests are kept
//! in flight through nginx during every deploy, across the switch and the stop, and a failed one is a
//! failed request like any other.

use crate::render::harness;
use crate::testbed::{serial, DeployOptions, Testbed, Workdir};
use crate::util::{sha256, Cmd};
use bluegreen_loadgen::{Counts, Load, Mode, Options};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The realistic app's graceful shutdown, in milliseconds (`--shutdown-delay`).
pub const SHUTDOWN_MS: u64 = 3000;
/// How long after its start the realistic app binds its port (`--bind-delay`).
pub const BIND_MS: u64 = 1000;
/// How long a slow request takes (`/slow?ms=`).
pub const SLOW_MS: u64 = 1500;
/// Load workers that keep slow requests in flight.
pub const SLOW_WORKERS: usize = 3;

/// The demo app with realistic timings: the port bound [`BIND_MS`] after the start, a graceful
/// shutdown of [`SHUTDOWN_MS`] (in-flight requests finished, then the rest of the delay).
pub fn realistic(deadline: &str) -> DeployOptions {
    DeployOptions::new(deadline).args([
        format!("--bind-delay={BIND_MS}"),
        format!("--shutdown-delay={SHUTDOWN_MS}"),
    ])
}

/// How a deploy is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `bluegreen exec`.
    Exec,
    /// `bluegreen render script`, then `bash deploy.sh`.
    Script,
    /// `bluegreen render jenkinsfile`, run by the Groovy harness with `--run`.
    Jenkins,
}

/// What a deploy returned.
pub struct Outcome {
    pub success: bool,
    pub output: String,
    /// The harness's result JSON, for the Jenkins backend.
    pub jenkins: Option<serde_json::Value>,
    pub seconds: f64,
}

/// Runs one deploy of what is staged in `wd`.
pub fn deploy(backend: Backend, tb: &Testbed, wd: &Workdir, run: usize) -> Outcome {
    let started = Instant::now();
    let (success, output, jenkins) = match backend {
        Backend::Exec => {
            let r = Cmd::bluegreen(wd.path(), &["exec", "-v"]).run();
            (r.success(), r.out(), None)
        }
        Backend::Script => {
            Cmd::bluegreen(wd.path(), &["render", "script", "-o", "deploy.sh"])
                .run()
                .assert_code(0);
            let r = Cmd::script(wd.path(), "deploy.sh", &[]).run();
            (r.success(), r.stderr, None)
        }
        Backend::Jenkins => {
            Cmd::bluegreen(wd.path(), &["render", "jenkinsfile", "-o", "Jenkinsfile"])
                .run()
                .assert_code(0);
            let cred = format!("testbed-key={}", tb.var("SSH_KEY"));
            let tag = format!("BUILD_TAG=jenkins-e2e-{run}");
            let ws = wd.path().display().to_string();
            let (code, json, err) = harness(
                &wd.path().join("Jenkinsfile"),
                &[
                    "--run",
                    "--workspace",
                    &ws,
                    "--env",
                    "BRANCH_NAME=main",
                    "--env",
                    &tag,
                    "--env",
                    "JOB_NAME=demo-deploy",
                    "--env",
                    &format!("BUILD_NUMBER={run}"),
                    "--cred",
                    &cred,
                ],
            );
            assert_eq!(code, 0, "harness: {err}");
            let json = json.unwrap();
            (json["result"] == "SUCCESS", err, Some(json))
        }
    };
    Outcome {
        success,
        output,
        jenkins,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// The two load clients, one per mode, running through nginx.
pub struct Traffic {
    new_conn: Arc<Load>,
    keep_alive: Load,
}

impl Traffic {
    pub fn start(tb: &Testbed, workers: usize) -> Traffic {
        Traffic::with_slow(tb, workers, 0)
    }

    /// Like [`Traffic::start`], and `slow` more new-connection workers that each keep a
    /// `/slow?ms=SLOW_MS` request in flight; they are counted with the new-connection mode (so any
    /// that fails is a failure of that mode) and apart (`slow_ok`, `slow_failed`).
    pub fn with_slow(tb: &Testbed, workers: usize, slow: usize) -> Traffic {
        let addr = tb.proxy_http().parse().unwrap();
        let mut a = Options::new(addr, Mode::NewConnection).with_slow(slow, SLOW_MS);
        a.workers = workers;
        let mut b = Options::new(addr, Mode::KeepAlive);
        b.workers = workers;
        Traffic {
            new_conn: Arc::new(Load::start(a)),
            keep_alive: Load::start(b),
        }
    }

    pub fn allow(&self, versions: &[&str]) {
        self.new_conn.allow(versions);
        self.keep_alive.allow(versions);
    }

    /// Counts of the new-connection mode (slow requests included) and of the keep-alive mode.
    pub fn stop(self) -> (Counts, Counts) {
        let new_conn = Arc::try_unwrap(self.new_conn)
            .unwrap_or_else(|_| panic!("a StopProbe still watches this traffic: finish it first"));
        (new_conn.stop(), self.keep_alive.stop())
    }
}

/// What one old instance's graceful shutdown looked like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shutdown {
    pub host: String,
    /// Slow requests the load had in flight through nginx when the instance logged the start of its
    /// shutdown (None: it did not during the probe).
    pub slow_in_flight: Option<u64>,
    /// Requests the instance itself still had in flight at SIGTERM (its log says).
    pub app_in_flight: Option<u64>,
    /// How long its shutdown took (its log says; None: it did not end gracefully).
    pub took_ms: Option<u64>,
}

/// Watches the app logs of one slot on every app host while a deploy runs, and notes for each
/// instance of that slot that shuts down how many slow requests were in flight at that moment.
pub struct StopProbe {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<Shutdown>>,
}

fn slot_log(tb: &Testbed, host: &str, slot: &str) -> std::path::PathBuf {
    std::path::Path::new(tb.var("HOSTS_DIR")).join(format!("{host}/srv/{slot}/app.log"))
}

fn read_lossy(p: &std::path::Path) -> String {
    std::fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The number in `line` right after `word`.
fn number_after(line: &str, word: &str) -> Option<u64> {
    let rest = &line[line.find(word)? + word.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The number in `line` right before `word`.
fn number_before(line: &str, word: &str) -> Option<u64> {
    let head = &line[..line.find(word)?];
    let digits: String = head
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.chars().rev().collect::<String>().parse().ok()
}

impl StopProbe {
    pub fn start(tb: &Testbed, traffic: &Traffic, slot: &str) -> StopProbe {
        let hosts: Vec<(String, std::path::PathBuf, usize)> = (1..=tb.app_addrs().len())
            .map(|i| {
                let host = format!("app{i}");
                let path = slot_log(tb, &host, slot);
                let from = read_lossy(&path).len();
                (host, path, from)
            })
            .collect();
        let load = traffic.new_conn.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut seen: Vec<Option<u64>> = vec![None; hosts.len()];
                loop {
                    // One last look after being told to stop.
                    let last = stop.load(Ordering::SeqCst);
                    for (i, (_, path, from)) in hosts.iter().enumerate() {
                        if seen[i].is_none() {
                            let text = read_lossy(path);
                            if text
                                .get(*from..)
                                .is_some_and(|t| t.contains("shutdown started"))
                            {
                                seen[i] = Some(load.slow_in_flight());
                            }
                        }
                    }
                    if last {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                hosts
                    .iter()
                    .zip(seen)
                    .map(|((host, path, from), slow_in_flight)| {
                        let text = read_lossy(path);
                        let new = text.get(*from..).unwrap_or("");
                        let started = new.lines().find(|l| l.starts_with("shutdown started"));
                        let ended = new.lines().find(|l| l.starts_with("shutdown ended after "));
                        Shutdown {
                            host: host.clone(),
                            slow_in_flight,
                            app_in_flight: started
                                .and_then(|l| number_before(l, " request(s) in flight")),
                            took_ms: ended.and_then(|l| number_after(l, "shutdown ended after ")),
                        }
                    })
                    .collect()
            })
        };
        StopProbe { stop, handle }
    }

    pub fn finish(self) -> Vec<Shutdown> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap()
    }
}

/// Every app host's instance of the old slot shut down gracefully, taking at least `min_ms`, while
/// slow requests were in flight through nginx.
pub fn assert_graceful(shutdowns: &[Shutdown], min_ms: u64) {
    assert!(!shutdowns.is_empty());
    for s in shutdowns {
        let took = s
            .took_ms
            .unwrap_or_else(|| panic!("{}: no graceful shutdown logged: {s:?}", s.host));
        assert!(took >= min_ms, "{}: shutdown took {took} ms: {s:?}", s.host);
        assert!(
            s.slow_in_flight.is_some_and(|n| n > 0),
            "{}: slow requests in flight when the old instance began its shutdown: {s:?}",
            s.host
        );
    }
}

/// One line for the report: `app1 3004ms (slow in flight 3, app 0), app2 ...`.
pub fn shutdown_line(shutdowns: &[Shutdown]) -> String {
    let show = |o: Option<u64>| o.map_or("-".to_string(), |n| n.to_string());
    shutdowns
        .iter()
        .map(|s| {
            format!(
                "{} {}ms (slow in flight {}, in the app {})",
                s.host,
                show(s.took_ms),
                show(s.slow_in_flight),
                show(s.app_in_flight)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn slot_port(slot: &str) -> u16 {
    if slot == "blue" {
        8080
    } else {
        8081
    }
}

/// Checks the end state after a good deploy of `version` to `slot` (with `previous` live before).
fn assert_deployed(tb: &Testbed, wd: &Workdir, version: &str, slot: &str, previous: &str) {
    for _ in 0..5 {
        assert_eq!(
            tb.version_via_proxy(),
            version,
            "the proxy serves the new version"
        );
    }
    let state = tb.state();
    assert_eq!(state["live"], slot, "{state:?}");
    assert_eq!(state["previous"], previous, "{state:?}");
    assert_eq!(
        state["release"],
        sha256(&wd.path().join("artifact/demo.jar"))
    );
    assert_eq!(state["app"], "demo");
    for (i, _) in tb.app_addrs().iter().enumerate() {
        let host = format!("app{}", i + 1);
        assert!(
            tb.port_open(&host, slot_port(slot)),
            "{host}: new instance up"
        );
        if previous != "none" {
            assert!(
                !tb.port_open(&host, slot_port(previous)),
                "{host}: old instance on {previous} stopped"
            );
        }
    }
    tb.assert_lock_free();
}

/// A first deploy, three alternating deploys under continuous load, then a broken version.
pub fn series(backend: Backend) {
    let _serial = serial();
    let tb = Testbed::up(2);
    let wd = Workdir::with(&tb, &realistic("60s").extra("slack:\n  channel: deploys\n"));
    let mut report = Vec::new();

    wd.stage("v1");
    let first = deploy(backend, &tb, &wd, 1);
    assert!(first.success, "{backend:?} first deploy:\n{}", first.output);
    assert_deployed(&tb, &wd, "v1", "blue", "none");
    report.push(format!("v1 first deploy {:.2}s", first.seconds));

    let mut live = ("v1", "blue");
    for (run, version) in [(2, "v2"), (3, "v3"), (4, "v4")] {
        wd.stage(version);
        let traffic = Traffic::with_slow(&tb, 2, SLOW_WORKERS);
        std::thread::sleep(Duration::from_millis(300));
        traffic.allow(&[live.0, version]);
        let probe = StopProbe::start(&tb, &traffic, live.1);
        let out = deploy(backend, &tb, &wd, run);
        // After the deploy returns, only the new version may answer.
        traffic.allow(&[version]);
        let shutdowns = probe.finish();
        std::thread::sleep(Duration::from_millis(300));
        let (nc, ka) = traffic.stop();
        assert!(
            out.success,
            "{backend:?} deploy of {version}:\n{}",
            out.output
        );
        assert_eq!(
            nc.failures(),
            0,
            "new-connection mode: {}\n{:?}",
            nc.line(),
            nc.samples
        );
        assert_eq!(
            ka.http_errors(),
            0,
            "keep-alive mode: {}\n{:?}",
            ka.line(),
            ka.samples
        );
        assert!(
            nc.ok > 20 && ka.ok > 20,
            "traffic flowed: {} / {}",
            nc.line(),
            ka.line()
        );
        assert!(
            nc.slow_ok >= SLOW_WORKERS as u64 && nc.slow_failed == 0,
            "slow requests: {}",
            nc.line()
        );
        assert_graceful(&shutdowns, SHUTDOWN_MS);
        let target = if live.1 == "blue" { "green" } else { "blue" };
        assert_deployed(&tb, &wd, version, target, live.1);
        report.push(format!(
            "{version} {:.2}s: new-conn {} | keep-alive {} | old instances' shutdown: {}",
            out.seconds,
            nc.line(),
            ka.line(),
            shutdown_line(&shutdowns)
        ));
        if let Some(json) = &out.jenkins {
            let slack = json["slack"].as_array().unwrap();
            assert_eq!(slack.len(), 1, "{slack:?}");
            assert_eq!(slack[0]["color"], "good");
            let msg = slack[0]["message"].as_str().unwrap();
            // The script's summary line, in core's words (exec's summary says the same).
            assert!(
                msg.contains("deployed demo ")
                    && msg.contains(&format!(" to {target} (previous: {})", live.1)),
                "{msg}"
            );
        }
        live = (version, target);
    }

    // A broken version never turns healthy: no switch, old version keeps serving, new instances
    // stopped, lock released, non-zero exit.
    let before = tb.state();
    let broken_wd = Workdir::with(&tb, &realistic("6s").extra("slack:\n  channel: deploys\n"));
    broken_wd.stage("broken");
    let traffic = Traffic::with_slow(&tb, 2, SLOW_WORKERS);
    traffic.allow(&[live.0]);
    let out = deploy(backend, &tb, &broken_wd, 9);
    std::thread::sleep(Duration::from_millis(300));
    let (nc, ka) = traffic.stop();
    assert!(
        !out.success,
        "{backend:?}: a broken version must fail the deploy:\n{}",
        out.output
    );
    assert_eq!(
        nc.failures(),
        0,
        "new-connection mode: {}\n{:?}",
        nc.line(),
        nc.samples
    );
    assert_eq!(ka.http_errors(), 0, "keep-alive mode: {}", ka.line());
    assert_eq!(
        tb.version_via_proxy(),
        live.0,
        "the old version keeps serving"
    );
    assert_eq!(tb.state(), before, "the state file is untouched");
    let idle = if live.1 == "blue" { "green" } else { "blue" };
    for host in ["app1", "app2"] {
        assert!(
            !tb.port_open(host, slot_port(idle)),
            "{host}: broken instance stopped"
        );
        assert!(
            tb.port_open(host, slot_port(live.1)),
            "{host}: live instance untouched"
        );
    }
    tb.assert_lock_free();
    if let Some(json) = &out.jenkins {
        let stages = crate::render::stage_statuses(json);
        assert!(
            stages.contains(&("Verify".into(), "failed".into())),
            "{stages:?}"
        );
        assert!(
            stages.contains(&("Switch".into(), "skipped".into())),
            "{stages:?}"
        );
        assert_eq!(json["slack"][0]["color"], "danger");
    }
    report.push(format!(
        "broken {:.2}s (failed as it must): new-conn {} | keep-alive {}",
        out.seconds,
        nc.line(),
        ka.line()
    ));
    eprintln!("{backend:?} series:\n  {}", report.join("\n  "));
}

#[test]
fn exec_series_under_load() {
    series(Backend::Exec);
}

#[test]
fn script_series_under_load() {
    series(Backend::Script);
}

#[test]
fn jenkinsfile_series_under_load() {
    series(Backend::Jenkins);
}

#[test]
fn ctrl_c_before_the_switch_leaves_traffic_alone() {
    let _serial = serial();
    let tb = Testbed::up(2);
    // A slow boot keeps the deploy in its verify phase long enough to interrupt it there.
    let wd = Workdir::with(&tb, &DeployOptions::new("60s").args(["--boot-delay=5000"]));
    wd.stage("v1");
    let first = deploy(Backend::Exec, &tb, &wd, 1);
    assert!(first.success, "{}", first.output);
    let before = tb.state();

    wd.stage("v2");
    let traffic = Traffic::start(&tb, 2);
    traffic.allow(&["v1"]);
    let child = Cmd::bluegreen(wd.path(), &["exec"]).spawn().child;
    // Wait until both new instances are started (their port answers), then interrupt.
    let started = Instant::now();
    while !(tb.port_open("app1", 8081) && tb.port_open("app2", 8081)) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "new instances never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (nc, ka) = traffic.stop();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert_eq!(nc.failures(), 0, "{}", nc.line());
    assert_eq!(ka.http_errors(), 0, "{}", ka.line());
    assert_eq!(tb.version_via_proxy(), "v1");
    assert_eq!(tb.state(), before);
    for host in ["app1", "app2"] {
        assert!(!tb.port_open(host, 8081), "{host}: new instance stopped");
        assert!(tb.port_open(host, 8080), "{host}: live instance untouched");
    }
    tb.assert_lock_free();
}

/// The pid the demo app answering `url` reports (`X-App-Pid`).
fn app_pid(url: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", "-m", "5", "-D", "-", "-o", "/dev/null", url])
        .output()
        .unwrap();
    let pid = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-app-pid")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    assert!(!pid.is_empty(), "no X-App-Pid from {url}");
    pid
}

/// An app whose graceful shutdown takes 20 s (longer than any SSH keepalive interval), with slow
/// requests in flight: v1 then v2 under load with `stop.grace: 30s` (the default); the deploy
/// succeeds, waits for the whole graceful shutdown, the old instances are gone afterwards, and no
/// request failed.
fn slow_graceful_shutdown(backend: Backend) {
    const LONG_SHUTDOWN_MS: u64 = 20_000;
    let _serial = serial();
    let tb = Testbed::up(2);
    let wd = Workdir::with(
        &tb,
        &DeployOptions::new("60s")
            .args([format!("--shutdown-delay={LONG_SHUTDOWN_MS}")])
            .grace("30s"),
    );
    wd.stage("v1");
    let first = deploy(backend, &tb, &wd, 1);
    assert!(first.success, "{backend:?} first deploy:\n{}", first.output);
    assert_deployed(&tb, &wd, "v1", "blue", "none");
    // Per host: the pid bluegreen recorded for the v1 instance, and the JVM's own pid (the same
    // process, or a child when the instance runs under a shell).
    let old: Vec<(String, String, String)> = tb
        .app_addrs()
        .iter()
        .enumerate()
        .map(|(i, addr)| {
            let host = format!("app{}", i + 1);
            let recorded = tb.sh_ok(&host, "cat /srv/bluegreen/blue/app.pid");
            (
                host,
                recorded,
                app_pid(&format!("http://{addr}:8080/version")),
            )
        })
        .collect();

    wd.stage("v2");
    let traffic = Traffic::with_slow(&tb, 2, SLOW_WORKERS);
    std::thread::sleep(Duration::from_millis(300));
    traffic.allow(&["v1", "v2"]);
    let probe = StopProbe::start(&tb, &traffic, "blue");
    let out = deploy(backend, &tb, &wd, 2);
    traffic.allow(&["v2"]);
    let shutdowns = probe.finish();
    std::thread::sleep(Duration::from_millis(300));
    let (nc, ka) = traffic.stop();
    assert!(
        out.success,
        "{backend:?} deploy of v2 with a {LONG_SHUTDOWN_MS} ms graceful shutdown ({:.1}s):\n{}",
        out.seconds, out.output
    );
    assert_eq!(
        nc.failures(),
        0,
        "new-connection mode: {}\n{:?}",
        nc.line(),
        nc.samples
    );
    assert_eq!(
        ka.http_errors(),
        0,
        "keep-alive mode: {}\n{:?}",
        ka.line(),
        ka.samples
    );
    assert!(
        nc.ok > 20 && ka.ok > 20 && nc.slow_ok >= SLOW_WORKERS as u64,
        "traffic flowed: {} / {}",
        nc.line(),
        ka.line()
    );
    // The deploy waited for the whole graceful shutdown: no SIGKILL.
    assert_graceful(&shutdowns, LONG_SHUTDOWN_MS);
    assert!(
        out.seconds >= LONG_SHUTDOWN_MS as f64 / 1000.0,
        "the deploy returned after {:.1}s, before the old instances had stopped",
        out.seconds
    );
    assert_deployed(&tb, &wd, "v2", "green", "blue");
    for (host, recorded, jvm) in &old {
        for pid in [recorded, jvm] {
            let alive = tb.sh(host, &format!("kill -0 {pid}"));
            assert!(
                !alive.status.success(),
                "{host}: the old instance (pid {pid}; recorded {recorded}, JVM {jvm}) is gone"
            );
        }
        let log = tb.sh_ok(host, "cat /srv/bluegreen/blue/app.log");
        assert!(
            log.contains(&format!("stopped v1 on port 8080 pid {jvm} after serving")),
            "{host}: v1 shut down gracefully:\n{log}"
        );
    }
    eprintln!(
        "{backend:?} slow graceful shutdown: v2 deployed in {:.2}s; old instances' shutdown: {}; new-conn {} | keep-alive {}",
        out.seconds,
        shutdown_line(&shutdowns),
        nc.line(),
        ka.line()
    );
}

#[test]
fn slow_graceful_shutdown_longer_than_keepalive() {
    slow_graceful_shutdown(Backend::Exec);
}

#[test]
fn slow_graceful_shutdown_longer_than_keepalive_script() {
    slow_graceful_shutdown(Backend::Script);
}
