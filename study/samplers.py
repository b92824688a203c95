"""Optuna samplers, by the name a search space uses.

    >>> type(make_sampler("tpe", seed=0, options={"n_startup_trials": 5}, grid={})).__name__
    'TPESampler'
"""
from __future__ import annotations

import warnings
from typing import Any, Callable

import optuna

class GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid, less its stop: told the last point, GridSampler calls study.stop(), which only
    optimize() allows, so an ask-and-tell run of a whole grid ended in a RuntimeError at its last trial. The
    worker stops at its target, which validation keeps within the grid's points."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


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
