"""Which settings a trial's training reads: kernel_size only where its model has kernels, momentum where
its optimizer takes it, gamma where its schedule does, warmup_iters with a warmup, reference_batch with
linear lr scaling.

    >>> sorted(unused({"model": "mlp", "optimizer": "adam", "schedule": "cosine", "warmup": False,
    ...                "lr_scaling": "none"}))
    ['gamma', 'kernel_size', 'momentum', 'reference_batch', 'step_fraction', 'warmup_iters']
    >>> unused({"model": "cnn", "optimizer": "sgd_momentum", "schedule": "step", "warmup": True,
    ...         "lr_scaling": "linear"})
    set()

The validator refuses a searched setting that the trials it applies to do not read (momentum for Adam
spends trials on a value that changes nothing), and the report leaves such a value out of a trial's row,
where `momentum 0.9` beside Adam read as if Adam had used it.
"""
from __future__ import annotations

from typing import Callable, Mapping

from study.callables import is_reference
from study.models import KNOBS as MODEL_KNOBS, model_uses
from study.optimizers import optimizer_spec
from study.schedules import schedule_spec

# setting -> (the setting that decides whether it is read, and which settings each of its values reads)
CONSUMED: dict[str, tuple[str, Callable[[object], tuple[str, ...]]]] = {
    **{knob: ("model", model_uses) for knob in MODEL_KNOBS},
    "momentum": ("optimizer", lambda v: optimizer_spec(v).uses),
    "weight_decay": ("optimizer", lambda v: optimizer_spec(v).uses),
    "gamma": ("schedule", lambda v: schedule_spec(v).uses),
    "step_fraction": ("schedule", lambda v: schedule_spec(v).uses),
    "warmup_iters": ("warmup", lambda v: ("warmup_iters",) if v else ()),
    "reference_batch": ("lr_scaling", lambda v: ("reference_batch",) if v == "linear" else ()),
}


def unused(config: Mapping) -> set[str]:
    """The settings of `config` (a trial's resolved config) that its training did not read. A user's
    `package.module:callable`, or a config without the deciding setting, reads everything: nothing of
    theirs is imported to tell."""
    out = set()
    for name, (owner, uses) in CONSUMED.items():
        value = config.get(owner)
        if value is None or (isinstance(value, str) and is_reference(value)):
            continue
        if name not in uses(value):
            out.add(name)
    return out
