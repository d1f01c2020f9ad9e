//! `bluegreen takeover --port PORT` (or `--pid PID --host HOST`): once bluegreen's slot serves the
//! traffic a hand-written deployment used to, stops that deployment's process on a slot port on
//! every app host (or the one process named), with the user's consent (this command) recorded in
//! the audit log.

use super::{call, connect, env_only, on_each, prepare, proxystatus, who};
use crate::error::Error;
use crate::fleet::Conn;
use crate::ExecOptions;
use bluegreen_core::plan::PROXY_ID;
use bluegreen_core::remote::calls;
use bluegreen_core::{Config, Word};
use std::fmt;

/// What `takeover` stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Takeover {
    /// Whatever bluegreen did not start that listens on this slot port, on every app host.
    Port(u16),
    /// This process on this app host (its id, as `status` names it).
    Pid {
        /// The process id.
        pid: u32,
        /// The app host.
        host: String,
    },
}

/// What `takeover` did on each app host.
#[derive(Debug, Clone)]
pub struct TakeoverReport {
    /// What it was asked to stop.
    pub what: Takeover,
    /// Per app host: what it said, or why it failed.
    pub hosts: Vec<(String, Result<String, String>)>,
    /// The audit line's outcome.
    pub outcome: String,
}

impl TakeoverReport {
    /// Whether every host's process was stopped (or its port was free).
    pub fn ok(&self) -> bool {
        self.hosts.iter().all(|(_, r)| r.is_ok())
    }
}

impl fmt::Display for TakeoverReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (h, r) in &self.hosts {
            match r {
                Ok(m) => writeln!(f, "{h}: {m}")?,
                Err(e) => writeln!(f, "{h}: FAILED: {e}")?,
            }
        }
        write!(f, "audit: takeover {}", self.outcome)
    }
}

/// Stops, on every app host, the process bluegreen did not start that listens on a slot port (or
/// the one process named, on its host), once the proxy sends no traffic there and no run holds the
/// deploy lock.
pub fn takeover(
    config: &Config,
    opts: &ExecOptions,
    what: &Takeover,
) -> Result<TakeoverReport, Error> {
    let (blue, green) = (config.slots.blue, config.slots.green);
    let slot = match what {
        Takeover::Port(p) if *p == blue => Some("blue"),
        Takeover::Port(p) if *p == green => Some("green"),
        Takeover::Port(port) => {
            return Err(Error::Refused {
                message: format!(
                    "takeover --port: {port} is not a slot port (blue {blue}, green {green}): bluegreen has no reason to stop what listens there"
                ),
            })
        }
        Takeover::Pid { .. } => None,
    };
    let (plan, env) = prepare(config, opts)?;
    // By pid: the one app host named, by its id (`app1`) or its address as the config resolves it.
    let only = match what {
        Takeover::Port(_) => None,
        Takeover::Pid { host, .. } => {
            let apps = || plan.servers.iter();
            let found = apps().find(|h| {
                &h.id == host || env.word(&h.address, "takeover").ok().as_ref() == Some(host)
            });
            match found {
                Some(h) => Some(h.id.clone()),
                None => {
                    return Err(Error::Refused {
                        message: format!(
                            "takeover --host: `{host}` is not one of the app hosts ({})",
                            apps().map(|h| h.id.as_str()).collect::<Vec<_>>().join(", ")
                        ),
                    })
                }
            }
        }
    };
    let ids: Option<Vec<&str>> = only.as_deref().map(|h| vec![PROXY_ID, h]);
    let (proxies, apps): (Vec<Conn>, Vec<Conn>) = connect(&plan, &env, opts, ids.as_deref())?
        .into_iter()
        .partition(|c| c.id == PROXY_ID);
    let proxy = proxies.first().ok_or_else(|| Error::Ssh {
        host: "proxy".into(),
        step: "connect".into(),
        message: "no proxy in the plan".into(),
    })?;
    let pw = proxy.worker.as_ref().map_err(|e| Error::Ssh {
        host: proxy.id.clone(),
        step: "connect".into(),
        message: e.to_string(),
    })?;
    let kv = proxystatus(config, &plan, &env, &proxy.id, pw)?;
    let live = kv
        .get("upstream.live")
        .map(String::as_str)
        .unwrap_or("unknown");
    if let (Some(slot), Takeover::Port(port)) = (slot, what) {
        if live == slot {
            return Err(Error::Refused {
                message: format!(
                    "takeover --port {port}: the proxy still sends traffic to port {port} (the upstream names the {slot} slot): deploy first, so that bluegreen's slot serves, then take over"
                ),
            });
        }
    }
    if live == "unknown" {
        return Err(Error::Refused {
            message: format!(
                "takeover: the proxy's upstream cannot be read ({}): nothing is stopped while it is not known where traffic goes",
                kv.get("upstream.error").map(String::as_str).unwrap_or("no reason given")
            ),
        });
    }
    if kv.get("lock.held").map(String::as_str) == Some("yes") {
        return Err(Error::Refused {
            message: format!(
                "takeover: the deploy lock is held by {}: wait for that run to end",
                kv.get("lock.holder")
                    .map(String::as_str)
                    .unwrap_or("an unknown holder")
            ),
        });
    }
    let live_port = match live {
        "blue" => Some(blue),
        "green" => Some(green),
        _ => None,
    };
    let (port, pid) = match what {
        Takeover::Port(p) => (*p, None),
        Takeover::Pid { pid, .. } => (0, Some(*pid)),
    };
    let results = on_each(&apps, &|c, w| {
        let rc = calls::StopForeign {
            deploy_dir: Word::lit(&config.deploy_dir),
            blue_port: blue,
            green_port: green,
            port,
            signal: Word::lit(&config.stop.signal),
            grace_secs: config.stop.grace.as_secs().max(1),
            pid,
            live_port,
        }
        .into();
        call(&c.id, w, "takeover", &rc, &env_only(&env, "takeover"))
            .map(|o| o.stdout.lines().last().unwrap_or_default().to_string())
            .map_err(|e| e.to_string())
    });
    let hosts: Vec<(String, Result<String, String>)> =
        apps.iter().map(|c| c.id.clone()).zip(results).collect();
    let failed: Vec<&str> = hosts
        .iter()
        .filter(|(_, r)| r.is_err())
        .map(|(h, _)| h.as_str())
        .collect();
    let asked = match what {
        Takeover::Port(port) => format!("what bluegreen did not start on port {port}"),
        Takeover::Pid { pid, .. } => format!(
            "process {pid} on {}, which bluegreen did not start",
            only.as_deref().unwrap_or_default()
        ),
    };
    let outcome = if failed.is_empty() {
        format!("stopped {asked}, as asked")
    } else {
        format!("asked to stop {asked}; failed on {}", failed.join(", "))
    };
    let audit = calls::Audit {
        state_dir: Word::lit(&config.proxy.state_dir),
        event: Word::lit("takeover"),
        app: Word::lit(&config.app),
        outcome: Word::lit(&outcome),
        target: Word::lit(slot.unwrap_or_default()),
        from: Word::lit(""),
        release: Word::lit(""),
        deployer: Word::lit(who(opts)),
    };
    call(
        &proxy.id,
        pw,
        "audit",
        &audit.into(),
        &env_only(&env, "audit"),
    )?;
    Ok(TakeoverReport {
        what: what.clone(),
        hosts,
        outcome,
    })
}
