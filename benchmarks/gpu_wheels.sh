#!/usr/bin/env bash
# The wheels that the lent GPU machine's image lacks (it has torch, pandas, seaborn, scikit-learn, pytest,
# but no optuna), downloaded here into .whl/ (git-ignored) for Python 3.12 on x86-64. The device tool
# carries .whl there; benchmarks/gpu_check.sh installs it before anything imports optuna.
# Usage (here, in the repository root): bash benchmarks/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
version() { python3 -c "import importlib.metadata as m; print(m.version('$1'))"; }
rm -rf .whl && mkdir .whl
# optuna and what it needs beyond the image; cmaes and mnist1d: the samplers' and the data's imports;
# redis: storage.failure's, which reads the error of any failed command.
for name in optuna sqlalchemy alembic mako colorlog cmaes mnist1d redis; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "$name==$(version "$name")"
done
ls .whl
