//! The releases kept on the app hosts (`bluegreen releases`), with what the audit log says of
//! each: when it was deployed, by whom, and whether that deploy succeeded.

use super::{call, connect, env_only, on_each, prepare};
use crate::error::Error;
use crate::{short, ExecOptions};
use bluegreen_core::remote::calls;
use bluegreen_core::{Config, Word};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt;

/// One release: on how many app hosts it is kept, the slots holding it, its last deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseInfo {
    /// The artifact's sha256.
    pub release: String,
    /// When it was kept last (on any host), milliseconds since the epoch.
    pub installed_ms: u64,
    /// The app hosts keeping it.
    pub hosts: Vec<String>,
    /// `live` (the release of the last successful deploy or rollback), or empty.
    pub role: &'static str,
    /// The time, deployer and outcome of the last deploy or rollback to it (the audit log).
    pub last_deploy: Option<(String, String, String)>,
}

/// What `bluegreen releases` prints: newest first.
#[derive(Debug, Clone)]
pub struct ReleasesReport {
    /// The app hosts (how many keep each release is out of these).
    pub host_count: usize,
    /// The releases, newest first.
    pub releases: Vec<ReleaseInfo>,
    /// App hosts that could not be read, with why.
    pub errors: Vec<(String, String)>,
}

impl ReleasesReport {
    /// As JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "hosts": self.host_count,
            "releases": self.releases.iter().map(|r| json!({
                "release": r.release,
                "kept_at": r.installed_ms / 1000,
                "hosts": r.hosts,
                "role": r.role,
                "deployed": r.last_deploy.as_ref().map(|d| json!({"time": d.0, "by": d.1, "outcome": d.2})),
            })).collect::<Vec<_>>(),
            "errors": self.errors.iter().map(|(h, e)| json!({"host": h, "error": e})).collect::<Vec<_>>(),
        })
    }
}

impl fmt::Display for ReleasesReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<12}  {:<8}  {:<5}  {:<20}  {:<10}  BY",
            "RELEASE", "ROLE", "HOSTS", "DEPLOYED", "OUTCOME"
        )?;
        for r in &self.releases {
            let (time, by, outcome) = r
                .last_deploy
                .clone()
                .unwrap_or_else(|| ("-".into(), "-".into(), "-".into()));
            writeln!(
                f,
                "{:<12}  {:<8}  {:<5}  {:<20}  {:<10}  {}",
                short(&r.release),
                if r.role.is_empty() { "-" } else { r.role },
                format!("{}/{}", r.hosts.len(), self.host_count),
                time,
                outcome,
                by
            )?;
        }
        for (h, e) in &self.errors {
            writeln!(f, "{h}: cannot be read: {e}")?;
        }
        write!(
            f,
            "`bluegreen rollback --to RELEASE` (a sha prefix or a deploy time) goes back to one kept on every host"
        )
    }
}

/// Reads every app host's kept releases and the proxy's state file and audit log, at once.
pub fn releases(config: &Config, opts: &ExecOptions) -> Result<ReleasesReport, Error> {
    let (plan, env) = prepare(config, opts)?;
    let conns = connect(&plan, &env, opts, None)?;
    let results = on_each(&conns, &|c, w| {
        let rc = if c.id == bluegreen_core::plan::PROXY_ID {
            calls::History {
                state_dir: Word::lit(&config.proxy.state_dir),
                count: 100_000,
            }
            .into()
        } else {
            calls::Releases {
                deploy_dir: Word::lit(&config.deploy_dir),
            }
            .into()
        };
        call(&c.id, w, "releases", &rc, &env_only(&env, "releases"))
            .map(|o| o.stdout)
            .map_err(|e| e.to_string())
    });

    let mut kept: BTreeMap<String, (u64, Vec<String>)> = BTreeMap::new();
    let mut audit: Vec<Value> = Vec::new();
    let mut errors = Vec::new();
    let mut host_count = 0;
    for (c, r) in conns.iter().zip(results) {
        let is_proxy = c.id == bluegreen_core::plan::PROXY_ID;
        if !is_proxy {
            host_count += 1;
        }
        match (r, is_proxy) {
            (Err(e), _) => errors.push((c.id.clone(), e)),
            (Ok(out), true) => {
                audit = out
                    .lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .collect()
            }
            (Ok(out), false) => {
                for line in out.lines() {
                    let mut words = line.split_whitespace();
                    let (Some(sha), Some(t)) = (words.next(), words.next()) else {
                        continue;
                    };
                    let e = kept.entry(sha.to_string()).or_default();
                    // Seconds with three decimals: milliseconds without the dot.
                    let ms = t.replace('.', "").parse().unwrap_or(0);
                    e.0 = e.0.max(ms);
                    e.1.push(c.id.clone());
                }
            }
        }
    }
    let s = |e: &Value, k: &str| e[k].as_str().unwrap_or_default().to_string();
    let last_success = |kind: &str| {
        audit
            .iter()
            .rev()
            .find(|e| {
                s(e, "outcome") == "success"
                    && matches!(s(e, "event").as_str(), "deploy" | "rollback")
            })
            .map(|e| s(e, kind))
    };
    let live = last_success("release").unwrap_or_default();
    let mut releases: Vec<ReleaseInfo> = kept
        .into_iter()
        .map(|(release, (installed_ms, hosts))| {
            let last = audit
                .iter()
                .rev()
                .find(|e| {
                    s(e, "release") == release
                        && matches!(s(e, "event").as_str(), "deploy" | "rollback")
                })
                .map(|e| (s(e, "time"), s(e, "deployer"), s(e, "outcome")));
            ReleaseInfo {
                role: if release == live { "live" } else { "" },
                release,
                installed_ms,
                hosts,
                last_deploy: last,
            }
        })
        .collect();
    releases.sort_by(|a, b| {
        b.installed_ms
            .cmp(&a.installed_ms)
            .then(a.release.cmp(&b.release))
    });
    Ok(ReleasesReport {
        host_count,
        releases,
        errors,
    })
}
