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

command -v cargo >/dev/null 2>&1 || die "cargo not found: install the Rust toolchain (rustup) first"

if ! cargo nextest --version >/dev/null 2>&1; then
    say "installing cargo-nextest (cargo install, takes a few minutes)"
    cargo install cargo-nextest --locked
fi

say "ok: $(protoc --version), etcd $(etcd --version 2>/dev/null | sed -n 's/^etcd Version: //p'), $(cargo nextest --version 2>/dev/null | head -n1)"
