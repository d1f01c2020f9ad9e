//! Continuous HTTP load through nginx during a deploy, counting every failure by kind.
//!
//! Zero downtime is measured, never assumed: this client sends requests without pause from several
//! threads and classifies each outcome (connect error, reset, timeout, HTTP 5xx, wrong version). It
//! speaks just enough HTTP/1.1 over a plain `TcpStream` on purpose: general-purpose clients retry
//! idempotent requests on a reset keep-alive connection and so hide exactly the failures this tool
//! exists to count. Retrying once, as browsers do, is an explicit option whose saves are counted apart.
//!
//! Optional slow workers request a slow path (the demo app's `/slow?ms=1500`) instead, so that some
//! requests are always in flight, through a switch and a stop; each is counted like any other
//! request (a slow request that fails is a failure), and apart as well (`slow_ok`, `slow_failed`).
//!
//! ```no_run
//! use bluegreen_loadgen::{Load, Mode, Options};
//! let load = Load::start(Options::new("127.0.0.1:80".parse().unwrap(), Mode::KeepAlive));
//! std::thread::sleep(std::time::Duration::from_secs(1));
//! let counts = load.stop();
//! assert_eq!(counts.failures(), 0);
//! ```

use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How connections are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// A new TCP connection per request (`Connection: close`).
    NewConnection,
    /// One persistent connection per worker, reconnecting after a failure.
    KeepAlive,
}

/// What to load and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// nginx's address.
    pub addr: SocketAddr,
    /// Path requested; the answer's `X-App-Version` header (or body) names the version.
    pub path: String,
    /// Connection use.
    pub mode: Mode,
    /// Concurrent workers.
    pub workers: usize,
    /// Connect, read and write timeout.
    pub timeout: Duration,
    /// Retry a request once on a fresh connection when a reused keep-alive connection was reset
    /// before any byte of the answer arrived (what browsers do for idempotent requests).
    pub retry_reset: bool,
    /// Workers, besides `workers`, that request `slow_path` instead of `path`, one request after
    /// another: each keeps a request in flight nearly all the time.
    pub slow_workers: usize,
    /// Path the slow workers request; its answer must arrive within `timeout`.
    pub slow_path: String,
}

impl Options {
    /// Defaults: `/version`, 4 workers, 5 s timeout, no retry.
    pub fn new(addr: SocketAddr, mode: Mode) -> Options {
        Options {
            addr,
            path: "/version".into(),
            mode,
            workers: 4,
            timeout: Duration::from_secs(5),
            retry_reset: false,
            slow_workers: 0,
            slow_path: "/slow?ms=1500".into(),
        }
    }

    /// Adds `workers` slow workers requesting `/slow?ms=MS` (the demo app's slow endpoint).
    pub fn with_slow(mut self, workers: usize, ms: u64) -> Options {
        self.slow_workers = workers;
        self.slow_path = format!("/slow?ms={ms}");
        self
    }
}

/// Outcomes, counted.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    /// Requests answered 200 with an allowed version.
    pub ok: u64,
    /// TCP connect failed (refused, unreachable).
    pub connect_error: u64,
    /// The connection was reset or closed before a whole answer arrived.
    pub reset: u64,
    /// No answer within the timeout.
    pub timeout: u64,
    /// 5xx answers.
    pub http_5xx: u64,
    /// Other non-200 answers.
    pub http_other: u64,
    /// 200 answers from a version not allowed at that moment.
    pub wrong_version: u64,
    /// Resets on reused keep-alive connections that one retry turned into a good answer.
    pub reset_retried_ok: u64,
    /// Good answers to slow requests (also counted in `ok`).
    pub slow_ok: u64,
    /// Failed slow requests (also counted in their kind of failure).
    pub slow_failed: u64,
    /// The most slow requests that were in flight at once.
    pub slow_max_in_flight: u64,
    /// Good answers per version.
    pub versions: BTreeMap<String, u64>,
    /// Milliseconds from the start to the first good answer of each version.
    pub first_seen_ms: BTreeMap<String, u64>,
    /// Milliseconds from the start to the last good answer of each version.
    pub last_seen_ms: BTreeMap<String, u64>,
    /// The first few failures, described.
    pub samples: Vec<String>,
}

impl Counts {
    /// Every failed request, of any kind.
    pub fn failures(&self) -> u64 {
        self.connect_error
            + self.reset
            + self.timeout
            + self.http_5xx
            + self.http_other
            + self.wrong_version
    }

    /// Failures other than resets of idle keep-alive connections, i.e. HTTP-level errors.
    pub fn http_errors(&self) -> u64 {
        self.http_5xx + self.http_other + self.wrong_version
    }

    /// All requests sent.
    pub fn total(&self) -> u64 {
        self.ok + self.failures()
    }

    /// One line for a person.
    pub fn line(&self) -> String {
        let versions: Vec<String> = self
            .versions
            .iter()
            .map(|(v, n)| format!("{v}:{n}"))
            .collect();
        let slow = if self.slow_ok + self.slow_failed > 0 {
            format!(
                "; slow ok {} failed {} (at most {} in flight)",
                self.slow_ok, self.slow_failed, self.slow_max_in_flight
            )
        } else {
            String::new()
        };
        format!(
            "requests {} ok {} failed {} (connect {}, reset {}, timeout {}, 5xx {}, other {}, wrong version {}; retried ok {}) versions [{}]{slow}",
            self.total(),
            self.ok,
            self.failures(),
            self.connect_error,
            self.reset,
            self.timeout,
            self.http_5xx,
            self.http_other,
            self.wrong_version,
            self.reset_retried_ok,
            versions.join(" ")
        )
    }
}

enum Outcome {
    Ok(String),
    Connect(io::Error),
    /// Reset before any byte of the answer; `reused` tells whether the connection had served before.
    Reset {
        reused: bool,
        err: String,
    },
    Timeout,
    Status(u16, String),
}

/// A running load.
pub struct Load {
    stop: Arc<AtomicBool>,
    counts: Arc<Mutex<Counts>>,
    allowed: Arc<RwLock<Vec<String>>>,
    slow_in_flight: Arc<AtomicU64>,
    workers: Vec<JoinHandle<()>>,
}

/// What one worker requests.
struct Job<'a> {
    path: &'a str,
    /// Slow requests in flight, when this is a slow worker.
    slow: Option<&'a AtomicU64>,
}

impl Load {
    /// Starts the workers.
    pub fn start(opts: Options) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Mutex::new(Counts::default()));
        let allowed = Arc::new(RwLock::new(Vec::new()));
        let slow_in_flight = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let fast = (0..opts.workers.max(1)).map(|_| false);
        let slow = (0..opts.slow_workers).map(|_| true);
        let workers = fast
            .chain(slow)
            .map(|is_slow| {
                let (stop, counts, allowed, opts, in_flight) = (
                    stop.clone(),
                    counts.clone(),
                    allowed.clone(),
                    opts.clone(),
                    slow_in_flight.clone(),
                );
                std::thread::spawn(move || {
                    let job = Job {
                        path: if is_slow { &opts.slow_path } else { &opts.path },
                        slow: is_slow.then_some(&*in_flight),
                    };
                    worker(&opts, &job, &stop, &counts, &allowed, started)
                })
            })
            .collect();
        Load {
            stop,
            counts,
            allowed,
            slow_in_flight,
            workers,
        }
    }

    /// How many slow requests are in flight right now.
    pub fn slow_in_flight(&self) -> u64 {
        self.slow_in_flight.load(Ordering::SeqCst)
    }

    /// Sets the versions a good answer may come from (empty: any).
    pub fn allow(&self, versions: &[&str]) {
        if let Ok(mut a) = self.allowed.write() {
            *a = versions.iter().map(|v| v.to_string()).collect();
        }
    }

    /// The counts so far.
    pub fn snapshot(&self) -> Counts {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Stops the workers and returns the final counts.
    pub fn stop(self) -> Counts {
        self.stop.store(true, Ordering::SeqCst);
        for w in self.workers {
            let _ = w.join();
        }
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

fn worker(
    opts: &Options,
    job: &Job,
    stop: &AtomicBool,
    counts: &Mutex<Counts>,
    allowed: &RwLock<Vec<String>>,
    started: Instant,
) {
    let mut conn: Option<(BufReader<TcpStream>, bool)> = None;
    while !stop.load(Ordering::SeqCst) {
        let in_flight = job.slow.map(|n| n.fetch_add(1, Ordering::SeqCst) + 1);
        if let (Some(n), Ok(mut c)) = (in_flight, counts.lock()) {
            c.slow_max_in_flight = c.slow_max_in_flight.max(n);
        }
        let mut outcome = request(opts, job.path, &mut conn);
        let mut retried = false;
        if opts.retry_reset {
            if let Outcome::Reset { reused: true, .. } = outcome {
                retried = true;
                outcome = request(opts, job.path, &mut conn);
            }
        }
        if let Some(n) = job.slow {
            n.fetch_sub(1, Ordering::SeqCst);
        }
        let now_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let Ok(mut c) = counts.lock() else { return };
        let (failures_before, samples_before) = (c.failures(), c.samples.len());
        match outcome {
            Outcome::Ok(version) => {
                let ok = allowed
                    .read()
                    .map(|a| a.is_empty() || a.contains(&version))
                    .unwrap_or(true);
                if ok {
                    c.ok += 1;
                    if retried {
                        c.reset_retried_ok += 1;
                    }
                    *c.versions.entry(version.clone()).or_default() += 1;
                    c.first_seen_ms.entry(version.clone()).or_insert(now_ms);
                    c.last_seen_ms.insert(version, now_ms);
                } else {
                    c.wrong_version += 1;
                    sample(&mut c, now_ms, format!("wrong version {version}"));
                }
            }
            Outcome::Connect(e) => {
                c.connect_error += 1;
                sample(&mut c, now_ms, format!("connect: {e}"));
            }
            Outcome::Reset { reused, err } => {
                c.reset += 1;
                sample(&mut c, now_ms, format!("reset (reused: {reused}): {err}"));
            }
            Outcome::Timeout => {
                c.timeout += 1;
                sample(&mut c, now_ms, "timeout".into());
            }
            Outcome::Status(s, body) => {
                if s >= 500 {
                    c.http_5xx += 1;
                } else {
                    c.http_other += 1;
                }
                sample(&mut c, now_ms, format!("HTTP {s}: {}", body.trim()));
            }
        }
        if job.slow.is_some() {
            if c.failures() > failures_before {
                c.slow_failed += 1;
                if c.samples.len() > samples_before {
                    if let Some(last) = c.samples.last_mut() {
                        last.push_str(&format!(" (slow request {})", job.path));
                    }
                }
            } else {
                c.slow_ok += 1;
            }
        }
    }
}

fn sample(c: &mut Counts, ms: u64, what: String) {
    if c.samples.len() < 20 {
        c.samples.push(format!("{ms}ms {what}"));
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// One request of `path`; `conn` holds the keep-alive connection between calls.
fn request(opts: &Options, path: &str, conn: &mut Option<(BufReader<TcpStream>, bool)>) -> Outcome {
    let keep = opts.mode == Mode::KeepAlive;
    if conn.is_none() || !keep {
        match TcpStream::connect_timeout(&opts.addr, opts.timeout) {
            Ok(s) => {
                let _ = s.set_read_timeout(Some(opts.timeout));
                let _ = s.set_write_timeout(Some(opts.timeout));
                let _ = s.set_nodelay(true);
                *conn = Some((BufReader::new(s), false));
            }
            Err(e) if is_timeout(&e) => return Outcome::Timeout,
            Err(e) => return Outcome::Connect(e),
        }
    }
    let Some((reader, reused)) = conn.as_mut() else {
        return Outcome::Timeout;
    };
    let was_reused = *reused;
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: bluegreen-load\r\n{}\r\n",
        path,
        opts.addr,
        if keep { "" } else { "Connection: close\r\n" }
    );
    let result = exchange(reader, &req);
    match result {
        Ok((status, version, body, close)) => {
            if keep && !close {
                *reused = true;
            } else {
                *conn = None;
            }
            if status == 200 {
                Outcome::Ok(version.unwrap_or_else(|| body.trim().to_string()))
            } else {
                Outcome::Status(status, body)
            }
        }
        Err((e, got_bytes)) => {
            *conn = None;
            if is_timeout(&e) {
                Outcome::Timeout
            } else if got_bytes {
                Outcome::Reset {
                    reused: false,
                    err: format!("mid-answer: {e}"),
                }
            } else {
                Outcome::Reset {
                    reused: was_reused,
                    err: e.to_string(),
                }
            }
        }
    }
}

type Answer = (u16, Option<String>, String, bool);

/// Sends `req` and reads one answer: status, `X-App-Version`, body, and whether the server closes.
/// On error, tells whether any byte of the answer had arrived.
fn exchange(reader: &mut BufReader<TcpStream>, req: &str) -> Result<Answer, (io::Error, bool)> {
    reader
        .get_mut()
        .write_all(req.as_bytes())
        .map_err(|e| (e, false))?;
    let mut line = String::new();
    let n = reader.read_line(&mut line).map_err(|e| (e, false))?;
    if n == 0 {
        return Err((
            io::Error::new(io::ErrorKind::UnexpectedEof, "closed before the answer"),
            false,
        ));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            (
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad status line {line:?}"),
                ),
                true,
            )
        })?;
    let mut length: Option<usize> = None;
    let mut version = None;
    let mut close = false;
    loop {
        line.clear();
        let n = reader.read_line(&mut line).map_err(|e| (e, true))?;
        if n == 0 {
            return Err((
                io::Error::new(io::ErrorKind::UnexpectedEof, "closed in the headers"),
                true,
            ));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let v = v.trim();
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = v.parse().ok(),
                "x-app-version" => version = Some(v.to_string()),
                "connection" => close = v.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
    }
    let mut body = Vec::new();
    match length {
        Some(n) => {
            body.resize(n, 0);
            reader.read_exact(&mut body).map_err(|e| (e, true))?;
        }
        None => {
            reader.read_to_end(&mut body).map_err(|e| (e, true))?;
            close = true;
        }
    }
    Ok((
        status,
        version,
        String::from_utf8_lossy(&body).into_owned(),
        close,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A tiny server: answers `n` requests per connection with the given status, then closes.
    fn server(status: u16, per_conn: usize) -> SocketAddr {
        server_with(status, per_conn, None)
    }

    /// Like `server`; requests for `/slow` are answered after `slow` (and with version `s7`).
    fn server_with(status: u16, per_conn: usize, slow: Option<Duration>) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { continue };
                std::thread::spawn(move || {
                    let mut r = BufReader::new(s.try_clone().unwrap());
                    let mut w = s;
                    for _ in 0..per_conn {
                        let mut line = String::new();
                        let mut is_slow = false;
                        loop {
                            line.clear();
                            if r.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            is_slow |= line.starts_with("GET /slow");
                            if line == "\r\n" {
                                break;
                            }
                        }
                        let mut v = "v7";
                        if let (true, Some(d)) = (is_slow, slow) {
                            std::thread::sleep(d);
                            v = "s7";
                        }
                        let _ = write!(
                            w,
                            "HTTP/1.1 {status} X\r\nX-App-Version: {v}\r\nContent-Length: 2\r\n\r\n{v}"
                        );
                    }
                });
            }
        });
        addr
    }

    #[test]
    fn counts_good_answers_and_versions() {
        let addr = server(200, 1000);
        let load = Load::start(Options::new(addr, Mode::KeepAlive));
        std::thread::sleep(Duration::from_millis(200));
        let c = load.stop();
        assert!(c.ok > 10, "{}", c.line());
        assert_eq!(c.failures(), 0, "{}", c.line());
        assert_eq!(c.versions.keys().collect::<Vec<_>>(), ["v7"]);
    }

    #[test]
    fn counts_5xx_and_wrong_versions() {
        let addr = server(502, 1000);
        let load = Load::start(Options::new(addr, Mode::NewConnection));
        std::thread::sleep(Duration::from_millis(100));
        let c = load.stop();
        assert!(c.http_5xx > 0 && c.ok == 0, "{}", c.line());

        let addr = server(200, 1000);
        let load = Load::start(Options::new(addr, Mode::NewConnection));
        load.allow(&["v8"]);
        // Answers classified before `allow` took effect were good; every one after it is not.
        let before = load.snapshot();
        std::thread::sleep(Duration::from_millis(100));
        let c = load.stop();
        assert!(
            c.wrong_version > 0 && c.ok == before.ok,
            "{} (before: {})",
            c.line(),
            before.line()
        );
    }

    #[test]
    fn counts_resets_of_reused_connections_and_retries_them() {
        // The server closes every connection after one answer without saying so: the next request
        // on it fails like nginx's keep-alive race.
        let addr = server(200, 1);
        let load = Load::start(Options::new(addr, Mode::KeepAlive));
        std::thread::sleep(Duration::from_millis(200));
        let c = load.stop();
        assert!(c.reset > 0, "{}", c.line());

        let mut o = Options::new(addr, Mode::KeepAlive);
        o.retry_reset = true;
        let load = Load::start(o);
        std::thread::sleep(Duration::from_millis(200));
        let c = load.stop();
        assert_eq!(c.reset, 0, "{}", c.line());
        assert!(c.reset_retried_ok > 0, "{}", c.line());
    }

    #[test]
    fn slow_workers_keep_requests_in_flight_and_are_counted() {
        let addr = server_with(200, 1000, Some(Duration::from_millis(150)));
        let mut o = Options::new(addr, Mode::NewConnection).with_slow(3, 150);
        o.workers = 1;
        let load = Load::start(o);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(load.slow_in_flight(), 3, "every slow worker waits");
        std::thread::sleep(Duration::from_millis(400));
        let c = load.stop();
        assert!(c.slow_ok >= 6, "{}", c.line());
        assert_eq!((c.slow_failed, c.failures()), (0, 0), "{}", c.line());
        assert_eq!(c.slow_max_in_flight, 3, "{}", c.line());
        assert_eq!(c.versions["s7"], c.slow_ok, "{}", c.line());
        assert!(c.versions["v7"] > 10, "fast workers ran too: {}", c.line());
        assert!(c.line().contains("slow ok"), "{}", c.line());

        // A slow request that fails is a failure, counted apart as well.
        let addr = server_with(502, 1000, Some(Duration::from_millis(50)));
        let load = Load::start(Options::new(addr, Mode::KeepAlive).with_slow(1, 50));
        std::thread::sleep(Duration::from_millis(200));
        let c = load.stop();
        assert!(c.slow_failed > 0 && c.slow_ok == 0, "{}", c.line());
        assert!(c.failures() > c.slow_failed, "{}", c.line());
        assert!(
            c.samples
                .iter()
                .any(|s| s.contains("(slow request /slow?ms=50)")),
            "{:?}",
            c.samples
        );
    }

    #[test]
    fn counts_connect_errors() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let load = Load::start(Options::new(addr, Mode::NewConnection));
        std::thread::sleep(Duration::from_millis(50));
        let c = load.stop();
        assert!(c.connect_error > 0 && c.ok == 0, "{}", c.line());
    }
}
