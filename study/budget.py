"""How long a trial trains, in iterations, and what an "epoch" means for it.

A budget is given in epochs (full passes), iterations, or samples seen (= batch_size * iterations, so
doubling the batch halves the iterations). Validation, pruning and checkpoints happen once per "epoch":
a full pass, or `epoch_iters` iterations when that is > 0.

    >>> b = Budget.of(n_train=1000, batch_size=64, unit="samples", amount=64_000, epoch_iters=0)
    >>> b.total_iters, b.iters_per_epoch, b.n_epochs, b.samples
    (1000, 16, 63, 64000)
    >>> b.segments(15)          # (pass, start, stop): batch 16 wraps from pass 0 into pass 1
    [(0, 960, 1000), (1, 0, 24)]

A sample budget is exact whatever the batch size: batches are always full and wrap across passes, and
the last one holds what is left. Budgets in epochs and iterations keep a pass's short last batch, as a
DataLoader does; `samples` is what they train on, counted exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

UNITS = ("epochs", "iterations", "samples")


@dataclass(frozen=True)
class Budget:
    total_iters: int  # optimizer steps in the whole trial
    iters_per_pass: int  # steps in one full pass over the training split (last batch may be short)
    iters_per_epoch: int  # steps between two validations
    n_train: int = 1
    batch_size: int = 1
    wraps: bool = False  # batches run across pass boundaries (sample budgets)
    amount: int = 0  # the samples of a sample budget

    @classmethod
    def of(cls, n_train: int, batch_size: int, unit: str, amount: int, epoch_iters: int = 0) -> "Budget":
        if unit not in UNITS:
            raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
        iters_per_pass = math.ceil(n_train / batch_size)
        total = {
            "epochs": amount * iters_per_pass,
            "iterations": amount,
            "samples": math.ceil(amount / batch_size),
        }[unit]
        return cls(total, iters_per_pass, epoch_iters if epoch_iters > 0 else iters_per_pass, n_train, batch_size,
                   wraps=unit == "samples", amount=amount if unit == "samples" else 0)

    @property
    def n_epochs(self) -> int:
        return math.ceil(self.total_iters / self.iters_per_epoch)

    def samples_at(self, it: int) -> int:
        """Samples trained on in the first `it` iterations, exactly."""
        if self.wraps:
            return min(self.amount, it * self.batch_size)
        passes, j = divmod(it, self.iters_per_pass)
        return passes * self.n_train + min(self.n_train, j * self.batch_size)

    @property
    def samples(self) -> int:
        return self.samples_at(self.total_iters)

    def segments(self, it: int) -> list[tuple[int, int, int]]:
        """The slices (pass, start, stop) of each pass's sample order that iteration `it` trains on."""
        if not self.wraps:
            passes, j = divmod(it, self.iters_per_pass)
            return [(passes, j * self.batch_size, min(self.n_train, (j + 1) * self.batch_size))]
        first, last = self.samples_at(it), self.samples_at(it + 1)
        out = []
        while first < last:
            passes, start = divmod(first, self.n_train)
            stop = min(self.n_train, start + last - first)
            out.append((passes, start, stop))
            first += stop - start
        return out

    def epoch_end(self, epoch: int) -> int:
        """The iteration count at the end of `epoch` (0-based); the last epoch may be short."""
        return min(self.total_iters, (epoch + 1) * self.iters_per_epoch)


def scaled_lr(lr: float, batch_size: int, scaling: str, reference_batch: int) -> float:
    """Linear scaling rule: lr grows with the batch (lr = base_lr * batch / reference_batch)."""
    return lr * batch_size / reference_batch if scaling == "linear" else lr


LR_SCALINGS = ("none", "linear")
