#!/usr/bin/env bash
# A blue-green deploy written the way the seed's Jenkins pipeline is (see /work/shared/seed), for the
# benchmark suite's baseline (crates/bench): a new SSH connection for every command, scp for the jar,
# health polled with curl once a second (sleep first, as the seed does), hosts handled one after another,
# the switch by rewriting the upstream file and `nginx -s reload`, the old instance killed by pid.
#
#   seed-style.sh ENV_FILE JAR
#
# ENV_FILE is a testbed env file (tests/testbed/testbed.sh up NAME N writes /tmp/bgtb-NAME/env).
# EXTRA_JAVA_OPTS (optional) is added to the app's JVM flags, as the benchmark's bluegreen config does.
# Deploys to ports 8080/8081 in /srv/bluegreen/seed-PORT on every app host.
#
# It keeps the seed's shape and cost, not its bugs: host keys are checked against the testbed's
# known_hosts (not StrictHostKeyChecking=no), every host is health-checked (not only the second),
# running out of polls fails the deploy, each port has its own directory (the live jar is never
# overwritten), `nginx -t` runs before the reload, and the old instance is found by its pid file
# (not `lsof -ti`). Like the seed, it does not drain and does not wait for the old instance to exit.
# Commands sent over ssh are expanded here on purpose (the seed does the same).
# shellcheck disable=SC2029
set -euo pipefail

[[ $# -eq 2 ]] || {
    echo "usage: $0 ENV_FILE JAR" >&2
    exit 2
}
env_file=$1
jar=$2
# shellcheck disable=SC1090
source "$env_file"
[[ -f $jar ]] || {
    echo "seed-style: no jar at $jar" >&2
    exit 2
}

ssh_opts=(-i "$SSH_KEY" -o UserKnownHostsFile="$KNOWN_HOSTS" -o StrictHostKeyChecking=yes
    -o BatchMode=yes -o LogLevel=ERROR -o ConnectTimeout=5)
read -r -a apps <<<"$APP_ADDRS"

# 1 - which port is live: the seed asks the first app host's 8080 health endpoint.
code=$(curl -s -o /dev/null -w '%{http_code}' -m 2 "http://${apps[0]}:8080/actuator/health" || true)
if [[ $code == 200 ]]; then
    new=8081 old=8080
else
    new=8080 old=8081
fi
echo "seed-style: deploying to $new (old: $old)"

# 2 - copy the jar and start it, one host after another, a new connection each time.
for a in "${apps[@]}"; do
    dir=$DEPLOY_DIR/seed-$new
    ssh "${ssh_opts[@]}" "$SSH_USER@$a" "mkdir -p $dir"
    scp -q "${ssh_opts[@]}" "$jar" "$SSH_USER@$a:$dir/app.jar"
    ssh "${ssh_opts[@]}" "$SSH_USER@$a" "cd $dir || exit 1; { setsid nohup $JAVA $JAVA_OPTS ${EXTRA_JAVA_OPTS:-} -jar app.jar --server.port=$new >app.log 2>&1 </dev/null & echo \$! >app.pid; }"
done

# 3 - poll every host's new instance once a second, up to 100 times, one host after another.
for a in "${apps[@]}"; do
    healthy=0
    for _ in $(seq 100); do
        sleep 1
        code=$(curl -s -o /dev/null -w '%{http_code}' -m 2 "http://$a:$new/actuator/health" || true)
        if [[ $code == 200 ]]; then
            healthy=1
            break
        fi
    done
    if [[ $healthy != 1 ]]; then
        echo "seed-style: $a:$new never turned healthy; not switching" >&2
        exit 1
    fi
done

# 4 - switch: rewrite the upstream file on the proxy, test, reload.
servers=""
for a in "${apps[@]}"; do servers+="server $a:$new;\\n"; done
ssh "${ssh_opts[@]}" "$SSH_USER@$PROXY_ADDR" \
    "printf '$servers' >$UPSTREAM_FILE.tmp && mv -f $UPSTREAM_FILE.tmp $UPSTREAM_FILE && $NGINX_TEST_CMD 2>/dev/null && $NGINX_RELOAD_CMD"
echo "seed-style: switched to $new"

# 5 - kill the old instance on every host, by pid.
for a in "${apps[@]}"; do
    ssh "${ssh_opts[@]}" "$SSH_USER@$a" \
        "f=$DEPLOY_DIR/seed-$old/app.pid; if [ -f \$f ]; then kill -15 \$(cat \$f) 2>/dev/null || true; rm -f \$f; fi"
done
echo "seed-style: done"
