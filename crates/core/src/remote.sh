#!/usr/bin/env bash
# bluegreen remote library: what runs on a remote host for each step.
#
# Both backends send this text to `bash -s` on the host, followed by one line `bg_main FN ARGS...`
# with every argument quoted for bash, so `bluegreen exec` and the rendered script run the very
# same commands. Nothing here reads standard input: it is the channel the library arrives on.
set -euo pipefail
umask 022

bg_die() {
  printf 'bluegreen: %s\n' "$*" >&2
  exit 1
}

# True when something listens on 127.0.0.1:PORT.
bg_port_busy() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# bg_run SUDO CMD...: runs CMD, under `sudo -n` when SUDO is `yes`.
bg_run() {
  local sudo=$1
  shift
  if [ "$sudo" = yes ]; then
    sudo -n -- "$@"
  else
    "$@"
  fi
}

# lock STATE_DIR HOLDER MESSAGE: takes the deploy lock (an atomic mkdir) or fails naming its holder.
bg_lock() {
  local dir=$1 holder=$2 message=$3
  mkdir -p -- "$dir"
  if mkdir -- "$dir/lock" 2>/dev/null; then
    printf 'holder=%s\ntime=%s\npid=%s\nmessage=%s\n' "$holder" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$$" "$message" >"$dir/lock/info.tmp"
    mv -f -- "$dir/lock/info.tmp" "$dir/lock/info"
    echo "lock taken by $holder"
  else
    local info="" waited=0
    # The holder writes its info right after its mkdir: give it a moment to appear.
    while [ ! -f "$dir/lock/info" ] && [ "$waited" -lt 10 ]; do
      sleep 0.1
      waited=$((waited + 1))
    done
    [ -f "$dir/lock/info" ] && info=$(tr '\n' ' ' <"$dir/lock/info")
    bg_die "deploy lock $dir/lock is held: ${info:-no holder recorded}"
  fi
}

# unlock STATE_DIR HOLDER: releases the lock if HOLDER holds it.
bg_unlock() {
  local dir=$1 holder=$2 current=""
  [ -d "$dir/lock" ] || { echo "lock was not held"; return 0; }
  [ -f "$dir/lock/info" ] && current=$(sed -n 's/^holder=//p' "$dir/lock/info")
  if [ "$current" != "$holder" ]; then
    bg_die "deploy lock is held by '$current', not by '$holder': left in place"
  fi
  rm -rf -- "$dir/lock"
  echo "lock released"
}

# detect UPSTREAM_FILE BLUE_PORT GREEN_PORT: prints the live slot (blue, green or none).
bg_detect() {
  local file=$1 blue=$2 green=$3 ports
  if [ ! -e "$file" ]; then
    echo none
    return 0
  fi
  ports=$(awk '$1 == "server" { a = $2; sub(/;.*/, "", a); n = split(a, p, ":"); print p[n] }' "$file" | sort -u | tr '\n' ' ')
  case "$ports" in
    "$blue ") echo blue ;;
    "$green ") echo green ;;
    "")
      echo none ;;
    *"$blue "*"$green "* | *"$green "*"$blue "*)
      bg_die "$file sends traffic to both slots (ports: $ports); fix it by hand before deploying" ;;
    *)
      echo "bluegreen: $file points at no slot port (ports: $ports); treating this as a first deploy" >&2
      echo none ;;
  esac
}

# prepare SLOT_DIR: creates the slot's directory.
bg_prepare() {
  mkdir -p -- "$1"
  df -Pk -- "$1" | awk 'NR == 2 { print "free_kib=" $4 }'
}

# install SLOT_DIR TMP_NAME JAR_NAME SHA256: checks an uploaded artifact, then renames it into place.
bg_install() {
  local dir=$1 tmp=$2 jar=$3 want=$4 got
  got=$(sha256sum -- "$dir/$tmp" | awk '{ print $1 }')
  if [ "$got" != "$want" ]; then
    rm -f -- "$dir/$tmp"
    bg_die "checksum mismatch for $dir/$tmp: expected $want, got $got"
  fi
  mv -f -- "$dir/$tmp" "$dir/$jar"
  printf '%s\n' "$want" >"$dir/release.tmp"
  mv -f -- "$dir/release.tmp" "$dir/release"
  echo "installed $dir/$jar ($want)"
}

# The pid of the instance recorded in SLOT_DIR/app.pid, if it is alive and really ours
# (its working directory is the slot's directory): a recycled pid is never signalled.
bg_slot_pid() {
  local dir=$1 pid
  [ -f "$dir/app.pid" ] || return 1
  pid=$(cat -- "$dir/app.pid")
  case "$pid" in '' | *[!0-9]*) return 1 ;; esac
  kill -0 "$pid" 2>/dev/null || return 1
  [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$dir" ] || return 1
  echo "$pid"
}

# stop SLOT_DIR PORT SIGNAL GRACE_SECS: stops the slot's instance (its whole process group):
# SIGNAL, up to GRACE_SECS, then SIGKILL; then waits until PORT is free.
bg_stop() {
  local dir=$1 port=$2 signal=$3 grace=$4 pid waited=0
  if ! pid=$(bg_slot_pid "$dir"); then
    rm -f -- "$dir/app.pid"
    # Nothing of ours to wait for: whatever holds the port is not ours to stop.
    if bg_port_busy "$port"; then
      echo "no instance running in $dir (port $port is held by a process bluegreen did not start)"
    else
      echo "no instance running in $dir"
    fi
    return 0
  else
    kill -s "$signal" -- "-$pid" 2>/dev/null || kill -s "$signal" "$pid" 2>/dev/null || true
    while kill -0 -- "-$pid" 2>/dev/null; do
      if [ "$waited" -ge $((grace * 10)) ]; then
        echo "pid $pid still running after ${grace}s: sending SIGKILL"
        kill -s KILL -- "-$pid" 2>/dev/null || true
        break
      fi
      sleep 0.1
      waited=$((waited + 1))
    done
    rm -f -- "$dir/app.pid"
    echo "stopped pid $pid after $((waited / 10)).$((waited % 10))s"
  fi
  waited=0
  while bg_port_busy "$port"; do
    if [ "$waited" -ge 100 ]; then
      bg_die "port $port is still in use after stopping $dir (another process holds it)"
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
}

# start SLOT_DIR SLOT PORT HOST JAR_NAME SIGNAL GRACE_SECS COMMAND: starts the slot's instance detached,
# after stopping an instance still running in that slot (one retained from an earlier deploy).
# COMMAND is shell text that refers to "$BG_JAR", "$BG_PORT", "$BG_SLOT", "$BG_HOST" and "$BG_DIR".
bg_start() {
  local dir=$1 slot=$2 port=$3 host=$4 jar=$5 signal=$6 grace=$7 command=$8 pid
  if bg_slot_pid "$dir" >/dev/null; then
    echo "slot $slot is still occupied: stopping it first"
    bg_stop "$dir" "$port" "$signal" "$grace"
  fi
  if bg_port_busy "$port"; then
    bg_die "port $port is in use by a process bluegreen did not start; not starting $slot"
  fi
  [ -f "$dir/$jar" ] || bg_die "$dir/$jar is missing"
  cd -- "$dir"
  export BG_JAR="$dir/$jar" BG_PORT="$port" BG_SLOT="$slot" BG_HOST="$host" BG_DIR="$dir"
  printf '\n--- %s starting %s on port %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$slot" "$port" >>"$dir/app.log"
  setsid bash -c "$command" </dev/null >>"$dir/app.log" 2>&1 &
  pid=$!
  printf '%s\n' "$pid" >"$dir/app.pid"
  sleep 0.2
  if ! kill -0 "$pid" 2>/dev/null; then
    rm -f -- "$dir/app.pid"
    tail -n 20 -- "$dir/app.log" >&2 || true
    bg_die "the $slot instance exited at once (log: $dir/app.log)"
  fi
  echo "started $slot on port $port as pid $pid"
}

# probe URL STATUS BODY TIMEOUT_SECS: one health probe sent from this host; prints the status.
bg_probe() {
  local url=$1 want=$2 body=$3 timeout=$4 out code
  out=$(mktemp)
  code=$(curl -s -o "$out" -w '%{http_code}' --max-time "$timeout" -- "$url" || true)
  if [ "$code" = "$want" ] && { [ -z "$body" ] || grep -qF -- "$body" "$out"; }; then
    rm -f -- "$out"
    echo "ok $code"
  else
    rm -f -- "$out"
    echo "bad ${code:-000}"
  fi
}

# switch UPSTREAM_FILE CONTENT SUDO TEST_CMD RELOAD_CMD: points nginx at new servers.
# The new file is written beside the old one and renamed over it atomically; if the config test
# fails, the previous file is put back and nginx is never reloaded.
bg_switch() {
  local file=$1 content=$2 sudo=$3 test_cmd=$4 reload_cmd=$5 out
  local tmp="$file.bluegreen-new" prev="$file.bluegreen-prev"
  local -a test_words reload_words
  read -r -a test_words <<<"$test_cmd"
  read -r -a reload_words <<<"$reload_cmd"
  printf '%s' "$content" | bg_run "$sudo" tee -- "$tmp" >/dev/null
  if [ -e "$file" ]; then
    bg_run "$sudo" cp -p -- "$file" "$prev"
  else
    bg_run "$sudo" rm -f -- "$prev"
  fi
  bg_run "$sudo" mv -f -- "$tmp" "$file"
  if ! out=$(bg_run "$sudo" "${test_words[@]}" 2>&1); then
    if [ -e "$prev" ]; then bg_run "$sudo" mv -f -- "$prev" "$file"; else bg_run "$sudo" rm -f -- "$file"; fi
    bg_die "'$test_cmd' failed, previous upstream file restored, nginx not reloaded: $out"
  fi
  local -a workers=()
  mapfile -t workers < <(bg_nginx_workers)
  if ! out=$(bg_run "$sudo" "${reload_words[@]}" 2>&1); then
    if [ -e "$prev" ]; then bg_run "$sudo" mv -f -- "$prev" "$file"; else bg_run "$sudo" rm -f -- "$file"; fi
    bg_die "'$reload_cmd' failed, previous upstream file restored: $out"
  fi
  if ! bg_reloaded "${workers[@]}"; then
    if [ -e "$prev" ]; then bg_run "$sudo" mv -f -- "$prev" "$file"; else bg_run "$sudo" rm -f -- "$file"; fi
    bg_die "nginx did not replace its workers within 10s of '$reload_cmd' (see its error log); previous upstream file restored"
  fi
  echo "upstream switched and nginx reloaded"
}

# Prints "PID PPID" of every nginx worker that serves requests (not one already shutting down).
bg_nginx_workers() {
  local pid
  for pid in $(pgrep -f '^nginx: worker process$' 2>/dev/null || true); do
    printf '%s %s\n' "$pid" "$(ps -o ppid= -p "$pid" 2>/dev/null | tr -d ' ')"
  done
}

# reloaded "PID PPID"...: `nginx -s reload` only signals the master, which loads the new config and
# replaces its workers later. Waits (up to 10 s) until some master has no worker left from before
# the reload that still serves: from then on every request uses the new upstream.
bg_reloaded() {
  [ "$#" -gt 0 ] || return 0
  local waited=0 entry pid ppid
  local -A serving
  while :; do
    serving=()
    for entry in "$@"; do
      serving[${entry#* }]=${serving[${entry#* }]:-0}
    done
    for entry in "$@"; do
      pid=${entry% *} ppid=${entry#* }
      if [ "$(tr -d '\0' <"/proc/$pid/cmdline" 2>/dev/null)" = "nginx: worker process" ]; then
        serving[$ppid]=1
      fi
    done
    for ppid in "${!serving[@]}"; do
      [ "${serving[$ppid]}" = 0 ] && return 0
    done
    [ "$waited" -ge 100 ] && return 1
    sleep 0.1
    waited=$((waited + 1))
  done
}

# settle DEADLINE_SECS: waits until nginx workers from before the reload have exited (they may
# still be sending requests to the old slot), or the deadline passes.
bg_settle() {
  local deadline=$1 waited=0
  while pgrep -f 'nginx: worker process is shutting down' >/dev/null 2>&1; do
    if [ "$waited" -ge $((deadline * 10)) ]; then
      echo "old nginx workers still running after ${deadline}s"
      return 0
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  echo "old nginx workers gone after $((waited / 10)).$((waited % 10))s"
}

# record STATE_DIR APP LIVE PREVIOUS RELEASE DEPLOYER: writes the state file atomically. The release
# that was live until now is kept as previous_release: the one a rollback may go back to.
bg_record() {
  local dir=$1 before=""
  mkdir -p -- "$dir"
  [ -f "$dir/state" ] && before=$(sed -n 's/^release=//p' "$dir/state")
  printf 'app=%s\nlive=%s\nprevious=%s\nrelease=%s\nprevious_release=%s\ntime=%s\ndeployer=%s\n' \
    "$2" "$3" "$4" "$5" "$before" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$6" >"$dir/state.tmp"
  mv -f -- "$dir/state.tmp" "$dir/state"
  echo "state recorded: live=$3 previous=$4"
}

# revive SLOT_DIR SLOT PORT HOST JAR_NAME SIGNAL GRACE_SECS COMMAND RELEASE: for a rollback, makes
# sure the slot's instance of RELEASE runs: kept as it is when still running (retained), restarted
# from the jar kept in its directory otherwise. Refuses when the slot holds another release (a later
# deploy into it failed or was rejected): that is nothing safe to go back to.
bg_revive() {
  local dir=$1 slot=$2 jar=$5 want=$9 have="" pid
  [ -f "$dir/release" ] && have=$(cat -- "$dir/release")
  if [ "$have" != "$want" ]; then
    bg_die "the $slot slot holds release '${have:-none}', not the previous release '$want' (a later deploy into it failed or was rejected): nothing safe to roll back to"
  fi
  if pid=$(bg_slot_pid "$dir"); then
    echo "$slot still running as pid $pid"
    return 0
  fi
  [ -f "$dir/$jar" ] || bg_die "no release kept in $dir: nothing to roll back to"
  bg_start "${@:1:8}"
}

# release STATE_DIR: prints the release that was live before the last switch (from the state file).
bg_release() {
  local release=""
  [ -f "$1/state" ] && release=$(sed -n 's/^previous_release=//p' "$1/state")
  [ -n "$release" ] || bg_die "no previous release recorded in $1/state: nothing to roll back to"
  echo "$release"
}

# A JSON string: quotes, backslashes and control characters escaped.
bg_json() {
  local s
  s=$(printf '%s' "$1" | tr -d '\000-\010\013-\037')
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\t'/\\t}
  s=${s//$'\n'/\\n}
  printf '"%s"' "$s"
}

# audit STATE_DIR EVENT APP OUTCOME TARGET FROM RELEASE DEPLOYER: appends one JSON line to the audit
# log: what happened (deploy, rollback, retire, lock-break), how it ended, the slot it targeted, the
# slot that was live before, the release, and who.
bg_audit() {
  local dir=$1
  mkdir -p -- "$dir"
  printf '{"time":%s,"event":%s,"app":%s,"outcome":%s,"target":%s,"from":%s,"release":%s,"deployer":%s}\n' \
    "$(bg_json "$(date -u +%Y-%m-%dT%H:%M:%SZ)")" "$(bg_json "$2")" "$(bg_json "$3")" "$(bg_json "$4")" \
    "$(bg_json "$5")" "$(bg_json "$6")" "$(bg_json "$7")" "$(bg_json "$8")" >>"$dir/audit.log"
  echo "audit: $2 $4"
}

# history STATE_DIR COUNT: prints the last COUNT lines of the audit log.
bg_history() {
  [ -f "$1/audit.log" ] || return 0
  tail -n "$2" -- "$1/audit.log"
}

# hoststatus DEPLOY_DIR BLUE_PORT GREEN_PORT: key=value lines about both slots on this host.
bg_hoststatus() {
  local base=$1 slot port dir pid
  for slot in blue green; do
    if [ "$slot" = blue ]; then port=$2; else port=$3; fi
    dir=$base/$slot
    if pid=$(bg_slot_pid "$dir"); then
      printf '%s.pid=%s\n%s.uptime=%s\n' "$slot" "$pid" "$slot" "$(ps -o etimes= -p "$pid" | tr -d ' ')"
    else
      printf '%s.pid=\n' "$slot"
    fi
    if bg_port_busy "$port"; then printf '%s.port_open=yes\n' "$slot"; else printf '%s.port_open=no\n' "$slot"; fi
    printf '%s.release=%s\n' "$slot" "$(cat -- "$dir/release" 2>/dev/null || true)"
  done
}

# proxystatus STATE_DIR UPSTREAM_FILE BLUE_PORT GREEN_PORT: key=value lines about the proxy: the slot
# the upstream file points at, the state file, the lock.
bg_proxystatus() {
  local dir=$1 live
  live=$(bg_detect "$2" "$3" "$4" 2>/dev/null) || live=mixed
  printf 'upstream.live=%s\nnow=%s\n' "$live" "$(date +%s)"
  if [ -f "$dir/state" ]; then sed 's/^/state./' "$dir/state"; fi
  if [ -d "$dir/lock" ]; then
    printf 'lock.held=yes\nlock.since=%s\n' "$(stat -c %Y -- "$dir/lock")"
    if [ -f "$dir/lock/info" ]; then sed 's/^/lock./' "$dir/lock/info"; fi
  else
    printf 'lock.held=no\n'
  fi
}

# breaklock STATE_DIR WHO APP: removes the deploy lock whoever holds it, and says so in the audit log.
bg_breaklock() {
  local dir=$1 holder=""
  [ -d "$dir/lock" ] || { echo "lock was not held"; return 0; }
  [ -f "$dir/lock/info" ] && holder=$(sed -n 's/^holder=//p' "$dir/lock/info")
  rm -rf -- "$dir/lock"
  bg_audit "$dir" lock-break "$3" "removed lock of ${holder:-unknown}" "" "" "" "$2" >/dev/null
  echo "lock of ${holder:-unknown} removed"
}

bg_main() {
  local fn=$1
  shift
  case "$fn" in
    lock | unlock | detect | prepare | install | stop | start | probe | switch | settle | record | revive | \
      release | audit | history | hoststatus | proxystatus | breaklock)
      "bg_$fn" "$@" ;;
    *) bg_die "unknown remote function '$fn'" ;;
  esac
}
