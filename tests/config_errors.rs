//! Bad configs: each gives its exact message on stderr and exit code 2, and touches nothing.

use crate::util::{bluegreen_in, stderr, TempDir};

const BASE: &str = "app: shop
artifact: build/libs/*.jar
proxy:
  host: 10.0.0.5
  upstream_file: /etc/nginx/shop.conf
servers:
  - host: 10.0.0.11
deploy_dir: /srv/shop
";

/// A config made of small inline YAML (no BASE).
const SMALL: &str = "app: shop
artifact: x.jar
proxy: { host: 10.0.0.5, upstream_file: /etc/n.conf }
servers: [ { host: 10.0.0.11 } ]
deploy_dir: /srv/shop
";

fn check(yaml: &str, expected: &str) {
    let dir = TempDir::new("cfg");
    dir.write("bluegreen.yaml", yaml);
    let out = bluegreen_in(dir.path(), &["check"]);
    assert_eq!(stderr(&out), expected, "for config:\n{yaml}");
    assert_eq!(out.status.code(), Some(2), "for config:\n{yaml}");
}

#[test]
fn base_configs_are_valid() {
    for yaml in [BASE, SMALL] {
        let dir = TempDir::new("cfg");
        dir.write("bluegreen.yaml", yaml);
        let out = bluegreen_in(dir.path(), &["check"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
}

#[test]
fn unknown_key_suggests_the_right_one() {
    check(
        &format!("{BASE}helth:\n  path: /x\n"),
        "error: bluegreen.yaml:9:1: unknown field `helth`, expected one of `app`, `artifact`, `ssh`, `proxy`, `servers`, `slots`, `deploy_dir`, `start`, `health`, `drain`, `stop`, `retain`, `slack`, `jenkins`, `lock`, `max_parallel`, `env`, `secrets`, `hooks`, `supervisor`, `keep_releases`\n  hint: did you mean `health`?\n",
    );
}

#[test]
fn unknown_nested_key_names_its_section() {
    check(
        &format!("{BASE}health:\n  intervall: 1s\n"),
        "error: bluegreen.yaml:10:3: health: unknown field `intervall`, expected one of `path`, `status`, `body`, `interval`, `timeout`, `deadline`, `successes`, `from`\n  hint: did you mean `interval`?\n",
    );
}

#[test]
fn a_lock_lease_too_short_to_renew() {
    check(
        &format!("{BASE}lock:\n  stale_after: 1s\n"),
        "error: bluegreen.yaml: lock.stale_after: must be at least 2s\n  hint: the running deploy renews the lock every quarter of it\n",
    );
}

#[test]
fn a_pipeline_timeout_shorter_than_the_deploys_own_waits() {
    check(
        &format!("{BASE}health:\n  deadline: 5m\nstop:\n  grace: 2m\njenkins:\n  timeout: 8m\n"),
        "error: bluegreen.yaml: jenkins.timeout: 8m does not leave room for a deploy's own waits: health.deadline 5m + drain 0s + stop.grace 2m + the switch's settle 2m = 9m\n  hint: raise jenkins.timeout, or lower health.deadline, stop.grace or a hook's timeout\n",
    );
}

#[test]
fn wrong_type() {
    check(
        &SMALL.replace("servers: [ { host: 10.0.0.11 } ]", "servers: 10.0.0.11"),
        "error: bluegreen.yaml:4:10: servers: invalid type: string \"10.0.0.11\", expected a sequence\n",
    );
}

#[test]
fn bad_duration() {
    check(
        &format!("{BASE}drain: 5 parsecs\n"),
        "error: bluegreen.yaml:9:8: drain: invalid duration `5 parsecs`: unknown time unit \"parsecs\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations); write it like `500ms`, `5s` or `2m`\n",
    );
}

#[test]
fn duration_without_unit() {
    check(
        &format!("{BASE}drain: 5\n"),
        "error: bluegreen.yaml:9:8: drain: duration `5` has no unit; write `5s` or `5ms`\n",
    );
}

#[test]
fn same_port_twice() {
    check(
        &format!("{BASE}slots: {{ blue: 8080, green: 8080 }}\n"),
        "error: bluegreen.yaml: slots.green: uses port 8080 like slots.blue\n  hint: the two slots run side by side on each host, so they need different ports\n",
    );
}

#[test]
fn port_out_of_range() {
    check(
        &format!("{BASE}slots: {{ blue: 8080, green: 70000 }}\n"),
        "error: bluegreen.yaml:9:29: slots.green: invalid value: integer `70000`, expected u16\n",
    );
}

#[test]
fn port_zero() {
    check(
        &format!("{BASE}slots: {{ blue: 0, green: 8081 }}\n"),
        "error: bluegreen.yaml: slots.blue: port 0 is not a valid port (1-65535)\n",
    );
}

#[test]
fn no_servers() {
    check(
        &SMALL.replace("servers: [ { host: 10.0.0.11 } ]", "servers: []"),
        "error: bluegreen.yaml: servers: no app servers are listed\n  hint: add at least one `- host: ...` entry\n",
    );
}

#[test]
fn health_path_without_slash() {
    check(
        &format!("{BASE}health: {{ path: actuator/health }}\n"),
        "error: bluegreen.yaml: health.path: `actuator/health` does not start with `/`\n  hint: write `/actuator/health`\n",
    );
}

#[test]
fn unknown_host_key_policy() {
    check(
        &format!("{BASE}ssh: {{ host_key_policy: strictt }}\n"),
        "error: bluegreen.yaml:9:25: ssh.host_key_policy: unknown variant `strictt`, expected one of `strict`, `accept-new`, `off`\n  hint: did you mean `strict`?\n",
    );
}

#[test]
fn relative_deploy_dir() {
    check(
        &SMALL.replace("deploy_dir: /srv/shop", "deploy_dir: srv/shop"),
        "error: bluegreen.yaml: deploy_dir: `srv/shop` is not an absolute path\n  hint: remote paths must start with `/`\n",
    );
}

#[test]
fn unknown_start_placeholder() {
    check(
        &format!("{BASE}start: java -jar {{jar}} --server.port={{prot}}\n"),
        "error: bluegreen.yaml: start: unknown placeholder `{prot}`\n  hint: did you mean `{port}`? placeholders: {jar} {port} {slot} {host} {dir}; `{{` and `}}` write a literal `{` and `}`\n",
    );
}

#[test]
fn shell_braces_in_start_must_be_doubled() {
    // `${HOME}` is read as the placeholder `{HOME}`: still an error, which says how to write it.
    check(
        &format!("{BASE}start: java -Dhome=${{HOME}} -jar {{jar}} --server.port={{port}}\n"),
        "error: bluegreen.yaml: start: unknown placeholder `{HOME}`\n  hint: did you mean `{host}`? placeholders: {jar} {port} {slot} {host} {dir}; `{{` and `}}` write a literal `{` and `}`\n",
    );
    check(
        &format!("{BASE}start: \"sh -c 'f() {{{{ java -jar {{jar}} --server.port={{port}}; }}; f'\"\n"),
        "error: bluegreen.yaml: start: unmatched `}` in `sh -c 'f() {{ java -jar {jar} --server.port={port}; }; f'`\n  hint: write `}}` for a literal `}` (and `{{` for a literal `{`)\n",
    );
    check(
        &format!("{BASE}start: java -jar {{jar}} --server.port={{port}} {{{{x}}\n"),
        "error: bluegreen.yaml: start: unmatched `}` in `java -jar {jar} --server.port={port} {{x}`\n  hint: write `}}` for a literal `}` (and `{{` for a literal `{`)\n",
    );
    check(
        &format!("{BASE}start: java -jar {{jar}} --server.port={{port}} {{x\n"),
        "error: bluegreen.yaml: start: unclosed `{` in `java -jar {jar} --server.port={port} {x`\n  hint: write `{{` for a literal `{` (and `}}` for a literal `}`)\n",
    );
}

#[test]
fn doubled_braces_in_start_are_literal_braces() {
    let dir = TempDir::new("cfg");
    dir.write(
        "bluegreen.yaml",
        &format!("{BASE}start: \"sh -c 'f() {{{{ exec java -Dhome=${{{{HOME}}}} -jar {{jar}} --server.port={{port}}; }}}}; f'\"\n"),
    );
    let out = bluegreen_in(dir.path(), &["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The command the host runs has single braces; the placeholders became quoted variables.
    let out = bluegreen_in(dir.path(), &["render", "script"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(
        script.contains(r#""sh -c 'f() { exec java -Dhome=\${HOME} -jar \"\${BG_JAR}\" --server.port=\"\${BG_PORT}\"; }; f'""#),
        "{script}"
    );
}

#[test]
fn start_without_port() {
    check(
        &format!("{BASE}start: java -jar {{jar}}\n"),
        "error: bluegreen.yaml: start: does not use `{port}`\n  hint: the two slots differ only by port: pass it, e.g. `--server.port={port}`\n",
    );
}

#[test]
fn host_with_shell_syntax() {
    check(
        &SMALL.replace("host: 10.0.0.5,", "host: '10.0.0.5;reboot',"),
        "error: bluegreen.yaml: proxy.host: `10.0.0.5;reboot` is not a host name or IP address (letters, digits, `.`, `-`, `:`)\n",
    );
}

#[test]
fn bad_variable_reference() {
    check(
        &SMALL.replace("host: 10.0.0.5,", "host: '${1NGINX}',"),
        "error: bluegreen.yaml: proxy.host: `${1NGINX}` is not a valid variable reference\n  hint: write `${NAME}` with NAME made of letters, digits and `_`\n",
    );
}

#[test]
fn duplicate_server() {
    check(
        &SMALL.replace(
            "servers: [ { host: 10.0.0.11 } ]",
            "servers: [ { host: 10.0.0.11 }, { host: 10.0.0.11 } ]",
        ),
        "error: bluegreen.yaml: servers[1].host: `10.0.0.11` is listed twice (also servers[0])\n",
    );
}

#[test]
fn probe_timeout_longer_than_deadline() {
    check(
        &format!("{BASE}health: {{ timeout: 10s, deadline: 5s }}\n"),
        "error: bluegreen.yaml: health.timeout: 10s is longer than health.deadline (5s)\n",
    );
}

#[test]
fn malformed_yaml() {
    check(
        "app: shop\n  artifact: x\n",
        "error: bluegreen.yaml:2:11: mapping values are not allowed in this context\n",
    );
}

#[test]
fn missing_field() {
    check(
        "app: shop\n",
        "error: bluegreen.yaml:1:1: missing field `artifact`\n",
    );
}

#[test]
fn empty_config() {
    check(
        "",
        "error: bluegreen.yaml:1:1: the config is empty\n  hint: start from examples/sokdak.yaml\n",
    );
}

#[test]
fn app_name_with_shell_syntax() {
    check(
        &SMALL.replace("app: shop", "app: 'shop$(id)'"),
        "error: bluegreen.yaml: app: `shop$(id)` may contain only letters, digits, `.`, `_`, `-`, and must not start with `-` or `.`\n",
    );
}

#[test]
fn unknown_signal() {
    check(
        &format!("{BASE}stop: {{ signal: TERMINATE }}\n"),
        "error: bluegreen.yaml: stop.signal: `TERMINATE` is not a supported signal\n  hint: use one of TERM, INT, QUIT, HUP, USR1, USR2, KILL\n",
    );
}

#[test]
fn test_command_with_shell_syntax() {
    check(
        &SMALL.replace(
            "upstream_file: /etc/n.conf }",
            "upstream_file: /etc/n.conf, test_command: 'nginx -t; rm -rf /' }",
        ),
        "error: bluegreen.yaml: proxy.test_command: `nginx -t; rm -rf /` must be plain words (letters, digits, `._/=:@+,-`), no shell syntax\n  hint: it runs as a plain command (with `sudo -n` in front when proxy.sudo is true)\n",
    );
}

#[test]
fn status_out_of_range() {
    check(
        &format!("{BASE}health: {{ status: 999 }}\n"),
        "error: bluegreen.yaml: health.status: 999 is not an HTTP status (100-599)\n",
    );
}

#[test]
fn variable_where_not_allowed() {
    check(
        &format!("{BASE}health: {{ path: '/${{P}}' }}\n"),
        "error: bluegreen.yaml: health.path: `/${P}` refers to a variable, which this field does not allow\n  hint: variables are allowed in hosts, users, artifact, identity_file, known_hosts and check_url\n",
    );
}

#[test]
fn branch_with_quotes() {
    check(
        &format!("{BASE}jenkins: {{ branch: \"main'; sh 'x\" }}\n"),
        "error: bluegreen.yaml: jenkins.branch: `main'; sh 'x` may contain only letters, digits, `.`, `_`, `-`, `/`, and must not start with `-` or `.`\n",
    );
}

#[test]
fn zero_successes() {
    check(
        &format!("{BASE}health: {{ successes: 0 }}\n"),
        "error: bluegreen.yaml: health.successes: must be at least 1\n",
    );
}

#[test]
fn missing_file() {
    let dir = TempDir::new("cfg");
    let out = bluegreen_in(dir.path(), &["-c", "nope.yaml", "check"]);
    assert_eq!(
        stderr(&out),
        "error: cannot read config `nope.yaml`: No such file or directory (os error 2)\n"
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn exec_names_a_missing_variable_before_touching_any_host() {
    let dir = TempDir::new("cfg");
    // The proxy address is unroutable on purpose: reaching for it would hang, not fail fast.
    dir.write(
        "bluegreen.yaml",
        &SMALL.replace("host: 10.0.0.5,", "host: '${BG_TEST_UNSET_PROXY}',"),
    );
    let out = bluegreen_in(dir.path(), &["exec"]);
    assert_eq!(
        stderr(&out),
        "error: proxy.host: environment variable `BG_TEST_UNSET_PROXY` is not set\n  hint: export BG_TEST_UNSET_PROXY=... before running, or remove the reference\n"
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn exec_rejects_a_variable_holding_shell_syntax() {
    let dir = TempDir::new("cfg");
    dir.write(
        "bluegreen.yaml",
        &SMALL.replace("host: 10.0.0.5,", "host: '${BG_TEST_BAD_PROXY}',"),
    );
    let out = crate::util::Cmd::bluegreen(dir.path(), &["exec"])
        .env("BG_TEST_BAD_PROXY", "1.2.3.4;reboot")
        .output();
    assert_eq!(
        stderr(&out),
        "error: proxy.host: `1.2.3.4;reboot` (from `${BG_TEST_BAD_PROXY}`) is not a host name or IP address (letters, digits, `.`, `-`, `:`)\n"
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn max_parallel_of_zero() {
    check(
        &format!("{BASE}max_parallel: 0\n"),
        "error: bluegreen.yaml: max_parallel: must be at least 1 (leave it out to upload to and start every app host at once)\n",
    );
}

#[test]
fn max_parallel_shows_in_the_plan() {
    // Three hosts, at most two at once: the upload and start phases say so; verify does not.
    let dir = TempDir::new("cfg");
    dir.write(
        "bluegreen.yaml",
        "app: shop
artifact: x.jar
proxy: { host: 10.0.0.5, upstream_file: /etc/n.conf }
servers: [ { host: 10.0.0.11 }, { host: 10.0.0.12 }, { host: 10.0.0.13 } ]
deploy_dir: /srv/shop
max_parallel: 2
",
    );
    let out = bluegreen_in(dir.path(), &["plan"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("2. upload (hosts in parallel, at most 2 at once)"),
        "{text}"
    );
    assert!(
        text.contains("3. start (hosts in parallel, at most 2 at once)"),
        "{text}"
    );
    assert!(text.contains("4. verify (hosts in parallel)\n"), "{text}");
}

#[test]
fn env_and_secret_names() {
    check(
        &format!("{BASE}env:\n  BG_PORT: \"1\"\n"),
        "error: bluegreen.yaml: env.BG_PORT: `BG_PORT`: names starting with BG_ are bluegreen's own\n  hint: the start command reads $BG_JAR, $BG_PORT, $BG_SLOT, $BG_HOST and $BG_DIR\n",
    );
    check(
        &format!("{BASE}env:\n  MODE: a\nsecrets:\n  - MODE\n"),
        "error: bluegreen.yaml: secrets[0]: `MODE` is given twice (env and secrets share one namespace)\n",
    );
    check(
        &format!("{BASE}secrets:\n  - 1PASSWORD\n"),
        "error: bluegreen.yaml: secrets[0]: `1PASSWORD` is not a variable name (letters, digits, `_`; not a digit first)\n",
    );
    check(
        &format!("{BASE}secrets:\n  - {{ name: DB, credential: \"a b\" }}\n"),
        "error: bluegreen.yaml: secrets[0].credential: `a b` may contain only letters, digits, `.`, `_`, `-`, and must not start with `-` or `.`\n",
    );
}

#[test]
fn hooks_that_cannot_run_where_they_are_put() {
    // pre_switch runs against every new instance: never once on one host.
    check(
        &format!("{BASE}hooks:\n  pre_switch: {{ run: ./smoke, on: proxy }}\n"),
        "error: bluegreen.yaml: hooks.pre_switch.on: pre_switch runs against every new instance: on the runner, or on every app host\n  hint: use `on: runner` (the default) or `on: servers`\n",
    );
    // pre_deploy runs once.
    check(
        &format!("{BASE}hooks:\n  pre_deploy: {{ run: ./migrate, on: servers }}\n"),
        "error: bluegreen.yaml: hooks.pre_deploy.on: pre_deploy runs once, not on every app host\n  hint: use `runner` (the default), `proxy`, or one app server's host\n",
    );
    // A host that is not an app server's.
    check(
        &format!("{BASE}hooks:\n  pre_deploy: {{ run: ./migrate, on: 10.0.0.99 }}\n"),
        "error: bluegreen.yaml: hooks.pre_deploy.on: `10.0.0.99` is neither `runner`, `proxy`, `servers` nor the host of an app server\n  hint: name one of servers[].host as written there\n",
    );
    check(
        &format!("{BASE}hooks:\n  post_switch: {{ run: '  ' }}\n"),
        "error: bluegreen.yaml: hooks.post_switch.run: is empty\n",
    );
    check(
        &format!("{BASE}hooks:\n  on_failure: {{ run: ./tell, timeout: 0s }}\n"),
        "error: bluegreen.yaml: hooks.on_failure.timeout: must be greater than 0\n",
    );
    let out = {
        let dir = TempDir::new("cfg");
        dir.write(
            "bluegreen.yaml",
            &format!("{BASE}hooks:\n  pre_sitch: ./smoke\n"),
        );
        bluegreen_in(dir.path(), &["check"])
    };
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown field `pre_sitch`, expected one of `pre_deploy`, `pre_switch`, `post_switch`, `on_failure`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn hook_timeouts_count_against_the_pipeline_timeout() {
    check(
        &format!("{BASE}hooks:\n  pre_deploy: {{ run: ./migrate, timeout: 27m }}\n"),
        "error: bluegreen.yaml: jenkins.timeout: 30m does not leave room for a deploy's own waits: health.deadline 2m + drain 0s + stop.grace 30s + the switch's settle 30s + the hooks' timeouts 27m = 30m\n  hint: raise jenkins.timeout, or lower health.deadline, stop.grace or a hook's timeout\n",
    );
}

#[test]
fn a_gate_before_the_switch_needs_a_gate() {
    check(
        &format!("{BASE}jenkins:\n  gate_at: before_switch\n"),
        "error: bluegreen.yaml: jenkins.gate_at: is set, but there is no gate\n  hint: add `jenkins.gate: 15m` (how long the gate waits for a person)\n",
    );
    check(
        &format!("{BASE}jenkins:\n  gate: 15m\n  gate_at: later\n"),
        "error: bluegreen.yaml: jenkins.gate_at: `later` is not a place for the gate\n  hint: use `before_switch` (people look at the new instances on their idle ports, then proceed to switch) or `after_switch` (the default: the new version serves traffic while people decide)\n",
    );
}

#[test]
fn a_supervisor_bluegreen_does_not_know_is_refused() {
    check(
        &format!("{BASE}supervisor: runit\n"),
        "error: bluegreen.yaml: supervisor: `runit` is not a supervisor bluegreen knows\n  hint: use `systemd` (a unit per slot: restarted when it fails, the live slot started at boot), `systemd-user` (the same as units of the deploy user's own systemd, with lingering) or `none` (the default: started detached, nothing restarts it)\n",
    );
}
