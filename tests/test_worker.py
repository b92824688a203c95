"""The worker loop on its own, with a plugged-in objective and no torch: target, surplus, failures, prunes."""
import subprocess
import sys
import threading

import optuna
import pytest
from optuna.trial import TrialState

from study import records
from study.records import TrialRecord, status_of
from study import worker as worker_module
from study.worker import Worker, report_epochs


def _curve(trial: optuna.Trial, epochs: int = 3) -> float:
    x = trial.suggest_float("x", 0, 1)
    history = [{"epoch": e, "val_loss": x + 1 / (e + 1)} for e in range(epochs)]
    report_epochs(trial, history, "val_loss", set())
    return history[-1]["val_loss"]


def test_a_worker_runs_queued_trials_first_and_stops_at_the_target():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial({"x": 0.5})
    Worker(study, target=4, objective=_curve).run()
    assert [status_of(t) for t in study.trials] == ["complete"] * 4
    assert study.trials[0].params == {"x": 0.5} and sorted(study.trials[0].intermediate_values) == [0, 1, 2]
    assert all(TrialRecord.of(t).worker["pid"] > 0 for t in study.trials)


def test_a_second_worker_on_a_met_target_adds_nothing():
    study = optuna.create_study()
    Worker(study, target=2, objective=_curve).run()
    Worker(study, target=2, objective=_curve).run()
    assert len(study.trials) == 2


def test_a_trial_asked_for_past_the_target_is_surplus_and_never_runs():
    study = optuna.create_study()
    study.enqueue_trial({"x": 0.1})  # the one slot, taken by a queued trial
    worker = Worker(study, target=1, objective=lambda t: pytest.fail("a surplus trial ran"))
    held = study.ask()  # what a racing worker holds
    assert worker.ask() is None
    assert status_of(study.trials[-1]) == "surplus" and study.trials[-1].state == TrialState.FAIL
    study.tell(held, 0.3)


def test_trials_drawn_together_are_checked_against_the_target_with_one_read(monkeypatch):
    """A population draws K trials at once. Each read of the study re-reads every unfinished trial, so the
    check that none of them takes the study past its target reads it once for them all, not once each."""
    study = optuna.create_study()
    study.enqueue_trial({"x": 0.5})
    worker = Worker(study, target=3, objective=_curve)
    assert worker.room() == 3  # the queued trial and two free slots
    drawn = [worker.draw() for _ in range(5)]
    reads = []
    monkeypatch.setattr(worker, "_taken", lambda read=worker._taken: reads.append(1) or read())
    beyond = worker.beyond_target(drawn)
    assert [t.number for t in beyond] == [3, 4] and len(reads) == 1
    for trial in beyond:
        worker.surplus(trial)
    assert worker.room() == 0 and [status_of(t) for t in study.trials][3:] == ["surplus"] * 2


def test_the_pruner_prunes_through_report_epochs_and_pruned_trials_count_toward_the_target():
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=1.0))
    reached = []

    def objective(trial):
        report_epochs(trial, [{"epoch": 0, "val_loss": 0.5}], "val_loss", reported := set())
        report_epochs(trial, [{"epoch": 0, "val_loss": 0.5}, {"epoch": 1, "val_loss": 2.0}], "val_loss", reported)
        reached.append(trial.number)  # never: epoch 1 is over the threshold
        return 2.0

    Worker(study, target=3, objective=objective).run()
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 3 and reached == []
    assert all(t.intermediate_values == {0: 0.5, 1: 2.0} for t in study.trials)  # each epoch reported once


def test_each_trial_is_judged_against_the_trials_the_worker_told_before_it():
    """PerArm reads the finished trials once and again only after a tell (or REFRESH_S): the worker tells
    it, so the second trial, worse than the first at every epoch, is pruned at its first judged epoch."""
    from study.arms import PerArm

    pruner = PerArm(optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0), ["opt"])
    study = optuna.create_study(pruner=pruner, sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial({"x": 0.0, "opt": "a"})
    study.enqueue_trial({"x": 1.0, "opt": "a"})

    def objective(trial):
        trial.suggest_categorical("opt", ["a"])
        return _curve(trial)

    Worker(study, target=2, objective=objective).run()
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.PRUNED]


def test_failures_in_a_row_stop_the_worker_with_the_last_error():
    study = optuna.create_study()

    def broken(trial):
        raise RuntimeError("out of memory (simulated)")

    worker = Worker(study, target=10, objective=broken, max_failures=3)
    worker.run()
    assert len(study.trials) == 3 and worker.stopped.endswith("RuntimeError: out of memory (simulated)")
    assert all(TrialRecord.of(t).error == "RuntimeError: out of memory (simulated)" for t in study.trials)


def test_an_interrupted_trial_is_failed_marked_and_queued_again_with_its_first_number():
    study = optuna.create_study()

    def stop(trial):
        trial.suggest_float("x", 0, 1)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Worker(study, target=2, objective=stop).run()
    first, retry = study.trials
    assert status_of(first) == "interrupted" and retry.state == TrialState.WAITING
    assert retry.system_attrs["fixed_params"] == first.params and TrialRecord.of(retry).first_number == 0


def test_after_is_called_with_every_told_trial():
    study = optuna.create_study()
    seen = []
    Worker(study, target=3, objective=_curve, after=lambda s, t: seen.append((t.number, t.state))).run()
    assert seen == [(n, TrialState.COMPLETE) for n in range(3)]


class _Wake(threading.Event):
    """The Event --jobs N shares, recording whether each wait ended because it was set."""

    def __init__(self):
        super().__init__()
        self.woken: list[bool] = []
        self.waiting = threading.Event()  # a worker has begun to wait

    def wait(self, timeout=None):
        self.waiting.set()
        self.woken.append(super().wait(timeout))
        return self.woken[-1]


def test_an_idle_worker_is_woken_when_another_meets_the_target(monkeypatch):
    """--jobs N: a worker waiting for another's last trial looks again as soon as that one is told, not at
    its next poll (here 60 s, so that only the wake can end its wait)."""
    monkeypatch.setattr(worker_module, "FIRST_POLL_S", 60.0)
    monkeypatch.setattr(worker_module, "POLL_S", 60.0)
    study, wake, started, release = optuna.create_study(), _Wake(), threading.Event(), threading.Event()

    def last_trial(trial):
        started.set()
        release.wait(30)
        return 0.5

    busy = threading.Thread(target=Worker(study, target=1, objective=last_trial, wake=wake).run)
    busy.start()
    assert started.wait(30)
    idle = threading.Thread(target=Worker(study, target=1, objective=lambda t: pytest.fail("no room"), wake=wake).run)
    idle.start()
    assert wake.waiting.wait(30)  # the idle worker found no room and waits
    release.set()
    busy.join(30)
    idle.join(30)
    assert not idle.is_alive() and wake.is_set() and True in wake.woken
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]


def test_the_worker_loop_imports_no_torch():
    code = "import sys, study.worker, study.storage, study.records; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_a_confirmation_run_queued_twice_runs_once_and_every_planned_run_still_runs():
    """Two processes that finish a search at one instant both queue its confirmation plan, and their
    enqueues can interleave: run A twice, then B twice, then C twice. Each (candidate, seed) runs once,
    its later copies fail as surplus, and C, last in the queue, still runs within the target of 3."""
    study = optuna.create_study()
    plan = [{"of": 0, "seed": seed} for seed in (11, 12, 13)]
    for run in plan:
        for _ in range(2):
            study.enqueue_trial({"x": 0.5}, user_attrs=records.attrs(confirm=run))
    Worker(study, target=len(plan), objective=_curve, phase="confirm").run()
    ran = [TrialRecord.of(t).confirm["seed"] for t in study.trials if status_of(t) == "complete"]
    assert sorted(ran) == [11, 12, 13]
    assert [status_of(t) for t in study.trials].count("surplus") == 3
