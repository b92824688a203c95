"""A population's forward for any model that runs under `torch.func.vmap` (a user module with a forward of
its own, as pytorch/examples' MNIST `Net` is): vmap over functional_call, with each member's dropout
masks (`nn.Dropout` and its 1d, 2d and 3d channel kinds) drawn outside vmap from its own CPU stream, as
alone.

    >>> import torch
    >>> from torch.func import stack_module_state
    >>> from study.streams import Streams
    >>> class Net(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.fc1, self.drop, self.fc2 = torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 3)
    ...     def forward(self, x):
    ...         return self.fc2(self.drop(torch.relu(self.fc1(x))))
    >>> models = [Net() for _ in range(2)]
    >>> params, buffers = stack_module_state(models)
    >>> streams = Streams([torch.Generator().manual_seed(s).get_state() for s in (7, 8)])
    >>> forward_of(models[0], streams)(params, buffers, torch.randn(2, 5, 4)).shape   # [members, batch, classes]
    torch.Size([2, 5, 3])

vmap draws random numbers for all members at once ("same" or "different" randomness), never from each
member's own stream, so dropout inside vmap cannot give the masks a member's sequential run draws. Here
the model's dropout modules are fed masks instead: drawn before each step, member by member, from its
stream, exactly as `F.dropout` draws them alone on the CPU (noise of the input's shape, or (batch,
channels, 1, ...) for a channel dropout, `bernoulli_(1 - p)`, divided by 1 - p, then multiplied in), in
the order the forward calls the modules. Their inputs' shapes are recorded once, under vmap, at two batch
sizes: a dropout whose input does not lead with the batch, or a channel dropout of an unbatched input, is
not fed, and the model then trains alone. Other random layers (the alpha dropouts), and `F.dropout`
called in a forward, make vmap raise, and the model trains alone too.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn
from torch.func import functional_call, vmap

from study.fused import Forward
from study.streams import MASKED, Streams, noise_shape, undrawn

Call = tuple[nn.Module, tuple[int, ...], torch.dtype]  # a dropout module, one sample's noise shape, its dtype


class _Fed:
    """The template's dropout modules (streams.MASKED) while a fed forward runs: their forwards replaced by
    one that records its input's shape (`recording`) or multiplies in the next mask of `masks`."""

    def __init__(self, modules: list[nn.Module]):
        self.modules = modules
        self.recording: list[tuple[nn.Module, torch.Size, torch.dtype]] | None = None
        self.masks: list[torch.Tensor] = []

    def _forward(self, module: nn.Module):
        def forward(x: torch.Tensor) -> torch.Tensor:
            if (out := undrawn(module, x)) is not None:
                return out
            if self.recording is not None:
                self.recording.append((module, x.shape, x.dtype))
                return x
            return x * self.masks.pop(0)
        return forward

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """The modules' forwards replaced, and given back after (the template is a member's own model)."""
        own = [m.__dict__.get("forward") for m in self.modules]
        for m in self.modules:
            m.forward = self._forward(m)
        try:
            yield
        finally:
            for m, forward in zip(self.modules, own, strict=True):
                del m.forward
                if forward is not None:
                    m.forward = forward


def forward_of(template: nn.Module, streams: Streams | None = None) -> Forward:
    """forward(params, buffers, x) of stacked members like `template` under vmap, x and the result
    [K, B, ...]; the template's dropout modules fed each member's masks from `streams` where given."""
    fed = _Fed([m for m in template.modules() if type(m) in MASKED])

    def one(params, buffers, masks, x):
        fed.masks = list(masks)
        return functional_call(template, (params, buffers), (x,))

    batched = vmap(one, randomness="error")
    if not fed.modules or streams is None:
        return lambda params, buffers, x: batched(params, buffers, (), x)
    calls: list[Call] = []  # recorded at the first call

    def forward(params, buffers, x):
        if not template.training:  # evaluation: nn.Dropout draws nothing, and needs no feeding
            return batched(params, buffers, (), x)
        with fed.installed():
            if not calls:
                calls.extend(_calls(fed, batched, params, buffers, x))
            return batched(params, buffers, streams.dropout_masks(
                [(module.p, (x.shape[1], *shape), dtype) for module, shape, dtype in calls]), x)

    return forward


def _calls(fed: _Fed, batched, params, buffers, x: torch.Tensor) -> list[Call]:
    """The fed modules' calls in the order the forward makes them, each with the shape of one sample's noise
    (streams.noise_shape) and its dtype; recorded at batch sizes 2 and 3 (copies of the first sample, on
    copies of the buffers), so that each input is seen to lead with the batch."""
    seen = []
    for n in (2, 3):
        fed.recording = []
        try:
            with torch.no_grad():
                batched(params, {k: v.clone() for k, v in buffers.items()}, (), x[:, :1].expand(-1, n, *x.shape[2:]))
            seen.append(fed.recording)
        finally:
            fed.recording = None
    two, three = seen
    if len(two) != len(three) or any(a[0] is not b[0] or a[1][1:] != b[1][1:] or (a[1][:1], b[1][:1]) != ((2,), (3,))
                                     for a, b in zip(two, three, strict=True)):
        raise ValueError("a dropout whose input does not lead with the batch cannot be fed its masks")
    noise = [noise_shape(module, tuple(shape)) for module, shape, _ in two]
    if None in noise:
        raise ValueError("a channel dropout of an input it does not take batched cannot be fed its masks")
    return [(module, shape[1:], dtype) for (module, _, dtype), shape in zip(two, noise, strict=True)]

