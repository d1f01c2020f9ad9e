//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the `bluegreen` binary with `args` in `dir`.
pub fn bluegreen_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bluegreen"))
        .args(args)
        .current_dir(dir)
        .env_remove("NGINX_PRIVATE_IP")
        .env_remove("WAS_1_PRIVATE_IP")
        .env_remove("WAS_2_PRIVATE_IP")
        .output()
        .expect("run bluegreen")
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
