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

const FILE_SECRET: &str = "APP_TLS_KEY";

#[test]
fn a_file_secret_reaches_the_app_and_its_hooks_as_a_file_and_nothing_else() {
    let _g = serial();
    let tb = Testbed::up(1);
    let tmp = TempDir::new("file-secret");
    // Binary content (NUL bytes, newlines, quotes, a `$(...)`): what a keystore or a key is.
    let marker = format!("FILE-SECRET-{}-MARK", std::process::id());
    let mut content: Vec<u8> =
        b"-----BEGIN KEY-----\n\0\x01\xff\"$(touch /tmp/PWNED)\"`x`\n".to_vec();
    content.extend_from_slice(marker.as_bytes());
    content.extend((0..=255u8).cycle().take(3000));
    let key = tmp.path().join("tls.key");
    std::fs::write(&key, &content).unwrap();
    let want = crate::util::sha256(&key);
    let opts = DeployOptions::new("60s").light().extra(&format!(
        "secrets:\n  - {{ name: {FILE_SECRET}, credential: tls-key, file: true }}\n\
         hooks:\n\
         \x20 pre_switch: {{ run: 'echo \"hash=$(sha256sum <\"${FILE_SECRET}\" | cut -c1-64) mode=$(stat -c %a \"${FILE_SECRET}\")\"', on: servers }}\n\
         \x20 post_switch: 'echo \"runner-path=${FILE_SECRET}\"'\n"
    ));
    let wd = bluegreen_testbed::Workdir::with(&tb, tmp.path(), light_apps(), &opts).unwrap();
    let dir = tmp.path();
    wd.stage("v1").unwrap();
    let deploy = tb.var("DEPLOY_DIR");

    // A variable that names no readable file, or too big a file: refused before anything is
    // touched, by exec and by the script alike.
    let big = tmp.path().join("big");
    std::fs::write(&big, vec![b'x'; (1 << 20) + 1]).unwrap();
    let render = Cmd::bluegreen(dir, &["render", "script", "-o", "deploy.sh"]).run();
    assert!(render.success(), "{}", render.out());
    for (path, problem) in [
        ("/nonexistent/tls.key", "is not a file this runner can read"),
        ("/tmp", "is not a file this runner can read"),
        (big.to_str().unwrap(), "is larger than 1 MiB"),
    ] {
        let want_msg = format!("secrets[0]: `{path}` (from `${{{FILE_SECRET}}}`) {problem}");
        let r = Cmd::bluegreen(dir, &["exec"]).env(FILE_SECRET, path).run();
        assert_eq!(r.code, Some(2), "{}", r.out());
        assert!(r.out().contains(&want_msg), "{want_msg}\n{}", r.out());
        let s = Cmd::script(dir, "deploy.sh", &[])
            .env(FILE_SECRET, path)
            .run();
        assert!(!s.success(), "{}", s.out());
        assert!(s.out().contains(&want_msg), "{want_msg}\n{}", s.out());
    }
    assert_eq!(
        tb.sh_ok(
            "app1",
            &format!("ls {deploy}/blue {deploy}/green 2>/dev/null | grep -c app.secrets || true")
        ),
        "0"
    );

    let check = |slot: &str, out: &str, how: &str| {
        // The app's variable is the path of the slot's copy: the same bytes, the deploy user's alone.
        let path = format!("{deploy}/{slot}/app.secrets/{FILE_SECRET}");
        assert_eq!(instance_env(&tb, slot, FILE_SECRET), path, "{how}");
        assert_eq!(
            tb.sh_ok("app1", &format!("sha256sum <{path} | cut -c1-64")),
            want,
            "{how}"
        );
        assert_eq!(
            tb.sh_ok(
                "app1",
                &format!("stat -c '%a %U' {path} {deploy}/{slot}/app.secrets")
            ),
            format!("600 {u}\n700 {u}", u = tb.var("SSH_USER")),
            "{how}"
        );
        // The hook on the app host read a copy of the same bytes; the runner's hook its own file.
        assert!(
            out.contains(&format!("hash={want} mode=600")),
            "{how}:\n{out}"
        );
        assert!(
            out.contains(&format!("runner-path={}", key.display())),
            "{how}:\n{out}"
        );
        assert!(
            !out.contains(&marker),
            "{how} shows the file's content:\n{out}"
        );
        // The hook's copy is gone; the content is nowhere on the hosts but in the slot's copy.
        assert_eq!(
            tb.sh_ok("app1", "ls /tmp | grep -c '^bluegreen-hook' || true"),
            "0",
            "{how}"
        );
        // The marker is written in two halves, so that no command line of the probe's holds it;
        // the command lines are read before any process is given the marker whole.
        let (m1, m2) = marker.split_at(5);
        let probe = format!(
            "m={m1}'{m2}'; for c in /proc/[0-9]*/cmdline; do tr '\\0' ' ' <\"$c\" 2>/dev/null; echo \" $c\"; done >/tmp/cmdlines; grep -F -- \"$m\" /tmp/cmdlines; grep -rlaF -- \"$m\" {state} 2>/dev/null; grep -rlaF --exclude-dir=app.secrets -- \"$m\" {deploy} 2>/dev/null; true",
            state = tb.var("STATE_DIR"),
        );
        for host in ["proxy", "app1"] {
            let found = tb.sh_ok(host, &probe);
            assert!(
                found.is_empty(),
                "{how}: the file's content is in {host}: {found}"
            );
        }
        assert!(
            !std::path::Path::new("/tmp/PWNED").exists(),
            "{how}: the content ran as code"
        );
    };

    let r = Cmd::bluegreen(dir, &["exec", "-v"])
        .env(FILE_SECRET, key.to_str().unwrap())
        .run();
    assert!(r.success(), "{}", r.out());
    check("blue", &r.out(), "exec");

    // The plan names the secret as a file, never its content.
    let plan = Cmd::bluegreen(dir, &["plan", "--json"])
        .env(FILE_SECRET, key.to_str().unwrap())
        .run();
    assert!(plan.success(), "{}", plan.out());
    assert!(plan.out().contains("\"file\": true"), "{}", plan.out());
    assert!(!plan.out().contains(&marker), "{}", plan.out());

    // The rendered script: the same file on the host, the same hooks' view.
    wd.stage("v2").unwrap();
    let r = Cmd::script(dir, "deploy.sh", &[])
        .env(FILE_SECRET, key.to_str().unwrap())
        .run();
    assert!(r.success(), "{}", r.out());
    check("green", &r.out(), "the script");
    assert_eq!(tb.version_via_proxy(), "v2");
}
