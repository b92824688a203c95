"""How long a trial trains, in iterations, and what an "epoch" means for it.

A budget is given in epochs (full passes), iterations, or samples seen (= batch_size * iterations, so
doubling the batch halves the iterations). Validation, pruning and checkpoints happen once per "epoch":
a full pass, or `epoch_iters` iterations when that is > 0.

    >>> b = Budget.of(n_train=1000, batch_size=64, unit="samples", amount=64_000, epoch_iters=0)
    >>> b.total_iters, b.iters_per_epoch, b.n_epochs
    (1000, 16, 63)
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
        return cls(total, iters_per_pass, epoch_iters if epoch_iters > 0 else iters_per_pass)

    @property
    def n_epochs(self) -> int:
        return math.ceil(self.total_iters / self.iters_per_epoch)

    def epoch_end(self, epoch: int) -> int:
        """The iteration count at the end of `epoch` (0-based); the last epoch may be short."""
        return min(self.total_iters, (epoch + 1) * self.iters_per_epoch)


def scaled_lr(lr: float, batch_size: int, scaling: str, reference_batch: int) -> float:
    """Linear scaling rule: lr grows with the batch (lr = base_lr * batch / reference_batch)."""
    return lr * batch_size / reference_batch if scaling == "linear" else lr


LR_SCALINGS = ("none", "linear")
