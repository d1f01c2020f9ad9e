//! What the backend works out before and while it runs: the environment, the artifact, the slots.

use crate::error::Error;
use bluegreen_core::config::{
    check_variable, Slots, SECRET_FILE_MAX, SECRET_FILE_TOO_BIG, SECRET_FILE_UNREADABLE,
};
use bluegreen_core::plan::EnvRef;
use bluegreen_core::{RuntimeVar, Var, Word};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The environment variables a plan refers to, looked up once, and the files its file secrets
/// name, read once.
#[derive(Debug, Clone, Default)]
pub(crate) struct Env {
    /// Each variable's value.
    pub vars: HashMap<String, String>,
    /// A file secret's file content, base64-encoded, by its variable's name ([`Var::File`]).
    pub files: HashMap<String, String>,
}

impl Env {
    /// Looks up every variable the plan needs, checking values as `Config::check_env` does.
    pub fn resolve(refs: &[EnvRef], lookup: &dyn Fn(&str) -> Option<String>) -> Result<Env, Error> {
        let mut map = HashMap::new();
        let mut files = HashMap::new();
        for r in refs {
            let mut value = lookup(&r.name);
            if r.name == "HOME" && value.as_deref().is_none_or(str::is_empty) {
                // `~/` in a path: the runner's home, from the password database when a CI runner
                // sets no $HOME.
                value = home_from_passwd();
            }
            let value = check_variable(&r.field, &r.name, value)?;
            if r.file {
                files.insert(r.name.clone(), read_secret_file(r, &value)?);
            }
            map.insert(r.name.clone(), value);
        }
        Ok(Env { vars: map, files })
    }

    /// The value of a variable of the environment's (`Var::Runtime`: none).
    pub fn get(&self, v: &Var) -> Option<&String> {
        match v {
            Var::Env(name) => self.vars.get(name),
            Var::File(name) => self.files.get(name),
            Var::Runtime(_) => None,
        }
    }

    /// Resolves a word that refers to environment variables only.
    pub fn word(&self, w: &Word, field: &str) -> Result<String, Error> {
        w.resolve(|v| env_var(self, v, field))
    }
}

/// A variable of the environment's, for `step`: an error for a run-time variable or one not set.
pub(crate) fn env_var(env: &Env, v: &Var, step: &str) -> Result<String, Error> {
    match (env.get(v), v) {
        (Some(value), _) => Ok(value.clone()),
        (None, Var::Runtime(r)) => Err(Error::Runtime {
            step: step.to_string(),
            name: r.shell_name().to_string(),
        }),
        (None, Var::Env(name) | Var::File(name)) => {
            Err(Error::from(bluegreen_core::Error::MissingVariable {
                field: step.to_string(),
                name: name.clone(),
            }))
        }
    }
}

/// The content of the file a file secret's variable names (`path`), base64-encoded: a regular
/// file the runner can read, of at most [`SECRET_FILE_MAX`] bytes, or the same error the rendered
/// script gives.
fn read_secret_file(r: &EnvRef, path: &str) -> Result<String, Error> {
    use base64::Engine as _;
    let bad = |message: &str| {
        Error::from(bluegreen_core::Error::BadVariable {
            field: r.field.clone(),
            name: r.name.clone(),
            value: path.to_string(),
            message: message.to_string(),
        })
    };
    let meta = std::fs::metadata(path).map_err(|_| bad(SECRET_FILE_UNREADABLE))?;
    if !meta.is_file() {
        return Err(bad(SECRET_FILE_UNREADABLE));
    }
    if meta.len() > SECRET_FILE_MAX {
        return Err(bad(SECRET_FILE_TOO_BIG));
    }
    let bytes = std::fs::read(path).map_err(|_| bad(SECRET_FILE_UNREADABLE))?;
    if bytes.len() as u64 > SECRET_FILE_MAX {
        return Err(bad(SECRET_FILE_TOO_BIG));
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// The slot serving traffic before the deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Live {
    /// Blue was live.
    Blue,
    /// Green was live.
    Green,
    /// Nothing was live: a first deploy.
    None,
}

impl Live {
    /// Parses what `detect` printed: its last non-empty line.
    pub fn parse(output: &str) -> Option<Live> {
        match output.lines().map(str::trim).rfind(|l| !l.is_empty())? {
            "blue" => Some(Live::Blue),
            "green" => Some(Live::Green),
            "none" => Some(Live::None),
            _ => None,
        }
    }

    /// `blue`, `green` or `none`.
    pub fn name(self) -> &'static str {
        match self {
            Live::Blue => "blue",
            Live::Green => "green",
            Live::None => "none",
        }
    }

    /// The other slot (blue for none).
    pub fn other(self) -> Live {
        match self {
            Live::Blue => Live::Green,
            Live::Green | Live::None => Live::Blue,
        }
    }

    /// The slot a deploy targets: the other one, blue on a first deploy (core's one definition,
    /// [`bluegreen_core::plan::SLOT_CHOICES`], which the rendered script is generated from too).
    pub fn target(self) -> &'static str {
        bluegreen_core::plan::target_slot(self.name()).unwrap_or("blue")
    }
}

/// The values of [`RuntimeVar`]s.
#[derive(Debug, Clone)]
pub(crate) struct Runtime {
    pub slots: Slots,
    pub live: Option<Live>,
    pub release: String,
    pub deployer: String,
    /// This run's token (see [`RuntimeVar::RunToken`]).
    pub token: String,
}

impl Runtime {
    fn port(&self, slot: &str) -> u16 {
        if slot == "blue" {
            self.slots.blue
        } else {
            self.slots.green
        }
    }

    /// A value, or None while the live slot is not known yet.
    pub fn get(&self, v: RuntimeVar) -> Option<String> {
        match v {
            RuntimeVar::Release => Some(self.release.clone()),
            RuntimeVar::Deployer => Some(self.deployer.clone()),
            RuntimeVar::RunToken => Some(self.token.clone()),
            RuntimeVar::LiveSlot => self.live.map(|l| l.name().to_string()),
            RuntimeVar::TargetSlot => self.live.map(|l| l.target().to_string()),
            RuntimeVar::TargetPort => self.live.map(|l| self.port(l.target()).to_string()),
            RuntimeVar::LivePort => self.live.map(|l| match l {
                Live::None => String::new(),
                other => self.port(other.name()).to_string(),
            }),
        }
    }

    /// Whether a slot was live before the deploy (false while unknown).
    pub fn live_exists(&self) -> bool {
        matches!(self.live, Some(Live::Blue | Live::Green))
    }
}

/// Resolves a word against the environment and the runtime values.
pub(crate) fn resolve(w: &Word, env: &Env, rt: &Runtime, step: &str) -> Result<String, Error> {
    w.resolve(|v| lookup(v, env, rt, step))
}

/// One variable's value.
pub(crate) fn lookup(v: &Var, env: &Env, rt: &Runtime, step: &str) -> Result<String, Error> {
    match v {
        Var::Runtime(r) => rt.get(*r).ok_or_else(|| Error::Runtime {
            step: step.to_string(),
            name: r.shell_name().to_string(),
        }),
        _ => env_var(env, v, step),
    }
}

/// The one file `pattern` matches.
pub(crate) fn find_artifact(pattern: &str) -> Result<PathBuf, Error> {
    let paths = glob::glob(pattern).map_err(|e| {
        Error::from(bluegreen_core::Error::Invalid {
            file: "config".into(),
            field: "artifact".into(),
            message: format!("`{pattern}` is not a valid glob pattern: {e}"),
            hint: None,
        })
    })?;
    let mut matches: Vec<PathBuf> = paths
        .filter_map(Result::ok)
        .filter(|p| p.is_file())
        .collect();
    matches.sort();
    if matches.len() == 1 {
        Ok(matches.remove(0))
    } else {
        Err(Error::Artifact {
            pattern: pattern.to_string(),
            matches,
        })
    }
}

/// The sha256 of a file (hex) and its size, read in 1 MiB pieces.
pub(crate) fn sha256_file(path: &Path) -> Result<(String, u64), Error> {
    let io = |source| Error::Io {
        what: "cannot read artifact".into(),
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(e)),
        };
        h.update(&buf[..n]);
        size += n as u64;
    }
    let digest = h.finalize();
    let mut hex = String::with_capacity(64);
    for b in digest.iter() {
        hex.push_str(&format!("{b:02x}"));
    }
    Ok((hex, size))
}

/// A token unique to this run: 16 hex digits from the kernel's random source (the time and pid if
/// it cannot be read).
pub(crate) fn run_token() -> String {
    let mut bytes = [0u8; 8];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = (now as u64 ^ u64::from(std::process::id()) << 32).to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Who runs: `$BUILD_TAG` in Jenkins (unique per build), else `$USER@hostname:PID` (unique per
/// run, like the rendered script's run id), with anything but `[A-Za-z0-9._@:+-]` replaced by `_`.
pub(crate) fn default_deployer(lookup: &dyn Fn(&str) -> Option<String>) -> String {
    if let Some(tag) = lookup("BUILD_TAG").filter(|t| !t.trim().is_empty()) {
        return clean_deployer(tag.trim());
    }
    let user = lookup("USER")
        .or_else(|| lookup("LOGNAME"))
        .filter(|u| !u.is_empty())
        .or_else(user_from_passwd)
        .unwrap_or_else(|| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| lookup("HOSTNAME"))
        .unwrap_or_else(|| "localhost".into());
    clean_deployer(&format!("{user}@{host}:{}", std::process::id()))
}

/// The local files `exec` would use on this runner, for `bluegreen check`: `(field, path)`, each path
/// resolved as exec resolves it (`~/` from the runner's home), or saying which variable it needs.
pub fn runner_paths(
    plan: &bluegreen_core::Plan,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Vec<(&'static str, String)> {
    let resolve = |field: &'static str, w: &Word| {
        let env = Env::resolve(
            &w.env_vars()
                .map(|n| EnvRef {
                    name: n.to_string(),
                    field: field.to_string(),
                    file: false,
                })
                .collect::<Vec<_>>(),
            lookup,
        );
        match env.and_then(|env| env.word(w, field)) {
            Ok(path) => path,
            Err(e) => format!("{w} ({e})"),
        }
    };
    let mut out = vec![(
        "ssh.known_hosts",
        format!(
            "{} (and {})",
            resolve("ssh.known_hosts", &plan.ssh.known_hosts),
            crate::conn::GLOBAL_KNOWN_HOSTS
        ),
    )];
    out.push((
        "ssh.identity_file",
        match &plan.ssh.identity_file {
            Some(w) => resolve("ssh.identity_file", w),
            None => "none: the keys of ssh-agent ($SSH_AUTH_SOCK)".into(),
        },
    ));
    out
}

/// This process's user's `/etc/passwd` entry, split into its fields.
fn passwd_entry() -> Option<Vec<String>> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<String> = l.split(':').map(str::to_string).collect();
        (f.len() >= 6 && f[2] == uid).then_some(f)
    })
}

/// This process's user's home directory, from `/etc/passwd`.
fn home_from_passwd() -> Option<String> {
    passwd_entry()
        .map(|f| f[5].clone())
        .filter(|h| !h.is_empty())
}

/// The name of this process's user, from `/proc/self/status` and `/etc/passwd` (for CI runners
/// that set no `$USER`).
fn user_from_passwd() -> Option<String> {
    passwd_entry().map(|f| f[0].clone())
}

/// Keeps a deployer name on one line and free of shell-unfriendly characters.
pub(crate) fn clean_deployer(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._@-:+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(live: Option<Live>) -> Runtime {
        Runtime {
            slots: Slots {
                blue: 8081,
                green: 8082,
            },
            live,
            release: "abc".into(),
            deployer: "me@here".into(),
            token: "0123456789abcdef".into(),
        }
    }

    #[test]
    fn detect_output_sets_target() {
        assert_eq!(Live::parse("blue\n"), Some(Live::Blue));
        assert_eq!(Live::parse("warning\ngreen\n\n"), Some(Live::Green));
        assert_eq!(Live::parse("none"), Some(Live::None));
        assert_eq!(Live::parse("purple"), None);
        assert_eq!(Live::parse(""), None);
        assert_eq!(Live::Blue.target(), "green");
        assert_eq!(Live::Green.target(), "blue");
        assert_eq!(Live::None.target(), "blue");
    }

    #[test]
    fn runtime_values() {
        let r = rt(Some(Live::Blue));
        assert_eq!(r.get(RuntimeVar::TargetSlot).unwrap(), "green");
        assert_eq!(r.get(RuntimeVar::TargetPort).unwrap(), "8082");
        assert_eq!(r.get(RuntimeVar::LiveSlot).unwrap(), "blue");
        assert_eq!(r.get(RuntimeVar::LivePort).unwrap(), "8081");
        assert!(r.live_exists());
        let r = rt(Some(Live::None));
        assert_eq!(r.get(RuntimeVar::TargetSlot).unwrap(), "blue");
        assert_eq!(r.get(RuntimeVar::TargetPort).unwrap(), "8081");
        assert_eq!(r.get(RuntimeVar::LivePort).unwrap(), "");
        assert!(!r.live_exists());
        let r = rt(None);
        assert_eq!(r.get(RuntimeVar::TargetSlot), None);
        assert_eq!(r.get(RuntimeVar::Release).unwrap(), "abc");
        let e = resolve(
            &Word::lit("/srv/").then_runtime(RuntimeVar::TargetSlot),
            &Env::default(),
            &r,
            "copy",
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "copy: `BG_TARGET_SLOT` is not known yet");
    }

    #[test]
    fn env_is_checked_like_the_config() {
        let refs = vec![
            EnvRef {
                name: "WAS_1".into(),
                field: "servers[0].host".into(),
                file: false,
            },
            EnvRef {
                name: "DEPLOY_USER".into(),
                field: "ssh.user".into(),
                file: false,
            },
        ];
        let e = Env::resolve(&refs, &|n| (n == "WAS_1").then(|| "10.0.0.1".into())).unwrap_err();
        assert!(e
            .to_string()
            .contains("environment variable `DEPLOY_USER` is not set"));
        let e = Env::resolve(&refs, &|n| {
            Some(
                if n == "WAS_1" {
                    "10.0.0.1; rm"
                } else {
                    "deploy"
                }
                .into(),
            )
        })
        .unwrap_err();
        assert!(e.to_string().starts_with("servers[0].host: `10.0.0.1; rm`"));
        let env = Env::resolve(&refs, &|_| Some("deploy".into())).unwrap();
        assert_eq!(
            env.word(&Word::parse_env("${DEPLOY_USER}@x").unwrap(), "f")
                .unwrap(),
            "deploy@x"
        );
    }

    #[test]
    fn artifact_needs_exactly_one_match_and_hashes_streaming() {
        let dir = tempfile::tempdir().unwrap();
        let pattern = format!("{}/app-*.jar", dir.path().display());
        assert!(matches!(
            find_artifact(&pattern),
            Err(Error::Artifact { ref matches, .. }) if matches.is_empty()
        ));
        std::fs::write(dir.path().join("app-1.jar"), b"abc").unwrap();
        let one = find_artifact(&pattern).unwrap();
        let (sha, size) = sha256_file(&one).unwrap();
        assert_eq!(size, 3);
        assert_eq!(
            sha,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        std::fs::write(dir.path().join("app-2.jar"), b"x").unwrap();
        let e = find_artifact(&pattern).unwrap_err();
        assert!(e.to_string().contains("matched 2 files"));
    }

    #[test]
    fn deployer_is_one_clean_word() {
        assert_eq!(clean_deployer("ci bot@host\n"), "ci_bot@host_");
        let d = default_deployer(&|n| (n == "USER").then(|| "alice".into()));
        assert!(d.starts_with("alice@"));
        assert!(d.ends_with(&format!(":{}", std::process::id())), "{d}");
        let d = default_deployer(&|n| (n == "BUILD_TAG").then(|| "jenkins-shop-42".into()));
        assert_eq!(d, "jenkins-shop-42");
        let d = default_deployer(&|_| None);
        assert!(!d.starts_with("unknown@"), "{d}");
    }
}
