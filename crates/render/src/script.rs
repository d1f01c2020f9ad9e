//! The standalone bash script: the view the `deploy.sh` template renders, built from the plan.
//!
//! The hosts are data (see `hosts`): one line per host in the host table, and one function per
//! phase and per kind of step run on every app host, which `bg_each` runs for each.

use crate::hosts::{host_rows, server_checks, shared_lines, HostRow};
use crate::steps::{secs, step_lines, undo_lines, Line, Lists};
use crate::Error;
use askama::Template;
use bluegreen_core::config::{Chars, HostKeyPolicy, ValueRule};
use bluegreen_core::plan::{Host, Phase, PhaseKind, Step};
use bluegreen_core::remote::{remote_command, serve_command, LIBRARY};
use bluegreen_core::{Plan, Var, Word};
use std::fmt::Write as _;

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
    /// The host table, the proxy first.
    hosts: Vec<HostRow>,
    /// The rules of an app host's host, address and user (`bg_check_host`).
    server_rules: [&'static str; 3],
    library: &'static str,
    env_checks: Vec<String>,
    rule_cases: String,
    missing_message: String,
    bad_message: String,
    artifact: String,
    known_hosts: String,
    identity_file: String,
    /// The command ssh runs on the host for a call, as one bash word.
    remote_command: String,
    serve_command: String,
    webhook_ref: String,
    slack_channel: String,
    phases: Vec<PhaseView>,
    abort_cases: Vec<AbortView>,
    phase_names: String,
    rollback_phase_names: String,
    retire_phase_names: String,
    run_alternatives: String,
    beat_call: String,
    beat_lease: String,
    slot_cases: String,
    beat_every: String,
    /// The run's words (core's), as bash functions.
    wording_fns: String,
    /// `bg_rollback_to`'s message.
    rollback_to_message: String,
    /// The variable `ssh.user` is when the config sets none, and its default.
    ssh_user_var: &'static str,
    ssh_user_default: &'static str,
    /// The secrets' names, for `bg_mask` (a file secret's value is a path: no secret).
    secret_names: String,
    /// `bg_secret_file`'s messages and limit.
    file_unreadable: String,
    file_too_big: String,
    file_max: u64,
}

/// A phase's function, `bg_ACTION_phase_PHASE`.
struct PhaseView {
    /// Its name.
    function: String,
    /// The function it runs on every app host at once, for a phase whose steps are one per app
    /// host.
    each_host: Option<HostFnView>,
    /// Otherwise its steps, in order.
    steps: Vec<StepView>,
    /// Lines after the steps.
    extra: Vec<String>,
    /// The hosts its steps call, in order (a shell is opened on each: `bg_shell_open`).
    shells: Vec<String>,
}

/// One step of a phase that runs its steps in order.
struct StepView {
    /// Its number in the plan (`bg_at`).
    number: usize,
    /// Its lines.
    lines: Vec<String>,
}

/// The function of a phase's step on one app host, `bg_ACTION_PHASE ID`.
struct HostFnView {
    /// Its name.
    function: String,
    /// The step number of the first app host's step; the others follow in table order.
    first_step: usize,
    /// Its lines, which read the host id from `$id`.
    lines: Vec<String>,
    /// Whether its step calls the host (a shell is opened on it first: `bg_shell_open`).
    shell: bool,
    /// At most this many hosts at once (`max_parallel`); 0: all.
    limit: usize,
}

/// What `abort` undoes after a failure in one phase: an arm of its `case`.
struct AbortView {
    /// `ACTION:PHASE`.
    label: String,
    /// The undo steps, in order.
    undo: Vec<UndoView>,
}

/// One undo step, or one per app host.
struct UndoView {
    /// Whether the lines run for every app host in turn (with the host id in `$id`).
    each_host: bool,
    /// The lines.
    lines: Vec<String>,
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

/// The lines of a step rendered for its own host.
fn concrete(step: &Step, lines: Vec<Line>) -> Vec<String> {
    let host = step.host().unwrap_or_default();
    lines.iter().map(|l| l.concrete(host)).collect()
}

/// The function a phase whose steps are one per app host runs on each, from the steps of all.
fn each_host_fn(
    plan: &Plan,
    phase: &Phase,
    lists: Lists<'_>,
    differs: &dyn Fn(String) -> Error,
) -> Result<HostFnView, Error> {
    let servers: Vec<&Host> = plan.servers.iter().collect();
    if phase.steps.len() != servers.len() {
        return Err(differs(format!(
            "it has {} steps for {} app hosts",
            phase.steps.len(),
            servers.len()
        )));
    }
    let mut first_step = 0;
    for (k, (step, host)) in phase.steps.iter().zip(&servers).enumerate() {
        if step.host() != Some(host.id.as_str()) {
            return Err(differs(format!(
                "its step {} runs on {}, not on {}",
                k + 1,
                step.host().unwrap_or("no host"),
                host.id
            )));
        }
        let number = plan.step_number(step).unwrap_or_default();
        if k == 0 {
            first_step = number;
        } else if number != first_step + k {
            return Err(differs(format!(
                "the step on {} is step {number} of the plan, not {}",
                host.id,
                first_step + k
            )));
        }
    }
    let lines: Vec<Vec<Line>> = phase.steps.iter().map(|s| step_lines(s, lists)).collect();
    let what = phase.steps.first().map_or("", Step::name);
    Ok(HostFnView {
        function: format!("bg_{}_{}", plan.action.name(), phase.kind.name()),
        first_step,
        lines: shared_lines(what, &servers, &lines).map_err(differs)?,
        shell: phase.steps.iter().all(|s| s.calls_host().is_some()),
        limit: phase.limit.unwrap_or(0),
    })
}

/// The undo steps of a phase: one line group per step, each run of steps on every app host in
/// table order rendered once for all of them.
fn undo_views(
    plan: &Plan,
    phase: &Phase,
    lists: Lists<'_>,
    differs: &dyn Fn(String) -> Error,
) -> Result<Vec<UndoView>, Error> {
    let servers: Vec<&Host> = plan.servers.iter().collect();
    let steps = &phase.on_failure;
    let mut out = Vec::new();
    let mut i = 0;
    while i < steps.len() {
        let run = &steps[i..(i + servers.len()).min(steps.len())];
        let on_every_host = !servers.is_empty()
            && run.len() == servers.len()
            && run
                .iter()
                .zip(&servers)
                .all(|(s, h)| s.host() == Some(h.id.as_str()));
        if on_every_host {
            let lines: Vec<Vec<Line>> = run.iter().map(|s| undo_lines(s, lists)).collect();
            out.push(UndoView {
                each_host: true,
                lines: shared_lines(run[0].name(), &servers, &lines).map_err(differs)?,
            });
            i += run.len();
        } else {
            let step = &steps[i];
            out.push(UndoView {
                each_host: false,
                lines: concrete(step, undo_lines(step, lists)),
            });
            i += 1;
        }
    }
    Ok(out)
}

/// Appends `plan`'s phase functions and its abort cases.
fn phase_views(
    plan: &Plan,
    phases: &mut Vec<PhaseView>,
    aborts: &mut Vec<AbortView>,
) -> Result<(), Error> {
    let action = plan.action.name();
    let app_addresses: Vec<Word> = plan.servers.iter().map(|h| h.app_address.clone()).collect();
    let lists = Lists {
        app_addresses: &app_addresses,
    };
    for phase in &plan.phases {
        let name = phase.kind.name();
        let mut view = PhaseView {
            function: format!("bg_{action}_phase_{name}"),
            each_host: None,
            steps: Vec::new(),
            extra: Vec::new(),
            shells: Vec::new(),
        };
        if phase.parallel && !phase.steps.is_empty() {
            let differs = |detail| Error::HostsDiffer {
                what: format!("the {name} phase of a {action}"),
                detail,
            };
            view.each_host = Some(each_host_fn(plan, phase, lists, &differs)?);
        } else {
            for step in &phase.steps {
                if let Some(h) = step.calls_host() {
                    let h = Word::lit(h).to_bash();
                    if !view.shells.contains(&h) {
                        view.shells.push(h);
                    }
                }
                view.steps.push(StepView {
                    number: plan.step_number(step).unwrap_or_default(),
                    lines: concrete(step, step_lines(step, lists)),
                });
            }
            if phase.kind == PhaseKind::Promote {
                // Jenkins' gate waits in `input` with no phase running to renew the lock: this
                // phase, right before it, lengthens the lock's lease by the gate's length.
                let lease =
                    plan.jenkins.gate.unwrap_or(0) * 60 + plan.heartbeat.every_ms * 4 / 1000;
                view.extra.push(format!("bg_renew_lock {lease}"));
            } else if phase.steps.is_empty() {
                view.extra.push(":".into());
            }
        }
        phases.push(view);
        if !phase.on_failure.is_empty() {
            let differs = |detail| Error::HostsDiffer {
                what: format!("the undo of the {name} phase of a {action}"),
                detail,
            };
            aborts.push(AbortView {
                label: format!("{action}:{name}"),
                undo: undo_views(plan, phase, lists, &differs)?,
            });
        }
    }
    Ok(())
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

/// The lines of `bg_check_env`: `bg_check_var FIELD NAME RULE` for every `${VAR}` the plan uses, in
/// the order `exec` checks them, skipping what exec does not check either: the artifact's variables
/// outside a deploy, and the key and known_hosts files' when `$BG_SSH_KEY` / `$BG_KNOWN_HOSTS`
/// override them. The app hosts' variables, which the plan lists together, are checked from the
/// host table (`bg_hosts bg_check_host`), in the same order.
fn env_checks(plan: &Plan) -> Result<Vec<String>, Error> {
    let mut lines = Vec::new();
    let mut servers: Vec<(String, String)> = Vec::new();
    let mut table_at: Option<usize> = None;
    for e in &plan.env {
        if e.field.starts_with("servers[") {
            match table_at {
                None => {
                    table_at = Some(lines.len());
                    lines.push("  bg_hosts bg_check_host".to_string());
                }
                Some(at) if at + 1 != lines.len() => {
                    return Err(Error::HostTable(format!(
                        "the plan checks `{}` ({}) apart from the other app host fields",
                        e.name, e.field
                    )));
                }
                Some(_) => {}
            }
            servers.push((e.name.clone(), e.field.clone()));
            continue;
        }
        let check = format!(
            "bg_check_var {} {} {}",
            Word::lit(&e.field).to_bash(),
            e.name,
            ValueRule::for_field(&e.field).name
        );
        if e.file {
            lines.push(format!("  {check}"));
            lines.push(format!(
                "  bg_secret_file {} {}",
                Word::lit(&e.field).to_bash(),
                e.name
            ));
            continue;
        }
        lines.push(match e.field.as_str() {
            "artifact" => format!("  [ \"$1\" != deploy ] || {check}"),
            "ssh.identity_file" => format!("  [ -n \"${{BG_SSH_KEY:-}}\" ] || {check}"),
            "ssh.known_hosts" => format!("  [ -n \"${{BG_KNOWN_HOSTS:-}}\" ] || {check}"),
            _ => format!("  {check}"),
        });
    }
    if servers != server_checks(plan) {
        return Err(Error::HostTable(format!(
            "the plan checks the app hosts' variables as {servers:?}, the host table as {:?}",
            server_checks(plan)
        )));
    }
    if lines.is_empty() {
        lines.push("  :".into());
    }
    Ok(lines)
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
        // A rule no shell value can break (a secret's: only NUL, which bash cannot hold).
        let test = if test.is_empty() {
            "false".to_string()
        } else {
            test
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

/// The script's variable holding `rollback`'s release (`deploy.sh rollback RELEASE`).
const ROLLBACK_TO_VAR: &str = "BG_ROLLBACK_TO";

/// Renders the standalone bash script.
pub fn script(plan: &Plan, source: &str) -> Result<String, Error> {
    let mut phases = Vec::new();
    let mut abort_cases = Vec::new();
    // `deploy.sh rollback [RELEASE]`: the release (checked by bg_rollback_to) in $BG_ROLLBACK_TO.
    let rollback = plan.to_rollback_to(Word(vec![bluegreen_core::word::Part::Var(Var::Env(
        ROLLBACK_TO_VAR.into(),
    ))]));
    let retire = plan.to_retire();
    let mut run_alternatives = Vec::new();
    for p in [plan, &rollback, &retire] {
        phase_views(p, &mut phases, &mut abort_cases)?;
        for phase in &p.phases {
            run_alternatives.push(format!("{}:{}", p.action.name(), phase.kind.name()));
        }
    }
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
        hosts: host_rows(plan)?,
        server_rules: ["host", "address", "user"]
            .map(|f| ValueRule::for_field(&format!("servers[0].{f}")).name),
        library: LIBRARY.trim_end(),
        env_checks: env_checks(plan)?,
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
        known_hosts: plan.ssh.known_hosts.to_bash(),
        identity_file: plan
            .ssh
            .identity_file
            .as_ref()
            .map_or_else(|| "\"\"".to_string(), Word::to_bash),
        remote_command: Word::lit(remote_command()).to_bash(),
        serve_command: Word::lit(serve_command()).to_bash(),
        webhook_ref: match &plan.slack {
            Some(s) => format!("${{{}:-}}", s.webhook_env),
            None => "\"\"".to_string(),
        },
        slack_channel: Word::lit(plan.slack.as_ref().map_or("", |s| s.channel.as_str())).to_bash(),
        phases,
        abort_cases,
        phase_names: names(plan),
        rollback_phase_names: names(&rollback),
        retire_phase_names: names(&retire),
        run_alternatives: run_alternatives.join(" | "),
        beat_call: {
            // The plan's renewal with the lease `bg_renew_lock SECS` is given.
            let c = plan
                .heartbeat
                .call_with_lease(Word(vec![bluegreen_core::word::Part::Var(Var::Env(
                    "BG_LEASE".into(),
                ))]));
            let mut line = format!(
                "local BG_LEASE=$1\n  bg_remote {} {}",
                plan.heartbeat.host,
                c.func.name()
            );
            for a in &c.args {
                line.push(' ');
                line.push_str(&a.to_bash());
            }
            line
        },
        beat_lease: plan.heartbeat.lease_secs.to_string(),
        beat_every: secs(plan.heartbeat.every_ms),
        slot_cases: slot_cases(),
        wording_fns: crate::wording::functions()?,
        secret_names: plan
            .secrets
            .iter()
            .filter(|s| !s.file)
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        ssh_user_var: bluegreen_core::config::SSH_USER_VAR,
        ssh_user_default: bluegreen_core::config::SSH_USER_DEFAULT,
        rollback_to_message: message_template(&bluegreen_core::Error::RollbackTarget {
            to: mark("to"),
        }),
        file_unreadable: Word::lit(bluegreen_core::config::SECRET_FILE_UNREADABLE).to_bash(),
        file_too_big: Word::lit(bluegreen_core::config::SECRET_FILE_TOO_BIG).to_bash(),
        file_max: bluegreen_core::config::SECRET_FILE_MAX,
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

#[cfg(test)]
mod tests {
    use super::*;
    use bluegreen_core::plan::When;
    use bluegreen_core::Config;

    fn plan(servers: &str) -> Plan {
        let yaml = format!(
            "app: shop\nartifact: build/*.jar\nssh: {{ user: deploy }}\n\
             proxy: {{ host: 10.0.0.5, upstream_file: /etc/nginx/shop.conf }}\n\
             servers: [ {servers} ]\ndeploy_dir: /srv/shop\n"
        );
        Plan::new(&Config::parse(&yaml, "bluegreen.yaml").unwrap())
    }

    fn differs(plan: &Plan) -> String {
        match script(plan, "bluegreen.yaml") {
            Err(e @ Error::HostsDiffer { .. }) => e.to_string(),
            other => panic!("expected HostsDiffer, got {other:?}"),
        }
    }

    #[test]
    fn one_function_per_step_kind_whatever_the_number_of_hosts() {
        for n in [1, 2, 7] {
            let servers: Vec<String> = (1..=n)
                .map(|i| format!("{{ host: '${{APP_{i}}}' }}"))
                .collect();
            let out = script(&plan(&servers.join(", ")), "bluegreen.yaml").unwrap();
            for f in [
                "bg_deploy_upload() {",
                "bg_deploy_start() {",
                "bg_rollback_verify() {",
            ] {
                assert_eq!(out.matches(f).count(), 1, "{n} hosts: {f}");
            }
            assert!(!out.contains("_app1"), "{n} hosts: no function of one host");
            // Each host's variable is named in its line of the host table only (but for one host,
            // whose function has nothing to read from the table).
            for i in 1..=n {
                if n > 1 {
                    assert_eq!(
                        out.matches(&format!("${{APP_{i}}}")).count(),
                        2,
                        "{n} hosts"
                    );
                }
                assert!(out.contains(&format!(
                    "\"$fn\" app{i} {} 22 '${{APP_{i}}}' '${{APP_{i}}}' 'deploy'\n",
                    i - 1
                )));
            }
        }
    }

    #[test]
    fn steps_that_differ_between_hosts_in_more_than_their_own_values_are_refused() {
        let two = plan("{ host: 10.0.0.11 }, { host: 10.0.0.12 }");
        assert!(script(&two, "bluegreen.yaml").is_ok());

        // app2's start stops the old instance with another signal.
        let mut p = two.clone();
        let start = p
            .phases
            .iter_mut()
            .find(|ph| ph.kind == PhaseKind::Start)
            .unwrap();
        let Step::Start(s) = &mut start.steps[1] else {
            panic!("a start step")
        };
        s.call.args[5] = Word::lit("KILL");
        let err = differs(&p);
        assert!(
            err.starts_with("cannot render the start phase of a deploy once for every app host: the start step on app2 differs from the one on app1 in more than the host's own values: \"KILL\" where there is \"TERM\""),
            "{err}"
        );

        // app2's new instance is stopped only if a slot was live: another line.
        let mut p = two.clone();
        let upload = p
            .phases
            .iter_mut()
            .find(|ph| ph.kind == PhaseKind::Upload)
            .unwrap();
        let Step::Stop(s) = &mut upload.on_failure[1] else {
            panic!("a stop step")
        };
        s.when = When::LiveExists;
        let err = differs(&p);
        assert!(
            err.contains("the undo of the upload phase of a deploy") && err.contains("on app2"),
            "{err}"
        );

        // The hosts' steps out of the table's order, or one missing.
        let mut p = two.clone();
        p.phases[3].steps.swap(0, 1);
        let err = differs(&p);
        assert!(
            err.contains("its step 1 runs on app2, not on app1"),
            "{err}"
        );
        let mut p = two;
        p.phases[3].steps.pop();
        let err = differs(&p);
        assert!(err.contains("it has 1 steps for 2 app hosts"), "{err}");
    }

    #[test]
    fn the_app_hosts_variables_are_checked_where_the_plan_checks_them() {
        let p = plan("{ host: '${A}', address: '${B}' }, { host: 10.0.0.12, user: '${U}' }");
        let lines = env_checks(&p).unwrap();
        assert_eq!(lines[0], "  bg_hosts bg_check_host");
        assert!(lines[1].ends_with("bg_check_var \"ssh.known_hosts\" HOME text"));
        assert_eq!(
            server_checks(&p),
            [
                ("A".to_string(), "servers[0].host".to_string()),
                ("B".into(), "servers[0].address".into()),
                ("U".into(), "servers[1].user".into()),
            ]
        );
        // A plan that lists them otherwise is not rendered with checks in another order.
        let mut p = p;
        p.env.swap(0, 1);
        assert!(matches!(env_checks(&p), Err(Error::HostTable(_))));
    }
}
