"""Validation metrics: NLL, accuracy and macro precision/recall/F1 from scikit-learn.

        >>> x, y = torch.eye(3), torch.arange(3)
    >>> m = evaluate(torch.nn.Linear(3, 3), x, y)
    >>> list(m)
    ['val_loss', 'val_accuracy', 'val_precision', 'val_recall', 'val_f1']
"""
from __future__ import annotations

import contextlib
from typing import Callable, ContextManager

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

EVAL_BATCH = 4096  # samples per forward pass; bounds memory on large splits


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
            autocast: Callable[[], ContextManager] = contextlib.nullcontext) -> tuple[float, np.ndarray]:
    """Mean NLL of the labels and the predicted classes, in eval mode; one host copy at the end."""
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
    return (loss_sum / len(x)).item(), torch.cat(preds).cpu().numpy()


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, prefix: str = "val") -> dict[str, float]:
    precision, recall, f1, _ = precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=0)
    return {f"{prefix}_accuracy": float(accuracy_score(y_true, y_pred)), f"{prefix}_precision": float(precision),
            f"{prefix}_recall": float(recall), f"{prefix}_f1": float(f1)}


def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
             autocast: Callable[[], ContextManager] = contextlib.nullcontext, prefix: str = "val") -> dict[str, float]:
    loss, pred = predict(model, x, y, autocast)
    return {f"{prefix}_loss": loss, **classification_metrics(y.cpu().numpy(), pred, prefix)}
