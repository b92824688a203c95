"""Diagnostics that build the study's own network, per (init, activation) the study tried: the std of
every activation at initialisation, and every layer's gradient norm over the first iterations of
training (where deep layers stop learning). Unlike tables.py, this runs models; like it, it returns a
DataFrame.

    >>> import optuna
    >>> from optuna.trial import TrialState, create_trial
    >>> from study import records
    >>> from study.config import TrialConfig
    >>> from study.report.tables import trials_frame
    >>> cfg = TrialConfig(dataset="synthetic", depth=3, init="small_random", activation="tanh")
    >>> study = optuna.create_study()
    >>> study.add_trial(create_trial(state=TrialState.COMPLETE, value=1.4,
    ...                              user_attrs=records.attrs(config=cfg.to_dict())))
    >>> activation_data(trials_frame(study)).round(3).values.tolist()   # the lecture's collapse, layer by layer
    [['small_random', 'tanh', 1, 0.04], ['small_random', 'tanh', 2, 0.003], ['small_random', 'tanh', 3, 0.0]]
    >>> gradient_data(trials_frame(study), iterations=5)["layer"].tolist()   # 3 hidden layers and the output
    [1, 2, 3, 4]
"""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from study.report.tables import CONFIG_COLUMNS
from study.records import FINISHED


def activation_data(trials: pd.DataFrame, n_samples: int = 256) -> pd.DataFrame:
    """Std of every activation layer's output at initialisation, on training samples, for each (init,
    activation) the study tried: how the signal shrinks or holds layer by layer under each scheme."""
    import torch

    from study.config import TrialConfig
    from study.trial import device_data, make_model

    rows = []
    done = trials[trials["status"].isin(FINISHED)]
    for (init, activation), group in done.groupby(["init", "activation"]):
        cfg = TrialConfig(**_config_values(group.iloc[0]))
        data = device_data(cfg, torch.device("cpu"))
        stds = _activation_stds(make_model(cfg, data, torch.device("cpu")), data.x_train[:n_samples])
        rows += [{"init": init, "activation": activation, "layer": i + 1, "std": s} for i, s in enumerate(stds)]
    return pd.DataFrame(rows, columns=["init", "activation", "layer", "std"])


def gradient_data(trials: pd.DataFrame, iterations: int = 20) -> pd.DataFrame:
    """The mean gradient norm of every weighted layer (input to output) over the first `iterations` steps
    of training, for each (init, activation) the study tried, with the config of its best trial: a
    collapsed signal leaves the first layers with almost no gradient."""
    import torch
    import torch.nn.functional as F

    from study.batches import BatchOrder
    from study.config import TrialConfig
    from study.inits import LAYERS
    from study.trial import prepare

    rows = []
    done = trials[trials["status"].isin(FINISHED)].sort_values("value", na_position="last", kind="stable")
    for (init, activation), group in done.groupby(["init", "activation"], sort=True):
        cfg = TrialConfig(**_config_values(group.iloc[0]))
        with torch.random.fork_rng(devices=[]):
            p = prepare(cfg, torch.device("cpu"))
            layers = [m for m in p.model.modules() if isinstance(m, LAYERS) and m.weight.requires_grad]
            order = BatchOrder(p.budget, cfg.seed, cfg.shuffle, torch.device("cpu"))
            steps = min(iterations, p.budget.total_iters)
            sums = torch.zeros(len(layers))
            for it in range(steps):
                idx = order.indices(it)
                loss = F.cross_entropy(p.model(p.data.x_train[idx]), p.data.y_train[idx])
                p.opt.zero_grad(set_to_none=True)
                loss.backward()
                sums += torch.stack([layer.weight.grad.norm() for layer in layers])
                p.opt.step()
                p.sched.step()
        rows += [{"init": init, "activation": activation, "layer": i + 1, "grad_norm": float(v) / steps}
                 for i, v in enumerate(sums)]
    return pd.DataFrame(rows, columns=["init", "activation", "layer", "grad_norm"])


def _config_values(row: pd.Series) -> dict[str, Any]:
    """A trial's config from its row of the trials frame, with the types the config declares: a column
    that has a gap (a trial without a stored config) holds its integers as floats."""
    from study.config import KNOBS

    cast = {"int": int, "float": float, "bool": bool}
    values = {}
    for k in CONFIG_COLUMNS:
        v = row[k]
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        kind = KNOBS[k].type if isinstance(KNOBS[k].type, str) else KNOBS[k].type.__name__
        values[k] = cast[kind](v) if kind in cast else v
    return values


def _activation_stds(model: Any, x: Any) -> list[float]:
    """The std of each activation module's output, in forward order, for one batch."""
    import torch

    stds: list[float] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: stds.append(float(out.std())))
             for m in model.modules() if type(m).__name__ in _ACTIVATION_NAMES]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return stds


def _activation_names() -> set[str]:
    from study.models import ACTIVATIONS

    return {cls.__name__ for cls in ACTIVATIONS.values()}


_ACTIVATION_NAMES = _activation_names()
