#!/usr/bin/env bash
# The pre-training chain of scripts/gpu/acceptance.sh, one stage per call:
#
#   resume-chain.sh MODE RUN_DIR stop       start `xferscale pretrain`, SIGTERM it mid-run; it must
#                                           exit 0 with its state saved and the run unfinished
#   resume-chain.sh MODE RUN_DIR resume     `--resume` to the end; it must finish every step
#   resume-chain.sh MODE RUN_DIR transfer   `xferscale transfer` from the run (digits, small budget)
#
# MODE gpu: R50x1 on synthetic 224 px images, amp_bf16, 300 steps; cpu: the tiny model on the
# stroke glyphs, 30 steps. `xferscale` comes from PATH (acceptance.sh puts this tree's there).
set -euo pipefail
mode=$1 run=$2 stage=$3

common=(train.checkpoint_every=20 train.log_every=5 train.stop_check_seconds=0.5
        train.progress=false)
if [ "$mode" = gpu ]; then
    steps=300
    args=(model.name=r50x1 model.num_classes=100 data.source=synthetic data.image_size=224
          train.global_batch=64 train.precision=amp_bf16)
else
    steps=30
    args=()
fi
args=(--output-dir "$run" "${args[@]}" "train.max_steps=$steps" "${common[@]}")

summary() {  # KEY: a field of the run's summary.json
    "${PYTHON:-python3}" -c "import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" \
        "$run/summary.json" "$1"
}

case $stage in
stop)
    rm -rf "$run"
    xferscale pretrain "${args[@]}" &
    pid=$!
    # SIGTERM once a third of the steps are logged, well before the end; the stop writes the state.
    while kill -0 "$pid" 2>/dev/null; do
        logged=$( (grep -c '"step"' "$run/metrics.jsonl" 2>/dev/null || true) | head -1)
        [ "${logged:-0}" -ge $((steps / 3 / 5)) ] && break
        sleep 0.2
    done
    kill -TERM "$pid" 2>/dev/null || { echo "resume-chain.sh: the run ended before the stop signal" >&2; exit 1; }
    wait "$pid" || { echo "resume-chain.sh: the stopped run exited $?, not 0" >&2; exit 1; }
    [ "$(summary stopped_by_signal)" = True ] ||
        { echo "resume-chain.sh: summary.json: not stopped by the signal" >&2; exit 1; }
    [ "$(summary finished)" = False ] || { echo "resume-chain.sh: the run finished before the signal" >&2; exit 1; }
    echo "resume-chain.sh: stopped by SIGTERM at step $(summary steps) of $steps, state saved"
    ;;
resume)
    xferscale pretrain "${args[@]}" --resume
    [ "$(summary finished)" = True ] && [ "$(summary steps)" = "$steps" ] ||
        { echo "resume-chain.sh: resumed run ended at step $(summary steps), not $steps" >&2; exit 1; }
    echo "resume-chain.sh: resumed to step $steps"
    ;;
transfer)
    # The digits demo's settings; the CPU path trains 5-shot only, for 25 steps.
    if [ "$mode" = gpu ]; then extra=(--shots 5,full --precision amp_bf16 --schedule-scale 0.2)
    else extra=(--shots 5 --precision fp32 --schedule-scale 0.05); fi
    xferscale transfer --checkpoint "$run" --target digits --seeds 0 --crop 16 --base-lr 0.03 --baselines none \
        --results "$run/transfer" --no-progress "${extra[@]}"
    ;;
*)
    echo "resume-chain.sh: unknown stage $stage (stop, resume, transfer)" >&2
    exit 2
    ;;
esac
