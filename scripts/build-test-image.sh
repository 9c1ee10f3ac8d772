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
# Import it by hand with: ctr -a SOCK -n hypermesh images import OUT.tar
set -euo pipefail

die() { printf 'build-test-image.sh: error: %s\n' "$*" >&2; exit 1; }

[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: $0 OUT.tar [IMAGE_NAME]"
out=$1
name=${2:-hypermesh.local/busybox:latest}
busybox=${BUSYBOX:-/bin/busybox}
[ -x "$busybox" ] || die "$busybox not found: install busybox-static (scripts/setup.sh)"
{ ldd "$busybox" 2>&1 || true; } | grep -q 'not a dynamic executable' \
    || die "$busybox is not statically linked: install busybox-static"

case "$(uname -m)" in
x86_64) arch=amd64 ;;
aarch64) arch=arm64 ;;
*) arch=$(uname -m) ;;
esac

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

layout="$work/layout"
mkdir -p "$layout/blobs/sha256"

# put FILE MEDIA_TYPE -> stores FILE as a blob, prints `digest size`.
put() {
    local digest size
    digest=$(sha256sum "$1" | cut -d' ' -f1)
    size=$(stat -c %s "$1")
    mv "$1" "$layout/blobs/sha256/$digest"
    echo "sha256:$digest $size"
}

tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu \
    -C "$root" -cf "$work/layer.tar" .
read -r layer_digest layer_size < <(put "$work/layer.tar")

printf '{"architecture":"%s","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["/bin/sh"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["%s"]}}' \
    "$arch" "$layer_digest" >"$work/config.json"
read -r config_digest config_size < <(put "$work/config.json")

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%s}]}' \
    "$config_digest" "$config_size" "$layer_digest" "$layer_size" >"$work/manifest.json"
read -r manifest_digest manifest_size < <(put "$work/manifest.json")

tag=${name##*:}
[ "$tag" != "$name" ] || tag=latest
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"platform":{"architecture":"%s","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
    "$manifest_digest" "$manifest_size" "$arch" "$name" "$tag" >"$layout/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"

mkdir -p "$(dirname "$out")"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu \
    -C "$layout" -cf "$out.tmp" oci-layout index.json blobs
mv "$out.tmp" "$out"
echo "$out: $name manifest $manifest_digest"
