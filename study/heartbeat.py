"""Heartbeats of running trials: one thread per storage beats every trial the process holds, so that a
population of 64 trials costs one thread, not 64 (each a stack, which `ulimit -v` can refuse).

A worker that dies stops its heartbeats, and the next worker fails and retries its trials (stale.py);
on storages without a heartbeat (journal files, Redis) holding a trial does nothing.
"""
from __future__ import annotations

import contextlib
import threading
import weakref
from typing import Iterator

import optuna

from study.storage import failure, has_heartbeat


class _Beats:
    """The trials of one storage that this process holds, and the thread that beats them while any is held.
    The lock is held through each round of beats: a trial let go gets no beat after `release` returns.
    The storage is held weakly: as the value of its own weak key, a strong reference would keep it, its
    engine and its pooled connections alive for good."""

    def __init__(self, storage: optuna.storages.BaseStorage):
        self.storage = weakref.ref(storage)
        self.interval = storage.get_heartbeat_interval()
        self.trials: set[int] = set()
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None

    def hold(self, storage: optuna.storages.BaseStorage, trial_id: int) -> None:
        # Beaten before its worker names itself on it: a trial that names a worker and has no beat was found
        # dead only on its worker's machine (Optuna's stale check skips trials without a beat).
        _beat(storage, trial_id)
        with self.lock:
            self.trials.add(trial_id)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
                self.thread.start()

    def release(self, trial_id: int) -> None:
        with self.lock:
            self.trials.discard(trial_id)
            if not self.trials:
                self.wake.set()  # the thread ends

    def _run(self) -> None:
        while True:
            self.wake.wait(self.interval)  # each trial had its first beat as it was held
            with self.lock:
                self.wake.clear()  # under the lock: a release after this round ends the next at once
                storage = self.storage()
                if not self.trials or storage is None:
                    self.thread = None
                    return
                for trial_id in sorted(self.trials):
                    _beat(storage, trial_id)
            del storage  # not kept alive by the wait


def _beat(storage: optuna.storages.BaseStorage, trial_id: int) -> None:
    try:
        storage.record_heartbeat(trial_id)
    except Exception as exc:  # a storage that fails (full, its server gone): the trial's own next write stops it
        if failure(exc) is None:  # and says why; a thread's traceback would only repeat it
            raise


_by_storage: weakref.WeakKeyDictionary[optuna.storages.BaseStorage, _Beats] = weakref.WeakKeyDictionary()
_registry_lock = threading.Lock()


@contextlib.contextmanager
def heartbeat(storage: optuna.storages.BaseStorage, trial_id: int) -> Iterator[None]:
    """Record the trial's heartbeat as the block starts, and every interval while it runs (storages with a
    heartbeat; a no-op for the others)."""
    if not has_heartbeat(storage):
        yield
        return
    with _registry_lock:
        beats = _by_storage.get(storage) or _by_storage.setdefault(storage, _Beats(storage))
    beats.hold(storage, trial_id)
    try:
        yield
    finally:
        beats.release(trial_id)
