//! One typed argument list per function of the remote library.
//!
//! Each struct names the arguments of one `bg_<name>` function of `remote.sh`, and turns itself
//! into the [`RemoteCall`] both backends send (`RemoteCall::from(Stop { .. })`): the order of the
//! arguments, how numbers and yes/no flags are written, and how long the call may wait on purpose
//! are written once, here. Text is a [`Word`], so that it may refer to values known only at run
//! time (the target slot, an environment variable).

use super::{RemoteCall, RemoteFn, PORT_FREE_WAIT_SECS, SWITCH_WAIT_SECS};
use crate::word::Word;

/// A number as the library reads it.
fn number(n: impl ToString) -> Word {
    Word::lit(n.to_string())
}

/// A flag as the library reads it: `yes` or `no`.
fn yes_no(flag: bool) -> Word {
    Word::lit(if flag { "yes" } else { "no" })
}

/// `lock`: takes the deploy lock on the proxy, taking over one whose holder stopped renewing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    /// The proxy's state directory, which holds the lock.
    pub state_dir: Word,
    /// The app, named in the audit line written when an expired lock is taken over.
    pub app: Word,
    /// Who takes the lock.
    pub holder: Word,
    /// The run's token: the lock is this run's while it carries it.
    pub token: Word,
    /// How long the lock holds without a renewal, in seconds.
    pub lease_secs: u64,
    /// Why the lock is held (`deploy of shop`), shown to a run that finds it taken.
    pub message: Word,
}

impl From<Lock> for RemoteCall {
    fn from(a: Lock) -> RemoteCall {
        RemoteCall::new(
            RemoteFn::Lock,
            vec![
                a.state_dir,
                a.app,
                a.holder,
                a.token,
                number(a.lease_secs),
                a.message,
            ],
        )
    }
}

/// `beat`: renews this run's lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beat {
    /// The proxy's state directory, which holds the lock.
    pub state_dir: Word,
    /// The run's token.
    pub token: Word,
    /// For how long the lock holds from now, in seconds (a number, or a word that is one at run
    /// time: the rendered script's `bg_renew_lock SECS`).
    pub lease: Word,
}

impl From<Beat> for RemoteCall {
    fn from(a: Beat) -> RemoteCall {
        RemoteCall::new(RemoteFn::Beat, vec![a.state_dir, a.token, a.lease])
    }
}

/// `unlock`: releases the lock if this run holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unlock {
    /// The proxy's state directory, which holds the lock.
    pub state_dir: Word,
    /// The run's token.
    pub token: Word,
}

impl From<Unlock> for RemoteCall {
    fn from(a: Unlock) -> RemoteCall {
        RemoteCall::new(RemoteFn::Unlock, vec![a.state_dir, a.token])
    }
}

/// `detect`: prints the live slot (`blue`, `green` or `none`) that the upstream file names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detect {
    /// nginx's upstream file.
    pub upstream_file: Word,
    /// Whether the file may be read under `sudo -n`.
    pub sudo: bool,
    /// The blue slot's port.
    pub blue_port: u16,
    /// The green slot's port.
    pub green_port: u16,
    /// The addresses nginx reaches the app hosts at: a slot's server lines must name only these.
    pub addresses: Vec<Word>,
}

impl Detect {
    /// The arguments, in the library's order (`proxystatus` passes them on to `detect`).
    fn args(self) -> Vec<Word> {
        [
            self.upstream_file,
            yes_no(self.sudo),
            number(self.blue_port),
            number(self.green_port),
        ]
        .into_iter()
        .chain(self.addresses)
        .collect()
    }
}

impl From<Detect> for RemoteCall {
    fn from(a: Detect) -> RemoteCall {
        RemoteCall::new(RemoteFn::Detect, a.args())
    }
}

/// `reconcile`: finishes what a run that died between its intent and its record left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconcile {
    /// The proxy's state directory (the state file, the intent).
    pub state_dir: Word,
    /// The app.
    pub app: Word,
    /// The slot the upstream file names now.
    pub live: Word,
    /// Whether nginx's commands run under `sudo -n`.
    pub sudo: bool,
    /// The command that tests nginx's config.
    pub test_command: Word,
    /// The command that reloads nginx.
    pub reload_command: Word,
}

impl From<Reconcile> for RemoteCall {
    fn from(a: Reconcile) -> RemoteCall {
        // It waits for a switch still running, under the same flock.
        RemoteCall::new(
            RemoteFn::Reconcile,
            vec![
                a.state_dir,
                a.app,
                a.live,
                yes_no(a.sudo),
                a.test_command,
                a.reload_command,
            ],
        )
        .waiting(SWITCH_WAIT_SECS)
    }
}

/// `intent`: records, ahead of the switch, what this run is about to make live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    /// The proxy's state directory.
    pub state_dir: Word,
    /// The run's token.
    pub token: Word,
    /// The slot about to be made live.
    pub target: Word,
    /// The slot live until now.
    pub from: Word,
    /// The release about to be made live.
    pub release: Word,
    /// Who runs the switch.
    pub deployer: Word,
}

impl From<Intent> for RemoteCall {
    fn from(a: Intent) -> RemoteCall {
        RemoteCall::new(
            RemoteFn::Intent,
            vec![
                a.state_dir,
                a.token,
                a.target,
                a.from,
                a.release,
                a.deployer,
            ],
        )
    }
}

/// `prepare`: creates a slot's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepare {
    /// The slot's directory.
    pub dir: Word,
}

impl From<Prepare> for RemoteCall {
    fn from(a: Prepare) -> RemoteCall {
        RemoteCall::new(RemoteFn::Prepare, vec![a.dir])
    }
}

/// `install`: checks an uploaded artifact's sha256, then renames it into place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Install {
    /// The slot's directory.
    pub dir: Word,
    /// The name the artifact was uploaded under, in that directory.
    pub tmp_name: Word,
    /// The name it gets once checked.
    pub jar_name: Word,
    /// The sha256 it must have, which is also the release recorded for the slot.
    pub sha256: Word,
}

impl From<Install> for RemoteCall {
    fn from(a: Install) -> RemoteCall {
        RemoteCall::new(
            RemoteFn::Install,
            vec![a.dir, a.tmp_name, a.jar_name, a.sha256],
        )
    }
}

/// `stop`: stops a slot's instance (the signal, then SIGKILL after the grace), then waits until its
/// port is free.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    /// The slot's directory.
    pub dir: Word,
    /// The slot's port.
    pub port: Word,
    /// The signal that asks the instance to stop.
    pub signal: Word,
    /// How long the instance has to exit before it is killed, in seconds.
    pub grace_secs: u64,
}

impl From<Stop> for RemoteCall {
    fn from(a: Stop) -> RemoteCall {
        RemoteCall::new(
            RemoteFn::Stop,
            vec![a.dir, a.port, a.signal, number(a.grace_secs)],
        )
        .waiting(a.grace_secs + PORT_FREE_WAIT_SECS)
    }
}

/// In the NAME VALUE pairs of an app's environment (`start`, `revive`, `hook`), a name that begins
/// with this is a file secret's: the value is the file's content, base64-encoded, which the library
/// writes to a file only the deploy user reads, giving the app the name (without the mark) holding
/// that file's path.
pub const FILE_ENV_MARK: &str = "@";

/// `start`: starts a slot's instance, after stopping one still running in the slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// The slot's directory.
    pub dir: Word,
    /// The slot (`blue` or `green`).
    pub slot: Word,
    /// The slot's port.
    pub port: Word,
    /// The address the app host is reached at (`$BG_HOST` for the start command).
    pub host: Word,
    /// The artifact's name in the slot's directory.
    pub jar_name: Word,
    /// The signal that stops an instance still running in the slot.
    pub signal: Word,
    /// How long that instance has to exit before it is killed, in seconds.
    pub grace_secs: u64,
    /// The start command, as bash text.
    pub command: Word,
    /// The port the proxy sent traffic to when the run began: never started on.
    pub live_port: Word,
    /// What runs the instance: `none` or `systemd`.
    pub supervisor: Word,
    /// The app's name (the systemd unit is `bluegreen-<app>@<slot>.service`).
    pub app: Word,
    /// The app's environment, name and value (a secret's value is a `${NAME}` of the runner's
    /// environment): written to the slot's `app.env` (mode 0600), which the instance's shell reads.
    pub env: Vec<(String, Word)>,
}

impl Start {
    /// The environment's arguments, after the others: NAME, VALUE, NAME, VALUE ...
    fn env_args(env: Vec<(String, Word)>) -> Vec<Word> {
        env.into_iter()
            .flat_map(|(name, value)| [Word::lit(name), value])
            .collect()
    }

    /// The arguments before the environment, in the library's order (`revive` takes the same ones
    /// first), and the environment.
    fn args(self) -> (Vec<Word>, Vec<(String, Word)>) {
        let fixed = vec![
            self.dir,
            self.slot,
            self.port,
            self.host,
            self.jar_name,
            self.signal,
            number(self.grace_secs),
            self.command,
            self.live_port,
            self.supervisor,
            self.app,
        ];
        (fixed, self.env)
    }

    /// How long the call may wait on purpose: for an instance still running in the slot to stop.
    fn wait_secs(&self) -> u64 {
        self.grace_secs + PORT_FREE_WAIT_SECS
    }
}

impl From<Start> for RemoteCall {
    fn from(a: Start) -> RemoteCall {
        let wait = a.wait_secs();
        let (mut args, env) = a.args();
        args.extend(Start::env_args(env));
        RemoteCall::new(RemoteFn::Start, args).waiting(wait)
    }
}

/// `alive`: fails, with the exit status and the log's last lines, when a slot's instance has
/// exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alive {
    /// The slot's directory.
    pub dir: Word,
    /// The slot.
    pub slot: Word,
}

impl From<Alive> for RemoteCall {
    fn from(a: Alive) -> RemoteCall {
        RemoteCall::new(RemoteFn::Alive, vec![a.dir, a.slot])
    }
}

/// `probe`: one health probe sent from the app host itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The URL probed.
    pub url: Word,
    /// The status expected.
    pub status: u16,
    /// Text the body must contain, if any.
    pub body: Option<Word>,
    /// How long the probe may take, in seconds.
    pub timeout_secs: u64,
}

impl From<Probe> for RemoteCall {
    fn from(a: Probe) -> RemoteCall {
        RemoteCall::new(
            RemoteFn::Probe,
            vec![
                a.url,
                number(a.status),
                a.body.unwrap_or_default(),
                number(a.timeout_secs),
            ],
        )
        .waiting(a.timeout_secs)
    }
}

/// `switch`: points nginx at a port on every app host (rewrite the upstream file, test, reload),
/// putting the previous file back if any of it fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    /// The proxy's state directory (the switch's flock).
    pub state_dir: Word,
    /// nginx's upstream file.
    pub upstream_file: Word,
    /// Whether the file is written, and nginx's commands run, under `sudo -n`.
    pub sudo: bool,
    /// The command that tests nginx's config.
    pub test_command: Word,
    /// The command that reloads nginx.
    pub reload_command: Word,
    /// The blue slot's port.
    pub blue_port: u16,
    /// The green slot's port.
    pub green_port: u16,
    /// The port traffic goes to from now on.
    pub port: Word,
    /// The comment line the file begins with.
    pub header: Word,
    /// The addresses nginx reaches the app hosts at.
    pub addresses: Vec<Word>,
}

impl From<Switch> for RemoteCall {
    fn from(a: Switch) -> RemoteCall {
        let args = [
            a.state_dir,
            a.upstream_file,
            yes_no(a.sudo),
            a.test_command,
            a.reload_command,
            number(a.blue_port),
            number(a.green_port),
            a.port,
            a.header,
        ]
        .into_iter()
        .chain(a.addresses)
        .collect();
        RemoteCall::new(RemoteFn::Switch, args).waiting(SWITCH_WAIT_SECS)
    }
}

/// `settle`: waits until nginx workers from before the reload have exited, or a deadline passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settle {
    /// The deadline, in seconds.
    pub deadline_secs: u64,
}

impl From<Settle> for RemoteCall {
    fn from(a: Settle) -> RemoteCall {
        RemoteCall::new(RemoteFn::Settle, vec![number(a.deadline_secs)]).waiting(a.deadline_secs)
    }
}

/// `record`: writes the state file, then drops the intent the switch was made under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The proxy's state directory.
    pub state_dir: Word,
    /// The app.
    pub app: Word,
    /// The slot live from now on.
    pub live: Word,
    /// The slot live until now.
    pub previous: Word,
    /// The release live from now on.
    pub release: Word,
    /// Who made the switch.
    pub deployer: Word,
}

impl From<Record> for RemoteCall {
    fn from(a: Record) -> RemoteCall {
        RemoteCall::new(
            RemoteFn::Record,
            vec![
                a.state_dir,
                a.app,
                a.live,
                a.previous,
                a.release,
                a.deployer,
            ],
        )
    }
}

/// `revive`: for a rollback, makes sure a slot's instance of a release runs: kept when it still
/// runs, started again from the artifact kept in its directory otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revive {
    /// How the instance is started when it no longer runs.
    pub start: Start,
    /// The release the slot must hold.
    pub release: Word,
}

impl From<Revive> for RemoteCall {
    fn from(a: Revive) -> RemoteCall {
        let wait = a.start.wait_secs();
        let (mut args, env) = a.start.args();
        args.push(a.release);
        args.extend(Start::env_args(env));
        RemoteCall::new(RemoteFn::Revive, args).waiting(wait)
    }
}

/// `release`: prints the release that was live before the last switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// The proxy's state directory (the state file, the audit log).
    pub state_dir: Word,
    /// Empty: the release live before the last switch. Otherwise a sha256 prefix or the start of
    /// a time, matched against the audit log's successful deploys (`rollback --to`).
    pub want: Word,
}

impl From<Release> for RemoteCall {
    fn from(a: Release) -> RemoteCall {
        RemoteCall::new(RemoteFn::Release, vec![a.state_dir, a.want])
    }
}

/// `retire`: once a switch is final, on an app host: stops the slot that was live (or leaves it
/// running for the rollback window), then keeps the release now live among the host's releases
/// and removes the oldest beyond a count (never one a slot holds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retire {
    /// The deploy directory (the slots' directories, `releases`).
    pub deploy_dir: Word,
    /// The slot that was live (`none` on a first deploy).
    pub old_slot: Word,
    /// Its port.
    pub old_port: Word,
    /// The signal that stops it.
    pub signal: Word,
    /// How long it has to exit before it is killed, in seconds.
    pub grace_secs: u64,
    /// How long it keeps running instead (`retain`), in seconds; 0: it is stopped now.
    pub retain_secs: u64,
    /// The artifact of the slot now live.
    pub file: Word,
    /// Its release (sha256).
    pub release: Word,
    /// How many releases to keep (`keep_releases`).
    pub keep: u64,
}

impl From<Retire> for RemoteCall {
    fn from(a: Retire) -> RemoteCall {
        let wait = a.grace_secs + PORT_FREE_WAIT_SECS;
        RemoteCall::new(
            RemoteFn::Retire,
            vec![
                a.deploy_dir,
                a.old_slot,
                a.old_port,
                a.signal,
                number(a.grace_secs),
                number(a.retain_secs),
                a.file,
                a.release,
                number(a.keep),
            ],
        )
        .waiting(wait)
    }
}

/// `releases`: lists an app host's kept releases, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Releases {
    /// The deploy directory (its `releases` directory, its slots).
    pub deploy_dir: Word,
}

impl From<Releases> for RemoteCall {
    fn from(a: Releases) -> RemoteCall {
        RemoteCall::new(RemoteFn::Releases, vec![a.deploy_dir])
    }
}

/// `audit`: appends one line to the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    /// The proxy's state directory (the audit log).
    pub state_dir: Word,
    /// What happened: `deploy`, `rollback`, `retire`.
    pub event: Word,
    /// The app.
    pub app: Word,
    /// How it ended.
    pub outcome: Word,
    /// The slot it targeted.
    pub target: Word,
    /// The slot live before.
    pub from: Word,
    /// The release.
    pub release: Word,
    /// Who ran it.
    pub deployer: Word,
}

impl From<Audit> for RemoteCall {
    fn from(a: Audit) -> RemoteCall {
        RemoteCall::new(
            RemoteFn::Audit,
            vec![
                a.state_dir,
                a.event,
                a.app,
                a.outcome,
                a.target,
                a.from,
                a.release,
                a.deployer,
            ],
        )
    }
}

/// `history`: prints the last lines of the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// The proxy's state directory (the audit log).
    pub state_dir: Word,
    /// How many lines.
    pub count: usize,
}

impl From<History> for RemoteCall {
    fn from(a: History) -> RemoteCall {
        RemoteCall::new(RemoteFn::History, vec![a.state_dir, number(a.count)])
    }
}

/// `checkhost`: checks an app host for `check --remote` and `setup` (which creates the slots'
/// directories, `fix`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckHost {
    /// The directory holding one directory per slot.
    pub deploy_dir: Word,
    /// The blue slot's port.
    pub blue_port: u16,
    /// The green slot's port.
    pub green_port: u16,
    /// The start command's program (its first word), empty when it cannot be told.
    pub program: Word,
    /// Whether health is probed from the host (curl is then required).
    pub need_curl: bool,
    /// `none` or `systemd`.
    pub supervisor: Word,
    /// The app's name.
    pub app: Word,
    /// Create what is missing (`setup`).
    pub fix: bool,
}

impl From<CheckHost> for RemoteCall {
    fn from(a: CheckHost) -> RemoteCall {
        RemoteCall::new(
            RemoteFn::CheckHost,
            vec![
                a.deploy_dir,
                number(a.blue_port),
                number(a.green_port),
                a.program,
                yes_no(a.need_curl),
                a.supervisor,
                a.app,
                yes_no(a.fix),
            ],
        )
    }
}

/// `checkproxy`: checks the proxy for `check --remote` and `setup` (which creates the state
/// directory and the upstream file, `fix`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckProxy {
    /// The state directory.
    pub state_dir: Word,
    /// The managed upstream file.
    pub upstream_file: Word,
    /// The upstream block's name.
    pub upstream_name: Word,
    /// Whether to use `sudo -n`.
    pub sudo: bool,
    /// The command that dumps nginx's configuration (`nginx -T`).
    pub dump_command: Word,
    /// The app's name.
    pub app: Word,
    /// Create what is missing (`setup`).
    pub fix: bool,
}

impl From<CheckProxy> for RemoteCall {
    fn from(a: CheckProxy) -> RemoteCall {
        RemoteCall::new(
            RemoteFn::CheckProxy,
            vec![
                a.state_dir,
                a.upstream_file,
                a.upstream_name,
                yes_no(a.sudo),
                a.dump_command,
                a.app,
                yes_no(a.fix),
            ],
        )
    }
}

/// `stopforeign`: stops the process bluegreen did not start that listens on a port (`takeover`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopForeign {
    /// The directory holding one directory per slot (whose instances it never stops).
    pub deploy_dir: Word,
    /// The blue slot's port.
    pub blue_port: u16,
    /// The green slot's port.
    pub green_port: u16,
    /// The port (unused when `pid` is given).
    pub port: u16,
    /// The signal that asks it to stop.
    pub signal: Word,
    /// How long it has before SIGKILL, in seconds.
    pub grace_secs: u64,
    /// The process to stop, rather than what listens on `port`.
    pub pid: Option<u32>,
    /// The port the proxy sends traffic to, which a process stopped by pid must not listen on.
    pub live_port: Option<u16>,
}

impl From<StopForeign> for RemoteCall {
    fn from(a: StopForeign) -> RemoteCall {
        let wait = a.grace_secs + PORT_FREE_WAIT_SECS;
        RemoteCall::new(
            RemoteFn::StopForeign,
            vec![
                a.deploy_dir,
                number(a.blue_port),
                number(a.green_port),
                number(a.port),
                a.signal,
                number(a.grace_secs),
                a.pid.map(number).unwrap_or_default(),
                a.live_port.map(number).unwrap_or_default(),
            ],
        )
        .waiting(wait)
    }
}

/// `hoststatus`: prints both slots' status on an app host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostStatus {
    /// The directory holding one directory per slot.
    pub deploy_dir: Word,
    /// The blue slot's port.
    pub blue_port: u16,
    /// The green slot's port.
    pub green_port: u16,
}

impl From<HostStatus> for RemoteCall {
    fn from(a: HostStatus) -> RemoteCall {
        RemoteCall::new(
            RemoteFn::HostStatus,
            vec![a.deploy_dir, number(a.blue_port), number(a.green_port)],
        )
    }
}

/// `proxystatus`: prints the slot the upstream file names, the state file and the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyStatus {
    /// The proxy's state directory.
    pub state_dir: Word,
    /// How the live slot is read.
    pub detect: Detect,
}

impl From<ProxyStatus> for RemoteCall {
    fn from(a: ProxyStatus) -> RemoteCall {
        let mut args = vec![a.state_dir];
        args.extend(a.detect.args());
        RemoteCall::new(RemoteFn::ProxyStatus, args)
    }
}

/// `breaklock`: removes the deploy lock whoever holds it, and says so in the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakLock {
    /// The proxy's state directory, which holds the lock.
    pub state_dir: Word,
    /// Who removes it.
    pub who: Word,
    /// The app.
    pub app: Word,
    /// The token of the lock as it was read: it is removed only if it still carries it (empty:
    /// whatever it carries).
    pub token: Word,
}

impl From<BreakLock> for RemoteCall {
    fn from(a: BreakLock) -> RemoteCall {
        RemoteCall::new(
            RemoteFn::BreakLock,
            vec![a.state_dir, a.who, a.app, a.token],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::word::RuntimeVar;

    /// Every argument as bash text.
    fn words(call: &RemoteCall) -> Vec<String> {
        call.args.iter().map(Word::to_bash).collect()
    }

    #[test]
    fn calls_follow_the_library_order() {
        let stop = RemoteCall::from(Stop {
            dir: Word::lit("/srv/a/").then_runtime(RuntimeVar::TargetSlot),
            port: Word::runtime(RuntimeVar::TargetPort),
            signal: Word::lit("TERM"),
            grace_secs: 30,
        });
        assert_eq!(stop.func, RemoteFn::Stop);
        assert_eq!(
            words(&stop),
            [
                "\"/srv/a/${BG_TARGET_SLOT}\"",
                "\"${BG_TARGET_PORT}\"",
                "\"TERM\"",
                "\"30\""
            ]
        );
        assert_eq!(stop.wait_secs, 30 + PORT_FREE_WAIT_SECS);

        let detect = Detect {
            upstream_file: Word::lit("/etc/nginx/up.conf"),
            sudo: true,
            blue_port: 8080,
            green_port: 8081,
            addresses: vec![Word::lit("10.0.0.1"), Word::lit("10.0.0.2")],
        };
        let status = RemoteCall::from(ProxyStatus {
            state_dir: Word::lit("/var/lib/bg"),
            detect: detect.clone(),
        });
        let detect = RemoteCall::from(detect);
        assert_eq!(
            words(&detect),
            [
                "\"/etc/nginx/up.conf\"",
                "\"yes\"",
                "\"8080\"",
                "\"8081\"",
                "\"10.0.0.1\"",
                "\"10.0.0.2\""
            ]
        );
        // proxystatus passes detect's arguments on after its own.
        assert_eq!(status.args[0], Word::lit("/var/lib/bg"));
        assert_eq!(status.args[1..], detect.args[..]);
    }

    #[test]
    fn revive_is_start_and_the_release() {
        let start = Start {
            dir: Word::lit("/srv/a/blue"),
            slot: Word::lit("blue"),
            port: Word::lit("8080"),
            host: Word::lit("10.0.0.1"),
            jar_name: Word::lit("a.jar"),
            signal: Word::lit("TERM"),
            grace_secs: 5,
            command: Word::lit("java -jar \"${BG_JAR}\""),
            live_port: Word::lit("8081"),
            supervisor: Word::lit("systemd"),
            app: Word::lit("a"),
            env: vec![("MODE".into(), Word::lit("prod"))],
        };
        let started = RemoteCall::from(start.clone());
        let revived = RemoteCall::from(Revive {
            start,
            release: Word::lit("abc"),
        });
        assert_eq!(revived.func, RemoteFn::Revive);
        // start's eleven, the release, then the environment's names and values.
        assert_eq!(started.args.len(), 13);
        assert_eq!(revived.args.len(), started.args.len() + 1);
        assert_eq!(revived.args[..11], started.args[..11]);
        assert_eq!(revived.args[11], Word::lit("abc"));
        assert_eq!(revived.args[12..], started.args[11..]);
        assert_eq!(started.args[9..11], [Word::lit("systemd"), Word::lit("a")]);
        assert_eq!(started.args[11..], [Word::lit("MODE"), Word::lit("prod")]);
        assert_eq!(revived.wait_secs, started.wait_secs);
        assert_eq!(started.wait_secs, 5 + PORT_FREE_WAIT_SECS);
    }

    #[test]
    fn an_empty_body_is_an_empty_argument() {
        let probe = |body| {
            RemoteCall::from(Probe {
                url: Word::lit("http://127.0.0.1:8080/health"),
                status: 200,
                body,
                timeout_secs: 2,
            })
        };
        let without = probe(None);
        assert_eq!(without.args[2], Word::lit(""));
        assert_eq!(without.wait_secs, 2);
        assert_eq!(probe(Some(Word::lit("UP"))).args[2], Word::lit("UP"));
    }
}

/// `hook`: runs a hook's command with `bash -c`, in a directory, for at most a while, with its
/// environment. Sent to a host like any call; on the runner, bash runs the library's `hook`
/// there with the environment in its own (see [`Hook::FIXED_ARGS`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// Where it runs (the home directory when this does not exist).
    pub dir: Word,
    /// How long it may take, in seconds; then SIGTERM, and SIGKILL [`HOOK_KILL_SECS`] later.
    pub timeout_secs: u64,
    /// The command, bash text.
    pub command: Word,
    /// Its environment, name and value.
    pub env: Vec<(String, Word)>,
}

/// The line `hook` prints last when the hook succeeded (not part of the hook's own output).
pub const HOOK_DONE: &str = "hook ok";

/// How long a hook has after its SIGTERM at its timeout, before SIGKILL.
pub const HOOK_KILL_SECS: u64 = 5;

impl Hook {
    /// The arguments before the environment's NAME VALUE pairs.
    pub const FIXED_ARGS: usize = 3;
}

impl From<Hook> for RemoteCall {
    fn from(a: Hook) -> RemoteCall {
        let wait = a.timeout_secs + HOOK_KILL_SECS;
        let mut args = vec![a.dir, number(a.timeout_secs), a.command];
        args.extend(Start::env_args(a.env));
        RemoteCall::new(RemoteFn::Hook, args).waiting(wait)
    }
}
