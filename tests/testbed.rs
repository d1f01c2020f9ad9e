//! The Rust side of the testbed (`tests/testbed/testbed.sh`): hosts in network namespaces with sshd,
//! nginx on the proxy, and the demo app's jars. Everything is torn down on drop, even after a panic.

use crate::util::{require, root, TempDir};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, OnceLock};

/// End-to-end tests share two cores; they take turns so that timing stays realistic.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Fails (never skips) when not root: the testbed needs namespaces.
pub fn require_root() {
    let out = Command::new("id").arg("-u").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "end-to-end tests need root (network, mount and PID namespaces); CI runs as root"
    );
    for (tool, pkg) in [
        ("ip", "iproute2"),
        ("sshd", "openssh-server"),
        ("nginx", "nginx-light"),
        ("java", "default-jdk-headless"),
        ("javac", "default-jdk-headless"),
        ("curl", "curl"),
    ] {
        let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .any(|d| Path::new(d).join(tool).exists());
        if !found {
            require(tool, pkg);
        }
    }
}

/// A running testbed.
pub struct Testbed {
    pub name: String,
    pub env: HashMap<String, String>,
    script: PathBuf,
}

fn parse_env(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

impl Testbed {
    /// Brings up `apps` app hosts and a proxy.
    pub fn up(apps: usize) -> Testbed {
        require_root();
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "t{:x}{}",
            std::process::id() % 0xfffff,
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
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "testbed up failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(format!("/tmp/bgtb-{name}/env")).unwrap();
        tb.env = parse_env(&text);
        tb
    }

    /// A value of the testbed's env file.
    pub fn var(&self, k: &str) -> &str {
        self.env
            .get(k)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("testbed env has no {k}"))
    }

    /// The app hosts' addresses.
    pub fn app_addrs(&self) -> Vec<String> {
        self.var("APP_ADDRS")
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    /// nginx's address as host:port.
    pub fn proxy_http(&self) -> String {
        format!("{}:{}", self.var("PROXY_ADDR"), self.var("NGINX_PORT"))
    }

    /// Runs a shell command as root inside a host's namespaces.
    pub fn sh(&self, host: &str, cmd: &str) -> Output {
        Command::new("bash")
            .arg(&self.script)
            .args(["exec", &self.name, host, "bash", "-c", cmd])
            .output()
            .unwrap()
    }

    /// Like `sh`, returning trimmed stdout and asserting success.
    pub fn sh_ok(&self, host: &str, cmd: &str) -> String {
        let out = self.sh(host, cmd);
        assert!(
            out.status.success(),
            "[{host}] {cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Whether something listens on `port` on app host `host`.
    pub fn port_open(&self, host: &str, port: u16) -> bool {
        self.sh(host, &format!("exec 3<>/dev/tcp/127.0.0.1/{port}"))
            .status
            .success()
    }

    /// GET /version through nginx.
    pub fn version_via_proxy(&self) -> String {
        let out = Command::new("curl")
            .args(["-s", "-m", "5"])
            .arg(format!("http://{}/version", self.proxy_http()))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Asserts that the deploy lock on the proxy is free.
    pub fn assert_lock_free(&self) {
        let lock = format!("{}/lock", self.var("STATE_DIR"));
        assert_eq!(
            self.sh_ok(
                "proxy",
                &format!("test -e {lock} && echo held || echo free")
            ),
            "free",
            "the deploy lock must be released"
        );
    }

    /// The proxy's state file, as key/value pairs.
    pub fn state(&self) -> HashMap<String, String> {
        parse_env(&self.sh_ok("proxy", &format!("cat {}/state", self.var("STATE_DIR"))))
    }

    /// A config for deploying the demo app from `artifact` to this testbed.
    pub fn config(&self, artifact: &Path, deadline: &str, extra: &str) -> String {
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
  credentials_id: testbed-key
  connect_timeout: 5s
  command_timeout: 60s
proxy:
  host: {proxy}
  upstream_file: {upstream}
  upstream_name: {upstream_name}
  test_command: {test}
  reload_command: {reload}
  state_dir: {state}
  check_url: http://{proxy}:{port}/actuator/health
servers:
{servers}deploy_dir: {deploy}
start: {java} {java_opts} -jar {{jar}} --server.port={{port}}
health:
  interval: 200ms
  timeout: 2s
  deadline: {deadline}
  successes: 2
drain: 1s
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

/// The demo app's jars, built once per test run: `v1` ... `v6`, and `broken`, whose health never
/// turns UP.
pub fn jars() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        require("javac", "default-jdk-headless");
        let dir = std::env::temp_dir().join(format!("bluegreen-jars-{}", std::process::id()));
        let out = Command::new("bash")
            .arg(root().join("tests/app/build.sh"))
            .arg(&dir)
            .args(["v1", "v2", "v3", "v4", "v5", "v6", "broken"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "building the demo app failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

/// A scratch directory holding the artifact to deploy (`demo.jar`) and the config.
pub struct Workdir {
    pub dir: TempDir,
}

impl Workdir {
    pub fn new(tb: &Testbed, deadline: &str, extra: &str) -> Workdir {
        let dir = TempDir::new("e2e");
        let cfg = tb.config(&dir.path().join("artifact/demo.jar"), deadline, extra);
        dir.write("bluegreen.yaml", &cfg);
        std::fs::create_dir_all(dir.path().join("artifact")).unwrap();
        Workdir { dir }
    }

    /// Puts version `v` in place as the artifact.
    pub fn stage(&self, v: &str) {
        std::fs::copy(
            jars().join(format!("app-{v}.jar")),
            self.dir.path().join("artifact/demo.jar"),
        )
        .unwrap();
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}
