"""Learning-rate schedules, counted in iterations, built on torch.optim.lr_scheduler, each declaring the
hyperparameters it consumes.

    >>> opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    >>> sched = make_schedule(opt, "cosine", total_iters=1000, warmup_iters=50, gamma=0.1, step_fraction=0.3)
    >>> for _ in range(50): opt.step(); sched.step()
    >>> round(sched.get_last_lr()[0], 6)        # the end of the warmup: the full lr
    0.1
    >>> schedule_spec("step").uses
    ('gamma', 'step_fraction')

Step points are fractions of the run (after warmup) so that one schedule means the same thing whatever
the budget; `gamma` is the factor the lr is multiplied by at each step (step, multistep) or over the
whole run (exponential). A user schedule is `package.module:callable`, called as
`fn(optimizer, total_iters, **hyperparameters)` with those of `gamma`, `step_fraction` that its signature
names, returning a torch LRScheduler stepped once per iteration.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch.optim import lr_scheduler as S

from study.callables import accepts, is_reference, load_callable

HYPERPARAMETERS = ("gamma", "step_fraction")  # what a trial's config can give a schedule


def _constant(opt: torch.optim.Optimizer, n: int, gamma: float, step_fraction: float) -> S.LRScheduler:
    return S.ConstantLR(opt, factor=1.0, total_iters=0)


def _step(opt: torch.optim.Optimizer, n: int, gamma: float, step_fraction: float) -> S.LRScheduler:
    return S.StepLR(opt, step_size=max(1, round(step_fraction * n)), gamma=gamma)


def _multistep(opt: torch.optim.Optimizer, n: int, gamma: float, step_fraction: float) -> S.LRScheduler:
    # Drops at 50% and 75% of the run, the classic ResNet recipe.
    return S.MultiStepLR(opt, milestones=[max(1, n // 2), max(1, (3 * n) // 4)], gamma=gamma)


def _exponential(opt: torch.optim.Optimizer, n: int, gamma: float, step_fraction: float) -> S.LRScheduler:
    return S.ExponentialLR(opt, gamma=gamma ** (1.0 / max(1, n)))


def _cosine(opt: torch.optim.Optimizer, n: int, gamma: float, step_fraction: float) -> S.LRScheduler:
    return S.CosineAnnealingLR(opt, T_max=max(1, n))


def _onecycle(opt: torch.optim.Optimizer, n: int, gamma: float, step_fraction: float) -> S.LRScheduler:
    # torch's OneCycleLR (cosine, 30% up from lr/25, then down to lr/25e4), written as a factor of the base lr
    # like every other schedule here: OneCycleLR sets lrs outright and rewrites `initial_lr`, so a warmup
    # in front of it ramped to the wrong lr. No momentum cycling: it would overwrite a searched momentum.
    up, last = 0.3 * max(2, n) - 1, max(2, n) - 1

    def factor(t: int) -> float:
        start, end, pct = (1 / 25, 1.0, t / up) if t <= up else (1.0, 1 / 25e4, (t - up) / (last - up))
        return end + (start - end) * (1 + math.cos(math.pi * min(1.0, pct))) / 2

    return S.LambdaLR(opt, factor)


@dataclass(frozen=True)
class ScheduleSpec:
    build: Callable[..., S.LRScheduler]  # build(opt, n, gamma, step_fraction)
    uses: tuple[str, ...]  # the hyperparameters it reads


SCHEDULES: dict[str, ScheduleSpec] = {
    "constant": ScheduleSpec(_constant, ()),
    "step": ScheduleSpec(_step, ("gamma", "step_fraction")),
    "multistep": ScheduleSpec(_multistep, ("gamma",)),
    "exponential": ScheduleSpec(_exponential, ("gamma",)),
    "cosine": ScheduleSpec(_cosine, ()),
    "onecycle": ScheduleSpec(_onecycle, ()),
}


def schedule_spec(name: str) -> ScheduleSpec:
    if not is_reference(name):
        return SCHEDULES[name]
    fn = load_callable(name)
    uses = tuple(h for h in HYPERPARAMETERS if accepts(fn, h))

    def build(opt: torch.optim.Optimizer, n: int, gamma: float, step_fraction: float) -> Any:
        given = {"gamma": gamma, "step_fraction": step_fraction}
        return fn(opt, n, **{k: given[k] for k in uses})

    return ScheduleSpec(build, uses)


def make_schedule(
    opt: torch.optim.Optimizer,
    name: str,
    total_iters: int,
    warmup_iters: int = 0,
    gamma: float = 0.1,
    step_fraction: float = 0.3,
) -> S.LRScheduler:
    """The schedule `name`, with a linear warmup from lr/100 over `warmup_iters` in front when > 0: the
    same warmup for every schedule, so that "warmup" is one treatment wherever a space varies it."""
    spec = schedule_spec(name)
    if warmup_iters <= 0:
        return spec.build(opt, total_iters, gamma, step_fraction)
    warmup_iters = min(warmup_iters, max(1, total_iters - 1))
    warmup = S.LinearLR(opt, start_factor=0.01, end_factor=1.0, total_iters=warmup_iters)
    main = spec.build(opt, total_iters - warmup_iters, gamma, step_fraction)
    return S.SequentialLR(opt, [warmup, main], milestones=[warmup_iters])


def lr_curve(name: str, lr: float, total_iters: int, warmup_iters: int = 0, gamma: float = 0.1,
             step_fraction: float = 0.3) -> list[float]:
    """The lr at every iteration of a run, without training: for tests and the report."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = make_schedule(opt, name, total_iters, warmup_iters, gamma, step_fraction)
    lrs = []
    for _ in range(total_iters):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs
