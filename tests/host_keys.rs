//! Host keys in `exec` with OpenSSH's semantics, against a real OpenSSH sshd: the testbed's proxy,
//! given ecdsa and rsa host keys besides its ed25519 one and a second port (2222). Each case runs
//! `bluegreen lock show` (it connects to the proxy only) with a known_hosts file of its own and a
//! global known_hosts file in a scratch directory (`BLUEGREEN_GLOBAL_KNOWN_HOSTS`), never the
//! machine's /etc/ssh.
//!
//! - the key type known_hosts pins is asked for first: an ecdsa pin of a host that also offers
//!   ed25519 connects (libssh2's default order asks for ed25519 and called it a mismatch);
//! - `@revoked` keys are refused, whatever else is recorded and with accept-new too;
//! - a host covered only by `@cert-authority` is refused, and accept-new adds nothing;
//! - `[host]:port` entries match only their port, port 22 also matches the plain name;
//! - the global file is read and never written; hashed names match.
//!
//! Needs root (the testbed): fails, never skips, without it.

use crate::testbed::{require_root, serial, Testbed};
use crate::util::{require, stderr, stdout, Cmd, TempDir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The testbed's proxy, offering ed25519, ecdsa and rsa host keys on ports 22 and 2222.
struct Proxy {
    tb: Testbed,
    dir: TempDir,
    addr: String,
}

/// What a run saw, and the known_hosts files after it.
struct Run {
    out: Output,
    user: String,
    global: String,
}

impl Run {
    fn text(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.out.status.code(),
            stdout(&self.out),
            stderr(&self.out)
        )
    }

    /// Asserts that the connection was accepted (`lock show` printed the free lock).
    fn connects(&self) -> &Run {
        assert!(
            self.out.status.success() && stdout(&self.out).contains("/lock: free"),
            "expected to connect:\n{}",
            self.text()
        );
        self
    }

    /// Asserts a refusal (exit 1) whose message holds every one of `words`.
    fn refused(&self, words: &[&str]) -> &Run {
        assert_eq!(self.out.status.code(), Some(1), "{}", self.text());
        let err = stderr(&self.out);
        for w in words {
            assert!(err.contains(w), "expected `{w}` in:\n{}", self.text());
        }
        self
    }
}

fn wait_port(addr: &str, port: u16) {
    let t = Instant::now();
    while std::net::TcpStream::connect((addr, port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "sshd on {addr}:{port} did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Proxy {
    fn up() -> Proxy {
        require_root();
        require("ssh-keyscan", "openssh-client");
        require("ssh-keygen", "openssh-client");
        let tb = Testbed::up(1);
        let addr = tb.var("PROXY_ADDR").to_string();
        tb.sh_ok(
            "proxy",
            &format!(
                "cd /etc/bgtb && ssh-keygen -q -t ecdsa -N '' -f ssh_host_ecdsa_key && \
                 ssh-keygen -q -t rsa -b 2048 -N '' -f ssh_host_rsa_key && \
                 printf 'HostKey /etc/bgtb/ssh_host_ecdsa_key\\nHostKey /etc/bgtb/ssh_host_rsa_key\\nListenAddress {addr}:2222\\n' >>sshd_config"
            ),
        );
        tb.script(&["sshd", &tb.name, "proxy", "stop"]);
        tb.script(&["sshd", &tb.name, "proxy", "start"]);
        wait_port(&addr, 22);
        wait_port(&addr, 2222);
        let p = Proxy {
            tb,
            dir: TempDir::new("hostkeys"),
            addr,
        };
        for port in [22, 2222] {
            let types: Vec<String> = p
                .scan(port, "ed25519,ecdsa,rsa", false)
                .iter()
                .map(|l| l.split_whitespace().nth(1).unwrap().to_string())
                .collect();
            assert_eq!(
                types,
                ["ecdsa-sha2-nistp256", "ssh-ed25519", "ssh-rsa"],
                "the sshd on port {port} offers all three key types"
            );
        }
        p
    }

    /// ssh-keyscan's lines for the proxy (`NAME TYPE BASE64`), sorted by type.
    fn scan(&self, port: u16, types: &str, hashed: bool) -> Vec<String> {
        let mut cmd = Command::new("ssh-keyscan");
        cmd.args(["-T", "5", "-p", &port.to_string(), "-t", types]);
        if hashed {
            cmd.arg("-H");
        }
        let out = cmd.arg(&self.addr).output().unwrap();
        let mut lines: Vec<String> = stdout(&out)
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(str::to_string)
            .collect();
        lines.sort_by_key(|l| l.split_whitespace().nth(1).unwrap_or("").to_string());
        assert!(!lines.is_empty(), "ssh-keyscan: {}", stderr(&out));
        lines
    }

    /// The one ssh-keyscan line of key type `t` (`ed25519`, `ecdsa`, `rsa`) at `port`.
    fn line(&self, port: u16, t: &str) -> String {
        let lines = self.scan(port, t, false);
        assert_eq!(lines.len(), 1, "{lines:?}");
        lines[0].clone()
    }

    /// `TYPE BASE64` of the host's key of type `t`.
    fn key(&self, t: &str) -> String {
        let line = self.line(22, t);
        line.split_once(' ').unwrap().1.to_string()
    }

    /// `TYPE BASE64` of a fresh key of type `t` (`ssh-keygen -t t`, `-b bits` when given): not the
    /// host's.
    fn other_key(&self, t: &str, bits: Option<&str>) -> String {
        let path = self
            .dir
            .path()
            .join(format!("other-{t}-{}", bits.unwrap_or("")));
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(path.with_extension("pub"));
        let mut cmd = Command::new("ssh-keygen");
        cmd.args(["-q", "-N", "", "-t", t]);
        if let Some(b) = bits {
            cmd.args(["-b", b]);
        }
        let out = cmd.arg("-f").arg(&path).output().unwrap();
        assert!(out.status.success(), "ssh-keygen: {}", stderr(&out));
        let text = std::fs::read_to_string(format!("{}.pub", path.display())).unwrap();
        let mut f = text.split_whitespace();
        format!("{} {}", f.next().unwrap(), f.next().unwrap())
    }

    fn user_file(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    fn global_file(&self) -> PathBuf {
        self.dir.path().join("ssh_known_hosts")
    }

    /// Runs `bluegreen lock show` on port `port` with `policy`, the user file holding `user` (no
    /// file at all when `None`) and the global file holding `global`.
    fn run(&self, port: u16, policy: &str, user: Option<&str>, global: &str) -> Run {
        let (uf, gf) = (self.user_file(), self.global_file());
        let _ = std::fs::remove_file(&uf);
        if let Some(text) = user {
            std::fs::write(&uf, text).unwrap();
        }
        std::fs::write(&gf, global).unwrap();
        let config = self
            .tb
            .config(Path::new("/nonexistent/demo.jar"), "30s", "");
        let from = format!("  known_hosts: {}\n", self.tb.var("KNOWN_HOSTS"));
        assert!(config.contains(&from), "{config}");
        let config = config.replacen(
            &from,
            &format!(
                "  known_hosts: {}\n  host_key_policy: {policy}\n  port: {port}\n",
                uf.display()
            ),
            1,
        );
        let wd = self.dir.path().join("wd");
        std::fs::create_dir_all(&wd).unwrap();
        std::fs::write(wd.join("bluegreen.yaml"), config).unwrap();
        let out = Cmd::bluegreen(&wd, &["lock", "show"])
            .env("BLUEGREEN_GLOBAL_KNOWN_HOSTS", &gf)
            .output();
        Run {
            out,
            user: std::fs::read_to_string(&uf).unwrap_or_else(|_| "<no file>".into()),
            global: std::fs::read_to_string(&gf).unwrap(),
        }
    }

    fn uf(&self) -> String {
        self.user_file().display().to_string()
    }

    fn gf(&self) -> String {
        self.global_file().display().to_string()
    }
}

#[test]
fn pinned_key_type_is_asked_for_first() {
    let _serial = serial();
    let p = Proxy::up();
    let a = &p.addr;
    // Only the ecdsa key is pinned; the host also offers ed25519, which libssh2 asks for first
    // unless told otherwise.
    let ecdsa = format!("{a} {}\n", p.key("ecdsa"));
    p.run(22, "strict", Some(&ecdsa), "").connects();
    let run = p.run(22, "accept-new", Some(&ecdsa), "");
    run.connects();
    assert_eq!(run.user, ecdsa, "accept-new adds nothing for a known host");
    // ssh-rsa pins are checked with rsa-sha2-* signatures.
    p.run(22, "strict", Some(&format!("{a} {}\n", p.key("rsa"))), "")
        .connects();
    p.run(
        22,
        "strict",
        Some(&format!("{a} {}\n", p.key("ed25519"))),
        "",
    )
    .connects();

    // Another key of a pinned type is a mismatch, naming the file and line.
    let stale = format!("# an old key\n{a} {}\n", p.other_key("ecdsa", Some("256")));
    let run = p.run(22, "accept-new", Some(&stale), "");
    run.refused(&[
        &format!(
            "host key of {a} (ecdsa-sha2-nistp256) does not match the one recorded in {}:2",
            p.uf()
        ),
        &format!("ssh-keygen -R '{a}' -f {}", p.uf()),
    ]);
    assert_eq!(run.user, stale, "the file is not modified");

    // A host offering none of the pinned types is refused, even with accept-new.
    let p384 = format!("{a} {}\n", p.other_key("ecdsa", Some("384")));
    let run = p.run(22, "accept-new", Some(&p384), "");
    run.refused(&[
        &format!("host key of {a} is ssh-ed25519, but only ecdsa-sha2-nistp384 keys are recorded for it (first in {}:1)", p.uf()),
        "the host offers none of those types",
    ]);
    assert_eq!(
        run.user, p384,
        "accept-new does not add a key of another type"
    );
}

#[test]
fn revoked_keys_are_refused() {
    let _serial = serial();
    let p = Proxy::up();
    let a = &p.addr;
    let ed = p.key("ed25519");
    let revoked = format!("{a} {ed}\n@revoked * {ed}\n");
    p.run(22, "strict", Some(&revoked), "").refused(&[&format!(
        "host key of {a} (ssh-ed25519) is marked @revoked in {}:2",
        p.uf()
    )]);
    // With nothing else recorded, accept-new does not trust it either.
    let only = format!("@revoked {a} {ed}\n");
    let run = p.run(22, "accept-new", Some(&only), "");
    run.refused(&[&format!("is marked @revoked in {}:1", p.uf())]);
    assert_eq!(run.user, only, "nothing is added");
    // Revoked in the global file, pinned in the user's: refused.
    p.run(
        22,
        "strict",
        Some(&format!("{a} {ed}\n")),
        &format!("# revocations\n@revoked 10.251.* {ed}\n"),
    )
    .refused(&[&format!("is marked @revoked in {}:2", p.gf())]);
    // Another key revoked, or this one for other hosts only: connects.
    let other = p.other_key("ed25519", None);
    p.run(
        22,
        "strict",
        Some(&format!(
            "{a} {ed}\n@revoked * {other}\n@revoked 192.0.2.1 {ed}\n"
        )),
        "",
    )
    .connects();
}

#[test]
fn cert_authority_alone_is_refused() {
    let _serial = serial();
    let p = Proxy::up();
    let a = &p.addr;
    let ca = format!(
        "@cert-authority *.example,10.251.* {}\n",
        p.other_key("ed25519", None)
    );
    let words = [
        format!(
            "{a} is covered only by the @cert-authority line {}:1, but bluegreen does not verify host certificates",
            p.uf()
        ),
        format!("ssh-keyscan -p 22 -t ssh-ed25519 {a} >> {}", p.uf()),
    ];
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    p.run(22, "strict", Some(&ca), "").refused(&words);
    let run = p.run(22, "accept-new", Some(&ca), "");
    run.refused(&words);
    assert_eq!(run.user, ca, "accept-new adds no key for a host under a CA");
    // The CA in the global file: the user file, where the key belongs, is not created.
    let run = p.run(22, "accept-new", None, &ca);
    run.refused(&[&format!("the @cert-authority line {}:1", p.gf())]);
    assert_eq!(run.user, "<no file>");
    assert_eq!(run.global, ca);
    // With the host's own key pinned as well, the CA line does not matter.
    let both = format!("{ca}{a} {}\n", p.key("ecdsa"));
    p.run(22, "strict", Some(&both), "").connects();
}

#[test]
fn host_port_entries_match_exactly() {
    let _serial = serial();
    let p = Proxy::up();
    let a = &p.addr;
    let ed = p.key("ed25519");
    // An entry for port 2222 is not one for port 22, and the plain name is not one for 2222.
    p.run(22, "strict", Some(&format!("[{a}]:2222 {ed}\n")), "")
        .refused(&[&format!(
            "host key of {a} (ssh-ed25519) is not in {} (nor in {})",
            p.uf(),
            p.gf()
        )]);
    p.run(2222, "strict", Some(&format!("{a} {ed}\n")), "")
        .refused(&[&format!(
            "host key of [{a}]:2222 (ssh-ed25519) is not in {}",
            p.uf()
        )]);
    p.run(2222, "strict", Some(&format!("[{a}]:22 {ed}\n")), "")
        .refused(&["is not in"]);
    p.run(2222, "strict", Some(&format!("[{a}]:2222 {ed}\n")), "")
        .connects();
    p.run(22, "strict", Some(&format!("[{a}]:22 {ed}\n")), "")
        .connects();
    // accept-new records `[host]:port` for 2222 and the plain name for 22, as ssh-keyscan does.
    let run = p.run(2222, "accept-new", Some(""), "");
    run.connects();
    assert_eq!(run.user, format!("{}\n", p.line(2222, "ed25519")));
    let run = p.run(22, "accept-new", None, "");
    run.connects();
    assert_eq!(run.user, format!("{}\n", p.line(22, "ed25519")));
    assert_eq!(run.user, format!("{a} {ed}\n"));
    // Lists, wildcards and negation.
    p.run(22, "strict", Some(&format!("other.example,{a} {ed}\n")), "")
        .connects();
    p.run(22, "strict", Some(&format!("10.251.*.? {ed}\n")), "")
        .connects();
    p.run(2222, "strict", Some(&format!("[10.251.*]:2222 {ed}\n")), "")
        .connects();
    p.run(22, "strict", Some(&format!("10.251.*,!{a} {ed}\n")), "")
        .refused(&["is not in"]);
}

#[test]
fn global_file_is_read_and_never_written() {
    let _serial = serial();
    let p = Proxy::up();
    let a = &p.addr;
    let ed = format!("{a} {}\n", p.key("ed25519"));
    // Known from the global file only (no user file at all).
    let run = p.run(22, "strict", None, &ed);
    run.connects();
    assert_eq!(run.user, "<no file>");
    let run = p.run(22, "accept-new", Some(""), &ed);
    run.connects();
    assert_eq!(run.user, "", "a key known globally is not added");
    // A stale key in the global file is a mismatch there.
    let stale = format!("{a} {}\n", p.other_key("ed25519", None));
    p.run(22, "accept-new", Some(""), &stale).refused(&[
        &format!("does not match the one recorded in {}:1", p.gf()),
        &format!("ssh-keygen -R '{a}' -f {}", p.gf()),
    ]);
    // Unknown to both: accept-new writes to the user file only.
    let run = p.run(22, "accept-new", None, "# nothing here\n");
    run.connects();
    assert_eq!(run.user, ed);
    assert_eq!(run.global, "# nothing here\n");
}

#[test]
fn hashed_entries_match() {
    let _serial = serial();
    let p = Proxy::up();
    let hashed22 = format!("{}\n", p.scan(22, "ecdsa", true).join("\n"));
    let hashed2222 = format!("{}\n", p.scan(2222, "ecdsa", true).join("\n"));
    assert!(hashed22.starts_with("|1|"), "{hashed22}");
    assert!(!hashed22.contains(&p.addr), "{hashed22}");
    // Hashed ecdsa pins, while the host also offers ed25519.
    p.run(22, "strict", Some(&hashed22), "").connects();
    p.run(2222, "strict", Some(&hashed2222), "").connects();
    p.run(2222, "strict", None, &hashed2222).connects();
    // A hashed name is one host and port.
    p.run(22, "strict", Some(&hashed2222), "")
        .refused(&["is not in"]);
    p.run(2222, "strict", Some(&hashed22), "")
        .refused(&["is not in"]);
}
