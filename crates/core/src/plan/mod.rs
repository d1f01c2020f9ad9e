//! The typed deploy plan: every step, on every host, computed before anything runs.
//!
//! The slot a deploy targets is only known once the live slot has been read from the proxy, so steps
//! refer to it symbolically through [`RuntimeVar`]s inside their [`Word`]s; each backend resolves
//! them when it runs.

use crate::config::{Config, HostKeyPolicy, ProbeFrom, Slack, Slots, StartPart};
use crate::remote::{RemoteCall, RemoteFn};
use crate::word::{RuntimeVar, Var, Word};
use serde::Serialize;
use std::fmt::{self, Write as _};
use std::time::Duration;

/// The id of the proxy host in a plan.
pub const PROXY_ID: &str = "proxy";

/// Fault injection for the crash tests: with this environment variable set to N, a runner kills
/// itself with SIGKILL (the rendered script: its whole process tree, as a dying Jenkins agent's is)
/// right before step N of the plan, numbered as [`Plan::steps`] numbers them.
pub const KILL_AT_STEP_ENV: &str = "BLUEGREEN_KILL_AT_STEP";

/// Slot selection, defined once: for each thing the upstream can name live (`blue`, `green`, or
/// `none` on a first deploy), the slot a deploy, a rollback or a retire targets (the other one; blue
/// first). `exec` applies it; the rendered script's `bg_select_slots` is generated from it.
pub const SLOT_CHOICES: [(&str, &str); 3] =
    [("blue", "green"), ("green", "blue"), ("none", "blue")];

/// The slot targeted when `live` is live (see [`SLOT_CHOICES`]); None for anything else.
pub fn target_slot(live: &str) -> Option<&'static str> {
    SLOT_CHOICES
        .iter()
        .find(|(l, _)| *l == live)
        .map(|(_, target)| *target)
}

/// How many times the check through the proxy after a switch is tried.
pub const CHECK_TRIES: u32 = 4;

/// Time between those tries, in milliseconds.
pub const CHECK_INTERVAL_MS: u64 = 250;

/// How long the remote `stop` waits for the slot's port to be free after the instance exited
/// (`bg_stop` in the remote library), on top of the stop's grace.
pub const PORT_FREE_WAIT_SECS: u64 = 10;

/// How long the remote `switch` may wait on purpose: for another switch on the same proxy to
/// finish (it holds the switch's `flock`), and for nginx to replace its workers after the reload.
pub const SWITCH_WAIT_SECS: u64 = 30;

/// What a plan does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Deploy the artifact to the idle slot and switch to it.
    Deploy,
    /// Put traffic back on the idle (previous) slot, restarting its kept release if it was stopped.
    Rollback,
    /// Stop the idle slot retained after a switch (the end of the rollback window).
    Retire,
}

impl Action {
    /// Lower-case name, as in the audit log.
    pub fn name(self) -> &'static str {
        match self {
            Action::Deploy => "deploy",
            Action::Rollback => "rollback",
            Action::Retire => "retire",
        }
    }
}

/// A whole deploy (or rollback, or retire).
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// What the plan does.
    pub action: Action,
    /// The app's name.
    pub app: String,
    /// Local artifact path or glob.
    pub artifact: Word,
    /// The artifact's name in a slot directory.
    pub jar_name: String,
    /// The nginx host.
    pub proxy: Host,
    /// The app hosts, in config order.
    pub servers: Vec<Host>,
    /// Slot ports.
    pub slots: Slots,
    /// How SSH connects.
    pub ssh: SshPlan,
    /// The phases, in order.
    pub phases: Vec<Phase>,
    /// How the running deploy keeps its lock: a renewal every `every_ms`, also during long steps
    /// (from a connection of its own, so no step's wait delays it).
    pub heartbeat: Heartbeat,
    /// Environment variables the plan needs at run time, once per field that uses each, in the
    /// order `Config::env_refs` lists them (a value is checked by the rule of each field using it).
    pub env: Vec<EnvRef>,
    /// Slack notifications, if configured.
    pub slack: Option<Slack>,
    /// Jenkins options for the rendered pipeline.
    pub jenkins: crate::config::Jenkins,
    /// The start command as written in the config.
    pub start_template: String,
    /// Remote directory holding one directory per slot.
    pub deploy_dir: String,
}

/// A host the plan talks to.
#[derive(Debug, Clone, Serialize)]
pub struct Host {
    /// `proxy`, `app1`, `app2`, ...
    pub id: String,
    /// SSH address.
    pub address: Word,
    /// Address nginx and the runner use to reach the app.
    pub app_address: Word,
    /// SSH user.
    pub user: Word,
    /// SSH port.
    pub port: u16,
}

/// How to connect and authenticate.
#[derive(Debug, Clone, Serialize)]
pub struct SshPlan {
    /// Host key policy.
    pub host_key_policy: HostKeyPolicy,
    /// known_hosts file.
    pub known_hosts: Word,
    /// Private key file, or None for ssh-agent.
    pub identity_file: Option<Word>,
    /// Jenkins credentials id of the key.
    pub credentials_id: String,
    /// Jenkins credentials id of a known_hosts secret file.
    pub known_hosts_credential: Option<String>,
    /// TCP connect timeout.
    pub connect_timeout_secs: u64,
    /// Timeout of one SSH operation.
    pub command_timeout_secs: u64,
}

/// The renewal of the deploy lock while a run holds it.
#[derive(Debug, Clone, Serialize)]
pub struct Heartbeat {
    /// Host id (the proxy).
    pub host: String,
    /// The renewal.
    pub call: RemoteCall,
    /// Time between renewals, in milliseconds.
    pub every_ms: u64,
}

/// An environment variable the plan refers to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvRef {
    /// Variable name.
    pub name: String,
    /// The config field that refers to it.
    pub field: String,
}

/// What a phase is for; one Jenkins stage each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseKind {
    /// Take the lock, read the live slot.
    Prepare,
    /// Copy the artifact to every host's idle slot.
    Upload,
    /// Start the new instances.
    Start,
    /// Wait until every new instance is healthy.
    Verify,
    /// One switch of the proxy.
    Switch,
    /// Jenkins' promotion gate: a person keeps the new version or rejects it (traffic goes back).
    Promote,
    /// Let the old slot finish in-flight requests.
    Drain,
    /// Stop (or retain) the old instances.
    Retire,
    /// Release the lock, notify.
    Finish,
}

impl PhaseKind {
    /// Lower-case name, used for script functions and `--phase`.
    pub fn name(self) -> &'static str {
        match self {
            PhaseKind::Prepare => "prepare",
            PhaseKind::Upload => "upload",
            PhaseKind::Start => "start",
            PhaseKind::Verify => "verify",
            PhaseKind::Switch => "switch",
            PhaseKind::Promote => "promote",
            PhaseKind::Drain => "drain",
            PhaseKind::Retire => "retire",
            PhaseKind::Finish => "finish",
        }
    }

    /// Title shown as a Jenkins stage name.
    pub fn title(self) -> &'static str {
        match self {
            PhaseKind::Prepare => "Prepare",
            PhaseKind::Upload => "Upload",
            PhaseKind::Start => "Start",
            PhaseKind::Verify => "Verify",
            PhaseKind::Switch => "Switch",
            PhaseKind::Promote => "Promote",
            PhaseKind::Drain => "Drain",
            PhaseKind::Retire => "Retire",
            PhaseKind::Finish => "Finish",
        }
    }
}

/// A group of steps; with `parallel`, its steps run on their hosts at once.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// What it is.
    pub kind: PhaseKind,
    /// Whether its steps run at once (one per host).
    pub parallel: bool,
    /// The steps.
    pub steps: Vec<Step>,
    /// What to run, best effort, when this phase fails.
    pub on_failure: Vec<Step>,
}

/// When a step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// Always.
    Always,
    /// Only when a slot was live before the deploy (not on a first deploy).
    LiveExists,
}

/// One step of the plan.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Take the deploy lock on the proxy.
    Lock(RemoteStep),
    /// Read the live slot from the proxy's upstream file; sets the runtime variables.
    Detect(RemoteStep),
    /// Finish what a run that died between its intent and its record left (state file, nginx).
    Reconcile(RemoteStep),
    /// Record on the proxy, ahead of the switch, what this run is about to make live.
    Intent(RemoteStep),
    /// Upload the artifact into the target slot's directory.
    Copy(CopyStep),
    /// Start the target slot's instance.
    Start(RemoteStep),
    /// Poll the new instance until healthy or the deadline passes.
    Health(HealthStep),
    /// Point the proxy at the target slot on every host.
    Switch(SwitchStep),
    /// Write the state file on the proxy.
    Record(RemoteStep),
    /// Read the release live before the last switch (rollback); sets the release runtime variable.
    Inspect(RemoteStep),
    /// Append a line to the audit log on the proxy.
    Audit(RemoteStep),
    /// Wait before stopping the old slot.
    Drain(DrainStep),
    /// Stop an instance.
    Stop(RemoteStep),
    /// Keep the old slot running for the rollback window.
    Retain(RetainStep),
    /// Release the deploy lock.
    Unlock(RemoteStep),
    /// Send a notification.
    Notify(NotifyStep),
}

/// A step that is one remote call.
#[derive(Debug, Clone, Serialize)]
pub struct RemoteStep {
    /// Host id.
    pub host: String,
    /// The call.
    pub call: RemoteCall,
    /// When it runs.
    pub when: When,
}

/// Upload of the artifact.
#[derive(Debug, Clone, Serialize)]
pub struct CopyStep {
    /// Host id.
    pub host: String,
    /// The target slot's directory.
    pub dir: Word,
    /// Temporary file name in that directory.
    pub tmp_name: String,
    /// Creates the directory.
    pub prepare: RemoteCall,
    /// Checks the sha256 and renames the upload into place.
    pub install: RemoteCall,
}

/// Health polling of one new instance.
#[derive(Debug, Clone, Serialize)]
pub struct HealthStep {
    /// Host id.
    pub host: String,
    /// The URL probed.
    pub url: Word,
    /// Expected status.
    pub status: u16,
    /// Text the body must contain.
    pub body: Option<String>,
    /// Time between probes, in milliseconds.
    pub interval_ms: u64,
    /// Timeout of one probe, in milliseconds.
    pub timeout_ms: u64,
    /// Overall deadline, in milliseconds.
    pub deadline_ms: u64,
    /// Consecutive good probes needed.
    pub successes: u32,
    /// Where probes come from.
    pub from: ProbeFrom,
    /// The probe as a remote call, for `from: host`.
    pub probe: RemoteCall,
    /// Whether the new instance still runs: asked after a failed probe, so that an instance that
    /// died is reported at once, with its exit status and log, rather than at the deadline.
    pub alive: RemoteCall,
}

/// The switch of the proxy.
#[derive(Debug, Clone, Serialize)]
pub struct SwitchStep {
    /// Host id (the proxy).
    pub host: String,
    /// Rewrites the upstream file, tests, reloads.
    pub call: RemoteCall,
    /// Waits for nginx workers from before the reload to exit.
    pub settle: RemoteCall,
    /// A URL fetched through the proxy to confirm the switch (serialized with its credentials
    /// hidden, see [`crate::redact_url`]).
    #[serde(serialize_with = "crate::redact::serialize_url")]
    pub check_url: Option<Word>,
    /// Status expected from `check_url`.
    pub check_status: u16,
    /// How many times `check_url` is tried before the switch counts as failed.
    pub check_tries: u32,
    /// Time between tries, in milliseconds: short, since while the check fails traffic may be
    /// failing too, and the switch back is what ends that.
    pub check_interval_ms: u64,
    /// Timeout of one try, in milliseconds (`health.timeout`).
    pub check_timeout_ms: u64,
    /// When it runs.
    pub when: When,
}

/// A pause.
#[derive(Debug, Clone, Serialize)]
pub struct DrainStep {
    /// How long, in milliseconds.
    pub millis: u64,
}

/// The old slot kept for the rollback window.
#[derive(Debug, Clone, Serialize)]
pub struct RetainStep {
    /// Host id.
    pub host: String,
    /// For how long, in seconds.
    pub seconds: u64,
}

/// A notification.
#[derive(Debug, Clone, Serialize)]
pub struct NotifyStep {
    /// Slack channel.
    pub channel: String,
    /// Environment variable with the webhook URL.
    pub webhook_env: String,
}

impl Step {
    /// The step as one remote call, for the kinds that are exactly that.
    pub fn remote(&self) -> Option<&RemoteStep> {
        match self {
            Step::Lock(s)
            | Step::Detect(s)
            | Step::Reconcile(s)
            | Step::Intent(s)
            | Step::Start(s)
            | Step::Record(s)
            | Step::Inspect(s)
            | Step::Audit(s)
            | Step::Stop(s)
            | Step::Unlock(s) => Some(s),
            _ => None,
        }
    }

    /// The host the step runs on, if any.
    pub fn host(&self) -> Option<&str> {
        if let Some(s) = self.remote() {
            return Some(&s.host);
        }
        match self {
            Step::Copy(s) => Some(&s.host),
            Step::Health(s) => Some(&s.host),
            Step::Switch(s) => Some(&s.host),
            Step::Retain(s) => Some(&s.host),
            _ => None,
        }
    }

    /// A short name of the step's kind.
    pub fn name(&self) -> &'static str {
        match self {
            Step::Lock(_) => "lock",
            Step::Detect(_) => "detect",
            Step::Reconcile(_) => "reconcile",
            Step::Intent(_) => "intent",
            Step::Copy(_) => "copy",
            Step::Start(_) => "start",
            Step::Health(_) => "health",
            Step::Switch(_) => "switch",
            Step::Record(_) => "record",
            Step::Inspect(_) => "inspect",
            Step::Audit(_) => "audit",
            Step::Drain(_) => "drain",
            Step::Stop(_) => "stop",
            Step::Retain(_) => "retain",
            Step::Unlock(_) => "unlock",
            Step::Notify(_) => "notify",
        }
    }
}

fn secs_ceil(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Paths containing `~/` refer to the runner's home directory.
fn home_path(w: &Word) -> Word {
    match w.0.first() {
        Some(crate::word::Part::Lit(s)) if s.starts_with("~/") => {
            let mut out = Word(vec![crate::word::Part::Var(Var::Env("HOME".into()))]);
            out.push_lit(&s[1..]);
            for p in &w.0[1..] {
                out.0.push(p.clone());
            }
            out
        }
        _ => w.clone(),
    }
}

impl Plan {
    /// Computes the plan for a validated config.
    pub fn new(config: &Config) -> Plan {
        let c = config;
        let proxy = Host {
            id: PROXY_ID.into(),
            address: c.proxy.host.clone(),
            app_address: c.proxy.host.clone(),
            user: c.proxy.user.clone(),
            port: c.proxy.port,
        };
        let servers: Vec<Host> = c
            .servers
            .iter()
            .enumerate()
            .map(|(i, s)| Host {
                id: format!("app{}", i + 1),
                address: s.host.clone(),
                app_address: s.address.clone(),
                user: s.user.clone(),
                port: s.port,
            })
            .collect();
        let jar_name = format!("{}.jar", c.app);
        let tmp_name = format!(".{jar_name}.upload");
        let state_dir = Word::lit(&c.proxy.state_dir);
        let deployer = Word::runtime(RuntimeVar::Deployer);
        let slot_dir =
            |slot: RuntimeVar| Word::lit(format!("{}/", c.deploy_dir)).then_runtime(slot);
        let target_dir = slot_dir(RuntimeVar::TargetSlot);
        let live_dir = slot_dir(RuntimeVar::LiveSlot);
        let signal = Word::lit(&c.stop.signal);
        let grace = Word::lit(secs_ceil(c.stop.grace).to_string());
        let sudo = Word::lit(if c.proxy.sudo { "yes" } else { "no" });
        let stop_wait = secs_ceil(c.stop.grace) + PORT_FREE_WAIT_SECS;

        let token = Word::runtime(RuntimeVar::RunToken);
        let lease = Word::lit(secs_ceil(c.lock.stale_after).to_string());
        let lock = Step::Lock(RemoteStep {
            host: PROXY_ID.into(),
            call: RemoteCall::new(
                RemoteFn::Lock,
                vec![
                    state_dir.clone(),
                    Word::lit(&c.app),
                    deployer.clone(),
                    token.clone(),
                    lease.clone(),
                    Word::lit(format!("deploy of {}", c.app)),
                ],
            ),
            when: When::Always,
        });
        let unlock = Step::Unlock(RemoteStep {
            host: PROXY_ID.into(),
            call: RemoteCall::new(RemoteFn::Unlock, vec![state_dir.clone(), token.clone()]),
            when: When::Always,
        });
        let heartbeat = Heartbeat {
            host: PROXY_ID.into(),
            call: RemoteCall::new(
                RemoteFn::Beat,
                vec![state_dir.clone(), token.clone(), lease],
            ),
            every_ms: millis(c.lock.stale_after) / 4,
        };
        let app_addresses: Vec<Word> = servers.iter().map(|h| h.app_address.clone()).collect();
        let nginx_words = [
            sudo.clone(),
            Word::lit(c.proxy.test_command.join(" ")),
            Word::lit(c.proxy.reload_command.join(" ")),
        ];
        let reconcile = Step::Reconcile(RemoteStep {
            host: PROXY_ID.into(),
            call: RemoteCall::new(
                RemoteFn::Reconcile,
                [
                    state_dir.clone(),
                    Word::lit(&c.app),
                    Word::runtime(RuntimeVar::LiveSlot),
                ]
                .into_iter()
                .chain(nginx_words.iter().cloned())
                .collect(),
            )
            .waiting(SWITCH_WAIT_SECS),
            when: When::Always,
        });
        let detect = Step::Detect(RemoteStep {
            host: PROXY_ID.into(),
            call: RemoteCall::new(
                RemoteFn::Detect,
                [
                    Word::lit(&c.proxy.upstream_file),
                    sudo.clone(),
                    Word::lit(c.slots.blue.to_string()),
                    Word::lit(c.slots.green.to_string()),
                ]
                .into_iter()
                .chain(app_addresses.iter().cloned())
                .collect(),
            ),
            when: When::Always,
        });

        let stop_on = |h: &Host, dir: &Word, port: RuntimeVar, when: When| {
            Step::Stop(RemoteStep {
                host: h.id.clone(),
                call: RemoteCall::new(
                    RemoteFn::Stop,
                    vec![
                        dir.clone(),
                        Word::runtime(port),
                        signal.clone(),
                        grace.clone(),
                    ],
                )
                .waiting(stop_wait),
                when,
            })
        };
        let stop_new: Vec<Step> = servers
            .iter()
            .map(|h| stop_on(h, &target_dir, RuntimeVar::TargetPort, When::Always))
            .collect();

        let copies = servers
            .iter()
            .map(|h| {
                Step::Copy(CopyStep {
                    host: h.id.clone(),
                    dir: target_dir.clone(),
                    tmp_name: tmp_name.clone(),
                    prepare: RemoteCall::new(RemoteFn::Prepare, vec![target_dir.clone()]),
                    install: RemoteCall::new(
                        RemoteFn::Install,
                        vec![
                            target_dir.clone(),
                            Word::lit(&tmp_name),
                            Word::lit(&jar_name),
                            Word::runtime(RuntimeVar::Release),
                        ],
                    ),
                })
            })
            .collect();

        let command = start_command(&c.start);
        let starts = servers
            .iter()
            .map(|h| {
                Step::Start(RemoteStep {
                    host: h.id.clone(),
                    call: RemoteCall::new(
                        RemoteFn::Start,
                        vec![
                            target_dir.clone(),
                            Word::runtime(RuntimeVar::TargetSlot),
                            Word::runtime(RuntimeVar::TargetPort),
                            h.app_address.clone(),
                            Word::lit(&jar_name),
                            signal.clone(),
                            grace.clone(),
                            Word::lit(&command),
                            Word::runtime(RuntimeVar::LivePort),
                        ],
                    )
                    .waiting(stop_wait),
                    when: When::Always,
                })
            })
            .collect();

        let hc = &c.health;
        let healths = servers
            .iter()
            .map(|h| {
                let url_from = |addr: &Word| {
                    Word::lit("http://")
                        .then(addr)
                        .then_lit(":")
                        .then_runtime(RuntimeVar::TargetPort)
                        .then_lit(&hc.path)
                };
                Step::Health(HealthStep {
                    host: h.id.clone(),
                    url: url_from(&h.app_address),
                    status: hc.status,
                    body: hc.body.clone(),
                    interval_ms: millis(hc.interval),
                    timeout_ms: millis(hc.timeout),
                    deadline_ms: millis(hc.deadline),
                    successes: hc.successes,
                    from: hc.from,
                    probe: RemoteCall::new(
                        RemoteFn::Probe,
                        vec![
                            url_from(&Word::lit("127.0.0.1")),
                            Word::lit(hc.status.to_string()),
                            Word::lit(hc.body.clone().unwrap_or_default()),
                            Word::lit(secs_ceil(hc.timeout).to_string()),
                        ],
                    )
                    .waiting(secs_ceil(hc.timeout)),
                    alive: RemoteCall::new(
                        RemoteFn::Alive,
                        vec![target_dir.clone(), Word::runtime(RuntimeVar::TargetSlot)],
                    ),
                })
            })
            .collect();

        let switch_call = |port: RuntimeVar| {
            RemoteCall::new(
                RemoteFn::Switch,
                [
                    state_dir.clone(),
                    Word::lit(&c.proxy.upstream_file),
                    sudo.clone(),
                    Word::lit(c.proxy.test_command.join(" ")),
                    Word::lit(c.proxy.reload_command.join(" ")),
                    Word::lit(c.slots.blue.to_string()),
                    Word::lit(c.slots.green.to_string()),
                    Word::runtime(port),
                    Word::lit(format!("# managed by bluegreen for {}", c.app)),
                ]
                .into_iter()
                .chain(app_addresses.iter().cloned())
                .collect(),
            )
            .waiting(SWITCH_WAIT_SECS)
        };
        let settle = RemoteCall::new(
            RemoteFn::Settle,
            vec![Word::lit(secs_ceil(c.stop.grace).to_string())],
        )
        .waiting(secs_ceil(c.stop.grace));
        let switch = Step::Switch(SwitchStep {
            host: PROXY_ID.into(),
            call: switch_call(RuntimeVar::TargetPort),
            settle: settle.clone(),
            check_url: c.proxy.check_url.clone(),
            check_status: hc.status,
            check_tries: CHECK_TRIES,
            check_interval_ms: CHECK_INTERVAL_MS,
            check_timeout_ms: millis(hc.timeout),
            when: When::Always,
        });
        let switch_back = Step::Switch(SwitchStep {
            host: PROXY_ID.into(),
            call: switch_call(RuntimeVar::LivePort),
            settle,
            check_url: None,
            check_status: hc.status,
            check_tries: CHECK_TRIES,
            check_interval_ms: CHECK_INTERVAL_MS,
            check_timeout_ms: millis(hc.timeout),
            when: When::LiveExists,
        });
        let intent = Step::Intent(RemoteStep {
            host: PROXY_ID.into(),
            call: RemoteCall::new(
                RemoteFn::Intent,
                vec![
                    state_dir.clone(),
                    token.clone(),
                    Word::runtime(RuntimeVar::TargetSlot),
                    Word::runtime(RuntimeVar::LiveSlot),
                    Word::runtime(RuntimeVar::Release),
                    deployer.clone(),
                ],
            ),
            when: When::Always,
        });
        let record = Step::Record(RemoteStep {
            host: PROXY_ID.into(),
            call: RemoteCall::new(
                RemoteFn::Record,
                vec![
                    state_dir.clone(),
                    Word::lit(&c.app),
                    Word::runtime(RuntimeVar::TargetSlot),
                    Word::runtime(RuntimeVar::LiveSlot),
                    Word::runtime(RuntimeVar::Release),
                    deployer.clone(),
                ],
            ),
            when: When::Always,
        });

        let retire: Vec<Step> = if c.retain.is_zero() {
            servers
                .iter()
                .map(|h| stop_on(h, &live_dir, RuntimeVar::LivePort, When::LiveExists))
                .collect()
        } else {
            servers
                .iter()
                .map(|h| {
                    Step::Retain(RetainStep {
                        host: h.id.clone(),
                        seconds: secs_ceil(c.retain),
                    })
                })
                .collect()
        };

        let audit = |outcome: &str| {
            Step::Audit(RemoteStep {
                host: PROXY_ID.into(),
                call: RemoteCall::new(
                    RemoteFn::Audit,
                    vec![
                        state_dir.clone(),
                        Word::lit(Action::Deploy.name()),
                        Word::lit(&c.app),
                        Word::lit(outcome),
                        Word::runtime(RuntimeVar::TargetSlot),
                        Word::runtime(RuntimeVar::LiveSlot),
                        Word::runtime(RuntimeVar::Release),
                        deployer.clone(),
                    ],
                ),
                when: When::Always,
            })
        };
        let mut finish = vec![audit("success"), unlock.clone()];
        if let Some(s) = &c.slack {
            finish.push(Step::Notify(NotifyStep {
                channel: s.channel.clone(),
                webhook_env: s.webhook_env.clone(),
            }));
        }

        let before_switch: Vec<Step> = stop_new
            .iter()
            .cloned()
            .chain([audit("failed"), unlock.clone()])
            .collect();
        // A failed switch puts the previous upstream back (when there was one) before the new
        // instances are stopped, so traffic never points at a stopped slot.
        let at_switch: Vec<Step> = std::iter::once(switch_back)
            .chain(before_switch.iter().cloned())
            .collect();

        let after_switch = vec![audit("switched, then failed"), unlock.clone()];
        let mut phases = vec![
            Phase {
                kind: PhaseKind::Prepare,
                parallel: false,
                steps: vec![lock, detect, reconcile],
                on_failure: vec![unlock.clone()],
            },
            Phase {
                kind: PhaseKind::Upload,
                parallel: true,
                steps: copies,
                on_failure: before_switch.clone(),
            },
            Phase {
                kind: PhaseKind::Start,
                parallel: true,
                steps: starts,
                on_failure: before_switch.clone(),
            },
            Phase {
                kind: PhaseKind::Verify,
                parallel: true,
                steps: healths,
                on_failure: before_switch.clone(),
            },
            Phase {
                kind: PhaseKind::Switch,
                parallel: false,
                steps: vec![intent, switch],
                on_failure: at_switch,
            },
            Phase {
                kind: PhaseKind::Drain,
                parallel: false,
                // The state file is written once the switch is final: after the post-switch check and,
                // in Jenkins, after the promotion gate, so a switch undone never reaches it.
                steps: vec![
                    record,
                    Step::Drain(DrainStep {
                        millis: millis(c.drain),
                    }),
                ],
                on_failure: after_switch.clone(),
            },
            Phase {
                kind: PhaseKind::Retire,
                parallel: true,
                steps: retire,
                on_failure: after_switch,
            },
            Phase {
                kind: PhaseKind::Finish,
                parallel: false,
                steps: finish,
                // Whatever else failed (the audit line: a full disk), the lock is released.
                on_failure: vec![unlock.clone()],
            },
        ];

        if c.jenkins.gate.is_some() {
            // The gate itself is Jenkins' `input`: the phase has no steps, only what a rejection
            // undoes (the same as a failed switch).
            let at = phases
                .iter()
                .position(|p| p.kind == PhaseKind::Switch)
                .map_or(phases.len(), |i| i + 1);
            let undo = phases
                .iter()
                .find(|p| p.kind == PhaseKind::Switch)
                .map(|p| p.on_failure.clone())
                .unwrap_or_default();
            phases.insert(
                at,
                Phase {
                    kind: PhaseKind::Promote,
                    parallel: false,
                    steps: vec![],
                    on_failure: undo,
                },
            );
        }

        let known_hosts = home_path(&c.ssh.known_hosts);
        let identity_file = c.ssh.identity_file.as_ref().map(home_path);
        // `~/` became `${HOME}`: the runner's home, which exec must look up like any variable.
        let mut refs = c.env_refs();
        refs.push(("ssh.known_hosts".into(), &known_hosts));
        if let Some(w) = &identity_file {
            refs.push(("ssh.identity_file".into(), w));
        }
        let mut env: Vec<EnvRef> = Vec::new();
        for (field, word) in refs {
            for name in word.env_vars() {
                if !env.iter().any(|e| e.name == name && e.field == field) {
                    env.push(EnvRef {
                        name: name.to_string(),
                        field: field.clone(),
                    });
                }
            }
        }

        Plan {
            action: Action::Deploy,
            app: c.app.clone(),
            artifact: c.artifact.clone(),
            jar_name,
            proxy,
            servers,
            slots: c.slots,
            ssh: SshPlan {
                host_key_policy: c.ssh.host_key_policy,
                known_hosts,
                identity_file,
                credentials_id: c.ssh.credentials_id.clone(),
                known_hosts_credential: c.ssh.known_hosts_credential.clone(),
                connect_timeout_secs: secs_ceil(c.ssh.connect_timeout),
                command_timeout_secs: secs_ceil(c.ssh.command_timeout),
            },
            phases,
            heartbeat,
            env,
            slack: c.slack.clone(),
            jenkins: c.jenkins.clone(),
            start_template: c.start_template.clone(),
            deploy_dir: c.deploy_dir.clone(),
        }
    }

    /// The plan of `bluegreen rollback`: traffic back on the idle (previous) slot.
    ///
    /// It is the deploy plan without the upload: the target slot's instance is kept if it is still
    /// running (retained) or restarted from the release kept in its directory, health-checked, and
    /// switched to; the slot rolled back from is then retired like an old slot after a deploy.
    pub fn rollback(config: &Config) -> Plan {
        Plan::new(config).to_rollback()
    }

    /// The plan of `bluegreen retire`: stop the idle slot kept after a switch.
    pub fn retire(config: &Config) -> Plan {
        Plan::new(config).to_retire()
    }

    /// The rollback plan derived from this deploy plan (see [`Plan::rollback`]).
    pub fn to_rollback(&self) -> Plan {
        let mut plan = self.clone();
        plan.action = Action::Rollback;
        plan.phases
            .retain(|p| !matches!(p.kind, PhaseKind::Upload | PhaseKind::Promote));
        let state_dir = self
            .phases
            .first()
            .and_then(|p| p.steps.first())
            .and_then(|s| match s {
                Step::Lock(l) => l.call.args.first().cloned(),
                _ => None,
            })
            .unwrap_or_default();
        for phase in &mut plan.phases {
            if phase.kind == PhaseKind::Prepare {
                phase.steps.push(Step::Inspect(RemoteStep {
                    host: PROXY_ID.into(),
                    call: RemoteCall::new(RemoteFn::Release, vec![state_dir.clone()]),
                    when: When::Always,
                }));
            }
            for step in phase.steps.iter_mut().chain(phase.on_failure.iter_mut()) {
                match step {
                    Step::Start(s) => {
                        s.call.func = RemoteFn::Revive;
                        s.call.args.push(Word::runtime(RuntimeVar::Release));
                    }
                    Step::Audit(s) => s.call.args[1] = Word::lit(Action::Rollback.name()),
                    Step::Lock(s) => {
                        set_lock_message(&mut s.call, format!("rollback of {}", self.app))
                    }
                    _ => {}
                }
            }
        }
        plan
    }

    /// The retire plan derived from this deploy plan (see [`Plan::retire`]).
    pub fn to_retire(&self) -> Plan {
        let deploy = self;
        let mut plan = deploy.clone();
        plan.action = Action::Retire;
        let find = |kind: PhaseKind| deploy.phases.iter().find(|p| p.kind == kind).cloned();
        let (Some(prepare), Some(upload), Some(finish)) = (
            find(PhaseKind::Prepare),
            find(PhaseKind::Upload),
            find(PhaseKind::Finish),
        ) else {
            return plan;
        };
        // Stopping the idle slot on every host is what a failed upload undoes.
        let stops: Vec<Step> = upload
            .on_failure
            .iter()
            .filter(|s| matches!(s, Step::Stop(_)))
            .cloned()
            .collect();
        let mut finish = finish;
        for s in &mut finish.steps {
            if let Step::Audit(a) = s {
                a.call.args[1] = Word::lit(Action::Retire.name());
            }
        }
        let mut prepare = prepare;
        for s in &mut prepare.steps {
            if let Step::Lock(l) = s {
                set_lock_message(&mut l.call, format!("retire of {}", self.app));
            }
        }
        finish.steps.retain(|s| !matches!(s, Step::Notify(_)));
        plan.phases = vec![
            prepare.clone(),
            Phase {
                kind: PhaseKind::Retire,
                parallel: true,
                steps: stops,
                on_failure: prepare.on_failure.clone(),
            },
            finish,
        ];
        plan
    }

    /// Every step of every phase, in order, with its number (the step boundaries a runner can die
    /// at: see [`KILL_AT_STEP_ENV`]). Steps of a parallel phase count one by one, in config order.
    pub fn steps(&self) -> impl Iterator<Item = (usize, &Phase, &Step)> {
        self.phases
            .iter()
            .flat_map(|p| p.steps.iter().map(move |s| (p, s)))
            .enumerate()
            .map(|(i, (p, s))| (i, p, s))
    }

    /// The number of `step` in [`Plan::steps`] (the same step, not an equal one).
    pub fn step_number(&self, step: &Step) -> Option<usize> {
        self.steps()
            .find(|(_, _, s)| std::ptr::eq(*s, step))
            .map(|(i, _, _)| i)
    }

    /// Looks a host up by id.
    pub fn host(&self, id: &str) -> Option<&Host> {
        if id == PROXY_ID {
            Some(&self.proxy)
        } else {
            self.servers.iter().find(|h| h.id == id)
        }
    }

    /// The plan as JSON.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self)
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
        s.push('\n');
        s
    }
}

/// The lock's message is its last argument.
fn set_lock_message(call: &mut RemoteCall, message: String) {
    if let Some(m) = call.args.last_mut() {
        *m = Word::lit(message);
    }
}

/// The start command as bash text: the user's text as written, each placeholder replaced by a quoted
/// reference to the variable the remote `start` function exports.
pub fn start_command(parts: &[StartPart]) -> String {
    let mut s = String::new();
    for p in parts {
        match p {
            StartPart::Text(t) => s.push_str(t),
            StartPart::Placeholder(name) => {
                let _ = write!(s, "\"${{BG_{}}}\"", name.to_ascii_uppercase());
            }
        }
    }
    s
}

impl fmt::Display for Plan {
    /// The plan for a person: phases, steps and hosts, with the remote calls.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} plan for `{}`", self.action.name(), self.app)?;
        writeln!(f, "  artifact: {}", self.artifact)?;
        writeln!(
            f,
            "  proxy:    {}@{}:{}",
            self.proxy.user, self.proxy.address, self.proxy.port
        )?;
        for h in &self.servers {
            writeln!(
                f,
                "  {:<9} {}@{}:{}",
                format!("{}:", h.id),
                h.user,
                h.address,
                h.port
            )?;
        }
        writeln!(
            f,
            "  slots:    blue {}, green {} (target: the idle one, read from the proxy at run time)",
            self.slots.blue, self.slots.green
        )?;
        if !self.env.is_empty() {
            let mut names: Vec<&str> = Vec::new();
            for e in &self.env {
                if !names.contains(&e.name.as_str()) {
                    names.push(&e.name);
                }
            }
            writeln!(f, "  needs:    {}", names.join(", "))?;
        }
        for (i, phase) in self.phases.iter().enumerate() {
            writeln!(
                f,
                "\n{}. {}{}",
                i + 1,
                phase.kind.name(),
                if phase.parallel && phase.steps.len() > 1 {
                    " (hosts in parallel)"
                } else {
                    ""
                }
            )?;
            for step in &phase.steps {
                writeln!(f, "   - {}", describe(step))?;
            }
            if !phase.on_failure.is_empty() {
                let names: Vec<String> = phase
                    .on_failure
                    .iter()
                    .map(|s| match s.host() {
                        Some(h) => format!("{} {h}", s.name()),
                        None => s.name().to_string(),
                    })
                    .collect();
                writeln!(f, "   on failure: {}", names.join(", "))?;
            }
        }
        Ok(())
    }
}

/// One line describing a step.
pub fn describe(step: &Step) -> String {
    match step {
        Step::Lock(s)
        | Step::Detect(s)
        | Step::Reconcile(s)
        | Step::Intent(s)
        | Step::Record(s)
        | Step::Inspect(s)
        | Step::Audit(s)
        | Step::Unlock(s) => {
            format!("{} on {}: {}", step.name(), s.host, s.call.display())
        }
        Step::Start(s) => format!("start on {}: {}", s.host, s.call.display()),
        Step::Stop(s) => format!(
            "stop on {}{}: {}",
            s.host,
            if s.when == When::LiveExists {
                " (if a slot was live)"
            } else {
                ""
            },
            s.call.display()
        ),
        Step::Copy(s) => format!(
            "copy to {}: upload to {}/{}, then {}",
            s.host,
            s.dir,
            s.tmp_name,
            s.install.display()
        ),
        Step::Health(s) => format!(
            "health of {}: GET {} until {}{} x{}, every {}ms, timeout {}ms, deadline {}ms, from {}",
            s.host,
            s.url,
            s.status,
            s.body
                .as_ref()
                .map(|b| format!(" with body containing {b:?}"))
                .unwrap_or_default(),
            s.successes,
            s.interval_ms,
            s.timeout_ms,
            s.deadline_ms,
            match s.from {
                ProbeFrom::Runner => "the runner",
                ProbeFrom::Host => "the host",
            }
        ),
        Step::Switch(s) => format!(
            "switch on {}: {}; then {}{}",
            s.host,
            s.call.display(),
            s.settle.display(),
            s.check_url
                .as_ref()
                .map(|u| format!(
                    "; then GET {} expecting {}",
                    crate::redact_url(&u.to_string()),
                    s.check_status
                ))
                .unwrap_or_default()
        ),
        Step::Drain(d) => format!("drain: wait {}ms", d.millis),
        Step::Retain(r) => format!(
            "retain on {}: keep the old slot running for {}s (rollback window)",
            r.host, r.seconds
        ),
        Step::Notify(n) => format!(
            "notify Slack {} (webhook from ${})",
            n.channel, n.webhook_env
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(name: &str) -> Plan {
        let path = format!("{}/../../examples/{name}", env!("CARGO_MANIFEST_DIR"));
        Plan::new(&Config::load(std::path::Path::new(&path)).unwrap())
    }

    #[test]
    fn phases_are_ordered_and_switch_once() {
        let plan = example("sokdak.yaml");
        let kinds: Vec<&str> = plan.phases.iter().map(|p| p.kind.name()).collect();
        assert_eq!(
            kinds,
            ["prepare", "upload", "start", "verify", "switch", "drain", "retire", "finish"]
        );
        let switches = plan
            .phases
            .iter()
            .flat_map(|p| &p.steps)
            .filter(|s| matches!(s, Step::Switch(_)))
            .count();
        assert_eq!(switches, 1);
        // Every host is healthy before the one switch.
        let verify = &plan.phases[3];
        assert_eq!(verify.steps.len(), 2);
        assert!(verify.parallel);
    }

    #[test]
    fn failure_before_switch_stops_new_instances_and_leaves_proxy() {
        let plan = example("sokdak.yaml");
        for phase in &plan.phases[1..4] {
            let names: Vec<String> = phase
                .on_failure
                .iter()
                .map(|s| format!("{} {}", s.name(), s.host().unwrap_or("-")))
                .collect();
            assert_eq!(
                names,
                ["stop app1", "stop app2", "audit proxy", "unlock proxy"]
            );
            for s in &phase.on_failure {
                if let Step::Stop(stop) = s {
                    assert_eq!(
                        stop.call.args[0].to_string(),
                        "/home/ubuntu/sokdak/${BG_TARGET_SLOT}"
                    );
                }
            }
        }
    }

    #[test]
    fn switch_names_the_app_hosts_and_the_target_port() {
        let plan = example("sokdak.yaml");
        let Step::Switch(sw) = &plan.phases[4].steps[1] else {
            panic!("switch expected")
        };
        let args: Vec<String> = sw.call.args.iter().map(Word::to_string).collect();
        assert_eq!(
            args,
            [
                "/var/lib/bluegreen/sokdak",
                "/etc/nginx/bluegreen/sokdak-upstream.conf",
                "yes",
                "nginx -t",
                "nginx -s reload",
                "8080",
                "8081",
                "${BG_TARGET_PORT}",
                "# managed by bluegreen for sokdak",
                "${WAS_1_PRIVATE_IP}",
                "${WAS_2_PRIVATE_IP}",
            ]
        );
        let refs: Vec<(&str, &str)> = plan
            .env
            .iter()
            .map(|e| (e.name.as_str(), e.field.as_str()))
            .collect();
        assert_eq!(
            refs,
            [
                ("NGINX_PRIVATE_IP", "proxy.host"),
                ("NGINX_PRIVATE_IP", "proxy.check_url"),
                ("WAS_1_PRIVATE_IP", "servers[0].host"),
                ("WAS_1_PRIVATE_IP", "servers[0].address"),
                ("WAS_2_PRIVATE_IP", "servers[1].host"),
                ("WAS_2_PRIVATE_IP", "servers[1].address"),
                ("HOME", "ssh.known_hosts"),
                ("HOME", "ssh.identity_file"),
            ]
        );
    }

    #[test]
    fn retain_replaces_stop() {
        let plan = example("single-host.yaml");
        let retire = plan
            .phases
            .iter()
            .find(|p| p.kind == PhaseKind::Retire)
            .unwrap();
        assert!(matches!(
            retire.steps[0],
            Step::Retain(RetainStep { seconds: 600, .. })
        ));
    }

    #[test]
    fn rollback_revives_the_previous_slot_without_uploading() {
        let plan = example("sokdak.yaml").to_rollback();
        assert_eq!(plan.action, Action::Rollback);
        let kinds: Vec<&str> = plan.phases.iter().map(|p| p.kind.name()).collect();
        assert_eq!(
            kinds,
            ["prepare", "start", "verify", "switch", "drain", "retire", "finish"]
        );
        let names: Vec<&str> = plan.phases[0].steps.iter().map(Step::name).collect();
        assert_eq!(names, ["lock", "detect", "reconcile", "inspect"]);
        for s in &plan.phases[1].steps {
            let Step::Start(s) = s else {
                panic!("start expected")
            };
            assert_eq!(s.call.func, RemoteFn::Revive);
        }
        let audits = plan
            .phases
            .iter()
            .flat_map(|p| p.steps.iter().chain(&p.on_failure))
            .filter_map(|s| match s {
                Step::Audit(a) => Some(a.call.args[1].to_string()),
                _ => None,
            })
            .collect::<Vec<_>>();
        assert!(
            !audits.is_empty() && audits.iter().all(|a| a == "rollback"),
            "{audits:?}"
        );
    }

    #[test]
    fn retire_stops_the_idle_slot_only() {
        let plan = example("sokdak.yaml").to_retire();
        let kinds: Vec<&str> = plan.phases.iter().map(|p| p.kind.name()).collect();
        assert_eq!(kinds, ["prepare", "retire", "finish"]);
        for s in &plan.phases[1].steps {
            let Step::Stop(s) = s else {
                panic!("stop expected")
            };
            assert_eq!(
                s.call.args[0].to_string(),
                "/home/ubuntu/sokdak/${BG_TARGET_SLOT}"
            );
            assert_eq!(s.when, When::Always);
        }
    }

    #[test]
    fn gate_adds_a_promote_phase_that_undoes_the_switch() {
        let text = std::fs::read_to_string(format!(
            "{}/../../examples/sokdak.yaml",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
        .replace("  timeout: 30m", "  timeout: 30m\n  gate: 15m");
        let plan = Plan::new(&Config::parse(&text, "sokdak.yaml").unwrap());
        let promote = plan
            .phases
            .iter()
            .find(|p| p.kind == PhaseKind::Promote)
            .expect("a promote phase");
        assert!(promote.steps.is_empty());
        assert_eq!(promote.on_failure[0].name(), "switch");
        let kinds: Vec<&str> = plan.phases.iter().map(|p| p.kind.name()).collect();
        assert_eq!(kinds[4..7], ["switch", "promote", "drain"]);
        // The state file is written only after the gate.
        assert_eq!(plan.phases[6].steps[0].name(), "record");
    }

    #[test]
    fn the_target_is_the_other_slot_blue_first() {
        assert_eq!(target_slot("blue"), Some("green"));
        assert_eq!(target_slot("green"), Some("blue"));
        assert_eq!(target_slot("none"), Some("blue"));
        assert_eq!(target_slot("mixed"), None);
    }

    #[test]
    fn waiting_calls_carry_their_own_bound() {
        let plan = example("sokdak.yaml");
        let mut bounds = Vec::new();
        for step in plan.phases.iter().flat_map(|p| &p.steps) {
            match step {
                Step::Start(s) | Step::Stop(s) | Step::Lock(s) => {
                    bounds.push((step.name(), s.call.wait_secs));
                }
                Step::Switch(s) => {
                    bounds.push(("switch", s.call.wait_secs));
                    bounds.push(("settle", s.settle.wait_secs));
                }
                _ => {}
            }
        }
        // sokdak.yaml: stop.grace 30s.
        assert!(bounds.contains(&("lock", 0)), "{bounds:?}");
        assert!(bounds.contains(&("start", 30 + PORT_FREE_WAIT_SECS)));
        assert!(bounds.contains(&("stop", 30 + PORT_FREE_WAIT_SECS)));
        assert!(bounds.contains(&("switch", SWITCH_WAIT_SECS)));
        assert!(bounds.contains(&("settle", 30)));
    }

    #[test]
    fn start_command_quotes_placeholders() {
        let parts = vec![
            StartPart::Text("java -jar ".into()),
            StartPart::Placeholder("jar".into()),
            StartPart::Text(" --server.port=".into()),
            StartPart::Placeholder("port".into()),
        ];
        assert_eq!(
            start_command(&parts),
            "java -jar \"${BG_JAR}\" --server.port=\"${BG_PORT}\""
        );
    }
}
