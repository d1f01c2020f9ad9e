#!/usr/bin/env bash
# A host that runs systemd as its init, for the tests of `supervisor: systemd`, joined to a testbed
# (tests/testbed/testbed.sh) as one more app host. See README.md next to this file.
#
#   sysd-host.sh up TESTBED ADDR     boot it on TESTBED's bridge at ADDR (a free 10.251.X.N of it)
#   sysd-host.sh down TESTBED        halt it and remove its network (idempotent)
#   sysd-host.sh exec TESTBED CMD... run CMD as root inside it (nsenter into its namespaces)
#   sysd-host.sh reboot TESTBED      `systemctl reboot` inside; waits until ssh answers again
#
# systemd runs as PID 1 of its own root filesystem (a minimal Debian 12 from debootstrap, cached in
# SYSD_CACHE, default /var/cache/bluegreen-sysd), under systemd-nspawn with its own PID, mount, UTS,
# IPC, network and cgroup namespaces. It never sees this machine's / or /tmp: systemd's boot-time
# cleanup must never run on the shared root filesystem. Java comes from this machine, bound
# read-only. The deploy user (bgdeploy, the testbed's) logs in with the testbed's key and may run,
# through sudo, only what `supervisor: systemd` documents (see README.md).
# Needs root, debootstrap and systemd-container.
set -euo pipefail

readonly CACHE=${SYSD_CACHE:-/var/cache/bluegreen-sysd}
readonly DEBS=$CACHE/bookworm-debs-2.tgz
readonly GOLDEN=$CACHE/rootfs-golden-3.tar
readonly MIRROR=${SYSD_MIRROR:-http://deb.debian.org/debian}
readonly INCLUDE=systemd,systemd-sysv,libpam-systemd,openssh-server,dbus,sudo,curl,procps,iproute2
readonly USER_NAME=bgdeploy
readonly DEPLOY_DIR=/srv/bluegreen
readonly JAVA_BINDS=(--bind-ro=/usr/lib/jvm --bind-ro=/etc/java-17-openjdk --bind-ro=/etc/ssl/certs/java)

die() {
    echo "sysd-host: error: $*" >&2
    exit 1
}
log() { echo "sysd-host: $*" >&2; }

check_name() { [[ ${1:-} =~ ^[a-z0-9]{1,8}$ ]] || die "bad testbed name '${1:-}'"; }
dir_of() { echo "/tmp/bgtb-$1/sysd"; }
ns_of() { echo "bgsd-$1"; }
veth_of() { echo "bgsd-$1"; }
machine_of() { echo "bgsd$1"; }

require() {
    [[ $EUID -eq 0 ]] || die "must run as root"
    local t
    for t in debootstrap:debootstrap systemd-nspawn:systemd-container nsenter:util-linux ip:iproute2 ssh-keyscan:openssh-client; do
        command -v "${t%%:*}" >/dev/null 2>&1 || die "missing ${t%%:*} (Debian package ${t#*:}; tests/deps.sh installs it)"
    done
}

# The provisioned, never-booted root filesystem, as a tar: built once (debootstrap, about 45 s
# with the network to the Debian mirror), then reused.
golden() {
    [[ -f $GOLDEN ]] && return 0
    mkdir -p "$CACHE"
    exec 7>>"$CACHE/.lock"
    flock 7
    [[ -f $GOLDEN ]] && return 0
    local work=$CACHE/build.$$
    rm -rf "$work"
    if [[ ! -f $DEBS ]]; then
        log "downloading Debian 12 packages for the systemd host (once)"
        debootstrap --variant=minbase --include=$INCLUDE --make-tarball="$DEBS.tmp" bookworm "$work.debs" "$MIRROR" \
            >"$CACHE/make-tarball.log" 2>&1 || die "debootstrap --make-tarball failed (see $CACHE/make-tarball.log)"
        rm -rf "$work.debs"
        mv "$DEBS.tmp" "$DEBS"
    fi
    debootstrap --variant=minbase --include=$INCLUDE --unpack-tarball="$DEBS" bookworm "$work" "$MIRROR" \
        >"$CACHE/debootstrap.log" 2>&1 || die "debootstrap failed (see $CACHE/debootstrap.log)"
    provision "$work"
    tar -C "$work" -cf "$GOLDEN.tmp" .
    mv "$GOLDEN.tmp" "$GOLDEN"
    rm -rf "$work"
}

provision() {
    local r=$1 u
    echo sysdhost >"$r/etc/hostname"
    printf '127.0.0.1 localhost\n127.0.1.1 sysdhost\n' >"$r/etc/hosts"
    : >"$r/etc/machine-id"
    chroot "$r" useradd --create-home --shell /bin/bash "$USER_NAME"
    chroot "$r" usermod -p '*' "$USER_NAME"
    # What the README documents for `supervisor: systemd`, and nothing more: the template unit's
    # file, and systemctl for the app's units; for `systemd-user`, enabling lingering.
    cat >"$r/etc/sudoers.d/bluegreen" <<EOF
$USER_NAME ALL=(root) NOPASSWD: /usr/bin/systemctl daemon-reload, /usr/bin/systemctl * bluegreen-demo@*, /usr/bin/tee -- /etc/systemd/system/bluegreen-demo@.service.bluegreen-*, /usr/bin/mv -f -- /etc/systemd/system/bluegreen-demo@.service.bluegreen-* /etc/systemd/system/bluegreen-demo@.service, /usr/bin/chmod 644 -- /etc/systemd/system/bluegreen-demo@.service, /usr/bin/rm -f -- /etc/systemd/system/bluegreen-demo@.service.bluegreen-*, /usr/bin/loginctl enable-linger $USER_NAME
EOF
    chmod 440 "$r/etc/sudoers.d/bluegreen"
    mkdir -p "$r$DEPLOY_DIR"
    chroot "$r" chown "$USER_NAME:" "$DEPLOY_DIR"
    printf 'PasswordAuthentication no\nUseDNS no\n' >"$r/etc/ssh/sshd_config.d/bluegreen-test.conf"
    for u in getty@tty1.service console-getty.service systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer \
        e2scrub_all.timer fstrim.timer; do
        ln -sf /dev/null "$r/etc/systemd/system/$u"
    done
}

ct_pid() {
    local d p
    d=$(dir_of "$1")
    p=$(cat "$d/nspawn.pid" 2>/dev/null) || return 1
    kill -0 "$p" 2>/dev/null || return 1
    pgrep -P "$p" -x systemd 2>/dev/null | head -n 1
}

up() {
    local name=$1 addr=$2 tb d root ns veth br
    check_name "$name"
    require
    tb=/tmp/bgtb-$name
    [[ -f $tb/env ]] || die "no testbed '$name' ($tb/env)"
    d=$(dir_of "$name")
    root=$d/root
    ns=$(ns_of "$name")
    veth=$(veth_of "$name")
    br=bgbr-$name
    golden
    rm -rf "$d"
    mkdir -p "$root"
    tar -C "$root" -xf "$GOLDEN"
    install -d -m 700 "$root/home/$USER_NAME/.ssh"
    install -m 600 "$tb/id_ed25519.pub" "$root/home/$USER_NAME/.ssh/authorized_keys"
    chroot "$root" chown -R "$USER_NAME:" "/home/$USER_NAME/.ssh"
    # A fresh host key per host, pinned in the testbed's known_hosts.
    rm -f "$root"/etc/ssh/ssh_host_*
    ssh-keygen -q -t ed25519 -N '' -C sysdhost -f "$root/etc/ssh/ssh_host_ed25519_key"
    echo "$addr $(cut -d' ' -f1,2 "$root/etc/ssh/ssh_host_ed25519_key.pub")" >>"$tb/known_hosts"

    ip netns add "$ns"
    ip link add "$veth" type veth peer name host0 netns "$ns"
    ip link set "$veth" master "$br" up
    ip -n "$ns" addr add "$addr/24" dev host0
    ip -n "$ns" link set host0 up
    ip -n "$ns" link set lo up
    echo "$addr" >"$d/addr"

    # nspawn exits with 133 when the host reboots: boot it again, until `down`.
    # shellcheck disable=SC2016
    setsid bash -c '
        while :; do
            systemd-nspawn -q -D "$1" -M "$2" --boot --register=no --keep-unit \
                --network-namespace-path="/run/netns/$3" --console=pipe "${@:5}" \
                </dev/null >>"$4/console.log" 2>&1 &
            echo $! >"$4/nspawn.pid"
            wait $! && rc=0 || rc=$?
            echo "nspawn exited with $rc at $(date +%T.%N)" >>"$4/console.log"
            [ "$rc" -eq 133 ] && [ ! -e "$4/stop" ] || break
        done
        rm -f "$4/nspawn.pid"' sysd-loop "$root" "$(machine_of "$name")" "$ns" "$d" "${JAVA_BINDS[@]}" \
        </dev/null >/dev/null 2>&1 &
    echo $! >"$d/loop.pid"
    wait_ssh "$name" 60
}

wait_ssh() {
    local name=$1 secs=$2 tb=/tmp/bgtb-$1 addr t0=$SECONDS
    addr=$(cat "$(dir_of "$name")/addr")
    while ((SECONDS - t0 < secs)); do
        if ssh -i "$tb/id_ed25519" -o UserKnownHostsFile="$tb/known_hosts" -o StrictHostKeyChecking=yes \
            -o BatchMode=yes -o ConnectTimeout=2 -o LogLevel=ERROR "$USER_NAME@$addr" true </dev/null 2>/dev/null; then
            log "systemd host $addr answers ssh after $((SECONDS - t0)) s"
            return 0
        fi
        sleep 0.3
    done
    die "the systemd host $addr does not answer ssh after ${secs}s (see $(dir_of "$name")/console.log)"
}

run_in() {
    local name=$1 p
    shift
    p=$(ct_pid "$name") || die "the systemd host of '$name' is not running"
    nsenter -t "$p" -a -- "$@"
}

reboot_host() {
    local name=$1 old
    old=$(ct_pid "$name") || die "the systemd host of '$name' is not running"
    run_in "$name" systemctl reboot
    for _ in $(seq 200); do
        local now
        now=$(ct_pid "$name" || true)
        [[ -n $now && $now != "$old" ]] && break
        sleep 0.1
    done
    wait_ssh "$name" 60
}

down() {
    local name=$1 d ns np lp
    check_name "$name"
    d=$(dir_of "$name")
    ns=$(ns_of "$name")
    if [[ -d $d ]]; then
        touch "$d/stop"
        np=$(cat "$d/nspawn.pid" 2>/dev/null || true)
        lp=$(cat "$d/loop.pid" 2>/dev/null || true)
        if [[ -n $np ]] && kill -0 "$np" 2>/dev/null; then
            # nspawn sends SIGRTMIN+3 to the container's systemd: a clean halt.
            kill -TERM "$np" 2>/dev/null || true
            for _ in $(seq 60); do kill -0 "$np" 2>/dev/null || break; sleep 0.25; done
            kill -KILL "$np" 2>/dev/null || true
        fi
        if [[ -n $lp ]]; then kill "$lp" 2>/dev/null || true; fi
    fi
    ip link del "$(veth_of "$name")" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    # nspawn, under a PID 1 that is not systemd, leaves its cgroups in the root cgroup.
    local h c
    for h in unified systemd; do
        for c in payload supervisor; do
            rmdir "/sys/fs/cgroup/$h/$c/init.scope" "/sys/fs/cgroup/$h/$c" 2>/dev/null || true
        done
    done
    rmdir "/run/systemd/nspawn/propagate/$(machine_of "$name")" 2>/dev/null || true
    if [[ -d $d ]]; then rm -rf "$d"; fi
}

case ${1:-} in
    up) up "${2:?testbed name}" "${3:?address}" ;;
    down) down "${2:?testbed name}" ;;
    exec)
        n=${2:?testbed name}
        shift 2
        run_in "$n" "$@"
        ;;
    reboot) reboot_host "${2:?testbed name}" ;;
    *)
        sed -n '2,9p' "$0" >&2
        exit 2
        ;;
esac
