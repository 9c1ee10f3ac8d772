#!/usr/bin/env bash
# Installs what building, testing and benchmarking HyperMesh need on Debian 12.
# Idempotent: on a ready machine it checks and prints one line, with no apt or cargo work.
#
# Packages are checked by *name* (dpkg-query), never by whether some command or file
# happens to be present: a machine may carry files a fresh Debian 12 does not, and that
# is how a missing package slips through. `scripts/fresh-build-check.sh` (run by CI)
# builds with every header outside these packages and a minimal Debian hidden.
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

# The Debian packages HyperMesh needs, one per line: name, then why.
# scripts/fresh-build-check.sh reads this list (the names before the first space).
PACKAGES_FILE="$(dirname "$0")/packages.txt"
mapfile -t PACKAGES < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$PACKAGES_FILE" | awk '{print $1}')

installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

missing=()
for pkg in "${PACKAGES[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done

if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get: install them by hand"
    say "installing ${missing[*]} with apt-get"
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
    for pkg in "${missing[@]}"; do
        installed "$pkg" || die "apt-get did not install $pkg"
    done
fi

# busybox-static must provide a static /bin/busybox (the test image is built from it);
# Debian's dynamic `busybox` package would replace it.
if ! { ldd /bin/busybox 2>&1 || true; } | grep -q 'not a dynamic executable'; then
    die "/bin/busybox is not static: reinstall busybox-static (apt-get install --reinstall busybox-static)"
fi

command -v cargo >/dev/null 2>&1 || die "cargo not found: install the Rust toolchain (rustup) first"

if ! cargo nextest --version >/dev/null 2>&1; then
    say "installing cargo-nextest (cargo install, takes a few minutes)"
    cargo install cargo-nextest --locked
fi

say "ok: ${#PACKAGES[@]} packages, $(protoc --version), etcd $(etcd --version 2>/dev/null | sed -n 's/^etcd Version: //p'), $(cargo nextest --version 2>/dev/null | head -n1), containerd $(containerd --version 2>/dev/null | awk '{print $3}')"
