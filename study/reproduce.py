"""The winner, reproducible: the best trial as a complete space with every setting fixed (`best.yaml`,
beside the report), the one command that retrains it, and the model rebuilt from `best.pt`.

    >>> from study.config import load_config
    >>> from study.runner import run_study
    >>> cfg = load_config("quick", overrides=["study.n_trials=2", "training.budget=2", "study.confirm.seeds=0",
    ...                                       "data.name=synthetic"])
    >>> summary = run_study(cfg, "sqlite:///s.db", torch.device("cpu"), checkpoint_root=Path("ck"), quiet=True)
    >>> space = best_space(summary.study)
    >>> space["params"], space["study"]["n_trials"], space["training"]["optimizer"] == \\
    ...     summary.study.best_trial.params["optimizer"]
    ({}, 1, True)
    >>> model = load_best(summary.study_dir / "best.pt")     # the best trial's network, its final weights
    >>> type(model).__name__
    'Sequential'

`python -m study run reports/<study>/best.yaml` trains that one config again, with its seed: on the CPU
it reaches the same validation loss.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import torch
import yaml

from study.config import KNOBS, TrialConfig
from study.records import StudyRecord, TrialRecord, best_trial


def best_space(study: optuna.Study) -> dict[str, Any] | None:
    """The best trial's resolved config as a space: every setting fixed in its section, nothing searched."""
    best = best_trial(study)
    if best is None or not TrialRecord.of(best).config:
        return None
    record, config = StudyRecord.of(study), TrialRecord.of(best).config
    sections: dict[str, dict] = {"data": {}, "model": {}, "training": {}}
    for name, field in KNOBS.items():
        if name in config:
            sections[field.metadata["section"]][field.metadata["yaml"] or name] = config[name]
    return {"study": {"name": f"{study.study_name}-best-{best.number}",
                      "question": f"Trial {best.number} of study {study.study_name!r}, retrained as it ran.",
                      "metric": record.metric, "n_trials": 1, "sampler": {"name": "random", "seed": 0},
                      "pruner": {"name": "none"}, "confirm": {"seeds": 0}},
            **sections, "params": {}}


def write_best(study: optuna.Study, folder: Path) -> Path | None:
    """best.yaml in `folder`, or None before the first complete trial."""
    from study.files import atomic_write_text

    space = best_space(study)
    if space is None:
        return None
    best = best_trial(study)
    header = (f"# Question: trial {best.number} of study {study.study_name!r} ({record_value(best)}), every "
              "setting fixed.\n# Retrain it: python -m study run <this file>\n")
    path = folder / "best.yaml"
    atomic_write_text(path, header + yaml.safe_dump(space, sort_keys=False))
    return path


def record_value(trial: optuna.trial.FrozenTrial) -> str:
    return f"value {trial.value:.6g}" if trial.value is not None else "no value"


def load_best(path: Path | str, device: torch.device | str = "cpu") -> torch.nn.Module:
    """The model of a study's best.pt: rebuilt from the config stored in it, its final weights loaded."""
    from study.trial import device_data, make_model

    state = torch.load(path, map_location=device, weights_only=True)
    cfg = TrialConfig(**state["config"])
    model = make_model(cfg, device_data(cfg, torch.device(device)), torch.device(device))
    model.load_state_dict(state["model"])
    return model.eval()


SNIPPET = """from study.reproduce import load_best
model = load_best("{path}")   # the best trial's network, its final weights, in eval mode
logits = model(x)              # x preprocessed as in training (the split's training statistics)"""
