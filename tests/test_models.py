import pytest
import torch
from torch import nn

from study.models import ACTIVATIONS, MODELS, build_model

SHAPES = {"vector": (64,), "signal": (1, 40), "image": (1, 8, 8)}


@pytest.mark.parametrize("shape", [pytest.param(s, id=k) for k, s in SHAPES.items()])
@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in MODELS])
def test_models_map_a_batch_to_logits(name, shape):
    model = build_model(name, shape, 10, depth=3, width=8, activation="relu")
    assert model(torch.randn(5, *shape)).shape == (5, 10)


def test_cnn_is_2d_for_images_and_1d_for_signals():
    image = build_model("cnn", (1, 8, 8), 10, depth=2, width=8, activation="relu")
    signal = build_model("cnn", (1, 40), 10, depth=2, width=8, activation="relu")
    assert sum(isinstance(m, nn.Conv2d) for m in image.modules()) == 2
    assert sum(isinstance(m, nn.Conv1d) for m in signal.modules()) == 2


def test_mlp_depth_and_width():
    model = build_model("mlp", (64,), 10, depth=4, width=32, activation="tanh")
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 5 and all(lin.out_features == 32 for lin in linears[:-1])
    assert sum(isinstance(m, nn.Tanh) for m in model.modules()) == 4


@pytest.mark.parametrize("activation", [pytest.param(a, id=a) for a in ACTIVATIONS])
def test_every_activation_builds(activation):
    model = build_model("mlp", (4,), 2, depth=1, width=4, activation=activation)
    assert isinstance(model[2], ACTIVATIONS[activation])
