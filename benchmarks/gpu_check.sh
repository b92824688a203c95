#!/usr/bin/env bash
# The GPU checks, as one script for a lent GPU machine: CUDA-marked tests, then the benchmark on CPU and GPU.
# Usage (there): OUT=/some/dir bash benchmarks/gpu_check.sh
set -u
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
nvidia-smi -L | tee "$OUT/gpu.txt"
python3 -c "import torch, optuna; print('torch', torch.__version__, 'optuna', optuna.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_trial.py 2>&1 | tee "$OUT/pytest.log"
python3 -m benchmarks.bench_trial --device cuda --repeats 3 2>&1 | tee "$OUT/bench.log"
