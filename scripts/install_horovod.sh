#!/usr/bin/env bash
# Build and install Horovod against the torch already installed in $PYTHON's environment.
#
#   scripts/install_horovod.sh [--gpu | --cpu | --auto] [--with-mpi] [--patch-only DIR]
#
# Horovod's last release (0.28.1) does not compile against torch >= 2.1 as shipped: torch's
# headers need C++17/20, so the top-level CMakeLists.txt is raised 14 -> 17, the torch
# extension 14 -> 20 (top-level 17 is still needed, or gloo links twice) and the CUDA
# kernels 11 -> 17 (CUDA 13's CCCL headers expect C++17). The build must see the installed
# torch, hence --no-build-isolation.
#
# --gpu   all-reduce over NCCL (HOROVOD_GPU_OPERATIONS=NCCL), needs nvcc and nccl.h
# --cpu   all-reduce over gloo (HOROVOD_CPU_OPERATIONS=gloo)
# --auto  (default) --gpu when nccl.h is found, else --cpu
# --with-mpi  also build the MPI controller (default: gloo controller only, no MPI needed)
# --patch-only DIR  apply the C++ standard patch to an unpacked Horovod source folder, and stop
#
# Environment: PYTHON (default python3), HOROVOD_VERSION (default: container/versions.env),
# CUDA_HOME (default: the folder above the first nvcc found), HOROVOD_NCCL_HOME,
# HOROVOD_BUILD_CUDA_CC_LIST (default 80,90),
# MAX_JOBS (parallel compile jobs), PIP_INSTALL_ARGS (extra arguments for pip install).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
versions="${here}/../container/versions.env"
PYTHON="${PYTHON:-python3}"
mode=auto
with_mpi=0
patch_only=""

die() { echo "install_horovod.sh: $*" >&2; exit 1; }

while (( $# )); do
    case "$1" in
        --gpu) mode=gpu ;;
        --cpu) mode=cpu ;;
        --auto) mode=auto ;;
        --with-mpi) with_mpi=1 ;;
        --patch-only) patch_only="${2:?--patch-only needs a folder}"; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) die "unknown argument '$1' (expected --gpu, --cpu, --auto, --with-mpi or --patch-only DIR)" ;;
    esac
    shift
done

# patch_std SRC FILE FROM TO: raise one C++ standard setting; fail loudly if the recipe changed.
patch_std() {
    local file="$1/$2" from="$3" to="$4"
    [[ -f "$file" ]] || die "$file not found: not a Horovod source folder"
    grep -q "^ *${from}\$" "$file" || die "expected '${from}' in $2: unknown Horovod source layout"
    sed -i "s/^\( *\)${from}\$/\1${to}/" "$file"
}
patch_sources() {
    patch_std "$1" CMakeLists.txt 'set(CMAKE_CXX_STANDARD 14)' 'set(CMAKE_CXX_STANDARD 17)'
    patch_std "$1" horovod/torch/CMakeLists.txt 'set(CMAKE_CXX_STANDARD 14)' 'set(CMAKE_CXX_STANDARD 20)'
    patch_std "$1" horovod/common/ops/cuda/CMakeLists.txt 'set(CMAKE_CUDA_STANDARD 11)' 'set(CMAKE_CUDA_STANDARD 17)'
}

if [[ -n "$patch_only" ]]; then
    patch_sources "$patch_only"
    echo "patched $patch_only"
    exit 0
fi

if [[ -z "${HOROVOD_VERSION:-}" ]]; then
    [[ -f "$versions" ]] || die "HOROVOD_VERSION is not set and $versions does not exist"
    HOROVOD_VERSION="$(sed -n 's/^HOROVOD_VERSION=//p' "$versions")"
    [[ -n "$HOROVOD_VERSION" ]] || die "no HOROVOD_VERSION line in $versions"
fi

# torch must be importable before the build: Horovod's CMake asks it for headers and flags.
torch_cuda="$("$PYTHON" -c 'import torch; print(torch.version.cuda or "")')" \
    || die "$PYTHON cannot import torch; install the suite's requirements first"

# A CUDA build of torch makes Horovod's CMake look for the CUDA toolkit even for a gloo-only
# build, and torch's own guess of CUDA_HOME can point at a folder without nvcc.
find_cuda_home() {
    local nvcc dir
    for nvcc in "${CUDA_HOME:-/nonexistent}/bin/nvcc" "$(command -v nvcc || true)" \
                /usr/local/cuda/bin/nvcc /usr/local/cuda-*/bin/nvcc; do
        [[ -n "$nvcc" && -x "$nvcc" ]] || continue
        dir="$(dirname "$(dirname "$(readlink -f "$nvcc")")")"
        # Skip wrapper scripts (e.g. /usr/local/bin/nvcc): a toolkit folder has the headers.
        if [[ -f "$dir/include/cuda_runtime.h" ]]; then echo "$dir"; return 0; fi
    done
    return 0
}
cuda_home="$(find_cuda_home)"

find_nccl_header() {
    local dir
    for dir in "${HOROVOD_NCCL_HOME:-}" "$cuda_home" /usr /usr/local; do
        if [[ -n "$dir" && -f "$dir/include/nccl.h" ]]; then echo "$dir"; return 0; fi
    done
    return 0
}
nccl_home="$(find_nccl_header)"

if [[ "$mode" == auto ]]; then
    if [[ -n "$nccl_home" && -n "$cuda_home" && -n "$torch_cuda" ]]; then mode=gpu; else mode=cpu; fi
fi

export HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1
export HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1
if [[ "$with_mpi" == 1 ]]; then
    command -v mpicxx >/dev/null || die "--with-mpi given but no mpicxx on PATH"
    export HOROVOD_WITH_MPI=1
else
    export HOROVOD_WITHOUT_MPI=1
fi

if [[ -n "$torch_cuda" || "$mode" == gpu ]]; then
    [[ -n "$cuda_home" ]] || die "torch is a CUDA ${torch_cuda} build but no nvcc was found; set CUDA_HOME"
    export CUDA_HOME="$cuda_home" CUDAToolkit_ROOT="$cuda_home"
    export PATH="${cuda_home}/bin:${PATH}"
fi
if [[ "$mode" == gpu ]]; then
    [[ -n "$nccl_home" ]] || die "--gpu needs nccl.h: set HOROVOD_NCCL_HOME to the NCCL folder"
    export HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_NCCL_LINK=SHARED HOROVOD_NCCL_HOME="$nccl_home"
    # Kernels for A100 (JUWELS Booster, sm_80) and H100/H200 (sm_90, plus PTX for newer GPUs),
    # instead of every architecture nvcc knows.
    export HOROVOD_BUILD_CUDA_CC_LIST="${HOROVOD_BUILD_CUDA_CC_LIST:-80,90}"
    unset HOROVOD_CPU_OPERATIONS
else
    export HOROVOD_CPU_OPERATIONS=gloo
    unset HOROVOD_GPU_OPERATIONS
fi
if [[ -n "${MAX_JOBS:-}" ]]; then export MAKEFLAGS="-j${MAX_JOBS}"; fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo ">> horovod==${HOROVOD_VERSION} (${mode}, CUDA_HOME=${CUDA_HOME:-none}, NCCL=${nccl_home:-none})"
"$PYTHON" -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation \
    "horovod==${HOROVOD_VERSION}" -d "$work"
tar -xzf "$work/horovod-${HOROVOD_VERSION}.tar.gz" -C "$work"
src="$work/horovod-${HOROVOD_VERSION}"

patch_sources "$src"

# shellcheck disable=SC2086  # PIP_INSTALL_ARGS is a list of words on purpose
"$PYTHON" -m pip install --no-build-isolation --no-cache-dir ${PIP_INSTALL_ARGS:-} "$src"

# Check that the extension loads and carries the requested all-reduce backend.
"$PYTHON" - "$mode" <<'PY'
import sys
import horovod
import horovod.torch as hvd

mode = sys.argv[1]
print(f"horovod {horovod.__version__}: gloo={hvd.gloo_built()} nccl={hvd.nccl_built()} mpi={hvd.mpi_built()}")
if not hvd.gloo_built():
    sys.exit("horovod was built without gloo")
if mode == "gpu" and not hvd.nccl_built():
    sys.exit("horovod was built without NCCL although --gpu was requested")
PY
