//! `bluegreen takeover --port PORT`: once bluegreen's slot serves the traffic a hand-written
//! deployment used to, stops that deployment's process on a slot port on every app host, with the
//! user's consent (this command) recorded in the audit log.

use super::{call, connect, env_only, on_each, prepare, proxystatus, who};
use crate::error::Error;
use crate::fleet::Conn;
use crate::ExecOptions;
use bluegreen_core::remote::calls;
use bluegreen_core::{Config, Word};
use std::fmt;

/// What `takeover` did on each app host.
#[derive(Debug, Clone)]
pub struct TakeoverReport {
    /// The port.
    pub port: u16,
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

/// Stops, on every app host, the process bluegreen did not start that listens on `port` (a slot
/// port), once the proxy sends no traffic there and no run holds the deploy lock.
pub fn takeover(config: &Config, opts: &ExecOptions, port: u16) -> Result<TakeoverReport, Error> {
    let (blue, green) = (config.slots.blue, config.slots.green);
    let slot = match port {
        p if p == blue => "blue",
        p if p == green => "green",
        _ => {
            return Err(Error::Refused {
                message: format!(
                    "takeover --port: {port} is not a slot port (blue {blue}, green {green}): bluegreen has no reason to stop what listens there"
                ),
            })
        }
    };
    let (plan, env) = prepare(config, opts)?;
    let (proxies, apps): (Vec<Conn>, Vec<Conn>) = connect(&plan, &env, opts, None)?
        .into_iter()
        .partition(|c| c.id == bluegreen_core::plan::PROXY_ID);
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
    if live == slot {
        return Err(Error::Refused {
            message: format!(
                "takeover --port {port}: the proxy still sends traffic to port {port} (the upstream names the {slot} slot): deploy first, so that bluegreen's slot serves, then take over"
            ),
        });
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
    let results = on_each(&apps, &|c, w| {
        let rc = calls::StopForeign {
            deploy_dir: Word::lit(&config.deploy_dir),
            blue_port: blue,
            green_port: green,
            port,
            signal: Word::lit(&config.stop.signal),
            grace_secs: config.stop.grace.as_secs().max(1),
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
    let outcome = if failed.is_empty() {
        format!("stopped what bluegreen did not start on port {port}, as asked")
    } else {
        format!(
            "asked to stop what bluegreen did not start on port {port}; failed on {}",
            failed.join(", ")
        )
    };
    let audit = calls::Audit {
        state_dir: Word::lit(&config.proxy.state_dir),
        event: Word::lit("takeover"),
        app: Word::lit(&config.app),
        outcome: Word::lit(&outcome),
        target: Word::lit(slot),
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
        port,
        hosts,
        outcome,
    })
}
