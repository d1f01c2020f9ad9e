//! The run: its context, the phases in order with their steps on their hosts (at once or one after
//! another), clean-up on failure, interruption, and the lock's heartbeat. What each kind of step
//! does is in [`steps`]; the Slack texts of success and failure are in [`notify`].

mod hook;
mod notify;
mod steps;

pub(crate) use steps::lock_holder;

use crate::conn::{flag, Worker};
use crate::error::Error;
use crate::event::{Event, Status, LOCAL};
use crate::fleet::Fleet;
use crate::runtime::{
    clean_deployer, default_deployer, find_artifact, lookup, run_token, sha256_file, Env, Live,
    Runtime,
};
use crate::{short, ExecOptions, Summary};
use bluegreen_core::plan::{Action, When};
use bluegreen_core::{PhaseKind, Plan, Step, Var};
use notify::notify_failure;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// What a step thread sends to the run's thread.
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

/// What every step of a run shares: the plan, the connections, what the run has learnt so far.
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

/// Runs `plan`, reporting to `out`: the crate's [`crate::run()`].
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
    let done = (Mutex::new(false), Condvar::new());
    std::thread::scope(|scope| {
        scope.spawn(|| ctx.heartbeat(&beat_worker, &done));
        let r = ctx.run_phases(&artifact, size, &deployer, connect, out);
        // The heartbeat thread wakes at once: the run's end does not wait for its next beat.
        *done
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        done.1.notify_all();
        r
    })
}

impl Ctx<'_> {
    /// Renews the deploy lock every `plan.heartbeat.every_ms` while this run holds it, over a
    /// connection of its own (a long call on the proxy's main connection cannot delay it), until
    /// `done`. A renewal refused because another run took the lock over stops the deploy before
    /// its switch.
    fn heartbeat(&self, worker: &Worker, done: &(Mutex<bool>, Condvar)) {
        let hb = &self.plan.heartbeat;
        let every = Duration::from_millis(hb.every_ms.max(100));
        loop {
            let (lock, wake) = done;
            let stop = lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let (stop, _) = wake
                .wait_timeout_while(stop, every, |stop| !*stop)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *stop {
                return;
            }
            drop(stop);
            if !self.locked.load(Ordering::SeqCst) {
                continue;
            }
            let rt = self.rt();
            let Ok(line) = hb
                .call()
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
                ctx.run_steps(phase.kind, &steps, phase.parallel, phase.limit, false, out)
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
                    let _ = ctx.run_steps(phase.kind, &cleanup, false, None, true, out);
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

/// A size in MiB, as messages give it.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
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
            PhaseKind::PreDeploy => {
                "nothing was uploaded or started; the lock is released".to_string()
            }
            PhaseKind::Upload
            | PhaseKind::Start
            | PhaseKind::Verify
            | PhaseKind::PreSwitch => {
                "the new instances are stopped, the lock is released, traffic was not touched"
                    .to_string()
            }
            PhaseKind::Switch | PhaseKind::PostSwitch | PhaseKind::Promote => {
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

    /// Runs `steps`, all at once (at most `limit` at a time) or one after another. On failure of
    /// a step, the others of a parallel group are told to stop; sequentially, nothing further runs
    /// unless `cleanup`.
    fn run_steps(
        &self,
        phase: PhaseKind,
        steps: &[&Step],
        parallel: bool,
        limit: Option<usize>,
        cleanup: bool,
        out: &mut dyn FnMut(&Event),
    ) -> Result<(), Error> {
        // Free places for steps of a limited group: a step waits for one, and gives it back.
        let places = (
            Mutex::new(limit.unwrap_or(usize::MAX).max(1)),
            Condvar::new(),
        );
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
                    let places = &places;
                    scope.spawn(move || {
                        let (free, freed) = places;
                        {
                            let free = free
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            let mut free = freed
                                .wait_while(free, |n| *n == 0)
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            *free -= 1;
                        }
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
                        *free
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
                        freed.notify_one();
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
                Step::Hook(h) => Some(&h.call),
                _ => step.remote().map(|s| &s.call),
            };
            if let Some(c) = call {
                // A secret's value never shows: the command line says `***` for it.
                started.command = c
                    .call_line(|v| match v {
                        Var::Env(n) | Var::File(n)
                            if self.plan.secrets.iter().any(|s| &s.name == n) =>
                        {
                            Ok("***".to_string())
                        }
                        _ => lookup(v, &self.env, &rt, name),
                    })
                    .ok();
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
            | Step::Retire(s)
            | Step::Unlock(s) => self.remote(step, s, em),
            Step::Copy(c) => self.copy(c, em),
            Step::Health(h) => self.health(h, em),
            Step::Switch(s) => self.switch(s, em),
            Step::Drain(d) => self.drain(d, em),
            Step::Notify(n) => Ok(self.notify_success(n)),
            Step::Hook(h) => self.hook(h, em),
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
