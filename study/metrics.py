"""Validation metrics: NLL, accuracy and macro precision/recall/F1, computed on the device.

    >>> x, y = torch.eye(3), torch.arange(3)
    >>> m = evaluate(torch.nn.Linear(3, 3), x, y)
    >>> list(m)
    ['val_loss', 'val_accuracy', 'val_precision', 'val_recall', 'val_f1']
    >>> classification_metrics(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 1]))["val_f1"]
    0.7333333333333334

The classification metrics come from one confusion matrix, as scikit-learn's `accuracy_score` and
`precision_recall_fscore_support(average="macro", zero_division=0)` define them (tests check them against
scikit-learn): the macro average is over the classes that occur in the labels or the predictions. Doing
it here, on the device, saves scikit-learn's input validation, about 4 ms per evaluation, which on small
trials is more than an epoch's training.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Callable, ContextManager

import numpy as np
import torch
import torch.nn.functional as F

EVAL_BATCH = 4096  # samples per forward pass; bounds memory on large splits


@functools.cache
def _lanes() -> int:
    """Floats in one SIMD register of the kernels torch runs on this CPU (0: none it vectorizes)."""
    return {"AVX512": 16, "AVX2": 8}.get(torch.backends.cpu.get_cpu_capability(), 0)


def nll(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """F.cross_entropy(logits [N, C], y [N], reduction="none"), and its gradient, to the bit.

    On a CPU, torch's log_softmax over a last dim shorter than a SIMD register (C < 16 floats under AVX-512,
    < 8 under AVX2: digits' 10 classes) loops over the rows one by one; over dim 0 of the transposed
    logits it is vectorized over them. For a population's K x B rows of 10 classes, forward and backward
    took 146 against 864 us at 4096 rows (AVX-512, one thread), and the same values and gradients."""
    if logits.device.type == "cpu" and logits.shape[1] < _lanes():
        return -logits.t().log_softmax(0).gather(0, y[None]).squeeze(0)
    return F.cross_entropy(logits, y, reduction="none")


@torch.no_grad()
def _predict(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
             autocast: Callable[[], ContextManager]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Mean NLL of the labels, the predicted classes and the number of classes, on the device, in eval mode."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    preds = []
    for i in range(0, len(x), EVAL_BATCH):
        with autocast():
            logits = model(x[i:i + EVAL_BATCH])
        loss_sum += F.cross_entropy(logits.float(), y[i:i + EVAL_BATCH], reduction="sum")
        preds.append(logits.argmax(dim=1))
    model.train(was_training)
    return loss_sum / len(x), torch.cat(preds), logits.shape[1]


def predict(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
            autocast: Callable[[], ContextManager] = contextlib.nullcontext) -> tuple[float, np.ndarray]:
    """Mean NLL and the predicted classes on the host (for the test split's per-class report)."""
    loss, pred, _ = _predict(model, x, y, autocast)
    return loss.item(), pred.cpu().numpy()


def _scores(y_true: torch.Tensor, y_pred: torch.Tensor, n: int | None = None) -> torch.Tensor:
    """[accuracy, macro precision, macro recall, macro F1] as one tensor on the labels' device, for each row
    of `y_pred` ([N]: one model's predictions, [K, N]: a population's members'); `n`, the number of
    classes, when the caller knows it (reading it from the labels waits for the device)."""
    n = n or int(torch.maximum(y_true.max(), y_pred.max())) + 1
    rows = y_pred.reshape(-1, y_pred.shape[-1])
    k = len(rows)
    codes = torch.arange(k, device=rows.device)[:, None] * (n * n) + y_true * n + rows  # one matrix per row
    cm = torch.bincount(codes.reshape(-1), minlength=k * n * n).reshape(k, n, n).double()
    tp, predicted, actual = cm.diagonal(dim1=1, dim2=2), cm.sum(dim=1), cm.sum(dim=2)
    seen = (predicted + actual) > 0  # scikit-learn averages over the classes in either
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), 0.0)
    recall = torch.where(actual > 0, tp / actual.clamp(min=1), 0.0)
    f1 = torch.where(tp > 0, 2 * tp / (2 * tp + (predicted - tp) + (actual - tp)).clamp(min=1), 0.0)

    def macro(v: torch.Tensor) -> torch.Tensor:
        return (v * seen).sum(dim=1) / seen.sum(dim=1)

    scores = torch.stack([tp.sum(dim=1) / cm.sum(dim=(1, 2)), macro(precision), macro(recall), macro(f1)], dim=1)
    return scores.reshape(*y_pred.shape[:-1], 4)


def classification_metrics(y_true: torch.Tensor | np.ndarray, y_pred: torch.Tensor | np.ndarray,
                           prefix: str = "val") -> dict[str, float]:
    y_true, y_pred = torch.as_tensor(y_true), torch.as_tensor(y_pred)
    accuracy, precision, recall, f1 = _scores(y_true, y_pred.to(y_true.device)).tolist()
    return {f"{prefix}_accuracy": accuracy, f"{prefix}_precision": precision, f"{prefix}_recall": recall,
            f"{prefix}_f1": f1}


def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
             autocast: Callable[[], ContextManager] = contextlib.nullcontext, prefix: str = "val") -> dict[str, float]:
    loss, pred, n_classes = _predict(model, x, y, autocast)
    return metrics_of(loss.reshape(1), y, pred[None], n_classes, prefix)[0]


def metrics_of(losses: torch.Tensor, y: torch.Tensor, preds: torch.Tensor, n_classes: int,
               prefix: str = "val") -> list[dict[str, float]]:
    """evaluate's dict for each row of mean NLLs [K] and predictions [K, N] already on the device (one
    model's, or a population's members'), with one copy to the host for all of them."""
    values = torch.cat([losses.double().reshape(-1, 1), _scores(y, preds, n_classes)], dim=1).tolist()
    names = [f"{prefix}_{k}" for k in ("loss", "accuracy", "precision", "recall", "f1")]
    return [dict(zip(names, row, strict=True)) for row in values]
