#!/usr/bin/env bash
# Builds the test image `hypermesh.local/busybox:latest` as an OCI image archive (a tar of
# an OCI image layout: oci-layout, index.json, blobs/sha256/...) from Debian's
# busybox-static. No registry or network is involved.
#
#   scripts/build-test-image.sh OUT.tar [IMAGE_NAME]
#
# Reproducible: the same busybox binary gives byte-identical archives (sorted entries,
# mtime 0, uid/gid 0, fixed modes, no timestamps in the config). One uncompressed layer,
# so its digest is also its diff_id. The root filesystem holds /bin/busybox, a symlink per
# applet, /etc/passwd, /etc/group, /tmp and /proc, /sys, /dev mount points.
# The OCI layout itself is written by scripts/oci-archive.sh, which scripts/build-images.sh
# uses too. Import it by hand with: ctr -a SOCK -n hypermesh images import OUT.tar
set -euo pipefail

die() { printf 'build-test-image.sh: error: %s\n' "$*" >&2; exit 1; }

[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: $0 OUT.tar [IMAGE_NAME]"
out=$1
name=${2:-hypermesh.local/busybox:latest}
busybox=${BUSYBOX:-/bin/busybox}
[ -x "$busybox" ] || die "$busybox not found: install busybox-static (scripts/setup.sh)"
{ ldd "$busybox" 2>&1 || true; } | grep -q 'not a dynamic executable' \
    || die "$busybox is not statically linked: install busybox-static"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 022

# Root filesystem.
root="$work/rootfs"
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/proc" "$root/sys" "$root/dev" "$root/root"
chmod 1777 "$root/tmp"
cp "$busybox" "$root/bin/busybox"
chmod 0755 "$root/bin/busybox"
for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
chmod 0644 "$root/etc/passwd" "$root/etc/group"

case "${name##*/}" in
*:?*) ;;
*) name=$name:latest ;;
esac
bash "$(dirname "$0")/oci-archive.sh" "$out" "$name" \
    '{"Env":["PATH=/bin"],"Cmd":["/bin/sh"],"WorkingDir":"/"}' "$root"
