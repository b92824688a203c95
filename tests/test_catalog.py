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
    optuna.create_study(study_name="empty", storage=storage)
    complete = [t for t in made.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = min(complete, key=lambda t: t.value)  # computed here from the trials, not by the code under test
    assert [t.number for t in complete] == [0, 4, 5, 9]
    assert summaries(storage) == [
        {"name": "a", "metric": "val_loss", "complete": 4, "pruned": 2, "diverged": 2, "failed": 3,
         "interrupted": 1, "running": 0, "waiting": 0,  # the surplus trial counts nowhere
         "best_trial": best.number, "best": best.value},
        {"name": "empty", "metric": "val_loss", "complete": 0, "pruned": 0, "diverged": 0, "failed": 0,
         "interrupted": 0, "running": 0, "waiting": 0, "best_trial": None, "best": None}]
