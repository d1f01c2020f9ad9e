//! The one error type of the core crate.

use std::path::PathBuf;

/// What went wrong while reading or validating a config.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file could not be read.
    #[error("cannot read config `{}`: {source}", path.display())]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The YAML is malformed or does not fit the schema (unknown key, wrong type, bad duration).
    #[error("{file}:{line}:{column}: {message}{}", hint_suffix(hint))]
    Syntax {
        /// The config file as given.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
        /// How to fix it, where we can tell.
        hint: Option<String>,
    },
    /// A value is well-formed YAML but not acceptable.
    #[error("{file}: {field}: {message}{}", hint_suffix(hint))]
    Invalid {
        /// The config file as given.
        file: String,
        /// The field's path, e.g. `health.interval` or `servers[1].host`.
        field: String,
        /// What is wrong.
        message: String,
        /// How to fix it, where we can tell.
        hint: Option<String>,
    },
    /// A `${VAR}` reference names an environment variable that is not set.
    #[error("{field}: environment variable `{name}` is not set{}", hint_suffix(&Some(format!("export {name}=... before running, or remove the reference"))))]
    MissingVariable {
        /// The field's path.
        field: String,
        /// The variable.
        name: String,
    },
    /// A `${VAR}` reference resolved to a value the field does not accept.
    #[error("{field}: `{value}` (from `${{{name}}}`) {message}")]
    BadVariable {
        /// The field's path.
        field: String,
        /// The variable.
        name: String,
        /// The value it held.
        value: String,
        /// What is wrong with it.
        message: String,
    },
    /// `rollback --to` names neither a release nor a deploy time.
    #[error("rollback --to: `{to}` is neither a release (4 or more hex digits of its sha256) nor the start of a deploy time (2026-12-02T13:30)\n  hint: `bluegreen releases` lists the kept releases")]
    RollbackTarget {
        /// What was given.
        to: String,
    },
}

fn hint_suffix(hint: &Option<String>) -> String {
    match hint {
        Some(h) => format!("\n  hint: {h}"),
        None => String::new(),
    }
}
