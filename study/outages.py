"""A database server that restarts or fails over while workers run: they wait for it, then go on.

Once a run has reached its storage, a connection to PostgreSQL (or another server) that cannot be made is
tried again, with backoff, for up to the heartbeat's grace period (3x --heartbeat, 30 s by default): a
restart takes a few seconds, and a worker that waited longer would find its trials taken for dead by the
others. A failed connect ran nothing, so any call may wait for it. Pooled connections that the restart
closed are found by SQLAlchemy's pre-ping and replaced the same way. A storage that never answered (a
wrong host or port) fails at once, as before.

A Redis journal waits the same way (PatientRedisBackend): for a connection it cannot make, and with its
reads and single-key writes cut on their way (a restart resets the connections it finds in use); an
append cut so is not sent again, since it may have landed, and the journal would replay it twice.

A connection that dies under a statement (the server's shutdown terminates its sessions) is another
matter: the server may have committed the call before it went. Such a call is run again only where a
second run gives the same result: reads, heartbeats, intermediate values and attributes
(`PatientStorage`); Optuna retries a trial's creation itself. Ending a trial and adding a param are not:
a second run would fail. A worker whose such call is cut stops with the storage's message, and its
trials are retried as a dead worker's (nothing stored is lost; `study run` again goes on).
"""
from __future__ import annotations

import functools
import threading
import time
from typing import ClassVar

import optuna
from optuna.storages.journal import JournalRedisBackend

from study import interrupts
from study.console import say
from study.storage import first_line

FIRST_WAIT_S = 0.25
LONGEST_WAIT_S = 4.0


class Outage:
    """Since when a storage's server has not answered: one per server and process (`of`), shared by its
    storages and threads, so that an outage is said once, not by each."""

    _known: ClassVar[dict[str, Outage]] = {}

    def __init__(self, shown: str, patience_s: float):
        self.shown, self.patience_s = shown, patience_s
        self.since: float | None = None
        self.lock = threading.Lock()

    def __getstate__(self) -> dict:  # a storage is picklable (Optuna's multiprocessing); a lock is not
        return {**self.__dict__, "lock": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, lock=threading.Lock())

    @classmethod
    def of(cls, shown: str, patience_s: float) -> Outage:
        outage = cls._known.setdefault(shown, cls(shown, patience_s))
        outage.patience_s = patience_s
        return outage

    def waited(self, exc: Exception) -> bool:
        """After a connection that failed with `exc`: wait, and True to try again; False to give up (the
        patience is spent, or a stop was asked for)."""
        with self.lock:
            now = time.monotonic()
            if self.since is None:
                self.since = now
                first = _said(exc)
                say(f"warning: the storage {self.shown} does not answer ({first}); waiting up to "
                    f"{self.patience_s:g} s for it, as for a restart")
            elapsed = now - self.since
        left = self.patience_s - elapsed
        if left <= 0 or interrupts.requested():
            return False
        time.sleep(min(left, max(FIRST_WAIT_S, min(LONGEST_WAIT_S, elapsed / 2))))  # backoff, whatever the thread
        return True

    def answered(self) -> None:
        with self.lock:
            if self.since is not None:
                say(f"the storage {self.shown} answers again, after {time.monotonic() - self.since:.1f} s")
            self.since = None


def _said(exc: BaseException) -> str:
    """The first line of the driver's own words, under SQLAlchemy's and Optuna's."""
    from sqlalchemy.exc import PendingRollbackError

    while exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, PendingRollbackError):  # a session whose connection died earlier (Optuna caught that)
        return "its connection was lost"
    return first_line(exc)


def ride_out(engine, outage: Outage) -> None:
    """Make `engine`'s new connections wait out an outage of its server (see the module docstring)."""
    from sqlalchemy import event

    @event.listens_for(engine, "do_connect")
    def _connect(dialect, record, cargs, cparams):
        while True:
            try:
                connection = dialect.connect(*cargs, **cparams)
            except dialect.loaded_dbapi.OperationalError as exc:
                if not outage.waited(exc):
                    raise
                continue
            outage.answered()
            return connection


def lost_connection(exc: BaseException) -> bool:
    """Whether `exc`, from a storage call, is its server's connection failing or refused (SQLAlchemy's
    OperationalError: psycopg's connection errors and a terminated session among them), or a session left
    unusable by one; Optuna wraps them in a StorageInternalError."""
    from sqlalchemy import exc as sa

    while exc is not None:
        if isinstance(exc, (sa.OperationalError, sa.PendingRollbackError)):
            return True
        exc = exc.__cause__
    return False


# The calls that give the same result when run twice: reads, and writes that find the row they made.
REPEATABLE = ("get_all_studies", "get_all_trials", "_get_trials", "get_best_trial", "get_n_trials",
              "get_study_directions", "get_study_id_from_name", "get_study_name_from_id", "get_study_system_attrs",
              "get_study_user_attrs", "get_trial", "get_trial_id_from_study_id_trial_number",
              "get_trial_number_from_id", "get_trial_param", "get_trial_params", "get_trial_system_attrs",
              "get_trial_user_attrs", "_get_stale_trial_ids", "get_current_version", "record_heartbeat",
              "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr",
              "set_study_user_attr", "set_study_system_attr")


class PatientStorage(optuna.storages.RDBStorage):
    """An RDB storage whose repeatable calls wait out an outage of its server (see the module docstring).
    Optuna still puts its cache in front of it (an RDBStorage)."""

    outage: Outage  # set by storage.open_storage


def _patient(name: str):
    call = getattr(optuna.storages.RDBStorage, name)

    @functools.wraps(call)
    def patient(self: PatientStorage, *args, **kwargs):
        while True:
            try:
                out = call(self, *args, **kwargs)
            except Exception as exc:
                if not lost_connection(exc) or not self.outage.waited(exc):
                    raise
                self.scoped_session.remove()  # this thread's session may hold the dead connection
                continue
            if self.outage.since is not None:
                self.outage.answered()
            return out
    return patient


for _name in REPEATABLE:
    setattr(PatientStorage, _name, _patient(_name))


# The Redis commands of Optuna's journal that give the same result when run twice: its reads, and the
# writes of one value to one key. Its append (EVAL: a new log number, then the log) is not among them.
REPEATABLE_REDIS = ("GET", "SET", "SETNX")


class PatientRedisBackend(JournalRedisBackend):
    """Optuna's Redis journal, whose connections and repeatable commands wait out an outage of its server."""

    def __init__(self, url: str, outage: Outage):
        super().__init__(url)
        self.outage = outage
        self._redis = self._client()

    def __setstate__(self, state: dict) -> None:  # Optuna's own would connect without waiting
        super().__setstate__(state)
        self._redis = self._client()

    def _client(self):
        import redis

        outage = self.outage

        class Waiting(redis.connection.Connection):
            def connect(self) -> None:  # nothing was sent: any command may wait for its connection
                while True:
                    try:
                        super().connect()
                    except redis.exceptions.ConnectionError as exc:
                        if outage.waited(exc):
                            continue
                        raise
                    outage.answered()
                    return

        class Patient(redis.Redis):
            def execute_command(self, *args, **options):  # a command cut on its way, where a rerun is harmless
                while True:
                    try:
                        return super().execute_command(*args, **options)
                    except redis.exceptions.ConnectionError as exc:
                        if args[0] not in REPEATABLE_REDIS or not outage.waited(exc):
                            raise

        return Patient.from_url(self._url, connection_class=Waiting)
