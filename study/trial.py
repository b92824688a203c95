"""One trial: a real PyTorch training loop over a `TrialConfig`.

    result = train(cfg, torch.device("cpu"), on_epoch=print)       # plain PyTorch, no Optuna
    value = run_trial(trial, study_cfg, TrialContext(device, ckpt))  # Optuna objective: report, prune

The data lives on the device as tensors; batches are slices of a per-pass permutation drawn from a
generator seeded by (seed, pass), so a run is reproducible and resumable from any epoch checkpoint
without DataLoader workers. The step loop never copies to the host: the train loss is summed on the
device and read once per epoch, where validation, divergence checks, reporting and checkpoints happen.
"""
from __future__ import annotations

import contextlib
import functools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager

import optuna
import torch
import torch.nn.functional as F

from study import interrupts
from study.budget import Budget, scaled_lr
from study.checkpoints import Checkpoints
from study.config import StudyConfig, TrialConfig
from study.datacache import DataCache, DeviceData
from study.datacache import load as load_device_data
from study.inits import INITS
from study.metrics import evaluate
from study.models import build_model
from study.optimizers import optimizer_spec
from study.paths import is_trial_number, trial_dir
from study.provenance import provenance
from study.schedules import make_schedule


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


def device_data(cfg: TrialConfig, device: torch.device, cache: DataCache | None = None) -> DeviceData:
    """The splits of `cfg` on `device`, from the worker's cache when it has one."""
    return cache.get(cfg, device) if cache is not None else load_device_data(cfg, device)


def autocast_for(device: torch.device, precision: str) -> Callable[[], ContextManager]:
    """Mixed precision applies on CUDA only; elsewhere the trial runs in fp32."""
    if device.type != "cuda" or precision == "fp32":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return functools.partial(torch.autocast, device_type="cuda", dtype=dtype)


def make_model(cfg: TrialConfig, data: DeviceData, device: torch.device) -> torch.nn.Module:
    """The trial's model, initialised from its own seed: built (on the CPU) inside a fork of torch's RNG,
    so that neither the caller's random stream nor another trial's touches it, or is touched."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(cfg.seed)
        model = build_model(cfg.model, data.input_shape, data.n_classes, depth=cfg.depth, width=cfg.width,
                            activation=cfg.activation, kernel_size=cfg.kernel_size, options=cfg.model_options)
        INITS[cfg.init](model)
    return model.to(device)


def plan(cfg: TrialConfig, device: torch.device, cache: DataCache | None = None) -> tuple[DeviceData, Budget]:
    data = device_data(cfg, device, cache)
    return data, Budget.of(len(data.y_train), cfg.batch_size, cfg.budget_unit, cfg.budget, cfg.epoch_iters)


def train(cfg: TrialConfig, device: torch.device, *, on_epoch: Callable[[list[dict]], None] | None = None,
          checkpoints: Checkpoints | None = None, cache: DataCache | None = None) -> TrainResult:
    """Train with `cfg`; call on_epoch(history) after each epoch (it may raise to stop the trial).

    With `checkpoints`, state is saved at every epoch end and, when a checkpoint is already there
    (a retried trial), training resumes from it. The trial's use of torch's CPU random stream (a user
    model's dropout) is seeded by the trial and forked from the caller's, which it leaves as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(cfg.seed)
        return _train(cfg, device, on_epoch, checkpoints, cache)


def _train(cfg: TrialConfig, device: torch.device, on_epoch: Callable[[list[dict]], None] | None,
           checkpoints: Checkpoints | None, cache: DataCache | None) -> TrainResult:
    data, budget = plan(cfg, device, cache)
    n_train = len(data.y_train)
    model = make_model(cfg, data, device)
    lr = scaled_lr(cfg.lr, cfg.batch_size, cfg.lr_scaling, cfg.reference_batch)
    opt = optimizer_spec(cfg.optimizer)(model.parameters(), lr=lr, momentum=cfg.momentum,
                                        weight_decay=cfg.weight_decay)
    sched = make_schedule(opt, cfg.schedule, budget.total_iters, cfg.warmup_iters if cfg.warmup else 0,
                          cfg.gamma, cfg.step_fraction)
    autocast = autocast_for(device, cfg.precision)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and cfg.precision == "fp16")

    history: list[dict] = []
    first_epoch, it, resumed = 0, 0, None
    start_loss: torch.Tensor | None = None
    state = checkpoints.latest() if checkpoints else None
    if checkpoints and state is None:
        checkpoints.clear()  # whatever is there is not this trial's: never resume from it, never mix with it
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        history, it, start_loss = state["history"], state["iteration"], torch.tensor(state["start_loss"], device=device)
        first_epoch = resumed = state["epoch"] + 1

    batch = cfg.batch_size
    generator = torch.Generator(device=device)
    perm = None
    clock = time.perf_counter() - (history[-1]["wall_time"] if history else 0.0)
    model.train()
    for epoch in range(first_epoch, budget.n_epochs):
        end = budget.epoch_end(epoch)
        loss_sum = torch.zeros((), device=device)
        n_steps = end - it
        while it < end:
            interrupts.check()  # Ctrl-C or SIGTERM: stop here, between two steps
            j = it % budget.iters_per_pass
            if j == 0 or perm is None:
                if cfg.shuffle:
                    generator.manual_seed(cfg.seed * 1_000_003 + it // budget.iters_per_pass)
                    perm = torch.randperm(n_train, device=device, generator=generator)
                else:
                    perm = torch.arange(n_train, device=device)
            idx = perm[j * batch:(j + 1) * batch]
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
        record = {"epoch": epoch, "iteration": it, "train_loss": train_loss, **metrics,
                  "lr": sched.get_last_lr()[0], "wall_time": time.perf_counter() - clock}
        history.append(record)
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
    return TrainResult(model, history, budget, resumed)


def _divergence(train_loss: float, val_loss: float, start_loss: float, factor: float) -> str | None:
    if not math.isfinite(train_loss) or not math.isfinite(val_loss):
        return f"non-finite loss (train {train_loss}, validation {val_loss})"
    if train_loss > factor * start_loss:
        return f"train loss {train_loss:.4g} exceeded {factor:g} x its start {start_loss:.4g}"
    return None


@dataclass(frozen=True)
class TrialContext:
    """What the runner passes to every trial: chosen once, at the edge."""

    device: torch.device
    checkpoint_dir: Path  # this study's folder
    study_uid: str  # the study's identity; a checkpoint of another study is never resumed
    keep: int = 2  # epoch checkpoints kept while the trial runs
    cache: DataCache = field(default_factory=DataCache)  # the worker's data on the device; it clears it


def suggest(trial: optuna.Trial, cfg: StudyConfig) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, param in cfg.params.items():
        if param.active(values):
            values[name] = param.suggest(trial)
    return values


def run_trial(trial: optuna.Trial, cfg: StudyConfig, ctx: TrialContext) -> float:
    """The Optuna objective: sample, train, report `cfg.study.metric` every epoch, prune when told."""
    tcfg = cfg.resolve(suggest(trial, cfg))
    first = first_number(trial)
    trial.set_user_attr("first_number", first)
    trial.set_user_attr("config", tcfg.to_dict())
    trial.set_user_attr("provenance", {**provenance(), "device": str(ctx.device)})
    checkpoints = trial_checkpoints(ctx, first, tcfg)
    _, budget = plan(tcfg, ctx.device, ctx.cache)
    trial.set_user_attr("budget", {"total_iters": budget.total_iters, "iters_per_epoch": budget.iters_per_epoch,
                                   "samples_seen": budget.total_iters * tcfg.batch_size})
    metric = cfg.study.metric

    reported: set[int] = set()
    history: list[dict] = []

    def on_epoch(records: list[dict]) -> None:
        # Each epoch writes one intermediate value (live dashboards draw the curve from them); the whole
        # history is written once, when the trial ends, so storage writes grow with its length, not its square.
        history[:] = records
        for record in records:  # a resumed trial also reports the epochs before its checkpoint
            if record["epoch"] not in reported:
                trial.report(record[metric], record["epoch"])
                reported.add(record["epoch"])
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned by {cfg.study.pruner} at epoch {records[-1]['epoch']}")

    try:
        result = train(tcfg, ctx.device, on_epoch=on_epoch, checkpoints=checkpoints, cache=ctx.cache)
    except Diverged as exc:
        history[:] = exc.history
        trial.set_user_attr("diverged", {"reason": exc.reason, "step": exc.step})
        raise optuna.TrialPruned(f"diverged at iteration {exc.step}: {exc.reason}") from None
    finally:  # complete, pruned, diverged, interrupted or failed: what was measured is stored
        if history:
            trial.set_user_attr("history", history)
        if checkpoints.warnings:
            trial.set_user_attr("checkpoint_warnings", checkpoints.warnings[:10])
    if result.resumed_from_epoch is not None:
        trial.set_user_attr("resumed", {"from_trial": first, "from_epoch": result.resumed_from_epoch})
    return result.final[metric]


def first_number(trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
    """The number of this trial's first attempt: a retry of a dead or interrupted worker's trial inherits
    it (and so its checkpoints). Read back from the storage, it is trusted only as a number <= this one."""
    first = trial.user_attrs.get("first_number", trial.number)
    return first if is_trial_number(first) and first <= trial.number else trial.number


def trial_checkpoints(ctx: TrialContext, first: int, cfg: TrialConfig) -> Checkpoints:
    return Checkpoints(trial_dir(ctx.checkpoint_dir, first), keep=ctx.keep,
                       identity={"study": ctx.study_uid, "trial": first, "config": cfg.to_dict()})
