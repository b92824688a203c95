"""Every sampler and pruner in the registries runs a real (tiny) study."""
import optuna
import pytest
import torch
from optuna.trial import TrialState

from conftest import SYNTH_SPACE, call_cli, trials
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


def test_a_grid_search_runs_every_point_once_to_its_end(tmp_path, synth_space):
    """Optuna's GridSampler stops the study as its last point is told, which only optimize() allows: an
    ask-and-tell run of a whole grid ended there in a RuntimeError."""
    cfg = load_config(str(synth_space), ["study.sampler={name: grid, seed: 0}", "study.n_trials=8", *GRID])
    summary = run_study(cfg, f"sqlite:///{tmp_path / 's.db'}", torch.device("cpu"), checkpoint_root=tmp_path,
                        quiet=True)
    trials = summary.study.get_trials()
    assert summary.counts()["complete"] == 8 and summary.stopped is None
    assert sorted(t.system_attrs["grid_id"] for t in trials) == list(range(8))  # 2 optimizers x 2 lrs x 2 momenta


FLAKY_MODEL = """\
import torch

raised = False


class Flaky(torch.nn.Module):  # raises in the first training step it takes: a transient failure of one point
    def __init__(self, input_shape, n_classes):
        super().__init__()
        self.linear = torch.nn.Linear(input_shape[0], n_classes)

    def forward(self, x):
        global raised
        if torch.is_grad_enabled() and not raised:
            raised = True
            raise RuntimeError("transient")
        return self.linear(x)
"""


def test_a_grid_point_whose_trial_failed_is_run_again_not_another_point_twice(tmp_path, write_space):
    """A failure does not count toward the target, and Optuna's grid counts a failed point as visited: the trial
    that replaced it ran a point that had completed, and the failed one never again."""
    (tmp_path / "flaky.py").write_text(FLAKY_MODEL)
    space = write_space(SYNTH_SPACE.replace("name: mlp", "name: flaky:Flaky"))
    result = call_cli("run", str(space), "--storage", "sqlite:///s.db", "--engine", "sequential", "--no-report",
                      "--trials", "8", "--set", "study.sampler={name: grid, seed: 0}",
                      "--set", "params.lr={choices: [0.01, 0.1]}",
                      "--set", "params.momentum={choices: [0.5, 0.9], when: {optimizer: [sgd_momentum]}}",
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ts = trials(tmp_path)
    [failed] = [t for t in ts if t.state == TrialState.FAIL]
    complete = [t.system_attrs["grid_id"] for t in ts if t.state == TrialState.COMPLETE]
    assert sorted(complete) == list(range(8)) and failed.system_attrs["grid_id"] in complete


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in PRUNERS])
def test_every_pruner_builds_with_its_defaults_and_runs(tmp_path, synth_space, name):
    assert isinstance(make_pruner(name, {}), optuna.pruners.BasePruner)
    cfg = load_config(str(synth_space), [f"study.pruner={{name: {name}}}", "study.n_trials=4"])
    summary = run_study(cfg, f"sqlite:///{tmp_path / 's.db'}", torch.device("cpu"), checkpoint_root=tmp_path,
                        quiet=True)
    counts = summary.counts()
    assert counts["complete"] + counts["pruned"] == 4
