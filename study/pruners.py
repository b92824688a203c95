"""Optuna pruners, by the name a search space uses. Options are the pruner's own keyword arguments.

    >>> type(make_pruner("median", {"n_startup_trials": 5, "n_warmup_steps": 2})).__name__
    'MedianPruner'

A median or percentile pruner reads the study's finished trials at every judgment, and each read of a
study re-reads every running trial (Optuna's storage caches finished ones only): a population's K members,
judged in turn at each epoch end, paid K reads of K running trials. `SharedRead` judges them against one
read (`Finished`), taken again after this worker tells a trial (the worker calls `told`) or REFRESH_S
after the last one, for other workers' trials. A trial started after a tell is judged against it, so the
sequential engine's decisions are unchanged.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

REFRESH_S = 5.0  # how old the view of other workers' finished trials may grow
# Those that read only the finished trials and the direction: they can judge against Peers (SharedRead,
# arms.PerArm); the others (successive halving, hyperband) read running trials' rung attrs too.
PEER_PRUNERS = ("median", "percentile")


class Finished:
    """The study's finished (complete and pruned) trials as this worker last read them."""

    def __init__(self):
        self.trials: list[FrozenTrial] = []
        self._read = -math.inf

    def told(self) -> None:
        """This worker told a trial: the next `read` reads the storage."""
        self._read = -math.inf

    def read(self, study: optuna.Study) -> bool:
        """Read the finished trials if this worker told one since the last read, or REFRESH_S passed;
        whether it read."""
        now = time.monotonic()
        if now - self._read <= REFRESH_S:
            return False
        self.trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        self._read = now
        return True


class Peers:
    """The part of a Study that Optuna's median and percentile pruners read, over given finished trials."""

    def __init__(self, study: optuna.Study, trials: list[FrozenTrial]):
        self.direction, self._trials = study.direction, trials

    def get_trials(self, deepcopy: bool = False, states: Sequence[TrialState] | None = None) -> list[FrozenTrial]:
        return [t for t in self._trials if states is None or t.state in states]


class SharedRead(optuna.pruners.BasePruner):
    """`base` (a median or percentile pruner) judging against the finished trials of `Finished`."""

    def __init__(self, base: optuna.pruners.BasePruner):
        self.base, self.finished = base, Finished()

    def told(self) -> None:
        self.finished.told()

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        self.finished.read(study)
        return self.base.prune(Peers(study, self.finished.trials), trial)


def _percentile(percentile: float = 25.0, **options: Any) -> optuna.pruners.PercentilePruner:
    """Prune below the given percentile of trials at the same step (default: the worst 75% go)."""
    return optuna.pruners.PercentilePruner(percentile, **options)


PRUNERS: dict[str, Callable[..., optuna.pruners.BasePruner]] = {
    "median": optuna.pruners.MedianPruner,
    "percentile": _percentile,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "none": optuna.pruners.NopPruner,
}


def make_pruner(name: str, options: dict[str, Any]) -> optuna.pruners.BasePruner:
    return PRUNERS[name](**options)
