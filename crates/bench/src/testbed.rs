//! The testbed (`tests/testbed/testbed.sh`), the demo app's jars and the deploy config, seen from the
//! benchmark suite. Every testbed is torn down on drop, even after a panic.

use crate::{root, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Added to the app's JVM flags everywhere the suite starts it. The demo app is the JDK's built-in HTTP
/// server, which leaves Nagle's algorithm on; on nginx's reused (keep-alive) upstream connections its
/// split header/body writes then wait for a delayed ACK, 40 ms per request (measured: 45 ms through
/// nginx against 1.5 ms with this flag). Spring Boot's Tomcat, Jetty and Netty set TCP_NODELAY by default.
pub const NODELAY: &str = "-Dsun.net.httpserver.nodelay=true";

/// A running testbed.
pub struct Testbed {
    /// Its name (`testbed.sh` NAME).
    pub name: String,
    env: HashMap<String, String>,
    script: PathBuf,
}

impl Testbed {
    /// Brings up a proxy and `apps` app hosts.
    pub fn up(apps: usize) -> Result<Testbed> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "b{:x}{}",
            std::process::id() % 0xffff,
            N.fetch_add(1, Ordering::SeqCst)
        );
        let script = root().join("tests/testbed/testbed.sh");
        // Created before `up` so that a half-done `up` is torn down too.
        let mut tb = Testbed {
            name: name.clone(),
            env: HashMap::new(),
            script,
        };
        let out = Command::new("bash")
            .arg(&tb.script)
            .args(["up", &name, &apps.to_string()])
            .output()?;
        if !out.status.success() {
            return Err(format!(
                "testbed up {name} {apps} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        tb.env = parse_env(&std::fs::read_to_string(tb.env_file())?);
        Ok(tb)
    }

    /// `/tmp/bgtb-NAME/env`.
    pub fn env_file(&self) -> PathBuf {
        PathBuf::from(format!("/tmp/bgtb-{}/env", self.name))
    }

    /// A value of the env file ("" when missing, which the config check then reports).
    pub fn var(&self, k: &str) -> &str {
        self.env.get(k).map(String::as_str).unwrap_or("")
    }

    /// The app hosts' addresses.
    pub fn app_addrs(&self) -> Vec<String> {
        self.var("APP_ADDRS")
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    /// nginx's address.
    pub fn proxy_http(&self) -> Result<std::net::SocketAddr> {
        Ok(format!("{}:{}", self.var("PROXY_ADDR"), self.var("NGINX_PORT")).parse()?)
    }

    /// Runs a shell command as root inside a host's namespaces; its stdout, trimmed.
    pub fn sh(&self, host: &str, cmd: &str) -> Result<String> {
        let out = Command::new("bash")
            .arg(&self.script)
            .args(["exec", &self.name, host, "bash", "-c", cmd])
            .output()?;
        if !out.status.success() {
            return Err(format!(
                "[{host}] {cmd}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )
            .into());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Stops every app instance on every app host (through their pid files: bluegreen's slots and the
    /// seed-style baseline's ports) and points nginx back at nothing, so another deploy tool can start
    /// from a clean host.
    pub fn reset_apps(&self) -> Result<()> {
        let dir = self.var("DEPLOY_DIR");
        for i in 1..=self.app_addrs().len() {
            self.sh(
                &format!("app{i}"),
                &format!(
                    "for f in {dir}/*/app.pid; do [ -f \"$f\" ] || continue; p=$(cat \"$f\"); \
                     kill -TERM -- \"-$p\" 2>/dev/null || kill -TERM \"$p\" 2>/dev/null || true; \
                     for _ in $(seq 100); do kill -0 \"$p\" 2>/dev/null || break; sleep 0.05; done; \
                     rm -f \"$f\"; done; rm -rf {dir}/*"
                ),
            )?;
        }
        let upstream = self.var("UPSTREAM_FILE");
        let state = self.var("STATE_DIR");
        self.sh(
            "proxy",
            &format!(
                "printf 'server 127.0.0.1:9;\\n' >{upstream} && rm -rf {state}/demo && \
                 kill -HUP $(cat {})",
                self.var("NGINX_PID_FILE")
            ),
        )?;
        Ok(())
    }

    /// The deploy config every measurement uses (the integration tests' settings), plus `extra`.
    pub fn config(&self, artifact: &Path, extra: &str) -> String {
        let servers: String = self
            .app_addrs()
            .iter()
            .map(|a| format!("  - host: {a}\n"))
            .collect();
        format!(
            "app: demo
artifact: {artifact}
ssh:
  user: {user}
  identity_file: {key}
  known_hosts: {known_hosts}
  connect_timeout: 5s
  command_timeout: 120s
proxy:
  host: {proxy}
  upstream_file: {upstream}
  upstream_name: {upstream_name}
  test_command: {test}
  reload_command: {reload}
  state_dir: {state}/demo
  check_url: http://{proxy}:{port}/actuator/health
servers:
{servers}deploy_dir: {deploy}
start: {java} {java_opts} {nodelay} -jar {{jar}} --server.port={{port}}
health:
  interval: 200ms
  timeout: 2s
  deadline: 120s
  successes: 2
stop:
  grace: 20s
{extra}",
            artifact = artifact.display(),
            user = self.var("SSH_USER"),
            key = self.var("SSH_KEY"),
            known_hosts = self.var("KNOWN_HOSTS"),
            proxy = self.var("PROXY_ADDR"),
            port = self.var("NGINX_PORT"),
            upstream = self.var("UPSTREAM_FILE"),
            upstream_name = self.var("UPSTREAM_NAME"),
            test = self.var("NGINX_TEST_CMD"),
            reload = self.var("NGINX_RELOAD_CMD"),
            state = self.var("STATE_DIR"),
            deploy = self.var("DEPLOY_DIR"),
            java = self.var("JAVA"),
            java_opts = self.var("JAVA_OPTS"),
            nodelay = NODELAY,
        )
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .args(["down", &self.name])
            .output();
    }
}

fn parse_env(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

/// A scratch directory for jars and configs, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A fresh directory under the system temp dir.
    pub fn new(tag: &str) -> Result<Scratch> {
        let p = std::env::temp_dir().join(format!("bluegreen-bench-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p)?;
        Ok(Scratch(p))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Builds the demo app's jars `app-VERSION.jar` into `out` (`pad_kib` of incompressible padding each).
pub fn build_jars(out: &Path, versions: &[String], pad_kib: u64) -> Result<()> {
    let o = Command::new("bash")
        .arg(root().join("tests/app/build.sh"))
        .arg(out)
        .args(versions)
        .env("APP_JAR_PAD_KB", pad_kib.to_string())
        .output()?;
    if !o.status.success() {
        return Err(format!(
            "tests/app/build.sh failed: {}",
            String::from_utf8_lossy(&o.stderr)
        )
        .into());
    }
    Ok(())
}

/// A deploy workspace: the config (`bluegreen.yaml`) and the artifact slot (`artifact/demo.jar`).
pub struct Workdir {
    /// The directory.
    pub dir: PathBuf,
    jars: PathBuf,
}

impl Workdir {
    /// A workdir in `dir` for testbed `tb`, deploying jars from `jars`, with `extra` config lines.
    pub fn new(tb: &Testbed, dir: PathBuf, jars: &Path, extra: &str) -> Result<Workdir> {
        std::fs::create_dir_all(dir.join("artifact"))?;
        let cfg = tb.config(&dir.join("artifact/demo.jar"), extra);
        std::fs::write(dir.join("bluegreen.yaml"), cfg)?;
        Ok(Workdir {
            dir,
            jars: jars.to_path_buf(),
        })
    }

    /// The config file.
    pub fn config(&self) -> PathBuf {
        self.dir.join("bluegreen.yaml")
    }

    /// The staged artifact.
    pub fn artifact(&self) -> PathBuf {
        self.dir.join("artifact/demo.jar")
    }

    /// Puts `app-VERSION.jar` in place as the artifact.
    pub fn stage(&self, version: &str) -> Result<()> {
        let tmp = self.dir.join("artifact/.demo.jar.tmp");
        std::fs::copy(self.jars.join(format!("app-{version}.jar")), &tmp)?;
        std::fs::rename(&tmp, self.artifact())?;
        Ok(())
    }
}
