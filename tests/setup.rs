//! First-time setup (issue 11, item 5), on the testbed with its real nginx and the light app:
//! `check --remote` on bare hosts lists every problem with its fix and changes nothing; `setup`
//! creates the slots' and state directories and the managed upstream file, confirms through
//! `nginx -T` that nginx's upstream includes it, and is idempotent; the first deploy then works.
//! The checks also name a port held by a process bluegreen did not start (a hand-written
//! deployment), a start command whose program is missing, and an upstream block that does not
//! include the managed file, each with the fix; `setup --accept-new` records host keys never
//! seen; a hand-written deployment is taken over under load without a failed request.

use crate::scale::light_apps;
use crate::testbed::{serial, Testbed};
use crate::util::{Cmd, TempDir};
use bluegreen_testbed::DeployOptions;

/// The lines of a check report that carry `tag` (`PROBLEM`, `FIXED`, `ok`).
fn tagged<'a>(out: &'a str, tag: &str) -> Vec<&'a str> {
    out.lines()
        .filter(|l| l.trim_start().starts_with(&format!("{tag} ")))
        .collect()
}

#[test]
fn setup_makes_bare_hosts_ready_and_check_remote_names_each_problem_with_its_fix() {
    let _g = serial();
    let tb = Testbed::up(1);
    let tmp = TempDir::new("setup");
    let dir = tmp.path();
    let state = format!("{}/demo", tb.var("STATE_DIR"));
    let upstream = tb.var("UPSTREAM_FILE").to_string();
    let deploy_dir = tb.var("DEPLOY_DIR").to_string();
    let opts = DeployOptions::new("20s").light();
    let wd = bluegreen_testbed::Workdir::with(&tb, dir, light_apps(), &opts).unwrap();
    // A state directory that does not exist yet (the default's shape: <state>/<app>).
    let config = std::fs::read_to_string(wd.config()).unwrap().replace(
        &format!("state_dir: {}\n", tb.var("STATE_DIR")),
        &format!("state_dir: {state}\n"),
    );
    assert!(config.contains(&format!("state_dir: {state}\n")));
    std::fs::write(wd.config(), &config).unwrap();
    // Bare hosts: no slot directories, no managed upstream file.
    tb.sh_ok(
        "app1",
        &format!("rm -rf {deploy_dir}/blue {deploy_dir}/green"),
    );
    tb.sh_ok("proxy", &format!("rm -f {upstream}"));

    // 1. check --remote: every problem, with its fix; nothing changed.
    let r = Cmd::bluegreen(dir, &["check", "--remote"]).run();
    assert_eq!(r.code, Some(1), "{}", r.out());
    let out = r.stdout.clone();
    let problems = tagged(&out, "PROBLEM");
    for want in [
        format!("state directory {state} does not exist"),
        format!("upstream file {upstream} does not exist"),
        format!("{deploy_dir}/blue does not exist"),
        format!("{deploy_dir}/green does not exist"),
    ] {
        assert!(
            problems.iter().any(|l| l.contains(&want)),
            "no `{want}` in:\n{out}"
        );
    }
    // nginx cannot even dump its configuration while the included file is missing.
    assert!(problems.iter().any(|l| l.contains("-T' failed")), "{out}");
    assert!(out.contains("fix: bluegreen setup"), "{out}");
    assert!(out.contains("problem(s) found"), "{out}");
    assert_eq!(
        tb.sh_ok("proxy", &format!("test -e {state} || echo absent")),
        "absent"
    );
    assert_eq!(
        tb.sh_ok("app1", &format!("test -e {deploy_dir}/blue || echo absent")),
        "absent"
    );

    // 2. setup: creates them, and nginx's upstream includes the managed file.
    let r = Cmd::bluegreen(dir, &["setup"]).run();
    assert!(r.success(), "{}", r.out());
    let fixed = tagged(&r.stdout, "FIXED");
    assert_eq!(fixed.len(), 4, "{}", r.stdout);
    assert!(
        r.stdout.contains(&format!(
            "ok       nginx's upstream app includes {upstream}"
        )),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("no problems found"), "{}", r.stdout);
    assert_eq!(
        tb.sh_ok("proxy", &format!("cat {upstream}")),
        "# managed by bluegreen for demo\nserver 127.0.0.1:9 down;"
    );

    // 3. Idempotent: nothing left to fix.
    let r = Cmd::bluegreen(dir, &["setup"]).run();
    assert!(r.success(), "{}", r.out());
    assert!(tagged(&r.stdout, "FIXED").is_empty(), "{}", r.stdout);

    // 4. The first deploy works on the hosts setup prepared.
    wd.stage("v1").unwrap();
    let r = Cmd::bluegreen(dir, &["exec"]).run();
    assert!(r.success(), "{}", r.out());
    assert_eq!(tb.version_via_proxy(), "v1");
    let r = Cmd::bluegreen(dir, &["check", "--remote"]).run();
    assert!(r.success(), "{}", r.out());
    assert!(
        r.stdout
            .contains("port 8080: the blue instance bluegreen started"),
        "{}",
        r.stdout
    );

    // 5. A process bluegreen did not start holds the idle slot's port (a hand-written
    //    deployment): named, with the way to take it over.
    // The host's /tmp is its own: HOSTS_DIR/app1/tmp from here.
    std::fs::copy(
        light_apps().join("light-v1.pl"),
        std::path::Path::new(tb.var("HOSTS_DIR")).join("app1/tmp/foreign.pl"),
    )
    .unwrap();
    tb.sh_ok(
        "app1",
        &format!(
            "chmod 644 /tmp/foreign.pl && (setsid setpriv --reuid={user} --regid={user} --init-groups perl /tmp/foreign.pl --server.port=8081 </dev/null >/dev/null 2>&1 &) && for i in $(seq 50); do (true </dev/tcp/127.0.0.1/8081) 2>/dev/null && break; sleep 0.1; done",
            user = tb.var("SSH_USER"),
        ),
    );
    let r = Cmd::bluegreen(dir, &["check", "--remote"]).run();
    assert_eq!(r.code, Some(1), "{}", r.out());
    let line = tagged(&r.stdout, "PROBLEM")
        .into_iter()
        .find(|l| {
            l.contains("port 8081 (the green slot's) is held by a process bluegreen did not start")
        })
        .unwrap_or_else(|| panic!("{}", r.stdout));
    assert!(line.contains("perl"), "the holder is not named: {line}");
    assert!(
        r.stdout.contains("Take it over without downtime"),
        "{}",
        r.stdout
    );
    tb.sh_ok("app1", "pkill -f '^perl /tmp/foreign[.]pl'; true");

    // 6. A start command whose program the host does not have.
    let missing = config.replace("start: perl ", "start: no-such-perl ");
    assert_ne!(missing, config);
    std::fs::write(wd.config(), &missing).unwrap();
    let r = Cmd::bluegreen(dir, &["check", "--remote"]).run();
    std::fs::write(wd.config(), &config).unwrap();
    assert_eq!(r.code, Some(1), "{}", r.out());
    assert!(
        r.stdout
            .contains("the start command's program no-such-perl is not found"),
        "{}",
        r.stdout
    );

    // 7. nginx's upstream block does not include the managed file: the snippet to add.
    let conf = tb.var("NGINX_CONF").to_string();
    tb.sh_ok(
        "proxy",
        &format!("cp {conf} {conf}.orig && cp {upstream} /tmp/other.conf && sed -i 's|include {upstream};|include /tmp/other.conf;|' {conf}"),
    );
    let r = Cmd::bluegreen(dir, &["check", "--remote"]).run();
    tb.sh_ok("proxy", &format!("mv {conf}.orig {conf}"));
    assert_eq!(r.code, Some(1), "{}", r.out());
    assert!(
        r.stdout
            .contains(&format!("nginx's upstream app does not include {upstream}")),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(&format!(
            "put the line  include {upstream};  inside  upstream app"
        )),
        "{}",
        r.stdout
    );

    // 8. Taking over a hand-written deployment, as the README says, under load: the old
    //    instance serves on 8080 through an upstream file written by hand; the first deploy
    //    goes to 8081 and switches there with no failed request, leaves the old process running
    //    until it is stopped by hand, and the next deploy then uses 8080.
    tb.reset_apps().unwrap();
    tb.sh_ok("proxy", &format!("rm -rf {state}"));
    let addr = &tb.app_addrs()[0];
    tb.sh_ok(
        "app1",
        &format!(
            "(setsid setpriv --reuid={user} --regid={user} --init-groups perl /tmp/foreign.pl --server.port=8080 </dev/null >/dev/null 2>&1 &) && for i in $(seq 50); do (true </dev/tcp/127.0.0.1/8080) 2>/dev/null && break; sleep 0.1; done",
            user = tb.var("SSH_USER"),
        ),
    );
    tb.sh_ok(
        "proxy",
        &format!(
            "printf 'server {addr}:8080;\n' >{upstream} && kill -HUP $(cat {})",
            tb.var("NGINX_PID_FILE")
        ),
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        tb.version_via_proxy(),
        "v1",
        "the hand-written deployment does not serve"
    );
    let r = Cmd::bluegreen(dir, &["setup"]).run();
    assert_eq!(r.code, Some(1), "{}", r.out());
    assert!(
        r.stdout.contains("port 8080 (the blue slot's) is held"),
        "{}",
        r.stdout
    );
    // Stopping it now would take the site down: refused, nothing touched.
    let r = Cmd::bluegreen(dir, &["takeover", "--port", "8080"]).run();
    assert_eq!(r.code, Some(2), "{}", r.out());
    assert!(
        r.out()
            .contains("the proxy still sends traffic to port 8080"),
        "{}",
        r.out()
    );
    assert!(tb.port_open("app1", 8080));
    let traffic = crate::e2e::Traffic::start(&tb, 2);
    traffic.allow(&["v1", "v2"]);
    wd.stage("v2").unwrap();
    let r = Cmd::bluegreen(dir, &["exec"]).run();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (nc, ka) = traffic.stop();
    assert!(r.success(), "{}", r.out());
    assert!(
        r.out().contains("deploying to green (port 8081)"),
        "{}",
        r.out()
    );
    assert_eq!(nc.failures(), 0, "{}", nc.line());
    assert_eq!(ka.http_errors(), 0, "{}", ka.line());
    assert_eq!(tb.version_via_proxy(), "v2");
    assert!(
        tb.port_open("app1", 8080),
        "the old process was stopped without being told to"
    );
    // Told to: `takeover` stops it, and the audit log records who asked.
    let r = Cmd::bluegreen(dir, &["takeover", "--port", "8080"]).run();
    assert!(r.success(), "{}", r.out());
    assert!(r.stdout.contains("app1: stopped pid"), "{}", r.stdout);
    assert!(!tb.port_open("app1", 8080), "the old process still listens");
    let audit = tb.sh_ok("proxy", &format!("tail -n 1 {state}/audit.log"));
    let line: serde_json::Value = serde_json::from_str(&audit).unwrap();
    assert_eq!(line["event"], "takeover", "{audit}");
    assert_eq!(
        line["outcome"],
        "stopped what bluegreen did not start on port 8080, as asked"
    );
    assert!(!line["deployer"].as_str().unwrap().is_empty(), "{audit}");
    // The live slot's port (bluegreen's green): refused.
    let r = Cmd::bluegreen(dir, &["takeover", "--port", "8081"]).run();
    assert_eq!(r.code, Some(2), "{}", r.out());
    wd.stage("v3").unwrap();
    let r = Cmd::bluegreen(dir, &["exec"]).run();
    assert!(r.success(), "{}", r.out());
    assert_eq!(tb.version_via_proxy(), "v3");

    // 8b. Taking over by pid, on one host: a hand-written deployment's process on a port that is
    //     no slot's, the deploy user's, stops (and the audit log says so); bluegreen's own live
    //     instance, another user's process, a pid that does not exist and a host that is not an
    //     app host are refused, and nothing is stopped.
    let spawn = |as_user: bool, port: u16| -> String {
        let run = if as_user {
            format!(
                "setpriv --reuid={u} --regid={u} --init-groups ",
                u = tb.var("SSH_USER")
            )
        } else {
            String::new()
        };
        tb.sh_ok(
            "app1",
            &format!(
                "setsid {run}perl /tmp/foreign.pl --server.port={port} </dev/null >/dev/null 2>&1 & echo $!; for i in $(seq 50); do (true </dev/tcp/127.0.0.1/{port}) 2>/dev/null && break; sleep 0.1; done"
            ),
        )
    };
    let foreign = spawn(true, 8095);
    let roots = spawn(false, 8096);
    let live_pid = tb.sh_ok(
        "app1",
        &format!(
            "read -r pid _ <{}/blue/app.pid && echo $pid",
            tb.var("DEPLOY_DIR")
        ),
    );
    let takeover = |pid: &str, host: &str| {
        Cmd::bluegreen(dir, &["takeover", "--pid", pid, "--host", host]).run()
    };
    for (pid, host, code, says) in [
        (
            live_pid.as_str(),
            "app1",
            1,
            "is the blue instance bluegreen started",
        ),
        (roots.as_str(), "app1", 1, "is root's, not"),
        ("999999", "app1", 1, "no process 999999 on this host"),
        (
            foreign.as_str(),
            "app9",
            2,
            "`app9` is not one of the app hosts (app1)",
        ),
    ] {
        let r = takeover(pid, host);
        assert_eq!(r.code, Some(code), "{pid} on {host}: {}", r.out());
        assert!(
            r.out().contains(says),
            "{pid} on {host}: {says}\n{}",
            r.out()
        );
    }
    let r = Cmd::bluegreen(dir, &["takeover", "--pid", &foreign]).run();
    assert_eq!(r.code, Some(2), "{}", r.out());
    assert!(r.out().contains("--host"), "{}", r.out());
    assert!(tb.port_open("app1", 8095) && tb.port_open("app1", 8096));
    assert_eq!(tb.version_via_proxy(), "v3");
    let r = takeover(&foreign, "app1");
    assert!(r.success(), "{}", r.out());
    assert!(
        r.stdout.contains(&format!("app1: stopped pid {foreign}")),
        "{}",
        r.stdout
    );
    assert!(!tb.port_open("app1", 8095), "the old process still listens");
    assert!(tb.port_open("app1", 8096), "root's process was stopped");
    let audit = tb.sh_ok("proxy", &format!("tail -n 1 {state}/audit.log"));
    let line: serde_json::Value = serde_json::from_str(&audit).unwrap();
    assert_eq!(
        line["outcome"],
        format!("stopped process {foreign} on app1, which bluegreen did not start, as asked"),
        "{audit}"
    );
    tb.sh_ok("app1", &format!("kill {roots}"));
    assert_eq!(tb.version_via_proxy(), "v3");

    // 9. Hosts whose keys the runner has never seen: check --remote cannot check them (strict host
    //    key checking); setup --accept-new records their keys, and from then on they are known.
    let kh = dir.join("new_known_hosts");
    std::fs::write(&kh, "").unwrap();
    let fresh = config.replace(
        &format!("known_hosts: {}\n", tb.var("KNOWN_HOSTS")),
        &format!("known_hosts: {}\n", kh.display()),
    );
    assert_ne!(fresh, config);
    std::fs::write(wd.config(), &fresh).unwrap();
    let r = Cmd::bluegreen(dir, &["check", "--remote"]).run();
    assert_eq!(r.code, Some(1), "{}", r.out());
    assert_eq!(
        r.stdout.matches("PROBLEM  cannot be checked").count(),
        2,
        "{}",
        r.stdout
    );
    let r = Cmd::bluegreen(dir, &["setup", "--accept-new"]).run();
    assert!(r.success(), "{}", r.out());
    assert_eq!(std::fs::read_to_string(&kh).unwrap().lines().count(), 2);
    let r = Cmd::bluegreen(dir, &["check", "--remote"]).run();
    assert!(r.success(), "{}", r.out());
}
