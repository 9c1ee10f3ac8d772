#!/usr/bin/env bash
# Writes an OCI image archive (a tar of an OCI image layout: oci-layout, index.json,
# blobs/sha256/...) from root filesystem directories, one uncompressed layer each, in
# order. No Docker daemon, registry or network is involved; `ctr images import` and the
# agent's importer (hypermesh-containers `image::import_archive`) both read the result.
#
#   scripts/oci-archive.sh OUT.tar IMAGE_NAME CONFIG_JSON LAYER_DIR...
#
# CONFIG_JSON is the image config's `config` object, e.g.
#   '{"Env":["PATH=/bin"],"Cmd":["/bin/sh"],"WorkingDir":"/"}'
# Reproducible: the same directories give byte-identical archives (sorted entries,
# mtime 0, uid/gid 0, no timestamps in the config). Layers are uncompressed, so each
# layer's digest is also its diff_id, and two images built from the same base directory
# share that layer's blob in containerd's content store.
set -euo pipefail

die() { printf 'oci-archive.sh: error: %s\n' "$*" >&2; exit 1; }

[ $# -ge 4 ] || die "usage: $0 OUT.tar IMAGE_NAME CONFIG_JSON LAYER_DIR..."
out=$1
name=$2
config=$3
shift 3
for dir in "$@"; do
    [ -d "$dir" ] || die "layer directory $dir does not exist"
done
case "${name##*/}" in
*:?*) ;;
*) die "image name $name has no tag (NAME:TAG)" ;;
esac

case "$(uname -m)" in
x86_64) arch=amd64 ;;
aarch64) arch=arm64 ;;
*) arch=$(uname -m) ;;
esac

umask 022
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
layout="$work/layout"
mkdir -p "$layout/blobs/sha256"

# put FILE -> stores FILE as a blob, prints `digest size`.
put() {
    local digest size
    digest=$(sha256sum "$1" | cut -d' ' -f1)
    size=$(stat -c %s "$1")
    mv "$1" "$layout/blobs/sha256/$digest"
    echo "sha256:$digest $size"
}

diff_ids=""
layers=""
for dir in "$@"; do
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu \
        -C "$dir" -cf "$work/layer.tar" .
    read -r digest size < <(put "$work/layer.tar")
    diff_ids+="${diff_ids:+,}\"$digest\""
    layers+="${layers:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"$digest\",\"size\":$size}"
done

printf '{"architecture":"%s","os":"linux","config":%s,"rootfs":{"type":"layers","diff_ids":[%s]}}' \
    "$arch" "$config" "$diff_ids" >"$work/config.json"
read -r config_digest config_size < <(put "$work/config.json")

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[%s]}' \
    "$config_digest" "$config_size" "$layers" >"$work/manifest.json"
read -r manifest_digest manifest_size < <(put "$work/manifest.json")

tag=${name##*:}
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"platform":{"architecture":"%s","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
    "$manifest_digest" "$manifest_size" "$arch" "$name" "$tag" >"$layout/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"

mkdir -p "$(dirname "$out")"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu \
    -C "$layout" -cf "$out.tmp" oci-layout index.json blobs
mv "$out.tmp" "$out"
echo "$out: $name manifest $manifest_digest"
