//! The one error type of the SSH backend.

use bluegreen_core::redact::{redact_in, redact_url};
use bluegreen_core::wording;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// What is wrong with a host key. `file` and `line` say where the line that decided it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyProblem {
    /// Neither known_hosts file records a key for the host (refused by `host_key_policy: strict`).
    Unknown {
        /// The global known_hosts file, read after the user's (`/etc/ssh/ssh_known_hosts`).
        global: PathBuf,
    },
    /// A key of the type the host offered is recorded for it, and it differs.
    Mismatch {
        /// The known_hosts file holding the recorded key.
        file: PathBuf,
        /// Its line, from 1.
        line: usize,
    },
    /// Keys are recorded for the host, but the host offers none of their types.
    OtherType {
        /// The types recorded, e.g. `ecdsa-sha2-nistp256`.
        pinned: Vec<String>,
        /// The known_hosts file of the first key recorded.
        file: PathBuf,
        /// Its line, from 1.
        line: usize,
    },
    /// The host's key is marked `@revoked` (refused whatever the policy and the other lines say).
    Revoked {
        /// The known_hosts file.
        file: PathBuf,
        /// The `@revoked` line, from 1.
        line: usize,
    },
    /// Only a `@cert-authority` line covers the host: bluegreen does not verify host
    /// certificates, and never trusts such a host on first use.
    CertAuthority {
        /// The known_hosts file.
        file: PathBuf,
        /// The `@cert-authority` line, from 1.
        line: usize,
    },
}

/// Everything that can make a deploy fail.
///
/// Messages are lowercase, without a trailing period, and name the host (`proxy`, `app1`, ...) and the
/// step where there is one. No message ever holds the key passphrase or the Slack webhook URL.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An environment variable the config refers to is missing or holds an unacceptable value.
    #[error(transparent)]
    Env(#[from] bluegreen_core::Error),

    /// The artifact glob matched no file, or more than one.
    #[error("artifact `{pattern}` {}", artifact_problem(matches))]
    Artifact {
        /// The pattern, with variables resolved.
        pattern: String,
        /// The files it matched (0 or more than 1).
        matches: Vec<PathBuf>,
    },

    /// A local file could not be read or written.
    #[error("{what} `{}`: {source}", path.display())]
    Io {
        /// What was being done, e.g. `cannot read artifact`.
        what: String,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// The TCP connection or the SSH handshake failed.
    #[error("{host}: cannot connect to {addr}: {message}")]
    Connect {
        /// Host id.
        host: String,
        /// `address:port`.
        addr: String,
        /// Why.
        message: String,
    },

    /// The host key is refused: unknown (strict policy), different from the one recorded,
    /// revoked, or covered only by a certificate authority.
    #[error("{}", host_key_message(host, addr, *port, key_type, file, kind))]
    HostKey {
        /// Host id.
        host: String,
        /// The address as written in the config (the name known_hosts records).
        addr: String,
        /// SSH port.
        port: u16,
        /// The type of the key the host offered, e.g. `ssh-ed25519`.
        key_type: String,
        /// The user's known_hosts file (`ssh.known_hosts`), the one new keys are added to.
        file: PathBuf,
        /// What is wrong (boxed: it is large, and errors are passed around by value).
        kind: Box<HostKeyProblem>,
    },

    /// Authentication was refused or impossible.
    #[error("{host}: authentication as `{user}` failed: {message}")]
    Auth {
        /// Host id.
        host: String,
        /// SSH user.
        user: String,
        /// What was tried and why it failed.
        message: String,
    },

    /// An SSH operation (channel, SFTP, timeout) failed during a step.
    #[error("{host}: {step}: ssh error: {message}")]
    Ssh {
        /// Host id.
        host: String,
        /// Step name.
        step: String,
        /// Why.
        message: String,
    },

    /// A remote call exited with a non-zero status.
    #[error("{host}: {step} failed (exit {status}){}", stderr_suffix(stderr))]
    Remote {
        /// Host id.
        host: String,
        /// Step name.
        step: String,
        /// Exit status.
        status: i32,
        /// The last lines of its standard error.
        stderr: String,
    },

    /// A hook failed, or took longer than its timeout.
    #[error("{host}: the {hook} hook {why}{}", last_lines_suffix("output", output))]
    Hook {
        /// Where it ran: a host id, or `runner`.
        host: String,
        /// Which hook (`pre_switch`, ...).
        hook: String,
        /// How it ended: `exited with status 3`, `timed out after 300s (it was stopped)`.
        why: String,
        /// The last lines of its output, secrets masked.
        output: String,
    },

    /// The live slot read from the proxy made no sense.
    #[error("{host}: detect printed `{output}`, expected blue, green or none")]
    Detect {
        /// Host id.
        host: String,
        /// What it printed.
        output: String,
    },

    /// A new instance did not turn healthy before the deadline.
    #[error("{host}: {}", not_healthy(deadline, url, last))]
    Health {
        /// Host id.
        host: String,
        /// The URL probed.
        url: String,
        /// The last probe's outcome.
        last: String,
        /// The deadline.
        deadline: Duration,
    },

    /// Another run took the deploy lock over while this one ran: it must not switch.
    #[error(
        "{host}: the deploy lock was taken over by another run (this run's renewals did not reach the proxy for lock.stale_after, {}s): not switching",
        secs(stale_after)
    )]
    LockLost {
        /// Host id (the proxy).
        host: String,
        /// `lock.stale_after`.
        stale_after: Duration,
    },

    /// A new instance exited while it was being health-checked.
    #[error("{host}: {}{}", died(what, after), last_lines_suffix("log", log))]
    Died {
        /// Host id.
        host: String,
        /// What the host said: which instance exited, with what status, where its log is.
        what: String,
        /// How long the health checks had run.
        after: Duration,
        /// The last lines of its log.
        log: String,
    },

    /// The proxy switch failed; nginx keeps the previous upstream.
    #[error(
        "{host}: switch failed (exit {status}), traffic left on the previous slot{}",
        stderr_suffix(stderr)
    )]
    Switch {
        /// Host id (the proxy).
        host: String,
        /// Exit status.
        status: i32,
        /// The last lines of its standard error.
        stderr: String,
    },

    /// The request through the proxy after the switch did not answer as expected. The message
    /// shows the URL with its credentials hidden ([`bluegreen_core::redact_url`]).
    #[error("{host}: {}", check_failed(url, *expected, last))]
    Check {
        /// Host id (the proxy).
        host: String,
        /// The URL, as fetched.
        url: String,
        /// Expected status.
        expected: u16,
        /// What the last try got.
        last: String,
    },

    /// The deploy was interrupted (Ctrl-C).
    #[error("interrupted during {phase}: {outcome}")]
    Interrupted {
        /// The phase that was running.
        phase: String,
        /// Where traffic and instances were left.
        outcome: String,
    },

    /// The deploy lock is held by another run (after waiting `--lock-wait`, if given).
    #[error("{host}: the deploy lock is held{}: {holder}; wait for it with --lock-wait DURATION, or see `bluegreen lock show`", waited_suffix(*waited))]
    LockHeld {
        /// Host id (the proxy).
        host: String,
        /// What the lock records about its holder (`holder=... time=... pid=... message=...`).
        holder: String,
        /// How long this run waited for it.
        waited: Duration,
    },

    /// `lock release` without `--force` of a lock that is not stale yet: a run may still hold it.
    #[error(
        "{host}: the deploy lock is held by {holder} since {age} ago and its run still renews it (a lock not renewed for lock.stale_after, {}, is stale): a run is still going; if you are sure none is, remove it with `bluegreen lock release --force`",
        human(*stale_after)
    )]
    LockFresh {
        /// Host id (the proxy).
        host: String,
        /// The recorded holder.
        holder: String,
        /// How long it has been held, in words.
        age: String,
        /// When a lock counts as stale.
        stale_after: Duration,
    },

    /// There is nothing to do, and nothing was changed: no slot to roll back to or to retire.
    #[error("{message}")]
    Refused {
        /// Why, and what to do instead.
        message: String,
    },

    /// A value the backend computes was needed before it was known (a bug in the plan).
    #[error("{step}: `{name}` is not known yet")]
    Runtime {
        /// Step name.
        step: String,
        /// The variable's shell name.
        name: String,
    },
}

impl Error {
    /// The host the error is about, if any.
    pub fn host(&self) -> Option<&str> {
        match self {
            Error::Connect { host, .. }
            | Error::HostKey { host, .. }
            | Error::Auth { host, .. }
            | Error::Ssh { host, .. }
            | Error::Remote { host, .. }
            | Error::Hook { host, .. }
            | Error::Detect { host, .. }
            | Error::Health { host, .. }
            | Error::Died { host, .. }
            | Error::LockLost { host, .. }
            | Error::Switch { host, .. }
            | Error::Check { host, .. }
            | Error::LockHeld { host, .. }
            | Error::LockFresh { host, .. } => Some(host),
            _ => None,
        }
    }
}

/// `; the last lines of its WHAT:` and `text` indented, or nothing when `text` is blank.
fn last_lines_suffix(what: &str, text: &str) -> String {
    if text.trim().is_empty() {
        String::new()
    } else {
        format!(
            "; the last lines of its {what}:\n{}",
            indent(text.trim_end())
        )
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn died(what: &str, after: &Duration) -> String {
    let after = human(*after);
    fill(&wording::DIED, &[("what", what), ("after", &after)])
}

fn check_failed(url: &str, expected: u16, last: &str) -> String {
    let (shown, last, expected) = (redact_url(url), redact_in(last, url), expected.to_string());
    fill(
        &wording::CHECK_FAILED,
        &[("url", &shown), ("expected", &expected), ("last", &last)],
    )
}

/// Core's template filled with `values` (a name missing from them shows as such).
fn fill(t: &wording::Template, values: &[(&str, &str)]) -> String {
    t.fill(|n| values.iter().find(|(k, _)| *k == n).map(|(_, v)| *v))
        .unwrap_or_else(|u| format!("(no {} for the message)", u.0))
}

fn not_healthy(deadline: &Duration, url: &str, last: &str) -> String {
    let deadline = human(*deadline);
    fill(
        &wording::NOT_HEALTHY,
        &[("deadline", &deadline), ("url", url), ("last", last)],
    )
}

fn secs(d: &Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0}")
    } else {
        format!("{s:.1}")
    }
}

fn waited_suffix(d: Duration) -> String {
    if d.is_zero() {
        String::new()
    } else {
        format!(" (waited {})", human(d))
    }
}

fn artifact_problem(matches: &[PathBuf]) -> String {
    if matches.is_empty() {
        "matched no file (build it first, or fix `artifact` in the config)".into()
    } else {
        let names: Vec<String> = matches.iter().map(|p| p.display().to_string()).collect();
        format!(
            "matched {} files, expected exactly one: {} (make the pattern more specific or remove old builds)",
            matches.len(),
            names.join(", ")
        )
    }
}

fn stderr_suffix(stderr: &str) -> String {
    let s = stderr.trim();
    if s.is_empty() {
        String::new()
    } else {
        format!(": {s}")
    }
}

/// The name known_hosts records for `addr:port`: plain for port 22, `[addr]:port` otherwise.
pub(crate) fn known_hosts_name(addr: &str, port: u16) -> String {
    if port == 22 {
        addr.to_string()
    } else {
        format!("[{addr}]:{port}")
    }
}

fn host_key_message(
    host: &str,
    addr: &str,
    port: u16,
    key_type: &str,
    file: &std::path::Path,
    kind: &HostKeyProblem,
) -> String {
    let name = known_hosts_name(addr, port);
    let user_file = file.display();
    let keyscan = format!("ssh-keyscan -p {port} -t {key_type} {addr} >> {user_file}");
    match kind {
        HostKeyProblem::Unknown { global } => format!(
            "{host}: host key of {name} ({key_type}) is not in {user_file} (nor in {}) and ssh.host_key_policy is strict; \
             check the key out of band, then add it with `{keyscan}` (or set host_key_policy: accept-new)",
            global.display()
        ),
        HostKeyProblem::Mismatch { file, line } => {
            let file = file.display();
            format!(
                "{host}: host key of {name} ({key_type}) does not match the one recorded in {file}:{line}: someone may be \
                 intercepting the connection, or the host was reinstalled; if you know why the key changed, remove the \
                 old entry with `ssh-keygen -R '{name}' -f {file}` and add the new one"
            )
        }
        HostKeyProblem::OtherType { pinned, file, line } => {
            let file = file.display();
            format!(
                "{host}: host key of {name} is {key_type}, but only {} keys are recorded for it (first in {file}:{line}) \
                 and the host offers none of those types: someone may be intercepting the connection, or the host was \
                 reinstalled; if you know why its keys changed, remove the old entries with `ssh-keygen -R '{name}' -f {file}` \
                 and add the new one",
                pinned.join(", ")
            )
        }
        HostKeyProblem::Revoked { file, line } => format!(
            "{host}: host key of {name} ({key_type}) is marked @revoked in {}:{line}: refusing to connect whatever \
             ssh.host_key_policy says; the host needs a new key, recorded once checked out of band",
            file.display()
        ),
        HostKeyProblem::CertAuthority { file, line } => format!(
            "{host}: {name} is covered only by the @cert-authority line {}:{line}, but bluegreen does not verify host \
             certificates and no key of the host itself is recorded (not even with host_key_policy: accept-new); \
             check the host's {key_type} key out of band and record it: `{keyscan}`",
            file.display()
        ),
    }
}

/// A short description of a duration for messages and events: `850ms`, `1.23s`, `2m05s`.
/// Core's wording, which the rendered script shares ([`bluegreen_core::wording::human_ms`]).
pub(crate) fn human(d: Duration) -> String {
    bluegreen_core::wording::human_ms(d.as_millis())
}

/// Keeps the last `n` non-empty lines of `text`.
pub(crate) fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join("\n")
}

/// The last non-empty line of `text`.
pub(crate) fn last_line(text: &str) -> String {
    last_lines(text, 1)
}

/// Wraps an `ssh2::Error` without exposing anything but libssh2's message.
pub(crate) struct SshMsg<'a>(pub &'a ssh2::Error);

impl fmt::Display for SshMsg<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.0;
        if matches!(e.code(), ssh2::ErrorCode::Session(-9)) {
            // LIBSSH2_ERROR_TIMEOUT
            write!(
                f,
                "timed out: the host stopped answering (ssh.connect_timeout) or the call ran past \
                 its bound (ssh.command_timeout and the step's own wait)"
            )
        } else {
            write!(f, "{}", e.message())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hk(port: u16, kind: HostKeyProblem) -> Error {
        Error::HostKey {
            host: "app1".into(),
            addr: "10.0.0.11".into(),
            port,
            key_type: "ssh-ed25519".into(),
            file: "/home/ci/.ssh/known_hosts".into(),
            kind: Box::new(kind),
        }
    }

    fn mismatch(file: &str) -> HostKeyProblem {
        HostKeyProblem::Mismatch {
            file: file.into(),
            line: 3,
        }
    }

    #[test]
    fn mismatch_names_host_key_type_and_file() {
        let m = hk(22, mismatch("/home/ci/.ssh/known_hosts")).to_string();
        assert_eq!(
            m,
            "app1: host key of 10.0.0.11 (ssh-ed25519) does not match the one recorded in /home/ci/.ssh/known_hosts:3: \
             someone may be intercepting the connection, or the host was reinstalled; if you know why the key changed, \
             remove the old entry with `ssh-keygen -R '10.0.0.11' -f /home/ci/.ssh/known_hosts` and add the new one"
        );
        let m = hk(2222, mismatch("/etc/ssh/ssh_known_hosts")).to_string();
        assert!(m.contains("recorded in /etc/ssh/ssh_known_hosts:3"), "{m}");
        assert!(
            m.contains("ssh-keygen -R '[10.0.0.11]:2222' -f /etc/ssh/ssh_known_hosts"),
            "{m}"
        );
    }

    #[test]
    fn unknown_key_says_how_to_add_it() {
        let m = hk(
            2222,
            HostKeyProblem::Unknown {
                global: "/etc/ssh/ssh_known_hosts".into(),
            },
        )
        .to_string();
        assert_eq!(
            m,
            "app1: host key of [10.0.0.11]:2222 (ssh-ed25519) is not in /home/ci/.ssh/known_hosts (nor in \
             /etc/ssh/ssh_known_hosts) and ssh.host_key_policy is strict; check the key out of band, then add it with \
             `ssh-keyscan -p 2222 -t ssh-ed25519 10.0.0.11 >> /home/ci/.ssh/known_hosts` (or set host_key_policy: accept-new)"
        );
    }

    #[test]
    fn other_type_revoked_and_cert_authority_messages() {
        let m = hk(
            22,
            HostKeyProblem::OtherType {
                pinned: vec!["ecdsa-sha2-nistp256".into(), "ssh-rsa".into()],
                file: "/etc/ssh/ssh_known_hosts".into(),
                line: 7,
            },
        )
        .to_string();
        assert_eq!(
            m,
            "app1: host key of 10.0.0.11 is ssh-ed25519, but only ecdsa-sha2-nistp256, ssh-rsa keys are recorded for it \
             (first in /etc/ssh/ssh_known_hosts:7) and the host offers none of those types: someone may be intercepting \
             the connection, or the host was reinstalled; if you know why its keys changed, remove the old entries with \
             `ssh-keygen -R '10.0.0.11' -f /etc/ssh/ssh_known_hosts` and add the new one"
        );
        let m = hk(
            22,
            HostKeyProblem::Revoked {
                file: "/home/ci/.ssh/known_hosts".into(),
                line: 2,
            },
        )
        .to_string();
        assert_eq!(
            m,
            "app1: host key of 10.0.0.11 (ssh-ed25519) is marked @revoked in /home/ci/.ssh/known_hosts:2: refusing to \
             connect whatever ssh.host_key_policy says; the host needs a new key, recorded once checked out of band"
        );
        let m = hk(
            2222,
            HostKeyProblem::CertAuthority {
                file: "/etc/ssh/ssh_known_hosts".into(),
                line: 1,
            },
        )
        .to_string();
        assert_eq!(
            m,
            "app1: [10.0.0.11]:2222 is covered only by the @cert-authority line /etc/ssh/ssh_known_hosts:1, but bluegreen \
             does not verify host certificates and no key of the host itself is recorded (not even with host_key_policy: \
             accept-new); check the host's ssh-ed25519 key out of band and record it: \
             `ssh-keyscan -p 2222 -t ssh-ed25519 10.0.0.11 >> /home/ci/.ssh/known_hosts`"
        );
        assert!(!m.ends_with('.'));
    }

    #[test]
    fn artifact_messages() {
        let none = Error::Artifact {
            pattern: "build/*.jar".into(),
            matches: vec![],
        };
        assert_eq!(
            none.to_string(),
            "artifact `build/*.jar` matched no file (build it first, or fix `artifact` in the config)"
        );
        let two = Error::Artifact {
            pattern: "build/*.jar".into(),
            matches: vec!["build/a.jar".into(), "build/b.jar".into()],
        };
        assert!(two
            .to_string()
            .contains("matched 2 files, expected exactly one: build/a.jar, build/b.jar"));
    }

    #[test]
    fn remote_and_health_messages() {
        let e = Error::Remote {
            host: "proxy".into(),
            step: "lock".into(),
            status: 1,
            stderr: "bluegreen: deploy lock /x/lock is held: holder=a@b\n".into(),
        };
        assert_eq!(
            e.to_string(),
            "proxy: lock failed (exit 1): bluegreen: deploy lock /x/lock is held: holder=a@b"
        );
        let e = Error::Health {
            host: "app2".into(),
            url: "http://10.0.0.12:8081/actuator/health".into(),
            last: "status 503".into(),
            deadline: Duration::from_secs(120),
        };
        assert_eq!(
            e.to_string(),
            "app2: not healthy after 2m00s at http://10.0.0.12:8081/actuator/health: last probe: status 503"
        );
    }

    #[test]
    fn check_message_hides_credentials() {
        let e = Error::Check {
            host: "proxy".into(),
            url: "http://user:secret@10.0.0.5/health?token=abc".into(),
            expected: 200,
            last: "status 401: bad token abc for user:secret".into(),
        };
        assert_eq!(
            e.to_string(),
            "proxy: check after the switch failed: GET http://***@10.0.0.5/health?token=*** expected 200, last: status 401: bad token *** for *** (switching traffic back to the previous slot)"
        );
    }

    #[test]
    fn helpers() {
        assert_eq!(human(Duration::from_millis(850)), "850ms");
        assert_eq!(human(Duration::from_millis(1234)), "1.23s");
        assert_eq!(human(Duration::from_secs(125)), "2m05s");
        assert_eq!(last_lines("a\n\nb\nc\nd\n", 2), "c\nd");
    }
}
