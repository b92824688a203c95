"""One trial: building it from a `TrialConfig`, training it (with the engine in engine.py), and the
Optuna objective around that.

    >>> cfg = TrialConfig(dataset="synthetic", data_options={"n_samples": 200}, budget=2)
    >>> p = prepare(cfg, torch.device("cpu"))         # data, model, optimizer, schedule
    >>> result = train(cfg, torch.device("cpu"))      # prepare + the sequential engine
    >>> [record["epoch"] for record in result.history]
    [0, 1]
    >>> train(cfg, torch.device("cpu")).final["val_loss"] == result.final["val_loss"]   # its own randomness
    True

`run_trial(trial, study_cfg, ctx)` is the Optuna objective around that: it reports and prunes.

A trial owns its randomness: its model is initialised and trained inside a fork of torch's CPU stream
seeded by the trial, and its batch order comes from a generator of its own (engine.py).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator

import optuna
import torch

from study.budget import Budget, scaled_lr
from study.checkpoints import Checkpoints
from study.config import StudyConfig, TrialConfig
from study.datacache import DataCache, DeviceData
from study.engine import Diverged, PreparedTrial, TrainResult, run_sequential
from study.datacache import load as load_device_data
from study.inits import INITS
from study.models import build_model
from study.optimizers import optimizer_spec
from study.paths import trial_dir
from study.provenance import provenance
from study import records
from study.records import first_number
from study.worker import report_epochs
from study.schedules import make_schedule
from study.threads import choose as choose_threads


def device_data(cfg: TrialConfig, device: torch.device, cache: DataCache | None = None) -> DeviceData:
    """The splits of `cfg` on `device`, from the worker's cache when it has one."""
    return cache.get(cfg, device) if cache is not None else load_device_data(cfg, device)


def autocast_for(device: torch.device, precision: str) -> Callable[[], ContextManager]:
    """Mixed precision applies on CUDA only; elsewhere the trial runs in fp32."""
    if device.type != "cuda" or precision == "fp32":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return functools.partial(torch.autocast, device_type="cuda", dtype=dtype)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """torch's CPU random stream seeded by a trial, inside a fork of the caller's: neither the caller's
    stream nor another trial's touches the trial's, or is touched by it."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


def make_model(cfg: TrialConfig, data: DeviceData, device: torch.device) -> torch.nn.Module:
    """The trial's model, initialised from its own seed (built on the CPU)."""
    with seeded(cfg.seed):
        model = build_model(cfg.model, data.input_shape, data.n_classes, depth=cfg.depth, width=cfg.width,
                            activation=cfg.activation, kernel_size=cfg.kernel_size, options=cfg.model_options)
        INITS[cfg.init](model)
    return model.to(device)


def plan(cfg: TrialConfig, device: torch.device, cache: DataCache | None = None) -> tuple[DeviceData, Budget]:
    data = device_data(cfg, device, cache)
    return data, Budget.of(len(data.y_train), cfg.batch_size, cfg.budget_unit, cfg.budget, cfg.epoch_iters)


def train(cfg: TrialConfig, device: torch.device, *, on_epoch: Callable[[list[dict]], None] | None = None,
          checkpoints: Checkpoints | None = None, cache: DataCache | None = None,
          threads: tuple[int | None, bool] = (None, False)) -> TrainResult:
    """Train with `cfg`; call on_epoch(history) after each epoch (it may raise to stop the trial).

    `threads` is (the most intra-op threads allowed, whether --threads fixed them): a small trial runs on
    one (threads.py). With `checkpoints`, state is saved at every epoch end and, when a checkpoint is already there
    (a retried trial), training resumes from it. The trial's use of torch's CPU random stream (a user
    model's dropout) is seeded by the trial and forked from the caller's, which it leaves as it was."""
    with seeded(cfg.seed):
        p = prepare(cfg, device, checkpoints, cache)
        choose_threads(p, *threads)  # (allowed, fixed by --threads)
        return run_sequential(p, on_epoch, checkpoints)


def prepare(cfg: TrialConfig, device: torch.device, checkpoints: Checkpoints | None = None,
            cache: DataCache | None = None) -> PreparedTrial:
    """Build a trial to run: its data on the device, model, optimizer, schedule and budget, restored from
    its checkpoint when it has a matching one (a retried trial)."""
    data, budget = plan(cfg, device, cache)
    model = make_model(cfg, data, device)
    lr = scaled_lr(cfg.lr, cfg.batch_size, cfg.lr_scaling, cfg.reference_batch)
    opt = optimizer_spec(cfg.optimizer)(model.parameters(), lr=lr, momentum=cfg.momentum,
                                        weight_decay=cfg.weight_decay)
    sched = make_schedule(opt, cfg.schedule, budget.total_iters, cfg.warmup_iters if cfg.warmup else 0,
                          cfg.gamma, cfg.step_fraction)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and cfg.precision == "fp16")
    p = PreparedTrial(cfg, device, data, budget, model, opt, sched, scaler, autocast_for(device, cfg.precision))
    state = checkpoints.latest() if checkpoints else None
    if checkpoints and state is None:
        checkpoints.clear()  # whatever is there is not this trial's: never resume from it, never mix with it
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        p.rng = state["rng"]  # not set here: a trial may be prepared long before it trains (the pool)
        p.history, p.iteration, p.start_loss = state["history"], state["iteration"], state["start_loss"]
        p.first_epoch = p.resumed_from_epoch = state["epoch"] + 1
    return p


@dataclass(frozen=True)
class TrialContext:
    """What the runner passes to every trial: chosen once, at the edge."""

    device: torch.device
    checkpoint_dir: Path  # this study's folder
    study_uid: str  # the study's identity; a checkpoint of another study is never resumed
    keep: int = 2  # epoch checkpoints kept while the trial runs
    cache: DataCache = field(default_factory=DataCache)  # the worker's data on the device; it clears it
    threads: int | None = None  # intra-op threads a trial may use (None: as they are)
    fixed_threads: bool = False  # --threads: use exactly `threads`, whatever the trial's size
    jobs: int = 1  # the workers of this machine (--jobs), which share its cores and memory


def suggest(trial: optuna.Trial, cfg: StudyConfig) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, param in cfg.params.items():
        if param.active(values):
            values[name] = param.suggest(trial)
    return values


@dataclass
class Attempt:
    """One attempt at a trial, whichever engine trains it: what is stored before training (config,
    provenance, budget), the per-epoch report and prune, and what is stored at its end."""

    trial: optuna.Trial
    cfg: TrialConfig
    metric: str
    first: int
    checkpoints: Checkpoints
    history: list[dict] = field(default_factory=list)
    reported: set[int] = field(default_factory=set)
    prune: bool = True  # confirmation runs are never pruned

    @classmethod
    def start(cls, trial: optuna.Trial, study_cfg: StudyConfig, ctx: TrialContext) -> "Attempt":
        tcfg = study_cfg.resolve(suggest(trial, study_cfg))
        confirm = trial.user_attrs.get("confirm")  # a user attr: not the whole record, a storage read each
        if confirm:  # a confirmation run: its candidate's config with a fresh seed (and split, if asked)
            tcfg = dataclasses.replace(tcfg, **{k: confirm[k] for k in ("seed", "split_seed") if k in confirm})
        first = first_number(trial)
        records.write(trial, first_number=first, config=tcfg.to_dict(),
                      provenance={**provenance(), "device": str(ctx.device)})
        checkpoints = trial_checkpoints(ctx, trial, tcfg.to_dict())
        data, budget = plan(tcfg, ctx.device, ctx.cache)
        records.write(trial, budget={"total_iters": budget.total_iters, "iters_per_epoch": budget.iters_per_epoch,
                                     "samples_seen": budget.samples, "n_classes": data.n_classes})
        return cls(trial, tcfg, study_cfg.study.metric, first, checkpoints, prune=not confirm)

    def on_epoch(self, epochs: list[dict]) -> None:
        # Each epoch writes one intermediate value (live dashboards draw the curve from them); the whole
        # history is written once, when the trial ends, so storage writes grow with its length, not its square.
        self.history[:] = epochs
        report_epochs(self.trial, epochs, self.metric, self.reported, self.prune)

    def finish(self, outcome: TrainResult | BaseException) -> float:
        """Store what was measured, however it ended; return the value, or raise what ended it
        (TrialPruned for a diverged trial)."""
        diverged = isinstance(outcome, Diverged)
        if diverged:
            self.history[:] = outcome.history
            records.write(self.trial, diverged={"reason": outcome.reason, "step": outcome.step})
        if self.history:
            records.write(self.trial, history=self.history)
        if self.checkpoints.warnings:
            records.write(self.trial, checkpoint_warnings=self.checkpoints.warnings[:10])
        if diverged:
            raise optuna.TrialPruned(f"diverged at iteration {outcome.step}: {outcome.reason}") from None
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome.resumed_from_epoch is not None:
            records.write(self.trial, resumed={"from_trial": self.first, "from_epoch": outcome.resumed_from_epoch})
        return outcome.final[self.metric]


def run_trial(trial: optuna.Trial, cfg: StudyConfig, ctx: TrialContext) -> float:
    """The Optuna objective: sample, train, report `cfg.study.metric` every epoch, prune when told."""
    attempt = Attempt.start(trial, cfg, ctx)
    try:
        result = train(attempt.cfg, ctx.device, on_epoch=attempt.on_epoch, checkpoints=attempt.checkpoints,
                       cache=ctx.cache, threads=(ctx.threads, ctx.fixed_threads))
    except BaseException as exc:  # complete, pruned, diverged, interrupted or failed: what was measured is stored
        return attempt.finish(exc)
    return attempt.finish(result)


def trial_checkpoints(ctx: TrialContext, trial: optuna.Trial | optuna.trial.FrozenTrial,
                      config: dict[str, Any] | None) -> Checkpoints:
    """The epoch checkpoints of `trial`'s first attempt, which resume only this study, trial and config."""
    first = first_number(trial)
    return Checkpoints(trial_dir(ctx.checkpoint_dir, first), keep=ctx.keep,
                       identity={"study": ctx.study_uid, "trial": first, "config": config})

