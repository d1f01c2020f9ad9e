//! Releases beyond the two slots (issue 11, item 6), on the testbed with two app hosts and the
//! light app: each host keeps the last `keep_releases` releases whose deploy succeeded (older ones
//! are removed once a deploy is final; a failed deploy's release is never kept and evicts none),
//! `bluegreen releases` lists them with their deploys, and `rollback --to` goes back to a kept
//! one by a sha prefix or by the time of its deploy, refusing what it cannot go back to.

use crate::scale::light_apps;
use crate::testbed::{serial, Testbed};
use crate::util::{sha256, Cmd, TempDir};
use bluegreen_testbed::DeployOptions;
use serde_json::Value;

/// The releases kept on `host`, by name, sorted.
fn kept(tb: &Testbed, host: &str) -> Vec<String> {
    let out = tb.sh_ok(
        host,
        &format!("ls -1 {}/releases | sort", tb.var("DEPLOY_DIR")),
    );
    out.lines().map(str::to_string).collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn hosts_keep_the_last_good_releases_and_rollback_to_goes_back_to_any_of_them() {
    let _g = serial();
    let tb = Testbed::up(2);
    let tmp = TempDir::new("releases");
    let dir = tmp.path();
    let opts = DeployOptions::new("20s")
        .light()
        .extra("keep_releases: 2\n");
    let wd = bluegreen_testbed::Workdir::with(&tb, dir, light_apps(), &opts).unwrap();
    let rel = |v: &str| sha256(&light_apps().join(format!("light-{v}.pl")));
    let deploy = |v: &str| {
        wd.stage(v).unwrap();
        let r = Cmd::bluegreen(dir, &["exec"]).run();
        assert!(r.success(), "deploy {v}: {}", r.out());
        assert_eq!(tb.version_via_proxy(), v);
        r
    };

    // 1. Three deploys with keep_releases: 2: v1 is removed from both hosts once v3's deploy is
    //    final (neither slot holds it any more).
    deploy("v1");
    deploy("v2");
    assert_eq!(kept(&tb, "app1"), sorted(vec![rel("v1"), rel("v2")]));
    // v3's deploy gets a second of its own, so that its time names it alone (step 5).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let r = deploy("v3");
    assert!(
        r.out().contains("releases kept: 2, removed: 1"),
        "{}",
        r.out()
    );
    for host in ["app1", "app2"] {
        assert_eq!(
            kept(&tb, host),
            sorted(vec![rel("v2"), rel("v3")]),
            "{host}"
        );
    }

    // 2. A deploy that fails its health check: its release is not kept and evicts nothing.
    wd.stage("v4").unwrap();
    let config = std::fs::read_to_string(wd.config()).unwrap();
    std::fs::write(
        wd.config(),
        config
            .replace("--server.port={port}", "--server.port={port} --broken")
            .replace("deadline: 20s", "deadline: 2s"),
    )
    .unwrap();
    let r = Cmd::bluegreen(dir, &["exec"]).run();
    std::fs::write(wd.config(), &config).unwrap();
    assert_eq!(r.code, Some(1), "{}", r.out());
    assert_eq!(tb.version_via_proxy(), "v3");
    assert_eq!(kept(&tb, "app1"), sorted(vec![rel("v2"), rel("v3")]));

    // 3. `releases`: newest first, v3 live, each on 2 of 2 hosts, with its deploy's outcome.
    let r = Cmd::bluegreen(dir, &["releases", "--json"]).run();
    assert!(r.success(), "{}", r.out());
    let json: Value = serde_json::from_str(r.stdout.trim()).unwrap();
    let list = json["releases"].as_array().unwrap();
    let names: Vec<&str> = list
        .iter()
        .map(|x| x["release"].as_str().unwrap())
        .collect();
    assert_eq!(names, [rel("v3"), rel("v2")]);
    assert_eq!(list[0]["role"], "live");
    assert_eq!(list[1]["role"], "");
    assert_eq!(list[0]["hosts"].as_array().unwrap().len(), 2);
    assert_eq!(list[1]["deployed"]["outcome"], "success");
    let text = Cmd::bluegreen(dir, &["releases"]).run();
    assert!(
        text.stdout
            .contains(&format!("{}  live      2/2", &rel("v3")[..12])),
        "{}",
        text.stdout
    );

    // 4. rollback --to v2 by a sha prefix: the idle slot holds the failed v4, so v2 comes from
    //    the kept releases, is health-checked and switched to.
    let r = Cmd::bluegreen(dir, &["rollback", "--to", &rel("v2")[..8]]).run();
    assert!(r.success(), "{}", r.out());
    assert_eq!(tb.version_via_proxy(), "v2");
    for host in ["app1", "app2"] {
        assert_eq!(
            tb.sh_ok(host, &format!("cat {}/green/release", tb.var("DEPLOY_DIR"))),
            rel("v2"),
            "{host}"
        );
    }

    // 5. rollback --to by the time of v3's deploy (from the audit log).
    let history = Cmd::bluegreen(dir, &["history", "--json"]).run();
    let v3_time = history
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["release"] == rel("v3").as_str() && e["outcome"] == "success")
        .map(|e| e["time"].as_str().unwrap().to_string())
        .unwrap();
    let r = Cmd::bluegreen(dir, &["rollback", "--to", &v3_time]).run();
    assert!(r.success(), "{}", r.out());
    assert_eq!(tb.version_via_proxy(), "v3");

    // 6. Refused, traffic unchanged: the failed release and the live one (exit 2: found while
    //    preparing, before anything changed), one no host keeps any more (exit 1, in the start
    //    phase), and a value that is neither a sha nor a time (exit 2, before any host is
    //    touched).
    for (to, says) in [
        (&rel("v4")[..10], "no successful deploy in the audit log"),
        (&rel("v3")[..10], "is the live one"),
    ] {
        let r = Cmd::bluegreen(dir, &["rollback", "--to", to]).run();
        assert_eq!(r.code, Some(2), "{}", r.out());
        assert!(r.out().contains(says), "{}", r.out());
        assert_eq!(tb.version_via_proxy(), "v3");
    }
    let r = Cmd::bluegreen(dir, &["rollback", "--to", &rel("v1")[..10]]).run();
    assert_eq!(r.code, Some(1), "{}", r.out());
    assert!(r.out().contains("does not keep it"), "{}", r.out());
    assert_eq!(tb.version_via_proxy(), "v3");
    let r = Cmd::bluegreen(dir, &["rollback", "--to", "last-week"]).run();
    assert_eq!(r.code, Some(2), "{}", r.out());
    assert!(r.out().contains("bluegreen releases"), "{}", r.out());
    let exec_says = r.stderr.trim_start_matches("error: ").to_string();

    // 7. The rendered script's `rollback RELEASE` (the Jenkinsfile's ROLLBACK_TO) does the same:
    //    the same refusal word for word, a release no deploy succeeded with refused with traffic
    //    unchanged, then v2 by an upper-case sha prefix, and a plain rollback back to v3.
    let render = Cmd::bluegreen(dir, &["render", "script", "-o", "deploy.sh"]).run();
    assert!(render.success(), "{}", render.out());
    let r = Cmd::script(dir, "deploy.sh", &["rollback", "last-week"]).run();
    assert_eq!(r.code, Some(2), "{}", r.out());
    assert!(r.out().contains(&exec_says), "{exec_says}\n{}", r.out());
    let r = Cmd::script(dir, "deploy.sh", &["rollback", &rel("v4")[..10]]).run();
    assert!(!r.success(), "{}", r.out());
    assert!(
        r.out().contains("no successful deploy in the audit log"),
        "{}",
        r.out()
    );
    assert_eq!(tb.version_via_proxy(), "v3");
    let r = Cmd::script(
        dir,
        "deploy.sh",
        &["rollback", &rel("v2")[..8].to_uppercase()],
    )
    .run();
    assert!(r.success(), "{}", r.out());
    assert_eq!(tb.version_via_proxy(), "v2");
    let r = Cmd::script(dir, "deploy.sh", &["rollback"]).run();
    assert!(r.success(), "{}", r.out());
    assert_eq!(tb.version_via_proxy(), "v3");
}
