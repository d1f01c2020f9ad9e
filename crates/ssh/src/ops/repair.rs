//! `bluegreen status --fix` ([`repair`]): the drift that has one safe answer, put right under the
//! deploy lock.

use super::lock::LockStatus;
use super::status::{status, StatusReport};
use super::{call, connect, prepare, who};
use crate::conn::Worker;
use crate::error::{last_line, Error};
use crate::runtime::Live;
use crate::{short, ExecOptions};
use bluegreen_core::remote::calls;
use bluegreen_core::{Config, Step, Var, Word};
use std::time::Duration;

/// The proxy's host id.
const PROXY: &str = bluegreen_core::plan::PROXY_ID;

/// What `bluegreen status --fix` did, and what it left to a person.
#[derive(Debug)]
pub struct Repair {
    /// Each thing put right, in words (also written to the audit log).
    pub fixed: Vec<String>,
    /// The drift it would not touch: each needs a person to decide.
    pub left: Vec<String>,
    /// The status read after the repair (its drift is in `left`).
    pub report: StatusReport,
}

/// `bluegreen status --fix`: puts right the drift that has one safe answer, under the deploy lock
/// (taking over one whose runner is gone): an interrupted switch is reconciled (the state file
/// brought up to what the upstream names, nginx made to serve the file), a state file behind an
/// upstream whose live slot runs one release everywhere is rewritten from it, and instances of
/// bluegreen's own that run in the idle slot with a release neither live nor previous (left by a
/// deploy that died) are stopped. Everything else is left, with the reason, in [`Repair::left`].
pub fn repair(config: &Config, opts: &ExecOptions) -> Result<Repair, Error> {
    use crate::runtime::{lookup, run_token, Runtime};
    let report = status(config, opts)?;
    let mut fixed = Vec::new();
    let mut left = Vec::new();
    if report.consistent() {
        return Ok(Repair {
            fixed,
            left,
            report,
        });
    }
    let live = Live::parse(&report.upstream);
    let (plan, env) = prepare(config, opts)?;
    let rt = Runtime {
        slots: config.slots,
        live,
        release: String::new(),
        deployer: who(opts),
        token: run_token(),
    };
    let resolve = |v: &Var| lookup(v, &env, &rt, "repair");
    let conns = connect(&plan, &env, opts, None)?;
    let worker = |id: &str| -> Result<&Worker, Error> {
        let c = conns
            .iter()
            .find(|c| c.id == id)
            .ok_or_else(|| Error::Ssh {
                host: id.to_string(),
                step: "repair".into(),
                message: "no connection to this host".into(),
            })?;
        c.worker.as_ref().map_err(|e| Error::Ssh {
            host: id.to_string(),
            step: "repair".into(),
            message: e.to_string(),
        })
    };
    let find = |want: fn(&Step) -> bool| {
        plan.phases
            .iter()
            .flat_map(|p| p.steps.iter().chain(&p.on_failure))
            .find(|s| want(s))
            .and_then(Step::remote)
            .map(|s| s.call.clone())
    };
    let missing = || Error::Ssh {
        host: PROXY.into(),
        step: "repair".into(),
        message: "the plan lacks a step repair needs".into(),
    };
    let lock = plan.lock_call(format!("repair of {}", config.app));
    let unlock = find(|s| matches!(s, Step::Unlock(_))).ok_or_else(missing)?;
    let proxy = worker(PROXY)?;
    call(PROXY, proxy, "lock", &lock, &resolve).map_err(|e| match e {
        Error::Remote { stderr, .. } if crate::run::lock_holder(&stderr).is_some() => {
            Error::LockHeld {
                host: PROXY.into(),
                holder: crate::run::lock_holder(&stderr).unwrap_or_default(),
                waited: Duration::ZERO,
            }
        }
        e => e,
    })?;
    if report.lock.as_ref().is_some_and(LockStatus::stale) {
        fixed.push(format!(
            "took over the stale deploy lock of {}",
            report.lock.as_ref().map_or("", |l| l.holder_or_unknown())
        ));
    }
    let result = (|| -> Result<(), Error> {
        let state_live = report.state.get("live").cloned().unwrap_or_default();
        if !report.intent.is_empty() && live.is_some() {
            let c = find(|s| matches!(s, Step::Reconcile(_))).ok_or_else(missing)?;
            let o = call(PROXY, proxy, "reconcile", &c, &resolve)?;
            fixed.push(last_line(&o.stdout));
        } else if let Some(l @ (Live::Blue | Live::Green)) = live.filter(|l| l.name() != state_live)
        {
            // The state file is behind an upstream that moved with no intent recorded: rewrite it
            // from what the live slot runs, if that is one release on every host.
            let mut releases: Vec<&str> = report
                .hosts
                .iter()
                .flat_map(|h| h.slots.iter())
                .filter(|s| s.slot == l.name() && s.pid.is_some())
                .map(|s| s.release.as_str())
                .collect();
            let running = releases.len();
            releases.sort_unstable();
            releases.dedup();
            match releases.as_slice() {
                [r] if !r.is_empty() && running == report.hosts.len() => {
                    let record = calls::Record {
                        state_dir: Word::lit(&config.proxy.state_dir),
                        app: Word::lit(&config.app),
                        live: Word::lit(l.name()),
                        previous: Word::lit(l.other().name()),
                        release: Word::lit(*r),
                        deployer: Word::lit(&rt.deployer),
                    };
                    call(PROXY, proxy, "record", &record.into(), &resolve)?;
                    fixed.push(format!(
                        "state file rewritten from the upstream: live={} release {}",
                        l.name(),
                        short(r)
                    ));
                }
                _ => left.push(format!(
                    "the upstream names {} but the state file says live={state_live}, and the {} slot does not run one release on every host: decide which release should be live, then deploy it",
                    l.name(),
                    l.name()
                )),
            }
        }
        for h in &report.hosts {
            for s in h.slots.iter().filter(|s| s.role == "orphan") {
                let c = plan
                    .phases
                    .iter()
                    .flat_map(|p| &p.on_failure)
                    .filter_map(|st| match st {
                        Step::Stop(r) if r.host == h.id => Some(r.call.clone()),
                        _ => None,
                    })
                    .next()
                    .ok_or_else(missing)?;
                let o = call(&h.id, worker(&h.id)?, "stop", &c, &resolve)?;
                fixed.push(format!(
                    "{}: stopped the idle slot {} (release {}, left by an interrupted deploy): {}",
                    h.id,
                    s.slot,
                    short(&s.release),
                    last_line(&o.stdout)
                ));
            }
        }
        Ok(())
    })();
    let audit = calls::Audit {
        state_dir: Word::lit(&config.proxy.state_dir),
        event: Word::lit("repair"),
        app: Word::lit(&config.app),
        outcome: Word::lit(if fixed.is_empty() {
            "nothing fixed".to_string()
        } else {
            fixed.join("; ")
        }),
        target: Word::lit(""),
        from: Word::lit(""),
        release: Word::lit(""),
        deployer: Word::lit(&rt.deployer),
    };
    let _ = call(PROXY, proxy, "audit", &audit.into(), &resolve);
    let unlocked = call(PROXY, proxy, "unlock", &unlock, &resolve);
    result?;
    unlocked?;
    // What is still wrong now is what needs a person (a state-file mismatch left above is said
    // once, with its reason).
    let report = status(config, opts)?;
    for d in &report.drift {
        if !(d.contains("state file says") && left.iter().any(|l| l.contains("state file says"))) {
            left.push(d.clone());
        }
    }
    Ok(Repair {
        fixed,
        left,
        report,
    })
}
