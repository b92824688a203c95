"""Optimizers, by the name a search space uses.

    opt = OPTIMIZERS["adam"](model.parameters(), lr=1e-3, momentum=0.9, weight_decay=0.0)

Every factory takes the same keywords so that a trial can pass its config through unchanged;
`momentum` is ignored by the optimizers that have none (Adam's betas are left at their defaults).
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch

OptimizerFactory = Callable[..., torch.optim.Optimizer]


def _sgd(params: Iterable, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)


def _sgd_momentum(params: Iterable, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def _nesterov(params: Iterable, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=momentum > 0, weight_decay=weight_decay)


def _adam(params: Iterable, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def _adamw(params: Iterable, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def _rmsprop(params: Iterable, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.RMSprop(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


OPTIMIZERS: dict[str, OptimizerFactory] = {
    "sgd": _sgd,
    "sgd_momentum": _sgd_momentum,
    "nesterov": _nesterov,
    "adam": _adam,
    "adamw": _adamw,
    "rmsprop": _rmsprop,
}

# The optimizers whose update uses `momentum`; a search space makes momentum conditional on these.
USES_MOMENTUM = frozenset({"sgd_momentum", "nesterov", "rmsprop"})
