#!/usr/bin/env bash
# Times pulling the busybox test image from a local registry into containerd: the
# agent's image pull client (containers/examples/pull-image.rs, the code the Instance
# reconciler runs) against `ctr images pull --plain-http --user` (containerd's own
# client-side pull), on the same registry and the same containerd build.
#
#   cargo build --release -p hypermesh-containers --example pull-image
#   scripts/bench-registry-pull.sh [RUNS]          # default 5 runs each
#
# Setup (not timed): Debian's docker-registry on a free loopback port with htpasswd auth
# (bcrypt cost 4, as the tests use: the registry checks the password on every request),
# and the image pushed into it with ctr. Every timed pull goes into a fresh private
# containerd (scripts/containerd.sh), so nothing is cached; the two clients alternate
# run by run. Times are wall clock of the whole command, process start included, fetch
# and unpack. PULL_IMAGE overrides the path of the pull-image binary.
set -euo pipefail

die() { printf 'bench-registry-pull.sh: error: %s\n' "$*" >&2; exit 1; }

runs=${1:-5}
root=$(cd "$(dirname "$0")/.." && pwd)
pull_image=${PULL_IMAGE:-${CARGO_TARGET_DIR:-$root/target}/release/examples/pull-image}
[ -x "$pull_image" ] || die "$pull_image not found: cargo build --release -p hypermesh-containers --example pull-image"
[ -x /usr/bin/docker-registry ] || die "docker-registry not found: run scripts/setup.sh"
command -v ctr >/dev/null || die "ctr not found: run scripts/setup.sh"

work=$(mktemp -d)
registry_pid=
cleanup() {
    [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null || true
    for d in "$work"/ctd-*; do
        [ -d "$d" ] && bash "$root/scripts/containerd.sh" stop "$d" >/dev/null 2>&1 || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

user=bench
password=bench-password
hash=$(python3 -W ignore -c 'import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))' "$password")
printf '%s:%s\n' "$user" "$hash" >"$work/htpasswd"
cat >"$work/registry.yml" <<YAML
version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/storage
http:
  addr: 127.0.0.1:0
auth:
  htpasswd:
    realm: bench
    path: $work/htpasswd
YAML
/usr/bin/docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
host=
for _ in $(seq 1 200); do
    host=$(sed -n 's/.*listening on \(127\.0\.0\.1:[0-9]*\).*/\1/p' "$work/registry.log" | head -n1)
    [ -n "$host" ] && break
    sleep 0.05
done
[ -n "$host" ] || die "registry did not start: $(tail -n 5 "$work/registry.log")"
ref="$host/hypermesh/busybox:v1"

# Push the test image with ctr from a scratch containerd.
bash "$root/scripts/build-test-image.sh" "$work/busybox.oci.tar" >/dev/null
sock=$(bash "$root/scripts/containerd.sh" start "$work/ctd-push")
ctr -a "$sock" -n push images import "$work/busybox.oci.tar" >/dev/null
ctr -a "$sock" -n push images push --plain-http --user "$user:$password" "$ref" hypermesh.local/busybox:latest >/dev/null
bash "$root/scripts/containerd.sh" stop "$work/ctd-push"
printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$host" "$(printf '%s:%s' "$user" "$password" | base64 -w0)" >"$work/auth.json"
layer_bytes=$(find "$work/storage" -path '*/blobs/*' -name data -size +100k -printf '%s\n' | head -n1)

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# time_pull NAME RUN: pulls into a fresh containerd with client NAME, prints ms.
time_pull() {
    local dir="$work/ctd-$1-$2" sock start end
    sock=$(bash "$root/scripts/containerd.sh" start "$dir")
    start=$(now_ms)
    case $1 in
    hypermesh)
        "$pull_image" --containerd-socket "$sock" --insecure-registry "$host" \
            --registry-auth "$work/auth.json" "$ref" >/dev/null
        ;;
    ctr)
        ctr -a "$sock" -n hypermesh images pull --plain-http --user "$user:$password" "$ref" >/dev/null
        ;;
    esac
    end=$(now_ms)
    # Both must have unpacked the image.
    ctr -a "$sock" -n hypermesh snapshots ls | grep -q Committed || die "$1 left no unpacked snapshot"
    bash "$root/scripts/containerd.sh" stop "$dir"
    rm -rf "$dir"
    echo $((end - start))
}

ours=()
theirs=()
for i in $(seq 1 "$runs"); do
    ours+=("$(time_pull hypermesh "$i")")
    theirs+=("$(time_pull ctr "$i")")
    printf 'run %d: hypermesh %s ms, ctr %s ms\n' "$i" "${ours[-1]}" "${theirs[-1]}"
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
m_ours=$(median "${ours[@]}")
m_theirs=$(median "${theirs[@]}")
echo
echo "image $ref: one layer of $layer_bytes bytes (uncompressed tar), containerd $(containerd --version | awk '{print $3}')"
echo "runs: $runs each; median: hypermesh $m_ours ms, ctr $m_theirs ms; hypermesh / ctr = $(awk -v a="$m_ours" -v b="$m_theirs" 'BEGIN {printf "%.2f", a / b}')x"
