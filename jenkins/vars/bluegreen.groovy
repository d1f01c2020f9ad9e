// bluegreen: a Jenkins shared library step that runs the bluegreen CLI with the bound SSH key.
//
//   bluegreen(config: 'deploy.yaml', credentialsId: 'back-key')
//   bluegreen(config: 'deploy.yaml', credentialsId: 'back-key', action: 'rollback')
//
// Arguments:
//   config                  the deploy config (default: bluegreen.yaml)
//   credentialsId           Jenkins "SSH Username with private key" credential (required)
//   knownHostsCredentialId  a secret-file credential holding known_hosts (optional)
//   action                  exec (default), rollback, retire, status, plan, check
//   lockWait                how long exec waits for another deploy's lock, e.g. '5m' (optional)
//   bin                     the bluegreen binary (default: bluegreen on PATH)
//
// Values reach the shell through the environment (withEnv), never through Groovy string
// interpolation, so a config path cannot inject shell code and the key's path never appears in a
// Groovy string.
def call(Map args = [:]) {
    String credentialsId = args.credentialsId
    if (!credentialsId) {
        error("bluegreen: credentialsId is required, e.g. bluegreen(config: 'deploy.yaml', credentialsId: 'back-key')")
    }
    String action = args.action ?: 'exec'
    List actions = ['exec', 'rollback', 'retire', 'status', 'plan', 'check']
    if (!actions.contains(action)) {
        error("bluegreen: action '${action}' is not one of ${actions.join(', ')}")
    }
    List bindings = [sshUserPrivateKey(credentialsId: credentialsId, keyFileVariable: 'BG_SSH_KEY',
                                       passphraseVariable: 'BLUEGREEN_SSH_PASSPHRASE', usernameVariable: 'BG_SSH_USER')]
    if (args.knownHostsCredentialId) {
        bindings << file(credentialsId: args.knownHostsCredentialId, variable: 'BG_KNOWN_HOSTS')
    }
    List environment = [
        'BG_CONFIG=' + (args.config ?: 'bluegreen.yaml'),
        'BG_COMMAND=' + action,
        'BG_BIN=' + (args.bin ?: 'bluegreen'),
        'BG_LOCK_WAIT=' + (args.lockWait ?: ''),
    ]
    withEnv(environment) {
        withCredentials(bindings) {
            sh '''#!/bin/bash
set -euo pipefail
if ! command -v "$BG_BIN" >/dev/null 2>&1; then
  {
    echo "bluegreen: '$BG_BIN' is not on this agent (PATH=$PATH)."
    echo "  Install the CLI on the agent from a clone of the bluegreen repository:"
    echo "    apt-get install gcc make pkg-config libssl-dev   # what building it needs (Debian)"
    echo "    cargo install --locked --path .                  # puts bluegreen in ~/.cargo/bin"
    echo "  or pass the binary's path to the step: bluegreen(..., bin: '/opt/bluegreen/bin/bluegreen')"
  } >&2
  exit 127
fi
args=(-c "$BG_CONFIG" "$BG_COMMAND")
if [ "$BG_COMMAND" = exec ] && [ -n "$BG_LOCK_WAIT" ]; then
  args+=(--lock-wait "$BG_LOCK_WAIT")
fi
exec "$BG_BIN" "${args[@]}"
'''
        }
    }
}
