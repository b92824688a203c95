"""Optuna pruners, by the name a search space uses. Options are the pruner's own keyword arguments.

    pruner = make_pruner("median", {"n_startup_trials": 5, "n_warmup_steps": 2})
"""
from __future__ import annotations

from typing import Any, Callable

import optuna

PRUNERS: dict[str, Callable[..., optuna.pruners.BasePruner]] = {
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "none": optuna.pruners.NopPruner,
}


def make_pruner(name: str, options: dict[str, Any]) -> optuna.pruners.BasePruner:
    return PRUNERS[name](**options)
