#!/usr/bin/env bash
# Train GLVD on a lent GPU machine (the `device` tool's `run`), resuming what an earlier GPU run left.
#
# Prepare here, once per session (the kit is never committed; .kit/ is git-ignored):
#   mkdir -p .kit && cp ../shared/data/ict_facekit/ict_facekit_light.npz .kit/
# Then: run(command="bash tools/gpu_train.sh", carry=[".kit", "runs/gpu"], timeout_s=560)
# and copy what comes back (model.pt, log.csv, train.log) into runs/gpu/ here.
#
# That machine has its own python3 with CUDA torch (2.11), tqdm and scikit-image; the runtime
# runs from vendor/glvd via PYTHONPATH. Rendering happens on the GPU in the training process.
# state.pt (model + optimizer, ~30 MB) is over the 16 MB a returned file may have, so a later GPU
# run continues from model.pt with a fresh optimizer (--init-from), like a CPU session does.
# MINUTES (default 7) leaves time for the start, validation and the copy back inside 10 minutes.
set -euo pipefail
export PYTHONPATH="$PWD/vendor/glvd${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${OUT:-runs/gpu_out}"
mkdir -p "$out" runs
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA'; print('torch', torch.__version__)"
# INIT=path (a carried model, e.g. runs/easy/model.pt) overrides where training starts
init=(--init-from "${INIT:-vendor/glvd/glvd/weights/glvd_face.pt}")
if [ -z "${INIT:-}" ] && [ -f runs/gpu/model.pt ]; then
    init=(--init-from runs/gpu/model.pt)
fi
rm -rf runs/gpu_run
python3 -m glvd train --out runs/gpu_run "${init[@]}" --kit .kit/ict_facekit_light.npz \
    --device cuda --render-device cuda --workers 0 --threads 8 --batch "${BATCH:-32}" --reuse 1 \
    --curriculum "${HOLD:-3000}" "${RAMP:-12000}" --minutes "${MINUTES:-7}" --val-every 120 --save-every 120 \
    2>&1 | tr '\r' '\n' | grep -v '^ *[0-9]*%|' | tee "$out/train.log" || true
cp runs/gpu_run/model.pt runs/gpu_run/log.csv "$out/" 2>/dev/null || echo "no model written: see train.log"
