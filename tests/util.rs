//! Helpers shared by the integration tests.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Instant;

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What the runner's own environment may hold that would change a run: every test run starts
/// without them, and sets what it needs ([`Cmd::env`]).
const RUNNER_ENV: [&str; 11] = [
    "SLACK_WEBHOOK_URL",
    "BG_SSH_KEY",
    "BG_KNOWN_HOSTS",
    "BG_RUN_ID",
    "BUILD_TAG",
    "SSH_AUTH_SOCK",
    bluegreen_core::plan::KILL_AT_STEP_ENV,
    "BLUEGREEN_GLOBAL_KNOWN_HOSTS",
    "NGINX_PRIVATE_IP",
    "WAS_1_PRIVATE_IP",
    "WAS_2_PRIVATE_IP",
];

/// The one harness every test uses to run the `bluegreen` binary or a script it rendered: in a
/// directory, with the runner's environment cleaned ([`RUNNER_ENV`]), standard input empty, and
/// the outcome collected as a [`Run`].
pub struct Cmd(Command);

impl Cmd {
    /// `bluegreen ARGS` in `dir`.
    pub fn bluegreen(dir: &Path, args: &[&str]) -> Cmd {
        Cmd::new(env!("CARGO_BIN_EXE_bluegreen"), dir).args(args)
    }

    /// `bash SCRIPT ARGS` in `dir` (a rendered deploy script).
    pub fn script(dir: &Path, script: &str, args: &[&str]) -> Cmd {
        Cmd::new("bash", dir).args(&[script]).args(args)
    }

    fn new(program: &str, dir: &Path) -> Cmd {
        let mut c = Command::new(program);
        c.current_dir(dir).stdin(Stdio::null());
        for k in RUNNER_ENV {
            c.env_remove(k);
        }
        Cmd(c)
    }

    /// More arguments.
    pub fn args(mut self, args: &[&str]) -> Cmd {
        self.0.args(args);
        self
    }

    /// An environment variable.
    pub fn env(mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) -> Cmd {
        self.0.env(k, v);
        self
    }

    /// Environment variables.
    pub fn envs(mut self, vars: &[(&str, &str)]) -> Cmd {
        for (k, v) in vars {
            self.0.env(k, v);
        }
        self
    }

    /// Dies (SIGKILL) at the boundary before plan step `n`, when given (the crash tests' hook).
    pub fn kill_at(self, n: Option<usize>) -> Cmd {
        match n {
            Some(n) => self.env(bluegreen_core::plan::KILL_AT_STEP_ENV, n.to_string()),
            None => self,
        }
    }

    /// In a process group of its own, as Jenkins runs a step (a kill takes the whole tree).
    pub fn own_group(mut self) -> Cmd {
        self.0.process_group(0);
        self
    }

    /// Runs it to its end.
    pub fn run(mut self) -> Run {
        let t = Instant::now();
        let o = self.0.output().expect("the command starts");
        Run::of(o, t)
    }

    /// The command itself, for a test that adds to it (its own PATH, stand-ins).
    pub fn into_command(self) -> Command {
        self.0
    }

    /// Runs it to its end, for tests that look at the raw exit status (a signal, for one).
    pub fn output(mut self) -> Output {
        self.0.output().expect("the command starts")
    }

    /// Starts it with its output piped; [`Running::wait`] collects it.
    pub fn spawn(mut self) -> Running {
        let started = Instant::now();
        let child = self
            .0
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the command starts");
        Running { child, started }
    }
}

/// A command started by [`Cmd::spawn`].
pub struct Running {
    /// The process.
    pub child: Child,
    /// When it started.
    pub started: Instant,
}

impl Running {
    /// Waits for its end.
    pub fn wait(self) -> Run {
        let o = self.child.wait_with_output().expect("wait for the command");
        Run::of(o, self.started)
    }
}

/// What a run returned.
#[derive(Debug)]
pub struct Run {
    /// The exit code (None: killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Wall time.
    pub secs: f64,
}

impl Run {
    fn of(o: Output, t: Instant) -> Run {
        Run {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            secs: t.elapsed().as_secs_f64(),
        }
    }

    /// Whether it exited 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Standard output, then standard error.
    pub fn out(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Everything, for an assertion's message.
    pub fn text(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    /// Asserts the exit code.
    pub fn assert_code(&self, code: i32) -> &Run {
        assert_eq!(self.code, Some(code), "exit code; {}", self.text());
        self
    }

    /// Asserts that the output holds every one of `words`.
    pub fn assert_says(&self, words: &[&str]) -> &Run {
        let out = self.out();
        for w in words {
            assert!(out.contains(w), "output lacks `{w}`:\n{}", self.text());
        }
        self
    }
}

/// Runs the `bluegreen` binary with `args` in `dir`.
pub fn bluegreen_in(dir: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bluegreen"));
    c.args(args).current_dir(dir);
    for k in RUNNER_ENV {
        c.env_remove(k);
    }
    c.output().expect("run bluegreen")
}

/// Runs the `bluegreen` binary with `args` from the workspace root.
pub fn bluegreen(args: &[&str]) -> Output {
    bluegreen_in(&root(), args)
}

/// Standard output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Panics (never skips) when a tool the test needs is not installed.
pub fn require(tool: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(tool))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "this test needs `{tool}`: install it with `apt-get install {package}` (.ci/run does)"
        )
    })
}

/// A fresh temporary directory (tempfile's), removed on drop, that can write files.
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        TempDir(
            tempfile::Builder::new()
                .prefix(&format!("bluegreen-test-{tag}-"))
                .tempdir()
                .expect("create temp dir"),
        )
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path().join(name);
        std::fs::write(&p, text).expect("write temp file");
        p
    }
}

/// The JDK's home, for running groovy.
pub fn java_home() -> String {
    if let Ok(h) = std::env::var("JAVA_HOME") {
        return h;
    }
    // /usr/bin/java -> /usr/lib/jvm/<jdk>/bin/java
    let java = std::fs::canonicalize("/usr/bin/java")
        .expect("this test needs java: apt-get install default-jdk-headless (.ci/run does)");
    java.parent()
        .and_then(Path::parent)
        .expect("java lives in <home>/bin")
        .display()
        .to_string()
}

/// The sha256 of a file, as `sha256sum` prints it.
pub fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("run sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_string()
}

/// A private key as a Jenkins "SSH Username with private key" credential holds one, for harness
/// runs that never connect (the harness checks a bound key looks like one).
pub const FAKE_SSH_KEY: &str =
    "-----BEGIN OPENSSH PRIVATE KEY-----\nbm90IGEgcmVhbCBrZXk=\n-----END OPENSSH PRIVATE KEY-----\n";

/// A known_hosts file for harness runs that never connect (a Jenkins "Secret file" credential).
pub const FAKE_KNOWN_HOSTS: &str =
    "back.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG5vdCBhIHJlYWwga2V5IGF0IGFsbA==\n";
