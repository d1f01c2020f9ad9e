//! Integration tests of the `bluegreen` binary, one test binary for the whole suite.
//!
//! - `app_env`: the app's `env:` and `secrets:` reach it and a secret nothing else (testbed).
//! - `config_errors`: bad configs, each with its exact message and exit code 2.
//! - `crash`: the runner (exec, the script) SIGKILLed at every step of a deploy and a rollback; the
//!   next run converges (testbed).
//! - `render`: rendered examples are current, pass `bash -n` and shellcheck, compile under Groovy 2.4
//!   and evaluate in the declarative-pipeline harness (`tests/groovy/harness.groovy`).
//! - `e2e`: deploys on the testbed (`testbed`) under load, with each backend.
//! - `script_calls`: the rendered script sends the same remote calls as `exec`.
//! - `operations`: rollback, retire, status and drift, lock commands, history, Slack (testbed).
//! - `hooks`: pre_deploy, pre_switch, post_switch and on_failure hooks, by exec and the script (testbed).
//! - `host_keys`: host keys as OpenSSH checks them, against a real sshd with several key types (testbed).
//! - `real_hosts`: hosts as production has them: upstream files written by people, apps that change
//!   directory, symlinked deploy dirs, recycled pids, instances that die booting, a cut link mid-call,
//!   `~/` paths and defaults, 32 app hosts (testbed).
//! - `releases`: `keep_releases`, `bluegreen releases`, `rollback --to` by sha prefix and by time (testbed).
//! - `setup`: `check --remote` and `setup` on bare hosts, a foreign process on a slot port, nginx
//!   without the include (testbed).
//! - `supervisor`: `supervisor: systemd` on a host that runs systemd as its init: units per slot,
//!   enabled and disabled, a killed instance restarted, the live slot back after a reboot (testbed).
//! - `newcomer`: `init`, shell completions, the man page.
//! - `hostile`: values with quotes, `$()`, backticks, newlines ... are rejected or rendered inert.
//!
//! Tests that need an outside tool (shellcheck, groovy, bash) fail, never skip, when it is missing:
//! `.ci/run` installs them.

// Helpers outside #[test] functions panic on purpose: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod app_env;
mod config_errors;
mod crash;
mod docs;
mod e2e;
mod faults;
mod hooks;
mod host_keys;
mod hostile;
mod jenkins;
mod newcomer;
mod operations;
mod real_hosts;
mod releases;
mod render;
mod scale;
mod script_calls;
mod setup;
mod supervisor;
mod testbed;
mod util;
