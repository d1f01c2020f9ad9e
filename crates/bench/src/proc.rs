//! Running commands with their wall time, CPU time and peak memory.
//!
//! Peak RSS and CPU time come from `getrusage(RUSAGE_CHILDREN)`, which covers every child a process
//! has waited for (what `wait4` reports). To get one command's own numbers, the suite runs it under
//! itself (`bluegreen-bench __rss CMD...`): that wrapper has exactly one child, so its `ru_maxrss` is
//! the command's peak (in KiB on Linux) and its `ru_utime + ru_stime` the command's CPU time, its own
//! children's included.

use crate::Result;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

const RSS_MARK: &str = "bluegreen-bench-maxrss-kib=";

/// The hidden `__rss` subcommand: runs `args`, then reports the child's peak RSS on stderr.
pub fn rss_main(args: &[String]) -> ExitCode {
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("usage: bluegreen-bench __rss CMD [ARG...]");
        return ExitCode::from(2);
    };
    let status = match Command::new(cmd).args(rest).status() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bluegreen-bench: cannot run {cmd}: {e}");
            return ExitCode::from(127);
        }
    };
    match nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN) {
        Ok(u) => {
            let us = |t: nix::sys::time::TimeVal| t.tv_sec() * 1_000_000 + t.tv_usec();
            eprintln!(
                "{RSS_MARK}{} {} {}",
                u.max_rss(),
                us(u.user_time()),
                us(u.system_time())
            );
        }
        Err(e) => eprintln!("bluegreen-bench: getrusage: {e}"),
    }
    ExitCode::from(u8::try_from(status.code().unwrap_or(1)).unwrap_or(1))
}

/// What a measured command did.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Exit success.
    pub ok: bool,
    /// Standard output.
    pub stdout: String,
    /// Standard error, without the wrapper's line.
    pub stderr: String,
    /// Wall time from spawn to exit.
    pub wall: Duration,
    /// Peak resident set size in KiB.
    pub max_rss_kib: u64,
    /// User CPU time (the command and the children it waited for).
    pub user: Duration,
    /// System CPU time.
    pub sys: Duration,
}

impl Measured {
    /// User + system CPU time.
    pub fn cpu(&self) -> Duration {
        self.user + self.sys
    }
}

/// Like [`measured`], and each line of standard error with the moment it arrived (since the spawn):
/// `bluegreen exec` writes its event lines unbuffered as the steps start and end, so their arrival
/// times say how long each remote call took.
pub fn measured_lines(
    cmd: &Path,
    args: &[&str],
    dir: &Path,
) -> Result<(Measured, Vec<(Duration, String)>)> {
    use std::io::{BufRead, BufReader, Read};
    let me = std::env::current_exe()?;
    let t = Instant::now();
    let mut child = Command::new(me)
        .arg("__rss")
        .arg(cmd)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut out = child.stdout.take().ok_or("no stdout pipe")?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let mut lines = Vec::new();
    for line in BufReader::new(child.stderr.take().ok_or("no stderr pipe")?).lines() {
        lines.push((t.elapsed(), line?));
    }
    let status = child.wait()?;
    let wall = t.elapsed();
    let stdout = reader.join().map_err(|_| "stdout reader panicked")?;
    let stderr_all: String = lines.iter().map(|(_, l)| format!("{l}\n")).collect();
    let mut m = parse_wrapped(status.success(), stdout, &stderr_all, wall);
    lines.retain(|(_, l)| !l.starts_with(RSS_MARK));
    m.stderr = lines.iter().map(|(_, l)| format!("{l}\n")).collect();
    Ok((m, lines))
}

/// Runs `cmd args` in `dir` under the RSS wrapper.
pub fn measured(cmd: &Path, args: &[&str], dir: &Path) -> Result<Measured> {
    let me = std::env::current_exe()?;
    let t = Instant::now();
    let out = Command::new(me)
        .arg("__rss")
        .arg(cmd)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()?;
    let wall = t.elapsed();
    Ok(parse_wrapped(
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        &String::from_utf8_lossy(&out.stderr),
        wall,
    ))
}

/// A wrapped command's result, its numbers taken out of its standard error.
fn parse_wrapped(ok: bool, stdout: String, stderr_all: &str, wall: Duration) -> Measured {
    let mut max_rss_kib = 0;
    let (mut user, mut sys) = (Duration::ZERO, Duration::ZERO);
    let mut stderr = String::new();
    for line in stderr_all.lines() {
        match line.strip_prefix(RSS_MARK) {
            Some(v) => {
                let n: Vec<u64> = v
                    .split_whitespace()
                    .map(|x| x.parse().unwrap_or(0))
                    .collect();
                max_rss_kib = n.first().copied().unwrap_or(0);
                user = Duration::from_micros(n.get(1).copied().unwrap_or(0));
                sys = Duration::from_micros(n.get(2).copied().unwrap_or(0));
            }
            None => {
                stderr.push_str(line);
                stderr.push('\n');
            }
        }
    }
    Measured {
        ok,
        stdout,
        stderr,
        wall,
        max_rss_kib,
        user,
        sys,
    }
}

/// The environment variable naming another `bluegreen` binary to measure (e.g. one built from an
/// older commit, for before/after numbers).
pub const BIN_ENV: &str = "BLUEGREEN_BIN";

/// The `bluegreen` binary to measure: `$BLUEGREEN_BIN` when set, else the one of the same build
/// profile as this one, built first if needed.
pub fn bluegreen_bin() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os(BIN_ENV).filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            return Err(format!("{BIN_ENV}={}: no such file", bin.display()).into());
        }
        return Ok(bin);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut c = Command::new(cargo);
    c.args(["build", "-q", "--bin", "bluegreen"])
        .current_dir(crate::root());
    if !cfg!(debug_assertions) {
        c.arg("--release");
    }
    let st = c.status()?;
    if !st.success() {
        return Err("cargo build --bin bluegreen failed".into());
    }
    let me = std::env::current_exe()?;
    let bin = me
        .parent()
        .ok_or("no parent directory of the bench binary")?
        .join("bluegreen");
    if !bin.is_file() {
        return Err(format!("{} not found after building it", bin.display()).into());
    }
    Ok(bin)
}

/// Runs a command, returning trimmed stdout+stderr (for version strings), or "" if it cannot run.
pub fn text_of(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
            .trim()
            .to_string()
        })
        .unwrap_or_default()
}

/// Parses `bluegreen exec`'s summary line (`deployed demo abc to green (previous: blue) in 3.21s:
/// connect 80ms, prepare 120ms, ...`) into (total, [(phase, duration)]).
pub fn parse_summary(stdout: &str) -> Option<(Duration, Vec<(String, Duration)>)> {
    let line = stdout.lines().find(|l| l.starts_with("deployed "))?;
    // `(previous: blue)` holds ": " too; the phase list does not.
    let (head, tail) = line.rsplit_once(": ")?;
    let total = parse_human(head.rsplit(" in ").next()?)?;
    let mut phases = Vec::new();
    for part in tail.split(", ") {
        let (name, d) = part.trim().split_once(' ')?;
        phases.push((name.to_string(), parse_human(d)?));
    }
    Some((total, phases))
}

/// `80ms`, `3.21s`, `1m02s`.
pub fn parse_human(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Some(ms) = s.strip_suffix("ms") {
        return ms.parse::<u64>().ok().map(Duration::from_millis);
    }
    if let Some((m, rest)) = s.split_once('m') {
        let secs: u64 = rest.strip_suffix('s')?.parse().ok()?;
        return Some(Duration::from_secs(m.parse::<u64>().ok()? * 60 + secs));
    }
    s.strip_suffix('s')?
        .parse::<f64>()
        .ok()
        .map(Duration::from_secs_f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_line() {
        let (total, phases) = parse_summary(
            "deployed demo 0123456789ab to green (previous: blue) in 3.21s: connect 80ms, prepare 120ms, upload 1m02s\n",
        )
        .unwrap();
        assert_eq!(total, Duration::from_millis(3210));
        assert_eq!(
            phases,
            vec![
                ("connect".to_string(), Duration::from_millis(80)),
                ("prepare".to_string(), Duration::from_millis(120)),
                ("upload".to_string(), Duration::from_secs(62)),
            ]
        );
    }
}
