//! Renders a bluegreen [`Plan`] as a standalone bash script or a Jenkins declarative pipeline.
//!
//! Both outputs come from askama templates in the workspace's `templates/` folder. Each template is
//! fed a view struct built here from the plan; the remote commands inside come from the core crate's
//! remote library, the same text `bluegreen exec` sends, so the rendered script and `exec` cannot
//! drift apart.
//!
//! ```
//! let yaml = r#"
//! app: shop
//! artifact: build/libs/*.jar
//! proxy: { host: 10.0.0.5, upstream_file: /etc/nginx/shop-upstream.conf }
//! servers: [ { host: 10.0.0.11 } ]
//! deploy_dir: /srv/shop
//! "#;
//! let config = bluegreen_core::Config::parse(yaml, "bluegreen.yaml").unwrap();
//! let plan = bluegreen_core::Plan::new(&config);
//! let script = bluegreen_render::script(&plan, "bluegreen.yaml").unwrap();
//! assert!(script.starts_with("#!/bin/bash\n"));
//! ```

use askama::Template;
use bluegreen_core::config::{Chars, HostKeyPolicy, ProbeFrom, ValueRule};
use bluegreen_core::plan::{Host, PhaseKind, Step, When};
use bluegreen_core::remote::{RemoteCall, LIBRARY, REMOTE_COMMAND};
use bluegreen_core::{redact_url, Plan, Var, Word};
use std::fmt::Write as _;
use std::path::Path;

/// Groovy 2.4 refuses string literals longer than this many UTF-16 code units.
pub const GROOVY_MAX_LITERAL: usize = 65_535;

/// The heredoc terminator the Jenkinsfile uses to write the deploy script.
const SCRIPT_EOF: &str = "BLUEGREEN_SCRIPT_EOF";

/// What can go wrong while rendering or checking a rendered file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A template failed to render.
    #[error("rendering {what} failed: {source}")]
    Template {
        /// Which output.
        what: &'static str,
        /// Why.
        #[source]
        source: askama::Error,
    },
    /// A line of the deploy script is too long for a Groovy string literal.
    #[error("a line of the deploy script is {len} bytes long once escaped for Groovy; a Groovy string literal holds at most {GROOVY_MAX_LITERAL}")]
    TooLong {
        /// Its length in modified UTF-8 bytes.
        len: usize,
    },
    /// The file on disk could not be read.
    #[error("cannot read `{}`: {source}", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file on disk differs from what would be rendered now.
    #[error("`{}` is stale: run the render command with `-o` to update it\n{diff}", path.display())]
    Stale {
        /// The file.
        path: std::path::PathBuf,
        /// A unified diff from the file to the fresh output.
        diff: String,
    },
}

/// The two outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A standalone bash script.
    Script,
    /// A declarative Jenkinsfile.
    Jenkinsfile,
}

/// Renders `plan` in `format`; `source` names the config in the header.
pub fn render(plan: &Plan, format: Format, source: &str) -> Result<String, Error> {
    match format {
        Format::Script => script(plan, source),
        Format::Jenkinsfile => jenkinsfile(plan, source),
    }
}

/// Compares `fresh` with the file at `path`; [`Error::Stale`] carries a diff when they differ.
pub fn check(fresh: &str, path: &Path) -> Result<(), Error> {
    let on_disk = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if on_disk == fresh {
        return Ok(());
    }
    let diff = similar::TextDiff::from_lines(on_disk.as_str(), fresh)
        .unified_diff()
        .context_radius(3)
        .header(&path.display().to_string(), "rendered now")
        .to_string();
    Err(Error::Stale {
        path: path.to_path_buf(),
        diff,
    })
}

/// Template-facing view of the deploy script.
#[derive(Template)]
#[template(path = "deploy.sh", escape = "none")]
struct ScriptView {
    app: String,
    source: String,
    app_q: String,
    blue: u16,
    green: u16,
    host_key_policy: &'static str,
    connect_timeout: u64,
    host_ids: String,
    app_host_ids: String,
    library: &'static str,
    env_checks: String,
    rule_cases: String,
    missing_message: String,
    bad_message: String,
    artifact: String,
    host_lines: String,
    known_hosts: String,
    identity_file: String,
    remote_command: &'static str,
    webhook_ref: String,
    slack_channel: String,
    phases: String,
    abort_cases: String,
    phase_names: String,
    rollback_phase_names: String,
    retire_phase_names: String,
    run_alternatives: String,
    beat_call: String,
    beat_lease: String,
    slot_cases: String,
    beat_every: String,
}

/// `bg_select_slots`'s case arms, from core's one definition of slot selection.
fn slot_cases() -> String {
    let port = |slot: &str| format!("$BG_{}_PORT", slot.to_ascii_uppercase());
    bluegreen_core::plan::SLOT_CHOICES
        .iter()
        .map(|(live, target)| {
            let live_port = if *live == "none" {
                "\"\"".to_string()
            } else {
                port(live)
            };
            format!(
                "    {live}) BG_LIVE_PORT={live_port} BG_TARGET_SLOT={target} BG_TARGET_PORT={} ;;",
                port(target)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Appends `plan`'s phase functions (`bg_ACTION_phase_PHASE`, and one function per host for
/// parallel phases) and its abort cases (`ACTION:PHASE)`).
fn render_phases(plan: &Plan, phases: &mut String, abort_cases: &mut String) {
    let action = plan.action.name();
    for phase in &plan.phases {
        let name = phase.kind.name();
        if phase.parallel && phase.steps.len() > 1 {
            let mut fns = Vec::new();
            for step in &phase.steps {
                let f = format!("bg_{action}_{name}_{}", step.host().unwrap_or("all"));
                let _ = writeln!(phases, "{f}() {{");
                let _ = writeln!(phases, "  bg_at {}", plan.step_number(step).unwrap_or(0));
                for line in step_lines(step) {
                    let _ = writeln!(phases, "  {line}");
                }
                phases.push_str("}\n\n");
                fns.push(f);
            }
            let _ = writeln!(
                phases,
                "bg_{action}_phase_{name}() {{\n  bg_parallel {}\n}}\n",
                fns.join(" ")
            );
        } else {
            let _ = writeln!(phases, "bg_{action}_phase_{name}() {{");
            for step in &phase.steps {
                let _ = writeln!(phases, "  bg_at {}", plan.step_number(step).unwrap_or(0));
                for line in step_lines(step) {
                    let _ = writeln!(phases, "  {line}");
                }
            }
            if phase.kind == PhaseKind::Promote {
                // Jenkins' gate waits in `input` with no phase running to renew the lock: this
                // phase, right before it, lengthens the lock's lease by the gate's length.
                let lease =
                    plan.jenkins.gate.unwrap_or(0) * 60 + plan.heartbeat.every_ms * 4 / 1000;
                let _ = writeln!(phases, "  bg_renew_lock {lease}");
            } else if phase.steps.is_empty() {
                phases.push_str("  :\n");
            }
            phases.push_str("}\n\n");
        }
        if !phase.on_failure.is_empty() {
            let _ = writeln!(abort_cases, "    {action}:{name})");
            for step in &phase.on_failure {
                for line in step_lines(step) {
                    let line = match step {
                        // A failed switch back leaves traffic on the new slot: keep it running.
                        Step::Switch(_) => format!("{line} || {{ undo_failed=1; bg_keep_new=yes; }}"),
                        Step::Stop(s) => format!(
                            "if [ -n \"$bg_keep_new\" ]; then bg_log \"[{}] left running: the switch back could not be confirmed, so the new slot may still serve traffic\"; else {line} || undo_failed=1; fi",
                            s.host
                        ),
                        _ => format!("{line} || undo_failed=1"),
                    };
                    let _ = writeln!(abort_cases, "      {line}");
                }
            }
            abort_cases.push_str("      ;;\n");
        }
    }
}

/// Marks a shell variable in a message: [`message_template`] turns it into `${NAME}`.
fn mark(name: &str) -> String {
    format!("\u{1}{name}\u{1}")
}

/// A core error message whose values are [`mark`]ed, as one bash word that prints the same text
/// with the shell variables' values: the script's messages come from the same `Display` as
/// `exec`'s, so they cannot differ.
fn message_template(e: &bluegreen_core::Error) -> String {
    let text = e.to_string();
    let mut w = Word::default();
    for (i, piece) in text.split('\u{1}').enumerate() {
        if i % 2 == 0 {
            w.push_lit(piece);
        } else {
            w.push_var(Var::Env(piece.to_string()));
        }
    }
    w.to_bash()
}

/// `bg_check_var FIELD NAME RULE` for every `${VAR}` the plan uses, in the order `exec` checks
/// them, skipping what exec does not check either: the artifact's variables outside a deploy, and
/// the key and known_hosts files' when `$BG_SSH_KEY` / `$BG_KNOWN_HOSTS` override them.
fn env_checks(plan: &Plan) -> String {
    let mut lines = Vec::new();
    for e in &plan.env {
        let check = format!(
            "bg_check_var {} {} {}",
            Word::lit(&e.field).to_bash(),
            e.name,
            ValueRule::for_field(&e.field).name
        );
        lines.push(match e.field.as_str() {
            "artifact" => format!("  [ \"$1\" != deploy ] || {check}"),
            "ssh.identity_file" => format!("  [ -n \"${{BG_SSH_KEY:-}}\" ] || {check}"),
            "ssh.known_hosts" => format!("  [ -n \"${{BG_KNOWN_HOSTS:-}}\" ] || {check}"),
            _ => format!("  {check}"),
        });
    }
    if lines.is_empty() {
        lines.push("  :".into());
    }
    lines.join("\n")
}

/// A bash `$'...'` string holding `s` (which has no NUL: no bash string can).
fn ansi_c(s: &str) -> String {
    let mut out = String::from("$'");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A bracket expression matching exactly `chars` (or anything else, `negate`), whatever the
/// locale: letters are listed one by one, not as ranges; `]` goes first, `-` last.
fn bracket(chars: &[char], negate: bool) -> String {
    let mut set: Vec<char> = Vec::new();
    for &c in chars {
        if !set.contains(&c) {
            set.push(c);
        }
    }
    let mut out = String::from(if negate { "[^" } else { "[" });
    if set.contains(&']') {
        out.push(']');
    }
    for &c in &set {
        if !matches!(c, ']' | '-' | '^') {
            out.push(c);
        }
    }
    if set.contains(&'^') {
        out.push('^');
    }
    if set.contains(&'-') {
        out.push('-');
    }
    out.push(']');
    out
}

/// The `case` arms of `bg_check_var`: one per [`ValueRule`], generated from its definition, setting
/// `problem` to the rule's message when `$value` does not pass.
fn rule_cases() -> String {
    let mut out = String::new();
    for rule in ValueRule::ALL {
        let _ = writeln!(out, "    {})", rule.name);
        let test = match rule.chars {
            Chars::Only { extra, not_first } => {
                let all: Vec<char> = ('A'..='Z')
                    .chain('a'..='z')
                    .chain('0'..='9')
                    .chain(extra.chars())
                    .collect();
                let first: Vec<char> = all
                    .iter()
                    .copied()
                    .filter(|c| !not_first.contains(*c))
                    .collect();
                let re = format!("^{}{}*$", bracket(&first, false), bracket(&all, false));
                let _ = writeln!(out, "      re={}", ansi_c(&re));
                "! [[ $value =~ $re ]]".to_string()
            }
            // One literal (quoted) character per test: a quoted bracket would not be a set.
            Chars::Not(bad) => bad
                .chars()
                .filter(|&c| c != '\0')
                .map(|c| format!("[[ $value == *{}* ]]", ansi_c(&c.to_string())))
                .collect::<Vec<_>>()
                .join(" || "),
        };
        let mut branch = "if";
        if let Some(empty) = rule.empty {
            let _ = writeln!(out, "      if [ -z \"$value\" ]; then");
            let _ = writeln!(out, "        problem={}", Word::lit(empty).to_bash());
            branch = "elif";
        }
        let _ = writeln!(out, "      {branch} {test}; then");
        let _ = writeln!(out, "        problem={}", Word::lit(rule.message).to_bash());
        out.push_str("      fi\n      ;;\n");
    }
    out.push_str("    *) bg_fail \"unknown check $3\" ;;");
    out
}

/// Renders the standalone bash script.
pub fn script(plan: &Plan, source: &str) -> Result<String, Error> {
    let hosts: Vec<&Host> = std::iter::once(&plan.proxy)
        .chain(plan.servers.iter())
        .collect();
    let mut host_lines = String::new();
    for h in &hosts {
        let _ = writeln!(
            host_lines,
            "  BG_ADDR[{id}]={addr}\n  BG_USER[{id}]={user}\n  BG_PORT[{id}]={port}",
            id = h.id,
            addr = h.address.to_bash(),
            user = h.user.to_bash(),
            port = h.port
        );
    }
    let mut phases = String::new();
    let mut abort_cases = String::new();
    let rollback = plan.to_rollback();
    let retire = plan.to_retire();
    let mut run_alternatives = Vec::new();
    for p in [plan, &rollback, &retire] {
        render_phases(p, &mut phases, &mut abort_cases);
        for phase in &p.phases {
            run_alternatives.push(format!("{}:{}", p.action.name(), phase.kind.name()));
        }
    }
    abort_cases.push_str("    *) bg_log \"nothing to undo after the $BG_PHASE phase\" ;;");
    let names = |p: &Plan| {
        p.phases
            .iter()
            .map(|p| p.kind.name())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let view = ScriptView {
        app: plan.app.clone(),
        source: source.to_string(),
        app_q: Word::lit(&plan.app).to_bash(),
        blue: plan.slots.blue,
        green: plan.slots.green,
        host_key_policy: match plan.ssh.host_key_policy {
            HostKeyPolicy::Strict => "strict",
            HostKeyPolicy::AcceptNew => "accept-new",
            HostKeyPolicy::Off => "off",
        },
        connect_timeout: plan.ssh.connect_timeout_secs,
        host_ids: hosts
            .iter()
            .map(|h| h.id.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        app_host_ids: plan
            .servers
            .iter()
            .map(|h| h.id.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        library: LIBRARY.trim_end(),
        env_checks: env_checks(plan),
        rule_cases: rule_cases(),
        missing_message: message_template(&bluegreen_core::Error::MissingVariable {
            field: mark("field"),
            name: mark("name"),
        }),
        bad_message: message_template(&bluegreen_core::Error::BadVariable {
            field: mark("field"),
            name: mark("name"),
            value: mark("value"),
            message: mark("problem"),
        }),
        artifact: plan.artifact.to_bash(),
        host_lines: host_lines.trim_end().to_string(),
        known_hosts: plan.ssh.known_hosts.to_bash(),
        identity_file: plan
            .ssh
            .identity_file
            .as_ref()
            .map_or_else(|| "\"\"".to_string(), Word::to_bash),
        remote_command: REMOTE_COMMAND,
        webhook_ref: match &plan.slack {
            Some(s) => format!("${{{}:-}}", s.webhook_env),
            None => "\"\"".to_string(),
        },
        slack_channel: Word::lit(plan.slack.as_ref().map_or("", |s| s.channel.as_str())).to_bash(),
        phases: phases.trim_end().to_string(),
        abort_cases,
        phase_names: names(plan),
        rollback_phase_names: names(&rollback),
        retire_phase_names: names(&retire),
        run_alternatives: run_alternatives.join(" | "),
        beat_call: {
            // The plan's renewal, its lease (the last argument) given by `bg_renew_lock SECS`.
            let c = &plan.heartbeat.call;
            let mut line = format!("bg_remote {} {}", plan.heartbeat.host, c.func.name());
            let rest = c.args.split_last().map_or(&c.args[..], |(_, r)| r);
            for a in rest {
                line.push(' ');
                line.push_str(&a.to_bash());
            }
            line.push_str(" \"$1\"");
            line
        },
        beat_lease: plan
            .heartbeat
            .call
            .args
            .last()
            .and_then(Word::as_literal)
            .unwrap_or_default()
            .to_string(),
        beat_every: secs(plan.heartbeat.every_ms),
        slot_cases: slot_cases(),
    };
    let mut out = view.render().map_err(|source| Error::Template {
        what: "the deploy script",
        source,
    })?;
    if !out.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

/// A URL as the script logs it, its credentials hidden ([`redact_url`]): redacted now when it is
/// literal, by `bg_redact_url` at run time when it refers to variables (whose values may hold
/// credentials, or change where the userinfo and query begin).
fn shown_url(url: &Word) -> String {
    match url.as_literal() {
        Some(lit) => Word::lit(redact_url(&lit)).to_bash(),
        None => format!("\"$(bg_redact_url {})\"", url.to_bash()),
    }
}

/// `bg_on HOST FN ARGS...` for a remote call.
fn on(host: &str, call: &RemoteCall) -> String {
    let mut s = format!("bg_on {host} {}", call.func.name());
    for a in &call.args {
        s.push(' ');
        s.push_str(&a.to_bash());
    }
    s
}

fn guard(when: When, line: String) -> String {
    match when {
        When::Always => line,
        When::LiveExists => format!("[ \"$BG_LIVE_SLOT\" = none ] || {line}"),
    }
}

/// The bash lines for one step; each line is one command, so `abort` can try each on its own.
fn step_lines(step: &Step) -> Vec<String> {
    // `VAR=$(bg_remote HOST FN ARGS...)`: a call whose output sets a runtime variable.
    let capture = |var: &str, host: &str, call: &RemoteCall| {
        let mut line = format!("{var}=$(bg_remote {host} {}", call.func.name());
        for a in &call.args {
            line.push(' ');
            line.push_str(&a.to_bash());
        }
        line.push(')');
        line
    };
    match step {
        Step::Inspect(s) => vec![
            capture("BG_RELEASE", &s.host, &s.call),
            "bg_log \"[$BG_APP] release to roll back to: $BG_RELEASE\"".into(),
        ],
        Step::Detect(s) => vec![
            capture("BG_LIVE_SLOT", &s.host, &s.call),
            "bg_select_slots".into(),
        ],
        Step::Lock(s)
        | Step::Reconcile(s)
        | Step::Intent(s)
        | Step::Start(s)
        | Step::Record(s)
        | Step::Audit(s)
        | Step::Stop(s)
        | Step::Unlock(s) => vec![guard(s.when, on(&s.host, &s.call))],
        Step::Copy(c) => {
            let dest = c.dir.clone().then_lit("/").then_lit(&c.tmp_name);
            vec![
                capture("bg_prepared", &c.host, &c.prepare),
                format!(
                    "bg_check_space {} \"$bg_prepared\" {}",
                    c.host,
                    c.dir.to_bash()
                ),
                format!("bg_upload {} {}", c.host, dest.to_bash()),
                on(&c.host, &c.install),
            ]
        }
        Step::Health(h) => {
            let mut line = format!(
                "bg_health {} {} {} {} {} {} {} {} {}",
                h.host,
                h.url.to_bash(),
                h.status,
                Word::lit(h.body.clone().unwrap_or_default()).to_bash(),
                h.interval_ms,
                h.timeout_ms,
                h.deadline_ms,
                h.successes,
                h.alive
                    .args
                    .iter()
                    .map(Word::to_bash)
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            if h.from == ProbeFrom::Host {
                for a in &h.probe.args {
                    line.push(' ');
                    line.push_str(&a.to_bash());
                }
            }
            vec![line]
        }
        Step::Switch(s) => {
            let mut lines = vec![
                guard(s.when, on(&s.host, &s.call)),
                guard(s.when, on(&s.host, &s.settle)),
            ];
            if let Some(url) = &s.check_url {
                lines.push(guard(
                    s.when,
                    format!(
                        "bg_check_url {} {} {} {} {} {}",
                        url.to_bash(),
                        s.check_status,
                        shown_url(url),
                        s.check_tries,
                        secs(s.check_interval_ms),
                        secs(s.check_timeout_ms)
                    ),
                ));
            }
            lines
        }
        Step::Drain(d) => vec![
            format!("bg_log \"draining for {}ms\"", d.millis),
            format!("sleep {}", secs(d.millis)),
        ],
        Step::Retain(r) => vec![guard(
            When::LiveExists,
            format!(
                "bg_log \"[{}] keeping the $BG_LIVE_SLOT slot running for {}s (rollback window)\"",
                r.host, r.seconds
            ),
        )],
        Step::Notify(_) => vec!["bg_notify succeeded".into()],
    }
}

fn secs(millis: u64) -> String {
    format!("{}.{:03}", millis / 1000, millis % 1000)
}

/// Escapes text for a Groovy `'''...'''` literal: `\` → `\\`, `'` → `\'`, CR → `\r`. `$` needs
/// nothing, since single-quoted Groovy strings do not interpolate.
pub fn groovy_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 16);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// A Groovy single-quoted string literal.
pub fn groovy_str(s: &str) -> String {
    format!("'{}'", groovy_escape(s).replace('\n', "\\n"))
}

struct StageView {
    title: &'static str,
    script: String,
    gate_minutes: u64,
}

struct SlackView {
    channel: String,
    token: String,
    prefix: String,
}

/// Template-facing view of the Jenkinsfile.
#[derive(Template)]
#[template(path = "Jenkinsfile", escape = "none")]
struct JenkinsView {
    app: String,
    source: String,
    tools: Vec<String>,
    timeout_minutes: u64,
    build: Option<String>,
    branches: String,
    credentials: String,
    setup_parts: Vec<String>,
    stages: Vec<StageView>,
    gate_message: String,
    abort_script: String,
    slack: Option<SlackView>,
}

/// The room one `sh` step of the Setup stage leaves for the script: Groovy's limit on a string
/// constant (in modified UTF-8 bytes) less what the step adds around the script.
const SETUP_PART_MAX: usize = GROOVY_MAX_LITERAL - 512;

/// The length of `s` as the JVM's class file stores a string constant (modified UTF-8): a
/// character outside the Basic Multilingual Plane is a surrogate pair of 3 bytes each.
pub fn modified_utf8_len(s: &str) -> usize {
    s.chars()
        .map(|c| match c.len_utf8() {
            4 => 6,
            n => n,
        })
        .sum()
}

/// The Setup stage's shell steps: the deploy script in pieces of whole lines, each small enough for
/// one Groovy string constant once escaped, appended to `.bluegreen/deploy.sh.part` and renamed to
/// `.bluegreen/deploy.sh` by the last. Each is Groovy-escaped text.
fn setup_parts(script: &str) -> Result<Vec<String>, Error> {
    let mut chunks: Vec<String> = vec![String::new()];
    for line in script.split_inclusive('\n') {
        let len = modified_utf8_len(&groovy_escape(line));
        if len > SETUP_PART_MAX {
            return Err(Error::TooLong { len });
        }
        let last = chunks
            .last_mut()
            .map_or(0, |c| modified_utf8_len(&groovy_escape(c)));
        if last + len > SETUP_PART_MAX {
            chunks.push(String::new());
        }
        if let Some(c) = chunks.last_mut() {
            c.push_str(line);
        }
    }
    let n = chunks.len();
    Ok(chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let first = if i == 0 {
                "set -euo pipefail\nmkdir -p .bluegreen\nrm -f .bluegreen/deploy.sh.part\n"
            } else {
                "set -euo pipefail\n"
            };
            let last = if i + 1 == n {
                "mv -f .bluegreen/deploy.sh.part .bluegreen/deploy.sh\necho \"bluegreen: wrote .bluegreen/deploy.sh\""
                    .to_string()
            } else {
                format!("echo \"bluegreen: wrote part {} of {n} of .bluegreen/deploy.sh\"", i + 1)
            };
            groovy_escape(&format!(
                "{first}cat >>.bluegreen/deploy.sh.part <<'{SCRIPT_EOF}'\n{chunk}{SCRIPT_EOF}\n{last}"
            ))
        })
        .collect())
}

/// Renders the declarative Jenkinsfile.
pub fn jenkinsfile(plan: &Plan, source: &str) -> Result<String, Error> {
    let script = script(plan, source)?;
    let branch = &plan.jenkins.branch;
    let branches = [
        branch.clone(),
        format!("origin/{branch}"),
        format!("refs/heads/{branch}"),
    ]
    .iter()
    .map(|b| groovy_str(b))
    .collect::<Vec<_>>()
    .join(", ");
    let mut credentials = format!(
        "sshUserPrivateKey(credentialsId: {}, keyFileVariable: 'BG_SSH_KEY')",
        groovy_str(&plan.ssh.credentials_id)
    );
    if let Some(k) = &plan.ssh.known_hosts_credential {
        let _ = write!(
            credentials,
            ", file(credentialsId: {}, variable: 'BG_KNOWN_HOSTS')",
            groovy_str(k)
        );
    }
    let setup_parts = setup_parts(&script)?;
    let stages = plan
        .phases
        .iter()
        .map(|p| StageView {
            title: p.kind.title(),
            script: groovy_escape(&format!(
                "exec bash .bluegreen/deploy.sh run deploy {}",
                p.kind.name()
            )),
            gate_minutes: if p.kind == PhaseKind::Promote {
                plan.jenkins.gate.unwrap_or(0)
            } else {
                0
            },
        })
        .collect();
    let abort_script = groovy_escape(
        "if [ -f .bluegreen/deploy.sh ]; then\n  bash .bluegreen/deploy.sh abort\nelse\n  echo 'bluegreen: no deploy to undo'\nfi",
    );
    let view = JenkinsView {
        app: plan.app.clone(),
        source: source.to_string(),
        tools: plan
            .jenkins
            .tools
            .iter()
            .map(|(k, v)| format!("{k} {}", groovy_str(v)))
            .collect(),
        timeout_minutes: plan.jenkins.timeout.as_secs().div_ceil(60),
        build: plan.jenkins.build.as_ref().map(|b| groovy_escape(b)),
        branches,
        credentials,
        setup_parts,
        stages,
        gate_message: groovy_str(&format!(
            "Keep {} on the new version? Abort puts traffic back on the old slot.",
            plan.app
        )),
        abort_script,
        slack: plan.slack.as_ref().map(|s| SlackView {
            channel: groovy_str(&s.channel),
            token: s
                .token_credential_id
                .as_ref()
                .map(|t| format!("tokenCredentialId: {}, ", groovy_str(t)))
                .unwrap_or_default(),
            prefix: groovy_str(&format!("{}: ", plan.app)),
        }),
    };
    let mut out = view.render().map_err(|source| Error::Template {
        what: "the Jenkinsfile",
        source,
    })?;
    if !out.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groovy_escape_handles_backslash_quote_and_cr() {
        assert_eq!(groovy_escape(r"a\b'c$d"), r"a\\b\'c$d");
        assert_eq!(groovy_escape("x\r\ny"), "x\\r\ny");
        assert_eq!(groovy_str("it's\n"), r"'it\'s\n'");
    }
}
