#!/usr/bin/env bash
# The budget-matched LVD ablation on a lent GPU machine: GLVD and plain LVD (--no-guidance) trained from
# scratch side by side on one GPU, same recipe, seed, batch, curriculum and wall-clock minutes (LVD's steps
# are cheaper, so it gets at least as many iterations: the comparison errs in LVD's favour). First the GPU
# inference benchmark, which takes under a minute.
#
# Prepare here (the kit is never committed; .kit/ is git-ignored):
#   mkdir -p .kit && cp ../shared/data/ict_facekit/ict_facekit_light.npz .kit/
# Then: run(command="bash tools/gpu_ablation.sh", carry=[".kit"], timeout_s=590)
# and copy what comes back ($OUT/glvd, $OUT/lvd: model.pt, log.csv, train.log) into runs/ablation/ here.
# Rehearse here first (CPU, a few seconds of training):
#   DEVICE=cpu MINUTES=0.3 BATCH=2 BENCH=0 OUT=/tmp/abl_rehearsal PYTHON=.venv/bin/python bash tools/gpu_ablation.sh
set -uo pipefail
source "$(dirname "$0")/gpu_common.sh"
out="${OUT:-runs/ablation_out}"
mkdir -p "$out"
gpu_header
if [ "${BENCH:-1}" = 1 ]; then
    timeout 90 "$py" bench/bench_inference.py --device "$dev" --runs 30 2>&1 | tee "$out/bench_inference.txt"
    timeout 60 "$py" bench/bench_inference.py --device "$dev" --runs 10 --batch 256 2>&1 \
        | grep batched | tee -a "$out/bench_inference.txt"
fi
read -r -a curriculum <<< "${CURRICULUM:-1000 1000}"

train() {  # $1: name, then extra flags
    local name=$1; shift
    # INIT=DIR continues DIR/glvd/model.pt and DIR/lvd/model.pt (a fresh optimizer; the curriculum carries on)
    [ -n "${INIT:-}" ] && set -- "$@" --init-from "$INIT/$name/model.pt"
    "$py" -m glvd_train train --out "$out/$name" --kit .kit/ict_facekit_light.npz --seed 0 \
        --device "$dev" --render-device "$dev" --workers 0 --threads "${THREADS:-4}" --batch "${BATCH:-32}" \
        --reuse 1 --curriculum "${curriculum[@]}" --minutes "${MINUTES:-7}" --val-every "${VAL_EVERY:-90}" \
        --save-every 60 "$@" 2>&1 | train_log_filter | sed -u "s/^/[$name] /" | tee -a "$out/$name.log"
}

train glvd &
train lvd --no-guidance &
wait
for name in glvd lvd; do
    rm -f "$out/$name/state.pt"  # too large to come back; model.pt is the result
    [ -f "$out/$name/model.pt" ] || echo "$name: no model written (see $name.log)"
done
ls -la "$out"/*
