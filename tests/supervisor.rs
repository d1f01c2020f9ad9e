//! `supervisor: systemd` (issue 11, item 1) on a host that runs systemd as its init
//! (`tests/systemd/sysd-host.sh`: a debootstrapped Debian 12 booted under systemd-nspawn, joined to
//! the testbed's network), with the real JVM app behind the testbed's nginx, and a non-root deploy
//! user whose sudo rights are exactly the ones the README documents. Proves: each slot is a unit of
//! the template `bluegreen-demo@.service` (which `systemd-analyze verify` accepts), the live one
//! enabled and the idle one disabled after `exec`, the rendered script and a rollback; the app's
//! environment reaches it through the unit's EnvironmentFile, quotes and `$` intact; zero failed
//! requests through nginx while the script deploys; a killed live instance is restarted by
//! systemd; after the host reboots the live slot is back and nginx serves it; an instance that dies
//! while it is health-checked fails the deploy (systemd's restart does not hide it) and leaves
//! traffic where it was; and the same with `supervisor: systemd-user` (the deploy user's own
//! systemd, lingering enabled by `setup`), switched to from `systemd` with a deploy.

use crate::e2e::Traffic;
use crate::testbed::{serial, Testbed, Workdir};
use crate::util::{require, Cmd};
use bluegreen_testbed::DeployOptions;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The systemd host; halted and removed on drop, even after a panic.
struct SystemdHost {
    script: PathBuf,
    testbed: String,
    addr: String,
}

impl SystemdHost {
    fn up(tb: &Testbed) -> SystemdHost {
        require("debootstrap", "debootstrap");
        require("systemd-nspawn", "systemd-container");
        let subnet = tb.var("SUBNET");
        let addr = format!("{}.200", subnet.rsplit_once('.').unwrap().0);
        let host = SystemdHost {
            script: crate::util::root().join("tests/systemd/sysd-host.sh"),
            testbed: tb.var("TESTBED_NAME").to_string(),
            addr,
        };
        host.run(&["up", &host.testbed.clone(), &host.addr.clone()]);
        host
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("bash")
            .arg(&self.script)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sysd-host.sh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Runs bash text as root inside the host.
    fn sh(&self, cmd: &str) -> String {
        self.run(&["exec", &self.testbed, "bash", "-c", cmd])
    }

    /// `ActiveState UnitFileState` of a slot's unit.
    fn unit(&self, slot: &str) -> String {
        self.sh(&format!(
            "u=bluegreen-demo@{slot}.service; echo $(systemctl show -P ActiveState $u) $(systemctl is-enabled $u 2>/dev/null || true)"
        ))
    }

    /// Runs bash text as the deploy user, with its systemd's runtime directory.
    fn sh_user(&self, cmd: &str) -> String {
        self.sh(&format!(
            "runuser -u bgdeploy -- env XDG_RUNTIME_DIR=/run/user/$(id -u bgdeploy) bash -c {}",
            bluegreen_core::remote::bash_quote(cmd)
        ))
    }

    /// `ActiveState UnitFileState` of a slot's unit in the deploy user's own systemd.
    fn user_unit(&self, slot: &str) -> String {
        self.sh_user(&format!(
            "u=bluegreen-demo@{slot}.service; echo $(systemctl --user show -P ActiveState $u) $(systemctl --user is-enabled $u 2>/dev/null || true)"
        ))
    }

    fn main_pid(&self, slot: &str) -> u64 {
        self.sh(&format!(
            "systemctl show -P MainPID bluegreen-demo@{slot}.service"
        ))
        .parse()
        .unwrap()
    }
}

impl Drop for SystemdHost {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .args(["down", &self.testbed])
            .status();
    }
}

/// Polls until the proxy serves `version`, for up to `secs`; how long it took.
fn until_served(tb: &Testbed, version: &str, secs: u64) -> Duration {
    let t0 = Instant::now();
    loop {
        if tb.version_via_proxy() == version {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "nginx does not serve {version} after {secs}s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A value with what a shell or systemd could take apart: quotes, `$`, a backslash, a backtick,
/// and a second line.
const ODD: &str = "a \"quoted\" $HOME \\ ` value\nand a second line";

#[test]
fn systemd_supervises_the_slots_restarts_a_killed_instance_and_brings_the_live_slot_back_after_a_reboot(
) {
    let _g = serial();
    let tb = Testbed::up(1);
    let host = SystemdHost::up(&tb);
    // Java from this machine is bound into the host at its real path (not /usr/bin's alternatives).
    let java = std::fs::canonicalize(tb.var("JAVA")).unwrap();
    // A block scalar: YAML keeps the text as it is, newline included.
    let extra = format!(
        "supervisor: systemd\nenv:\n  ODD: |-\n{}\n",
        ODD.lines()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let wd = Workdir::with(&tb, &DeployOptions::new("60s").grace("10s").extra(&extra));
    let config_path = wd.dir.path().join("bluegreen.yaml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    let config = config
        .replace(
            &format!("servers:\n  - host: {}\n", tb.app_addrs()[0]),
            &format!("servers:\n  - host: {}\n", host.addr),
        )
        .replace(
            &format!("start: {} ", tb.var("JAVA")),
            &format!("start: {} ", java.display()),
        );
    assert!(config.contains(&host.addr) && config.contains("supervisor: systemd"));
    std::fs::write(&config_path, config).unwrap();
    let dir = wd.dir.path();

    // 1. exec, first deploy: blue runs as its unit, enabled; the unit file is valid.
    wd.stage("v1");
    let r = Cmd::bluegreen(dir, &["exec"]).run();
    assert!(r.success(), "{}", r.out());
    assert!(
        r.out().contains("(bluegreen-demo@blue.service, enabled)"),
        "{}",
        r.out()
    );
    assert_eq!(tb.version_via_proxy(), "v1");
    assert_eq!(host.unit("blue"), "active enabled");
    let verify = host.sh(
        "systemd-analyze verify /etc/systemd/system/bluegreen-demo@.service bluegreen-demo@blue.service 2>&1; echo rc=$?",
    );
    assert!(verify.ends_with("rc=0"), "systemd-analyze verify: {verify}");
    let unit = host.sh("cat /etc/systemd/system/bluegreen-demo@.service");
    for line in [
        "Restart=on-failure",
        "SuccessExitStatus=143",
        "TimeoutStopSec=10",
        "KillSignal=SIGTERM",
        "User=bgdeploy",
        "EnvironmentFile=-/srv/bluegreen/%i/app.env",
        "WantedBy=multi-user.target",
    ] {
        assert!(unit.lines().any(|l| l == line), "no `{line}` in:\n{unit}");
    }
    // The environment arrives through the EnvironmentFile, byte for byte, and the file is 0600.
    let pid = host.main_pid("blue");
    assert_eq!(
        host.sh(&format!(
            "perl -0ne 'print $1 if /^ODD=(.*)\\0/s' /proc/{pid}/environ"
        )),
        ODD
    );
    assert_eq!(
        host.sh("stat -c '%a %U' /srv/bluegreen/blue/app.env"),
        "600 bgdeploy"
    );
    let status = Cmd::bluegreen(dir, &["status"]).run();
    assert!(
        status
            .out()
            .contains("systemd bluegreen-demo@blue.service enabled"),
        "{}",
        status.out()
    );

    // 2. The rendered script deploys v2 under load: no failed request; green enabled, blue
    //    stopped and disabled.
    let render = Cmd::bluegreen(dir, &["render", "script", "-o", "deploy.sh"]).run();
    assert!(render.success(), "{}", render.out());
    wd.stage("v2");
    let traffic = Traffic::start(&tb, 2);
    traffic.allow(&["v1", "v2"]);
    let r = Cmd::script(dir, "deploy.sh", &[]).run();
    std::thread::sleep(Duration::from_millis(300));
    let (nc, ka) = traffic.stop();
    assert!(r.success(), "{}", r.out());
    assert_eq!(nc.failures(), 0, "{}", nc.line());
    assert_eq!(ka.http_errors(), 0, "{}", ka.line());
    assert!(nc.total() > 0, "{}", nc.line());
    assert_eq!(tb.version_via_proxy(), "v2");
    assert_eq!(host.unit("green"), "active enabled");
    assert_eq!(host.unit("blue"), "inactive disabled");

    // 3. The live instance is killed: systemd starts it again, and nginx serves v2 again.
    let before = host.main_pid("green");
    host.sh(&format!("kill -KILL {before}"));
    let back = until_served(&tb, "v2", 20);
    let after = host.main_pid("green");
    assert_ne!(after, before, "no new process");
    assert_eq!(
        host.sh("systemctl show -P NRestarts bluegreen-demo@green.service"),
        "1"
    );
    let status = Cmd::bluegreen(dir, &["status"]).run();
    assert!(
        status.out().contains("enabled, restarted once"),
        "{}",
        status.out()
    );
    eprintln!("killed instance served again after {back:?}");

    // 4. The host reboots: its systemd is a new process, the live slot starts at boot, the idle
    //    one does not, and nginx serves v2.
    let pid1 = host.sh("stat -c %Z /proc/1");
    let t0 = Instant::now();
    host.run(&["reboot", &host.testbed]);
    assert_ne!(
        host.sh("stat -c %Z /proc/1"),
        pid1,
        "the host did not reboot"
    );
    until_served(&tb, "v2", 30);
    assert_eq!(host.unit("green"), "active enabled");
    assert_eq!(host.unit("blue"), "inactive disabled");
    eprintln!(
        "live slot served again {:?} after the reboot began",
        t0.elapsed()
    );
    let status = Cmd::bluegreen(dir, &["status"]).run();
    assert!(status.success(), "{}", status.out());
    assert!(status.out().contains("consistent"), "{}", status.out());

    // 5. A rollback restarts v1 from blue's kept jar as its unit and switches: blue enabled,
    //    green disabled.
    let r = Cmd::bluegreen(dir, &["rollback"]).run();
    assert!(r.success(), "{}", r.out());
    assert_eq!(tb.version_via_proxy(), "v1");
    assert_eq!(host.unit("blue"), "active enabled");
    assert_eq!(host.unit("green"), "inactive disabled");

    // 6. An instance that dies while it is health-checked: systemd would restart it, but the
    //    deploy fails, says so, stops and disables the unit, and traffic stays on v1.
    wd.stage("broken");
    let config = std::fs::read_to_string(&config_path).unwrap();
    let dying = config.replace(
        "--server.port={port}",
        "--server.port={port} & sleep 1; kill -KILL $!; exit 1",
    );
    std::fs::write(&config_path, dying).unwrap();
    let r = Cmd::bluegreen(dir, &["exec"]).run();
    std::fs::write(&config_path, &config).unwrap();
    assert_eq!(r.code, Some(1), "{}", r.out());
    assert!(r.out().contains("the green instance exited"), "{}", r.out());
    assert_eq!(tb.version_via_proxy(), "v1");
    assert_eq!(host.unit("green"), "inactive disabled");
    assert_eq!(host.unit("blue"), "active enabled");

    // 7. `supervisor: systemd-user`: check --remote names lingering as the problem, setup enables
    //    it (the one sudo line the README gives), and the next deploy starts green as a unit of
    //    the deploy user's own systemd (no User=, default.target; systemd-analyze accepts it)
    //    while blue, a system unit, is stopped and disabled by the systemd that ran it.
    let user_config = config.replace("supervisor: systemd\n", "supervisor: systemd-user\n");
    assert_ne!(user_config, config);
    std::fs::write(&config_path, &user_config).unwrap();
    let r = Cmd::bluegreen(dir, &["check", "--remote"]).run();
    assert!(
        r.out().contains("lingering is off for bgdeploy"),
        "{}",
        r.out()
    );
    let r = Cmd::bluegreen(dir, &["setup"]).run();
    assert!(
        r.out().contains("enabled lingering for bgdeploy"),
        "{}",
        r.out()
    );
    wd.stage("v2");
    let traffic = Traffic::start(&tb, 2);
    traffic.allow(&["v1", "v2"]);
    let r = Cmd::bluegreen(dir, &["exec"]).run();
    std::thread::sleep(Duration::from_millis(300));
    let (nc, ka) = traffic.stop();
    assert!(r.success(), "{}", r.out());
    assert_eq!(nc.failures(), 0, "{}", nc.line());
    assert_eq!(ka.http_errors(), 0, "{}", ka.line());
    assert_eq!(tb.version_via_proxy(), "v2");
    assert_eq!(host.user_unit("green"), "active enabled");
    assert_eq!(host.unit("blue"), "inactive disabled");
    let unit_file = "/home/bgdeploy/.config/systemd/user/bluegreen-demo@.service";
    let unit = host.sh(&format!("cat {unit_file}"));
    assert!(!unit.contains("User="), "{unit}");
    assert!(
        unit.lines().any(|l| l == "WantedBy=default.target"),
        "{unit}"
    );
    let verify = host.sh_user(&format!(
        "systemd-analyze --user verify {unit_file} bluegreen-demo@green.service 2>&1; echo rc=$?"
    ));
    assert!(
        verify.ends_with("rc=0"),
        "systemd-analyze --user verify: {verify}"
    );
    let status = Cmd::bluegreen(dir, &["status"]).run();
    assert!(
        status
            .out()
            .contains("systemd --user bluegreen-demo@green.service enabled"),
        "{}",
        status.out()
    );
    // Killed: the user's systemd starts it again.
    let before = host.sh_user("systemctl --user show -P MainPID bluegreen-demo@green.service");
    host.sh(&format!("kill -KILL {before}"));
    until_served(&tb, "v2", 20);
    assert_eq!(
        host.sh_user("systemctl --user show -P NRestarts bluegreen-demo@green.service"),
        "1"
    );
    // Rebooted: lingering starts the user's systemd, which starts the live slot.
    host.run(&["reboot", &host.testbed]);
    until_served(&tb, "v2", 40);
    assert_eq!(host.user_unit("green"), "active enabled");
}
