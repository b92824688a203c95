"""`--jobs N`: N worker processes on one study, stopped together.

    python -m study run quick --jobs 2     # run_study(..., jobs=2) calls run_parallel

Workers are plain spawned processes whose pids the parent holds. They ignore SIGINT, so that a
terminal's Ctrl-C (sent to the whole process group) is handled once, here: the parent sends each worker
SIGTERM, each interrupts its trial the documented way (failed, marked, queued again), and the parent
waits for all of them before it raises KeyboardInterrupt. `kill PARENT` (SIGTERM) does the same.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from pathlib import Path
from typing import Any

import optuna
import torch

from study import interrupts
from study.config import StudyConfig

_JOIN_S = 0.2  # how often the parent looks for a stop request while it waits


def _worker_main(results: Any, worker: int, kwargs: dict[str, Any]) -> None:
    from study.runner import run_worker

    try:
        with interrupts.handled((signal.SIGTERM,)):
            results.put((worker, "done", run_worker(**kwargs, worker=worker)))
    except KeyboardInterrupt:
        results.put((worker, "interrupted", None))
    except BaseException as exc:
        results.put((worker, "error", f"{type(exc).__name__}: {exc}"))
        raise


def run_parallel(cfg: StudyConfig, storage_url: str, device: torch.device, checkpoint_root: Path, *, quiet: bool,
                 jobs: int, heartbeat_s: int, bar: Any, study: optuna.Study, phase: str = "search",
                 threads: int | None = None) -> str | None:
    ctx = multiprocessing.get_context("spawn")
    results = ctx.SimpleQueue()
    fixed = threads is not None  # --threads; else each worker's share of the cores, for trials big enough
    kwargs = dict(cfg=cfg, storage_url=storage_url, device=device, checkpoint_root=checkpoint_root, quiet=quiet,
                  heartbeat_s=heartbeat_s, threads=threads or max(1, (os.cpu_count() or 1) // jobs),
                  timeout=cfg.study.timeout, phase=phase, fixed_threads=fixed)
    procs = [ctx.Process(target=_worker_main, args=(results, i, kwargs), name=f"study-worker-{i}")
             for i in range(jobs)]
    # Started with SIGINT ignored, which they inherit: a Ctrl-C during their start-up is the parent's.
    with interrupts.installed(signal.SIG_IGN, (signal.SIGINT,)):
        for p in procs:
            p.start()
    follower = _follow(bar, study, cfg.study.n_trials, phase)
    forwarded = False
    try:
        while any(p.is_alive() for p in procs):
            try:
                if interrupts.requested() and not forwarded:
                    _terminate(procs)
                    forwarded = True
                next((p for p in procs if p.is_alive()), procs[0]).join(_JOIN_S)
            except KeyboardInterrupt:  # asked twice: ask the workers twice, and still wait for them
                _terminate(procs)
    finally:
        if follower:
            follower.set()
    outcomes = {}
    while not results.empty():
        worker, kind, detail = results.get()
        outcomes[worker] = (kind, detail)
    interrupts.check()
    for i, p in enumerate(procs):
        kind, detail = outcomes.get(i, ("error", f"worker {i} exited with status {p.exitcode}"))
        if kind == "interrupted":
            raise KeyboardInterrupt("a worker was interrupted")
        if kind == "error" or detail:
            return f"worker {i}: {detail}"
    return None


def _terminate(procs: list) -> None:
    for p in procs:
        if p.pid is not None and p.is_alive():
            try:
                os.kill(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def _follow(bar: Any, study: optuna.Study, target: int, phase: str) -> threading.Event | None:
    """The bar follows the storage, which every worker writes to."""
    if bar is None:
        return None
    from study.runner import advance
    from study.worker import POLL_S

    done = threading.Event()

    def follow() -> None:
        while not done.wait(POLL_S):
            advance(bar, study, target, phase)

    threading.Thread(target=follow, daemon=True).start()
    return done
