"""Optuna pruners, by the name a search space uses. Options are the pruner's own keyword arguments.

    >>> type(make_pruner("median", {"n_startup_trials": 5, "n_warmup_steps": 2})).__name__
    'MedianPruner'
"""
from __future__ import annotations

from typing import Any, Callable

import optuna

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
