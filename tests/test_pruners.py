"""The pruners by name, and the shared read of the finished trials that median and percentile pruners judge
against."""
import optuna
import pytest
from optuna.trial import TrialState, create_trial

from study.pruners import PEER_PRUNERS, PRUNERS, SharedRead, make_pruner


def _finished(values: list[float]) -> optuna.trial.FrozenTrial:
    return create_trial(state=TrialState.COMPLETE, value=values[-1], intermediate_values=dict(enumerate(values)))


def _running(values: list[float], number: int) -> optuna.trial.FrozenTrial:
    trial = create_trial(state=TrialState.RUNNING, intermediate_values=dict(enumerate(values)))
    trial.number = number
    return trial


@pytest.mark.parametrize("name", PEER_PRUNERS)
def test_trials_judged_in_turn_share_one_read_and_are_judged_as_optuna_judges_them(name):
    """A population's members are judged in turn at each epoch end: one read of the finished trials serves
    them all until this worker tells a trial, and each decision is the wrapped pruner's own on those trials."""
    study = optuna.create_study()
    for values in ([1.0, 0.5, 0.3], [1.0, 0.6, 0.4], [0.9, 0.4, 0.2]):
        study.add_trial(_finished(values))
    reads = []
    real = study.get_trials
    study.get_trials = lambda *a, **kw: reads.append(1) or real(*a, **kw)
    base = make_pruner(name, {"n_startup_trials": 1, "n_warmup_steps": 0})
    shared = SharedRead(base)
    members = [_running([1.0, v], 10 + i) for i, v in enumerate([0.3, 0.5, 0.7, 0.45])]
    decisions = [shared.prune(study, m) for m in members]
    assert len(reads) == 1
    study.get_trials = real
    assert decisions == [base.prune(study, m) for m in members] and any(decisions) and not all(decisions)
    study.get_trials = lambda *a, **kw: reads.append(1) or real(*a, **kw)
    study.add_trial(_finished([0.2, 0.1, 0.1]))  # another worker's: unseen until REFRESH_S
    assert [shared.prune(study, m) for m in members] == decisions and len(reads) == 1
    shared.told()  # as if this worker had told it
    study.get_trials = real
    want = [base.prune(study, m) for m in members]
    assert [shared.prune(study, m) for m in members] == want and want != decisions


def test_every_name_builds_its_pruner():
    for name in PRUNERS:
        assert isinstance(make_pruner(name, {}), optuna.pruners.BasePruner)
