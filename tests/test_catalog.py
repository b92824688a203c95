"""`study list`'s facts: counts by status and the best trial, the same on every storage kind."""
import optuna
import pytest

from conftest import make_study
from study.catalog import summaries
from study.storage import open_storage


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def storage(request, tmp_path):
    if request.param == "memory":
        return optuna.storages.InMemoryStorage()
    if request.param == "sqlite":
        return open_storage(f"sqlite:///{tmp_path / 'c.db'}")
    return open_storage(request.getfixturevalue("pg_url"))


def test_summaries_count_each_study_and_find_its_best(storage):
    made = make_study(10, name="a", statuses=("complete", "pruned", "failed", "diverged", "complete"))
    optuna.copy_study(from_study_name="a", from_storage=made._storage, to_storage=storage)
    marked = optuna.load_study(study_name="a", storage=storage)
    for mark in ("surplus", "interrupted"):
        marked.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs={mark: True}))
    marked.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs={"interrupted": False}))
    # a mark counts on its own state only: a trial found dead whose worker was only late and told it
    late = {"interrupted": True, "stale": True}
    marked.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, value=99.0, user_attrs=late))
    optuna.create_study(study_name="empty", storage=storage)
    complete = [t for t in made.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = min(complete, key=lambda t: t.value)  # computed here from the trials, not by the code under test
    assert [t.number for t in complete] == [0, 4, 5, 9]
    assert summaries(storage) == [
        {"name": "a", "metric": "val_loss", "complete": 5, "pruned": 2, "diverged": 2, "failed": 3,
         "interrupted": 1, "running": 0, "waiting": 0,  # the surplus trial counts nowhere
         "best_trial": best.number, "best": best.value, "confirm": NO_RUNS, "gone": 0},
        {"name": "empty", "metric": "value", "complete": 0, "pruned": 0, "diverged": 0, "failed": 0,
         "interrupted": 0, "running": 0, "waiting": 0, "best_trial": None, "best": None, "confirm": NO_RUNS,
         "gone": 0}]


NO_RUNS = {"complete": 0, "diverged": 0, "failed": 0, "interrupted": 0, "running": 0, "waiting": 0}


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_confirmation_runs_are_counted_apart_and_never_the_best(storage, direction):
    """A confirmation run retrains a config chosen for being best with a fresh seed: the luckiest seed is
    not a better config, so the best is the search's, as the run's summary and the report say."""
    from optuna.trial import TrialState, create_trial

    study = optuna.create_study(study_name="c", storage=storage, direction=direction)
    sign = 1 if direction == "minimize" else -1
    for value in (0.3, 0.2, 0.25):
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=sign * value))
    study.add_trial(create_trial(state=TrialState.PRUNED, user_attrs={"diverged": {"reason": "nan", "step": 3}}))
    for value in (0.21, 0.05, 0.26):  # runs of trial 1 with seeds 1-3; the second is the lowest of all
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=sign * value,
                                     user_attrs={"confirm": {"of": 1, "seed": 1}}))
    study.add_trial(create_trial(state=TrialState.PRUNED, user_attrs={"confirm": {"of": 1, "seed": 4},
                                                                       "diverged": {"reason": "nan", "step": 2}}))
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"confirm": {"of": 1, "seed": 5}}))
    [row] = summaries(storage)
    assert (row["complete"], row["pruned"], row["diverged"], row["failed"]) == (3, 0, 1, 0)
    assert row["confirm"] == {**NO_RUNS, "complete": 3, "diverged": 1, "failed": 1}
    assert (row["best_trial"], row["best"]) == (1, sign * 0.2)

