//! `bluegreen check --remote` and `bluegreen setup`: every host checked at once, with one call of
//! the remote library each (`checkproxy`, `checkhost`), which says what it found, what it fixed
//! (`setup` only: the slots' and state directories, the managed upstream file) and, for every
//! problem left, how to fix it.

use super::{call, connect, env_only, on_each, prepare};
use crate::error::Error;
use crate::ExecOptions;
use bluegreen_core::config::{ProbeFrom, StartPart};
use bluegreen_core::remote::calls;
use bluegreen_core::{Config, Word};
use std::fmt;

/// One check on one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// `ok`, `fixed`, `warn` or `problem`.
    pub status: String,
    /// What was found.
    pub what: String,
    /// For a problem: how to fix it.
    pub fix: String,
}

/// The checks of one host, or why it could not be checked.
#[derive(Debug, Clone)]
pub struct HostChecks {
    /// `proxy`, `app1`, ...
    pub id: String,
    /// Its SSH address.
    pub address: String,
    /// The checks, in order.
    pub checks: Vec<Check>,
    /// Why the host could not be checked (it could not be reached, say).
    pub error: Option<String>,
}

/// Every host's checks.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// The hosts, the proxy first.
    pub hosts: Vec<HostChecks>,
}

impl CheckReport {
    /// The number of problems (an unreachable host counts as one).
    pub fn problems(&self) -> usize {
        self.hosts
            .iter()
            .map(|h| {
                usize::from(h.error.is_some())
                    + h.checks.iter().filter(|c| c.status == "problem").count()
            })
            .sum()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for h in &self.hosts {
            writeln!(f, "{} {}", h.id, h.address)?;
            if let Some(e) = &h.error {
                writeln!(f, "  PROBLEM  cannot be checked: {e}")?;
            }
            for c in &h.checks {
                let tag = match c.status.as_str() {
                    "ok" => "ok",
                    "fixed" => "FIXED",
                    "warn" => "WARN",
                    _ => "PROBLEM",
                };
                writeln!(f, "  {tag:<7}  {}", c.what)?;
                if !c.fix.is_empty() {
                    writeln!(f, "           fix: {}", c.fix)?;
                }
            }
        }
        match self.problems() {
            0 => write!(f, "no problems found"),
            n => write!(f, "{n} problem(s) found"),
        }
    }
}

/// The first word of the start command, when it is plain text (`java`), else empty.
fn program(config: &Config) -> String {
    let text: String = config
        .start
        .iter()
        .take_while(|p| matches!(p, StartPart::Text(_)))
        .map(|p| match p {
            StartPart::Text(t) => t.as_str(),
            StartPart::Placeholder(_) => "",
        })
        .collect();
    let first = text.split_whitespace().next().unwrap_or_default();
    // Shell syntax (`cd`, `exec`, a variable assignment, `$JAVA`) is not a program to look up.
    let plain = !first.is_empty()
        && first
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._+-".contains(c))
        && !["cd", "exec", "env", "nohup", "sudo"].contains(&first);
    if plain {
        first.to_string()
    } else {
        String::new()
    }
}

/// `nginx -T` from the config's test command (`-t` becomes `-T`; without one, `-T` is added).
fn dump_command(config: &Config) -> String {
    let mut words = config.proxy.test_command.clone();
    match words.iter_mut().find(|w| *w == "-t") {
        Some(w) => *w = "-T".into(),
        None => words.push("-T".into()),
    }
    words.join(" ")
}

/// Checks every host at once; with `fix` (`setup`), creates what is missing and safe to create.
pub fn check(config: &Config, opts: &ExecOptions, fix: bool) -> Result<CheckReport, Error> {
    let (plan, env) = prepare(config, opts)?;
    let conns = connect(&plan, &env, opts, None)?;
    let results = on_each(&conns, &|c, w| {
        let rc = if c.id == bluegreen_core::plan::PROXY_ID {
            calls::CheckProxy {
                state_dir: Word::lit(&config.proxy.state_dir),
                upstream_file: Word::lit(&config.proxy.upstream_file),
                upstream_name: Word::lit(&config.proxy.upstream_name),
                sudo: config.proxy.sudo,
                dump_command: Word::lit(dump_command(config)),
                app: Word::lit(&config.app),
                fix,
            }
            .into()
        } else {
            calls::CheckHost {
                deploy_dir: Word::lit(&config.deploy_dir),
                blue_port: config.slots.blue,
                green_port: config.slots.green,
                program: Word::lit(program(config)),
                need_curl: config.health.from == ProbeFrom::Host,
                supervisor: Word::lit(config.supervisor.name()),
                app: Word::lit(&config.app),
                fix,
            }
            .into()
        };
        call(&c.id, w, "check", &rc, &env_only(&env, "check"))
            .map(|o| o.stdout)
            .map_err(|e| e.to_string())
    });
    let hosts = conns
        .iter()
        .zip(results)
        .map(|(c, r)| {
            let mut h = HostChecks {
                id: c.id.clone(),
                address: c.addr.clone(),
                checks: Vec::new(),
                error: None,
            };
            match r {
                Ok(out) => {
                    h.checks = out
                        .lines()
                        .filter_map(|l| {
                            let mut parts = l.splitn(3, '\t');
                            Some(Check {
                                status: parts.next()?.to_string(),
                                what: parts.next()?.to_string(),
                                fix: parts.next().unwrap_or_default().to_string(),
                            })
                        })
                        .collect()
                }
                Err(e) => h.error = Some(e),
            }
            h
        })
        .collect();
    Ok(CheckReport { hosts })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(start: &str) -> Config {
        let text = format!(
            "app: a\nartifact: a.jar\nproxy:\n  host: p\n  upstream_file: /etc/nginx/a.conf\nservers:\n  - host: h\ndeploy_dir: /srv/a\nstart: {start} --server.port={{port}}\n"
        );
        Config::parse(&text, "t.yaml").unwrap()
    }

    #[test]
    fn the_program_is_the_start_commands_first_plain_word() {
        assert_eq!(program(&config("java -jar {jar}")), "java");
        assert_eq!(
            program(&config("/opt/jdk/bin/java -jar {jar}")),
            "/opt/jdk/bin/java"
        );
        assert_eq!(program(&config("cd {dir} && exec java -jar {jar}")), "");
        assert_eq!(program(&config("$JAVA_HOME/bin/java -jar {jar}")), "");
    }

    #[test]
    fn nginx_dumps_its_configuration_with_the_test_commands_words() {
        assert_eq!(dump_command(&config("java -jar {jar}")), "nginx -T");
    }
}
