#!/usr/bin/env bash
# `make up`: a single-host cluster on the embedded store, in the foreground, with TLS.
#
# Starts a private containerd (scripts/containerd.sh) and builds the test image into
# .hypermesh-dev/images, then hm-apiserver (TLS 1.3 with client certificates; it writes
# admin.config and scheduler.config into its data dir on first start), hm-scheduler with
# scheduler.config, and hm-agent, which joins with a one-use token the first time and
# keeps its certificate in its state dir.
#
# Every component is supervised: when one exits, the log says which and with what
# status, and it is restarted with back-off (1 s doubling to 30 s); containers keep
# running, so a restarted agent adopts them. Only Ctrl-C (or SIGTERM) stops everything,
# the containers and containerd included.
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
SERVER="https://$LISTEN"

say() { printf 'make up: %s\n' "$*" >&2; }

mkdir -p "$DATA_DIR" "$STATE_DIR"
ADMIN_CONFIG="$(cd "$DATA_DIR" && pwd)/admin.config"
supervisors=()
stopping=0

cleanup() {
    stopping=1
    trap - EXIT INT TERM
    say "stopping..."
    for pid in "${supervisors[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    say "stopping containers and containerd..."
    bash scripts/containerd.sh purge "$RUNTIME_DIR" >/dev/null 2>&1 || true
    bash scripts/containerd.sh stop "$RUNTIME_DIR" >/dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM

# Runs "$@" as component $1 until make up stops: reports each exit with its status and
# starts it again after a back-off that doubles (1 s to 30 s) and resets once the
# component has run for a minute.
supervise() {
    local name=$1
    shift
    (
        child=0
        trap 'kill -TERM "$child" 2>/dev/null; wait "$child" 2>/dev/null; exit 0' TERM INT
        delay=1
        while true; do
            started=$SECONDS
            "$@" &
            child=$!
            status=0
            wait "$child" || status=$?
            if [ $((SECONDS - started)) -ge 60 ]; then delay=1; fi
            say "$name exited with status $status; restarting in ${delay}s (containers keep running)"
            sleep "$delay"
            delay=$((delay * 2 > 30 ? 30 : delay * 2))
        done
    ) &
    supervisors+=($!)
}

# The container runtime the agent drives, and the image examples/web.yaml runs.
mkdir -p "$IMAGE_DIR"
[ -f "$IMAGE_DIR/busybox.tar" ] || bash scripts/build-test-image.sh "$IMAGE_DIR/busybox.tar"
SOCKET=$(bash scripts/containerd.sh start "$RUNTIME_DIR")

# The apiserver prints one line on stdout once it serves; wait for it (a minute at most).
ready_file="$DATA_DIR/apiserver.stdout"
rm -f "$ready_file"
supervise hm-apiserver sh -c 'exec "$0" --listen "$1" --data-dir "$2" >"$3"' \
    "$BIN/hm-apiserver" "$LISTEN" "$DATA_DIR" "$ready_file"
for _ in $(seq 600); do
    grep -q 'listening on' "$ready_file" 2>/dev/null && break
    sleep 0.1
done
grep -q 'listening on' "$ready_file" 2>/dev/null || { say "hm-apiserver did not start; see the log above"; exit 1; }
say "$(head -n1 "$ready_file")"

supervise hm-scheduler "$BIN/hm-scheduler" --config "$DATA_DIR/scheduler.config"

if [ -x "$BIN/hm-agent" ]; then
    join=()
    if [ ! -f "$STATE_DIR/pki/node.crt" ]; then
        # First start: a one-use token and the CA pin, as an admin would hand them out.
        token_out=$(HYPERMESH_CONFIG="$ADMIN_CONFIG" "$BIN/hmctl" token create --ttl 10m --uses 1 \
            --description "make up agent")
        token=$(awk '/^token:/ {print $2}' <<<"$token_out")
        pin=$(awk '/^ca-cert-hash:/ {print $2}' <<<"$token_out")
        join=(--join-token "$token" --ca-cert-hash "$pin")
        say "the agent joins with a one-use token (CA $pin)"
    fi
    supervise hm-agent "$BIN/hm-agent" --server "$SERVER" --state-dir "$STATE_DIR" \
        --containerd-socket "$SOCKET" --image-dir "$IMAGE_DIR" --secrets-dir "$SECRETS_DIR" \
        "${join[@]}"
fi

cat <<MSG

HyperMesh is up: apiserver $SERVER (TLS; data in $DATA_DIR), scheduler$( [ -x "$BIN/hm-agent" ] && echo ", agent" ), containerd $SOCKET.
In another terminal:
  export HYPERMESH_CONFIG=$ADMIN_CONFIG
  export PATH="$PWD/$BIN:\$PATH"     # puts hmctl on PATH
  hmctl apply -f examples/
  hmctl get instances -o wide
  hmctl logs <instance>            # or: hmctl exec -it <instance> -- sh
A component that dies is restarted (containers keep running); Ctrl-C stops everything.
MSG
# Until Ctrl-C / SIGTERM: the supervisors never exit on their own.
while [ "$stopping" -eq 0 ]; do
    wait "${supervisors[@]}" 2>/dev/null || true
    sleep 1
done
