//! Hosts as data: the script's host table, and the functions shared by every app host.
//!
//! The script holds one line per host (`bg_hosts`), which `bg_check_env` reads for the variables
//! the hosts' fields refer to and `bg_init` for `BG_ADDR`, `BG_APP_ADDR`, `BG_USER`, `BG_PORT` and
//! `BG_INDEX`. A step that runs on every app host is rendered once, as a function of the host id:
//! the steps of all hosts are rendered, compared, and must be the same but for the host's own
//! values (its id, its address), which the function reads from the table. When they differ in
//! anything else, rendering fails: bluegreen never guesses.

use crate::steps::{normalized, Line, Seg};
use crate::Error;
use bluegreen_core::plan::Host;
use bluegreen_core::word::Part;
use bluegreen_core::{Plan, Var, Word};

/// The shell reference to the host's app address inside a function shared by the app hosts.
const APP_ADDR_REF: &str = "${BG_APP_ADDR[$id]}";

/// One line of the host table.
pub(crate) struct HostRow {
    /// `proxy`, `app1`, ...
    pub(crate) id: String,
    /// The app host's index in `servers` (`-` for the proxy).
    pub(crate) index: String,
    /// SSH port.
    pub(crate) port: u16,
    /// The SSH address as config text, single-quoted.
    pub(crate) host: String,
    /// The app's address (what nginx and the health checks use) as config text, single-quoted.
    pub(crate) address: String,
    /// The SSH user as config text, single-quoted.
    pub(crate) user: String,
}

/// `s` as one single-quoted bash word.
fn single_quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A host field as the table holds it: its config text, `${NAME}` for each environment variable,
/// read back by the script's `bg_expand`. Its text may hold no `$`, which would make that
/// ambiguous, and no runtime variable (neither can pass config validation).
fn field_text(host: &Host, field: &str, w: &Word) -> Result<String, Error> {
    for p in &w.0 {
        let bad = match p {
            Part::Lit(s) => s.contains('$'),
            Part::Var(v) => !matches!(v, Var::Env(_)),
        };
        if bad {
            return Err(Error::HostTable(format!(
                "the {field} of host {} (`{w}`) cannot be written as config text",
                host.id
            )));
        }
    }
    Ok(single_quoted(&w.to_string()))
}

/// The host table: the proxy, then the app hosts in config order.
pub(crate) fn host_rows(plan: &Plan) -> Result<Vec<HostRow>, Error> {
    let row = |h: &Host, index: String| -> Result<HostRow, Error> {
        Ok(HostRow {
            id: h.id.clone(),
            index,
            port: h.port,
            host: field_text(h, "host", &h.address)?,
            address: field_text(h, "address", &h.app_address)?,
            user: field_text(h, "user", &h.user)?,
        })
    };
    let mut rows = vec![row(&plan.proxy, "-".into())?];
    for (i, h) in plan.servers.iter().enumerate() {
        rows.push(row(h, i.to_string())?);
    }
    Ok(rows)
}

/// The checks `bg_check_host` makes, in order, as (variable, field) pairs: each variable of each
/// app host's host, address and user, the same variable once per field (as the plan lists them).
pub(crate) fn server_checks(plan: &Plan) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (i, h) in plan.servers.iter().enumerate() {
        for (field, w) in [
            ("host", &h.address),
            ("address", &h.app_address),
            ("user", &h.user),
        ] {
            let field = format!("servers[{i}].{field}");
            for name in w.env_vars() {
                let check = (name.to_string(), field.clone());
                if !out.contains(&check) {
                    out.push(check);
                }
            }
        }
    }
    out
}

/// A piece of a [`HostWord`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPart {
    /// Text.
    Lit(String),
    /// A variable.
    Var(Var),
    /// The host's app address, read from the host table.
    AppAddr,
}

/// A word with the host's app address taken out: the same for every host when their words
/// differ only in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostWord(Vec<HostPart>);

/// One character of text or one variable: what a word is a sequence of.
#[derive(PartialEq)]
enum Atom<'a> {
    Char(char),
    Var(&'a Var),
}

fn atoms(w: &Word) -> Vec<Atom<'_>> {
    let mut out = Vec::new();
    for p in &w.0 {
        match p {
            Part::Lit(s) => out.extend(s.chars().map(Atom::Char)),
            Part::Var(v) => out.push(Atom::Var(v)),
        }
    }
    out
}

impl HostWord {
    /// `w` with every occurrence of `addr` (the host's app address) in it, from the left and not
    /// overlapping, replaced by a reference to the host table.
    pub(crate) fn abstracted(w: &Word, addr: &Word) -> HostWord {
        let text = atoms(w);
        let pattern = atoms(addr);
        let mut parts: Vec<HostPart> = Vec::new();
        let push_char = |parts: &mut Vec<HostPart>, c: char| match parts.last_mut() {
            Some(HostPart::Lit(s)) => s.push(c),
            _ => parts.push(HostPart::Lit(c.to_string())),
        };
        let mut i = 0;
        while i < text.len() {
            if !pattern.is_empty() && text[i..].starts_with(&pattern) {
                parts.push(HostPart::AppAddr);
                i += pattern.len();
                continue;
            }
            match text[i] {
                Atom::Char(c) => push_char(&mut parts, c),
                Atom::Var(v) => parts.push(HostPart::Var(v.clone())),
            }
            i += 1;
        }
        HostWord(parts)
    }

    /// The word for a host whose app address is `addr`.
    pub(crate) fn instantiated(&self, addr: &Word) -> Word {
        let mut out = Word::default();
        for p in &self.0 {
            match p {
                HostPart::Lit(s) => out.push_lit(s),
                HostPart::Var(v) => out.push_var(v.clone()),
                HostPart::AppAddr => out.push_word(addr),
            };
        }
        out
    }

    /// Whether the word refers to the host's app address.
    fn refers_to_host(&self) -> bool {
        self.0.contains(&HostPart::AppAddr)
    }

    /// The word as one bash word, like [`Word::to_bash`], with `${BG_APP_ADDR[$id]}` for the
    /// host's app address.
    pub(crate) fn to_bash(&self) -> String {
        let mut out = String::from("\"");
        for p in &self.0 {
            let piece = match p {
                HostPart::Lit(s) => Word::lit(s.as_str()).to_bash(),
                HostPart::Var(v) => Word(vec![Part::Var(v.clone())]).to_bash(),
                HostPart::AppAddr => format!("\"{APP_ADDR_REF}\""),
            };
            // Each piece is one double-quoted word: its inside joins the others'.
            out.push_str(&piece[1..piece.len() - 1]);
        }
        out.push('"');
        out
    }
}

/// Renders, as the lines of one function run with the host id in `$id`, the step that
/// `lines[k]` (the lines of one step for host `hosts[k]`) renders for each host.
///
/// Lines must be the same for every host but for the host id and the values that differ between
/// hosts; a value that differs must be the same for every host once the host's app address is
/// taken out of it. `what` names the step in an error.
pub(crate) fn shared_lines(
    what: &str,
    hosts: &[&Host],
    lines: &[Vec<Line>],
) -> Result<Vec<String>, String> {
    if lines.len() != hosts.len() {
        return Err(format!(
            "{} hosts' steps for {} hosts",
            lines.len(),
            hosts.len()
        ));
    }
    let (Some(first), Some(first_host)) = (lines.first(), hosts.first()) else {
        return Ok(Vec::new());
    };
    let differs = |k: usize, detail: String| {
        format!(
            "the {what} step on {} differs from the one on {} in more than the host's own values: {detail}",
            hosts[k].id, first_host.id
        )
    };
    for (k, host_lines) in lines.iter().enumerate() {
        if host_lines.len() != first.len() {
            return Err(differs(
                k,
                format!("{} lines where there are {}", host_lines.len(), first.len()),
            ));
        }
        for (a, b) in host_lines.iter().zip(first) {
            let same_shape = a.0.len() == b.0.len()
                && a.0.iter().zip(&b.0).all(|(x, y)| match (x, y) {
                    (Seg::Word(_), Seg::Word(_)) => true,
                    _ => x == y,
                });
            if !same_shape {
                return Err(differs(
                    k,
                    format!(
                        "`{}` where there is `{}`",
                        a.concrete(&hosts[k].id),
                        b.concrete(&first_host.id)
                    ),
                ));
            }
        }
    }
    let mut out = Vec::new();
    for (i, line) in first.iter().enumerate() {
        let mut text = String::new();
        for (j, seg) in line.0.iter().enumerate() {
            match seg {
                Seg::Text(t) => text.push_str(t),
                Seg::Host => text.push_str("\"$id\""),
                Seg::HostInText => text.push_str("$id"),
                Seg::Word(w0) => {
                    let word = |k: usize| match &lines[k][i].0[j] {
                        Seg::Word(w) => normalized(w),
                        _ => Word::default(),
                    };
                    let w0 = normalized(w0);
                    if (1..lines.len()).all(|k| word(k) == w0) {
                        // The same for every host: as it is.
                        text.push_str(&w0.to_bash());
                        continue;
                    }
                    let shared = HostWord::abstracted(&w0, &first_host.app_address);
                    for (k, host) in hosts.iter().enumerate().skip(1) {
                        let mine = word(k);
                        if shared.instantiated(&host.app_address) != mine {
                            return Err(differs(
                                k,
                                format!("{} where there is {}", mine.to_bash(), w0.to_bash()),
                            ));
                        }
                    }
                    debug_assert!(shared.refers_to_host());
                    text.push_str(&shared.to_bash());
                }
            }
        }
        out.push(text);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bluegreen_core::RuntimeVar;

    fn host(id: &str, addr: &str) -> Host {
        let w = Word::parse_env(addr).unwrap();
        Host {
            id: id.into(),
            address: w.clone(),
            app_address: w,
            user: Word::lit("deploy"),
            port: 22,
        }
    }

    fn url(addr: &str) -> Word {
        Word::lit("http://")
            .then(&Word::parse_env(addr).unwrap())
            .then_lit(":")
            .then_runtime(RuntimeVar::TargetPort)
            .then_lit("/health")
    }

    #[test]
    fn the_host_is_taken_out_of_a_word_and_put_back() {
        for (addr, other) in [
            ("10.0.0.1", "10.0.0.2"),
            ("${WAS_1}", "${WAS_2}"),
            ("app-${N}.example", "db-${N}.example"),
        ] {
            let a = Word::parse_env(addr).unwrap();
            let b = Word::parse_env(other).unwrap();
            let shared = HostWord::abstracted(&url(addr), &a);
            assert!(shared.refers_to_host(), "{addr}");
            assert_eq!(shared, HostWord::abstracted(&url(other), &b), "{addr}");
            assert_eq!(normalized(&shared.instantiated(&a)), normalized(&url(addr)));
            assert_eq!(
                normalized(&shared.instantiated(&b)),
                normalized(&url(other))
            );
            assert_eq!(
                shared.to_bash(),
                "\"http://${BG_APP_ADDR[$id]}:${BG_TARGET_PORT}/health\""
            );
        }
        // Text that is not the address is left alone, and bash's special characters stay quoted.
        let w = Word::lit("a\"$`\\b 10.0.0.1x");
        let shared = HostWord::abstracted(&w, &Word::lit("10.0.0.1"));
        assert_eq!(
            shared.to_bash(),
            "\"a\\\"\\$\\`\\\\b ${BG_APP_ADDR[$id]}x\""
        );
        let none = HostWord::abstracted(&w, &Word::lit("10.9.9.9"));
        assert!(!none.refers_to_host());
        assert_eq!(none.to_bash(), w.to_bash());
    }

    fn line(addr: &str) -> Vec<Line> {
        vec![Line(vec![
            Seg::Text("bg_health ".into()),
            Seg::Host,
            Seg::Text(" ".into()),
            Seg::Word(url(addr)),
            Seg::Text(" ".into()),
            Seg::Word(Word::lit("same")),
            Seg::Text(" \"[".into()),
            Seg::HostInText,
            Seg::Text("]\"".into()),
        ])]
    }

    #[test]
    fn steps_that_differ_only_in_the_host_share_one_function() {
        let hosts = [host("app1", "10.0.0.1"), host("app2", "${WAS_2}")];
        let hosts: Vec<&Host> = hosts.iter().collect();
        let out = shared_lines("health", &hosts, &[line("10.0.0.1"), line("${WAS_2}")]).unwrap();
        assert_eq!(
            out,
            [
                "bg_health \"$id\" \"http://${BG_APP_ADDR[$id]}:${BG_TARGET_PORT}/health\" \"same\" \"[$id]\""
            ]
        );
        // One host: nothing differs, every value stays as it is.
        let out = shared_lines("health", &hosts[..1], &[line("10.0.0.1")]).unwrap();
        assert_eq!(
            out,
            ["bg_health \"$id\" \"http://10.0.0.1:${BG_TARGET_PORT}/health\" \"same\" \"[$id]\""]
        );
    }

    #[test]
    fn steps_that_differ_in_more_are_refused() {
        let hosts = [host("app1", "10.0.0.1"), host("app2", "10.0.0.2")];
        let hosts: Vec<&Host> = hosts.iter().collect();
        // A value that is not the host's own.
        let mut other = line("10.0.0.2");
        other[0].0[5] = Seg::Word(Word::lit("different"));
        let err = shared_lines("health", &hosts, &[line("10.0.0.1"), other]).unwrap_err();
        assert!(
            err.contains("the health step on app2 differs from the one on app1")
                && err.contains("\"different\" where there is \"same\""),
            "{err}"
        );
        // Another host's address.
        let err =
            shared_lines("health", &hosts, &[line("10.0.0.1"), line("10.0.0.3")]).unwrap_err();
        assert!(err.contains("\"http://10.0.0.3:"), "{err}");
        // Other text, or another number of lines.
        let mut other = line("10.0.0.2");
        other[0].0[0] = Seg::Text("bg_other ".into());
        let err = shared_lines("health", &hosts, &[line("10.0.0.1"), other]).unwrap_err();
        assert!(err.contains("`bg_other app2 "), "{err}");
        let err = shared_lines("health", &hosts, &[line("10.0.0.1"), Vec::new()]).unwrap_err();
        assert!(err.contains("0 lines where there are 1"), "{err}");
        // Values that differ in more than the address: the first host's, taken out of its value,
        // does not give the second host's.
        let mut a = line("10.0.0.1");
        a[0].0[5] = Seg::Word(Word::lit("/srv/10.0.0.1"));
        let mut b = line("10.0.0.2");
        b[0].0[5] = Seg::Word(Word::lit("/srv/10.0.0.2x"));
        assert!(shared_lines("health", &hosts, &[a, b]).is_err());
    }

    #[test]
    fn fields_go_into_the_table_as_config_text() {
        let h = host("app1", "${WAS_1}");
        assert_eq!(field_text(&h, "host", &h.address).unwrap(), "'${WAS_1}'");
        let w = Word::lit("it's");
        assert_eq!(field_text(&h, "user", &w).unwrap(), "'it'\\''s'");
        let w = Word::lit("a$b");
        let err = field_text(&h, "host", &w).unwrap_err().to_string();
        assert!(err.contains("the host of host app1 (`a$b`)"), "{err}");
        let w = Word::runtime(RuntimeVar::TargetSlot);
        assert!(field_text(&h, "host", &w).is_err());
    }
}
