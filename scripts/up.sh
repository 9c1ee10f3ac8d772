#!/usr/bin/env bash
# `make up`: a single-host cluster on the embedded store, in the foreground.
# Starts a private containerd (scripts/containerd.sh) and builds the test image into
# .hypermesh-dev/images, then hm-apiserver (with its in-process controllers), waits
# until it serves, then hm-scheduler and hm-agent against it. Ctrl-C stops everything,
# the containers included.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/debug}
LISTEN=${LISTEN:-127.0.0.1:7443}
DATA_DIR=${DATA_DIR:-.hypermesh-dev/data}
STATE_DIR=${STATE_DIR:-.hypermesh-dev/agent}
RUNTIME_DIR=${RUNTIME_DIR:-.hypermesh-dev/containerd}
IMAGE_DIR=${IMAGE_DIR:-.hypermesh-dev/images}
# Secret volumes must live on tmpfs (never on disk).
SECRETS_DIR=${SECRETS_DIR:-/dev/shm/hypermesh-dev-secrets}
SERVER="http://$LISTEN"

mkdir -p "$DATA_DIR" "$STATE_DIR"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    echo "stopping containers and containerd..." >&2
    bash scripts/containerd.sh purge "$RUNTIME_DIR" >/dev/null 2>&1 || true
    bash scripts/containerd.sh stop "$RUNTIME_DIR" >/dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM

# The container runtime the agent drives, and the image examples/web.yaml runs.
mkdir -p "$IMAGE_DIR"
[ -f "$IMAGE_DIR/busybox.tar" ] || bash scripts/build-test-image.sh "$IMAGE_DIR/busybox.tar"
SOCKET=$(bash scripts/containerd.sh start "$RUNTIME_DIR")

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
    "$BIN/hm-agent" --server "$SERVER" --state-dir "$STATE_DIR" \
        --containerd-socket "$SOCKET" --image-dir "$IMAGE_DIR" --secrets-dir "$SECRETS_DIR" &
    pids+=($!)
fi

cat <<MSG

HyperMesh is up: apiserver $SERVER (data in $DATA_DIR), scheduler$( [ -x "$BIN/hm-agent" ] && echo ", agent" ), containerd $SOCKET.
In another terminal:
  export HYPERMESH_SERVER=$SERVER
  export PATH="$PWD/$BIN:\$PATH"     # puts hmctl on PATH
  hmctl apply -f examples/
  hmctl get instances -o wide
  hmctl logs <instance>            # or: hmctl exec -it <instance> -- sh
Ctrl-C stops everything, the containers included.
MSG
wait -n "${pids[@]}"
