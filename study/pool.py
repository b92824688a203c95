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
import torch
from optuna.trial import TrialState

from study import records, stale
from study.config import StudyConfig
from study.engine import run_sequential
from study.population import CannotFuse, fusion_key, run_population, why_not
from study.storage import heartbeat
from study.trial import Attempt, TrialContext, prepare
from study.worker import Worker

_ids = itertools.count()


@dataclass
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

    def _next(self) -> tuple[_Held, object] | None:
        """A new trial, built and prepared (None when the target has no room); a trial whose build fails
        is told as failed here, as the sequential worker does, and the next one is asked for."""
        while True:
            trial = self.worker.ask() if self.worker.has_room() else None
            if trial is None:
                return None
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
        held.beat.close()
        self.held.remove(held)
        self.worker.told(self.worker.study.tell(held.trial, value, state=state))

    def round(self) -> None:
        """Up to K trials, trained together; their slots refilled until the target has no room."""
        try:
            prepared = []
            while len(prepared) < self.cfg.study.population:
                got = self._next()
                if got is None:
                    break
                prepared.append(got)
            groups: dict[str, list] = {}
            for held, p in prepared:
                groups.setdefault(fusion_key(p), []).append((held, p))
            for group in groups.values():
                self._population(group)
        except KeyboardInterrupt:
            for held in list(self.held):  # each held trial stops as the sequential worker's does
                if held.attempt and held.attempt.history:
                    records.write(held.trial, history=held.attempt.history)
                held.beat.close()
                self.held.remove(held)
                self.worker.interrupted(held.trial)
            raise

    def _population(self, group: list) -> None:
        reason = why_not([p for _, p in group]) if len(group) > 1 else None
        if len(group) == 1 or reason:
            for held, p in group:
                self._alone(held, p, reason or "a population of one")
            return
        pid = f"{os.getpid()}-{next(_ids)}"
        members = [held for held, _ in group]

        def done(i: int, outcome) -> None:
            self._tell(members[i], outcome)

        def refill(free: int, fits) -> list:
            jobs = []
            while len(jobs) < free:
                got = self._next()
                if got is None:
                    break
                held, p = got
                if not fits(p):  # another graph: it trains alone now rather than hold a slot
                    self._alone(held, p, "another graph than its population")
                    continue
                members.append(held)
                records.write(held.trial, engine={"name": "population", "population": pid,
                                                  "size": self.cfg.study.population})
                jobs.append((p, held.attempt.on_epoch, held.attempt.checkpoints))
            return jobs

        for held in members:
            records.write(held.trial, engine={"name": "population", "population": pid,
                                              "size": self.cfg.study.population})
        try:
            run_population([p for _, p in group], [h.attempt.on_epoch for h in members],
                           [h.attempt.checkpoints for h in members], on_done=done, refill=refill)
        except CannotFuse as exc:
            for held, p in group:
                self._alone(held, p, str(exc))

    def _alone(self, held: _Held, p, reason: str) -> None:
        records.write(held.trial, engine={"name": "sequential", "reason": reason})
        try:
            with torch.random.fork_rng(devices=[]):  # as trial.train: its random ops seeded by the trial
                torch.default_generator.manual_seed(p.cfg.seed)
                result = run_sequential(p, held.attempt.on_epoch, held.attempt.checkpoints)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            self._tell(held, exc)
            return
        self._tell(held, result)
