"""A trial's outcome as study names it: Optuna's state, refined by the marks a run leaves in user attrs.

    status_of(trial)   # complete | pruned | diverged | failed | interrupted | surplus | running | waiting

One definition for the run summary, the per-trial lines, `study list` and the report, so that they
never count differently. `surplus` trials (losers of the race for the last slots) count nowhere.
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable

import optuna
from optuna.trial import TrialState

# Marks in the order they take precedence; each is a user attr a run sets on the trial.
MARKS = ("surplus", "interrupted", "diverged")
_STATES = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
           TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}


# The statuses of a trial that ran to an end the study counts: its target, the report's comparisons.
FINISHED = ("complete", "pruned", "diverged")


def status_of(trial: optuna.trial.FrozenTrial) -> str:
    for mark in MARKS:
        if trial.user_attrs.get(mark):
            return mark
    return _STATES[trial.state]


def counts(trials: Iterable[optuna.trial.FrozenTrial]) -> Counter:
    return Counter(status_of(t) for t in trials)


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The study's best complete trial, or None before the first one."""
    try:
        return study.best_trial
    except ValueError:
        return None
