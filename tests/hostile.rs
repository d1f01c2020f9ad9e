//! Hostile values: rejected by validation with a clear message, or rendered inert in both bash and
//! Groovy. (`script_calls` proves the bash side argument by argument.)

use crate::render::harness;
use crate::script_calls::HOSTILE;
use crate::util::{bluegreen_in, stderr, stdout, TempDir};

#[test]
fn hostile_values_survive_groovy_escaping_exactly() {
    let dir = TempDir::new("hostile");
    dir.write("bluegreen.yaml", HOSTILE);
    let script = bluegreen_in(dir.path(), &["render", "script"]);
    assert!(script.status.success(), "{}", stderr(&script));
    let out = bluegreen_in(dir.path(), &["render", "jenkinsfile", "-o", "Jenkinsfile"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let key = dir.write("key", crate::util::FAKE_SSH_KEY);
    let cred = format!("shop-ssh={}", key.display());
    let (code, json, err) = harness(
        &dir.path().join("Jenkinsfile"),
        &["--env", "BRANCH_NAME=main", "--cred", &cred],
    );
    assert_eq!(code, 0, "{err}");
    let json = json.unwrap();
    assert_eq!(json["result"], "SUCCESS", "{err}");
    let sh = json["sh"].as_array().unwrap();
    let build = sh.iter().find(|s| s["stage"] == "Build").unwrap();
    assert_eq!(
        build["script"].as_str().unwrap(),
        "#!/bin/bash\nset -euo pipefail\necho '''$(date)''' \"\\d\" \\ \\\\ `true`\n"
    );
    let sh: Vec<&serde_json::Value> = sh.iter().collect();
    assert_eq!(crate::render::setup_script(&sh), stdout(&script));
}

fn rejected(yaml: &str, expected: &str) {
    let dir = TempDir::new("reject");
    dir.write("bluegreen.yaml", yaml);
    for cmd in [
        &["check"][..],
        &["render", "script"],
        &["render", "jenkinsfile"],
        &["exec"],
    ] {
        let out = bluegreen_in(dir.path(), cmd);
        assert_eq!(out.status.code(), Some(2), "{cmd:?}");
        assert_eq!(stderr(&out), expected, "{cmd:?}");
        assert_eq!(stdout(&out), "", "{cmd:?}: nothing rendered");
    }
}

const OK: &str = "app: shop
artifact: x.jar
proxy: { host: 10.0.0.5, upstream_file: /etc/n.conf }
servers: [ { host: 10.0.0.11 } ]
deploy_dir: /srv/shop
";

#[test]
fn newline_in_a_path_is_rejected() {
    rejected(
        &OK.replace(
            "deploy_dir: /srv/shop",
            "deploy_dir: \"/srv/shop\\nrm -rf /\"",
        ),
        "error: bluegreen.yaml: deploy_dir: contains a line break or NUL\n",
    );
}

#[test]
fn newline_in_the_health_body_is_rejected() {
    rejected(
        &format!("{OK}health: {{ body: \"UP\\n'''\" }}\n"),
        "error: bluegreen.yaml: health.body: must be non-empty text on one line (it is matched as a fixed string)\n",
    );
}

#[test]
fn newline_in_the_start_command_is_rejected() {
    rejected(
        &format!("{OK}start: \"java -jar {{jar}} --server.port={{port}}\\nreboot\"\n"),
        "error: bluegreen.yaml: start: must be one line\n",
    );
}

#[test]
fn quotes_in_credential_ids_are_rejected() {
    rejected(
        &format!("{OK}ssh: {{ credentials_id: \"key'), sh('id\" }}\n"),
        "error: bluegreen.yaml: ssh.credentials_id: `key'), sh('id` may contain only letters, digits, `.`, `_`, `-`, and must not start with `-` or `.`\n",
    );
}

#[test]
fn backticks_in_a_user_are_rejected() {
    rejected(
        &format!("{OK}ssh: {{ user: \"`id`\" }}\n"),
        "error: bluegreen.yaml: ssh.user: ``id`` is not a valid user name (letters, digits, `.`, `_`, `-`)\n",
    );
}

#[test]
fn slack_channel_with_quotes_is_rejected() {
    rejected(
        &format!("{OK}slack: {{ channel: \"ops' + env.X + '\" }}\n"),
        "error: bluegreen.yaml: slack.channel: `ops' + env.X + '` may contain only letters, digits, `.`, `_`, `-`, and must not start with `-` or `.`\n",
    );
}
