"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates for Training Neural Networks"):
train from the space's init while the lr grows exponentially, step by step, from 1e-7 to 10, and watch
the smoothed loss. Where it falls fastest, the lr is large enough to learn; where it turns up, too large.

    >>> from study.config import load_config
    >>> cfg = load_config("quick", overrides=["data.name=synthetic"])
    >>> found = find(cfg, torch.device("cpu"), iterations=60)
    >>> sorted(found), sorted(found["adam"])           # one test per optimizer the space searches
    (['adam', 'sgd', 'sgd_momentum'], ['high', 'loss', 'low', 'lrs', 'steepest'])
    >>> all(r["low"] < r["high"] for r in found.values())
    True

The suggested range runs from a tenth of the steepest descent's lr to the lr of the lowest smoothed loss.
A space whose `lr` says `range: auto` gets the union of its optimizers' ranges, found once when the
study is created and stored with it (`lr_range`), so that every worker and every rerun uses the same.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F

from study import interrupts
from study.batches import BatchOrder
from study.config import Param, StudyConfig

START, END = 1e-7, 10.0
# The loss's exponential moving average, bias-corrected. 0.9 lags ~9 steps (a third of a decade of lr at
# 200 steps over 8 decades); fastai's 0.98 lags ~50 steps, which put minima 2 decades late here.
SMOOTHING = 0.9
STOP_FACTOR = 4.0  # stop once the smoothed loss is 4x its lowest: past that, it has diverged


def optimizers_of(cfg: StudyConfig) -> list[str]:
    param = cfg.params.get("optimizer")
    return list(param.choices) if param is not None and param.kind == "categorical" else [cfg.defaults.optimizer]


def ramp(cfg: StudyConfig, optimizer: str, device: torch.device, iterations: int) -> tuple[list, list]:
    """(lrs, smoothed losses) of one range test with `optimizer`, a constant schedule and no warmup."""
    from study.trial import prepare

    tcfg = dataclasses.replace(cfg.defaults, optimizer=optimizer, schedule="constant", warmup=False, lr=START,
                               lr_scaling="none", budget_unit="iterations", budget=iterations, epoch_iters=0)
    lrs, losses, average, best = [], [], 0.0, math.inf
    with torch.random.fork_rng(devices=[]):
        p = prepare(tcfg, device)
        order = BatchOrder(p.budget, tcfg.seed, tcfg.shuffle, device)
        p.model.train()
        for it in range(iterations):
            interrupts.check()  # Ctrl-C or SIGTERM: stop between two steps (cli.py)
            lr = START * (END / START) ** (it / max(1, iterations - 1))
            for group in p.opt.param_groups:
                group["lr"] = lr
            idx = order.indices(it)
            loss = F.cross_entropy(p.model(p.data.x_train[idx]), p.data.y_train[idx])
            p.opt.zero_grad(set_to_none=True)
            loss.backward()
            p.opt.step()
            value = loss.item()
            if not math.isfinite(value):
                break
            average = SMOOTHING * average + (1 - SMOOTHING) * value
            smoothed = average / (1 - SMOOTHING ** (it + 1))
            lrs.append(lr)
            losses.append(smoothed)
            best = min(best, smoothed)
            if smoothed > STOP_FACTOR * best:
                break
    return lrs, losses


def suggest(lrs: list[float], losses: list[float]) -> dict[str, float]:
    """The range from a tenth of the steepest descent's lr to the lr of the lowest loss. The first tenth of
    the ramp is left out of the slopes: the average is still settling there."""
    lowest = min(range(len(losses)), key=losses.__getitem__)
    first = len(losses) // 10
    slopes = {i: (losses[i + 1] - losses[i]) / (math.log(lrs[i + 1]) - math.log(lrs[i]))
              for i in range(first, lowest)}
    steepest = lrs[min(slopes, key=slopes.__getitem__)] if slopes else lrs[lowest] / 10
    high = lrs[lowest]
    return {"steepest": steepest, "low": min(steepest, high) / 10, "high": high}


def find(cfg: StudyConfig, device: torch.device, iterations: int = 200) -> dict[str, dict[str, Any]]:
    """The range test for each optimizer of the space: its curve and suggested range."""
    out = {}
    for optimizer in optimizers_of(cfg):
        lrs, losses = ramp(cfg, optimizer, device, iterations)
        out[optimizer] = {"lrs": lrs, "loss": losses, **suggest(lrs, losses)}
    return out


def union(found: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The range that holds every optimizer's, as stored with a study (`lr_range`)."""
    return {"low": min(r["low"] for r in found.values()), "high": max(r["high"] for r in found.values()),
            "by_optimizer": {k: {"low": r["low"], "high": r["high"]} for k, r in found.items()}}


def resolve(cfg: StudyConfig, stored: dict[str, Any]) -> StudyConfig:
    """`cfg` with its `range: auto` lr set to the stored range."""
    lr = cfg.params["lr"]
    params = {**cfg.params, "lr": dataclasses.replace(lr, low=stored["low"], high=stored["high"], auto=False)}
    return dataclasses.replace(cfg, params=params, lr_range=stored)


def needs(cfg: StudyConfig) -> bool:
    param: Param | None = cfg.params.get("lr")
    return param is not None and param.auto
