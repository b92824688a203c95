"""Every sampler and pruner in the registries runs a real (tiny) study."""
import optuna
import pytest
import torch

from study.config import load_config
from study.pruners import PRUNERS, make_pruner
from study.runner import run_study
from study.samplers import SAMPLERS

GRID = ["params.lr={choices: [0.01, 0.1]}",
        "params.momentum={type: float, low: 0.5, high: 0.9, step: 0.4, when: {optimizer: [sgd_momentum]}}"]


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in SAMPLERS])
def test_every_sampler_runs_a_study(tmp_path, synth_space, name):
    overrides = [f"study.sampler={{name: {name}, seed: 0}}", "study.n_trials=3"] + (GRID if name == "grid" else [])
    cfg = load_config(str(synth_space), overrides)
    summary = run_study(cfg, f"sqlite:///{tmp_path / 's.db'}", torch.device("cpu"), checkpoint_root=tmp_path,
                        quiet=True)
    assert summary.counts()["complete"] == 3


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in PRUNERS])
def test_every_pruner_builds_with_its_defaults_and_runs(tmp_path, synth_space, name):
    assert isinstance(make_pruner(name, {}), optuna.pruners.BasePruner)
    cfg = load_config(str(synth_space), [f"study.pruner={{name: {name}}}", "study.n_trials=4"])
    summary = run_study(cfg, f"sqlite:///{tmp_path / 's.db'}", torch.device("cpu"), checkpoint_root=tmp_path,
                        quiet=True)
    counts = summary.counts()
    assert counts["complete"] + counts["pruned"] == 4
