#!/usr/bin/env bash
# bluegreen testbed: N app hosts + 1 proxy host on this machine, each in its own network, mount, PID, UTS
# and IPC namespaces, each with its own sshd; the proxy also runs nginx. See README.md next to this file.
#
#   testbed.sh up NAME N_APP_HOSTS      create; prints the env lines (also written to /tmp/bgtb-NAME/env)
#   testbed.sh down NAME                remove everything (idempotent, works after a half-done up)
#   testbed.sh exec NAME HOST [CMD...]  run CMD as root inside HOST's namespaces (HOST: proxy, app1, ...)
#   testbed.sh ssh NAME HOST [CMD...]   ssh to HOST as the deploy user with the testbed key
#   testbed.sh sshd NAME HOST start|stop   start/stop HOST's sshd (fault injection); the host keeps running
#   testbed.sh env NAME                 print the env file
#   testbed.sh list                     list testbeds that exist
#
# Needs root. Everything stays on this machine: the bridge has no uplink and the hosts have no default route.
#
# Where cgroup v2 is mounted and writable, every host runs in its own cgroup (CGROUP_DIR/HOST in the env
# file), with a child cgroup `app` an app's start command may move itself into (inside the host:
# `echo 0 >/etc/bgtb/cgroup/app/cgroup.procs`), so that a host's CPU (`cpu.stat`) can be told apart from
# its app's. No controller is enabled: nothing is limited, only counted.
set -euo pipefail

readonly DEPLOY_USER=bgdeploy
readonly DEPLOY_HOME=/home/bgdeploy
readonly DEPLOY_DIR=/srv/bluegreen
readonly STATE_DIR=/var/lib/bluegreen
readonly HOST_ETC=/etc/bgtb
readonly NGINX_BIN=/usr/sbin/nginx
readonly NGINX_PORT=80
readonly SSH_PORT=22
readonly SUBNET_PREFIX=10.251
readonly LOCK_FILE=/run/bgtb.lock
readonly MAX_APP_HOSTS=50
readonly JAVA_OPTS_RECOMMENDED="-Xmx64m -Xss512k -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -XX:-UsePerfData -Dsun.net.httpserver.nodelay=true"

SELF=$(readlink -f "${BASH_SOURCE[0]}")
readonly SELF

log() { echo "testbed: $*" >&2; }
die() {
    echo "testbed: error: $*" >&2
    exit 1
}

usage() {
    sed -n '2,14p' "$SELF" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

check_name() {
    [[ ${1:-} =~ ^[a-z0-9]{1,8}$ ]] || die "bad testbed name '${1:-}': want [a-z0-9]{1,8}"
}

require_root() {
    [[ $EUID -eq 0 ]] || die "must run as root (needs network/mount/PID namespaces)"
}

require_tools() {
    local missing=() t
    for t in ip unshare nsenter setsid setpriv flock perl ssh ssh-keygen curl useradd usermod mount hostname \
        cksum java "$NGINX_BIN" /usr/sbin/sshd; do
        command -v "$t" >/dev/null 2>&1 || missing+=("$t")
    done
    [[ ${#missing[@]} -eq 0 ]] ||
        die "missing tools: ${missing[*]} (Debian: iproute2 util-linux openssh-server openssh-client nginx-light curl openjdk-17-jre-headless perl)"
}

tb_dir() { echo "/tmp/bgtb-$1"; }

# The cgroup v2 mount (/sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid system), or nothing.
cgroup2_root() { findmnt -n -t cgroup2 -o TARGET 2>/dev/null | head -n 1; }
bridge_name() { echo "bgbr-$1"; }
ns_name() { echo "bgtb-$1-$2"; }

# Root-namespace end of a host's veth pair; at most 15 characters (bg-NAME-p, bg-NAME-a12).
veth_name() {
    local name=$1 host=$2
    if [[ $host == proxy ]]; then echo "bg-$name-p"; else echo "bg-$name-a${host#app}"; fi
}

host_addr() {
    local x=$1 host=$2
    if [[ $host == proxy ]]; then echo "$SUBNET_PREFIX.$x.2"; else echo "$SUBNET_PREFIX.$x.$((10 + ${host#app}))"; fi
}

# Pick 10.251.X.0/24 for a testbed: start at a hash of the name, skip subnets in use. Call with the lock held.
alloc_subnet() {
    local name=$1 start x i sum
    sum=$(printf '%s' "$name" | cksum)
    start=$((${sum%% *} % 200))
    for ((i = 0; i < 200; i++)); do
        x=$(((start + i) % 200 + 20))
        if ! ip -o -4 addr show | grep -q " $SUBNET_PREFIX\.$x\." &&
            ! ip -4 route show to match "$SUBNET_PREFIX.$x.1" | grep -qv '^default'; then
            echo "$x"
            return 0
        fi
    done
    die "no free $SUBNET_PREFIX.X.0/24 subnet"
}

ensure_deploy_user() {
    if ! id -u "$DEPLOY_USER" >/dev/null 2>&1; then
        log "creating user $DEPLOY_USER"
        useradd --system --create-home --home-dir "$DEPLOY_HOME" --shell /bin/bash "$DEPLOY_USER"
    fi
    # '*' = no password but not "locked" ('!'), so sshd with UsePAM no accepts key logins.
    if [[ $(getent shadow "$DEPLOY_USER" | cut -d: -f2) != '*' ]]; then
        usermod -p '*' "$DEPLOY_USER"
    fi
    mkdir -p "$DEPLOY_HOME"
}

# Writes the per-host files under /tmp/bgtb-NAME/hosts/HOST. Inside the host these appear as
# /etc/bgtb (etc), /srv/bluegreen (srv), /var/lib/bluegreen (state), /home/bgdeploy (home), /tmp (tmp).
prepare_host_dir() {
    local name=$1 host=$2 addr=$3 hd
    hd=$(tb_dir "$name")/hosts/$host
    mkdir -p "$hd"/{etc,srv,state,home,tmp,log}
    chmod 755 "$hd" "$hd/etc"
    chmod 1777 "$hd/tmp"
    chown "$DEPLOY_USER:" "$hd/srv" "$hd/state" "$hd/home"
    ssh-keygen -q -t ed25519 -N '' -C "bgtb-$name-$host" -f "$hd/etc/ssh_host_ed25519_key"
    install -m 644 "$(tb_dir "$name")/id_ed25519.pub" "$hd/etc/authorized_keys"
    cat >"$hd/etc/sshd_config" <<EOF
# sshd for testbed $name host $host (generated by testbed.sh)
ListenAddress $addr:$SSH_PORT
HostKey $HOST_ETC/ssh_host_ed25519_key
PidFile $HOST_ETC/sshd.pid
AuthorizedKeysFile $HOST_ETC/authorized_keys
AllowUsers $DEPLOY_USER
PermitRootLogin no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
MaxStartups 200
MaxSessions 100
LogLevel INFO
Subsystem sftp internal-sftp
EOF
    if [[ $host == proxy ]]; then
        mkdir -p "$hd/etc/nginx/run"
        chown "$DEPLOY_USER:" "$hd/etc/nginx/run"
        cat >"$hd/etc/nginx/nginx.conf" <<EOF
# nginx for testbed $name (generated by testbed.sh). The master runs as $DEPLOY_USER (no root, no sudo);
# port $NGINX_PORT is allowed by net.ipv4.ip_unprivileged_port_start=0 in this host's network namespace.
worker_processes 2;
pid $HOST_ETC/nginx/run/nginx.pid;
error_log $HOST_ETC/nginx/run/error.log notice;

events {
    worker_connections 1024;
}

http {
    log_format bg '\$remote_addr [\$time_local] "\$request" \$status \$body_bytes_sent '
                  'upstream=\$upstream_addr upstream_status=\$upstream_status rt=\$request_time';
    access_log $HOST_ETC/nginx/run/access.log bg;
    client_body_temp_path $HOST_ETC/nginx/run/client_body;
    proxy_temp_path $HOST_ETC/nginx/run/proxy;
    fastcgi_temp_path $HOST_ETC/nginx/run/fastcgi;
    uwsgi_temp_path $HOST_ETC/nginx/run/uwsgi;
    scgi_temp_path $HOST_ETC/nginx/run/scgi;
    keepalive_timeout 65s;

    upstream app {
        # Managed file: only "server ADDR:PORT ...;" lines. Written by the deploy user.
        include $STATE_DIR/upstream.conf;
        keepalive 32;
    }

    server {
        listen $NGINX_PORT;

        location = /testbed-nginx-health {
            access_log off;
            default_type text/plain;
            return 200 "ok\n";
        }

        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_connect_timeout 2s;
            proxy_read_timeout 60s;
            proxy_next_upstream error timeout;
            add_header X-Upstream \$upstream_addr always;
        }
    }
}
EOF
        # Placeholder: nginx refuses an upstream block without servers; a `down` one is never sent a request,
        # so requests get 502 until a deploy writes real servers (and bluegreen reads it as a first deploy).
        printf '# no app deployed yet\nserver 127.0.0.1:9 down;\n' >"$hd/state/upstream.conf"
        chown "$DEPLOY_USER:" "$hd/state/upstream.conf"
        chmod 644 "$hd/state/upstream.conf"
    fi
}

setup_netns() {
    local name=$1 host=$2 addr=$3 ns veth
    ns=$(ns_name "$name" "$host")
    veth=$(veth_name "$name" "$host")
    ip netns add "$ns"
    ip link add "$veth" type veth peer name eth0 netns "$ns"
    ip link set "$veth" master "$(bridge_name "$name")" up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$addr/24" dev eth0
    ip -n "$ns" link set eth0 up
    if [[ $host == proxy ]]; then
        ip netns exec "$ns" sysctl -q -w net.ipv4.ip_unprivileged_port_start=0
    fi
}

# Start the host's PID 1 (see __hostinit) in its own namespaces; record its root-namespace pid.
start_host() {
    local name=$1 host=$2 ns hd upid ipid="" i
    ns=$(ns_name "$name" "$host")
    hd=$(tb_dir "$name")/hosts/$host
    # The subshell joins the host's cgroup (when there is one) before it becomes the host: everything
    # the host runs from then on is counted there.
    (
        if [[ -n ${CGROUP_HOSTS:-} ]]; then echo 0 >"$CGROUP_HOSTS/$host/cgroup.procs"; fi
        exec setsid ip netns exec "$ns" unshare --mount --pid --uts --ipc --fork --mount-proc --propagation private \
            -- "$SELF" __hostinit "$name" "$host"
    ) </dev/null >>"$hd/log/init.log" 2>&1 &
    upid=$!
    echo "$upid" >"$hd/unshare.pid"
    for ((i = 0; i < 200; i++)); do
        ipid=$(cat "/proc/$upid/task/$upid/children" 2>/dev/null || true)
        ipid=${ipid%% *}
        [[ -n $ipid ]] && break
        kill -0 "$upid" 2>/dev/null || die "host $host: init exited at once, see $hd/log/init.log"
        sleep 0.01
    done
    [[ -n $ipid ]] || die "host $host: init did not start"
    echo "$ipid" >"$hd/init.pid"
}

# Runs as PID 1 of a host's PID namespace, in the host's fresh mount namespace.
cmd_hostinit() {
    local name=$1 host=$2 hd
    hd=$(tb_dir "$name")/hosts/$host
    mount --bind "$hd/etc" "$HOST_ETC"
    mount --bind "$hd/srv" "$DEPLOY_DIR"
    mount --bind "$hd/state" "$STATE_DIR"
    mount --bind "$hd/home" "$DEPLOY_HOME"
    mount --bind "$hd/log" /var/log
    # `ip netns exec` mounted a fresh /sys, which hides the cgroup mounts: the host's own cgroup is
    # mounted at /etc/bgtb/cgroup from a cgroup2 mount of its own (only that directory stays visible).
    if [[ -d $hd/cgroupfs ]]; then
        mount -t cgroup2 cgroup2 "$hd/cgroupfs"
        mount --bind "$hd/cgroupfs/bgtb-$name/$host" "$HOST_ETC/cgroup"
        umount "$hd/cgroupfs"
    fi
    mount --bind "$hd/tmp" /tmp # last: hides /tmp/bgtb-NAME inside the host
    hostname "$name-$host"
    cd /
    /usr/sbin/sshd -D -f "$HOST_ETC/sshd_config" -E /var/log/sshd.log </dev/null &
    if [[ $host == proxy ]]; then
        setpriv --reuid="$DEPLOY_USER" --regid="$DEPLOY_USER" --init-groups --reset-env \
            "$NGINX_BIN" -e "$HOST_ETC/nginx/run/error.log" -c "$HOST_ETC/nginx/nginx.conf" </dev/null
    fi
    # PID 1 must reap orphans (apps started with setsid nohup ... & end up here), or dead apps linger as
    # zombies and `kill -0` still succeeds. It also must not depend on sshd, so tests can kill sshd.
    exec perl -e '$0 = "bgtb-init"; while (1) { sleep 1 if waitpid(-1, 0) == -1 }'
}

wait_tcp() {
    local addr=$1 port=$2 what=$3 i
    for ((i = 0; i < 250; i++)); do
        if timeout 0.2 bash -c "exec 3<>/dev/tcp/$addr/$port" 2>/dev/null; then return 0; fi
        sleep 0.02
    done
    die "$what did not start listening on $addr:$port"
}

write_env() {
    local name=$1 x=$2 n=$3 tb i app_addrs="" app_hosts="" hosts="proxy" f ncmd
    tb=$(tb_dir "$name")
    for ((i = 1; i <= n; i++)); do
        app_addrs+="${app_addrs:+ }$(host_addr "$x" "app$i")"
        app_hosts+="${app_hosts:+ }app$i"
        hosts+=" app$i"
    done
    ncmd="$NGINX_BIN -e $HOST_ETC/nginx/run/error.log -c $HOST_ETC/nginx/nginx.conf"
    f=$tb/env
    {
        echo "TESTBED_NAME=$name"
        echo "TESTBED_DIR=$tb"
        echo "TESTBED_SCRIPT=$SELF"
        echo "SUBNET=$SUBNET_PREFIX.$x.0/24"
        echo "RUNNER_ADDR=$SUBNET_PREFIX.$x.1"
        echo "PROXY_ADDR=$(host_addr "$x" proxy)"
        echo "APP_ADDRS=\"$app_addrs\""
        echo "APP_HOSTS=\"$app_hosts\""
        echo "HOSTS=\"$hosts\""
        echo "HOSTS_DIR=$tb/hosts"
        echo "SSH_USER=$DEPLOY_USER"
        echo "SSH_PORT=$SSH_PORT"
        echo "SSH_KEY=$tb/id_ed25519"
        echo "KNOWN_HOSTS=$tb/known_hosts"
        echo "SSH_CONFIG=$tb/ssh_config"
        echo "DEPLOY_DIR=$DEPLOY_DIR"
        echo "STATE_DIR=$STATE_DIR"
        echo "DEPLOY_HOME=$DEPLOY_HOME"
        echo "NGINX_PORT=$NGINX_PORT"
        echo "NGINX_BIN=$NGINX_BIN"
        echo "NGINX_CONF=$HOST_ETC/nginx/nginx.conf"
        echo "NGINX_PID_FILE=$HOST_ETC/nginx/run/nginx.pid"
        echo "NGINX_ERROR_LOG=$HOST_ETC/nginx/run/error.log"
        echo "NGINX_ACCESS_LOG=$HOST_ETC/nginx/run/access.log"
        echo "UPSTREAM_NAME=app"
        echo "UPSTREAM_FILE=$STATE_DIR/upstream.conf"
        echo "NGINX_TEST_CMD=\"$ncmd -t\""
        echo "NGINX_RELOAD_CMD=\"$ncmd -s reload\""
        echo "NGINX_START_CMD=\"$ncmd\""
        echo "NGINX_STOP_CMD=\"$ncmd -s quit\""
        echo "NEEDS_SUDO=0"
        echo "JAVA=$(command -v java)"
        echo "JAVA_OPTS=\"$JAVA_OPTS_RECOMMENDED\""
    } >"$f.tmp"
    mv "$f.tmp" "$f"
}

write_ssh_config() {
    local name=$1 x=$2 n=$3 tb i h
    tb=$(tb_dir "$name")
    {
        for h in proxy $(for ((i = 1; i <= n; i++)); do echo "app$i"; done); do
            printf 'Host %s\n    HostName %s\n' "$h" "$(host_addr "$x" "$h")"
        done
        printf 'Host *\n    User %s\n    Port %s\n    IdentityFile %s\n    IdentitiesOnly yes\n' \
            "$DEPLOY_USER" "$SSH_PORT" "$tb/id_ed25519"
        printf '    UserKnownHostsFile %s\n    StrictHostKeyChecking yes\n    BatchMode yes\n' "$tb/known_hosts"
        printf '    ConnectTimeout 5\n    LogLevel ERROR\n'
    } >"$tb/ssh_config"
}

UP_NAME=""
UP_OK=0
up_cleanup() {
    if [[ -n $UP_NAME && $UP_OK != 1 ]]; then
        log "up failed; tearing down testbed '$UP_NAME'"
        do_down "$UP_NAME" || true
    fi
}

cmd_up() {
    [[ $# -eq 2 ]] || usage
    local name=$1 n=$2 tb x i h addr pids=() hosts=(proxy) t0
    check_name "$name"
    if ! [[ $n =~ ^[0-9]+$ ]] || ((n < 1 || n > MAX_APP_HOSTS)); then
        die "N_APP_HOSTS must be 1..$MAX_APP_HOSTS"
    fi
    require_root
    require_tools
    t0=$(date +%s%N)
    tb=$(tb_dir "$name")
    for ((i = 1; i <= n; i++)); do hosts+=("app$i"); done

    exec 8>"$LOCK_FILE"
    flock 8
    if [[ -e $tb ]] || ip link show "$(bridge_name "$name")" >/dev/null 2>&1 ||
        ip netns list | grep -q "^bgtb-$name-"; then
        die "testbed '$name' already exists (run: $0 down $name)"
    fi
    UP_NAME=$name
    trap up_cleanup EXIT
    mkdir -p "$tb"
    chmod 700 "$tb"
    ensure_deploy_user
    mkdir -p "$HOST_ETC" "$DEPLOY_DIR" "$STATE_DIR" /run/sshd
    chmod 755 /run/sshd
    x=$(alloc_subnet "$name")
    echo "$x" >"$tb/subnet"
    ip link add "$(bridge_name "$name")" type bridge
    ip addr add "$SUBNET_PREFIX.$x.1/24" dev "$(bridge_name "$name")"
    ip link set "$(bridge_name "$name")" up
    flock -u 8
    exec 8>&-

    ssh-keygen -q -t ed25519 -N '' -C "bgtb-$name-runner" -f "$tb/id_ed25519"
    : >"$tb/known_hosts"
    CGROUP_HOSTS=""
    setup_cgroups "$name" "${hosts[@]}"
    for h in "${hosts[@]}"; do
        addr=$(host_addr "$x" "$h")
        prepare_host_dir "$name" "$h" "$addr"
        if [[ -n $CGROUP_HOSTS ]]; then mkdir "$tb/hosts/$h/etc/cgroup" "$tb/hosts/$h/cgroupfs"; fi
        echo "$addr $(cut -d' ' -f1,2 "$tb/hosts/$h/etc/ssh_host_ed25519_key.pub")" >>"$tb/known_hosts"
        setup_netns "$name" "$h" "$addr"
        start_host "$name" "$h"
    done
    write_ssh_config "$name" "$x" "$n"
    write_env "$name" "$x" "$n"
    echo "CGROUP_DIR=$CGROUP_HOSTS" >>"$tb/env"

    # Check every host: sshd up, key login with strict host key checking works, and the proxy's nginx answers.
    for h in "${hosts[@]}"; do
        addr=$(host_addr "$x" "$h")
        wait_tcp "$addr" "$SSH_PORT" "sshd on $h"
        ssh -F "$tb/ssh_config" "$h" true </dev/null &
        pids+=($!)
    done
    for i in "${!pids[@]}"; do
        wait "${pids[$i]}" || die "ssh to ${hosts[$i]} failed (see $tb/hosts/${hosts[$i]}/log/sshd.log)"
    done
    addr=$(host_addr "$x" proxy)
    wait_tcp "$addr" "$NGINX_PORT" "nginx on proxy"
    curl -fsS -m 5 -o /dev/null "http://$addr:$NGINX_PORT/testbed-nginx-health" ||
        die "nginx on proxy does not answer (see $tb/hosts/proxy/etc/nginx/run/error.log)"
    UP_OK=1
    log "testbed '$name' up: proxy + $n app host(s) on $SUBNET_PREFIX.$x.0/24 in $((($(date +%s%N) - t0) / 1000000)) ms"
    cat "$tb/env"
}

# Creates CGROUP_ROOT/bgtb-NAME/HOST and HOST/app for every host (a host sees its own as /etc/bgtb/cgroup) and sets CGROUP_HOSTS to
# CGROUP_ROOT/bgtb-NAME; leaves it empty (no cgroups, the testbed works the same) without a writable
# cgroup v2 mount. The deploy user may move its own processes from HOST into HOST/app (cgroup v2 asks for
# write access to both cgroup.procs files).
setup_cgroups() {
    local name=$1 root dir h
    shift
    root=$(cgroup2_root)
    [[ -n $root ]] || return 0
    dir=$root/bgtb-$name
    mkdir "$dir" 2>/dev/null || return 0
    echo "$dir" >"$(tb_dir "$name")/cgroup"
    for h in "$@"; do
        mkdir -p "$dir/$h/app"
        chown "$DEPLOY_USER" "$dir/$h/cgroup.procs" "$dir/$h/app/cgroup.procs"
    done
    CGROUP_HOSTS=$dir
}

# Removes the testbed's cgroups (empty once the hosts' processes are gone; the kernel frees an exited
# process's cgroup membership a moment after it dies, hence the retries).
remove_cgroups() {
    local dir=$1 i d
    [[ -d $dir && $dir == */bgtb-* ]] || return 0
    for ((i = 0; i < 100; i++)); do
        for d in "$dir"/*/app "$dir"/*/ "$dir"; do
            if [[ -d $d ]]; then rmdir "$d" 2>/dev/null || true; fi
        done
        [[ -d $dir ]] || return 0
        sleep 0.02
    done
    log "warning: could not remove cgroup $dir"
}

# True if PID is a live (not zombie) process whose command name is one of the given names.
pid_has_comm() {
    local p=$1 stat comm n
    shift
    [[ $p =~ ^[0-9]+$ ]] || return 1
    stat=$(cat "/proc/$p/stat" 2>/dev/null) || return 1
    comm=${stat#*(}
    comm=${comm%)*}
    [[ ${stat##*) } != Z* ]] || return 1
    for n in "$@"; do [[ $comm == "$n" ]] && return 0; done
    return 1
}

do_down() {
    local name=$1 tb ns f p pids i link br
    tb=$(tb_dir "$name")
    br=$(bridge_name "$name")
    # Killing a host's PID 1 makes the kernel kill every process in that PID namespace. Its parent, unshare,
    # then reaps it and exits; unshare is killed only if it lingers (killing it first would leave the
    # init as a zombie when the machine's PID 1 does not reap orphans).
    for f in "$tb"/hosts/*/init.pid; do
        [[ -f $f ]] || continue
        p=$(cat "$f")
        if pid_has_comm "$p" bgtb-init testbed.sh; then kill -KILL "$p" 2>/dev/null || true; fi
    done
    for f in "$tb"/hosts/*/unshare.pid; do
        [[ -f $f ]] || continue
        p=$(cat "$f")
        for ((i = 0; i < 50; i++)); do
            pid_has_comm "$p" unshare || break
            sleep 0.02
        done
        if pid_has_comm "$p" unshare; then kill -KILL "$p" 2>/dev/null || true; fi
    done
    # Anything else still using one of the testbed's network namespaces (e.g. half-started hosts).
    while read -r ns _; do
        [[ $ns == "bgtb-$name-"* ]] || continue
        for ((i = 0; i < 100; i++)); do
            pids=$(ip netns pids "$ns" 2>/dev/null || true)
            [[ -z $pids ]] && break
            # shellcheck disable=SC2086
            kill -KILL $pids 2>/dev/null || true
            sleep 0.02
        done
        [[ -z $pids ]] || log "warning: processes still in $ns: $pids"
        ip netns del "$ns" 2>/dev/null || true
    done < <(ip netns list 2>/dev/null)
    # veth ends vanish with their namespaces; remove any left over, then the bridge.
    for ((i = 0; i < 100; i++)); do
        link=$(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | grep "^bg-$name-" || true)
        [[ -z $link ]] && break
        sleep 0.02
    done
    for link in $link; do ip link del "$link" 2>/dev/null || true; done
    if ip link show "$br" >/dev/null 2>&1; then ip link del "$br"; fi
    if [[ -f $tb/cgroup ]]; then remove_cgroups "$(cat "$tb/cgroup")"; fi
    if [[ -d $tb ]]; then rm -rf --one-file-system "$tb"; fi
}

cmd_down() {
    [[ $# -eq 1 ]] || usage
    check_name "$1"
    require_root
    do_down "$1"
    log "testbed '$1' down"
}

host_init_pid() {
    local name=$1 host=$2 f p
    [[ $host =~ ^(proxy|app[0-9]+)$ ]] || die "bad host '$host': want proxy, app1, app2, ..."
    f=$(tb_dir "$name")/hosts/$host/init.pid
    [[ -f $f ]] || die "no host '$host' in testbed '$name'"
    p=$(cat "$f")
    kill -0 "$p" 2>/dev/null || die "host '$host' of testbed '$name' is not running"
    echo "$p"
}

cmd_exec() {
    [[ $# -ge 2 ]] || usage
    local name=$1 host=$2 p
    shift 2
    check_name "$name"
    require_root
    p=$(host_init_pid "$name" "$host")
    if [[ $# -eq 0 ]]; then set -- /bin/bash; fi
    exec nsenter --target "$p" --net --mount --pid --uts --ipc --wd=/ -- "$@"
}

cmd_ssh() {
    [[ $# -ge 2 ]] || usage
    local name=$1 host=$2 tb
    shift 2
    check_name "$name"
    tb=$(tb_dir "$name")
    [[ -f $tb/ssh_config ]] || die "testbed '$name' not found"
    exec ssh -F "$tb/ssh_config" "$host" "$@"
}

cmd_sshd() {
    [[ $# -eq 3 ]] || usage
    local name=$1 host=$2 action=$3 p
    check_name "$name"
    require_root
    p=$(host_init_pid "$name" "$host")
    case $action in
    start)
        nsenter --target "$p" --net --mount --pid --uts --ipc --wd=/ -- \
            /usr/sbin/sshd -f "$HOST_ETC/sshd_config" -E /var/log/sshd.log
        ;;
    stop)
        nsenter --target "$p" --net --mount --pid --uts --ipc --wd=/ -- \
            sh -c "kill \$(cat $HOST_ETC/sshd.pid) && for i in \$(seq 250); do [ -e $HOST_ETC/sshd.pid ] || exit 0; sleep 0.02; done; exit 1"
        ;;
    *) usage ;;
    esac
}

cmd_env() {
    [[ $# -eq 1 ]] || usage
    check_name "$1"
    [[ -f $(tb_dir "$1")/env ]] || die "testbed '$1' not found"
    cat "$(tb_dir "$1")/env"
}

cmd_list() {
    local d
    for d in /tmp/bgtb-*/; do
        [[ -d $d ]] || continue
        d=${d%/}
        echo "${d#/tmp/bgtb-}"
    done
}

main() {
    [[ $# -ge 1 ]] || usage
    local cmd=$1
    shift
    case $cmd in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    exec) cmd_exec "$@" ;;
    ssh) cmd_ssh "$@" ;;
    sshd) cmd_sshd "$@" ;;
    env) cmd_env "$@" ;;
    list) cmd_list "$@" ;;
    __hostinit) cmd_hostinit "$@" ;;
    -h | --help | help) usage ;;
    *) usage ;;
    esac
}

main "$@"
