//! The testbed from Rust: a proxy with nginx and app hosts with sshd, each in its own network, mount
//! and PID namespaces on this machine (`tests/testbed/testbed.sh`), the demo JVM app's jars
//! (`tests/app/build.sh`) or the light app's scripts (`tests/lightapp`, [`build_light_apps`]), and
//! the deploy config that points bluegreen at them. Used by the end-to-end tests and the benchmark
//! suite, so both deploy the same way.
//!
//! Every testbed is torn down when its [`Testbed`] is dropped, even after a panic.
//!
//! ```no_run
//! let tb = bluegreen_testbed::Testbed::up(2)?;
//! println!("nginx at {}", tb.proxy_http());
//! # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Errors are reported as text: every one of them is an environment problem for a person to read.
pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The workspace root (where `tests/testbed` and `tests/app` live).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")))
}

/// A running testbed.
pub struct Testbed {
    /// Its name (`testbed.sh` NAME).
    pub name: String,
    /// The values of its env file (`/tmp/bgtb-NAME/env`).
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
    /// Brings up a proxy and `apps` app hosts, under a name unique to this process.
    pub fn up(apps: usize) -> Result<Testbed> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "t{:x}{}",
            std::process::id() % 0xfffff,
            N.fetch_add(1, Ordering::SeqCst)
        );
        // Created before `up` so that a half-done `up` is torn down too.
        let mut tb = Testbed {
            name: name.clone(),
            env: HashMap::new(),
            script: root().join("tests/testbed/testbed.sh"),
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

    /// A value of the env file ("" when missing).
    pub fn var(&self, k: &str) -> &str {
        self.env.get(k).map_or("", String::as_str)
    }

    /// The app hosts' addresses.
    pub fn app_addrs(&self) -> Vec<String> {
        self.var("APP_ADDRS")
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    /// nginx's address, `host:port`.
    pub fn proxy_http(&self) -> String {
        format!("{}:{}", self.var("PROXY_ADDR"), self.var("NGINX_PORT"))
    }

    /// Runs a shell command as root inside a host's namespaces (`proxy`, `app1`, ...).
    pub fn exec(&self, host: &str, cmd: &str) -> std::io::Result<Output> {
        Command::new("bash")
            .arg(&self.script)
            .args(["exec", &self.name, host, "bash", "-c", cmd])
            .output()
    }

    /// Like [`Testbed::exec`], failing on a non-zero exit; its stdout, trimmed.
    pub fn sh(&self, host: &str, cmd: &str) -> Result<String> {
        let out = self.exec(host, cmd)?;
        if !out.status.success() {
            return Err(format!(
                "[{host}] {cmd}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )
            .into());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The CPU time `host` (`proxy`, `app1`, ...) has used since the testbed came up, from its
    /// cgroup's `cpu.stat` (`usage_usec`: every process that ran there, exited ones included), split
    /// into the app's part (what ran in the host's `app` child cgroup, which a start command built
    /// with [`DeployOptions::app_cgroup`] moves the app into) and the rest. None when the testbed
    /// has no cgroups (no writable cgroup v2 mount).
    pub fn host_cpu(&self, host: &str) -> Option<HostCpu> {
        let dir = self.env.get("CGROUP_DIR").filter(|d| !d.is_empty())?;
        let usage = |path: PathBuf| -> Option<u64> {
            std::fs::read_to_string(path)
                .ok()?
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))?
                .trim()
                .parse()
                .ok()
        };
        let host_dir = Path::new(dir).join(host);
        let total = usage(host_dir.join("cpu.stat"))?;
        let app = usage(host_dir.join("app/cpu.stat"))?;
        Some(HostCpu {
            total_usec: total,
            app_usec: app,
        })
    }

    /// Whether something listens on `port` on `host`.
    pub fn port_open(&self, host: &str, port: u16) -> bool {
        self.exec(host, &format!("exec 3<>/dev/tcp/127.0.0.1/{port}"))
            .is_ok_and(|o| o.status.success())
    }

    /// The proxy's state file, as key/value pairs.
    pub fn state(&self) -> Result<HashMap<String, String>> {
        Ok(parse_env(&self.sh(
            "proxy",
            &format!("cat {}/state", self.var("STATE_DIR")),
        )?))
    }

    /// GET /version through nginx ("" when nothing answers).
    pub fn version_via_proxy(&self) -> String {
        Command::new("curl")
            .args(["-s", "-m", "5"])
            .arg(format!("http://{}/version", self.proxy_http()))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    }

    /// Stops every app instance on every app host (through their pid files, whose first word is the
    /// pid: bluegreen's slots, `PID START`, and the seed-style baseline's ports), forgets bluegreen's state and points nginx back at nothing,
    /// so another deploy tool can start from clean hosts.
    pub fn reset_apps(&self) -> Result<()> {
        let dir = self.var("DEPLOY_DIR");
        for i in 1..=self.app_addrs().len() {
            self.sh(
                &format!("app{i}"),
                &format!(
                    "for f in {dir}/*/app.pid; do [ -f \"$f\" ] || continue; read -r p _ <\"$f\" || [ -n \"$p\" ] || continue; \
                     kill -TERM -- \"-$p\" 2>/dev/null || kill -TERM \"$p\" 2>/dev/null || true; \
                     for _ in $(seq 100); do kill -0 \"$p\" 2>/dev/null || break; sleep 0.05; done; \
                     rm -f \"$f\"; done; rm -rf {dir}/*"
                ),
            )?;
        }
        let state = self.var("STATE_DIR");
        self.sh(
            "proxy",
            &format!(
                "printf 'server 127.0.0.1:9 down;\\n' >{} && rm -rf {state}/state {state}/lock {state}/audit.log && \
                 kill -HUP $(cat {})",
                self.var("UPSTREAM_FILE"),
                self.var("NGINX_PID_FILE")
            ),
        )?;
        Ok(())
    }

    /// A config deploying the demo app from `artifact` to this testbed: health polled every 200 ms,
    /// two good answers needed within `deadline`; `extra` is appended (more top-level keys). The app
    /// starts at once and stops at once ([`DeployOptions::new`]); see [`Testbed::config_with`].
    pub fn config(&self, artifact: &Path, deadline: &str, extra: &str) -> String {
        self.config_with(artifact, &DeployOptions::new(deadline).extra(extra))
    }

    /// A config deploying the demo app from `artifact` to this testbed as `opts` says: health polled
    /// every 200 ms, two good answers needed within `opts.deadline` (or bluegreen's default rule), the app's command line, the
    /// start command's working directory, `stop.grace`, and more top-level keys.
    pub fn config_with(&self, artifact: &Path, opts: &DeployOptions) -> String {
        let program = match opts.app {
            App::Demo => format!("{} {} -jar", self.var("JAVA"), self.var("JAVA_OPTS")),
            App::Light => "perl".to_string(),
        };
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
start: {cgroup}{cd}{program} {{jar}} --server.port={{port}}{args}
health:
{interval}  timeout: 2s
  deadline: {deadline}
{successes}stop:
  grace: {grace}
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
            cgroup = if opts.app_cgroup && !self.var("CGROUP_DIR").is_empty() {
                "echo 0 >/etc/bgtb/cgroup/app/cgroup.procs && "
            } else {
                ""
            },
            cd = opts
                .cd
                .as_ref()
                .map(|d| format!("cd {d} && exec "))
                .unwrap_or_default(),
            args = opts
                .app_args
                .iter()
                .map(|a| format!(" {a}"))
                .collect::<String>(),
            deadline = opts.deadline,
            interval = if opts.default_health_rule {
                ""
            } else {
                "  interval: 200ms\n"
            },
            successes = if opts.default_health_rule {
                ""
            } else {
                "  successes: 2\n"
            },
            grace = opts.grace,
            extra = opts.extra,
        )
    }
}

/// What a host's cgroup counted ([`Testbed::host_cpu`]), in microseconds of CPU time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HostCpu {
    /// Everything that ran on the host (sshd, shells, the remote library, the app).
    pub total_usec: u64,
    /// What ran in the host's `app` cgroup: the app instances started with
    /// [`DeployOptions::app_cgroup`].
    pub app_usec: u64,
}

impl HostCpu {
    /// What ran on the host outside its app: the deploy tool's remote side (and sshd).
    pub fn tool_usec(&self) -> u64 {
        self.total_usec.saturating_sub(self.app_usec)
    }

    /// The CPU used between `before` and `self`.
    pub fn since(&self, before: &HostCpu) -> HostCpu {
        HostCpu {
            total_usec: self.total_usec.saturating_sub(before.total_usec),
            app_usec: self.app_usec.saturating_sub(before.app_usec),
        }
    }
}

/// Which app a config deploys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum App {
    /// The demo JVM app (`tests/app`): `java $JAVA_OPTS -jar {jar}`, artifacts from [`build_jars`].
    #[default]
    Demo,
    /// The light app (`tests/lightapp`): `perl {jar}`, artifacts from [`build_light_apps`]. Same
    /// endpoints, flags and SIGTERM handling; boots in milliseconds and uses a few MiB.
    Light,
}

impl App {
    /// The artifact file for `version` in the directory the builder wrote.
    pub fn artifact_file(self, version: &str) -> String {
        match self {
            App::Demo => format!("app-{version}.jar"),
            App::Light => format!("light-{version}.pl"),
        }
    }

    /// The staged artifact's file name (the config's `artifact`).
    pub fn staged_name(self) -> &'static str {
        match self {
            App::Demo => "demo.jar",
            App::Light => "light.pl",
        }
    }
}

/// How the demo app is deployed on the testbed ([`Testbed::config_with`]). The defaults
/// ([`DeployOptions::new`]) are the fast ones: the app binds its port at once, is healthy at once and
/// stops at once. Realistic values are the app's own flags (`tests/app`):
///
/// ```
/// use bluegreen_testbed::DeployOptions;
/// // Binds its port after 1 s like Spring Boot, and takes 3 s to shut down gracefully.
/// let o = DeployOptions::new("60s").args(["--bind-delay=1000", "--shutdown-delay=3000"]);
/// assert_eq!(o.grace, "20s");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployOptions {
    /// `health.deadline`.
    pub deadline: String,
    /// Appended to the config: more top-level keys.
    pub extra: String,
    /// Appended to the app's command line (shell words, written as they are), e.g.
    /// `--shutdown-delay=3000`, `--bind-delay=1500`, `--boot-delay=2000`.
    pub app_args: Vec<String>,
    /// A directory the start command changes into before it starts the JVM
    /// (`start: cd DIR && exec java ...`): bluegreen runs the command with `bash -c` in the slot's
    /// directory, and the process it recorded then has DIR as its working directory, as when a
    /// wrapper script changes directory. None: the slot's directory.
    pub cd: Option<String>,
    /// `stop.grace` (default `20s`).
    pub grace: String,
    /// Which app (default: the demo JVM app).
    pub app: App,
    /// The start command first moves itself into the host's `app` cgroup
    /// (`echo 0 >/etc/bgtb/cgroup/app/cgroup.procs && ...`), so that [`Testbed::host_cpu`] tells the
    /// app's CPU apart from the deploy tool's. Ignored on a testbed without cgroups.
    pub app_cgroup: bool,
    /// `health.interval` and `health.successes` are left out of the config: bluegreen's defaults
    /// (the README's) instead of 200 ms and two good answers.
    pub default_health_rule: bool,
}

impl DeployOptions {
    /// Health deadline `deadline`, nothing appended, no app arguments, no `cd`, `stop.grace: 20s`.
    pub fn new(deadline: &str) -> DeployOptions {
        DeployOptions {
            deadline: deadline.to_string(),
            extra: String::new(),
            app_args: Vec::new(),
            cd: None,
            grace: "20s".into(),
            app: App::Demo,
            app_cgroup: false,
            default_health_rule: false,
        }
    }

    /// Health polled by bluegreen's default rule (see [`DeployOptions::default_health_rule`]).
    pub fn default_health_rule(mut self) -> DeployOptions {
        self.default_health_rule = true;
        self
    }

    /// Deploys the light app (`tests/lightapp`) instead of the demo JVM app.
    pub fn light(mut self) -> DeployOptions {
        self.app = App::Light;
        self
    }

    /// The app runs in the host's `app` cgroup (see [`DeployOptions::app_cgroup`]).
    pub fn app_cgroup(mut self) -> DeployOptions {
        self.app_cgroup = true;
        self
    }

    /// Appends `extra` (top-level keys) to the config.
    pub fn extra(mut self, extra: &str) -> DeployOptions {
        self.extra.push_str(extra);
        self
    }

    /// Appends arguments to the app's command line.
    pub fn args<I, S>(mut self, args: I) -> DeployOptions
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.app_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The start command changes into `dir` before it execs the JVM.
    pub fn cd(mut self, dir: &str) -> DeployOptions {
        self.cd = Some(dir.to_string());
        self
    }

    /// `stop.grace`, e.g. `30s`.
    pub fn grace(mut self, grace: &str) -> DeployOptions {
        self.grace = grace.to_string();
        self
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

/// Builds the demo app's jars `app-VERSION.jar` into `out`, each padded with `pad_kib` KiB of
/// incompressible bytes.
pub fn build_jars(out: &Path, versions: &[&str], pad_kib: u64) -> Result<()> {
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

/// The light app's script, `tests/lightapp/lightapp.pl`.
pub fn light_app_source() -> PathBuf {
    root().join("tests/lightapp/lightapp.pl")
}

/// Writes the light app's artifacts `light-VERSION.pl` into `out`: the script with VERSION baked in
/// (its `my $VERSION = 'dev';` line), so that versions differ in content like the demo app's jars.
pub fn build_light_apps(out: &Path, versions: &[&str]) -> Result<()> {
    let src = std::fs::read_to_string(light_app_source())?;
    const LINE: &str = "my $VERSION = 'dev';";
    if src.matches(LINE).count() != 1 {
        return Err(format!("{}: no single `{LINE}` line", light_app_source().display()).into());
    }
    std::fs::create_dir_all(out)?;
    for v in versions {
        if v.is_empty()
            || !v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
        {
            return Err(format!("bad version '{v}' (allowed: letters, digits, . _ + -)").into());
        }
        let path = out.join(App::Light.artifact_file(v));
        let tmp = out.join(format!(".{}.tmp", App::Light.artifact_file(v)));
        std::fs::write(&tmp, src.replace(LINE, &format!("my $VERSION = '{v}';")))?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(())
}

/// A deploy workspace: the config (`bluegreen.yaml`) and the artifact (`artifact/demo.jar`, or
/// `artifact/light.pl` for the light app).
pub struct Workdir {
    /// The directory.
    pub dir: PathBuf,
    jars: PathBuf,
    app: App,
}

impl Workdir {
    /// A workdir in `dir` for `tb`, deploying jars from `jars` (see [`Testbed::config`]).
    pub fn new(
        tb: &Testbed,
        dir: &Path,
        jars: &Path,
        deadline: &str,
        extra: &str,
    ) -> Result<Workdir> {
        Workdir::with(tb, dir, jars, &DeployOptions::new(deadline).extra(extra))
    }

    /// A workdir in `dir` for `tb`, deploying jars from `jars` as `opts` says (see
    /// [`Testbed::config_with`]).
    pub fn with(tb: &Testbed, dir: &Path, jars: &Path, opts: &DeployOptions) -> Result<Workdir> {
        std::fs::create_dir_all(dir.join("artifact"))?;
        let artifact = dir.join("artifact").join(opts.app.staged_name());
        let cfg = tb.config_with(&artifact, opts);
        std::fs::write(dir.join("bluegreen.yaml"), cfg)?;
        Ok(Workdir {
            dir: dir.to_path_buf(),
            jars: jars.to_path_buf(),
            app: opts.app,
        })
    }

    /// The config file.
    pub fn config(&self) -> PathBuf {
        self.dir.join("bluegreen.yaml")
    }

    /// The staged artifact.
    pub fn artifact(&self) -> PathBuf {
        self.dir.join("artifact").join(self.app.staged_name())
    }

    /// Puts `app-VERSION.jar` (the light app: `light-VERSION.pl`) in place as the artifact
    /// (atomically).
    pub fn stage(&self, version: &str) -> Result<()> {
        let tmp = self
            .dir
            .join(format!("artifact/.{}.tmp", self.app.staged_name()));
        std::fs::copy(self.jars.join(self.app.artifact_file(version)), &tmp)?;
        std::fs::rename(&tmp, self.artifact())?;
        Ok(())
    }
}
