"""Optimizers, by the name a search space uses, each declaring the hyperparameters it consumes.

    >>> spec = optimizer_spec("adam")             # or "package.module:callable"
    >>> spec.uses
    ('lr', 'weight_decay')
    >>> opt = spec(torch.nn.Linear(2, 2).parameters(), lr=1e-3, momentum=0.9, weight_decay=0.0)  # takes what it uses
    >>> type(opt).__name__, opt.defaults["lr"]
    ('Adam', 0.001)

A trial passes its whole config; each optimizer takes what it `uses`, and the validator refuses a
searched hyperparameter that the optimizer it would apply to does not use (momentum for Adam). A user
optimizer is `package.module:callable`, called as `fn(params, **hyperparameters)` with those of `lr`,
`momentum`, `weight_decay` that its signature names.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch

from study.callables import accepts, is_reference, load_callable

HYPERPARAMETERS = ("lr", "momentum", "weight_decay")  # what a trial's config can give an optimizer


@dataclass(frozen=True)
class OptimizerSpec:
    build: Callable[..., torch.optim.Optimizer]
    uses: tuple[str, ...]

    def __call__(self, params: Iterable, **hyper: Any) -> torch.optim.Optimizer:
        return self.build(params, **{k: v for k, v in hyper.items() if k in self.uses})


OPTIMIZERS: dict[str, OptimizerSpec] = {
    "sgd": OptimizerSpec(torch.optim.SGD, ("lr", "weight_decay")),
    "sgd_momentum": OptimizerSpec(torch.optim.SGD, ("lr", "momentum", "weight_decay")),
    "nesterov": OptimizerSpec(lambda params, momentum, **kw: torch.optim.SGD(
        params, momentum=momentum, nesterov=momentum > 0, **kw), ("lr", "momentum", "weight_decay")),
    "adam": OptimizerSpec(torch.optim.Adam, ("lr", "weight_decay")),  # betas left at their defaults
    "adamw": OptimizerSpec(torch.optim.AdamW, ("lr", "weight_decay")),
    "rmsprop": OptimizerSpec(torch.optim.RMSprop, ("lr", "momentum", "weight_decay")),
}


def optimizer_spec(name: str) -> OptimizerSpec:
    if not is_reference(name):
        return OPTIMIZERS[name]
    fn = load_callable(name)
    return OptimizerSpec(fn, tuple(h for h in HYPERPARAMETERS if accepts(fn, h)))
