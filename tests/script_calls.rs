//! The rendered script, run against stand-in `ssh`, `scp` and `curl` commands that record what they
//! are asked to do: it sends every host exactly the remote library and the calls `exec` sends, in the
//! all-or-nothing order of the plan, with hostile values arriving intact. (The testbed tests run the
//! same script against real sshd, nginx and a JVM.)

use crate::util::{bluegreen_in, require, root, sha256, stderr, TempDir};
use bluegreen_core::plan::{Step, When};
use bluegreen_core::remote::LIBRARY;
use bluegreen_core::{Config, Plan, RemoteCall, RuntimeVar, Var};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

const FAKE_SSH: &str = r#"#!/bin/bash
# Stand-in ssh: records the address and standard input of every remote command.
addr=""
prev=""
for a in "$@"; do
  case "$a" in -O | -N) exit 0 ;; esac
  if [ "$prev" = "--" ]; then addr=$a; fi
  prev=$a
done
n=$(date +%s%N)-$RANDOM
cat >"$FAKE_LOG/$n.stdin"
printf '%s\n' "$addr" >"$FAKE_LOG/$n.addr"
call=$(tail -n 1 "$FAKE_LOG/$n.stdin")
if [ -n "${FAKE_FAIL:-}" ] && [[ "$addr $call" == *$FAKE_FAIL* ]]; then
  echo "fake failure" >&2
  exit 1
fi
case "$call" in
  "bg_main detect"*) echo "${FAKE_LIVE:-none}" ;;
  "bg_main probe"*) echo "ok 200" ;;
  *) echo "done" ;;
esac
"#;

const FAKE_SCP: &str = "#!/bin/bash\nexit 0\n";

const FAKE_CURL: &str = r#"#!/bin/bash
# Stand-in curl: a healthy answer carrying the configured body.
out=/dev/null
while [ $# -gt 0 ]; do
  case "$1" in -o) out=$2; shift ;; esac
  shift
done
printf '%s' "${FAKE_BODY:-}" >"$out"
printf '200'
"#;

/// A recorded remote command: the address, the library it was sent, and the call's arguments.
#[derive(Debug)]
struct Recorded {
    addr: String,
    library: String,
    args: Vec<String>,
}

/// Parses a `bg_main ...` line the way the remote bash does.
fn parse_call(line: &str) -> Vec<String> {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("bg_main() {{ printf '%s\\0' \"$@\"; }}\n{line}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{line}");
    let text = String::from_utf8(out.stdout).unwrap();
    text.split_terminator('\0').map(str::to_string).collect()
}

fn recorded(log: &Path) -> Vec<Recorded> {
    let mut names: Vec<String> = std::fs::read_dir(log)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter_map(|n| n.strip_suffix(".stdin").map(str::to_string))
        .collect();
    names.sort();
    names
        .iter()
        .map(|n| {
            let stdin = std::fs::read_to_string(log.join(format!("{n}.stdin"))).unwrap();
            let addr = std::fs::read_to_string(log.join(format!("{n}.addr"))).unwrap();
            let body = stdin.trim_end_matches('\n');
            let (library, call) = body.rsplit_once('\n').unwrap();
            Recorded {
                addr: addr.trim().to_string(),
                library: format!("{library}\n"),
                args: parse_call(call),
            }
        })
        .collect()
}

struct Run {
    dir: TempDir,
    status: Option<i32>,
    stderr: String,
}

fn env_map() -> HashMap<String, String> {
    [
        ("NGINX_PRIVATE_IP", "10.9.0.2"),
        ("WAS_1_PRIVATE_IP", "10.9.0.11"),
        ("WAS_2_PRIVATE_IP", "10.9.0.12"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Renders `config_text` and runs the script in a scratch directory with the stand-ins first in PATH.
fn run_script(config_text: &str, artifact: &str, fail: Option<&str>, live: &str) -> Run {
    require("bash", "bash");
    let dir = TempDir::new("calls");
    dir.write("bluegreen.yaml", config_text);
    let out = bluegreen_in(dir.path(), &["render", "script", "-o", "deploy.sh"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let bin = dir.path().join("bin");
    let log = dir.path().join("log");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&log).unwrap();
    for (name, text) in [("ssh", FAKE_SSH), ("scp", FAKE_SCP), ("curl", FAKE_CURL)] {
        let p = dir.write(&format!("bin/{name}"), text);
        Command::new("chmod").arg("+x").arg(&p).status().unwrap();
    }
    let art = dir.path().join(artifact);
    std::fs::create_dir_all(art.parent().unwrap()).unwrap();
    std::fs::write(&art, b"pretend this is a jar").unwrap();
    let config = Config::parse(config_text, "bluegreen.yaml").unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    cmd.arg("deploy.sh")
        .current_dir(dir.path())
        .env("PATH", path)
        .env("FAKE_LOG", &log)
        .env("FAKE_BODY", config.health.body.clone().unwrap_or_default())
        .env("BUILD_TAG", "jenkins-shop-42")
        .env("FAKE_LIVE", live)
        .env_remove("BG_RUN_ID")
        .env_remove("BG_SSH_KEY")
        .env_remove("BG_KNOWN_HOSTS");
    for (k, v) in env_map() {
        cmd.env(k, v);
    }
    if let Some(f) = fail {
        cmd.env("FAKE_FAIL", f);
    }
    let out = cmd.output().unwrap();
    Run {
        status: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        dir,
    }
}

/// What `exec` would send on a first deploy: (address, arguments) for every remote call, in order.
fn expected_calls(plan: &Plan, release: &str) -> Vec<(String, Vec<String>)> {
    let env = env_map();
    let lookup = |v: &Var| -> Result<String, String> {
        Ok(match v {
            Var::Env(n) => env.get(n).cloned().unwrap_or_default(),
            Var::Runtime(RuntimeVar::TargetSlot) => "blue".into(),
            Var::Runtime(RuntimeVar::TargetPort) => plan.slots.blue.to_string(),
            Var::Runtime(RuntimeVar::LiveSlot) => "none".into(),
            Var::Runtime(RuntimeVar::LivePort) => String::new(),
            Var::Runtime(RuntimeVar::Release) => release.into(),
            Var::Runtime(RuntimeVar::Deployer) => "jenkins-shop-42".into(),
        })
    };
    let addr = |host: &str| plan.host(host).unwrap().address.resolve(&lookup).unwrap();
    let mut calls: Vec<(String, &RemoteCall)> = Vec::new();
    for phase in &plan.phases {
        for step in &phase.steps {
            match step {
                // On a first deploy, steps that need a live slot are skipped.
                _ if step.remote().is_some_and(|s| s.when == When::Always) => {
                    let s = step.remote().unwrap();
                    calls.push((addr(&s.host), &s.call));
                }
                Step::Copy(c) => {
                    calls.push((addr(&c.host), &c.prepare));
                    calls.push((addr(&c.host), &c.install));
                }
                Step::Switch(s) => {
                    calls.push((addr(&s.host), &s.call));
                    calls.push((addr(&s.host), &s.settle));
                }
                _ => {}
            }
        }
    }
    calls
        .into_iter()
        .map(|(a, call)| {
            // exec's call line, parsed by bash exactly like the script's.
            let line = call.call_line(&lookup).unwrap();
            (a, parse_call(line.trim_end()))
        })
        .collect()
}

fn sorted(mut v: Vec<(String, Vec<String>)>) -> Vec<(String, Vec<String>)> {
    v.sort();
    v
}

fn check_same_calls_as_exec(config_text: &str, artifact: &str) {
    let run = run_script(config_text, artifact, None, "none");
    assert_eq!(run.status, Some(0), "{}", run.stderr);
    let plan = Plan::new(&Config::parse(config_text, "bluegreen.yaml").unwrap());
    let release = sha256(&run.dir.path().join(artifact));
    let got = recorded(&run.dir.path().join("log"));
    for r in &got {
        assert_eq!(r.library, LIBRARY, "the script sends the library unchanged");
    }
    let got: Vec<(String, Vec<String>)> = got.into_iter().map(|r| (r.addr, r.args)).collect();
    let expected = expected_calls(&plan, &release);
    assert_eq!(sorted(got.clone()), sorted(expected), "{}", run.stderr);
    // All-or-nothing order: every start before the one switch, which comes before the unlock.
    let pos = |f: &str| got.iter().rposition(|(_, a)| a[0] == f).unwrap();
    let first = |f: &str| got.iter().position(|(_, a)| a[0] == f).unwrap();
    assert_eq!(got[0].1[0], "lock");
    assert!(pos("start") < first("switch"));
    assert!(pos("install") < first("start"));
    assert!(pos("switch") < first("unlock"));
    assert_eq!(got.iter().filter(|(_, a)| a[0] == "switch").count(), 1);
}

#[test]
fn script_sends_the_same_calls_as_exec() {
    let text = std::fs::read_to_string(root().join("examples/sokdak.yaml")).unwrap();
    check_same_calls_as_exec(&text, "backend/sokdak/build/libs/sokdak-1.0.jar");
}

/// Values with every character that matters to bash or Groovy, in fields that accept them.
pub const HOSTILE: &str = r#"app: shop
artifact: "build/it's $(touch PWNED) `touch PWNED2`/*.jar"
proxy:
  host: 10.9.0.2
  upstream_file: "/etc/nginx/it's \"q\" $(touch PWNED) `id` ; x \\ ''' y.conf"
  state_dir: "/var/lib/bg/$HOME $(id) '''"
servers:
  - host: ${WAS_1_PRIVATE_IP}
deploy_dir: "/srv/it's \"q\" $(touch PWNED) `touch PWNED` ; \\ ''' \\d"
start: "java -jar {jar} --server.port={port} --greeting='it''s \"$(x)\" ''' \\d'"
health:
  body: "\"status\":\"UP\" '$(touch PWNED)' `x` ; ''' \\"
jenkins:
  build: "echo '''$(date)''' \"\\d\" \\ \\\\ `true`"
"#;

#[test]
fn hostile_values_arrive_intact_and_run_nothing() {
    check_same_calls_as_exec(HOSTILE, "build/it's $(touch PWNED) `touch PWNED2`/app.jar");
    // `check_same_calls_as_exec` compared every argument, byte for byte, with the raw config value.
    // Nothing in them was executed along the way:
    let run = run_script(
        HOSTILE,
        "build/it's $(touch PWNED) `touch PWNED2`/app.jar",
        None,
        "none",
    );
    assert_eq!(run.status, Some(0), "{}", run.stderr);
    for f in ["PWNED", "PWNED2"] {
        assert!(!run.dir.path().join(f).exists(), "{f} was created");
    }
    let calls = recorded(&run.dir.path().join("log"));
    let start = calls.iter().find(|c| c.args[0] == "start").unwrap();
    assert_eq!(
        start.args[1],
        "/srv/it's \"q\" $(touch PWNED) `touch PWNED` ; \\ ''' \\d/blue"
    );
    assert_eq!(
        start.args[8],
        "java -jar \"${BG_JAR}\" --server.port=\"${BG_PORT}\" --greeting='it''s \"$(x)\" ''' \\d'"
    );
}

#[test]
fn a_host_failing_to_start_stops_every_new_instance_and_never_switches() {
    let text = std::fs::read_to_string(root().join("examples/sokdak.yaml")).unwrap();
    let run = run_script(
        &text,
        "backend/sokdak/build/libs/sokdak-1.0.jar",
        Some("10.9.0.12 bg_main start"),
        "none",
    );
    assert_eq!(run.status, Some(1), "{}", run.stderr);
    let calls = recorded(&run.dir.path().join("log"));
    let fns: Vec<(String, String)> = calls
        .iter()
        .map(|c| (c.addr.clone(), c.args[0].clone()))
        .collect();
    assert!(!fns.iter().any(|(_, f)| f == "switch"), "{fns:?}");
    for host in ["10.9.0.11", "10.9.0.12"] {
        assert!(
            fns.contains(&(host.to_string(), "stop".to_string())),
            "{fns:?}"
        );
    }
    assert_eq!(
        fns.last().unwrap(),
        &("10.9.0.2".to_string(), "unlock".to_string())
    );
    let stop = calls.iter().find(|c| c.args[0] == "stop").unwrap();
    assert_eq!(
        stop.args[1], "/home/ubuntu/sokdak/blue",
        "the new slot is stopped, not the live one"
    );
    assert!(
        run.stderr
            .contains("abort after a failure in the start phase of a deploy"),
        "{}",
        run.stderr
    );
    let audit = calls.iter().find(|c| c.args[0] == "audit").unwrap();
    assert_eq!(audit.args[2..5], ["deploy", "sokdak", "failed"]);
}

#[test]
fn a_failed_switch_switches_back_before_stopping_new_instances() {
    let text = std::fs::read_to_string(root().join("examples/sokdak.yaml")).unwrap();
    // With green live, a failure right after the switch (waiting for old nginx workers) puts green back.
    let dir_run = run_script(
        &text,
        "backend/sokdak/build/libs/sokdak-1.0.jar",
        Some("bg_main settle"),
        "green",
    );
    assert_eq!(dir_run.status, Some(1), "{}", dir_run.stderr);
    let calls = recorded(&dir_run.dir.path().join("log"));
    let switches: Vec<&Recorded> = calls.iter().filter(|c| c.args[0] == "switch").collect();
    assert_eq!(switches.len(), 2, "switch, then switch back");
    assert!(
        switches[0].args[2].contains(":8080;"),
        "{}",
        switches[0].args[2]
    );
    assert!(
        switches[1].args[2].contains(":8081;"),
        "{}",
        switches[1].args[2]
    );
    let back = calls.iter().rposition(|c| c.args[0] == "switch").unwrap();
    let first_stop = calls.iter().position(|c| c.args[0] == "stop").unwrap();
    assert!(back < first_stop);
}
