//! Operating a running system: status with drift detection, the deploy lock, the audit log.
//!
//! Everything here reads, except [`lock_release`], which removes a lock (and says so in the audit
//! log). Each function connects to the hosts it needs at once, runs one call of the core's remote
//! library on each (`proxystatus`, `hoststatus`, `history`, `breaklock`), and returns plain data
//! that prints as text (`Display`) or JSON (`to_json`).

use crate::conn::{Output, Worker};
use crate::error::{human, last_line, Error};
use crate::fleet::{Conn, Fleet};
use crate::http;
use crate::runtime::{clean_deployer, default_deployer, Env, Live};
use crate::{short, ExecOptions};
use bluegreen_core::{Config, Plan, RemoteCall, RemoteFn, Step, Word};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt;
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

/// One call of a library function whose arguments are all literal; a non-zero exit is an error.
fn call(
    host: &str,
    w: &Worker,
    step: &str,
    func: RemoteFn,
    args: &[String],
) -> Result<Output, Error> {
    let call = RemoteCall::new(func, args.iter().map(Word::lit).collect());
    let line = call.call_line(|v| {
        Err(Error::Runtime {
            step: step.to_string(),
            name: format!("{v:?}"),
        })
    })?;
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

/// The plan and environment of a config, for the operations here.
fn prepare(config: &Config, opts: &ExecOptions) -> Result<(Plan, Env), Error> {
    let plan = Plan::new(config);
    let env = Env::resolve(&plan.env, &*opts.env)?;
    Ok((plan, env))
}

fn who(opts: &ExecOptions) -> String {
    match &opts.deployer {
        Some(d) => clean_deployer(d),
        None => default_deployer(&*opts.env),
    }
}

/// The deploy lock on the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockStatus {
    /// `<state_dir>/lock`.
    pub path: String,
    /// Whether it is held.
    pub held: bool,
    /// Who holds it, as recorded (`user@host:pid`, a Jenkins build tag ...).
    pub holder: String,
    /// When it was taken, as recorded (UTC, ISO 8601).
    pub time: String,
    /// What it is for (`deploy of shop`).
    pub message: String,
    /// How long it has been held, by the proxy's clock.
    pub age: Option<Duration>,
    /// Seconds until it expires unless renewed, by the proxy's clock (negative: expired that long
    /// ago); None for a lock that records no expiry (an older bluegreen's: see `stale_after`).
    pub expires_in: Option<i64>,
    /// `lock.stale_after`: how long a lock lasts without renewal.
    pub stale_after: Duration,
    /// The token of the run that holds it: a release removes only this lock.
    token: String,
}

impl LockStatus {
    fn from_kv(kv: &BTreeMap<String, String>, path: String, stale_after: Duration) -> LockStatus {
        let get = |k: &str| kv.get(k).cloned().unwrap_or_default();
        let now: Option<u64> = get("now").parse().ok();
        let since: Option<u64> = get("lock.since").parse().ok();
        let expires: Option<u64> = get("lock.expires").parse().ok();
        LockStatus {
            path,
            held: get("lock.held") == "yes",
            holder: get("lock.holder"),
            time: get("lock.time"),
            message: get("lock.message"),
            age: now
                .zip(since)
                .map(|(n, s)| Duration::from_secs(n.saturating_sub(s))),
            expires_in: now.zip(expires).map(|(n, e)| e as i64 - n as i64),
            stale_after,
            token: get("lock.token"),
        }
    }

    /// Not renewed in time: the run that holds it is gone (the next deploy takes it over).
    pub fn stale(&self) -> bool {
        self.held
            && match self.expires_in {
                Some(left) => left <= 0,
                None => self.age.is_some_and(|a| a > self.stale_after),
            }
    }

    fn holder_or_unknown(&self) -> &str {
        if self.holder.is_empty() {
            "an unknown holder"
        } else {
            &self.holder
        }
    }

    fn age_words(&self) -> String {
        self.age
            .map_or_else(|| "an unknown time".into(), |a| ago(a.as_secs()))
    }

    /// The lock as JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "path": self.path,
            "held": self.held,
            "holder": self.holder,
            "time": self.time,
            "message": self.message,
            "age_secs": self.age.map(|a| a.as_secs()),
            "expires_in_secs": self.expires_in,
            "stale": self.stale(),
            "stale_after_secs": self.stale_after.as_secs(),
        })
    }
}

impl fmt::Display for LockStatus {
    /// `held by alice@ci:123 since 2024-05-01T10:00:00Z (2m05s ago): deploy of shop` or `free`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.held {
            return write!(f, "free");
        }
        write!(
            f,
            "held by {} since {} ({} ago)",
            self.holder_or_unknown(),
            if self.time.is_empty() {
                "?"
            } else {
                &self.time
            },
            self.age_words()
        )?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        match self.expires_in {
            _ if self.stale() => write!(
                f,
                " [STALE: not renewed within lock.stale_after {}: its runner is gone; the next deploy takes it over]",
                human(self.stale_after)
            )?,
            Some(left) => write!(f, "; renewed, expires in {left}s unless renewed again")?,
            None => {}
        }
        Ok(())
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
    let mut args = vec![config.proxy.state_dir.clone()];
    let detect = plan
        .phases
        .iter()
        .flat_map(|p| &p.steps)
        .find_map(|s| match s {
            Step::Detect(d) => Some(&d.call),
            _ => None,
        });
    for a in detect.map(|c| c.args.as_slice()).unwrap_or_default() {
        args.push(env.word(a, "proxy")?);
    }
    let out = call(host, w, "proxystatus", RemoteFn::ProxyStatus, &args)?;
    Ok(parse_kv(&out.stdout))
}

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

fn lock_path(config: &Config) -> String {
    format!("{}/lock", config.proxy.state_dir)
}

/// Reads the deploy lock.
pub fn lock_show(config: &Config, opts: &ExecOptions) -> Result<LockStatus, Error> {
    let (plan, env, proxy) = connect_proxy(config, opts)?;
    let w = proxy.worker?;
    let kv = proxystatus(config, &plan, &env, &proxy.id, &w)?;
    Ok(LockStatus::from_kv(
        &kv,
        lock_path(config),
        config.lock.stale_after,
    ))
}

/// Removes the deploy lock: when it is stale, or with `force`; otherwise fails with
/// [`Error::LockFresh`]. Returns the lock as it was and what `breaklock` said. The removal is
/// recorded in the audit log (event `lock-break`).
pub fn lock_release(
    config: &Config,
    opts: &ExecOptions,
    force: bool,
) -> Result<(LockStatus, String), Error> {
    let (plan, env, proxy) = connect_proxy(config, opts)?;
    let w = proxy.worker?;
    let kv = proxystatus(config, &plan, &env, &proxy.id, &w)?;
    let lock = LockStatus::from_kv(&kv, lock_path(config), config.lock.stale_after);
    if !lock.held {
        return Ok((
            lock,
            "the deploy lock is not held: nothing to release".into(),
        ));
    }
    if !force && !lock.stale() {
        return Err(Error::LockFresh {
            host: proxy.id,
            holder: lock.holder_or_unknown().to_string(),
            age: lock.age_words(),
            stale_after: lock.stale_after,
        });
    }
    let out = call(
        &proxy.id,
        &w,
        "breaklock",
        RemoteFn::BreakLock,
        // Compare-and-delete: only the lock read above, not one a new run took since.
        &[
            config.proxy.state_dir.clone(),
            who(opts),
            config.app.clone(),
            lock.token.clone(),
        ],
    )?;
    Ok((lock, last_line(&out.stdout)))
}

/// The last `count` events of the audit log on the proxy, oldest first, one JSON object each
/// (`time event app outcome target from release deployer`). Lines that are not JSON are skipped.
pub fn history(config: &Config, opts: &ExecOptions, count: usize) -> Result<Vec<Value>, Error> {
    let (_, _, proxy) = connect_proxy(config, opts)?;
    let w = proxy.worker?;
    let out = call(
        &proxy.id,
        &w,
        "history",
        RemoteFn::History,
        &[config.proxy.state_dir.clone(), count.max(1).to_string()],
    )?;
    Ok(out
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(Value::is_object)
        .collect())
}

/// One audit event as a line: time, event, outcome, target (and the slot it came from), release,
/// who.
pub fn history_line(e: &Value) -> String {
    let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
    let or_dash = |v: String| if v.is_empty() { "-".to_string() } else { v };
    let slots = match (s("target"), s("from")) {
        (t, _) if t.is_empty() => "-".to_string(),
        (t, f) if f.is_empty() => t,
        (t, f) if s("event") == "retire" => format!("{t} (live {f})"),
        (t, f) => format!("{t} (from {f})"),
    };
    format!(
        "{:<20}  {:<10}  {:<22}  {:<18}  {:<12}  {}",
        or_dash(s("time")),
        or_dash(s("event")),
        or_dash(s("outcome")),
        slots,
        or_dash(short(&s("release")).to_string()),
        or_dash(s("deployer"))
    )
}

/// A slot on an app host.
#[derive(Debug, Clone)]
pub struct SlotStatus {
    /// `blue` or `green`.
    pub slot: String,
    /// Its port.
    pub port: u16,
    /// `live` (the proxy sends traffic to it), `retained` (idle but running) or `idle` (stopped).
    pub role: &'static str,
    /// The instance's pid, when one bluegreen started is running.
    pub pid: Option<u64>,
    /// How long it has been running.
    pub uptime: Option<Duration>,
    /// Whether something listens on the port.
    pub port_open: bool,
    /// The release (sha256) kept in the slot's directory.
    pub release: String,
    /// The health probe from the runner: None when not probed (nothing running), else its result.
    pub health: Option<Result<(), String>>,
}

/// An app host.
#[derive(Debug, Clone)]
pub struct HostStatus {
    /// `app1`, `app2`, ...
    pub id: String,
    /// The SSH address.
    pub address: String,
    /// Why the host could not be read, if it could not.
    pub error: Option<String>,
    /// Blue, then green (empty when unreadable).
    pub slots: Vec<SlotStatus>,
}

/// The whole system: proxy, hosts, and what is inconsistent.
#[derive(Debug, Clone)]
pub struct StatusReport {
    /// The app.
    pub app: String,
    /// The proxy's SSH address.
    pub proxy_address: String,
    /// Why the proxy could not be read, if it could not.
    pub proxy_error: Option<String>,
    /// The slot the upstream file points at: `blue`, `green`, `none`, or `unknown` when the file
    /// cannot be read as bluegreen reads it (see `upstream_error`).
    pub upstream: String,
    /// Why the upstream file could not be read as bluegreen reads it.
    pub upstream_error: Option<String>,
    /// The state file (`live previous release time deployer app`), empty when there is none.
    pub state: BTreeMap<String, String>,
    /// What a run recorded ahead of its switch and has not recorded as done (`target from release
    /// deployer time`): empty unless a run is switching or died doing so.
    pub intent: BTreeMap<String, String>,
    /// The proxy's clock (seconds since the epoch) when it was read.
    pub proxy_now: Option<u64>,
    /// The deploy lock.
    pub lock: Option<LockStatus>,
    /// The app hosts, in config order.
    pub hosts: Vec<HostStatus>,
    /// Inconsistencies: any makes `bluegreen status` exit 1.
    pub drift: Vec<String>,
    /// Things worth knowing that are not inconsistencies (a retained slot, a stale lock).
    pub notes: Vec<String>,
}

impl StatusReport {
    /// No drift.
    pub fn consistent(&self) -> bool {
        self.drift.is_empty()
    }

    /// How long ago the last switch was recorded in the state file, by the proxy's clock; None
    /// when there is no state file.
    pub fn since_last_switch(&self) -> Option<Duration> {
        let then = self
            .state
            .get("time")
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())?;
        let now = self.proxy_now?;
        Some(Duration::from_secs(now.saturating_sub(then.as_secs())))
    }

    /// Whether an idle slot is still running on some host (kept for the rollback window).
    pub fn retained(&self) -> bool {
        self.hosts
            .iter()
            .any(|h| h.slots.iter().any(|s| s.role == "retained"))
    }

    /// The report as JSON.
    pub fn to_json(&self) -> Value {
        let hosts: Vec<Value> = self
            .hosts
            .iter()
            .map(|h| {
                let slots: Vec<Value> = h
                    .slots
                    .iter()
                    .map(|s| {
                        json!({
                            "slot": s.slot,
                            "port": s.port,
                            "role": s.role,
                            "pid": s.pid,
                            "uptime_secs": s.uptime.map(|u| u.as_secs()),
                            "port_open": s.port_open,
                            "release": s.release,
                            "healthy": s.health.as_ref().map(Result::is_ok),
                            "health": health_words(&s.health),
                        })
                    })
                    .collect();
                json!({ "host": h.id, "address": h.address, "error": h.error, "slots": slots })
            })
            .collect();
        json!({
            "app": self.app,
            "consistent": self.consistent(),
            "proxy": {
                "address": self.proxy_address,
                "error": self.proxy_error,
                "upstream": self.upstream,
                "upstream_error": self.upstream_error,
                "state": self.state,
                "intent": self.intent,
                "lock": self.lock.as_ref().map(LockStatus::to_json),
            },
            "hosts": hosts,
            "drift": self.drift,
            "notes": self.notes,
        })
    }
}

fn health_words(h: &Option<Result<(), String>>) -> String {
    match h {
        None => "-".into(),
        Some(Ok(())) => "healthy".into(),
        Some(Err(m)) => format!("UNHEALTHY ({m})"),
    }
}

impl fmt::Display for StatusReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.app)?;
        match &self.proxy_error {
            Some(e) => writeln!(f, "proxy {}: UNREACHABLE: {e}", self.proxy_address)?,
            None => {
                writeln!(
                    f,
                    "proxy {}: upstream -> {}",
                    self.proxy_address, self.upstream
                )?;
                if self.state.is_empty() {
                    writeln!(f, "  state: none (no switch recorded)")?;
                } else {
                    let g = |k: &str| self.state.get(k).map_or("?", String::as_str);
                    writeln!(
                        f,
                        "  state: live={} previous={} release={} at {} by {}",
                        g("live"),
                        g("previous"),
                        short(g("release")),
                        g("time"),
                        g("deployer")
                    )?;
                }
                if let Some(l) = &self.lock {
                    writeln!(f, "  lock:  {l}")?;
                }
            }
        }
        for h in &self.hosts {
            write!(f, "{} {}", h.id, h.address)?;
            if let Some(e) = &h.error {
                writeln!(f, ": UNREACHABLE: {e}")?;
                continue;
            }
            writeln!(f)?;
            for s in &h.slots {
                let running = match (s.pid, s.uptime) {
                    (Some(p), Some(u)) => format!("pid {p}, up {}", ago(u.as_secs())),
                    (Some(p), None) => format!("pid {p}"),
                    (None, _) if s.port_open => "port open, not started by bluegreen".into(),
                    (None, _) => "stopped".into(),
                };
                writeln!(
                    f,
                    "  {:<5} :{:<5}  {:<8}  {:<28}  release {:<12}  {}",
                    s.slot,
                    s.port,
                    s.role,
                    running,
                    if s.release.is_empty() {
                        "-"
                    } else {
                        short(&s.release)
                    },
                    health_words(&s.health)
                )?;
            }
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        if self.drift.is_empty() {
            write!(f, "consistent")
        } else {
            for d in &self.drift {
                writeln!(f, "DRIFT: {d}")?;
            }
            write!(f, "{} problem(s) found", self.drift.len())
        }
    }
}

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
    use crate::runtime::{resolve, run_token, Runtime};
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
    let args = |c: &RemoteCall| -> Result<Vec<String>, Error> {
        c.args
            .iter()
            .map(|w| resolve(w, &env, &rt, "repair"))
            .collect()
    };
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
    let mut lock = find(|s| matches!(s, Step::Lock(_))).ok_or_else(missing)?;
    if let Some(m) = lock.args.last_mut() {
        *m = Word::lit(format!("repair of {}", config.app));
    }
    let unlock = find(|s| matches!(s, Step::Unlock(_))).ok_or_else(missing)?;
    let proxy = worker(PROXY)?;
    call(PROXY, proxy, "lock", RemoteFn::Lock, &args(&lock)?).map_err(|e| match e {
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
            let o = call(PROXY, proxy, "reconcile", RemoteFn::Reconcile, &args(&c)?)?;
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
                    let c = find(|s| matches!(s, Step::Record(_))).ok_or_else(missing)?;
                    let mut a = args(&c)?;
                    // record STATE_DIR APP LIVE PREVIOUS RELEASE DEPLOYER
                    if a.len() == 6 {
                        a[2] = l.name().to_string();
                        a[3] = l.other().name().to_string();
                        a[4] = (*r).to_string();
                    }
                    call(PROXY, proxy, "record", RemoteFn::Record, &a)?;
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
                let o = call(&h.id, worker(&h.id)?, "stop", RemoteFn::Stop, &args(&c)?)?;
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
    let audit = find(|s| matches!(s, Step::Audit(_))).ok_or_else(missing)?;
    if let Ok(mut a) = args(&audit) {
        // audit STATE_DIR EVENT APP OUTCOME TARGET FROM RELEASE DEPLOYER
        if a.len() == 8 {
            a[1] = "repair".into();
            a[3] = if fixed.is_empty() {
                "nothing fixed".into()
            } else {
                fixed.join("; ")
            };
            a[4] = String::new();
            a[5] = String::new();
            a[6] = String::new();
            let _ = call(PROXY, proxy, "audit", RemoteFn::Audit, &a);
        }
    }
    let unlocked = call(PROXY, proxy, "unlock", RemoteFn::Unlock, &args(&unlock)?);
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

/// Reads the proxy and every app host at once, probes every running slot's health from here, and
/// works out what is inconsistent.
pub fn status(config: &Config, opts: &ExecOptions) -> Result<StatusReport, Error> {
    let (plan, env) = prepare(config, opts)?;
    let conns = connect(&plan, &env, opts, None)?;
    let stale_after = config.lock.stale_after;
    let ports = [("blue", config.slots.blue), ("green", config.slots.green)];

    // One remote call per host, all at once.
    let (plan_ref, env_ref) = (&plan, &env);
    let results: Vec<Result<BTreeMap<String, String>, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = conns
            .iter()
            .map(|c| {
                scope.spawn(move || {
                    let w = c.worker.as_ref().map_err(|e| e.to_string())?;
                    let r = if c.id == bluegreen_core::plan::PROXY_ID {
                        proxystatus(config, plan_ref, env_ref, &c.id, w)
                    } else {
                        call(
                            &c.id,
                            w,
                            "hoststatus",
                            RemoteFn::HostStatus,
                            &[
                                config.deploy_dir.clone(),
                                config.slots.blue.to_string(),
                                config.slots.green.to_string(),
                            ],
                        )
                        .map(|o| parse_kv(&o.stdout))
                    };
                    r.map_err(|e| e.to_string())
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
    });

    let mut report = StatusReport {
        app: config.app.clone(),
        proxy_address: String::new(),
        proxy_error: None,
        upstream: "unknown".into(),
        upstream_error: None,
        state: BTreeMap::new(),
        intent: BTreeMap::new(),
        proxy_now: None,
        lock: None,
        hosts: Vec::new(),
        drift: Vec::new(),
        notes: Vec::new(),
    };
    for (c, r) in conns.iter().zip(results) {
        if c.id == bluegreen_core::plan::PROXY_ID {
            report.proxy_address = c.addr.clone();
            match r {
                Ok(kv) => {
                    report.upstream = kv.get("upstream.live").cloned().unwrap_or_default();
                    report.upstream_error = kv.get("upstream.error").cloned();
                    report.proxy_now = kv.get("now").and_then(|n| n.parse().ok());
                    let with = |prefix: &str| -> BTreeMap<String, String> {
                        kv.iter()
                            .filter_map(|(k, v)| {
                                Some((k.strip_prefix(prefix)?.to_string(), v.clone()))
                            })
                            .collect()
                    };
                    report.state = with("state.");
                    report.intent = with("intent.");
                    report.intent.remove("token");
                    report.lock = Some(LockStatus::from_kv(&kv, lock_path(config), stale_after));
                }
                Err(e) => report.proxy_error = Some(e),
            }
            continue;
        }
        let mut host = HostStatus {
            id: c.id.clone(),
            address: c.addr.clone(),
            error: None,
            slots: Vec::new(),
        };
        match r {
            Ok(kv) => {
                for (slot, port) in ports {
                    let g = |k: &str| kv.get(&format!("{slot}.{k}")).cloned().unwrap_or_default();
                    host.slots.push(SlotStatus {
                        slot: slot.into(),
                        port,
                        role: "idle",
                        pid: g("pid").parse().ok(),
                        uptime: g("uptime").parse().ok().map(Duration::from_secs),
                        port_open: g("port_open") == "yes",
                        release: g("release"),
                        health: None,
                    });
                }
            }
            Err(e) => host.error = Some(e),
        }
        report.hosts.push(host);
    }

    // Health of every running slot, probed from here, all at once.
    let app_addrs: BTreeMap<String, String> = plan
        .servers
        .iter()
        .filter_map(|h| Some((h.id.clone(), env.word(&h.app_address, "address").ok()?)))
        .collect();
    let h = &config.health;
    std::thread::scope(|scope| {
        for host in &mut report.hosts {
            let Some(addr) = app_addrs.get(&host.id) else {
                continue;
            };
            for s in &mut host.slots {
                if s.pid.is_none() && !s.port_open {
                    continue;
                }
                let url = format!("http://{}:{}{}", url_host(addr), s.port, h.path);
                scope.spawn(move || {
                    s.health = Some(
                        http::probe(&url, h.status, h.body.as_deref(), h.timeout)
                            .map_err(|o| o.to_string()),
                    );
                });
            }
        }
    });

    judge(&mut report, config);
    Ok(report)
}

/// An address as the host part of a URL (IPv6 in brackets).
fn url_host(addr: &str) -> String {
    if addr.contains(':') && !addr.starts_with('[') {
        format!("[{addr}]")
    } else {
        addr.to_string()
    }
}

/// Sets each slot's role and lists drift and notes.
fn judge(r: &mut StatusReport, config: &Config) {
    let live = match r.upstream.as_str() {
        s @ ("blue" | "green") => Some(s.to_string()),
        _ => None,
    };
    if let Some(e) = &r.proxy_error {
        r.drift.push(format!(
            "proxy: cannot be read, nothing can be checked: {e}"
        ));
    } else {
        let state_live = r.state.get("live").cloned();
        match (r.upstream.as_str(), state_live.as_deref()) {
            ("unknown", _) => r.drift.push(format!(
                "proxy: {}",
                r.upstream_error
                    .as_deref()
                    .unwrap_or("the upstream file cannot be read")
                    .trim_start_matches("bluegreen: ")
            )),
            (u, Some(s)) if u != s => r.drift.push(format!(
                "proxy: the upstream points at {u} but the state file says live={s}"
            )),
            (u @ ("blue" | "green"), None) => r.drift.push(format!(
                "proxy: the upstream points at {u} but there is no state file"
            )),
            _ => {}
        }
        if let Some(target) = r.intent.get("target") {
            let running = r.lock.as_ref().is_some_and(|l| l.held && !l.stale());
            if !running {
                r.drift.push(format!(
                    "proxy: {} was switching traffic to {target} and stopped before recording it (the upstream names {}): the next deploy or `bluegreen status --fix` reconciles it",
                    r.intent.get("deployer").map_or("a run", String::as_str),
                    r.upstream
                ));
            }
        }
        if let Some(l) = &r.lock {
            if l.stale() {
                r.drift.push(format!(
                    "the deploy lock of {} is stale (taken {} ago, not renewed within \
                     lock.stale_after {}: its runner is gone): the next deploy takes it over, \
                     `bluegreen lock release` removes it",
                    l.holder_or_unknown(),
                    l.age_words(),
                    human(l.stale_after)
                ));
            }
        }
    }
    let mut live_releases: Vec<(String, String)> = Vec::new();
    for h in &mut r.hosts {
        if let Some(e) = &h.error {
            r.drift.push(format!("{}: cannot be read: {e}", h.id));
            continue;
        }
        for s in &mut h.slots {
            let running = s.pid.is_some();
            if live.as_deref() == Some(s.slot.as_str()) {
                s.role = "live";
                if !running {
                    r.drift.push(format!(
                        "{}: the live slot {} is not running{}",
                        h.id,
                        s.slot,
                        if s.port_open {
                            " (its port is held by a process bluegreen did not start)"
                        } else {
                            ""
                        }
                    ));
                } else if let Some(Err(m)) = &s.health {
                    r.drift.push(format!(
                        "{}: the live slot {} is unhealthy: {m}",
                        h.id, s.slot
                    ));
                }
                live_releases.push((h.id.clone(), s.release.clone()));
                if let Some(want) = r.state.get("release").filter(|v| !v.is_empty()) {
                    if !s.release.is_empty() && &s.release != want {
                        r.drift.push(format!(
                            "{}: the live slot {} holds release {}, the state file says {}",
                            h.id,
                            s.slot,
                            short(&s.release),
                            short(want)
                        ));
                    }
                }
            } else if running
                && !s.release.is_empty()
                && r.state.get("previous_release") != Some(&s.release)
                && r.state.get("release") != Some(&s.release)
            {
                s.role = "orphan";
                r.drift.push(format!(
                    "{}: the idle slot {} runs release {}, neither the live nor the previous one (left by a deploy that failed or was killed): `bluegreen status --fix` or the next deploy stops it",
                    h.id,
                    s.slot,
                    short(&s.release)
                ));
            } else if running {
                s.role = "retained";
                r.notes.push(format!(
                    "{}: the idle slot {} is still running (retained for rollback; `bluegreen retire` stops it)",
                    h.id, s.slot
                ));
            } else if s.port_open {
                r.notes.push(format!(
                    "{}: port {} of the idle slot {} is held by a process bluegreen did not start: the next deploy will refuse to start there",
                    h.id, s.port, s.slot
                ));
            }
        }
    }
    let mut distinct: Vec<&str> = live_releases.iter().map(|(_, r)| r.as_str()).collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() > 1 {
        let list: Vec<String> = live_releases
            .iter()
            .map(|(h, rel)| format!("{h} {}", if rel.is_empty() { "none" } else { short(rel) }))
            .collect();
        r.drift.push(format!(
            "the live slot {} runs different releases: {}",
            live.unwrap_or_default(),
            list.join(", ")
        ));
    }
    if !config.retain.is_zero()
        && r.hosts
            .iter()
            .any(|h| h.slots.iter().any(|s| s.role == "retained"))
    {
        r.notes.push(format!(
            "the rollback window (retain) is {}",
            human(config.retain)
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_lock_staleness() {
        assert_eq!(ago(5), "5s");
        assert_eq!(ago(125), "2m05s");
        assert_eq!(ago(3 * 3600 + 120), "3h02m");
        assert_eq!(ago(2 * 86_400 + 4 * 3600), "2d04h");
        let kv = parse_kv(
            "upstream.live=blue\nnow=1000\nlock.held=yes\nlock.since=100\nlock.holder=a@b:1\nlock.message=deploy of x\n",
        );
        let l = LockStatus::from_kv(&kv, "/s/lock".into(), Duration::from_secs(600));
        assert!(l.stale());
        assert!(l
            .to_string()
            .starts_with("held by a@b:1 since ? (15m00s ago): deploy of x [STALE"));
        let l = LockStatus::from_kv(&kv, "/s/lock".into(), Duration::from_secs(1800));
        assert!(!l.stale());
        assert_eq!(l.to_json()["age_secs"], 900);
    }

    #[test]
    fn history_lines() {
        let e: Value = serde_json::from_str(
            r#"{"time":"2024-05-01T10:00:00Z","event":"rollback","app":"x","outcome":"success","target":"blue","from":"green","release":"0123456789abcdef","deployer":"me@h:1"}"#,
        )
        .unwrap();
        let l = history_line(&e);
        assert!(
            l.starts_with("2024-05-01T10:00:00Z  rollback    success"),
            "{l}"
        );
        assert!(
            l.contains("blue (from green)") && l.contains("0123456789ab ") && l.ends_with("me@h:1"),
            "{l}"
        );
    }
}
