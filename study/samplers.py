"""Optuna samplers, by the name a search space uses.

    >>> type(make_sampler("tpe", seed=0, options={"n_startup_trials": 5}, grid={})).__name__
    'TPESampler'
"""
from __future__ import annotations

import warnings
from typing import Any, Callable

import optuna
from optuna.trial import TrialState


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid, less its stop and with failed points run again.

    Told the last point, GridSampler calls study.stop(), which only optimize() allows, so an ask-and-tell
    run of a whole grid ended in a RuntimeError at its last trial. The worker stops at its target, which
    validation keeps within the grid's points.

    Optuna counts a failed trial's point as visited, so the trial that replaced it (a failure does not count
    toward the target) ran a random point a second time and the failed one never again. Here a failed point
    is unvisited until a trial of it completes or is pruned; points never tried still come first.
    """

    def after_trial(self, study, trial, state, values) -> None:
        pass

    def _get_unvisited_grid_ids(self, study) -> list[int]:
        done, running, failed = set(), set(), set()
        for t in study._storage.get_all_trials(study._study_id, deepcopy=False):
            if "grid_id" not in t.system_attrs or not self._same_search_space(t.system_attrs["search_space"]):
                continue
            grid_id = t.system_attrs["grid_id"]
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
                done.add(grid_id)
            elif t.state == TrialState.FAIL:
                failed.add(grid_id)
            elif t.state == TrialState.RUNNING:
                running.add(grid_id)
        points = set(range(self._n_min_trials)) - done
        # Fresh points first, then failed ones, then those running elsewhere; Optuna's fallback to a random
        # point is left for a grid that is done.
        return sorted(points - running - failed) or sorted(points - running) or sorted(points)


SAMPLERS: dict[str, Callable[..., optuna.samplers.BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "grid": GridSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "qmc": optuna.samplers.QMCSampler,
}


def make_sampler(name: str, seed: int | None, options: dict[str, Any], grid: dict[str, list | None]
                 ) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():  # QMC is "experimental" in Optuna; the user chose it knowingly
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "grid":
            return GridSampler(grid, seed=seed, **options)
        if name == "tpe":
            # Trials asked while others run (a population, --jobs N) spread out instead of piling on one
            # guess; a trial asked when none runs is sampled as without it.
            options = {"constant_liar": True, **options}
        return SAMPLERS[name](seed=seed, **options)
