#!/usr/bin/env bash
# Builds the workspace as a fresh Debian 12 would see it: in a private mount namespace
# whose /usr/include holds only the headers (and .proto files) of
#   - packages of priority required/important (a minimal Debian),
#   - the C toolchain a Rust install needs (gcc, libc6-dev and what they pull in),
#   - the packages scripts/packages.txt declares.
# A build script that needs a header from any other package (as etcd-client's did with
# libprotobuf-dev's descriptor.proto) fails here, on a machine that happens to have it.
#
#   scripts/fresh-build-check.sh [cargo args...]   default: build --workspace --bins --tests
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--inside" ]; then
    shift
    allowed_root=$1
    shift
    mount --bind "$allowed_root" /usr/include
    exec "$@"
fi

command -v unshare >/dev/null || { echo "fresh-build-check: unshare missing (util-linux)" >&2; exit 1; }

declared=$(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' scripts/packages.txt | awk '{print $1}')
base=$(dpkg-query -W -f='${Package} ${Priority}\n' | awk '$2=="required" || $2=="important" {print $1}')
toolchain=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances gcc libc6-dev 2>/dev/null | grep -v '^[ <]' | sort -u)

allowed=$(mktemp -d /tmp/hm-fresh-include.XXXXXX)
trap 'rm -rf "$allowed"' EXIT
kept=0
for pkg in $declared $base $toolchain; do
    # Packages that are allowed but not installed have nothing to copy.
    files=$(dpkg-query -L "$pkg" 2>/dev/null | grep '^/usr/include/' || true)
    for f in $files; do
        [ -f "$f" ] || continue
        dest="$allowed/${f#/usr/include/}"
        mkdir -p "$(dirname "$dest")"
        cp -a "$f" "$dest"
        kept=$((kept + 1))
    done
done
hidden=$(find /usr/include -type f | wc -l)
echo "fresh-build-check: /usr/include narrowed to $kept of $hidden files (minimal Debian, C toolchain, scripts/packages.txt)"

if [ $# -eq 0 ]; then
    set -- cargo build --workspace --bins --tests
fi
unshare --mount --propagation private "$0" --inside "$allowed" "$@"
echo "fresh-build-check: ok"
