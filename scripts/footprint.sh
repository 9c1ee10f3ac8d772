#!/usr/bin/env bash
# Footprint of HyperMesh's release binaries, repeatable (issue 19 item 4): resident
# memory of each long-running component idle and under its typical load, and the size
# of each release binary (as built, and stripped). Every figure comes from a benchmark
# that starts the real processes; this script only runs them and keeps their lines:
#
#   hm-apiserver  `hm-bench hollow --nodes N --instances 0`: RSS once started (no node)
#                 and at the end of the idle window with N hollow nodes joined,
#                 registered and heartbeating every 2 s on their own mTLS connections
#   hm-agent      `hm-bench runtime --batch 50`: VmRSS registered with nothing run,
#                 and with 50 Instances running on a private containerd
#                 (scripts/containerd.sh) from the test image (scripts/build-test-image.sh)
#   hm-proxy      `hm-bench proxy --open 1000`: VmRSS idle and with 1,000 connections
#                 held open through two proxies (needs root: netns, nftables)
#
#   scripts/footprint.sh [all|sizes|apiserver|agent|proxy]...   (default: all)
#
# Environment: NODES (default 1000) for the apiserver step; OUT (default
# target/footprint) keeps each benchmark's full output. Run from the repository root,
# as root for the proxy step, after
#   cargo build --release -p hypermesh-apiserver -p hypermesh-scheduler -p hypermesh-agent \
#       -p hypermesh-proxy -p hypermesh-ctl -p hypermesh-bench
set -euo pipefail

die() { printf 'footprint.sh: error: %s\n' "$*" >&2; exit 1; }

release=target/release
bench=$release/hm-bench
nodes=${NODES:-1000}
out=${OUT:-target/footprint}
mkdir -p "$out"
[ -x "$bench" ] || die "$bench not found: build the release binaries first (see the header)"
load() { cut -d' ' -f1-3 /proc/loadavg; }

sizes() {
    command -v strip >/dev/null 2>&1 || die "strip not found (binutils)"
    local tmp
    tmp=$(mktemp -d)
    echo "| binary | release build | stripped |"
    echo "|---|---:|---:|"
    for bin in hm-apiserver hm-scheduler hm-agent hm-logger hm-proxy hmctl; do
        [ -f "$release/$bin" ] || { echo "| $bin | not built | |"; continue; }
        strip -o "$tmp/$bin" "$release/$bin"
        printf '| %s | %.1f MiB | %.1f MiB |\n' "$bin" \
            "$(echo "$(stat -c %s "$release/$bin") / 1048576" | bc -l)" \
            "$(echo "$(stat -c %s "$tmp/$bin") / 1048576" | bc -l)"
    done
    rm -rf "$tmp"
}

apiserver() {
    echo "hm-apiserver with $nodes hollow nodes (load average before: $(load))"
    "$bench" hollow --nodes "$nodes" --instances 0 --kill 0 --window 15s --probe-watchers 0 \
        >"$out/apiserver.txt" 2>"$out/apiserver.log" || { tail -5 "$out/apiserver.log"; die "hollow run failed"; }
    grep -E 'apiserver RSS before any node|^\| idle' "$out/apiserver.txt"
    echo "(load average after: $(load))"
}

agent() {
    echo "hm-agent with 50 Instances on a private containerd (load average before: $(load))"
    "$bench" runtime --repeats 1 --batch 50 --batch-repeats 1 --via instance \
        >"$out/agent.txt" 2>"$out/agent.log" || { tail -5 "$out/agent.log"; die "runtime run failed"; }
    grep -E '^\| memory|^\| hm-agent VmRSS' "$out/agent.txt"
    echo "(load average after: $(load))"
}

proxy() {
    [ "$(id -u)" = 0 ] || die "the proxy step needs root (network namespaces, nftables)"
    echo "hm-proxy idle and with 1,000 open connections (load average before: $(load))"
    "$bench" proxy --seconds 1 --requests 500 --connections 50 --open 1000 \
        >"$out/proxy.txt" 2>"$out/proxy.log" || { tail -5 "$out/proxy.log"; die "proxy run failed"; }
    grep -E '^\| hm-proxy RSS|^\| proxy [AB]' "$out/proxy.txt"
    echo "(load average after: $(load))"
}

steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(all)
for step in "${steps[@]}"; do
    case "$step" in
    all) sizes; apiserver; agent; proxy ;;
    sizes | apiserver | agent | proxy) "$step" ;;
    *) die "unknown step $step (all, sizes, apiserver, agent, proxy)" ;;
    esac
done
