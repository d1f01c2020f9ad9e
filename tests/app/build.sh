#!/usr/bin/env bash
# Build the bluegreen demo app (JDK only, no external libraries).
#
#   tests/app/build.sh OUTDIR [VERSION...]
#
# Compiles the sources once (into OUTDIR/classes, reused while the sources are unchanged), then makes one
# jar per VERSION that differ only in the baked-in /version.txt resource:
#   OUTDIR/app-VERSION.jar   for every VERSION (default: v1)
#   OUTDIR/app.jar           as well, when exactly one VERSION is given
# Prints the paths of the jars it wrote, one a line.
#
# Optional env: APP_JAR_PAD_KB=N adds N KiB of incompressible padding to each jar (pad.bin), to make
# uploads look like a real fat jar (Spring Boot jars are 20-80 MiB).
#
# Run with e.g.:
#   java -Xmx64m -Xss512k -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -XX:-UsePerfData \
#        -jar app.jar --server.port=8080 [--bind-delay=MS] [--boot-delay=MS] [--shutdown-delay=MS] [--broken]
# (--bind-delay: the port is bound only after MS, as Spring Boot binds late; --boot-delay: 503 for MS after
# binding; --shutdown-delay: on SIGTERM, finish in-flight requests and exit no sooner than MS after the
# signal. See the comment of tests/app/src/bluegreen/demo/DemoApp.java.)
set -euo pipefail

die() { echo "build.sh: $*" >&2; exit 1; }

[[ $# -ge 1 ]] || die "usage: $0 OUTDIR [VERSION...]"
out=$1
shift
versions=("$@")
[[ ${#versions[@]} -gt 0 ]] || versions=(v1)
for v in "${versions[@]}"; do
    [[ $v =~ ^[A-Za-z0-9._+-]+$ ]] || die "bad version '$v' (allowed: letters, digits, . _ + -)"
done
for tool in javac jar; do
    command -v "$tool" >/dev/null || die "$tool not found (install a JDK, e.g. openjdk-17-jdk-headless)"
done
pad_kb=${APP_JAR_PAD_KB:-0}
[[ $pad_kb =~ ^[0-9]+$ ]] || die "APP_JAR_PAD_KB must be a number"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$here/src
mkdir -p "$out"
out=$(cd "$out" && pwd)
classes=$out/classes
# Serialise concurrent builds into the same OUTDIR.
exec 9>"$out/.build.lock"
flock 9
stamp=$classes/.stamp

mapfile -t sources < <(find "$src" -name '*.java' | sort)
[[ ${#sources[@]} -gt 0 ]] || die "no sources under $src"

need_compile=1
if [[ -f $stamp ]]; then
    need_compile=0
    for f in "${sources[@]}" "${BASH_SOURCE[0]}"; do
        if [[ $f -nt $stamp ]]; then need_compile=1; fi
    done
fi
if [[ $need_compile == 1 ]]; then
    rm -rf "$classes"
    mkdir -p "$classes"
    javac --release 17 -encoding UTF-8 -nowarn -d "$classes" "${sources[@]}"
    touch "$stamp"
fi

work=$(mktemp -d "$out/.jar.XXXXXX")
trap 'rm -rf "$work"' EXIT
for v in "${versions[@]}"; do
    res=$work/$v
    mkdir -p "$res"
    printf '%s\n' "$v" >"$res/version.txt"
    if [[ $pad_kb -gt 0 ]]; then
        head -c "$((pad_kb * 1024))" /dev/urandom >"$res/pad.bin"
    fi
    tmpjar=$work/app-$v.jar
    jar --create --file "$tmpjar" --main-class bluegreen.demo.DemoApp \
        -C "$classes" bluegreen -C "$res" .
    mv -f "$tmpjar" "$out/app-$v.jar"
    echo "$out/app-$v.jar"
done
if [[ ${#versions[@]} -eq 1 ]]; then
    cp -f "$out/app-${versions[0]}.jar" "$out/app.jar.tmp"
    mv -f "$out/app.jar.tmp" "$out/app.jar"
    echo "$out/app.jar"
fi
