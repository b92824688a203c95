"""Optuna samplers, by the name a search space uses.

    >>> type(make_sampler("tpe", seed=0, options={"n_startup_trials": 5}, grid={})).__name__
    'TPESampler'
"""
from __future__ import annotations

import warnings
from typing import Any, Callable

import optuna

SAMPLERS: dict[str, Callable[..., optuna.samplers.BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "grid": optuna.samplers.GridSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "qmc": optuna.samplers.QMCSampler,
}


def make_sampler(name: str, seed: int | None, options: dict[str, Any], grid: dict[str, list | None]
                 ) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():  # QMC is "experimental" in Optuna; the user chose it knowingly
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "grid":
            return optuna.samplers.GridSampler(grid, seed=seed, **options)
        if name == "tpe":
            # Trials asked while others run (a population, --jobs N) spread out instead of piling on one
            # guess; a trial asked when none runs is sampled as without it.
            options = {"constant_liar": True, **options}
        return SAMPLERS[name](seed=seed, **options)
