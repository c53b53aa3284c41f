#!/usr/bin/env bash
# CI: run the real `reframe -c checks/ -r` on the CPU-mode checks (tag `ci`) of this
# machine, with perflogs in a temporary folder; fail if a check fails or no perflog was
# written. `make reframe-ci` calls this with the venv's bin/ first on PATH, so ReFrame,
# torchrun and xferscale all come from the same environment.
#
# With the CI's SLURM cluster up (SLURM_CONF set, scripts/ci/with-slurm.sh), two more runs:
# the same checks through sbatch/sacct/srun (checks/config/ci_slurm.py), and the JUWELS
# Booster config itself, unchanged, for the all-reduce checks at 4 and 8 GPUs' worth of ranks
# over both nodes, with the image run by the apptainer stand-in (no GPUs here: gloo, small
# messages, performance not checked). Under CI=true the cluster runs are required.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in reframe torchrun xferscale; do
    command -v "$tool" >/dev/null || { echo "run_ci.sh: $tool not on PATH (run through 'make reframe-ci')" >&2; exit 2; }
done

work="$(mktemp -d "${TMPDIR:-/tmp}/xferscale-rfm.XXXXXX")"
trap 'rm -rf "$work"' EXIT
export XFERSCALE_PERFLOGS="$work/perflogs"
export RFM_CONFIG_FILES="$PWD/checks/config/local.py"
export OMP_NUM_THREADS=1

# --exec-policy=serial: the CI runner has 2 cores; one run at a time keeps them honest.
reframe -c checks/ -r --tag ci --exec-policy=serial \
    --prefix "$work" --perflogdir "$XFERSCALE_PERFLOGS" --nocolor

logs=$(find "$XFERSCALE_PERFLOGS" -name '*.log' -size +0 2>/dev/null | wc -l)
if [ "$logs" -eq 0 ]; then
    echo "run_ci.sh: ReFrame wrote no perflog under $XFERSCALE_PERFLOGS" >&2
    exit 1
fi
echo "run_ci.sh: $logs perflog file(s); scaling report from them:"
python -m xferscale.report.scaling "$XFERSCALE_PERFLOGS" --out "$work/report"

if [ -z "${SLURM_CONF:-}" ]; then
    reason=${XFERSCALE_SLURM_UNAVAILABLE:-no SLURM cluster (run through scripts/ci/with-slurm.sh)}
    if [ "${CI:-}" = true ]; then echo "run_ci.sh: CI=true needs the SLURM runs: $reason" >&2; exit 1; fi
    echo "run_ci.sh: SLURM runs skipped: $reason"
    exit 0
fi
start=$SECONDS
RFM_CONFIG_FILES="$PWD/checks/config/ci_slurm.py" reframe -c checks/ -r --tag ci --exec-policy=serial \
    --prefix "$work/slurm" --perflogdir "$work/slurm-perflogs" --nocolor
echo "run_ci.sh: CPU checks through SLURM: $((SECONDS - start)) s"

start=$SECONDS
image="$work/xferscale.sif"
echo "stand-in image: scripts/ci/apptainer runs its commands on the host" >"$image"
PATH="$PWD/scripts/ci:$PATH" XFERSCALE_IMAGE_PATH="$(dirname "$(command -v xferscale)"):/usr/bin:/bin" \
RFM_CONFIG_FILES="$PWD/checks/config/juwels_booster.py" XFERSCALE_MODULES_SYSTEM=nomod SCRATCH="$work/scratch" \
XFERSCALE_IMAGE="$image" reframe -c checks/allreduce.py --system juwels_booster:develbooster -r \
    -n 'AllReduceSweep%num_workers=4%framework=torch' -n 'AllReduceSweep%num_workers=8%framework=torch' \
    -S max_bytes=16M -S iters=3 --skip-performance-check --prefix "$work/juwels" \
    --perflogdir "$work/juwels-perflogs" --nocolor
echo "run_ci.sh: juwels_booster.py all-reduce checks on the CI cluster: $((SECONDS - start)) s"
