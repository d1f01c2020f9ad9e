//! HTTP from the runner: health probes, the check through the proxy, Slack notifications.

use bluegreen_core::redact::redact_in;
use bluegreen_core::wording::ProbeOutcome;
use std::time::Duration;

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        // What the app answers is what counts: the host-side probe (curl) does not follow redirects.
        .max_redirects(0)
        .build()
        .into()
}

/// One GET: Ok when the status (and body text, if given) are as expected, else what was seen, in
/// the words both backends use, with the URL's credentials hidden ([`redact_in`]: an error may
/// quote them).
pub(crate) fn probe(
    url: &str,
    status: u16,
    body: Option<&str>,
    timeout: Duration,
) -> Result<(), ProbeOutcome> {
    get(url, status, body, timeout).map_err(|o| match o {
        ProbeOutcome::NoAnswer(m) => ProbeOutcome::NoAnswer(redact_in(&m, url)),
        o => o,
    })
}

/// A failed request as a [`ProbeOutcome`].
fn no_answer(e: &ureq::Error) -> ProbeOutcome {
    match e {
        ureq::Error::Timeout(_) => ProbeOutcome::TimedOut,
        ureq::Error::HostNotFound => ProbeOutcome::Unresolved,
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            ProbeOutcome::Refused
        }
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => ProbeOutcome::TimedOut,
        e => ProbeOutcome::NoAnswer(e.to_string()),
    }
}

fn get(url: &str, status: u16, body: Option<&str>, timeout: Duration) -> Result<(), ProbeOutcome> {
    let mut resp = agent(timeout).get(url).call().map_err(|e| no_answer(&e))?;
    let got = resp.status().as_u16();
    let text = resp
        .body_mut()
        .with_config()
        .limit(1 << 20)
        .read_to_string()
        .unwrap_or_default();
    if got != status {
        return Err(ProbeOutcome::Status(got));
    }
    if let Some(want) = body.filter(|b| !b.is_empty()) {
        if !text.contains(want) {
            return Err(ProbeOutcome::Body(got));
        }
    }
    Ok(())
}

/// The JSON of a Slack incoming-webhook message.
pub(crate) fn slack_payload(channel: &str, text: &str) -> String {
    serde_json::json!({ "channel": channel, "text": text }).to_string()
}

/// Posts to a Slack incoming webhook. The error never contains the URL.
pub(crate) fn post_slack(url: &str, payload: &str) -> Result<(), String> {
    let resp = agent(Duration::from_secs(10))
        .post(url)
        .header("Content-Type", "application/json")
        .send(payload);
    match resp {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("the webhook answered {}", r.status().as_u16())),
        Err(e) => Err(scrub(&e.to_string(), url)),
    }
}

/// Removes a secret URL (and its path, which holds the token) from a message.
pub(crate) fn scrub(message: &str, url: &str) -> String {
    let mut m = message.replace(url, "<webhook>");
    if let Some(rest) = url.split("://").nth(1) {
        if let Some(i) = rest.find('/') {
            let path = &rest[i..];
            if path.len() > 1 {
                m = m.replace(path, "/<redacted>");
            }
        }
    }
    format!("cannot post to the webhook: {m}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_json() {
        let p = slack_payload("#deploys", "shop: \"ok\"");
        let v: serde_json::Value = serde_json::from_str(&p).unwrap();
        assert_eq!(v["channel"], "#deploys");
        assert_eq!(v["text"], "shop: \"ok\"");
    }

    #[test]
    fn scrub_hides_the_webhook() {
        let url = "https://hooks.slack.com/services/T000/B000/SECRET";
        let m = scrub(&format!("bad uri {url} / /services/T000/B000/SECRET"), url);
        assert!(!m.contains("SECRET"), "{m}");
    }

    #[test]
    fn unreachable_webhook_error_has_no_url() {
        let url = "http://127.0.0.1:9/services/T/B/SECRET";
        let e = post_slack(url, "{}").unwrap_err();
        assert!(!e.contains("SECRET"), "{e}");
    }

    #[test]
    fn probe_errors_hide_the_urls_credentials() {
        for url in [
            "http://user:secret@127.0.0.1:9/health?token=abc",
            "http://user:secret@no-such-host.invalid/health?token=abc",
            "http://user:secret@[bad/health?token=abc",
        ] {
            let e = probe(url, 200, None, Duration::from_millis(500))
                .unwrap_err()
                .to_string();
            assert!(!e.contains("secret") && !e.contains("abc"), "{url}: {e}");
        }
    }

    #[test]
    fn probe_reports_connection_errors() {
        let e = probe(
            "http://127.0.0.1:9/health",
            200,
            None,
            Duration::from_millis(500),
        )
        .unwrap_err();
        assert_eq!(e, ProbeOutcome::Refused, "{e}");
        assert_eq!(e.to_string(), "no answer (connection refused)");
    }
}
