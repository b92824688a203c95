"""Heartbeats of running trials: one thread per storage beats every trial the process holds, so that a
population of 64 trials costs one thread, not 64 (each a stack, which `ulimit -v` can refuse).

A worker that dies stops its heartbeats, and the next worker fails and retries its trials (stale.py);
on storages without a heartbeat (journal files, Redis) holding a trial does nothing.
"""
from __future__ import annotations

import contextlib
import threading
import time
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
        self.fresh: set[int] = set()  # held since the last round: beaten at once, the others on their interval
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None

    def hold(self, trial_id: int) -> None:
        with self.lock:
            self.trials.add(trial_id)
            self.fresh.add(trial_id)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
                self.thread.start()
            else:
                self.wake.set()  # its first beat now, not an interval later

    def release(self, trial_id: int) -> None:
        with self.lock:
            self.trials.discard(trial_id)
            if not self.trials:
                self.wake.set()  # the thread ends

    def _run(self) -> None:
        due = 0.0  # when every held trial is beaten next
        while True:
            with self.lock:
                self.wake.clear()  # under the lock: a trial held after this round wakes the next at once
                storage = self.storage()
                if not self.trials or storage is None:
                    self.thread = None
                    return
                # Woken early by a new trial, only the new ones: beating all K at each of K holds was K^2 writes
                # as a population filled.
                if (now := time.monotonic()) >= due:
                    beat, due = set(self.trials), now + self.interval
                else:
                    beat = self.fresh & self.trials
                self.fresh.clear()
                for trial_id in sorted(beat):
                    try:
                        storage.record_heartbeat(trial_id)
                    except Exception as exc:  # a storage that fails (full, its server gone): the trial's own next
                        if failure(exc) is None:  # write stops it and says why; a thread's traceback would only
                            raise  # repeat it
            del storage  # not kept alive by the wait
            self.wake.wait(max(0.0, due - time.monotonic()))


_by_storage: weakref.WeakKeyDictionary[optuna.storages.BaseStorage, _Beats] = weakref.WeakKeyDictionary()
_registry_lock = threading.Lock()


@contextlib.contextmanager
def heartbeat(storage: optuna.storages.BaseStorage, trial_id: int) -> Iterator[None]:
    """Record the trial's heartbeat every interval while the block runs (storages with a heartbeat; a no-op
    for the others)."""
    if not has_heartbeat(storage):
        yield
        return
    with _registry_lock:
        beats = _by_storage.get(storage) or _by_storage.setdefault(storage, _Beats(storage))
    beats.hold(trial_id)
    try:
        yield
    finally:
        beats.release(trial_id)
