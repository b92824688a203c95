"""The order in which a trial sees its training samples: a permutation per pass, drawn from a generator
seeded by (trial seed, pass), so that a run is reproducible, resumable from any epoch checkpoint, and the
same under either engine.

    >>> from study.budget import Budget
    >>> order = BatchOrder(Budget.of(10, 4, "samples", 12), seed=0, shuffle=False, device=torch.device("cpu"))
    >>> [order.indices(it).tolist() for it in range(3)]     # full batches wrap across the pass boundary
    [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1]]
"""
from __future__ import annotations

import torch

from study.budget import Budget


class BatchOrder:
    def __init__(self, budget: Budget, seed: int, shuffle: bool, device: torch.device):
        self.budget, self.seed, self.shuffle, self.device = budget, seed, shuffle, device
        self.generator = torch.Generator(device=device)
        self._perms: dict[int, torch.Tensor] = {}

    def perm(self, passes: int) -> torch.Tensor:
        """The sample order of pass `passes` (the two newest are kept: a wrapping batch spans two)."""
        if passes not in self._perms:
            n = self.budget.n_train
            if self.shuffle:
                self.generator.manual_seed(self.seed * 1_000_003 + passes)
                perm = torch.randperm(n, device=self.device, generator=self.generator)
            else:
                perm = torch.arange(n, device=self.device)
            self._perms = {k: v for k, v in self._perms.items() if k >= passes - 1} | {passes: perm}
        return self._perms[passes]

    def indices(self, it: int) -> torch.Tensor:
        parts = [self.perm(p)[start:stop] for p, start, stop in self.budget.segments(it)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)
