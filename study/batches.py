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


class Lockstep:
    """The batches of orders that step together (a population's members), one [K, B] index tensor a step.

    Where no budget wraps batches across passes, aligned members are at the same place in their passes,
    so a step's batches are one slice of their stacked permutations, restacked once a pass: K slices and
    a stack of them cost about 200 us a step at K = 64, as much as the members' schedulers.

    rows[i], where given, maps member i's own training rows to those of the data its batches index (a
    member whose split is arranged in another order): its indices are rows[i][index].
    """

    def __init__(self, orders: list[BatchOrder], its: list[int], rows: list[torch.Tensor | None] | None = None):
        self.orders, self.its = orders, its  # each member's iteration when the lockstep began
        self.rows = rows or [None] * len(orders)
        self.iters_per_pass = orders[0].budget.iters_per_pass
        self.same_place = (not any(o.budget.wraps for o in orders)
                           and len({it % self.iters_per_pass for it in its}) == 1)
        self._pass, self._perms = -1, torch.empty(0)

    def indices(self, step: int) -> torch.Tensor:
        """[K, B]: each member's batch `step` steps after its iteration when the lockstep began."""
        members = zip(self.orders, self.its, self.rows, strict=True)
        if not self.same_place:
            return torch.stack([_at(rows, o.indices(it + step)) for o, it, rows in members])
        passes, start, stop = self.orders[0].budget.segments(self.its[0] + step)[0]
        if passes != self._pass:  # the members' passes begin at the same step
            self._pass = passes
            self._perms = torch.stack([_at(rows, o.perm((it + step) // self.iters_per_pass))
                                       for o, it, rows in members])
        return self._perms[:, start:stop]


def _at(rows: torch.Tensor | None, index: torch.Tensor) -> torch.Tensor:
    return index if rows is None else rows[index]
