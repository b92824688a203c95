"""Learning-rate schedules, counted in iterations, built on torch.optim.lr_scheduler.

    sched = make_schedule(opt, "cosine", total_iters=1000, warmup_iters=50, gamma=0.1, step_fraction=0.3)
    for _ in range(1000): opt.step(); sched.step()

Step points are fractions of the run (after warmup) so that one schedule means the same thing whatever
the budget; `gamma` is the factor the lr is multiplied by at each step (step, multistep) or over the
whole run (exponential).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.optim import lr_scheduler as S

Schedule = Callable[[torch.optim.Optimizer, int, float, float], S.LRScheduler]


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


def _onecycle(opt: torch.optim.Optimizer, n: int, gamma: float, step_fraction: float,
              warmup_iters: int = 0) -> S.LRScheduler:
    max_lr = [group["lr"] for group in opt.param_groups]
    # One-cycle has a warmup phase of its own (30% of the run by default); a requested warmup sets it.
    pct_start = min(0.99, warmup_iters / max(2, n)) if warmup_iters > 0 else 0.3
    # cycle_momentum would overwrite the momentum a trial searched for.
    return S.OneCycleLR(opt, max_lr=max_lr, total_steps=max(2, n), pct_start=pct_start, cycle_momentum=False)


SCHEDULES: dict[str, Schedule] = {
    "constant": _constant,
    "step": _step,
    "multistep": _multistep,
    "exponential": _exponential,
    "cosine": _cosine,
    "onecycle": _onecycle,
}


def make_schedule(
    opt: torch.optim.Optimizer,
    name: str,
    total_iters: int,
    warmup_iters: int = 0,
    gamma: float = 0.1,
    step_fraction: float = 0.3,
) -> S.LRScheduler:
    """The schedule `name`, with a linear warmup from lr/100 over `warmup_iters` in front when > 0
    (one-cycle instead ramps up over its first `warmup_iters`)."""
    if name == "onecycle":
        return _onecycle(opt, total_iters, gamma, step_fraction, warmup_iters)
    if warmup_iters <= 0:
        return SCHEDULES[name](opt, total_iters, gamma, step_fraction)
    warmup_iters = min(warmup_iters, max(1, total_iters - 1))
    warmup = S.LinearLR(opt, start_factor=0.01, end_factor=1.0, total_iters=warmup_iters)
    main = SCHEDULES[name](opt, total_iters - warmup_iters, gamma, step_fraction)
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
