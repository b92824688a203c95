"""Running a study to its target number of finished trials: resumable, parallel, crash-tolerant.

    summary = run_study(cfg, "sqlite:///study.db", torch.device("cpu"), checkpoint_root=Path("checkpoints"),
                        jobs=2)
    print(summary.text())

The target counts finished (complete or pruned) trials in the storage, so rerunning a command only adds
what is missing, and any number of processes on one storage, on any machines, share one target.

Exactness without a lock: Optuna numbers trials atomically, and a trial runs only if fewer than `target`
trials with lower numbers are finished, running or waiting. The lowest unfinished trial always runs; a
trial that loses a race at the very end is marked `surplus` and failed, which no count includes.
Dead workers' trials are found by Optuna's heartbeat and retried; an interrupted trial (Ctrl-C, SIGTERM)
is failed, marked `interrupted`, and queued again. Both retries resume from the trial's last epoch
checkpoint.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
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
from study.states import counts as count_statuses
from study.states import status_of
from study.storage import HEARTBEAT_S, dashboard_command, has_heartbeat, open_storage
from study.trial import TrialContext, run_trial

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
TAKEN = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
POLL_S = 1.0  # how often an idle worker looks again for trials to retry
# The sections whose change makes a stored study a different experiment.
_EXPERIMENT_KEYS = ("data", "model", "training", "params")


class Surplus(Exception):
    """This trial would take the study past its target; it is failed and not counted."""


def create_or_load(cfg: StudyConfig, storage: optuna.storages.BaseStorage, storage_url: str,
                   worker: int = 0) -> optuna.Study:
    s = cfg.study
    experiment = {k: cfg.raw.get(k) for k in _EXPERIMENT_KEYS}
    try:
        existing = optuna.load_study(study_name=s.name, storage=storage,
                                     pruner=make_pruner(s.pruner, s.pruner_options))
    except KeyError:
        existing = None
    if existing is not None:
        stored = existing.user_attrs.get("experiment")
        if stored is not None and stored != experiment:
            raise ConfigError(storage_url, "study.name", s.name,
                              "a study of this name with a different search space is already stored; "
                              "choose another --study-name")
        existing.sampler = _sampler(cfg, worker, len(existing.get_trials(deepcopy=False)))
        return existing
    sampler = _sampler(cfg, worker, 0)
    study = optuna.create_study(storage=storage, study_name=s.name, direction=s.direction, sampler=sampler,
                                pruner=make_pruner(s.pruner, s.pruner_options), load_if_exists=True)
    if "experiment" not in study.user_attrs:  # another worker may have created it a moment ago
        for key, value in {"experiment": experiment, "space": cfg.raw, "source": cfg.source,
                           "question": s.question, "metric": s.metric, "scientific": list(cfg.scientific),
                           "dataset": cfg.defaults.dataset, "model": cfg.defaults.model}.items():
            study.set_user_attr(key, value)
    return study


def _sampler(cfg: StudyConfig, worker: int, n_trials_before: int) -> optuna.samplers.BaseSampler:
    """The study's sampler, seeded apart for each worker of a run and each resumption: with the same
    seed, the workers (and a resumed run's random start-up trials) would propose the same params again."""
    s = cfg.study
    seed = None if s.sampler_seed is None else s.sampler_seed + worker + 7919 * n_trials_before
    return make_sampler(s.sampler, seed, s.sampler_options, cfg.grid_space())


def count(study: optuna.Study, states: tuple = FINISHED) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


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


def trial_line(trial: optuna.trial.FrozenTrial, metric: str) -> str:
    params = " ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items())
    state = status_of(trial)
    value = f"{metric}={trial.value:.4f}" if trial.value is not None else ""
    if trial.state == TrialState.PRUNED:
        history = trial.user_attrs.get("history") or [{}]
        last = history[-1].get(metric)
        value = f"{metric}={last:.4f} at epoch {history[-1].get('epoch')}" if last is not None else ""
    if state == "failed":
        value = str(trial.user_attrs.get("error", trial.system_attrs.get("fail_reason", "")))[:200]
    resumed = trial.user_attrs.get("resumed")
    if resumed:
        value += f" (resumed trial {resumed['from_trial']} at epoch {resumed['from_epoch']})"
    return f"trial {trial.number:>4} {state:<11} {value}  {params}".rstrip()


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


@dataclass
class _Worker:
    """One process's share of the study: start trials while the target has room, then stop."""

    cfg: StudyConfig
    study: optuna.Study
    ctx: TrialContext
    quiet: bool
    bar: Any = None
    failures_in_a_row: int = 0
    stopped: str | None = None

    @property
    def target(self) -> int:
        return self.cfg.study.n_trials

    def objective(self, trial: optuna.Trial) -> float:
        taken = [t for t in self.study.get_trials(deepcopy=False, states=TAKEN) if t.number < trial.number]
        if len(taken) >= self.target:
            trial.set_user_attr("surplus", True)
            raise Surplus(f"the study already has {self.target} trials finished, running or queued")
        try:
            return run_trial(trial, self.cfg, self.ctx)
        except (optuna.TrialPruned, Surplus):
            raise
        except KeyboardInterrupt:
            # Stopped cleanly: failed and marked, and queued again so the next run resumes it.
            trial.set_user_attr("interrupted", True)
            self.study.enqueue_trial(trial.params, user_attrs={
                "first_number": trial.user_attrs.get("first_number", trial.number)})
            raise
        except Exception as exc:  # any failure of one trial is recorded and the study goes on
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            raise

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if status_of(trial) == "surplus":
            return
        # K failures in a row (the first K of a run among them) stop the run instead of burning the budget.
        self.failures_in_a_row = self.failures_in_a_row + 1 if trial.state == TrialState.FAIL else 0
        if self.failures_in_a_row >= self.cfg.study.max_initial_failures:
            self.stopped = (f"{self.failures_in_a_row} trials in a row failed; last error: "
                            f"{trial.user_attrs.get('error', trial.system_attrs.get('fail_reason', '?'))}")
        if trial.state == TrialState.COMPLETE and _is_best(study, trial):
            save_best(study, self.ctx.checkpoint_dir)
        if not self.quiet:
            line = trial_line(trial, self.cfg.study.metric)
            if self.bar is not None:
                self.bar.update(max(0, min(self.target, count(study)) - self.bar.n))
                best = _best_value(study)
                if best is not None:
                    self.bar.set_postfix_str(f"best {self.cfg.study.metric}={best:.4g}")
                self.bar.write(line)
            else:
                print(line, flush=True)

    def run(self, heartbeat: bool, deadline: float | None) -> None:
        while self.stopped is None and (deadline is None or time.monotonic() < deadline):
            if heartbeat:
                optuna.storages.fail_stale_trials(self.study)  # dead workers' trials: failed, queued again
            trials = self.study.get_trials(deepcopy=False, states=TAKEN)
            states = [t.state for t in trials]
            finished = sum(s in FINISHED for s in states)
            waiting = states.count(TrialState.WAITING)
            if finished >= self.target:
                return
            if len(trials) < self.target or waiting:
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                self.study.optimize(self.objective, n_trials=1, timeout=timeout, catch=(Exception,),
                                    callbacks=[self.after_trial])
            elif heartbeat and TrialState.RUNNING in states:
                time.sleep(POLL_S)  # a running trial may yet die and need a retry
            else:
                return


def _best_value(study: optuna.Study) -> float | None:
    try:
        return study.best_value
    except ValueError:
        return None


def run_worker(cfg: StudyConfig, storage_url: str, device: torch.device, checkpoint_root: Path, *,
               quiet: bool, heartbeat_s: int = HEARTBEAT_S, threads: int | None = None, bar: Any = None,
               timeout: float | None = None, worker: int = 0) -> str | None:
    """Work on the study until its target is met; returns why it stopped early, if it did."""
    deadline = None if timeout is None else time.monotonic() + timeout
    _quiet_optuna()
    if threads:
        torch.set_num_threads(threads)  # N workers share the cores instead of fighting over them
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if main_thread else None  # SIGTERM acts as Ctrl-C
    try:
        storage = open_storage(storage_url, heartbeat_s)
        study = create_or_load(cfg, storage, storage_url, worker)
        study_dir = child(checkpoint_root, cfg.study.name)
        state = _Worker(cfg, study, TrialContext(device, study_dir), quiet, bar)
        state.run(has_heartbeat(storage), deadline)
        return state.stopped
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _quiet_optuna() -> None:
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own per-trial lines replace Optuna's


@dataclass
class RunSummary:
    study: optuna.Study
    cfg: StudyConfig
    storage_url: str
    study_dir: Path
    stopped: str | None = None

    def counts(self) -> dict[str, int]:
        c = count_statuses(self.study.get_trials(deepcopy=False))
        return {k: c[k] for k in ("complete", "pruned", "diverged", "failed", "interrupted")}

    def text(self) -> str:
        c = self.counts()
        lines = [f"study {self.cfg.study.name!r}: {c['complete']} complete, {c['pruned']} pruned, "
                 f"{c['diverged']} diverged, {c['failed']} failed"
                 + (f", {c['interrupted']} interrupted" if c["interrupted"] else "")]
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
              quiet: bool = False, jobs: int = 1, heartbeat_s: int = HEARTBEAT_S) -> RunSummary:
    """Run `jobs` worker processes (joblib) on the study, or this process alone for jobs=1."""
    _quiet_optuna()
    storage = open_storage(storage_url, heartbeat_s)
    study = create_or_load(cfg, storage, storage_url)  # once here, so that workers never race to create it
    study_dir = child(checkpoint_root, cfg.study.name)
    study.set_user_attr("checkpoint_dir", str(study_dir))
    bar = None
    if not quiet and count(study) < cfg.study.n_trials:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.study.n_trials, initial=count(study), desc=cfg.study.name, unit="trial", file=sys.stderr)
    try:
        if jobs == 1:
            stopped = run_worker(cfg, storage_url, device, checkpoint_root, quiet=quiet, heartbeat_s=heartbeat_s,
                                 bar=bar, timeout=cfg.study.timeout)
        else:
            stopped = _run_parallel(cfg, storage_url, device, checkpoint_root, quiet, jobs, heartbeat_s, bar, study)
    finally:
        if bar is not None:
            bar.close()
    if save_best(study, study_dir):
        evaluate_best_on_test(study, study_dir, device)
    return RunSummary(study, cfg, storage_url, study_dir, stopped)


def _run_parallel(cfg: StudyConfig, storage_url: str, device: torch.device, checkpoint_root: Path, quiet: bool,
                  jobs: int, heartbeat_s: int, bar: Any, study: optuna.Study) -> str | None:
    from joblib import Parallel, delayed

    threads = max(1, (os.cpu_count() or 1) // jobs)
    done = threading.Event()

    def follow() -> None:  # the bar follows the storage, which every worker writes to
        while not done.wait(POLL_S):
            bar.update(max(0, min(cfg.study.n_trials, count(study)) - bar.n))

    follower = threading.Thread(target=follow, daemon=True) if bar is not None else None
    if follower:
        follower.start()
    try:
        reasons = Parallel(n_jobs=jobs, backend="loky")(
            delayed(run_worker)(cfg, storage_url, device, checkpoint_root, quiet=quiet, heartbeat_s=heartbeat_s,
                                threads=threads, timeout=cfg.study.timeout, worker=i)
            for i in range(jobs))
    finally:
        done.set()
    return next((r for r in reasons if r), None)
