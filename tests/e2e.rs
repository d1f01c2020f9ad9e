//! End to end on the testbed (a proxy with nginx and two app hosts, each with its own sshd, in network
//! namespaces), with a real JVM app and continuous traffic through nginx counted request by request.
//! The same series runs with each backend: `bluegreen exec`, the rendered bash script, and the rendered
//! Jenkinsfile run by the Groovy harness with its `sh` steps executed for real. They must reach the
//! same end state.

use crate::render::harness;
use crate::testbed::{serial, Testbed, Workdir};
use crate::util::sha256;
use bluegreen_loadgen::{Counts, Load, Mode, Options};
use std::process::Command;
use std::time::{Duration, Instant};

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
            let out = Command::new(env!("CARGO_BIN_EXE_bluegreen"))
                .args(["exec", "-v"])
                .current_dir(wd.path())
                .output()
                .unwrap();
            (
                out.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
                None,
            )
        }
        Backend::Script => {
            let r = Command::new(env!("CARGO_BIN_EXE_bluegreen"))
                .args(["render", "script", "-o", "deploy.sh"])
                .current_dir(wd.path())
                .output()
                .unwrap();
            assert!(r.status.success());
            let out = Command::new("bash")
                .arg("deploy.sh")
                .current_dir(wd.path())
                .env_remove("BG_RUN_ID")
                .env_remove("BUILD_TAG")
                .output()
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
                None,
            )
        }
        Backend::Jenkins => {
            let r = Command::new(env!("CARGO_BIN_EXE_bluegreen"))
                .args(["render", "jenkinsfile", "-o", "Jenkinsfile"])
                .current_dir(wd.path())
                .output()
                .unwrap();
            assert!(r.status.success());
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
    new_conn: Load,
    keep_alive: Load,
}

impl Traffic {
    pub fn start(tb: &Testbed, workers: usize) -> Traffic {
        let addr = tb.proxy_http().parse().unwrap();
        let mut a = Options::new(addr, Mode::NewConnection);
        a.workers = workers;
        let mut b = Options::new(addr, Mode::KeepAlive);
        b.workers = workers;
        Traffic {
            new_conn: Load::start(a),
            keep_alive: Load::start(b),
        }
    }

    pub fn allow(&self, versions: &[&str]) {
        self.new_conn.allow(versions);
        self.keep_alive.allow(versions);
    }

    pub fn stop(self) -> (Counts, Counts) {
        (self.new_conn.stop(), self.keep_alive.stop())
    }
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
    let wd = Workdir::new(&tb, "60s", "slack:\n  channel: deploys\n");
    let mut report = Vec::new();

    wd.stage("v1");
    let first = deploy(backend, &tb, &wd, 1);
    assert!(first.success, "{backend:?} first deploy:\n{}", first.output);
    assert_deployed(&tb, &wd, "v1", "blue", "none");
    report.push(format!("v1 first deploy {:.2}s", first.seconds));

    let mut live = ("v1", "blue");
    for (run, version) in [(2, "v2"), (3, "v3"), (4, "v4")] {
        wd.stage(version);
        let traffic = Traffic::start(&tb, 2);
        std::thread::sleep(Duration::from_millis(300));
        traffic.allow(&[live.0, version]);
        let out = deploy(backend, &tb, &wd, run);
        // After the deploy returns, only the new version may answer.
        traffic.allow(&[version]);
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
        let target = if live.1 == "blue" { "green" } else { "blue" };
        assert_deployed(&tb, &wd, version, target, live.1);
        report.push(format!(
            "{version} {:.2}s: new-conn {} | keep-alive {}",
            out.seconds,
            nc.line(),
            ka.line()
        ));
        if let Some(json) = &out.jenkins {
            let slack = json["slack"].as_array().unwrap();
            assert_eq!(slack.len(), 1, "{slack:?}");
            assert_eq!(slack[0]["color"], "good");
            let msg = slack[0]["message"].as_str().unwrap();
            assert!(
                msg.contains(&format!("to the {target} slot of 2 host(s)")),
                "{msg}"
            );
        }
        live = (version, target);
    }

    // A broken version never turns healthy: no switch, old version keeps serving, new instances
    // stopped, lock released, non-zero exit.
    let before = tb.state();
    let broken_wd = Workdir::new(&tb, "6s", "slack:\n  channel: deploys\n");
    broken_wd.stage("broken");
    let traffic = Traffic::start(&tb, 2);
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
    let wd = Workdir::new(&tb, "60s", "");
    // A slow boot keeps the deploy in its verify phase long enough to interrupt it there.
    let cfg = std::fs::read_to_string(wd.path().join("bluegreen.yaml")).unwrap();
    std::fs::write(
        wd.path().join("bluegreen.yaml"),
        cfg.replace(
            "--server.port={port}",
            "--server.port={port} --boot-delay=5000",
        ),
    )
    .unwrap();
    wd.stage("v1");
    let first = deploy(Backend::Exec, &tb, &wd, 1);
    assert!(first.success, "{}", first.output);
    let before = tb.state();

    wd.stage("v2");
    let traffic = Traffic::start(&tb, 2);
    traffic.allow(&["v1"]);
    let child = Command::new(env!("CARGO_BIN_EXE_bluegreen"))
        .arg("exec")
        .current_dir(wd.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
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
