#!/usr/bin/env bash
# Build the Dockerfile with podman on a local stand-in for its NGC base (NGC cannot be
# reached from CI; scripts/ci/container-base.sh), then test what the recipe does after FROM:
# install_suite.sh and container/pins.py (the base's torch/DALI kept, nothing CUDA installed
# over them), the entry point, apptainer.def's %runscript and %test (container/smoke.sh),
# a CPU `xferscale pretrain`, and no build leftovers in /opt/xferscale.
#
#   scripts/ci/container-test.sh          (root, Debian; `make container-test`)
#
# Exits 3 with one line saying why where podman cannot be had; under CI=true that fails .ci/run.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
image=localhost/xferscale:ci
started=$SECONDS
say() { echo "[container] $* ($((SECONDS - started)) s)"; }
cannot() { echo "container-test: cannot run: $*" >&2; exit 3; }

[[ $(id -u) -eq 0 ]] || cannot "needs root (podman storage, debootstrap)"
missing=()
for cmd in podman runc debootstrap; do command -v "$cmd" >/dev/null || missing+=("$cmd"); done
if ((${#missing[@]})); then
    command -v apt-get >/dev/null || cannot "missing ${missing[*]} and no apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        podman buildah runc debootstrap uidmap fuse-overlayfs >/dev/null || cannot "apt-get install podman failed"
fi

# This VM's cgroups: crun refuses them ("hybrid mode"), runc works; and it cannot raise
# resource limits, so containers keep the limits they inherit.
work="$(mktemp -d)"
trap 'rm -rf "$work"; podman rmi -f "$image" >/dev/null 2>&1 || true' EXIT
cat >"$work/containers.conf" <<'EOF'
[containers]
default_ulimits = []
[engine]
runtime = "runc"
EOF
export CONTAINERS_CONF="$work/containers.conf"

# requirements.lock was resolved on Python 3.11; NGC's Python is 3.12: every pin must have a
# wheel for it (metadata only, nothing installed).
platforms=()
for minor in $(seq 5 35); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
if ! "$repo/.venv/bin/python" -m pip install --dry-run --quiet --ignore-installed --no-deps --only-binary=:all: \
        --python-version 3.12 --implementation cp --abi cp312 "${platforms[@]}" --platform manylinux2014_x86_64 \
        --platform linux_x86_64 --target "$work/py312" -r requirements.lock >"$work/py312.log" 2>&1; then
    grep -v '^WARNING: Location' "$work/py312.log" >&2
    echo "container-test: requirements.lock has pins without a Python 3.12 wheel (above)" >&2
    exit 1
fi
say "requirements.lock resolves for Python 3.12"

base=$(scripts/ci/container-base.sh "$repo/.venv")
say "base image $base"

build_args=()
while IFS='=' read -r key value; do
    [[ $key =~ ^[A-Z_]+$ ]] && build_args+=(--build-arg "$key=$value")
done <container/versions.env
# The base stand-in; no Horovod (a GPU build; scripts/install_horovod.sh is tested apart);
# this machine's TLS-inspecting proxy: its CA bundle, for pip in the build.
build_args+=(--build-arg "BASE_IMAGE=$base" --build-arg WITH_HOROVOD=0)
cert=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
[[ -r $cert ]] && build_args+=(--build-arg "PIP_CERT=$cert" --volume "$(dirname "$cert"):$(dirname "$cert"):ro")
podman build --quiet "${build_args[@]}" -t "$image" . >"$work/build.log" 2>&1 \
    || { tail -40 "$work/build.log" >&2; exit 1; }
say "built $image from Dockerfile"

run() { podman run --rm --network=none "$@"; }

# ENTRYPOINT: `docker run IMAGE ARGS` is `xferscale ARGS`
run "$image" --version | grep -qx "xferscale $(sed -n 's/^XFERSCALE_VERSION=//p' container/versions.env)"
# the base's torch and DALI are the ones in use, not copies from PyPI
run --entrypoint python3 "$image" -c '
import importlib.metadata as m, sys, torch, nvidia.dali
base = "/usr/local/lib/python3"
assert torch.__file__.startswith(base) and nvidia.dali.__file__.startswith(base), (torch.__file__, nvidia.dali.__file__)
installed = [d.metadata["Name"] for d in m.distributions() if "/opt/xferscale/venv/" in str(d._path)]
cuda = [n for n in installed if n.lower() in ("torch", "torchvision", "triton") or n.lower().startswith(("nvidia", "cuda"))]
assert not cuda, f"installed over the base: {cuda}"
assert m.metadata("xferscale")["Description"], "the wheel has no description (README.md not in the build)"
print(f"torch {torch.__version__} and DALI {nvidia.dali.__version__} from the base; {len(installed)} packages in the venv")
'
# no build leftovers in /opt/xferscale
run --entrypoint sh "$image" -c 'cd /opt/xferscale && ! ls -d build suite/*.egg-info 2>/dev/null'
# apptainer.def %runscript, as Apptainer runs it (/bin/sh, arguments passed on unchanged)
runscript=$(awk '/^%runscript/{on=1; next} /^%/{on=0} on' apptainer.def)
run --entrypoint sh "$image" -c "$runscript" runscript hyperrule --help >/dev/null
# apptainer.def %test
run --entrypoint bash "$image" /opt/xferscale/container/smoke.sh >"$work/smoke.log" 2>&1 \
    || { tail -30 "$work/smoke.log" >&2; exit 1; }
say "smoke test passed ($(grep -c . "$work/smoke.log") lines)"
# a pre-training through the entry point, its checkpoint on a bind mount
mkdir -p "$work/run"
run -v "$work/run:/run-out" "$image" pretrain train.progress=false output_dir=/run-out >"$work/pretrain.log" 2>&1 \
    || { tail -30 "$work/pretrain.log" >&2; exit 1; }
test -s "$work/run/checkpoint.pt"
say "xferscale pretrain in the container: $(grep -m1 '^loss' "$work/pretrain.log")"
