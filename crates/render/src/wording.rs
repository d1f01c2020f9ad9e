//! The script's words, from core's one definition of them ([`bluegreen_core::wording`]): bash
//! functions whose messages are core's templates with the script's own variables in their
//! placeholders, so that the script says what `exec` says.

use crate::Error;
use bluegreen_core::plan::Action;
use bluegreen_core::wording::{self, Template, CURL_EXITS};
use bluegreen_core::Word;

/// The bash expansion of each placeholder a template may name, in the functions below.
fn expansion(name: &str) -> Option<&'static str> {
    Some(match name {
        "app" => "${BG_APP}",
        "release" => "${bg_release}",
        "target" => "${BG_TARGET_SLOT:-?}",
        "previous" => "${BG_LIVE_SLOT:-?}",
        "who" => "${BG_DEPLOYER:-?}",
        "action" => "${BG_ACTION}",
        "phase" => "${BG_PHASE}",
        "took" => "$(bg_human \"$bg_took_ms\")",
        "phases" => "${bg_phases}",
        "error" => "${bg_error}",
        "deadline" => "$(bg_human \"$deadline\")",
        "url" => "${url}",
        "last" => "${last}",
        "probes" => "${probes}",
        "what" => "${what}",
        "after" => "$(bg_human \"$after\")",
        "expected" => "${want}",
        "code" => "${code}",
        "why" => "${why}",
        "good" => "${good}",
        "need" => "${need}",
        _ => return None,
    })
}

fn bash(t: &Template) -> Result<String, Error> {
    t.to_bash(expansion).map_err(|u| Error::Wording {
        template: t.0,
        name: u.0,
    })
}

/// One `case "$BG_ACTION"` over the actions, printing `per_action(action)`.
fn by_action(per_action: fn(Action) -> Template) -> Result<String, Error> {
    let mut s = String::from("  case \"$BG_ACTION\" in\n");
    for a in [Action::Deploy, Action::Rollback, Action::Retire] {
        s.push_str(&format!(
            "    {}) printf '%s' {} ;;\n",
            a.name(),
            bash(&per_action(a))?
        ));
    }
    s.push_str("  esac");
    Ok(s)
}

/// The bash functions of the script's words.
pub(crate) fn functions() -> Result<String, Error> {
    let mut curl_cases = String::new();
    for (exit, outcome) in &CURL_EXITS {
        curl_cases.push_str(&format!(
            "    {exit}) printf '%s' {} ;;\n",
            Word::lit(outcome.to_string()).to_bash()
        ));
    }
    Ok(format!(
        r#"# The run's words, from bluegreen_core::wording (exec says the same).
{human}

# bg_probe_words CURL_EXIT CODE: what a failed probe found, in core's words.
bg_probe_words() {{
  local code=$2 why
  case "$1" in
    0) printf '%s' {status} ;;
    host) why={host_why}; printf '%s' {no_answer} ;;
{curl_cases}    *) why="curl exit $1"; printf '%s' {no_answer} ;;
  esac
}}

# bg_body_words CODE: an answer with the wanted status but not the wanted body text.
bg_body_words() {{
  local code=$1
  printf '%s' {body}
}}

# bg_summary_text TOOK_MS PHASES: the run's summary line.
bg_summary_text() {{
  local bg_took_ms=$1 bg_phases=$2 bg_release=${{BG_RELEASE:0:12}}
{summary}
}}

# bg_success_text TOOK_MS: the Slack text of a run that succeeded.
bg_success_text() {{
  local bg_took_ms=$1 bg_release=${{BG_RELEASE:0:12}}
{success}
}}

# bg_failure_text TOOK_MS ERROR: the Slack text of a run that failed.
bg_failure_text() {{
  local bg_took_ms=$1 bg_error=$2 bg_release=${{BG_RELEASE:0:12}}
  [ -n "$bg_release" ] || bg_release="(release unknown)"
  printf '%s' {failure}
}}

# bg_healthy_text TOOK_MS PROBES URL / bg_not_healthy_text DEADLINE_MS URL LAST /
# bg_good_text GOOD NEED / bg_died_text WHAT AFTER_MS / bg_check_text URL EXPECTED LAST
bg_healthy_text() {{
  local bg_took_ms=$1 probes=$2 url=$3
  printf '%s' {healthy}
}}
bg_not_healthy_text() {{
  local deadline=$1 url=$2 last=$3
  printf '%s' {not_healthy}
}}
bg_good_text() {{
  local good=$1 need=$2
  printf '%s' {good}
}}
bg_died_text() {{
  local what=$1 after=$2
  printf '%s' {died}
}}
bg_check_text() {{
  local url=$1 want=$2 last=$3
  printf '%s' {check}
}}"#,
        human = wording::HUMAN_BASH,
        host_why = Word::lit(wording::HOST_PROBE_NO_ANSWER).to_bash(),
        status = bash(&wording::STATUS_WORDS)?,
        no_answer = bash(&wording::NO_ANSWER_WORDS)?,
        body = bash(&wording::BODY_WORDS)?,
        summary = by_action(wording::summary)?,
        success = by_action(wording::notify_success)?,
        failure = bash(&wording::NOTIFY_FAILURE)?,
        healthy = bash(&wording::HEALTHY)?,
        not_healthy = bash(&wording::NOT_HEALTHY)?,
        good = bash(&wording::GOOD_IN_A_ROW)?,
        died = bash(&wording::DIED)?,
        check = bash(&wording::CHECK_FAILED)?,
    ))
}
