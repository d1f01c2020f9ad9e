//! What runs where and whether it agrees: [`status`] reads the proxy and every app host, probes
//! the running slots, and [`judge`] works out the drift and notes of the [`StatusReport`].

use super::lock::{lock_path, LockStatus};
use super::{ago, call, connect, env_only, on_each, parse_kv, prepare, proxystatus};
use crate::error::{human, Error};
use crate::http;
use crate::{short, ExecOptions};
use bluegreen_core::remote::calls;
use bluegreen_core::{Config, Word};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

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
    /// With `supervisor: systemd`, the slot's unit.
    pub unit: Option<UnitStatus>,
}

/// A slot's systemd unit, as `systemctl show` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitStatus {
    /// `bluegreen-<app>@<slot>.service`.
    pub name: String,
    /// Whose systemd runs it: `system`, or `user` (the deploy user's, `supervisor: systemd-user`).
    pub scope: String,
    /// `enabled` (started at boot), `disabled`, ...
    pub enabled: String,
    /// How often systemd restarted it since it was started.
    pub restarts: u64,
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
                            "unit": s.unit.as_ref().map(|u| json!({
                                "name": u.name,
                                "scope": u.scope,
                                "enabled": u.enabled,
                                "restarts": u.restarts,
                            })),
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
                if let Some(u) = &s.unit {
                    writeln!(
                        f,
                        "         systemd{} {} {}{}",
                        if u.scope == "user" { " --user" } else { "" },
                        u.name,
                        u.enabled,
                        match u.restarts {
                            0 => String::new(),
                            1 => ", restarted once".into(),
                            n => format!(", restarted {n} times"),
                        }
                    )?;
                }
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

/// Reads the proxy and every app host at once, probes every running slot's health from here, and
/// works out what is inconsistent.
pub fn status(config: &Config, opts: &ExecOptions) -> Result<StatusReport, Error> {
    let (plan, env) = prepare(config, opts)?;
    let conns = connect(&plan, &env, opts, None)?;
    let stale_after = config.lock.stale_after;
    let ports = [("blue", config.slots.blue), ("green", config.slots.green)];

    // One remote call per host, all at once.
    let (plan_ref, env_ref) = (&plan, &env);
    let results = on_each(&conns, &|c, w| {
        let r = if c.id == bluegreen_core::plan::PROXY_ID {
            proxystatus(config, plan_ref, env_ref, &c.id, w)
        } else {
            let hoststatus = calls::HostStatus {
                deploy_dir: Word::lit(&config.deploy_dir),
                blue_port: config.slots.blue,
                green_port: config.slots.green,
            };
            call(
                &c.id,
                w,
                "hoststatus",
                &hoststatus.into(),
                &env_only(env_ref, "hoststatus"),
            )
            .map(|o| parse_kv(&o.stdout))
        };
        r.map_err(|e| e.to_string())
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
                        unit: Some(g("unit"))
                            .filter(|u| !u.is_empty())
                            .map(|name| UnitStatus {
                                name,
                                scope: g("unit_scope"),
                                enabled: g("unit_enabled"),
                                restarts: g("restarts").parse().unwrap_or(0),
                            }),
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
                if let Some(u) = s.unit.as_ref().filter(|u| u.enabled != "enabled") {
                    r.drift.push(format!(
                        "{}: the live slot's unit {} is {}, not enabled: it will not start when the host boots (the next deploy enables it; by hand: {} enable {})",
                        h.id, u.name, if u.enabled.is_empty() { "unknown" } else { &u.enabled },
                        if u.scope == "user" { "systemctl --user" } else { "sudo systemctl" }, u.name
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
