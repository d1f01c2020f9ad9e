//! The Rust side of the testbed (`tests/testbed/testbed.sh`): hosts in network namespaces with sshd,
//! nginx on the proxy, and the demo app's jars. Everything is torn down on drop, even after a panic.

use crate::util::{require, TempDir};
pub use bluegreen_testbed::DeployOptions;
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

/// A running testbed: [`bluegreen_testbed::Testbed`] with methods that panic, as tests want.
pub struct Testbed(bluegreen_testbed::Testbed);

impl std::ops::Deref for Testbed {
    type Target = bluegreen_testbed::Testbed;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Testbed {
    /// Brings up `apps` app hosts and a proxy.
    pub fn up(apps: usize) -> Testbed {
        require_root();
        Testbed(bluegreen_testbed::Testbed::up(apps).unwrap_or_else(|e| panic!("{e}")))
    }

    /// A value of the testbed's env file; panics when missing.
    pub fn var(&self, k: &str) -> &str {
        match self.0.var(k) {
            "" => panic!("testbed env has no {k}"),
            v => v,
        }
    }

    /// Runs a shell command as root inside a host's namespaces.
    pub fn sh(&self, host: &str, cmd: &str) -> Output {
        self.0.exec(host, cmd).expect("run testbed.sh exec")
    }

    /// Like `sh`, returning trimmed stdout and asserting success.
    pub fn sh_ok(&self, host: &str, cmd: &str) -> String {
        self.0.sh(host, cmd).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs `testbed.sh ARGS...` (fault injection: `sshd NAME HOST stop`, ...), asserting success.
    pub fn script(&self, args: &[&str]) {
        let out = Command::new("bash")
            .arg(self.var("TESTBED_SCRIPT"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "testbed.sh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
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
        self.0.state().unwrap_or_else(|e| panic!("{e}"))
    }
}

/// The demo app's jars, built once per test run: `v1` ... `v6`, and `broken`, whose health never
/// turns UP.
pub fn jars() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        require("javac", "default-jdk-headless");
        let dir = std::env::temp_dir().join(format!("bluegreen-jars-{}", std::process::id()));
        bluegreen_testbed::build_jars(&dir, &["v1", "v2", "v3", "v4", "v5", "v6", "broken"], 0)
            .unwrap_or_else(|e| panic!("building the demo app failed: {e}"));
        dir
    })
}

/// A scratch directory holding the artifact to deploy (`demo.jar`) and the config.
pub struct Workdir {
    pub dir: TempDir,
    inner: bluegreen_testbed::Workdir,
}

impl Workdir {
    pub fn new(tb: &Testbed, deadline: &str, extra: &str) -> Workdir {
        Workdir::with(tb, &DeployOptions::new(deadline).extra(extra))
    }

    /// A workdir whose config deploys the demo app as `opts` says (app flags, `cd`, `stop.grace`).
    pub fn with(tb: &Testbed, opts: &DeployOptions) -> Workdir {
        let dir = TempDir::new("e2e");
        let inner = bluegreen_testbed::Workdir::with(tb, dir.path(), jars(), opts)
            .unwrap_or_else(|e| panic!("{e}"));
        Workdir { dir, inner }
    }

    /// Puts version `v` in place as the artifact.
    pub fn stage(&self, v: &str) {
        self.inner.stage(v).unwrap_or_else(|e| panic!("{e}"));
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}
