//! Faults injected around real deploys on the testbed, under continuous load through nginx.
//!
//! Each test brings up its own testbed, deploys v1 (and v2 where it needs a previous slot) normally
//! with `bluegreen exec`, then breaks something during or around the next deploy: a second deploy at
//! the same time, an app host's link cut, a stopped sshd, a failing `nginx -t`, a changed host key,
//! Ctrl-C on the rendered script, a port already taken, a version that dies right after the switch.
//! Each asserts the exit code and the words of the message, that traffic the fault did not touch saw
//! no failed request, which version the proxy serves, the state file, the lock, and which instances
//! run afterwards. Every test prints one `fault report` line (run with `--nocapture` to see them).
//!
//! Where it costs little, the app has realistic timings (`e2e::realistic`: the port bound a second
//! after the start, a graceful shutdown of three seconds) and slow requests are kept in flight through
//! nginx (`Traffic::with_slow`), counted with the new-connection mode.

use crate::e2e::{
    assert_graceful, deploy, realistic, shutdown_line, Backend, StopProbe, Traffic, SHUTDOWN_MS,
    SLOW_WORKERS,
};
use crate::testbed::{serial, Testbed, Workdir};
use crate::util::{root, Cmd, Run};
use bluegreen_loadgen::{Counts, Load, Mode, Options};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

fn exec_cmd(wd: &Workdir, tag: &str) -> Cmd {
    Cmd::bluegreen(wd.path(), &["exec"]).env("BUILD_TAG", tag)
}

/// `bluegreen exec` in `wd`, as deployer `tag`.
fn exec(wd: &Workdir, tag: &str) -> Run {
    exec_cmd(wd, tag).run()
}

/// A normal deploy of `version` (no fault): it must succeed.
fn setup_deploy(tb: &Testbed, wd: &Workdir, version: &str) {
    wd.stage(version);
    let out = deploy(Backend::Exec, tb, wd, 1);
    assert!(out.success, "setup deploy of {version}:\n{}", out.output);
    assert_eq!(tb.version_via_proxy(), version);
}

fn config_path(wd: &Workdir) -> PathBuf {
    wd.path().join("bluegreen.yaml")
}

/// Rewrites the Workdir's config.
fn edit_config(wd: &Workdir, f: impl FnOnce(String) -> String) {
    let text = std::fs::read_to_string(config_path(wd)).unwrap();
    let new = f(text.clone());
    assert_ne!(text, new, "the config edit changed nothing");
    std::fs::write(config_path(wd), new).unwrap();
}

fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "`{from}` in:\n{text}");
    text.replace(from, to)
}

/// New instances answer 503 (booting) for this long after they bind their port.
fn with_boot_delay(text: String, ms: u64) -> String {
    replace_once(
        &text,
        "--server.port={port}",
        &format!("--server.port={{port}} --boot-delay={ms}"),
    )
}

fn without_boot_delay(text: String) -> String {
    let start = text.find(" --boot-delay=").expect("a boot delay");
    let end = text[start + 1..].find(['\n', ' ']).unwrap() + start + 1;
    format!("{}{}", &text[..start], &text[end..])
}

/// The `dies` version of the demo app (answers UP to two health requests, then crashes on the
/// third), built once into a directory of its own.
fn dies_jar() -> &'static Path {
    static JAR: OnceLock<PathBuf> = OnceLock::new();
    JAR.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("bluegreen-faults-jars-{}", std::process::id()));
        let out = Command::new("bash")
            .arg(root().join("tests/app/build.sh"))
            .arg(&dir)
            .arg("dies")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "building the dies jar failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir.join("app-dies.jar")
    })
}

/// Runs `curl -s URL` from the runner; the body, trimmed.
fn curl(url: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", "-m", "5", url])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Every answer of a few requests through the proxy is `version`.
fn assert_serves(tb: &Testbed, version: &str) {
    for _ in 0..6 {
        assert_eq!(
            tb.version_via_proxy(),
            version,
            "the proxy serves {version}"
        );
    }
}

/// The version an app host's instance on `port` answers, asked directly (not through nginx).
fn version_on(tb: &Testbed, host: usize, port: u16) -> String {
    curl(&format!(
        "http://{}:{port}/version",
        tb.app_addrs()[host - 1]
    ))
}

fn upstream(tb: &Testbed) -> String {
    tb.sh_ok("proxy", &format!("cat {}", tb.var("UPSTREAM_FILE")))
}

/// Both app hosts: `live` port open, `idle` port closed.
fn assert_ports(tb: &Testbed, live: u16, idle: u16) {
    for host in ["app1", "app2"] {
        assert!(tb.port_open(host, live), "{host}: live instance on {live}");
        assert!(
            !tb.port_open(host, idle),
            "{host}: nothing left running on {idle}"
        );
    }
}

fn assert_code(run: &Run, code: i32) {
    run.assert_code(code);
}

fn assert_says(run: &Run, words: &[&str]) {
    run.assert_says(words);
}

/// The line of the output that holds `word` (for the report).
fn line_with(run: &Run, word: &str) -> String {
    run.out()
        .lines()
        .rfind(|l| l.contains(word))
        .unwrap_or("")
        .trim()
        .to_string()
}

/// No failed request in either load mode.
fn assert_untouched(nc: &Counts, ka: &Counts) {
    assert_eq!(
        nc.failures(),
        0,
        "new-connection: {}\n{:?}",
        nc.line(),
        nc.samples
    );
    assert_eq!(
        ka.http_errors(),
        0,
        "keep-alive: {}\n{:?}",
        ka.line(),
        ka.samples
    );
    assert!(
        nc.ok > 20 && ka.ok > 20,
        "traffic flowed: {} | {}",
        nc.line(),
        ka.line()
    );
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn report(name: &str, text: String) {
    eprintln!("fault report: {name}: {text}");
}

#[test]
fn two_deploys_at_once_one_wins_the_lock() {
    let _serial = serial();
    let tb = Testbed::up(2);
    let wd = Workdir::with(&tb, &realistic("30s"));
    setup_deploy(&tb, &wd, "v1");

    wd.stage("v2");
    let traffic = Traffic::with_slow(&tb, 2, SLOW_WORKERS);
    std::thread::sleep(Duration::from_millis(300));
    traffic.allow(&["v1", "v2"]);
    let probe = StopProbe::start(&tb, &traffic, "blue");
    // Both start at the same instant. `bg_lock` writes the holder's info right after its `mkdir`;
    // a loser that looks in between waits briefly for it, so it can always name the holder.
    let a = exec_cmd(&wd, "faults-a").spawn();
    let b = exec_cmd(&wd, "faults-b").spawn();
    let ta = std::thread::spawn(move || a.wait());
    let tb_ = std::thread::spawn(move || b.wait());
    let (ra, rb) = (ta.join().unwrap(), tb_.join().unwrap());
    traffic.allow(&["v2"]);
    let shutdowns = probe.finish();
    std::thread::sleep(Duration::from_millis(300));
    let (nc, ka) = traffic.stop();

    let codes = (ra.code, rb.code);
    assert!(
        codes == (Some(0), Some(3)) || codes == (Some(3), Some(0)),
        "exactly one deploy succeeds, the other exits 3 (lock held): {codes:?}\nA:\n{}\nB:\n{}",
        ra.out(),
        rb.out()
    );
    let (winner, loser, winner_tag) = if ra.code == Some(0) {
        (&ra, &rb, "faults-a")
    } else {
        (&rb, &ra, "faults-b")
    };
    // The loser names the lock and who holds it (the deployer the winner records in the state
    // file), and gives up at once instead of waiting.
    let state = tb.state();
    assert_says(
        loser,
        &[
            "proxy",
            "deploy lock",
            "is held",
            &format!("holder={}", state["deployer"]),
        ],
    );
    assert!(
        loser.secs < 5.0 && loser.secs < winner.secs,
        "the loser fails fast: {:.2}s (winner {:.2}s)",
        loser.secs,
        winner.secs
    );
    // It undid nothing: the winner's deploy stands as if it had been alone.
    assert_untouched(&nc, &ka);
    assert_graceful(&shutdowns, SHUTDOWN_MS);
    assert_serves(&tb, "v2");
    assert_eq!(
        (state["live"].as_str(), state["previous"].as_str()),
        ("green", "blue"),
        "{state:?}"
    );
    assert_ports(&tb, 8081, 8080);
    tb.assert_lock_free();
    report(
        "two_deploys_at_once",
        format!(
            "winner {winner_tag} {:.2}s; loser {:.2}s, exit 3: `{}`; new-conn {} | keep-alive {}; old instances' shutdown: {}",
            winner.secs,
            loser.secs,
            line_with(loser, "is held"),
            nc.line(),
            ka.line(),
            shutdown_line(&shutdowns)
        ),
    );
}

/// Takes an app host's link down in the root namespace; brings it back up on drop.
struct LinkCut {
    dev: String,
}

impl LinkCut {
    fn cut(tb: &Testbed, app: usize) -> LinkCut {
        let dev = format!("bg-{}-a{app}", tb.name);
        let ok = Command::new("ip")
            .args(["link", "set", &dev, "down"])
            .status()
            .unwrap();
        assert!(ok.success(), "ip link set {dev} down");
        LinkCut { dev }
    }
}

impl Drop for LinkCut {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "set", &self.dev, "up"])
            .status();
    }
}

/// nginx access-log lines written after byte `from`: (status, upstream addresses).
fn access_log(tb: &Testbed, from: usize) -> Vec<(String, Vec<String>)> {
    let path = format!("{}/proxy/etc/nginx/run/access.log", tb.var("HOSTS_DIR"));
    let text = std::fs::read(&path).unwrap();
    String::from_utf8_lossy(&text[from.min(text.len())..])
        .lines()
        .filter_map(|l| {
            let status = l
                .split("\" ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .to_string();
            let ups = l
                .split(" upstream=")
                .nth(1)?
                .split(" upstream_status=")
                .next()?;
            let ups = ups
                .split([',', ':'])
                .map(str::trim)
                .collect::<Vec<_>>()
                .chunks(2)
                .filter(|c| c.len() == 2)
                .map(|c| format!("{}:{}", c[0], c[1]))
                .collect();
            Some((status, ups))
        })
        .collect()
}

fn access_log_len(tb: &Testbed) -> usize {
    let path = format!("{}/proxy/etc/nginx/run/access.log", tb.var("HOSTS_DIR"));
    std::fs::metadata(path)
        .map(|m| m.len() as usize)
        .unwrap_or(0)
}

#[test]
fn app_host_link_cut_mid_deploy_fails_within_deadlines() {
    let _serial = serial();
    let tb = Testbed::up(2);
    let wd = Workdir::new(&tb, "6s", "");
    // Short SSH bounds, so that calls to the unreachable host give up soon: a stop waits up to
    // grace + 20 s, any other call up to command_timeout.
    edit_config(&wd, |c| {
        replace_once(
            &replace_once(&c, "command_timeout: 60s", "command_timeout: 5s"),
            "grace: 20s",
            "grace: 2s",
        )
    });
    setup_deploy(&tb, &wd, "v1");
    let before = tb.state();
    let upstream_before = upstream(&tb);
    let (app1, app2) = (tb.app_addrs()[0].clone(), tb.app_addrs()[1].clone());

    // The new instances bind their port at once but answer 503 for 4 s: the link is cut while app2's
    // new instance can not yet have passed its health check, so the failure is always in verify.
    edit_config(&wd, |c| with_boot_delay(c, 4000));
    wd.stage("v2");
    let log_from = access_log_len(&tb);
    let traffic = Traffic::start(&tb, 2);
    std::thread::sleep(Duration::from_millis(300));
    traffic.allow(&["v1"]);
    let mut child = exec_cmd(&wd, "faults-link").spawn();
    let started = child.started;
    // Cut once both start calls have returned (their events are on stderr) and the new instances
    // listen: the deploy is then in verify, and app2's instance is still booting.
    let stderr = child.child.stderr.take().unwrap();
    let events = Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let events = events.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines() {
                let line = line.unwrap_or_default();
                let mut e = events.lock().unwrap();
                e.push_str(&line);
                e.push('\n');
            }
        })
    };
    let started_ok = |host: &str| {
        events
            .lock()
            .unwrap()
            .lines()
            .any(|l| l.starts_with(&format!("[{host}] start")) && l.contains(" ok "))
    };
    wait_for(
        "the new instances to start",
        Duration::from_secs(20),
        || {
            started_ok("app1")
                && started_ok("app2")
                && tb.port_open("app1", 8081)
                && tb.port_open("app2", 8081)
        },
    );
    let cut = LinkCut::cut(&tb, 2);
    let cut_at = started.elapsed().as_secs_f64();
    let mut run = child.wait();
    reader.join().unwrap();
    run.stderr.push_str(&events.lock().unwrap());
    std::thread::sleep(Duration::from_millis(300));
    let (nc, ka) = traffic.stop();

    assert_code(&run, 1);
    assert_says(
        &run,
        &["app2", "not healthy after 6.00s", ":8081/actuator/health"],
    );
    // Health deadline (6 s after verify began) + the stop of app2's new instance, which can only
    // time out (grace 2 s + 20 s) + the rest: the deploy ends on its own deadlines, it never hangs.
    assert!(
        run.secs < 45.0,
        "the deploy ends within its deadlines: {:.1}s",
        run.secs
    );

    // Traffic. nginx still sends some requests to app2's *old* instance while the link is down:
    // those wait for a connect or read timeout and may fail or be retried on app1. They are hurt by
    // the cut link, not by the deploy, and the load client cannot tell them apart. So the load
    // client is only asked never to see the new version, and the nginx access log shows what the
    // deploy could have broken: no request ever reached a new instance (port 8081), and every
    // request nginx sent only to app1 was answered 200.
    assert_eq!(
        nc.wrong_version + ka.wrong_version,
        0,
        "{} | {}",
        nc.line(),
        ka.line()
    );
    let log = access_log(&tb, log_from);
    assert!(
        log.len() > 100,
        "traffic flowed: {} access-log lines",
        log.len()
    );
    let to_new: Vec<_> = log
        .iter()
        .filter(|(_, ups)| ups.iter().any(|u| u.ends_with(":8081")))
        .collect();
    assert!(
        to_new.is_empty(),
        "requests reached a new instance: {to_new:?}"
    );
    let app1_only: Vec<_> = log
        .iter()
        .filter(|(_, ups)| {
            !ups.is_empty() && ups.iter().all(|u| u.starts_with(&format!("{app1}:")))
        })
        .collect();
    let app1_bad: Vec<_> = app1_only.iter().filter(|(s, _)| s != "200").collect();
    assert!(
        app1_bad.is_empty(),
        "requests to app1 alone failed: {app1_bad:?}"
    );
    let via_app2: Vec<&String> = log
        .iter()
        .filter(|(_, ups)| ups.iter().any(|u| u.starts_with(&format!("{app2}:"))))
        .map(|(s, _)| s)
        .collect();
    let via_app2_bad = via_app2.iter().filter(|s| s.as_str() != "200").count();

    // Nothing else moved: upstream file, state, lock; app1's new instance stopped.
    assert_eq!(
        upstream(&tb),
        upstream_before,
        "the upstream file is unchanged"
    );
    assert_eq!(tb.state(), before, "the state file is unchanged");
    tb.assert_lock_free();
    assert!(!tb.port_open("app1", 8081), "app1: new instance stopped");
    assert!(tb.port_open("app1", 8080), "app1: live instance untouched");

    // Link back: app2's new instance could not be stopped while unreachable and still runs; the
    // next deploy to that slot stops it first and succeeds.
    drop(cut);
    let leftover = tb.port_open("app2", 8081);
    wait_for("app2 to answer again", Duration::from_secs(10), || {
        version_on(&tb, 2, 8080) == "v1"
    });
    assert_serves(&tb, "v1");
    edit_config(&wd, without_boot_delay);
    let again = exec(&wd, "faults-link-again");
    assert_code(&again, 0);
    assert_serves(&tb, "v2");
    assert_ports(&tb, 8081, 8080);
    report(
        "app_host_link_cut",
        format!(
            "link cut {cut_at:.2}s into the deploy; exit 1 after {:.2}s: `{}`; new-conn {} | keep-alive {}; \
             access log: {} requests, {} to app1 alone (all 200), {} touched app2 ({} not 200), 0 to port 8081; \
             app2's new instance left running while unreachable: {leftover}; redeploy after the link came back: ok in {:.2}s",
            run.secs,
            line_with(&run, "not healthy"),
            nc.line(),
            ka.line(),
            log.len(),
            app1_only.len(),
            via_app2.len(),
            via_app2_bad,
            again.secs
        ),
    );
}

/// A fault that a deploy must refuse without touching anything: the deploy of v2 fails with
/// `code`, saying `words`, and afterwards everything is as it was before it (see [`run_scenario`]).
struct Scenario {
    /// The name in the fault report.
    name: &'static str,
    /// Breaks something once v1 is deployed, before the deploy of v2.
    inject: fn(&Testbed),
    /// Puts it right after the checks (the testbed is torn down anyway; this keeps it usable).
    heal: fn(&Testbed),
    /// The words the failure must say.
    words: fn(&Testbed) -> Vec<String>,
    /// The word of the line the report quotes.
    report_word: &'static str,
    /// An app host the deploy must not have touched at all (no new slot directory), if any.
    untouched: Option<&'static str>,
    /// Scenario-specific checks after the shared ones.
    more: fn(&Testbed, &Run),
}

/// Every scenario's fault.
const SCENARIOS: [Scenario; 3] = [
    Scenario {
        name: "sshd_down",
        inject: |tb| tb.script(&["sshd", &tb.name, "app2", "stop"]),
        heal: |tb| tb.script(&["sshd", &tb.name, "app2", "start"]),
        words: |tb| {
            vec![
                "app2: cannot connect to".into(),
                format!("{}:22", tb.app_addrs()[1]),
            ]
        },
        report_word: "cannot connect",
        untouched: Some("app1"),
        more: |_, run| assert!(run.secs < 10.0, "fails at once: {:.2}s", run.secs),
    },
    Scenario {
        // Someone broke nginx.conf: `nginx -t` fails, the running nginx keeps its loaded config.
        name: "nginx_t_fails",
        inject: |tb| {
            tb.sh_ok(
                "proxy",
                &format!(
                    "echo 'bluegreen_faults_bogus_directive on;' >> {}",
                    tb.var("NGINX_CONF")
                ),
            );
        },
        heal: |tb| {
            tb.sh_ok("proxy", &format!("sed -i '$d' {}", tb.var("NGINX_CONF")));
        },
        words: |_| {
            [
                "proxy: switch failed",
                "traffic left on the previous slot",
                "-t' failed, previous upstream file restored, nginx not reloaded",
                "unknown directive \"bluegreen_faults_bogus_directive\"",
            ]
            .map(String::from)
            .to_vec()
        },
        report_word: "switch failed",
        untouched: None,
        more: |tb, _| {
            assert_eq!(
                tb.sh_ok(
                    "proxy",
                    &format!(
                        "ls {}.bluegreen-* 2>/dev/null | wc -l",
                        tb.var("UPSTREAM_FILE")
                    )
                ),
                "0",
                "no temporary upstream file left"
            );
        },
    },
    Scenario {
        // app1 "reinstalled": a new host key, sshd restarted.
        name: "host_key_changed",
        inject: |tb| {
            tb.sh_ok(
                "app1",
                "rm -f /etc/bgtb/ssh_host_ed25519_key /etc/bgtb/ssh_host_ed25519_key.pub && \
                 ssh-keygen -q -t ed25519 -N '' -f /etc/bgtb/ssh_host_ed25519_key",
            );
            tb.script(&["sshd", &tb.name, "app1", "stop"]);
            tb.script(&["sshd", &tb.name, "app1", "start"]);
            wait_for("app1's sshd", Duration::from_secs(5), || {
                std::net::TcpStream::connect((tb.app_addrs()[0].as_str(), 22)).is_ok()
            });
        },
        heal: |_| {},
        words: |tb| {
            let known_hosts = tb.var("KNOWN_HOSTS");
            vec![
                format!("app1: host key of {}", tb.app_addrs()[0]),
                "(ssh-ed25519)".into(),
                format!("does not match the one recorded in {known_hosts}"),
                format!("ssh-keygen -R '{}' -f {known_hosts}", tb.app_addrs()[0]),
            ]
        },
        report_word: "host key",
        untouched: Some("app2"),
        more: |_, _| {},
    },
];

/// Runs one scenario on a testbed of its own: v1 deployed, the fault injected, a deploy of v2
/// under load through nginx that must fail, then the one "nothing changed" check every scenario
/// shares: no failed request, v1 served, the state file, the upstream file and known_hosts as they
/// were, the lock free, the live slot running and the idle one stopped, and (if named) an app host
/// without as much as a directory for the new slot.
fn run_scenario(name: &str) {
    let s = SCENARIOS
        .iter()
        .find(|s| s.name == name)
        .expect("a scenario of that name");
    let _serial = serial();
    let tb = Testbed::up(2);
    let wd = Workdir::with(&tb, &realistic("30s"));
    setup_deploy(&tb, &wd, "v1");
    let before = tb.state();
    let upstream_before = upstream(&tb);
    let known_hosts = tb.var("KNOWN_HOSTS").to_string();
    let kh_before = std::fs::read(&known_hosts).unwrap();

    (s.inject)(&tb);
    wd.stage("v2");
    let traffic = Traffic::with_slow(&tb, 2, SLOW_WORKERS);
    std::thread::sleep(Duration::from_millis(300));
    traffic.allow(&["v1"]);
    let run = exec(&wd, &format!("faults-{}", s.name));
    std::thread::sleep(Duration::from_millis(700));
    let (nc, ka) = traffic.stop();

    assert_code(&run, 1);
    let words = (s.words)(&tb);
    assert_says(&run, &words.iter().map(String::as_str).collect::<Vec<_>>());
    assert_untouched(&nc, &ka);
    assert_serves(&tb, "v1");
    assert_eq!(tb.state(), before, "the state file is unchanged");
    assert_eq!(
        upstream(&tb),
        upstream_before,
        "the upstream file is unchanged, byte for byte"
    );
    assert_eq!(
        std::fs::read(&known_hosts).unwrap(),
        kh_before,
        "known_hosts is not modified"
    );
    tb.assert_lock_free();
    assert_ports(&tb, 8080, 8081);
    if let Some(host) = s.untouched {
        assert_eq!(
            tb.sh_ok(host, "test -e /srv/bluegreen/green && echo yes || echo no"),
            "no",
            "{host} was not touched"
        );
    }
    (s.more)(&tb, &run);
    (s.heal)(&tb);
    report(
        s.name,
        format!(
            "exit 1 after {:.2}s: `{}`; new-conn {} | keep-alive {}",
            run.secs,
            line_with(&run, s.report_word),
            nc.line(),
            ka.line()
        ),
    );
}

#[test]
fn sshd_down_on_an_app_host_touches_nothing() {
    run_scenario("sshd_down");
}

#[test]
fn failing_nginx_config_test_restores_the_upstream_file() {
    run_scenario("nginx_t_fails");
}

#[test]
fn changed_host_key_is_refused() {
    run_scenario("host_key_changed");
}

#[test]
fn every_scenario_has_its_test() {
    let src = include_str!("faults.rs");
    for s in &SCENARIOS {
        assert!(
            src.contains(&format!("run_scenario(\"{}\")", s.name)),
            "no test runs the scenario {}",
            s.name
        );
    }
}

#[test]
fn ctrl_c_on_the_rendered_script_during_verify_undoes() {
    let _serial = serial();
    let tb = Testbed::up(2);
    let wd = Workdir::with(&tb, &realistic("60s"));
    setup_deploy(&tb, &wd, "v1");
    let before = tb.state();
    let upstream_before = upstream(&tb);

    // A slow boot keeps the script in its verify phase long enough to interrupt it there.
    edit_config(&wd, |c| with_boot_delay(c, 6000));
    wd.stage("v2");
    Cmd::bluegreen(wd.path(), &["render", "script", "-o", "deploy.sh"])
        .run()
        .assert_code(0);
    let traffic = Traffic::with_slow(&tb, 2, SLOW_WORKERS);
    std::thread::sleep(Duration::from_millis(300));
    traffic.allow(&["v1"]);
    // Its own process group, as in a terminal: Ctrl-C sends SIGINT to the whole foreground group.
    let child = Cmd::script(wd.path(), "deploy.sh", &[]).own_group().spawn();
    let started = child.started;
    let pgid = child.child.id();
    wait_for(
        "the new instances to start",
        Duration::from_secs(30),
        || tb.port_open("app1", 8081) && tb.port_open("app2", 8081),
    );
    let int_at = started.elapsed().as_secs_f64();
    let killed = Command::new("kill")
        .args(["-INT", "--", &format!("-{pgid}")])
        .status()
        .unwrap();
    assert!(killed.success());
    let run = child.wait();
    std::thread::sleep(Duration::from_millis(300));
    let (nc, ka) = traffic.stop();

    assert_ne!(
        run.code,
        Some(0),
        "an interrupted deploy fails:\n{}",
        run.out()
    );
    assert_says(&run, &["interrupted", "abort: done"]);
    assert_untouched(&nc, &ka);
    assert_serves(&tb, "v1");
    assert_eq!(tb.state(), before, "the state file is unchanged");
    assert_eq!(
        upstream(&tb),
        upstream_before,
        "the upstream file is unchanged"
    );
    tb.assert_lock_free();
    assert_ports(&tb, 8080, 8081);
    report(
        "script_ctrl_c_in_verify",
        format!(
            "SIGINT to the script's process group {int_at:.2}s in; exit {:?} after {:.2}s; new-conn {} | keep-alive {}",
            run.code,
            run.secs,
            nc.line(),
            ka.line()
        ),
    );
}

/// The pid of the instance answering on `port` of app host `host`, from its `X-App-Pid` header.
fn pid_on(tb: &Testbed, host: usize, port: u16) -> String {
    let out = Command::new("curl")
        .args(["-s", "-m", "5", "-D", "-", "-o", "/dev/null"])
        .arg(format!(
            "http://{}:{port}/version",
            tb.app_addrs()[host - 1]
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-app-pid")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default()
}

#[test]
fn retained_old_slot_is_stopped_before_the_next_deploy_into_it() {
    let _serial = serial();
    let tb = Testbed::up(2);
    let wd = Workdir::with(&tb, &realistic("30s").extra("retain: 10m\n"));
    setup_deploy(&tb, &wd, "v1");
    setup_deploy(&tb, &wd, "v2");
    // v1 keeps running in blue for the rollback window.
    let retained: Vec<String> = (1..=2).map(|h| pid_on(&tb, h, 8080)).collect();
    for h in 1..=2 {
        assert_eq!(
            version_on(&tb, h, 8080),
            "v1",
            "app{h}: v1 retained in blue"
        );
        assert_eq!(version_on(&tb, h, 8081), "v2");
    }

    wd.stage("v3");
    let traffic = Traffic::with_slow(&tb, 2, SLOW_WORKERS);
    std::thread::sleep(Duration::from_millis(300));
    traffic.allow(&["v2", "v3"]);
    let probe = StopProbe::start(&tb, &traffic, "blue");
    let run = exec(&wd, "faults-retained");
    traffic.allow(&["v3"]);
    let shutdowns = probe.finish();
    std::thread::sleep(Duration::from_millis(300));
    let (nc, ka) = traffic.stop();

    assert_code(&run, 0);
    assert_untouched(&nc, &ka);
    assert_graceful(&shutdowns, SHUTDOWN_MS);
    assert_serves(&tb, "v3");
    let state = tb.state();
    assert_eq!(
        (state["live"].as_str(), state["previous"].as_str()),
        ("blue", "green"),
        "{state:?}"
    );
    for h in 1..=2 {
        let host = format!("app{h}");
        assert_eq!(version_on(&tb, h, 8080), "v3", "{host}: v3 in blue");
        let pid = pid_on(&tb, h, 8080);
        assert_ne!(pid, retained[h - 1], "{host}: a new instance in blue");
        // The retained v1 is gone (not merely unreachable), and v2 is now the one retained.
        let alive = tb.sh(&host, &format!("kill -0 {}", retained[h - 1]));
        assert!(
            !alive.status.success(),
            "{host}: the retained v1 was stopped"
        );
        assert_eq!(
            version_on(&tb, h, 8081),
            "v2",
            "{host}: v2 retained in green"
        );
    }
    tb.assert_lock_free();
    let log = tb.sh_ok("app1", "cat /srv/bluegreen/blue/app.log");
    assert!(
        log.contains("stopped v1 on port 8080"),
        "v1 shut down gracefully:\n{log}"
    );
    report(
        "retained_slot_reused",
        format!(
            "deploy of v3 into the slot still running v1 (pids {retained:?}): ok in {:.2}s; new-conn {} | keep-alive {}; retained v1's shutdown: {}",
            run.secs,
            nc.line(),
            ka.line(),
            shutdown_line(&shutdowns)
        ),
    );
}

#[test]
fn foreign_process_on_the_idle_port_is_left_alone() {
    let _serial = serial();
    let tb = Testbed::up(2);
    let wd = Workdir::with(&tb, &realistic("30s"));
    setup_deploy(&tb, &wd, "v1");
    let before = tb.state();
    let upstream_before = upstream(&tb);

    // Something bluegreen did not start listens on app1's idle port (green, 8081).
    let pid = tb.sh_ok(
        "app1",
        "setsid perl -MIO::Socket::INET -e '$0 = \"foreign-listener\"; \
         my $s = IO::Socket::INET->new(LocalPort => 8081, Listen => 16, ReuseAddr => 1) or die $!; \
         while (my $c = $s->accept) { close $c }' </dev/null >/dev/null 2>&1 & echo $!",
    );
    wait_for("the foreign listener", Duration::from_secs(5), || {
        tb.port_open("app1", 8081)
    });

    wd.stage("v2");
    let traffic = Traffic::with_slow(&tb, 2, SLOW_WORKERS);
    std::thread::sleep(Duration::from_millis(300));
    traffic.allow(&["v1"]);
    let run = exec(&wd, "faults-foreign");
    std::thread::sleep(Duration::from_millis(300));
    let (nc, ka) = traffic.stop();

    assert_code(&run, 1);
    assert_says(
        &run,
        &[
            "app1: start failed",
            "port 8081 is in use by a process bluegreen did not start; not starting green",
        ],
    );
    assert_untouched(&nc, &ka);
    assert_serves(&tb, "v1");
    assert_eq!(tb.state(), before, "the state file is unchanged");
    assert_eq!(
        upstream(&tb),
        upstream_before,
        "the upstream file is unchanged"
    );
    tb.assert_lock_free();
    let alive = tb.sh("app1", &format!("kill -0 {pid}"));
    assert!(alive.status.success(), "the foreign process was not killed");
    assert!(tb.port_open("app1", 8081), "it still holds its port");
    assert!(!tb.port_open("app2", 8081), "app2: new instance stopped");
    assert!(tb.port_open("app1", 8080) && tb.port_open("app2", 8080));
    tb.sh_ok("app1", &format!("kill {pid}"));
    report(
        "foreign_process_on_idle_port",
        format!(
            "exit 1 after {:.2}s: `{}`; foreign pid {pid} still alive; new-conn {} | keep-alive {}",
            run.secs,
            line_with(&run, "did not start"),
            nc.line(),
            ka.line()
        ),
    );
}

/// Load in both modes, with a watcher that notes when failures happen.
struct Watched {
    new_conn: Arc<Load>,
    keep_alive: Arc<Load>,
    stop: Arc<AtomicBool>,
    /// Milliseconds since `t0` of the first and last sample that saw the failure count grow.
    first_fail: Arc<AtomicU64>,
    last_fail: Arc<AtomicU64>,
    watcher: std::thread::JoinHandle<()>,
    t0: Instant,
}

impl Watched {
    fn start(tb: &Testbed) -> Watched {
        let addr = tb.proxy_http().parse().unwrap();
        let mut a = Options::new(addr, Mode::NewConnection);
        a.workers = 2;
        let mut b = Options::new(addr, Mode::KeepAlive);
        b.workers = 2;
        let new_conn = Arc::new(Load::start(a));
        let keep_alive = Arc::new(Load::start(b));
        let stop = Arc::new(AtomicBool::new(false));
        let first_fail = Arc::new(AtomicU64::new(u64::MAX));
        let last_fail = Arc::new(AtomicU64::new(0));
        let t0 = Instant::now();
        let watcher = {
            let (nc, ka, stop, first, last) = (
                new_conn.clone(),
                keep_alive.clone(),
                stop.clone(),
                first_fail.clone(),
                last_fail.clone(),
            );
            std::thread::spawn(move || {
                let mut seen = 0;
                while !stop.load(Ordering::SeqCst) {
                    let n = nc.snapshot().failures() + ka.snapshot().failures();
                    if n > seen {
                        seen = n;
                        let ms = t0.elapsed().as_millis() as u64;
                        first.fetch_min(ms, Ordering::SeqCst);
                        last.store(ms, Ordering::SeqCst);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        Watched {
            new_conn,
            keep_alive,
            stop,
            first_fail,
            last_fail,
            watcher,
            t0,
        }
    }

    fn allow(&self, versions: &[&str]) {
        self.new_conn.allow(versions);
        self.keep_alive.allow(versions);
    }

    fn failures(&self) -> u64 {
        self.new_conn.snapshot().failures() + self.keep_alive.snapshot().failures()
    }

    /// Counts of both modes, and the window (ms since start) in which failures were seen.
    fn stop(self) -> (Counts, Counts, Option<(u64, u64)>) {
        self.stop.store(true, Ordering::SeqCst);
        self.watcher.join().unwrap();
        let nc = Arc::try_unwrap(self.new_conn).ok().unwrap().stop();
        let ka = Arc::try_unwrap(self.keep_alive).ok().unwrap().stop();
        let first = self.first_fail.load(Ordering::SeqCst);
        let window = (first != u64::MAX).then(|| (first, self.last_fail.load(Ordering::SeqCst)));
        (nc, ka, window)
    }
}

// Ignored until `bg_switch` waits for nginx to apply the reload: `nginx -s reload` only signals the
// master, so the check after the switch is answered by the old workers (the old slot), passes, and
// the dying version stays live.
#[test]
fn new_version_dying_after_the_switch_is_switched_back() {
    let _serial = serial();
    let tb = Testbed::up(2);
    // health: 2 successes every 200ms, and a check through the proxy after the switch (the config
    // of tb.config): the `dies` version passes the polling and crashes on that check.
    let wd = Workdir::new(&tb, "30s", "");
    setup_deploy(&tb, &wd, "v1");
    let before = tb.state();
    let upstream_before = upstream(&tb);

    std::fs::copy(dies_jar(), wd.path().join("artifact/demo.jar")).unwrap();
    let load = Watched::start(&tb);
    std::thread::sleep(Duration::from_millis(300));
    load.allow(&["v1", "dies"]);
    let started_ms = load.t0.elapsed().as_millis() as u64;
    let run = exec(&wd, "faults-dies");
    let ended_ms = load.t0.elapsed().as_millis() as u64;
    load.allow(&["v1"]);
    let failed_at_end = load.failures();
    std::thread::sleep(Duration::from_millis(500));
    let failed_later = load.failures();
    let (nc, ka, window) = load.stop();

    let logs: Vec<String> = ["app1", "app2"]
        .iter()
        .map(|h| tb.sh_ok(h, "cat /srv/bluegreen/green/app.log"))
        .collect();
    assert_eq!(
        run.code,
        Some(1),
        "exit code; output:\n{}\napp logs:\n{logs:#?}",
        run.out()
    );
    assert_says(
        &run,
        &[
            "proxy: check after the switch failed",
            "/actuator/health expected 200",
            "traffic back on blue (port 8080)",
        ],
    );
    // Requests fail between the new version's death (on the first check) and the switch back:
    // all of them inside the deploy, none after it returned, and for a bounded time (the check's
    // six tries half a second apart, then the switch back).
    assert_eq!(
        failed_later,
        failed_at_end,
        "no failure after the switch back: {} | {}",
        nc.line(),
        ka.line()
    );
    if let Some((first, last)) = window {
        assert!(
            first >= started_ms && last <= ended_ms + 50,
            "failures only during the deploy: {first}..{last} ms, deploy {started_ms}..{ended_ms} ms"
        );
        assert!(
            last - first < 6000,
            "failures for at most 6 s: {first}..{last} ms"
        );
    }
    assert_serves(&tb, "v1");
    assert_eq!(
        upstream(&tb),
        upstream_before,
        "the upstream file is back as it was"
    );
    let state = tb.state();
    assert_eq!(state, before, "the state file still names the old slot");
    assert_eq!(state["live"], "blue");
    tb.assert_lock_free();
    assert_ports(&tb, 8080, 8081);
    for log in &logs {
        assert!(log.contains("dying on health request 3"), "{log}");
    }
    report(
        "new_version_dies_after_switch",
        format!(
            "exit 1 after {:.2}s: `{}` / `{}`; failures: new-conn {} | keep-alive {}; failure window {}",
            run.secs,
            line_with(&run, "check after the switch failed"),
            line_with(&run, "traffic back on"),
            nc.line(),
            ka.line(),
            match window {
                Some((a, b)) => format!("{} ms ({a}..{b} ms, deploy {started_ms}..{ended_ms} ms)", b - a),
                None => "none".into(),
            }
        ),
    );
}

/// A 2 MiB jar of version `big`, built once.
fn big_jar() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("bluegreen-bigjar-{}", std::process::id()));
        bluegreen_testbed::build_jars(&dir, &["big"], 2048).unwrap();
        dir.join("app-big.jar")
    })
}

#[test]
fn full_disk_on_an_app_host_fails_before_the_switch() {
    let _serial = serial();
    let tb = Testbed::up(2);
    let wd = Workdir::new(&tb, "30s", "");
    setup_deploy(&tb, &wd, "v1");
    let before = tb.state();
    let upstream_before = upstream(&tb);
    // app2's idle slot directory sits on a 512 KiB filesystem; the new jar is 2 MiB.
    tb.sh_ok(
        "app2",
        "mkdir -p /srv/bluegreen/green && mount -t tmpfs -o size=512k tmpfs /srv/bluegreen/green \
         && chown bgdeploy /srv/bluegreen/green",
    );
    std::fs::copy(big_jar(), wd.path().join("artifact/demo.jar")).unwrap();

    // exec sees the free space before it uploads anything.
    let traffic = Traffic::start(&tb, 2);
    traffic.allow(&["v1"]);
    let run = exec(&wd, "faults-disk");
    std::thread::sleep(Duration::from_millis(300));
    let (nc, ka) = traffic.stop();
    assert_code(&run, 1);
    assert_says(
        &run,
        &[
            "app2",
            "free in /srv/bluegreen/green",
            "the artifact needs 2.0 MiB",
        ],
    );
    assert_untouched(&nc, &ka);

    // The rendered script checks the same before its scp, and the abort undoes.
    Cmd::bluegreen(wd.path(), &["render", "script", "-o", "deploy.sh"])
        .run()
        .assert_code(0);
    let traffic = Traffic::start(&tb, 2);
    traffic.allow(&["v1"]);
    let started = Instant::now();
    let out = Cmd::script(wd.path(), "deploy.sh", &[]).output();
    let secs = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    let (nc2, ka2) = traffic.stop();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("[app2] only ")
            && err.contains("KiB free in /srv/bluegreen/green, the artifact needs 2"),
        "{err}"
    );
    assert!(
        err.contains("abort after a failure in the upload phase"),
        "{err}"
    );
    assert_untouched(&nc2, &ka2);

    for (what, _) in [("exec", 0), ("script", 1)] {
        assert_eq!(tb.state(), before, "{what}: the state file is unchanged");
    }
    assert_eq!(
        upstream(&tb),
        upstream_before,
        "the upstream file is unchanged"
    );
    assert_serves(&tb, "v1");
    tb.assert_lock_free();
    assert_ports(&tb, 8080, 8081);
    // The partial upload is not left behind as the slot's jar.
    assert_eq!(
        tb.sh_ok(
            "app2",
            "test -e /srv/bluegreen/green/demo.jar && echo yes || echo no"
        ),
        "no"
    );
    tb.sh_ok("app2", "umount /srv/bluegreen/green");
    report(
        "full_disk",
        format!(
            "exec: exit 1 after {:.2}s: `{}`; script: exit 1 after {secs:.2}s (space checked before scp, undone); \
             new-conn {} / {} | keep-alive {} / {}",
            run.secs,
            line_with(&run, "free in"),
            nc.line(),
            nc2.line(),
            ka.line(),
            ka2.line()
        ),
    );
}
