"""Checks that run before a study is created or changed: they load the data, build the model and call
user code, which a pure config load never does.

    >>> import torch
    >>> from study.config import load_config
    >>> cfg = load_config("quick", overrides=["training.budget=1000000000"])
    >>> check(cfg, checkpoint_root=Path("checkpoints"), report_dir=Path("reports"), storage_url="sqlite:///s.db",
    ...       device=torch.device("cpu"))
    Traceback (most recent call last):
    ...
    study.errors.ConfigError: ...quick.yaml (with --set): training.budget: 1000000000 epochs at batch size 64 plans
    1.7e+10 iterations for one trial, more than study.max_iters (1e+09); raise study.max_iters to opt in
    (got 1000000000)

Each problem is a ConfigError naming the file or flag, the key and the value, so that a bad dataset, a
model of the wrong width, a budget of 10^12 iterations or an output folder that cannot be written is
found now, not after an hour of training.
"""
from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from study.budget import Budget
from study.config import StudyConfig
from study.errors import ConfigError
from study.files import check_writable
from study.paths import child

if TYPE_CHECKING:
    import torch


def check(cfg: StudyConfig, *, checkpoint_root: Path, report_dir: Path | None, storage_url: str,
          device: torch.device) -> None:
    check_outputs(cfg, checkpoint_root, report_dir, storage_url)
    check_trials(cfg)
    check_scaling(cfg)
    check_precision(cfg, device)
    check_options(cfg)
    n_train, n_classes, sample = check_data(cfg)
    check_model(cfg, sample, n_classes)
    check_budget(cfg, n_train)


def check_outputs(cfg: StudyConfig, checkpoint_root: Path, report_dir: Path | None, storage_url: str) -> None:
    check_writable(checkpoint_root, "--checkpoint-dir")
    if report_dir is not None:
        check_writable(report_dir, "--report-dir")
        check_inside(report_dir, cfg.study.name, "--report-dir")
    from study.storage import shown, storage_file

    file = storage_file(storage_url)
    if file is not None:
        check_writable(file.parent, "--storage")
        if file.is_file() and not os.access(file, os.W_OK):  # `list` and `report` open it read-only; a run writes
            raise ConfigError("--storage", "storage", shown(storage_url),
                              f"{file} may only be read here (its permissions, or a read-only mount), and a run "
                              "writes to it; `study list` and `study report` read it")


def check_inside(root: Path, name: str, flag: str) -> None:
    try:
        child(root, name)
    except ValueError:
        problem = "the study's folder is a symbolic link out of this folder; refusing to write through it"
        raise ConfigError(flag, flag.lstrip("-"), str(root / name), problem) from None


def check_trials(cfg: StudyConfig) -> None:
    """A space that searches nothing trains one config with one seed: its trials would be one result, each
    trained again (an empty file's 20 trials gave 20 times the same val_loss)."""
    if not cfg.params and cfg.study.n_trials > 1:
        raise _refused(cfg, "study.n_trials", cfg.study.n_trials,
                       "the space searches no params, so every trial would train the same config with the same "
                       "seed to the same result; give 1 (--trials 1), or search something under params")


def check_scaling(cfg: StudyConfig) -> None:
    """Linear lr scaling multiplies the lr by batch_size / reference_batch: where the space draws one batch
    size, the reference, a searched lr_scaling compares arms that train alike."""
    batches, references = set(_extremes(cfg, "batch_size")), set(_extremes(cfg, "reference_batch"))
    if "lr_scaling" in cfg.params and len(batches) == 1 and batches == references:
        raise _refused(cfg, "params.lr_scaling", list(cfg.params["lr_scaling"].choices),
                       f"linear scaling multiplies the lr by batch_size / reference_batch, 1 for every trial here "
                       f"(both {batches.pop()}), so its arms would train alike; search batch_size too: the "
                       "question is how the lr should follow the batch")


def check_precision(cfg: StudyConfig, device: torch.device) -> None:
    """Mixed precision is CUDA's autocast (trial.autocast_for): elsewhere a bf16 or fp16 trial trains in
    fp32, while the config it stores says otherwise, and a searched precision compares fp32 with fp32."""
    mixed = [p for p in _extremes(cfg, "precision") if p != "fp32"]
    if mixed and device.type != "cuda":
        raise _refused(cfg, _key(cfg, "precision"), mixed[0],
                       f"mixed precision applies on CUDA only, and this run trains on {device.type}, where every "
                       "trial would train in fp32; give fp32 (--set training.precision=fp32), or run on a GPU")


def check_options(cfg: StudyConfig) -> None:
    """A searched `model.options.NAME` or `data.options.NAME` must be an argument its callable takes (its
    signature, read with inspect): a user model ignores arguments it does not take, so a misspelt
    option would be searched and change nothing."""
    import inspect

    from study.callables import is_reference, load_callable
    from study.config import is_option, option_of
    from study.data import DATASETS

    for key in filter(is_option, cfg.params):
        knob, name = option_of(key)
        target = cfg.defaults.model if knob == "model_options" else cfg.defaults.dataset
        if knob == "model_options" and not is_reference(target):
            raise _refused(cfg, f"params.{key}", name, f"the built-in model {target!r} takes no options; "
                           "model.options are a package.module:callable model's own arguments")
        try:
            params = inspect.signature(load_callable(target) if is_reference(target) else DATASETS[target]).parameters
        except (ImportError, AttributeError, ValueError, TypeError):
            continue  # an unloadable callable is reported by the data and model checks, with its own message
        if name not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            taken = ", ".join(n for n, p in params.items() if p.kind is p.KEYWORD_ONLY or p.default is not p.empty)
            raise _refused(cfg, f"params.{key}", name,
                           f"{target} takes no argument {name!r}; it takes: {taken or 'none'}")


def check_data(cfg: StudyConfig) -> tuple[int, int, np.ndarray]:
    """Load and split the data as the first trial will: (training samples, classes, two samples)."""
    from study.data import load_splits

    d = cfg.defaults
    try:
        s = load_splits(d.dataset, d.data_options, val_fraction=d.val_fraction, test_fraction=d.test_fraction,
                        split_seed=d.split_seed, preprocess=d.preprocess, order=d.order)
    except Exception as exc:  # user code may raise anything
        key = "data.options" if d.data_options else "data.name"
        raise _refused(cfg, key, d.data_options or d.dataset,
                       f"loading the dataset failed: {type(exc).__name__}: {exc}") from None
    return len(s.y_train), s.n_classes, s.x_train[:2]


def check_model(cfg: StudyConfig, sample: np.ndarray, n_classes: int) -> None:
    """Build the model and run two samples through it: its output must be one finite logit per class, and it
    must have parameters to train."""
    import torch

    from study.models import build_model

    d = cfg.defaults
    try:
        model = build_model(d.model, sample.shape[1:], n_classes, depth=d.depth, width=d.width,
                            activation=d.activation, kernel_size=d.kernel_size, options=d.model_options)
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"returned {type(model).__name__}, not a torch.nn.Module")
        model.eval()
        with torch.no_grad():
            out = model(torch.as_tensor(sample))
    except Exception as exc:
        raise _refused(cfg, "model.name", d.model,
                       f"building the model or its forward pass failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (len(sample), n_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise _refused(cfg, "model.name", d.model,
                       f"the model must map a batch of {len(sample)} to logits of shape ({len(sample)}, "
                       f"{n_classes}) for {n_classes} classes; it returned {shape}")
    # Either would fail or diverge every trial the same way, whatever the sampler proposed.
    if not any(p.requires_grad for p in model.parameters()):
        raise _refused(cfg, "model.name", d.model, "the model has no parameter to train (none, or "
                       "each with requires_grad False): every trial would fail")
    if not torch.isfinite(out).all():
        raise _refused(cfg, "model.name", d.model, f"the model's logits for two training samples are "
                       f"{out[~torch.isfinite(out)][0].item()} before any training: every "
                       "trial would diverge at once")


def _extremes(cfg: StudyConfig, name: str) -> list:
    p = cfg.params.get(name)
    if p is None:
        return [getattr(cfg.defaults, name)]
    return list(p.choices) if p.kind == "categorical" else [p.low, p.high]


def _refused(cfg: StudyConfig, key: str, value: Any, problem: str) -> ConfigError:
    return ConfigError(cfg.source_of(key), key, value, problem)


def _key(cfg: StudyConfig, name: str) -> str:
    return f"params.{name}" if name in cfg.params else f"training.{name}"


def _plans(cfg: StudyConfig, n_train: int) -> list[tuple[int, tuple]]:
    """(total iterations, (unit, amount, batch size)) of each extreme trial the space can plan."""
    extremes = itertools.product(*(_extremes(cfg, k) for k in ("budget_unit", "budget", "batch_size")))
    return [(Budget.of(n_train, batch, unit, amount).total_iters, (unit, amount, batch))
            for unit, amount, batch in extremes]


def check_budget(cfg: StudyConfig, n_train: int) -> None:
    """The longest trial the space can plan must stay within study.max_iters; no batch may be larger than
    the training split, and no warmup as long as a whole trial, or of no iterations at all."""
    plans = _plans(cfg, n_train)
    worst, (unit, amount, batch) = max(plans, key=lambda plan: plan[0])
    if worst > cfg.study.max_iters:
        raise _refused(cfg, "training.budget", amount,
                       f"{amount} {unit} at batch size {batch} plans {worst:.3g} iterations for one trial, more "
                       f"than study.max_iters ({cfg.study.max_iters:.3g}); raise study.max_iters to opt in")
    shortest_epoch = min(_extremes(cfg, "epoch_iters"))
    if shortest_epoch >= worst:  # 0 is a full pass
        raise _refused(cfg, _key(cfg, "epoch_iters"), shortest_epoch,
                       f"an epoch of {shortest_epoch} iterations is as long as the longest trial ({worst} "
                       f"iterations: {amount} {unit} at batch size {batch}), so every trial would be validated "
                       f"once, at its end, and none could be pruned; at most {worst - 1}, or 0 for a full pass")
    # Either was trained as something else than the config that the trial stores says.
    largest = max(_extremes(cfg, "batch_size"))
    if largest > n_train:  # each step took the whole split (or wrapped it), and lr scaling scaled for the rest
        raise _refused(cfg, _key(cfg, "batch_size"), largest,
                       f"a batch larger than the training split's {n_train} samples; {n_train} is the whole split")
    warmup = _extremes(cfg, "warmup")
    if True in warmup and min(_extremes(cfg, "warmup_iters")) == 0:  # schedules.make_schedule: no warmup at all
        raise _refused(cfg, _key(cfg, "warmup_iters"), 0,
                       "a warmup of 0 iterations is none, so a trial with warmup: true would train as one "
                       "without it; give the warmup's length in iterations (training.warmup_iters, or its "
                       "search's low) above 0")
    longest = max(_extremes(cfg, "warmup_iters"))
    shortest, (unit, amount, batch) = min(plans, key=lambda plan: plan[0])
    if True in warmup and longest >= shortest:  # the schedule cut it to the trial's length: all warmup
        raise _refused(cfg, _key(cfg, "warmup_iters"), longest,
                       f"a warmup as long as a whole trial of {shortest} iterations ({amount} {unit} at batch "
                       f"size {batch}): the trial would be all warmup; at most {shortest - 1}")
