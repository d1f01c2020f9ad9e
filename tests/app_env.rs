//! The app's environment and secrets (issue 11, item 2), on the testbed with the light app: `env:`
//! and `secrets:` reach the instance (deployed by exec, by the rendered script, and restarted by a
//! rollback), through a file of the slot's that only the deploy user reads, and a secret's value
//! appears nowhere else: not in exec's or the script's output (with `-v`), the plan, the rendered
//! script, the proxy's state and audit log, the slot's other files, or any process's command line.

use crate::scale::light_apps;
use crate::testbed::{serial, Testbed};
use crate::util::{Cmd, TempDir};
use bluegreen_testbed::DeployOptions;

const SECRET_NAME: &str = "APP_DB_PASSWORD";

/// What the running instance of `slot` on app1 has in its environment for NAME (its session's
/// processes, read from /proc as root).
fn instance_env(tb: &Testbed, slot: &str, name: &str) -> String {
    let deploy = tb.var("DEPLOY_DIR");
    tb.sh_ok(
        "app1",
        &format!(
            "read -r pid _ <{deploy}/{slot}/app.pid; for p in $(pgrep -s \"$pid\"); do tr '\\0' '\\n' </proc/$p/environ; done | sed -n 's/^{name}=//p' | sort -u"
        ),
    )
}

/// Every place the secret's value must not be, on the hosts: the proxy's state directory, the
/// deploy directory's files but the slots' app.env, every process's command line.
fn assert_nowhere_on_hosts(tb: &Testbed, value: &str) {
    let probe = format!(
        "v=$(printf '%s' {q}); grep -rlF -- \"$v\" {state} 2>/dev/null; grep -rlF --exclude=app.env -- \"$v\" {deploy} 2>/dev/null; for c in /proc/[0-9]*/cmdline; do tr '\\0' ' ' <\"$c\" 2>/dev/null | grep -qF -- \"$v\" && echo \"$c\"; done; true",
        q = bluegreen_core::remote::bash_quote(value),
        state = tb.var("STATE_DIR"),
        deploy = tb.var("DEPLOY_DIR"),
    );
    for host in ["proxy", "app1"] {
        let found = tb.sh_ok(host, &probe);
        assert!(found.is_empty(), "the secret is in {host}: {found}");
    }
}

#[test]
fn env_and_secrets_reach_the_app_and_nothing_else() {
    let _g = serial();
    let tb = Testbed::up(1);
    let tmp = TempDir::new("app-env");
    let secret = format!(
        "s3cr3t {} it's \"$(touch /tmp/PWNED)\" `x` ; \\",
        std::process::id()
    );
    let opts = DeployOptions::new("60s").light().extra(&format!(
        "env:\n  APP_MODE: plain text 'with' quotes\nsecrets:\n  - {SECRET_NAME}\n"
    ));
    let wd = bluegreen_testbed::Workdir::with(&tb, tmp.path(), light_apps(), &opts).unwrap();
    let dir = tmp.path();

    // The plan names the secret, never its value (it is not even read to print the plan).
    let plan = Cmd::bluegreen(dir, &["plan", "--json"])
        .env(SECRET_NAME, &secret)
        .run();
    assert!(plan.success(), "{}", plan.out());
    assert!(plan.out().contains(SECRET_NAME), "{}", plan.out());
    assert!(
        !plan.out().contains(&secret),
        "plan --json shows the secret"
    );

    // exec without the secret in its environment: refused before anything is touched.
    wd.stage("v1").unwrap();
    let missing = Cmd::bluegreen(dir, &["exec"]).run();
    assert_eq!(missing.code, Some(2), "{}", missing.out());
    assert!(missing.out().contains(SECRET_NAME), "{}", missing.out());

    // exec -v: the instance has both, the output says *** for the secret.
    let r = Cmd::bluegreen(dir, &["exec", "-v"])
        .env(SECRET_NAME, &secret)
        .run();
    assert!(r.success(), "{}", r.out());
    assert!(
        !r.out().contains(&secret),
        "exec -v shows the secret:\n{}",
        r.out()
    );
    assert!(
        r.out().contains(&format!("{SECRET_NAME} '***'")),
        "{}",
        r.out()
    );
    assert_eq!(instance_env(&tb, "blue", SECRET_NAME), secret);
    assert_eq!(
        instance_env(&tb, "blue", "APP_MODE"),
        "plain text 'with' quotes"
    );
    let deploy = tb.var("DEPLOY_DIR");
    assert_eq!(
        tb.sh_ok("app1", &format!("stat -c '%a %U' {deploy}/blue/app.env")),
        format!("600 {}", tb.var("SSH_USER"))
    );
    assert_nowhere_on_hosts(&tb, &secret);
    assert!(
        !std::path::Path::new("/tmp/PWNED").exists(),
        "a secret's value ran as code"
    );

    // The rendered script: the file holds only the variable's name; its run shows no value.
    wd.stage("v2").unwrap();
    let render = Cmd::bluegreen(dir, &["render", "script", "-o", "deploy.sh"]).run();
    assert!(render.success(), "{}", render.out());
    let text = std::fs::read_to_string(dir.join("deploy.sh")).unwrap();
    assert!(text.contains(&format!("${{{SECRET_NAME}}}")));
    let r = Cmd::script(dir, "deploy.sh", &[])
        .env(SECRET_NAME, &secret)
        .run();
    assert!(r.success(), "{}", r.out());
    assert!(
        !r.out().contains(&secret),
        "the script shows the secret:\n{}",
        r.out()
    );
    assert_eq!(instance_env(&tb, "green", SECRET_NAME), secret);
    assert_nowhere_on_hosts(&tb, &secret);

    // A rollback restarts blue from its kept release, with its environment written again.
    let r = Cmd::bluegreen(dir, &["rollback", "-v"])
        .env(SECRET_NAME, &secret)
        .run();
    assert!(r.success(), "{}", r.out());
    assert!(
        !r.out().contains(&secret),
        "rollback -v shows the secret:\n{}",
        r.out()
    );
    assert_eq!(instance_env(&tb, "blue", SECRET_NAME), secret);
    assert_eq!(tb.version_via_proxy(), "v1");
    assert_nowhere_on_hosts(&tb, &secret);

    // A retire starts nothing and needs no secret (a cron job running it need not hold them).
    let r = Cmd::bluegreen(dir, &["retire"]).run();
    assert!(
        !r.out().contains(SECRET_NAME),
        "retire asked for the secret:\n{}",
        r.out()
    );
}
