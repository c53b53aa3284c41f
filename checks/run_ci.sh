#!/usr/bin/env bash
# CI: run the real `reframe -c checks/ -r` on the CPU-mode checks (tag `ci`) of this
# machine, with perflogs in a temporary folder; fail if a check fails or no perflog was
# written. `make reframe-ci` calls this with the venv's bin/ first on PATH, so ReFrame,
# torchrun and xferscale all come from the same environment.
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
