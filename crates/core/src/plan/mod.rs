//! The typed deploy plan: every step, on every host, computed before anything runs.
//!
//! The slot a deploy targets is only known once the live slot has been read from the proxy, so steps
//! refer to it symbolically through [`RuntimeVar`](crate::RuntimeVar)s inside their [`Word`]s; each
//! backend resolves them when it runs. How a plan is computed from the config is in `build.rs`: one
//! builder per phase, shared by the deploy, rollback and retire plans.

use crate::config::{Config, HookKind, HostKeyPolicy, ProbeFrom, Slack, Slots, StartPart};
use crate::remote::RemoteCall;
use crate::word::Word;
use serde::Serialize;
use std::fmt::{self, Write as _};
use std::sync::Arc;

mod build;

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

pub use crate::remote::{PORT_FREE_WAIT_SECS, SWITCH_WAIT_SECS};

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
    /// The secrets the app gets in its environment (their names and Jenkins credentials; the
    /// values are read from the runner's environment at run time and never shown).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<crate::config::Secret>,
    /// Slack notifications, if configured.
    pub slack: Option<Slack>,
    /// Jenkins options for the rendered pipeline.
    pub jenkins: crate::config::Jenkins,
    /// The start command as written in the config.
    pub start_template: String,
    /// Remote directory holding one directory per slot.
    pub deploy_dir: String,
    /// The config the plan was computed from: the rollback and retire plans of a deploy plan
    /// ([`Plan::to_rollback`], [`Plan::to_retire`]) are computed from it.
    #[serde(skip)]
    config: Arc<Config>,
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
    /// The proxy's state directory, which holds the lock.
    pub state_dir: Word,
    /// The run's token.
    pub token: Word,
    /// For how long each renewal makes the lock hold, in seconds (`lock.stale_after`).
    pub lease_secs: u64,
    /// Time between renewals, in milliseconds.
    pub every_ms: u64,
}

impl Heartbeat {
    /// The renewal, with the plan's lease.
    pub fn call(&self) -> RemoteCall {
        self.call_with_lease(Word::lit(self.lease_secs.to_string()))
    }

    /// The renewal with another lease (seconds, or a word that is a number at run time).
    pub fn call_with_lease(&self, lease: Word) -> RemoteCall {
        crate::remote::calls::Beat {
            state_dir: self.state_dir.clone(),
            token: self.token.clone(),
            lease,
        }
        .into()
    }
}

/// An environment variable the plan refers to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvRef {
    /// Variable name.
    pub name: String,
    /// The config field that refers to it.
    pub field: String,
    /// It names a file (a file secret's), which the runner reads: it must be a regular file of at
    /// most [`crate::config::SECRET_FILE_MAX`] bytes.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub file: bool,
}

/// What `rollback --to` accepts, as the remote library matches it against the audit log: a
/// release (4 or more hex digits of its sha256, lowercased here) or the start of a deploy's time
/// (`2026-12-02T13:30`: digits, then digits and `-T:Z`). The rendered script applies the same rule
/// (`bg_rollback_to`).
pub fn rollback_target(to: &str) -> Result<String, crate::Error> {
    let hex = to.len() >= 4 && to.chars().all(|c| c.is_ascii_hexdigit());
    let time = to.len() >= 4
        && to.starts_with(|c: char| c.is_ascii_digit())
        && to.chars().all(|c| c.is_ascii_digit() || "-T:Z".contains(c));
    if hex {
        Ok(to.to_ascii_lowercase())
    } else if time {
        Ok(to.to_string())
    } else {
        Err(crate::Error::RollbackTarget { to: to.to_string() })
    }
}

/// What a phase is for; one Jenkins stage each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseKind {
    /// Take the lock, read the live slot.
    Prepare,
    /// The `pre_deploy` hook (migrations), once, before anything is uploaded.
    PreDeploy,
    /// Copy the artifact to every host's idle slot.
    Upload,
    /// Start the new instances.
    Start,
    /// Wait until every new instance is healthy.
    Verify,
    /// The `pre_switch` hook against every new instance, on its idle port (a smoke test).
    PreSwitch,
    /// One switch of the proxy.
    Switch,
    /// The `post_switch` hook, once traffic is on the new slot (a failure switches it back).
    PostSwitch,
    /// Jenkins' promotion gate: a person keeps the new version or rejects it (traffic goes back),
    /// after the switch, or (`jenkins.gate_at: before_switch`) before it.
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
            PhaseKind::PreDeploy => "pre_deploy",
            PhaseKind::Upload => "upload",
            PhaseKind::Start => "start",
            PhaseKind::Verify => "verify",
            PhaseKind::PreSwitch => "pre_switch",
            PhaseKind::Switch => "switch",
            PhaseKind::PostSwitch => "post_switch",
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
            PhaseKind::PreDeploy => "Pre-deploy",
            PhaseKind::Upload => "Upload",
            PhaseKind::Start => "Start",
            PhaseKind::Verify => "Verify",
            PhaseKind::PreSwitch => "Pre-switch",
            PhaseKind::Switch => "Switch",
            PhaseKind::PostSwitch => "Post-switch",
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
    /// With `parallel`: at most this many of its steps at once (`max_parallel`); None: all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
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
    /// Once a switch is final, on an app host: stop the slot that was live (or keep it running
    /// for the rollback window), keep the release now live among the host's releases, remove the
    /// oldest.
    Retire(RemoteStep),
    /// Release the deploy lock.
    Unlock(RemoteStep),
    /// Send a notification.
    Notify(NotifyStep),
    /// Run a hook: on the runner or on a host.
    Hook(HookStep),
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
    /// The URL probed from the runner.
    pub url: Word,
    /// The URL probed from the host itself (`from: host`: the app's port on 127.0.0.1).
    pub host_url: Word,
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

/// A hook of the config, run by the library's `hook` (on a host, or by bash on the runner).
#[derive(Debug, Clone, Serialize)]
pub struct HookStep {
    /// Which hook.
    pub hook: HookKind,
    /// The host it runs on; None: on the runner.
    pub on: Option<String>,
    /// The app host whose new instance it is run against, when it runs on the runner for each
    /// (`pre_switch`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub about: Option<String>,
    /// The command, as the config writes it.
    pub command: String,
    /// How long it may take, in seconds.
    pub timeout_secs: u64,
    /// What it gets in its environment: the run's facts (`BG_...`), then the app's `env:` and
    /// secrets (a secret as the `${NAME}` of the runner's environment).
    pub env: Vec<(String, Word)>,
    /// The `hook` call that runs it: its directory, timeout, command, then the environment as
    /// NAME VALUE pairs. On the runner, the directory is the working directory (`.`).
    pub call: RemoteCall,
}

impl HookStep {
    /// Where it runs, for messages: its host, or `runner`.
    pub fn place(&self) -> &str {
        self.on.as_deref().unwrap_or("runner")
    }
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
            | Step::Retire(s)
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
            Step::Hook(h) => h.on.as_deref().or(h.about.as_deref()),
            _ => None,
        }
    }

    /// The host this step always makes remote calls to, if any: every step that runs on a host
    /// but a health check probing from the runner (which calls the host only after a failed probe)
    /// and the retain step (which calls nothing). A backend that keeps a shell per host for a
    /// group of steps opens one for the hosts these name.
    pub fn calls_host(&self) -> Option<&str> {
        match self {
            Step::Health(h) if h.from == ProbeFrom::Runner => None,
            Step::Hook(h) => h.on.as_deref(),
            _ => self.host(),
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
            Step::Retire(_) => "retire",
            Step::Unlock(_) => "unlock",
            Step::Notify(_) => "notify",
            Step::Hook(h) => h.hook.name(),
        }
    }
}

impl Plan {
    /// Computes the plan for a validated config.
    pub fn new(config: &Config) -> Plan {
        build::deploy(config)
    }

    /// The plan of `bluegreen rollback`: traffic back on the idle (previous) slot.
    ///
    /// It is the deploy plan without the upload: the target slot's instance is kept if it is still
    /// running (retained) or restarted from the release kept in its directory, health-checked, and
    /// switched to; the slot rolled back from is then retired like an old slot after a deploy.
    pub fn rollback(config: &Config) -> Plan {
        build::rollback(config, Word::default())
    }

    /// The plan of `bluegreen rollback --to RELEASE`: like [`Plan::rollback`], to a release the
    /// audit log records as deployed successfully (`to`: a sha256 prefix or the start of that
    /// deploy's time), started from the slot or from the hosts' kept releases.
    pub fn rollback_to(config: &Config, to: &str) -> Result<Plan, crate::Error> {
        Ok(build::rollback(config, Word::lit(rollback_target(to)?)))
    }

    /// The plan of `bluegreen retire`: stop the idle slot kept after a switch.
    pub fn retire(config: &Config) -> Plan {
        build::retire(config)
    }

    /// The rollback plan of the config this plan was computed from (see [`Plan::rollback`]).
    pub fn to_rollback(&self) -> Plan {
        Plan::rollback(&self.config)
    }

    /// The rollback plan of the config this plan was computed from, to the release `to` holds at
    /// run time (empty: the previous one), already checked with [`rollback_target`]'s rule: the
    /// rendered script's, whose `rollback [RELEASE]` sets it.
    pub fn to_rollback_to(&self, to: Word) -> Plan {
        build::rollback(&self.config, to)
    }

    /// The deploy lock as this plan's runs take it, held for `message`: for an operation that
    /// changes what runs (`status --fix`).
    pub fn lock_call(&self, message: String) -> RemoteCall {
        build::lock_call(&self.config, message)
    }

    /// The call that reads the proxy's status: the upstream file as this plan's `detect` reads
    /// it, the state file, the intent and the lock.
    pub fn proxy_status_call(&self) -> RemoteCall {
        build::proxy_status_call(&self.config)
    }

    /// The retire plan of the config this plan was computed from (see [`Plan::retire`]).
    pub fn to_retire(&self) -> Plan {
        Plan::retire(&self.config)
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
                match phase.limit {
                    _ if !phase.parallel || phase.steps.len() < 2 => String::new(),
                    Some(n) if n < phase.steps.len() => {
                        format!(" (hosts in parallel, at most {n} at once)")
                    }
                    _ => " (hosts in parallel)".to_string(),
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
        | Step::Retire(s)
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
        Step::Notify(n) => format!(
            "notify Slack {} (webhook from ${})",
            n.channel, n.webhook_env
        ),
        Step::Hook(h) => format!(
            "{} hook on {}{}: `{}` (at most {}s; {})",
            h.hook.name(),
            h.place(),
            h.about
                .as_ref()
                .map(|a| format!(" against {a}'s new instance"))
                .unwrap_or_default(),
            h.command,
            h.timeout_secs,
            h.env
                .iter()
                .map(|(n, _)| n.as_str())
                .filter(|n| n.starts_with("BG_"))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::{calls, RemoteFn};
    use crate::word::RuntimeVar;

    fn config(name: &str) -> Config {
        let path = format!("{}/../../examples/{name}", env!("CARGO_MANIFEST_DIR"));
        Config::load(std::path::Path::new(&path)).unwrap()
    }

    fn example(name: &str) -> Plan {
        Plan::new(&config(name))
    }

    /// sokdak.yaml's stop of the target slot's instance.
    fn sokdak_stop_of_target() -> RemoteCall {
        calls::Stop {
            dir: Word::lit("/home/ubuntu/sokdak/").then_runtime(RuntimeVar::TargetSlot),
            port: Word::runtime(RuntimeVar::TargetPort),
            signal: Word::lit("TERM"),
            grace_secs: 30,
        }
        .into()
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
                    assert_eq!(stop.call, sokdak_stop_of_target());
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
        let env = |name: &str| Word::parse_env(&format!("${{{name}}}")).unwrap();
        let want: RemoteCall = calls::Switch {
            state_dir: Word::lit("/var/lib/bluegreen/sokdak"),
            upstream_file: Word::lit("/etc/nginx/bluegreen/sokdak-upstream.conf"),
            sudo: true,
            test_command: Word::lit("nginx -t"),
            reload_command: Word::lit("nginx -s reload"),
            blue_port: 8080,
            green_port: 8081,
            port: Word::runtime(RuntimeVar::TargetPort),
            header: Word::lit("# managed by bluegreen for sokdak"),
            addresses: vec![env("WAS_1_PRIVATE_IP"), env("WAS_2_PRIVATE_IP")],
        }
        .into();
        assert_eq!(sw.call, want);
        assert_eq!(
            sw.call.display(),
            "switch \"/var/lib/bluegreen/sokdak\" \"/etc/nginx/bluegreen/sokdak-upstream.conf\" \"yes\" \
             \"nginx -t\" \"nginx -s reload\" \"8080\" \"8081\" \"${BG_TARGET_PORT}\" \
             \"# managed by bluegreen for sokdak\" \"${WAS_1_PRIVATE_IP}\" \"${WAS_2_PRIVATE_IP}\""
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
    fn retain_keeps_the_old_slot_and_every_retire_keeps_the_live_release() {
        let retire_call = |file: &str| {
            let plan = example(file);
            let retire = plan
                .phases
                .iter()
                .find(|p| p.kind == PhaseKind::Retire)
                .unwrap();
            assert_eq!(retire.steps.len(), plan.servers.len());
            let Step::Retire(s) = &retire.steps[0] else {
                panic!("retire expected")
            };
            assert_eq!(s.when, When::Always);
            s.call.clone()
        };
        // single-host.yaml: retain 10m, keep_releases left at its default.
        let c = retire_call("single-host.yaml");
        assert_eq!(c.func, RemoteFn::Retire);
        assert_eq!(c.args[1], Word::runtime(RuntimeVar::LiveSlot));
        assert_eq!(c.args[5], Word::lit("600"));
        assert_eq!(c.args[7], Word::runtime(RuntimeVar::Release));
        assert_eq!(
            c.args[8],
            Word::lit(crate::config::KEEP_RELEASES.to_string())
        );
        // sokdak.yaml: no retain: the old slot is stopped at once.
        assert_eq!(retire_call("sokdak.yaml").args[5], Word::lit("0"));
    }

    #[test]
    fn rollback_to_asks_the_proxy_for_that_release_and_is_otherwise_a_rollback() {
        let c = config("sokdak.yaml");
        let inspect = |plan: &Plan| -> RemoteCall {
            let Some(Step::Inspect(s)) = plan.phases[0].steps.last() else {
                panic!("inspect expected")
            };
            s.call.clone()
        };
        let to = Plan::rollback_to(&c, "0A1b2c").unwrap();
        let back = Plan::rollback(&c);
        let want = |w: &str| -> RemoteCall {
            calls::Release {
                state_dir: Word::lit("/var/lib/bluegreen/sokdak"),
                want: Word::lit(w),
            }
            .into()
        };
        assert_eq!(inspect(&to), want("0a1b2c"));
        assert_eq!(inspect(&back), want(""));
        let kinds = |p: &Plan| p.phases.iter().map(|p| p.kind.name()).collect::<Vec<_>>();
        assert_eq!(kinds(&to), kinds(&back));
        assert_eq!(to.phases.len(), back.phases.len());
        // A time prefix as it is; anything else refused, with the hint.
        let at = Plan::rollback_to(&c, "2026-12-02T13:3").unwrap();
        assert_eq!(inspect(&at), want("2026-12-02T13:3"));
        for bad in ["abc", "last-week", "0a1b2g", "T13:30", ""] {
            let e = Plan::rollback_to(&c, bad).unwrap_err().to_string();
            assert!(e.contains("bluegreen releases"), "{bad}: {e}");
        }
    }

    #[test]
    fn rollback_revives_the_previous_slot_without_uploading() {
        let plan = Plan::rollback(&config("sokdak.yaml"));
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
        let audit = |outcome: &str| -> RemoteCall {
            calls::Audit {
                state_dir: Word::lit("/var/lib/bluegreen/sokdak"),
                event: Word::lit("rollback"),
                app: Word::lit("sokdak"),
                outcome: Word::lit(outcome),
                target: Word::runtime(RuntimeVar::TargetSlot),
                from: Word::runtime(RuntimeVar::LiveSlot),
                release: Word::runtime(RuntimeVar::Release),
                deployer: Word::runtime(RuntimeVar::Deployer),
            }
            .into()
        };
        let rollback_audits = ["success", "failed", "switched, then failed"].map(audit);
        let audits = plan
            .phases
            .iter()
            .flat_map(|p| p.steps.iter().chain(&p.on_failure))
            .filter_map(|s| match s {
                Step::Audit(a) => Some(&a.call),
                _ => None,
            })
            .collect::<Vec<_>>();
        assert!(
            !audits.is_empty() && audits.iter().all(|a| rollback_audits.contains(a)),
            "{audits:?}"
        );
    }

    #[test]
    fn retire_stops_the_idle_slot_only() {
        let plan = Plan::retire(&config("sokdak.yaml"));
        let kinds: Vec<&str> = plan.phases.iter().map(|p| p.kind.name()).collect();
        assert_eq!(kinds, ["prepare", "retire", "finish"]);
        for s in &plan.phases[1].steps {
            let Step::Stop(s) = s else {
                panic!("stop expected")
            };
            assert_eq!(s.call, sokdak_stop_of_target());
            assert_eq!(s.when, When::Always);
        }
    }

    #[test]
    fn a_deploy_plan_gives_the_rollback_and_retire_plans_of_its_config() {
        let config = config("single-host.yaml");
        let deploy = Plan::new(&config);
        assert_eq!(
            deploy.to_rollback().to_json(),
            Plan::rollback(&config).to_json()
        );
        assert_eq!(
            deploy.to_retire().to_json(),
            Plan::retire(&config).to_json()
        );
        assert_ne!(deploy.to_json(), deploy.to_retire().to_json());
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
                Step::Start(s) | Step::Retire(s) | Step::Lock(s) => {
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
        assert!(bounds.contains(&("retire", 30 + PORT_FREE_WAIT_SECS)));
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

    const HOOKED: &str = "app: shop
artifact: x.jar
proxy: { host: 10.0.0.5, upstream_file: /etc/n.conf }
servers: [ { host: 10.0.0.11 }, { host: 10.0.0.12, address: 192.168.0.12 } ]
deploy_dir: /srv/shop
env: { MODE: blue-green }
secrets: [ DB_PASSWORD ]
hooks:
  pre_deploy: { run: ./migrate.sh, on: 10.0.0.12, timeout: 10m }
  pre_switch: curl -fsS \"$BG_URL/smoke\"
  post_switch: { run: ./tell, on: servers }
  on_failure: ./page-someone
";

    fn kinds(plan: &Plan) -> Vec<&'static str> {
        plan.phases.iter().map(|p| p.kind.name()).collect()
    }

    fn hooks_of(phase: &Phase) -> Vec<&HookStep> {
        phase
            .steps
            .iter()
            .chain(&phase.on_failure)
            .filter_map(|s| match s {
                Step::Hook(h) => Some(h),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn hooks_are_phases_where_a_run_reaches_them() {
        let c = Config::parse(HOOKED, "t.yaml").unwrap();
        let plan = Plan::new(&c);
        assert_eq!(
            kinds(&plan),
            [
                "prepare",
                "pre_deploy",
                "upload",
                "start",
                "verify",
                "pre_switch",
                "switch",
                "post_switch",
                "drain",
                "retire",
                "finish"
            ]
        );
        // A rollback deploys nothing new: no pre_deploy.
        assert_eq!(
            kinds(&Plan::rollback(&c)),
            [
                "prepare",
                "start",
                "verify",
                "pre_switch",
                "switch",
                "post_switch",
                "drain",
                "retire",
                "finish"
            ]
        );
        // A retire has no hook at all.
        assert!(Plan::retire(&c)
            .phases
            .iter()
            .all(|p| hooks_of(p).is_empty()));
        let phase = |name: &str| plan.phases.iter().find(|p| p.kind.name() == name).unwrap();

        // pre_deploy: once, on the named app host, in the deploy directory; undone by the audit
        // line and the unlock (nothing was uploaded or started).
        let pre = hooks_of(phase("pre_deploy"));
        assert_eq!(pre[0].on.as_deref(), Some("app2"));
        assert_eq!(pre[0].call.func, crate::remote::RemoteFn::Hook);
        assert_eq!(pre[0].call.args[0], Word::lit("/srv/shop"));
        assert_eq!(pre[0].call.args[1], Word::lit("600"));
        assert_eq!(pre[0].call.wait_secs, 605);
        let undo: Vec<&str> = phase("pre_deploy")
            .on_failure
            .iter()
            .map(Step::name)
            .collect();
        assert_eq!(undo, ["audit", "unlock", "on_failure"]);

        // pre_switch on the runner: once per new instance, in parallel, each with its URL.
        let ps = phase("pre_switch");
        assert!(ps.parallel);
        let steps: Vec<&HookStep> = ps
            .steps
            .iter()
            .map(|s| match s {
                Step::Hook(h) => h,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(steps.len(), 2);
        assert!(steps.iter().all(|h| h.on.is_none()));
        assert_eq!(steps[1].about.as_deref(), Some("app2"));
        assert_eq!(ps.steps[1].host(), Some("app2"));
        assert_eq!(ps.steps[1].calls_host(), None);
        let url = &steps[1].env.iter().find(|(n, _)| n == "BG_URL").unwrap().1;
        assert_eq!(url.to_string(), "http://192.168.0.12:${BG_TARGET_PORT}");
        let undo: Vec<&str> = ps.on_failure.iter().map(Step::name).collect();
        assert_eq!(undo, ["stop", "stop", "audit", "unlock", "on_failure"]);

        // post_switch on every app host: a failure switches traffic back first.
        let post = phase("post_switch");
        assert!(post.parallel);
        assert_eq!(post.steps[0].calls_host(), Some("app1"));
        assert_eq!(post.on_failure[0].name(), "switch");

        // on_failure: after every phase's undo but the first's, told which phase failed.
        assert!(hooks_of(phase("prepare")).is_empty());
        for p in &plan.phases[1..] {
            let Some(Step::Hook(h)) = p.on_failure.last() else {
                panic!("{} has no on_failure hook", p.kind.name())
            };
            assert_eq!(h.hook, HookKind::OnFailure);
            assert!(h
                .env
                .contains(&("BG_FAILED_PHASE".into(), Word::lit(p.kind.name()))));
        }

        // Every hook gets the run's facts, then the app's environment; a secret by reference.
        let env: Vec<&str> = pre[0].env.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            env,
            [
                "BG_HOOK",
                "BG_APP",
                "BG_ACTION",
                "BG_RELEASE",
                "BG_TARGET_SLOT",
                "BG_TARGET_PORT",
                "BG_LIVE_SLOT",
                "BG_LIVE_PORT",
                "BG_DEPLOYER",
                "BG_HOST",
                "BG_URL",
                "MODE",
                "DB_PASSWORD"
            ]
        );
        assert_eq!(pre[0].env[12].1.to_string(), "${DB_PASSWORD}");
        // The plan's JSON names the secret, never a value (it has none to show).
        assert!(plan.to_json().contains("\"DB_PASSWORD\""));
    }

    #[test]
    fn a_gate_before_the_switch_undoes_as_a_failed_health_check() {
        let yaml = "app: shop
artifact: x.jar
proxy: { host: 10.0.0.5, upstream_file: /etc/n.conf }
servers: [ { host: 10.0.0.11 } ]
deploy_dir: /srv/shop
jenkins: { gate: 15m, gate_at: before_switch }
";
        let plan = Plan::new(&Config::parse(yaml, "t.yaml").unwrap());
        assert_eq!(
            kinds(&plan),
            [
                "prepare", "upload", "start", "verify", "promote", "switch", "drain", "retire",
                "finish"
            ]
        );
        let promote = &plan.phases[4];
        let undo: Vec<&str> = promote.on_failure.iter().map(Step::name).collect();
        assert_eq!(undo, ["stop", "audit", "unlock"]);
        // After the switch (the default), a rejection switches back first.
        let plan = Plan::new(
            &Config::parse(&yaml.replace(", gate_at: before_switch", ""), "t.yaml").unwrap(),
        );
        assert_eq!(kinds(&plan)[5], "promote");
        assert_eq!(plan.phases[5].on_failure[0].name(), "switch");
    }
}
