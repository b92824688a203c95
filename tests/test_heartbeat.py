"""One heartbeat thread per storage beats every trial held; a trial let go is beaten no more, a worker
that holds none has no thread, and a storage it beat for is not kept alive by it."""
import contextlib
import gc
import threading
import time
import weakref

import optuna
import pytest
from optuna.storages._rdb import models

from study.heartbeat import heartbeat
from study.storage import open_storage


def _beats(storage, trial_ids) -> dict[int, object]:
    """Each trial's last recorded heartbeat (None: none yet), read from the storage's own table."""
    with storage.scoped_session() as session:
        return {t: getattr(models.TrialHeartbeatModel.where_trial_id(t, session), "heartbeat", None)
                for t in trial_ids}


def _threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "heartbeat"]


def _until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_one_thread_beats_every_held_trial_and_ends_with_the_last(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}", heartbeat_s=1)
    study = optuna.create_study(storage=storage)
    trials = [study.ask()._trial_id for _ in range(16)]
    with heartbeat(storage, trials[0]):
        held = [heartbeat(storage, t) for t in trials[1:]]
        for block in held:
            block.__enter__()
        assert len(_threads()) == 1  # it was one thread per trial: 16
        assert None not in _beats(storage, trials).values()  # each beaten as it was held
        first = _beats(storage, trials)
        for block in held:
            block.__exit__(None, None, None)
        let_go = _beats(storage, trials[1:])
        _until(lambda: _beats(storage, trials[:1]) != {trials[0]: first[trials[0]]})  # the held one beats on
        assert _beats(storage, trials[1:]) == let_go  # the others no more
        assert len(_threads()) == 1
    _until(lambda: not _threads())


def test_a_storage_without_a_heartbeat_starts_no_thread(tmp_path):
    storage = open_storage(str(tmp_path / "journal.log"))
    trial = optuna.create_study(storage=storage).ask()
    with heartbeat(storage, trial._trial_id):
        assert not _threads()


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_storage_once_beaten_for_is_let_go(tmp_path):
    """It was kept for good, with its engine's pooled connections: PostgreSQL ran out of them ("too many
    clients already") after a few dozen in-process runs."""
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}", heartbeat_s=1)
    study = optuna.create_study(storage=storage)
    with heartbeat(storage, study.ask()._trial_id):
        pass
    gone = weakref.ref(storage)
    del storage, study
    _until(lambda: gc.collect() is not None and gone() is None)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_trial_held_beside_others_is_beaten_alone(tmp_path):
    """Each hold woke a round that beat every trial held: 2080 writes as a population of 64 filled, not 64."""
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}", heartbeat_s=60)
    study = optuna.create_study(storage=storage)
    trials = [study.ask()._trial_id for _ in range(16)]
    calls = []
    record = storage.record_heartbeat
    storage.record_heartbeat = lambda trial_id: calls.append(trial_id) or record(trial_id)
    with contextlib.ExitStack() as held:
        for t in trials:
            held.enter_context(heartbeat(storage, t))
        _until(lambda: None not in _beats(storage, trials).values())
        assert sorted(calls) == trials  # once each, within the interval


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_trial_is_beaten_before_its_worker_can_name_itself_on_it(tmp_path):
    """The thread gave a trial its first beat a moment after the hold, while its worker named itself on it. A
    worker killed between the two left a trial that names it and has no beat: Optuna's stale check skips
    such a trial, so no other machine ever found it dead, and its slot was held for good."""
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}", heartbeat_s=60)
    trial = optuna.create_study(storage=storage).ask()
    with heartbeat(storage, trial._trial_id):
        assert _beats(storage, [trial._trial_id])[trial._trial_id] is not None
