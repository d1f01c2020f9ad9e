//! Operating safely, on the testbed with `bluegreen exec`: rollback (to a retained slot, and to a
//! stopped one), retire, status with drift, the deploy lock commands, the audit log, and Slack
//! notifications captured by a real HTTP server.

use crate::testbed::{serial, Testbed, Workdir};
use crate::util::Cmd;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Runs `bluegreen ARGS` in the workdir with extra environment variables.
fn bg(wd: &Workdir, args: &[&str], env: &[(&str, &str)]) -> Output {
    Cmd::bluegreen(wd.path(), args).envs(env).output()
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn deploy_ok(wd: &Workdir, version: &str, env: &[(&str, &str)]) {
    wd.stage(version);
    let out = bg(wd, &["exec"], env);
    assert!(out.status.success(), "deploy of {version}: {}", text(&out));
}

fn sha256_of(version: &str) -> String {
    crate::util::sha256(&crate::testbed::jars().join(format!("app-{version}.jar")))
}

/// Runs `bluegreen rollback` and measures, from the moment the command starts, how long until the
/// proxy serves `want` (polled every 20 ms). Returns the output, that time, and the command's time.
fn timed_rollback(
    tb: &Testbed,
    wd: &Workdir,
    want: &str,
    env: &[(&str, &str)],
) -> (Output, f64, f64) {
    let cmd = Cmd::bluegreen(wd.path(), &["rollback"]).envs(env);
    let addr = tb.proxy_http();
    let t0 = Instant::now();
    let child = cmd.spawn().child;
    let mut served = None;
    while t0.elapsed() < Duration::from_secs(60) {
        if http_get(&addr, "/version").as_deref() == Some(want) {
            served = Some(t0.elapsed().as_secs_f64());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let total = t0.elapsed().as_secs_f64();
    let served = served.unwrap_or_else(|| panic!("the proxy never served {want}: {}", text(&out)));
    (out, served, total)
}

/// A GET through a fresh connection; the body on a 200.
fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s =
        std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let (head, body) = resp.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| body.trim().to_string())
}

/// A Slack incoming webhook stand-in: a real HTTP server on 127.0.0.1 recording POST bodies.
struct SlackHook {
    url: String,
    bodies: Arc<Mutex<Vec<String>>>,
}

impl SlackHook {
    fn start() -> SlackHook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let sink = bodies.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut len = 0usize;
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 {
                    if line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    line.clear();
                }
                let mut body = vec![0u8; len];
                let _ = reader.read_exact(&mut body);
                sink.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&body).into_owned());
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            }
        });
        SlackHook { url, bodies }
    }

    /// The `text` of every message so far.
    fn texts(&self) -> Vec<String> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .map(|b| {
                let v: Value = serde_json::from_str(b).unwrap_or_else(|e| panic!("{e}: {b}"));
                assert_eq!(v["channel"], "deploys", "{b}");
                v["text"].as_str().unwrap().to_string()
            })
            .collect()
    }
}

/// Asserts that a Slack text names the app, the slot, the release, a duration and who.
fn assert_slack(text: &str, words: &[&str], slot: &str, release: &str) {
    for w in words
        .iter()
        .chain(&["demo: ", slot, &release[..12], " by root@"])
    {
        assert!(text.contains(w), "Slack text lacks {w:?}: {text}");
    }
    let has_duration = text.split_whitespace().any(|w| {
        w.ends_with('s')
            && w.trim_end_matches("ms")
                .trim_end_matches('s')
                .parse::<f64>()
                .is_ok()
    });
    assert!(has_duration, "Slack text lacks a duration: {text}");
}

fn port_of(slot: &str) -> u16 {
    if slot == "blue" {
        8080
    } else {
        8081
    }
}

fn assert_running(tb: &Testbed, slot: &str, running: bool) {
    for host in ["app1", "app2"] {
        assert_eq!(
            tb.port_open(host, port_of(slot)),
            running,
            "{host}: {slot} should {}be running",
            if running { "" } else { "not " }
        );
    }
}

fn history_json(wd: &Workdir) -> Vec<Value> {
    let out = bg(wd, &["history", "--json", "-n", "50"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn rollback_to_a_retained_slot_then_retire_with_slack_and_history() {
    let _serial = serial();
    let tb = Testbed::up(2);
    let hook = SlackHook::start();
    let slack = "retain: 10m\nslack:\n  channel: deploys\n";
    let wd = Workdir::new(&tb, "60s", slack);
    let env = [("SLACK_WEBHOOK_URL", hook.url.as_str())];

    deploy_ok(&wd, "v1", &env);
    deploy_ok(&wd, "v2", &env);
    // v1 stays on blue for the rollback window.
    assert_running(&tb, "blue", true);
    assert_running(&tb, "green", true);
    let st = bg(&wd, &["status"], &[]);
    assert_eq!(st.status.code(), Some(0), "{}", text(&st));
    assert!(stdout(&st).contains("retained"), "{}", text(&st));

    let (out, served, total) = timed_rollback(&tb, &wd, "v1", &env);
    assert!(out.status.success(), "{}", text(&out));
    eprintln!(
        "rollback to a retained slot: proxy served v1 after {served:.2}s, command took {total:.2}s"
    );
    assert!(
        served < 3.0,
        "rollback took {served:.2}s to reach the proxy"
    );
    let v1 = sha256_of("v1");
    assert!(
        stdout(&out).starts_with(&format!(
            "rolled back demo to {} on blue (from: green)",
            &v1[..12]
        )),
        "{}",
        text(&out)
    );
    assert!(
        stderr(&out).contains("blue still running as pid"),
        "{}",
        text(&out)
    );
    let state = tb.state();
    assert_eq!(
        (
            state["live"].as_str(),
            state["previous"].as_str(),
            state["release"].as_str()
        ),
        ("blue", "green", v1.as_str())
    );
    // The slot rolled back from is retained in turn.
    assert_running(&tb, "green", true);
    tb.assert_lock_free();

    // `retire --if-expired` (the cron job) leaves the window alone while it is open.
    let out = bg(&wd, &["retire", "--if-expired"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stdout(&out).contains("the rollback window is open for another ")
            && stdout(&out).contains("retain: 10m): nothing retired"),
        "{}",
        text(&out)
    );
    assert_running(&tb, "green", true);

    // Retire ends the window: green stops, blue keeps serving.
    let out = bg(&wd, &["retire"], &env);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stdout(&out).starts_with("retired the green slot of demo (live: blue)"),
        "{}",
        text(&out)
    );
    assert_running(&tb, "green", false);
    assert_running(&tb, "blue", true);
    assert_eq!(
        http_get(&tb.proxy_http(), "/version").as_deref(),
        Some("v1")
    );
    tb.assert_lock_free();
    let out = bg(&wd, &["retire", "--if-expired"], &[]);
    assert!(
        out.status.success() && stdout(&out).contains("nothing to retire"),
        "{}",
        text(&out)
    );

    // A broken version fails its deploy: a failure notification.
    let broken = Workdir::new(&tb, "3s", slack);
    broken.stage("broken");
    let out = bg(&broken, &["exec"], &env);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    let texts = hook.texts();
    assert_eq!(
        texts.len(),
        4,
        "deploy, deploy, rollback, failed deploy (retire is quiet): {texts:#?}"
    );
    assert_slack(&texts[0], &["deployed", "succeeded"], "blue", &v1);
    assert_slack(
        &texts[1],
        &["deployed", "succeeded", "previous: blue"],
        "green",
        &sha256_of("v2"),
    );
    assert_slack(
        &texts[2],
        &["rolled back to", "succeeded", "from green"],
        "blue",
        &v1,
    );
    assert_slack(
        &texts[3],
        &["deploy of", "FAILED in verify", "not healthy"],
        "green",
        &sha256_of("broken"),
    );

    // One audit line per event.
    let events = history_json(&wd);
    let summary: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
                e["target"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("deploy", "success", "blue"),
            ("deploy", "success", "green"),
            ("rollback", "success", "blue"),
            ("retire", "success", "green"),
            ("deploy", "failed", "green"),
        ]
    );
    assert_eq!(events[2]["release"], v1.as_str());
    assert!(events[2]["deployer"].as_str().unwrap().starts_with("root@"));
    let out = bg(&wd, &["history", "-n", "2"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    eprintln!("history:\n{}", stdout(&out));
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].contains("retire") && lines[1].contains("failed"),
        "{lines:?}"
    );
    assert!(lines[1].contains(&sha256_of("broken")[..12]), "{lines:?}");
}

#[test]
fn rollback_restarts_a_stopped_release_and_refuses_without_one() {
    let _serial = serial();
    let tb = Testbed::up(2);
    let wd = Workdir::new(&tb, "60s", "");

    // Nothing deployed yet: nothing live.
    let out = bg(&wd, &["rollback"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        stderr(&out).contains("nothing to roll back to"),
        "{}",
        text(&out)
    );
    tb.assert_lock_free();

    // After a first deploy the other slot keeps no release.
    deploy_ok(&wd, "v1", &[]);
    let before = tb.state();
    let out = bg(&wd, &["rollback"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        stderr(&out).contains("error: proxy: no previous release recorded")
            && stderr(&out).contains("nothing to roll back to"),
        "{}",
        text(&out)
    );
    assert_eq!(tb.state(), before);
    tb.assert_lock_free();

    // Without retain the old slot is stopped after the switch; rollback restarts its kept jar.
    deploy_ok(&wd, "v2", &[]);
    assert_running(&tb, "blue", false);
    let (out, served, total) = timed_rollback(&tb, &wd, "v1", &[]);
    assert!(out.status.success(), "{}", text(&out));
    eprintln!(
        "rollback with restart: proxy served v1 after {served:.2}s, command took {total:.2}s"
    );
    assert!(
        stderr(&out).contains("started blue on port 8080"),
        "{}",
        text(&out)
    );
    assert_running(&tb, "blue", true);
    assert_running(&tb, "green", false);
    let state = tb.state();
    assert_eq!(state["live"], "blue");
    assert_eq!(state["release"], sha256_of("v1"));
    for _ in 0..5 {
        assert_eq!(
            http_get(&tb.proxy_http(), "/version").as_deref(),
            Some("v1")
        );
    }
    tb.assert_lock_free();
}

#[test]
fn status_reports_drift_and_honours_key_overrides() {
    let _serial = serial();
    let tb = Testbed::up(2);
    let wd = Workdir::new(&tb, "60s", "");
    deploy_ok(&wd, "v1", &[]);
    deploy_ok(&wd, "v2", &[]);

    // A config whose key and known_hosts do not exist: $BG_SSH_KEY and $BG_KNOWN_HOSTS override them.
    let cfg = std::fs::read_to_string(wd.path().join("bluegreen.yaml")).unwrap();
    let moved = cfg
        .replace(tb.var("SSH_KEY"), "/nonexistent/key")
        .replace(tb.var("KNOWN_HOSTS"), "/nonexistent/known_hosts");
    assert_ne!(cfg, moved);
    std::fs::write(wd.path().join("moved.yaml"), moved).unwrap();
    let out = bg(&wd, &["-c", "moved.yaml", "status"], &[]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let env = [
        ("BG_SSH_KEY", tb.var("SSH_KEY")),
        ("BG_KNOWN_HOSTS", tb.var("KNOWN_HOSTS")),
    ];
    let out = bg(&wd, &["-c", "moved.yaml", "status"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let s = stdout(&out);
    eprintln!("status:\n{s}");
    let v2 = sha256_of("v2");
    assert!(s.contains("upstream -> green"), "{s}");
    assert!(
        s.contains(&format!(
            "state: live=green previous=blue release={}",
            &v2[..12]
        )),
        "{s}"
    );
    assert!(s.contains("lock:  free"), "{s}");
    assert!(s.trim_end().ends_with("consistent"), "{s}");
    let line = s
        .lines()
        .find(|l| l.trim_start().starts_with("green :8081"))
        .unwrap();
    assert!(
        line.contains("live") && line.contains("healthy") && line.contains(&v2[..12]),
        "{line}"
    );

    let out = bg(&wd, &["status", "--json"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let j: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(j["consistent"], true);
    assert_eq!(j["proxy"]["upstream"], "green");
    assert_eq!(j["proxy"]["state"]["live"], "green");
    assert_eq!(j["proxy"]["lock"]["held"], false);
    for h in j["hosts"].as_array().unwrap() {
        let slots = h["slots"].as_array().unwrap();
        assert_eq!(slots[0]["slot"], "blue");
        assert_eq!(slots[0]["role"], "idle");
        assert_eq!(slots[0]["pid"], Value::Null);
        assert_eq!(slots[1]["role"], "live");
        assert_eq!(slots[1]["healthy"], true);
        assert_eq!(slots[1]["release"], v2.as_str());
        assert!(slots[1]["pid"].as_u64().is_some() && slots[1]["uptime_secs"].as_u64().is_some());
    }

    // Drift: the live instance on app2 dies.
    tb.sh_ok(
        "app2",
        &format!("kill -9 -- -$(cat {}/green/app.pid)", tb.var("DEPLOY_DIR")),
    );
    let out = bg(&wd, &["status"], &[]);
    eprintln!("status with drift:\n{}", stdout(&out));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stdout(&out).contains("DRIFT: app2: the live slot green is not running"),
        "{}",
        text(&out)
    );
    // And the state file disagrees with the upstream.
    tb.sh_ok(
        "proxy",
        &format!(
            "sed -i 's/^live=green/live=blue/' {}/state",
            tb.var("STATE_DIR")
        ),
    );
    let out = bg(&wd, &["status", "--json"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let j: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(j["consistent"], false);
    let drift: Vec<&str> = j["drift"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(
        drift,
        [
            "proxy: the upstream points at green but the state file says live=blue",
            "app2: the live slot green is not running",
        ]
    );
}

#[test]
fn lock_show_release_force_and_wait() {
    let _serial = serial();
    let tb = Testbed::up(2);
    let wd = Workdir::new(&tb, "60s", "");
    let dir = tb.var("STATE_DIR").to_string();
    let user = tb.var("SSH_USER").to_string();
    // As another run would: the deploy user owns its lock.
    let take = |who: &str| {
        tb.sh_ok(
            "proxy",
            &format!("mkdir -p {dir}/lock && printf 'holder={who}\\nmessage=hands off\\n' > {dir}/lock/info && chown -R {user}: {dir}/lock"),
        );
    };

    let out = bg(&wd, &["lock", "show"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(stdout(&out).trim(), format!("{dir}/lock: free"));

    take("someone");
    let out = bg(&wd, &["lock", "show"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let s = stdout(&out);
    assert!(s.contains("held by someone since"), "{s}");
    assert!(
        s.contains("message: hands off")
            && s.contains("stale:   no (when not renewed for lock.stale_after: 20s)"),
        "{s}"
    );

    // Not stale: release refuses and says how to force it.
    let out = bg(&wd, &["lock", "release"], &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        stderr(&out).contains("bluegreen lock release --force"),
        "{}",
        text(&out)
    );

    // A deploy fails at once, or after --lock-wait, naming the holder; nothing else runs.
    wd.stage("v1");
    let out = bg(&wd, &["exec"], &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        stderr(&out).contains("the deploy lock is held: holder=someone"),
        "{}",
        text(&out)
    );
    let t = Instant::now();
    let out = bg(&wd, &["exec", "--lock-wait", "2s"], &[]);
    let waited = t.elapsed();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(waited >= Duration::from_secs(2), "{waited:?}");
    assert!(
        stderr(&out).contains("held by holder=someone"),
        "{}",
        text(&out)
    );
    assert!(stderr(&out).contains("(waited 2."), "{}", text(&out));
    assert_eq!(
        tb.sh_ok("proxy", &format!("cat {dir}/lock/info")),
        "holder=someone\nmessage=hands off"
    );

    // --force removes it.
    let out = bg(&wd, &["lock", "release", "--force"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stdout(&out).contains("lock of someone removed"),
        "{}",
        text(&out)
    );
    tb.assert_lock_free();

    // A stale lock (not renewed within lock.stale_after) is flagged and released without --force.
    take("crashed-job");
    tb.sh_ok("proxy", &format!("touch -d '2 hours ago' {dir}/lock"));
    let out = bg(&wd, &["lock", "show"], &[]);
    assert!(stdout(&out).contains("stale:   YES"), "{}", text(&out));
    let out = bg(&wd, &["status"], &[]);
    assert!(
        stdout(&out).contains("lock of crashed-job is stale"),
        "{}",
        text(&out)
    );
    let out = bg(&wd, &["lock", "release"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    tb.assert_lock_free();

    // --lock-wait: the deploy goes ahead once the holder lets go.
    take("slow-job");
    let child = Cmd::bluegreen(wd.path(), &["exec", "--lock-wait", "30s"])
        .spawn()
        .child;
    std::thread::sleep(Duration::from_secs(2));
    tb.sh_ok("proxy", &format!("rm -rf {dir}/lock"));
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stderr(&out).contains("held by holder=slow-job"),
        "{}",
        text(&out)
    );
    assert!(stderr(&out).contains("after waiting"), "{}", text(&out));
    assert_eq!(
        http_get(&tb.proxy_http(), "/version").as_deref(),
        Some("v1")
    );
    tb.assert_lock_free();

    // A lock whose runner died (no renewal for longer than lock.stale_after) is taken over by the
    // next deploy on its own: no --force, no waiting, and the audit log says so.
    take("dead-runner");
    tb.sh_ok("proxy", &format!("touch -d '1 minute ago' {dir}/lock"));
    wd.stage("v2");
    let out = bg(&wd, &["exec"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("took over the lock of dead-runner, not renewed for"),
        "{}",
        text(&out)
    );
    tb.assert_lock_free();

    // The audit log: two lock breaks and the deploy.
    let events: Vec<(String, String)> = history_json(&wd)
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            (
                "lock-break".to_string(),
                "removed lock of someone".to_string()
            ),
            (
                "lock-break".to_string(),
                "removed lock of crashed-job".to_string()
            ),
            ("deploy".to_string(), "success".to_string()),
            (
                "lock-break".to_string(),
                "took over the expired lock of dead-runner".to_string()
            ),
            ("deploy".to_string(), "success".to_string()),
        ]
    );
}
