//! The hosts of a plan: their connection settings and addresses, and connecting to a chosen set of
//! them at once (one thread and one libssh2 session per host), for a run and for every operation.

use crate::conn::{Connected, Settings, Target, Worker};
use crate::error::Error;
use crate::runtime::Env;
use crate::{ExecOptions, PASSPHRASE_ENV};
use bluegreen_core::Plan;
use std::path::PathBuf;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Duration;

/// The connection settings of a plan and where its hosts are, resolved from its environment.
pub(crate) struct Fleet {
    settings: Arc<Settings>,
    /// The proxy, then every app host in config order.
    targets: Vec<Target>,
}

/// A host whose connection has ended: connected, or why not.
pub(crate) struct Conn {
    /// The host's id (`proxy`, `app1` ...).
    pub id: String,
    /// Its SSH address.
    pub addr: String,
    /// Its connection's worker, or why it could not connect.
    pub worker: Result<Worker, Error>,
}

/// A host being connected to, on a thread of its own.
pub(crate) struct Pending {
    id: String,
    worker: Worker,
    rx: Receiver<Result<Connected, Error>>,
}

impl Fleet {
    /// The settings and hosts of `plan`, resolved from `env`: fails when a word of them cannot be
    /// resolved, before anything connects.
    pub fn new(plan: &Plan, env: &Env, opts: &ExecOptions) -> Result<Fleet, Error> {
        Ok(Fleet {
            settings: settings(plan, env, opts)?,
            targets: targets(plan, env)?,
        })
    }

    /// Starts one more connection to host `id`, of its own and apart from those of
    /// [`Fleet::connect`] (the lock's heartbeat, which a long call on the main connection must not
    /// delay).
    pub fn start_extra(&self, id: &str) -> Result<Pending, Error> {
        let target = self
            .targets
            .iter()
            .find(|t| t.id == id)
            .cloned()
            .ok_or_else(|| Error::Ssh {
                host: id.to_string(),
                step: "connect".into(),
                message: "no such host in the plan".into(),
            })?;
        Ok(self.start(target))
    }

    /// Connects to the hosts whose ids are in `ids` (all when `None`) at once, and returns them in
    /// the plan's order (the proxy first), each connected or with why not. `arrived` hears of each
    /// host, in that order, as soon as its connection has ended.
    pub fn connect(
        &self,
        ids: Option<&[&str]>,
        arrived: &mut dyn FnMut(&str, Result<&Connected, &Error>),
    ) -> Vec<Conn> {
        let pending: Vec<(String, Pending)> = self
            .targets
            .iter()
            .filter(|t| ids.is_none_or(|ids| ids.contains(&t.id.as_str())))
            .map(|t| (t.addr.clone(), self.start(t.clone())))
            .collect();
        pending
            .into_iter()
            .map(|(addr, p)| {
                let id = p.id.clone();
                let worker = match p.wait() {
                    Ok((w, c)) => {
                        arrived(&id, Ok(&c));
                        Ok(w)
                    }
                    Err(e) => {
                        arrived(&id, Err(&e));
                        Err(e)
                    }
                };
                Conn { id, addr, worker }
            })
            .collect()
    }

    fn start(&self, target: Target) -> Pending {
        let id = target.id.clone();
        let (worker, rx) = Worker::spawn(target, self.settings.clone());
        Pending { id, worker, rx }
    }
}

impl Pending {
    /// Waits until the connection is made (with what it said) or has failed.
    pub fn wait(self) -> Result<(Worker, Connected), Error> {
        match self.rx.recv() {
            Ok(Ok(c)) => Ok((self.worker, c)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Ssh {
                host: self.id,
                step: "connect".into(),
                message: "the connection thread ended".into(),
            }),
        }
    }
}

/// The connection settings of a plan.
fn settings(plan: &Plan, env: &Env, opts: &ExecOptions) -> Result<Arc<Settings>, Error> {
    Ok(Arc::new(Settings {
        known_hosts: PathBuf::from(env.word(&plan.ssh.known_hosts, "ssh.known_hosts")?),
        global_known_hosts: crate::conn::global_known_hosts(&*opts.env),
        policy: plan.ssh.host_key_policy,
        identity: plan
            .ssh
            .identity_file
            .as_ref()
            .map(|w| env.word(w, "ssh.identity_file"))
            .transpose()?
            .map(PathBuf::from),
        passphrase: (opts.env)(PASSPHRASE_ENV).filter(|p| !p.is_empty()),
        connect_timeout: Duration::from_secs(plan.ssh.connect_timeout_secs.max(1)),
        command_timeout: Duration::from_secs(plan.ssh.command_timeout_secs.max(1)),
    }))
}

/// Where to connect for the proxy and every app host, in that order.
fn targets(plan: &Plan, env: &Env) -> Result<Vec<Target>, Error> {
    let mut targets = Vec::new();
    for (h, field) in std::iter::once((&plan.proxy, "proxy".to_string())).chain(
        plan.servers
            .iter()
            .enumerate()
            .map(|(i, h)| (h, format!("servers[{i}]"))),
    ) {
        targets.push(Target {
            id: h.id.clone(),
            addr: env.word(&h.address, &format!("{field}.host"))?,
            port: h.port,
            user: env.word(&h.user, &format!("{field}.user"))?,
        });
    }
    Ok(targets)
}
