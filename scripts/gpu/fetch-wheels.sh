#!/usr/bin/env bash
# Download, on a machine with access to PyPI, the wheels that scripts/gpu/acceptance.sh installs
# on a bare GPU machine without network (Python 3.12, x86_64), at the versions requirements.lock
# pins, into wheels/ (ignored by git):
#
#   wheels/base/     reframe-hpc and what it needs (not polars: only ReFrame's optional results
#                    storage imports it), nvidia-ml-py, and dali.manifest
#   wheels/dali-K/   part K of dali.tar (DALI's wheel and the wheels it needs, but numpy and
#                    those already in base/),
#                    split into PART_MB megabyte parts, one folder per device call so that no
#                    call carries more than 64 MiB with the working tree
#
#   bash scripts/gpu/fetch-wheels.sh [--no-dali]
#
# The order of the device calls that carry them is at the top of scripts/gpu/acceptance.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."

PYVER=${PYVER:-3.12}
PART_MB=${PART_MB:-60}
dali=1
[ "${1:-}" = "--no-dali" ] && dali=0

pin() {  # NAME[EXTRAS]: the requirement at the version requirements.lock pins, or a one-line error
    local name=${1%%[*} v
    v=$(grep -i -E "^${name}==" requirements.lock | head -1 | cut -d= -f3)
    [ -n "$v" ] || { echo "fetch-wheels.sh: requirements.lock: no pin for $name" >&2; exit 2; }
    echo "$1==$v"
}

download() {  # DEST ARGS...: binary wheels for the GPU machine's Python and platform, lock-constrained
    local dest=$1; shift
    python3 -m pip download -q --disable-pip-version-check --only-binary=:all: --python-version "$PYVER" \
        --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_34_x86_64 --platform any \
        -c requirements.lock -d "$dest" "$@"
}

rm -rf wheels/base wheels/dali-* wheels/.dali
mkdir -p wheels/base
download wheels/base "$(pin reframe-hpc)" "$(pin nvidia-ml-py)"
rm -f wheels/base/polars*.whl
echo "fetch-wheels.sh: wheels/base: $(ls wheels/base/*.whl | wc -l) wheels, $(du -sh wheels/base | cut -f1)"

if [ "$dali" = 1 ]; then
    # DALI with what it needs; its CUDA runtime comes from torch's CUDA 13 wheels on the machine,
    # numpy from the machine.
    mkdir -p wheels/.dali/whl
    download wheels/.dali/whl "$(pin nvidia-dali-cuda130)"
    rm -f wheels/.dali/whl/numpy-*.whl
    for whl in wheels/.dali/whl/*.whl; do  # one copy of each wheel: pip refuses a second
        [ -e "wheels/base/$(basename "$whl")" ] && rm "$whl"
    done
    tar -C wheels/.dali -cf wheels/.dali/dali.tar whl
    (cd wheels/.dali && split -b "${PART_MB}MB" -d -a 2 dali.tar dali.part-)
    parts=(wheels/.dali/dali.part-*)
    for i in "${!parts[@]}"; do
        mkdir -p "wheels/dali-$((i + 1))"
        mv "${parts[$i]}" "wheels/dali-$((i + 1))/"
    done
    # What acceptance.sh checks before it unpacks: the parts' count and the whole's digest.
    printf 'dali.tar %s %s\n' "${#parts[@]}" "$(sha256sum wheels/.dali/dali.tar | cut -d' ' -f1)" \
        >wheels/base/dali.manifest
    echo "fetch-wheels.sh: DALI and $(($(ls wheels/.dali/whl | wc -l) - 1)) wheels it needs in ${#parts[@]} parts"
    rm -rf wheels/.dali
fi
du -sh wheels/*
