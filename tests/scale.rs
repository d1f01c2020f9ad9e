//! 50 app hosts on the testbed (issue 10, item 6): `exec` and the rendered script deploy the light
//! app (`tests/lightapp`) twice each, the second deploy a real blue→green switch with the old slot
//! stopped, under continuous load through nginx; and `exec` deploys the demo JVM app to 50 hosts,
//! 100 JVMs running at once during the switch. Every deploy must lose no request, leave every host
//! serving the new version from the new slot with the old slot stopped, and `status` must exit 0.
//!
//! The light-app test brings one testbed up for both backends (50 hosts take a while to come up),
//! resetting the apps between them so that the script too starts from empty hosts.

use crate::e2e::Traffic;
use crate::testbed::{jars, serial, Testbed};
use crate::util::{Cmd, TempDir};
use bluegreen_loadgen::Counts;
use bluegreen_testbed::DeployOptions;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const HOSTS: usize = 50;
const BLUE: u16 = 8080;
const GREEN: u16 = 8081;

/// The light app's artifacts `light-v1.pl` ... `light-v4.pl`, built once per test run.
pub(crate) fn light_apps() -> &'static Path {
    static DIR: OnceLock<TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        crate::util::require("perl", "perl");
        let dir = TempDir::new("lightapps");
        bluegreen_testbed::build_light_apps(dir.path(), &["v1", "v2", "v3", "v4"])
            .unwrap_or_else(|e| panic!("building the light app's artifacts failed: {e}"));
        dir
    })
    .path()
}

/// What one deploy printed and how long it took.
struct Run {
    ok: bool,
    out: String,
    secs: f64,
}

fn run(c: Cmd) -> Run {
    let r = c.run();
    Run {
        ok: r.success(),
        out: r.out(),
        secs: r.secs,
    }
}

fn bluegreen(dir: &Path, args: &[&str]) -> Run {
    run(Cmd::bluegreen(dir, args))
}

/// One deploy of what is staged in `dir`, by `exec` or by the rendered script.
fn deploy(backend: &str, dir: &Path) -> Run {
    if backend == "exec" {
        return bluegreen(dir, &["exec"]);
    }
    let r = bluegreen(dir, &["render", "script", "-o", "deploy.sh"]);
    assert!(r.ok, "render script:\n{}", r.out);
    run(Cmd::script(dir, "deploy.sh", &[]))
}

/// `GET /version` straight to `addr` (not through nginx): the body, or None when nothing answers.
fn version_at(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /version HTTP/1.1\r\nHost: scale\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| body.trim().to_string())
}

/// Every host serves `version` on `live`, nothing listens on `idle`, nginx serves `version`, and
/// `status` exits 0.
fn assert_everywhere(tb: &Testbed, dir: &Path, version: &str, live: u16, idle: u16) {
    let mut wrong = Vec::new();
    for a in tb.app_addrs() {
        let got = version_at(format!("{a}:{live}").parse().unwrap());
        if got.as_deref() != Some(version) {
            wrong.push(format!("{a}:{live} answers {got:?}"));
        }
        if TcpStream::connect_timeout(
            &format!("{a}:{idle}").parse().unwrap(),
            Duration::from_secs(2),
        )
        .is_ok()
        {
            wrong.push(format!("{a}:{idle} (the idle slot) still listens"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {HOSTS} hosts are wrong after deploying {version}: {wrong:?}",
        wrong.len()
    );
    assert_eq!(tb.version_via_proxy(), version);
    let st = bluegreen(dir, &["status"]);
    assert!(st.ok, "status after {version}:\n{}", st.out);
}

fn assert_no_failures(what: &str, nc: &Counts, ka: &Counts) {
    assert!(
        nc.ok > 0 && ka.ok > 0,
        "{what}: the load got no answer at all"
    );
    assert_eq!(nc.failures(), 0, "{what}, new connection: {}", nc.line());
    assert_eq!(ka.http_errors(), 0, "{what}, keep-alive: {}", ka.line());
}

/// Two deploys by `backend`: `first` to blue on empty hosts (nginx has nothing to send requests to
/// until its switch, so the load starts once it is live), then `second` to green under load, blue
/// stopped.
fn two_deploys(
    tb: &Testbed,
    dir: &Path,
    wd: &bluegreen_testbed::Workdir,
    backend: &str,
    first: &str,
    second: &str,
) {
    wd.stage(first).unwrap();
    let r = deploy(backend, dir);
    assert!(
        r.ok,
        "{backend} deploy of {first} to {HOSTS} empty hosts:\n{}",
        r.out
    );
    println!(
        "scale report: {backend}, light app, {HOSTS} hosts: {first} (first deploy) in {:.1}s",
        r.secs
    );
    assert_everywhere(tb, dir, first, BLUE, GREEN);
    let traffic = Traffic::start(tb, 2);
    traffic.allow(&[first, second]);
    wd.stage(second).unwrap();
    let r = deploy(backend, dir);
    assert!(
        r.ok,
        "{backend} deploy of {second} to {HOSTS} hosts:\n{}",
        r.out
    );
    traffic.allow(&[second]);
    println!(
        "scale report: {backend}, light app, {HOSTS} hosts: {second} (blue -> green) in {:.1}s",
        r.secs
    );
    assert_everywhere(tb, dir, second, GREEN, BLUE);
    // A moment more of load on the new slot alone.
    std::thread::sleep(Duration::from_millis(300));
    let (nc, ka) = traffic.stop();
    println!(
        "scale report: {backend} load: new connection {}; keep-alive {}",
        nc.line(),
        ka.line()
    );
    assert_no_failures(backend, &nc, &ka);
}

#[test]
fn fifty_hosts_light_app_exec_then_script() {
    let _g = serial();
    let t = Instant::now();
    let tb = Testbed::up(HOSTS);
    println!(
        "scale report: testbed with {HOSTS} app hosts up in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let tmp = TempDir::new("scale-light");
    let opts = DeployOptions::new("60s").light();
    let wd = bluegreen_testbed::Workdir::with(&tb, tmp.path(), light_apps(), &opts).unwrap();
    two_deploys(&tb, tmp.path(), &wd, "exec", "v1", "v2");
    // The script starts from empty hosts too.
    tb.reset_apps().unwrap();
    let a = &tb.app_addrs()[0];
    for port in [BLUE, GREEN] {
        let addr = format!("{a}:{port}").parse().unwrap();
        assert_eq!(
            version_at(addr),
            None,
            "nothing runs on {addr} after the reset"
        );
    }
    two_deploys(&tb, tmp.path(), &wd, "script", "v3", "v4");
    println!(
        "scale report: light-app test took {:.1}s",
        t.elapsed().as_secs_f64()
    );
}

/// Memory: 50 hosts × 2 demo JVMs (old and new slot) during the switch, each with the testbed's
/// `-Xmx64m -Xss512k -XX:TieredStopAtLevel=1 -XX:+UseSerialGC` (about 40-60 MiB resident each): a
/// few GiB of this machine's 24.
#[test]
fn fifty_hosts_demo_jvm_exec() {
    let _g = serial();
    let t = Instant::now();
    let tb = Testbed::up(HOSTS);
    let tmp = TempDir::new("scale-jvm");
    // 50 JVMs boot at once on two cores: seconds each.
    let wd = bluegreen_testbed::Workdir::with(&tb, tmp.path(), jars(), &DeployOptions::new("240s"))
        .unwrap();
    wd.stage("v1").unwrap();
    let r = deploy("exec", tmp.path());
    assert!(
        r.ok,
        "first deploy of the demo app to {HOSTS} hosts:\n{}",
        r.out
    );
    println!(
        "scale report: exec, demo JVM, {HOSTS} hosts: v1 deployed in {:.1}s",
        r.secs
    );
    assert_everywhere(&tb, tmp.path(), "v1", BLUE, GREEN);
    let traffic = Traffic::start(&tb, 2);
    traffic.allow(&["v1", "v2"]);
    wd.stage("v2").unwrap();
    let peak = MemWatch::start();
    let r = deploy("exec", tmp.path());
    let (min_avail, total) = peak.stop();
    assert!(r.ok, "deploy of v2 to {HOSTS} hosts:\n{}", r.out);
    traffic.allow(&["v2"]);
    println!(
        "scale report: exec, demo JVM, {HOSTS} hosts: v2 deployed in {:.1}s; memory available at its lowest {:.1} of {:.1} GiB",
        r.secs,
        min_avail as f64 / 1048576.0,
        total as f64 / 1048576.0
    );
    assert_everywhere(&tb, tmp.path(), "v2", GREEN, BLUE);
    let (nc, ka) = traffic.stop();
    println!(
        "scale report: demo JVM load: new connection {}; keep-alive {}",
        nc.line(),
        ka.line()
    );
    assert_no_failures("demo JVM", &nc, &ka);
    println!(
        "scale report: demo-JVM test took {:.1}s",
        t.elapsed().as_secs_f64()
    );
}

/// The lowest `MemAvailable` while a deploy runs (KiB), and `MemTotal`.
struct MemWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<(u64, u64)>,
}

fn meminfo(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

impl MemWatch {
    fn start() -> MemWatch {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut low = u64::MAX;
            // Bounded: a deploy that outlives ten minutes has failed anyway.
            for _ in 0..6000 {
                low = low.min(meminfo("MemAvailable:"));
                if s.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (low, meminfo("MemTotal:"))
        });
        MemWatch { stop, handle }
    }

    fn stop(self) -> (u64, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.handle.join().unwrap()
    }
}

/// The most hosts that had `step` under way at one moment, from `exec -v`'s lines (a step is under
/// way from its first `..` line to its `ok`).
fn most_at_once(out: &str, step: &str) -> usize {
    let mut under_way = std::collections::BTreeSet::new();
    let mut most = 0;
    for line in out.lines() {
        let mut words = line.split_whitespace();
        let (Some(host), Some(s), Some(status)) = (words.next(), words.next(), words.next()) else {
            continue;
        };
        if s != step || !host.starts_with("[app") {
            continue;
        }
        match status {
            ".." => {
                under_way.insert(host.to_string());
            }
            _ => {
                under_way.remove(host);
            }
        }
        most = most.max(under_way.len());
    }
    most
}

#[test]
fn max_parallel_bounds_execs_uploads_and_starts() {
    // Four hosts, `max_parallel: 2`: exec never has more than two uploads or starts under way, and
    // the deploy ends as any other does (the script's bound is proven with stand-ins, in
    // script_calls). Without the bound all four are under way at once.
    let _g = serial();
    let tb = Testbed::up(4);
    let tmp = TempDir::new("scale-limit");
    for (extra, want, first, second) in [("", 4, "v1", "v2"), ("max_parallel: 2\n", 2, "v3", "v4")]
    {
        let opts = DeployOptions::new("60s").light().extra(extra);
        let wd = bluegreen_testbed::Workdir::with(&tb, tmp.path(), light_apps(), &opts).unwrap();
        for version in [first, second] {
            wd.stage(version).unwrap();
            let r = bluegreen(tmp.path(), &["exec", "-v"]);
            assert!(r.ok, "exec of {version} with {extra:?}:\n{}", r.out);
            for step in ["copy", "start"] {
                let most = most_at_once(&r.out, step);
                assert!(
                    most <= want && (want == 2 || most > 2),
                    "{step}: {most} hosts at once with {extra:?} (expected {}):\n{}",
                    if want == 2 {
                        "at most 2"
                    } else {
                        "more than 2"
                    },
                    r.out
                );
            }
        }
        let (live, idle) = (GREEN, BLUE);
        for a in tb.app_addrs() {
            let got = version_at(format!("{a}:{live}").parse().unwrap());
            assert_eq!(got.as_deref(), Some(second), "{a}:{live} after {second}");
            assert!(
                TcpStream::connect_timeout(
                    &format!("{a}:{idle}").parse().unwrap(),
                    Duration::from_secs(2)
                )
                .is_err(),
                "{a}:{idle} still listens"
            );
        }
        assert_eq!(tb.version_via_proxy(), second);
    }
}
