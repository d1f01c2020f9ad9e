//! Rendered scripts and Jenkinsfiles: current, valid bash, shellcheck-clean, valid Groovy 2.4, and
//! structurally sound declarative pipelines whose shell steps carry the exact deploy script.

use crate::util::{bluegreen, java_home, require, root, stderr, stdout, TempDir};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// Every example config, by name.
pub fn examples() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root().join("examples"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".yaml").map(str::to_string)
        })
        .collect();
    names.sort();
    assert!(names.len() >= 2, "expected at least two examples");
    names
}

fn render(example: &str, what: &str) -> String {
    let cfg = format!("examples/{example}.yaml");
    let out = bluegreen(&["-c", &cfg, "render", what]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}

#[test]
fn committed_renders_are_current() {
    for ex in examples() {
        for (what, file) in [
            ("script", format!("examples/{ex}.deploy.sh")),
            ("jenkinsfile", format!("examples/{ex}.Jenkinsfile")),
        ] {
            let cfg = format!("examples/{ex}.yaml");
            let out = bluegreen(&["-c", &cfg, "render", what, "--check", &file]);
            assert!(
                out.status.success(),
                "{file} is stale; run `bluegreen -c {cfg} render {what} -o {file}`\n{}",
                stderr(&out)
            );
        }
    }
}

#[test]
fn check_reports_a_stale_file_with_a_diff() {
    let dir = TempDir::new("stale");
    let fresh = render("sokdak", "script");
    let stale = dir.write(
        "deploy.sh",
        &fresh.replacen("set -euo pipefail", "set -eu", 1),
    );
    let out = bluegreen(&[
        "-c",
        "examples/sokdak.yaml",
        "render",
        "script",
        "--check",
        stale.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("is stale"), "{err}");
    assert!(err.contains("-set -eu\n+set -euo pipefail\n"), "{err}");
}

#[test]
fn output_option_writes_an_executable_script() {
    let dir = TempDir::new("out");
    let path = dir.path().join("deploy.sh");
    let out = bluegreen(&[
        "-c",
        "examples/sokdak.yaml",
        "render",
        "script",
        "-o",
        path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o111, 0o111);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        render("sokdak", "script")
    );
}

fn shellcheck(path: &Path) {
    require("shellcheck", "shellcheck");
    let out = Command::new("shellcheck")
        .args(["--norc", "--severity=style", "--shell=bash"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "shellcheck findings in {}:\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn scripts_pass_bash_n_and_shellcheck() {
    require("bash", "bash");
    for ex in examples() {
        let path = root().join(format!("examples/{ex}.deploy.sh"));
        let out = Command::new("bash").arg("-n").arg(&path).output().unwrap();
        assert!(
            out.status.success(),
            "bash -n {ex}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        shellcheck(&path);
    }
    // The remote library is embedded in a quoted heredoc, which shellcheck does not read: check it
    // on its own.
    shellcheck(&root().join("crates/core/src/remote.sh"));
}

#[test]
fn shellcheck_can_fail() {
    // Proves the check above is not vacuous: a script with a classic mistake is reported.
    let dir = TempDir::new("sc");
    let bad = dir.write("bad.sh", "#!/bin/bash\nrm -rf $1/*\n");
    require("shellcheck", "shellcheck");
    let out = Command::new("shellcheck").arg(&bad).output().unwrap();
    assert!(!out.status.success());
}

#[test]
fn script_usage_and_phase_guard() {
    let dir = TempDir::new("usage");
    let script = dir.write("deploy.sh", &render("single-host", "script"));
    let out = Command::new("bash")
        .arg(&script)
        .arg("bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("usage: "));
    // A single phase without a run id, or without the state of earlier phases, refuses to run.
    let out = Command::new("bash")
        .arg(&script)
        .args(["run", "deploy", "upload"])
        .current_dir(dir.path())
        .env_remove("BG_RUN_ID")
        .env_remove("BUILD_TAG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("BG_RUN_ID (or BUILD_TAG) must identify the run when running one phase"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // abort with no state of this run does nothing and says so.
    let out = Command::new("bash")
        .arg(&script)
        .arg("abort")
        .current_dir(dir.path())
        .env("BG_RUN_ID", "test-run")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("abort: nothing of this run to undo"));
}

#[test]
fn script_names_a_missing_variable() {
    let dir = TempDir::new("envcheck");
    let script = dir.write("deploy.sh", &render("sokdak", "script"));
    let out = Command::new("bash")
        .arg(&script)
        .args(["run", "deploy", "prepare"])
        .current_dir(dir.path())
        .env("BG_RUN_ID", "test-run")
        .env("NGINX_PRIVATE_IP", "10.1.1.1")
        .env_remove("WAS_1_PRIVATE_IP")
        .env_remove("WAS_2_PRIVATE_IP")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error: servers[0].host: environment variable `WAS_1_PRIVATE_IP` is not set\n  hint: export WAS_1_PRIVATE_IP=... before running, or remove the reference\n"),
        "{err}"
    );
}

/// Runs the Groovy harness on a Jenkinsfile; returns (exit code, result JSON if any, stderr).
pub fn harness(jenkinsfile: &Path, args: &[&str]) -> (i32, Option<Value>, String) {
    require("groovy", "groovy");
    let dir = TempDir::new("harness");
    let result = dir.path().join("result.json");
    let out = Command::new("groovy")
        .env("JAVA_HOME", java_home())
        .arg(root().join("tests/groovy/harness.groovy"))
        .args(args)
        .arg("--result-file")
        .arg(&result)
        .arg(jenkinsfile)
        .output()
        .unwrap();
    let json = std::fs::read_to_string(&result)
        .ok()
        .map(|t| serde_json::from_str(&t).unwrap());
    (
        out.status.code().unwrap_or(-1),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// (stage, status) pairs of a harness result.
pub fn stage_statuses(json: &Value) -> Vec<(String, String)> {
    json["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The text between the heredoc markers of a Setup stage's shell step.
fn embedded_script(sh: &str) -> &str {
    let start = sh
        .find("<<'BLUEGREEN_SCRIPT_EOF'\n")
        .expect("heredoc start")
        + "<<'BLUEGREEN_SCRIPT_EOF'\n".len();
    let end = sh.rfind("BLUEGREEN_SCRIPT_EOF\n").expect("heredoc end");
    &sh[start..end]
}

/// The deploy script the Setup stage's shell steps write, their pieces joined in order.
pub fn setup_script(sh: &[&Value]) -> String {
    sh.iter()
        .filter(|s| s["stage"] == "Setup")
        .map(|s| embedded_script(s["script"].as_str().unwrap()))
        .collect()
}

#[test]
fn jenkinsfiles_evaluate_with_the_exact_script_in_one_stage_per_phase() {
    for ex in examples() {
        let jf = root().join(format!("examples/{ex}.Jenkinsfile"));
        let cfg =
            bluegreen_core::Config::load(&root().join(format!("examples/{ex}.yaml"))).unwrap();
        let key_dir = TempDir::new("key");
        let key = key_dir.write("id", crate::util::FAKE_SSH_KEY);
        let key = key.display();
        let mut args = vec![
            "--env".to_string(),
            format!("BRANCH_NAME={}", cfg.jenkins.branch),
            "--env".to_string(),
            "BUILD_TAG=jenkins-job-7".to_string(),
            "--cred".to_string(),
            format!("{}={key}", cfg.ssh.credentials_id),
        ];
        if let Some(k) = &cfg.ssh.known_hosts_credential {
            let kh = key_dir.write("known_hosts", crate::util::FAKE_KNOWN_HOSTS);
            args.push("--cred".into());
            args.push(format!("{k}={}", kh.display()));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, json, err) = harness(&jf, &args);
        assert_eq!(code, 0, "{ex}: {err}");
        let json = json.unwrap();
        assert_eq!(json["result"], "SUCCESS", "{ex}: {err}");
        // The Run stage's agent builds, writes the script and deploys up to the gate; with a
        // gate, Promote waits on no agent and Promoted takes one again for the rest.
        let mut expected: Vec<(String, String)> = vec![("Run".into(), "success".into())];
        if cfg.jenkins.build.is_some() {
            expected.push(("Build".into(), "success".into()));
        }
        expected.push(("Setup".into(), "success".into()));
        expected.push(("Deploy".into(), "success".into()));
        let mut phases = vec!["Prepare", "Upload", "Start", "Verify", "Switch"];
        if cfg.jenkins.gate.is_some() {
            phases.extend(["Promote", "Promoted"]);
        }
        phases.extend(["Drain", "Retire", "Finish"]);
        for p in phases {
            expected.push((p.into(), "success".into()));
        }
        expected.push(("Rollback".into(), "skipped".into()));
        assert_eq!(stage_statuses(&json), expected, "{ex}");
        // Issue 12, item 6: nothing holds an executor for the whole build, and the gate waits
        // holding none.
        assert_eq!(json["agent"]["type"], "none", "{ex}");
        for input in json["input"].as_array().unwrap() {
            assert_eq!(input["executor"], false, "{ex}: {input}");
        }

        let sh: Vec<&Value> = json["sh"].as_array().unwrap().iter().collect();
        for s in &sh {
            assert!(
                s["script"].as_str().unwrap().starts_with("#!/bin/bash\n"),
                "every sh step runs bash: {s}"
            );
        }
        // What Jenkins would run is byte for byte the script `render script` prints: the Groovy
        // escaping round-trips, and the pieces join up.
        assert_eq!(setup_script(&sh), render(&ex, "script"), "{ex}");
        for (stage, phase) in [("Upload", "upload"), ("Finish", "finish")] {
            let s = sh.iter().find(|s| s["stage"] == stage).unwrap();
            assert_eq!(
                s["script"].as_str().unwrap(),
                format!("#!/bin/bash\nexec bash .bluegreen/deploy.sh run deploy {phase}\n")
            );
        }
        let creds: Vec<&str> = json["credentials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert!(
            creds.contains(&cfg.ssh.credentials_id.as_str()),
            "{creds:?}"
        );
        assert!(
            json["options"]["disableConcurrentBuilds"].is_object(),
            "{ex}: {}",
            json["options"]
        );
        // jenkins.timeout bounds the stages that deploy (and build, and roll back), not the
        // pipeline: Jenkins runs `post` inside a pipeline-level timeout, whose 60 s grace would cut
        // the undo short (issue 12, item 1).
        assert!(
            json["options"]["timeout"].is_null(),
            "{ex}: {}",
            json["options"]
        );
        let minutes = cfg.jenkins.timeout.as_secs().div_ceil(60);
        let deploy = json["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "Deploy")
            .unwrap();
        assert_eq!(deploy["options"]["timeout"]["time"], minutes, "{ex}");
        assert_eq!(deploy["options"]["timeout"]["unit"], "MINUTES", "{ex}");
        let phases_sh: Vec<&&Value> = sh
            .iter()
            .filter(|s| {
                s["script"]
                    .as_str()
                    .unwrap()
                    .starts_with("#!/bin/bash\nexec bash .bluegreen/deploy.sh run deploy ")
            })
            .collect();
        assert!(!phases_sh.is_empty(), "{ex}");
        // Each phase's step is under jenkins.timeout: the Deploy stage's up to the gate, the
        // Promote stage's own around its step, the Promoted stage's after the gate.
        let mut within = "stage Deploy";
        for s in phases_sh {
            let script = s["script"].as_str().unwrap();
            let expected = if script.ends_with(" promote\n") {
                within = "stage Promoted";
                "timeout step"
            } else {
                within
            };
            assert_eq!(
                s["timeouts"],
                serde_json::json!([expected]),
                "{ex}: {script}"
            );
        }
        if cfg.jenkins.gate.is_some() {
            let promoted = json["stages"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == "Promoted")
                .unwrap();
            assert_eq!(promoted["options"]["timeout"]["time"], minutes, "{ex}");
        }
        let slack = json["slack"].as_array().unwrap();
        match &cfg.slack {
            Some(s) => {
                assert_eq!(slack.len(), 1, "{ex}");
                assert_eq!(slack[0]["channel"], s.channel.as_str());
                assert_eq!(slack[0]["color"], "good");
            }
            None => assert!(slack.is_empty()),
        }
    }
}

#[test]
fn deploy_stage_runs_in_plain_pipeline_jobs_and_skips_other_branches() {
    let jf = root().join("examples/sokdak.Jenkinsfile");
    let dir = TempDir::new("key");
    let key = dir.write("id", crate::util::FAKE_SSH_KEY);
    let back_key = format!("back-key={}", key.display());
    let kh = dir.write("known_hosts", crate::util::FAKE_KNOWN_HOSTS);
    let known_hosts = format!("known-hosts={}", kh.display());
    let creds = ["--cred", back_key.as_str(), "--cred", known_hosts.as_str()];
    // A plain "Pipeline from SCM" job has no BRANCH_NAME, only GIT_BRANCH=origin/main.
    let mut args = vec!["--env", "GIT_BRANCH=origin/main"];
    args.extend(creds);
    let (code, json, err) = harness(&jf, &args);
    assert_eq!(code, 0, "{err}");
    let statuses = stage_statuses(&json.unwrap());
    assert!(
        statuses.contains(&("Switch".into(), "success".into())),
        "{statuses:?}"
    );

    let mut args = vec!["--env", "BRANCH_NAME=feature/x"];
    args.extend(creds);
    let (code, json, err) = harness(&jf, &args);
    assert_eq!(code, 0, "{err}");
    let statuses = stage_statuses(&json.unwrap());
    assert!(
        statuses.contains(&("Deploy".into(), "skipped".into())),
        "{statuses:?}"
    );
    assert!(
        !statuses
            .iter()
            .any(|(n, s)| n == "Switch" && s == "success"),
        "{statuses:?}"
    );
}

#[test]
fn jenkinsfiles_compile_under_groovy_2_4() {
    require("groovy", "groovy");
    let dir = TempDir::new("groovyc");
    let version = Command::new("groovy")
        .env("JAVA_HOME", java_home())
        .arg("--version")
        .output()
        .unwrap();
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(
        version.contains("Version: 2.4."),
        "Jenkins compiles with Groovy 2.4, got: {version}"
    );
    for ex in examples() {
        let out = groovy_parse(&dir, &root().join(format!("examples/{ex}.Jenkinsfile")));
        assert!(
            out.status.success(),
            "{ex}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // And the parse step can fail: `\d` is no escape in Groovy 2.4.
    let bad = dir.write("Bad.Jenkinsfile", "pipeline { stages { sh 'grep \\d' } }\n");
    assert!(!groovy_parse(&dir, &bad).status.success());
}

/// Compiles a Jenkinsfile with Groovy (parse only, like Jenkins' CPS compiler's first pass: any
/// escape or quoting error, or a string constant over the class file's limit, fails).
fn groovy_parse(dir: &TempDir, jenkinsfile: &Path) -> std::process::Output {
    let check = dir.write(
        "parse.groovy",
        &format!(
            "new GroovyShell().parse(new File('{}').text)\nprintln 'parsed'\n",
            jenkinsfile.display()
        ),
    );
    Command::new("groovy")
        .env("JAVA_HOME", java_home())
        .arg(&check)
        .output()
        .unwrap()
}

#[test]
fn harness_rejects_malformed_pipelines() {
    require("groovy", "groovy");
    let out = Command::new("bash")
        .arg(root().join("tests/groovy/selftest.sh"))
        .env("JAVA_HOME", java_home())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "harness self-test failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn plan_prints_for_a_person_and_as_json() {
    let out = bluegreen(&["-c", "examples/sokdak.yaml", "plan"]);
    assert!(out.status.success(), "{}", stderr(&out));
    insta::assert_snapshot!("sokdak_plan", stdout(&out));

    let out = bluegreen(&["-c", "examples/sokdak.yaml", "plan", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["action"], "deploy");
    let phases: Vec<&str> = json["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        ["prepare", "upload", "start", "verify", "switch", "drain", "retire", "finish"]
    );
    // The target slot stays symbolic until run time.
    assert!(stdout(&out).contains("\"target_slot\""));
}

#[test]
fn script_redacts_urls_like_core() {
    require("bash", "bash");
    let script = render("sokdak", "script");
    let start = script.find("bg_redact_url() {").expect("bg_redact_url");
    let end = start + script[start..].find("\n}\n").unwrap() + 3;
    let function = &script[start..end];
    let urls = [
        "http://user:secret@host/health?token=abc",
        "https://user@host:8443/",
        "http://a:b@c@host/x",
        "http://host/x?a=1&b=&c",
        "http://host/x?a=b=c&&d=&",
        "http://host?k=v#frag",
        "http://host/p#x?k=v",
        "http://host/a@b?",
        "http://[::1]:8080/h?x=1",
        "http://u:p@h#f@g?q=1",
        "http://10.0.0.5/actuator/health",
        "ftp://x:y@z/?a=b",
        "not a url",
        "",
        "http://***@h/?a=***",
        "http://u:p%40ss w*rd@h/x y?t=a b&u=$(id)",
    ];
    let mut cmd = String::from(function);
    cmd.push_str("for u in \"$@\"; do bg_redact_url \"$u\"; done\n");
    let out = Command::new("bash")
        .arg("-c")
        .arg(&cmd)
        .arg("bash")
        .args(urls)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let want: Vec<String> = urls.iter().map(|u| bluegreen_core::redact_url(u)).collect();
    assert_eq!(got, want);
}

#[test]
fn script_checks_values_by_cores_rules() {
    use bluegreen_core::config::ValueRule;
    require("bash", "bash");
    let script = render("sokdak", "script");
    let start = script.find("bg_check_var() {").expect("bg_check_var");
    let end = start + script[start..].find("\n}\n").unwrap() + 3;
    let function = &script[start..end];
    // Every ASCII character, first and not first, a few others, for each rule.
    let mut values: Vec<String> = vec![String::new(), "é".into(), "aé".into(), "a b".into()];
    for c in (1u8..128).map(char::from) {
        values.push(c.to_string());
        values.push(format!("a{c}"));
        values.push(format!("a{c}b"));
    }
    let mut input = Vec::new();
    let mut expected = Vec::new();
    for rule in ValueRule::ALL {
        for v in &values {
            input.extend_from_slice(format!("{}\0{v}\0", rule.name).as_bytes());
            expected.push(match rule.problem(v) {
                Some(problem) => bluegreen_core::Error::BadVariable {
                    field: "f".into(),
                    name: "V".into(),
                    value: v.clone(),
                    message: problem.into(),
                }
                .to_string(),
                None => String::new(),
            });
        }
    }
    let dir = TempDir::new("rules");
    let values_file = dir.path().join("values");
    std::fs::write(&values_file, &input).unwrap();
    let program = format!(
        "set -euo pipefail\nbg_fail() {{ printf '%s' \"$*\"; exit 1; }}\n{function}\
         while IFS= read -r -d '' rule && IFS= read -r -d '' V; do\n\
           out=$(bg_check_var f V \"$rule\") || true\n\
           printf '%s\\0' \"$out\"\n\
         done <\"$1\"\n"
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&program)
        .arg("bash")
        .arg(&values_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .split_terminator('\0')
        .map(str::to_string)
        .collect();
    assert_eq!(got.len(), expected.len());
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(g, e, "case {i}");
    }
}

/// Issue: no Jenkinsfile could be rendered for 10 or more app hosts (the script is embedded in
/// Groovy string constants of at most 65,535 bytes of modified UTF-8), and the size was counted in
/// UTF-16 units, so non-ASCII text could pass the check and fail to compile. (Since the script reads
/// its hosts from a table, 200 hosts add some 12 KB; the script still takes more than one constant.)
#[test]
fn a_jenkinsfile_for_200_app_hosts_compiles_and_carries_the_exact_script() {
    require("groovy", "groovy");
    let dir = TempDir::new("many-hosts");
    let servers: String = (0..200)
        .map(|i| format!("  - host: 10.20.{}.{}\n", i / 250, i % 250 + 1))
        .collect();
    let text = std::fs::read_to_string(root().join("examples/sokdak.yaml"))
        .unwrap()
        .replace(
            "  - host: ${WAS_1_PRIVATE_IP}\n  - host: ${WAS_2_PRIVATE_IP}\n",
            &servers,
        )
        // Non-ASCII text in what the script carries (three bytes each in UTF-8; the rocket four,
        // and six in the class file's modified UTF-8).
        .replace(
            "--spring.profiles.active=prod",
            "--spring.profiles.active=prod --app.greeting=배포-알림-🚀",
        );
    let cfg = dir.write("bluegreen.yaml", &text);
    let cfg = cfg.display().to_string();
    let out = bluegreen(&["-c", &cfg, "render", "script"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let script = stdout(&out);
    let out = bluegreen(&["-c", &cfg, "render", "jenkinsfile"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let jf = dir.write("Jenkinsfile", &stdout(&out));
    assert!(
        std::fs::metadata(&jf).unwrap().len() > 65_535,
        "the pipeline is larger than one Groovy constant could hold"
    );
    let parsed = groovy_parse(&dir, &jf);
    assert!(
        parsed.status.success(),
        "{}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    let key = dir.write("id", crate::util::FAKE_SSH_KEY);
    let (code, json, err) = harness(
        &jf,
        &[
            "--env",
            "BRANCH_NAME=main",
            "--env",
            "BUILD_TAG=jenkins-job-7",
            "--cred",
            &format!("back-key={}", key.display()),
            "--cred",
            &format!(
                "known-hosts={}",
                dir.write("known_hosts", crate::util::FAKE_KNOWN_HOSTS)
                    .display()
            ),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let json = json.unwrap();
    assert_eq!(json["result"], "SUCCESS", "{err}");
    let sh: Vec<&Value> = json["sh"].as_array().unwrap().iter().collect();
    assert!(
        sh.iter().filter(|s| s["stage"] == "Setup").count() > 1,
        "the script is written in several pieces"
    );
    assert_eq!(setup_script(&sh), script);
}

/// The check through the proxy after the switch is defined once, in the plan: the script is
/// rendered with the plan's tries, interval and timeout, the same fields exec reads.
#[test]
fn the_post_switch_check_is_the_plans_in_both_backends() {
    let cfg = bluegreen_core::Config::load(&root().join("examples/sokdak.yaml")).unwrap();
    let plan = bluegreen_core::Plan::new(&cfg);
    let sw = plan
        .phases
        .iter()
        .flat_map(|p| &p.steps)
        .find_map(|s| match s {
            bluegreen_core::Step::Switch(sw) => Some(sw),
            _ => None,
        })
        .unwrap();
    assert_eq!(sw.check_tries, bluegreen_core::plan::CHECK_TRIES);
    assert_eq!(sw.check_timeout_ms, 2000, "health.timeout in sokdak.yaml");
    let script = render("sokdak", "script");
    let line = script
        .lines()
        .find(|l| l.trim_start().starts_with("bg_check_url \""))
        .expect("a check through the proxy");
    assert!(
        line.ends_with(&format!(
            " {} {}.{:03} {}.{:03}",
            sw.check_tries,
            sw.check_interval_ms / 1000,
            sw.check_interval_ms % 1000,
            sw.check_timeout_ms / 1000,
            sw.check_timeout_ms % 1000
        )),
        "{line}"
    );
}

/// Slot selection is defined once, in core: the script's generated `bg_select_slots`, run in bash,
/// picks what `bluegreen_core::plan::target_slot` (which exec uses) picks, for every live slot.
#[test]
fn the_script_selects_slots_by_cores_rule() {
    let script = render("sokdak", "script");
    let start = script.find("bg_select_slots() {").unwrap();
    let end = start + script[start..].find("\n}\n").unwrap() + 3;
    let function = &script[start..end];
    for live in ["blue", "green", "none", "purple"] {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "set -eu\nbg_log() {{ :; }}\nbg_fail() {{ echo \"fail: $*\"; exit 1; }}\n{function}\n\
                 BG_BLUE_PORT=8080 BG_GREEN_PORT=8081 BG_LIVE_SLOT={live}\nbg_select_slots\n\
                 echo \"$BG_TARGET_SLOT $BG_TARGET_PORT ${{BG_LIVE_PORT:-none}}\""
            ))
            .output()
            .unwrap();
        let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let port = |s: &str| if s == "blue" { "8080" } else { "8081" };
        let want = match bluegreen_core::plan::target_slot(live) {
            Some(t) => format!(
                "{t} {} {}",
                port(t),
                if live == "none" { "none" } else { port(live) }
            ),
            None => format!("fail: [proxy] cannot tell the live slot from '{live}'"),
        };
        assert_eq!(got, want, "live {live}");
    }
}

/// `examples/sokdak.yaml` with `n` app hosts: literal addresses, or each from a variable of its own
/// (`${WAS_<i>_PRIVATE_IP}`, as the example has them).
fn sokdak_with_hosts(n: usize, from_variables: bool) -> String {
    let servers: String = (1..=n)
        .map(|i| {
            if from_variables {
                format!("  - host: ${{WAS_{i}_PRIVATE_IP}}\n")
            } else {
                format!("  - host: 10.20.{}.{}\n", i / 250, i % 250 + 1)
            }
        })
        .collect();
    let text = std::fs::read_to_string(root().join("examples/sokdak.yaml")).unwrap();
    let example = "  - host: ${WAS_1_PRIVATE_IP}\n  - host: ${WAS_2_PRIVATE_IP}\n";
    assert!(text.contains(example));
    text.replace(example, &servers)
}

fn script_for(config_text: &str) -> String {
    let config = bluegreen_core::Config::parse(config_text, "bluegreen.yaml").unwrap();
    bluegreen_render::script(&bluegreen_core::Plan::new(&config), "bluegreen.yaml").unwrap()
}

/// Hosts are data: the script for N + k app hosts is the script for N with k more lines in its
/// host table, each short (step numbers, which count the hosts' steps, may change by a digit).
/// Before, every host had its own function per step and its own lines in every undo: some 4 KB.
#[test]
fn the_script_grows_by_one_short_line_per_app_host() {
    let digitless = |l: &str| l.replace(|c: char| c.is_ascii_digit(), "");
    for from_variables in [false, true] {
        let sizes = [2, 10, 50];
        let scripts: Vec<String> = sizes
            .iter()
            .map(|&n| script_for(&sokdak_with_hosts(n, from_variables)))
            .collect();
        for w in 0..sizes.len() - 1 {
            let (small, big) = (&scripts[w], &scripts[w + 1]);
            let k = sizes[w + 1] - sizes[w];
            let label = format!(
                "{} → {} hosts, from variables: {from_variables}",
                sizes[w],
                sizes[w + 1]
            );
            assert_eq!(big.lines().count(), small.lines().count() + k, "{label}");
            let growth = big.len() - small.len();
            assert!(growth <= 120 * k, "{label}: {growth} bytes for {k} hosts");
            // Every line of the small script is in the big one, in order; the others are host
            // table lines.
            let mut small_lines = small.lines().map(digitless).peekable();
            let mut added = Vec::new();
            for line in big.lines() {
                if small_lines.peek() == Some(&digitless(line)) {
                    small_lines.next();
                } else {
                    added.push(line);
                }
            }
            assert_eq!(
                small_lines.next(),
                None,
                "{label}: a line of the small script is gone"
            );
            assert_eq!(added.len(), k, "{label}: {added:#?}");
            for line in added {
                assert!(line.starts_with("  \"$fn\" app"), "{label}: {line}");
                assert!(line.len() <= 120, "{label}: {line}");
            }
        }
    }
    // The same for the Jenkinsfile that carries the script, but for the Setup stage's steps.
    let plan = |n| {
        let cfg = bluegreen_core::Config::parse(&sokdak_with_hosts(n, true), "b.yaml").unwrap();
        bluegreen_core::Plan::new(&cfg)
    };
    let jf = |n| {
        bluegreen_render::jenkinsfile(&plan(n), "b.yaml")
            .unwrap()
            .len()
    };
    let growth = jf(50) - jf(10);
    assert!(
        growth <= 120 * 40 + 1000,
        "Jenkinsfile: {growth} bytes for 40 hosts"
    );
}

/// The script numbers the steps as the plan does (the crash tests kill it at step N): each step
/// run on every app host has the first host's number plus the host's index in the table.
#[test]
fn the_script_numbers_each_hosts_steps_as_the_plan_does() {
    require("bash", "bash");
    let text = sokdak_with_hosts(3, false);
    let config = bluegreen_core::Config::parse(&text, "bluegreen.yaml").unwrap();
    let deploy = bluegreen_core::Plan::new(&config);
    let script = script_for(&text);
    let functions = script.trim_end().strip_suffix("bg_main \"$@\"").unwrap();
    let mut program = format!(
        "{functions}\nset +e\nNGINX_PRIVATE_IP=10.0.0.5\nbg_init\n\
         bg_at() {{ echo \"$1 ${{id:--}}\"; }}\n\
         bg_on() {{ :; }}; bg_remote() {{ echo none; }}; bg_health() {{ :; }}; bg_upload() {{ :; }}\n\
         bg_check_space() {{ :; }}; bg_check_url() {{ :; }}; bg_notify() {{ :; }}; bg_log() {{ :; }}\n\
         bg_shell_open() {{ :; }}\n\
         sleep() {{ :; }}\n\
         BG_LIVE_SLOT=green BG_LIVE_PORT=8081 BG_TARGET_SLOT=blue BG_TARGET_PORT=8080 BG_RELEASE=r\n\
         BG_DEPLOYER=d BG_RUN_TOKEN=t\n"
    );
    let mut expected = Vec::new();
    for plan in [deploy.clone(), deploy.to_rollback(), deploy.to_retire()] {
        program.push_str("echo ==\n");
        expected.push("==".to_string());
        let mut numbers = Vec::new();
        for (n, phase, step) in plan.steps() {
            let host = if phase.parallel {
                step.host().unwrap()
            } else {
                "-"
            };
            numbers.push(format!("{n} {host}"));
        }
        // Hosts of one phase run at once, in any order: compared sorted.
        numbers.sort();
        expected.extend(numbers);
        for phase in &plan.phases {
            program.push_str(&format!(
                "bg_{}_phase_{}\n",
                plan.action.name(),
                phase.kind.name()
            ));
        }
    }
    let out = Command::new("bash")
        .arg("-c")
        .arg(&program)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut got: Vec<String> = Vec::new();
    for block in String::from_utf8(out.stdout).unwrap().split("==\n") {
        if block.is_empty() {
            continue;
        }
        got.push("==".into());
        let mut lines: Vec<String> = block.lines().map(str::to_string).collect();
        lines.sort();
        got.extend(lines);
    }
    assert_eq!(got, expected);
    assert!(expected.contains(&"5 app3".to_string()), "{expected:?}");
}

#[test]
fn hooks_and_a_gate_before_the_switch_render_as_their_own_stages() {
    // single-host.yaml with every hook and the gate moved before the switch: the script passes
    // shellcheck, the Jenkinsfile compiles under Groovy 2.4 and evaluates with one stage per
    // phase, the gate waiting before the switch with words that say so.
    let text = std::fs::read_to_string(root().join("examples/single-host.yaml")).unwrap();
    let text = text.replace(
        "  gate: 20m      # after the switch, a person keeps the new version or rolls back",
        "  gate: 20m
  gate_at: before_switch
hooks:
  pre_deploy:
    run: ./migrate.sh --to \"$BG_RELEASE\"
    on: app.internal.example
    timeout: 10m
  pre_switch: curl -fsS \"$BG_URL/healthz\"
  post_switch:
    run: 'echo \"live: $BG_TARGET_SLOT\"'
    on: proxy
  on_failure: echo \"failed in $BG_FAILED_PHASE\" >>failures",
    );
    assert!(
        text.contains("gate_at"),
        "single-host.yaml changed: update this test"
    );
    let dir = TempDir::new("hooks-render");
    let cfg = dir.write("bluegreen.yaml", &text);
    let cfg = cfg.to_str().unwrap();
    let script = dir.path().join("deploy.sh");
    let jf = dir.path().join("Jenkinsfile");
    for (what, out) in [("script", &script), ("jenkinsfile", &jf)] {
        let r = bluegreen(&["-c", cfg, "render", what, "-o", out.to_str().unwrap()]);
        assert!(r.status.success(), "{}", stderr(&r));
    }
    shellcheck(&script);
    let parsed = groovy_parse(&dir, &jf);
    assert!(
        parsed.status.success(),
        "{}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    let key = dir.write("id", crate::util::FAKE_SSH_KEY);
    let cred = format!("billing-deploy-key={}", key.display());
    let (code, json, err) = harness(
        &jf,
        &["--env", "BRANCH_NAME=release", "--cred", cred.as_str()],
    );
    assert_eq!(code, 0, "{err}");
    let json = json.unwrap();
    let names: Vec<String> = stage_statuses(&json).into_iter().map(|(n, _)| n).collect();
    let deploy: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .skip_while(|n| *n != "Prepare")
        .take_while(|n| *n != "Rollback")
        .collect();
    assert_eq!(
        deploy,
        [
            "Prepare",
            "Pre-deploy",
            "Upload",
            "Start",
            "Verify",
            "Pre-switch",
            "Promote",
            "Promoted",
            "Switch",
            "Post-switch",
            "Drain",
            "Retire",
            "Finish"
        ]
    );
    let input = json["input"].as_array().unwrap();
    assert_eq!(input[0]["stage"], "Promote");
    let message = input[0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("Switch billing to the new version?"),
        "{message}"
    );
    // Each hook stage runs its phase of the script.
    let sh: Vec<&Value> = json["sh"].as_array().unwrap().iter().collect();
    for (stage, phase) in [
        ("Pre-deploy", "pre_deploy"),
        ("Pre-switch", "pre_switch"),
        ("Post-switch", "post_switch"),
    ] {
        assert!(
            sh.iter().any(|s| s["stage"] == stage
                && s["script"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("deploy.sh run deploy {phase}"))),
            "{stage} does not run {phase}"
        );
    }
}
