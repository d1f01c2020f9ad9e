//! The `bluegreen` command line: thin glue between the config, the plan and the backends.
//!
//! Every command returns a `Result`; `main` alone prints errors and picks the exit code:
//! 0 success; 1 a failed run (traffic left where it was, or switched back), a stale rendered file,
//! or drift found by `status`; 2 bad input (config, usage, environment, artifact) or nothing to
//! act on (no slot to roll back to or retire), with nothing changed on any host; 3 the deploy lock
//! is held by another run (after `--lock-wait`), or `lock release` refused a lock that is not stale.

use bluegreen_core::plan::Action;
use bluegreen_core::{Config, Plan};
use bluegreen_render::Format;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "bluegreen",
    version,
    about = "Zero-downtime blue-green deploys over SSH, or rendered as a Jenkinsfile or bash script"
)]
struct Cli {
    /// The deploy config.
    #[arg(short, long, global = true, default_value = bluegreen_core::config::DEFAULT_CONFIG)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the config; exit 0 when it is good, 2 when it is not. With --remote, also check
    /// every host (changing nothing) and list each problem with its fix; exit 1 when there is one.
    Check {
        /// Connect to every host and check it: directories, the start command's program, curl,
        /// what holds the slot ports, the state directory, the upstream file and nginx's include
        /// of it, systemd and sudo for `supervisor: systemd`.
        #[arg(long)]
        remote: bool,
    },
    /// Make every host ready, idempotently: what `check --remote` checks, with the slots' and
    /// state directories and the managed upstream file created; exit 1 while a problem is left.
    Setup {
        /// Record the host key of a host neither known_hosts file knows (`ssh.host_key_policy:
        /// accept-new` for this run); a changed key is still refused.
        #[arg(long)]
        accept_new: bool,
    },
    /// Print the plan: every phase and step, with the remote commands.
    Plan {
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Render the plan as a bash script or a Jenkinsfile.
    Render {
        /// What to render.
        format: RenderFormat,
        /// Write to this file instead of standard output.
        #[arg(short, long, conflicts_with = "check")]
        output: Option<PathBuf>,
        /// Exit 1 with a diff when this file differs from what would be rendered now.
        #[arg(long, value_name = "FILE")]
        check: Option<PathBuf>,
    },
    /// Run the plan over SSH: deploy the artifact.
    Exec(exec::RunArgs),
    /// Put traffic back on the previous slot: kept running (retained) or restarted from its kept
    /// release, health-checked, then switched to. With --to, an older release kept on the hosts.
    Rollback(exec::RollbackArgs),
    /// Once bluegreen's slot serves the traffic a hand-written deployment used to: stop that
    /// deployment's process on a slot port on every app host, or one process by its pid on one
    /// host (stop.signal, SIGKILL after stop.grace), recorded in the audit log. Refused while the
    /// proxy still sends traffic to it, and for bluegreen's own instances.
    #[command(group(clap::ArgGroup::new("what").required(true).args(["port", "pid"])))]
    Takeover {
        /// The slot port the old process listens on.
        #[arg(long)]
        port: Option<u16>,
        /// The old process's id (with --host).
        #[arg(long, requires = "host")]
        pid: Option<u32>,
        /// The app host the process runs on: its id (`app1`, as `status` shows) or its address.
        #[arg(long, requires = "pid")]
        host: Option<String>,
    },
    /// The releases kept on the app hosts (`keep_releases`), newest first, with their last deploy.
    Releases {
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop the previous slot kept running for the rollback window (`retain`).
    Retire(exec::RetireArgs),
    /// Show the live slot, every slot on every host, the state file and the lock; exit 1 on drift.
    Status {
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
        /// Put right the drift that has one safe answer (an interrupted switch, a stale lock, an
        /// orphan instance in the idle slot), under the deploy lock; say what needs a person.
        #[arg(long)]
        fix: bool,
    },
    /// Show or remove the deploy lock.
    Lock {
        #[command(subcommand)]
        command: LockCommand,
    },
    /// Write a commented starter config (to the --config path) that `check` accepts.
    Init {
        /// The app's name.
        #[arg(long, default_value = "myapp")]
        app: String,
        /// The nginx host.
        #[arg(long, default_value = "proxy.example.internal")]
        proxy: String,
        /// An app host (repeat for each; default: one placeholder host).
        #[arg(long = "server", value_name = "HOST")]
        servers: Vec<String>,
        /// The SSH user on every host.
        #[arg(long, default_value = "deploy")]
        user: String,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Print a shell completion script (e.g. `bluegreen completions bash > /etc/bash_completion.d/bluegreen`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `bluegreen man > bluegreen.1`.
    Man,
    /// The last events of the audit log (deploys, rollbacks, retires, lock breaks).
    History {
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
        /// How many events.
        #[arg(short = 'n', long = "count", default_value_t = 20)]
        count: usize,
    },
}

#[derive(Subcommand)]
enum LockCommand {
    /// Who holds the lock, since when, why, and whether it is stale (older than jenkins.timeout).
    Show,
    /// Remove a stale lock (recorded in the audit log); a lock that is not stale needs --force.
    Release {
        /// Remove it even when it is not stale.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum RenderFormat {
    /// A standalone bash script.
    Script,
    /// A declarative Jenkinsfile.
    Jenkinsfile,
}

/// Errors the CLI reports, each with its exit code.
enum Failure {
    /// Bad input, or nothing to act on: exit 2.
    Input(String),
    /// A failed run or a stale file: exit 1.
    Run(String),
    /// The deploy lock is held: exit 3.
    Locked(String),
    /// The report was printed already: exit with this code, printing nothing more.
    Quiet(u8),
}

impl From<bluegreen_ssh::Error> for Failure {
    fn from(e: bluegreen_ssh::Error) -> Failure {
        use bluegreen_ssh::Error;
        match e {
            // Found before any host was changed: bad input, or nothing to do.
            Error::Env(_) | Error::Artifact { .. } | Error::Refused { .. } => {
                Failure::Input(e.to_string())
            }
            Error::LockHeld { .. } | Error::LockFresh { .. } => Failure::Locked(e.to_string()),
            _ => Failure::Run(e.to_string()),
        }
    }
}

impl From<bluegreen_core::Error> for Failure {
    fn from(e: bluegreen_core::Error) -> Failure {
        Failure::Input(e.to_string())
    }
}

impl From<bluegreen_render::Error> for Failure {
    fn from(e: bluegreen_render::Error) -> Failure {
        match e {
            // What the config asks for cannot be rendered: bad input, nothing was touched.
            bluegreen_render::Error::TooLong { .. }
            | bluegreen_render::Error::HostsDiffer { .. }
            | bluegreen_render::Error::HostTable(_) => Failure::Input(e.to_string()),
            _ => Failure::Run(e.to_string()),
        }
    }
}

fn load(path: &Path) -> Result<(Config, Plan), Failure> {
    let config = Config::load(path)?;
    let plan = Plan::new(&config);
    Ok((config, plan))
}

fn run(cli: Cli) -> Result<(), Failure> {
    let source = cli.config.display().to_string();
    match cli.command {
        Command::Check { remote: true } => exec::check_remote(&cli.config, false, false)?,
        Command::Setup { accept_new } => exec::check_remote(&cli.config, true, accept_new)?,
        Command::Check { remote: false } => {
            let (_, plan) = load(&cli.config)?;
            println!(
                "{source}: ok ({} app host(s), {} phases)",
                plan.servers.len(),
                plan.phases.len()
            );
            // What exec would read on this runner, `~/` resolved ($BG_KNOWN_HOSTS and $BG_SSH_KEY
            // override the config, as for exec).
            let lookup = |name: &str| std::env::var(name).ok();
            for (field, path) in bluegreen_ssh::runner_paths(&plan, &lookup) {
                let over = match field {
                    "ssh.known_hosts" => std::env::var("BG_KNOWN_HOSTS").ok(),
                    _ => std::env::var("BG_SSH_KEY").ok(),
                }
                .filter(|v| !v.trim().is_empty());
                match over {
                    Some(v) => println!(
                        "  {field}: {v} (from $BG_{})",
                        if field == "ssh.known_hosts" {
                            "KNOWN_HOSTS"
                        } else {
                            "SSH_KEY"
                        }
                    ),
                    None => println!("  {field}: {path}"),
                }
            }
        }
        Command::Plan { json } => {
            let (_, plan) = load(&cli.config)?;
            if json {
                print!("{}", plan.to_json());
            } else {
                print!("{plan}");
            }
        }
        Command::Render {
            format,
            output,
            check,
        } => {
            let (_, plan) = load(&cli.config)?;
            let format = match format {
                RenderFormat::Script => Format::Script,
                RenderFormat::Jenkinsfile => Format::Jenkinsfile,
            };
            let text = bluegreen_render::render(&plan, format, &source)?;
            if let Some(path) = check {
                bluegreen_render::check(&text, &path)?;
                println!("{}: up to date", path.display());
            } else if let Some(path) = output {
                std::fs::write(&path, &text)
                    .map_err(|e| Failure::Run(format!("cannot write `{}`: {e}", path.display())))?;
                if format == Format::Script {
                    make_executable(&path)?;
                }
            } else {
                print!("{text}");
            }
        }
        Command::Exec(args) => exec::run(&cli.config, Action::Deploy, &args)?,
        Command::Rollback(args) => exec::rollback(&cli.config, &args)?,
        Command::Releases { json } => exec::releases(&cli.config, json)?,
        Command::Takeover { port, pid, host } => {
            let what = match (port, pid, host) {
                (Some(port), _, _) => bluegreen_ssh::ops::Takeover::Port(port),
                (None, Some(pid), Some(host)) => bluegreen_ssh::ops::Takeover::Pid { pid, host },
                _ => unreachable!("clap requires --port, or --pid with --host"),
            };
            exec::takeover(&cli.config, &what)?
        }
        Command::Retire(args) => exec::retire(&cli.config, &args)?,
        Command::Status { json, fix } => exec::status(&cli.config, json, fix)?,
        Command::Lock {
            command: LockCommand::Show,
        } => exec::lock_show(&cli.config)?,
        Command::Lock {
            command: LockCommand::Release { force },
        } => exec::lock_release(&cli.config, force)?,
        Command::History { json, count } => exec::history(&cli.config, json, count)?,
        Command::Init {
            app,
            proxy,
            servers,
            user,
            force,
        } => {
            let servers = if servers.is_empty() {
                vec!["app1.example.internal".to_string()]
            } else {
                servers
            };
            let starter = init::Starter {
                app: &app,
                proxy: &proxy,
                servers: &servers,
                user: &user,
            };
            init::init(&cli.config, &starter, force)?;
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "bluegreen", &mut text);
            print_all(&text, "the completion script")?;
        }
        Command::Man => {
            use clap::CommandFactory;
            let mut text = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut text)
                .map_err(|e| Failure::Run(format!("cannot make the man page: {e}")))?;
            print_all(&text, "the man page")?;
        }
    }
    Ok(())
}

/// Writes `text` to standard output; a reader that stops early (`| head`) is not an error.
fn print_all(text: &[u8], what: &str) -> Result<(), Failure> {
    use std::io::Write as _;
    match std::io::stdout().write_all(text) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Failure::Run(format!("cannot write {what}: {e}")))
        }
        _ => Ok(()),
    }
}

#[cfg(unix)]
fn make_executable(path: &Path) -> Result<(), Failure> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| Failure::Run(format!("cannot make `{}` executable: {e}", path.display())))
}

#[cfg(not(unix))]
fn make_executable(_: &Path) -> Result<(), Failure> {
    Ok(())
}

mod exec;
mod init;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Input(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Run(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(1)
        }
        Err(Failure::Locked(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(3)
        }
        Err(Failure::Quiet(code)) => ExitCode::from(code),
    }
}
