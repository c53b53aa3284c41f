#!/usr/bin/env bash
# Install xferscale on the image's Python: the pins the base image does not already
# provide (container/pins.py), the suite itself, and optionally Horovod (NCCL).
# Both recipes run this, so the Docker image and the SIF hold the same environment.
#
#   container/install_suite.sh SRC_DIR        (env: WITH_HOROVOD=0|1, HOROVOD_VERSION,
#                                              PIP_CERT / PIP_INDEX_URL where a site needs them)
#
# Everything goes into the venv SRC_DIR/venv made with --system-site-packages: it sees the
# base's torch, CUDA and DALI, and pip may install into it even where the base's Python is
# marked externally managed (PEP 668: Debian's and Ubuntu's system Pythons are, NGC's may
# be). The recipes put SRC_DIR/venv/bin first on PATH. Re-running it (the SIF built from the
# Docker image) finds everything in place.
set -euo pipefail

src="$(cd "${1:?usage: install_suite.sh SRC_DIR}" && pwd)"
for var in PIP_CERT PIP_INDEX_URL; do  # build arguments a site did not set arrive empty
    [[ -n "${!var:-}" ]] || unset "$var"
done
pins="$(mktemp -d)"
trap 'rm -rf "$pins"' EXIT

venv="$src/venv"
[[ -x "$venv/bin/python3" ]] || python3 -m venv --system-site-packages "$venv"
python="$venv/bin/python3"

"$python" "$src/container/pins.py" --requirements "$src/requirements.txt" \
    --lock "$src/requirements.lock" --out "$pins"
"$python" -m pip install --no-cache-dir -r "$pins/requirements.txt" -c "$pins/constraints.txt"
"$python" -m pip install --no-cache-dir --no-deps "$src"
rm -rf "$src/build" "$src"/suite/*.egg-info  # the in-tree build's leftovers

# Horovod takes minutes to compile: skip it when the base (CI's Docker image) already has it.
if [[ "${WITH_HOROVOD:-1}" == 1 ]]; then
    if "$python" -c 'import sys, horovod, horovod.torch as h; sys.exit(not (horovod.__version__ == sys.argv[1] and h.nccl_built()))' \
            "${HOROVOD_VERSION:?}" 2>/dev/null; then
        echo "install_suite.sh: horovod ${HOROVOD_VERSION} with NCCL already installed"
    else
        PYTHON="$python" "$src/scripts/install_horovod.sh" --gpu
    fi
fi

# What the image holds, for the record. pip check only warns: base images have been
# shipped with unmet optional requirements of their own.
"$python" -m pip check || echo "install_suite.sh: warning: pip check found unmet requirements (above)" >&2
"$python" -m pip freeze > "$src/installed-packages.txt"
