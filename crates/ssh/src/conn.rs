//! SSH connections: one libssh2 session per host, owned by its own worker thread.
//!
//! A libssh2 `Session` serializes every call behind one lock, so a slow call on one host must not hold
//! up another: each host gets a thread that connects, checks the host key, authenticates, then runs
//! the jobs it is sent (remote calls, uploads) one after another.

use crate::error::{known_hosts_name, Error, HostKeyProblem, SshMsg};
use crate::known_hosts::{self, Verdict};
use crate::shell::Remote;
use bluegreen_core::config::HostKeyPolicy;
use sha2::{Digest, Sha256};
use ssh2::{HostKeyType, MethodType, Session};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// SFTP write size: a multiple of libssh2's 30,000-byte packet payload, about 1 MiB.
pub(crate) const CHUNK: usize = 30_000 * 35;

/// Serializes changes to known_hosts files between host threads.
static KNOWN_HOSTS_WRITE: Mutex<()> = Mutex::new(());

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Host id.
    pub id: String,
    /// Address as written (resolved), also the known_hosts name.
    pub addr: String,
    /// SSH port.
    pub port: u16,
    /// SSH user.
    pub user: String,
}

/// OpenSSH's GlobalKnownHostsFile: read after `ssh.known_hosts`, never written.
pub(crate) const GLOBAL_KNOWN_HOSTS: &str = "/etc/ssh/ssh_known_hosts";

/// Names another file to read instead of [`GLOBAL_KNOWN_HOSTS`] (tests, or a machine keeping it
/// elsewhere).
pub(crate) const GLOBAL_KNOWN_HOSTS_ENV: &str = "BLUEGREEN_GLOBAL_KNOWN_HOSTS";

/// The global known_hosts file: `$BLUEGREEN_GLOBAL_KNOWN_HOSTS` when set and not empty, else
/// [`GLOBAL_KNOWN_HOSTS`].
pub(crate) fn global_known_hosts(env: &crate::EnvLookup) -> PathBuf {
    PathBuf::from(
        env(GLOBAL_KNOWN_HOSTS_ENV)
            .filter(|p| !p.trim().is_empty())
            .unwrap_or_else(|| GLOBAL_KNOWN_HOSTS.to_string()),
    )
}

/// Settings shared by every connection.
pub(crate) struct Settings {
    /// The user's known_hosts file (`ssh.known_hosts`): read first, `accept-new` adds keys to it.
    pub known_hosts: PathBuf,
    /// The global known_hosts file, read after it and never written (see [`global_known_hosts`]).
    pub global_known_hosts: PathBuf,
    pub policy: HostKeyPolicy,
    pub identity: Option<PathBuf>,
    /// Never shown anywhere.
    pub passphrase: Option<String>,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
}

/// What a successful connection reports.
#[derive(Debug)]
pub(crate) struct Connected {
    /// `key type, how the key was checked; how we authenticated`.
    pub message: String,
    /// A warning to show (host key checking off, key added).
    pub warning: Option<String>,
}

/// The result of one remote call.
#[derive(Debug, Clone)]
pub(crate) struct Output {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// The output of a call that exited 0, or [`Error::Remote`] with the last lines of its stderr.
    pub fn success(self, host: &str, step: &str) -> Result<Output, crate::Error> {
        if self.status == 0 {
            return Ok(self);
        }
        Err(crate::Error::Remote {
            host: host.to_string(),
            step: step.to_string(),
            status: self.status,
            stderr: crate::error::last_lines(&self.stderr, 5),
        })
    }
}

type Job = Box<dyn FnOnce(&mut Remote) + Send>;

/// A host's worker thread.
pub(crate) struct Worker {
    pub id: String,
    tx: Option<Sender<Job>>,
    handle: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts a thread that connects to `target`; the receiver gets the outcome of the connection.
    pub fn spawn(
        target: Target,
        settings: Arc<Settings>,
    ) -> (Worker, Receiver<Result<Connected, Error>>) {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ctx, crx) = mpsc::channel();
        let id = target.id.clone();
        let handle = std::thread::Builder::new()
            .name(format!("bluegreen-{}", target.id))
            .spawn(move || {
                let mut remote = match connect(&target, &settings) {
                    Ok((sess, info)) => {
                        let mut remote = Remote::new(sess);
                        // The library is read while the other hosts still connect.
                        remote.warm();
                        let _ = ctx.send(Ok(info));
                        remote
                    }
                    Err(e) => {
                        let _ = ctx.send(Err(e));
                        return;
                    }
                };
                for job in rx {
                    job(&mut remote);
                }
                let _ = remote.sess.disconnect(None, "deploy finished", None);
            })
            .ok();
        (
            Worker {
                id,
                tx: Some(tx),
                handle,
            },
            crx,
        )
    }

    /// Runs `f` on the host's connection and waits for its result.
    pub fn run<T: Send + 'static>(
        &self,
        step: &str,
        f: impl FnOnce(&mut Remote) -> T + Send + 'static,
    ) -> Result<T, Error> {
        let (rtx, rrx) = mpsc::channel();
        let gone = || Error::Ssh {
            host: self.id.clone(),
            step: step.to_string(),
            message: "the connection is gone".into(),
        };
        self.tx
            .as_ref()
            .ok_or_else(gone)?
            .send(Box::new(move |r: &mut Remote| {
                let _ = rtx.send(f(r));
            }))
            .map_err(|_| gone())?;
        rrx.recv().map_err(|_| gone())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn connect_err(t: &Target, message: impl Into<String>) -> Error {
    Error::Connect {
        host: t.id.clone(),
        addr: format!("{}:{}", t.addr, t.port),
        message: message.into(),
    }
}

fn millis_u32(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1)
}

/// Connects, checks the host key and authenticates.
pub(crate) fn connect(t: &Target, s: &Settings) -> Result<(Session, Connected), Error> {
    let addrs: Vec<_> = (t.addr.as_str(), t.port)
        .to_socket_addrs()
        .map_err(|e| connect_err(t, format!("cannot resolve the address: {e}")))?
        .collect();
    let mut last = String::from("the address resolves to nothing");
    let mut tcp = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, s.connect_timeout) {
            Ok(c) => {
                tcp = Some(c);
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                last = format!(
                    "no answer within {}s (ssh.connect_timeout)",
                    s.connect_timeout.as_secs()
                );
            }
            Err(e) => last = e.to_string(),
        }
    }
    let tcp = tcp.ok_or_else(|| connect_err(t, last))?;
    let _ = tcp.set_nodelay(true);
    watch_liveness(&tcp, s.connect_timeout);
    let mut sess = Session::new().map_err(|e| connect_err(t, SshMsg(&e).to_string()))?;
    // The handshake is bounded by the connect timeout, everything after it by the command timeout.
    sess.set_timeout(millis_u32(s.connect_timeout));
    sess.set_tcp_stream(tcp);
    prefer_host_keys(&sess, t, s)?;
    sess.handshake()
        .map_err(|e| connect_err(t, format!("ssh handshake failed: {}", SshMsg(&e))))?;
    sess.set_timeout(millis_u32(s.command_timeout));
    // No libssh2 keepalive: in blocking mode a read still waiting when a keepalive falls due fails
    // with LIBSSH2_ERROR_TIMEOUT (`_libssh2_wait_socket` polls only until then), so any call longer
    // than the interval would fail. The socket's own liveness check (above) replaces it.
    let (key_note, warning) = check_host_key(&sess, t, s)?;
    let auth_note = authenticate(&sess, t, s)?;
    Ok((
        sess,
        Connected {
            message: format!("{}@{}:{} ({key_note}, {auth_note})", t.user, t.addr, t.port),
            warning,
        },
    ))
}

/// Makes the kernel detect a dead peer within about `within`: TCP keepalive probes while the
/// connection is idle (a call waiting for a slow remote command), and `TCP_USER_TIMEOUT` while data
/// is unacknowledged (an upload into a cut link). Either closes the socket, which fails the call
/// that waits on it, however long that call is allowed to take. The probes also keep NAT and
/// firewall state alive, as SSH keepalives would.
fn watch_liveness(tcp: &TcpStream, within: Duration) {
    let sock = socket2::SockRef::from(tcp);
    let idle = (within / 2).max(Duration::from_secs(1));
    let probes = socket2::TcpKeepalive::new()
        .with_time(idle)
        .with_interval(Duration::from_secs(1))
        .with_retries(u32::try_from(within.as_secs().max(2) / 2).unwrap_or(5));
    // Best effort: a kernel without these options still has the session timeout.
    let _ = sock.set_tcp_keepalive(&probes);
    let _ = sock.set_tcp_user_timeout(Some(within.max(Duration::from_secs(2))));
}

/// The OpenSSH name of a host key type.
pub(crate) fn key_type_name(t: HostKeyType) -> &'static str {
    match t {
        HostKeyType::Rsa => "ssh-rsa",
        HostKeyType::Dss => "ssh-dss",
        HostKeyType::Ecdsa256 => "ecdsa-sha2-nistp256",
        HostKeyType::Ecdsa384 => "ecdsa-sha2-nistp384",
        HostKeyType::Ecdsa521 => "ecdsa-sha2-nistp521",
        HostKeyType::Ed25519 => "ssh-ed25519",
        HostKeyType::Unknown => "unknown",
    }
}

/// `SHA256:...` as OpenSSH prints it.
pub(crate) fn fingerprint(key: &[u8]) -> String {
    format!("SHA256:{}", base64_nopad(&Sha256::digest(key)))
}

fn base64_nopad(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// The user's known_hosts file, then the global one, parsed (a file that does not exist is empty).
fn load_known_hosts(s: &Settings) -> Result<Vec<known_hosts::File>, Error> {
    let mut paths = vec![&s.known_hosts];
    if s.global_known_hosts != s.known_hosts {
        paths.push(&s.global_known_hosts);
    }
    paths
        .into_iter()
        .map(|path| {
            known_hosts::File::load(path).map_err(|source| Error::Io {
                what: "cannot read known_hosts file".into(),
                path: path.clone(),
                source,
            })
        })
        .collect()
}

/// Before the handshake: asks for the host key algorithms of the key types known_hosts records for
/// this host first, then for the rest of what libssh2 supports, as OpenSSH does. A host recorded
/// with its ecdsa key that also has an ed25519 one is then checked against its ecdsa key rather
/// than looking changed. Host certificates are never asked for: bluegreen does not verify them.
fn prefer_host_keys(sess: &Session, t: &Target, s: &Settings) -> Result<(), Error> {
    let pinned = if s.policy == HostKeyPolicy::Off {
        Vec::new()
    } else {
        let names = known_hosts::host_names(&t.addr, t.port);
        known_hosts::pinned_types(&load_known_hosts(s)?, &names)
    };
    let supported = sess.supported_algs(MethodType::HostKey).map_err(|e| {
        connect_err(
            t,
            format!("cannot list libssh2's host key algorithms: {}", SshMsg(&e)),
        )
    })?;
    let prefs = known_hosts::host_key_prefs(&pinned, &supported);
    if prefs.is_empty() {
        return Ok(());
    }
    sess.method_pref(MethodType::HostKey, &prefs).map_err(|e| {
        connect_err(
            t,
            format!("cannot set the host key algorithms {prefs}: {}", SshMsg(&e)),
        )
    })
}

/// Applies the host key policy to the key the host offered, with both known_hosts files (see
/// [`known_hosts::check`]). Returns a note for the connect event and a warning, if any.
fn check_host_key(
    sess: &Session,
    t: &Target,
    s: &Settings,
) -> Result<(String, Option<String>), Error> {
    let (key, ktype) = sess
        .host_key()
        .ok_or_else(|| connect_err(t, "the server sent no host key"))?;
    let type_name = known_hosts::blob_type(key)
        .unwrap_or(key_type_name(ktype))
        .to_string();
    let fp = fingerprint(key);
    if s.policy == HostKeyPolicy::Off {
        return Ok((
            format!("{type_name} key not checked"),
            Some(format!(
                "host key checking is off (ssh.host_key_policy: off): {type_name} key {fp} accepted unverified"
            )),
        ));
    }
    let names = known_hosts::host_names(&t.addr, t.port);
    let problem = |kind| Error::HostKey {
        host: t.id.clone(),
        addr: t.addr.clone(),
        port: t.port,
        key_type: type_name.clone(),
        file: s.known_hosts.clone(),
        kind: Box::new(kind),
    };
    // Ok(true): the key is known; Ok(false): nothing is recorded for the host.
    let check = || -> Result<bool, Error> {
        match known_hosts::check(&load_known_hosts(s)?, &names, key) {
            Verdict::Known(_) => Ok(true),
            Verdict::Unknown => Ok(false),
            Verdict::Revoked(at) => Err(problem(HostKeyProblem::Revoked {
                file: at.file,
                line: at.line,
            })),
            Verdict::Mismatch(at) => Err(problem(HostKeyProblem::Mismatch {
                file: at.file,
                line: at.line,
            })),
            Verdict::OtherTypes { pinned, at } => Err(problem(HostKeyProblem::OtherType {
                pinned,
                file: at.file,
                line: at.line,
            })),
            Verdict::CertAuthority(at) => Err(problem(HostKeyProblem::CertAuthority {
                file: at.file,
                line: at.line,
            })),
        }
    };
    let known = || Ok((format!("{type_name} key known"), None));
    if check()? {
        return known();
    }
    if s.policy == HostKeyPolicy::Strict {
        return Err(problem(HostKeyProblem::Unknown {
            global: s.global_known_hosts.clone(),
        }));
    }
    let _guard = KNOWN_HOSTS_WRITE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Another thread may have added it (two host ids, one address) while we waited.
    if check()? {
        return known();
    }
    let name = known_hosts_name(&t.addr, t.port);
    let line = known_hosts::entry_line(&name, key).ok_or_else(|| {
        connect_err(
            t,
            "cannot record the host key: it does not start with its type",
        )
    })?;
    append_line(&s.known_hosts, &line).map_err(|source| Error::Io {
        what: "cannot add the host key to".into(),
        path: s.known_hosts.clone(),
        source,
    })?;
    Ok((
        format!("{type_name} key added"),
        Some(format!(
            "added {type_name} key {fp} of {name} to {} (host_key_policy: accept-new)",
            s.known_hosts.display()
        )),
    ))
}

fn append_line(file: &Path, line: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
    }
    let needs_newline = std::fs::read(file)
        .map(|b| !b.is_empty() && !b.ends_with(b"\n"))
        .unwrap_or(false);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(file)?;
    let mut text = String::new();
    if needs_newline {
        text.push('\n');
    }
    text.push_str(line.trim_end());
    text.push('\n');
    f.write_all(text.as_bytes())
}

/// Authenticates with the identity file, or with every identity of ssh-agent.
fn authenticate(sess: &Session, t: &Target, s: &Settings) -> Result<String, Error> {
    let fail = |message: String| Error::Auth {
        host: t.id.clone(),
        user: t.user.clone(),
        message,
    };
    if let Some(path) = &s.identity {
        if !path.exists() {
            return Err(fail(format!(
                "identity file {} does not exist (ssh.identity_file)",
                path.display()
            )));
        }
        return match sess.userauth_pubkey_file(&t.user, None, path, s.passphrase.as_deref()) {
            Ok(()) if sess.authenticated() => Ok(format!("key {}", path.display())),
            Ok(()) => Err(fail(format!("key {} was not accepted", path.display()))),
            Err(e) => {
                let hint = if s.passphrase.is_none() {
                    " (if the key has a passphrase, set BLUEGREEN_SSH_PASSPHRASE)"
                } else {
                    ""
                };
                Err(fail(format!(
                    "key {} was refused: {}{hint}",
                    path.display(),
                    SshMsg(&e)
                )))
            }
        };
    }
    let mut agent = sess
        .agent()
        .map_err(|e| fail(format!("cannot use ssh-agent: {}", SshMsg(&e))))?;
    agent.connect().map_err(|e| {
        fail(format!(
            "no ssh.identity_file is configured and ssh-agent is not reachable ({}; is SSH_AUTH_SOCK set?)",
            SshMsg(&e)
        ))
    })?;
    agent
        .list_identities()
        .map_err(|e| fail(format!("cannot list ssh-agent identities: {}", SshMsg(&e))))?;
    let ids = agent
        .identities()
        .map_err(|e| fail(format!("cannot list ssh-agent identities: {}", SshMsg(&e))))?;
    if ids.is_empty() {
        return Err(fail("ssh-agent holds no identities (ssh-add one)".into()));
    }
    for id in &ids {
        if agent.userauth(&t.user, id).is_ok() && sess.authenticated() {
            let _ = agent.disconnect();
            return Ok(format!("ssh-agent key {}", id.comment()));
        }
    }
    let _ = agent.disconnect();
    Err(fail(format!(
        "none of the {} ssh-agent identities was accepted",
        ids.len()
    )))
}

/// Uploads `local` to `remote` over SFTP in [`CHUNK`]-sized writes, never holding more than one
/// chunk in memory. Stops early when `stop` turns true. Returns bytes sent and time taken.
pub(crate) fn upload(
    sess: &Session,
    local: &Path,
    remote: &Path,
    stop: &dyn Fn() -> bool,
) -> Result<(u64, Duration), String> {
    let e = |e: ssh2::Error| SshMsg(&e).to_string();
    let t0 = Instant::now();
    let mut src = std::fs::File::open(local)
        .map_err(|err| format!("cannot read {}: {err}", local.display()))?;
    let sftp = sess.sftp().map_err(|err| format!("sftp: {}", e(err)))?;
    let mut dst = sftp
        .create(remote)
        .map_err(|err| format!("cannot create {}: {}", remote.display(), e(err)))?;
    let mut buf = vec![0u8; CHUNK];
    let mut sent = 0u64;
    loop {
        if stop() {
            return Err("upload cancelled".into());
        }
        let n = read_full(&mut src, &mut buf)
            .map_err(|err| format!("cannot read {}: {err}", local.display()))?;
        if n == 0 {
            break;
        }
        dst.write_all(&buf[..n])
            .map_err(|err| format!("writing {}: {err}", remote.display()))?;
        sent += n as u64;
    }
    dst.close()
        .map_err(|err| format!("closing {}: {}", remote.display(), e(err)))?;
    Ok((sent, t0.elapsed()))
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Whether a stop was requested.
pub(crate) fn flag(f: &AtomicBool) -> bool {
    f.load(Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(base64_nopad(b""), "");
        assert_eq!(base64_nopad(b"f"), "Zg");
        assert_eq!(base64_nopad(b"fo"), "Zm8");
        assert_eq!(base64_nopad(b"foo"), "Zm9v");
        assert_eq!(base64_nopad(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn global_known_hosts_can_be_overridden() {
        let default = PathBuf::from("/etc/ssh/ssh_known_hosts");
        assert_eq!(global_known_hosts(&|_: &str| None), default);
        let set = |n: &str| (n == "BLUEGREEN_GLOBAL_KNOWN_HOSTS").then(|| "/tmp/kh".to_string());
        assert_eq!(global_known_hosts(&set), PathBuf::from("/tmp/kh"));
        assert_eq!(global_known_hosts(&|_: &str| Some(" ".into())), default);
    }

    #[test]
    fn appends_known_hosts_lines() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub/known_hosts");
        append_line(&file, "a ssh-ed25519 AAAA").unwrap();
        std::fs::write(&file, "a ssh-ed25519 AAAA").unwrap();
        append_line(&file, "[b]:2222 ssh-ed25519 BBBB\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "a ssh-ed25519 AAAA\n[b]:2222 ssh-ed25519 BBBB\n"
        );
    }
}
