//! What both backends say, defined once: the outcome of a run (its summary line and its Slack
//! texts), a health check's verdict, and how durations read.
//!
//! A message is a [`Template`] with `{name}` placeholders. `exec` fills it with values
//! ([`Template::fill`]); the rendered script turns it into one bash word whose placeholders are
//! expansions of its own variables ([`Template::to_bash`]), so both say the very same words. The
//! durations in them read the same too: [`human_ms`] in Rust, [`HUMAN_BASH`] (`bg_human`) in bash.

use crate::plan::Action;
use std::fmt::Write as _;

/// A message with `{name}` placeholders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Template(pub &'static str);

/// A placeholder the template names that the caller did not provide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfilled(pub String);

impl Template {
    /// The placeholders' names, in order.
    pub fn names(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut rest = self.0;
        while let Some(i) = rest.find('{') {
            let after = &rest[i + 1..];
            let Some(j) = after.find('}') else { break };
            out.push(&after[..j]);
            rest = &after[j + 1..];
        }
        out
    }

    /// The message with every placeholder replaced by `value(name)`.
    pub fn fill<'a>(&self, value: impl Fn(&str) -> Option<&'a str>) -> Result<String, Unfilled> {
        self.build(|out, piece| match piece {
            Piece::Text(t) => {
                out.push_str(t);
                Ok(())
            }
            Piece::Name(n) => {
                out.push_str(value(n).ok_or_else(|| Unfilled(n.to_string()))?);
                Ok(())
            }
        })
    }

    /// The message as one double-quoted bash word: the text quoted, each placeholder replaced by
    /// `expansion(name)`, bash text such as `${BG_APP}` or `$(bg_human "$ms")`.
    pub fn to_bash<'a>(
        &self,
        expansion: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<String, Unfilled> {
        let mut word = self.build(|out, piece| match piece {
            Piece::Text(t) => {
                for c in t.chars() {
                    if matches!(c, '"' | '\\' | '$' | '`') {
                        out.push('\\');
                    }
                    out.push(c);
                }
                Ok(())
            }
            Piece::Name(n) => {
                out.push_str(expansion(n).ok_or_else(|| Unfilled(n.to_string()))?);
                Ok(())
            }
        })?;
        word.insert(0, '"');
        word.push('"');
        Ok(word)
    }

    fn build(
        &self,
        mut f: impl FnMut(&mut String, Piece<'_>) -> Result<(), Unfilled>,
    ) -> Result<String, Unfilled> {
        let mut out = String::with_capacity(self.0.len() + 32);
        let mut rest = self.0;
        while let Some(i) = rest.find('{') {
            f(&mut out, Piece::Text(&rest[..i]))?;
            let after = &rest[i + 1..];
            let Some(j) = after.find('}') else {
                f(&mut out, Piece::Text(&rest[i..]))?;
                return Ok(out);
            };
            f(&mut out, Piece::Name(&after[..j]))?;
            rest = &after[j + 1..];
        }
        f(&mut out, Piece::Text(rest))?;
        Ok(out)
    }
}

enum Piece<'a> {
    Text(&'a str),
    Name(&'a str),
}

/// The run's one-line summary, by action: `{app}`, `{release}` (12 hex digits), `{target}` (the
/// slot now live; for a retire, the slot stopped), `{previous}` (the slot live before; for a
/// retire, the live one), `{took}` and `{phases}` ([`phase_times`]).
pub fn summary(action: Action) -> Template {
    match action {
        Action::Deploy => Template(
            "deployed {app} {release} to {target} (previous: {previous}) in {took}: {phases}",
        ),
        Action::Rollback => Template(
            "rolled back {app} to {release} on {target} (from: {previous}) in {took}: {phases}",
        ),
        Action::Retire => {
            Template("retired the {target} slot of {app} (live: {previous}) in {took}: {phases}")
        }
    }
}

/// `{phases}` of a summary: each phase's name and time, `connect 120ms, prepare 85ms, ...`.
pub fn phase_times<'a>(phases: impl IntoIterator<Item = (&'a str, u128)>) -> String {
    let mut s = String::new();
    for (i, (name, ms)) in phases.into_iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{name} {}", human_ms(ms));
    }
    s
}

/// The Slack text of a run that succeeded, by action: the summary's names, and `{who}`.
pub fn notify_success(action: Action) -> Template {
    match action {
        Action::Deploy => Template(
            "{app}: deployed {release} to the {target} slot (previous: {previous}) in {took} by {who}: succeeded",
        ),
        Action::Rollback => Template(
            "{app}: rolled back to {release} on the {target} slot (from {previous}) in {took} by {who}: succeeded",
        ),
        Action::Retire => Template(
            "{app}: retired the {target} slot (live: {previous}) in {took} by {who}: succeeded",
        ),
    }
}

/// The Slack text of a run that failed: `{action}` (deploy, rollback), `{release}`, `{target}`,
/// `{who}`, `{phase}` (the phase that failed), `{took}`, `{error}` (what failed, one line).
pub const NOTIFY_FAILURE: Template =
    Template("{app}: {action} of {release} to the {target} slot by {who} FAILED in {phase} after {took}: {error}");

/// A new instance that turned healthy: `{took}`, `{probes}` (how many), `{url}`.
pub const HEALTHY: Template = Template("healthy after {took} ({probes} probes of {url})");

/// A new instance that did not turn healthy in time: `{deadline}`, `{url}`, `{last}` (the last
/// probe, in [`ProbeOutcome`]'s words, or how many good probes in a row it had).
pub const NOT_HEALTHY: Template =
    Template("not healthy after {deadline} at {url}: last probe: {last}");

/// A new instance that exited while it was health-checked: `{what}` (the library's words: "the
/// green instance exited while it was health-checked with status 1 (log: ...)"), `{after}`.
pub const DIED: Template = Template("{what}, {after} into the health checks");

/// The request through the proxy after the switch that did not answer as wanted: `{url}` (its
/// credentials hidden), `{expected}` (the status), `{last}` (a [`ProbeOutcome`]).
pub const CHECK_FAILED: Template = Template(
    "check after the switch failed: GET {url} expected {expected}, last: {last} (switching traffic back to the previous slot)",
);

/// What one failed health probe found, in words both backends use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// An answer with another status than the one wanted.
    Status(u16),
    /// The wanted status, but the body lacks the wanted text.
    Body(u16),
    /// No answer: the connection was refused.
    Refused,
    /// No answer within `health.timeout`.
    TimedOut,
    /// No answer: the host name does not resolve.
    Unresolved,
    /// No answer, for another reason (its description).
    NoAnswer(String),
}

/// [`ProbeOutcome::Status`]'s words: `{code}`.
pub const STATUS_WORDS: Template = Template("status {code}");

/// [`ProbeOutcome::Body`]'s words: `{code}`.
pub const BODY_WORDS: Template = Template("status {code} without the expected body text");

/// [`ProbeOutcome::NoAnswer`]'s words: `{why}`.
pub const NO_ANSWER_WORDS: Template = Template("no answer ({why})");

/// `{last}` of [`NOT_HEALTHY`] when the deadline passed during a run of good probes: `{good}`,
/// `{need}`.
pub const GOOD_IN_A_ROW: Template = Template("{good} of {need} consecutive good probes");

impl std::fmt::Display for ProbeOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let code = |t: Template, c: &u16| {
            let c = c.to_string();
            t.fill(|n| (n == "code").then_some(c.as_str()))
                .unwrap_or_default()
        };
        match self {
            ProbeOutcome::Status(c) => f.write_str(&code(STATUS_WORDS, c)),
            ProbeOutcome::Body(c) => f.write_str(&code(BODY_WORDS, c)),
            ProbeOutcome::Refused => f.write_str("no answer (connection refused)"),
            ProbeOutcome::TimedOut => f.write_str("no answer (timed out)"),
            ProbeOutcome::Unresolved => f.write_str("no answer (the host name does not resolve)"),
            ProbeOutcome::NoAnswer(why) => f.write_str(
                &NO_ANSWER_WORDS
                    .fill(|n| (n == "why").then_some(why.as_str()))
                    .unwrap_or_default(),
            ),
        }
    }
}

/// Why a probe sent from the host got no answer (`NoAnswer`'s words): the host's curl says only
/// that it got none.
pub const HOST_PROBE_NO_ANSWER: &str = "probed from the host";

/// How curl's exit codes map to [`ProbeOutcome`]s, for the script's probes from the runner (any
/// other code: `NoAnswer("curl exit N")`).
pub const CURL_EXITS: [(u8, ProbeOutcome); 3] = [
    (6, ProbeOutcome::Unresolved),
    (7, ProbeOutcome::Refused),
    (28, ProbeOutcome::TimedOut),
];

/// `{last}` of [`NOT_HEALTHY`] when the deadline passed during a run of good probes.
pub fn good_in_a_row(good: u32, need: u32) -> String {
    let (good, need) = (good.to_string(), need.to_string());
    GOOD_IN_A_ROW
        .fill(|n| match n {
            "good" => Some(good.as_str()),
            "need" => Some(need.as_str()),
            _ => None,
        })
        .unwrap_or_default()
}

/// A duration as both backends write it: `850ms`, `1.23s` (hundredths, not rounded), `2m05s`.
pub fn human_ms(ms: u128) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{}.{:02}s", ms / 1000, ms % 1000 / 10)
    } else {
        format!("{}m{:02}s", ms / 60_000, ms / 1000 % 60)
    }
}

/// [`human_ms`] in bash: `bg_human MS` prints the duration.
pub const HUMAN_BASH: &str = r#"bg_human() {
  local ms=$1
  if [ "$ms" -lt 1000 ]; then
    printf '%dms' "$ms"
  elif [ "$ms" -lt 60000 ]; then
    printf '%d.%02ds' $((ms / 1000)) $((ms % 1000 / 10))
  else
    printf '%dm%02ds' $((ms / 60000)) $((ms / 1000 % 60))
  fi
}"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_reads_the_same_in_bash() {
        let values: Vec<u128> = (0..70)
            .map(|i| i * 997)
            .chain([
                0, 1, 999, 1000, 1009, 1010, 59_999, 60_000, 61_005, 3_599_999, 7_200_000,
            ])
            .collect();
        let script = format!(
            "{HUMAN_BASH}\nfor ms in {}; do bg_human \"$ms\"; echo; done",
            values
                .iter()
                .map(u128::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        );
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(script)
            .output()
            .expect("bash runs");
        let bash: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        let rust: Vec<String> = values.iter().map(|&ms| human_ms(ms)).collect();
        assert_eq!(bash, rust);
        assert_eq!(human_ms(1239), "1.23s");
        assert_eq!(human_ms(125_000), "2m05s");
    }

    #[test]
    fn templates_fill_and_quote_for_bash_alike() {
        let t = Template("{app}: \"{what}\" cost $5 in `{took}`\\");
        assert_eq!(t.names(), ["app", "what", "took"]);
        let values = |n: &str| match n {
            "app" => Some("shop"),
            "what" => Some("it's $HOME"),
            "took" => Some("2.00s"),
            _ => None,
        };
        let filled = t.fill(values).expect("every name");
        // The bash word expands variables holding the same values to the same text.
        let word = t
            .to_bash(|n| match n {
                "app" => Some("${A}"),
                "what" => Some("${W}"),
                "took" => Some("$(printf %s \"$T\")"),
                _ => None,
            })
            .expect("every name");
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "A=shop W='it'\\''s $HOME' T=2.00s; printf %s {word}"
            ))
            .output()
            .expect("bash runs");
        assert_eq!(String::from_utf8_lossy(&out.stdout), filled);
        assert_eq!(t.fill(|_| None), Err(Unfilled("app".into())));
    }

    #[test]
    fn every_template_names_only_what_its_backends_provide() {
        let run = ["app", "release", "target", "previous", "took", "phases"];
        for a in [Action::Deploy, Action::Rollback, Action::Retire] {
            assert!(summary(a).names().iter().all(|n| run.contains(n)), "{a:?}");
            let mut with_who = run.to_vec();
            with_who.push("who");
            assert!(notify_success(a)
                .names()
                .iter()
                .all(|n| with_who.contains(n)));
        }
        assert_eq!(
            NOT_HEALTHY.names(),
            ["deadline", "url", "last"],
            "the script's bg_health fills these"
        );
        assert_eq!(
            phase_times([("connect", 120), ("prepare", 1500)]),
            "connect 120ms, prepare 1.50s"
        );
    }
}
