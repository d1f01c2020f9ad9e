//! Values that may refer to variables known only at run time.
//!
//! A config value such as `${WAS_1_PRIVATE_IP}` cannot be resolved when the plan is rendered: Jenkins
//! supplies it when the pipeline runs. Likewise the target slot of a deploy is only known once the live
//! slot has been read from the proxy. A [`Word`] keeps such references symbolic, so that each backend
//! decides how to resolve them: `exec` looks them up and quotes the result, the renderer turns them
//! into shell variable references inside double quotes.

use serde::Serialize;
use std::fmt;

/// A variable a [`Word`] refers to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Var {
    /// An environment variable of the runner (`${NAME}` in the config).
    Env(String),
    /// A value the backend computes while the deploy runs.
    Runtime(RuntimeVar),
    /// The content of the runner's file whose path is in the environment variable of this name,
    /// base64-encoded (a file secret, for a host to write back into a file): `exec` reads and
    /// encodes it, the rendered script has it in `$BG_FILE_<NAME>`.
    File(String),
}

/// Values that exist only while a deploy runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeVar {
    /// The slot being deployed to (`blue` or `green`).
    TargetSlot,
    /// The port of the target slot.
    TargetPort,
    /// The slot serving traffic before the deploy (`blue`, `green`, or `none`).
    LiveSlot,
    /// The port of the live slot (empty on a first deploy).
    LivePort,
    /// The sha256 of the artifact being deployed.
    Release,
    /// Who runs the deploy (`user@host`, or Jenkins' build tag).
    Deployer,
    /// A random token unique to this run: the deploy lock and the switch's intent are this run's
    /// when they carry it.
    RunToken,
}

impl RuntimeVar {
    /// The shell variable name the rendered script uses for this value.
    pub fn shell_name(self) -> &'static str {
        match self {
            RuntimeVar::TargetSlot => "BG_TARGET_SLOT",
            RuntimeVar::TargetPort => "BG_TARGET_PORT",
            RuntimeVar::LiveSlot => "BG_LIVE_SLOT",
            RuntimeVar::LivePort => "BG_LIVE_PORT",
            RuntimeVar::Release => "BG_RELEASE",
            RuntimeVar::Deployer => "BG_DEPLOYER",
            RuntimeVar::RunToken => "BG_RUN_TOKEN",
        }
    }
}

impl Var {
    /// The shell variable name this variable is known by in a rendered script.
    pub fn shell_name(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Var::Env(name) => name.into(),
            Var::Runtime(r) => r.shell_name().into(),
            Var::File(name) => format!("{FILE_VAR_PREFIX}{name}").into(),
        }
    }
}

/// The rendered script's variable for a [`Var::File`] is this followed by the secret's name.
pub const FILE_VAR_PREFIX: &str = "BG_FILE_";

/// One piece of a [`Word`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    /// Text taken as it is.
    Lit(String),
    /// A reference resolved at run time.
    Var(Var),
}

/// A string made of literal text and variable references.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(transparent)]
pub struct Word(pub Vec<Part>);

/// A `${...}` reference in a config string that is not a valid variable name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadReference(pub String);

impl Word {
    /// A word of literal text only.
    pub fn lit(s: impl Into<String>) -> Word {
        let s = s.into();
        if s.is_empty() {
            Word(Vec::new())
        } else {
            Word(vec![Part::Lit(s)])
        }
    }

    /// A word made of one runtime variable.
    pub fn runtime(v: RuntimeVar) -> Word {
        Word(vec![Part::Var(Var::Runtime(v))])
    }

    /// Parses `${NAME}` references out of a config string. A `$` not followed by `{` is literal.
    pub fn parse_env(s: &str) -> Result<Word, BadReference> {
        let mut w = Word::default();
        let mut rest = s;
        while let Some(i) = rest.find("${") {
            w.push_lit(&rest[..i]);
            let after = &rest[i + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| BadReference(rest[i..].to_string()))?;
            let name = &after[..end];
            if !is_var_name(name) {
                return Err(BadReference(format!("${{{name}}}")));
            }
            w.0.push(Part::Var(Var::Env(name.to_string())));
            rest = &after[end + 1..];
        }
        w.push_lit(rest);
        Ok(w)
    }

    /// Appends literal text, merging it with a preceding literal.
    pub fn push_lit(&mut self, s: &str) -> &mut Word {
        if s.is_empty() {
            return self;
        }
        if let Some(Part::Lit(prev)) = self.0.last_mut() {
            prev.push_str(s);
        } else {
            self.0.push(Part::Lit(s.to_string()));
        }
        self
    }

    /// Appends a variable reference.
    pub fn push_var(&mut self, v: Var) -> &mut Word {
        self.0.push(Part::Var(v));
        self
    }

    /// Appends another word.
    pub fn push_word(&mut self, other: &Word) -> &mut Word {
        for p in &other.0 {
            match p {
                Part::Lit(s) => {
                    self.push_lit(s);
                }
                Part::Var(v) => {
                    self.push_var(v.clone());
                }
            }
        }
        self
    }

    /// Concatenation, as a builder.
    pub fn then(mut self, other: &Word) -> Word {
        self.push_word(other);
        self
    }

    /// Concatenation with literal text, as a builder.
    pub fn then_lit(mut self, s: &str) -> Word {
        self.push_lit(s);
        self
    }

    /// Concatenation with a runtime variable, as a builder.
    pub fn then_runtime(mut self, v: RuntimeVar) -> Word {
        self.push_var(Var::Runtime(v));
        self
    }

    /// The literal text, when the word holds no variable.
    pub fn as_literal(&self) -> Option<String> {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Var(_) => return None,
            }
        }
        Some(out)
    }

    /// The environment variables this word refers to, in order.
    pub fn env_vars(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|p| match p {
            Part::Var(Var::Env(n) | Var::File(n)) => Some(n.as_str()),
            _ => None,
        })
    }

    /// Whether the word refers to any variable.
    pub fn has_vars(&self) -> bool {
        self.0.iter().any(|p| matches!(p, Part::Var(_)))
    }

    /// Resolves every variable with `lookup`, which returns `Err` with the name it could not resolve.
    pub fn resolve<E>(
        &self,
        mut lookup: impl FnMut(&Var) -> Result<String, E>,
    ) -> Result<String, E> {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Var(v) => out.push_str(&lookup(v)?),
            }
        }
        Ok(out)
    }

    /// The word as one bash word: double-quoted, literal text escaped, variables as `${NAME}`.
    ///
    /// Inside double quotes bash gives `\`, `"`, `$` and `` ` `` special meaning; each is
    /// backslash-escaped, so any literal text (newlines included) comes out unchanged.
    pub fn to_bash(&self) -> String {
        let mut out = String::from("\"");
        for p in &self.0 {
            match p {
                Part::Lit(s) => {
                    for c in s.chars() {
                        if matches!(c, '\\' | '"' | '$' | '`') {
                            out.push('\\');
                        }
                        out.push(c);
                    }
                }
                Part::Var(v) => {
                    out.push_str("${");
                    out.push_str(&v.shell_name());
                    out.push('}');
                }
            }
        }
        out.push('"');
        out
    }
}

impl fmt::Display for Word {
    /// Shows the word as it reads in a config: `${NAME}` for variables.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.0 {
            match p {
                Part::Lit(s) => f.write_str(s)?,
                Part::Var(v) => write!(f, "${{{}}}", v.shell_name())?,
            }
        }
        Ok(())
    }
}

/// Whether `s` is a valid environment variable name (`[A-Za-z_][A-Za-z0-9_]*`).
pub fn is_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_env_references() {
        let w = Word::parse_env("http://${HOST}:8080/x$y").unwrap();
        assert_eq!(
            w.0,
            vec![
                Part::Lit("http://".into()),
                Part::Var(Var::Env("HOST".into())),
                Part::Lit(":8080/x$y".into()),
            ]
        );
        assert_eq!(w.to_string(), "http://${HOST}:8080/x$y");
        assert_eq!(w.to_bash(), "\"http://${HOST}:8080/x\\$y\"");
    }

    #[test]
    fn rejects_bad_references() {
        assert_eq!(
            Word::parse_env("a${1X}").unwrap_err(),
            BadReference("${1X}".into())
        );
        assert_eq!(
            Word::parse_env("a${X").unwrap_err(),
            BadReference("${X".into())
        );
        assert_eq!(
            Word::parse_env("${$(id)}").unwrap_err(),
            BadReference("${$(id)}".into())
        );
    }

    #[test]
    fn bash_quoting_escapes_specials() {
        let w = Word::lit("a\"b$c`d\\e'f\ng");
        assert_eq!(w.to_bash(), "\"a\\\"b\\$c\\`d\\\\e'f\ng\"");
    }

    #[test]
    fn resolves_variables() {
        let w = Word::parse_env("${A}-${B}").unwrap();
        let r: Result<String, String> = w.resolve(|v| match v.shell_name().as_ref() {
            "A" => Ok("1".into()),
            other => Err(other.to_string()),
        });
        assert_eq!(r, Err("B".to_string()));
    }
}
