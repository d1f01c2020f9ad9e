//! The scaling numbers of an earlier build ("before"), kept in a markdown file the suite writes
//! (`--write-before FILE`, with `BLUEGREEN_BIN` pointing at that build's binary) and reads back so
//! that the report can put them next to the current ones (`crates/bench/baseline-4c4a749.md`).

use crate::report::median;
use crate::suite::{LightPoint, LightRun};
use crate::Result;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The file the report reads its "before" from.
pub fn default_path() -> PathBuf {
    crate::root().join("crates/bench/baseline-4c4a749.md")
}

/// Medians of the counted deploys at one host count.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// App hosts.
    pub hosts: usize,
    /// Counted deploys.
    pub deploys: usize,
    /// `bluegreen exec` wall time, s.
    pub wall_s: f64,
    /// Its own CPU, ms.
    pub runner_cpu_ms: f64,
    /// Its peak RSS, MiB (the largest of the deploys).
    pub rss_mib: f64,
    /// CPU per app host per deploy outside the app, ms.
    pub remote_ms: f64,
    /// CPU on the proxy per deploy, ms.
    pub proxy_ms: f64,
    /// CPU of every process on the machine during the deploy divided by the cores, s.
    pub machine_per_core_s: f64,
}

/// One kind of remote call at one host.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// `proxy` or `app`.
    pub host: String,
    /// The call (`lock`, `start`, ...) or a step without one (`connect`, `health`).
    pub call: String,
    /// How many per deploy (median).
    pub per_deploy: f64,
    /// Their time per deploy, added up (median), ms.
    pub ms: f64,
}

/// What a build measured.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Numbers {
    /// Per host count.
    pub points: Vec<Point>,
    /// The remote calls at the smallest host count.
    pub calls: Vec<Call>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn med(runs: &[LightRun], f: impl Fn(&LightRun) -> f64) -> f64 {
    median(&runs.iter().map(f).collect::<Vec<_>>())
}

impl Point {
    /// The medians of `p`'s deploys.
    pub fn of(p: &LightPoint) -> Point {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        Point {
            hosts: p.hosts,
            deploys: p.runs.len(),
            wall_s: med(&p.runs, |r| r.wall.as_secs_f64()),
            runner_cpu_ms: med(&p.runs, |r| ms(r.runner_cpu)),
            rss_mib: p.runs.iter().map(|r| r.max_rss_kib).max().unwrap_or(0) as f64 / 1024.0,
            remote_ms: med(&p.runs, |r| {
                ms(r.remote_cpu.iter().sum::<Duration>()) / r.remote_cpu.len().max(1) as f64
            }),
            proxy_ms: med(&p.runs, |r| ms(r.proxy_cpu)),
            machine_per_core_s: med(&p.runs, |r| r.machine_cpu.as_secs_f64() / cores),
        }
    }
}

impl Numbers {
    /// The medians of `light` (calls from its first point, the smallest host count).
    pub fn of(light: &[LightPoint]) -> Numbers {
        let points = light.iter().map(Point::of).collect();
        let mut calls: Vec<Call> = Vec::new();
        if let Some(p) = light.first() {
            let mut kinds: Vec<(String, String)> = Vec::new();
            for r in &p.runs {
                for (h, c, _) in &r.calls {
                    if !kinds.contains(&(h.clone(), c.clone())) {
                        kinds.push((h.clone(), c.clone()));
                    }
                }
            }
            for (h, c) in kinds {
                let of = |r: &LightRun| -> (f64, f64) {
                    let v: Vec<&Duration> = r
                        .calls
                        .iter()
                        .filter(|(hh, cc, _)| *hh == h && *cc == c)
                        .map(|(_, _, d)| d)
                        .collect();
                    (v.len() as f64, v.iter().map(|d| ms(**d)).sum())
                };
                calls.push(Call {
                    host: h.clone(),
                    call: c.clone(),
                    per_deploy: med(&p.runs, |r| of(r).0),
                    ms: med(&p.runs, |r| of(r).1),
                });
            }
        }
        Numbers { points, calls }
    }
}

const POINTS: &str = "| app hosts | deploys | wall (s) | runner CPU (ms) | peak RSS (MiB) | remote CPU per app host (ms) | proxy CPU (ms) | all processes' CPU / cores (s) |";
const CALLS: &str = "| host | call | per deploy | time per deploy (ms) |";

/// The markdown file: `title` and `text`, then both tables.
pub fn write(path: &Path, title: &str, text: &str, n: &Numbers) -> Result<()> {
    let mut doc = format!("# {title}\n\n{text}\n\n## Per deploy, medians\n\n{POINTS}\n|---|---|---|---|---|---|---|---|\n");
    for p in &n.points {
        let _ = writeln!(
            doc,
            "| {} | {} | {:.3} | {:.1} | {:.1} | {:.1} | {:.1} | {:.3} |",
            p.hosts,
            p.deploys,
            p.wall_s,
            p.runner_cpu_ms,
            p.rss_mib,
            p.remote_ms,
            p.proxy_ms,
            p.machine_per_core_s
        );
    }
    let hosts = n.points.first().map_or(1, |p| p.hosts);
    let _ = write!(
        doc,
        "\n## Remote calls at {hosts} app host(s)\n\nA call runs from its `[HOST] STEP .. $ bg_main CALL` \
         line in `bluegreen exec -v`'s output to the next line of the same host (so `prepare` includes \
         the SFTP upload that follows it); steps without a call line count with the time their `ok` \
         line reports.\n\n{CALLS}\n|---|---|---|---|\n"
    );
    for c in &n.calls {
        let _ = writeln!(
            doc,
            "| {} | {} | {} | {:.1} |",
            c.host, c.call, c.per_deploy, c.ms
        );
    }
    std::fs::write(path, doc)?;
    Ok(())
}

fn cells(line: &str) -> Vec<&str> {
    line.trim()
        .trim_matches('|')
        .split('|')
        .map(str::trim)
        .collect()
}

/// Reads a file [`write`] wrote; None when it is missing or holds no numbers.
pub fn read(path: &Path) -> Option<Numbers> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut n = Numbers::default();
    let mut table = "";
    for line in text.lines() {
        if line == POINTS || line == CALLS {
            table = if line == POINTS { "points" } else { "calls" };
            continue;
        }
        if !line.starts_with('|') {
            table = "";
            continue;
        }
        let c = cells(line);
        let f = |i: usize| c.get(i).and_then(|v| v.parse::<f64>().ok());
        match table {
            "points" => {
                let (Some(h), Some(d)) = (f(0), f(1)) else {
                    continue;
                };
                n.points.push(Point {
                    hosts: h as usize,
                    deploys: d as usize,
                    wall_s: f(2)?,
                    runner_cpu_ms: f(3)?,
                    rss_mib: f(4)?,
                    remote_ms: f(5)?,
                    proxy_ms: f(6)?,
                    machine_per_core_s: f(7)?,
                });
            }
            "calls" => {
                if let (Some(per), Some(ms)) = (f(2), f(3)) {
                    n.calls.push(Call {
                        host: c[0].to_string(),
                        call: c[1].to_string(),
                        per_deploy: per,
                        ms,
                    });
                }
            }
            _ => {}
        }
    }
    (!n.points.is_empty()).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_committed_baseline() {
        let b = read(&default_path()).expect("crates/bench/baseline-4c4a749.md parses");
        let hosts: Vec<usize> = b.points.iter().map(|p| p.hosts).collect();
        assert_eq!(hosts, [1, 8, 32, 50]);
        assert!(b
            .points
            .iter()
            .all(|p| p.remote_ms > 0.0 && p.runner_cpu_ms > 0.0));
        assert!(b
            .calls
            .iter()
            .any(|c| c.host == "proxy" && c.call == "lock"));
    }

    #[test]
    fn round_trip() {
        let n = Numbers {
            points: vec![Point {
                hosts: 50,
                deploys: 3,
                wall_s: 7.25,
                runner_cpu_ms: 812.5,
                rss_mib: 14.2,
                remote_ms: 190.0,
                proxy_ms: 480.5,
                machine_per_core_s: 6.125,
            }],
            calls: vec![Call {
                host: "proxy".into(),
                call: "lock".into(),
                per_deploy: 1.0,
                ms: 87.0,
            }],
        };
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.md");
        write(&p, "t", "some text", &n).unwrap();
        assert_eq!(read(&p), Some(n));
        assert_eq!(read(&dir.path().join("none.md")), None);
    }
}
