"""One worker's share of a study: ask for a trial while the target has room, run it under a heartbeat,
tell the result. Training is plugged in, so this module imports no torch: the runner plugs in a real
trial, and the load simulation (benchmarks/bench_workers.py) a seeded sleep with a loss curve.

    >>> study = optuna.create_study()
    >>> def objective(trial):
    ...     report_epochs(trial, [{"epoch": 0, "val_loss": 0.5}, {"epoch": 1, "val_loss": 0.25}], "val_loss", set())
    ...     return 0.25
    >>> Worker(study, target=3, objective=objective).run()
    >>> [t.value for t in study.trials]
    [0.25, 0.25, 0.25]

Exactness without a lock: Optuna numbers trials atomically, and a trial runs only if fewer than `target`
trials with lower numbers are finished, running or waiting. The lowest unfinished trial always runs; a
trial that loses a race at the very end is marked `surplus` and failed, which no count includes, and so is
a second copy of a confirmation run that two processes queued at once.
Dead workers' trials are retried: at once where the worker ran on this machine, elsewhere when the
storage's heartbeat finds them; an interrupted trial (Ctrl-C, SIGTERM) is failed, marked `interrupted`,
and queued again.
"""
from __future__ import annotations

import bisect
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from study import interrupts, records, stale
from study.heartbeat import heartbeat
from study.records import FINISHED_STATES, TAKEN_STATES
from study.storage import has_heartbeat

POLL_S = 1.0  # the longest an idle worker waits before it looks again for trials to retry
FIRST_POLL_S = 0.05  # its first wait, doubled each time: at a phase's end the others' last trials finish soon
MAX_FAILURES = 5  # failures in a row that stop a worker instead of burning the budget


def report_epochs(trial: optuna.Trial, epochs: list[dict], metric: str, reported: set[int],
                  prune: bool = True) -> None:
    """Report each epoch's `metric` not reported yet (a resumed trial also reports the epochs before its
    checkpoint), then prune if the pruner says so (never a confirmation run: `prune` is False). One
    intermediate value per epoch is all this writes."""
    for record in epochs:
        if record["epoch"] not in reported:
            trial.report(record[metric], record["epoch"])
            reported.add(record["epoch"])
    if prune and trial.should_prune():
        raise optuna.TrialPruned(f"pruned at epoch {epochs[-1]['epoch']}")


def count(study: optuna.Study, states: tuple = FINISHED_STATES, phase: str = "search") -> int:
    """The study's trials of one phase in these states (search trials and confirmation runs have each
    their own target)."""
    return len(_runs(_of_phase(study.get_trials(deepcopy=False, states=states), phase)))


def _of_phase(trials: list[FrozenTrial], phase: str) -> list[FrozenTrial]:
    return [t for t in trials if records.phase_of(t) == phase]


def _runs(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """One trial per run. Two processes that finish a search at one instant may both queue its confirmation
    plan; a run queued twice is held by the copy that started first (the lower number among those that
    did), and its other copies are duplicates, which must neither run nor count toward the target."""
    held: dict[tuple, FrozenTrial] = {}
    runs = []
    for t in trials:
        if (key := records.run_key(t.user_attrs.get("confirm"))) is None:
            runs.append(t)
        elif key not in held or _order(t) < _order(held[key]):
            held[key] = t
    return runs + list(held.values())


def _order(trial: FrozenTrial) -> tuple[bool, int]:
    return trial.state == TrialState.WAITING, trial.number


@dataclass
class Worker:
    """Start trials while the study's target has room, then stop (`stopped` says why, if early)."""

    study: optuna.Study
    target: int
    objective: Callable[[optuna.Trial], float]  # trains and reports; raises TrialPruned to prune
    after: Callable[[optuna.Study, FrozenTrial], None] | None = None  # called with each told trial
    max_failures: int = MAX_FAILURES
    phase: str = "search"  # or "confirm": run the queued confirmation runs only, never ask the sampler
    failures_in_a_row: int = 0
    stopped: str | None = None
    # --jobs N: an Event the workers of one machine share. A worker that finds the target met sets it, so
    # that the idle ones look again at once instead of at their next poll.
    wake: Any = None
    deadline: float | None = None  # time.monotonic() after which no trial starts (--timeout); run() sets it

    def _taken(self) -> list[FrozenTrial]:
        return _of_phase(self.study.get_trials(deepcopy=False, states=TAKEN_STATES), self.phase)

    def room(self) -> int:
        """How many trials may start now: the queued ones, and in a search the slots no trial holds."""
        return self._room(self._taken())

    def _room(self, taken: list[FrozenTrial]) -> int:
        if self.out_of_time():  # a population asks for its refills here, between the worker's own looks
            return 0
        waiting = sum(t.state == TrialState.WAITING for t in taken)
        return waiting + (max(0, self.target - len(taken)) if self.phase == "search" else 0)

    def ask(self) -> optuna.Trial | None:
        """A trial to run (a queued one first), or None: a trial that would take the study past its target
        is failed at once as `surplus`, before anything is trained for it."""
        trial = self.draw()
        if trial is not None and self.beyond_target([trial]):
            self.surplus(trial)
            return None
        return trial

    def draw(self) -> optuna.Trial | None:
        """A trial from the sampler (a queued one first), not checked against the target yet: `ask` is
        draw and beyond_target. None if this phase's queue ran dry."""
        with warnings.catch_warnings():  # Optuna asks for optimize() with a heartbeat; run_one beats itself
            warnings.filterwarnings("ignore", message="Heartbeat of storage", category=UserWarning)
            trial = self.study.ask()
        phase = records.phase_of(trial)
        if phase == self.phase or phase == "confirm":  # a confirmation run met while extending a search is
            return trial  # planned, so it runs
        # the queue emptied between looking and asking: the sampler made a trial no one asked for
        self.surplus(trial)
        return None

    def beyond_target(self, trials: list[optuna.Trial]) -> list[optuna.Trial]:
        """Those of `trials` (this worker's, drawn) that must not run: a copy of a run another trial holds,
        and those that `target` or more runs of lower numbers precede. One read of the study for them all,
        since each read re-reads every unfinished trial (Optuna caches finished ones only): a read per trial
        made a population's asks cost K x K."""
        mine = [t for t in trials if records.phase_of(t) == self.phase]
        if not mine:
            return []
        held = {t.number for t in _runs(self._taken())}  # a copy of a run another trial holds never runs
        taken = sorted(held)
        return [t for t in mine if t.number not in held or bisect.bisect_left(taken, t.number) >= self.target]

    def surplus(self, trial: optuna.Trial) -> None:
        """Fail a trial that must not run, marked so that no count includes it."""
        records.write(trial, surplus=True)
        self.study.tell(trial, state=TrialState.FAIL)

    def run_one(self) -> None:
        """Ask, run with a heartbeat, tell: Optuna's ask-and-tell, so that the worker decides what it holds
        and when."""
        trial = self.ask()
        if trial is None:
            return
        value, state = None, TrialState.FAIL
        try:
            with heartbeat(self.study._storage, trial._trial_id):
                value, state = self._run(trial), TrialState.COMPLETE
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except KeyboardInterrupt:
            self.interrupted(trial)
            raise
        except Exception:  # recorded on the trial by _run; the study goes on
            pass
        self.told(self.study.tell(trial, value, state=state))

    def _run(self, trial: optuna.Trial) -> float:
        records.write(trial, worker=stale.worker_identity())
        try:
            return self.objective(trial)
        except optuna.TrialPruned:
            raise
        except Exception as exc:  # any failure of one trial is recorded and the study goes on
            records.write(trial, error=f"{type(exc).__name__}: {exc}")
            raise

    def interrupted(self, trial: optuna.Trial) -> None:
        """Stopped cleanly (Ctrl-C, SIGTERM): failed and marked, and queued again so the next run resumes it."""
        records.write(trial, interrupted=True)
        records.queue_retry(self.study, trial)
        self.study.tell(trial, state=TrialState.FAIL)

    def told(self, trial: FrozenTrial) -> None:
        """After a trial was told: count failures in a row, then the caller's `after`."""
        # K failures in a row (the first K of a run among them) stop the run instead of burning the budget.
        self.failures_in_a_row = self.failures_in_a_row + 1 if trial.state == TrialState.FAIL else 0
        if told := getattr(self.study.pruner, "told", None):  # one that caches finished trials (pruners.Finished)
            told()
        if self.failures_in_a_row >= self.max_failures:
            self.stopped = (f"{self.failures_in_a_row} trials in a row failed; last error: "
                            f"{records.error_of(trial) or '?'}")
        if self.after is not None:
            self.after(self.study, trial)

    def _wait(self, seconds: float) -> None:
        if self.wake is None or self.wake.is_set():  # set for good once a phase ends: never spin on it
            time.sleep(seconds)
        else:
            self.wake.wait(seconds)

    def _wake_others(self) -> None:
        if self.wake is not None:
            self.wake.set()

    def out_of_time(self) -> bool:
        return past(self.deadline)

    def run(self, deadline: float | None = None, run_some: Callable[[], None] | None = None) -> None:
        """Until the target is met, or `deadline` (time.monotonic()) has passed: `run_some` (default:
        run_one) whenever the target has room. A trial that started before the deadline finishes."""
        self.deadline = deadline
        beats = has_heartbeat(self.study._storage)
        idle = 0  # looks in a row that found nothing to run
        while self.stopped is None and not self.out_of_time():
            interrupts.check()
            trials = self._taken()
            # dead workers' trials: failed, marked, queued again
            if stale.fail_dead(self.study, [t for t in trials if t.state == TrialState.RUNNING], heartbeat=beats):
                trials = self._taken()
            runs = _runs(trials)
            finished = sum(t.state in FINISHED_STATES for t in runs)
            running = [t for t in trials if t.state == TrialState.RUNNING]
            held = {t.number for t in runs}  # a queued copy of a run that another trial holds is drawn and failed
            if finished >= self.target and not any(t.state == TrialState.WAITING and t.number not in held
                                                   for t in trials):
                self._wake_others()
                return
            if self._room(trials):
                (run_some or self.run_one)()
                idle = 0
            elif self.phase == "confirm" and not running:
                self._wake_others()
                return  # every queued trial ran; the failed ones count nowhere
            elif beats or any(stale.alive_here(t) for t in running):
                # A running trial may yet finish, or die and need a retry. With a fixed 1 s wait, `--jobs 2`
                # spent about 0.5 s at each phase's end waiting for its idle worker to look again.
                self._wait(min(POLL_S, FIRST_POLL_S * 2**idle))
                idle += 1
            else:
                self.stopped = stale.stale_message(running)


def past(deadline: float | None) -> bool:
    """Whether `deadline` (time.monotonic(), None for none) has passed."""
    return deadline is not None and time.monotonic() >= deadline
