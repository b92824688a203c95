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

import dataclasses
import functools
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
import torch

from study import confirm, engines, interrupts, records, stale, weights
from study.config import StudyConfig
from study.errors import ConfigError
from study.console import say
from study.evaluation import evaluate_best_on_test
from study.paths import study_dir
from study.records import best_trial
from study.storage import HEARTBEAT_S, has_heartbeat, open_storage
from study.studies import create_or_load, study_uid
from study.summary import RunSummary, trial_line
from study.threads import oversubscribed, share
from study.trial import TrialContext, run_trial
from study.worker import POLL_S, Worker, count, past


def advance(bar: Any, study: optuna.Study, target: int, phase: str = "search") -> None:
    """Move the progress bar to the phase's finished count: the storage, which every worker writes to."""
    bar.update(max(0, min(target, count(study, phase=phase)) - bar.n))


@dataclass
class _Printer:
    """After each trial: its weights kept or deleted, and its line printed (above the bar on a terminal).
    Each storage read re-reads every running trial (Optuna caches finished ones only), so with a
    population of K running, a read per told trial costs K: the bar and the best are read sparingly."""

    cfg: StudyConfig
    ctx: TrialContext
    quiet: bool
    bar: Any = None
    phase: str = "search"
    best: optuna.trial.FrozenTrial | None = None  # the search's best, as last read
    synced: float = -math.inf  # when the bar last followed the storage

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        best = self._best(study, trial)
        try:
            problem = weights.finish_trial(study, trial, self.ctx, self.cfg.study.checkpoint_keep_best, best)
        except OSError as exc:  # a full disk here must not take the study down with it
            problem = f"keeping the weights of trial {trial.number} failed: {exc}"
        if self.quiet:
            return
        line = trial_line(trial, self.cfg.study.metric) + (f"\n  warning: {problem}" if problem else "")
        if self.bar is not None:
            self._advance(study, trial)
            if best is not None:
                self.bar.set_postfix_str(f"best {self.cfg.study.metric}={best.value:.4g}")
            with self.bar.external_write_mode():  # the bar steps aside on the terminal
                say(line)
        else:
            say(line)

    def _advance(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """This worker's finished trial moves the bar; other workers' (on other machines) are read from the
        storage, at most once per POLL_S."""
        if time.monotonic() - self.synced >= POLL_S:
            advance(self.bar, study, self.cfg.study.n_trials, self.phase)
            self.synced = time.monotonic()
        elif (trial.state in records.FINISHED_STATES and records.phase_of(trial) == self.phase
              and self.bar.n < self.cfg.study.n_trials):
            self.bar.update(1)

    def _best(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> optuna.trial.FrozenTrial | None:
        """The search's best trial, for the told trial's weights and the bar: read when a search trial
        completes (it may be the new best), else the last one read. Confirmation runs never change it
        (best_trial leaves them out): the confirmation phase reads it once, for a bar."""
        if self.phase == "search" and trial.state == TrialState.COMPLETE:
            self.best = best_trial(study)
        elif self.best is None and self.bar is not None:
            self.best = best_trial(study)
        return self.best


def worker_for(cfg: StudyConfig, study: optuna.Study, ctx: TrialContext, quiet: bool, bar: Any = None,
               phase: str = "search", wake: Any = None) -> Worker:
    """The worker loop of worker.py with a real trial plugged in."""
    return Worker(study, cfg.study.n_trials, lambda trial: run_trial(trial, cfg, ctx),
                  _Printer(cfg, ctx, quiet, bar, phase), cfg.study.max_initial_failures, phase=phase, wake=wake)


def run_worker(cfg: StudyConfig, storage_url: str, device: torch.device, checkpoint_root: Path, *,
               quiet: bool, heartbeat_s: int = HEARTBEAT_S, bar: Any = None, deadline: float | None = None,
               worker: int = 0, jobs: int = 1, phase: str = "search", wake: Any = None) -> str | None:
    """Work on the study until its target is met or `deadline` (time.monotonic(), the same clock in every
    process of a machine) has passed; returns why it stopped early, if it did. `jobs`: the workers sharing
    this machine's cores; `wake`: the Event that --jobs N's workers share (worker.py)."""
    _quiet_optuna()
    storage = open_storage(storage_url, heartbeat_s, reached=True)
    study = create_or_load(cfg, storage, storage_url, worker)
    # N workers share the cores instead of fighting over them; a small trial takes one (threads.py).
    fixed = cfg.study.threads is not None  # --threads: exactly that many, whatever a trial's size
    ctx = dataclasses.replace(context(cfg, study, device, checkpoint_root),
                              threads=cfg.study.threads or share(jobs), fixed_threads=fixed, jobs=jobs)
    if fixed or jobs > 1:
        torch.set_num_threads(ctx.threads)
    worker = worker_for(cfg, study, ctx, quiet, bar, phase, wake)
    if cfg.study.engine == "auto" or not cfg.study.population:
        cfg = planned(cfg, engines.choose(cfg, device, phase))
    rounds = None
    if cfg.study.engine == "population":
        from study.pool import PooledRounds

        rounds = PooledRounds(worker, cfg, ctx).round
    try:
        worker.run(deadline, rounds)
    finally:
        ctx.cache.clear()  # the device memory goes back with the worker's last trial
    return worker.stopped


def planned(cfg: StudyConfig, plan: engines.EnginePlan) -> StudyConfig:
    """cfg with its engine and population size as one phase's plan chose them (`auto` resolved)."""
    return dataclasses.replace(cfg, study=dataclasses.replace(cfg.study, engine=plan.engine, population=plan.size))


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
              retry_stale: bool = False, search: bool = True) -> RunSummary:
    """Run `jobs` worker processes on the study, or this process alone for jobs=1: the search to its
    target, then the confirmation runs (search=False: those alone, on what the search has found).
    cfg.study.threads fixes each worker's intra-op threads (None: a small trial takes one, a larger one its
    worker's share of the cores). Ctrl-C and SIGTERM stop every worker at its next step; then
    KeyboardInterrupt is raised."""
    _quiet_optuna()
    # --timeout counts from the command's start, for every phase and every worker
    deadline = None if cfg.study.timeout is None else time.monotonic() + cfg.study.timeout
    crowded = oversubscribed(cfg.study.threads, jobs) if device.type == "cpu" else None
    if crowded and not quiet:
        say(f"warning: {crowded}")  # now, while stopping costs nothing; the summary repeats it
    if jobs > 1:
        from study.parallel import start_server

        start_server()  # the workers' imports, beside this process's set-up
    storage = open_storage(storage_url, heartbeat_s, reached=True)
    with interrupts.handled():
        study = create_or_load(cfg, storage, storage_url)  # once here, so that workers never race to create it
        ctx = context(cfg, study, device, checkpoint_root)
        records.write_study(study, checkpoint_dir=str(ctx.checkpoint_dir))
        notes = [crowded] if crowded else []
        if retry_stale and not has_heartbeat(storage):
            retried = stale.retry_stale(study)
            notes.append(f"--retry-stale: failed and re-queued {len(retried)} trial(s) {retried}")
        run = functools.partial(_run_phase, storage_url=storage_url, device=device, checkpoint_root=checkpoint_root,
                                quiet=quiet, jobs=jobs, heartbeat_s=heartbeat_s, study=study, deadline=deadline)
        stopped = run(cfg) if search else None
        timed_out = past(deadline)
        finished = count(study)
        if finished >= cfg.study.n_trials and stopped:
            notes.append(stopped)  # e.g. a worker was killed, but others finished the study
            stopped = None
        elif stopped is None and not timed_out and finished < cfg.study.n_trials:
            stopped = f"the study holds {finished} of {cfg.study.n_trials} finished trials"
            if not search:  # `study confirm`: the arms' candidates are not final before the search is
                stopped += (" of its search, which must reach them before its arms are confirmed; `study run` with "
                            "its space and name finishes the search, then confirms")
        if stopped is None and not timed_out and confirms(cfg) and confirm.is_ready(study, cfg.study.n_trials):
            s, runs = cfg.study, []
            mode = confirm.varies_split(records.StudyRecord.of(study).confirm_plan)
            if mode is not None and mode != s.confirm_vary_split:
                notes.append(f"vary_split {str(s.confirm_vary_split).lower()} is not applied: this study's "
                             f"confirmation runs were planned with vary_split {str(mode).lower()}, which all its runs "
                             "keep, so that no arm mixes both")
            # the first runs, then (when some arm chose among several candidates) the verification runs
            while stopped is None and len(grown := confirm.queue(study, s.confirm_top, s.confirm_seeds,
                                                                 s.confirm_vary_split, cfg.defaults.seed)) > len(runs):
                runs = grown
                stopped = run(dataclasses.replace(cfg, study=dataclasses.replace(s, n_trials=len(runs))),
                              phase="confirm")
            notes += confirm.fewer_than_planned(study, runs, s.confirm_top, s.confirm_seeds)
        if past(deadline):  # the confirmation runs may have met it
            notes += _cut_short(study, cfg, finished if search else None)
        _record_verdict(study)
        notes += _record_diagnostics(study, cfg)
        notes += _keep_best_weights(study, ctx)
    return RunSummary(study, cfg, storage_url, ctx.checkpoint_dir, stopped, tuple(notes))


def _run_phase(cfg: StudyConfig, *, storage_url: str, device: torch.device, checkpoint_root: Path, quiet: bool,
               jobs: int, heartbeat_s: int, study: optuna.Study, deadline: float | None,
               phase: str = "search") -> str | None:
    """One phase's workers (the search's, then the confirmation runs'), with a progress bar on a terminal."""
    bar = None
    done = count(study, phase=phase)
    # a confirmation phase's K and line count the runs left (a second round, a resumed phase), not its total
    left = cfg if phase == "search" else dataclasses.replace(
        cfg, study=dataclasses.replace(cfg.study, n_trials=max(1, cfg.study.n_trials - done)))
    graphs = engines.run_graphs(records.trials(study)) if phase == "confirm" else None
    plan = engines.choose(left, device, phase, jobs, graphs)
    cfg = planned(cfg, plan)  # the workers follow the plan
    if not quiet and done < cfg.study.n_trials:
        say(f"{'search' if phase == 'search' else 'confirmation runs'}: {plan.line()}")
    if not quiet and done < cfg.study.n_trials:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.study.n_trials, initial=done, unit="trial", disable=None,  # a log gets lines, no \r
                   desc=cfg.study.name if phase == "search" else f"{cfg.study.name} (confirming)")
    try:
        if jobs == 1:
            return run_worker(cfg, storage_url, device, checkpoint_root, quiet=quiet, heartbeat_s=heartbeat_s,
                              bar=bar, deadline=deadline, phase=phase)
        from study.parallel import run_parallel

        return run_parallel(cfg, storage_url, device, checkpoint_root, quiet=quiet, jobs=jobs,
                            heartbeat_s=heartbeat_s, bar=bar, study=study, deadline=deadline, phase=phase)
    finally:
        if bar is not None:
            bar.close()
        interrupts.check()


def _cut_short(study: optuna.Study, cfg: StudyConfig, searched: int | None) -> list[str]:
    """What --timeout left undone, for the summary: a timeout is no failure, but a study short of its
    target should not pass for a finished one. `searched`: the search's finished trials, None for `study
    confirm`, which runs no search."""
    left = []
    if searched is not None and searched < cfg.study.n_trials:
        left.append(f"the search holds {searched} of {cfg.study.n_trials} finished trials")
    if waiting := count(study, states=(TrialState.WAITING,), phase="confirm"):
        left.append(f"{waiting} confirmation run{'s' * (waiting != 1)} did not start")
    if not left:
        return []
    return [f"timeout: no trial started after {cfg.study.timeout:g} s; {' and '.join(left)}; the same command "
            "adds the rest"]


def confirms(cfg: StudyConfig) -> bool:
    """Whether the study has a confirmation phase: a search that chose configs, and seeds to retrain its
    arms' best with. A space without scientific params is one arm, so its best config's confirmed value
    replaces one lucky seed's; a space that searches nothing chose nothing."""
    return cfg.study.confirm_seeds > 0 and bool(cfg.params)


def _record_verdict(study: optuna.Study) -> None:
    """The verdict, from the confirmation runs so far, stored with the study for other tools to read."""
    from study.verdict import decide

    record = records.StudyRecord.of(study)
    found = decide(records.trials(study), record.scientific, study.direction.name.lower(), record.metric)
    if found is not None:
        records.write_study(study, verdict=found)


def _record_diagnostics(study: optuna.Study, cfg: StudyConfig) -> list[str]:
    """Per (init, activation) the study tried, the gradient norms of the first iterations: computed once
    here, where training happens, and drawn by every report after."""
    if "init" not in cfg.params:
        return []
    from study.report.diagnostics import gradient_data
    from study.report.tables import trials_frame

    try:
        rows = gradient_data(trials_frame(records.trials(study)))
    except Exception as exc:  # a diagnostic must never cost the study
        return [f"the gradient diagnostic failed: {type(exc).__name__}: {exc}"]
    records.write_study(study, diagnostics={"gradients": rows.to_dict("records")})
    return []


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
