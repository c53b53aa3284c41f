#!/usr/bin/env bash
# Run a command with the CI's SLURM cluster up (scripts/ci/slurm-cluster.sh), and take the
# cluster down afterwards, whatever the command's outcome. Where the cluster cannot start
# (no root, no packages), the command still runs, with XFERSCALE_SLURM_UNAVAILABLE saying
# why: the cluster tests skip with that reason, or fail under CI=true.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
start=$SECONDS
if reason=$("$here/slurm-cluster.sh" up 2>&1 >/dev/null); then
    eval "$("$here/slurm-cluster.sh" env)"
    export SLURM_CONF
    trap '"$here/slurm-cluster.sh" down' EXIT
    echo "[ci] SLURM cluster up: $((SECONDS - start)) s"
else
    echo "$reason" >&2
    export XFERSCALE_SLURM_UNAVAILABLE="${reason##*$'\n'}"
fi
"$@"
