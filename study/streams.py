"""Each member's own random stream in a population, and the dropout masks drawn from it: what a member's
dropout draws alone, as its sequential run does, bit for bit.

    >>> streams = Streams([torch.Generator().manual_seed(s).get_state() for s in (7, 8)])
    >>> (masks,) = streams.dropout_masks([(0.5, (4, 3), torch.float32)])   # one dropout call of two members
    >>> torch.set_rng_state(torch.Generator().manual_seed(8).get_state())   # member 1's trial, alone
    >>> torch.equal(masks[1], torch.nn.functional.dropout(torch.ones(4, 3), 0.5))
    True

A trial seeds torch's CPU stream with its seed (trial.seeded), and its model's dropout draws from it; a
population keeps each member's stream apart (the members' states, swapped in and out around each draw)
and saves it in the member's checkpoints. On CUDA dropout draws from the device's stream, which trials
share, so there is no stream of a member's own to keep.
"""
from __future__ import annotations

from typing import Callable, TypeVar

import torch
from torch import nn

T = TypeVar("T")

# Layers that draw random numbers from torch's CPU stream: each member's from its own (Streams).
RANDOM: tuple[type[nn.Module], ...] = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                                       nn.FeatureAlphaDropout)
# The dropouts whose masks Streams draws, with the dims of the batched input a channel dropout takes.
MASKED: dict[type[nn.Module], int | None] = {nn.Dropout: None, nn.Dropout1d: 3, nn.Dropout2d: 4, nn.Dropout3d: 5}


def noise_shape(module: nn.Module, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """The shape of the noise that module's F.dropout (or dropout1d/2d/3d) draws for one member's input of
    `shape`, batch first: the input's own, or (batch, channels, 1, ...) for a channel dropout; None for an
    input a channel dropout treats otherwise (unbatched, or of dims it only warns about)."""
    dims = MASKED[type(module)]
    if dims is None:
        return tuple(shape)
    return (shape[0], shape[1], *[1] * (dims - 2)) if len(shape) == dims else None


def undrawn(module: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """What module's dropout returns for x where it draws nothing: x in eval mode or at p = 0, zeros at
    p = 1 (F.dropout's own shortcuts); None where it draws a mask."""
    if not module.training or module.p == 0:
        return x
    if module.p == 1:
        return x * torch.zeros((), dtype=x.dtype, device=x.device)
    return None


class Streams:
    """Each member's CPU random stream, as torch.get_rng_state() holds it (a trial seeds its own: see
    trial.seeded). A random layer draws member i's samples from states[i] and advances it."""

    def __init__(self, states: list[torch.Tensor]):
        self.states = list(states)

    def dropout_masks(self, calls: list[tuple[float, tuple[int, ...], torch.dtype]]) -> tuple[torch.Tensor, ...]:
        """For each of a step's dropout calls (p, one member's noise_shape, dtype), in the order the forward
        makes them, the members' masks [K, *shape]: member i's from states[i], as F.dropout draws them alone
        on the CPU (noise of that shape, bernoulli_(1 - p), divided by 1 - p, then multiplied in). One
        multiply by the stacked masks then serves all members; torch's own stream is given back as it was."""
        drawn = self._each_member(lambda i: [torch.empty(shape, dtype=dtype).bernoulli_(1 - p).div_(1 - p)
                                             for p, shape, dtype in calls])
        return tuple(torch.stack(masks) for masks in zip(*drawn, strict=True))

    def each(self, module: nn.Module, h: torch.Tensor, k: int) -> torch.Tensor:
        """module applied to each member's samples of h ([K * B, ...]) from that member's stream; torch's
        own stream is given back as it was."""
        n = h.shape[0] // k
        # a slice each, not chunk(): an inplace dropout may write into it
        return torch.cat(self._each_member(lambda i: module(h[i * n:(i + 1) * n])))

    def _each_member(self, draw: Callable[[int], T]) -> list[T]:
        """draw(i) for each member i with torch's CPU stream set to states[i], which it advances; torch's
        own stream is given back as it was."""
        caller = torch.get_rng_state()
        out = []
        try:
            for i in range(len(self.states)):
                torch.set_rng_state(self.states[i])
                out.append(draw(i))
                self.states[i] = torch.get_rng_state()
        finally:
            torch.set_rng_state(caller)
        return out
