//! Hiding credentials in URLs before they are shown.
//!
//! `proxy.check_url` may carry credentials: `http://user:password@host/health?token=...`. Events,
//! errors, Slack messages, `bluegreen plan` and the rendered script's log show [`redact_url`]'s
//! form instead: the userinfo and every query value become `***`. (The rendered script has a bash
//! copy of this function for URLs known only at run time; a test holds the two to the same cases.)

use crate::word::Word;
use serde::Serialize;

/// What replaces a hidden part.
pub const REDACTED: &str = "***";

/// `url` with its userinfo (`user:password@`) and query values (`?key=value&...`) replaced by
/// `***`: `http://***@host/health?token=***`. Text that is not a URL is returned as it is.
///
/// ```
/// use bluegreen_core::redact_url;
/// assert_eq!(
///     redact_url("http://user:secret@10.0.0.5/health?token=abc&x"),
///     "http://***@10.0.0.5/health?token=***&***"
/// );
/// assert_eq!(redact_url("http://10.0.0.5/health"), "http://10.0.0.5/health");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let (head, rest) = url.split_at(scheme_end);
    let mut out = String::from(head);
    // The authority runs to the first `/`, `?` or `#`; its userinfo to the last `@` in it.
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, rest) = rest.split_at(authority_end);
    match authority.rfind('@') {
        Some(at) => {
            out.push_str(REDACTED);
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    let (before_fragment, fragment) = match rest.find('#') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match before_fragment.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let items: Vec<String> = query.split('&').map(redact_query_item).collect();
            out.push_str(&items.join("&"));
        }
        None => out.push_str(before_fragment),
    }
    out.push_str(fragment);
    out
}

/// `key=value` → `key=***`; a bare item (which may be a token itself) → `***`; empty stays empty.
fn redact_query_item(item: &str) -> String {
    match item.split_once('=') {
        Some((key, "")) => format!("{key}="),
        Some((key, _)) => format!("{key}={REDACTED}"),
        None if item.is_empty() => String::new(),
        None => REDACTED.to_string(),
    }
}

/// The pieces of `url` that [`redact_url`] hides: its userinfo and its query values.
fn secrets(url: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let Some(rest) = url.split_once("://").map(|(_, r)| r) else {
        return out;
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, rest) = rest.split_at(authority_end);
    if let Some(at) = authority.rfind('@') {
        let userinfo = &authority[..at];
        out.push(userinfo);
        // A library may show the password alone (the user name is no secret).
        if let Some((_, password)) = userinfo.split_once(':') {
            out.push(password);
        }
    }
    let query = rest.split('#').next().unwrap_or_default();
    if let Some((_, query)) = query.split_once('?') {
        for item in query.split('&') {
            out.push(item.split_once('=').map_or(item, |(_, v)| v));
        }
    }
    out.retain(|s| !s.is_empty());
    // Longest first, so that a secret containing another is replaced whole.
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out
}

/// `text` (an error message, say) with `url` shown redacted and any of its secrets that appear on
/// their own (a library may quote only the password, or the query) replaced by `***`.
///
/// ```
/// use bluegreen_core::redact::redact_in;
/// let url = "http://ops:s3cret@proxy/health?token=abc123";
/// assert_eq!(
///     redact_in(&format!("GET {url}: auth s3cret refused"), url),
///     "GET http://***@proxy/health?token=***: auth *** refused"
/// );
/// ```
pub fn redact_in(text: &str, url: &str) -> String {
    let mut out = text.replace(url, &redact_url(url));
    for secret in secrets(url) {
        out = out.replace(secret, REDACTED);
    }
    out
}

/// A URL word with [`redact_url`] applied to its text: `${VAR}` references stay references (a
/// variable inside the userinfo or the query is hidden with it).
pub fn redact_word(url: &Word) -> Word {
    let shown = redact_url(&url.to_string());
    Word::parse_env(&shown).unwrap_or_else(|_| Word::lit(shown))
}

/// Serializes an optional URL word redacted, for `#[serde(serialize_with)]` (`bluegreen plan --json`).
pub fn serialize_url<S: serde::Serializer>(url: &Option<Word>, s: S) -> Result<S::Ok, S::Error> {
    url.as_ref().map(redact_word).serialize(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_and_query_values_are_hidden() {
        let cases = [
            (
                "http://user:secret@host/health?token=abc",
                "http://***@host/health?token=***",
            ),
            ("https://user@host:8443/", "https://***@host:8443/"),
            ("http://a:b@c@host/x", "http://***@host/x"),
            ("http://host/x?a=1&b=&c", "http://host/x?a=***&b=&***"),
            ("http://host?k=v#frag", "http://host?k=***#frag"),
            ("http://host/p#x?k=v", "http://host/p#x?k=v"),
            ("http://host/a@b?", "http://host/a@b?"),
            ("http://[::1]:8080/h", "http://[::1]:8080/h"),
            (
                "http://${U}:${P}@${NGINX}/h?t=${T}",
                "http://***@${NGINX}/h?t=***",
            ),
            ("not a url", "not a url"),
            ("", ""),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn words_keep_their_variables() {
        let w = Word::parse_env("http://${U}:pw@${NGINX}:8080/h?t=${T}&x=1").unwrap();
        let r = redact_word(&w);
        assert_eq!(
            r,
            Word::parse_env("http://***@${NGINX}:8080/h?t=***&x=***").unwrap()
        );
        assert_eq!(r.env_vars().collect::<Vec<_>>(), ["NGINX"]);
    }

    #[test]
    fn plain_urls_are_unchanged() {
        for url in [
            "http://10.0.0.5/actuator/health",
            "http://${NGINX_PRIVATE_IP}/actuator/health",
            "https://example.com:8443/x/y",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn secrets_are_hidden_inside_other_text() {
        let url = "http://user:secret@host/health?token=abc";
        let text = format!("io error for {url}; password secret; query token=abc");
        let shown = redact_in(&text, url);
        assert!(!shown.contains("secret"), "{shown}");
        assert!(!shown.contains("abc"), "{shown}");
        assert!(
            shown.contains("http://***@host/health?token=***"),
            "{shown}"
        );
        // A URL without secrets leaves the text alone.
        assert_eq!(
            redact_in("timeout for http://h/x", "http://h/x"),
            "timeout for http://h/x"
        );
    }
}
