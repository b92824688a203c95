"""`--jobs N`: N worker processes on one study, stopped together.

    python -m study run quick --jobs 2     # run_study(..., jobs=2) calls run_parallel

This process is worker 0 and starts training at once. The others are forked by multiprocessing's
forkserver, which imports torch and the rest once, beside worker 0, and serves every phase of the run:
spawned workers paid seconds of imports each, in each phase, which 16 short trials never paid back.
Workers ignore SIGINT and SIGHUP, so that a terminal's Ctrl-C or hang-up (sent to the whole process group) is
handled once, here:
the parent interrupts its own trial and sends each worker SIGTERM, each interrupts its trial the
documented way (failed, marked, queued again), and the parent waits for all of them before it raises
KeyboardInterrupt. `kill PARENT` (SIGTERM) does the same.
"""
from __future__ import annotations

import contextlib
import multiprocessing
from multiprocessing import forkserver
import os
import signal
import threading
from pathlib import Path
from typing import Any, Iterator

import optuna
import torch

from study import interrupts
from study.config import StudyConfig
from study.errors import ConfigError
from study.storage import failure
from study.threads import held as threads_held

_JOIN_S = 0.2  # how often the parent looks for a stop request while it waits
_CONTEXT = multiprocessing.get_context("forkserver")
# What a worker imports before its first epoch, most of it lazily (seconds each, 2 cores): the data split
# and digits (scikit-learn), torch._dynamo (torch.optim imports it on first use), the storage's migrations.
WORKER_IMPORTS = ("study.runner", "sklearn.model_selection", "sklearn.datasets", "torch._dynamo", "alembic.context",
                  "study.preloaded")  # last: freezes what the others loaded


TERMINAL_SIGNALS = (signal.SIGINT, signal.SIGHUP)  # sent by a terminal to its whole foreground process group


def _worker_main(results: Any, worker: int, kwargs: dict[str, Any]) -> None:
    # Forked from the server with its handlers: a terminal's Ctrl-C or hang-up is the parent's to handle.
    for terminal_signal in TERMINAL_SIGNALS:
        signal.signal(terminal_signal, signal.SIG_IGN)
    from study.runner import run_worker

    try:
        with interrupts.handled((signal.SIGTERM,)):
            results.put((worker, "done", run_worker(**kwargs, worker=worker)))
    except KeyboardInterrupt:
        results.put((worker, "interrupted", None))
    except ConfigError as exc:  # bad input that this worker alone met (data that differ from the study's): one line
        results.put((worker, "error", f"error: {exc}"))
    except BaseException as exc:
        said = failure(exc)
        results.put((worker, "error", said or f"{type(exc).__name__}: {exc}"))
        if said is None:  # the storage's failure is the parent's to say; anything else keeps its traceback
            raise


def start_server() -> None:
    """Start the server that forks the workers, importing what they need once while this process goes on;
    it serves every phase of the run. Idempotent."""
    _CONTEXT.set_forkserver_preload(list(WORKER_IMPORTS))
    # The server is born ignoring SIGINT and SIGHUP, a disposition that exec keeps: a terminal's Ctrl-C or
    # hang-up is the parent's to handle, and raised in the server's preloads it printed a traceback. The
    # parent blocks them meanwhile, so that one in those milliseconds waits for its own handler instead of
    # being lost.
    with _blocked(), interrupts.installed(signal.SIG_IGN, TERMINAL_SIGNALS):
        forkserver.ensure_running()


@contextlib.contextmanager
def _blocked() -> Iterator[None]:
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, set(TERMINAL_SIGNALS))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def run_parallel(cfg: StudyConfig, storage_url: str, device: torch.device, checkpoint_root: Path, *, quiet: bool,
                 jobs: int, heartbeat_s: int, bar: Any, study: optuna.Study, deadline: float | None = None,
                 phase: str = "search") -> str | None:
    """This process is worker 0, at once; the other jobs-1 fork from the server as soon as it has
    imported torch and the rest (a spawned worker paid that import, seconds, in every phase)."""
    start_server()
    results = _CONTEXT.SimpleQueue()
    kwargs = dict(cfg=cfg, storage_url=storage_url, device=device, checkpoint_root=checkpoint_root, quiet=quiet,
                  heartbeat_s=heartbeat_s, deadline=deadline, jobs=jobs, phase=phase,
                  wake=_CONTEXT.Event())  # each worker's threads: study.threads, else its share (run_worker)
    procs = [_CONTEXT.Process(target=_worker_main, args=(results, i, kwargs), name=f"study-worker-{i}")
             for i in range(1, jobs)]
    starter = threading.Thread(target=_start, args=(procs,), daemon=True)  # start() waits for the server
    starter.start()
    follower = _follow(bar, study, cfg.study.n_trials, phase)
    own = _own_worker(kwargs)
    starter.join()
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
    outcomes = {0: own}
    while not results.empty():
        worker, kind, detail = results.get()
        outcomes[worker] = (kind, detail)
    interrupts.check()
    for i in range(jobs):
        exitcode = procs[i - 1].exitcode if i else None
        kind, detail = outcomes.get(i, ("error", _ended(exitcode)))
        if kind == "interrupted":
            raise KeyboardInterrupt("a worker was interrupted")
        if kind == "error" or detail:
            return f"worker {i}: {detail}"
    return None


def _ended(exitcode: int | None) -> str:
    """How a worker process that reported nothing ended: a signal (the OOM killer's SIGKILL) or a status."""
    if exitcode is not None and exitcode < 0:
        return f"killed by {signal.Signals(-exitcode).name}"
    return f"exited with status {exitcode}"


def _start(procs: list) -> None:
    for p in procs:
        if interrupts.requested():  # stopped before they began: nothing to start
            return
        p.start()


def _own_worker(kwargs: dict[str, Any]) -> tuple[str, str | None]:
    """Worker 0, in this process; its intra-op threads are given back after it."""
    from study.runner import run_worker

    with threads_held():
        try:
            return "done", run_worker(**kwargs, worker=0)
        except KeyboardInterrupt:
            interrupts.request(interrupts.requested() or "SIGINT")  # the other workers stop too
            return "interrupted", None
        except Exception as exc:  # the others finish the study
            return "error", failure(exc) or f"{type(exc).__name__}: {exc}"


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
