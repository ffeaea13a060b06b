#!/usr/bin/env bash
# On a lent GPU machine: the runtime on CUDA against the CPU and as a CUDA graph (tools/cuda_check.py),
# then the GPU inference benchmark with its CUDA-graph rows (bench/bench_inference.py). About 3 minutes.
#
# Prepare here (the kit is never committed; .kit/ is git-ignored):
#   mkdir -p .kit && cp ../shared/data/ict_facekit/ict_facekit_light.npz .kit/
# Then: run(command="bash tools/gpu_check.sh", carry=[".kit"], timeout_s=420); the outputs come back
# under the call's files (cuda_check.txt, bench_inference.txt).
# Rehearse here: DEVICE=cpu OUT=/tmp/gpu_check PYTHON=.venv/bin/python bash tools/gpu_check.sh
set -uo pipefail
source "$(dirname "$0")/gpu_common.sh"
out="${OUT:-runs/gpu_check}"
mkdir -p "$out"
gpu_header | tee "$out/cuda_check.txt"
"$py" -m pytest -q tests/test_cuda_graph.py -k cuda 2>&1 | tail -3 | tee -a "$out/cuda_check.txt"
timeout 240 "$py" tools/cuda_check.py --device "$dev" --kit .kit/ict_facekit_light.npz 2>&1 | tee -a "$out/cuda_check.txt"
timeout 150 "$py" bench/bench_inference.py --device "$dev" --runs 30 2>&1 | tee "$out/bench_inference.txt"
timeout 90 "$py" bench/bench_inference.py --device "$dev" --runs 10 --batch 256 2>&1 \
    | grep -E 'batched|CUDA graph, 256' | tee -a "$out/bench_inference.txt"
