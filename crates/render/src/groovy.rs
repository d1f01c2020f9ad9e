//! Groovy string literals: escaping, and the length limit Groovy 2.4 (and the class file) puts on a
//! string constant.

/// Groovy 2.4 refuses string literals longer than this many bytes of modified UTF-8 (the class
/// file's limit on a string constant).
pub const GROOVY_MAX_LITERAL: usize = 65_535;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groovy_escape_handles_backslash_quote_and_cr() {
        assert_eq!(groovy_escape(r"a\b'c$d"), r"a\\b\'c$d");
        assert_eq!(groovy_escape("x\r\ny"), "x\\r\ny");
        assert_eq!(groovy_str("it's\n"), r"'it\'s\n'");
    }

    #[test]
    fn modified_utf8_counts_supplementary_characters_as_two_surrogates() {
        assert_eq!(modified_utf8_len("abc"), 3);
        assert_eq!(modified_utf8_len("배"), 3);
        assert_eq!(modified_utf8_len("é"), 2);
        assert_eq!(modified_utf8_len("🚀"), 6);
    }
}
