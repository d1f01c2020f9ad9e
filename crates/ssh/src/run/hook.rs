//! The hooks: the library's `hook` function, called on a host like any call, or run by bash on the
//! runner with the environment in its own. Their output is shown line by line, every secret's
//! value masked.

use super::{Ctx, Done, Em};
use crate::error::{last_line, last_lines, Error};
use crate::event::Status;
use crate::runtime::resolve;
use bluegreen_core::plan::HookStep;
use bluegreen_core::remote::calls;
use bluegreen_core::remote::LIBRARY;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

/// How many lines of a failed hook's output its error quotes.
const OUTPUT_LINES: usize = 10;

impl Ctx<'_> {
    /// Runs a hook where the plan says, showing its output; a failure is an [`Error::Hook`].
    pub(super) fn hook(&self, h: &HookStep, em: &Em) -> Result<Done, Error> {
        let name = h.hook.name();
        let host = h.on.as_deref().or(h.about.as_deref()).unwrap_or(h.place());
        let masks = self.secret_values();
        let show = |line: &str| {
            em.send(
                em.event(host, name, Status::Progress)
                    .msg(mask(line, &masks)),
            );
        };
        let (status, stdout, stderr) = match &h.on {
            Some(on) => {
                let out = self.call_raw(on, name, &h.call, em, false)?;
                for line in out.stdout.lines() {
                    if line != calls::HOOK_DONE {
                        show(line);
                    }
                }
                (out.status, out.stdout, out.stderr)
            }
            None => self.hook_here(h, &show)?,
        };
        if status == 0 {
            return Ok(Done::ok(format!("`{}` succeeded", h.command)));
        }
        let why = last_line(&stderr);
        let why = why.strip_prefix("bluegreen: hook ").unwrap_or(&why);
        let output: Vec<&str> = stdout.lines().filter(|l| *l != calls::HOOK_DONE).collect();
        Err(Error::Hook {
            host: host.to_string(),
            hook: name.to_string(),
            why: if why.is_empty() {
                format!("exited with status {status}")
            } else {
                why.to_string()
            },
            output: mask(&last_lines(&output.join("\n"), OUTPUT_LINES), &masks),
        })
    }

    /// Runs the library's `hook` with bash on this machine, in the working directory: the run's
    /// facts and the app's environment go into the process's environment (in place of any `BG_`
    /// variable of the runner's), never its arguments.
    /// Each line of output is passed to `show` as it comes.
    fn hook_here(&self, h: &HookStep, show: &dyn Fn(&str)) -> Result<(i32, String, String), Error> {
        let rt = self.rt();
        let name = h.hook.name();
        let mut env = Vec::with_capacity(h.env.len());
        for (var, w) in &h.env {
            env.push((var.clone(), resolve(w, &self.env, &rt, name)?));
        }
        let mut args = Vec::with_capacity(calls::Hook::FIXED_ARGS);
        for w in &h.call.args[..calls::Hook::FIXED_ARGS] {
            args.push(resolve(w, &self.env, &rt, name)?);
        }
        let io = |source: std::io::Error| Error::Io {
            what: format!("cannot run the {name} hook with"),
            path: "bash".into(),
            source,
        };
        let mut cmd = Command::new("bash");
        // A hook's BG_ variables are the plan's, none the runner's environment happens to hold;
        // nor does it get the SSH key's passphrase.
        for (var, _) in std::env::vars_os() {
            if var.to_string_lossy().starts_with("BG_") {
                cmd.env_remove(var);
            }
        }
        cmd.env_remove(crate::PASSPHRASE_ENV);
        let mut child = cmd
            .arg("-c")
            .arg(format!("{LIBRARY}\nbg_main hook \"$@\""))
            .arg("bluegreen-hook")
            .args(&args)
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io)?;
        let mut stderr_pipe = child.stderr.take();
        let errors = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(p) = stderr_pipe.as_mut() {
                let _ = p.read_to_string(&mut s);
            }
            s
        });
        let mut stdout = String::new();
        if let Some(out) = child.stdout.take() {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if line != calls::HOOK_DONE {
                    show(&line);
                }
                stdout.push_str(&line);
                stdout.push('\n');
            }
        }
        let status = child.wait().map_err(io)?;
        let stderr = errors.join().unwrap_or_default();
        Ok((status.code().unwrap_or(128), stdout, stderr))
    }

    /// The values of the run's secrets, which nothing it shows may hold (a file secret's value is
    /// a path, no secret; its content is never in bluegreen's own output).
    fn secret_values(&self) -> Vec<String> {
        self.plan
            .secrets
            .iter()
            .filter(|s| !s.file)
            .filter_map(|s| self.env.vars.get(&s.name))
            .filter(|v| !v.is_empty())
            .cloned()
            .collect()
    }
}

/// `text` with every one of `secrets` as `***`.
fn mask(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        out = out.replace(s.as_str(), "***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::mask;

    #[test]
    fn secrets_are_masked() {
        let secrets = vec!["hunter2".to_string()];
        assert_eq!(mask("pw=hunter2 hunter2", &secrets), "pw=*** ***");
        assert_eq!(mask("nothing", &secrets), "nothing");
    }
}
