//! The Slack notices of a run: success, as its plan's `notify` step, and failure (in core's wording,
//! [`bluegreen_core::wording`]).

use super::{Ctx, Done};
use crate::error::{human, Error};
use crate::event::{Event, Status, LOCAL};
use crate::http;
use crate::runtime::{Live, Runtime};
use crate::{short, ExecOptions};
use bluegreen_core::config::Slack;
use bluegreen_core::plan::NotifyStep;
use bluegreen_core::wording;
use bluegreen_core::{Plan, Step};
use std::time::{Duration, Instant};

impl Ctx<'_> {
    /// The `notify` step: tells Slack (when its webhook variable is set) that the run succeeded.
    pub(super) fn notify_success(&self, n: &NotifyStep) -> Done {
        let rt = self.rt();
        let live = rt.live.unwrap_or(Live::None);
        let took = human(self.started.elapsed());
        let (app, release, target, who) = (
            &self.plan.app,
            short(&rt.release),
            live.target(),
            &rt.deployer,
        );
        let text = wording::notify_success(self.plan.action)
            .fill(|n| match n {
                "app" => Some(app.as_str()),
                "release" => Some(release),
                "target" => Some(target),
                "previous" => Some(live.name()),
                "took" => Some(took.as_str()),
                "who" => Some(who.as_str()),
                _ => None,
            })
            .unwrap_or_default();
        match send_slack(&n.channel, &n.webhook_env, &text, self.opts) {
            SlackResult::Sent => Done::ok(format!("posted to {}", n.channel)),
            SlackResult::NotSet => Done::skip(format!("${} is not set", n.webhook_env)),
            SlackResult::Failed(m) => Done::warn(m),
        }
    }
}

/// How posting to Slack went.
enum SlackResult {
    Sent,
    NotSet,
    Failed(String),
}

/// Posts `text` to `channel` through the webhook in `$webhook_env`, if it is set.
fn send_slack(channel: &str, webhook_env: &str, text: &str, opts: &ExecOptions) -> SlackResult {
    let Some(url) = (opts.env)(webhook_env).filter(|u| !u.trim().is_empty()) else {
        return SlackResult::NotSet;
    };
    match http::post_slack(url.trim(), &http::slack_payload(channel, text)) {
        Ok(()) => SlackResult::Sent,
        Err(m) => SlackResult::Failed(m),
    }
}

/// Tells Slack (when configured and its webhook variable is set) that the deploy failed.
pub(super) fn notify_failure(
    plan: &Plan,
    opts: &ExecOptions,
    rt: &Runtime,
    phase: &str,
    took: Duration,
    error: &Error,
    out: &mut dyn FnMut(&Event),
) {
    let Some(Slack {
        channel,
        webhook_env,
        ..
    }) = &plan.slack
    else {
        return;
    };
    // Only actions whose plan notifies on success (deploy, rollback) notify failures.
    let notifies = plan
        .phases
        .iter()
        .flat_map(|p| &p.steps)
        .any(|s| matches!(s, Step::Notify(_)));
    if !notifies {
        return;
    }
    let target = rt.live.map_or("?", |l| l.target());
    let first_line = error.to_string();
    let first_line = first_line.lines().next().unwrap_or_default();
    let release = if rt.release.is_empty() {
        "(release unknown)"
    } else {
        short(&rt.release)
    };
    let took = human(took);
    let text = wording::NOTIFY_FAILURE
        .fill(|n| match n {
            "app" => Some(plan.app.as_str()),
            "action" => Some(plan.action.name()),
            "release" => Some(release),
            "target" => Some(target),
            "who" => Some(rt.deployer.as_str()),
            "phase" => Some(phase),
            "took" => Some(took.as_str()),
            "error" => Some(first_line),
            _ => None,
        })
        .unwrap_or_default();
    let t = Instant::now();
    let event = |status| Event::new(LOCAL, phase, "notify", status).took(t.elapsed());
    match send_slack(channel, webhook_env, &text, opts) {
        SlackResult::Sent => out(&event(Status::Ok).msg(format!("failure posted to {channel}"))),
        SlackResult::NotSet => {}
        SlackResult::Failed(m) => out(&event(Status::Warning).msg(m)),
    }
}
