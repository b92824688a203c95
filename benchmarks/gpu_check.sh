#!/usr/bin/env bash
# The GPU checks, as one script for a lent GPU machine: CUDA-marked tests (bf16, no host syncs per step,
# --jobs 2 on CUDA stopped by SIGTERM and resumed, populations), the trial loop's tests, then the benchmarks on CPU and GPU
# (on the GPU with --vmap: what study.fused's layers gain over vmap there).
# Usage: here, `bash benchmarks/gpu_wheels.sh` once (optuna and its needs, as wheels in .whl/); there, with
# .whl carried: OUT=/some/dir bash benchmarks/gpu_check.sh (the device tool: command `bash benchmarks/gpu_check.sh`,
# carry [".whl"], timeout_s 560; it sets OUT). Tried on a CPU-only venv holding the image's packages and
# these wheels alone (2026-12-02): the tests ran (CUDA ones skipped) and the CPU benchmarks too.
# The steps run in order of what matters most, each under its own cap and all within BUDGET_S (default
# 520 s, so that one run fits a call of 600 s): a step that would start with under 15 s left is skipped
# and says so, and whatever ran is in $OUT.
set -u
DEADLINE=${BUDGET_S:-520}  # bash counts SECONDS from the script's start
if [ -d .whl ]; then  # the image has no optuna: install the carried wheels beside it
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit
    export PYTHONPATH=/tmp/site
fi
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi -L | tee "$OUT/gpu.txt"
python3 -c "import torch, optuna; print('torch', torch.__version__, 'optuna', optuna.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
# step CAP LOG COMMAND...: COMMAND under min(CAP, the seconds left), its output appended to $OUT/LOG
step() {
    local cap=$1 log=$2 left=$((DEADLINE - SECONDS))
    shift 2
    if [ "$left" -lt 15 ]; then echo "skipped, out of time: $*" | tee -a "$OUT/$log"; return; fi
    timeout $((cap < left ? cap : left)) "$@" 2>&1 | tee -a "$OUT/$log"
}
: >"$OUT/pytest.log"
: >"$OUT/bench.log"
step 190 pytest.log python3 -m pytest -q -p no:cacheprovider -W ignore::DeprecationWarning tests/test_cuda.py tests/test_trial.py tests/test_checkpoints.py tests/test_population.py
step 30 pytest.log python3 -m pytest -q -p no:cacheprovider -W ignore::DeprecationWarning -m cuda tests/test_fused.py
# the engines alone: trials/min and us per model-step, sequential against populations (issue 11's goal: x20 at K >= 64)
step 120 bench.log python3 -m benchmarks.bench_population --device cuda --trials 128 --sizes 1 16 64 128 --vmap
# a whole `study run` on the GPU: what its storage, checkpoints and reports cost beside the fused training
step 60 bench.log python3 -m benchmarks.bench_overhead --device cuda --engine population --trials 64
# with a checkpoint per trial and epoch, as `study run` saves them: what the epoch ends cost on a GPU
step 50 bench.log python3 -m benchmarks.bench_population --device cuda --trials 64 --sizes 16 64 --checkpoints
# the wall time until the best val_loss reaches 0.07, as a user runs the search, sequential against K = 16
step 60 bench.log python3 -m benchmarks.bench_population --device cuda --to-target 0.07 --sizes 16 --seeds 1
step 60 bench.log python3 -m benchmarks.bench_trial --device cuda --repeats 3
# the same machine's CPU, for the GPU/CPU ratio
step 45 bench.log python3 -m benchmarks.bench_population --device cpu --trials 32 --sizes 1 16 32
# issue 11's "torch.compile of the fused step when it pays (measure)": on this CPU it did not (README)
step 90 bench.log python3 -m benchmarks.bench_population --device cuda --compile --sizes 64
# the machine's 16 CPU cores: whether a thread count between 1 and all pays (threads.py gives all; measured on 2 cores)
step 60 bench.log python3 -m benchmarks.bench_threads --rounds 3 --counts 2 4 8 16
