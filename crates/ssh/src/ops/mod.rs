//! Operating a running system: status with drift detection (and its repair), the deploy lock, the
//! audit log.
//!
//! Everything here reads, except [`lock_release`], which removes a lock (and says so in the audit
//! log), and [`repair()`] (`status --fix`). Each function connects to the hosts it needs at once, runs
//! one call of the core's remote library on each (`proxystatus`, `hoststatus`, `history`,
//! `breaklock`), and returns plain data that prints as text (`Display`) or JSON (`to_json`).
//!
//! This module holds what the operations share (connecting, one call, reading `key=value`
//! output); each operation is in its own file: `lock.rs`, `history.rs`, `status.rs`, `repair.rs`.

mod check;
mod history;
mod lock;
mod releases;
mod repair;
mod status;
mod takeover;

pub use check::{check, Check, CheckReport, HostChecks};
pub use history::{history, history_line};
pub use lock::{lock_release, lock_show, LockStatus};
pub use releases::{releases, ReleaseInfo, ReleasesReport};
pub use repair::{repair, Repair};
pub use status::{status, HostStatus, SlotStatus, StatusReport};
pub use takeover::{takeover, Takeover, TakeoverReport};

use crate::conn::{Output, Worker};
use crate::error::Error;
use crate::fleet::{Conn, Fleet};
use crate::runtime::{clean_deployer, default_deployer, Env};
use crate::ExecOptions;
use bluegreen_core::{Config, Plan, RemoteCall, Var};
use std::collections::BTreeMap;
use std::time::Duration;

/// Connects to the hosts of `plan` whose ids are in `ids` (all when `None`), at once.
fn connect(
    plan: &Plan,
    env: &Env,
    opts: &ExecOptions,
    ids: Option<&[&str]>,
) -> Result<Vec<Conn>, Error> {
    Ok(Fleet::new(plan, env, opts)?.connect(ids, &mut |_, _| {}))
}

/// Runs `f` on every host of `conns` at once, each on a thread of its own, in `conns`' order; a
/// host that could not be connected to gives why, as does one whose `f` panicked.
fn on_each<T: Send>(
    conns: &[Conn],
    f: &(dyn Fn(&Conn, &Worker) -> Result<T, String> + Sync),
) -> Vec<Result<T, String>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = conns
            .iter()
            .map(|c| {
                scope.spawn(move || match &c.worker {
                    Ok(w) => f(c, w),
                    Err(e) => Err(e.to_string()),
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("internal error (panic)".into()))
            })
            .collect()
    })
}

/// One call of a library function, built from its typed arguments (`bluegreen_core::remote::calls`
/// or a step of the plan), its variables resolved by `resolve`; a non-zero exit is an error.
fn call(
    host: &str,
    w: &Worker,
    step: &str,
    call: &RemoteCall,
    resolve: &dyn Fn(&Var) -> Result<String, Error>,
) -> Result<Output, Error> {
    let line = call.call_line(resolve)?;
    w.run(step, move |r| r.call(&line, Duration::ZERO))?
        .map_err(|message| Error::Ssh {
            host: host.to_string(),
            step: step.to_string(),
            message,
        })?
        .success(host, step)
}

/// `key=value` lines.
fn parse_kv(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Seconds as a person reads them: `45s`, `2m05s`, `3h02m`, `2d04h`.
pub fn ago(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// Resolves a call's environment variables (`${NGINX_PRIVATE_IP}`); an operation knows no run's
/// values, so a run-time variable is an error.
fn env_only<'a>(env: &'a Env, step: &'a str) -> impl Fn(&Var) -> Result<String, Error> + 'a {
    move |v| crate::runtime::env_var(env, v, step)
}

/// The plan and environment of a config, for the operations here.
fn prepare(config: &Config, opts: &ExecOptions) -> Result<(Plan, Env), Error> {
    let plan = Plan::new(config);
    let env = Env::resolve(&plan.env, &*opts.env)?;
    Ok((plan, env))
}

/// Who runs the operation: `ExecOptions::deployer`, or `$USER@hostname`.
fn who(opts: &ExecOptions) -> String {
    match &opts.deployer {
        Some(d) => clean_deployer(d),
        None => default_deployer(&*opts.env),
    }
}

/// The proxy's `key=value` status: the state directory, then the arguments of the plan's own
/// `detect`, so that status reads the upstream file exactly as a deploy does.
fn proxystatus(
    config: &Config,
    plan: &Plan,
    env: &Env,
    host: &str,
    w: &Worker,
) -> Result<BTreeMap<String, String>, Error> {
    let _ = config;
    let out = call(
        host,
        w,
        "proxystatus",
        &plan.proxy_status_call(),
        &env_only(env, "proxy"),
    )?;
    Ok(parse_kv(&out.stdout))
}

/// The plan and environment of a config, and a connection to its proxy (or why there is none).
fn connect_proxy(config: &Config, opts: &ExecOptions) -> Result<(Plan, Env, Conn), Error> {
    let (plan, env) = prepare(config, opts)?;
    let mut conns = connect(&plan, &env, opts, Some(&[bluegreen_core::plan::PROXY_ID]))?;
    let proxy = conns.pop().ok_or_else(|| Error::Ssh {
        host: "proxy".into(),
        step: "connect".into(),
        message: "no proxy in the plan".into(),
    })?;
    Ok((plan, env, proxy))
}
