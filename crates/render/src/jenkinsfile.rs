//! The declarative Jenkinsfile: a Setup stage that writes the deploy script into the workspace, then
//! one stage per phase of the plan running that phase of the script.

use crate::groovy::{groovy_escape, groovy_str, modified_utf8_len, GROOVY_MAX_LITERAL};
use crate::{script, Error};
use askama::Template;
use bluegreen_core::plan::PhaseKind;
use bluegreen_core::Plan;
use std::fmt::Write as _;

/// The heredoc terminator the Jenkinsfile uses to write the deploy script.
const SCRIPT_EOF: &str = "BLUEGREEN_SCRIPT_EOF";

/// The room one `sh` step of the Setup stage leaves for the script: Groovy's limit on a string
/// constant (in modified UTF-8 bytes) less what the step adds around the script.
const SETUP_PART_MAX: usize = GROOVY_MAX_LITERAL - 512;

/// One stage of the Deploy (or Promoted) stage: one phase of the plan.
struct StageView {
    /// The stage's name.
    title: &'static str,
    /// Its shell step, Groovy-escaped.
    script: String,
    /// Whether the stage, the deploy's last, reads the run's summary for the Slack message.
    summary: bool,
}

/// The promotion gate: the Promote stage, between the Run and Promoted stages.
struct GateView {
    /// The promote phase's shell step, Groovy-escaped.
    script: String,
    minutes: u64,
    message: String,
    /// The proceed button.
    ok: String,
    /// What a rejection undoes, for the comment beside the gate.
    undo: &'static str,
}

/// A post condition that undoes the run (`aborted`, `failure`) and its Slack wording.
struct UndoView {
    name: &'static str,
    color: &'static str,
    word: &'static str,
}

/// The `slackSend` arguments, as Groovy text.
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
    /// The `tools { }` block of each stage that takes an agent (empty: none).
    tools_block: String,
    timeout_minutes: u64,
    build: Option<String>,
    /// The `when` condition of the Deploy and Rollback stages: the build's branch deploys.
    on_branch: String,
    /// Setup's: the same, failing a build that knows no branch (unless every build deploys).
    setup_when: String,
    credentials: String,
    setup_parts: Vec<String>,
    /// The deploy's phases up to the gate (all of them without one), on the Run stage's agent.
    before_gate: Vec<StageView>,
    gate: Option<GateView>,
    /// The phases after the gate, on the Promoted stage's agent.
    after_gate: Vec<StageView>,
    undo: Vec<UndoView>,
    abort_script: String,
    slack: Option<SlackView>,
}

/// The Setup stage's shell steps: the deploy script in pieces of whole lines, each small enough for
/// one Groovy string constant once escaped, appended to `.bluegreen/deploy.sh.part` and renamed to
/// `.bluegreen/deploy.sh` by the last. Each is shell text, to be Groovy-escaped.
fn setup_parts(script: &str, max: usize) -> Result<Vec<String>, Error> {
    let mut chunks: Vec<String> = vec![String::new()];
    let mut last_len = 0;
    for line in script.split_inclusive('\n') {
        let len = modified_utf8_len(&groovy_escape(line));
        if len > max {
            return Err(Error::TooLong { len });
        }
        if last_len + len > max {
            chunks.push(String::new());
            last_len = 0;
        }
        if let Some(c) = chunks.last_mut() {
            c.push_str(line);
            last_len += len;
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
            format!(
                "{first}cat >>.bluegreen/deploy.sh.part <<'{SCRIPT_EOF}'\n{chunk}{SCRIPT_EOF}\n{last}"
            )
        })
        .collect())
}

/// Why a build without a branch fails (Setup's `when`).
const NO_BRANCH: &str = "bluegreen: this build has no branch (neither BRANCH_NAME nor GIT_BRANCH is set, as in a pipeline job whose script is inline, without SCM), so it cannot tell whether to deploy: run the job from SCM, or set `jenkins.branch: any` in the config to deploy from every build";

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
        "sshUserPrivateKey(credentialsId: {}, keyFileVariable: 'BG_SSH_KEY', passphraseVariable: 'BLUEGREEN_SSH_PASSPHRASE', usernameVariable: 'BG_SSH_USER')",
        groovy_str(&plan.ssh.credentials_id)
    );
    if let Some(k) = &plan.ssh.known_hosts_credential {
        let _ = write!(
            credentials,
            ", file(credentialsId: {}, variable: 'BG_KNOWN_HOSTS')",
            groovy_str(k)
        );
    }
    // The app's secrets: Jenkins string (or file) credentials, in the variables the script reads
    // them from (a file credential's: the path of Jenkins' temporary copy).
    for s in &plan.secrets {
        let _ = write!(
            credentials,
            ", {}(credentialsId: {}, variable: {})",
            if s.file { "file" } else { "string" },
            groovy_str(&s.credential_id),
            groovy_str(&s.name)
        );
    }
    let setup_parts = setup_parts(&script, SETUP_PART_MAX)?
        .iter()
        .map(|p| groovy_escape(p))
        .collect();
    let phase_script =
        |name: &str| groovy_escape(&format!("exec bash .bluegreen/deploy.sh run deploy {name}"));
    let last = plan.phases.last().map(|p| p.kind);
    let mut before_gate = Vec::new();
    let mut after_gate = Vec::new();
    let mut gate = None;
    for p in &plan.phases {
        if p.kind == PhaseKind::Promote {
            gate = Some(GateView {
                script: phase_script(p.kind.name()),
                minutes: plan.jenkins.gate.unwrap_or(0),
                message: groovy_str(&if plan.jenkins.gate_before_switch {
                    format!(
                        "Switch {} to the new version? It runs on every host's idle port; Abort stops it and leaves traffic where it is.",
                        plan.app
                    )
                } else {
                    format!(
                        "Keep {} on the new version? Abort puts traffic back on the old slot.",
                        plan.app
                    )
                }),
                ok: groovy_str(if plan.jenkins.gate_before_switch {
                    "Switch"
                } else {
                    "Keep it"
                }),
                undo: if plan.jenkins.gate_before_switch {
                    "it stops the new instances, traffic never moved"
                } else {
                    "it switches traffic back and stops the new instances"
                },
            });
            continue;
        }
        let view = StageView {
            title: p.kind.title(),
            script: phase_script(p.kind.name()),
            summary: plan.slack.is_some() && Some(p.kind) == last,
        };
        if gate.is_some() {
            after_gate.push(view);
        } else {
            before_gate.push(view);
        }
    }
    let mut tools_block = String::new();
    if !plan.jenkins.tools.is_empty() {
        tools_block.push_str("\n            tools {");
        for (k, v) in &plan.jenkins.tools {
            let _ = write!(tools_block, "\n                {k} {}", groovy_str(v));
        }
        tools_block.push_str("\n            }");
    }
    let abort_script = groovy_escape(
        "if [ -f .bluegreen/deploy.sh ]; then\n  bash .bluegreen/deploy.sh abort\nelse\n  echo 'bluegreen: no deploy to undo'\nfi",
    );
    let view = JenkinsView {
        app: plan.app.clone(),
        source: source.to_string(),
        tools_block,
        timeout_minutes: plan.jenkins.timeout.as_secs().div_ceil(60),
        build: plan.jenkins.build.as_ref().map(|b| groovy_escape(b)),
        on_branch: if plan.jenkins.any_branch() {
            "expression { return true }".to_string()
        } else {
            format!("expression {{ return [{branches}].contains(env.BRANCH_NAME ?: env.GIT_BRANCH ?: '') }}")
        },
        setup_when: if plan.jenkins.any_branch() {
            "// `jenkins.branch: any`: every build deploys, with a branch or without one.\n                        expression { return true }".to_string()
        } else {
            format!(
                "// Multibranch jobs set BRANCH_NAME; plain pipeline jobs only GIT_BRANCH (`origin/<branch>`); a\n                        // pipeline job whose script is inline (no SCM) neither: it fails here rather than succeed\n                        // having deployed nothing.\n                        expression {{\n                            if (!(env.BRANCH_NAME ?: env.GIT_BRANCH)) {{\n                                error({})\n                            }}\n                            return [{branches}].contains(env.BRANCH_NAME ?: env.GIT_BRANCH)\n                        }}",
                groovy_str(NO_BRANCH)
            )
        },
        credentials,
        setup_parts,
        before_gate,
        gate,
        after_gate,
        undo: vec![
            UndoView {
                name: "aborted",
                color: "warning",
                word: "ABORTED",
            },
            UndoView {
                name: "failure",
                color: "danger",
                word: "FAILED",
            },
        ],
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

    /// The script text the pieces carry, joined in order.
    fn joined(parts: &[String]) -> String {
        parts
            .iter()
            .map(|p| {
                let start = p.find("<<'BLUEGREEN_SCRIPT_EOF'\n").unwrap_or(0)
                    + "<<'BLUEGREEN_SCRIPT_EOF'\n".len();
                let end = p.rfind("BLUEGREEN_SCRIPT_EOF\n").unwrap_or(p.len());
                p[start..end].to_string()
            })
            .collect()
    }

    #[test]
    fn pieces_are_whole_lines_within_the_limit_and_join_up() {
        // Three-byte (and, in the class file, six-byte) characters count as such, and so does
        // what Groovy escaping adds (`'` → `\'`).
        let script: String = (0..50).map(|i| format!("echo '{i}' 배포 🚀\n")).collect();
        let max = 60;
        let parts = setup_parts(&script, max).unwrap();
        assert!(parts.len() > 5, "{}", parts.len());
        assert_eq!(joined(&parts), script);
        for p in &parts {
            let text = joined(std::slice::from_ref(p));
            assert!(modified_utf8_len(&groovy_escape(&text)) <= max, "{text}");
            assert!(text.ends_with('\n'));
        }
        assert!(parts[0].contains("rm -f .bluegreen/deploy.sh.part"));
        assert!(parts[parts.len() - 1].contains("mv -f .bluegreen/deploy.sh.part"));
        // One line too long for a piece is refused.
        assert!(matches!(
            setup_parts(&"x".repeat(61), max),
            Err(Error::TooLong { len: 61 })
        ));
    }
}
