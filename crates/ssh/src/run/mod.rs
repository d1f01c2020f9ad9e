//! The runner: phases in order, steps on their hosts, clean-up on failure.

use crate::conn::{self, flag, Output, Worker};
use crate::error::{human, last_lines, Error};
use crate::event::{Event, Status, LOCAL};
use crate::fleet::Fleet;
use crate::http;
use crate::runtime::{
    clean_deployer, default_deployer, find_artifact, lookup, resolve, run_token, sha256_file, Env,
    Live, Runtime,
};
use crate::{short, ExecOptions, Summary};
use bluegreen_core::config::{ProbeFrom, Slack};
use bluegreen_core::plan::Action;
use bluegreen_core::plan::{
    CopyStep, DrainStep, HealthStep, NotifyStep, RemoteStep, RetainStep, SwitchStep, When,
};
use bluegreen_core::wording::{self, ProbeOutcome};
use bluegreen_core::{PhaseKind, Plan, RemoteCall, Step};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a long step reports that it is still waiting.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

enum Msg {
    Event(Event),
    Done(Result<(), Error>),
}

/// What a step thread reports through.
struct Em {
    tx: Sender<Msg>,
    phase: PhaseKind,
    cleanup: bool,
    /// Set when another step of the same parallel group failed.
    abort: Arc<AtomicBool>,
}

impl Em {
    fn send(&self, mut e: Event) {
        e.cleanup = self.cleanup;
        let _ = self.tx.send(Msg::Event(e));
    }

    fn event(&self, host: &str, step: &str, status: Status) -> Event {
        Event::new(host, self.phase.name(), step, status)
    }
}

/// How a step ended, when it did not fail.
struct Done {
    status: Status,
    message: String,
}

impl Done {
    fn ok(message: impl Into<String>) -> Done {
        Done {
            status: Status::Ok,
            message: message.into(),
        }
    }

    fn skip(message: impl Into<String>) -> Done {
        Done {
            status: Status::Skipped,
            message: message.into(),
        }
    }

    fn warn(message: impl Into<String>) -> Done {
        Done {
            status: Status::Warning,
            message: message.into(),
        }
    }
}

struct Ctx<'a> {
    plan: &'a Plan,
    opts: &'a ExecOptions,
    env: Env,
    rt: Mutex<Runtime>,
    workers: HashMap<String, Worker>,
    artifact: PathBuf,
    size: u64,
    locked: AtomicBool,
    /// The upstream points at the target slot (the switch call succeeded and was not undone).
    switched: AtomicBool,
    /// Switching back failed after the switch: the new instances serve traffic and must not stop.
    keep_new: AtomicBool,
    /// Another run took the deploy lock over (this run's renewals stopped reaching the proxy).
    lost_lock: AtomicBool,
    /// The step before which to die (crash tests: [`bluegreen_core::plan::KILL_AT_STEP_ENV`]).
    kill_at: Option<usize>,
    started: Instant,
}

pub(crate) fn run(
    plan: &Plan,
    opts: &ExecOptions,
    out: &mut dyn FnMut(&Event),
) -> Result<Summary, Error> {
    let started = Instant::now();
    let env = Env::resolve(&plan.env, &*opts.env)?;

    // Only a deploy uploads: a rollback or a retire never looks at the artifact (the release of a
    // rollback is read from the slot it goes back to, by the plan's `inspect` step).
    let (artifact, release, size) = if plan.action == Action::Deploy {
        let t = Instant::now();
        let pattern = env.word(&plan.artifact, "artifact")?;
        let artifact = find_artifact(&pattern)?;
        let (release, size) = sha256_file(&artifact)?;
        out(&Event::new(LOCAL, "prepare", "artifact", Status::Ok)
            .took(t.elapsed())
            .msg(format!(
                "{} ({}, sha256 {})",
                artifact.display(),
                mib(size),
                short(&release)
            )));
        (artifact, release, size)
    } else {
        (PathBuf::new(), String::new(), 0)
    };
    let deployer = match &opts.deployer {
        Some(d) => clean_deployer(d),
        None => default_deployer(&*opts.env),
    };
    let rt = Runtime {
        slots: plan.slots,
        live: None,
        release: release.clone(),
        deployer: deployer.clone(),
        token: run_token(),
    };

    let t = Instant::now();
    let (workers, beat_worker) = match connect_all(plan, &env, opts, out) {
        Ok(w) => w,
        Err(e) => {
            notify_failure(plan, opts, &rt, "connect", started.elapsed(), &e, out);
            return Err(e);
        }
    };
    let connect = t.elapsed();

    let ctx = Ctx {
        plan,
        opts,
        env,
        rt: Mutex::new(rt),
        workers,
        artifact: artifact.clone(),
        size,
        locked: AtomicBool::new(false),
        switched: AtomicBool::new(false),
        keep_new: AtomicBool::new(false),
        lost_lock: AtomicBool::new(false),
        kill_at: (opts.env)(bluegreen_core::plan::KILL_AT_STEP_ENV).and_then(|v| v.parse().ok()),
        started,
    };
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| ctx.heartbeat(&beat_worker, &done));
        let r = ctx.run_phases(&artifact, size, &deployer, connect, out);
        done.store(true, Ordering::SeqCst);
        r
    })
}

impl Ctx<'_> {
    /// Renews the deploy lock every `plan.heartbeat.every_ms` while this run holds it, over a
    /// connection of its own (a long call on the proxy's main connection cannot delay it), until
    /// `done`. A renewal refused because another run took the lock over stops the deploy before
    /// its switch.
    fn heartbeat(&self, worker: &Worker, done: &AtomicBool) {
        let hb = &self.plan.heartbeat;
        let every = Duration::from_millis(hb.every_ms.max(100));
        let mut next = Instant::now() + every;
        while !done.load(Ordering::SeqCst) {
            if Instant::now() < next {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            next = Instant::now() + every;
            if !self.locked.load(Ordering::SeqCst) {
                continue;
            }
            let rt = self.rt();
            let Ok(line) = hb
                .call
                .call_line(|v| lookup(v, &self.env, &rt, "heartbeat"))
            else {
                continue;
            };
            if let Ok(Ok(out)) = worker.run("heartbeat", move |r| r.call(&line, Duration::ZERO)) {
                if out.status == 1 && self.locked.load(Ordering::SeqCst) {
                    self.lost_lock.store(true, Ordering::SeqCst);
                }
            }
        }
    }

    fn run_phases(
        &self,
        artifact: &std::path::Path,
        size: u64,
        deployer: &str,
        connect: Duration,
        out: &mut dyn FnMut(&Event),
    ) -> Result<Summary, Error> {
        let (ctx, plan, opts, started) = (self, self.plan, self.opts, self.started);
        let mut phases = Vec::new();
        for phase in &plan.phases {
            let t = Instant::now();
            let steps: Vec<&Step> = phase.steps.iter().collect();
            let result = if flag(&opts.interrupt) {
                Err(ctx.interrupted(phase.kind))
            } else {
                ctx.run_steps(phase.kind, &steps, phase.parallel, false, out)
            };
            phases.push((phase.kind, t.elapsed()));
            if let Err(e) = result {
                // Only release a lock this deploy took: a failed `lock` means someone else holds it.
                let cleanup: Vec<&Step> = phase
                    .on_failure
                    .iter()
                    .filter(|s| !matches!(s, Step::Unlock(_)) || ctx.locked.load(Ordering::SeqCst))
                    .collect();
                if !cleanup.is_empty() {
                    let names: Vec<String> = cleanup
                        .iter()
                        .map(|s| match s.host() {
                            Some(h) => format!("{} {h}", s.name()),
                            None => s.name().to_string(),
                        })
                        .collect();
                    out(
                        &Event::new(LOCAL, phase.kind.name(), "cleanup", Status::Started).msg(
                            format!("{} failed: {}", phase.kind.name(), names.join(", ")),
                        ),
                    );
                    let _ = ctx.run_steps(phase.kind, &cleanup, false, true, out);
                }
                let rt = ctx.rt();
                if !matches!(e, Error::Refused { .. }) {
                    notify_failure(
                        plan,
                        opts,
                        &rt,
                        phase.kind.name(),
                        started.elapsed(),
                        &e,
                        out,
                    );
                }
                return Err(e);
            }
        }
        let rt = ctx.rt();
        let live = rt.live.unwrap_or(Live::None);
        Ok(Summary {
            action: plan.action,
            app: plan.app.clone(),
            target: live.target().to_string(),
            previous: live.name().to_string(),
            release: rt.release.clone(),
            artifact: artifact.to_path_buf(),
            artifact_bytes: size,
            deployer: deployer.to_string(),
            connect,
            phases,
            total: started.elapsed(),
        })
    }
}

/// Connects to the proxy and every app host at once, and a second time to the proxy for the lock's
/// heartbeat, reporting each host's connection as it ends; the first host that fails, in plan
/// order, fails the run.
fn connect_all(
    plan: &Plan,
    env: &Env,
    opts: &ExecOptions,
    out: &mut dyn FnMut(&Event),
) -> Result<(HashMap<String, Worker>, Worker), Error> {
    let fleet = Fleet::new(plan, env, opts)?;
    let t = Instant::now();
    let beat = fleet.start_extra(&plan.heartbeat.host)?;
    let conns = fleet.connect(None, &mut |id, result| match result {
        Ok(c) => {
            out(&Event::new(id, "connect", "connect", Status::Ok)
                .took(t.elapsed())
                .msg(c.message.clone()));
            if let Some(warning) = &c.warning {
                out(&Event::new(id, "connect", "hostkey", Status::Warning).msg(warning.clone()));
            }
        }
        Err(e) => out(&Event::new(id, "connect", "connect", Status::Failed)
            .took(t.elapsed())
            .msg(strip_host(e))),
    });
    let mut workers = HashMap::new();
    let mut first_err = None;
    for c in conns {
        match c.worker {
            Ok(w) => {
                workers.insert(c.id, w);
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => beat.wait().map(|(w, _)| (workers, w)),
    }
}

/// The error's message without the leading `host: `, for events that already name the host.
pub(crate) fn strip_host(e: &Error) -> String {
    let m = e.to_string();
    match e.host() {
        Some(h) => m
            .strip_prefix(&format!("{h}: "))
            .map(str::to_string)
            .unwrap_or(m),
        None => m,
    }
}

/// The holder recorded in a lock, from what `lock` prints when the lock is held.
pub(crate) fn lock_holder(stderr: &str) -> Option<String> {
    let line = stderr.lines().rfind(|l| l.contains("is held"))?;
    let (_, info) = line.split_once("is held: ")?;
    // Without the expiry, which changes at every renewal.
    let info = info.split("; renewed until").next().unwrap_or(info);
    Some(info.trim().to_string())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

pub(crate) fn last_line(s: &str) -> String {
    last_lines(s, 1)
}

impl Ctx<'_> {
    fn rt(&self) -> Runtime {
        self.rt
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_live(&self, live: Live) {
        self.rt
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .live = Some(live);
    }

    fn interrupted(&self, kind: PhaseKind) -> Error {
        let rt = self.rt();
        let outcome = match kind {
            PhaseKind::Prepare => "nothing was changed; the lock is released".to_string(),
            PhaseKind::Upload | PhaseKind::Start | PhaseKind::Verify => {
                "the new instances are stopped, the lock is released, traffic was not touched"
                    .to_string()
            }
            PhaseKind::Switch | PhaseKind::Promote => {
                "the upstream is switched back where it had moved, the new instances are stopped, the lock is released"
                    .to_string()
            }
            PhaseKind::Drain | PhaseKind::Retire | PhaseKind::Finish => format!(
                "traffic is already on {}; the old slot {} may still be running; the lock is released",
                rt.live.unwrap_or(Live::None).target(),
                rt.live.unwrap_or(Live::None).name()
            ),
        };
        Error::Interrupted {
            phase: kind.name().to_string(),
            outcome,
        }
    }

    /// Why a step stops early: Ctrl-C, or another host of the same phase failed.
    fn stop_reason(&self, em: &Em) -> Option<Error> {
        if em.cleanup {
            return None;
        }
        if flag(&self.opts.interrupt) {
            return Some(self.interrupted(em.phase));
        }
        if flag(&em.abort) {
            return Some(Error::Interrupted {
                phase: em.phase.name().to_string(),
                outcome: "cancelled because another host failed".into(),
            });
        }
        None
    }

    /// Sleeps up to `d`, waking early to stop.
    fn sleep(&self, d: Duration, em: &Em) -> Result<(), Error> {
        let end = Instant::now() + d;
        loop {
            if let Some(e) = self.stop_reason(em) {
                return Err(e);
            }
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            std::thread::sleep((end - now).min(Duration::from_millis(100)));
        }
    }

    fn worker(&self, host: &str, step: &str) -> Result<&Worker, Error> {
        self.workers.get(host).ok_or_else(|| Error::Ssh {
            host: host.to_string(),
            step: step.to_string(),
            message: "no connection to this host".into(),
        })
    }

    /// Runs `steps`, all at once or one after another. On failure of a step, the others of a
    /// parallel group are told to stop; sequentially, nothing further runs unless `cleanup`.
    fn run_steps(
        &self,
        phase: PhaseKind,
        steps: &[&Step],
        parallel: bool,
        cleanup: bool,
        out: &mut dyn FnMut(&Event),
    ) -> Result<(), Error> {
        let groups: Vec<Vec<&Step>> = if parallel {
            vec![steps.to_vec()]
        } else {
            steps.iter().map(|s| vec![*s]).collect()
        };
        let mut first_err = None;
        std::thread::scope(|scope| {
            for group in groups {
                let (tx, rx) = mpsc::channel();
                let abort = Arc::new(AtomicBool::new(false));
                for step in &group {
                    let em = Em {
                        tx: tx.clone(),
                        phase,
                        cleanup,
                        abort: abort.clone(),
                    };
                    let step: &Step = step;
                    scope.spawn(move || {
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            self.run_step(step, &em)
                        }))
                        .unwrap_or_else(|_| {
                            Err(Error::Ssh {
                                host: step.host().unwrap_or(LOCAL).to_string(),
                                step: step.name().to_string(),
                                message: "internal error (panic)".into(),
                            })
                        });
                        let _ = em.tx.send(Msg::Done(r));
                    });
                }
                drop(tx);
                let mut pending = group.len();
                while pending > 0 {
                    match rx.recv() {
                        Ok(Msg::Event(e)) => out(&e),
                        Ok(Msg::Done(r)) => {
                            pending -= 1;
                            if let Err(e) = r {
                                abort.store(true, Ordering::SeqCst);
                                first_err.get_or_insert(e);
                            }
                        }
                        Err(_) => break,
                    }
                }
                if first_err.is_some() && !cleanup {
                    break;
                }
            }
        });
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Runs one step, reporting its start and its end.
    fn run_step(&self, step: &Step, em: &Em) -> Result<(), Error> {
        if !em.cleanup && self.kill_at.is_some() && self.kill_at == self.plan.step_number(step) {
            // The crash tests' fault: die here as a killed runner does, with nothing cleaned up.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &std::process::id().to_string()])
                .status();
            std::process::abort();
        }
        let host = step.host().unwrap_or(LOCAL);
        let name = step.name();
        let rt = self.rt();
        let when = match step {
            Step::Switch(s) => s.when,
            _ => step.remote().map_or(When::Always, |s| s.when),
        };
        let skip = if when == When::LiveExists && !rt.live_exists() {
            Some("no slot was live before this deploy")
        } else if rt.live.is_none() && em.cleanup && !matches!(step, Step::Unlock(_)) {
            Some("nothing to undo: the live slot was never read")
        } else if em.cleanup
            && matches!(step, Step::Switch(_))
            && !self.switched.load(Ordering::SeqCst)
        {
            Some("the upstream was not changed: nothing to switch back")
        } else if em.cleanup
            && matches!(step, Step::Stop(_))
            && self.keep_new.load(Ordering::SeqCst)
        {
            Some("left running: the switch back could not be confirmed, so the new slot may still serve traffic")
        } else {
            None
        };
        if let Some(why) = skip {
            em.send(em.event(host, name, Status::Skipped).msg(why));
            return Ok(());
        }
        if let Some(e) = self.stop_reason(em) {
            em.send(em.event(host, name, Status::Failed).msg(strip_host(&e)));
            return Err(e);
        }
        let mut started = em.event(host, name, Status::Started);
        if self.opts.verbose {
            let call = match step {
                Step::Switch(s) => Some(&s.call),
                _ => step.remote().map(|s| &s.call),
            };
            if let Some(c) = call {
                started.command = c.call_line(|v| lookup(v, &self.env, &rt, name)).ok();
            }
        }
        em.send(started);
        let t = Instant::now();
        let result = match step {
            Step::Intent(_) if self.lost_lock.load(Ordering::SeqCst) => Err(Error::LockLost {
                host: self.plan.heartbeat.host.clone(),
                stale_after: Duration::from_millis(self.plan.heartbeat.every_ms * 4),
            }),
            Step::Lock(s)
            | Step::Detect(s)
            | Step::Reconcile(s)
            | Step::Intent(s)
            | Step::Start(s)
            | Step::Record(s)
            | Step::Inspect(s)
            | Step::Audit(s)
            | Step::Stop(s)
            | Step::Unlock(s) => self.remote(step, s, em),
            Step::Copy(c) => self.copy(c, em),
            Step::Health(h) => self.health(h, em),
            Step::Switch(s) => self.switch(s, em),
            Step::Drain(d) => self.drain(d, em),
            Step::Retain(r) => Ok(self.retain(r)),
            Step::Notify(n) => Ok(self.notify_success(n)),
        };
        match result {
            Ok(done) => {
                em.send(
                    em.event(host, name, done.status)
                        .took(t.elapsed())
                        .msg(done.message),
                );
                Ok(())
            }
            Err(e) => {
                em.send(
                    em.event(host, name, Status::Failed)
                        .took(t.elapsed())
                        .msg(strip_host(&e)),
                );
                Err(e)
            }
        }
    }

    /// One remote call; a non-zero exit is an [`Error::Remote`].
    fn call(
        &self,
        host: &str,
        step: &str,
        call: &RemoteCall,
        em: &Em,
        show: bool,
    ) -> Result<Output, Error> {
        self.call_raw(host, step, call, em, show)?
            .success(host, step)
    }

    /// One remote call, whatever its exit status. With `show` and verbose on, the call line is
    /// reported first.
    fn call_raw(
        &self,
        host: &str,
        step: &str,
        call: &RemoteCall,
        em: &Em,
        show: bool,
    ) -> Result<Output, Error> {
        let rt = self.rt();
        let line = call.call_line(|v| lookup(v, &self.env, &rt, step))?;
        if show && self.opts.verbose {
            let mut e = em.event(host, step, Status::Progress);
            e.command = Some(line.clone());
            em.send(e);
        }
        let worker = self.worker(host, step)?;
        let wait = Duration::from_secs(call.wait_secs);
        worker
            .run(step, move |r| r.call(&line, wait))?
            .map_err(|message| Error::Ssh {
                host: host.to_string(),
                step: step.to_string(),
                message,
            })
    }

    /// Takes the deploy lock; while another run holds it, retries every second until
    /// [`ExecOptions::lock_wait`] has passed, saying who holds it.
    fn lock(&self, s: &RemoteStep, em: &Em) -> Result<Done, Error> {
        let t0 = Instant::now();
        let wait = self.opts.lock_wait;
        let mut last_holder = String::new();
        loop {
            let out = self.call_raw(&s.host, "lock", &s.call, em, false)?;
            if out.status == 0 {
                self.locked.store(true, Ordering::SeqCst);
                let mut message = last_line(&out.stdout);
                if !last_holder.is_empty() {
                    message.push_str(&format!(" after waiting {}", human(t0.elapsed())));
                }
                return Ok(Done::ok(message));
            }
            let stderr = last_lines(&out.stderr, 5);
            let Some(holder) = lock_holder(&stderr) else {
                return Err(Error::Remote {
                    host: s.host.clone(),
                    step: "lock".into(),
                    status: out.status,
                    stderr,
                });
            };
            let waited = t0.elapsed();
            if waited >= wait {
                return Err(Error::LockHeld {
                    host: s.host.clone(),
                    holder,
                    waited: if wait.is_zero() { wait } else { waited },
                });
            }
            if holder != last_holder {
                em.send(
                    em.event(&s.host, "lock", Status::Progress)
                        .took(waited)
                        .msg(format!(
                            "held by {holder}; waiting up to {} for it (retrying every second)",
                            human(wait - waited)
                        )),
                );
                last_holder = holder;
            }
            self.sleep(Duration::from_secs(1).min(wait - waited), em)?;
        }
    }

    fn remote(&self, step: &Step, s: &RemoteStep, em: &Em) -> Result<Done, Error> {
        let name = step.name();
        if let Step::Lock(_) = step {
            return self.lock(s, em);
        }
        if let Step::Inspect(_) = step {
            let out = self.call_raw(&s.host, name, &s.call, em, false)?;
            if out.status != 0 {
                // `release` fails only when the slot keeps no release: nothing to roll back to.
                let why = last_line(&out.stderr);
                return Err(Error::Refused {
                    message: format!(
                        "{}: {}",
                        s.host,
                        why.strip_prefix("bluegreen: ").unwrap_or(&why)
                    ),
                });
            }
            let release = last_line(&out.stdout);
            self.rt
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .release = release.clone();
            return Ok(Done::ok(format!("kept release {release}")));
        }
        let out = self.call(&s.host, name, &s.call, em, false)?;
        let mut message = last_line(&out.stdout);
        match step {
            Step::Unlock(_) => self.locked.store(false, Ordering::SeqCst),
            Step::Detect(_) => {
                let live = Live::parse(&out.stdout).ok_or_else(|| Error::Detect {
                    host: s.host.clone(),
                    output: last_line(&out.stdout),
                })?;
                self.set_live(live);
                let port = if live.target() == "blue" {
                    self.plan.slots.blue
                } else {
                    self.plan.slots.green
                };
                let verb = match self.plan.action {
                    Action::Deploy => "deploying to",
                    Action::Rollback => "rolling back to",
                    Action::Retire => "retiring",
                };
                if self.plan.action != Action::Deploy && live == Live::None {
                    return Err(Error::Refused {
                        message: format!(
                            "{}: no slot is live (the upstream file points at none): nothing to {}",
                            s.host,
                            if self.plan.action == Action::Rollback {
                                "roll back to"
                            } else {
                                "retire"
                            }
                        ),
                    });
                }
                message = format!(
                    "live: {}, {verb} {} (port {port})",
                    live.name(),
                    live.target()
                );
                let note = last_line(&out.stderr);
                if !note.is_empty() {
                    message.push_str(&format!(" ({note})"));
                }
            }
            _ => {}
        }
        Ok(Done::ok(message))
    }

    fn copy(&self, c: &CopyStep, em: &Em) -> Result<Done, Error> {
        let rt = self.rt();
        let dir = resolve(&c.dir, &self.env, &rt, "copy")?;
        let prepared = self.call(&c.host, "copy", &c.prepare, em, true)?;
        let free_kib = prepared
            .stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix("free_kib="))
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(kib) = free_kib {
            if kib.saturating_mul(1024) < self.size {
                return Err(Error::Ssh {
                    host: c.host.clone(),
                    step: "copy".into(),
                    message: format!(
                        "only {} free in {dir}, the artifact needs {}",
                        mib(kib * 1024),
                        mib(self.size)
                    ),
                });
            }
        }
        let remote = PathBuf::from(format!("{dir}/{}", c.tmp_name));
        let local = self.artifact.clone();
        let interrupt = self.opts.interrupt.clone();
        let abort = em.abort.clone();
        let worker = self.worker(&c.host, "copy")?;
        let uploaded = worker.run("copy", move |r| {
            conn::upload(&r.sess, &local, &remote, &|| {
                flag(&interrupt) || flag(&abort)
            })
        })?;
        let (bytes, took) = match uploaded {
            Ok(v) => v,
            Err(message) => {
                return Err(self.stop_reason(em).unwrap_or(Error::Ssh {
                    host: c.host.clone(),
                    step: "copy".into(),
                    message,
                }))
            }
        };
        self.call(&c.host, "copy", &c.install, em, true)?;
        let rate = bytes as f64 / (1024.0 * 1024.0) / took.as_secs_f64().max(1e-6);
        Ok(Done::ok(format!(
            "{} to {dir} in {} ({rate:.0} MiB/s over sftp), sha256 checked",
            mib(bytes),
            human(took)
        )))
    }

    fn health(&self, h: &HealthStep, em: &Em) -> Result<Done, Error> {
        let rt = self.rt();
        let url = match (h.from, h.probe.args.first()) {
            (ProbeFrom::Host, Some(w)) => {
                format!("{} on {}", resolve(w, &self.env, &rt, "health")?, h.host)
            }
            _ => resolve(&h.url, &self.env, &rt, "health")?,
        };
        let deadline = Duration::from_millis(h.deadline_ms);
        let interval = Duration::from_millis(h.interval_ms.max(10));
        let timeout = Duration::from_millis(h.timeout_ms.max(10));
        let need = h.successes.max(1);
        let t0 = Instant::now();
        let mut next_note = t0 + PROGRESS_EVERY;
        let mut good = 0u32;
        let mut probes = 0u32;
        let mut last = String::from("no probe answered yet");
        loop {
            if let Some(e) = self.stop_reason(em) {
                return Err(e);
            }
            probes += 1;
            let result = match h.from {
                ProbeFrom::Runner => http::probe(&url, h.status, h.body.as_deref(), timeout)
                    .map_err(|o| o.to_string()),
                ProbeFrom::Host => {
                    let out = self.call(&h.host, "health", &h.probe, em, probes == 1)?;
                    let line = last_line(&out.stdout);
                    if line.starts_with("ok") {
                        Ok(())
                    } else {
                        let code = line.trim_start_matches("bad").trim();
                        Err(match code.parse::<u16>() {
                            Ok(c) if c > 0 => ProbeOutcome::Status(c),
                            _ => ProbeOutcome::NoAnswer("probed from the host".into()),
                        }
                        .to_string())
                    }
                }
            };
            match result {
                Ok(()) => {
                    good += 1;
                    if good >= need {
                        let (took, probes) = (human(t0.elapsed()), probes.to_string());
                        return Ok(Done::ok(
                            wording::HEALTHY
                                .fill(|n| match n {
                                    "took" => Some(took.as_str()),
                                    "probes" => Some(probes.as_str()),
                                    "url" => Some(url.as_str()),
                                    _ => None,
                                })
                                .unwrap_or_default(),
                        ));
                    }
                }
                Err(m) => {
                    good = 0;
                    last = m;
                    self.check_alive(h, em, t0)?;
                }
            }
            let elapsed = t0.elapsed();
            if elapsed >= deadline {
                if good > 0 {
                    last = wording::good_in_a_row(good, need);
                }
                return Err(Error::Health {
                    host: h.host.clone(),
                    url,
                    last,
                    deadline,
                });
            }
            if Instant::now() >= next_note {
                next_note += PROGRESS_EVERY;
                em.send(
                    em.event(&h.host, "health", Status::Progress)
                        .took(elapsed)
                        .msg(format!("waiting for {url}: {last}")),
                );
            }
            self.sleep(interval.min(deadline - elapsed), em)?;
        }
    }

    /// After a failed probe: fails at once, with the exit status and the log's last lines, when the
    /// new instance is no longer running, rather than polling a dead port until the deadline. Only
    /// the host's definite answer counts: if the host cannot be asked (a cut link), polling goes on
    /// and the deadline reports the health failure, as it would without this check.
    fn check_alive(&self, h: &HealthStep, em: &Em, t0: Instant) -> Result<(), Error> {
        let Ok(out) = self.call_raw(&h.host, "health", &h.alive, em, false) else {
            return Ok(());
        };
        if out.status != 1 {
            return Ok(());
        }
        let lines: Vec<&str> = out.stderr.lines().collect();
        let (what, log) = match lines.split_last() {
            Some((last, rest)) => (
                last.trim_start_matches("bluegreen: ").to_string(),
                rest.join("\n"),
            ),
            None => (
                format!("the new instance is not running (exit {})", out.status),
                String::new(),
            ),
        };
        Err(Error::Died {
            host: h.host.clone(),
            what,
            after: t0.elapsed(),
            log,
        })
    }

    fn switch(&self, s: &SwitchStep, em: &Em) -> Result<Done, Error> {
        let rt = self.rt();
        let back = s.when == When::LiveExists;
        let out = match self.call_raw(&s.host, "switch", &s.call, em, false) {
            Ok(out) => out,
            Err(e) => {
                // The call may or may not have reached nginx: assume the worst either way.
                if back {
                    self.keep_new.store(true, Ordering::SeqCst);
                } else {
                    self.switched.store(true, Ordering::SeqCst);
                }
                return Err(e);
            }
        };
        if out.status != 0 && back {
            // bg_switch restored the file it replaced: traffic stays on the new slot.
            self.keep_new.store(true, Ordering::SeqCst);
            return Err(Error::Remote {
                host: s.host.clone(),
                step: "switch back".into(),
                status: out.status,
                stderr: last_lines(&out.stderr, 5),
            });
        }
        if out.status != 0 {
            // Exit 1: nginx was never reloaded. Anything else (3: reloaded, then put back; a
            // killed call) may have sent requests to the new slot: switch back as after a switch,
            // waiting for nginx's old workers before the new instances stop.
            if out.status != 1 {
                self.switched.store(true, Ordering::SeqCst);
            }
            return Err(Error::Switch {
                host: s.host.clone(),
                status: out.status,
                stderr: last_lines(&out.stderr, 5),
            });
        }
        self.switched.store(!back, Ordering::SeqCst);
        let settled = self.call(&s.host, "switch", &s.settle, em, true)?;
        let live = rt.live.unwrap_or(Live::None);
        let (slot, port) = if back {
            (
                live.name(),
                rt.get(bluegreen_core::RuntimeVar::LivePort)
                    .unwrap_or_default(),
            )
        } else {
            (
                live.target(),
                rt.get(bluegreen_core::RuntimeVar::TargetPort)
                    .unwrap_or_default(),
            )
        };
        let mut message = format!(
            "traffic {} {slot} (port {port}); {}",
            if back { "back on" } else { "on" },
            last_line(&settled.stdout)
        );
        if let Some(u) = &s.check_url {
            let url = resolve(u, &self.env, &rt, "switch")?;
            let mut last = String::new();
            let mut ok = false;
            // The plan's tries (the script makes the same): few and quick, since while the check
            // fails traffic may be failing too, and the switch back is what ends that.
            for attempt in 0..s.check_tries.max(1) {
                if attempt > 0 {
                    std::thread::sleep(Duration::from_millis(s.check_interval_ms));
                }
                let timeout = Duration::from_millis(s.check_timeout_ms.max(10));
                match http::probe(&url, s.check_status, None, timeout) {
                    Ok(()) => {
                        ok = true;
                        break;
                    }
                    Err(o) => last = o.to_string(),
                }
            }
            if !ok {
                return Err(Error::Check {
                    host: s.host.clone(),
                    url,
                    expected: s.check_status,
                    last,
                });
            }
            message.push_str(&format!(
                "; GET {}: {}",
                bluegreen_core::redact_url(&url),
                s.check_status
            ));
        }
        Ok(Done::ok(message))
    }

    fn drain(&self, d: &DrainStep, em: &Em) -> Result<Done, Error> {
        let t = Duration::from_millis(d.millis);
        self.sleep(t, em)?;
        Ok(Done::ok(format!(
            "waited {} for in-flight requests",
            human(t)
        )))
    }

    fn retain(&self, r: &RetainStep) -> Done {
        let rt = self.rt();
        match rt.live {
            Some(live @ (Live::Blue | Live::Green)) => Done::ok(format!(
                "{} keeps running on port {} for the {}s rollback window (the next deploy to it stops it)",
                live.name(),
                rt.get(bluegreen_core::RuntimeVar::LivePort).unwrap_or_default(),
                r.seconds
            )),
            _ => Done::skip("no old slot to retain (first deploy)"),
        }
    }

    fn notify_success(&self, n: &NotifyStep) -> Done {
        let rt = self.rt();
        let live = rt.live.unwrap_or(Live::None);
        let took = human(self.started.elapsed());
        let (app, release, target, who) = (
            &self.plan.app,
            short(&rt.release),
            live.target(),
            &rt.deployer,
        );
        let text = wording::notify_success(self.plan.action)
            .fill(|n| match n {
                "app" => Some(app.as_str()),
                "release" => Some(release),
                "target" => Some(target),
                "previous" => Some(live.name()),
                "took" => Some(took.as_str()),
                "who" => Some(who.as_str()),
                _ => None,
            })
            .unwrap_or_default();
        match send_slack(&n.channel, &n.webhook_env, &text, self.opts) {
            SlackResult::Sent => Done::ok(format!("posted to {}", n.channel)),
            SlackResult::NotSet => Done::skip(format!("${} is not set", n.webhook_env)),
            SlackResult::Failed(m) => Done::warn(m),
        }
    }
}

enum SlackResult {
    Sent,
    NotSet,
    Failed(String),
}

fn send_slack(channel: &str, webhook_env: &str, text: &str, opts: &ExecOptions) -> SlackResult {
    let Some(url) = (opts.env)(webhook_env).filter(|u| !u.trim().is_empty()) else {
        return SlackResult::NotSet;
    };
    match http::post_slack(url.trim(), &http::slack_payload(channel, text)) {
        Ok(()) => SlackResult::Sent,
        Err(m) => SlackResult::Failed(m),
    }
}

/// Tells Slack (when configured and its webhook variable is set) that the deploy failed.
fn notify_failure(
    plan: &Plan,
    opts: &ExecOptions,
    rt: &Runtime,
    phase: &str,
    took: Duration,
    error: &Error,
    out: &mut dyn FnMut(&Event),
) {
    let Some(Slack {
        channel,
        webhook_env,
        ..
    }) = &plan.slack
    else {
        return;
    };
    // Only actions whose plan notifies on success (deploy, rollback) notify failures.
    let notifies = plan
        .phases
        .iter()
        .flat_map(|p| &p.steps)
        .any(|s| matches!(s, Step::Notify(_)));
    if !notifies {
        return;
    }
    let target = rt.live.map_or("?", |l| l.target());
    let first_line = error.to_string();
    let first_line = first_line.lines().next().unwrap_or_default();
    let release = if rt.release.is_empty() {
        "(release unknown)"
    } else {
        short(&rt.release)
    };
    let took = human(took);
    let text = wording::NOTIFY_FAILURE
        .fill(|n| match n {
            "app" => Some(plan.app.as_str()),
            "action" => Some(plan.action.name()),
            "release" => Some(release),
            "target" => Some(target),
            "who" => Some(rt.deployer.as_str()),
            "phase" => Some(phase),
            "took" => Some(took.as_str()),
            "error" => Some(first_line),
            _ => None,
        })
        .unwrap_or_default();
    let t = Instant::now();
    let event = |status| Event::new(LOCAL, phase, "notify", status).took(t.elapsed());
    match send_slack(channel, webhook_env, &text, opts) {
        SlackResult::Sent => out(&event(Status::Ok).msg(format!("failure posted to {channel}"))),
        SlackResult::NotSet => {}
        SlackResult::Failed(m) => out(&event(Status::Warning).msg(m)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_holder_leaves_out_the_changing_expiry() {
        let held = "bluegreen: deploy lock /s/lock is held: holder=ci-7 since 2026-01-01T00:00:00Z (deploy of shop); renewed until 12s from now\n";
        assert_eq!(
            lock_holder(held).as_deref(),
            Some("holder=ci-7 since 2026-01-01T00:00:00Z (deploy of shop)")
        );
        assert_eq!(lock_holder("bluegreen: cannot take the lock\n"), None);
    }

    #[test]
    fn events_without_host_prefix() {
        let e = Error::Remote {
            host: "app1".into(),
            step: "start".into(),
            status: 1,
            stderr: "bluegreen: port 8081 is in use".into(),
        };
        assert_eq!(
            strip_host(&e),
            "start failed (exit 1): bluegreen: port 8081 is in use"
        );
    }
}
