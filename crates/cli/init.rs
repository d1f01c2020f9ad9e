//! `bluegreen init`: a commented starter config, from a few flags, that `check` accepts; and the
//! newcomer's other tools, shell completions and the man page, both generated from the CLI's own
//! definition (clap_complete, clap_mangen).

use crate::Failure;
use bluegreen_core::Config;
use std::path::Path;

/// What `init` is told.
pub struct Starter<'a> {
    pub app: &'a str,
    pub proxy: &'a str,
    pub servers: &'a [String],
    pub user: &'a str,
}

/// A YAML scalar for `s`: a JSON string, which YAML reads as the same text whatever it holds.
fn scalar(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

/// The starter config's text. Every value it does not set is a default the README documents; the
/// comments name the ones a first deploy most often changes.
pub fn starter_text(s: &Starter<'_>) -> String {
    let servers: String = s
        .servers
        .iter()
        .map(|h| format!("  - host: {}\n", scalar(h)))
        .collect();
    format!(
        "# bluegreen deploy config, written by `bluegreen init`. `bluegreen check` validates it,
# `bluegreen plan` shows every step it makes. Every key left out has the default the README lists.
app: {app}
# The jar to deploy: a path or a glob that matches exactly one file.
artifact: build/libs/*.jar

ssh:
  user: {user}
  # identity_file: ~/.ssh/id_ed25519   # default: ssh-agent
  # known_hosts: ~/.ssh/known_hosts    # hosts are verified with OpenSSH's rules

# The nginx host. Its upstream file holds only the `server` lines bluegreen writes; include it
# inside your `upstream {{ }}` block (see the README's first-deploy walkthrough).
proxy:
  host: {proxy}
  upstream_file: /etc/nginx/bluegreen/{app_file}-upstream.conf
  sudo: true                         # file writes, `nginx -t` and the reload under `sudo -n`
  # state_dir: /var/lib/bluegreen/{app_file}   # lock, state file and audit log

# The app hosts: each runs the app twice, on the blue and the green port.
servers:
{servers}
slots:
  blue: 8080
  green: 8081

deploy_dir: /home/{user_file}/{app_file}
start: java -jar {{jar}} --server.port={{port}}

health:
  path: /actuator/health
  # interval: 500ms
  # deadline: 2m
",
        app = scalar(s.app),
        user = scalar(s.user),
        proxy = scalar(s.proxy),
        app_file = s.app,
        user_file = s.user,
    )
}

/// Writes the starter config to `path`, after checking it as `check` would (a flag's value that
/// the config refuses is refused here, with the config's own message); never over an existing
/// file unless `force`.
pub fn init(path: &Path, s: &Starter<'_>, force: bool) -> Result<(), Failure> {
    // The app's and the user's names also go into paths: plain names only.
    for (flag, v) in [("--app", s.app), ("--user", s.user)] {
        if v.is_empty()
            || !v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(Failure::Input(format!(
                "{flag}: '{v}' is not a plain name (letters, digits, '.', '_', '-')"
            )));
        }
    }
    if path.exists() && !force {
        return Err(Failure::Input(format!(
            "{} already exists; pass --force to replace it",
            path.display()
        )));
    }
    let text = starter_text(s);
    Config::parse(&text, &path.display().to_string()).map_err(|e| Failure::Input(e.to_string()))?;
    std::fs::write(path, text)
        .map_err(|e| Failure::Run(format!("cannot write `{}`: {e}", path.display())))?;
    println!(
        "wrote {}: edit it, then `bluegreen -c {} check`",
        path.display(),
        path.display()
    );
    Ok(())
}
