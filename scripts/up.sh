#!/usr/bin/env bash
# `make up`: a single-host cluster on the embedded store, in the foreground.
# Starts hm-apiserver (with its in-process controllers), waits until it serves, then
# starts hm-scheduler (and hm-agent when it has been built) against it. Ctrl-C stops
# everything.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/debug}
LISTEN=${LISTEN:-127.0.0.1:7443}
DATA_DIR=${DATA_DIR:-.hypermesh-dev/data}
STATE_DIR=${STATE_DIR:-.hypermesh-dev/agent}
SERVER="http://$LISTEN"

mkdir -p "$DATA_DIR" "$STATE_DIR"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

fifo=$(mktemp -u)
mkfifo "$fifo"
"$BIN/hm-apiserver" --listen "$LISTEN" --data-dir "$DATA_DIR" --insecure-dev >"$fifo" &
pids+=($!)
# The apiserver prints one line once it serves.
read -r ready <"$fifo"
rm -f "$fifo"
echo "$ready"

"$BIN/hm-scheduler" --server "$SERVER" &
pids+=($!)
if [ -x "$BIN/hm-agent" ]; then
    "$BIN/hm-agent" --server "$SERVER" --state-dir "$STATE_DIR" &
    pids+=($!)
fi

cat <<MSG

HyperMesh is up: apiserver $SERVER (data in $DATA_DIR), scheduler$( [ -x "$BIN/hm-agent" ] && echo ", agent" ).
In another terminal:
  export HYPERMESH_SERVER=$SERVER
  export PATH="$PWD/$BIN:\$PATH"     # puts hmctl on PATH
  hmctl apply -f examples/
  hmctl get workloads -o yaml
Ctrl-C stops everything.
MSG
wait -n "${pids[@]}"
