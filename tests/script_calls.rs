//! The rendered script, run against stand-in `ssh`, `scp` and `curl` commands that record what they
//! are asked to do: it sends every host exactly the remote library and the calls `exec` sends, in the
//! all-or-nothing order of the plan, with hostile values arriving intact. (The testbed tests run the
//! same script against real sshd, nginx and a JVM.)

use crate::util::{bluegreen_in, require, root, sha256, stderr, Cmd, TempDir};
use bluegreen_core::plan::{Step, When};
use bluegreen_core::remote::LIBRARY;
use bluegreen_core::{Config, Plan, RemoteCall, RuntimeVar, Var, Word};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

const FAKE_SSH: &str = r#"#!/bin/bash
# Stand-in ssh: records the address and standard input of every remote command, the arguments of
# the commands that open (-N) and close (-O exit) a connection, and any locale variable it gets. A
# serving shell (the command ends in bg_serve) is sent the library, then calls ended by NUL bytes,
# each answered with a frame: each call is recorded as if it had come with the library on its own.
addr=""
prev=""
ctl=""
for a in "$@"; do
  case "$a" in -O | -N) ctl=yes ;; esac
  if [ "$prev" = "--" ]; then addr=$a; fi
  prev=$a
done
cmd=${!#}
env | grep -E '^(LANG|LC_[A-Z_]+)=' >>"$FAKE_LOG/locale"
if [ -n "$ctl" ]; then
  printf '%s\0' "$@" >"$FAKE_LOG/$(date +%s%N)-$RANDOM.ctl"
  exit 0
fi
# answer ADDR CALL: sets status, out and err as the host would.
answer() {
  status=0 out="" err=""
  if [ -n "${FAKE_FAIL:-}" ] && [[ "$1 $2" == *$FAKE_FAIL* ]]; then
    status=1 err="fake failure"$'\n'
  elif [ -n "${FAKE_FAIL_ONCE:-}" ] && [[ "$1 $2" == *$FAKE_FAIL_ONCE* ]] &&
    mkdir "$FAKE_LOG/failed-once" 2>/dev/null; then
    status=1 err="fake failure (once)"$'\n'
  else
    case "$2" in
      "bg_main start"*)
        out="done"$'\n'
        if [ -n "${FAKE_SPAN:-}" ]; then
          begin=$(date +%s%N)
          sleep "$FAKE_SPAN"
          echo "$begin $(date +%s%N)" >>"$FAKE_LOG/start-spans"
        fi
        ;;
      "bg_main detect"*) out="${FAKE_LIVE:-none}"$'\n' ;;
      "bg_main probe"*) out="ok 200"$'\n' ;;
      *) out="done"$'\n' ;;
    esac
  fi
}
record() {
  n=$(date +%s%N)-$RANDOM
  printf '%s' "$1" >"$FAKE_LOG/$n.stdin"
  printf '%s\n' "$addr" >"$FAKE_LOG/$n.addr"
  printf '%s\n' "$2" >"$FAKE_LOG/$n.shell"
}
if [[ "$cmd" == *"&& bg_serve'" ]]; then
  len=${cmd#*head -c }
  len=${len%%[!0-9]*}
  lib=$(head -c "$len" && printf x)
  lib=${lib%x}
  shell=$(date +%s%N)-$RANDOM
  export LC_ALL=C
  while IFS= read -r -d '' call; do
    record "$lib$call"$'\n' "$shell"
    answer "$addr" "$call"
    printf '%d %d %d\n%s%s' "$status" "${#out}" "${#err}" "$out" "$err"
  done
  exit 0
fi
stdin=$(cat && printf x)
record "${stdin%x}" ""
answer "$addr" "$(tail -n 1 <<<"${stdin%x}")"
printf '%s' "$out"
printf '%s' "$err" >&2
exit "$status"
"#;

const FAKE_SCP: &str = r#"#!/bin/bash
# Stand-in scp: records its arguments and any locale variable it gets; with FAKE_SPAN, takes that
# long and records when it began and ended (nanoseconds).
env | grep -E '^(LANG|LC_[A-Z_]+)=' >>"$FAKE_LOG/locale"
printf '%s\0' "$@" >"$FAKE_LOG/$(date +%s%N)-$RANDOM.scp"
if [ -n "${FAKE_SPAN:-}" ]; then
  begin=$(date +%s%N)
  sleep "$FAKE_SPAN"
  echo "$begin $(date +%s%N)" >>"$FAKE_LOG/upload-spans"
fi
"#;

const FAKE_CURL: &str = r#"#!/bin/bash
# Stand-in curl: a healthy answer carrying the configured body, or 503 for URLs containing
# $FAKE_CURL_FAIL; refuses to run without -g (globoff: a configured URL is no curl glob).
out=/dev/null
url=""
globoff=""
while [ $# -gt 0 ]; do
  case "$1" in -o) out=$2; shift ;; -g) globoff=yes ;; -d) data=$2; shift ;; --) url=$2; shift ;; esac
  shift
done
# A POST (a Slack notification): its body is recorded.
if [ -n "${data:-}" ]; then
  printf '%s' "$data" >"$FAKE_LOG/$(date +%s%N).post"
  exit 0
fi
[ -n "$globoff" ] || { echo "fake curl: no -g for $url" >&2; exit 3; }
printf '%s' "${FAKE_BODY:-}" >"$out"
if [ -n "${FAKE_CURL_FAIL:-}" ] && [[ $url == *"$FAKE_CURL_FAIL"* ]]; then
  printf '503'
else
  printf '200'
fi
"#;

/// A recorded remote command: the address, the library it was sent, and the call's arguments.
#[derive(Debug)]
struct Recorded {
    addr: String,
    library: String,
    args: Vec<String>,
    /// The serving shell the call came through (empty: a session of its own).
    shell: String,
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

/// The run's token, given to the script (which otherwise draws one from /dev/urandom, as exec does).
const RUN_TOKEN: &str = "0123456789abcdef";

/// The remote calls the stand-in ssh recorded, in order. The lock's renewals (`beat`, every quarter
/// of lock.stale_after while a phase runs) are left out: how many a run sends depends on timing.
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
            let shell = std::fs::read_to_string(log.join(format!("{n}.shell"))).unwrap();
            let body = stdin.trim_end_matches('\n');
            let (library, call) = body.rsplit_once('\n').unwrap();
            Recorded {
                addr: addr.trim().to_string(),
                library: format!("{library}\n"),
                args: parse_call(call),
                shell: shell.trim().to_string(),
            }
        })
        .filter(|r| r.args.first().map(String::as_str) != Some("beat"))
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
        ("APP_SECRET", "it's \"$(touch PWNED)\" `x` ; \\"),
        // A file secret's file: any small file, binary here.
        ("APP_FILE", "/bin/true"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Renders `config_text` and runs the script in a scratch directory with the stand-ins first in PATH.
fn run_script(config_text: &str, artifact: &str, fail: Option<&str>, live: &str) -> Run {
    let dir = TempDir::new("calls");
    let mut cmd = script_command(&dir, config_text, artifact);
    cmd.env("FAKE_LIVE", live);
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

/// Renders `config_text` into `dir`, puts the stand-ins and the artifact in place, and returns the
/// command running the script there (see [`script_in`]).
fn script_command(dir: &TempDir, config_text: &str, artifact: &str) -> Command {
    require("bash", "bash");
    dir.write("bluegreen.yaml", config_text);
    let out = bluegreen_in(dir.path(), &["render", "script", "-o", "deploy.sh"]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::create_dir_all(dir.path().join("bin")).unwrap();
    std::fs::create_dir_all(dir.path().join("log")).unwrap();
    for (name, text) in [("ssh", FAKE_SSH), ("scp", FAKE_SCP), ("curl", FAKE_CURL)] {
        let p = dir.write(&format!("bin/{name}"), text);
        Command::new("chmod").arg("+x").arg(&p).status().unwrap();
    }
    let art = dir.path().join(artifact);
    std::fs::create_dir_all(art.parent().unwrap()).unwrap();
    std::fs::write(&art, b"pretend this is a jar").unwrap();
    script_in(dir)
}

/// The command running the script rendered in `dir` with the stand-ins first in PATH, logging to
/// `dir/log`, with `env_map()`'s variables as Jenkins would set them.
fn script_in(dir: &TempDir) -> Command {
    let config = Config::load(&dir.path().join("bluegreen.yaml")).unwrap();
    let path = format!(
        "{}:{}",
        dir.path().join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Cmd::script(dir.path(), "deploy.sh", &[]).into_command();
    cmd.env("PATH", path)
        .env("FAKE_LOG", dir.path().join("log"))
        .env("FAKE_BODY", config.health.body.clone().unwrap_or_default())
        .env("BUILD_TAG", "jenkins-shop-42")
        .env("BG_RUN_TOKEN", RUN_TOKEN)
        .env_remove("BG_RUN_ID")
        .env_remove("BG_SSH_KEY")
        .env_remove("BG_KNOWN_HOSTS");
    for (k, v) in env_map() {
        cmd.env(k, v);
    }
    cmd
}

/// What `exec` would send on a first deploy: (address, arguments) for every remote call, in order.
fn expected_calls(plan: &Plan, release: &str) -> Vec<(String, Vec<String>)> {
    let env = env_map();
    let lookup = |v: &Var| -> Result<String, String> {
        Ok(match v {
            Var::Env(n) => env.get(n).cloned().unwrap_or_default(),
            Var::File(n) => {
                let out = Command::new("base64")
                    .args(["-w0", &env[n]])
                    .output()
                    .unwrap();
                String::from_utf8(out.stdout).unwrap()
            }
            Var::Runtime(RuntimeVar::TargetSlot) => "blue".into(),
            Var::Runtime(RuntimeVar::TargetPort) => plan.slots.blue.to_string(),
            Var::Runtime(RuntimeVar::LiveSlot) => "none".into(),
            Var::Runtime(RuntimeVar::LivePort) => String::new(),
            Var::Runtime(RuntimeVar::Release) => release.into(),
            Var::Runtime(RuntimeVar::Deployer) => "jenkins-shop-42".into(),
            Var::Runtime(RuntimeVar::RunToken) => RUN_TOKEN.into(),
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

#[test]
fn script_sends_string_and_file_secrets_as_exec_does() {
    // A file secret (a binary file) arrives as the same base64 `@NAME` pair exec sends, a string
    // secret as its value, both byte for byte.
    let text = std::fs::read_to_string(root().join("examples/sokdak.yaml")).unwrap()
        + "secrets:\n  - APP_SECRET\n  - { name: APP_FILE, file: true }\n";
    check_same_calls_as_exec(&text, "backend/sokdak/build/libs/sokdak-1.0.jar");
    let run = run_script(
        &text,
        "backend/sokdak/build/libs/sokdak-1.0.jar",
        None,
        "none",
    );
    let calls = recorded(&run.dir.path().join("log"));
    let start = calls.iter().find(|c| c.args[0] == "start").unwrap();
    let at = start.args.iter().position(|a| a == "@APP_FILE").unwrap();
    assert!(
        start.args[at + 1].len() > 1000,
        "{}",
        start.args[at + 1].len()
    );
    assert!(!run.dir.path().join("PWNED").exists());
}

#[test]
fn the_script_calls_each_host_through_one_shell_per_phase() {
    // As exec keeps one shell per host, the script keeps one per host for each phase (a phase is a
    // process of its own, as a Jenkins stage is): the library is sent and evaluated once per host
    // and phase, not once per call.
    let text = std::fs::read_to_string(root().join("examples/sokdak.yaml")).unwrap();
    let run = run_script(
        &text,
        "backend/sokdak/build/libs/sokdak-1.0.jar",
        None,
        "blue",
    );
    assert_eq!(run.status, Some(0), "{}", run.stderr);
    let got = recorded(&run.dir.path().join("log"));
    let alone: Vec<_> = got.iter().filter(|r| r.shell.is_empty()).collect();
    assert!(alone.is_empty(), "calls outside a shell: {alone:?}");
    // The calls each shell served, by host, in the order the shells were opened.
    let mut shells: Vec<(String, String, Vec<String>)> = Vec::new();
    for r in &got {
        match shells.iter_mut().find(|(_, s, _)| *s == r.shell) {
            Some((_, _, calls)) => calls.push(r.args[0].clone()),
            None => shells.push((r.addr.clone(), r.shell.clone(), vec![r.args[0].clone()])),
        }
    }
    let of = |addr: &str| -> Vec<Vec<String>> {
        shells
            .iter()
            .filter(|(a, _, _)| a == addr)
            .map(|(_, _, c)| c.clone())
            .collect()
    };
    let words = |calls: &[&[&str]]| -> Vec<Vec<String>> {
        calls
            .iter()
            .map(|c| c.iter().map(|s| s.to_string()).collect())
            .collect()
    };
    assert_eq!(
        of("10.9.0.2"),
        words(&[
            &["lock", "detect", "reconcile"],
            &["intent", "switch", "settle"],
            &["record"],
            &["audit", "unlock"],
        ]),
        "the proxy: one shell for each phase that calls it"
    );
    for app in ["10.9.0.11", "10.9.0.12"] {
        assert_eq!(
            of(app),
            words(&[&["prepare", "install"], &["start"], &["retire"]]),
            "{app}: one shell for each phase that calls it"
        );
    }
}

/// The most spans (`BEGIN END` lines, nanoseconds) of `file` that overlap at one moment.
fn most_at_once(file: &Path) -> usize {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut edges: Vec<(u128, i32)> = Vec::new();
    for line in text.lines() {
        let (b, e) = line.split_once(' ').unwrap();
        edges.push((b.parse().unwrap(), 1));
        edges.push((e.parse().unwrap(), -1));
    }
    // Ends before begins at the same instant: touching spans do not overlap.
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    usize::try_from(most).unwrap()
}

#[test]
fn max_parallel_bounds_the_scripts_uploads_and_starts() {
    // Three app hosts whose uploads and starts each take 0.3 s: all at once by default, at most
    // two at a time with `max_parallel: 2`.
    let text = std::fs::read_to_string(root().join("examples/sokdak.yaml"))
        .unwrap()
        .replace(
            "  - host: ${WAS_2_PRIVATE_IP}\n",
            "  - host: ${WAS_2_PRIVATE_IP}\n  - host: 10.9.0.13\n",
        );
    assert!(text.contains("10.9.0.13"), "the example's servers changed");
    for (extra, want) in [("", 3), ("max_parallel: 2\n", 2)] {
        let dir = TempDir::new("limit");
        let mut cmd = script_command(
            &dir,
            &format!("{text}{extra}"),
            "backend/sokdak/build/libs/sokdak-1.0.jar",
        );
        let out = cmd
            .env("FAKE_LIVE", "blue")
            .env("FAKE_SPAN", "0.3")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let log = dir.path().join("log");
        for what in ["upload-spans", "start-spans"] {
            let spans = std::fs::read_to_string(log.join(what)).unwrap_or_default();
            assert_eq!(spans.lines().count(), 3, "{what}: {spans}");
            assert_eq!(
                most_at_once(&log.join(what)),
                want,
                "{what} with {extra:?}: {spans}"
            );
        }
    }
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
    // With green live, a failure right after the switch (waiting for old nginx workers) puts green
    // back (and that switch back works).
    let dir = TempDir::new("calls");
    let out = script_command(&dir, &text, "backend/sokdak/build/libs/sokdak-1.0.jar")
        .env("FAKE_LIVE", "green")
        .env("FAKE_FAIL_ONCE", "bg_main settle")
        .output()
        .unwrap();
    let dir_run = Run {
        status: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        dir,
    };
    assert_eq!(dir_run.status, Some(1), "{}", dir_run.stderr);
    let calls = recorded(&dir_run.dir.path().join("log"));
    let switches: Vec<&Recorded> = calls.iter().filter(|c| c.args[0] == "switch").collect();
    assert_eq!(switches.len(), 2, "switch, then switch back");
    // The argument the plan fills with the port traffic goes to: the target's, then the live one's.
    let plan = Plan::new(&Config::parse(&text, "bluegreen.yaml").unwrap());
    let Some(sw) = plan.phases[4].steps.iter().find_map(|s| match s {
        Step::Switch(sw) => Some(sw),
        _ => None,
    }) else {
        panic!("the switch phase switches")
    };
    let port = 1 + sw
        .call
        .args
        .iter()
        .position(|a| *a == Word::runtime(RuntimeVar::TargetPort))
        .expect("the switch call names the target port");
    assert_eq!(switches[0].args[port], "8080", "{:?}", switches[0].args);
    assert_eq!(switches[1].args[port], "8081", "{:?}", switches[1].args);
    let back = calls.iter().rposition(|c| c.args[0] == "switch").unwrap();
    let first_stop = calls.iter().position(|c| c.args[0] == "stop").unwrap();
    assert!(back < first_stop);
}

/// Every field that may hold `${VAR}`, each with its own variable (`SHARED_ADDR` twice: first in
/// check_url, a text field, then as an address).
const VARS: &str = r#"app: shop
artifact: "${ART_DIR}/app.jar"
ssh:
  user: ${DEPLOY_USER}
  port: 9
  known_hosts: ${KH_FILE}
  identity_file: ${KEY_FILE}
  connect_timeout: 1s
proxy:
  host: ${NGINX_PRIVATE_IP}
  upstream_file: /etc/nginx/shop.conf
  check_url: http://${NGINX_PRIVATE_IP}/health?via=${SHARED_ADDR}
servers:
  - host: ${WAS_1_PRIVATE_IP}
    address: ${WAS_1_APP_IP}
  - host: ${WAS_2_PRIVATE_IP}
    address: ${SHARED_ADDR}
    user: ${WAS_2_USER}
deploy_dir: /srv/shop
"#;

/// Values every check accepts; the hosts refuse connections at once (port 9 of 127.0.0.1).
fn good_vars(dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("ART_DIR", dir.join("build").display().to_string()),
        ("DEPLOY_USER", "deploy".into()),
        ("KH_FILE", dir.join("known hosts").display().to_string()),
        ("KEY_FILE", dir.join("id_ed25519").display().to_string()),
        ("NGINX_PRIVATE_IP", "127.0.0.1".into()),
        ("SHARED_ADDR", "127.0.0.1".into()),
        ("WAS_1_PRIVATE_IP", "127.0.0.1".into()),
        ("WAS_1_APP_IP", "127.0.0.1".into()),
        ("WAS_2_PRIVATE_IP", "127.0.0.1".into()),
        ("WAS_2_USER", "ops".into()),
    ]
}

/// Runs `cmd` (`bluegreen exec`, or the script) with the good values but `var` set to `value`
/// (None: unset), and `extra` set. Returns (exit code, stderr).
fn with_var(
    mut cmd: Command,
    dir: &Path,
    var: &str,
    value: Option<&str>,
    extra: &[(&str, &str)],
) -> (Option<i32>, String) {
    cmd.env_remove("BG_SSH_KEY").env_remove("BG_KNOWN_HOSTS");
    for (k, v) in good_vars(dir) {
        cmd.env(k, v);
    }
    match value {
        Some(v) => cmd.env(var, v),
        None => cmd.env_remove(var),
    };
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn variables_are_checked_like_exec_with_the_same_messages() {
    let cases: [(&str, Option<&str>); 12] = [
        ("WAS_1_PRIVATE_IP", Some("10.0.0.1; rm")),
        ("WAS_1_APP_IP", Some("10.0.0.1 10.0.0.2")),
        ("NGINX_PRIVATE_IP", Some("-oProxyCommand=touch PWNED")),
        ("NGINX_PRIVATE_IP", Some("")),
        ("SHARED_ADDR", Some("10.0.0.1;reboot")),
        ("DEPLOY_USER", Some("de'ploy")),
        ("WAS_2_USER", Some("")),
        ("WAS_2_USER", Some("ops\nroot")),
        ("KH_FILE", Some("/tmp/a\nb")),
        ("ART_DIR", Some("build\n")),
        ("WAS_2_PRIVATE_IP", None),
        ("KEY_FILE", None),
    ];
    let dir = TempDir::new("vars");
    // One rendered script for every case; each case runs the prepare phase on its own.
    drop(script_command(&dir, VARS, "build/app.jar"));
    for (var, value) in cases {
        let exec = Cmd::bluegreen(dir.path(), &["exec"]).into_command();
        let (exec_code, exec_err) = with_var(exec, dir.path(), var, value, &[]);
        assert_eq!(exec_code, Some(2), "{var}={value:?}: {exec_err}");
        let expected = exec_err
            .strip_prefix("error: ")
            .unwrap_or_else(|| panic!("{var}={value:?}: {exec_err}"));

        let log = dir.path().join("log");
        std::fs::remove_dir_all(&log).unwrap();
        std::fs::create_dir_all(&log).unwrap();
        let mut script = script_in(&dir);
        script
            .args(["run", "deploy", "prepare"])
            .env("BG_RUN_ID", "vars-test");
        let (code, err) = with_var(script, dir.path(), var, value, &[]);
        assert_eq!(code, Some(1), "{var}={value:?}: {err}");
        // `HH:MM:SS error: ` and then exactly what exec printed.
        assert_eq!(
            err.get(9..),
            Some(format!("error: {expected}").as_str()),
            "{var}={value:?}"
        );
        assert!(err.starts_with(|c: char| c.is_ascii_digit()), "{err}");
        assert_eq!(
            std::fs::read_dir(&log).unwrap().count(),
            0,
            "{var}={value:?}: nothing ran before the check"
        );
    }
    assert!(!dir.path().join("PWNED").exists());
}

#[test]
fn variables_exec_does_not_need_are_not_checked() {
    let dir = TempDir::new("vars");
    drop(script_command(&dir, VARS, "build/app.jar"));
    // A rollback uploads nothing: the artifact's variable may be unset. The key and known_hosts
    // files' variables are not needed when $BG_SSH_KEY and $BG_KNOWN_HOSTS override them.
    let key = dir
        .write("key", crate::util::FAKE_SSH_KEY)
        .display()
        .to_string();
    let kh = dir.write("kh", "").display().to_string();
    for (action, var, extra) in [
        ("rollback", "ART_DIR", None),
        ("deploy", "KEY_FILE", Some(("BG_SSH_KEY", key.as_str()))),
        ("deploy", "KH_FILE", Some(("BG_KNOWN_HOSTS", kh.as_str()))),
    ] {
        let extra: Vec<(&str, &str)> = extra.into_iter().collect();
        let exec = Cmd::bluegreen(
            dir.path(),
            &[if action == "rollback" {
                "rollback"
            } else {
                "exec"
            }],
        )
        .into_command();
        let (_, exec_err) = with_var(exec, dir.path(), var, None, &extra);
        assert!(
            !exec_err.contains(var) && !exec_err.contains("environment variable"),
            "{var}: {exec_err}"
        );
        let mut script = script_in(&dir);
        script
            .args(["run", action, "prepare"])
            .env("BG_RUN_ID", "vars-test");
        let (code, err) = with_var(script, dir.path(), var, None, &extra);
        assert_eq!(code, Some(0), "{var}: {err}");
        assert!(err.contains("connected to 3 hosts"), "{var}: {err}");
    }
}

/// The NUL-separated argument lists the stand-ins recorded in files ending with `suffix`.
fn recorded_args(log: &Path, suffix: &str) -> Vec<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(log)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(suffix))
        .collect();
    names.sort();
    names
        .iter()
        .map(|n| {
            let text = std::fs::read_to_string(log.join(n)).unwrap();
            text.split_terminator('\0').map(str::to_string).collect()
        })
        .collect()
}

#[test]
fn uploads_use_sftp_and_the_destination_arrives_as_written() {
    // deploy_dir holds a space, quotes, `$(...)`, backticks, `;` and `\`: validation allows them.
    let artifact = "build/it's $(touch PWNED) `touch PWNED2`/app.jar";
    let run = run_script(HOSTILE, artifact, None, "none");
    assert_eq!(run.status, Some(0), "{}", run.stderr);
    let plan = Plan::new(&Config::parse(HOSTILE, "bluegreen.yaml").unwrap());
    let Some(Step::Copy(copy)) = plan.phases[1].steps.first() else {
        panic!("the upload phase copies")
    };
    let scp = recorded_args(&run.dir.path().join("log"), ".scp");
    assert_eq!(scp.len(), 1);
    let args = &scp[0];
    // The SFTP protocol, explicitly: the legacy one has the remote shell parse the destination.
    assert!(args.contains(&"-s".to_string()), "{args:?}");
    let dest = format!(
        "/srv/it's \"q\" $(touch PWNED) `touch PWNED` ; \\ ''' \\d/blue/{}",
        copy.tmp_name
    );
    assert_eq!(
        args[args.len() - 3..],
        [
            "--".to_string(),
            artifact.to_string(),
            format!("deploy@[10.9.0.11]:{dest}")
        ],
    );
}

#[test]
fn ssh_gets_no_locale_and_connections_close_as_they_opened() {
    let text = std::fs::read_to_string(root().join("examples/single-host.yaml")).unwrap();
    let dir = TempDir::new("ctl");
    let mut cmd = script_command(&dir, &text, "target/billing-1.jar");
    // Debian's ssh_config sends LANG and LC_* (SendEnv): the script must not pass them on.
    let out = cmd
        .env("LANG", "C.UTF-8")
        .env("LC_ALL", "C.UTF-8")
        .env("LC_TIME", "de_DE.UTF-8")
        .env("FAKE_LIVE", "none")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let log = dir.path().join("log");
    assert_eq!(
        std::fs::read_to_string(log.join("locale")).unwrap_or_default(),
        "",
        "ssh and scp got locale variables"
    );
    assert!(!recorded(&log).is_empty());

    let ctl = recorded_args(&log, ".ctl");
    let opened: Vec<&Vec<String>> = ctl.iter().filter(|a| a.contains(&"-N".into())).collect();
    let closed: Vec<&Vec<String>> = ctl.iter().filter(|a| a.contains(&"-O".into())).collect();
    // single-host.yaml: the proxy and the app host are one machine, reached under two ids.
    assert_eq!((opened.len(), closed.len()), (2, 2), "{ctl:?}");
    let value = |args: &[String], flag: &str| -> String {
        let i = args.iter().position(|a| a == flag).unwrap();
        args[i + 1].clone()
    };
    let control_path = |args: &[String]| -> String {
        args.iter()
            .find_map(|a| a.strip_prefix("ControlPath="))
            .unwrap()
            .to_string()
    };
    for close in &closed {
        assert_eq!(value(close, "-O"), "exit");
        let open = opened
            .iter()
            .find(|o| o.last() == close.last())
            .expect("closed what was opened");
        // The same user, port and control path: %C in the path hashes user, host and port.
        for flag in ["-l", "-p"] {
            assert_eq!(value(close, flag), value(open, flag), "{flag}: {close:?}");
        }
        assert_eq!(control_path(close), control_path(open));
        assert_eq!(value(close, "-l"), "deploy");
        assert_eq!(value(close, "-p"), "2222");
    }
    // The control directory is gone at the end.
    let path = control_path(closed[0]);
    let ctl_dir = Path::new(&path).parent().unwrap();
    assert!(
        ctl_dir.starts_with(std::env::temp_dir()) && !ctl_dir.exists(),
        "{}",
        ctl_dir.display()
    );
}

#[test]
fn check_url_credentials_never_show() {
    let sokdak = std::fs::read_to_string(root().join("examples/sokdak.yaml"))
        .unwrap()
        .replace("drain: 5s", "drain: 0s")
        .replace("interval: 1s", "interval: 100ms");
    let artifact = "backend/sokdak/build/libs/sokdak-1.0.jar";
    // Literal: redacted when rendering. With a variable: redacted by the script at run time.
    for (url, shown) in [
        (
            "http://user:pw-s3cr3t@10.9.0.2/actuator/health?token=abc",
            "http://***@10.9.0.2/actuator/health?token=***",
        ),
        (
            "http://user:pw-s3cr3t@${NGINX_PRIVATE_IP}/actuator/health?token=abc",
            "http://***@10.9.0.2/actuator/health?token=***",
        ),
    ] {
        let text = sokdak.replace(
            "check_url: http://${NGINX_PRIVATE_IP}/actuator/health",
            &format!("check_url: {url}"),
        );
        assert_ne!(text, sokdak);
        let dir = TempDir::new("redact");
        dir.write("bluegreen.yaml", &text);
        for args in [&["plan"][..], &["plan", "--json"]] {
            let out = bluegreen_in(dir.path(), args);
            assert!(out.status.success(), "{}", stderr(&out));
            let plan = String::from_utf8_lossy(&out.stdout);
            assert!(plan.contains("***@"), "{args:?}: {plan}");
            assert!(
                !plan.contains("pw-s3cr3t") && !plan.contains("abc"),
                "{args:?}: {plan}"
            );
        }
        // The rendered script holds the URL (it fetches it); its log never shows the secrets,
        // whether the check passes or fails (and the deploy is undone).
        let run = run_script(&text, artifact, None, "none");
        assert_eq!(run.status, Some(0), "{}", run.stderr);
        assert!(
            run.stderr.contains(&format!("[proxy] {shown} answers 200")),
            "{}",
            run.stderr
        );
        assert!(
            !run.stderr.contains("pw-s3cr3t") && !run.stderr.contains("abc"),
            "{}",
            run.stderr
        );
        let dir = TempDir::new("redact");
        let out = script_command(&dir, &text, artifact)
            .env("FAKE_LIVE", "none")
            .env("FAKE_CURL_FAIL", "token=")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!("[proxy] {shown}: status 503 (try 1 of 4)")),
            "{err}"
        );
        assert!(
            // Word for word what exec says (its Error::Check), from core's one template.
            err.contains(&format!(
                "[proxy] {}",
                bluegreen_ssh::Error::Check {
                    host: "proxy".into(),
                    url: shown.to_string(),
                    expected: 200,
                    last: "status 503".into(),
                }
                .to_string()
                .trim_start_matches("proxy: ")
            )),
            "{err}"
        );
        assert!(!err.contains("pw-s3cr3t") && !err.contains("abc"), "{err}");
    }
}

/// An sshd of our own on 127.0.0.1 that accepts the locale variables (as Debian's default sshd
/// does), stopped on drop.
struct Sshd {
    child: std::process::Child,
    port: u16,
    dir: TempDir,
}

impl Sshd {
    fn start() -> Sshd {
        require("ssh-keygen", "openssh-client");
        let sshd = Path::new("/usr/sbin/sshd");
        assert!(
            sshd.exists(),
            "this test needs sshd: apt-get install openssh-server"
        );
        let dir = TempDir::new("sshd");
        for key in ["host_key", "id"] {
            let st = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(dir.path().join(key))
                .status()
                .unwrap();
            assert!(st.success());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let user = whoami();
        let d = dir.path().display();
        dir.write(
            "sshd_config",
            &format!(
                "ListenAddress 127.0.0.1:{port}\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
                 AuthorizedKeysFile {d}/id.pub\nAllowUsers {user}\nPermitRootLogin yes\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 StrictModes no\nUseDNS no\nAcceptEnv LANG LC_*\nSubsystem sftp internal-sftp\n"
            ),
        );
        let host_key = std::fs::read_to_string(dir.path().join("host_key.pub")).unwrap();
        dir.write(
            "known_hosts",
            &format!("[127.0.0.1]:{port} {host_key}[localhost]:{port} {host_key}"),
        );
        std::fs::create_dir_all("/run/sshd").ok();
        let child = Command::new(sshd)
            .arg("-D")
            .arg("-f")
            .arg(dir.path().join("sshd_config"))
            .arg("-E")
            .arg(dir.path().join("sshd.log"))
            .spawn()
            .unwrap();
        // Stopped by Drop from here on, even if it never starts listening.
        let sshd = Sshd { child, port, dir };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return sshd;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(sshd.dir.path().join("sshd.log")).unwrap_or_default();
        panic!("sshd did not start on port {port}: {log}");
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn whoami() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn real_ssh_sends_no_locale_uploads_to_an_odd_path_and_disconnects() {
    let sshd = Sshd::start();
    let dir = TempDir::new("realssh");
    let d = sshd.dir.path().display();
    let deploy_dir = dir
        .path()
        .join("it's \"q\" $(touch PWNED) `id` ; \\ {a,b} *");
    let config = format!(
        "app: shop
artifact: app.jar
ssh:
  user: {user}
  port: {port}
  identity_file: {d}/id
  known_hosts: {d}/known_hosts
proxy: {{ host: localhost, upstream_file: /etc/n.conf }}
servers: [ {{ host: '${{APP_HOST}}' }} ]
deploy_dir: '{}'
",
        deploy_dir.display().to_string().replace('\'', "''"),
        user = whoami(),
        port = sshd.port,
    );
    dir.write("bluegreen.yaml", &config);
    let out = bluegreen_in(dir.path(), &["render", "script", "-o", "deploy.sh"]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::create_dir_all(deploy_dir.join("blue")).unwrap();
    dir.write("app.jar", "pretend this is a jar\n");
    // The script's functions, without its last line (`bg_main "$@"`), driven step by step.
    let script = std::fs::read_to_string(dir.path().join("deploy.sh")).unwrap();
    let functions = script.trim_end().strip_suffix("bg_main \"$@\"").unwrap();
    let dest = format!("{}/blue/.shop.jar.upload", deploy_dir.display());
    let steps = format!(
        "{functions}
BG_CTL_DIR=$(mktemp -d)
bg_check_env deploy
bg_init
bg_ssh_opts
bg_connect_all
bg_ssh app1 'env' >remote.env
BG_ARTIFACT=app.jar
bg_upload app1 {}
ssh \"${{BG_SSH_OPTS[@]}}\" -p \"${{BG_PORT[app1]}}\" -l \"${{BG_USER[app1]}}\" -O check -- 127.0.0.1
printf '%s\\n' \"$BG_CTL_DIR\" >ctl.dir
bg_disconnect
",
        Word::lit(&dest).to_bash()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&steps)
        .current_dir(dir.path())
        .env("APP_HOST", "127.0.0.1")
        .env("LANG", "C.UTF-8")
        .env("LC_TIME", "C.UTF-8")
        .env_remove("BG_SSH_KEY")
        .env_remove("BG_KNOWN_HOSTS")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // `-O check` found the master bg_connect opened (it prints to stderr).
    assert!(err.contains("Master running"), "{err}");
    let remote_env = std::fs::read_to_string(dir.path().join("remote.env")).unwrap();
    assert!(remote_env.contains("SSH_CONNECTION="), "{remote_env}");
    assert!(
        !remote_env
            .lines()
            .any(|l| l.starts_with("LANG=") || l.starts_with("LC_")),
        "the runner's locale reached the host:\n{remote_env}"
    );
    assert_eq!(
        std::fs::read_to_string(&dest).unwrap(),
        "pretend this is a jar\n"
    );
    assert!(!dir.path().join("PWNED").exists());
    // bg_disconnect closed every master (their sockets are gone) and removed the directory.
    let ctl_dir = std::fs::read_to_string(dir.path().join("ctl.dir")).unwrap();
    assert!(!Path::new(ctl_dir.trim()).exists(), "{ctl_dir}");
}

#[test]
fn on_the_testbed_credentials_in_check_url_stay_hidden_and_odd_deploy_dirs_work() {
    use crate::e2e::Backend;
    use crate::testbed::{serial, Testbed, Workdir};
    let _serial = serial();
    let tb = Testbed::up(1);
    let wd = Workdir::new(&tb, "60s", "");
    let cfg_path = wd.path().join("bluegreen.yaml");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    let check = format!(
        "http://{}:{}/actuator/health",
        tb.var("PROXY_ADDR"),
        tb.var("NGINX_PORT")
    );
    let secret_check = check.replace("http://", "http://ops:secret@") + "?token=abc";
    let deploy_dir = tb.var("DEPLOY_DIR");
    let odd_dir = format!("{deploy_dir}/it's a $HOME dir");
    let cfg = cfg
        .replace(
            &format!("check_url: {check}"),
            &format!("check_url: '{secret_check}'"),
        )
        .replace(
            &format!("deploy_dir: {deploy_dir}"),
            &format!("deploy_dir: \"{odd_dir}\""),
        );
    assert!(
        cfg.contains("ops:secret@") && cfg.contains("$HOME dir"),
        "{cfg}"
    );
    std::fs::write(&cfg_path, cfg).unwrap();
    let shown = check.replace("http://", "http://***@") + "?token=***";
    for (backend, version) in [(Backend::Exec, "v1"), (Backend::Script, "v2")] {
        wd.stage(version);
        let out = crate::e2e::deploy(backend, &tb, &wd, 0);
        assert!(out.success, "{backend:?}: {}", out.output);
        assert!(out.output.contains(&shown), "{backend:?}: {}", out.output);
        assert!(
            !out.output.contains("secret") && !out.output.contains("abc"),
            "{backend:?}: {}",
            out.output
        );
        assert_eq!(tb.version_via_proxy(), version);
        let slot = if version == "v1" { "blue" } else { "green" };
        let ls = format!("ls -- {}", Word::lit(format!("{odd_dir}/{slot}")).to_bash());
        let jar = tb.sh_ok("app1", &ls);
        assert!(jar.contains("demo.jar"), "{jar}");
    }
    tb.assert_lock_free();
}

/// Whether `text` reads as `t` with the placeholders in `known` given their values and every other
/// placeholder standing for some non-empty text.
fn reads_as(t: &bluegreen_core::wording::Template, text: &str, known: &[(&str, &str)]) -> bool {
    // The template as pieces: literal text (known values filled in), or a free placeholder.
    let mut pieces: Vec<Option<String>> = Vec::new();
    let mut rest = t.0;
    while let Some(i) = rest.find('{') {
        let j = rest[i..].find('}').map(|j| i + j).unwrap_or(rest.len() - 1);
        let name = &rest[i + 1..j];
        pieces.push(Some(rest[..i].to_string()));
        match known.iter().find(|(k, _)| *k == name) {
            Some((_, v)) => pieces.push(Some((*v).to_string())),
            None => pieces.push(None),
        }
        rest = &rest[j + 1..];
    }
    pieces.push(Some(rest.to_string()));
    // Merge neighbouring literals, then match left to right.
    let mut merged: Vec<Option<String>> = Vec::new();
    for p in pieces {
        match (merged.last_mut(), p) {
            (Some(Some(a)), Some(b)) => a.push_str(&b),
            (_, p) => merged.push(p),
        }
    }
    let mut at = 0;
    let mut free = false;
    for (i, p) in merged.iter().enumerate() {
        match p {
            None => free = true,
            Some(lit) if free => {
                let last = i == merged.len() - 1;
                let found = if last {
                    text.ends_with(lit.as_str()) && text.len() - lit.len() > at
                } else {
                    match text[at..].find(lit.as_str()) {
                        Some(k) if k > 0 => {
                            at += k + lit.len();
                            true
                        }
                        _ => false,
                    }
                };
                if !found {
                    return false;
                }
                if last {
                    return true;
                }
                free = false;
            }
            Some(lit) => {
                if !text[at..].starts_with(lit.as_str()) {
                    return false;
                }
                at += lit.len();
            }
        }
    }
    if free {
        at < text.len()
    } else {
        at == text.len()
    }
}

fn posts(log: &Path) -> Vec<String> {
    let mut files: Vec<_> = std::fs::read_dir(log)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "post"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
            v["text"].as_str().unwrap_or_default().to_string()
        })
        .collect()
}

/// The runner's half, not only the remote calls: the script reports a run's outcome in exec's
/// words (core's templates). Its summary line and Slack texts read as core's templates with the
/// run's values; its health verdict is exec's `Error::Health` message word for word.
#[test]
fn the_script_says_what_exec_says() {
    use bluegreen_core::plan::Action;
    use bluegreen_core::wording;
    let sokdak = std::fs::read_to_string(root().join("examples/sokdak.yaml")).unwrap();
    let artifact = "backend/sokdak/build/libs/sokdak.jar";

    // A deploy that succeeds: blue is live, green is deployed.
    let dir = TempDir::new("words");
    let out = script_command(&dir, &sokdak, artifact)
        .env("FAKE_LIVE", "blue")
        .env("SLACK_WEBHOOK_URL", "http://127.0.0.1:9/hook")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{err}");
    let release = sha256(&dir.path().join(artifact));
    let values = [
        ("app", "sokdak"),
        ("release", &release[..12]),
        ("target", "green"),
        ("previous", "blue"),
    ];
    let summary = err
        .lines()
        .find_map(|l| l.split_once("deploy of sokdak done: ").map(|(_, s)| s))
        .unwrap_or_else(|| panic!("no summary line: {err}"));
    assert!(
        reads_as(&wording::summary(Action::Deploy), summary, &values),
        "{summary}"
    );
    for phase in ["connect ", "prepare ", "upload ", "switch ", "finish "] {
        assert!(summary.contains(phase), "{summary}");
    }
    // exec's summary is the same template (its Display fills it).
    let exec_summary = bluegreen_ssh::Summary {
        action: Action::Deploy,
        app: "sokdak".into(),
        target: "green".into(),
        previous: "blue".into(),
        release: release.clone(),
        artifact: artifact.into(),
        artifact_bytes: 1,
        deployer: "jenkins-shop-42".into(),
        connect: std::time::Duration::from_millis(120),
        phases: vec![(
            bluegreen_core::PhaseKind::Prepare,
            std::time::Duration::from_millis(80),
        )],
        total: std::time::Duration::from_millis(1500),
    }
    .to_string();
    assert!(
        reads_as(&wording::summary(Action::Deploy), &exec_summary, &values),
        "{exec_summary}"
    );
    let mut with_who = values.to_vec();
    with_who.push(("who", "jenkins-shop-42"));
    let texts = posts(&dir.path().join("log"));
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert!(
        reads_as(
            &wording::notify_success(Action::Deploy),
            &texts[0],
            &with_who
        ),
        "{}",
        texts[0]
    );

    // A new instance that never turns healthy: the script's verdict is exec's, word for word.
    let short = sokdak
        .replace("  deadline: 2m\n", "  deadline: 3s\n")
        .replace("  interval: 1s\n", "  interval: 200ms\n");
    assert_ne!(short, sokdak);
    let dir = TempDir::new("words");
    let out = script_command(&dir, &short, artifact)
        .env("FAKE_LIVE", "blue")
        .env("FAKE_CURL_FAIL", "10.9.0.11:8081")
        .env("SLACK_WEBHOOK_URL", "http://127.0.0.1:9/hook")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    let url = "http://10.9.0.11:8081/actuator/health";
    let exec_says = bluegreen_ssh::Error::Health {
        host: "app1".into(),
        url: url.into(),
        last: wording::ProbeOutcome::Status(503).to_string(),
        deadline: std::time::Duration::from_secs(3),
    }
    .to_string();
    let script_says = format!("[app1] {}", exec_says.trim_start_matches("app1: "));
    assert!(
        err.contains(&script_says),
        "want `{script_says}` in:\n{err}"
    );
    let texts = posts(&dir.path().join("log"));
    assert_eq!(texts.len(), 1, "{texts:?}");
    let mut failed = with_who.clone();
    failed.extend([
        ("action", "deploy"),
        ("phase", "verify"),
        ("error", script_says.as_str()),
    ]);
    assert!(
        reads_as(&wording::NOTIFY_FAILURE, &texts[0], &failed),
        "{}",
        texts[0]
    );
}

#[test]
fn reads_as_can_fail() {
    let t = bluegreen_core::wording::Template("{app}: deployed {release} in {took}");
    assert!(reads_as(
        &t,
        "shop: deployed abc in 1.20s",
        &[("app", "shop"), ("release", "abc")]
    ));
    assert!(!reads_as(
        &t,
        "shop: deployed abd in 1.20s",
        &[("app", "shop"), ("release", "abc")]
    ));
    assert!(!reads_as(
        &t,
        "shop: deployed abc in ",
        &[("app", "shop"), ("release", "abc")]
    ));
    assert!(!reads_as(
        &t,
        "shop: rolled back abc in 1s",
        &[("app", "shop")]
    ));
}
