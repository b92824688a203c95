"""Running a study to its target number of finished trials: resumable, parallel, crash-tolerant.

    >>> from study.config import load_config
    >>> cfg = load_config("quick", overrides=["study.n_trials=2", "training.budget=2"])
    >>> summary = run_study(cfg, "sqlite:///study.db", torch.device("cpu"), checkpoint_root=Path("checkpoints"),
    ...                     quiet=True)       # jobs=2 for two worker processes
    >>> summary.counts()["complete"] + summary.counts()["pruned"]
    2
    >>> [p.name for p in Path("checkpoints").rglob("*.pt")]    # finished trials keep only the best weights
    ['best.pt']
    >>> run_study(cfg, "sqlite:///study.db", torch.device("cpu"), checkpoint_root=Path("checkpoints"),
    ...           quiet=True).counts()["complete"]    # rerun: the target is met, nothing is added
    2

The target counts finished (complete or pruned) trials in the storage, so rerunning a command only adds
what is missing, and any number of processes on one storage, on any machines, share one target: each runs
worker.py's loop (the exact-target protocol) with a real trial plugged in. A retried trial, of a dead
worker or an interrupted one, resumes from its last epoch checkpoint.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch

from study import interrupts, records, stale, weights
from study.config import StudyConfig
from study.errors import ConfigError
from study.console import say
from study.evaluation import evaluate_best_on_test
from study.paths import study_dir
from study.records import best_trial
from study.storage import HEARTBEAT_S, has_heartbeat, open_storage
from study.studies import create_or_load, study_uid
from study.summary import RunSummary, trial_line
from study.trial import TrialContext, run_trial
from study.worker import Worker, count


def advance(bar: Any, study: optuna.Study, target: int) -> None:
    """Move the progress bar to the study's finished count: the storage, which every worker writes to."""
    bar.update(max(0, min(target, count(study)) - bar.n))


@dataclass
class _Printer:
    """After each trial: its weights kept or deleted, and its line printed (above the bar on a terminal)."""

    cfg: StudyConfig
    ctx: TrialContext
    quiet: bool
    bar: Any = None

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        try:
            problem = weights.finish_trial(study, trial, self.ctx, self.cfg.study.checkpoint_keep_best)
        except OSError as exc:  # a full disk here must not take the study down with it
            problem = f"keeping the weights of trial {trial.number} failed: {exc}"
        if self.quiet:
            return
        line = trial_line(trial, self.cfg.study.metric) + (f"\n  warning: {problem}" if problem else "")
        if self.bar is not None:
            advance(self.bar, study, self.cfg.study.n_trials)
            best = best_trial(study)
            if best is not None:
                self.bar.set_postfix_str(f"best {self.cfg.study.metric}={best.value:.4g}")
            with self.bar.external_write_mode():  # the bar steps aside on the terminal
                say(line)
        else:
            say(line)


def worker_for(cfg: StudyConfig, study: optuna.Study, ctx: TrialContext, quiet: bool, bar: Any = None) -> Worker:
    """The worker loop of worker.py with a real trial plugged in."""
    return Worker(study, cfg.study.n_trials, lambda trial: run_trial(trial, cfg, ctx),
                  _Printer(cfg, ctx, quiet, bar), cfg.study.max_initial_failures)


def run_worker(cfg: StudyConfig, storage_url: str, device: torch.device, checkpoint_root: Path, *,
               quiet: bool, heartbeat_s: int = HEARTBEAT_S, threads: int | None = None, bar: Any = None,
               timeout: float | None = None, worker: int = 0) -> str | None:
    """Work on the study until its target is met; returns why it stopped early, if it did."""
    deadline = None if timeout is None else time.monotonic() + timeout
    _quiet_optuna()
    if threads:
        torch.set_num_threads(threads)  # N workers share the cores instead of fighting over them
    storage = open_storage(storage_url, heartbeat_s)
    study = create_or_load(cfg, storage, storage_url, worker)
    ctx = context(cfg, study, device, checkpoint_root)
    worker = worker_for(cfg, study, ctx, quiet, bar)
    rounds = None
    if cfg.study.engine == "population":
        from study.pool import PooledRounds

        rounds = PooledRounds(worker, cfg, ctx).round
    try:
        worker.run(deadline, rounds)
    finally:
        ctx.cache.clear()  # the device memory goes back with the worker's last trial
    return worker.stopped


def context(cfg: StudyConfig, study: optuna.Study, device: torch.device, checkpoint_root: Path) -> TrialContext:
    uid = study_uid(study)
    try:
        folder = study_dir(checkpoint_root, cfg.study.name, uid)
    except ValueError:  # the study's folder is a symbolic link out of the root
        raise ConfigError("--checkpoint-dir", "checkpoint-dir", str(checkpoint_root),
                          "the study's folder there is a symbolic link out of it; refusing to write through it"
                          ) from None
    return TrialContext(device, folder, uid, keep=cfg.study.checkpoint_keep)


def _quiet_optuna() -> None:
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own per-trial lines replace Optuna's


def run_study(cfg: StudyConfig, storage_url: str, device: torch.device, *, checkpoint_root: Path,
              quiet: bool = False, jobs: int = 1, heartbeat_s: int = HEARTBEAT_S,
              retry_stale: bool = False) -> RunSummary:
    """Run `jobs` worker processes on the study, or this process alone for jobs=1. Ctrl-C and SIGTERM
    stop every worker at its next step; then KeyboardInterrupt is raised here."""
    _quiet_optuna()
    started = time.monotonic()
    storage = open_storage(storage_url, heartbeat_s)
    with interrupts.handled():
        study = create_or_load(cfg, storage, storage_url)  # once here, so that workers never race to create it
        ctx = context(cfg, study, device, checkpoint_root)
        records.write_study(study, checkpoint_dir=str(ctx.checkpoint_dir))
        notes = []
        if retry_stale and not has_heartbeat(storage):
            retried = stale.retry_stale(study)
            notes.append(f"--retry-stale: failed and re-queued {len(retried)} trial(s) {retried}")
        bar = None
        if not quiet and count(study) < cfg.study.n_trials:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.study.n_trials, initial=count(study), desc=cfg.study.name, unit="trial",
                       disable=None)  # drawn on a terminal only: a log gets the per-trial lines, no \r
        try:
            if jobs == 1:
                stopped = run_worker(cfg, storage_url, device, checkpoint_root, quiet=quiet, heartbeat_s=heartbeat_s,
                                     bar=bar, timeout=cfg.study.timeout)
            else:
                from study.parallel import run_parallel

                stopped = run_parallel(cfg, storage_url, device, checkpoint_root, quiet=quiet, jobs=jobs,
                                       heartbeat_s=heartbeat_s, bar=bar, study=study)
        finally:
            if bar is not None:
                bar.close()
        interrupts.check()
        timed_out = cfg.study.timeout is not None and time.monotonic() - started >= cfg.study.timeout
        finished = count(study)
        if finished >= cfg.study.n_trials and stopped:
            notes.append(stopped)  # e.g. a worker was killed, but others finished the study
            stopped = None
        elif stopped is None and not timed_out and finished < cfg.study.n_trials:
            stopped = f"the study holds {finished} of {cfg.study.n_trials} finished trials"
        notes += _keep_best_weights(study, ctx)
    return RunSummary(study, cfg, storage_url, ctx.checkpoint_dir, stopped, tuple(notes))


def _keep_best_weights(study: optuna.Study, ctx: TrialContext) -> list[str]:
    """best.pt, the test-split evaluation, and no epoch checkpoints of finished trials; problems are
    reported, never fatal."""
    notes = []
    try:
        problem = weights.save_best(study, ctx)
        if problem:
            notes.append(problem)
        elif (ctx.checkpoint_dir / weights.BEST).is_file():
            problem = evaluate_best_on_test(study, ctx.checkpoint_dir, ctx.device)
            if problem:
                notes.append(problem)
        weights.sweep(study, ctx)
    except OSError as exc:
        notes.append(str(exc))
    return notes
