//! Renders a bluegreen [`Plan`] as a standalone bash script or a Jenkins declarative pipeline.
//!
//! Both outputs come from askama templates in the workspace's `templates/` folder. Each template is
//! fed a view struct built here from the plan; the remote commands inside come from the core crate's
//! remote library, the same text `bluegreen exec` sends, so the rendered script and `exec` cannot
//! drift apart. The script reads its hosts from a table, one line per host, and runs one function per
//! step over every app host, so its size hardly depends on the number of hosts.
//!
//! - `script`: the bash script's view; `steps` the bash lines of each step; `hosts` the host table
//!   and the functions shared by every app host.
//! - `jenkinsfile`: the pipeline, which carries the script; `groovy` its string literals.
//! - `check`: `render --check`.
//!
//! ```
//! let yaml = r#"
//! app: shop
//! artifact: build/libs/*.jar
//! proxy: { host: 10.0.0.5, upstream_file: /etc/nginx/shop-upstream.conf }
//! servers: [ { host: 10.0.0.11 } ]
//! deploy_dir: /srv/shop
//! "#;
//! let config = bluegreen_core::Config::parse(yaml, "bluegreen.yaml").unwrap();
//! let plan = bluegreen_core::Plan::new(&config);
//! let script = bluegreen_render::script(&plan, "bluegreen.yaml").unwrap();
//! assert!(script.starts_with("#!/bin/bash\n"));
//! ```

mod check;
mod groovy;
mod hosts;
mod jenkinsfile;
mod script;
mod steps;
mod wording;

pub use check::check;
pub use groovy::{groovy_escape, groovy_str, modified_utf8_len, GROOVY_MAX_LITERAL};
pub use jenkinsfile::jenkinsfile;
pub use script::script;

use bluegreen_core::Plan;

/// What can go wrong while rendering or checking a rendered file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A template failed to render.
    #[error("rendering {what} failed: {source}")]
    Template {
        /// Which output.
        what: &'static str,
        /// Why.
        #[source]
        source: askama::Error,
    },
    /// A line of the deploy script is too long for a Groovy string literal.
    #[error("a line of the deploy script is {len} bytes long once escaped for Groovy; a Groovy string literal holds at most {GROOVY_MAX_LITERAL}")]
    TooLong {
        /// Its length in modified UTF-8 bytes.
        len: usize,
    },
    /// The steps a phase runs on each app host differ in more than each host's own values, so the
    /// script cannot run them as one function over its host table.
    #[error("cannot render {what} once for every app host: {detail}")]
    HostsDiffer {
        /// The phase, or its undo.
        what: String,
        /// How the steps differ.
        detail: String,
    },
    /// A message of core's names a placeholder the script has no variable for.
    #[error("core's message `{template}` names `{{{name}}}`, which the script does not provide")]
    Wording {
        /// The template.
        template: &'static str,
        /// The placeholder.
        name: String,
    },
    /// The hosts cannot be written as the script's host table.
    #[error("cannot write the script's host table: {0}")]
    HostTable(String),
    /// The file on disk could not be read.
    #[error("cannot read `{}`: {source}", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file on disk differs from what would be rendered now.
    #[error("`{}` is stale: run the render command with `-o` to update it\n{diff}", path.display())]
    Stale {
        /// The file.
        path: std::path::PathBuf,
        /// A unified diff from the file to the fresh output.
        diff: String,
    },
}

/// The two outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A standalone bash script.
    Script,
    /// A declarative Jenkinsfile.
    Jenkinsfile,
}

/// Renders `plan` in `format`; `source` names the config in the header.
pub fn render(plan: &Plan, format: Format, source: &str) -> Result<String, Error> {
    match format {
        Format::Script => script(plan, source),
        Format::Jenkinsfile => jenkinsfile(plan, source),
    }
}
