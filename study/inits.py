"""Weight initialisation schemes, by the name a search space uses.

    >>> import torch
    >>> layer = torch.nn.Linear(400, 10)
    >>> INITS["he"](layer)   # re-initialises every Linear/Conv weight in place, biases to zero
    >>> round(float(layer.weight.detach().std()), 2), float(layer.bias.detach().abs().max())   # sqrt(2 / 400)
    (0.07, 0.0)

fan_in is what torch.nn.init computes: in_features for Linear, C_in * k (1-D), C_in * k * k (2-D) or
C_in * k * k * k (3-D) for convolutions. The lecture notes write He as randn / sqrt(2 / fan_in); the
correct std is sqrt(2 / fan_in). A frozen layer (its weight requires no grad: a user's model may hold a
pretrained one) keeps its weights: an init is for what trains.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from study import threads

LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)  # what a scheme re-initialises; a user's model may hold any


def _per_layer(init_weight: Callable[[nn.Parameter], object]) -> Callable[[nn.Module], None]:
    def init(model: nn.Module) -> None:
        for layer in model.modules():
            if isinstance(layer, LAYERS) and layer.weight.requires_grad:
                init_weight(layer.weight)
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)

    return init


def _one_thread(init_weight: Callable[[nn.Parameter], object]) -> Callable[[nn.Parameter], object]:
    """init_weight on one intra-op thread. QR's blocking follows torch's thread count, which the runner sets
    per trial and population: on one thread an orthogonal init gives the same weights in every process.
    Otherwise they differ by 1e-7, which a chaotic config (lecture's SGD at lr 0.46) carries as far as a
    new seed does."""
    def init(weight: nn.Parameter) -> object:
        with threads.held(1):
            return init_weight(weight)

    return init


def _pytorch_default(model: nn.Module) -> None:
    """Leave the layers' own reset_parameters() result in place."""


INITS: dict[str, Callable[[nn.Module], None]] = {
    # 0.01 * N(0, 1): fine for shallow nets, activations shrink towards 0 layer by layer in deep ones.
    "small_random": _per_layer(lambda w: nn.init.normal_(w, 0.0, 0.01)),
    # std = 1 / sqrt(fan_in) (the lecture's Xavier): gain 1 with fan_in mode.
    "xavier": _per_layer(lambda w: nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="linear")),
    # Glorot's forms, std = sqrt(2 / (fan_in + fan_out)).
    "xavier_normal": _per_layer(nn.init.xavier_normal_),
    "xavier_uniform": _per_layer(nn.init.xavier_uniform_),
    # std = sqrt(2 / fan_in): keeps ReLU activations' variance constant with depth.
    "he": _per_layer(lambda w: nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu")),
    "he_uniform": _per_layer(lambda w: nn.init.kaiming_uniform_(w, mode="fan_in", nonlinearity="relu")),
    "orthogonal": _per_layer(_one_thread(nn.init.orthogonal_)),
    "pytorch_default": _pytorch_default,
}
