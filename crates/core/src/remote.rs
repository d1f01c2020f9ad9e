//! What runs on a remote host: defined once, sent by both backends.
//!
//! Every remote step is a call of one function of [`LIBRARY`], a bash script. A backend runs
//! `bash -s` on the host (see [`REMOTE_COMMAND`]) and writes the library followed by the call line on
//! its standard input. `exec` builds that line with [`RemoteCall::call_line`]; the rendered script
//! builds the same line at run time with `printf %q`. Since the library is the same text and both
//! quote every argument for bash, the two backends cannot drift apart.

use crate::word::{Var, Word};
use serde::Serialize;

/// The remote library: bash functions for every remote step.
pub const LIBRARY: &str = include_str!("remote.sh");

/// The command a backend runs on the host; the library and the call line go to its standard input.
pub const REMOTE_COMMAND: &str = "bash -s";

/// The library's functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoteFn {
    /// Take the deploy lock.
    Lock,
    /// Renew the deploy lock.
    Beat,
    /// Release the deploy lock.
    Unlock,
    /// Print the live slot.
    Detect,
    /// Finish an interrupted run's switch record.
    Reconcile,
    /// Record the switch about to happen.
    Intent,
    /// Create the slot's directory.
    Prepare,
    /// Check the uploaded artifact's sha256 and rename it into place.
    Install,
    /// Stop a slot's instance.
    Stop,
    /// Start a slot's instance.
    Start,
    /// Check that a slot's instance still runs.
    Alive,
    /// One health probe from the host.
    Probe,
    /// Rewrite the upstream file, test and reload nginx.
    Switch,
    /// Wait for nginx workers from before the reload to exit.
    Settle,
    /// Write the state file.
    Record,
    /// Make sure a slot's instance runs, restarting its kept release if needed (rollback).
    Revive,
    /// Print the release that was live before the last switch (from the state file).
    Release,
    /// Append a line to the audit log.
    Audit,
    /// Print the last lines of the audit log.
    History,
    /// Print both slots' status on an app host.
    HostStatus,
    /// Print the proxy's upstream slot, state file and lock.
    ProxyStatus,
    /// Remove the deploy lock whoever holds it.
    BreakLock,
}

impl RemoteFn {
    /// The name `bg_main` dispatches on.
    pub fn name(self) -> &'static str {
        match self {
            RemoteFn::Lock => "lock",
            RemoteFn::Beat => "beat",
            RemoteFn::Unlock => "unlock",
            RemoteFn::Detect => "detect",
            RemoteFn::Reconcile => "reconcile",
            RemoteFn::Intent => "intent",
            RemoteFn::Prepare => "prepare",
            RemoteFn::Install => "install",
            RemoteFn::Stop => "stop",
            RemoteFn::Start => "start",
            RemoteFn::Alive => "alive",
            RemoteFn::Probe => "probe",
            RemoteFn::Switch => "switch",
            RemoteFn::Settle => "settle",
            RemoteFn::Record => "record",
            RemoteFn::Revive => "revive",
            RemoteFn::Release => "release",
            RemoteFn::Audit => "audit",
            RemoteFn::History => "history",
            RemoteFn::HostStatus => "hoststatus",
            RemoteFn::ProxyStatus => "proxystatus",
            RemoteFn::BreakLock => "breaklock",
        }
    }
}

/// One call of a library function, with arguments that may refer to run-time values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemoteCall {
    /// The function.
    pub func: RemoteFn,
    /// Its arguments.
    pub args: Vec<Word>,
    /// How long the call may wait on purpose (a stop's grace, nginx's old workers), in seconds:
    /// a backend allows it this long beyond `ssh.command_timeout` before giving up on it.
    pub wait_secs: u64,
}

impl RemoteCall {
    /// A call of `func` with `args` that does not wait on purpose.
    pub fn new(func: RemoteFn, args: Vec<Word>) -> RemoteCall {
        RemoteCall {
            func,
            args,
            wait_secs: 0,
        }
    }

    /// The same call, allowed to wait `secs` seconds on purpose.
    pub fn waiting(mut self, secs: u64) -> RemoteCall {
        self.wait_secs = secs;
        self
    }

    /// The line that follows the library on the remote shell's standard input, with every argument
    /// resolved by `lookup` and quoted for bash.
    pub fn call_line<E>(
        &self,
        mut lookup: impl FnMut(&Var) -> Result<String, E>,
    ) -> Result<String, E> {
        let mut line = format!("bg_main {}", self.func.name());
        for a in &self.args {
            let value = a.resolve(&mut lookup)?;
            line.push(' ');
            line.push_str(&bash_quote(&value));
        }
        line.push('\n');
        Ok(line)
    }

    /// The whole standard input for [`REMOTE_COMMAND`]: the library, then the call line.
    pub fn stdin<E>(&self, lookup: impl FnMut(&Var) -> Result<String, E>) -> Result<String, E> {
        let mut s = String::with_capacity(LIBRARY.len() + 256);
        s.push_str(LIBRARY);
        if !s.ends_with('\n') {
            s.push('\n');
        }
        s.push_str(&self.call_line(lookup)?);
        Ok(s)
    }

    /// The call as a person reads it: `start "/srv/app/${BG_TARGET_SLOT}" ...`.
    pub fn display(&self) -> String {
        let mut s = self.func.name().to_string();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_bash());
        }
        s
    }
}

/// Quotes `s` as one bash word, so that bash reads back exactly `s`.
pub fn bash_quote(s: &str) -> String {
    // shlex quotes for POSIX shells, which bash parses the same way. It refuses only NUL, which no
    // argument can hold (validation rejects it in the config and the environment cannot carry it).
    match shlex::try_quote(s) {
        Ok(q) => q.into_owned(),
        Err(_) => {
            shlex::try_quote(&s.replace('\0', "")).map_or_else(|_| "''".into(), |q| q.into_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::word::RuntimeVar;

    #[test]
    fn call_line_quotes_every_argument() {
        let call = RemoteCall::new(
            RemoteFn::Stop,
            vec![
                Word::lit("/srv/a b/").then_runtime(RuntimeVar::TargetSlot),
                Word::lit("it's"),
                Word::lit(""),
            ],
        );
        let line: Result<String, ()> = call.call_line(|_| Ok("blue".to_string()));
        assert_eq!(line.unwrap(), "bg_main stop '/srv/a b/blue' \"it's\" ''\n");
        assert_eq!(
            call.display(),
            "stop \"/srv/a b/${BG_TARGET_SLOT}\" \"it's\" \"\""
        );
    }

    #[test]
    fn bash_reads_quoted_words_back_exactly() {
        let hostile = [
            "plain",
            "",
            "it's",
            "\"double\"",
            "$(touch /tmp/bg-pwned)",
            "`id`",
            "a; rm -rf /",
            "line1\nline2",
            "'''",
            "back\\slash",
            "${HOME}",
            "tab\there é",
        ];
        for value in hostile {
            let out = std::process::Command::new("bash")
                .arg("-c")
                .arg(format!("printf %s {}", bash_quote(value)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), value);
        }
    }

    #[test]
    fn library_dispatches_every_function() {
        for f in [
            RemoteFn::Lock,
            RemoteFn::Beat,
            RemoteFn::Unlock,
            RemoteFn::Detect,
            RemoteFn::Reconcile,
            RemoteFn::Intent,
            RemoteFn::Prepare,
            RemoteFn::Install,
            RemoteFn::Stop,
            RemoteFn::Start,
            RemoteFn::Alive,
            RemoteFn::Probe,
            RemoteFn::Switch,
            RemoteFn::Settle,
            RemoteFn::Record,
            RemoteFn::Revive,
            RemoteFn::Release,
            RemoteFn::Audit,
            RemoteFn::History,
            RemoteFn::HostStatus,
            RemoteFn::ProxyStatus,
            RemoteFn::BreakLock,
        ] {
            assert!(
                LIBRARY.contains(&format!("\nbg_{}() {{", f.name())),
                "bg_{} missing from the library",
                f.name()
            );
        }
    }
}
