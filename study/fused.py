"""A population's forward pass written over the stacked members, layer by layer, for models built of
layers this module knows: batched matmuls for Linear and grouped convolutions for Conv, as HFTA (Wang et
al., MLSys 2021) fuses them.

    >>> import torch
    >>> from torch.func import stack_module_state
    >>> models = [torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)) for _ in range(5)]
    >>> params, buffers = stack_module_state(models)
    >>> forward = forward_of(models[0])          # None for a model it does not know: vmap then
    >>> forward(params, buffers, torch.randn(5, 32, 4)).shape   # [members, batch, classes]
    torch.Size([5, 32, 3])

`torch.func.vmap(functional_call)` computes the same, but it re-enters its batching rules and
functional_call's reparametrisation at every call: training `quick`'s MLP on 2 CPU cores
(`python -m benchmarks.bench_population --vmap`, 2026-12-03), populations trained x1.3-1.5 faster
written so at K = 4 and x1.1-1.4 at K = 16. It remains the path for every other model (a user module
with its own forward), and it is what catches models that cannot be fused.

The members' batches travel as one [K * B, ...] tensor, so that a layer without parameters (an
activation, a pooling, a flatten) runs once on all of them as it would on one member's batch. BatchNorm
sees the members as groups of channels, as a convolution does: each channel's statistics are its
member's batch's, and its running statistics the member's row of the stacked buffers. LayerNorm and
GroupNorm normalise each sample alone, so they run once on all samples, then scale and shift each
member's by its own weight and bias.

Dropout draws each member's masks from its own CPU random stream (`study.streams`): the masks a member's
sequential run draws, bit for bit. nn.Dropout's are drawn member by member and multiplied in at once
(as `study.vmapped` feeds them to a model under vmap, whose own randomness is one mode for all); the
other random layers run member by member.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from study.streams import MASKED, RANDOM, Streams, noise_shape, undrawn

Layer = Callable[[dict[str, torch.Tensor], torch.Tensor, int], torch.Tensor]
Forward = Callable[[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor], torch.Tensor]

# Layers without parameters, buffers or randomness that treat each sample alone: the members' batches
# pass through them as one batch. Exact types: a subclass may do anything in its forward.
PER_SAMPLE: tuple[type[nn.Module], ...] = (
    nn.Identity, nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU, nn.Softplus, nn.Hardtanh,
    nn.ReLU6, nn.Mish, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
)
_CONV = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d}
_NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def forward_of(template: nn.Module, streams: Streams | None = None) -> Forward | None:
    """forward(params, buffers, x) of stacked members like `template`, x and the result [K, B, ...];
    None unless `template` is an nn.Sequential (nested ones too) of Linear, Conv and PER_SAMPLE layers,
    and RANDOM ones where the members' `streams` are given (on the CPU, whose stream a trial seeds)."""
    if any(_global_hooks()):
        return None
    # A module used twice (tied layers) has its parameters under its first name only, in named_modules
    # as in stack_module_state's dicts.
    names = {module: f"{name}." if name else "" for name, module in template.named_modules()}
    layers = _layers(template, names, streams)
    if layers is None:
        return None

    def forward(params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        k = x.shape[0]
        h = x.flatten(0, 1)
        state = {**params, **buffers}  # a module's params and buffers never share a name
        for layer in layers:
            h = layer(state, h, k)
        return h.unflatten(0, (k, -1))

    return forward


def _hooked(module: nn.Module) -> bool:
    """Hooks (weight_norm's too) change what a module computes, and only calling it runs them."""
    return any((module._forward_hooks, module._forward_pre_hooks, module._backward_hooks, module._backward_pre_hooks))


def _global_hooks() -> tuple[dict, ...]:  # nn.modules.module.register_module_forward_hook and its kin
    from torch.nn.modules import module
    names = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
             "_global_backward_pre_hooks")
    return tuple(getattr(module, name, {}) for name in names)


def _layers(module: nn.Module, names: dict[nn.Module, str], streams: Streams | None) -> list[Layer] | None:
    if _hooked(module):
        return None
    if type(module) is nn.Sequential:
        layers: list[Layer] = []
        for child in module:  # as Sequential.forward runs them: children() yields a repeated one once
            inner = _layers(child, names, streams)
            if inner is None:
                return None
            layers += inner
        return layers
    if _per_sample(module):
        return [lambda params, h, k: module(h)]
    if type(module) in MASKED and streams is not None:
        return [_dropout(module, streams)]
    if type(module) in RANDOM and streams is not None:  # in eval mode the identity, and no draw
        return [lambda params, h, k: streams.each(module, h, k) if module.training else module(h)]
    if type(module) is nn.Linear:
        return [_linear(names[module])]
    if type(module) in _CONV and module.padding_mode == "zeros":
        return [_conv(module, names[module])]
    if type(module) in _NORM and module.momentum is not None:  # None: each member's own average factor
        return [_batch_norm(module, names[module])]
    if type(module) is nn.LayerNorm:
        return [_sample_norm(lambda h: F.layer_norm(h, module.normalized_shape, None, None, module.eps),
                             names[module], lambda h: h.dim() - len(module.normalized_shape))]
    if type(module) is nn.GroupNorm:
        return [_sample_norm(lambda h: F.group_norm(h, module.num_groups, None, None, module.eps),
                             names[module], lambda h: 1)]
    return None


def _per_sample(module: nn.Module) -> bool:
    """A layer the members' batches pass through as one batch: it sees each sample alone."""
    if type(module) in PER_SAMPLE:
        return not getattr(module, "return_indices", False)
    if type(module) is nn.Flatten:
        return module.start_dim >= 1  # never across the batch
    if type(module) is nn.Unflatten:
        return isinstance(module.dim, int) and module.dim >= 1
    return False


def _linear(prefix: str) -> Layer:
    weight, bias = prefix + "weight", prefix + "bias"

    def linear(params: dict[str, torch.Tensor], h: torch.Tensor, k: int) -> torch.Tensor:
        w, b = params[weight], params.get(bias)  # [K, out, in], [K, out]
        rows = h.reshape(k, -1, h.shape[-1])  # each member's samples (and any middle dims) as rows
        wt = w.transpose(1, 2)
        out = torch.bmm(rows, wt) if b is None else torch.baddbmm(b.unsqueeze(1), rows, wt)
        return out.view(h.shape[:-1] + (w.shape[1],))

    return linear


def _conv(module: nn.Module, prefix: str) -> Layer:
    """Members as groups of one convolution: their channels side by side, each group seeing its own."""
    conv, weight, bias = _CONV[type(module)], prefix + "weight", prefix + "bias"

    def grouped(params: dict[str, torch.Tensor], h: torch.Tensor, k: int) -> torch.Tensor:
        w, b = params[weight], params.get(bias)  # [K, out, in / groups, *kernel], [K, out]
        batch = h.shape[0] // k
        x = h.unflatten(0, (k, batch)).transpose(0, 1).flatten(1, 2)  # [B, K * in, *size]
        out = conv(x, w.flatten(0, 1), None if b is None else b.flatten(), module.stride, module.padding,
                   module.dilation, k * module.groups)  # [B, K * out, *size']
        return out.unflatten(1, (k, w.shape[1])).transpose(0, 1).flatten(0, 1)

    return grouped


def _batch_norm(module: nn.Module, prefix: str) -> Layer:
    """Members as groups of channels of one batch_norm, as _conv has them: what BatchNorm's forward does
    for each alone, its running statistics updated in place in its row of the stacked buffers."""
    weight, bias, mean, var, count = (prefix + n for n in ("weight", "bias", "running_mean", "running_var",
                                                           "num_batches_tracked"))

    def norm(state: dict[str, torch.Tensor], h: torch.Tensor, k: int) -> torch.Tensor:
        module._check_input_dim(h)  # a member's batch has as many dims
        batch = h.shape[0] // k
        x = h.unflatten(0, (k, batch)).transpose(0, 1).flatten(1, 2)  # [B, K * C, ...]
        if module.training and module.track_running_stats and count in state:
            state[count].add_(1)
        tracked = not module.training or module.track_running_stats
        m, v = (state.get(mean), state.get(var)) if tracked else (None, None)
        w, b = state.get(weight), state.get(bias)
        out = F.batch_norm(x, None if m is None else m.view(-1), None if v is None else v.view(-1),
                           None if w is None else w.flatten(), None if b is None else b.flatten(),
                           module.training or (m is None and v is None),  # eval without stats: the batch's
                           module.momentum, module.eps)
        return out.unflatten(1, (k, -1)).transpose(0, 1).flatten(0, 1)

    return norm


def _sample_norm(normalise: Callable[[torch.Tensor], torch.Tensor], prefix: str,
                 at: Callable[[torch.Tensor], int]) -> Layer:
    """A norm of each sample alone (LayerNorm, GroupNorm): normalise(h) on all the members' samples at
    once, then each member's samples times its weight plus its bias, which lie along h's dims from at(h)
    on (LayerNorm: its normalised shape, the last dims; GroupNorm: the channels, dim 1)."""
    weight, bias = prefix + "weight", prefix + "bias"

    def norm(state: dict[str, torch.Tensor], h: torch.Tensor, k: int) -> torch.Tensor:
        start = at(h)
        if start < 1:
            raise ValueError("a norm across the batch mixes the members' samples")
        out = normalise(h).unflatten(0, (k, -1))  # [K, B, ...]
        w, b = state.get(weight), state.get(bias)  # [K, *shape] each, or None
        shape = next((t.shape[1:] for t in (w, b) if t is not None), None)
        if shape is None:
            return out.flatten(0, 1)
        view = (k, 1, *[1] * (start - 1), *shape, *[1] * (h.dim() - start - len(shape)))
        if w is not None:
            out = out * w.view(view)
        if b is not None:
            out = out + b.view(view)
        return out.flatten(0, 1)

    return norm


def _dropout(module: nn.Module, streams: Streams) -> Layer:
    """Each member's mask drawn from its own stream, then one multiply for all (Streams.dropout_masks)."""
    def dropout(params: dict[str, torch.Tensor], h: torch.Tensor, k: int) -> torch.Tensor:
        if (out := undrawn(module, h)) is not None:
            return out
        shape = noise_shape(module, (h.shape[0] // k, *h.shape[1:]))
        if shape is None:  # an input the channel dropout treats its own way: its own call for each member
            return streams.each(module, h, k)
        (masks,) = streams.dropout_masks([(module.p, shape, h.dtype)])
        return h * masks.flatten(0, 1)

    return dropout
