"""The best trial on the test split: evaluated once, at the end of a run, and stored with the study.

The test split is never used to choose anything; this only describes the winner, so the report can
show its confusion matrix and per-class precision, recall and F1 from the storage alone.
"""
from __future__ import annotations

from pathlib import Path

import optuna
import torch

from study.checkpoints import try_load
from study import records
from study.config import TrialConfig
from study.metrics import classification_metrics, predict
from study.trial import autocast_for, device_data, make_model

def evaluate_best_on_test(study: optuna.Study, study_dir: Path, device: torch.device) -> str | None:
    """Evaluate best.pt on the test split and store the result as the study's `test` user attr.
    Returns the problem when best.pt cannot be used; the run goes on without the test metrics."""
    path = study_dir / "best.pt"
    best, problem = try_load(path)
    if problem:
        return f"the test split was not evaluated: {problem}"
    stored = records.StudyRecord.of(study).test
    if stored and stored.get("trial") == best["trial"]:
        return None
    try:
        cfg = TrialConfig(**best["config"])
        data = device_data(cfg, device)
        model = make_model(cfg, data, device)
        model.load_state_dict(best["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        return f"the test split was not evaluated: best.pt does not fit its config ({type(exc).__name__}: {exc})"
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support  # 1.8 s; workers never need it

    loss, pred = predict(model, data.x_test, data.y_test, autocast_for(device, cfg.precision))
    y = data.y_test.cpu().numpy()
    labels = list(range(data.n_classes))
    precision, recall, f1, support = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    result = {
        "trial": best["trial"],
        "metrics": {"test_loss": loss, **classification_metrics(y, pred, prefix="test")},
        "confusion": confusion_matrix(y, pred, labels=labels).tolist(),
        "per_class": {"precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
                      "support": support.tolist()},
    }
    records.write_study(study, test=result)
    return None
