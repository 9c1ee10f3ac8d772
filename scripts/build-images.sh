#!/usr/bin/env bash
# Builds the component images the Helm chart runs, as OCI image archives (importable by
# `ctr images import`, `hmctl image import` and the agent's --image-dir), without a Docker
# daemon: each image is two layers written by scripts/oci-archive.sh (the same writer
# as the busybox test image):
#   base       /etc/passwd, group, nsswitch.conf, /tmp, and the glibc runtime every
#              Rust binary links (libc, libm, libgcc_s, the loader), copied from this
#              host as `ldd` resolves them: the same blob in every image.
#   component  the binaries under /usr/local/bin (stripped) and any further shared
#              library they need.
#
#   scripts/build-images.sh OUT_DIR [COMPONENT...]
#
# COMPONENT is apiserver, scheduler, agent, proxy or hmctl (default: all five). Writes
# OUT_DIR/hm-COMPONENT.oci.tar named REGISTRY/hm-COMPONENT:TAG (hmctl: hmctl.oci.tar,
# REGISTRY/hmctl:TAG), the names the chart's
# values.yaml (image.*) and Chart.yaml appVersion (the default tag) give. Env:
#   BIN       directory holding the built binaries (default target/release)
#   REGISTRY  repository prefix (default hypermesh.local)
#   TAG       image tag (default: appVersion from charts/hypermesh/Chart.yaml)
#   STRIP     1 (default) strips symbols and debug info; 0 keeps them
#
# What each image holds beyond its binary, and why:
#   apiserver  /bin/busybox (static): the chart's NOTES.txt reads admin.config and
#          scheduler.config out of the pod with `kubectl exec ... /bin/busybox cat`.
#   agent  hm-logger (the chart's init container copies it onto the host for
#          containerd's shims), /bin/busybox (static; that init container's `cp`), and
#          the host's CA bundle (registry pulls over HTTPS).
#   proxy  ip and nft with their libraries (the transparent listener's hm0 device and
#          nftables redirect).
# apiserver, scheduler and hmctl default to user 65532 (nonroot); agent and proxy to root.
set -euo pipefail

die() { printf 'build-images.sh: error: %s\n' "$*" >&2; exit 1; }

root=$(cd "$(dirname "$0")/.." && pwd)
[ $# -ge 1 ] || die "usage: $0 OUT_DIR [apiserver|scheduler|agent|proxy|hmctl]..."
out=$1
shift
components=("$@")
[ ${#components[@]} -gt 0 ] || components=(apiserver scheduler agent proxy hmctl)
bin=${BIN:-$root/target/release}
registry=${REGISTRY:-hypermesh.local}
tag=${TAG:-$(sed -n 's/^appVersion:[[:space:]]*"\{0,1\}\([^"]*\)"\{0,1\}[[:space:]]*$/\1/p' "$root/charts/hypermesh/Chart.yaml")}
[ -n "$tag" ] || die "no TAG and no appVersion in charts/hypermesh/Chart.yaml"
strip=${STRIP:-1}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 022

# The files COMPONENT's image runs: `PATH-IN-IMAGE=SOURCE` lines.
files_of() {
    case "$1" in
    apiserver | scheduler | proxy | agent) echo "/usr/local/bin/hm-$1=$bin/hm-$1" ;;
    hmctl) echo "/usr/local/bin/hmctl=$bin/hmctl" ;;
    *) die "unknown component $1 (apiserver, scheduler, agent, proxy, hmctl)" ;;
    esac
    case "$1" in
    apiserver) echo "/bin/busybox=${BUSYBOX:-/bin/busybox}" ;;
    agent)
        echo "/usr/local/bin/hm-logger=$bin/hm-logger"
        echo "/bin/busybox=${BUSYBOX:-/bin/busybox}"
        ;;
    proxy)
        local tool path
        for tool in ip nft; do
            path=$(PATH=/usr/sbin:/usr/bin:/sbin:/bin command -v "$tool") \
                || die "$tool not found: the proxy image carries it (Debian packages iproute2, nftables: scripts/packages.txt)"
            path=$(readlink -f "$path")
            echo "$path=$path"
        done
        ;;
    esac
}

# The shared libraries FILE loads, as absolute paths (the loader included); none for a
# static binary.
libs_of() {
    local text
    text=$(ldd "$1" 2>&1) || { [[ $text == *"not a dynamic executable"* ]] && return 0; die "ldd $1: $text"; }
    [[ $text != *"not found"* ]] || die "ldd $1: a library is missing: $text"
    awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$text"
}

# copy_file SOURCE DIR/PATH: a regular file (symlinks followed) with its mode.
copy_file() {
    mkdir -p "$(dirname "$2")"
    cp -L "$1" "$2"
    chmod "$(stat -L -c %a "$1")" "$2"
}

# Base layer: the glibc runtime of the Rust binaries, and the /etc files.
base="$work/base"
mkdir -p "$base/etc" "$base/tmp" "$base/proc" "$base/sys" "$base/dev" "$base/root"
chmod 1777 "$base/tmp"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n' >"$base/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\nnogroup:x:65534:\n' >"$base/etc/group"
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$base/etc/nsswitch.conf"
# (Command substitutions run in subshells: each result is assigned first, so a `die`
# in them stops the script under `set -e`.)
base_libs=""
for component in "${components[@]}"; do
    files=$(files_of "$component")
    while IFS='=' read -r _ source; do
        [ -x "$source" ] || die "$source is missing: build it first (make images does; /bin/busybox: Debian package busybox-static)"
        case "$source" in "$bin"/*) ;; *) continue ;; esac
        libs=$(libs_of "$source")
        for lib in $libs; do
            case "${lib##*/}" in
            libc.so.* | libm.so.* | libgcc_s.so.* | ld-linux*.so.*)
                copy_file "$lib" "$base$lib"
                base_libs+=" $lib"
                ;;
            esac
        done
    done <<<"$files"
done

mkdir -p "$out"
for component in "${components[@]}"; do
    layer="$work/$component"
    mkdir -p "$layer"
    user=65532:65532
    files=$(files_of "$component")
    while IFS='=' read -r target source; do
        copy_file "$source" "$layer$target"
        case "$source" in
        "$bin"/*) [ "$strip" = 0 ] || strip "$layer$target" ;;
        esac
        libs=$(libs_of "$source")
        for lib in $libs; do
            [[ " $base_libs " == *" $lib "* ]] || copy_file "$lib" "$layer$lib"
        done
    done <<<"$files"
    case "$component" in
    agent)
        user=0:0
        ca=/etc/ssl/certs/ca-certificates.crt
        [ -f "$ca" ] || die "$ca not found: the agent image carries the CA bundle for registry pulls (Debian package ca-certificates)"
        copy_file "$ca" "$layer$ca"
        ;;
    proxy) user=0:0 ;;
    esac
    image=hm-$component
    [ "$component" != hmctl ] || image=hmctl
    config=$(printf '{"User":"%s","Env":["PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Entrypoint":["/usr/local/bin/%s"],"WorkingDir":"/","Labels":{"org.opencontainers.image.title":"%s","org.opencontainers.image.version":"%s"}}' \
        "$user" "$image" "$image" "$tag")
    bash "$root/scripts/oci-archive.sh" "$out/$image.oci.tar" "$registry/$image:$tag" "$config" "$base" "$layer"
done
