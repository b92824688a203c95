"""Intra-op threads for a trial, chosen from its work: a small network's step is too short for threads
to pay, and on a busy machine they contend with everything else for the cores.

    >>> for_work(params=9_000, batch=64, allowed=8)          # quick's MLP: one thread
    1
    >>> for_work(params=300_000, batch=64, allowed=8)        # a 512-wide MLP: every allowed thread
    8

The threshold is measured (2 idle cores, Adam, MLPs of width 64 to 2048): at params x batch = 5.7e5 one
thread took 290 us a step against 336 us with two; at 2.3e6 two threads won (371 against 442 us), and
from 2e7 they ran 1.5-1.8x faster. `--threads N` fixes the count; `--jobs N` divides the cores.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

SMALL_WORK = 2_000_000  # parameters x batch size below which one thread is as fast or faster


def for_work(params: int, batch: int, allowed: int) -> int:
    return 1 if params * batch < SMALL_WORK else max(1, allowed)


def choose(model, batch: int, allowed: int | None, fixed: bool, members: int = 1) -> None:
    """Set torch's intra-op threads for a trial of `model` at `batch`, or a population of `members` such
    trials, whose fused step does their work at once (allowed None: leave them as they are)."""
    import torch

    if allowed is None:
        return
    params = sum(p.numel() for p in model.parameters())
    torch.set_num_threads(allowed if fixed else for_work(params * members, batch, allowed))


@contextlib.contextmanager
def held(count: int | None = None) -> Iterator[None]:
    """torch's intra-op thread count set to `count` inside (None: left as it is) and given back after, for
    what must not depend on it or must not leave its own behind."""
    import torch

    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
