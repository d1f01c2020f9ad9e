//! What each kind of step does on its host: the remote calls (lock, detect, inspect, unlock
//! ...), copy, health, switch, drain and retain.

use super::{mib, Ctx, Done, Em};
use crate::conn::{self, flag, Output};
use crate::error::{human, last_line, last_lines, Error};
use crate::event::Status;
use crate::http;
use crate::runtime::{lookup, resolve, Live};
use bluegreen_core::config::ProbeFrom;
use bluegreen_core::plan::Action;
use bluegreen_core::plan::{CopyStep, DrainStep, HealthStep, RemoteStep, SwitchStep, When};
use bluegreen_core::wording::{self, ProbeOutcome};
use bluegreen_core::{RemoteCall, Step};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How often a long step reports that it is still waiting.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// The holder recorded in a lock, from what `lock` prints when the lock is held.
pub(crate) fn lock_holder(stderr: &str) -> Option<String> {
    let line = stderr.lines().rfind(|l| l.contains("is held"))?;
    let (_, info) = line.split_once("is held: ")?;
    // Without the expiry, which changes at every renewal.
    let info = info.split("; renewed until").next().unwrap_or(info);
    Some(info.trim().to_string())
}

impl Ctx<'_> {
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
    pub(super) fn call_raw(
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
    /// [`crate::ExecOptions::lock_wait`] has passed, saying who holds it.
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

    /// A call of the core's library (lock, detect, reconcile, intent, start, record, inspect, audit,
    /// stop, unlock), with what the run learns from it: the live slot, the release kept, the lock.
    pub(super) fn remote(&self, step: &Step, s: &RemoteStep, em: &Em) -> Result<Done, Error> {
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

    /// Uploads the artifact over sftp after checking the free space, then installs it (sha256
    /// checked on the host).
    pub(super) fn copy(&self, c: &CopyStep, em: &Em) -> Result<Done, Error> {
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

    /// Probes the new instance (from here or from its host) until it answers well enough times in
    /// a row, or fails at the deadline or as soon as the instance has died.
    pub(super) fn health(&self, h: &HealthStep, em: &Em) -> Result<Done, Error> {
        let rt = self.rt();
        let url = match h.from {
            ProbeFrom::Host => format!(
                "{} on {}",
                resolve(&h.host_url, &self.env, &rt, "health")?,
                h.host
            ),
            ProbeFrom::Runner => resolve(&h.url, &self.env, &rt, "health")?,
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
                            _ => ProbeOutcome::NoAnswer(wording::HOST_PROBE_NO_ANSWER.into()),
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

    /// Points the upstream at the target slot (or back at the live one), waits for nginx to settle
    /// and checks the switched URL, noting what a failure may have left switched.
    pub(super) fn switch(&self, s: &SwitchStep, em: &Em) -> Result<Done, Error> {
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

    /// Waits for in-flight requests to the old slot to end.
    pub(super) fn drain(&self, d: &DrainStep, em: &Em) -> Result<Done, Error> {
        let t = Duration::from_millis(d.millis);
        self.sleep(t, em)?;
        Ok(Done::ok(format!(
            "waited {} for in-flight requests",
            human(t)
        )))
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
}
