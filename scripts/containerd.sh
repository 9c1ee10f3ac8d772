#!/usr/bin/env bash
# A private containerd for tests and `make up`, isolated from any system containerd:
# its own config, root, state dir and socket, all under one directory.
#
#   scripts/containerd.sh start DIR   start containerd (if not already running from DIR),
#                                     wait until its socket answers, print the socket path
#   scripts/containerd.sh stop DIR    stop it (SIGTERM, then SIGKILL after 10 s); its
#                                     containers keep running under their shims, and
#                                     `start DIR` again reconnects to them
#   scripts/containerd.sh purge DIR   kill every task and remove every container it runs
#   scripts/containerd.sh socket DIR  print the socket path
#
# Layout of DIR: config.toml, root/ (content, snapshots), state/ (tasks, shims),
# containerd.sock, containerd.pid, containerd.log.
# The CRI plugin is disabled (HyperMesh talks to containerd's own services); the
# `restrict_oom_score_adj` setting is kept in its section so enabling CRI later does
# not try to lower OOM scores, which unprivileged or nested hosts refuse.
set -euo pipefail

die() { printf 'containerd.sh: error: %s\n' "$*" >&2; exit 1; }

[ $# -eq 2 ] || die "usage: $0 start|stop|purge|socket DIR"
cmd=$1
mkdir -p "$2"
dir=$(cd "$2" && pwd)
sock="$dir/containerd.sock"
pidfile="$dir/containerd.pid"

running() {
    [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

case "$cmd" in
start)
    command -v containerd >/dev/null 2>&1 || die "containerd not found: run scripts/setup.sh"
    command -v runc >/dev/null 2>&1 || die "runc not found: run scripts/setup.sh"
    if running; then
        echo "$sock"
        exit 0
    fi
    mkdir -p "$dir/root" "$dir/state"
    cat >"$dir/config.toml" <<EOF
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "$sock"

[ttrpc]
  address = "$sock.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
EOF
    rm -f "$sock" "$sock.ttrpc"
    # setsid: the daemon outlives this script and is not killed by the caller's Ctrl-C.
    setsid containerd --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 </dev/null &
    echo $! >"$pidfile"
    for _ in $(seq 1 200); do
        if [ -S "$sock" ] && ctr --address "$sock" version >/dev/null 2>&1; then
            echo "$sock"
            exit 0
        fi
        running || die "containerd exited; see $dir/containerd.log: $(tail -n 5 "$dir/containerd.log")"
        sleep 0.05
    done
    die "containerd did not answer on $sock within 10 s; see $dir/containerd.log"
    ;;
stop)
    if running; then
        pid=$(cat "$pidfile")
        kill "$pid"
        for _ in $(seq 1 200); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -f "$pidfile"
    ;;
purge)
    running || exit 0
    for ns in $(ctr --address "$sock" namespaces ls -q); do
        for t in $(ctr --address "$sock" -n "$ns" tasks ls -q); do
            ctr --address "$sock" -n "$ns" tasks rm -f "$t" >/dev/null 2>&1 || true
        done
        for c in $(ctr --address "$sock" -n "$ns" containers ls -q); do
            ctr --address "$sock" -n "$ns" containers rm "$c" >/dev/null 2>&1 || true
        done
    done
    ;;
socket)
    echo "$sock"
    ;;
*)
    die "unknown command $cmd (start|stop|purge|socket)"
    ;;
esac
