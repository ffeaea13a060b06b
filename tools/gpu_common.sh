# Shared by tools/gpu_train.sh and tools/gpu_ablation.sh (sourced, not run): the environment, what the
# machine has, and the filter that turns glvd-train train's progress bar into loggable lines.
export PYTHONPATH="$PWD/vendor/glvd:$PWD/training${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py="${PYTHON:-python3}"
dev="${DEVICE:-cuda}"

gpu_header() {
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
    "$py" -c "import torch, numpy; print('torch', torch.__version__, 'numpy', numpy.__version__,
'cuda', torch.cuda.is_available())"
}

# glvd-train train's stderr+stdout -> one line per message, tqdm's bar lines dropped
train_log_filter() {
    tr '\r' '\n' | sed -u 's/.*\(glvd-train: \)/\1/' | grep --line-buffered -v '^ *[0-9]*%|'
}
