"""Opening an Optuna storage from the strings optuna-dashboard also accepts.

    >>> storage = open_storage("sqlite:///study.db")   # the embedded default; also postgresql://...
    >>> has_heartbeat(storage), has_heartbeat(open_storage("journal.log"))   # and Optuna's journal file
    (True, False)

RDB storages (SQLite, PostgreSQL, ...) get a heartbeat, so a worker killed mid-trial has its trial
marked failed and retried by the next worker. SQLite is put in WAL mode with a long busy timeout so
that several worker processes and a live optuna-dashboard can share one file. `grpc://HOST:PORT` is
Optuna's gRPC proxy in front of an RDB storage (proxy.py), with a heartbeat of its own.
"""
from __future__ import annotations

import atexit
import os
import random
import shlex
import sqlite3
import sys
import time
import traceback
import warnings
import weakref
from pathlib import Path

import optuna

DEFAULT_FILE = "study.db"  # the embedded default, in the current directory
HEARTBEAT_S = 10  # seconds between a running trial's heartbeats; silence for 3x that marks it dead


def default_storage() -> str:
    """The default embedded file, as an absolute URL so that the dashboard command works anywhere."""
    return f"sqlite:///{Path(DEFAULT_FILE).resolve()}"


def has_heartbeat(storage: optuna.storages.BaseStorage) -> bool:
    """Whether dead workers' trials are detected (Optuna 5's journal storages have no heartbeat)."""
    interval = getattr(storage, "get_heartbeat_interval", None)
    return interval is not None and interval() is not None


def is_rdb(url: str) -> bool:
    return "://" in url and not url.startswith(("redis://", "grpc://"))


def is_proxy(url: str) -> bool:
    return url.startswith("grpc://")


def open_storage(url: str, heartbeat_s: int = HEARTBEAT_S, reached: bool = False) -> optuna.storages.BaseStorage:
    """`reached`: this run has reached the storage before (its command checked it), so a server that does
    not answer now is waited for, as for a restart (outages.py); else that fails at once."""
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if is_proxy(url):
        from study.proxy import open_proxy

        return open_proxy(url, heartbeat_s)
    if url.startswith("redis://"):
        from optuna.storages.journal import JournalRedisBackend

        from study.outages import Outage, PatientRedisBackend

        if reached:  # a server that restarts under a run is waited for, as PostgreSQL is
            return optuna.storages.JournalStorage(PatientRedisBackend(url, Outage.of(shown(url), 3 * heartbeat_s)))
        return optuna.storages.JournalStorage(JournalRedisBackend(url))
    if not is_rdb(url):
        from study.journal import JournalFile

        return optuna.storages.JournalStorage(JournalFile(url))
    given = url
    if url.startswith("postgresql://"):
        # psycopg 3 is the driver we install; older SQLAlchemy would look for psycopg2 instead.
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    engine_kwargs: dict = {"pool_pre_ping": True}
    if url.startswith("sqlite:///"):
        _prepare_sqlite(url.removeprefix("sqlite:///"))
        engine_kwargs = {"connect_args": {"timeout": 120}}
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    from study.outages import Outage, PatientStorage, lost_connection, ride_out

    server = not url.startswith("sqlite:")  # which may restart while the workers run
    outage = Outage.of(shown(given), 3 * heartbeat_s) if server else None
    races = 0
    while True:
        try:
            storage = (PatientStorage if server else optuna.storages.RDBStorage)(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_s, grace_period=3 * heartbeat_s)
            break
        except (IntegrityError, ProgrammingError, OperationalError, optuna.exceptions.StorageInternalError) as exc:
            # Workers starting together race to create the tables, which the loser finds made: PostgreSQL
            # raises one of the first two, SQLite "table ... already exists". Any other error (no such
            # folder, no server) is the user's to see at once, unless the run reached the server before.
            if isinstance(exc, (IntegrityError, ProgrammingError)) or "already exists" in str(exc):
                races += 1
                if races == 5:
                    raise
                time.sleep(0.2 + random.random())
            elif not (server and reached and lost_connection(exc) and outage.waited(exc)):
                raise
    if server:
        outage.answered()
        storage.outage = outage
        ride_out(storage.engine, outage)
    else:
        _serialise_sqlite(storage.engine)
        _open_sqlite.add(storage.engine)
    return storage


# SQLite engines still open in this process. The last connection to close merges the WAL into the file
# and deletes it; a process that exits with its pooled connections open (nothing collects them: cli.entry
# freezes the heap) leaves the study's latest commits in study.db-wal, and a study.db copied without it
# holds none of them.
_open_sqlite: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_sqlite() -> None:
    for engine in list(_open_sqlite):
        engine.dispose()


def _serialise_sqlite(engine) -> None:
    """Every SQLite transaction takes the write lock when it begins. Python's sqlite3 driver otherwise
    runs the SELECT of a read-check-write outside any transaction, so two workers can both see a queued
    trial WAITING and both run it (Optuna's `FOR UPDATE` means nothing to SQLite)."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, record) -> None:
        dbapi_connection.isolation_level = None  # the driver stops issuing BEGIN itself
        # In WAL mode NORMAL syncs at checkpoints, not at every commit (a per-epoch write cost ~6 ms of fsync):
        # still safe from corruption; only a power cut can lose the last commits, never a process crash.
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    @event.listens_for(engine, "begin")
    def _begin(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections made before the listeners were attached


def check_storage(url: str, heartbeat_s: int = HEARTBEAT_S, must_exist: bool = False) -> optuna.storages.BaseStorage:
    """open_storage (existing_storage with `must_exist`), with a storage that cannot be reached, is not
    understood or is not there turned into an input error."""
    from study.errors import ConfigError

    try:
        storage = existing_storage(url) if must_exist else open_storage(url, heartbeat_s)
    except Exception as exc:  # SQLAlchemy, the driver and the file system each raise their own
        raise ConfigError("--storage", "storage", shown(url), f"cannot open the storage: {first_line(exc)}") from None
    if storage is None:
        raise ConfigError("--storage", "storage", shown(url), "no such storage (run a study first)")
    return storage


def storage_file(url: str) -> Path | None:
    """The file a file storage (SQLite, a journal file) lives in; None for servers and in-memory SQLite."""
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        return None if path in ("", ":memory:") else Path(path)
    return None if "://" in url else Path(url)


def existing_storage(url: str) -> optuna.storages.BaseStorage | None:
    """Open `url` only if it already holds data: a file storage that is not there is None, not created."""
    file = storage_file(url)
    if file is None and url.startswith("sqlite:"):
        return None  # in memory: nothing stored to read
    if file is not None and not file.is_file():
        return None
    if url.startswith("sqlite:///") and not (os.access(file, os.W_OK) and os.access(file.parent, os.W_OK)):
        return _read_only_sqlite(file)
    return open_storage(url)


def _read_only_sqlite(path: Path) -> optuna.storages.RDBStorage:
    """A study file this process may only read (another user's, on a read-only mount), opened read-only: the
    usual opening puts it in WAL mode and takes the write lock for each transaction, which failed with
    "attempt to write a readonly database". SQLite reads a WAL file read-only where its -shm is there (a
    writer has it open, or was killed); with neither -wal nor -shm beside it, in a folder it may not write,
    only as immutable, which is what the file is while no one has it open."""
    from urllib.parse import quote

    in_use = any(Path(f"{path}{suffix}").exists() for suffix in ("-wal", "-shm"))
    query = "mode=ro" if in_use else "mode=ro&immutable=1"
    storage = optuna.storages.RDBStorage(f"sqlite:///file:{quote(str(path.resolve()))}?{query}&uri=true",
                                         engine_kwargs={"connect_args": {"timeout": 120}})
    _open_sqlite.add(storage.engine)
    return storage


def _prepare_sqlite(path: str) -> None:
    # WAL lets readers (the dashboard) and one writer work at once; the mode is stored in the file.
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(path, timeout=120) as con:
            con.execute("PRAGMA journal_mode=WAL")


def failure(exc: BaseException) -> str | None:
    """What the storage's driver said, in one line, where `exc` is a storage's failure (a disk or a quota
    that is full, a server gone); None for any other error. Optuna's wrapper of a failed commit names no
    cause ("... e.g. exceeding max length"): the driver's own error is the one under it."""
    from redis.exceptions import RedisError
    from sqlalchemy.exc import SQLAlchemyError

    kinds: tuple = (optuna.exceptions.StorageInternalError, SQLAlchemyError, RedisError)
    if (grpc := sys.modules.get("grpc")) is not None:  # the proxy's client; no gRPC error without it
        kinds += (grpc.RpcError,)
    # a journal file that cannot be written: an OSError raised in Optuna's storage code, not some other file's
    journal = isinstance(exc, OSError) and any(f"{os.sep}optuna{os.sep}storages{os.sep}" in frame.f_code.co_filename
                                               for frame, _ in traceback.walk_tb(exc.__traceback__))
    if not journal and not isinstance(exc, kinds):
        return None
    while exc.__cause__ is not None:
        exc = exc.__cause__
    if callable(getattr(exc, "details", None)):  # gRPC's: its str() is a multi-line repr
        return f"{exc.code().name}: {exc.details()}"
    return first_line(exc)


def first_line(exc: BaseException) -> str:
    """An error's first line (a driver's goes on with its SQL and a link), or its type where it says nothing."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def shown(url: str) -> str:
    """`url` as it may be printed: a password in it replaced by ***, as SQLAlchemy renders it, so that no
    log or terminal keeps it. A URL without one comes back as it is.

    >>> shown("postgresql://me:s3cret@db.example:5432/studies"), shown("sqlite:///study.db")
    ('postgresql://me:***@db.example:5432/studies', 'sqlite:///study.db')
    """
    if "@" not in url or "://" not in url:
        return url
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # not a URL SQLAlchemy reads: nothing it could call a password
        return url
    return url if parsed.password is None else parsed.render_as_string(hide_password=True)


def dashboard_command(url: str) -> str:
    """The command that opens the study, quoted for a shell (a path may hold spaces); a password is left
    out (shown): the user puts it back or lets the driver find it (PGPASSWORD, ~/.pgpass)."""
    if is_proxy(url):  # optuna-dashboard's own command line does not speak gRPC; ours passes it the proxy
        return f"python -m study dashboard --storage {shlex.quote(shown(url))}"
    return f"optuna-dashboard {shlex.quote(shown(url))}"
