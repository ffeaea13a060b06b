#!/usr/bin/env bash
# Train GLVD on a lent GPU machine (the `device` tool's `run`), continuing a carried model.
#
# Prepare here, once per session (the kit is never committed; .kit/ is git-ignored, runs/ too):
#   mkdir -p .kit runs/gpu && cp ../shared/data/ict_facekit/ict_facekit_light.npz .kit/
#   cp runs/ramp/model.pt runs/gpu/model.pt          # the model to continue
# Then: run(command="bash tools/gpu_train.sh", carry=[".kit", "runs/gpu"], timeout_s=590)
# and copy what comes back ($OUT/run/model.pt, log.csv, train.log) into runs/gpu/ here.
# Rehearse here first (CPU, a few seconds of training):
#   DEVICE=cpu MINUTES=0.3 BATCH=2 OUT=/tmp/gpu_rehearsal PYTHON=.venv/bin/python bash tools/gpu_train.sh
# UNROLL=10 (and RISE_WEIGHT, default 30; LR, e.g. 1e-4) trains on whole descents, the encoder included
# (glvd-train train --unroll); rehearse that too, with UNROLL=3.
#
# That machine has its own python3 with CUDA torch (2.11, numpy 2), tqdm and scikit-image; the runtime
# and the training package run from vendor/glvd and training/ via PYTHONPATH. Rendering happens on the
# GPU in the training process; if that fails before a model is saved, the rest of the time trains with
# 8 CPU rendering processes.
# state.pt (model + optimizer) is over the 16 MB a returned file may have, so a later run continues
# from model.pt with a fresh optimizer (--init-from); the curriculum schedule carries on when
# CURRICULUM equals the one the model was trained with (its provenance).
# The run folder is inside $OUT so that a checkpoint saved before a timeout still comes back.
set -uo pipefail
source "$(dirname "$0")/gpu_common.sh"
out="${OUT:-runs/gpu_out}"
run="$out/run"
mkdir -p "$out"
began=$(date +%s)
gpu_header
init="${INIT:-runs/gpu/model.pt}"
[ -f "$init" ] || init=vendor/glvd/glvd/weights/glvd_face.pt
echo "continuing $init"
read -r -a curriculum <<< "${CURRICULUM:-0 20000}"

train() {  # $1: render device, $2: rendering processes, $3: minutes
    "$py" -m glvd_train train --out "$run" --init-from "$init" --kit .kit/ict_facekit_light.npz \
        --device "$dev" --render-device "$1" --workers "$2" --threads 8 --batch "${BATCH:-32}" --reuse 1 \
        --curriculum "${curriculum[@]}" --minutes "$3" --val-every "${VAL_EVERY:-120}" --save-every 60 \
        ${UNROLL:+--unroll "$UNROLL" --rise-weight "${RISE_WEIGHT:-30}"} ${LR:+--lr "$LR"} \
        2>&1 | train_log_filter | tee -a "$out/train.log"
}

train "$dev" 0 "${MINUTES:-8}"
if [ ! -f "$run/model.pt" ] && [ "$dev" = cuda ]; then
    # MINUTES_CAP (whole minutes, default 9): what the whole call may take, below the run's timeout_s
    left=$(( ${MINUTES_CAP:-9} * 60 - ($(date +%s) - began) ))
    if [ "$left" -gt 90 ]; then
        echo "GPU rendering failed before a save: $((left - 60)) s more with CPU rendering" | tee -a "$out/train.log"
        rm -rf "$run"
        train cpu 8 "$("$py" -c "print(($left - 60) / 60)")"
    fi
fi
[ -f "$run/model.pt" ] || { echo "no model written: see train.log"; exit 1; }
rm -f "$run/state.pt"  # too large to come back; model.pt is what continues
ls -la "$run"
