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
        return SAMPLERS[name](seed=seed, **options)
