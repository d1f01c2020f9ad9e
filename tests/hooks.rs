//! Hooks (issue 11, item 3), on the testbed with two app hosts and the light app: `pre_deploy`,
//! `pre_switch` (against each new instance on its idle port, before it gets traffic),
//! `post_switch` (on the proxy) and `on_failure`, run by `exec` and by the rendered script. Each
//! gets the run's facts; a failing `pre_switch` leaves traffic on the old version and stops the
//! new instances, a failing `post_switch` switches traffic back; either way `on_failure` is told
//! which phase failed; a secret a hook prints shows as `***`.

use crate::scale::light_apps;
use crate::testbed::{serial, Testbed};
use crate::util::{Cmd, Run, TempDir};
use bluegreen_testbed::DeployOptions;
use std::collections::BTreeMap;
use std::path::Path;

const SECRET_NAME: &str = "HOOK_DB_PASSWORD";

/// The hooks: each writes its facts to a file (in the runner's working directory, or in the
/// proxy's home), and fails while a flag file of its own exists.
fn hooks_yaml(proxy_http: &str) -> String {
    format!(
        "secrets: [ {SECRET_NAME} ]
hooks:
  pre_deploy: |
    env | grep '^BG_' | sort >facts.pre_deploy
    echo \"migrating with ${SECRET_NAME}\"
  pre_switch: |
    {{ env | grep '^BG_' | sort; echo \"NEW=$(curl -fsS \"$BG_URL/version\")\"; echo \"PROXY=$(curl -fsS http://{proxy_http}/version)\"; }} >\"facts.pre_switch.$BG_HOST\"
    if [ -e fail.pre_switch ]; then echo \"smoke test failed on $BG_HOST\"; exit 3; fi
  post_switch:
    on: proxy
    run: |
      env | grep '^BG_' | sort >~/facts.post_switch
      if [ -e ~/fail.post_switch ]; then echo 'post-switch check failed'; exit 4; fi
  on_failure: |
    echo \"$BG_FAILED_PHASE $BG_ACTION $BG_TARGET_SLOT\" >>failures
"
    )
}

/// `NAME=value` lines as a map.
fn facts(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A run, with the secret set.
fn run(cmd: Cmd, secret: &str) -> Run {
    cmd.env(SECRET_NAME, secret).run()
}

#[test]
fn hooks_run_with_the_runs_facts_and_undo_what_they_fail() {
    let _g = serial();
    let tb = Testbed::up(2);
    let tmp = TempDir::new("hooks");
    let dir = tmp.path();
    let secret = format!("hook-secret-{}", std::process::id());
    let opts = DeployOptions::new("60s")
        .light()
        .extra(&hooks_yaml(&tb.proxy_http()));
    let wd = bluegreen_testbed::Workdir::with(&tb, dir, light_apps(), &opts).unwrap();
    let addrs = tb.app_addrs();
    let user = tb.var("SSH_USER").to_string();
    let proxy_home = tb.var("DEPLOY_HOME").to_string();

    // 1. exec, first deploy: every hook runs once (pre_switch once per new instance), with
    //    the facts of the run; the secret reaches the hook and shows as ***.
    wd.stage("v1").unwrap();
    let r = run(Cmd::bluegreen(dir, &["exec"]), &secret);
    assert!(r.success(), "{}", r.out());
    assert!(r.out().contains("migrating with ***"), "{}", r.out());
    assert!(
        !r.out().contains(&secret),
        "exec shows the secret:\n{}",
        r.out()
    );
    let pre = facts(&read(dir, "facts.pre_deploy"));
    assert_eq!(pre["BG_HOOK"], "pre_deploy");
    assert_eq!(pre["BG_ACTION"], "deploy");
    assert_eq!(pre["BG_APP"], "demo");
    assert_eq!(pre["BG_LIVE_SLOT"], "none");
    assert_eq!(pre["BG_LIVE_PORT"], "");
    assert_eq!(pre["BG_TARGET_SLOT"], "blue");
    assert_eq!(pre["BG_TARGET_PORT"], "8080");
    assert_eq!(pre["BG_RELEASE"].len(), 64, "{pre:?}");
    for addr in &addrs {
        let f = facts(&read(dir, &format!("facts.pre_switch.{addr}")));
        assert_eq!(f["BG_HOOK"], "pre_switch");
        assert_eq!(f["BG_HOST"], *addr);
        assert_eq!(f["BG_URL"], format!("http://{addr}:{}", "8080"));
        // The new instance answers on its idle port; the proxy serves nothing yet.
        assert_eq!(f["NEW"], "v1");
        assert_eq!(f["PROXY"], "", "traffic moved before pre_switch: {f:?}");
    }
    let post = facts(&tb.sh_ok("proxy", &format!("cat {proxy_home}/facts.post_switch")));
    assert_eq!(post["BG_HOOK"], "post_switch");
    assert_eq!(post["BG_TARGET_SLOT"], "blue");
    assert!(!dir.join("failures").exists(), "on_failure ran on success");
    assert_eq!(tb.version_via_proxy(), "v1");

    // 2. exec, a failing pre_switch: the new instances are stopped, traffic stays on v1, the
    //    hook's output is shown, on_failure is told.
    wd.stage("v2").unwrap();
    std::fs::write(dir.join("fail.pre_switch"), "").unwrap();
    let r = run(Cmd::bluegreen(dir, &["exec"]), &secret);
    assert_eq!(r.code, Some(1), "{}", r.out());
    assert!(
        r.out().contains("the pre_switch hook exited with status 3"),
        "{}",
        r.out()
    );
    assert!(r.out().contains("smoke test failed on"), "{}", r.out());
    let f = facts(&read(dir, &format!("facts.pre_switch.{}", addrs[0])));
    assert_eq!((f["NEW"].as_str(), f["PROXY"].as_str()), ("v2", "v1"));
    assert_eq!(tb.version_via_proxy(), "v1");
    for host in ["app1", "app2"] {
        assert!(
            !tb.port_open(host, 8081),
            "{host}'s new instance still runs"
        );
    }
    assert_eq!(read(dir, "failures"), "pre_switch deploy green\n");
    std::fs::remove_file(dir.join("fail.pre_switch")).unwrap();

    // 3. The rendered script, a failing post_switch on the proxy: traffic goes back to v1.
    let render = Cmd::bluegreen(dir, &["render", "script", "-o", "deploy.sh"]).run();
    assert!(render.success(), "{}", render.out());
    tb.sh_ok(
        "proxy",
        &format!(
            "touch {proxy_home}/fail.post_switch && chown {user} {proxy_home}/fail.post_switch"
        ),
    );
    let r = run(Cmd::script(dir, "deploy.sh", &[]), &secret);
    assert_eq!(r.code, Some(1), "{}", r.out());
    assert!(r.out().contains("post-switch check failed"), "{}", r.out());
    assert!(r.out().contains("migrating with ***"), "{}", r.out());
    assert!(
        !r.out().contains(&secret),
        "the script shows the secret:\n{}",
        r.out()
    );
    assert_eq!(tb.version_via_proxy(), "v1");
    assert_eq!(
        read(dir, "failures"),
        "pre_switch deploy green\npost_switch deploy green\n"
    );
    let post = facts(&tb.sh_ok("proxy", &format!("cat {proxy_home}/facts.post_switch")));
    assert_eq!(post["BG_TARGET_SLOT"], "green");

    // 4. The script, all hooks passing: the same facts exec gave, v2 live.
    tb.sh_ok("proxy", &format!("rm -f {proxy_home}/fail.post_switch"));
    let r = run(Cmd::script(dir, "deploy.sh", &[]), &secret);
    assert!(r.success(), "{}", r.out());
    assert_eq!(tb.version_via_proxy(), "v2");
    let script_pre = facts(&read(dir, "facts.pre_deploy"));
    let names = |m: &BTreeMap<String, String>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&script_pre),
        names(&pre),
        "exec and the script give different facts"
    );
    assert_eq!(script_pre["BG_LIVE_SLOT"], "blue");
    assert_eq!(script_pre["BG_TARGET_SLOT"], "green");
    assert_eq!(script_pre["BG_LIVE_PORT"], "8080");
    let f = facts(&read(dir, &format!("facts.pre_switch.{}", addrs[1])));
    assert_eq!((f["NEW"].as_str(), f["PROXY"].as_str()), ("v2", "v1"));

    // 5. A rollback runs pre_switch and post_switch, not pre_deploy.
    std::fs::remove_file(dir.join("facts.pre_deploy")).unwrap();
    let r = run(Cmd::bluegreen(dir, &["rollback"]), &secret);
    assert!(r.success(), "{}", r.out());
    assert!(!dir.join("facts.pre_deploy").exists());
    let f = facts(&read(dir, &format!("facts.pre_switch.{}", addrs[0])));
    assert_eq!(f["BG_ACTION"], "rollback");
    assert_eq!((f["NEW"].as_str(), f["PROXY"].as_str()), ("v1", "v2"));
    assert_eq!(tb.version_via_proxy(), "v1");
}
