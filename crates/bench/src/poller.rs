//! A dedicated fast poller: one thread asking nginx `GET /version` on a new connection, back to back,
//! recording the `Instant` of every change of the version served. It tells when the proxy first served
//! a version with the resolution of one request (reported as `median_request`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A running poller.
pub struct Poller {
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    /// (when, version) each time the answer differs from the previous one; `""` for a failed request.
    changes: Mutex<Vec<(Instant, String)>>,
    requests: AtomicU64,
    /// Sum of request durations in microseconds.
    busy_us: AtomicU64,
}

impl Poller {
    /// Starts polling `addr`.
    pub fn start(addr: SocketAddr) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared::default());
        let (s, sh) = (stop.clone(), shared.clone());
        let thread = std::thread::spawn(move || {
            let mut last: Option<String> = None;
            while !s.load(Ordering::SeqCst) {
                let t = Instant::now();
                let v = get_version(addr).unwrap_or_default();
                sh.requests.fetch_add(1, Ordering::Relaxed);
                sh.busy_us.fetch_add(
                    u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
                if last.as_deref() != Some(v.as_str()) {
                    // The answer's arrival is the moment nginx served it (within one request).
                    if let Ok(mut c) = sh.changes.lock() {
                        c.push((Instant::now(), v.clone()));
                    }
                    last = Some(v);
                }
                if last.as_deref() == Some("") {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        Poller {
            stop,
            shared,
            thread: Some(thread),
        }
    }

    /// The first moment after `since` at which `version` was served, waiting up to `wait` for it.
    pub fn first_after(&self, version: &str, since: Instant, wait: Duration) -> Option<Instant> {
        let until = Instant::now() + wait;
        loop {
            if let Ok(c) = self.shared.changes.lock() {
                if let Some((t, _)) = c.iter().find(|(t, v)| *t >= since && v == version) {
                    return Some(*t);
                }
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Mean duration of one poll, i.e. the resolution of the times it reports.
    pub fn mean_request(&self) -> Duration {
        let n = self.shared.requests.load(Ordering::Relaxed).max(1);
        Duration::from_micros(self.shared.busy_us.load(Ordering::Relaxed) / n)
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `GET /version` on a new connection: the version, or `None` on any failure or non-200 answer.
pub fn get_version(addr: SocketAddr) -> Option<String> {
    let timeout = Duration::from_secs(2);
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_nodelay(true).ok()?;
    s.write_all(b"GET /version HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut buf = Vec::with_capacity(512);
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.lines().next()?.split_whitespace().nth(1)?;
    if status != "200" {
        return None;
    }
    let header = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("x-app-version")
            .then(|| v.trim().to_string())
    });
    Some(header.unwrap_or_else(|| body.trim().to_string()))
}
