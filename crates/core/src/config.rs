//! The deploy config: YAML in, a validated [`Config`] out.
//!
//! Parsing happens in two passes. serde reads the YAML into `raw` structs that reject unknown keys and
//! wrong types (those errors carry `file:line:column`); [`validate`] then checks what the types cannot
//! say (ports that differ, absolute paths, known placeholders) and names the offending field's path.

use crate::error::Error;
use crate::word::{is_var_name, Word};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

/// The default config file name.
pub const DEFAULT_CONFIG: &str = "bluegreen.yaml";

/// The default start command template.
pub const DEFAULT_START: &str = "java -jar {jar} --server.port={port}";

/// Placeholders a start command may use.
pub const START_PLACEHOLDERS: [&str; 5] = ["jar", "port", "slot", "host", "dir"];

/// A validated deploy config.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The app's name: used for file names, the lock and messages.
    pub app: String,
    /// Local path or glob of the artifact; exactly one file must match at exec time.
    pub artifact: Word,
    /// How to reach hosts.
    pub ssh: Ssh,
    /// The nginx host.
    pub proxy: Proxy,
    /// The app hosts.
    pub servers: Vec<Server>,
    /// The two slots' ports.
    pub slots: Slots,
    /// Remote directory holding one directory per slot.
    pub deploy_dir: String,
    /// The start command, split into literal text and placeholders.
    pub start: Vec<StartPart>,
    /// The start command as written.
    pub start_template: String,
    /// How a new instance is judged healthy.
    pub health: Health,
    /// How long to wait after the switch before stopping the old slot.
    #[serde(with = "humantime_serde_compat")]
    pub drain: Duration,
    /// How the old instance is stopped.
    pub stop: Stop,
    /// How long the old slot keeps running after a switch (0: stop it at once).
    #[serde(with = "humantime_serde_compat")]
    pub retain: Duration,
    /// Slack notifications.
    pub slack: Option<Slack>,
    /// Jenkins options for the rendered pipeline.
    pub jenkins: Jenkins,
    /// The deploy lock.
    pub lock: Lock,
    /// At most this many app hosts upload or start at once (None: all of them).
    pub max_parallel: Option<usize>,
    /// The app's environment (`env:`): names and plain values, in name order.
    pub app_env: Vec<(String, String)>,
    /// Secrets the app gets in its environment (`secrets:`), read from the runner's environment.
    pub secrets: Vec<Secret>,
    /// Commands run at fixed points of a deploy and a rollback (`hooks:`).
    pub hooks: Hooks,
    /// What keeps the instances running between deploys (`supervisor:`).
    pub supervisor: Supervisor,
    /// How many releases each app host keeps for `rollback --to` (`keep_releases`).
    pub keep_releases: u64,
}

/// What runs a slot's instance (`supervisor:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Supervisor {
    /// bluegreen starts it detached and keeps its pid: nothing restarts it if it dies, and it does
    /// not come back after the host restarts.
    #[default]
    None,
    /// A systemd unit per slot (the template `bluegreen-<app>@.service`): restarted when it
    /// fails, the live slot started at boot.
    Systemd,
    /// The same, as units of the deploy user's own systemd (`systemctl --user`, the unit in
    /// `~/.config/systemd/user`), which lingering starts at boot: no sudo rights for systemctl.
    SystemdUser,
}

impl Supervisor {
    /// Its value in the config, and what the remote library's `start` is told.
    pub fn name(self) -> &'static str {
        match self {
            Supervisor::None => "none",
            Supervisor::Systemd => "systemd",
            Supervisor::SystemdUser => "systemd-user",
        }
    }
}

/// How many releases an app host keeps by default (as Capistrano's `keep_releases` and Kamal's
/// retained containers).
pub const KEEP_RELEASES: u64 = 5;

/// The default time a hook may take before it is stopped.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// The points of a run a hook can be attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HookKind {
    /// Once, after the lock is taken and the live slot read, before anything is uploaded or
    /// started (migrations). Deploys only.
    PreDeploy,
    /// Against every new instance, on its idle port, before the switch (a smoke test): a failure
    /// stops the new instances and leaves traffic where it was.
    PreSwitch,
    /// Once traffic is on the new slot, before the switch is recorded as final: a failure switches
    /// traffic back.
    PostSwitch,
    /// After the undo of a failure in any phase after the first (a notification).
    OnFailure,
}

impl HookKind {
    /// Every kind, in the order a run reaches them.
    pub const ALL: [HookKind; 4] = [
        HookKind::PreDeploy,
        HookKind::PreSwitch,
        HookKind::PostSwitch,
        HookKind::OnFailure,
    ];

    /// Its key under `hooks:`, and `$BG_HOOK`'s value.
    pub fn name(self) -> &'static str {
        match self {
            HookKind::PreDeploy => "pre_deploy",
            HookKind::PreSwitch => "pre_switch",
            HookKind::PostSwitch => "post_switch",
            HookKind::OnFailure => "on_failure",
        }
    }
}

/// Where a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HookOn {
    /// The machine running bluegreen (the Jenkins agent), in its working directory.
    Runner,
    /// The nginx host.
    Proxy,
    /// Every app host, at once.
    Servers,
    /// One app host: its index in `servers`.
    Server(usize),
}

/// One hook: a bash command, where it runs, and for how long at most.
#[derive(Debug, Clone, Serialize)]
pub struct Hook {
    /// Bash text, run by `bash -c` with the run's facts in `BG_...` variables.
    pub run: String,
    /// Where it runs.
    pub on: HookOn,
    /// After this long it is stopped (SIGTERM, then SIGKILL 5 s later) and counts as failed.
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
}

/// The hooks of a config, by kind.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Hooks {
    /// `hooks.pre_deploy`.
    pub pre_deploy: Option<Hook>,
    /// `hooks.pre_switch`.
    pub pre_switch: Option<Hook>,
    /// `hooks.post_switch`.
    pub post_switch: Option<Hook>,
    /// `hooks.on_failure`.
    pub on_failure: Option<Hook>,
}

impl Hooks {
    /// The hook of `kind`, if configured.
    pub fn get(&self, kind: HookKind) -> Option<&Hook> {
        match kind {
            HookKind::PreDeploy => self.pre_deploy.as_ref(),
            HookKind::PreSwitch => self.pre_switch.as_ref(),
            HookKind::PostSwitch => self.post_switch.as_ref(),
            HookKind::OnFailure => self.on_failure.as_ref(),
        }
    }

    fn slot(&mut self, kind: HookKind) -> &mut Option<Hook> {
        match kind {
            HookKind::PreDeploy => &mut self.pre_deploy,
            HookKind::PreSwitch => &mut self.pre_switch,
            HookKind::PostSwitch => &mut self.post_switch,
            HookKind::OnFailure => &mut self.on_failure,
        }
    }
}

/// A secret the app gets in its environment: the runner's environment variable of that name (bound
/// from a Jenkins string credential in the Jenkinsfile). Its value is sent to the app hosts only,
/// into a file of the slot's readable by the deploy user alone; never on a command line, never in
/// output, the plan, logs, Slack or the audit log.
#[derive(Debug, Clone, Serialize)]
pub struct Secret {
    /// The variable's name, in the runner's environment and in the app's.
    pub name: String,
    /// The Jenkins credential bound to it (default: the name): a string credential, or a file
    /// credential when [`Secret::file`].
    pub credential_id: String,
    /// A file secret (`file: true`): the runner's variable holds the path of a file (as Jenkins
    /// binds a file credential), whose content the app hosts get as a file of the slot's, mode
    /// 0600, and the app's variable holds that file's path.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub file: bool,
    /// `${NAME}`: the value (a file secret's: the local file's path), read at run time.
    #[serde(skip)]
    pub value: Word,
}

/// What is wrong with a file secret's variable that names no file the runner can read (as
/// [`Error::BadVariable`]'s message).
pub const SECRET_FILE_UNREADABLE: &str = "is not a file this runner can read (a file secret's variable holds the path of a file, as Jenkins binds a file credential)";

/// What is wrong with a file secret's file larger than [`SECRET_FILE_MAX`].
pub const SECRET_FILE_TOO_BIG: &str =
    "is larger than 1 MiB (a file secret holds a key, a certificate or a small document)";

/// The largest file a file secret may name: it holds a key, a certificate or a small JSON
/// document, and travels inside the SSH session's input.
pub const SECRET_FILE_MAX: u64 = 1 << 20;

impl Secret {
    /// What a host gets for it, name and value: the runner's value, or for a file secret the
    /// file's content, base64-encoded, under the name `@NAME`, which the remote library writes to
    /// a file and replaces by `NAME` holding that file's path.
    pub fn host_pair(&self) -> (String, Word) {
        if self.file {
            (
                format!("{}{}", crate::remote::calls::FILE_ENV_MARK, self.name),
                Word(vec![crate::word::Part::Var(crate::Var::File(
                    self.name.clone(),
                ))]),
            )
        } else {
            (self.name.clone(), self.value.clone())
        }
    }
}

/// The deploy lock on the proxy.
#[derive(Debug, Clone, Serialize)]
pub struct Lock {
    /// A lock not renewed for this long belongs to a runner that died: the next run takes it over.
    /// The running deploy renews it every quarter of this.
    #[serde(with = "humantime_serde_compat")]
    pub stale_after: Duration,
}

/// The default of `lock.stale_after`.
pub const LOCK_STALE_AFTER: Duration = Duration::from_secs(20);

/// SSH settings shared by all hosts.
#[derive(Debug, Clone, Serialize)]
pub struct Ssh {
    /// Remote user.
    pub user: Word,
    /// Remote port.
    pub port: u16,
    /// Jenkins credentials id of the SSH private key.
    pub credentials_id: String,
    /// Jenkins credentials id of a secret file holding known_hosts, if any.
    pub known_hosts_credential: Option<String>,
    /// Private key file for `exec` (None: use ssh-agent).
    pub identity_file: Option<Word>,
    /// known_hosts file.
    pub known_hosts: Word,
    /// What to do with host keys.
    pub host_key_policy: HostKeyPolicy,
    /// TCP connect timeout.
    #[serde(with = "humantime_serde_compat")]
    pub connect_timeout: Duration,
    /// Timeout of any one SSH operation.
    #[serde(with = "humantime_serde_compat")]
    pub command_timeout: Duration,
}

/// How host keys are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeyPolicy {
    /// Unknown and mismatched keys are refused (OpenSSH `StrictHostKeyChecking=yes`).
    Strict,
    /// Unknown keys are recorded, mismatched ones refused (`StrictHostKeyChecking=accept-new`).
    AcceptNew,
    /// No checking at all; warned about on every run (`StrictHostKeyChecking=no`).
    Off,
}

/// The nginx host and its managed upstream file.
#[derive(Debug, Clone, Serialize)]
pub struct Proxy {
    /// SSH address.
    pub host: Word,
    /// SSH user (defaults to `ssh.user`).
    pub user: Word,
    /// SSH port (defaults to `ssh.port`).
    pub port: u16,
    /// The file holding the upstream's `server` lines, included from nginx's config.
    pub upstream_file: String,
    /// The upstream block's name (for messages and status).
    pub upstream_name: String,
    /// Whether file writes, test and reload need `sudo -n`.
    pub sudo: bool,
    /// The config test command, as words.
    pub test_command: Vec<String>,
    /// The reload command, as words.
    pub reload_command: Vec<String>,
    /// Directory on the proxy for the lock, the state file and the audit log.
    pub state_dir: String,
    /// A URL fetched through the proxy after the switch to confirm it, if any.
    pub check_url: Option<Word>,
}

/// One app host.
#[derive(Debug, Clone, Serialize)]
pub struct Server {
    /// SSH address.
    pub host: Word,
    /// The address nginx and the runner use to reach the app (defaults to `host`).
    pub address: Word,
    /// SSH user.
    pub user: Word,
    /// SSH port.
    pub port: u16,
}

/// The two slots' ports.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Slots {
    /// Blue's port.
    pub blue: u16,
    /// Green's port.
    pub green: u16,
}

/// A piece of the start command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StartPart {
    /// Shell text written by the user.
    Text(String),
    /// `{jar}`, `{port}`, ...: replaced by a quoted value.
    Placeholder(String),
}

/// Health checking of a new instance.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// Path on the app, starting with `/`.
    pub path: String,
    /// Expected HTTP status.
    pub status: u16,
    /// Text the body must contain, if any.
    pub body: Option<String>,
    /// Time between probes.
    #[serde(with = "humantime_serde_compat")]
    pub interval: Duration,
    /// Timeout of one probe.
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
    /// Overall deadline for an instance to turn healthy.
    #[serde(with = "humantime_serde_compat")]
    pub deadline: Duration,
    /// Consecutive good probes needed.
    pub successes: u32,
    /// Where probes are sent from.
    pub from: ProbeFrom,
}

/// Where health probes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeFrom {
    /// The machine running bluegreen (or the Jenkins agent).
    Runner,
    /// The app host itself, with curl over SSH.
    Host,
}

/// How an instance is stopped.
#[derive(Debug, Clone, Serialize)]
pub struct Stop {
    /// Signal name without `SIG`.
    pub signal: String,
    /// How long to wait before SIGKILL.
    #[serde(with = "humantime_serde_compat")]
    pub grace: Duration,
}

/// Slack notifications.
#[derive(Debug, Clone, Serialize)]
pub struct Slack {
    /// Channel.
    pub channel: String,
    /// Jenkins credentials id of the Slack token (rendered Jenkinsfile).
    pub token_credential_id: Option<String>,
    /// Environment variable holding an incoming-webhook URL (exec and the bash script).
    pub webhook_env: String,
}

/// Options of the rendered Jenkinsfile.
#[derive(Debug, Clone, Serialize)]
pub struct Jenkins {
    /// The branch that deploys ([`Jenkins::ANY_BRANCH`]: every build deploys, whatever its
    /// branch, or without one).
    pub branch: String,
    /// A build command run before the deploy, if any.
    pub build: Option<String>,
    /// `tools { kind 'name' }` entries.
    pub tools: Vec<(String, String)>,
    /// Overall pipeline timeout.
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
    /// Promotion gate, in minutes: after the switch, wait this long for a person to keep the new
    /// version (the old slot is stopped) or reject it (traffic goes back). None: no gate.
    pub gate: Option<u64>,
    /// Whether the gate waits before the switch instead (`gate_at: before_switch`): the new
    /// instances run on their idle ports for people to look at; proceeding switches, rejecting
    /// stops them.
    pub gate_before_switch: bool,
}

impl Jenkins {
    /// `jenkins.branch: any`: every build deploys, whatever its branch, and a build that knows no
    /// branch (a pipeline job whose script is inline, without SCM) too.
    pub const ANY_BRANCH: &'static str = "any";

    /// Whether every build deploys (`jenkins.branch: any`).
    pub fn any_branch(&self) -> bool {
        self.branch == Jenkins::ANY_BRANCH
    }
}

mod humantime_serde_compat {
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

mod raw {
    //! The YAML as serde sees it: every key known, every type checked.
    use super::{HostKeyPolicy, ProbeFrom};
    use serde::{Deserialize, Deserializer};
    use std::collections::BTreeMap;
    use std::time::Duration;

    /// A duration written as `500ms`, `5s`, `2m`.
    #[derive(Debug, Clone, Copy)]
    pub struct Dur(pub Duration);

    impl<'de> Deserialize<'de> for Dur {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Dur, D::Error> {
            struct V;
            impl serde::de::Visitor<'_> for V {
                type Value = Dur;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a duration such as `500ms`, `5s` or `2m`")
                }
                fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Dur, E> {
                    humantime::parse_duration(s.trim()).map(Dur).map_err(|e| {
                        E::custom(format_args!(
                            "invalid duration `{s}`: {e}; write it like `500ms`, `5s` or `2m`"
                        ))
                    })
                }
                fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Dur, E> {
                    if n == 0 {
                        return Ok(Dur(Duration::ZERO));
                    }
                    Err(E::custom(format_args!(
                        "duration `{n}` has no unit; write `{n}s` or `{n}ms`"
                    )))
                }
                fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Dur, E> {
                    match u64::try_from(n) {
                        Ok(n) => self.visit_u64(n),
                        Err(_) => Err(E::custom(format_args!("duration `{n}` is negative"))),
                    }
                }
                fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Dur, E> {
                    Err(E::custom(format_args!(
                        "duration `{n}` has no unit; write it like `1500ms`"
                    )))
                }
            }
            d.deserialize_any(V)
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Config {
        pub app: String,
        pub artifact: String,
        #[serde(default)]
        pub ssh: Ssh,
        pub proxy: Proxy,
        pub servers: Vec<Server>,
        #[serde(default)]
        pub slots: Slots,
        pub deploy_dir: String,
        pub start: Option<String>,
        #[serde(default)]
        pub health: Health,
        pub drain: Option<Dur>,
        #[serde(default)]
        pub stop: Stop,
        pub retain: Option<Dur>,
        pub slack: Option<Slack>,
        #[serde(default)]
        pub jenkins: Jenkins,
        #[serde(default)]
        pub lock: Lock,
        pub max_parallel: Option<u64>,
        pub env: Option<BTreeMap<String, String>>,
        pub secrets: Option<Vec<Secret>>,
        #[serde(default)]
        pub hooks: Hooks,
        pub supervisor: Option<String>,
        pub keep_releases: Option<u64>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Hooks {
        pub pre_deploy: Option<Hook>,
        pub pre_switch: Option<Hook>,
        pub post_switch: Option<Hook>,
        pub on_failure: Option<Hook>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(untagged)]
    pub enum Hook {
        Command(String),
        Full(FullHook),
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct FullHook {
        pub run: String,
        pub on: Option<String>,
        pub timeout: Option<Dur>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(untagged)]
    pub enum Secret {
        Name(String),
        Full(FullSecret),
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct FullSecret {
        pub name: String,
        pub credential: Option<String>,
        pub file: Option<bool>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Lock {
        pub stale_after: Option<Dur>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Ssh {
        pub user: Option<String>,
        pub port: Option<u16>,
        pub credentials_id: Option<String>,
        pub known_hosts_credential: Option<String>,
        pub identity_file: Option<String>,
        pub known_hosts: Option<String>,
        pub host_key_policy: Option<HostKeyPolicy>,
        pub connect_timeout: Option<Dur>,
        pub command_timeout: Option<Dur>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Proxy {
        pub host: String,
        pub user: Option<String>,
        pub port: Option<u16>,
        pub upstream_file: String,
        pub upstream_name: Option<String>,
        #[serde(default)]
        pub sudo: bool,
        pub test_command: Option<String>,
        pub reload_command: Option<String>,
        pub state_dir: Option<String>,
        pub check_url: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Server {
        pub host: String,
        pub address: Option<String>,
        pub user: Option<String>,
        pub port: Option<u16>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Slots {
        pub blue: u16,
        pub green: u16,
    }

    impl Default for Slots {
        fn default() -> Slots {
            Slots {
                blue: 8080,
                green: 8081,
            }
        }
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Health {
        pub path: Option<String>,
        pub status: Option<u16>,
        pub body: Option<String>,
        pub interval: Option<Dur>,
        pub timeout: Option<Dur>,
        pub deadline: Option<Dur>,
        pub successes: Option<u32>,
        pub from: Option<ProbeFrom>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Stop {
        pub signal: Option<String>,
        pub grace: Option<Dur>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Slack {
        pub channel: String,
        pub token_credential_id: Option<String>,
        pub webhook_env: Option<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Jenkins {
        pub branch: Option<String>,
        pub build: Option<String>,
        #[serde(default)]
        pub tools: BTreeMap<String, String>,
        pub timeout: Option<Dur>,
        pub gate: Option<Dur>,
        pub gate_at: Option<String>,
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadConfig {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses and validates config text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, Error> {
        if text.trim().is_empty() {
            return Err(Error::Syntax {
                file: file.to_string(),
                line: 1,
                column: 1,
                message: "the config is empty".into(),
                hint: Some("start from examples/sokdak.yaml".into()),
            });
        }
        let raw: raw::Config = serde_yaml::from_str(text).map_err(|e| syntax_error(&e, file))?;
        validate(raw, file)
    }

    /// Every environment variable the config refers to, with the field that refers to it.
    pub fn env_refs(&self) -> Vec<(String, &Word)> {
        let mut out: Vec<(String, &Word)> = vec![
            ("artifact".into(), &self.artifact),
            ("ssh.user".into(), &self.ssh.user),
            ("ssh.known_hosts".into(), &self.ssh.known_hosts),
            ("proxy.host".into(), &self.proxy.host),
            ("proxy.user".into(), &self.proxy.user),
        ];
        if let Some(w) = &self.ssh.identity_file {
            out.push(("ssh.identity_file".into(), w));
        }
        if let Some(w) = &self.proxy.check_url {
            out.push(("proxy.check_url".into(), w));
        }
        for (i, s) in self.servers.iter().enumerate() {
            out.push((format!("servers[{i}].host"), &s.host));
            out.push((format!("servers[{i}].address"), &s.address));
            out.push((format!("servers[{i}].user"), &s.user));
        }
        for (i, sec) in self.secrets.iter().enumerate() {
            out.push((format!("secrets[{i}]"), &sec.value));
        }
        out.retain(|(_, w)| w.has_vars());
        out
    }

    /// Checks that every `${VAR}` the config uses is set, using `lookup` (normally the environment).
    ///
    /// Host and user values are checked for the same characters validation allows in literal ones.
    pub fn check_env(&self, lookup: &dyn Fn(&str) -> Option<String>) -> Result<(), Error> {
        for (field, word) in self.env_refs() {
            for name in word.env_vars() {
                check_variable(&field, name, lookup(name))?;
            }
        }
        Ok(())
    }
}

/// The variable `ssh.user` is when the config does not set it: the user name of the Jenkins
/// credential that holds the key (its `usernameVariable`), or [`SSH_USER_DEFAULT`] when it is not
/// set (outside Jenkins).
pub const SSH_USER_VAR: &str = "BG_SSH_USER";

/// `ssh.user` when neither the config nor [`SSH_USER_VAR`] gives one.
pub const SSH_USER_DEFAULT: &str = "deploy";

/// The value an environment variable bluegreen itself defines has when it is not set.
pub fn env_default(name: &str) -> Option<&'static str> {
    (name == SSH_USER_VAR).then_some(SSH_USER_DEFAULT)
}

/// Checks the value of environment variable `name`, used by config field `field`: it must be set,
/// and must pass the [`ValueRule`] of the field (hosts and users hold the characters validation
/// allows in literal ones). Returns the value.
pub fn check_variable(field: &str, name: &str, value: Option<String>) -> Result<String, Error> {
    // A variable with a default has it when unset or empty (as bash's `${NAME:-default}`).
    let value = match env_default(name) {
        Some(d) => Some(
            value
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| d.to_string()),
        ),
        None => value,
    };
    let Some(value) = value else {
        return Err(Error::MissingVariable {
            field: field.to_string(),
            name: name.to_string(),
        });
    };
    match ValueRule::for_field(field).problem(&value) {
        Some(message) => Err(Error::BadVariable {
            field: field.to_string(),
            name: name.to_string(),
            value,
            message: message.to_string(),
        }),
        None => Ok(value),
    }
}

/// What a value must look like: the one definition of the checks applied to host names, user
/// names and other `${VAR}` values. `exec` applies [`ValueRule::problem`]; the rendered script runs
/// the same test, generated from [`ValueRule::chars`] and the same messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueRule {
    /// A short name (`host`, `user`, `text`), used by the rendered script.
    pub name: &'static str,
    /// Which characters are allowed.
    pub chars: Chars,
    /// What is wrong with an empty value; `None`: an empty value passes.
    pub empty: Option<&'static str>,
    /// What is wrong with a value whose characters do not pass.
    pub message: &'static str,
}

/// The characters a [`ValueRule`] allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chars {
    /// ASCII letters, digits and `extra`; the first character must not be one of `not_first`.
    Only {
        /// Allowed besides letters and digits.
        extra: &'static str,
        /// Not allowed as the first character.
        not_first: &'static str,
    },
    /// Anything but these.
    Not(&'static str),
}

impl Chars {
    /// Whether `s`, a piece of a value (its beginning when `first`), passes.
    fn allow_part(self, s: &str, first: bool) -> bool {
        match self {
            Chars::Only { extra, not_first } => {
                !(first && s.starts_with(|c| not_first.contains(c)))
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
            }
            Chars::Not(bad) => !s.contains(|c| bad.contains(c)),
        }
    }
}

impl ValueRule {
    /// Host names and IP addresses: SSH addresses and the addresses nginx sends traffic to.
    pub const HOST: ValueRule = ValueRule {
        name: "host",
        chars: Chars::Only {
            extra: ".-:",
            not_first: "-",
        },
        empty: Some("is empty"),
        message: "is not a host name or IP address (letters, digits, `.`, `-`, `:`)",
    };

    /// User names.
    pub const USER: ValueRule = ValueRule {
        name: "user",
        chars: Chars::Only {
            extra: "._-",
            not_first: "-",
        },
        empty: Some("is not a valid user name (letters, digits, `.`, `_`, `-`)"),
        message: "is not a valid user name (letters, digits, `.`, `_`, `-`)",
    };

    /// Anything else a variable may hold (paths, URLs): one line.
    pub const TEXT: ValueRule = ValueRule {
        name: "text",
        chars: Chars::Not("\n\0"),
        empty: None,
        message: "contains a newline or NUL",
    };

    /// A secret's value: anything (a shell variable cannot hold NUL), so that no message ever
    /// has to show it.
    pub const SECRET: ValueRule = ValueRule {
        name: "secret",
        chars: Chars::Not("\0"),
        empty: None,
        message: "contains NUL",
    };

    /// Every rule.
    pub const ALL: [ValueRule; 4] = [
        ValueRule::HOST,
        ValueRule::USER,
        ValueRule::TEXT,
        ValueRule::SECRET,
    ];

    /// The rule for a value used in config field `field` (`servers[1].address`, `ssh.user`, ...).
    pub fn for_field(field: &str) -> ValueRule {
        if field.starts_with("secrets[") {
            return ValueRule::SECRET;
        }
        match field.rsplit('.').next().unwrap_or_default() {
            "host" | "address" => ValueRule::HOST,
            "user" => ValueRule::USER,
            _ => ValueRule::TEXT,
        }
    }

    /// What is wrong with `value`, if anything.
    pub fn problem(&self, value: &str) -> Option<&'static str> {
        if value.is_empty() {
            return self.empty;
        }
        (!self.chars.allow_part(value, true)).then_some(self.message)
    }
}

/// Turns a serde_yaml error into `file:line:column: message`, with a "did you mean" hint for unknown
/// keys and variants.
fn syntax_error(e: &serde_yaml::Error, file: &str) -> Error {
    let (line, column) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((1, 1));
    let full = e.to_string();
    // serde_yaml appends " at line L column C"; the location is reported up front instead.
    let message = match full.find(" at line ") {
        Some(i) => full[..i].to_string(),
        None => full,
    };
    let message = message.trim_start_matches(": ").to_string();
    let hint = did_you_mean(&message);
    Error::Syntax {
        file: file.to_string(),
        line,
        column,
        message,
        hint,
    }
}

/// For serde's "unknown field `x`, expected one of `a`, `b`" (and the same for variants), suggests the
/// closest expected name.
fn did_you_mean(message: &str) -> Option<String> {
    let rest = message
        .split("unknown field `")
        .nth(1)
        .or_else(|| message.split("unknown variant `").nth(1))?;
    let (got, rest) = rest.split_once('`')?;
    let expected: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let best = expected
        .iter()
        .map(|cand| (strsim::damerau_levenshtein(got, cand), *cand))
        .min()?;
    if best.0 <= 3.max(got.len() / 3) {
        Some(format!("did you mean `{}`?", best.1))
    } else {
        Some(format!("expected one of {}", expected.join(", ")))
    }
}

/// Collects validation errors; only the first is reported, so fields are checked in file order.
struct Check<'a> {
    file: &'a str,
}

impl Check<'_> {
    /// A name in the app's environment (`env:` or `secrets:`): a variable name, not one of
    /// bluegreen's own (`BG_...`, which the start command reads), not given twice.
    fn app_env_name(&self, field: &str, name: &str, taken: &[String]) -> Result<(), Error> {
        if !is_var_name(name) {
            return Err(self.fail(
                field,
                format!(
                    "`{name}` is not a variable name (letters, digits, `_`; not a digit first)"
                ),
            ));
        }
        if name.starts_with("BG_") {
            return Err(self.fail_hint(
                field,
                format!("`{name}`: names starting with BG_ are bluegreen's own"),
                "the start command reads $BG_JAR, $BG_PORT, $BG_SLOT, $BG_HOST and $BG_DIR",
            ));
        }
        if taken.iter().any(|t| t == name) {
            return Err(self.fail(
                field,
                format!("`{name}` is given twice (env and secrets share one namespace)"),
            ));
        }
        Ok(())
    }

    fn fail(&self, field: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Invalid {
            file: self.file.to_string(),
            field: field.into(),
            message: message.into(),
            hint: None,
        }
    }

    fn fail_hint(
        &self,
        field: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Error {
        Error::Invalid {
            file: self.file.to_string(),
            field: field.into(),
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    /// A string field that may hold `${VAR}` references.
    fn word(&self, field: &str, s: &str) -> Result<Word, Error> {
        Word::parse_env(s).map_err(|bad| {
            self.fail_hint(
                field,
                format!("`{}` is not a valid variable reference", bad.0),
                "write `${NAME}` with NAME made of letters, digits and `_`",
            )
        })
    }

    /// A string field that must be literal.
    fn literal(&self, field: &str, s: &str) -> Result<(), Error> {
        if s.contains("${") {
            return Err(self.fail_hint(
                field,
                format!("`{s}` refers to a variable, which this field does not allow"),
                "variables are allowed in hosts, users, artifact, identity_file, known_hosts and check_url",
            ));
        }
        Ok(())
    }

    fn absolute_path(&self, field: &str, s: &str) -> Result<(), Error> {
        self.literal(field, s)?;
        if !s.starts_with('/') {
            return Err(self.fail_hint(
                field,
                format!("`{s}` is not an absolute path"),
                "remote paths must start with `/`",
            ));
        }
        if s.contains(['\n', '\r', '\0']) {
            return Err(self.fail(field, "contains a line break or NUL"));
        }
        if s.split('/').any(|c| c == "..") {
            return Err(self.fail(field, format!("`{s}` contains `..`")));
        }
        Ok(())
    }

    fn port(&self, field: &str, p: u16) -> Result<u16, Error> {
        if p == 0 {
            return Err(self.fail(field, "port 0 is not a valid port (1-65535)"));
        }
        Ok(p)
    }

    fn host(&self, field: &str, s: &str) -> Result<Word, Error> {
        self.ruled(field, s, ValueRule::HOST)
    }

    fn user(&self, field: &str, s: &str) -> Result<Word, Error> {
        self.ruled(field, s, ValueRule::USER)
    }

    /// A field that may hold `${VAR}` references and must pass `rule`: a literal value as a whole,
    /// the text around variables by its characters (variables' values are checked when known).
    fn ruled(&self, field: &str, s: &str, rule: ValueRule) -> Result<Word, Error> {
        let w = self.word(field, s)?;
        if let Some(lit) = w.as_literal() {
            if let Some(problem) = rule.problem(&lit) {
                return Err(self.fail(field, format!("`{lit}` {problem}")));
            }
        } else {
            let ok = w.0.iter().enumerate().all(|(i, p)| match p {
                crate::word::Part::Lit(l) => rule.chars.allow_part(l, i == 0),
                crate::word::Part::Var(_) => true,
            });
            if !ok {
                return Err(self.fail(field, format!("`{s}` {}", rule.message)));
            }
        }
        Ok(w)
    }

    /// A name that ends up in file names, Groovy and shell (credential ids, the app, channels).
    fn name(&self, field: &str, s: &str, extra: &[char]) -> Result<(), Error> {
        let ok = !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c) || extra.contains(&c));
        if !ok || s.starts_with(['-', '.']) {
            let allowed = extra.iter().map(|c| format!(", `{c}`")).collect::<String>();
            return Err(self.fail(
                field,
                format!(
                    "`{s}` may contain only letters, digits, `.`, `_`, `-`{allowed}, and must not start with `-` or `.`"
                ),
            ));
        }
        Ok(())
    }

    fn command_words(&self, field: &str, s: &str) -> Result<Vec<String>, Error> {
        let words: Vec<String> = s.split_whitespace().map(str::to_string).collect();
        let ok = !words.is_empty()
            && words.iter().all(|w| {
                w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._/=:@+,-".contains(c))
            });
        if !ok {
            return Err(self.fail_hint(
                field,
                format!(
                    "`{s}` must be plain words (letters, digits, `._/=:@+,-`), no shell syntax"
                ),
                "it runs as a plain command (with `sudo -n` in front when proxy.sudo is true)",
            ));
        }
        Ok(words)
    }

    fn positive(&self, field: &str, d: Duration) -> Result<Duration, Error> {
        if d.is_zero() {
            return Err(self.fail(field, "must be greater than 0"));
        }
        Ok(d)
    }
}

/// Why a host name or address is not acceptable, if it is not ([`ValueRule::HOST`]).
pub fn host_problem(s: &str) -> Option<String> {
    ValueRule::HOST.problem(s).map(str::to_string)
}

/// Why a user name is not acceptable, if it is not ([`ValueRule::USER`]).
pub fn user_problem(s: &str) -> Option<String> {
    ValueRule::USER.problem(s).map(str::to_string)
}

const SIGNALS: [&str; 7] = ["TERM", "INT", "QUIT", "HUP", "USR1", "USR2", "KILL"];

fn validate(r: raw::Config, file: &str) -> Result<Config, Error> {
    let c = Check { file };

    c.name("app", &r.app, &[])?;
    let artifact = c.word("artifact", &r.artifact)?;
    if r.artifact.trim().is_empty() {
        return Err(c.fail("artifact", "is empty"));
    }

    // Unset: the Jenkins credential's user name, else `deploy` (see SSH_USER_VAR).
    let user = match r.ssh.user.as_deref() {
        Some(u) => c.user("ssh.user", u)?,
        None => Word::parse_env(&format!("${{{SSH_USER_VAR}}}")).expect("a variable name"),
    };
    let ssh_port = c.port("ssh.port", r.ssh.port.unwrap_or(22))?;
    let credentials_id = r
        .ssh
        .credentials_id
        .unwrap_or_else(|| format!("{}-ssh", r.app));
    c.name("ssh.credentials_id", &credentials_id, &[])?;
    if let Some(k) = &r.ssh.known_hosts_credential {
        c.name("ssh.known_hosts_credential", k, &[])?;
    }
    let identity_file = r
        .ssh
        .identity_file
        .as_deref()
        .map(|s| c.word("ssh.identity_file", s))
        .transpose()?;
    let known_hosts = c.word(
        "ssh.known_hosts",
        r.ssh.known_hosts.as_deref().unwrap_or("~/.ssh/known_hosts"),
    )?;
    let ssh = Ssh {
        user: user.clone(),
        port: ssh_port,
        credentials_id,
        known_hosts_credential: r.ssh.known_hosts_credential,
        identity_file,
        known_hosts,
        host_key_policy: r.ssh.host_key_policy.unwrap_or(HostKeyPolicy::Strict),
        connect_timeout: c.positive(
            "ssh.connect_timeout",
            r.ssh
                .connect_timeout
                .map_or(Duration::from_secs(10), |d| d.0),
        )?,
        command_timeout: c.positive(
            "ssh.command_timeout",
            r.ssh
                .command_timeout
                .map_or(Duration::from_secs(60), |d| d.0),
        )?,
    };

    let p = r.proxy;
    let proxy_host = c.host("proxy.host", &p.host)?;
    let proxy_user = match &p.user {
        Some(u) => c.user("proxy.user", u)?,
        None => user.clone(),
    };
    let proxy_port = c.port("proxy.port", p.port.unwrap_or(ssh_port))?;
    c.absolute_path("proxy.upstream_file", &p.upstream_file)?;
    let upstream_name = p.upstream_name.unwrap_or_else(|| r.app.clone());
    c.name("proxy.upstream_name", &upstream_name, &[])?;
    let test_command = c.command_words(
        "proxy.test_command",
        p.test_command.as_deref().unwrap_or("nginx -t"),
    )?;
    let reload_command = c.command_words(
        "proxy.reload_command",
        p.reload_command.as_deref().unwrap_or("nginx -s reload"),
    )?;
    let state_dir = p
        .state_dir
        .unwrap_or_else(|| format!("/var/lib/bluegreen/{}", r.app));
    c.absolute_path("proxy.state_dir", &state_dir)?;
    let check_url = match &p.check_url {
        Some(u) => {
            let w = c.word("proxy.check_url", u)?;
            let lit = w.to_string();
            if !(lit.starts_with("http://") || lit.starts_with("https://"))
                || lit.contains(char::is_whitespace)
            {
                return Err(c.fail_hint(
                    "proxy.check_url",
                    format!("`{u}` is not an http(s) URL"),
                    "for example `http://${NGINX_PRIVATE_IP}/actuator/health`",
                ));
            }
            Some(w)
        }
        None => None,
    };
    let proxy = Proxy {
        host: proxy_host,
        user: proxy_user,
        port: proxy_port,
        upstream_file: p.upstream_file,
        upstream_name,
        sudo: p.sudo,
        test_command,
        reload_command,
        state_dir,
        check_url,
    };

    if r.servers.is_empty() {
        return Err(c.fail_hint(
            "servers",
            "no app servers are listed",
            "add at least one `- host: ...` entry",
        ));
    }
    let mut servers: Vec<Server> = Vec::with_capacity(r.servers.len());
    for (i, s) in r.servers.iter().enumerate() {
        let host = c.host(&format!("servers[{i}].host"), &s.host)?;
        let address = match &s.address {
            Some(a) => c.host(&format!("servers[{i}].address"), a)?,
            None => host.clone(),
        };
        let server = Server {
            user: match &s.user {
                Some(u) => c.user(&format!("servers[{i}].user"), u)?,
                None => user.clone(),
            },
            port: c.port(&format!("servers[{i}].port"), s.port.unwrap_or(ssh_port))?,
            host,
            address,
        };
        if let Some(j) = servers
            .iter()
            .position(|o| o.host == server.host && o.port == server.port)
        {
            return Err(c.fail(
                format!("servers[{i}].host"),
                format!("`{}` is listed twice (also servers[{j}])", s.host),
            ));
        }
        servers.push(server);
    }

    let slots = Slots {
        blue: c.port("slots.blue", r.slots.blue)?,
        green: c.port("slots.green", r.slots.green)?,
    };
    if slots.blue == slots.green {
        return Err(c.fail_hint(
            "slots.green",
            format!("uses port {} like slots.blue", slots.green),
            "the two slots run side by side on each host, so they need different ports",
        ));
    }
    for (i, s) in servers.iter().enumerate() {
        if s.port == slots.blue || s.port == slots.green {
            return Err(c.fail(
                format!("servers[{i}].port"),
                format!("SSH port {} is also a slot port", s.port),
            ));
        }
    }

    c.absolute_path("deploy_dir", &r.deploy_dir)?;
    let deploy_dir = normal_path(&r.deploy_dir);
    if deploy_dir.is_empty() {
        return Err(c.fail("deploy_dir", "must not be `/`"));
    }

    let start_template = r.start.unwrap_or_else(|| DEFAULT_START.to_string());
    let start = parse_start(&c, &start_template)?;

    let h = r.health;
    let path = h.path.unwrap_or_else(|| "/actuator/health".into());
    c.literal("health.path", &path)?;
    if !path.starts_with('/') {
        return Err(c.fail_hint(
            "health.path",
            format!("`{path}` does not start with `/`"),
            format!("write `/{path}`"),
        ));
    }
    if !path
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._~-?=&%+".contains(c))
    {
        return Err(c.fail(
            "health.path",
            format!("`{path}` contains characters that need URL encoding"),
        ));
    }
    let status = h.status.unwrap_or(200);
    if !(100..=599).contains(&status) {
        return Err(c.fail(
            "health.status",
            format!("{status} is not an HTTP status (100-599)"),
        ));
    }
    if let Some(b) = &h.body {
        if b.is_empty() || b.contains(['\n', '\r', '\0']) {
            return Err(c.fail(
                "health.body",
                "must be non-empty text on one line (it is matched as a fixed string)",
            ));
        }
    }
    let interval = c.positive(
        "health.interval",
        h.interval.map_or(Duration::from_millis(500), |d| d.0),
    )?;
    let timeout = c.positive(
        "health.timeout",
        h.timeout.map_or(Duration::from_secs(2), |d| d.0),
    )?;
    let deadline = c.positive(
        "health.deadline",
        h.deadline.map_or(Duration::from_secs(120), |d| d.0),
    )?;
    if timeout > deadline {
        return Err(c.fail(
            "health.timeout",
            format!(
                "{} is longer than health.deadline ({})",
                humantime::format_duration(timeout),
                humantime::format_duration(deadline)
            ),
        ));
    }
    let successes = h.successes.unwrap_or(1);
    if successes == 0 {
        return Err(c.fail("health.successes", "must be at least 1"));
    }
    let health = Health {
        path,
        status,
        body: h.body,
        interval,
        timeout,
        deadline,
        successes,
        from: h.from.unwrap_or(ProbeFrom::Runner),
    };

    let signal = r
        .stop
        .signal
        .unwrap_or_else(|| "TERM".into())
        .trim_start_matches("SIG")
        .to_string();
    if !SIGNALS.contains(&signal.as_str()) {
        return Err(c.fail_hint(
            "stop.signal",
            format!("`{signal}` is not a supported signal"),
            format!("use one of {}", SIGNALS.join(", ")),
        ));
    }
    let stop = Stop {
        signal,
        grace: c.positive(
            "stop.grace",
            r.stop.grace.map_or(Duration::from_secs(30), |d| d.0),
        )?,
    };

    let slack = match r.slack {
        Some(s) => {
            c.name(
                "slack.channel",
                s.channel.trim_start_matches(['#', '@']),
                &[],
            )?;
            if let Some(t) = &s.token_credential_id {
                c.name("slack.token_credential_id", t, &[])?;
            }
            let webhook_env = s
                .webhook_env
                .unwrap_or_else(|| "SLACK_WEBHOOK_URL".to_string());
            if !is_var_name(&webhook_env) {
                return Err(c.fail(
                    "slack.webhook_env",
                    format!("`{webhook_env}` is not an environment variable name"),
                ));
            }
            Some(Slack {
                channel: s.channel,
                token_credential_id: s.token_credential_id,
                webhook_env,
            })
        }
        None => None,
    };

    let drain = r.drain.as_ref().map_or(Duration::ZERO, |d| d.0);
    let mut names: Vec<String> = Vec::new();
    let mut app_env = Vec::new();
    for (name, value) in r.env.unwrap_or_default() {
        let field = format!("env.{name}");
        c.app_env_name(&field, &name, &names)?;
        if value.contains('\0') {
            return Err(c.fail(field, "contains a NUL byte"));
        }
        names.push(name.clone());
        app_env.push((name, value));
    }
    let mut secrets = Vec::new();
    for (i, raw_secret) in r.secrets.unwrap_or_default().into_iter().enumerate() {
        let (name, credential, file) = match raw_secret {
            raw::Secret::Name(n) => (n, None, false),
            raw::Secret::Full(f) => (f.name, f.credential, f.file.unwrap_or(false)),
        };
        let field = format!("secrets[{i}]");
        c.app_env_name(&field, &name, &names)?;
        let credential_id = credential.unwrap_or_else(|| name.clone());
        c.name(&format!("{field}.credential"), &credential_id, &[])?;
        names.push(name.clone());
        secrets.push(Secret {
            value: Word::parse_env(&format!("${{{name}}}"))
                .map_err(|_| c.fail(field.clone(), "is not a variable name"))?,
            name,
            credential_id,
            file,
        });
    }
    let max_parallel =
        match r.max_parallel {
            Some(0) => return Err(c.fail(
                "max_parallel",
                "must be at least 1 (leave it out to upload to and start every app host at once)",
            )),
            Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            None => None,
        };
    let supervisor = match r.supervisor.as_deref() {
        None | Some("none") => Supervisor::None,
        Some("systemd") => Supervisor::Systemd,
        Some("systemd-user") => Supervisor::SystemdUser,
        Some(other) => {
            return Err(c.fail_hint(
                "supervisor",
                format!("`{other}` is not a supervisor bluegreen knows"),
                "use `systemd` (a unit per slot: restarted when it fails, the live slot started at boot), `systemd-user` (the same as units of the deploy user's own systemd, with lingering) or `none` (the default: started detached, nothing restarts it)",
            ))
        }
    };
    let j = r.jenkins;
    let branch = j.branch.unwrap_or_else(|| "main".into());
    c.name("jenkins.branch", &branch, &['/'])?;
    if let Some(b) = &j.build {
        if b.trim().is_empty() || b.contains('\0') {
            return Err(c.fail("jenkins.build", "is empty"));
        }
    }
    let mut tools = Vec::new();
    for (kind, name) in j.tools {
        c.name(&format!("jenkins.tools.{kind}"), &kind, &[])?;
        c.name(&format!("jenkins.tools.{kind}"), &name, &[])?;
        tools.push((kind, name));
    }
    let gate_before_switch = match j.gate_at.as_deref() {
        None | Some("after_switch") => false,
        Some("before_switch") if j.gate.is_none() => {
            return Err(c.fail_hint(
                "jenkins.gate_at",
                "is set, but there is no gate",
                "add `jenkins.gate: 15m` (how long the gate waits for a person)",
            ))
        }
        Some("before_switch") => true,
        Some(other) => {
            return Err(c.fail_hint(
                "jenkins.gate_at",
                format!("`{other}` is not a place for the gate"),
                "use `before_switch` (people look at the new instances on their idle ports, then proceed to switch) or `after_switch` (the default: the new version serves traffic while people decide)",
            ))
        }
    };
    let jenkins = Jenkins {
        branch,
        build: j.build,
        tools,
        timeout: c.positive(
            "jenkins.timeout",
            j.timeout.map_or(Duration::from_secs(30 * 60), |d| d.0),
        )?,
        gate: match j.gate {
            Some(d) if d.0.as_secs() < 60 => {
                return Err(c.fail_hint(
                    "jenkins.gate",
                    "must be at least 1m",
                    "it is how long a person has to keep or reject the new version",
                ))
            }
            Some(d) => Some(d.0.as_secs().div_ceil(60)),
            None => None,
        },
        gate_before_switch,
    };
    if jenkins.timeout.as_secs() < 60 {
        return Err(c.fail("jenkins.timeout", "must be at least 1m"));
    }
    let lock = Lock {
        stale_after: r.lock.stale_after.map_or(LOCK_STALE_AFTER, |d| d.0),
    };
    if lock.stale_after < Duration::from_secs(2) {
        return Err(c.fail_hint(
            "lock.stale_after",
            "must be at least 2s",
            "the running deploy renews the lock every quarter of it",
        ));
    }
    let hooks = validate_hooks(&c, r.hooks, &r.servers)?;
    // What one deploy may spend waiting on purpose must fit in the pipeline's timeout, or Jenkins
    // cuts it off in the middle: the health deadline, the drain, the old slot's grace, the
    // switch's wait for nginx's old workers (as long as the grace), and the hooks' timeouts.
    let hook_time: Duration = HookKind::ALL
        .iter()
        .filter_map(|k| hooks.get(*k))
        .map(|h| h.timeout)
        .sum();
    let waits = health.deadline + drain + stop.grace * 2 + hook_time;
    if waits >= jenkins.timeout {
        let hooks_part = if hook_time.is_zero() {
            String::new()
        } else {
            format!(
                " + the hooks' timeouts {}",
                humantime::format_duration(hook_time)
            )
        };
        return Err(c.fail_hint(
            "jenkins.timeout",
            format!(
                "{} does not leave room for a deploy's own waits: health.deadline {} + drain {} + stop.grace {} + the switch's settle {}{hooks_part} = {}",
                humantime::format_duration(jenkins.timeout),
                humantime::format_duration(health.deadline),
                humantime::format_duration(drain),
                humantime::format_duration(stop.grace),
                humantime::format_duration(stop.grace),
                humantime::format_duration(waits),
            ),
            "raise jenkins.timeout, or lower health.deadline, stop.grace or a hook's timeout",
        ));
    }
    if let Some(gate) = jenkins.gate {
        if gate * 60 >= jenkins.timeout.as_secs() {
            return Err(c.fail_hint(
                "jenkins.gate",
                format!(
                    "{gate}m is not shorter than jenkins.timeout ({})",
                    humantime::format_duration(jenkins.timeout)
                ),
                "the pipeline's timeout must leave time for the deploy around the gate",
            ));
        }
    }

    Ok(Config {
        app: r.app,
        artifact,
        ssh,
        proxy,
        servers,
        slots,
        deploy_dir,
        start,
        start_template,
        health,
        drain,
        stop,
        retain: r.retain.map_or(Duration::ZERO, |d| d.0),
        slack,
        jenkins,
        lock,
        max_parallel,
        app_env,
        secrets,
        hooks,
        supervisor,
        keep_releases: r.keep_releases.unwrap_or(KEEP_RELEASES),
    })
}

/// The `hooks:` section: each hook's command, where it runs and its timeout.
fn validate_hooks(c: &Check<'_>, r: raw::Hooks, servers: &[raw::Server]) -> Result<Hooks, Error> {
    let mut hooks = Hooks::default();
    let given = [
        (HookKind::PreDeploy, r.pre_deploy),
        (HookKind::PreSwitch, r.pre_switch),
        (HookKind::PostSwitch, r.post_switch),
        (HookKind::OnFailure, r.on_failure),
    ];
    for (kind, raw_hook) in given {
        let Some(raw_hook) = raw_hook else { continue };
        let field = format!("hooks.{}", kind.name());
        let (run, on, timeout) = match raw_hook {
            raw::Hook::Command(run) => (run, None, None),
            raw::Hook::Full(f) => (f.run, f.on, f.timeout),
        };
        if run.trim().is_empty() {
            return Err(c.fail(format!("{field}.run"), "is empty"));
        }
        if run.contains('\0') {
            return Err(c.fail(format!("{field}.run"), "contains a NUL byte"));
        }
        let on = match on.as_deref() {
            None | Some("runner") => HookOn::Runner,
            Some("proxy") => HookOn::Proxy,
            Some("servers") => HookOn::Servers,
            Some(host) => match servers.iter().position(|s| s.host == host) {
                Some(i) => HookOn::Server(i),
                None => {
                    return Err(c.fail_hint(
                        format!("{field}.on"),
                        format!("`{host}` is neither `runner`, `proxy`, `servers` nor the host of an app server"),
                        "name one of servers[].host as written there",
                    ))
                }
            },
        };
        match (kind, on) {
            (HookKind::PreSwitch, HookOn::Proxy | HookOn::Server(_)) => return Err(c.fail_hint(
                format!("{field}.on"),
                "pre_switch runs against every new instance: on the runner, or on every app host",
                "use `on: runner` (the default) or `on: servers`",
            )),
            (HookKind::PreDeploy | HookKind::OnFailure, HookOn::Servers) => {
                return Err(c.fail_hint(
                    format!("{field}.on"),
                    format!("{} runs once, not on every app host", kind.name()),
                    "use `runner` (the default), `proxy`, or one app server's host",
                ))
            }
            _ => {}
        }
        let timeout = c.positive(
            &format!("{field}.timeout"),
            timeout.map_or(HOOK_TIMEOUT, |d| d.0),
        )?;
        *hooks.slot(kind) = Some(Hook { run, on, timeout });
    }
    Ok(hooks)
}

/// An absolute path written the one way: `//` and `/./` collapsed, no trailing `/` (the root is
/// empty). Symlinks are the host's business: slot instances are known by pid and start time, not by
/// the directory they run in.
pub fn normal_path(p: &str) -> String {
    p.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .fold(String::new(), |mut out, c| {
            out.push('/');
            out.push_str(c);
            out
        })
}

/// Splits the start command into text and `{name}` placeholders; `{{` and `}}` stand for a literal
/// `{` and `}` (as in Rust and Python format strings), so shell braces can still be written.
fn parse_start(c: &Check<'_>, s: &str) -> Result<Vec<StartPart>, Error> {
    if s.contains(['\n', '\r', '\0']) {
        return Err(c.fail("start", "must be one line"));
    }
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(['{', '}']) {
        text.push_str(&rest[..i]);
        let brace = &rest[i..i + 1];
        let after = &rest[i + 1..];
        if after.starts_with(brace) {
            text.push_str(brace);
            rest = &after[1..];
            continue;
        }
        if brace == "}" {
            return Err(c.fail_hint(
                "start",
                format!("unmatched `}}` in `{s}`"),
                "write `}}` for a literal `}` (and `{{` for a literal `{`)",
            ));
        }
        let Some(end) = after.find('}') else {
            return Err(c.fail_hint(
                "start",
                format!("unclosed `{{` in `{s}`"),
                "write `{{` for a literal `{` (and `}}` for a literal `}`)",
            ));
        };
        let name = &after[..end];
        if !START_PLACEHOLDERS.contains(&name) {
            let best = START_PLACEHOLDERS
                .iter()
                .min_by_key(|p| strsim::damerau_levenshtein(&name.to_ascii_lowercase(), p))
                .copied()
                .unwrap_or("port");
            return Err(c.fail_hint(
                "start",
                format!("unknown placeholder `{{{name}}}`"),
                format!(
                    "did you mean `{{{best}}}`? placeholders: {}; `{{{{` and `}}}}` write a literal `{{` and `}}`",
                    START_PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(" ")
                ),
            ));
        }
        if !text.is_empty() {
            parts.push(StartPart::Text(std::mem::take(&mut text)));
        }
        parts.push(StartPart::Placeholder(name.to_string()));
        rest = &after[end + 1..];
    }
    text.push_str(rest);
    if !text.is_empty() {
        parts.push(StartPart::Text(text));
    }
    if !parts.contains(&StartPart::Placeholder("port".into())) {
        return Err(c.fail_hint(
            "start",
            "does not use `{port}`",
            "the two slots differ only by port: pass it, e.g. `--server.port={port}`",
        ));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {

    #[test]
    fn an_unset_ssh_user_is_the_credentials_else_deploy() {
        assert_eq!(
            check_variable("ssh.user", SSH_USER_VAR, None).unwrap(),
            "deploy"
        );
        assert_eq!(
            check_variable("ssh.user", SSH_USER_VAR, Some(String::new())).unwrap(),
            "deploy"
        );
        assert_eq!(
            check_variable("ssh.user", SSH_USER_VAR, Some("ci-deployer".into())).unwrap(),
            "ci-deployer"
        );
        assert!(check_variable("ssh.user", SSH_USER_VAR, Some("a b".into())).is_err());
        // Other variables have no default.
        assert!(check_variable("ssh.user", "DEPLOY_USER", None).is_err());
    }
    #[test]
    fn paths_are_written_one_way() {
        assert_eq!(normal_path("/srv//shop/./app/"), "/srv/shop/app");
        assert_eq!(normal_path("/srv/shop"), "/srv/shop");
        assert_eq!(normal_path("///"), "");
        let yaml = "app: shop\nartifact: x.jar\nproxy: { host: p, upstream_file: /u }\n\
                    servers: [ { host: a } ]\ndeploy_dir: /srv//shop/./\n";
        assert_eq!(
            Config::parse(yaml, "b.yaml").unwrap().deploy_dir,
            "/srv/shop"
        );
    }

    use super::*;

    const BASE: &str = "app: shop
artifact: x.jar
proxy: { host: 10.0.0.5, upstream_file: /etc/n.conf }
servers: [ { host: 10.0.0.11 } ]
deploy_dir: /srv/shop
";

    fn start(s: &str) -> Result<Vec<StartPart>, String> {
        let yaml = format!("{BASE}start: '{}'\n", s.replace('\'', "''"));
        Config::parse(&yaml, "c.yaml")
            .map(|c| c.start)
            .map_err(|e| e.to_string())
    }

    fn text(s: &str) -> StartPart {
        StartPart::Text(s.into())
    }

    fn ph(s: &str) -> StartPart {
        StartPart::Placeholder(s.into())
    }

    #[test]
    fn doubled_braces_are_literal_braces() {
        assert_eq!(
            start("sh -c 'f() {{ exec java -jar \"$1\" --p={port}; }}; f {jar}'").unwrap(),
            [
                text("sh -c 'f() { exec java -jar \"$1\" --p="),
                ph("port"),
                text("; }; f "),
                ph("jar"),
                text("'"),
            ]
        );
        assert_eq!(
            start("java -Dx=${{HOME}} -jar {jar} --server.port={port}{{}}").unwrap(),
            [
                text("java -Dx=${HOME} -jar "),
                ph("jar"),
                text(" --server.port="),
                ph("port"),
                text("{}"),
            ]
        );
        // `{{port}}` is the literal text `{port}`, not a placeholder.
        assert_eq!(
            start("run {{port}} {port}").unwrap(),
            [text("run {port} "), ph("port")]
        );
    }

    #[test]
    fn single_braces_that_are_no_placeholder_are_errors() {
        let e = start("java -Dhome=${HOME} --server.port={port}").unwrap_err();
        assert!(e.contains("unknown placeholder `{HOME}`"), "{e}");
        assert!(
            e.contains("`{{` and `}}` write a literal `{` and `}`"),
            "{e}"
        );
        let e = start("java {port} }").unwrap_err();
        assert!(e.contains("unmatched `}` in `java {port} }`"), "{e}");
        let e = start("java {port} {jar").unwrap_err();
        assert!(e.contains("unclosed `{` in `java {port} {jar`"), "{e}");
        let e = start("java {} {port}").unwrap_err();
        assert!(e.contains("unknown placeholder `{}`"), "{e}");
    }

    #[test]
    fn value_rules() {
        let host = ValueRule::HOST;
        assert_eq!(host.problem("10.0.0.1"), None);
        assert_eq!(host.problem("fe80::1"), None);
        assert_eq!(host.problem("app-1.internal"), None);
        assert_eq!(host.problem(""), Some("is empty"));
        for bad in [
            "10.0.0.1; rm",
            "a b",
            "-oProxyCommand=x",
            "h\n",
            "hé",
            "[::1]",
        ] {
            assert_eq!(host.problem(bad), Some(host.message), "{bad:?}");
        }
        let user = ValueRule::USER;
        assert_eq!(user.problem("deploy_user.1"), None);
        for bad in ["", "de'ploy", "-l", "a:b", "a b"] {
            assert_eq!(user.problem(bad), Some(user.message), "{bad:?}");
        }
        let text = ValueRule::TEXT;
        assert_eq!(text.problem(""), None);
        assert_eq!(text.problem("/a b/$x'\"`"), None);
        assert_eq!(text.problem("a\nb"), Some(text.message));
        assert_eq!(text.problem("a\0b"), Some(text.message));
        assert_eq!(ValueRule::for_field("servers[3].address"), host);
        assert_eq!(ValueRule::for_field("proxy.host"), host);
        assert_eq!(ValueRule::for_field("ssh.user"), user);
        assert_eq!(ValueRule::for_field("proxy.check_url"), text);
        assert_eq!(ValueRule::for_field("artifact"), text);
    }

    #[test]
    fn text_around_variables_follows_the_rule() {
        let ok = BASE.replace("host: 10.0.0.11", "host: 'app-${N}.internal'");
        assert!(Config::parse(&ok, "c.yaml").is_ok());
        let yaml = BASE.replace("host: 10.0.0.11", "host: '-${N}'");
        let e = Config::parse(&yaml, "c.yaml").unwrap_err().to_string();
        assert_eq!(
            e,
            "c.yaml: servers[0].host: `-${N}` is not a host name or IP address (letters, digits, `.`, `-`, `:`)"
        );
        let yaml = format!("{BASE}ssh: {{ user: \"${{U}};\" }}\n");
        let e = Config::parse(&yaml, "c.yaml").unwrap_err().to_string();
        assert_eq!(
            e,
            "c.yaml: ssh.user: `${U};` is not a valid user name (letters, digits, `.`, `_`, `-`)"
        );
    }
}
