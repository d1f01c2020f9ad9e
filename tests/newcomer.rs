//! A newcomer's tools: `init` writes a starter config that `check` accepts and refuses what the
//! config would; shell completions that bash loads and that complete the commands; a man page that
//! nroff reads.

use crate::util::{bluegreen_in, require, stderr, stdout, TempDir};
use std::process::Command;

/// Every subcommand, as `--help` lists them.
const COMMANDS: [&str; 12] = [
    "check",
    "plan",
    "render",
    "exec",
    "rollback",
    "retire",
    "status",
    "lock",
    "init",
    "completions",
    "man",
    "history",
];

#[test]
fn init_writes_a_config_check_accepts() {
    let dir = TempDir::new("init");
    let out = bluegreen_in(
        dir.path(),
        &[
            "init",
            "--app",
            "shop",
            "--proxy",
            "10.0.0.5",
            "--server",
            "10.0.0.11",
            "--server",
            "app2.internal",
            "--user",
            "ubuntu",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let check = bluegreen_in(dir.path(), &["check"]);
    assert!(check.status.success(), "{}", stderr(&check));
    assert!(
        stdout(&check).contains("ok (2 app host(s)"),
        "{}",
        stdout(&check)
    );
    let plan = stdout(&bluegreen_in(dir.path(), &["plan"]));
    for want in [
        "deploy plan for `shop`",
        "proxy:    ubuntu@10.0.0.5:22",
        "app1:     ubuntu@10.0.0.11:22",
        "app2:     ubuntu@app2.internal:22",
        "/home/ubuntu/shop/${BG_TARGET_SLOT}",
        "/etc/nginx/bluegreen/shop-upstream.conf",
    ] {
        assert!(plan.contains(want), "{want:?} not in the plan:\n{plan}");
    }
    // Commented: every section says what it is for.
    let text = std::fs::read_to_string(dir.path().join("bluegreen.yaml")).unwrap();
    assert!(
        text.lines()
            .filter(|l| l.trim_start().starts_with('#'))
            .count()
            >= 8,
        "{text}"
    );
}

#[test]
fn init_never_replaces_a_file_unasked_and_refuses_bad_values() {
    let dir = TempDir::new("init");
    dir.write("bluegreen.yaml", "mine\n");
    let out = bluegreen_in(dir.path(), &["init"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("already exists; pass --force"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("bluegreen.yaml")).unwrap(),
        "mine\n"
    );
    let out = bluegreen_in(dir.path(), &["init", "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(bluegreen_in(dir.path(), &["check"]).status.success());
    // A value the config refuses is refused with the config's own words, and nothing is written.
    for (args, says) in [
        (["--app", "a b"], "--app: 'a b' is not a plain name"),
        (["--proxy", "x;y"], "proxy.host: `x;y` is not a host name"),
        (["--server", "$(id)"], "servers[0].host"),
    ] {
        let mut all = vec!["-c", "new.yaml", "init"];
        all.extend(args);
        let out = bluegreen_in(dir.path(), &all);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
        assert!(
            !dir.path().join("new.yaml").exists(),
            "{args:?} wrote a file"
        );
    }
}

#[test]
fn bash_completes_the_commands_and_every_shell_gets_them() {
    require("bash", "bash");
    let dir = TempDir::new("compl");
    let script = stdout(&bluegreen_in(dir.path(), &["completions", "bash"]));
    dir.write("bluegreen.bash", &script);
    let out = Command::new("bash")
        .arg("-c")
        .arg(
            "source ./bluegreen.bash
             COMP_WORDS=(bluegreen ro); COMP_CWORD=1; _bluegreen bluegreen ro bluegreen
             echo \"ro: ${COMPREPLY[*]}\"
             COMP_WORDS=(bluegreen render ''); COMP_CWORD=2; _bluegreen bluegreen '' render
             echo \"render: ${COMPREPLY[*]}\"",
        )
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("ro: rollback"), "{text}");
    assert!(
        text.contains("script") && text.contains("jenkinsfile"),
        "{text}"
    );
    for shell in ["bash", "zsh", "fish"] {
        let out = bluegreen_in(dir.path(), &["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let text = stdout(&out);
        for c in COMMANDS {
            assert!(text.contains(c), "{shell}: no {c} in\n{text}");
        }
    }
    let out = bluegreen_in(dir.path(), &["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_man_page_reads_in_nroff() {
    require("nroff", "groff-base");
    let dir = TempDir::new("man");
    let page = bluegreen_in(dir.path(), &["man"]);
    assert!(page.status.success(), "{}", stderr(&page));
    dir.write("bluegreen.1", &stdout(&page));
    let out = Command::new("nroff")
        .args(["-man", "bluegreen.1"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // nroff's bold and underline are overstrikes (`N\bN`, `_\bx`): keep what follows each `\b`.
    let mut text = String::new();
    for c in String::from_utf8_lossy(&out.stdout).chars() {
        if c == '\u{8}' {
            text.pop();
            continue;
        }
        text.push(c);
    }
    assert!(text.contains("NAME"), "{text}");
    assert!(text.contains("Zero"), "{text}");
    for c in COMMANDS {
        assert!(text.contains(c), "no {c} in the man page:\n{text}");
    }
}
