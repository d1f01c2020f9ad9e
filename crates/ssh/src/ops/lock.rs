//! The deploy lock on the proxy: reading it ([`lock_show`]) and breaking a stale one
//! ([`lock_release`]).

use super::{ago, call, connect_proxy, env_only, proxystatus, who};
use crate::error::{human, last_line, Error};
use crate::ExecOptions;
use bluegreen_core::remote::calls;
use bluegreen_core::{Config, Word};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

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
    /// The lock as `proxystatus` reports it (its `now` and `lock.*` keys).
    pub(super) fn from_kv(
        kv: &BTreeMap<String, String>,
        path: String,
        stale_after: Duration,
    ) -> LockStatus {
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

    /// Who holds it, or `an unknown holder` when the lock records no one.
    pub(super) fn holder_or_unknown(&self) -> &str {
        if self.holder.is_empty() {
            "an unknown holder"
        } else {
            &self.holder
        }
    }

    /// How long it has been held, as a person reads it (`2m05s`).
    pub(super) fn age_words(&self) -> String {
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

/// Where the deploy lock is on the proxy: `<state_dir>/lock`.
pub(super) fn lock_path(config: &Config) -> String {
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
    let breaklock = calls::BreakLock {
        state_dir: Word::lit(&config.proxy.state_dir),
        who: Word::lit(who(opts)),
        app: Word::lit(&config.app),
        // Compare-and-delete: only the lock read above, not one a new run took since.
        token: Word::lit(&lock.token),
    };
    let out = call(
        &proxy.id,
        &w,
        "breaklock",
        &breaklock.into(),
        &env_only(&env, "breaklock"),
    )?;
    Ok((lock, last_line(&out.stdout)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::parse_kv;

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
}
