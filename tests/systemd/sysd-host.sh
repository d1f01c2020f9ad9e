#!/bin/bash
# sysd-host.sh up|down|ssh [cmd...]|status|reset|rebuild
# Boots a debootstrapped Debian 12 rootfs with systemd as PID 1 under systemd-nspawn
# (host PID 1 is NOT systemd: --register=no --keep-unit), own PID/mount/UTS/IPC/net/cgroup
# namespaces, network via a pre-created netns + veth (host 10.77.0.1/30 <-> 10.77.0.2).
set -u
BASE=${SYSD_BASE:-/srv/sysd-research}
ROOT=$BASE/rootfs
STATE=$BASE/state
NAME=${SYSD_NAME:-sysdhost}
NS=sysd                      # ip netns name (/run/netns/sysd)
HVETH=sysd-h                 # host side of veth
HOST_IP=10.77.0.1 CT_IP=10.77.0.2
DEBS=$BASE/bookworm-debs.tgz # debootstrap --make-tarball cache
MIRROR=http://deb.debian.org/debian
INCLUDE=systemd,systemd-sysv,openssh-server,dbus,sudo,curl,procps,iproute2,python3-minimal
KEY=$STATE/id_ed25519
GOLDEN=$BASE/rootfs-golden.tar
SSH_OPTS=(-i "$KEY" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
          -o LogLevel=ERROR -o ConnectTimeout=3 -o BatchMode=yes)
EXTRA_NSPAWN=(${SYSD_NSPAWN_EXTRA:-})   # e.g. "--bind-ro=/usr/lib/jvm"

die() { echo "sysd-host: $*" >&2; exit 1; }

build_rootfs() {
  command -v debootstrap >/dev/null || apt-get install -y debootstrap systemd-container >/dev/null
  if [ ! -f "$DEBS" ]; then
    debootstrap --variant=minbase --include=$INCLUDE --make-tarball="$DEBS" \
      bookworm "$BASE/tb-work" $MIRROR >"$BASE/make-tarball.log" 2>&1 || die "make-tarball failed"
  fi
  rm -rf "$ROOT.new"
  debootstrap --variant=minbase --include=$INCLUDE --unpack-tarball="$DEBS" \
    bookworm "$ROOT.new" $MIRROR >"$BASE/debootstrap.log" 2>&1 || die "debootstrap failed"
  provision "$ROOT.new"
  tar -C "$ROOT.new" -cf "$GOLDEN" .           # provisioned, never-booted copy for fast 'reset'
  mv "$ROOT.new" "$ROOT"
}

reset_rootfs() {  # fresh rootfs from the golden tar (~12s) instead of debootstrap (~20s)
  down >/dev/null
  [ -f "$GOLDEN" ] || { rm -rf "$ROOT"; build_rootfs; return; }
  rm -rf "$ROOT"; mkdir "$ROOT"; tar -C "$ROOT" -xf "$GOLDEN"
}

provision() {  # $1 = rootfs dir (not booted)
  local R=$1
  echo "$NAME" >"$R/etc/hostname"
  printf '127.0.0.1 localhost\n127.0.1.1 %s\n%s host\n' "$NAME" "$HOST_IP" >"$R/etc/hosts"
  : >"$R/etc/machine-id"                       # fresh id generated at first boot
  chroot "$R" useradd -m -s /bin/bash deploy 2>/dev/null || true
  echo 'deploy ALL=(ALL) NOPASSWD:ALL' >"$R/etc/sudoers.d/deploy"; chmod 440 "$R/etc/sudoers.d/deploy"
  mkdir -p "$STATE"; [ -f "$KEY" ] || ssh-keygen -q -t ed25519 -N '' -C sysd-host -f "$KEY"
  install -d -m 700 "$R/home/deploy/.ssh"
  install -m 600 "$KEY.pub" "$R/home/deploy/.ssh/authorized_keys"
  chroot "$R" chown -R deploy:deploy /home/deploy/.ssh
  printf 'PasswordAuthentication no\nUseDNS no\n' >"$R/etc/ssh/sshd_config.d/sysd.conf"
  # units that are useless in the container (none of them actually failed in tests)
  for u in getty@tty1.service console-getty.service systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer; do
    ln -sf /dev/null "$R/etc/systemd/system/$u"
  done
}

ct_pid() {  # PID (host view) of the container's systemd
  local p; p=$(cat "$STATE/nspawn.pid" 2>/dev/null) || return 1
  kill -0 "$p" 2>/dev/null || return 1
  pgrep -P "$p" -x systemd 2>/dev/null | head -1
}

net_up() {
  ip netns list | grep -qw "^$NS" || ip netns add $NS
  if ! ip link show $HVETH >/dev/null 2>&1; then
    ip link add $HVETH type veth peer name host0 netns $NS
    ip addr add $HOST_IP/30 dev $HVETH
    ip link set $HVETH up
    ip -n $NS addr add $CT_IP/30 dev host0
    ip -n $NS link set host0 up
    ip -n $NS link set lo up
    ip -n $NS route add default via $HOST_IP 2>/dev/null || true
  fi
}

net_down() {
  ip link del $HVETH 2>/dev/null || true
  ip netns del $NS 2>/dev/null || true
  # note: the /run/netns self-bind made by the first 'ip netns add' is left alone (shared with other users)
  true
}

up() {
  [ -d "$ROOT" ] || build_rootfs
  ct_pid >/dev/null && { echo "already running"; return 0; }
  net_up
  rm -f "$STATE/stop"
  # supervisor loop: nspawn exits 133 when the container does 'systemctl reboot' -> boot again.
  setsid bash -c '
    while :; do
      systemd-nspawn -q -D "$0" -M "$1" --boot --register=no --keep-unit \
        --network-namespace-path=/run/netns/'"$NS"' --console=pipe '"${EXTRA_NSPAWN[*]:-}"' \
        </dev/null >>"$2/console.log" 2>&1 &
      echo $! >"$2/nspawn.pid"; wait $!; rc=$?
      echo "nspawn exited rc=$rc $(date +%T)" >>"$2/console.log"
      [ $rc -eq 133 ] && [ ! -e "$2/stop" ] || break
    done; rm -f "$2/nspawn.pid" "$2/loop.pid"' "$ROOT" "$NAME" "$STATE" </dev/null >/dev/null 2>&1 &
  echo $! >"$STATE/loop.pid"
  wait_ssh 30
}

wait_ssh() {
  local t0=$SECONDS
  while (( SECONDS - t0 < $1 )); do
    ssh "${SSH_OPTS[@]}" deploy@$CT_IP true 2>/dev/null && { echo "up: ssh ok after $((SECONDS-t0))s"; return 0; }
    sleep 0.5
  done
  die "ssh not reachable after $1s (see $STATE/console.log)"
}

down() {
  touch "$STATE/stop"
  local np lp; np=$(cat "$STATE/nspawn.pid" 2>/dev/null); lp=$(cat "$STATE/loop.pid" 2>/dev/null)
  if [ -n "$np" ] && kill -0 "$np" 2>/dev/null; then
    kill -TERM "$np"                     # nspawn -> SIGRTMIN+3 to container PID 1 = clean halt
    for _ in $(seq 40); do kill -0 "$np" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$np" 2>/dev/null && { kill -TERM "$np"; sleep 1; kill -KILL "$np" 2>/dev/null; }
  fi
  [ -n "$lp" ] && kill -0 "$lp" 2>/dev/null && { sleep 0.5; kill "$lp" 2>/dev/null; }
  net_down
  # nspawn (host PID1 != systemd, root cgroup) creates /payload and /supervisor cgroups; rmdir only removes if empty
  for h in unified systemd; do for c in payload supervisor; do
    rmdir /sys/fs/cgroup/$h/$c/init.scope /sys/fs/cgroup/$h/$c 2>/dev/null; done; done
  rmdir /run/systemd/nspawn/propagate/$NAME 2>/dev/null   # nspawn refuses to rm it (host /run is not tmpfs)
  rm -f "$STATE/nspawn.pid" "$STATE/loop.pid"
  echo down
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  ssh) shift; exec ssh "${SSH_OPTS[@]}" deploy@$CT_IP "$@" ;;
  status) p=$(ct_pid) && { echo "pid1(host view)=$p"; nsenter -t "$p" -a -r -w systemctl is-system-running; } || echo "not running" ;;
  reset) reset_rootfs ;;                               # back to a pristine provisioned rootfs
  rebuild) down; rm -rf "$ROOT" "$GOLDEN"; build_rootfs ;;  # re-run debootstrap (from the .deb tarball)
  *) echo "usage: $0 up|down|ssh [cmd]|status|reset|rebuild" >&2; exit 2 ;;
esac
