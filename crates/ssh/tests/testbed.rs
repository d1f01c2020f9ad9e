//! End-to-end deploys against a local testbed (`tests/testbed/testbed.sh`): needs root, nginx, sshd
//! and a JDK, so it is ignored by default. Run with
//! `cargo test -p bluegreen-ssh --test testbed -- --ignored --nocapture`.

#![allow(clippy::unwrap_used)] // test helpers, outside #[test] functions

use bluegreen_ssh::{deploy, Error, ExecOptions, Status};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Testbed {
    name: String,
    env: HashMap<String, String>,
}

impl Testbed {
    fn up(name: &str, apps: usize) -> Testbed {
        let script = root().join("tests/testbed/testbed.sh");
        let _ = Command::new(&script).args(["down", name]).output();
        let out = Command::new(&script)
            .args(["up", name, &apps.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "testbed up: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(format!("/tmp/bgtb-{name}/env")).unwrap();
        let env = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
            .collect();
        Testbed {
            name: name.to_string(),
            env,
        }
    }

    fn get(&self, k: &str) -> &str {
        &self.env[k]
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let _ = Command::new(root().join("tests/testbed/testbed.sh"))
            .args(["down", &self.name])
            .output();
    }
}

fn config(tb: &Testbed, artifact: &Path, extra: &str) -> String {
    let apps: Vec<&str> = tb.get("APP_ADDRS").split_whitespace().collect();
    let servers: String = apps.iter().map(|a| format!("  - host: {a}\n")).collect();
    format!(
        "app: demo
artifact: {artifact}
ssh:
  user: {user}
  identity_file: {key}
  known_hosts: {known}
  connect_timeout: 5s
proxy:
  host: {proxy}
  upstream_file: {upstream}
  test_command: {test}
  reload_command: {reload}
  state_dir: {state}/demo
  check_url: http://{proxy}:{nginx_port}/version
servers:
{servers}slots: {{ blue: 8081, green: 8082 }}
deploy_dir: {deploy}/demo
start: java {java_opts} -jar {{jar}} --server.port={{port}}
health:
  path: /actuator/health
  interval: 200ms
  timeout: 1s
  deadline: 60s
  successes: 2
drain: 500ms
stop:
  grace: 10s
{extra}",
        artifact = artifact.display(),
        user = tb.get("SSH_USER"),
        key = tb.get("SSH_KEY"),
        known = tb.get("KNOWN_HOSTS"),
        proxy = tb.get("PROXY_ADDR"),
        nginx_port = tb.get("NGINX_PORT"),
        upstream = tb.get("UPSTREAM_FILE"),
        test = tb.get("NGINX_TEST_CMD"),
        reload = tb.get("NGINX_RELOAD_CMD"),
        state = tb.get("STATE_DIR"),
        deploy = tb.get("DEPLOY_DIR"),
        java_opts = tb.get("JAVA_OPTS"),
    )
}

fn plan(yaml: &str) -> bluegreen_core::Plan {
    let c = bluegreen_core::Config::parse(yaml, "test.yaml").unwrap();
    bluegreen_core::Plan::new(&c)
}

fn version_through_proxy(tb: &Testbed) -> String {
    let url = format!(
        "http://{}:{}/version",
        tb.get("PROXY_ADDR"),
        tb.get("NGINX_PORT")
    );
    curl_get(&url)
}

fn curl_get(url: &str) -> String {
    let out = Command::new("curl").args(["-sf", url]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn run(
    plan: &bluegreen_core::Plan,
    opts: &ExecOptions,
) -> (Result<bluegreen_ssh::Summary, Error>, Vec<String>) {
    let mut lines = Vec::new();
    let r = deploy(plan, opts, &mut |e| {
        if e.status != Status::Started {
            println!("{e}");
            lines.push(e.to_string());
        }
    });
    (r, lines)
}

#[test]
#[ignore = "needs root and the testbed (tests/testbed/testbed.sh)"]
fn three_deploys_alternate_slots_and_failures_leave_traffic_alone() {
    let tb = Testbed::up("sshe2e", 2);
    let work = tempfile::tempdir().unwrap();
    let build = work.path().join("build");
    let out = Command::new(root().join("tests/app/build.sh"))
        .arg(&build)
        .args(["v1", "v2", "v3"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let art = work.path().join("art");
    std::fs::create_dir_all(&art).unwrap();
    let pattern = art.join("app-*.jar");
    let opts = ExecOptions {
        deployer: Some("e2e@test".into()),
        ..Default::default()
    };

    for (version, target, previous) in [
        ("v1", "blue", "none"),
        ("v2", "green", "blue"),
        ("v3", "blue", "green"),
    ] {
        for f in std::fs::read_dir(&art).unwrap() {
            std::fs::remove_file(f.unwrap().path()).unwrap();
        }
        std::fs::copy(
            build.join(format!("app-{version}.jar")),
            art.join(format!("app-{version}.jar")),
        )
        .unwrap();
        let t = Instant::now();
        let (r, _) = run(&plan(&config(&tb, &pattern, "")), &opts);
        let s = r.unwrap();
        println!("{s} (wall {:?})", t.elapsed());
        assert_eq!((s.target.as_str(), s.previous.as_str()), (target, previous));
        assert_eq!(version_through_proxy(&tb), version);
    }

    // A new version that never turns healthy: traffic stays on v3, the lock is released.
    let broken =
        config(&tb, &pattern, "").replace("--server.port={port}", "--server.port={port} --broken");
    let broken = broken.replace("deadline: 60s", "deadline: 2s");
    let (r, lines) = run(&plan(&broken), &opts);
    assert!(matches!(r, Err(Error::Health { .. })), "{r:?}");
    assert!(lines.iter().any(|l| l.starts_with("[proxy] unlock*    ok")));
    assert_eq!(version_through_proxy(&tb), "v3");

    // Ctrl-C while waiting for health: same clean-up, an Interrupted error.
    let interrupt = Arc::new(AtomicBool::new(false));
    let flag = interrupt.clone();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(1500));
        flag.store(true, Ordering::SeqCst);
    });
    let opts2 = ExecOptions {
        interrupt,
        ..Default::default()
    };
    let (r, _) = run(
        &plan(&broken.replace("deadline: 2s", "deadline: 60s")),
        &opts2,
    );
    assert!(matches!(r, Err(Error::Interrupted { .. })), "{r:?}");
    assert_eq!(version_through_proxy(&tb), "v3");

    // Still deployable afterwards (lock released, slots consistent).
    let (r, _) = run(&plan(&config(&tb, &pattern, "")), &opts);
    assert_eq!(r.unwrap().target, "green");
}
