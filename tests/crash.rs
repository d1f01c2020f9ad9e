//! Crash safety: the runner is killed with SIGKILL at every step boundary of a deploy and of a
//! rollback (exec; the rendered script with its whole process tree, as a dying Jenkins agent's is),
//! under continuous load through nginx. Then, as an operator would: `status` must describe what is
//! there (exit 1 exactly when it names drift), one `exec --lock-wait 2m` must converge (the new
//! version served by every host, no instance left that the slots' records do not know, the lock
//! free), and `status` must then exit 0. No request may fail because of a crash before the switch;
//! those that fail after it are counted and reported.
//!
//! The boundaries come from the plan itself (`Plan::steps`), so a new step is covered without
//! editing this file; the runners die there through `BLUEGREEN_KILL_AT_STEP`.

use crate::e2e::Traffic;
use crate::testbed::{serial, Testbed, Workdir};
use crate::util::Cmd;
use bluegreen_core::{Config, Plan, Step};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};
use std::time::Instant;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Runner {
    Exec,
    Script,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum What {
    Deploy,
    Rollback,
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn bluegreen(wd: &Workdir, args: &[&str], kill_at: Option<usize>) -> Output {
    Cmd::bluegreen(wd.path(), args).kill_at(kill_at).output()
}

fn script(wd: &Workdir, action: &str, kill_at: Option<usize>) -> Output {
    Cmd::script(wd.path(), "deploy.sh", &[action])
        .own_group()
        .kill_at(kill_at)
        .output()
}

/// The plan's steps as `number phase/step host`, and the number of the first step that can move
/// traffic (the switch's intent: a crash before it must not fail a single request).
fn boundaries(wd: &Workdir, what: What) -> (Vec<String>, usize) {
    let config = Config::load(&wd.path().join("bluegreen.yaml")).unwrap();
    let plan = match what {
        What::Deploy => Plan::new(&config),
        What::Rollback => Plan::rollback(&config),
    };
    let labels = plan
        .steps()
        .map(|(i, p, s)| {
            format!(
                "{i} {}/{} {}",
                p.kind.name(),
                s.name(),
                s.host().unwrap_or("")
            )
        })
        .collect();
    let switch = plan
        .steps()
        .find(|(_, _, s)| matches!(s, Step::Intent(_)))
        .map(|(i, _, _)| i)
        .unwrap();
    (labels, switch)
}

/// Every app host's `port` answers `version`, asked directly.
fn hosts_serve(tb: &Testbed, port: u16, version: &str) -> bool {
    tb.app_addrs().iter().all(|a| {
        let o = Command::new("curl")
            .args(["-s", "-m", "5"])
            .arg(format!("http://{a}:{port}/version"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim() == version
    })
}

fn matrix(runner: Runner, what: What) {
    let _g = serial();
    let tb = Testbed::up(2);
    // A fast app, a short lease (a dead runner's lock is taken over 2 s after its last renewal).
    let wd = Workdir::new(&tb, "60s", "lock:\n  stale_after: 2s\n");
    if runner == Runner::Script {
        let r = bluegreen(&wd, &["render", "script", "-o", "deploy.sh"], None);
        assert!(r.status.success(), "{}", text(&r));
    }
    let versions = ["v1", "v2", "v3", "v4", "v5", "v6"];
    let mut next = 0;
    let deploy = |v: &str, wd: &Workdir| {
        wd.stage(v);
        let r = bluegreen(wd, &["exec", "--lock-wait", "2m"], None);
        assert!(r.status.success(), "deploy {v}:\n{}", text(&r));
    };
    deploy(versions[0], &wd);
    deploy(versions[1], &wd);
    next = (next + 2) % versions.len();
    let (labels, switch_at) = boundaries(&wd, what);
    let mut report = Vec::new();
    for (i, label) in labels.iter().enumerate() {
        let version = versions[next];
        next = (next + 1) % versions.len();
        if what == What::Deploy {
            wd.stage(version);
        }
        let traffic = Traffic::start(&tb, 2);
        traffic.allow(&versions);
        let action = match what {
            What::Deploy => "exec",
            What::Rollback => "rollback",
        };
        let t = Instant::now();
        let crashed = match runner {
            Runner::Exec => bluegreen(&wd, &[action], Some(i)),
            Runner::Script => script(
                &wd,
                if what == What::Deploy {
                    "deploy"
                } else {
                    "rollback"
                },
                Some(i),
            ),
        };
        assert_eq!(
            crashed.status.signal(),
            Some(9),
            "{runner:?} {what:?} at {label}: killed by SIGKILL\n{}",
            text(&crashed)
        );
        let crash_secs = t.elapsed().as_secs_f64();

        // What an operator sees: status exits 1 exactly when it names drift.
        let st = bluegreen(&wd, &["status"], None);
        let st_text = text(&st);
        let drift: Vec<&str> = st_text
            .lines()
            .filter_map(|l| l.strip_prefix("DRIFT: "))
            .collect();
        assert_eq!(
            st.status.code(),
            Some(if drift.is_empty() { 0 } else { 1 }),
            "{runner:?} {what:?} at {label}: status:\n{st_text}"
        );

        // One deploy converges, whatever the crash left.
        if what == What::Rollback {
            wd.stage(version);
        }
        let t = Instant::now();
        let conv = bluegreen(&wd, &["exec", "--lock-wait", "2m"], None);
        let conv_secs = t.elapsed().as_secs_f64();
        let (nc, ka) = traffic.stop();
        assert!(
            conv.status.success(),
            "{runner:?} {what:?} at {label}: the next deploy must converge:\n{}",
            text(&conv)
        );
        assert_eq!(tb.version_via_proxy(), version, "at {label}");
        let live: u16 = if tb.state()["live"] == "blue" {
            8080
        } else {
            8081
        };
        let idle = if live == 8080 { 8081 } else { 8080 };
        assert!(
            hosts_serve(&tb, live, version),
            "at {label}: every host serves {version}"
        );
        for h in ["app1", "app2"] {
            assert!(
                !tb.port_open(h, idle),
                "at {label}: {h}: nothing left in the idle slot"
            );
        }
        tb.assert_lock_free();
        let after = bluegreen(&wd, &["status"], None);
        assert_eq!(
            after.status.code(),
            Some(0),
            "at {label}: status after converging:\n{}",
            text(&after)
        );
        let failed = nc.failures() + ka.http_errors();
        if i < switch_at {
            assert_eq!(
                failed,
                0,
                "at {label} (before the switch): new-connection {} | keep-alive {}",
                nc.line(),
                ka.line()
            );
        }
        report.push(format!(
            "{label:<22} killed after {crash_secs:.1}s; status exit {} ({}); converged in {conv_secs:.1}s; failed requests {failed} (keep-alive resets {})",
            st.status.code().unwrap_or(-1),
            if drift.is_empty() {
                "no drift".to_string()
            } else {
                drift.join(" | ")
            },
            ka.reset,
        ));
    }
    println!("crash matrix: {runner:?} {what:?}");
    for line in &report {
        println!("crash report: {line}");
    }
}

#[test]
fn exec_killed_at_every_step_of_a_deploy() {
    matrix(Runner::Exec, What::Deploy);
}

#[test]
fn script_killed_at_every_step_of_a_deploy() {
    matrix(Runner::Script, What::Deploy);
}

#[test]
fn exec_killed_at_every_step_of_a_rollback() {
    matrix(Runner::Exec, What::Rollback);
}

#[test]
fn script_killed_at_every_step_of_a_rollback() {
    matrix(Runner::Script, What::Rollback);
}

/// The number of the first step named `name` in the deploy plan.
fn step_of(wd: &Workdir, name: &str) -> usize {
    let config = Config::load(&wd.path().join("bluegreen.yaml")).unwrap();
    Plan::new(&config)
        .steps()
        .find(|(_, _, s)| s.name() == name)
        .map(|(i, _, _)| i)
        .unwrap()
}

#[test]
fn status_fix_puts_right_what_has_one_safe_answer_and_names_the_rest() {
    let _g = serial();
    let tb = Testbed::up(2);
    let wd = Workdir::new(&tb, "60s", "lock:\n  stale_after: 2s\n");
    for v in ["v1", "v2"] {
        wd.stage(v);
        let r = bluegreen(&wd, &["exec"], None);
        assert!(r.status.success(), "{}", text(&r));
    }
    let expire = || std::thread::sleep(std::time::Duration::from_millis(2500));

    // Killed before the switch: new instances in the idle slot, a lock nobody renews.
    wd.stage("v3");
    let crashed = bluegreen(&wd, &["exec"], Some(step_of(&wd, "intent")));
    assert_eq!(crashed.status.signal(), Some(9), "{}", text(&crashed));
    expire();
    let st = bluegreen(&wd, &["status"], None);
    assert_eq!(st.status.code(), Some(1), "{}", text(&st));
    for w in [
        "neither the live nor the previous one",
        "lock of",
        "is stale",
    ] {
        assert!(text(&st).contains(w), "status names `{w}`:\n{}", text(&st));
    }
    let fix = bluegreen(&wd, &["status", "--fix"], None);
    let fixed = text(&fix);
    assert_eq!(fix.status.code(), Some(0), "{fixed}");
    for w in [
        "fixed: took over the stale deploy lock of",
        "fixed: app1: stopped the idle slot blue",
        "fixed: app2: stopped the idle slot blue",
        "consistent",
    ] {
        assert!(fixed.contains(w), "`{w}` in:\n{fixed}");
    }
    for h in ["app1", "app2"] {
        assert!(!tb.port_open(h, 8080), "{h}: the orphan is stopped");
    }
    assert_eq!(tb.version_via_proxy(), "v2", "traffic untouched");
    tb.assert_lock_free();

    // Killed after the switch, before the state file was written: the upstream names green (v3),
    // the state file still says blue. --fix records what the intent says happened.
    let crashed = bluegreen(&wd, &["exec"], Some(step_of(&wd, "record")));
    assert_eq!(crashed.status.signal(), Some(9), "{}", text(&crashed));
    assert_eq!(tb.version_via_proxy(), "v3");
    expire();
    let st = bluegreen(&wd, &["status"], None);
    assert_eq!(st.status.code(), Some(1), "{}", text(&st));
    assert!(
        text(&st).contains("was switching traffic to blue and stopped before recording it"),
        "{}",
        text(&st)
    );
    let fix = bluegreen(&wd, &["status", "--fix"], None);
    let fixed = text(&fix);
    assert_eq!(fix.status.code(), Some(0), "{fixed}");
    assert!(
        fixed.contains("switched to blue and stopped before recording it; state file updated"),
        "{fixed}"
    );
    let state = tb.state();
    assert_eq!(state["live"], "blue", "{state:?}");
    assert_eq!(state["previous"], "green", "{state:?}");

    // What needs a person is named and left alone: the live instance on app1 is gone.
    tb.sh_ok(
        "app1",
        "p=$(cut -d' ' -f1 /srv/bluegreen/blue/app.pid) && kill -KILL -- -$p; sleep 0.5",
    );
    let fix = bluegreen(&wd, &["status", "--fix"], None);
    let fixed = text(&fix);
    assert_eq!(fix.status.code(), Some(1), "{fixed}");
    assert!(
        fixed.contains("not fixed, a person must decide: app1: the live slot blue is not running"),
        "{fixed}"
    );
    let history = bluegreen(&wd, &["history", "--json"], None);
    let repairs = text(&history).matches("\"event\":\"repair\"").count();
    assert!(repairs >= 2, "repairs are audited:\n{}", text(&history));
}
