#!/usr/bin/env bash
# The GPU checks, as one script for a lent GPU machine: CUDA-marked tests (bf16, no host syncs per step,
# --jobs 2 on CUDA stopped by SIGTERM and resumed, populations), the trial loop's tests, then the benchmarks on CPU and GPU
# (on the GPU with --vmap: what study.fused's layers gain over vmap there).
# Usage: here, `bash benchmarks/gpu_wheels.sh` once (optuna and its needs, as wheels in .whl/); there, with
# .whl carried: OUT=/some/dir bash benchmarks/gpu_check.sh (the device tool: command `bash benchmarks/gpu_check.sh`,
# carry [".whl"], timeout_s 560; it sets OUT). Tried on a CPU-only venv holding the image's packages and
# these wheels alone (2026-12-02): the tests ran (CUDA ones skipped) and the CPU benchmarks too.
# At most 535 s in all (the timeouts below), so that one run fits a call (600 s) and a rerun the lease.
set -u
if [ -d .whl ]; then  # the image has no optuna: install the carried wheels beside it
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit
    export PYTHONPATH=/tmp/site
fi
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi -L | tee "$OUT/gpu.txt"
python3 -c "import torch, optuna; print('torch', torch.__version__, 'optuna', optuna.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
timeout 190 python3 -m pytest -q -p no:cacheprovider -W ignore::DeprecationWarning tests/test_cuda.py tests/test_trial.py tests/test_checkpoints.py tests/test_population.py 2>&1 | tee "$OUT/pytest.log"
timeout 30 python3 -m pytest -q -p no:cacheprovider -W ignore::DeprecationWarning -m cuda tests/test_fused.py 2>&1 | tee -a "$OUT/pytest.log"

timeout 80 python3 -m benchmarks.bench_trial --device cuda --repeats 3 2>&1 | tee "$OUT/bench.log"
timeout 140 python3 -m benchmarks.bench_population --device cuda --trials 128 --sizes 1 16 64 128 --vmap 2>&1 | tee -a "$OUT/bench.log"
# with a checkpoint per trial and epoch, as `study run` saves them: what the epoch ends cost on a GPU
timeout 50 python3 -m benchmarks.bench_population --device cuda --trials 64 --sizes 16 64 --checkpoints 2>&1 | tee -a "$OUT/bench.log"
timeout 45 python3 -m benchmarks.bench_population --device cpu --trials 32 --sizes 1 16 32 2>&1 | tee -a "$OUT/bench.log"
