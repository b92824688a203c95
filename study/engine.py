"""Running prepared trials: the sequential engine, one trial at a time, today's training loop.

    >>> from study.config import TrialConfig
    >>> from study.trial import prepare
    >>> p = prepare(TrialConfig(dataset="synthetic", data_options={"n_samples": 200}, budget=2), torch.device("cpu"))
    >>> result = run_sequential(p, on_epoch=lambda history: print("epoch", history[-1]["epoch"]))
    epoch 0
    epoch 1
    >>> sorted(result.final)
    ['epoch', 'iteration', 'lr', 'samples', 'threads', 'train_loss', 'val_accuracy', 'val_f1', 'val_loss',
     'val_precision', 'val_recall', 'wall_time']

An engine takes prepared trials and calls back once per epoch with the trial's history; the callback may
raise to stop the trial (pruning). A batched engine that trains several prepared trials as one fused
model plugs in here, beside `run_sequential`.

The data lives on the device as tensors; batches are slices of a per-pass permutation (batches.py),
so a run is reproducible and resumable from any epoch checkpoint without DataLoader workers. The step
loop never copies to the host: the train loss is summed on the device and read once per epoch, where
validation, divergence checks, reporting and checkpoints happen.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager

import torch
import torch.nn.functional as F

from study import interrupts
from study.batches import BatchOrder
from study.budget import Budget
from study.checkpoints import Checkpoints
from study.config import TrialConfig
from study.datacache import DeviceData
from study.metrics import evaluate


class Diverged(Exception):
    """The loss became NaN/inf or grew far above its start; carries where and why."""

    def __init__(self, reason: str, step: int, history: list[dict]):
        super().__init__(reason)
        self.reason, self.step, self.history = reason, step, history


@dataclass
class TrainResult:
    model: torch.nn.Module
    history: list[dict]  # one record per epoch
    budget: Budget
    resumed_from_epoch: int | None = None  # the checkpoint a retried trial continued from

    @property
    def final(self) -> dict:
        return self.history[-1]


@dataclass
class PreparedTrial:
    """Everything one trial trains with, built and (for a retry) restored, ready for an engine."""

    cfg: TrialConfig
    device: torch.device
    data: DeviceData
    budget: Budget
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: Any  # torch LRScheduler
    scaler: torch.amp.GradScaler
    autocast: Callable[[], ContextManager]
    history: list[dict] = field(default_factory=list)
    iteration: int = 0
    first_epoch: int = 0
    start_loss: float | None = None  # the first step's loss, the divergence check's reference
    resumed_from_epoch: int | None = None
    rng: torch.Tensor | None = None  # a retry's CPU random state at its checkpoint; set when training starts


def run_sequential(p: PreparedTrial, on_epoch: Callable[[list[dict]], None] | None = None,
                   checkpoints: Checkpoints | None = None) -> TrainResult:
    """Train one prepared trial to its budget; call on_epoch(history) after each epoch."""
    cfg, device, data, budget = p.cfg, p.device, p.data, p.budget
    model, opt, sched, scaler, autocast = p.model, p.opt, p.sched, p.scaler, p.autocast
    history, it = p.history, p.iteration
    start_loss = None if p.start_loss is None else torch.tensor(p.start_loss, device=device)
    order = BatchOrder(budget, cfg.seed, cfg.shuffle, device)
    clock = time.perf_counter() - (history[-1]["wall_time"] if history else 0.0)
    if p.rng is not None:  # a retry goes on with its checkpoint's random stream (dropout), in the caller's fork
        torch.set_rng_state(p.rng)
    model.train()
    for epoch in range(p.first_epoch, budget.n_epochs):
        end = budget.epoch_end(epoch)
        loss_sum = torch.zeros((), device=device)
        n_steps = end - it
        while it < end:
            interrupts.check()  # Ctrl-C or SIGTERM: stop here, between two steps
            idx = order.indices(it)
            with autocast():
                loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            loss = loss.detach().float()
            if start_loss is None:
                start_loss = loss
            loss_sum += loss
            it += 1

        metrics = evaluate(model, data.x_val, data.y_val, autocast)
        train_loss = loss_sum.item() / max(1, n_steps)
        history.append(epoch_record(epoch, it, budget, train_loss, metrics, sched.get_last_lr()[0], clock))
        reason = _divergence(train_loss, metrics["val_loss"], float(start_loss), cfg.divergence_factor)
        if reason:
            raise Diverged(reason, it, history)
        if checkpoints:
            checkpoints.save(epoch, {
                "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict(), "rng": torch.get_rng_state(), "epoch": epoch, "iteration": it,
                "history": history, "start_loss": float(start_loss), "config": cfg.to_dict()})
        if on_epoch:
            on_epoch(history)
    return TrainResult(model, history, budget, p.resumed_from_epoch)


def epoch_record(epoch: int, it: int, budget: Budget, train_loss: float, metrics: dict[str, float], lr: float,
                 clock: float) -> dict[str, Any]:
    """One epoch's entry in a trial's history, as either engine stores it."""
    return {"epoch": epoch, "iteration": it, "samples": budget.samples_at(it), "train_loss": train_loss, **metrics,
            "lr": lr, "wall_time": time.perf_counter() - clock,
            "threads": torch.get_num_threads()}  # on a CPU, a chaotic config's result can depend on them


def _divergence(train_loss: float, val_loss: float, start_loss: float, factor: float) -> str | None:
    if not math.isfinite(train_loss) or not math.isfinite(val_loss):
        return f"non-finite loss (train {train_loss}, validation {val_loss})"
    if train_loss > factor * start_loss:
        return f"train loss {train_loss:.4g} exceeded {factor:g} x its start {start_loss:.4g}"
    return None


