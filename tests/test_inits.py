import math

import pytest
import torch
from torch import nn

from study.inits import INITS

FAN_IN, FAN_OUT = 400, 400
CONV_FAN_IN = 16 * 3 * 3  # C_in * k * k

# name -> expected weight std for a layer with the given fan_in and fan_out
EXPECTED_STD = {
    "small_random": lambda fi, fo: 0.01,
    "xavier": lambda fi, fo: 1 / math.sqrt(fi),
    "xavier_normal": lambda fi, fo: math.sqrt(2 / (fi + fo)),
    "xavier_uniform": lambda fi, fo: math.sqrt(2 / (fi + fo)),
    "he": lambda fi, fo: math.sqrt(2 / fi),  # multiply by 2, not divide
    "he_uniform": lambda fi, fo: math.sqrt(2 / fi),
    "orthogonal": lambda fi, fo: 1 / math.sqrt(max(fi, fo)),
}


def test_every_init_has_an_expectation():
    assert set(INITS) == set(EXPECTED_STD) | {"pytorch_default"}


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in EXPECTED_STD])
def test_linear_weight_std(name):
    torch.manual_seed(0)
    layer = nn.Linear(FAN_IN, FAN_OUT)
    INITS[name](layer)
    assert layer.weight.std().item() == pytest.approx(EXPECTED_STD[name](FAN_IN, FAN_OUT), rel=0.03)
    assert torch.all(layer.bias == 0)


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in ("small_random", "xavier", "he")])
@pytest.mark.parametrize("conv", [nn.Conv1d, nn.Conv2d, nn.Conv3d])
def test_conv_fan_in_is_k_k_cin(name, conv):
    """C_in * k per spatial dimension: 16 * 9 in 2-D, as the lecture writes it; in 1-D and 3-D the kernel
    is sized to give the same fan_in, so one expectation serves all three."""
    torch.manual_seed(0)
    kernel = {nn.Conv1d: 9, nn.Conv2d: 3, nn.Conv3d: (1, 3, 3)}[conv]
    layer = conv(16, 256, kernel_size=kernel)
    INITS[name](layer)
    assert layer.weight.std().item() == pytest.approx(EXPECTED_STD[name](CONV_FAN_IN, 256 * 9), rel=0.03)
    assert torch.all(layer.bias == 0)


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in EXPECTED_STD])
def test_a_frozen_layer_keeps_its_weights(name):
    model = nn.Sequential(nn.Linear(8, 8).requires_grad_(False), nn.Linear(8, 8))
    frozen = [t.clone() for t in model[0].parameters()]
    INITS[name](model)
    assert all(torch.equal(a, b) for a, b in zip(frozen, model[0].parameters(), strict=True))
    assert torch.all(model[1].bias == 0)


def test_orthogonal_rows_are_orthonormal():
    layer = nn.Linear(64, 64)
    INITS["orthogonal"](layer)
    assert torch.allclose(layer.weight @ layer.weight.T, torch.eye(64), atol=1e-5)


@pytest.mark.parametrize("name", sorted(INITS))
def test_an_init_gives_the_same_weights_whatever_torch_s_thread_count(name):
    """The runner sets the thread count per trial, so a trial built after another (a search's last) or in a
    fresh process (a retrain) would start 1e-7 apart: enough for a chaotic config to end as a new seed does.
    Orthogonal's QR is what depends on it (1.4e-7 at 64x64 between one thread and two)."""
    threads, weights = torch.get_num_threads(), []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            torch.manual_seed(0)
            model = nn.Sequential(nn.Linear(64, 64), nn.Conv1d(32, 32, 5))
            INITS[name](model)
            weights.append([t.detach().clone() for t in model.parameters()])
            assert torch.get_num_threads() == n  # the init leaves the caller's count as it found it
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(*weights, strict=True))


def test_pytorch_default_leaves_weights_alone():
    torch.manual_seed(0)
    layer = nn.Linear(10, 10)
    before = layer.weight.clone()
    INITS["pytorch_default"](layer)
    assert torch.equal(before, layer.weight)


def _last_activation_std(init: str, activation: type[nn.Module]) -> float:
    torch.manual_seed(0)
    layers = []
    for _ in range(6):
        layers += [nn.Linear(256, 256), activation()]
    net = nn.Sequential(*layers)
    INITS[init](net)
    with torch.no_grad():
        return net(torch.randn(512, 256)).std().item()


def test_small_random_collapses_a_deep_tanh_net_and_xavier_does_not():
    # The lecture's point: with 0.01*N(0,1) activations shrink layer by layer towards zero.
    # Each layer scales the std by 0.01 * sqrt(256) = 0.16: 0.16**6 ~ 2e-5 after six.
    assert _last_activation_std("small_random", nn.Tanh) < 1e-4
    assert _last_activation_std("xavier", nn.Tanh) > 0.1


def test_he_keeps_relu_activations_alive_where_xavier_halves_them():
    he, xavier = _last_activation_std("he", nn.ReLU), _last_activation_std("xavier", nn.ReLU)
    assert he > 0.5
    assert xavier < he / 4  # each ReLU layer halves the variance under Xavier: 2**-6 over six layers
