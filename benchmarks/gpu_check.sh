#!/usr/bin/env bash
# The GPU checks, as one script for a lent GPU machine: CUDA-marked tests (bf16, no host syncs per step,
# --jobs 2 on CUDA stopped by SIGTERM and resumed, populations), the trial loop's tests, then the benchmarks on CPU and GPU.
# Usage (there): OUT=/some/dir bash benchmarks/gpu_check.sh
set -u
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi -L | tee "$OUT/gpu.txt"
python3 -c "import torch, optuna; print('torch', torch.__version__, 'optuna', optuna.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
timeout 240 python3 -m pytest -q -p no:cacheprovider -W ignore::DeprecationWarning tests/test_cuda.py tests/test_trial.py tests/test_checkpoints.py tests/test_population.py 2>&1 | tee "$OUT/pytest.log"

timeout 180 python3 -m benchmarks.bench_trial --device cuda --repeats 3 2>&1 | tee "$OUT/bench.log"
timeout 180 python3 -m benchmarks.bench_population --device cuda --trials 128 --sizes 1 16 64 128 2>&1 | tee -a "$OUT/bench.log"
timeout 120 python3 -m benchmarks.bench_population --device cpu --trials 64 --sizes 1 16 64 2>&1 | tee -a "$OUT/bench.log"
