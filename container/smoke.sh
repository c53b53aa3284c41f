#!/usr/bin/env bash
# CPU smoke test of a built image (apptainer.def %test, and the CI's docker run):
# the stack imports, the CLI answers, a 2-step CPU pre-training writes a checkpoint and a
# generated job script parses. Needs no GPU; hides any GPU so the CPU path is the one tested.
set -euo pipefail
export CUDA_VISIBLE_DEVICES=""
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

python3 - <<'PY'
import importlib
for name in ("torch", "torchvision", "timm", "nvidia.dali", "xferscale", "reframe", "torchxrayvision"):
    module = importlib.import_module(name)
    print(f"{name:16s} {getattr(module, '__version__', getattr(module, 'VERSION', '?'))}")
PY
# Horovod is optional (WITH_HOROVOD=0 leaves it out); when present it must all-reduce over NCCL.
python3 - <<'PY'
import importlib.util
if importlib.util.find_spec("horovod") is not None:
    import horovod
    import horovod.torch as hvd
    assert hvd.nccl_built(), "horovod is installed but was built without NCCL"
    print(f"{'horovod':16s} {horovod.__version__} (NCCL)")
PY

xferscale --version
xferscale slurm pretrain --nodes 2 --dry-run > "$work/job.sbatch"
bash -n "$work/job.sbatch"
xferscale pretrain train.max_steps=2 train.progress=false output_dir="$work/run"
test -s "$work/run/checkpoint.pt"
echo "smoke test passed"
