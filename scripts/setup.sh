#!/usr/bin/env bash
# Installs what building, testing and benchmarking HyperMesh need on Debian 12.
# Idempotent: on a ready machine it checks and prints one line, with no apt or cargo work.
#
#   protobuf-compiler  protoc for etcd-client's build script (our own protos use a vendored protoc)
#   etcd-server        /usr/bin/etcd, started by the benchmarks and (later) the etcd store tests.
#                      Debian's package may try to start a system etcd service; nothing here
#                      relies on it: every test and bench starts its own etcd on free ports.
#   make               the entry points (`make up`, `make test`)
#   cargo-nextest      the test runner `make test` uses
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

# Debian package that provides each command we need.
declare -A PACKAGE_FOR=(
    [protoc]=protobuf-compiler
    [etcd]=etcd-server
    [make]=make
)

missing=()
for cmd in protoc etcd make; do
    pkg=${PACKAGE_FOR[$cmd]}
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done

if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get: install them by hand"
    say "installing ${missing[*]} with apt-get"
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# --- containerd runtime (issue 6) -------------------------------------------------------
#   containerd      the container runtime hm-agent drives over its gRPC socket; tests and
#                   `make up` start a private one with scripts/containerd.sh (own socket and
#                   state dir). Debian's package enables a system containerd service; nothing
#                   here relies on it.
#   runc            the OCI runtime containerd's runc shim runs
#   busybox-static  a static /bin/busybox that scripts/build-test-image.sh turns into the
#                   test image hypermesh.local/busybox:latest
#   docker-registry the CNCF distribution registry (2.8); the registry_pull tests start
#                   their own on a free loopback port with a temp storage dir. Debian's
#                   package enables a system registry service on :5000; nothing here
#                   relies on it.
runtime_missing=()
command -v containerd >/dev/null 2>&1 || runtime_missing+=(containerd)
command -v runc >/dev/null 2>&1 || runtime_missing+=(runc)
if ! [ -x /bin/busybox ] || ! { ldd /bin/busybox 2>&1 || true; } | grep -q 'not a dynamic executable'; then
    runtime_missing+=(busybox-static)
fi
[ -x /usr/bin/docker-registry ] || runtime_missing+=(docker-registry)
if [ ${#runtime_missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || die "missing ${runtime_missing[*]} and no apt-get: install them by hand"
    say "installing ${runtime_missing[*]} with apt-get"
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends "${runtime_missing[@]}"
fi
# --- end containerd runtime ------------------------------------------------------------

command -v cargo >/dev/null 2>&1 || die "cargo not found: install the Rust toolchain (rustup) first"

if ! cargo nextest --version >/dev/null 2>&1; then
    say "installing cargo-nextest (cargo install, takes a few minutes)"
    cargo install cargo-nextest --locked
fi

say "ok: $(protoc --version), etcd $(etcd --version 2>/dev/null | sed -n 's/^etcd Version: //p'), $(cargo nextest --version 2>/dev/null | head -n1), containerd $(containerd --version 2>/dev/null | awk '{print $3}')"
