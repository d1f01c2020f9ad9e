#!/usr/bin/env bash
# bluegreen remote library: what runs on a remote host for each step.
#
# Both backends send this text to `bash -s` on the host, followed by one line `bg_main FN ARGS...`
# with every argument quoted for bash, so `bluegreen exec` and the rendered script run the very
# same commands. Nothing here reads standard input: it is the channel the library arrives on.
set -euo pipefail
umask 022
# How long `start` waits for a new instance to listen on its port before leaving it to the health
# checks (a JVM takes seconds; what binds in milliseconds is probed at once).
BG_START_WAIT_MS=1000

bg_die() {
  printf 'bluegreen: %s\n' "$*" >&2
  exit 1
}

# Builtins rather than processes wherever a call runs often: a call costs the host what its forks
# cost. bg_utc VAR: the time now as 2026-01-31T12:00:00Z. bg_epoch VAR: seconds since the epoch.
bg_utc() {
  TZ=UTC0 printf -v "$1" '%(%Y-%m-%dT%H:%M:%SZ)T' -1
}
bg_epoch() {
  printf -v "$1" '%(%s)T' -1
}

# bg_nap: one wait of a polling loop that has waited BG_NAPPED ms so far (the caller sets it to 0
# first): 5 ms for the first 100 ms, 20 ms until half a second, then 100 ms, so that what is quick
# is seen quickly. The wait is bash's own `read -t` on a pipe nobody writes to (opened once per
# shell, read-write so that it never reaches end of file), not a `sleep` process per wait.
bg_nap() {
  local ms=100
  if [ "$BG_NAPPED" -lt 100 ]; then
    ms=5
  elif [ "$BG_NAPPED" -lt 500 ]; then
    ms=20
  fi
  bg_sleep_ms "$ms"
  BG_NAPPED=$((BG_NAPPED + ms))
}

# Opens bg_sleep_ms's pipe (fd BG_SLEEP_FD) unless it is open.
bg_sleep_open() {
  if [ -z "${BG_SLEEP_FD:-}" ]; then
    exec {BG_SLEEP_FD}<> <(:) || BG_SLEEP_FD=none
  fi
}

# bg_sleep_ms MS: waits MS milliseconds (under 1000) without starting a process.
bg_sleep_ms() {
  local secs
  printf -v secs '0.%03d' "$1"
  bg_sleep_open
  if [ "$BG_SLEEP_FD" = none ]; then
    sleep "$secs"
  else
    read -r -t "$secs" -u "$BG_SLEEP_FD" _ || true
  fi
}

# bg_napped: BG_NAPPED as seconds, 1.2.
bg_napped() {
  printf '%d.%d' $((BG_NAPPED / 1000)) $((BG_NAPPED % 1000 / 100))
}

# True when something listens on 127.0.0.1:PORT: a connection opened and closed around a builtin,
# with no subshell (start polls this on every host at once while the apps boot).
bg_port_busy() {
  { true <>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null
}

# bg_run SUDO CMD...: runs CMD, under `sudo -n` when SUDO is `yes`, without the descriptors of the
# lock's and the switch's flocks (8, 9): a reload command that starts a daemon (nginx when it was
# not running, say) must not leave it holding them, and every later switch waiting for it.
bg_run() {
  local sudo=$1
  shift
  if [ "$sudo" = yes ]; then
    sudo -n -- "$@" 8>&- 9>&-
  else
    "$@" 8>&- 9>&-
  fi
}

# The deploy lock is STATE_DIR/lock, a directory holding `info`: holder, token, time, expires,
# message. It is built under a temporary name and renamed into place, so there is never a lock
# without a holder, and every look at it that leads to a change happens under flock
# STATE_DIR/.lock.flock, so no check-then-act of one run interleaves with another's. The running
# deploy renews it (bg_beat); a lock whose `expires` has passed belongs to a runner that died, and
# the next bg_lock takes it over (saying so in the audit log).

# Takes the lock file's flock (fd 8) for the rest of this call.
bg_lock_mutex() {
  mkdir -p -- "$1"
  exec 8>>"$1/.lock.flock"
  flock -w 10 8 || bg_die "another run is changing the deploy lock $1/lock (flock $1/.lock.flock)"
}

# bg_lock_field STATE_DIR KEY: a value of the lock's info.
bg_lock_field() {
  local line
  [ -f "$1/lock/info" ] || return 0
  while IFS= read -r line || [ -n "$line" ]; do
    if [[ $line == "$2="* ]]; then
      printf '%s\n' "${line#*=}"
      return 0
    fi
  done <"$1/lock/info"
}

# bg_lock_expires STATE_DIR LEASE_SECS: when the lock expires (seconds since the epoch); a lock
# without a recorded expiry (an older bluegreen's) expires LEASE_SECS after it was made.
bg_lock_expires() {
  local expires
  expires=$(bg_lock_field "$1" expires)
  case "$expires" in
    '' | *[!0-9]*) echo $(($(stat -c %Y -- "$1/lock") + $2)) ;;
    *) echo "$expires" ;;
  esac
}

# bg_lock_write DIR HOLDER TOKEN TIME EXPIRES MESSAGE: the lock's info into DIR/info.tmp, renamed
# to DIR/info.
bg_lock_write() {
  printf 'holder=%s\ntoken=%s\ntime=%s\nexpires=%s\nmessage=%s\n' "$2" "$3" "$4" "$5" "$6" >"$1/info.tmp"
  mv -f -- "$1/info.tmp" "$1/info"
}

# lock STATE_DIR APP HOLDER TOKEN LEASE_SECS MESSAGE: takes the deploy lock for LEASE_SECS (renewed
# by bg_beat), taking over a lock whose holder stopped renewing it; fails naming a live holder.
bg_lock() {
  local dir=$1 app=$2 holder=$3 token=$4 lease=$5 message=$6 now expires tmp old="" note="" time
  bg_lock_mutex "$dir"
  bg_epoch now
  if [ -d "$dir/lock" ]; then
    expires=$(bg_lock_expires "$dir" "$lease")
    old=$(bg_lock_field "$dir" holder)
    if [ "$now" -lt "$expires" ]; then
      bg_die "deploy lock $dir/lock is held: holder=${old:-unknown} since $(bg_lock_field "$dir" time) ($(bg_lock_field "$dir" message)); renewed until $((expires - now))s from now"
    fi
    rm -rf -- "$dir/lock"
    note=" (took over the lock of ${old:-unknown}, not renewed for $((now - expires + lease))s: its runner is gone)"
    bg_audit "$dir" lock-break "$app" "took over the expired lock of ${old:-unknown}" "" "" "" "$holder" >/dev/null
  fi
  tmp=$(mktemp -d "$dir/.lock.XXXXXX")
  bg_utc time
  bg_lock_write "$tmp" "$holder" "$token" "$time" $((now + lease)) "$message"
  mv -T -- "$tmp" "$dir/lock" || {
    rm -rf -- "$tmp"
    bg_die "cannot take the deploy lock $dir/lock"
  }
  echo "lock taken by $holder$note"
}

# beat STATE_DIR TOKEN LEASE_SECS: renews this run's lock for LEASE_SECS more.
bg_beat() {
  local dir=$1 token=$2 lease=$3 now
  bg_lock_mutex "$dir"
  bg_epoch now
  if [ ! -d "$dir/lock" ] || [ "$(bg_lock_field "$dir" token)" != "$token" ]; then
    bg_die "the deploy lock $dir/lock is no longer this run's (held by $(bg_lock_field "$dir" holder || true))"
  fi
  bg_lock_write "$dir/lock" "$(bg_lock_field "$dir" holder)" "$token" "$(bg_lock_field "$dir" time)" \
    $((now + lease)) "$(bg_lock_field "$dir" message)"
  echo "lock renewed for ${lease}s"
}

# unlock STATE_DIR TOKEN: releases the lock if this run (TOKEN) holds it.
bg_unlock() {
  local dir=$1 token=$2
  bg_lock_mutex "$dir"
  [ -d "$dir/lock" ] || { echo "lock was not held"; return 0; }
  if [ "$(bg_lock_field "$dir" token)" != "$token" ]; then
    bg_die "deploy lock is held by '$(bg_lock_field "$dir" holder)', not by this run: left in place"
  fi
  rm -rf -- "$dir/lock"
  echo "lock released"
}

# The upstream file as nginx reads it, for bg_detect and bg_switch. Every directive is parsed
# (several per line, split over lines, comments); `server` lines whose port is a slot's must be on
# the config's app hosts, and a server on an app host at another port is refused: either could mean
# traffic goes where bluegreen cannot tell. Other servers (a `backup` page, a unix socket, another
# pool) and every other directive are kept as they are. In `rewrite` mode it prints the file with
# every slot server moved to PORT (its parameters kept: weight=, max_fails=, backup, down ...) and
# a line added for each app host the file does not name yet; in `detect` mode the live slot.
IFS= read -r -d '' BG_UPSTREAM_AWK <<'BG_UPSTREAM_AWK_EOF' || true
function fail(msg) { printf "bluegreen: %s: %s\n", file, msg > "/dev/stderr"; exit 1 }
function take(ln, i, j) { nt++; tok[nt] = substr(line[ln], i, j - i); tline[nt] = ln; tcol[nt] = i }
function addr_parts(a,    k, rest) {
  ahost = ""; aport = ""
  if (a ~ /^unix:/) return 0
  if (substr(a, 1, 1) == "[") {
    k = index(a, "]"); if (!k) return -1
    ahost = substr(a, 2, k - 2); rest = substr(a, k + 1)
  } else {
    k = index(a, ":")
    if (!k) { ahost = a; aport = 80; return 1 }
    ahost = substr(a, 1, k - 1); rest = substr(a, k)
  }
  if (rest == "") { aport = 80; return 1 }
  if (rest !~ /^:[0-9]+$/) return -1
  aport = substr(rest, 2) + 0; return 1
}
function directive(    k, kind, quiet) {
  if (nt == 0) return
  if (tok[1] == "server") {
    if (nt < 2) fail("line " tline[1] ": `server` without an address")
    kind = addr_parts(tok[2])
    if (kind < 0) fail("line " tline[2] ": cannot read the address `" tok[2] "`")
    quiet = 0
    for (k = 3; k <= nt; k++) if (tok[k] == "backup" || tok[k] == "down") quiet = 1
    text = "`server " tok[2] "` (line " tline[2] ")"
    if (kind && (aport == blue || aport == green)) {
      if (!(ahost in cfg)) fail(text " is at a slot port, but " ahost " is not one of the config's servers; fix: remove the line, or add the host to servers")
      ns++; sline[ns] = tline[2]; scol[ns] = tcol[2]; slen[ns] = length(tok[2]); shost[ns] = ahost
      seen[ahost] = 1; last_slot_line = tline[2]
      if (aport == blue) { nblue++; bline = tline[2] } else { ngreen++; gline = tline[2] }
    } else if (kind && (ahost in cfg)) {
      fail(text " is an app host at port " aport ", which is neither slot (blue " blue ", green " green "): bluegreen cannot tell which slot is live; fix: point it at the live slot's port, or remove it")
    } else if (!quiet && other == "") {
      other = text
    }
  }
  nd++; nt = 0
}
{ line[NR] = $0 }
END {
  n = split(addrs, list, " ")
  for (k = 1; k <= n; k++) cfg[list[k]] = 1
  for (ln = 1; ln <= NR; ln++) {
    s = line[ln]; len = length(s); i = 1
    while (i <= len) {
      c = substr(s, i, 1)
      if (c == "#") break
      if (c == " " || c == "\t" || c == "\r") { i++; continue }
      if (c == ";") { directive(); i++; continue }
      if (c == "{" || c == "}") fail("line " ln ": `" c "`: a block cannot be in a file included inside upstream { }")
      if (c == "\"" || c == "'") fail("line " ln ": quoted values are not supported in the upstream file")
      j = i
      while (j <= len && substr(s, j, 1) !~ /[ \t\r;#{}"']/) j++
      take(ln, i, j); i = j
    }
  }
  if (nt > 0) fail("line " tline[1] ": `" tok[1] "` is not ended by `;`")
  if (nblue && ngreen) fail("sends traffic to both slots (port " blue " on line " bline ", port " green " on line " gline "); fix it by hand before deploying")
  live = nblue ? "blue" : (ngreen ? "green" : "none")
  if (live == "none" && other != "") fail(other " is not one of the config's servers and no server is at a slot port, so bluegreen cannot tell what serves traffic now; for a first deploy the file must hold no server, or only `backup` or `down` ones (e.g. `server 127.0.0.1:9 down;`)")
  if (mode == "detect") { print live; exit 0 }
  for (k = 1; k <= ns; k++) {
    ln = sline[k]
    line[ln] = substr(line[ln], 1, scol[k] - 1) shost[k] ":" port substr(line[ln], scol[k] + slen[k])
  }
  if (NR == 0) print header
  for (ln = 1; ln <= NR; ln++) {
    print line[ln]
    if (ln == last_slot_line) add()
  }
  if (!last_slot_line) add()
}
function add(    k) { for (k = 1; k <= n; k++) if (!(list[k] in seen)) print "server " list[k] ":" port ";" }
BG_UPSTREAM_AWK_EOF

# bg_upstream_exists FILE SUDO: prints yes or no; fails when it cannot tell (a directory the
# deploy user cannot search, and sudo not allowed to look).
bg_upstream_exists() {
  if [ -e "$1" ]; then
    echo yes
  elif [ -x "$(dirname -- "$1")" ]; then
    echo no
  elif [ "$2" = yes ] && sudo -n -- test -e "$1" 2>/dev/null; then
    echo yes
  else
    bg_die "cannot tell whether the upstream file $1 exists: its directory is not searchable by $(id -un)$([ "$2" = yes ] && echo ', even with sudo -n')"
  fi
}

# bg_read_upstream FILE SUDO: the upstream file's text (read under `sudo -n` when SUDO is `yes` and
# the deploy user cannot read it), empty when it does not exist. An unreadable file is an error,
# never "no slot is live".
bg_read_upstream() {
  local file=$1 sudo=$2 text exists
  exists=$(bg_upstream_exists "$file" "$sudo") || exit 1
  [ "$exists" = yes ] || return 0
  if [ -r "$file" ]; then
    text=$(cat -- "$file" && printf x) || bg_die "cannot read the upstream file $file"
  elif [ "$sudo" = yes ]; then
    text=$(sudo -n -- cat -- "$file" && printf x) || bg_die "cannot read the upstream file $file, even with sudo -n"
  else
    bg_die "cannot read the upstream file $file as $(id -un) (set proxy.sudo: true if it needs root)"
  fi
  printf '%s' "${text%x}"
}

# detect UPSTREAM_FILE SUDO BLUE_PORT GREEN_PORT ADDRESS...: prints the live slot (blue, green or
# none, when the file does not exist or names no server yet); refuses a file it cannot fully read.
bg_detect() {
  local file=$1 sudo=$2 blue=$3 green=$4 text
  shift 4
  text=$(bg_read_upstream "$file" "$sudo" && printf x) || exit 1
  printf '%s' "${text%x}" | awk -v mode=detect -v file="$file" -v blue="$blue" -v green="$green" \
    -v addrs="$*" "$BG_UPSTREAM_AWK"
}

# prepare SLOT_DIR: creates the slot's directory.
bg_prepare() {
  local line free
  mkdir -p -- "$1"
  { read -r _ && read -r _ _ _ free _; } < <(df -Pk -- "$1") && line="free_kib=$free"
  printf '%s\n' "${line:-}"
}

# install SLOT_DIR TMP_NAME JAR_NAME SHA256: checks an uploaded artifact, then renames it into place.
bg_install() {
  local dir=$1 tmp=$2 jar=$3 want=$4 got
  got=$(sha256sum -- "$dir/$tmp")
  got=${got%% *}
  if [ "$got" != "$want" ]; then
    rm -f -- "$dir/$tmp"
    bg_die "checksum mismatch for $dir/$tmp: expected $want, got $got"
  fi
  mv -f -- "$dir/$tmp" "$dir/$jar"
  printf '%s\n' "$want" >"$dir/release.tmp"
  mv -f -- "$dir/release.tmp" "$dir/release"
  echo "installed $dir/$jar ($want)"
}

# keep DEPLOY_DIR FILE SHA256 KEEP: once a switch to release SHA256 is final, DEPLOY_DIR/releases/SHA256
# becomes FILE (a hard link when it can, a copy otherwise), dated now; then only the KEEP most
# recently kept releases stay, and any release a slot holds (SLOT_DIR/release), so that
# `rollback --to` can go back that far. KEEP 0 keeps none.
bg_keep() {
  local base=$1 file=$2 sha=$3 keep=$4 dir=$1/releases n=0 f name held kept=0 removed=0
  mkdir -p -- "$dir"
  if [ "$keep" -gt 0 ]; then
    # The slot's artifact may be that very file already (a release restored from here).
    if ! [ "$file" -ef "$dir/$sha" ]; then
      ln -f -- "$file" "$dir/$sha.tmp" 2>/dev/null || cp -f -- "$file" "$dir/$sha.tmp"
      mv -f -- "$dir/$sha.tmp" "$dir/$sha"
    fi
    touch -- "$dir/$sha"
  fi
  held=" "
  for f in "$base/blue/release" "$base/green/release"; do
    if [ -f "$f" ]; then held="$held$(cat -- "$f") "; fi
  done
  while IFS= read -r f; do
    name=${f##*/}
    case $name in *[!0-9a-f]* | '') continue ;; esac
    n=$((n + 1))
    if [ "$n" -le "$keep" ] || [[ $held == *" $name "* ]]; then
      kept=$((kept + 1))
    else
      rm -f -- "$f"
      removed=$((removed + 1))
    fi
  done < <(ls -1t -- "$dir"/* 2>/dev/null || true)
  echo "releases kept: $kept, removed: $removed"
}

# retire DEPLOY_DIR OLD_SLOT OLD_PORT SIGNAL GRACE_SECS RETAIN_SECS FILE SHA256 KEEP: once a switch is
# final, on an app host: the slot that was live (OLD_SLOT; `none` on a first deploy) is stopped,
# or left running for RETAIN_SECS (the rollback window: the next deploy to it, or `retire`, stops
# it); then the release now live (FILE) is kept (bg_keep).
bg_retire() {
  local base=$1 old=$2 port=$3 signal=$4 grace=$5 retain=$6 said kept
  case $old in
    blue | green)
      if [ "$retain" -gt 0 ]; then
        said="$old keeps running on port $port for the ${retain}s rollback window (the next deploy to it stops it)"
      else
        said=$(bg_stop "$base/$old" "$port" "$signal" "$grace")
      fi
      ;;
    *) said="no slot was live before this deploy" ;;
  esac
  # One last line that says both (what a step shows is its last line).
  kept=$(bg_keep "$base" "$7" "$8" "$9")
  printf '%s; %s\n' "$said" "$kept"
}

# releases DEPLOY_DIR: one line per kept release, newest first: SHA256 and when it was kept (epoch
# seconds, three decimals).
bg_releases() {
  local base=$1 f name
  for f in $(ls -1t -- "$base/releases" 2>/dev/null || true); do
    name=${f##*/}
    case $name in *[!0-9a-f]* | '') continue ;; esac
    echo "$name $(stat -c %.3Y -- "$base/releases/$name")"
  done
}

# The start time of process PID (field 22 of /proc/PID/stat, in clock ticks since boot): with the
# pid, what identifies a process, since pids are reused.
bg_proc_start() {
  local stat=""
  { IFS= read -r stat <"/proc/$1/stat"; } 2>/dev/null || [ -n "$stat" ] || return 1
  stat=${stat##*) }
  # shellcheck disable=SC2086
  set -- $stat
  [ "$#" -ge 20 ] || return 1
  printf '%s\n' "${20}"
}

# With `supervisor: systemd` a slot's instance is the unit named in SLOT_DIR/app.unit (an instance
# of the template bluegreen-APP@.service): true, with BG_UNIT set, when the slot has one. The file
# says `user UNIT` for a unit of the deploy user's own systemd (`supervisor: systemd-user`); it
# sets BG_UNIT_SCOPE (system or user), which bg_systemctl and bg_unit_show follow.
bg_unit_of() {
  BG_UNIT="" BG_UNIT_SCOPE=system
  [ -f "$1/app.unit" ] && IFS= read -r BG_UNIT <"$1/app.unit" && [ -n "$BG_UNIT" ] || return 1
  case $BG_UNIT in
    'user '*) BG_UNIT=${BG_UNIT#user } BG_UNIT_SCOPE=user ;;
  esac
}

# bg_user_systemctl ARGS...: the deploy user's own systemd (its runtime directory found from the
# uid when the session set none, as a non-interactive SSH session may not).
bg_user_systemctl() {
  XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/run/user/$(id -u)} systemctl --user "$@"
}

# bg_unit_show UNIT: sets BG_MAINPID (0: no process), BG_ACTIVE (active, activating, failed,
# inactive...), BG_RESTARTS (how often systemd restarted it since it was started) and BG_STATUS (the
# main process's last exit status) from `systemctl show`.
bg_unit_show() {
  local line
  BG_MAINPID=0 BG_ACTIVE=unknown BG_RESTARTS=0 BG_STATUS="" BG_ENABLED=""
  while IFS= read -r line; do
    case $line in
      MainPID=*) BG_MAINPID=${line#*=} ;;
      ActiveState=*) BG_ACTIVE=${line#*=} ;;
      NRestarts=*) BG_RESTARTS=${line#*=} ;;
      ExecMainStatus=*) BG_STATUS=${line#*=} ;;
      UnitFileState=*) BG_ENABLED=${line#*=} ;;
    esac
  done < <(
    if [ "${BG_UNIT_SCOPE:-system}" = user ]; then
      bg_user_systemctl show -p MainPID -p ActiveState -p NRestarts -p ExecMainStatus -p UnitFileState -- "$1"
    else
      systemctl show -p MainPID -p ActiveState -p NRestarts -p ExecMainStatus -p UnitFileState -- "$1"
    fi 2>/dev/null
  )
  case $BG_MAINPID in '' | *[!0-9]*) BG_MAINPID=0 ;; esac
  case $BG_RESTARTS in '' | *[!0-9]*) BG_RESTARTS=0 ;; esac
}

# bg_systemctl ARGS...: systemctl as root: itself when this is root, through `sudo -n` otherwise
# (choosing `supervisor: systemd` is what grants the deploy user that); the deploy user's own
# systemd when BG_UNIT_SCOPE is `user`.
bg_systemctl() {
  if [ "${BG_UNIT_SCOPE:-system}" = user ]; then
    bg_user_systemctl "$@"
  else
    bg_run "$(bg_sudo_unless_root)" systemctl "$@"
  fi
}

bg_sudo_unless_root() {
  if [ "$(id -u)" = 0 ]; then echo no; else echo yes; fi
}

# unit_text APP BASE SIGNAL GRACE_SECS USER SCOPE: the template unit bluegreen-APP@.service, one
# instance per slot (%i: blue or green), its files in BASE/%i. SCOPE `user`: a unit of USER's own
# systemd (no User=, started with that manager, which lingering starts at boot).
bg_unit_text() {
  local app=$1 base=$2 signal=${3#SIG} grace=$4 user=$5 scope=${6:-system} after="" who="" wanted
  if [ "$scope" = user ]; then
    wanted=default.target
  else
    after=$'After=network-online.target\nWants=network-online.target\n'
    who="User=$user"$'\n'
    wanted=multi-user.target
  fi
  cat <<UNIT
# Managed by bluegreen for $app: one instance per slot (bluegreen-$app@blue, bluegreen-$app@green).
# bluegreen rewrites this file when the config changes; edits are lost.
[Unit]
Description=$app, %i slot (bluegreen)
${after}
[Service]
Type=simple
${who}WorkingDirectory=$base/%i
EnvironmentFile=-$base/%i/app.env
ExecStart=/bin/bash $base/%i/app.sh
StandardInput=null
StandardOutput=append:$base/%i/app.log
StandardError=inherit
KillSignal=SIG$signal
TimeoutStopSec=$grace
SuccessExitStatus=143
Restart=on-failure
RestartSec=1

[Install]
WantedBy=$wanted
UNIT
}

# unit_install APP BASE SIGNAL GRACE_SECS SCOPE: writes /etc/systemd/system/bluegreen-APP@.service
# (SCOPE `user`: ~/.config/systemd/user/bluegreen-APP@.service, once lingering is on for the deploy
# user and its systemd runs) when it is missing or differs, then reloads systemd; sets
# BG_UNIT_FILE.
bg_unit_install() {
  local app=$1 base=$2 scope=${5:-system} text sudo me
  case $base in
    /*) ;;
    *) bg_die "the deploy directory '$base' is not an absolute path" ;;
  esac
  case $base in
    *[!A-Za-z0-9/._+-]*) bg_die "the deploy directory '$base' has characters a systemd unit cannot hold as they are (supervisor: systemd allows letters, digits and / . _ + -)" ;;
  esac
  command -v systemctl >/dev/null 2>&1 || bg_die "supervisor: systemd, but this host has no systemctl"
  [ -d /run/systemd/system ] || bg_die "supervisor: systemd, but systemd is not this host's init (no /run/systemd/system)"
  sudo=$(bg_sudo_unless_root)
  BG_UNIT_FILE=/etc/systemd/system/bluegreen-$app@.service
  if [ "$scope" = user ]; then
    me=$(id -un)
    [ -e "/var/lib/systemd/linger/$me" ] ||
      bg_die "supervisor: systemd-user, but lingering is off for $me: its units would stop when it logs out and not start at boot (run \`sudo loginctl enable-linger $me\`, or \`bluegreen setup\`)"
    # Lingering just enabled: logind starts the user's systemd soon after.
    BG_NAPPED=0
    until bg_user_systemctl show-environment >/dev/null 2>&1; do
      [ "$BG_NAPPED" -lt 10000 ] ||
        bg_die "supervisor: systemd-user, but $me's systemd does not answer (is user@$(id -u).service running? \`loginctl user-status $me\`)"
      bg_nap
    done
    BG_UNIT_FILE=$HOME/.config/systemd/user/bluegreen-$app@.service
    sudo=no
    mkdir -p -- "${BG_UNIT_FILE%/*}"
  fi
  text=$(bg_unit_text "$app" "$base" "$3" "$4" "$(id -un)" "$scope")
  if [ "$(cat -- "$BG_UNIT_FILE" 2>/dev/null || true)" != "$text" ]; then
    bg_put "$BG_UNIT_FILE" "$text"$'\n' "$sudo" || bg_die "could not write $BG_UNIT_FILE (sudo -n tee: does the deploy user have sudo?)"
    bg_run "$sudo" chmod 644 -- "$BG_UNIT_FILE"
    bg_systemctl daemon-reload || bg_die "systemctl daemon-reload failed"
    echo "installed $BG_UNIT_FILE"
  fi
}

# env_file FILE [NAME VALUE]...: the app's environment as a file only the deploy user reads, in the
# one syntax both systemd's EnvironmentFile= and bash (`set -a; . FILE`) read the same way: NAME="VALUE"
# with \ " $ ` escaped. A file secret's pair (`@NAME BASE64`) becomes the file NAME in the directory
# beside FILE (`app.secrets`, mode 0700), and NAME holds its path. Without NAME VALUE pairs, FILE is
# removed; the secrets' directory always is, then made anew.
bg_env_file() {
  local file=$1 name v files
  shift
  files="${file%.env}.secrets"
  rm -rf -- "$files"
  if [ "$#" -eq 0 ]; then
    rm -f -- "$file"
    return 0
  fi
  (
    umask 077
    while [ "$#" -ge 2 ]; do
      name=$1 v=$2
      if [ "${name#@}" != "$name" ]; then
        name=${name#@}
        v=$files/$name
        bg_secret_put "$v" "$2"
      fi
      v=${v//\\/\\\\}
      v=${v//\"/\\\"}
      v=${v//\$/\\\$}
      v=${v//\`/\\\`}
      printf '%s="%s"\n' "$name" "$v"
      shift 2
    done >"$file.tmp"
  ) || exit 1
  mv -f -- "$file.tmp" "$file"
}

# bg_secret_put FILE BASE64: writes a file secret's content (BASE64 decoded) to FILE, which only the
# deploy user reads (its directory made so, if missing).
bg_secret_put() {
  (
    umask 077
    mkdir -p -- "${1%/*}"
    printf '%s' "$2" | base64 -d >"$1"
  ) || bg_die "cannot write the file secret ${1##*/} to $1"
}

# The pid of the instance recorded in SLOT_DIR/app.pid (`PID START_TIME`), if it still runs: the
# process with that pid and start time, or, once that process is gone, any process left in its
# session (the kernel never gives a live session's id to a new process). So a recycled pid is never
# taken for the instance, and an app that changes its working directory still is.
bg_slot_pid() {
  local dir=$1 pid="" start="" now
  if bg_unit_of "$dir"; then
    bg_unit_show "$BG_UNIT"
    [ "$BG_MAINPID" != 0 ] || return 1
    echo "$BG_MAINPID"
    return 0
  fi
  [ -f "$dir/app.pid" ] || return 1
  read -r pid start _ <"$dir/app.pid" || [ -n "$pid" ] || return 1
  case "$pid" in '' | *[!0-9]*) return 1 ;; esac
  if now=$(bg_proc_start "$pid"); then
    if [ -n "$start" ]; then
      [ "$now" = "$start" ] || return 1
    else
      # A pid file of an older bluegreen, without a start time: ours if that process started
      # before the file was written (a pid reused since then belongs to a later process).
      local btime tck
      btime=$(awk '$1 == "btime" { print $2 }' /proc/stat)
      tck=$(getconf CLK_TCK 2>/dev/null || echo 100)
      [ $((btime + now / tck)) -le $(($(stat -c %Y -- "$dir/app.pid") + 1)) ] || return 1
    fi
  elif ! pgrep -s "$pid" >/dev/null 2>&1; then
    return 1
  fi
  echo "$pid"
}

# stop SLOT_DIR PORT SIGNAL GRACE_SECS: stops the slot's instance (its whole process group):
# SIGNAL, up to GRACE_SECS, then SIGKILL; then waits until PORT is free.
bg_stop() {
  local dir=$1 port=$2 signal=$3 grace=$4 pid
  if bg_unit_of "$dir"; then
    # systemd stops it as the unit says (the same signal and grace, then SIGKILL), and it no longer
    # starts at boot. Whether it runs or not (a crashed instance may be waiting to be restarted),
    # the unit is stopped.
    bg_unit_show "$BG_UNIT"
    pid=$BG_MAINPID
    bg_systemctl disable --now --quiet -- "$BG_UNIT" || bg_die "systemctl could not stop $BG_UNIT"
    rm -f -- "$dir/app.unit"
    if [ "$pid" != 0 ]; then
      echo "stopped $BG_UNIT (pid $pid) and disabled it"
    else
      echo "stopped $BG_UNIT (no process was running) and disabled it"
    fi
  elif ! pid=$(bg_slot_pid "$dir"); then
    # The process the file names is gone, or a live process with its pid is provably another.
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
    BG_NAPPED=0
    while kill -0 -- "-$pid" 2>/dev/null || pgrep -s "$pid" >/dev/null 2>&1; do
      if [ "$BG_NAPPED" -ge $((grace * 1000)) ]; then
        echo "pid $pid still running after ${grace}s: sending SIGKILL"
        kill -s KILL -- "-$pid" 2>/dev/null || true
        pkill -KILL -s "$pid" 2>/dev/null || true
        break
      fi
      bg_nap
    done
    rm -f -- "$dir/app.pid"
    echo "stopped pid $pid after $(bg_napped)s"
  fi
  BG_NAPPED=0
  while bg_port_busy "$port"; do
    if [ "$BG_NAPPED" -ge 10000 ]; then
      bg_die "port $port is still in use after stopping $dir (another process holds it)"
    fi
    bg_nap
  done
}

# start SLOT_DIR SLOT PORT HOST JAR_NAME SIGNAL GRACE_SECS COMMAND LIVE_PORT SUPERVISOR APP [NAME VALUE]...:
# starts the slot's instance detached, after stopping an instance still running in that slot (one
# retained from an earlier deploy). Never on LIVE_PORT, the port the proxy's upstream named when the
# deploy read it. COMMAND is shell text that refers to "$BG_JAR", "$BG_PORT", "$BG_SLOT", "$BG_HOST"
# and "$BG_DIR". SUPERVISOR `none`: the instance runs under a small shell that records its exit
# status in SLOT_DIR/app.exit. SUPERVISOR `systemd` (or `systemd-user`, the deploy user's own
# systemd): it runs as bluegreen-APP@SLOT.service (see
# bg_unit_text), enabled once it listens.
bg_start() {
  local dir=$1 slot=$2 port=$3 host=$4 jar=$5 signal=$6 grace=$7 command=$8 live_port=${9:-} \
    supervisor=${10:-none} app=${11:-} pid start now
  if [ -n "$live_port" ] && [ "$port" = "$live_port" ]; then
    bg_die "not starting $slot on port $port: the proxy's upstream sends traffic to that port"
  fi
  # A unit counts even when no process runs: one that systemd is about to restart.
  if bg_unit_of "$dir" || bg_slot_pid "$dir" >/dev/null; then
    echo "slot $slot is still occupied: stopping it first"
    bg_stop "$dir" "$port" "$signal" "$grace"
  fi
  if bg_port_busy "$port"; then
    bg_die "port $port is in use by a process bluegreen did not start; not starting $slot"
  fi
  [ -f "$dir/$jar" ] || bg_die "$dir/$jar is missing"
  cd -- "$dir"
  export BG_JAR="$dir/$jar" BG_PORT="$port" BG_SLOT="$slot" BG_HOST="$host" BG_DIR="$dir"
  bg_utc now
  printf '\n--- %s starting %s on port %s\n' "$now" "$slot" "$port" >>"$dir/app.log"
  rm -f -- "$dir/app.exit"
  # The app's environment (NAME VALUE pairs after the eleven arguments): a file only the deploy user
  # reads, which systemd or the instance's shell reads; values never go on a command line.
  shift "$(($# < 11 ? $# : 11))"
  bg_env_file "$dir/app.env" "$@"
  case $supervisor in
    systemd | systemd-user)
      bg_start_unit "$dir" "$slot" "$port" "$signal" "$grace" "$command" "$app" \
        "$([ "$supervisor" = systemd-user ] && echo user || echo system)"
      return
      ;;
  esac
  # The instance inherits no descriptor of this shell's but its standard ones.
  if [ -n "${BG_SLEEP_FD:-}" ] && [ "$BG_SLEEP_FD" != none ]; then
    exec {BG_SLEEP_FD}>&-
    BG_SLEEP_FD=""
  fi
  # shellcheck disable=SC2016
  setsid bash -c 'if [ -f "$3" ]; then set -a && . "$3" && set +a; fi; bash -c "$1"; echo "$?" >"$2"' "bluegreen-$slot" \
    "$command" "$dir/app.exit" "$dir/app.env" </dev/null >>"$dir/app.log" 2>&1 &
  pid=$!
  start=$(bg_proc_start "$pid") || start=""
  printf '%s %s\n' "$pid" "$start" >"$dir/app.pid.tmp"
  mv -f -- "$dir/app.pid.tmp" "$dir/app.pid"
  # Waits (up to BG_START_WAIT_MS) until the instance listens on its port, or its command has
  # ended: a command that cannot run at all (a typo, a missing program) is reported here, and an
  # app that binds its port quickly is ready for its first health probe. A later death is what the
  # health checks' `alive` reports, at their first failed probe.
  BG_NAPPED=0
  while ! bg_port_busy "$port"; do
    if [ -e "$dir/app.exit" ] || ! kill -0 "$pid" 2>/dev/null; then
      bg_exited "$dir" "$slot" "right after it started"
    fi
    [ "$BG_NAPPED" -ge "$BG_START_WAIT_MS" ] && break
    bg_nap
  done
  echo "started $slot on port $port as pid $pid"
}

# The systemd half of bg_start (in the slot's directory, its environment file written): the
# template unit installed or brought up to date, SLOT_DIR/app.sh (what the unit runs: the start
# command with the BG_ variables), then the unit started and, once it listens, enabled.
bg_start_unit() {
  local dir=$1 slot=$2 port=$3 command=$6 app=$7 scope=${8:-system} unit
  BG_UNIT_SCOPE=$scope
  bg_unit_install "$app" "${PWD%/*}" "$4" "$5" "$scope"
  [ "${PWD##*/}" = "$slot" ] || bg_die "the $slot slot's directory $PWD is not named $slot (supervisor: systemd names the unit's directory after the slot)"
  unit=bluegreen-$app@$slot.service
  (
    umask 077
    printf '# Written by bluegreen: what %s runs.\n' "$unit"
    printf 'export BG_JAR=%q BG_PORT=%q BG_SLOT=%q BG_HOST=%q BG_DIR=%q\n' "$BG_JAR" "$BG_PORT" "$BG_SLOT" "$BG_HOST" "$BG_DIR"
    printf 'cd -- %q\n' "$PWD"
    printf 'exec bash -c %q\n' "$command"
  ) >"$dir/app.sh.tmp"
  mv -f -- "$dir/app.sh.tmp" "$dir/app.sh"
  if [ "$scope" = user ]; then
    printf 'user %s\n' "$unit" >"$dir/app.unit"
  else
    printf '%s\n' "$unit" >"$dir/app.unit"
  fi
  bg_systemctl reset-failed -- "$unit" 2>/dev/null || true
  bg_systemctl start -- "$unit" || bg_exited "$dir" "$slot" "as soon as systemd started it"
  BG_NAPPED=0
  while ! bg_port_busy "$port"; do
    bg_unit_show "$unit"
    if [ "$BG_RESTARTS" -gt 0 ] || [ "$BG_ACTIVE" = failed ] || [ "$BG_ACTIVE" = inactive ]; then
      bg_exited "$dir" "$slot" "right after it started"
    fi
    [ "$BG_NAPPED" -ge "$BG_START_WAIT_MS" ] && break
    bg_nap
  done
  bg_systemctl enable --quiet -- "$unit" || bg_die "systemctl could not enable $unit"
  bg_unit_show "$unit"
  echo "started $slot on port $port as pid $BG_MAINPID ($unit, enabled)"
}

# Fails saying that the slot's instance has exited WHEN, with its exit status and its log's last
# lines. A systemd unit is stopped and disabled first, so that systemd does not start it again.
bg_exited() {
  local dir=$1 code
  if bg_unit_of "$dir"; then
    bg_unit_show "$BG_UNIT"
    code=$BG_STATUS
    bg_systemctl disable --now --quiet -- "$BG_UNIT" 2>/dev/null || true
    rm -f -- "$dir/app.unit"
  else
    code=$(cat -- "$dir/app.exit" 2>/dev/null || true)
  fi
  rm -f -- "$dir/app.pid"
  tail -n 10 -- "$dir/app.log" >&2 || true
  bg_die "the $2 instance exited $3 with status ${code:-unknown} (log: $dir/app.log)"
}

# alive SLOT_DIR SLOT: fails, with the exit status and the log's last lines, when the slot's
# instance is no longer running (a new instance that died while it was health-checked).
bg_alive() {
  local pid
  if bg_unit_of "$1"; then
    bg_unit_show "$BG_UNIT"
    if [ "$BG_RESTARTS" -gt 0 ]; then
      bg_exited "$1" "$2" "while it was health-checked (systemd had restarted it: $BG_RESTARTS restarts)"
    fi
  fi
  if pid=$(bg_slot_pid "$1"); then
    echo "alive $pid"
  else
    bg_exited "$1" "$2" "while it was health-checked"
  fi
}

# probe URL STATUS BODY TIMEOUT_SECS: one health probe sent from this host; prints the status.
bg_probe() {
  local url=$1 want=$2 body=$3 timeout=$4 out code
  out=$(mktemp)
  code=$(curl -s -g -o "$out" -w '%{http_code}' --max-time "$timeout" -- "$url" || true)
  if [ "$code" = "$want" ] && { [ -z "$body" ] || grep -qF -- "$body" "$out"; }; then
    rm -f -- "$out"
    echo "ok $code"
  else
    rm -f -- "$out"
    echo "bad ${code:-000}"
  fi
}

# hook DIR TIMEOUT_SECS COMMAND [NAME VALUE]...: runs a hook's COMMAND (bash text) in DIR (the home
# directory when DIR does not exist), with each NAME=VALUE in its environment (a file secret's
# `@NAME BASE64` as NAME holding the path of a temporary copy of its content), its output and errors
# on standard output. After TIMEOUT_SECS its processes get SIGTERM, and SIGKILL 5 s later. The same
# function runs a hook on the runner (bash runs this library there, the environment already in its
# own), so a hook runs one way wherever it runs.
bg_hook() {
  local dir=$1 timeout=$2 command=$3 status=0 files=""
  shift 3
  while [ "$#" -ge 2 ]; do
    if [ "${1#@}" != "$1" ]; then
      # A file secret: its content in a file of a directory only the deploy user reads, removed
      # once the hook is done.
      [ -n "$files" ] || files=$(umask 077 && mktemp -d "${TMPDIR:-/tmp}/bluegreen-hook.XXXXXX")
      bg_secret_put "$files/${1#@}" "$2"
      export "${1#@}=$files/${1#@}"
    else
      export "$1=$2"
    fi
    shift 2
  done
  cd -- "$dir" 2>/dev/null || cd
  timeout -k 5 "$timeout" bash -c "$command" </dev/null 2>&1 8>&- 9>&- || status=$?
  [ -z "$files" ] || rm -rf -- "$files"
  case $status in
    0) echo "hook ok" ;;
    124) bg_die "hook timed out after ${timeout}s (it was stopped)" ;;
    137) bg_die "hook was killed (SIGKILL: it did not stop within 5s of its ${timeout}s timeout, or something else killed it)" ;;
    *) bg_die "hook exited with status $status" ;;
  esac
}

# bg_put FILE TEXT SUDO: replaces FILE by TEXT atomically (a temporary file of a name no other run
# uses, beside it, renamed over it).
bg_put() {
  local file=$1 text=$2 sudo=$3 tmp
  tmp="$file.bluegreen-$BASHPID-$RANDOM"
  printf '%s' "$text" | bg_run "$sudo" tee -- "$tmp" >/dev/null || {
    bg_run "$sudo" rm -f -- "$tmp"
    return 1
  }
  bg_run "$sudo" mv -f -- "$tmp" "$file"
}

# bg_restore FILE EXISTED TEXT SUDO: puts the upstream file back as it was before the switch.
bg_restore() {
  if [ "$2" = yes ]; then bg_put "$1" "$3" "$4"; else bg_run "$4" rm -f -- "$1"; fi
}

# switch STATE_DIR UPSTREAM_FILE SUDO TEST_CMD RELOAD_CMD BLUE GREEN PORT HEADER ADDRESS...: points
# nginx at PORT on every app host. The file is rewritten from what it holds now (see
# BG_UPSTREAM_AWK), written beside the old one and renamed over it, then tested: if the test fails,
# the previous file is put back and nginx is never reloaded (exit 1). Once the reload is sent, a
# later failure (nginx not replacing its workers in time) puts the previous file back and reloads
# again (exit 3: nginx may have sent requests to PORT meanwhile). Switches on one proxy take turns
# (flock on STATE_DIR/switch.lock), so a switch back cannot interleave with a switch still running.
bg_switch() {
  local dir=$1 file=$2 sudo=$3 test_cmd=$4 reload_cmd=$5 blue=$6 green=$7 port=$8 header=$9 out
  shift 9
  local -a test_words reload_words workers=()
  # Once begun, the switch runs to its end (or its undo) even if the runner dies and takes the
  # connection with it: a half-done switch is what must never be left behind.
  trap '' HUP PIPE
  read -r -a test_words <<<"$test_cmd"
  read -r -a reload_words <<<"$reload_cmd"
  mkdir -p -- "$dir"
  exec 9>>"$dir/switch.lock"
  flock -w 25 9 || bg_die "another switch of this upstream is still running (flock $dir/switch.lock)"
  local old="" existed new
  existed=$(bg_upstream_exists "$file" "$sudo") || exit 1
  old=$(bg_read_upstream "$file" "$sudo" && printf x) || exit 1
  old=${old%x}
  new=$(printf '%s' "$old" | awk -v mode=rewrite -v file="$file" -v blue="$blue" -v green="$green" \
    -v port="$port" -v header="$header" -v addrs="$*" "$BG_UPSTREAM_AWK" && printf x) || exit 1
  new=${new%x}
  bg_put "$file" "$new" "$sudo" || bg_die "cannot write $file"
  if ! out=$(bg_run "$sudo" "${test_words[@]}" 2>&1); then
    bg_restore "$file" "$existed" "$old" "$sudo"
    bg_die "'$test_cmd' failed, previous upstream file restored, nginx not reloaded: $out"
  fi
  mapfile -t workers < <(bg_nginx_workers)
  if ! out=$(bg_run "$sudo" "${reload_words[@]}" 2>&1); then
    bg_restore "$file" "$existed" "$old" "$sudo"
    bg_die "'$reload_cmd' failed, previous upstream file restored: $out"
  fi
  if ! bg_reloaded "${workers[@]}"; then
    bg_restore "$file" "$existed" "$old" "$sudo"
    mapfile -t workers < <(bg_nginx_workers)
    if bg_run "$sudo" "${reload_words[@]}" >/dev/null 2>&1 && bg_reloaded "${workers[@]}"; then
      printf 'bluegreen: nginx did not replace its workers within 10s of %s (see its error log): previous upstream file restored and nginx reloaded again\n' "'$reload_cmd'" >&2
    else
      printf 'bluegreen: nginx did not replace its workers within 10s of %s (see its error log), nor after the previous upstream file was restored and nginx reloaded again\n' "'$reload_cmd'" >&2
    fi
    exit 3
  fi
  echo "upstream switched to port $port and nginx reloaded"
}

# Prints "PID PPID" of every nginx worker that serves requests (not one already shutting down).
bg_nginx_workers() {
  local pid stat
  for pid in $(pgrep -f '^nginx: worker process$' 2>/dev/null || true); do
    # The parent pid: the second field after the command name in /proc/PID/stat.
    stat=""
    { IFS= read -r stat <"/proc/$pid/stat"; } 2>/dev/null || [ -n "$stat" ] || continue
    stat=${stat##*) }
    stat=${stat#* }
    printf '%s %s\n' "$pid" "${stat%% *}"
  done
}

# reloaded "PID PPID"...: `nginx -s reload` only signals the master, which loads the new config and
# replaces its workers later. Waits (up to 10 s) until some master has no worker left from before
# the reload that still serves: from then on every request uses the new upstream.
bg_reloaded() {
  [ "$#" -gt 0 ] || return 0
  local entry pid ppid cmdline
  local -A serving
  BG_NAPPED=0
  while :; do
    serving=()
    for entry in "$@"; do
      serving[${entry#* }]=${serving[${entry#* }]:-0}
    done
    for entry in "$@"; do
      pid=${entry% *} ppid=${entry#* }
      # The kernel's copy of the worker's title: "nginx: worker process", NUL-terminated.
      cmdline=""
      IFS= read -r -d '' cmdline <"/proc/$pid/cmdline" 2>/dev/null || true
      if [ "$cmdline" = "nginx: worker process" ]; then
        serving[$ppid]=1
      fi
    done
    for ppid in "${!serving[@]}"; do
      [ "${serving[$ppid]}" = 0 ] && return 0
    done
    [ "$BG_NAPPED" -ge 10000 ] && return 1
    bg_nap
  done
}

# settle DEADLINE_SECS: waits until nginx workers from before the reload have exited (they may
# still be sending requests to the old slot), or the deadline passes.
bg_settle() {
  local deadline=$1
  BG_NAPPED=0
  while pgrep -f 'nginx: worker process is shutting down' >/dev/null 2>&1; do
    if [ "$BG_NAPPED" -ge $((deadline * 1000)) ]; then
      echo "old nginx workers still running after ${deadline}s"
      return 0
    fi
    bg_nap
  done
  echo "old nginx workers gone after $(bg_napped)s"
}

# record STATE_DIR APP LIVE PREVIOUS RELEASE DEPLOYER: writes the state file atomically. The release
# record STATE_DIR APP LIVE PREVIOUS RELEASE DEPLOYER: writes the state file atomically, then drops
# the intent the switch was made under. The release that was live until now is kept as
# previous_release: the one a rollback may go back to.
bg_record() {
  local dir=$1 before="" now
  mkdir -p -- "$dir"
  [ -f "$dir/state" ] && before=$(sed -n 's/^release=//p' "$dir/state")
  bg_utc now
  printf 'app=%s\nlive=%s\nprevious=%s\nrelease=%s\nprevious_release=%s\ntime=%s\ndeployer=%s\n' \
    "$2" "$3" "$4" "$5" "$before" "$now" "$6" >"$dir/state.tmp"
  mv -f -- "$dir/state.tmp" "$dir/state"
  rm -f -- "$dir/intent"
  echo "state recorded: live=$3 previous=$4"
}

# intent STATE_DIR TOKEN TARGET FROM RELEASE DEPLOYER: written ahead of the switch: what this run is
# about to make live, so that a run that dies before `record` leaves enough for the next one to
# know what is live and what was before (bg_reconcile).
bg_intent() {
  local now
  mkdir -p -- "$1"
  bg_utc now
  printf 'token=%s\ntarget=%s\nfrom=%s\nrelease=%s\ndeployer=%s\ntime=%s\n' \
    "$2" "$3" "$4" "$5" "$6" "$now" >"$1/intent.tmp"
  mv -f -- "$1/intent.tmp" "$1/intent"
  echo "intent recorded: switch to $3"
}

# reconcile STATE_DIR APP LIVE SUDO TEST_CMD RELOAD_CMD: after a run died between its intent and its
# record (LIVE: the slot the upstream file names now). If the upstream names the intended slot, the
# switch happened: the state file is brought up to date. Otherwise it did not (or was undone): the
# intent is dropped. Either way nginx is made to serve what the file says (the run may have died
# between writing the file and reloading), under the switch's flock.
bg_reconcile() {
  local dir=$1 app=$2 live=$3 sudo=$4 test_cmd=$5 reload_cmd=$6 target from release deployer out
  [ -f "$dir/intent" ] || { echo "no interrupted switch to reconcile"; return 0; }
  local -a test_words reload_words
  read -r -a test_words <<<"$test_cmd"
  read -r -a reload_words <<<"$reload_cmd"
  exec 9>>"$dir/switch.lock"
  flock -w 25 9 || bg_die "a switch of this upstream is still running (flock $dir/switch.lock)"
  target=$(sed -n 's/^target=//p' "$dir/intent")
  from=$(sed -n 's/^from=//p' "$dir/intent")
  release=$(sed -n 's/^release=//p' "$dir/intent")
  deployer=$(sed -n 's/^deployer=//p' "$dir/intent")
  out=$(bg_run "$sudo" "${test_words[@]}" 2>&1) || bg_die "'$test_cmd' fails, so nginx cannot be made to serve the upstream file: $out"
  out=$(bg_run "$sudo" "${reload_words[@]}" 2>&1) || bg_die "'$reload_cmd' failed: $out"
  if [ "$live" = "$target" ]; then
    bg_record "$dir" "$app" "$target" "$from" "$release" "$deployer" >/dev/null
    bg_audit "$dir" reconcile "$app" "recorded the switch of ${deployer:-an interrupted run}" "$target" "$from" "$release" "$deployer" >/dev/null
    echo "reconciled: ${deployer:-an interrupted run} switched to $target and stopped before recording it; state file updated"
  else
    rm -f -- "$dir/intent"
    echo "reconciled: ${deployer:-an interrupted run} did not switch to $target (the upstream names ${live}); its intent dropped"
  fi
}

# revive SLOT_DIR SLOT PORT HOST JAR_NAME SIGNAL GRACE_SECS COMMAND LIVE_PORT SUPERVISOR APP RELEASE [NAME VALUE]...: for a rollback, makes
# sure the slot's instance of RELEASE runs: kept as it is when still running (retained), restarted
# from the jar kept in its directory otherwise. Refuses when the slot holds another release (a later
# deploy into it failed or was rejected): that is nothing safe to go back to.
bg_revive() {
  local dir=$1 slot=$2 jar=$5 want=${12} have="" pid
  [ -f "$dir/release" ] && have=$(cat -- "$dir/release")
  if [ "$have" != "$want" ]; then
    # Not in the slot (a later deploy into it failed, or an older release was asked for): from
    # the host's kept releases, when it is there.
    if [ -f "${dir%/*}/releases/$want" ]; then
      if bg_unit_of "$dir" || bg_slot_pid "$dir" >/dev/null; then
        bg_stop "$dir" "$3" "$6" "$7"
      fi
      mkdir -p -- "$dir"
      if ! [ "${dir%/*}/releases/$want" -ef "$dir/$jar" ]; then
        ln -f -- "${dir%/*}/releases/$want" "$dir/$jar.tmp" 2>/dev/null || cp -f -- "${dir%/*}/releases/$want" "$dir/$jar.tmp"
        mv -f -- "$dir/$jar.tmp" "$dir/$jar"
      fi
      printf '%s\n' "$want" >"$dir/release.tmp"
      mv -f -- "$dir/release.tmp" "$dir/release"
      echo "restored release $want from ${dir%/*}/releases into the $slot slot"
    else
      bg_die "the $slot slot holds release '${have:-none}', not release '$want', and ${dir%/*}/releases does not keep it: nothing safe to roll back to"
    fi
  fi
  if pid=$(bg_slot_pid "$dir"); then
    echo "$slot still running as pid $pid"
    return 0
  fi
  [ -f "$dir/$jar" ] || bg_die "no release kept in $dir: nothing to roll back to"
  bg_start "${@:1:11}" "${@:13}"
}

# release STATE_DIR [WANT]: prints the release to roll back to. Without WANT: the one that was live
# before the last switch (from the state file). With WANT: the release of a deploy or rollback the
# audit log records as a success whose release starts with WANT or whose time does (one release
# only; not the live one).
bg_release() {
  local release="" want=${2:-} line time rel live="" found=""
  if [ -n "$want" ]; then
    [ -f "$1/state" ] && live=$(sed -n 's/^release=//p' "$1/state")
    [ -f "$1/audit.log" ] || bg_die "no audit log in $1: no release to roll back to"
    while IFS= read -r line; do
      case $line in *'"outcome":"success"'*) ;; *) continue ;; esac
      case $line in *'"event":"deploy"'* | *'"event":"rollback"'*) ;; *) continue ;; esac
      time=${line#*'"time":"'}
      time=${time%%'"'*}
      rel=${line#*'"release":"'}
      rel=${rel%%'"'*}
      [ -n "$rel" ] || continue
      case $rel in "$want"*) ;; *) case $time in "$want"*) ;; *) continue ;; esac ;; esac
      case " $found " in *" $rel "*) ;; *) found="${found:+$found }$rel" ;; esac
    done <"$1/audit.log"
    case $found in
      '') bg_die "no successful deploy in the audit log has a release or a time starting with '$want' (\`bluegreen releases\` lists them)" ;;
      *' '*) bg_die "'$want' matches several releases ($found): give more of the time, or the release's sha" ;;
    esac
    [ "$found" != "$live" ] || bg_die "release $found is the live one: nothing to roll back to"
    echo "$found"
    return 0
  fi
  [ -f "$1/state" ] && release=$(sed -n 's/^previous_release=//p' "$1/state")
  [ -n "$release" ] || bg_die "no previous release recorded in $1/state: nothing to roll back to"
  echo "$release"
}

# bg_json VAR VALUE: sets VAR to VALUE as a JSON string: quotes, backslashes and control characters
# escaped.
bg_json() {
  local s=$2
  # Control characters other than tab and newline are dropped (listed one by one: a range would
  # depend on the locale's collation).
  s=${s//[$'\001\002\003\004\005\006\007\010\013\014\015\016\017\020\021\022\023\024\025\026\027\030\031\032\033\034\035\036\037']/}
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\t'/\\t}
  s=${s//$'\n'/\\n}
  printf -v "$1" '"%s"' "$s"
}

# audit STATE_DIR EVENT APP OUTCOME TARGET FROM RELEASE DEPLOYER: appends one JSON line to the audit
# log: what happened (deploy, rollback, retire, lock-break), how it ended, the slot it targeted, the
# slot that was live before, the release, and who.
bg_audit() {
  local dir=$1 now i
  local -a f
  mkdir -p -- "$dir"
  bg_utc now
  bg_json "f[0]" "$now"
  for i in 2 3 4 5 6 7 8; do
    bg_json "f[$((i - 1))]" "${!i}"
  done
  printf '{"time":%s,"event":%s,"app":%s,"outcome":%s,"target":%s,"from":%s,"release":%s,"deployer":%s}\n' \
    "${f[@]}" >>"$dir/audit.log"
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
    if bg_unit_of "$dir"; then
      bg_unit_show "$BG_UNIT"
      printf '%s.unit=%s\n%s.unit_scope=%s\n%s.unit_enabled=%s\n%s.restarts=%s\n' "$slot" "$BG_UNIT" \
        "$slot" "$BG_UNIT_SCOPE" "$slot" "$BG_ENABLED" "$slot" "$BG_RESTARTS"
    fi
  done
}

# proxystatus STATE_DIR DETECT_ARGS...: key=value lines about the proxy: the slot the upstream file
# points at (`unknown`, with the reason, when bg_detect refuses the file), the state file, the lock.
bg_proxystatus() {
  local dir=$1 live
  shift
  if live=$( (bg_detect "$@") 2>&1); then
    printf 'upstream.live=%s\n' "$live"
  else
    printf 'upstream.live=unknown\nupstream.error=%s\n' "$(printf '%s\n' "$live" | tail -n 1)"
  fi
  printf 'now=%s\n' "$(date +%s)"
  if [ -f "$dir/state" ]; then sed 's/^/state./' "$dir/state"; fi
  if [ -f "$dir/intent" ]; then sed 's/^/intent./' "$dir/intent"; fi
  if [ -d "$dir/lock" ]; then
    printf 'lock.held=yes\nlock.since=%s\n' "$(stat -c %Y -- "$dir/lock")"
    if [ -f "$dir/lock/info" ]; then sed 's/^/lock./' "$dir/lock/info"; fi
  else
    printf 'lock.held=no\n'
  fi
}

# breaklock STATE_DIR WHO APP TOKEN: removes the deploy lock whoever holds it, if it is still the
# lock read before (TOKEN; empty: any), and says so in the audit log.
bg_breaklock() {
  local dir=$1 holder="" token
  bg_lock_mutex "$dir"
  [ -d "$dir/lock" ] || { echo "lock was not held"; return 0; }
  holder=$(bg_lock_field "$dir" holder)
  token=$(bg_lock_field "$dir" token)
  if [ -n "${4:-}" ] && [ "$token" != "$4" ]; then
    bg_die "the deploy lock changed hands since it was read (now held by ${holder:-unknown}): left in place"
  fi
  rm -rf -- "$dir/lock"
  bg_audit "$dir" lock-break "$3" "removed lock of ${holder:-unknown}" "" "" "" "$2" >/dev/null
  echo "lock of ${holder:-unknown} removed"
}

# The checks of `bluegreen check --remote` and `bluegreen setup`: one line per check, TAB-separated:
# STATUS (ok, fixed, warn, problem), what was found, and for a problem the fix.
bg_check_line() {
  printf '%s\t%s\t%s\n' "$1" "$2" "${3:-}"
}

# checkhost DEPLOY_DIR BLUE_PORT GREEN_PORT PROGRAM NEED_CURL SUPERVISOR APP FIX: checks an app host:
# the slots' directories (created when FIX is `yes`), the start command's program, curl (needed
# when health is probed from the host), what holds each slot's port (a process bluegreen did not
# start: a hand-written deployment to take over), and for `supervisor: systemd` systemd and the
# sudo rights (`systemd-user`: lingering, which FIX enables). Changes nothing but the directories
# and lingering.
bg_checkhost() {
  local base=$1 blue=$2 green=$3 program=$4 need_curl=$5 supervisor=$6 app=$7 fix=$8 slot port pid holder me
  me=$(id -un)
  for slot in blue green; do
    if [ -d "$base/$slot" ]; then
      if [ -w "$base/$slot" ]; then
        bg_check_line ok "$base/$slot exists, writable by $me"
      else
        bg_check_line problem "$base/$slot is not writable by $me" "sudo chown $me -- $base/$slot"
      fi
    elif [ "$fix" = yes ] && mkdir -p -- "$base/$slot" 2>/dev/null; then
      bg_check_line fixed "created $base/$slot"
    elif [ "$fix" = yes ]; then
      bg_check_line problem "$base/$slot cannot be created by $me" "sudo install -d -o $me -- $base/$slot"
    else
      bg_check_line problem "$base/$slot does not exist" "bluegreen setup (or: mkdir -p -- $base/$slot)"
    fi
  done
  if [ -z "$program" ]; then
    :
  elif command -v -- "$program" >/dev/null 2>&1; then
    bg_check_line ok "the start command's program $program is $(command -v -- "$program")"
  else
    bg_check_line problem "the start command's program $program is not found on $me's PATH ($PATH)" \
      "install it (Debian: apt-get install default-jre-headless for java), or name it by its full path in start:"
  fi
  if command -v curl >/dev/null 2>&1; then
    bg_check_line ok "curl is $(command -v curl)"
  elif [ "$need_curl" = yes ]; then
    bg_check_line problem "curl is missing (health.from: host probes with it)" "apt-get install curl"
  else
    bg_check_line warn "curl is missing (only health.from: host and hooks that use it need it)" "apt-get install curl"
  fi
  for slot in blue green; do
    if [ "$slot" = blue ]; then port=$blue; else port=$green; fi
    if pid=$(bg_slot_pid "$base/$slot"); then
      bg_check_line ok "port $port: the $slot instance bluegreen started (pid $pid)"
    elif bg_port_busy "$port"; then
      holder=""
      if command -v ss >/dev/null 2>&1; then
        holder=$(ss -Hltnp "sport = :$port" 2>/dev/null | sed -n 's/.*users:((\(.*\))).*/\1/p' | head -n 1)
      fi
      bg_check_line problem "port $port (the $slot slot's) is held by a process bluegreen did not start${holder:+: $holder}" \
        "a hand-written deployment? Take it over without downtime: let proxy.upstream_file be the file that points nginx at it, so that the first deploy starts on the other port and switches there; then \`bluegreen takeover --port $port\` stops the old process"
    else
      bg_check_line ok "port $port (the $slot slot's) is free"
    fi
  done
  case $supervisor in systemd | systemd-user) ;; *) return 0 ;; esac
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    bg_check_line ok "systemd is this host's init"
  else
    bg_check_line problem "supervisor: $supervisor, but systemd is not this host's init" "use supervisor: none on this host's config, or run it under systemd"
  fi
  if [ "$supervisor" = systemd-user ]; then
    # The deploy user's own systemd runs its units: lingering starts it at boot and keeps it
    # running without a session.
    if [ -e "/var/lib/systemd/linger/$me" ]; then
      bg_check_line ok "lingering is on for $me"
    elif [ "$fix" = yes ] && { loginctl enable-linger "$me" 2>/dev/null || sudo -n loginctl enable-linger "$me" 2>/dev/null; }; then
      bg_check_line fixed "enabled lingering for $me (its systemd starts at boot)"
    else
      bg_check_line problem "lingering is off for $me: its units would not start at boot" "sudo loginctl enable-linger $me (or let $me run it: the README's \"Running under systemd\")"
      return 0
    fi
    # Lingering just enabled: logind starts the user's systemd soon after.
    local i
    for i in 1 2 3 4 5 6 7 8 9 10; do
      bg_user_systemctl show-environment >/dev/null 2>&1 && break
      sleep 0.5
    done
    if bg_user_systemctl show-environment >/dev/null 2>&1; then
      bg_check_line ok "$me's systemd runs (user@$(id -u).service)"
    else
      bg_check_line problem "$me's systemd does not run although lingering is on" "install libpam-systemd (what starts a user's systemd, on Debian), then: sudo systemctl restart user@$(id -u).service; \`systemctl status user@$(id -u).service\` says why it failed"
    fi
    return 0
  fi
  if [ "$(id -u)" = 0 ] || sudo -n -l -- /usr/bin/systemctl daemon-reload >/dev/null 2>&1; then
    bg_check_line ok "$me may run systemctl as root"
  else
    bg_check_line problem "$me may not run \`sudo -n systemctl\`" "add the sudoers lines of the README's \"Running under systemd\" (for app $app)"
  fi
}

# checkproxy STATE_DIR UPSTREAM_FILE UPSTREAM_NAME SUDO DUMP_COMMAND APP FIX: checks the proxy: the
# state directory (created, owned by the deploy user, when FIX is `yes`: under `sudo -n` when SUDO
# is `yes`), the managed upstream file (written with a placeholder server when missing), and, in
# the configuration nginx dumps (DUMP_COMMAND: `nginx -T`), an `upstream UPSTREAM_NAME` block that
# includes it; when there is none, the exact snippet to add.
bg_checkproxy() {
  local dir=$1 file=$2 name=$3 sudo=$4 dump_cmd=$5 app=$6 fix=$7 me out exists
  me=$(id -un)
  if [ "$sudo" = yes ]; then
    # Listing needs no password when an entry is NOPASSWD (sudoers' listpw=any, the default).
    if sudo -n -l >/dev/null 2>&1; then
      bg_check_line ok "$me may use sudo -n (proxy.sudo)"
    else
      bg_check_line problem "proxy.sudo is set, but $me may not use \`sudo -n\`" "allow it in sudoers (NOPASSWD) for the proxy's test, reload and file commands, or unset proxy.sudo"
    fi
  fi
  if [ -d "$dir" ] && [ -w "$dir" ]; then
    bg_check_line ok "state directory $dir exists, writable by $me"
  elif [ "$fix" = yes ] && mkdir -p -- "$dir" 2>/dev/null; then
    bg_check_line fixed "created state directory $dir"
  elif [ "$fix" = yes ] && [ "$sudo" = yes ] && sudo -n -- install -d -o "$me" -m 755 -- "$dir" 2>/dev/null; then
    bg_check_line fixed "created state directory $dir, owned by $me (sudo)"
  elif [ -d "$dir" ]; then
    bg_check_line problem "state directory $dir is not writable by $me" "sudo chown $me -- $dir"
  else
    bg_check_line problem "state directory $dir does not exist and $me cannot create it" \
      "sudo install -d -o $me -- $dir (or bluegreen setup with proxy.sudo: true)"
  fi
  if ! exists=$( (bg_upstream_exists "$file" "$sudo") 2>&1); then
    bg_check_line problem "${exists#bluegreen: }" "let $me search $(dirname -- "$file"), or set proxy.sudo: true"
  elif [ "$exists" = yes ]; then
    bg_check_line ok "upstream file $file exists"
  elif [ "$fix" = yes ] && bg_put "$file" "# managed by bluegreen for $app
server 127.0.0.1:9 down;
" "$sudo" 2>/dev/null; then
    bg_check_line fixed "wrote $file with a placeholder server (nginx needs one in an upstream block; the first deploy replaces it)"
  else
    bg_check_line problem "upstream file $file does not exist" "bluegreen setup (it writes one with the placeholder \`server 127.0.0.1:9 down;\`)"
  fi
  local -a words
  read -r -a words <<<"$dump_cmd"
  if ! out=$(bg_run "$sudo" "${words[@]}" 2>&1); then
    bg_check_line problem "'$dump_cmd' failed: $(printf '%s\n' "$out" | tail -n 3 | tr '\n' ' ')" "fix nginx's configuration (nginx -t says what is wrong), or set proxy.sudo: true if it needs root"
    return 0
  fi
  # In the dump, the upstream block NAME and an include of FILE inside it.
  local found
  found=$(printf '%s\n' "$out" | awk -v name="$name" -v file="$file" '
    { sub(/#.*/, "") }
    !inside && $1 == "upstream" && ($2 == name || $2 == name "{") { inside = 1; depth = 0 }
    inside {
      if ($1 == "include") { inc = $2; sub(/;$/, "", inc); if (inc == file) seen = 1 }
      n = gsub(/\{/, "{"); m = gsub(/\}/, "}"); depth += n - m
      if (depth <= 0 && (n || m)) { inside = 0; blocks++ }
    }
    END { if (seen) print "included"; else if (blocks) print "block"; else print "none" }')
  case $found in
    included) bg_check_line ok "nginx's upstream $name includes $file" ;;
    block) bg_check_line problem "nginx's upstream $name does not include $file" "put the line  include $file;  inside  upstream $name { ... }  in place of its server lines, then reload nginx" ;;
    *) bg_check_line problem "nginx has no upstream $name" "add  upstream $name { include $file; }  in the http block, and  proxy_pass http://$name;  in the location that serves the app, then reload nginx" ;;
  esac
}

# bg_proc_field PID N: field N of /proc/PID/stat, counted after the command name (1: the state,
# 4: the session), which may hold spaces and parentheses.
bg_proc_field() {
  local stat="" n=$2
  { IFS= read -r stat <"/proc/$1/stat"; } 2>/dev/null || [ -n "$stat" ] || return 1
  stat=${stat##*) }
  # shellcheck disable=SC2086
  set -- $stat
  [ -n "${!n:-}" ] || return 1
  printf '%s\n' "${!n}"
}

# stopforeign DEPLOY_DIR BLUE_PORT GREEN_PORT PORT SIGNAL GRACE_SECS [PID LIVE_PORT]: `bluegreen
# takeover`: stops the process bluegreen did not start that listens on PORT (a hand-written
# deployment's, once traffic is off it): SIGNAL, then SIGKILL after GRACE_SECS; then waits until
# PORT is free. With PID: that process, wherever it listens, unless it listens on LIVE_PORT (where
# the proxy sends traffic); then waits until it is gone. Never a slot's instance (that is
# `retire`'s, or a deploy's), never a process the deploy user cannot signal.
bg_stopforeign() {
  local base=$1 blue=$2 green=$3 port=$4 signal=$5 grace=$6 slot slot_port pids killed=""
  if [ -n "${7:-}" ]; then
    bg_stopforeign_pid "$base" "$7" "${8:-}" "$signal" "$grace"
    return
  fi
  for slot in blue green; do
    if [ "$slot" = blue ]; then slot_port=$blue; else slot_port=$green; fi
    if [ "$slot_port" = "$port" ] && bg_slot_pid "$base/$slot" >/dev/null; then
      bg_die "port $port is the $slot instance bluegreen started: a deploy or \`bluegreen retire\` stops it, not takeover"
    fi
  done
  if ! bg_port_busy "$port"; then
    echo "port $port is free: nothing to stop"
    return 0
  fi
  command -v ss >/dev/null 2>&1 || bg_die "ss (iproute2) is needed to find the process on port $port"
  pids=$(ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u | tr '\n' ' ')
  pids=${pids% }
  [ -n "$pids" ] || bg_die "port $port is held by a process $(id -un) cannot see (another user's): stop it as that user, or as root"
  # shellcheck disable=SC2086
  kill -s "$signal" $pids 2>/dev/null || true
  BG_NAPPED=0
  while bg_port_busy "$port"; do
    if [ -z "$killed" ] && [ "$BG_NAPPED" -ge $((grace * 1000)) ]; then
      # shellcheck disable=SC2086
      kill -s KILL $pids 2>/dev/null || true
      killed=yes
      echo "pid $pids still listening after ${grace}s: sent SIGKILL"
    fi
    [ "$BG_NAPPED" -lt $(((grace + 10) * 1000)) ] || bg_die "port $port is still held 10s after SIGKILL"
    bg_nap
  done
  echo "stopped pid $pids (port $port) after $(bg_napped)s"
}

# bg_stopforeign_pid DEPLOY_DIR PID LIVE_PORT SIGNAL GRACE_SECS: stopforeign's PID form.
bg_stopforeign_pid() {
  local base=$1 pid=$2 live=$3 signal=$4 grace=$5 sid slot own killed="" owner st
  case "$pid" in '' | *[!0-9]*) bg_die "pid $pid is not a process id" ;; esac
  sid=$(bg_proc_field "$pid" 4) || bg_die "no process $pid on this host: nothing to stop"
  if ! kill -0 "$pid" 2>/dev/null; then
    owner=$(stat -c %U "/proc/$pid" 2>/dev/null) || owner="another user"
    bg_die "process $pid is $owner's, not $(id -un)'s: stop it as that user, or as root"
  fi
  for slot in blue green; do
    own=$(bg_slot_pid "$base/$slot") || continue
    if [ "$own" = "$pid" ] || [ "$(bg_proc_field "$own" 4)" = "$sid" ]; then
      bg_die "process $pid is the $slot instance bluegreen started: a deploy or \`bluegreen retire\` stops it, not takeover"
    fi
  done
  if grep -q 'bluegreen-.*@.*[.]service' "/proc/$pid/cgroup" 2>/dev/null; then
    bg_die "process $pid runs in a unit bluegreen installed: a deploy or \`bluegreen retire\` stops it, not takeover"
  fi
  if [ -n "$live" ] && command -v ss >/dev/null 2>&1 &&
    ss -Hltnp "sport = :$live" 2>/dev/null | grep -q "pid=$pid,"; then
    bg_die "process $pid listens on port $live, where the proxy sends traffic: deploy first, so that bluegreen's slot serves, then take over"
  fi
  kill -s "$signal" "$pid" 2>/dev/null || true
  BG_NAPPED=0
  # Gone, or a zombie (it has exited; its parent has not reaped it yet).
  while st=$(bg_proc_field "$pid" 1) && [ "$st" != Z ]; do
    if [ -z "$killed" ] && [ "$BG_NAPPED" -ge $((grace * 1000)) ]; then
      kill -s KILL "$pid" 2>/dev/null || true
      killed=yes
      echo "pid $pid still running after ${grace}s: sent SIGKILL"
    fi
    [ "$BG_NAPPED" -lt $(((grace + 10) * 1000)) ] || bg_die "pid $pid still runs 10s after SIGKILL"
    bg_nap
  done
  echo "stopped pid $pid after $(bg_napped)s"
}

# serve: runs one call after another on this one shell, so the library is read once per
# connection, not once per call. Each call arrives on standard input ended by a NUL byte (a call
# line never holds one) and runs in a subshell of its own, as a fresh `bash -s` would run it: with
# errexit, its standard input from /dev/null, the locale the shell was started with, and no
# variable or trap left over from the call before. Its output is kept in files (so an instance it
# starts never holds the channel open, and a runner that goes away cannot cut the call short) and
# then sent as one frame on standard output: "STATUS OUT_BYTES ERR_BYTES\n", the output, the errors.
bg_serve() {
  local call status out err tmp had_lc=${LC_ALL+set} lc=${LC_ALL-}
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/bluegreen-shell.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf -- '$tmp'" EXIT
  trap 'exit 1' HUP PIPE TERM
  # Byte counts: the frame's lengths are in bytes whatever the host's locale.
  LC_ALL=C
  # One pipe for every call's waits (bg_sleep_ms), not one per call.
  bg_sleep_open
  while IFS= read -r -d '' call; do
    set +e
    (
      set -e
      if [ -n "$had_lc" ]; then LC_ALL=$lc; else unset LC_ALL; fi
      eval "$call"
    ) </dev/null >"$tmp/out" 2>"$tmp/err"
    status=$?
    set -e
    out="" err=""
    IFS= read -r -d '' out <"$tmp/out" || true
    IFS= read -r -d '' err <"$tmp/err" || true
    printf '%d %d %d\n%s%s' "$status" "${#out}" "${#err}" "$out" "$err"
  done
}

# main FN ARGS...: runs bg_FN with ARGS when FN is one of BG_FUNCTIONS, the functions a call may
# name. That list is not written here: bluegreen adds it after this text, from its own list of
# remote functions, so a call can name only what bluegreen knows and no helper of the library.
bg_main() {
  local fn=$1 known
  shift
  for known in "${BG_FUNCTIONS[@]}"; do
    if [ "$known" = "$fn" ]; then
      "bg_$fn" "$@"
      return
    fi
  done
  bg_die "unknown remote function '$fn'"
}
