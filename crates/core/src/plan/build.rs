//! How a plan is computed from a config: one builder per phase, shared by the deploy, rollback and
//! retire plans, which differ only in which phases they have and in what a few steps say.

use super::{
    start_command, Action, CopyStep, DrainStep, EnvRef, HealthStep, Heartbeat, HookStep, Host,
    NotifyStep, Phase, PhaseKind, Plan, RemoteStep, SshPlan, Step, SwitchStep, When,
    CHECK_INTERVAL_MS, CHECK_TRIES, PROXY_ID,
};
use crate::config::{Config, Hook, HookKind, HookOn};
use crate::remote::{calls, RemoteCall};
use crate::word::{Part, RuntimeVar, Var, Word};
use std::sync::Arc;
use std::time::Duration;

/// The deploy plan: upload to the idle slot, start, verify, switch (and, with a gate, wait for a
/// person), drain, retire the old slot.
pub(super) fn deploy(config: &Config) -> Plan {
    let b = Builder::new(config, Action::Deploy);
    let gate_before = config.jenkins.gate_before_switch;
    let mut phases = vec![b.prepare()];
    phases.extend(b.hook_phase(HookKind::PreDeploy));
    phases.extend([b.upload(), b.start(), b.verify()]);
    phases.extend(b.hook_phase(HookKind::PreSwitch));
    if gate_before {
        phases.extend(b.promote());
    }
    phases.push(b.switch());
    phases.extend(b.hook_phase(HookKind::PostSwitch));
    if !gate_before {
        phases.extend(b.promote());
    }
    phases.extend([b.drain(), b.retire_old(), b.finish()]);
    let phases = b.with_failure_hook(phases);
    b.plan(phases)
}

/// The lock a run takes, held for `message` (`status --fix` takes it as a run does).
pub(super) fn lock_call(config: &Config, message: String) -> RemoteCall {
    Builder::new(config, Action::Deploy)
        .lock_args(message)
        .into()
}

/// The proxy's status call: its state directory, and the upstream file read as a run's `detect`
/// reads it.
pub(super) fn proxy_status_call(config: &Config) -> RemoteCall {
    let b = Builder::new(config, Action::Deploy);
    calls::ProxyStatus {
        state_dir: b.state_dir.clone(),
        detect: b.detect_args(),
    }
    .into()
}

/// The rollback plan: the deploy's phases without the upload (the slot keeps its release), the
/// gate and the `pre_deploy` hook (nothing new is deployed).
pub(super) fn rollback(config: &Config, to: Word) -> Plan {
    let mut b = Builder::new(config, Action::Rollback);
    b.rollback_to = to;
    let mut phases = vec![b.prepare(), b.start(), b.verify()];
    phases.extend(b.hook_phase(HookKind::PreSwitch));
    phases.push(b.switch());
    phases.extend(b.hook_phase(HookKind::PostSwitch));
    phases.extend([b.drain(), b.retire_old(), b.finish()]);
    let phases = b.with_failure_hook(phases);
    b.plan(phases)
}

/// The retire plan: stop the idle slot, under the lock.
pub(super) fn retire(config: &Config) -> Plan {
    let b = Builder::new(config, Action::Retire);
    let phases = vec![b.prepare(), b.retire_idle(), b.finish()];
    b.plan(phases)
}

/// Seconds, rounded up: the remote library counts whole seconds.
fn secs_ceil(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Paths containing `~/` refer to the runner's home directory.
fn home_path(w: &Word) -> Word {
    match w.0.first() {
        Some(Part::Lit(s)) if s.starts_with("~/") => {
            let mut out = Word(vec![Part::Var(Var::Env("HOME".into()))]);
            out.push_lit(&s[1..]);
            for p in &w.0[1..] {
                out.0.push(p.clone());
            }
            out
        }
        _ => w.clone(),
    }
}

fn rt(v: RuntimeVar) -> Word {
    Word::runtime(v)
}

/// What the builders of one plan share: the config, the action, the app hosts, and the values
/// most steps use.
struct Builder<'a> {
    c: &'a Config,
    action: Action,
    servers: Vec<Host>,
    jar_name: String,
    state_dir: Word,
    /// `rollback --to`: the release asked for (a sha256 prefix or the start of a deploy's time).
    rollback_to: Word,
}

impl<'a> Builder<'a> {
    fn new(c: &'a Config, action: Action) -> Builder<'a> {
        let servers = c
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
        Builder {
            c,
            action,
            servers,
            jar_name: format!("{}.jar", c.app),
            state_dir: Word::lit(&c.proxy.state_dir),
            rollback_to: Word::default(),
        }
    }

    // The phases, in the order plans have them.

    /// Take the lock, read the live slot, finish what an interrupted run left; a rollback also
    /// reads the release to go back to.
    fn prepare(&self) -> Phase {
        let mut steps = vec![self.lock(), self.detect(), self.reconcile()];
        if self.action == Action::Rollback {
            steps.push(Step::Inspect(self.on_proxy(calls::Release {
                state_dir: self.state_dir.clone(),
                want: self.rollback_to.clone(),
            })));
        }
        Phase {
            kind: PhaseKind::Prepare,
            parallel: false,
            limit: None,
            steps,
            on_failure: vec![self.unlock()],
        }
    }

    /// Copy the artifact into the target slot of every app host.
    fn upload(&self) -> Phase {
        let dir = self.slot_dir(RuntimeVar::TargetSlot);
        let tmp_name = format!(".{}.upload", self.jar_name);
        let steps = self
            .servers
            .iter()
            .map(|h| {
                Step::Copy(CopyStep {
                    host: h.id.clone(),
                    dir: dir.clone(),
                    tmp_name: tmp_name.clone(),
                    prepare: calls::Prepare { dir: dir.clone() }.into(),
                    install: calls::Install {
                        dir: dir.clone(),
                        tmp_name: Word::lit(&tmp_name),
                        jar_name: Word::lit(&self.jar_name),
                        sha256: rt(RuntimeVar::Release),
                    }
                    .into(),
                })
            })
            .collect();
        self.before_switch_phase(PhaseKind::Upload, steps)
    }

    /// Start the target slot's instances; a rollback keeps them when they still run, or starts
    /// their kept release again.
    fn start(&self) -> Phase {
        let command = start_command(&self.c.start);
        let steps = self
            .servers
            .iter()
            .map(|h| {
                let start = calls::Start {
                    dir: self.slot_dir(RuntimeVar::TargetSlot),
                    slot: rt(RuntimeVar::TargetSlot),
                    port: rt(RuntimeVar::TargetPort),
                    host: h.app_address.clone(),
                    jar_name: Word::lit(&self.jar_name),
                    signal: Word::lit(&self.c.stop.signal),
                    grace_secs: secs_ceil(self.c.stop.grace),
                    command: Word::lit(&command),
                    live_port: rt(RuntimeVar::LivePort),
                    supervisor: Word::lit(self.c.supervisor.name()),
                    app: Word::lit(&self.c.app),
                    env: self.app_env(),
                };
                let call = match self.action {
                    Action::Rollback => calls::Revive {
                        start,
                        release: rt(RuntimeVar::Release),
                    }
                    .into(),
                    Action::Deploy | Action::Retire => start.into(),
                };
                Step::Start(RemoteStep {
                    host: h.id.clone(),
                    call,
                    when: When::Always,
                })
            })
            .collect();
        self.before_switch_phase(PhaseKind::Start, steps)
    }

    /// Poll every new instance until it is healthy.
    fn verify(&self) -> Phase {
        let hc = &self.c.health;
        let url_from = |addr: &Word| {
            Word::lit("http://")
                .then(addr)
                .then_lit(":")
                .then_runtime(RuntimeVar::TargetPort)
                .then_lit(&hc.path)
        };
        let steps = self
            .servers
            .iter()
            .map(|h| {
                let host_url = url_from(&Word::lit("127.0.0.1"));
                Step::Health(HealthStep {
                    host: h.id.clone(),
                    url: url_from(&h.app_address),
                    host_url: host_url.clone(),
                    status: hc.status,
                    body: hc.body.clone(),
                    interval_ms: millis(hc.interval),
                    timeout_ms: millis(hc.timeout),
                    deadline_ms: millis(hc.deadline),
                    successes: hc.successes,
                    from: hc.from,
                    probe: calls::Probe {
                        url: host_url,
                        status: hc.status,
                        body: hc.body.as_deref().map(Word::lit),
                        timeout_secs: secs_ceil(hc.timeout),
                    }
                    .into(),
                    alive: calls::Alive {
                        dir: self.slot_dir(RuntimeVar::TargetSlot),
                        slot: rt(RuntimeVar::TargetSlot),
                    }
                    .into(),
                })
            })
            .collect();
        self.before_switch_phase(PhaseKind::Verify, steps)
    }

    /// Record the intent, then the one switch of the proxy.
    fn switch(&self) -> Phase {
        let intent = Step::Intent(self.on_proxy(calls::Intent {
            state_dir: self.state_dir.clone(),
            token: rt(RuntimeVar::RunToken),
            target: rt(RuntimeVar::TargetSlot),
            from: rt(RuntimeVar::LiveSlot),
            release: rt(RuntimeVar::Release),
            deployer: rt(RuntimeVar::Deployer),
        }));
        let switch = self.switch_step(
            RuntimeVar::TargetPort,
            self.c.proxy.check_url.clone(),
            When::Always,
        );
        Phase {
            kind: PhaseKind::Switch,
            parallel: false,
            limit: None,
            steps: vec![intent, switch],
            on_failure: self.at_switch(),
        }
    }

    /// With `jenkins.gate`, Jenkins' promotion gate. The gate itself is Jenkins' `input`: the phase
    /// has no steps, only what a rejection undoes: the same as a failed switch after the switch,
    /// the same as a failed health check before it.
    fn promote(&self) -> Option<Phase> {
        self.c.jenkins.gate.map(|_| Phase {
            kind: PhaseKind::Promote,
            parallel: false,
            limit: None,
            steps: vec![],
            on_failure: if self.c.jenkins.gate_before_switch {
                self.before_switch()
            } else {
                self.at_switch()
            },
        })
    }

    /// The phase of a configured `pre_deploy`, `pre_switch` or `post_switch` hook: once, or on
    /// every app host (and `pre_switch` on the runner once for each app host's new instance).
    /// What its failure undoes is what a failure at that point undoes.
    fn hook_phase(&self, kind: HookKind) -> Option<Phase> {
        let hook = self.c.hooks.get(kind)?;
        let (phase, on_failure) = match kind {
            HookKind::PreDeploy => (
                PhaseKind::PreDeploy,
                vec![self.audit("failed"), self.unlock()],
            ),
            HookKind::PreSwitch => (PhaseKind::PreSwitch, self.before_switch()),
            HookKind::PostSwitch => (PhaseKind::PostSwitch, self.at_switch()),
            HookKind::OnFailure => return None,
        };
        let each = matches!(
            (kind, hook.on),
            (_, HookOn::Servers) | (HookKind::PreSwitch, HookOn::Runner)
        );
        let steps: Vec<Step> = if each {
            self.servers
                .iter()
                .map(|h| {
                    let on = (hook.on == HookOn::Servers).then_some(h);
                    self.hook_step(kind, hook, on.map(|h| h.id.as_str()), Some(h), None)
                })
                .collect()
        } else {
            let (on, about) = self.hook_place(hook.on);
            vec![self.hook_step(kind, hook, on, about, None)]
        };
        Some(Phase {
            kind: phase,
            parallel: each,
            limit: None,
            steps,
            on_failure,
        })
    }

    /// With an `on_failure` hook: the phases, each but the first (which takes the lock and reads
    /// the live slot: before it, nothing was changed) running the hook after its undo.
    fn with_failure_hook(&self, mut phases: Vec<Phase>) -> Vec<Phase> {
        let Some(hook) = self.c.hooks.on_failure.as_ref() else {
            return phases;
        };
        let (on, about) = self.hook_place(hook.on);
        for phase in phases.iter_mut().skip(1) {
            let step = self.hook_step(HookKind::OnFailure, hook, on, about, Some(phase.kind));
            phase.on_failure.push(step);
        }
        phases
    }

    /// Record the switch in the state file, then let the old slot finish its requests.
    fn drain(&self) -> Phase {
        let record = Step::Record(self.on_proxy(calls::Record {
            state_dir: self.state_dir.clone(),
            app: Word::lit(&self.c.app),
            live: rt(RuntimeVar::TargetSlot),
            previous: rt(RuntimeVar::LiveSlot),
            release: rt(RuntimeVar::Release),
            deployer: rt(RuntimeVar::Deployer),
        }));
        Phase {
            kind: PhaseKind::Drain,
            parallel: false,
            limit: None,
            // The state file is written once the switch is final: after the post-switch check and,
            // in Jenkins, after the promotion gate, so a switch undone never reaches it.
            steps: vec![
                record,
                Step::Drain(DrainStep {
                    millis: millis(self.c.drain),
                }),
            ],
            on_failure: self.after_switch(),
        }
    }

    /// On every app host: stop the slot that was live, or keep it running for the rollback window
    /// (`retain`); then keep the release now live among the host's releases (`rollback --to`).
    /// Only here, once the switch is final, so a release whose deploy failed is never kept.
    fn retire_old(&self) -> Phase {
        let steps = self
            .servers
            .iter()
            .map(|h| {
                Step::Retire(RemoteStep {
                    host: h.id.clone(),
                    call: calls::Retire {
                        deploy_dir: Word::lit(&self.c.deploy_dir),
                        old_slot: rt(RuntimeVar::LiveSlot),
                        old_port: rt(RuntimeVar::LivePort),
                        signal: Word::lit(&self.c.stop.signal),
                        grace_secs: secs_ceil(self.c.stop.grace),
                        retain_secs: secs_ceil(self.c.retain),
                        file: self
                            .slot_dir(RuntimeVar::TargetSlot)
                            .then_lit("/")
                            .then_lit(&self.jar_name),
                        release: rt(RuntimeVar::Release),
                        keep: self.c.keep_releases,
                    }
                    .into(),
                    when: When::Always,
                })
            })
            .collect();
        Phase {
            kind: PhaseKind::Retire,
            parallel: true,
            limit: None,
            steps,
            on_failure: self.after_switch(),
        }
    }

    /// The retire plan's own: stop the idle slot on every host (what a failed upload undoes).
    fn retire_idle(&self) -> Phase {
        Phase {
            kind: PhaseKind::Retire,
            parallel: true,
            limit: None,
            steps: self.stops(RuntimeVar::TargetSlot, RuntimeVar::TargetPort, When::Always),
            on_failure: vec![self.unlock()],
        }
    }

    /// The audit line, the lock released, the notification (not for a retire).
    fn finish(&self) -> Phase {
        let mut steps = vec![self.audit("success"), self.unlock()];
        if let Some(s) = self
            .c
            .slack
            .as_ref()
            .filter(|_| self.action != Action::Retire)
        {
            steps.push(Step::Notify(NotifyStep {
                channel: s.channel.clone(),
                webhook_env: s.webhook_env.clone(),
            }));
        }
        Phase {
            kind: PhaseKind::Finish,
            parallel: false,
            limit: None,
            steps,
            // Whatever else failed (the audit line: a full disk), the lock is released.
            on_failure: vec![self.unlock()],
        }
    }

    // What a failure undoes.

    /// A phase before the switch, in parallel on the app hosts.
    fn before_switch_phase(&self, kind: PhaseKind, steps: Vec<Step>) -> Phase {
        Phase {
            kind,
            parallel: true,
            // Uploads and starts are what a runner with little bandwidth (or a fleet booting on
            // shared hardware) may want to take in turns.
            limit: match kind {
                PhaseKind::Upload | PhaseKind::Start => self.c.max_parallel,
                _ => None,
            },
            steps,
            on_failure: self.before_switch(),
        }
    }

    /// Before the switch: stop the new instances, leave the proxy as it is.
    fn before_switch(&self) -> Vec<Step> {
        let mut steps = self.stops(RuntimeVar::TargetSlot, RuntimeVar::TargetPort, When::Always);
        steps.extend([self.audit("failed"), self.unlock()]);
        steps
    }

    /// At the switch: put the previous upstream back (when there was one) before the new
    /// instances are stopped, so traffic never points at a stopped slot.
    fn at_switch(&self) -> Vec<Step> {
        let back = self.switch_step(RuntimeVar::LivePort, None, When::LiveExists);
        std::iter::once(back).chain(self.before_switch()).collect()
    }

    /// Once the switch is final: say so, release the lock.
    fn after_switch(&self) -> Vec<Step> {
        vec![self.audit("switched, then failed"), self.unlock()]
    }

    // Steps.

    /// Where a hook that runs once runs: the host id (None: the runner), and the app host it
    /// concerns, if it runs on one.
    fn hook_place(&self, on: HookOn) -> (Option<&str>, Option<&Host>) {
        match on {
            HookOn::Runner | HookOn::Servers => (None, None),
            HookOn::Proxy => (Some(PROXY_ID), None),
            HookOn::Server(i) => {
                let h = &self.servers[i];
                (Some(h.id.as_str()), Some(h))
            }
        }
    }

    /// A hook, run on `on` (None: the runner), against `instance`'s new instance if given, after
    /// a failure in `failed` for `on_failure`. Its environment is the run's facts, then the app's.
    fn hook_step(
        &self,
        kind: HookKind,
        hook: &Hook,
        on: Option<&str>,
        instance: Option<&Host>,
        failed: Option<PhaseKind>,
    ) -> Step {
        let c = self.c;
        let mut env: Vec<(String, Word)> = vec![
            ("BG_HOOK".into(), Word::lit(kind.name())),
            ("BG_APP".into(), Word::lit(&c.app)),
            ("BG_ACTION".into(), Word::lit(self.action.name())),
        ];
        for v in [
            RuntimeVar::Release,
            RuntimeVar::TargetSlot,
            RuntimeVar::TargetPort,
            RuntimeVar::LiveSlot,
            RuntimeVar::LivePort,
            RuntimeVar::Deployer,
        ] {
            env.push((v.shell_name().into(), rt(v)));
        }
        if let Some(h) = instance {
            env.push(("BG_HOST".into(), h.app_address.clone()));
            env.push((
                "BG_URL".into(),
                Word::lit("http://")
                    .then(&h.app_address)
                    .then_lit(":")
                    .then_runtime(RuntimeVar::TargetPort),
            ));
        }
        if let Some(p) = failed {
            env.push(("BG_FAILED_PHASE".into(), Word::lit(p.name())));
        }
        env.extend(self.app_env_where(on.is_none()));
        let timeout_secs = secs_ceil(hook.timeout);
        let dir = match on {
            None => Word::lit("."),
            Some(PROXY_ID) => Word::default(),
            Some(_) => Word::lit(&c.deploy_dir),
        };
        Step::Hook(HookStep {
            hook: kind,
            on: on.map(str::to_string),
            about: if on.is_none() {
                instance.map(|h| h.id.clone())
            } else {
                None
            },
            command: hook.run.clone(),
            timeout_secs,
            call: calls::Hook {
                dir,
                timeout_secs,
                command: Word::lit(&hook.run),
                env: env.clone(),
            }
            .into(),
            env,
        })
    }

    /// The app's environment as a host gets it: `env:`, then the secrets (each the `${NAME}` of
    /// the runner's; a file secret the file's content, see [`crate::config::Secret::host_pair`]).
    fn app_env(&self) -> Vec<(String, Word)> {
        self.app_env_where(false)
    }

    /// The app's environment on a host, or on the runner (`runner`), where a file secret is the
    /// runner's own file, its path as it is.
    fn app_env_where(&self, runner: bool) -> Vec<(String, Word)> {
        self.c
            .app_env
            .iter()
            .map(|(n, v)| (n.clone(), Word::lit(v)))
            .chain(self.c.secrets.iter().map(|s| {
                if runner {
                    (s.name.clone(), s.value.clone())
                } else {
                    s.host_pair()
                }
            }))
            .collect()
    }

    fn on_proxy(&self, call: impl Into<RemoteCall>) -> RemoteStep {
        RemoteStep {
            host: PROXY_ID.into(),
            call: call.into(),
            when: When::Always,
        }
    }

    /// `deploy of shop`: what the lock says it is held for.
    fn lock(&self) -> Step {
        let message = format!("{} of {}", self.action.name(), self.c.app);
        Step::Lock(self.on_proxy(self.lock_args(message)))
    }

    fn lock_args(&self, message: String) -> calls::Lock {
        let c = self.c;
        calls::Lock {
            state_dir: self.state_dir.clone(),
            app: Word::lit(&c.app),
            holder: rt(RuntimeVar::Deployer),
            token: rt(RuntimeVar::RunToken),
            lease_secs: secs_ceil(c.lock.stale_after),
            message: Word::lit(message),
        }
    }

    fn unlock(&self) -> Step {
        Step::Unlock(self.on_proxy(calls::Unlock {
            state_dir: self.state_dir.clone(),
            token: rt(RuntimeVar::RunToken),
        }))
    }

    fn detect(&self) -> Step {
        Step::Detect(self.on_proxy(self.detect_args()))
    }

    fn detect_args(&self) -> calls::Detect {
        let c = self.c;
        calls::Detect {
            upstream_file: Word::lit(&c.proxy.upstream_file),
            sudo: c.proxy.sudo,
            blue_port: c.slots.blue,
            green_port: c.slots.green,
            addresses: self.app_addresses(),
        }
    }

    fn reconcile(&self) -> Step {
        let c = self.c;
        Step::Reconcile(self.on_proxy(calls::Reconcile {
            state_dir: self.state_dir.clone(),
            app: Word::lit(&c.app),
            live: rt(RuntimeVar::LiveSlot),
            sudo: c.proxy.sudo,
            test_command: Word::lit(c.proxy.test_command.join(" ")),
            reload_command: Word::lit(c.proxy.reload_command.join(" ")),
        }))
    }

    /// The audit line of this plan's action, ending with `outcome`.
    fn audit(&self, outcome: &str) -> Step {
        Step::Audit(self.on_proxy(calls::Audit {
            state_dir: self.state_dir.clone(),
            event: Word::lit(self.action.name()),
            app: Word::lit(&self.c.app),
            outcome: Word::lit(outcome),
            target: rt(RuntimeVar::TargetSlot),
            from: rt(RuntimeVar::LiveSlot),
            release: rt(RuntimeVar::Release),
            deployer: rt(RuntimeVar::Deployer),
        }))
    }

    /// Stops the instance of `slot` (on `port`) on every app host.
    fn stops(&self, slot: RuntimeVar, port: RuntimeVar, when: When) -> Vec<Step> {
        self.servers
            .iter()
            .map(|h| {
                Step::Stop(RemoteStep {
                    host: h.id.clone(),
                    call: calls::Stop {
                        dir: self.slot_dir(slot),
                        port: rt(port),
                        signal: Word::lit(&self.c.stop.signal),
                        grace_secs: secs_ceil(self.c.stop.grace),
                    }
                    .into(),
                    when,
                })
            })
            .collect()
    }

    /// Points the proxy at `port`, then checks `check_url` through it.
    fn switch_step(&self, port: RuntimeVar, check_url: Option<Word>, when: When) -> Step {
        let c = self.c;
        Step::Switch(SwitchStep {
            host: PROXY_ID.into(),
            call: calls::Switch {
                state_dir: self.state_dir.clone(),
                upstream_file: Word::lit(&c.proxy.upstream_file),
                sudo: c.proxy.sudo,
                test_command: Word::lit(c.proxy.test_command.join(" ")),
                reload_command: Word::lit(c.proxy.reload_command.join(" ")),
                blue_port: c.slots.blue,
                green_port: c.slots.green,
                port: rt(port),
                header: Word::lit(format!("# managed by bluegreen for {}", c.app)),
                addresses: self.app_addresses(),
            }
            .into(),
            settle: calls::Settle {
                deadline_secs: secs_ceil(c.stop.grace),
            }
            .into(),
            check_url,
            check_status: c.health.status,
            check_tries: CHECK_TRIES,
            check_interval_ms: CHECK_INTERVAL_MS,
            check_timeout_ms: millis(c.health.timeout),
            when,
        })
    }

    // Values.

    /// A slot's directory on an app host: `deploy_dir/<slot>`.
    fn slot_dir(&self, slot: RuntimeVar) -> Word {
        Word::lit(format!("{}/", self.c.deploy_dir)).then_runtime(slot)
    }

    /// Where nginx reaches each app host.
    fn app_addresses(&self) -> Vec<Word> {
        self.servers.iter().map(|h| h.app_address.clone()).collect()
    }

    /// The plan, with these phases.
    fn plan(self, phases: Vec<Phase>) -> Plan {
        let c = self.c;
        let known_hosts = home_path(&c.ssh.known_hosts);
        let identity_file = c.ssh.identity_file.as_ref().map(home_path);
        let mut env = env_refs(c, &known_hosts, identity_file.as_ref());
        // A retire starts nothing: it needs no secret (a cron job running it need not hold them).
        let secrets = if self.action == Action::Retire {
            env.retain(|e| !e.field.starts_with("secrets["));
            Vec::new()
        } else {
            c.secrets.clone()
        };
        Plan {
            action: self.action,
            app: c.app.clone(),
            artifact: c.artifact.clone(),
            jar_name: self.jar_name.clone(),
            proxy: Host {
                id: PROXY_ID.into(),
                address: c.proxy.host.clone(),
                app_address: c.proxy.host.clone(),
                user: c.proxy.user.clone(),
                port: c.proxy.port,
            },
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
            heartbeat: Heartbeat {
                host: PROXY_ID.into(),
                state_dir: self.state_dir.clone(),
                token: rt(RuntimeVar::RunToken),
                lease_secs: secs_ceil(c.lock.stale_after),
                every_ms: millis(c.lock.stale_after) / 4,
            },
            env,
            secrets,
            slack: c.slack.clone(),
            jenkins: c.jenkins.clone(),
            start_template: c.start_template.clone(),
            deploy_dir: c.deploy_dir.clone(),
            servers: self.servers,
            config: Arc::new(c.clone()),
        }
    }
}

/// The environment variables the plan needs, once per field that uses each: the config's, then
/// the runner's home where `~/` became `${HOME}` (exec must look it up like any variable).
fn env_refs(c: &Config, known_hosts: &Word, identity_file: Option<&Word>) -> Vec<EnvRef> {
    let mut refs = c.env_refs();
    refs.push(("ssh.known_hosts".into(), known_hosts));
    if let Some(w) = identity_file {
        refs.push(("ssh.identity_file".into(), w));
    }
    let mut env: Vec<EnvRef> = Vec::new();
    for (field, word) in refs {
        for name in word.env_vars() {
            if !env.iter().any(|e| e.name == name && e.field == field) {
                env.push(EnvRef {
                    name: name.to_string(),
                    field: field.clone(),
                    file: field.starts_with("secrets[")
                        && c.secrets.iter().any(|s| s.file && s.name == name),
                });
            }
        }
    }
    env
}
