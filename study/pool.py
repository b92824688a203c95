"""A worker's trials trained K at a time by the population engine (`study.engine: population`).

    python -m study run quick --engine population --population 16

One round asks the sampler for up to K trials (each through the worker's exact-target check), builds
each as the sequential engine would (trial.Attempt: config, provenance, budget, checkpoints, a resumed
retry's state) and trains those that share a graph as one population. As members finish, are pruned,
diverge or fail, each is told to the storage at once and its slot is refilled with a new trial from the
sampler, until the target has no room. Trials that cannot join (another graph, or a model that does not
run under vmap) train one by one with the sequential engine, and their `engine` record says why.

Every held trial has its own heartbeat; Ctrl-C or SIGTERM fails each, marks it `interrupted` and queues
it again, as the sequential worker does; their epoch checkpoints resume them with either engine.
"""
from __future__ import annotations

import contextlib
import itertools
import os
from dataclasses import dataclass, field

import optuna
from optuna.trial import TrialState

from study import records, stale
from study.config import StudyConfig
from study.console import say
from study.engine import PreparedTrial, run_sequential
from study.heartbeat import heartbeat
from study.population import CannotFuse, fitting, fusion_key, run_population, why_not
from study.threads import choose as choose_threads
from study.trial import Attempt, TrialContext, prepare, seeded
from study.worker import Worker

_ids = itertools.count()


@dataclass(eq=False)  # compared by identity: a held trial is one object, found in lists by `is`
class _Held:
    """A trial this worker asked for and has not told yet, with its heartbeat."""

    trial: optuna.Trial
    beat: contextlib.ExitStack
    attempt: Attempt | None = None


@dataclass
class PooledRounds:
    worker: Worker
    cfg: StudyConfig
    ctx: TrialContext
    held: list[_Held] = field(default_factory=list)
    waiting: list[tuple[_Held, PreparedTrial]] = field(default_factory=list)  # asked, not in a population yet
    unfusable: str | None = None  # why this study's model does not run under vmap, once a population found it
    fitted: set[str] = field(default_factory=set)  # the graphs whose probe step has sized K to the memory

    def __post_init__(self):
        self.size = self.cfg.study.population  # halved when a population runs out of device memory

    def _new(self, most: int) -> list[tuple[_Held, object]]:
        """Up to `most` new trials, built and prepared: fewer when the target has no more room. A trial whose
        build fails is told as failed here, as the sequential worker does, and another is asked for.
        The study is read twice per batch of trials, not twice per trial (Worker.beyond_target)."""
        got: list[tuple[_Held, object]] = []
        while len(got) < most and self.worker.stopped is None:
            drawn = []
            for _ in range(min(most - len(got), self.worker.room())):
                if (trial := self.worker.draw()) is None:
                    break
                # built, so its params suggested, before the next is drawn: the sampler's constant liar and
                # the balanced arms count the trials drawn before it
                drawn.append(self._build(trial))
            if not drawn:
                break
            built = [item for item in drawn if item is not None]
            beyond = {t.number for t in self.worker.beyond_target([held.trial for held, _ in built])}
            for held, p in built:
                if held.trial.number in beyond:
                    self._release(held)
                    self.worker.surplus(held.trial)
                else:
                    got.append((held, p))
        return got

    def _build(self, trial: optuna.Trial) -> tuple[_Held, object] | None:
        """The trial held, with its heartbeat, its attempt started and prepared; None if that failed (told)."""
        beat = contextlib.ExitStack()
        beat.enter_context(heartbeat(self.worker.study._storage, trial._trial_id))
        held = _Held(trial, beat)
        self.held.append(held)
        records.write(trial, worker=stale.worker_identity())
        try:
            held.attempt = Attempt.start(trial, self.cfg, self.ctx)
            a = held.attempt
            return held, prepare(a.cfg, self.ctx.device, a.checkpoints, self.ctx.cache)
        except Exception as exc:
            self._tell(held, exc)
            return None

    def _release(self, held: _Held) -> None:
        held.beat.close()
        self.held.remove(held)

    def _tell(self, held: _Held, outcome) -> None:
        """Store what the trial measured and tell the storage how it ended (a TrainResult or an exception)."""
        value, state = None, TrialState.FAIL
        try:
            if held.attempt is None:
                raise outcome
            value, state = held.attempt.finish(outcome), TrialState.COMPLETE
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except Exception as exc:  # recorded; the study goes on
            records.write(held.trial, error=f"{type(exc).__name__}: {exc}")
        self._release(held)
        self.worker.told(self.worker.study.tell(held.trial, value, state=state))

    def round(self) -> None:
        """Populations until the target has no room: each time the largest group, among up to K trials
        asked, that shares a graph; the others wait, held, for their own population or a free slot."""
        try:
            while True:
                self.waiting += self._new(self.size - len(self.waiting))
                if not self.waiting:
                    return
                groups: dict[str, list] = {}
                for item in self.waiting:
                    groups.setdefault(fusion_key(item[1]), []).append(item)
                group = max(groups.values(), key=len)[:self.size]  # more wait after K shrank
                taken = {id(held) for held, _ in group}
                self.waiting = [item for item in self.waiting if id(item[0]) not in taken]
                self._population(group)
        except KeyboardInterrupt:
            for held in list(self.held):  # each held trial stops as the sequential worker's does
                if held.attempt and held.attempt.history:
                    records.write(held.trial, history=held.attempt.history)
                self._release(held)
                self.worker.interrupted(held.trial)
            self.waiting.clear()
            raise

    def _population(self, group: list) -> None:
        if len(group) > 1 and (graph := fusion_key(group[0][1])) not in self.fitted:  # a wider graph may hold more
            group = self._fit(group, graph)
        reason = self.unfusable or (why_not([p for _, p in group]) if len(group) > 1 else None)
        if len(group) == 1 or reason:
            for held, p in group:
                self._alone(held, p, reason or "a population of one")
            return
        pid = f"{os.getpid()}-{next(_ids)}"
        slots: list[tuple[_Held, object]] = []  # (held, prepared) by slot index, as run_population numbers them

        def joined(held: _Held, p) -> tuple:
            slots.append((held, p))
            records.write(held.trial, engine={"name": "population", "population": pid, "size": self.size})
            return p, held.attempt.on_epoch, held.attempt.checkpoints

        def refill(free: int, fits) -> list:
            """Waiting trials of this graph first, then new ones; a new trial of another graph waits."""
            jobs = []
            for item in [item for item in self.waiting if fits(item[1])][:free]:
                self.waiting.remove(item)
                jobs.append(joined(*item))
            while len(jobs) < free and len(self.waiting) < self.size and (new := self._new(free - len(jobs))):
                for item in new:
                    if fits(item[1]):
                        jobs.append(joined(*item))
                    else:
                        self.waiting.append(item)
            return jobs

        def shrink(size: int) -> None:
            self.size = size
            say(f"out of device memory: populations of {size} trials from now on")

        prepared, on_epochs, checkpoints = map(list, zip(*(joined(held, p) for held, p in group), strict=True))
        p = prepared[0]
        choose_threads(p, self.ctx.threads, self.ctx.fixed_threads, members=len(group))
        try:
            run_population(prepared, on_epochs, checkpoints, refill=refill, on_shrink=shrink, capacity=self.size,
                           on_done=lambda i, outcome: self._tell(slots[i][0], outcome))
        except CannotFuse as exc:  # before any step: each member, refills too, as it joined
            self.unfusable = str(exc)  # the model is the same for every trial of the study
            say(f"sequential engine from now on: {exc}")
            for held, p in [(held, p) for held, p in slots if held in self.held]:  # not one told (a finished retry)
                self._alone(held, p, str(exc))

    def _fit(self, group: list, graph: str) -> list:
        """K as the free memory allows (population.fitting), this worker's share of it: before the first
        population of each graph rather than after an out-of-memory error (on CUDA) or the kernel's OOM
        kill (on the CPU, which has no error to back off from); the trials beyond it wait for a slot. K
        only shrinks: the graphs probed before fit in fewer too."""
        self.fitted.add(graph)
        fit = fitting(group[0][1], self.size, self.ctx.jobs)
        if fit >= self.size:
            return group
        self.size = fit
        each = f" to each of {self.ctx.jobs} workers" if self.ctx.jobs > 1 else ""
        say(f"the {group[0][1].device.type} memory free{each} fits {fit} trials of this model at once: "
            f"populations of {fit}")
        self.waiting[:0] = group[fit:]
        return group[:fit]

    def _alone(self, held: _Held, p, reason: str) -> None:
        records.write(held.trial, engine={"name": "sequential", "reason": reason})
        choose_threads(p, self.ctx.threads, self.ctx.fixed_threads)
        try:
            with seeded(p.cfg.seed):  # as trial.train: its random ops seeded by the trial
                result = run_sequential(p, held.attempt.on_epoch, held.attempt.checkpoints)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            self._tell(held, exc)
            return
        self._tell(held, result)
