"""Optuna's gRPC storage proxy: one server process holds the database connections, and any number of
workers talk to it, so that hundreds of workers never meet the database's connection limit.

    python -m study serve-storage --storage postgresql://postgres@127.0.0.1/test --port 13000
    python -m study run quick --storage grpc://127.0.0.1:13000      # on every worker machine

    >>> parse_url("grpc://10.0.0.5:13000")
    ('10.0.0.5', 13000)
    >>> parse_url("grpc://10.0.0.5")
    Traceback (most recent call last):
    ...
    ValueError: must be grpc://HOST:PORT with a port in [1, 65535]

The proxy forwards the storage API but not Optuna's heartbeat, so a worker's heartbeat travels as a
trial system attr: a counter the worker bumps every interval. A trial whose counter has not moved for
the grace period, as seen by the worker that looks (its own monotonic clock, so that machines' clocks
need not agree), is failed and retried exactly as the RDB heartbeat does it.
"""
from __future__ import annotations

import re
import threading
import time

import optuna
from optuna.storages import GrpcStorageProxy
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import TrialState

from study import interrupts

BEAT_ATTR = "study:heartbeat"  # the trial system attr a worker bumps while it runs the trial
CONNECT_S = 5.0  # how long a command waits for the proxy to answer before giving up
_POLL_S = 0.1  # how long the server waits between looks for a stop
_URL = re.compile(r"grpc://(?P<host>[^:/\s]+):(?P<port>\d{1,5})/?")


def parse_url(url: str) -> tuple[str, int]:
    m = _URL.fullmatch(url)
    if not m or not 1 <= int(m["port"]) <= 65535:
        raise ValueError("must be grpc://HOST:PORT with a port in [1, 65535]")
    return m["host"], int(m["port"])


class HeartbeatProxy(GrpcStorageProxy, BaseHeartbeat):
    """GrpcStorageProxy with a heartbeat carried in a trial system attr (see the module docstring)."""

    def __init__(self, *, host: str, port: int, heartbeat_s: int) -> None:
        super().__init__(host=host, port=port)
        self._interval, self._grace = heartbeat_s, 3 * heartbeat_s
        self._beats: dict[int, int] = {}
        self._seen: dict[int, tuple[object, float]] = {}  # trial id -> (last counter seen, when it was first seen)
        self._lock = threading.Lock()

    def record_heartbeat(self, trial_id: int) -> None:
        with self._lock:
            self._beats[trial_id] = self._beats.get(trial_id, 0) + 1
        try:
            self.set_trial_system_attr(trial_id, BEAT_ATTR, self._beats[trial_id])
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # the trial ended between two beats

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now, stale = time.monotonic(), []
        for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            beat = t.system_attrs.get(BEAT_ATTR)
            last, since = self._seen.get(t._trial_id, (None, None))
            if since is None or beat != last:
                self._seen[t._trial_id] = (beat, now)
            elif now - since > self._grace:
                stale.append(t._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int:
        return self._interval

    def get_heartbeat_stale_trial_callback(self) -> None:
        return None  # stale.fail_dead fails, marks and retries a dead worker's trials itself

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._lock = threading.Lock()


def open_proxy(url: str, heartbeat_s: int) -> HeartbeatProxy:
    """A client of the proxy at `url`, once it answers; ConnectionError when it does not within CONNECT_S."""
    host, port = parse_url(url)
    proxy = HeartbeatProxy(host=host, port=port, heartbeat_s=heartbeat_s)
    try:
        proxy.wait_server_ready(timeout=CONNECT_S)
    except ConnectionError:
        proxy.close()
        raise ConnectionError(f"no gRPC storage proxy answers at {host}:{port} "
                              "(start one with `study serve-storage`)") from None
    return proxy


def serve_storage(url: str, host: str, port: int) -> None:
    """`study serve-storage`: check the storage and the port (input errors), then serve until Ctrl-C."""
    from study.errors import ConfigError, printable
    from study.ports import check_port
    from study.storage import check_storage, is_rdb, shown

    if not is_rdb(url):  # Optuna's proxy serves RDB storages only (optuna/optuna#6084)
        raise ConfigError("--storage", "storage", shown(url),
                          "the gRPC proxy serves a database storage (postgresql://, mysql://, sqlite:///)")
    check_port(port, host)
    storage = check_storage(url)
    print(f"gRPC storage proxy for {printable(shown(url))} at grpc://{host}:{port} "
          "(workers: --storage grpc://HOST:PORT; Ctrl-C stops it)", flush=True)
    with interrupts.handled():
        serve(storage, host, port)


def serve(storage: optuna.storages.BaseStorage, host: str, port: int, threads: int = 16) -> None:
    """Serve `storage` on host:port until a stop is asked for (interrupts.handled), looked for every
    _POLL_S. The threads bound the database connections."""
    from concurrent.futures import ThreadPoolExecutor

    from optuna.storages._grpc.server import make_server

    server = make_server(optuna.storages.get_storage(storage), host, port, ThreadPoolExecutor(max_workers=threads))
    server.start()
    try:
        while server.wait_for_termination(_POLL_S) and not interrupts.requested():  # True: timed out, serving
            pass
    finally:
        server.stop(grace=None)
