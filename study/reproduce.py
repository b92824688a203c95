"""The winner, reproducible: the best trial as a complete space with every setting fixed (`best.yaml`,
beside the report), the one command that retrains it, and the model rebuilt from `best.pt`. Where the
verdict's leader is another trial than the search's best (one seed, chosen for being best, whose seeds may
disagree), `leader.yaml` beside it retrains the leader's candidate.

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

`python -m study run reports/<study>/best.yaml` trains that one config again, with its seed and, on a CPU,
the thread count it trained on (study.threads): it reaches the same validation loss, bit for bit where it
trained alone.
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
    return None if best is None else trial_space(study, best, "best")


def trial_space(study: optuna.Study, trial: optuna.trial.FrozenTrial, role: str) -> dict[str, Any] | None:
    """Trial's resolved config as a space named <study>-<role>-<number>; None for a trial without one."""
    record = TrialRecord.of(trial)
    if not record.config:
        return None
    sections: dict[str, dict] = {"data": {}, "model": {}, "training": {}}
    for name, field in KNOBS.items():
        if name in record.config:
            sections[field.metadata["section"]][field.metadata["yaml"] or name] = record.config[name]
    # On a CPU the sums' blocking follows the thread count: the same count gives the same numbers.
    threads = {} if record.threads is None else {"threads": record.threads}
    return {"study": {"name": f"{study.study_name}-{role}-{trial.number}",
                      "question": f"Trial {trial.number} of study {study.study_name!r}, retrained as it ran.",
                      "metric": StudyRecord.of(study).metric, "n_trials": 1, "sampler": {"name": "random", "seed": 0},
                      "pruner": {"name": "none"}, "confirm": {"seeds": 0}, **threads},
            **sections, "params": {}}


def write_best(study: optuna.Study, folder: Path, best: optuna.trial.FrozenTrial | None) -> Path | None:
    """best.yaml in `folder` for `best`, the study's best trial (records.best_trial); None before the first
    complete trial, and an earlier report's best.yaml is removed (its winner is not this one's)."""
    path = folder / "best.yaml"
    space = None if best is None else trial_space(study, best, "best")
    if space is None:
        path.unlink(missing_ok=True)
        return None
    header = (f"# Question: trial {best.number} of study {study.study_name!r} ({record_value(best)}), every "
              f"setting fixed.\n# Retrain it: python -m study run <this file>\n{_alone(best)}")
    return _write(path, header, space)


def write_leader(study: optuna.Study, folder: Path, verdict: dict | None, best: optuna.trial.FrozenTrial | None,
                 trials: list[optuna.trial.FrozenTrial]) -> Path | None:
    """leader.yaml in `folder`: the candidate trial of the verdict's leading arm, where it is not `best`
    (best.yaml is that one); else None, and an earlier report's leader.yaml is removed. `trials`: the study's,
    as the caller read them."""
    from study.verdict import over_seeds

    path = folder / "leader.yaml"
    arm = other_leader(verdict, None if best is None else best.number)
    trial = None if arm is None else next(t for t in trials if t.number == arm["candidate"])
    space = None if trial is None else trial_space(study, trial, "leader")
    if space is None:
        path.unlink(missing_ok=True)
        return None
    header = (f"# Question: trial {trial.number} of study {study.study_name!r} ({record_value(trial)}), the "
              f"candidate of {arm['label']!r}, which leads the verdict\n# with {over_seeds(arm)}; "
              f"every setting fixed, its search seed included.\n# Retrain it: python -m study run <this file>\n"
              f"{_alone(trial)}")
    return _write(path, header, space)


def other_leader(verdict: dict | None, best: int | None) -> dict | None:
    """The verdict's leading arm (verdict.leader) where its candidate is another trial than `best`, the
    search's best trial's number: the config its seeds back, beside the one lucky seed the search picked."""
    from study.verdict import leader

    arm = leader(verdict)
    return arm if arm is not None and best is not None and arm["candidate"] != best else None


def _alone(trial: optuna.trial.FrozenTrial) -> str:
    """A header line for a trial trained in a population: alone, it is the same computation but for the
    order in which batched and single matmuls add."""
    engine = TrialRecord.of(trial).engine or {}
    if engine.get("name") != "population":
        return ""
    return (f"# It trained in a population of {engine.get('size', '?')}, as one fused model: retrained alone, its "
            "numbers agree up to float\n# rounding, which a chaotic config can carry as far as a new seed does.\n")


def _write(path: Path, header: str, space: dict) -> Path:
    from study.files import atomic_write_text

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
model = load_best({path})   # the best trial's network, its final weights, in eval mode
logits = model(x)              # x preprocessed as in training (the split's training statistics)"""
