#!/usr/bin/env bash
# Install xferscale into the image's Python: the pins the base image does not already
# provide (container/pins.py), the suite itself, and optionally Horovod (NCCL).
# Both recipes run this, so the Docker image and the SIF hold the same environment.
#
#   container/install_suite.sh SRC_DIR        (env: WITH_HOROVOD=0|1, HOROVOD_VERSION)
set -euo pipefail

src="$(cd "${1:?usage: install_suite.sh SRC_DIR}" && pwd)"
pins="$(mktemp -d)"
trap 'rm -rf "$pins"' EXIT

python3 "$src/container/pins.py" --requirements "$src/requirements.txt" \
    --lock "$src/requirements.lock" --out "$pins"
python3 -m pip install --no-cache-dir -r "$pins/requirements.txt" -c "$pins/constraints.txt"
python3 -m pip install --no-cache-dir --no-deps "$src"

# Horovod takes minutes to compile: skip it when the base (CI's Docker image) already has it.
if [[ "${WITH_HOROVOD:-1}" == 1 ]]; then
    if python3 -c 'import sys, horovod, horovod.torch as h; sys.exit(not (horovod.__version__ == sys.argv[1] and h.nccl_built()))' \
            "${HOROVOD_VERSION:?}" 2>/dev/null; then
        echo "install_suite.sh: horovod ${HOROVOD_VERSION} with NCCL already installed"
    else
        PYTHON=python3 "$src/scripts/install_horovod.sh" --gpu
    fi
fi

# What the image holds, for the record. pip check only warns: base images have been
# shipped with unmet optional requirements of their own.
python3 -m pip check || echo "install_suite.sh: warning: pip check found unmet requirements (above)" >&2
python3 -m pip freeze > "$src/installed-packages.txt"
