"""Models, by the name a search space uses, and the activations they take.

    >>> import torch
    >>> model = build_model("cnn", input_shape=(1, 8, 8), n_classes=10, depth=2, width=32, activation="relu")
    >>> model(torch.zeros(5, 1, 8, 8)).shape
    torch.Size([5, 10])

Input shapes are per sample: (F,) vectors, (C, L) signals, (C, H, W) images. The MLP flattens any of
them; the CNN is 1-D for signals and vectors, 2-D for images. A user model is `package.module:callable`
called as `fn(input_shape, n_classes, **options)`, plus any of depth, width, activation, kernel_size
that its signature accepts; it returns an nn.Module mapping a batch to logits.
"""
from __future__ import annotations

import math
from typing import Any, Callable

from torch import nn

from study.callables import accepts, call_with_accepted, is_reference, load_callable

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
}


def mlp(input_shape: tuple[int, ...], n_classes: int, *, depth: int, width: int, activation: str) -> nn.Module:
    """`depth` hidden layers of `width` units, each Linear -> activation."""
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = math.prod(input_shape)
    for _ in range(depth):
        layers += [nn.Linear(fan_in, width), ACTIVATIONS[activation]()]
        fan_in = width
    layers.append(nn.Linear(fan_in, n_classes))
    return nn.Sequential(*layers)


def cnn(input_shape: tuple[int, ...], n_classes: int, *, depth: int, width: int, activation: str,
        kernel_size: int = 3) -> nn.Module:
    """`depth` conv -> activation blocks of `width` channels, halving the resolution after each block
    while it stays >= 4, then a linear classifier."""
    layers: list[nn.Module] = []
    if len(input_shape) == 1:  # a feature vector is read as a one-channel signal
        input_shape = (1, *input_shape)
        layers.append(nn.Unflatten(1, input_shape))
    two_d = len(input_shape) == 3
    conv, pool = (nn.Conv2d, nn.MaxPool2d) if two_d else (nn.Conv1d, nn.MaxPool1d)
    channels, size = input_shape[0], list(input_shape[1:])
    for _ in range(depth):
        layers += [conv(channels, width, kernel_size, padding=kernel_size // 2), ACTIVATIONS[activation]()]
        channels = width
        if min(size) >= 4:
            layers.append(pool(2))
            size = [s // 2 for s in size]
    layers += [nn.Flatten(), nn.Linear(channels * math.prod(size), n_classes)]
    return nn.Sequential(*layers)


MODELS: dict[str, Callable[..., nn.Module]] = {"mlp": mlp, "cnn": cnn}
KNOBS = ("depth", "width", "activation", "kernel_size")  # what a trial's config can give a model


def _model_fn(name: str) -> Callable[..., nn.Module]:
    return load_callable(name) if is_reference(name) else MODELS[name]


def model_uses(name: str) -> tuple[str, ...]:
    """The knobs the model `name` reads, those its signature takes: the MLP has no kernel."""
    fn = _model_fn(name)
    return tuple(k for k in KNOBS if accepts(fn, k))


def build_model(name: str, input_shape: tuple[int, ...], n_classes: int, *, depth: int, width: int,
                activation: str, kernel_size: int = 3, options: dict[str, Any] | None = None) -> nn.Module:
    knobs = dict(depth=depth, width=width, activation=activation, kernel_size=kernel_size)
    options = options if is_reference(name) else None  # a built-in model takes none (preflight refuses them)
    return call_with_accepted(_model_fn(name), tuple(input_shape), n_classes, **(options or {}), **knobs)
