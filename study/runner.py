"""Running a study to its target number of finished trials, resumably.

    summary = run_study(cfg, storage_url, torch.device("cpu"), checkpoint_root=Path("checkpoints"))
    print(summary.text())

The target counts finished trials (complete or pruned) in the storage, so rerunning the same
command only adds what is missing, and several processes on one storage share one target.
"""
from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from study.checkpoints import Checkpoints, atomic_save
from study.config import ConfigError, StudyConfig
from study.evaluation import evaluate_best_on_test
from study.paths import child
from study.pruners import make_pruner
from study.samplers import make_sampler
from study.storage import dashboard_command, open_storage
from study.trial import TrialContext, run_trial

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# The sections whose change makes a stored study a different experiment.
_EXPERIMENT_KEYS = ("data", "model", "training", "params")


class StudyStopped(Exception):
    """The run stopped itself (e.g. every first trial failed); the message says why."""


def create_or_load(cfg: StudyConfig, storage: optuna.storages.BaseStorage, storage_url: str) -> optuna.Study:
    s = cfg.study
    sampler = make_sampler(s.sampler, s.sampler_seed, s.sampler_options, cfg.grid_space())
    experiment = {k: cfg.raw.get(k) for k in _EXPERIMENT_KEYS}
    try:
        existing = optuna.load_study(study_name=s.name, storage=storage, sampler=sampler,
                                     pruner=make_pruner(s.pruner, s.pruner_options))
    except KeyError:
        existing = None
    if existing is not None:
        stored = existing.user_attrs.get("experiment")
        if stored is not None and stored != experiment:
            raise ConfigError(storage_url, "study.name", s.name,
                              "a study of this name with a different search space is already stored; "
                              "choose another --study-name")
        return existing
    study = optuna.create_study(storage=storage, study_name=s.name, direction=s.direction, sampler=sampler,
                                pruner=make_pruner(s.pruner, s.pruner_options), load_if_exists=True)
    for key, value in {"experiment": experiment, "space": cfg.raw, "source": cfg.source, "question": s.question,
                       "metric": s.metric, "scientific": list(cfg.scientific),
                       "dataset": cfg.defaults.dataset, "model": cfg.defaults.model}.items():
        study.set_user_attr(key, value)
    return study


def count(study: optuna.Study, states: tuple = FINISHED) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


@dataclass
class _Progress:
    """The callback that prints a line per finished trial, tracks failures and keeps the best weights."""

    cfg: StudyConfig
    target: int
    study_dir: Path
    quiet: bool
    bar: Any = None
    failures_in_a_row: int = 0
    stopped: str | None = None

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        # K failures in a row (the first K of a run among them) stop the run instead of burning the budget.
        self.failures_in_a_row = self.failures_in_a_row + 1 if trial.state == TrialState.FAIL else 0
        if self.failures_in_a_row >= self.cfg.study.max_initial_failures:
            self.stopped = (f"{self.failures_in_a_row} trials in a row failed; last error: "
                            f"{trial.user_attrs.get('error', trial.system_attrs.get('fail_reason', '?'))}")
            study.stop()
        if trial.state == TrialState.COMPLETE and _is_best(study, trial):
            save_best(study, self.study_dir)
        if count(study) >= self.target:
            study.stop()  # the global target: counted in the storage, shared by every worker
        if not self.quiet:
            self.bar.update(max(0, min(self.target, count(study)) - self.bar.n))
            best = _best_value(study)
            if best is not None:
                self.bar.set_postfix_str(f"best {self.cfg.study.metric}={best:.4g}")
            self.bar.write(trial_line(trial, self.cfg))


def _best_value(study: optuna.Study) -> float | None:
    try:
        return study.best_value
    except ValueError:
        return None


def _is_best(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
    try:
        return study.best_trial.number == trial.number
    except ValueError:
        return False


def save_best(study: optuna.Study, study_dir: Path) -> Path | None:
    """Copy the best trial's final weights and config to best.pt (from its last epoch checkpoint)."""
    try:
        best = study.best_trial
    except ValueError:
        return None
    state = Checkpoints(study_dir / f"trial-{best.user_attrs.get('first_number', best.number)}").latest()
    if state is None:
        return None
    path = study_dir / "best.pt"
    atomic_save({"model": state["model"], "config": state["config"], "trial": best.number,
                 "value": best.value, "history": state["history"]}, path)
    return path


def trial_line(trial: optuna.trial.FrozenTrial, cfg: StudyConfig) -> str:
    params = " ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items())
    state = trial.state.name.lower()
    if "diverged" in trial.user_attrs:
        state = "diverged"
    value = f"{cfg.study.metric}={trial.value:.4f}" if trial.value is not None else ""
    if trial.state == TrialState.PRUNED:
        history = trial.user_attrs.get("history") or [{}]
        last = history[-1].get(cfg.study.metric)
        value = f"{cfg.study.metric}={last:.4f} at epoch {history[-1].get('epoch')}" if last is not None else ""
    if trial.state == TrialState.FAIL:
        value = str(trial.user_attrs.get("error", trial.system_attrs.get("fail_reason", "")))[:200]
    return f"trial {trial.number:>4} {state:<9} {value}  {params}".rstrip()


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


@dataclass
class RunSummary:
    study: optuna.Study
    cfg: StudyConfig
    storage_url: str
    study_dir: Path
    stopped: str | None = None

    def counts(self) -> dict[str, int]:
        trials = self.study.get_trials(deepcopy=False)
        return {"complete": sum(t.state == TrialState.COMPLETE for t in trials),
                "pruned": sum(t.state == TrialState.PRUNED and "diverged" not in t.user_attrs for t in trials),
                "diverged": sum("diverged" in t.user_attrs for t in trials),
                "failed": sum(t.state == TrialState.FAIL for t in trials)}

    def text(self) -> str:
        c = self.counts()
        lines = [f"study {self.cfg.study.name!r}: {c['complete']} complete, {c['pruned']} pruned, "
                 f"{c['diverged']} diverged, {c['failed']} failed"]
        try:
            best = self.study.best_trial
        except ValueError:
            lines.append("no complete trial yet")
        else:
            final = (best.user_attrs.get("history") or [{}])[-1]
            metrics = ", ".join(f"{k}={final[k]:.4f}" for k in
                                ("val_loss", "val_accuracy", "val_precision", "val_recall", "val_f1") if k in final)
            lines.append(f"best trial {best.number}: {metrics}")
            lines.append("  params: " + (", ".join(f"{k}={_fmt(v)}" for k, v in best.params.items()) or "(none)"))
        if self.stopped:
            lines.append(f"stopped: {self.stopped}")
        lines.append(f"checkpoints: {self.study_dir}")
        lines.append(f"dashboard: {dashboard_command(self.storage_url)}")
        return "\n".join(lines)


def run_study(cfg: StudyConfig, storage_url: str, device: torch.device, *, checkpoint_root: Path,
              quiet: bool = False) -> RunSummary:
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own per-trial lines replace Optuna's
    storage = open_storage(storage_url)
    study = create_or_load(cfg, storage, storage_url)
    study_dir = child(checkpoint_root, cfg.study.name)
    study.set_user_attr("checkpoint_dir", str(study_dir))
    target = cfg.study.n_trials
    ctx = TrialContext(device, study_dir)
    progress = _Progress(cfg, target, study_dir, quiet)

    def objective(trial: optuna.Trial) -> float:
        try:
            return run_trial(trial, cfg, ctx)
        except (optuna.TrialPruned, KeyboardInterrupt):
            raise
        except Exception as exc:  # any failure of one trial is recorded and the study goes on
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            raise

    done = count(study)
    if done < target:
        if not quiet:
            from tqdm.auto import tqdm

            progress.bar = tqdm(total=target, initial=done, desc=cfg.study.name, unit="trial", file=sys.stderr)
        try:
            # No n_trials: the callback stops at the target, which failed trials do not count towards.
            study.optimize(objective, timeout=cfg.study.timeout, catch=(Exception,), callbacks=[progress])
        finally:
            if progress.bar is not None:
                progress.bar.close()
    if save_best(study, study_dir):
        evaluate_best_on_test(study, study_dir, device)
    return RunSummary(study, cfg, storage_url, study_dir, progress.stopped)
