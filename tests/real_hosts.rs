//! Hosts set up the way production hosts are: upstream files written by people, an app that changes
//! its working directory, a deploy dir reached through a symlink, a recycled pid, a new instance
//! that dies while it boots, a reload nginx does not carry out, a link cut in the middle of a long
//! call, `~/` paths and the other defaults that touch paths or the environment, and 32 app hosts.
//! Each runs on the testbed (real sshd, nginx, the JVM demo app) under load through nginx where
//! traffic could be affected, and fails on the code before the fix it covers.

use crate::e2e::{deploy, Backend, Traffic};
use crate::testbed::{serial, Testbed, Workdir};
use crate::util::{Cmd, Run};
use bluegreen_loadgen::Counts;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bluegreen(wd: &Workdir, args: &[&str], env: &[(&str, &str)]) -> Run {
    Cmd::bluegreen(wd.path(), args).envs(env).run()
}

fn exec(wd: &Workdir) -> Run {
    bluegreen(wd, &["exec", "-v"], &[])
}

/// `bluegreen render script`, then `bash deploy.sh` with `env`.
fn script(wd: &Workdir, env: &[(&str, &str)]) -> Run {
    bluegreen(wd, &["render", "script", "-o", "deploy.sh"], &[]).assert_code(0);
    Cmd::script(wd.path(), "deploy.sh", &[]).envs(env).run()
}

/// The two runners of a deploy.
const BACKENDS: [&str; 2] = ["exec", "script"];

/// A deploy of what `wd` stages, by `exec` or the rendered script.
fn deploy_with(backend: &str, wd: &Workdir) -> Run {
    if backend == "exec" {
        exec(wd)
    } else {
        script(wd, &[])
    }
}

fn assert_code(r: &Run, code: i32) {
    r.assert_code(code);
}

fn assert_says(r: &Run, words: &[&str]) {
    r.assert_says(words);
}

fn assert_no_failures(nc: &Counts, ka: &Counts) {
    assert_eq!(nc.failures(), 0, "new-connection: {}", nc.line());
    assert_eq!(ka.http_errors(), 0, "keep-alive: {}", ka.line());
}

fn config_text(wd: &Workdir) -> String {
    std::fs::read_to_string(wd.path().join("bluegreen.yaml")).unwrap()
}

/// Replaces the config's line that starts with `prefix` (`start: `, `  known_hosts: `...) by `line`
/// (or drops it when `line` is empty).
fn set_line(wd: &Workdir, prefix: &str, line: &str) {
    let text = config_text(wd);
    let mut found = 0;
    let new: Vec<String> = text
        .lines()
        .filter_map(|l| {
            if l.starts_with(prefix) {
                found += 1;
                (!line.is_empty()).then(|| line.to_string())
            } else {
                Some(l.to_string())
            }
        })
        .collect();
    assert_eq!(found, 1, "one `{prefix}` line in:\n{text}");
    std::fs::write(wd.path().join("bluegreen.yaml"), new.join("\n") + "\n").unwrap();
}

/// The config's line that starts with `prefix`, without the prefix.
fn get_line(wd: &Workdir, prefix: &str) -> String {
    config_text(wd)
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line"))
        .to_string()
}

fn upstream(tb: &Testbed) -> String {
    let out = tb.sh("proxy", &format!("cat {}", tb.var("UPSTREAM_FILE")));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes the proxy's upstream file (as the deploy user owns it) and, with `reload`, makes nginx
/// serve it.
fn write_upstream(tb: &Testbed, text: &str, reload: bool) {
    let file = tb.var("UPSTREAM_FILE");
    let dir = format!("{}/proxy/state", tb.var("HOSTS_DIR"));
    let name = file.rsplit('/').next().unwrap();
    std::fs::write(format!("{dir}/{name}"), text).unwrap();
    if reload {
        tb.sh_ok(
            "proxy",
            &format!("kill -HUP $(cat {})", tb.var("NGINX_PID_FILE")),
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn slot_ports_open(tb: &Testbed, port: u16) -> Vec<bool> {
    (1..=tb.app_addrs().len())
        .map(|i| tb.port_open(&format!("app{i}"), port))
        .collect()
}

/// A first deploy of v1 (blue, 8080) with exec.
fn first_deploy(tb: &Testbed, wd: &Workdir) {
    wd.stage("v1");
    let out = deploy(Backend::Exec, tb, wd, 1);
    assert!(out.success, "first deploy:\n{}", out.output);
    assert_eq!(tb.version_via_proxy(), "v1");
}

#[test]
fn upstream_files_written_by_people() {
    let _g = serial();
    let tb = Testbed::up(2);
    let wd = Workdir::new(&tb, "60s", "");
    first_deploy(&tb, &wd);
    let [a1, a2] = [tb.app_addrs()[0].clone(), tb.app_addrs()[1].clone()];

    // As people write it: comments, parameters, two servers on one line, a backup page that is
    // not an app host. Before: detection saw ports `8080 9`, took it for a first deploy, started
    // blue over the live instance and dropped every parameter.
    let human = format!(
        "# app pool, edited by ops\nserver {a1}:8080 weight=2 max_fails=3 fail_timeout=5s;  # main\n\
         server {a2}:8080 max_fails=2; server 127.0.0.1:9 backup;\n"
    );
    write_upstream(&tb, &human, true);
    let traffic = Traffic::start(&tb, 3);
    traffic.allow(&["v1", "v2"]);
    wd.stage("v2");
    let r = exec(&wd);
    let (nc, ka) = traffic.stop();
    assert_code(&r, 0);
    assert_says(&r, &["live: blue, deploying to green"]);
    assert_no_failures(&nc, &ka);
    assert_eq!(
        upstream(&tb),
        human.replace(":8080", ":8081"),
        "parameters, comments and the backup line are kept"
    );
    assert_eq!(tb.version_via_proxy(), "v2");
    assert_eq!(
        slot_ports_open(&tb, 8080),
        [false, false],
        "old slot stopped"
    );

    // Files bluegreen cannot read as it would have to: each refused, naming the file and line,
    // and nothing started or changed.
    let file = tb.var("UPSTREAM_FILE");
    let cases = [
        (
            format!("server {a1}:8081;\nserver {a2}:8081; server {a2}:9090;\n"),
            vec!["(line 2) is an app host at port 9090, which is neither slot"],
        ),
        (
            format!("server {a1}:8081;\nserver {a2}:8081;\nserver 127.0.0.2:8081;\n"),
            vec![
                "`server 127.0.0.2:8081` (line 3) is at a slot port",
                "not one of the config's servers",
            ],
        ),
        (
            format!("server {a1}:8081;\nserver {a2}:8080 backup;\n"),
            vec!["sends traffic to both slots (port 8080 on line 2, port 8081 on line 1)"],
        ),
        (
            "# placeholder\nserver 127.0.0.1:9;\n".to_string(),
            vec!["(line 2) is not one of the config's servers and no server is at a slot port"],
        ),
        (
            format!("server {a1}:8081\n"),
            vec!["line 1: `server` is not ended by `;`"],
        ),
    ];
    for (text, words) in &cases {
        write_upstream(&tb, text, false);
        wd.stage("v3");
        let r = exec(&wd);
        assert_code(&r, 1);
        assert_says(&r, &[file]);
        assert_says(&r, words);
        assert_eq!(&upstream(&tb), text, "upstream file untouched");
        assert_eq!(
            slot_ports_open(&tb, 8080),
            [false, false],
            "nothing started"
        );
        tb.assert_lock_free();
    }

    // A file the deploy user cannot read is an error, never "no slot is live" (which started a
    // first deploy into blue before).
    write_upstream(
        &tb,
        &format!("server {a1}:8081;\nserver {a2}:8081;\n"),
        false,
    );
    tb.sh_ok("proxy", &format!("chmod 000 {file}"));
    let r = exec(&wd);
    tb.sh_ok("proxy", &format!("chmod 644 {file}"));
    assert_code(&r, 1);
    assert_says(
        &r,
        &[&format!("cannot read the upstream file {file} as bgdeploy")],
    );
    assert_eq!(
        slot_ports_open(&tb, 8080),
        [false, false],
        "nothing started"
    );
    assert_eq!(tb.version_via_proxy(), "v2");
    // And `status` names the problem instead of guessing.
    write_upstream(&tb, &cases[0].0, false);
    let st = bluegreen(&wd, &["status"], &[]);
    assert_code(&st, 1);
    assert_says(&st, &["DRIFT: proxy: ", "is an app host at port 9090"]);
}

#[test]
fn instances_are_known_by_pid_and_start_time_not_by_directory() {
    let _g = serial();
    let tb = Testbed::up(2);
    // The deploy dir is reached through a symlink, and the app changes its working directory
    // (`cd /tmp && exec java ...`): before, stop found "no instance" and the old one ran forever.
    for i in 1..=2 {
        tb.sh_ok(
            &format!("app{i}"),
            "mkdir -p /srv/bluegreen/real && ln -sfn /srv/bluegreen/real /srv/bluegreen/link && \
             chown -h bgdeploy: /srv/bluegreen/real /srv/bluegreen/link",
        );
    }
    let wd = Workdir::new(&tb, "60s", "");
    set_line(&wd, "deploy_dir: ", "deploy_dir: /srv/bluegreen/link/demo");
    let start = get_line(&wd, "start: ");
    set_line(&wd, "start: ", &format!("start: cd /tmp && exec {start}"));
    let mut traffic = None;
    for (v, live, idle) in [("v1", 8080, 8081), ("v2", 8081, 8080), ("v3", 8080, 8081)] {
        wd.stage(v);
        let r = exec(&wd);
        assert_code(&r, 0);
        assert_eq!(tb.version_via_proxy(), v);
        assert_eq!(slot_ports_open(&tb, live), [true, true], "{v} runs");
        assert_eq!(
            slot_ports_open(&tb, idle),
            [false, false],
            "after {v}: the old instance was stopped"
        );
        if v == "v1" {
            // Traffic from the first deploy on (before it, nginx has nothing to send it to).
            let t = Traffic::start(&tb, 3);
            t.allow(&["v1", "v2", "v3", "v4"]);
            traffic = Some(t);
        } else {
            assert_says(&r, &["stopped pid"]);
        }
    }
    let traffic = traffic.unwrap();
    // The JVM (in the session bluegreen recorded) runs in /tmp, not in the slot.
    let cwd = tb.sh_ok(
        "app1",
        "for p in $(pgrep -s $(cut -d' ' -f1 /srv/bluegreen/real/demo/blue/app.pid) java); do \
         readlink /proc/$p/cwd; done",
    );
    assert_eq!(cwd, "/tmp", "the app did change its directory");

    // A recycled pid: the green pid file names a process that is not the instance. On app1 a pid
    // file of an older bluegreen (no start time) written before that process started; on app2 a
    // start time that differs. Both processes run in the slot's directory, which is all the old
    // check looked at; neither may be signalled.
    let green = "/srv/bluegreen/real/demo/green";
    let mut decoys = Vec::new();
    for (i, record) in [(1, "legacy"), (2, "start")] {
        let host = format!("app{i}");
        let pid = tb.sh_ok(
            &host,
            &format!("cd {green} && (setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $!)"),
        );
        let line = match record {
            "legacy" => pid.clone(),
            _ => format!("{pid} 12345"),
        };
        tb.sh_ok(
            &host,
            &format!(
                "printf '%s\\n' '{line}' >{green}/app.pid && chown bgdeploy: {green}/app.pid && \
                 touch -d @$(( $(date +%s) - 60 )) {green}/app.pid"
            ),
        );
        decoys.push((host, pid));
    }
    wd.stage("v4");
    let r = exec(&wd);
    let (nc, ka) = traffic.stop();
    assert_code(&r, 0);
    assert_eq!(tb.version_via_proxy(), "v4");
    for (host, pid) in &decoys {
        assert_eq!(
            tb.sh_ok(host, &format!("kill -0 {pid} && echo alive || echo gone")),
            "alive",
            "{host}: the process that reused the pid was not signalled"
        );
    }
    assert_no_failures(&nc, &ka);
}

/// The start command of a version whose context fails a few seconds into its boot (as a Spring
/// Boot app does when its database is unreachable): it prints why, then exits 1.
const FAILS_TO_BOOT: &str =
    "start: echo 'APPLICATION FAILED TO START - database unreachable' {port}; \
                             sleep 2; exit 1";

#[test]
fn an_instance_that_dies_while_booting_fails_the_deploy_at_once() {
    let _g = serial();
    let tb = Testbed::up(2);
    let wd = Workdir::new(&tb, "90s", "");
    first_deploy(&tb, &wd);
    let good_start = format!("start: {}", get_line(&wd, "start: "));
    set_line(&wd, "start: ", FAILS_TO_BOOT);
    let traffic = Traffic::start(&tb, 3);
    traffic.allow(&["v1"]);
    wd.stage("v2");
    for backend in BACKENDS {
        let r = deploy_with(backend, &wd);
        assert_code(&r, 1);
        // Before: reported only at `health.deadline` (90 s here), as "not healthy".
        assert!(
            r.secs < 20.0,
            "{backend}: reported after {:.1}s:\n{}",
            r.secs,
            r.out()
        );
        assert_says(
            &r,
            &[
                "instance exited while it was health-checked with status 1",
                "into the health checks",
                "APPLICATION FAILED TO START - database unreachable",
            ],
        );
        assert_eq!(tb.version_via_proxy(), "v1", "{backend}: traffic stays");
        tb.assert_lock_free();
        println!("fail-fast report: {backend}: exit 1 after {:.1}s", r.secs);
    }
    let (nc, ka) = traffic.stop();
    assert_no_failures(&nc, &ka);
    set_line(&wd, "start: ", &good_start);
}

#[test]
fn a_reload_nginx_does_not_carry_out_leaves_file_and_nginx_agreeing() {
    let _g = serial();
    let tb = Testbed::up(2);
    let wd = Workdir::new(&tb, "60s", "");
    first_deploy(&tb, &wd);
    let before = upstream(&tb);
    // A reload command that signals nothing: nginx never replaces its workers. The switch must put
    // the file back (nginx and the file agree), exec must switch back, keep traffic on v1, and
    // keep the new instances only if the switch back fails too (it does here: same reload).
    set_line(&wd, "  reload_command: ", "  reload_command: true");
    let traffic = Traffic::start(&tb, 3);
    traffic.allow(&["v1"]);
    wd.stage("v2");
    for backend in BACKENDS {
        let r = deploy_with(backend, &wd);
        assert_code(&r, 1);
        assert_says(
            &r,
            &[
                "nginx did not replace its workers within 10s",
                "upstream file",
                "restored and nginx reloaded again",
                "left running: the switch back could not be confirmed",
            ],
        );
        assert_eq!(
            upstream(&tb),
            before,
            "{backend}: the upstream file is put back"
        );
        assert_eq!(tb.version_via_proxy(), "v1", "{backend}: traffic stays");
        tb.assert_lock_free();
        // The new instances were kept (the switch back could not be confirmed); stop them for
        // the next backend, as an operator would.
        for i in 1..=2 {
            tb.sh_ok(
                &format!("app{i}"),
                "p=$(cut -d' ' -f1 /srv/bluegreen/green/app.pid) && kill -TERM -- -$p; \
                 for _ in $(seq 100); do kill -0 $p 2>/dev/null || break; sleep 0.1; done",
            );
        }
    }
    let (nc, ka) = traffic.stop();
    assert_no_failures(&nc, &ka);
    // No temporary file is left beside the upstream file.
    let dir = format!("{}/proxy/state", tb.var("HOSTS_DIR"));
    let left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains("bluegreen-"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

#[test]
fn a_link_cut_during_a_long_stop_is_reported_within_the_transport_timeouts() {
    let _g = serial();
    let tb = Testbed::up(2);
    let wd = Workdir::new(&tb, "60s", "");
    first_deploy(&tb, &wd);
    // A request that keeps app2's old instance shutting down for the whole grace (20 s here).
    let slow = Command::new("curl")
        .args(["-s", "-m", "40"])
        .arg(format!("http://{}:8080/slow?ms=30000", tb.app_addrs()[1]))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    wd.stage("v2");
    let started = Instant::now();
    let mut child = Cmd::bluegreen(wd.path(), &["exec", "-v"]).spawn().child;
    // Wait until app2's stop is under way: traffic on v2 and app2's old listener closed.
    let deadline = Instant::now() + Duration::from_secs(60);
    while tb.version_via_proxy() != "v2" || tb.port_open("app2", 8080) {
        assert!(Instant::now() < deadline, "the stop never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let dev = format!("bg-{}-a2", tb.name);
    let cut = Instant::now();
    assert!(Command::new("ip")
        .args(["link", "set", &dev, "down"])
        .status()
        .unwrap()
        .success());
    let mut lines = Vec::new();
    if let Some(out) = child.stdout.take() {
        lines.extend(BufReader::new(out).lines().map_while(Result::ok));
    }
    let status = child.wait().unwrap();
    let after_cut = cut.elapsed().as_secs_f64();
    let _ = Command::new("ip")
        .args(["link", "set", &dev, "up"])
        .status();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    let out = format!("{}\n{err}", lines.join("\n"));
    drop(slow);
    assert_eq!(status.code(), Some(1), "exit code:\n{out}");
    assert!(out.contains("app2"), "names app2:\n{out}");
    // connect_timeout is 5s in the testbed's config: the kernel gives up on the silent peer within
    // about that (keepalive probes, then TCP_USER_TIMEOUT), long before the call's own bound
    // (grace 20s + command_timeout 60s).
    assert!(
        after_cut < 12.0,
        "reported {after_cut:.1}s after the cut:\n{out}"
    );
    println!(
        "link-cut report: exec exited 1 {after_cut:.1}s after the cut ({:.1}s in all)",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn home_paths_and_defaults_work_as_documented() {
    let _g = serial();
    let tb = Testbed::up(1);
    let wd = Workdir::new(&tb, "60s", "");
    // `~` is the runner's home: HOME set to a directory holding .ssh/known_hosts (the default
    // `ssh.known_hosts: ~/.ssh/known_hosts`) and a key (`identity_file: ~/.ssh/id_ed25519`).
    let home = crate::util::TempDir::new("home");
    std::fs::create_dir_all(home.path().join(".ssh")).unwrap();
    std::fs::copy(tb.var("KNOWN_HOSTS"), home.path().join(".ssh/known_hosts")).unwrap();
    std::fs::copy(tb.var("SSH_KEY"), home.path().join(".ssh/id_ed25519")).unwrap();
    let home_s = home.path().display().to_string();
    set_line(&wd, "  known_hosts: ", "");
    set_line(
        &wd,
        "  identity_file: ",
        "  identity_file: ~/.ssh/id_ed25519",
    );
    // The default state_dir, /var/lib/bluegreen/<app>.
    set_line(&wd, "  state_dir: ", "");
    let check = bluegreen(&wd, &["check"], &[("HOME", &home_s)]);
    assert_code(&check, 0);
    assert_says(
        &check,
        &[
            &format!("ssh.known_hosts: {home_s}/.ssh/known_hosts (and /etc/ssh/ssh_known_hosts)"),
            &format!("ssh.identity_file: {home_s}/.ssh/id_ed25519"),
        ],
    );
    wd.stage("v1");
    let r = bluegreen(&wd, &["exec"], &[("HOME", &home_s)]);
    assert_code(&r, 0);
    let state = tb.sh_ok("proxy", "cat /var/lib/bluegreen/demo/state");
    assert!(state.contains("live=blue"), "default state_dir: {state}");
    // The rendered script resolves `~` in its shell, at run time.
    wd.stage("v2");
    let r = script(&wd, &[("HOME", &home_s)]);
    assert_code(&r, 0);
    assert_eq!(tb.version_via_proxy(), "v2");

    // No identity_file: every key of ssh-agent ($SSH_AUTH_SOCK), for exec and the script.
    set_line(&wd, "  identity_file: ", "");
    let sock = home.path().join("agent.sock");
    let agent = Command::new("ssh-agent")
        .args(["-D", "-a"])
        .arg(&sock)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let agent = KillOnDrop(agent);
    let t = Instant::now();
    while !sock.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "ssh-agent did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let sock_s = sock.display().to_string();
    let added = Command::new("ssh-add")
        .arg(tb.var("SSH_KEY"))
        .env("SSH_AUTH_SOCK", &sock_s)
        .output()
        .unwrap();
    assert!(added.status.success(), "ssh-add: {added:?}");
    wd.stage("v3");
    let r = bluegreen(
        &wd,
        &["exec"],
        &[("HOME", &home_s), ("SSH_AUTH_SOCK", &sock_s)],
    );
    assert_code(&r, 0);
    assert_says(&r, &["ssh-agent key"]);
    wd.stage("v4");
    let r = script(&wd, &[("HOME", &home_s), ("SSH_AUTH_SOCK", &sock_s)]);
    assert_code(&r, 0);
    assert_eq!(tb.version_via_proxy(), "v4");
    drop(agent);

    // $BG_SSH_KEY and $BG_KNOWN_HOSTS override the config's files (for exec and the script): with
    // a HOME holding nothing, only they can make the deploy work.
    let empty = crate::util::TempDir::new("emptyhome");
    let empty_s = empty.path().display().to_string();
    let overrides = [
        ("HOME", empty_s.as_str()),
        ("BG_SSH_KEY", tb.var("SSH_KEY")),
        ("BG_KNOWN_HOSTS", tb.var("KNOWN_HOSTS")),
    ];
    wd.stage("v5");
    let r = bluegreen(&wd, &["exec"], &overrides);
    assert_code(&r, 0);
    wd.stage("v6");
    let r = script(&wd, &overrides);
    assert_code(&r, 0);
    assert_eq!(tb.version_via_proxy(), "v6");
    // Without them, the same empty HOME fails naming the default file, before touching a host.
    let r = bluegreen(&wd, &["exec"], &[("HOME", &empty_s)]);
    assert_code(&r, 1);
    assert_says(&r, &[&format!("{empty_s}/.ssh/known_hosts")]);
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn deploys_to_32_app_hosts() {
    let _g = serial();
    let tb = Testbed::up(32);
    let wd = Workdir::new(&tb, "120s", "");
    first_deploy(&tb, &wd);
    assert!(
        slot_ports_open(&tb, 8080).iter().all(|o| *o),
        "v1 runs everywhere"
    );
    let traffic = Traffic::start(&tb, 4);
    traffic.allow(&["v1", "v2", "v3"]);
    for (v, live, idle) in [("v2", 8081, 8080), ("v3", 8080, 8081)] {
        wd.stage(v);
        let r = exec(&wd);
        assert_code(&r, 0);
        assert_eq!(tb.version_via_proxy(), v);
        assert!(
            slot_ports_open(&tb, live).iter().all(|o| *o),
            "{v} runs everywhere"
        );
        assert!(
            slot_ports_open(&tb, idle).iter().all(|o| !*o),
            "old slot stopped"
        );
        println!("32-host report: {v} deployed in {:.1}s", r.secs);
    }
    let (nc, ka) = traffic.stop();
    assert_no_failures(&nc, &ka);
}

/// Issue 12, item 5: a deploy key with a passphrase, as a Jenkins "SSH Username with private key"
/// credential holds one (`passphraseVariable`: `BLUEGREEN_SSH_PASSPHRASE`). exec opens it with
/// libssh2; the rendered script loads it into an ssh-agent of the run's own, which is gone when the
/// script ends. Without the passphrase both fail and change nothing; the passphrase is in no output
/// and no hook's environment.
#[test]
fn a_deploy_key_with_a_passphrase_works_for_exec_and_the_script() {
    let _g = serial();
    let tb = Testbed::up(1);
    let wd = Workdir::new(
        &tb,
        "60s",
        "hooks:\n  post_switch: 'echo \"hook-sees=${BLUEGREEN_SSH_PASSPHRASE:-nothing}\"'\n",
    );
    let pass = "it's a \"pass phrase\" $(touch /tmp/PWNED-PASS)";
    let key = wd.path().join("id_locked");
    std::fs::copy(tb.var("SSH_KEY"), &key).unwrap();
    let st = Command::new("ssh-keygen")
        .args(["-q", "-p", "-P", "", "-N", pass, "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(st.success());
    let key = key.to_str().unwrap().to_string();
    let agents = || {
        let out = Command::new("pgrep")
            .args(["-f", "^ssh-agent -s -a .*/bluegreen\\."])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    let before = agents();

    wd.stage("v1");
    let r = bluegreen(&wd, &["exec"], &[("BG_SSH_KEY", &key)]);
    assert_ne!(r.code, Some(0), "{}", r.out());
    assert_says(&r, &["BLUEGREEN_SSH_PASSPHRASE"]);
    let with = [
        ("BG_SSH_KEY", key.as_str()),
        ("BLUEGREEN_SSH_PASSPHRASE", pass),
    ];
    let r = bluegreen(&wd, &["exec"], &with);
    assert_code(&r, 0);
    assert_eq!(tb.version_via_proxy(), "v1");
    assert_says(&r, &["hook-sees=nothing"]);
    assert!(!r.out().contains("pass phrase"), "{}", r.out());

    wd.stage("v2");
    let r = script(&wd, &[("BG_SSH_KEY", &key)]);
    assert_ne!(r.code, Some(0), "{}", r.out());
    assert_eq!(tb.version_via_proxy(), "v1");
    let r = script(&wd, &with);
    assert_code(&r, 0);
    assert_eq!(tb.version_via_proxy(), "v2");
    assert_says(&r, &["hook-sees=nothing"]);
    assert!(!r.out().contains("pass phrase"), "{}", r.out());
    assert_eq!(agents(), before, "the run's ssh-agent outlived it");
    // A wrong passphrase: the script says so before touching a host.
    let r = script(
        &wd,
        &[("BG_SSH_KEY", &key), ("BLUEGREEN_SSH_PASSPHRASE", "wrong")],
    );
    assert_ne!(r.code, Some(0), "{}", r.out());
    assert_says(&r, &["does not open with BLUEGREEN_SSH_PASSPHRASE"]);
    assert_eq!(agents(), before, "the run's ssh-agent outlived it");
    assert!(!std::path::Path::new("/tmp/PWNED-PASS").exists());
}
