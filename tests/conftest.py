"""Shared fixtures: a tiny synthetic search space, and running the CLI in-process or as a real process."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SYNTH_SPACE = """\
# Question: a tiny synthetic study for tests
study:
  name: synth
  question: a tiny synthetic study for tests
  n_trials: 3
  sampler: {name: random, seed: 0}
  pruner: {name: none}
data:
  name: synthetic
  options: {n_samples: 160, n_features: 8, n_classes: 3}
model:
  name: mlp
  depth: 1
  width: 16
training:
  batch_size: 32
  budget: 3
params:
  optimizer: {choices: [sgd_momentum, adam]}
  lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}
  momentum: {type: float, low: 0.5, high: 0.9, when: {optimizer: [sgd_momentum]}}
"""


@pytest.fixture
def synth_space(tmp_path: Path) -> Path:
    path = tmp_path / "synth.yaml"
    path.write_text(SYNTH_SPACE)
    return path


@pytest.fixture
def write_space(tmp_path: Path):
    def write(text: str, name: str = "space.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path
    return write


def cli_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), extra.pop("PYTHONPATH", "")])),
           "PYTHONUNBUFFERED": "1"}
    env.update(extra)
    return env


def run_cli(*args: str, cwd: Path, timeout: float = 240, **env: str) -> subprocess.CompletedProcess:
    """`python -m study ...` as a real process, with this checkout on the path."""
    return subprocess.run([sys.executable, "-m", "study", *args], cwd=cwd, env=cli_env(**env),
                          capture_output=True, text=True, timeout=timeout)
