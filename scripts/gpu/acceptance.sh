#!/usr/bin/env bash
# GPU acceptance in one command, for a bare GPU machine (its own Python, torch and timm; no
# network): every GPU path of the suite, each item under its share of one time budget, so the
# command always ends in time and leaves what it has in the output folder:
#
#   bash scripts/gpu/acceptance.sh [--budget SECONDS] [--out DIR] [--cpu] [--wheels DIR]
#
#   wheels     install what wheels/ holds (pip --no-index --no-deps --target, beside the
#              machine's own packages: its torch is used, not our pin)
#   node/*     xferscale bench node in four groups (train at every precision and R152x4 with
#              energy, ours vs the plain loop, input pipelines, all-reduce + resume), JSON each,
#              so that a group stopped at its time share keeps the others' figures
#   reframe    TrainThroughput, LoaderThroughput and NodeAcceptance in their GPU mode under
#              checks/config/single_gpu.py, perflogs kept
#   pretrain / resume / transfer
#              xferscale pretrain stopped by SIGTERM mid-run, --resume to the end, then
#              xferscale transfer from it (digits)
#
# The output folder gets summary.md, acceptance.json and logs.tar.gz (logs, node JSONs,
# perflogs): three files, within the 8 a lent machine sends back. Without CUDA (or with --cpu)
# the same items run the CPU path with the tiny model (node: one group, train/fp32 and resume;
# ReFrame: NodeAcceptance only):
# tests/test_gpu_acceptance.py runs it. Exit status 0 whenever the summary was written: the
# items' outcomes are in it.
#
# On the lent GPU machine (the device tool): fetch the wheels here once with
# scripts/gpu/fetch-wheels.sh (wheels/base ~8 MB; DALI and what it needs in parts of 60 MB,
# wheels/dali-1 ... wheels/dali-5), then one call per part while the machine stays warm
# (ignored folders carried earlier stay there), the last call running this script:
#
#   run carry=[wheels/dali-1]                  command: true
#   run carry=[wheels/dali-2]                  command: true
#   ... (one call per part but the last)
#   run carry=[wheels/base, wheels/dali-5]     command: bash scripts/gpu/acceptance.sh
#
# A part missing there (the machine went back between calls) leaves DALI out, said in the
# summary; every other item still runs.
set -uo pipefail
caller=$PWD
cd "$(dirname "$0")/../.."
ROOT=$PWD

budget=480
out=${OUT:-$ROOT/acceptance-out}
wheels=$ROOT/wheels
force_cpu=0
while [ $# -gt 0 ]; do
    case $1 in
        --budget) budget=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --wheels) wheels=$2; shift 2 ;;
        --cpu) force_cpu=1; shift ;;
        *) echo "acceptance.sh: unknown argument $1 (--budget SECONDS, --out DIR, --cpu, --wheels DIR)" >&2; exit 2 ;;
    esac
done
case $budget in '' | *[!0-9]*) echo "acceptance.sh: --budget: whole seconds, got '$budget'" >&2; exit 2 ;; esac
# Relative paths are from where the command was called.
case $out in /*) ;; *) out=$caller/$out ;; esac
case $wheels in /*) ;; *) wheels=$caller/$wheels ;; esac

export PYTHON=${PYTHON:-python3}
started=$SECONDS
deadline=$((SECONDS + budget))
work=$(mktemp -d "${TMPDIR:-/tmp}/xferscale-acceptance.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$out" "$work/logs" "$work/bin" "$work/site"
items=$work/items.tsv
: >"$items"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

record() {  # NAME STATUS SECONDS NOTE
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4//$'\t'/ }" >>"$items"
    echo "[acceptance] $1: $2${4:+ ($4)} in $3 s"
}

# run_item NAME CMD...: CMD under its share of the time left (never past the deadline), its
# output in logs/NAME.log; ok, failed (exit code) or timed out. The share is the item's weight
# over the weights of the items still to run, so time an item leaves unused goes to the rest.
declare -A weight
run_item() {
    local name=$1; shift
    local left=$((deadline - SECONDS)) rest=0 w share start rc log="$work/logs/${name//\//-}.log"
    for w in "${weight[@]}"; do rest=$((rest + w)); done
    share=$((left * ${weight[$name]} / (rest > 0 ? rest : 1)))
    unset "weight[$name]"
    if [ "$share" -lt 5 ]; then
        record "$name" skipped 0 "no time left in the ${budget} s budget"
        return
    fi
    start=$SECONDS
    echo "[acceptance] $name: up to $share s: $*"
    timeout --signal=TERM --kill-after=15 "$share" "$@" >"$log" 2>&1
    rc=$?
    case $rc in
        0) record "$name" ok $((SECONDS - start)) "" ;;
        124 | 137) record "$name" "timed out" $((SECONDS - start)) "stopped after its $share s share" ;;
        *) record "$name" failed $((SECONDS - start)) "exit $rc" ;;
    esac
}

skip_item() {  # NAME REASON: an item that cannot run; its weight goes to the rest
    unset "weight[$1]"
    record "$1" skipped 0 "$2"
}

# -- wheels: ReFrame, NVML bindings, DALI (reassembled from its parts) -----------------------
install_wheels() {
    local list=() manifest=$wheels/base/dali.manifest note="" start=$SECONDS
    if [ ! -d "$wheels" ]; then
        record wheels skipped 0 "no wheels folder ($wheels): the machine's own packages only"
        return
    fi
    shopt -s nullglob
    list+=("$wheels"/base/*.whl)
    if [ -f "$manifest" ]; then
        local name count digest parts=()
        read -r name count digest <"$manifest"
        mapfile -t parts < <(printf '%s\n' "$wheels"/dali-*/"${name%.tar}".part-* | awk -F/ '{print $NF "\t" $0}' |
                             sort | cut -f2)
        if [ "${#parts[@]}" -ne "$count" ]; then
            note="DALI left out: ${#parts[@]} of its $count parts are here (carry wheels/dali-1 ... in earlier calls)"
        else
            cat "${parts[@]}" >"$work/$name"
            if [ "$(sha256sum "$work/$name" | cut -d' ' -f1)" != "$digest" ]; then
                note="DALI left out: the reassembled $name does not match its SHA-256 in dali.manifest"
            else
                mkdir -p "$work/dali" && tar -C "$work/dali" -xf "$work/$name" && rm -f "$work/$name"
                list+=("$work"/dali/*/*.whl)
                note="DALI from $count parts"
            fi
        fi
    fi
    shopt -u nullglob
    if [ "${#list[@]}" -eq 0 ]; then
        record wheels skipped 0 "no wheels in $wheels/base${note:+; $note}"
        return
    fi
    if "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
        --target "$work/site" "${list[@]}" >"$work/logs/wheels.log" 2>&1; then
        # Some of DALI's wheels ship nvidia/__init__.py, which would hide the machine's nvidia.*
        # packages (torch's CUDA libraries): make it a pkgutil namespace spanning both.
        [ -d "$work/site/nvidia" ] &&
            echo "__path__ = __import__('pkgutil').extend_path(__path__, __name__)" >"$work/site/nvidia/__init__.py"
        record wheels ok $((SECONDS - start)) "${#list[@]} wheels${note:+; $note}"
    else
        record wheels failed $((SECONDS - start)) "pip install failed (logs/wheels.log)${note:+; $note}"
    fi
}
install_wheels

# The suite from this source tree, the wheels beside the machine's packages; `xferscale` on
# PATH for ReFrame's runs.
export PYTHONPATH="$ROOT/suite:$work/site${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$work/bin:$work/site/bin:$PATH"
cat >"$work/bin/xferscale" <<EOF
#!/bin/sh
exec "$(command -v "$PYTHON")" -c 'import sys; from xferscale.cli import main; sys.exit(main())' "\$@"
EOF
chmod +x "$work/bin/xferscale"

gpu=$("$PYTHON" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
[ "$force_cpu" = 1 ] && gpu=0
if [ "$gpu" = 1 ]; then mode=gpu; cpu_flag=(); else mode=cpu; cpu_flag=(--cpu); fi
# On the CPU one thread per process, as the CPU-mode checks run: torch's default (every core per
# process) makes the tiny model many times slower on a shared machine.
[ "$mode" = cpu ] && export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
echo "[acceptance] mode $mode, budget $budget s, output $out"

# Weights of the items (their shares of the budget); on the CPU the paths, not the figures.
if [ "$mode" = gpu ]; then
    weight=([node/train]=20 [node/baseline]=12 [node/input]=12 [node/resume]=8 [reframe]=24 [pretrain]=8
            [resume]=8 [transfer]=8)
else
    weight=([node/cpu]=25 [reframe]=45 [pretrain]=10 [resume]=10 [transfer]=10)
fi
dali=$("$PYTHON" -c "import nvidia.dali; print(1)" 2>/dev/null || echo 0)

# -- a. node acceptance, in groups: a group's timeout keeps the others' figures -------------
node_group() {  # NAME ONLY [ARGS...]
    local name=$1 only=$2; shift 2
    run_item "node/$name" xferscale bench node --only "$only" "${cpu_flag[@]}" \
        --json-out "$work/logs/node-$name.json" "$@"
}
if [ "$mode" = gpu ]; then
    node_group train train
    node_group baseline baseline
    node_group input input --steps 20 --warmup 5
    node_group resume allreduce,resume
else  # one process: the train step and the checkpoint/resume path
    node_group cpu train/fp32,resume --steps 2 --warmup 1
fi

# -- b. ReFrame checks under the single-GPU site config --------------------------------------
if "$PYTHON" -c "import reframe" 2>/dev/null; then
    rfm=(reframe)
    command -v reframe >/dev/null || rfm=("$PYTHON" -m reframe)
    backends=torch
    [ "$dali" = 1 ] && backends=dali,torch
    if [ "$mode" = gpu ]; then
        part=single_gpu:gpu
        select=(-n 'TrainThroughput.*model=r50x1.*precision=amp_bf16.*loader=synthetic' -S TrainThroughput.steps=30
                -n LoaderThroughput -S LoaderThroughput.backends=$backends
                -n NodeAcceptance -S NodeAcceptance.only=train/amp_bf16,input/torch -S NodeAcceptance.steps=20)
    else
        # the ReFrame path through this site config; the CPU checks themselves run in make test
        part=single_gpu:cpu
        select=(-n NodeAcceptance -S NodeAcceptance.only=train/fp32 -S NodeAcceptance.steps=2)
    fi
    run_item reframe env XFERSCALE_PERFLOGS="$work/perflogs" RFM_CONFIG_FILES="$ROOT/checks/config/single_gpu.py" \
        "${rfm[@]}" -c "$ROOT/checks" --system "$part" "${select[@]}" --prefix "$work/reframe" \
        --perflogdir "$work/perflogs" --exec-policy=serial --nocolor -r
else
    skip_item reframe "ReFrame is not installed (bring reframe-hpc in wheels/base)"
fi

# -- c. pre-training stopped by SIGTERM, resumed to the end, transfer from it -----------------
chain=("$ROOT/scripts/gpu/resume-chain.sh" "$mode" "$work/run")
run_item pretrain bash "${chain[@]}" stop
if grep -q $'^pretrain\tok' "$items"; then
    run_item resume bash "${chain[@]}" resume
else
    skip_item resume "the stopped pre-training did not leave its state"
fi
if grep -q $'^resume\tok' "$items"; then
    run_item transfer bash "${chain[@]}" transfer
else
    skip_item transfer "no finished pre-training to transfer from"
fi

# -- d. summary.md, acceptance.json, logs.tar.gz ------------------------------------------------
"$PYTHON" "$ROOT/scripts/gpu/summarise.py" --items "$items" --logs "$work/logs" --out "$out" --mode "$mode" \
    --budget "$budget" --seconds $((SECONDS - started))
[ -d "$work/perflogs" ] && cp -r "$work/perflogs" "$work/logs/perflogs"
[ -d "$work/run" ] && cp "$work"/run/*.json* "$work/logs/" 2>/dev/null
tar -C "$work" -czf "$out/logs.tar.gz" logs
echo "[acceptance] $(grep -c . "$items") items in $((SECONDS - started)) s: $out/summary.md"
