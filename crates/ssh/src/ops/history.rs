//! The audit log on the proxy: its last events ([`history`]) and each as a line.

use super::{call, connect_proxy, env_only};
use crate::error::Error;
use crate::{short, ExecOptions};
use bluegreen_core::remote::calls;
use bluegreen_core::{Config, Word};
use serde_json::Value;

/// The last `count` events of the audit log on the proxy, oldest first, one JSON object each
/// (`time event app outcome target from release deployer`). Lines that are not JSON are skipped.
pub fn history(config: &Config, opts: &ExecOptions, count: usize) -> Result<Vec<Value>, Error> {
    let (_, env, proxy) = connect_proxy(config, opts)?;
    let w = proxy.worker?;
    let history = calls::History {
        state_dir: Word::lit(&config.proxy.state_dir),
        count: count.max(1),
    };
    let out = call(
        &proxy.id,
        &w,
        "history",
        &history.into(),
        &env_only(&env, "history"),
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

#[cfg(test)]
mod tests {
    use super::*;

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
