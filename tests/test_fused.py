import math
import re
import warnings

import pytest
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from study.fused import PER_SAMPLE, forward_of
from study.streams import RANDOM, Streams
from study.models import ACTIVATIONS, MODELS

K, B = 3, 5


def _vmapped(template: nn.Module):
    return vmap(lambda p, b, x: functional_call(template, (p, b), (x,)), randomness="error")


def _both(make, shape: tuple[int, ...], mode: str = "train"):
    """(fused, vmap) logits, gradients and buffers (running statistics) after one forward of K different
    members on K different batches."""
    torch.manual_seed(0)
    models = [make() for _ in range(K)]
    for model in models:
        model.train(mode == "train")
        for buf in model.buffers():  # running statistics of their own, as after training
            if buf.is_floating_point():
                buf.copy_(torch.rand_like(buf) + 0.5)
    params, buffers = stack_module_state(models)
    x = torch.randn(K, B, *shape)
    out = []
    for forward in (forward_of(models[0]), _vmapped(models[0])):
        leaves = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
        state = {k: v.clone() for k, v in buffers.items()}
        logits = forward(leaves, state, x)
        logits.square().sum().backward()
        out.append((logits.detach(), {k: v.grad for k, v in leaves.items()}, state))
    return out


def _assert_same(fused, vmapped):
    (a, grads_a, bufs_a), (b, grads_b, bufs_b) = fused, vmapped
    assert a.shape == b.shape
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert grads_a.keys() == grads_b.keys() and bufs_a.keys() == bufs_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-5, atol=1e-5, msg=name)
    for name in bufs_a:
        torch.testing.assert_close(bufs_a[name], bufs_b[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("shape", [(12,), (2, 16), (1, 8, 8)], ids=["vector", "signal", "image"])
def test_each_shipped_model_gives_vmaps_logits_and_gradients(name, activation, shape):
    def make():
        return MODELS[name](shape, 4, depth=2, width=6, activation=activation)

    assert forward_of(make()) is not None
    _assert_same(*_both(make, shape))


CUDA = pytest.param("cuda", marks=[pytest.mark.cuda,
                                   pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")])


def _alone(models: list[nn.Module], x: torch.Tensor, bf16: bool):
    """Each member's logits and gradients from its own model, as the sequential engine computes them."""
    out, grads = [], []
    for model, xi in zip(models, x, strict=True):
        model.zero_grad()
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(xi).float()
        logits.square().sum().backward()
        out.append(logits.detach())
        grads.append({k: v.grad.clone() for k, v in model.named_parameters()})
    return torch.stack(out), {k: torch.stack([g[k] for g in grads]) for k in grads[0]}


def _gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def _bf16(models: list[nn.Module], device: str) -> list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(what, fused, each member alone, alone in fp32) for the logits and every gradient, the fused forward
    and the members alone under bf16 autocast on `device`."""
    shape = (1, 8, 8)
    x = torch.randn(K, B, *shape, device=device)
    params, buffers = stack_module_state(models)
    leaves = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    with torch.autocast(device, dtype=torch.bfloat16):
        logits = forward_of(models[0])(leaves, buffers, x).float()
    logits.square().sum().backward()
    alone, grads = _alone(models, x, bf16=True)
    exact, exact_grads = _alone(models, x, bf16=False)
    return [("logits", logits, alone, exact)] + [(k, leaves[k].grad, grads[k], exact_grads[k]) for k in grads]


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("name", list(MODELS))
def test_each_shipped_model_under_bf16_autocast_computes_what_each_member_alone_does(name, device):
    torch.manual_seed(0)
    models = [MODELS[name]((1, 8, 8), 4, depth=2, width=16, activation="relu").to(device) for _ in range(K)]
    # On the CPU the two are the same bits. On a GPU they may add in other orders, and a sum rounded to
    # bf16 may then round the other way: far less apart than bf16 is from fp32 (a first conv's gradient:
    # 5% in this CNN, its sums cancelling).
    for key, fused_, own, fp32 in _bf16(models, device):
        assert _gap(fused_, own) <= max(1e-3, _gap(own, fp32) / 2), key
        assert _gap(fused_, own) == 0 or device == "cuda", key


NORMED = {  # on 1 x 8 x 8 images
    "batchnorm": lambda: nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                                       nn.Linear(4 * 36, 4)),
    "layernorm": lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 4)),
    "groupnorm": lambda: nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.ReLU(), nn.Flatten(),
                                       nn.Linear(4 * 36, 4)),
}


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("name", list(NORMED))
def test_each_norm_under_bf16_autocast_computes_what_each_member_alone_does(name, device):
    """The norms' members as channel groups (BatchNorm) or their affine part apart (LayerNorm, GroupNorm)
    need not give the same bits as alone: under bf16 the affine part apart is rounded once more. They stay
    within what bf16 itself moves them from fp32 (measured on the CPU: a conv bias's gradient through a
    GroupNorm, a sum that nearly cancels, 0.5% from alone where bf16 is 0.8% from fp32; the rest closer)."""
    torch.manual_seed(0)
    models = [NORMED[name]().to(device) for _ in range(K)]
    for key, fused_, own, fp32 in _bf16(models, device):
        assert _gap(fused_, own) <= max(1e-3, _gap(own, fp32)), key


def _per_sample(cls: type[nn.Module]) -> tuple[nn.Module, tuple[int, ...]]:
    """An instance of a PER_SAMPLE layer and an input shape (one sample) it takes."""
    match = re.search(r"(\d)d$", cls.__name__)
    dims = int(match.group(1)) if match else 1
    if "Pool" in cls.__name__:  # adaptive ones too: an output size of 2
        return cls(2), (3,) + (4,) * dims
    return cls(), (7,)


@pytest.mark.parametrize("cls", PER_SAMPLE, ids=lambda c: c.__name__)
def test_every_per_sample_layer_gives_vmaps_result(cls):
    layer, shape = _per_sample(cls)
    n = layer(torch.zeros(1, *shape)).numel()

    def make():
        return nn.Sequential(layer, nn.Flatten(), nn.Linear(n, 4))

    _assert_same(*_both(make, shape))


@pytest.mark.parametrize("make, shape", [
    pytest.param(lambda: nn.Sequential(nn.Linear(6, 5, bias=False), nn.Tanh(), nn.Linear(5, 3, bias=False)), (6,),
                 id="linear-without-bias"),
    pytest.param(lambda: nn.Sequential(nn.Linear(6, 5), nn.Sequential(nn.ReLU(), nn.Linear(5, 3))), (6,),
                 id="nested-sequential"),
    pytest.param(lambda: nn.Sequential(nn.Linear(6, 5), nn.Linear(5, 3)), (4, 6), id="linear-on-a-sequence"),
    pytest.param(lambda: nn.Sequential(nn.Conv1d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2), nn.Flatten(),
                                       nn.Linear(6 * 5, 3)), (4, 11), id="conv1d-groups-stride-dilation"),
    pytest.param(lambda: nn.Sequential(nn.Conv2d(2, 4, 3, padding="same", bias=False), nn.MaxPool2d(2),
                                       nn.Flatten(), nn.Linear(4 * 3 * 3, 3)), (2, 6, 6), id="conv2d-same-no-bias"),
    pytest.param(lambda: nn.Sequential(nn.Conv3d(1, 2, 2), nn.Flatten(), nn.Linear(2 * 27, 3)), (1, 4, 4, 4),
                 id="conv3d"),
    pytest.param(lambda: nn.Linear(6, 3), (6,), id="a bare layer"),
    pytest.param(lambda: _tied(nn.Linear(6, 6)), (6,), id="one layer used twice"),
    pytest.param(lambda: nn.Sequential(nn.Unflatten(1, (2, 8)), nn.Conv1d(2, 3, 3), nn.Flatten(1, -1),
                                       nn.Linear(18, 3)), (16,), id="unflatten"),
    pytest.param(lambda: nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3)), (6,),
                 id="batchnorm1d"),
    pytest.param(lambda: nn.Sequential(nn.Conv1d(2, 4, 3), nn.BatchNorm1d(4, momentum=0.3), nn.Flatten(),
                                       nn.Linear(4 * 6, 3)), (2, 8), id="batchnorm1d-on-a-signal"),
    pytest.param(lambda: nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4, affine=False), nn.Flatten(),
                                       nn.Linear(4 * 16, 3)), (2, 6, 6), id="batchnorm2d-not-affine"),
    pytest.param(lambda: nn.Sequential(nn.Conv3d(1, 2, 2), nn.BatchNorm3d(2, track_running_stats=False),
                                       nn.Flatten(), nn.Linear(2 * 27, 3)), (1, 4, 4, 4), id="batchnorm3d-untracked"),
    pytest.param(lambda: nn.Sequential(nn.Linear(6, 5), nn.LayerNorm(5), nn.ReLU(), nn.Linear(5, 3)), (6,),
                 id="layernorm"),
    pytest.param(lambda: nn.Sequential(nn.Conv1d(2, 4, 3), nn.LayerNorm((4, 6), bias=False), nn.Flatten(),
                                       nn.Linear(4 * 6, 3)), (2, 8), id="layernorm-of-two-dims-without-bias"),
    pytest.param(lambda: nn.Sequential(nn.Linear(6, 5), nn.LayerNorm(5, elementwise_affine=False), nn.Linear(5, 3)),
                 (4, 6), id="layernorm-not-affine-on-a-sequence"),
    pytest.param(lambda: nn.Sequential(nn.Conv2d(2, 6, 3), nn.GroupNorm(3, 6), nn.Flatten(), nn.Linear(6 * 16, 3)),
                 (2, 6, 6), id="groupnorm"),
    pytest.param(lambda: nn.Sequential(nn.Conv1d(2, 4, 3), nn.GroupNorm(2, 4, affine=False), nn.Flatten(),
                                       nn.Linear(4 * 6, 3)), (2, 8), id="groupnorm-not-affine"),
])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_layer_options_give_vmaps_result(make, shape, mode):
    _assert_same(*_both(make, shape, mode))


def _tied(layer: nn.Module) -> nn.Module:
    return nn.Sequential(layer, nn.Tanh(), nn.Sequential(layer, nn.ReLU()), layer)


def _weight_norm(layer: nn.Module) -> nn.Module:
    with warnings.catch_warnings():  # deprecated for the parametrization, still in use
        warnings.simplefilter("ignore", FutureWarning)
        return nn.utils.weight_norm(layer)


def _with_hook(module: nn.Module) -> nn.Module:
    module.register_forward_hook(lambda mod, args, out: 2 * out)
    return module


class _Residual(nn.Sequential):  # a Sequential subclass may do anything in its forward
    def forward(self, x):
        return x + super().forward(x)


@pytest.mark.parametrize("model", [
    pytest.param(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4, momentum=None)),
                 id="batchnorm with a cumulative average: each member's factor"),
    pytest.param(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)), id="dropout: random"),
    pytest.param(_Residual(nn.Linear(4, 4)), id="a Sequential subclass"),
    pytest.param(nn.Sequential(nn.Flatten(0), nn.Linear(4, 4)), id="flatten across the batch"),
    pytest.param(nn.Sequential(nn.Conv1d(1, 2, 3, padding=1, padding_mode="reflect")), id="conv padding mode"),
    pytest.param(nn.Sequential(nn.MaxPool1d(2, return_indices=True)), id="pool returning indices"),
    pytest.param(nn.Sequential(nn.PReLU()), id="an activation with a parameter"),
    pytest.param(nn.Sequential(nn.utils.parametrizations.weight_norm(nn.Linear(4, 4))), id="a parametrization"),
    pytest.param(nn.Sequential(_weight_norm(nn.Linear(4, 4))), id="weight_norm by a hook"),
    pytest.param(nn.Sequential(_with_hook(nn.Linear(4, 4))), id="a forward hook"),
    pytest.param(_with_hook(nn.Sequential(nn.Linear(4, 4))), id="a hook on the Sequential"),
])
def test_other_models_are_left_to_vmap(model):
    assert forward_of(model) is None


def _random(cls: type[nn.Module]) -> tuple[nn.Module, tuple[int, ...]]:
    """A RANDOM layer at p = 0.4 (inplace where it can be) and a sample shape it takes."""
    match = re.search(r"(\d)d$", cls.__name__)
    shape = (3,) + (4,) * int(match.group(1)) if match else (3, 4) if "Feature" in cls.__name__ else (7,)
    return cls(0.4, inplace=cls is nn.Dropout), shape


@pytest.mark.parametrize("cls", RANDOM, ids=lambda c: c.__name__)
def test_every_random_layer_draws_each_member_s_masks_from_its_own_stream_as_alone(cls):
    """A member's dropout is the one its sequential run draws: its masks from its own CPU stream, bit for
    bit, whatever the other members draw; the streams advance as alone, and torch's own is left as it was."""
    layer, shape = _random(cls)

    def make():  # Tanh first: an inplace dropout writes into its output, as into a hidden layer's
        return nn.Sequential(nn.Tanh(), layer, nn.Flatten(), nn.Linear(math.prod(shape), 4))

    torch.manual_seed(0)
    models = [make() for _ in range(K)]
    x = torch.randn(K, B, *shape)
    seeds = [torch.Generator().manual_seed(10 + i).get_state() for i in range(K)]
    streams = Streams(seeds)
    params, buffers = stack_module_state(models)
    leaves = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    caller = torch.get_rng_state()
    logits = forward_of(models[0], streams)(leaves, buffers, x)
    assert torch.equal(torch.get_rng_state(), caller)
    logits.square().sum().backward()
    for i, model in enumerate(models):  # alone, as run_sequential draws: torch's stream is the trial's
        torch.set_rng_state(seeds[i])
        alone = model(x[i])
        alone.square().sum().backward()
        assert torch.equal(streams.states[i], torch.get_rng_state()), i
        torch.testing.assert_close(logits[i], alone, rtol=1e-6, atol=1e-7)
        for name, param in model.named_parameters():
            torch.testing.assert_close(leaves[name].grad[i], param.grad, rtol=1e-5, atol=1e-6, msg=name)
    models[0].eval()  # evaluation draws nothing
    before = list(streams.states)
    forward_of(models[0], streams)(leaves, buffers, x)
    assert all(torch.equal(a, b) for a, b in zip(streams.states, before, strict=True))


def test_a_layernorm_across_the_batch_is_refused_when_it_runs():
    """Over (batch, features) a LayerNorm mixes a member's samples, as alone; fused it would mix the members'
    too. Only the input shows it, so the forward raises, and the population's probe makes that CannotFuse."""
    model = nn.Sequential(nn.LayerNorm((B, 4)))
    params, buffers = stack_module_state([model] * K)
    with pytest.raises(ValueError, match="across the batch"):
        forward_of(model)(params, buffers, torch.randn(K, B, 4))


def test_a_channel_dropout_of_an_input_it_treats_its_own_way_runs_each_member_s_own_call():
    """F.dropout2d takes a 2-d input as one unbatched image (and warns): no mask of ours would be its, so each
    member calls the module itself, on its own stream."""
    torch.manual_seed(0)
    models = [nn.Sequential(nn.Linear(6, 4), nn.Dropout2d(0.5), nn.Linear(4, 3)) for _ in range(K)]
    x = torch.randn(K, B, 6)
    streams = Streams([torch.Generator().manual_seed(i).get_state() for i in range(K)])
    params, buffers = stack_module_state(models)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's deprecation of 2-d input to dropout2d
        logits = forward_of(models[0], streams)(params, buffers, x)
        for i, model in enumerate(models):
            torch.manual_seed(i)
            torch.testing.assert_close(logits[i], model(x[i]), rtol=1e-6, atol=1e-7)
            assert torch.equal(streams.states[i], torch.get_rng_state())


def test_a_model_with_dropout_fuses_only_with_the_members_streams():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
    assert forward_of(model) is None and forward_of(model, Streams([])) is not None


def test_a_global_module_hook_leaves_every_model_to_vmap():
    model = nn.Sequential(nn.Linear(4, 4))
    handle = nn.modules.module.register_module_forward_hook(lambda mod, args, out: out)
    try:
        assert forward_of(model) is None
    finally:
        handle.remove()
    assert forward_of(model) is not None
