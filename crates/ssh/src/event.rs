//! Progress events: one line per host and step as the deploy runs.

use crate::error::human;
use std::fmt;
use std::time::Duration;

/// The host label of events that concern no remote host (artifact, drain, notify).
pub const LOCAL: &str = "local";

/// What happened to a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The step began.
    Started,
    /// The step is still running (e.g. health polling); `message` says how far it got.
    Progress,
    /// The step finished successfully.
    Ok,
    /// The step failed.
    Failed,
    /// The step was not needed (e.g. stopping the old slot on a first deploy).
    Skipped,
    /// Something the user should know, the step carries on.
    Warning,
}

impl Status {
    /// The short word shown in the event line.
    pub fn word(self) -> &'static str {
        match self {
            Status::Started => "..",
            Status::Progress => "..",
            Status::Ok => "ok",
            Status::Failed => "FAIL",
            Status::Skipped => "skip",
            Status::Warning => "warn",
        }
    }
}

/// One progress event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Host id (`proxy`, `app1`, ...), or [`LOCAL`].
    pub host: String,
    /// Step name (`lock`, `copy`, `start`, ...; also `connect`, `artifact`, `rollback`).
    pub step: String,
    /// The phase the step belongs to (`prepare`, ...), or `connect` before the phases.
    pub phase: String,
    /// What happened.
    pub status: Status,
    /// How long the step took (finished, failed and progress events).
    pub duration: Option<Duration>,
    /// What it did, in a few words (the remote output's last line, throughput, ...).
    pub message: String,
    /// The resolved `bg_main ...` call line, on start events when verbose is on.
    pub command: Option<String>,
    /// Whether the step runs as clean-up after a failure.
    pub cleanup: bool,
}

impl Event {
    pub(crate) fn new(host: &str, phase: &str, step: &str, status: Status) -> Event {
        Event {
            host: host.to_string(),
            step: step.to_string(),
            phase: phase.to_string(),
            status,
            duration: None,
            message: String::new(),
            command: None,
            cleanup: false,
        }
    }

    pub(crate) fn took(mut self, d: Duration) -> Event {
        self.duration = Some(d);
        self
    }

    pub(crate) fn msg(mut self, m: impl Into<String>) -> Event {
        self.message = m.into();
        self
    }
}

impl fmt::Display for Event {
    /// `[app1] start      ok  1.23s  started green on port 8081 as pid 1234`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let step = if self.cleanup {
            format!("{}*", self.step)
        } else {
            self.step.clone()
        };
        write!(f, "[{}] {:<10} {}", self.host, step, self.status.word())?;
        if let Some(d) = self.duration {
            write!(f, "  {}", human(d))?;
        }
        // Multi-line remote output is folded to keep one line per event.
        let message: Vec<&str> = self
            .message
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        if !message.is_empty() {
            write!(f, "  {}", message.join(" | "))?;
        }
        if let Some(c) = &self.command {
            // The exact line may hold quoted newlines (the upstream file's content): shown as `\n`.
            write!(f, "  $ {}", c.trim_end().replace('\n', "\\n"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_format() {
        let e = Event::new("app1", "start", "start", Status::Ok)
            .took(Duration::from_millis(1234))
            .msg("started green on port 8081 as pid 1234\n");
        assert_eq!(
            e.to_string(),
            "[app1] start      ok  1.23s  started green on port 8081 as pid 1234"
        );
    }

    #[test]
    fn started_with_command_and_multiline_message() {
        let mut e = Event::new("proxy", "prepare", "lock", Status::Started);
        e.command = Some("bg_main lock /var/lib/bluegreen 'a@b' 'deploy of shop'\n".into());
        assert_eq!(
            e.to_string(),
            "[proxy] lock       ..  $ bg_main lock /var/lib/bluegreen 'a@b' 'deploy of shop'"
        );
        e.command = Some("bg_main switch /x 'server a:1;\nserver b:1;\n' no\n".into());
        assert_eq!(
            e.to_string(),
            "[proxy] lock       ..  $ bg_main switch /x 'server a:1;\\nserver b:1;\\n' no"
        );
        let mut e = Event::new("app2", "retire", "stop", Status::Failed)
            .took(Duration::from_millis(80))
            .msg("line one\n\n  line two  \n");
        e.cleanup = true;
        assert_eq!(
            e.to_string(),
            "[app2] stop*      FAIL  80ms  line one | line two"
        );
    }
}
