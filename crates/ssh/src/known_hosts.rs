//! known_hosts files, read the way OpenSSH reads them (sshd(8), "SSH_KNOWN_HOSTS FILE FORMAT").
//!
//! A line is `[@revoked|@cert-authority] HOSTS KEYTYPE BASE64 [COMMENT]`. HOSTS is either a
//! comma-separated list of patterns (`*` and `?` wildcards, `!pattern` negating, `[host]:port` for
//! a port other than 22), or one hashed name `|1|SALT|HASH`: the HMAC-SHA1 of the name keyed with
//! SALT. A line that cannot be parsed (a key type it does not name, broken base64, an unknown
//! marker) is ignored, as OpenSSH ignores it, so one bad line never hides the others.
//!
//! [`check`] decides what the key a host offered means, [`pinned_types`] and [`host_key_prefs`]
//! tell libssh2 which key types to ask for first, [`entry_line`] writes a new line.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use std::path::{Path, PathBuf};

/// Standard base64, with or without padding when decoding (OpenSSH's decoder takes both).
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// What a line says about its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Marker {
    /// No marker: the key of the hosts named.
    Plain,
    /// `@revoked`: this key must never be accepted for the hosts named.
    Revoked,
    /// `@cert-authority`: a CA whose host certificates are trusted for the hosts named.
    CertAuthority,
}

/// The hosts a line is about.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Hosts {
    /// Comma-separated patterns, lowercased.
    Patterns(String),
    /// `|1|salt|hash`, decoded.
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
}

/// One usable line of a known_hosts file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Line number, from 1.
    pub line: usize,
    pub marker: Marker,
    hosts: Hosts,
    /// The key type, e.g. `ssh-ed25519` (the line's field, which equals the blob's own type).
    pub key_type: String,
    /// The key blob, as the server sends it.
    pub key: Vec<u8>,
}

/// A parsed known_hosts file.
#[derive(Debug, Clone)]
pub(crate) struct File {
    pub path: PathBuf,
    pub entries: Vec<Entry>,
}

/// A line of a known_hosts file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct At {
    pub file: PathBuf,
    pub line: usize,
}

/// What the known_hosts files say about the key a host offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A plain line for the host holds this key.
    Known(At),
    /// A `@revoked` line for the host holds this key: refuse, whatever else is recorded.
    Revoked(At),
    /// A key of the same type is recorded for the host, and it differs.
    Mismatch(At),
    /// Keys are recorded for the host, but none of the type it offered (`pinned`: their types).
    OtherTypes { pinned: Vec<String>, at: At },
    /// No plain key for the host, but a `@cert-authority` line covers it.
    CertAuthority(At),
    /// Nothing is recorded for the host.
    Unknown,
}

impl File {
    /// Reads and parses `path`; a file that does not exist is empty.
    pub fn load(path: &Path) -> std::io::Result<File> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(File::parse(path, &String::from_utf8_lossy(&bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(File {
                path: path.to_path_buf(),
                entries: Vec::new(),
            }),
            Err(e) => Err(e),
        }
    }

    /// Parses the text of a known_hosts file, skipping comments, blank and bad lines.
    pub fn parse(path: &Path, text: &str) -> File {
        File {
            path: path.to_path_buf(),
            entries: text
                .lines()
                .enumerate()
                .filter_map(|(i, l)| parse_line(i + 1, l))
                .collect(),
        }
    }
}

/// One line, or `None` for a comment, a blank line or a line that does not parse.
fn parse_line(line: usize, text: &str) -> Option<Entry> {
    let mut fields = text.split_ascii_whitespace().peekable();
    if fields.peek()?.starts_with('#') {
        return None;
    }
    let marker = match fields.peek().copied() {
        Some("@revoked") => Marker::Revoked,
        Some("@cert-authority") => Marker::CertAuthority,
        Some(m) if m.starts_with('@') => return None,
        _ => Marker::Plain,
    };
    if marker != Marker::Plain {
        fields.next();
    }
    let hosts = parse_hosts(fields.next()?)?;
    let key_type = fields.next()?;
    let key = B64.decode(fields.next()?).ok()?;
    if blob_type(&key)? != key_type {
        return None;
    }
    Some(Entry {
        line,
        marker,
        hosts,
        key_type: key_type.to_string(),
        key,
    })
}

fn parse_hosts(field: &str) -> Option<Hosts> {
    if let Some(rest) = field.strip_prefix("|1|") {
        let (salt, hash) = rest.split_once('|')?;
        let (salt, hash) = (B64.decode(salt).ok()?, B64.decode(hash).ok()?);
        // An HMAC-SHA1 is 20 bytes; ssh-keygen -H uses a salt of the same size.
        return (hash.len() == 20 && !salt.is_empty()).then_some(Hosts::Hashed { salt, hash });
    }
    if field.starts_with('|') {
        return None;
    }
    Some(Hosts::Patterns(field.to_ascii_lowercase()))
}

/// The key type a key blob starts with (an SSH string: 4-byte big-endian length, then the name).
pub(crate) fn blob_type(key: &[u8]) -> Option<&str> {
    let len = u32::from_be_bytes(key.get(..4)?.try_into().ok()?);
    let name = key.get(4..4usize.checked_add(usize::try_from(len).ok()?)?)?;
    std::str::from_utf8(name).ok().filter(|n| !n.is_empty())
}

/// The names under which known_hosts records `addr` at `port`: `addr` (or `[addr]:22`) for port
/// 22, only `[addr]:port` for any other port. Lowercased, as OpenSSH compares them.
pub(crate) fn host_names(addr: &str, port: u16) -> Vec<String> {
    let addr = addr.to_ascii_lowercase();
    if port == 22 {
        vec![format!("[{addr}]:22"), addr]
    } else {
        vec![format!("[{addr}]:{port}")]
    }
}

impl Entry {
    /// Whether the line is about a host known as any of `names` (see [`host_names`]). A negated
    /// pattern that matches any of them rules the line out.
    pub fn matches(&self, names: &[String]) -> bool {
        match &self.hosts {
            Hosts::Hashed { salt, hash } => names.iter().any(|n| hashed_name_is(salt, hash, n)),
            Hosts::Patterns(list) => {
                let mut positive = false;
                for name in names {
                    match match_list(list, name) {
                        Some(false) => return false,
                        Some(true) => positive = true,
                        None => {}
                    }
                }
                positive
            }
        }
    }
}

fn hashed_name_is(salt: &[u8], hash: &[u8], name: &str) -> bool {
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(hash).is_ok()
}

/// Matches `name` against comma-separated patterns: `Some(false)` when a negated pattern matches,
/// else `Some(true)` when a plain one does, `None` when none does.
fn match_list(list: &str, name: &str) -> Option<bool> {
    let mut found = None;
    for pattern in list.split(',').filter(|p| !p.is_empty()) {
        match pattern.strip_prefix('!') {
            Some(negated) if glob(negated.as_bytes(), name.as_bytes()) => return Some(false),
            Some(_) => {}
            None if glob(pattern.as_bytes(), name.as_bytes()) => found = Some(true),
            None => {}
        }
    }
    found
}

/// `*` matches any run of characters, `?` any one character, anything else itself.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and where in the text it started matching.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                // Let the last `*` swallow one more character and try again.
                Some((sp, st)) => {
                    star = Some((sp, st + 1));
                    p = sp + 1;
                    t = st + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// What the known_hosts files say about `key` offered by the host known as `names`.
///
/// In OpenSSH's order: a `@revoked` key is refused whatever else is recorded; a plain line holding
/// the key accepts it; a different key of the same type is a mismatch, and so is a host that
/// offers none of the types recorded for it; a `@cert-authority` line alone cannot accept a plain
/// key (bluegreen does not verify host certificates); otherwise the host is unknown.
pub(crate) fn check(files: &[File], names: &[String], key: &[u8]) -> Verdict {
    let matching = || {
        files.iter().flat_map(move |f| {
            f.entries
                .iter()
                .filter(move |e| e.matches(names))
                .map(move |e| (f, e))
        })
    };
    let at = |(f, e): (&File, &Entry)| At {
        file: f.path.clone(),
        line: e.line,
    };
    let plain = || matching().filter(|(_, e)| e.marker == Marker::Plain);
    if let Some(hit) = matching().find(|(_, e)| e.marker == Marker::Revoked && e.key == key) {
        return Verdict::Revoked(at(hit));
    }
    if let Some(hit) = plain().find(|(_, e)| e.key == key) {
        return Verdict::Known(at(hit));
    }
    let offered = blob_type(key);
    if let Some(hit) = plain().find(|(_, e)| Some(e.key_type.as_str()) == offered) {
        return Verdict::Mismatch(at(hit));
    }
    if let Some(first) = plain().next() {
        return Verdict::OtherTypes {
            pinned: pinned_types(files, names),
            at: at(first),
        };
    }
    if let Some(hit) = matching().find(|(_, e)| e.marker == Marker::CertAuthority) {
        return Verdict::CertAuthority(at(hit));
    }
    Verdict::Unknown
}

/// The types of the plain keys recorded for the host, first seen first.
pub(crate) fn pinned_types(files: &[File], names: &[String]) -> Vec<String> {
    let mut types: Vec<String> = Vec::new();
    for f in files {
        for e in &f.entries {
            if e.marker == Marker::Plain && !types.contains(&e.key_type) && e.matches(names) {
                types.push(e.key_type.clone());
            }
        }
    }
    types
}

/// The host key algorithms that verify keys of type `key_type`.
fn algorithms(key_type: &str) -> Vec<&str> {
    match key_type {
        "ssh-rsa" => vec!["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"],
        t => vec![t],
    }
}

/// libssh2's host key preference: the algorithms of the `pinned` key types first, then the rest of
/// `supported`, each group in libssh2's own order. Certificate algorithms are left out: bluegreen
/// does not verify host certificates, so it always asks for the host's plain key.
pub(crate) fn host_key_prefs(pinned: &[String], supported: &[&str]) -> String {
    let wanted: Vec<&str> = pinned.iter().flat_map(|t| algorithms(t)).collect();
    let plain: Vec<&str> = supported
        .iter()
        .copied()
        .filter(|a| !a.ends_with("-cert-v01@openssh.com"))
        .collect();
    let (first, rest): (Vec<&str>, Vec<&str>) = plain.iter().partition(|a| wanted.contains(a));
    [first, rest].concat().join(",")
}

/// The line recording `key` for `name` (`host` or `[host]:port`), as ssh-keyscan prints it.
pub(crate) fn entry_line(name: &str, key: &[u8]) -> Option<String> {
    Some(format!("{name} {} {}", blob_type(key)?, B64.encode(key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key blob of type `t`: an SSH string naming the type, then `body`.
    fn blob(t: &str, body: &[u8]) -> Vec<u8> {
        let mut b = u32::try_from(t.len()).unwrap().to_be_bytes().to_vec();
        b.extend_from_slice(t.as_bytes());
        b.extend_from_slice(body);
        b
    }

    fn b64(b: &[u8]) -> String {
        B64.encode(b)
    }

    fn file(text: &str) -> File {
        File::parse(Path::new("/kh"), text)
    }

    fn names(addr: &str, port: u16) -> Vec<String> {
        host_names(addr, port)
    }

    /// Whether the file's first entry is about `addr:port`.
    fn first_matches(text: &str, addr: &str, port: u16) -> bool {
        file(text).entries[0].matches(&names(addr, port))
    }

    fn ed(n: u8) -> Vec<u8> {
        blob("ssh-ed25519", &[n; 32])
    }

    fn ec(n: u8) -> Vec<u8> {
        blob("ecdsa-sha2-nistp256", &[n; 65])
    }

    fn at(line: usize) -> At {
        At {
            file: "/kh".into(),
            line,
        }
    }

    #[test]
    fn reads_a_key_blob_type() {
        assert_eq!(blob_type(&ed(1)), Some("ssh-ed25519"));
        assert_eq!(blob_type(b"\0\0\0\x09ssh-"), None, "length beyond the blob");
        assert_eq!(blob_type(b"\0\0"), None);
        assert_eq!(blob_type(b"\0\0\0\0rest"), None, "empty name");
    }

    #[test]
    fn parses_lines_and_skips_comments_blank_and_bad_ones() {
        let k = b64(&ed(1));
        let text = format!(
            "# a comment\n\
             \n   \t\n\
             host1 ssh-ed25519 {k} a comment after the key\n\
             \t host2,host3\tssh-ed25519 {k}\n\
             host4 ssh-ed25519 !!notbase64!!\n\
             host5 ssh-rsa {k}\n\
             host6 ssh-ed25519\n\
             @wat host7 ssh-ed25519 {k}\n\
             |2|abc|def ssh-ed25519 {k}\n\
             |1|notbase64|x ssh-ed25519 {k}\n\
             host8 2048 65537 12345678901234567890\n\
             @revoked host9 ssh-ed25519 {k}\n\
             @cert-authority *.example.com ssh-ed25519 {k}\n\
             #host10 ssh-ed25519 {k}\n"
        );
        let f = file(&text);
        let got: Vec<(usize, Marker)> = f.entries.iter().map(|e| (e.line, e.marker)).collect();
        assert_eq!(
            got,
            vec![
                (4, Marker::Plain),
                (5, Marker::Plain),
                (13, Marker::Revoked),
                (14, Marker::CertAuthority),
            ]
        );
        assert_eq!(f.entries[0].key, ed(1));
        assert_eq!(f.entries[0].key_type, "ssh-ed25519");
        assert_eq!(f.entries[1].hosts, Hosts::Patterns("host2,host3".into()));
    }

    #[test]
    fn base64_with_or_without_padding() {
        let k = ed(7);
        let padded = b64(&k);
        assert!(padded.ends_with('='), "{padded}");
        let bare = padded.trim_end_matches('=');
        let f = file(&format!("a ssh-ed25519 {padded}\nb ssh-ed25519 {bare}\n"));
        assert_eq!(f.entries.len(), 2);
        assert!(f.entries.iter().all(|e| e.key == k));
    }

    #[test]
    fn names_for_a_port() {
        assert_eq!(
            names("Web1.Example", 22),
            ["[web1.example]:22", "web1.example"]
        );
        assert_eq!(names("10.0.0.1", 2222), ["[10.0.0.1]:2222"]);
    }

    #[test]
    fn ports_match_exactly() {
        let k = b64(&ed(1));
        let plain = format!("10.0.0.1 ssh-ed25519 {k}");
        let p22 = format!("[10.0.0.1]:22 ssh-ed25519 {k}");
        let p2222 = format!("[10.0.0.1]:2222 ssh-ed25519 {k}");
        assert!(first_matches(&plain, "10.0.0.1", 22));
        assert!(first_matches(&p22, "10.0.0.1", 22));
        assert!(!first_matches(&p2222, "10.0.0.1", 22));
        assert!(first_matches(&p2222, "10.0.0.1", 2222));
        assert!(
            !first_matches(&plain, "10.0.0.1", 2222),
            "libssh2 matched this"
        );
        assert!(!first_matches(&p22, "10.0.0.1", 2222));
        assert!(!first_matches(&p2222, "10.0.0.1", 2223));
        assert!(!first_matches(&plain, "10.0.0.10", 22));
    }

    #[test]
    fn lists_wildcards_and_case() {
        let k = b64(&ed(1));
        let line = |hosts: &str| format!("{hosts} ssh-ed25519 {k}");
        assert!(first_matches(&line("a.example,10.0.0.1"), "10.0.0.1", 22));
        assert!(first_matches(&line("a.example,10.0.0.1"), "A.Example", 22));
        assert!(first_matches(&line("*.EXAMPLE.com"), "web.example.com", 22));
        assert!(!first_matches(&line("*.example.com"), "example.com", 22));
        assert!(first_matches(&line("10.0.0.?"), "10.0.0.7", 22));
        assert!(!first_matches(&line("10.0.0.?"), "10.0.0.17", 22));
        assert!(first_matches(&line("10.*.1"), "10.0.0.1", 22));
        assert!(first_matches(&line("*"), "anything", 22));
        assert!(
            first_matches(&line("*"), "anything", 2222),
            "`*` matches [host]:port too"
        );
        assert!(first_matches(&line("[10.0.0.*]:2222"), "10.0.0.9", 2222));
        assert!(!first_matches(&line("10.0.0.*"), "10.0.0.9", 2222));
        assert!(first_matches(&line("a*b*c"), "axxbyyc", 22));
        assert!(!first_matches(&line("a*b*c"), "axxbyy", 22));
    }

    #[test]
    fn negation_wins() {
        let k = b64(&ed(1));
        let line = |hosts: &str| format!("{hosts} ssh-ed25519 {k}");
        assert!(!first_matches(&line("10.0.0.*,!10.0.0.1"), "10.0.0.1", 22));
        assert!(!first_matches(&line("!10.0.0.1,10.0.0.*"), "10.0.0.1", 22));
        assert!(first_matches(&line("10.0.0.*,!10.0.0.1"), "10.0.0.2", 22));
        assert!(
            !first_matches(&line("!10.0.0.2"), "10.0.0.1", 22),
            "a negation alone matches nothing"
        );
        assert!(!first_matches(
            &line("*,![10.0.0.1]:2222"),
            "10.0.0.1",
            2222
        ));
    }

    #[test]
    fn hashed_names() {
        // Written by `ssh-keygen -H` (OpenSSH 9.2p1) for the names 10.0.0.1 and [10.0.0.1]:2222.
        let k = b64(&ed(1));
        let h22 =
            format!("|1|B/0mnkYLvO5kHdtzoECK/Z6T88E=|IB1xJpoNyrRgm2udtxB4+2vgLnY= ssh-ed25519 {k}");
        let h2222 =
            format!("|1|aKe07Ae/n/BIo+Y32pp88+inom4=|piQYJa9tA855EzMA0SYtSE2XZSI= ssh-ed25519 {k}");
        assert!(first_matches(&h22, "10.0.0.1", 22));
        assert!(!first_matches(&h22, "10.0.0.2", 22));
        assert!(!first_matches(&h22, "10.0.0.1", 2222));
        assert!(first_matches(&h2222, "10.0.0.1", 2222));
        assert!(!first_matches(&h2222, "10.0.0.1", 22));
    }

    #[test]
    fn check_in_openssh_order() {
        let n = names("10.0.0.1", 22);
        let f = |text: &str| vec![file(text)];
        let (e1, e2, c1, c2) = (b64(&ed(1)), b64(&ed(2)), b64(&ec(1)), b64(&ec(2)));
        assert_eq!(check(&f(""), &n, &ed(1)), Verdict::Unknown);
        assert_eq!(
            check(&f(&format!("other ssh-ed25519 {e1}")), &n, &ed(1)),
            Verdict::Unknown
        );
        assert_eq!(
            check(&f(&format!("10.0.0.1 ssh-ed25519 {e1}")), &n, &ed(1)),
            Verdict::Known(at(1))
        );
        // A key of another type recorded too, or first, changes nothing.
        assert_eq!(
            check(
                &f(&format!(
                    "10.0.0.1 ecdsa-sha2-nistp256 {c1}\n10.0.0.1 ssh-ed25519 {e1}"
                )),
                &n,
                &ed(1)
            ),
            Verdict::Known(at(2))
        );
        assert_eq!(
            check(&f(&format!("10.0.0.1 ssh-ed25519 {e2}")), &n, &ed(1)),
            Verdict::Mismatch(at(1))
        );
        // Two keys of one type: either one is fine.
        assert_eq!(
            check(
                &f(&format!(
                    "10.0.0.1 ssh-ed25519 {e2}\n10.0.0.1 ssh-ed25519 {e1}"
                )),
                &n,
                &ed(1)
            ),
            Verdict::Known(at(2))
        );
        assert_eq!(
            check(
                &f(&format!(
                    "10.0.0.1 ecdsa-sha2-nistp256 {c1}\n*.x ssh-rsa {e1}\n10.0.0.* ecdsa-sha2-nistp256 {c2}"
                )),
                &n,
                &ed(1)
            ),
            Verdict::OtherTypes {
                pinned: vec!["ecdsa-sha2-nistp256".into()],
                at: at(1)
            }
        );
        assert_eq!(
            check(
                &f(&format!(
                    "10.0.0.1 ssh-ed25519 {e1}\n@revoked * ssh-ed25519 {e1}"
                )),
                &n,
                &ed(1)
            ),
            Verdict::Revoked(at(2))
        );
        // A revoked key for other hosts only, or another revoked key, does not matter.
        assert_eq!(
            check(
                &f(&format!(
                    "10.0.0.1 ssh-ed25519 {e1}\n@revoked other ssh-ed25519 {e1}\n@revoked * ssh-ed25519 {e2}"
                )),
                &n,
                &ed(1)
            ),
            Verdict::Known(at(1))
        );
        assert_eq!(
            check(
                &f(&format!("@cert-authority 10.0.0.* ssh-ed25519 {e2}")),
                &n,
                &ed(1)
            ),
            Verdict::CertAuthority(at(1))
        );
        assert_eq!(
            check(
                &f(&format!(
                    "@cert-authority 10.0.0.* ssh-ed25519 {e2}\n10.0.0.1 ssh-ed25519 {e1}"
                )),
                &n,
                &ed(1)
            ),
            Verdict::Known(at(2))
        );
        assert_eq!(
            check(
                &f(&format!("@cert-authority *.example ssh-ed25519 {e2}")),
                &n,
                &ed(1)
            ),
            Verdict::Unknown
        );
        // A @cert-authority or @revoked line is not a pinned key.
        assert_eq!(
            check(&f(&format!("@revoked * ssh-ed25519 {e2}")), &n, &ed(1)),
            Verdict::Unknown
        );
    }

    #[test]
    fn check_reads_every_file_in_order() {
        let n = names("10.0.0.1", 22);
        let (e1, e2) = (b64(&ed(1)), b64(&ed(2)));
        let user = File::parse(Path::new("/user"), "");
        let global = File::parse(
            Path::new("/global"),
            &format!("\n10.0.0.1 ssh-ed25519 {e1}"),
        );
        let known = Verdict::Known(At {
            file: "/global".into(),
            line: 2,
        });
        assert_eq!(check(&[user, global.clone()], &n, &ed(1)), known);
        let stale = File::parse(Path::new("/user"), &format!("10.0.0.1 ssh-ed25519 {e2}"));
        assert_eq!(
            check(&[stale, global.clone()], &n, &ed(1)),
            known,
            "another key of the type in one file does not hide the matching one"
        );
        let revoked = File::parse(
            Path::new("/revoked"),
            &format!("@revoked * ssh-ed25519 {e1}"),
        );
        assert_eq!(
            check(&[global, revoked], &n, &ed(1)),
            Verdict::Revoked(At {
                file: "/revoked".into(),
                line: 1
            })
        );
    }

    #[test]
    fn pinned_types_and_preference() {
        let n = names("10.0.0.1", 2222);
        let (e1, c1) = (b64(&ed(1)), b64(&ec(1)));
        let r1 = b64(&blob("ssh-rsa", &[1; 64]));
        let files = vec![file(&format!(
            "[10.0.0.1]:2222 ssh-rsa {r1}\n\
             10.0.0.1 ssh-ed25519 {e1}\n\
             @revoked * ssh-ed25519 {e1}\n\
             @cert-authority * ssh-ed25519 {e1}\n\
             [10.0.0.1]:2222,other ecdsa-sha2-nistp256 {c1}\n\
             * ssh-rsa {r1}"
        ))];
        assert_eq!(pinned_types(&files, &n), ["ssh-rsa", "ecdsa-sha2-nistp256"]);
        let supported = [
            "ssh-ed25519-cert-v01@openssh.com",
            "rsa-sha2-512-cert-v01@openssh.com",
            "ssh-ed25519",
            "ecdsa-sha2-nistp256",
            "ecdsa-sha2-nistp384",
            "rsa-sha2-512",
            "rsa-sha2-256",
            "ssh-rsa",
        ];
        assert_eq!(
            host_key_prefs(&pinned_types(&files, &n), &supported),
            "ecdsa-sha2-nistp256,rsa-sha2-512,rsa-sha2-256,ssh-rsa,ssh-ed25519,ecdsa-sha2-nistp384"
        );
        assert_eq!(
            host_key_prefs(&["ecdsa-sha2-nistp384".into()], &supported),
            "ecdsa-sha2-nistp384,ssh-ed25519,ecdsa-sha2-nistp256,rsa-sha2-512,rsa-sha2-256,ssh-rsa"
        );
        assert_eq!(
            host_key_prefs(&[], &supported),
            "ssh-ed25519,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,rsa-sha2-512,rsa-sha2-256,ssh-rsa"
        );
        assert_eq!(
            host_key_prefs(&["sk-ssh-ed25519@openssh.com".into()], &supported),
            host_key_prefs(&[], &supported),
            "a type libssh2 does not support is left out"
        );
    }

    #[test]
    fn writes_lines_as_ssh_keyscan_does() {
        let key = ed(3);
        let line = entry_line("[10.0.0.1]:2222", &key).unwrap();
        assert_eq!(line, format!("[10.0.0.1]:2222 ssh-ed25519 {}", b64(&key)));
        let f = file(&line);
        assert_eq!(
            check(&[f], &names("10.0.0.1", 2222), &key),
            Verdict::Known(at(1))
        );
        assert_eq!(entry_line("h", b"\0\0"), None);
    }
}
