#!/usr/bin/env bash
# Local demo: brings up the testbed (a proxy with nginx and two app hosts, each with its own sshd, in
# network namespaces on this machine), deploys v1 of the demo app, then deploys v2 and v3 with
# `bluegreen exec` while a load client sends requests through nginx and prints a live failure counter.
# Needs root on Debian 12 with the test packages installed (tests/deps.sh). Tears everything down at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (the testbed uses network namespaces)" >&2; exit 1; }

name=demo$$
name=${name:0:8}
work=$(mktemp -d /tmp/bluegreen-demo.XXXXXX)
cleanup() {
  if [ -n "${load_pid:-}" ]; then kill "$load_pid" 2>/dev/null || true; fi
  bash tests/testbed/testbed.sh down "$name" >/dev/null 2>&1 || true
  rm -rf -- "$work"
}
trap cleanup EXIT

echo "== building bluegreen and the demo app"
cargo build --release -q -p bluegreen -p bluegreen-loadgen
bg=$PWD/target/release/bluegreen
load=$PWD/target/release/bluegreen-load
bash tests/app/build.sh "$work/jars" v1 v2 v3 >/dev/null

echo "== bringing up the testbed"
bash tests/testbed/testbed.sh up "$name" 2 >/dev/null
# shellcheck disable=SC1090
. "/tmp/bgtb-$name/env"
mkdir -p "$work/artifact"
{
  echo "app: demo"
  echo "artifact: $work/artifact/demo.jar"
  echo "ssh: { user: $SSH_USER, identity_file: $SSH_KEY, known_hosts: $KNOWN_HOSTS }"
  echo "proxy:"
  echo "  host: $PROXY_ADDR"
  echo "  upstream_file: $UPSTREAM_FILE"
  echo "  test_command: $NGINX_TEST_CMD"
  echo "  reload_command: $NGINX_RELOAD_CMD"
  echo "  state_dir: $STATE_DIR"
  echo "  check_url: http://$PROXY_ADDR:$NGINX_PORT/actuator/health"
  echo "servers:"
  for a in $APP_ADDRS; do echo "  - host: $a"; done
  echo "deploy_dir: $DEPLOY_DIR"
  echo "start: $JAVA $JAVA_OPTS -jar {jar} --server.port={port}"
  echo "health: { interval: 200ms, deadline: 60s, successes: 2 }"
  echo "drain: 1s"
} >"$work/bluegreen.yaml"
echo "config: $work/bluegreen.yaml"

deploy() {
  cp "$work/jars/app-$1.jar" "$work/artifact/demo.jar"
  echo
  echo "== deploying $1"
  "$bg" -c "$work/bluegreen.yaml" exec
}

deploy v1
echo
echo "== load through nginx at http://$PROXY_ADDR:$NGINX_PORT/version (new connection per request), live:"
"$load" "$PROXY_ADDR:$NGINX_PORT" --mode new --workers 4 --until-file "$work/stop" &
load_pid=$!
sleep 2
deploy v2
sleep 2
deploy v3
sleep 2
touch "$work/stop"
echo
echo "== final count (the demo fails if any request failed):"
wait "$load_pid"
load_pid=""
echo "demo: zero failed requests across two deploys"
