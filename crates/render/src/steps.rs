//! The bash lines of one step of the plan, with the step's host and its values kept apart from the
//! text around them: a step is rendered for its own host ([`Line::concrete`]), or, for steps that
//! run on every app host, the lines of all hosts are compared and rendered once for the host table
//! (see `hosts`).

use bluegreen_core::config::ProbeFrom;
use bluegreen_core::plan::{Step, When};
use bluegreen_core::{redact_url, RemoteCall, Word};

/// A piece of a bash line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    /// Bash text, whatever the host.
    Text(String),
    /// The step's host id, as one bash word.
    Host,
    /// The step's host id inside a double-quoted string.
    HostInText,
    /// A value, as one bash word.
    Word(Word),
}

/// One bash command: `abort` tries each line of an undo step on its own.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Line(pub(crate) Vec<Seg>);

impl Line {
    /// A line beginning with `text`.
    fn text(text: &str) -> Line {
        Line(vec![Seg::Text(text.to_string())])
    }

    /// Appends text.
    fn t(mut self, text: &str) -> Line {
        match self.0.last_mut() {
            Some(Seg::Text(prev)) => prev.push_str(text),
            _ => self.0.push(Seg::Text(text.to_string())),
        }
        self
    }

    /// Appends the host id.
    fn host(mut self) -> Line {
        self.0.push(Seg::Host);
        self
    }

    /// Appends the host id, inside a double-quoted string.
    fn host_in_text(mut self) -> Line {
        self.0.push(Seg::HostInText);
        self
    }

    /// Appends a value.
    fn w(mut self, w: &Word) -> Line {
        self.0.push(Seg::Word(w.clone()));
        self
    }

    /// Appends ` ARG` for each argument of a call; the run of arguments that lists every app
    /// host's address, in order (`app_addresses`, when given), as `"${BG_APP_ADDRS[@]}"`.
    fn args(mut self, args: &[Word], app_addresses: Option<&[Word]>) -> Line {
        let run = app_addresses.and_then(|all| find_run(args, all).map(|at| (at, all.len())));
        let mut i = 0;
        while i < args.len() {
            match run {
                Some((at, len)) if i == at => {
                    self = self.t(" \"${BG_APP_ADDRS[@]}\"");
                    i += len;
                }
                _ => {
                    self = self.t(" ").w(&args[i]);
                    i += 1;
                }
            }
        }
        self
    }

    /// Appends another line.
    fn then(mut self, other: Line) -> Line {
        for seg in other.0 {
            self = match seg {
                Seg::Text(t) => self.t(&t),
                seg => {
                    self.0.push(seg);
                    self
                }
            };
        }
        self
    }

    /// The line for the step's own host `host`: each value as its own bash word.
    pub(crate) fn concrete(&self, host: &str) -> String {
        self.0
            .iter()
            .map(|seg| match seg {
                Seg::Text(t) => t.clone(),
                Seg::Host | Seg::HostInText => host.to_string(),
                Seg::Word(w) => w.to_bash(),
            })
            .collect()
    }
}

/// Where the last run of `args` equal to `all` (not empty) begins.
fn find_run(args: &[Word], all: &[Word]) -> Option<usize> {
    if all.is_empty() || all.len() > args.len() {
        return None;
    }
    (0..=args.len() - all.len()).rev().find(|&i| {
        args[i..i + all.len()]
            .iter()
            .zip(all)
            .all(|(a, b)| normalized(a) == normalized(b))
    })
}

/// `w` with adjacent literal text merged and empty text left out, so that equal words compare
/// equal however they were built.
pub(crate) fn normalized(w: &Word) -> Word {
    let mut out = Word::default();
    out.push_word(w);
    out
}

/// How the lines of a step name the app hosts' addresses in calls to the proxy.
#[derive(Clone, Copy)]
pub(crate) struct Lists<'a> {
    /// Every app host's address, in order: a call to the proxy listing them gets
    /// `"${BG_APP_ADDRS[@]}"` instead.
    pub(crate) app_addresses: &'a [Word],
}

impl Lists<'_> {
    /// The addresses to look for in the calls of `step`: only calls to the proxy list them.
    fn for_step(&self, step: &Step) -> Option<&[Word]> {
        (step.host() == Some(bluegreen_core::plan::PROXY_ID)).then_some(self.app_addresses)
    }
}

/// `bg_on HOST FN ARGS...`: a remote call, its output prefixed by the host.
fn on(call: &RemoteCall, lists: Option<&[Word]>) -> Line {
    Line::text("bg_on ")
        .host()
        .t(" ")
        .t(call.func.name())
        .args(&call.args, lists)
}

/// `VAR=$(bg_remote HOST FN ARGS...)`: a call whose output sets a variable.
fn capture(var: &str, call: &RemoteCall, lists: Option<&[Word]>) -> Line {
    Line::text(&format!("{var}=$(bg_remote "))
        .host()
        .t(" ")
        .t(call.func.name())
        .args(&call.args, lists)
        .t(")")
}

/// `line`, run only when `when` holds.
fn guard(when: When, line: Line) -> Line {
    match when {
        When::Always => line,
        When::LiveExists => Line::text("[ \"$BG_LIVE_SLOT\" = none ] || ").then(line),
    }
}

/// A URL as the script logs it, its credentials hidden ([`redact_url`]): redacted now when it is
/// literal, by `bg_redact_url` at run time when it refers to variables (whose values may hold
/// credentials, or change where the userinfo and query begin).
fn shown_url(url: &Word) -> Line {
    match url.as_literal() {
        Some(lit) => Line::default().w(&Word::lit(redact_url(&lit))),
        None => Line::text("\"$(bg_redact_url ").w(url).t(")\""),
    }
}

/// Milliseconds as seconds with three decimals, as `sleep` and curl take them.
pub(crate) fn secs(millis: u64) -> String {
    format!("{}.{:03}", millis / 1000, millis % 1000)
}

/// The bash lines of one step; each line is one command.
pub(crate) fn step_lines(step: &Step, lists: Lists<'_>) -> Vec<Line> {
    let addrs = lists.for_step(step);
    match step {
        Step::Inspect(s) => vec![
            capture("BG_RELEASE", &s.call, addrs),
            Line::text("bg_log \"[$BG_APP] release to roll back to: $BG_RELEASE\""),
        ],
        Step::Detect(s) => vec![
            capture("BG_LIVE_SLOT", &s.call, addrs),
            Line::text("bg_select_slots"),
        ],
        Step::Lock(s)
        | Step::Reconcile(s)
        | Step::Intent(s)
        | Step::Start(s)
        | Step::Record(s)
        | Step::Audit(s)
        | Step::Stop(s)
        | Step::Retire(s)
        | Step::Unlock(s) => vec![guard(s.when, on(&s.call, addrs))],
        Step::Copy(c) => {
            let dest = c.dir.clone().then_lit("/").then_lit(&c.tmp_name);
            vec![
                capture("bg_prepared", &c.prepare, addrs),
                Line::text("bg_check_space ")
                    .host()
                    .t(" \"$bg_prepared\" ")
                    .w(&c.dir),
                Line::text("bg_upload ").host().t(" ").w(&dest),
                on(&c.install, addrs),
            ]
        }
        Step::Health(h) => {
            let mut line = Line::text("bg_health ")
                .host()
                .t(" ")
                .w(&h.url)
                .t(&format!(" {} ", h.status))
                .w(&Word::lit(h.body.clone().unwrap_or_default()))
                .t(&format!(
                    " {} {} {} {}",
                    h.interval_ms, h.timeout_ms, h.deadline_ms, h.successes
                ))
                .args(&h.alive.args, addrs);
            if h.from == ProbeFrom::Host {
                line = line.args(&h.probe.args, addrs);
            }
            vec![line]
        }
        Step::Switch(s) => {
            let mut lines = vec![
                guard(s.when, on(&s.call, addrs)),
                guard(s.when, on(&s.settle, addrs)),
            ];
            if let Some(url) = &s.check_url {
                lines.push(guard(
                    s.when,
                    Line::text("bg_check_url ")
                        .w(url)
                        .t(&format!(" {} ", s.check_status))
                        .then(shown_url(url))
                        .t(&format!(
                            " {} {} {}",
                            s.check_tries,
                            secs(s.check_interval_ms),
                            secs(s.check_timeout_ms)
                        )),
                ));
            }
            lines
        }
        Step::Drain(d) => vec![
            Line::text(&format!("bg_log \"draining for {}ms\"", d.millis)),
            Line::text(&format!("sleep {}", secs(d.millis))),
        ],
        Step::Notify(_) => vec![Line::text("bg_notify succeeded")],
        Step::Hook(h) => vec![match &h.on {
            // On a host: the library's `hook`, like any call.
            Some(_) => Line::text("bg_hook_on ").host().args(&h.call.args, None),
            // On the runner: the same function, run here by bash.
            None if h.about.is_some() => {
                Line::text("bg_hook_here ").host().args(&h.call.args, None)
            }
            None => Line::text("bg_hook_here runner").args(&h.call.args, None),
        }],
    }
}

/// The bash lines of one undo step of `abort`: each tried on its own, a failure counted in
/// `undo_failed`.
pub(crate) fn undo_lines(step: &Step, lists: Lists<'_>) -> Vec<Line> {
    step_lines(step, lists)
        .into_iter()
        .map(|line| match step {
            // A failed switch back leaves traffic on the new slot: keep it running.
            Step::Switch(_) => line.t(" || { undo_failed=1; bg_keep_new=yes; }"),
            Step::Stop(_) => Line::text("if [ -n \"$bg_keep_new\" ]; then bg_log \"[")
                .host_in_text()
                .t("] left running: the switch back could not be confirmed, so the new slot may still serve traffic\"; else ")
                .then(line)
                .t(" || undo_failed=1; fi"),
            // The on_failure hook is told of the failure; its own failure undoes nothing less.
            Step::Hook(h) => line.t(&format!(
                " || bg_log \"the {} hook failed (see above); the undo goes on\"",
                h.hook.name()
            )),
            _ => line.t(" || undo_failed=1"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_of_app_addresses_becomes_the_array() {
        let a = Word::parse_env("${A}").unwrap();
        let b = Word::lit("10.0.0.2");
        let args = [Word::lit("x"), a.clone(), b.clone()];
        let all = [a.clone(), b.clone()];
        let line = Line::text("f").args(&args, Some(&all));
        assert_eq!(line.concrete("proxy"), "f \"x\" \"${BG_APP_ADDRS[@]}\"");
        // Not in this order, or not all of them: each argument as it is.
        let line = Line::text("f").args(&[b.clone(), a.clone()], Some(&all));
        assert_eq!(line.concrete("proxy"), "f \"10.0.0.2\" \"${A}\"");
        let line = Line::text("f").args(&args, None);
        assert_eq!(line.concrete("proxy"), "f \"x\" \"${A}\" \"10.0.0.2\"");
        // The last run, when there are several: either expands to the same arguments.
        let args = [a.clone(), b.clone(), Word::lit("y"), a, b];
        let line = Line::text("f").args(&args, Some(&all));
        assert_eq!(
            line.concrete("proxy"),
            "f \"${A}\" \"10.0.0.2\" \"y\" \"${BG_APP_ADDRS[@]}\""
        );
    }

    #[test]
    fn words_compare_equal_however_they_were_built() {
        let mut w = Word::lit("a");
        w.0.push(bluegreen_core::word::Part::Lit("b".into()));
        w.0.push(bluegreen_core::word::Part::Lit(String::new()));
        assert_ne!(w, Word::lit("ab"));
        assert_eq!(normalized(&w), Word::lit("ab"));
    }
}
