"""What a study keeps on disk once its trials finish: best.pt, the best few trials' final weights if
asked, and nothing else.

The runner calls `finish_trial` after each trial (its epoch checkpoints go; best.pt is written from them if
it is the best) and `sweep` at the end of a run (every finished trial's checkpoints go); runner.py's
example shows what remains: best.pt.

A trial's epoch checkpoints exist so that a retry can resume it; once it has finished (or failed for
good) they are deleted. An interrupted trial keeps them: its queued retry resumes from them.
"""
from __future__ import annotations

import optuna
from optuna.trial import TrialState

from study.config import Direction
from study.checkpoints import Checkpoints, atomic_save, try_load
from study.paths import trial_dir
from study.records import TrialRecord, best_trial, first_number
from study.trial import TrialContext, trial_checkpoints

BEST = "best.pt"
FINAL = "final.pt"  # a kept trial's final weights, in its trial folder
_OPEN = (TrialState.RUNNING, TrialState.WAITING)


def _checkpoints(ctx: TrialContext, trial: optuna.trial.FrozenTrial) -> Checkpoints:
    return trial_checkpoints(ctx, trial, TrialRecord.of(trial).config or None)


def _final_state(ctx: TrialContext, trial: optuna.trial.FrozenTrial) -> tuple[dict | None, str | None]:
    ck = _checkpoints(ctx, trial)
    state = ck.latest()
    if state is not None:
        return state, None
    kept, _ = try_load(ck.folder / FINAL)
    if isinstance(kept, dict) and kept.get("trial") == trial.number:
        return kept, None
    why = "; ".join(ck.warnings) or "no checkpoint of it on this machine"
    return None, f"the weights of trial {trial.number} are not available ({why})"


def save_best(study: optuna.Study, ctx: TrialContext, best: optuna.trial.FrozenTrial | None = None) -> str | None:
    """Write best.pt for the study's best trial (`best`, when the caller has just read it) unless it is
    already there; return a problem, if any."""
    best = best or best_trial(study)
    if best is None:
        return None
    path = ctx.checkpoint_dir / BEST
    stored, _ = try_load(path) if path.is_file() else (None, None)
    if isinstance(stored, dict) and stored.get("trial") == best.number:
        return None
    state, problem = _final_state(ctx, best)
    if state is None:
        return f"best.pt not written: {problem}"
    atomic_save({"model": state["model"], "config": state["config"], "trial": best.number,
                 "value": best.value, "history": state["history"]}, path)
    return None


def finish_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, ctx: TrialContext, keep_best: int,
                 best: optuna.trial.FrozenTrial | None = None) -> str | None:
    """Called once a trial has ended: best.pt if it is the best (`best`: the study's best trial now, if
    the caller has read it), its final weights if among the best `keep_best`, then its epoch checkpoints
    are deleted (unless it waits for a retry)."""
    if TrialRecord.of(trial).interrupted:
        return None  # its retry resumes from these
    problem = None
    if trial.state == TrialState.COMPLETE:
        if not TrialRecord.of(trial).confirm:  # best_trial leaves confirmation runs out: no read for them
            best = best or best_trial(study)
            if best is not None and best.number == trial.number:
                problem = save_best(study, ctx, best)
        if keep_best:
            _keep_final(study, trial, ctx, keep_best)
    _checkpoints(ctx, trial).clear()
    return problem


def _keep_final(study: optuna.Study, trial: optuna.trial.FrozenTrial, ctx: TrialContext, keep_best: int) -> None:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    ascending = Direction(study.direction.name.lower()).ascending
    ranked = sorted(complete, key=lambda t: t.value, reverse=not ascending)
    kept = {t.number for t in ranked[:keep_best]}
    if trial.number in kept:
        state, _ = _final_state(ctx, trial)
        if state is not None:
            atomic_save({"model": state["model"], "config": state["config"], "trial": trial.number,
                         "value": trial.value}, trial_dir(ctx.checkpoint_dir, first_number(trial)) / FINAL)
    for t in ranked[keep_best:]:
        (trial_dir(ctx.checkpoint_dir, first_number(t)) / FINAL).unlink(missing_ok=True)


def sweep(study: optuna.Study, ctx: TrialContext) -> None:
    """Delete the epoch checkpoints of every trial that has ended and waits for no retry."""
    trials = study.get_trials(deepcopy=False)
    open_firsts = {first_number(t) for t in trials if t.state in _OPEN}
    for t in trials:
        first = first_number(t)
        if t.state not in _OPEN and first not in open_firsts and not TrialRecord.of(t).interrupted:
            folder = trial_dir(ctx.checkpoint_dir, first)
            if folder.is_dir():
                Checkpoints(folder).clear()
