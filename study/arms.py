"""Fair budgets between arms: trials spread over the arms by design, and pruning that compares a trial
only with its own arm's trials, at equal samples seen.

An arm is one combination of the scientific params' values. `BalancedArms` wraps the study's sampler:
the scientific values of each new trial go to the arm that has had the fewest trials, as long as some arm
is below `balance` of an equal share; the nuisance params (lr, momentum, ...) are the wrapped sampler's.
balance = 1 is round-robin; 0 leaves the choice to the sampler, which may starve an arm it thinks bad.

    >>> sampler = BalancedArms(optuna.samplers.TPESampler(seed=0), {"opt": ["adam", "sgd", "rmsprop"]})
    >>> study = optuna.create_study(sampler=sampler)
    >>> study.optimize(lambda t: t.suggest_float("lr", 1e-4, 1, log=True) * (t.suggest_categorical(
    ...     "opt", ["adam", "sgd", "rmsprop"]) == "sgd"), n_trials=6)
    >>> [t.params["opt"] for t in study.trials]
    ['adam', 'sgd', 'rmsprop', 'adam', 'sgd', 'rmsprop']

`PerArm` wraps a median or percentile pruner: a trial is judged against the trials of its own arm, each
taken at the epoch where it had seen as many training samples as this trial has now, so that a batch-32
trial is not judged against batch-128 trials that have seen 4x its samples. Its cost: each arm needs the
wrapped pruner's `n_startup_trials` complete trials of its own before any of its trials is pruned.
"""
from __future__ import annotations

import copy
import itertools
from typing import Any, Sequence

import optuna
from optuna.trial import FrozenTrial

from study.confirm import arm_of
from study.pruners import Finished, Peers
from study.records import TAKEN_STATES, TrialRecord


class BalancedArms(optuna.samplers.BaseSampler):
    def __init__(self, base: optuna.samplers.BaseSampler, choices: dict[str, Sequence[Any]], balance: float = 1.0):
        self.base, self.names, self.balance = base, list(choices), balance
        self.arms = [dict(zip(choices, values, strict=True)) for values in itertools.product(*choices.values())]
        self._chosen: dict[int, dict | None] = {}  # trial number -> its arm, chosen once

    def infer_relative_search_space(self, study, trial):
        space = self.base.infer_relative_search_space(study, trial)
        return {k: v for k, v in space.items() if k not in self.names}

    def sample_relative(self, study, trial, search_space):
        return self.base.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, name, distribution):
        if name in self.names:
            if trial.number not in self._chosen:
                self._chosen[trial.number] = self._arm(study, trial.number)
            arm = self._chosen[trial.number]
            if arm is not None and arm[name] in getattr(distribution, "choices", ()):
                return arm[name]
        return self.base.sample_independent(study, trial, name, distribution)

    def _arm(self, study: optuna.Study, number: int) -> dict | None:
        """The least-tried arm while some arm is below its guaranteed share, else None (the sampler's pick)."""
        counts = [0] * len(self.arms)
        keys = [tuple(a.values()) for a in self.arms]
        # The trials this ask's sampler already read (Optuna's per-ask cache, as its own samplers use it):
        # a storage read costs a few ms on SQLite, as much as a small trial's epoch.
        for t in study._get_trials(deepcopy=False, states=TAKEN_STATES, use_cache=True):
            if t.number != number and not TrialRecord.of(t).confirm:
                key = tuple(t.params.get(n) for n in self.names)
                if key in keys:
                    counts[keys.index(key)] += 1
        least = min(range(len(counts)), key=lambda i: (counts[i], i))
        share = (sum(counts) + 1) / len(self.arms)
        return self.arms[least] if counts[least] < self.balance * share else None

    def before_trial(self, study, trial):
        self.base.before_trial(study, trial)

    def after_trial(self, study, trial, state, values):
        self._chosen.pop(trial.number, None)
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()


def samples_at(trial: FrozenTrial, epoch: int) -> float:
    """Training samples a trial had seen at the end of `epoch`, from its stored budget."""
    return _samples(TrialRecord.of(trial).budget, epoch)


def _samples(budget: dict, epoch: int) -> float:
    total, per_epoch = budget.get("total_iters"), budget.get("iters_per_epoch")
    if not total or not per_epoch or budget.get("samples_seen") is None:
        return float(epoch)  # a trial without a budget record: compare by epoch, as Optuna would
    return budget["samples_seen"] * min(1.0, (epoch + 1) * per_epoch / total)


class PerArm(optuna.pruners.BasePruner):
    def __init__(self, base: optuna.pruners.BasePruner, scientific: Sequence[str]):
        self.base, self.scientific = base, list(scientific)
        self._curves: dict[int, tuple[tuple, FrozenTrial, list[float]] | None] = {}  # finished trials, by number
        self.finished = Finished()
        self._judged: dict[int, tuple[tuple, dict]] = {}  # the trials judged so far: number -> arm, budget

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        if trial.number not in self._judged:  # its records are a storage read each: once per trial
            record = TrialRecord.of(trial)
            self._judged[trial.number] = (arm_of(trial, self.scientific, record), record.budget)
        arm, budget = self._judged[trial.number]
        seen = _samples(budget, step)
        peers = []
        for peer_arm, t, samples in self._finished(study):
            if peer_arm != arm:
                continue
            reached = [e for e, s in zip(t.intermediate_values, samples, strict=True) if s <= seen * (1 + 1e-9)]
            if reached:  # its value when it had seen as many samples, shown at this trial's step
                peer = copy.copy(t)
                peer.intermediate_values = {step: t.intermediate_values[max(reached)]}
                peers.append(peer)
        return self.base.prune(Peers(study, peers), trial)

    def told(self) -> None:
        """This worker told a trial: the next judgment reads the finished trials again (pruners.Finished)."""
        self.finished.told()

    def _finished(self, study: optuna.Study) -> list[tuple[tuple, FrozenTrial, list[float]]]:
        """The finished search trials: arm, trial, samples seen at each reported epoch, each worked out once
        (finished trials never change) from the reads of pruners.Finished."""
        if self.finished.read(study):
            for t in self.finished.trials:
                if t.number not in self._curves:
                    record = TrialRecord.of(t)
                    self._curves[t.number] = None if record.confirm else (
                        arm_of(t, self.scientific, record), t,
                        [_samples(record.budget, e) for e in t.intermediate_values])
        return [c for c in self._curves.values() if c is not None]

