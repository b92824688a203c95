"""A PostgreSQL or Redis server that goes away for a few seconds (a restart, a failover) while a run works
on it: connections are waited for, repeatable calls cut under a statement are run again, and the others
are not.

The outage is a real one, as the client sees it: the run talks to the real server through `Cable`, a TCP
forwarder that the test cuts (connections closed, new ones refused) and mends."""
import contextlib
import socket
import threading
import time

import optuna
import pytest

from conftest import SLOW_MODEL, SYNTH_SPACE, start, trials, wait_for
from study.outages import PatientStorage
from study.storage import open_storage

READY = b"Z\x00\x00\x00\x05I"  # PostgreSQL's ReadyForQuery, idle outside a transaction: nothing in flight
REPLIED = b"\r\n"  # the end of a Redis reply (of the small ones a journal's calls get)


class Cable:
    """A TCP forwarder to the real server. `down()` refuses new connections and closes each open one as soon
    as nothing is in flight on it (a statement cut there would be the server's doing, not the client's);
    `up()` accepts again; `cut_next(marker)` closes the connection whose next request contains `marker`,
    with the request unsent: a session that dies under a statement."""

    def __init__(self, target=("127.0.0.1", 5432), ready: bytes = READY):
        self.target, self.ready = target, ready
        self.lock = threading.Lock()
        self.links: dict[socket.socket, dict] = {}  # client side -> {"server": socket, "idle": bool}
        self.marker: bytes | None = None
        self.closing = False
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.listener: socket.socket | None = None
        self.up()

    def up(self) -> None:
        self.closing = False
        self.listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def down(self) -> None:
        with self.lock:
            self.closing = True
            with contextlib.suppress(OSError):
                self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() that close() alone leaves listening
            self.listener.close()
            for client, link in list(self.links.items()):
                if link["idle"]:
                    self._close(client)

    def cut_next(self, marker: bytes) -> None:
        self.marker = marker

    def close(self) -> None:
        self.down()
        with self.lock:
            for client in list(self.links):
                self._close(client)

    def _close(self, client: socket.socket) -> None:
        link = self.links.pop(client, None)
        if link:
            for s in (client, link["server"]):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self.closing:  # accepted as it went down: refused
                client.close()
                return
            server = socket.create_connection(self.target)
            with self.lock:
                self.links[client] = {"server": server, "idle": False}
            threading.Thread(target=self._pump, args=(client, client, server), daemon=True).start()
            threading.Thread(target=self._pump, args=(client, server, client), daemon=True).start()

    def _pump(self, client: socket.socket, src: socket.socket, dst: socket.socket) -> None:
        upstream = src is client
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            with self.lock:
                link = self.links.get(client)
                if not data or link is None:
                    self._close(client)
                    return
                if upstream and self.marker and self.marker in data:
                    self.marker = None
                    self._close(client)
                    return
                link["idle"] = not upstream and data.endswith(self.ready)
                try:
                    dst.sendall(data)
                except OSError:
                    self._close(client)
                    return
                if link["idle"] and self.closing:
                    self._close(client)
                    return


@pytest.fixture
def cable():
    c = Cable()
    yield c
    c.close()


def _through(url: str, cable: Cable) -> str:
    return url.replace("127.0.0.1:5432", f"127.0.0.1:{cable.port}")


def _later(seconds: float, do) -> threading.Timer:
    timer = threading.Timer(seconds, do)
    timer.start()
    return timer


def test_a_run_waits_out_its_server_s_outage_and_finishes(tmp_path, pg_url, cable, write_space):
    """Before, the first storage call after the server went away stopped the run (exit 1)."""
    (tmp_path / "slowmodel.py").write_text(SLOW_MODEL)
    space = write_space(SYNTH_SPACE.replace("name: mlp", "name: slowmodel:net").replace("budget: 3", "budget: 6"),
                        "slow.yaml")  # an epoch of 5 steps of 0.05 s
    url = _through(pg_url, cable)
    run = start(space, tmp_path, "--trials", "2", "--heartbeat", "2", storage=url)
    wait_for(tmp_path, "checkpoints/synth-*/trial-0/epoch-0001.pt", run)
    cable.down()  # for 2 s, across the trial's next epochs: its reports, its pruning reads, its heartbeats
    time.sleep(2)
    cable.up()
    out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    assert "waiting up to 6 s for it, as for a restart" in out and "answers again, after" in out
    states = [t.state for t in trials(tmp_path, storage=open_storage(pg_url))]
    assert states == [optuna.trial.TrialState.COMPLETE] * 2


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_repeatable_call_cut_under_its_statement_runs_again_and_a_trial_s_creation_does_not(
        pg_url, cable, capsys):
    storage = open_storage(_through(pg_url, cable), heartbeat_s=1)
    assert isinstance(storage, PatientStorage)
    study = optuna.create_study(storage=storage, study_name="cut")
    study.ask()
    raw = storage  # the RDB storage under Optuna's cache, whose calls reach the server
    cable.cut_next(b"FROM trials")
    cable.down()
    _later(1.0, cable.up)
    assert [t.number for t in raw.get_all_trials(study._study_id)] == [0]  # after the outage, as if none
    out = capsys.readouterr().out
    assert "does not answer (its connection was lost); waiting up to 3 s" in out and "answers again, after" in out

    # a trial's end may have been committed when its connection died: run twice, the second would fail
    (trial,) = raw.get_all_trials(study._study_id)
    cable.cut_next(b"UPDATE trials SET state")
    with pytest.raises(optuna.exceptions.StorageInternalError):
        raw.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.COMPLETE, [0.5])
    assert raw.get_trial(trial._trial_id).state == optuna.trial.TrialState.RUNNING  # the cut kept it from the server


def test_a_server_that_never_answered_fails_at_once_and_one_reached_before_is_waited_for(pg_url, cable, capsys):
    url = _through(pg_url, cable)
    cable.down()
    with pytest.raises(Exception, match="Connection refused|connection failed"):
        open_storage(url)  # a wrong host or port is the user's to see now, not in 30 s
    assert "waiting" not in capsys.readouterr().out
    _later(1.0, cable.up)
    storage = open_storage(url, heartbeat_s=1, reached=True)  # a --jobs worker that starts during a restart
    assert storage.get_all_studies() == []
    assert "waiting up to 3 s for it" in capsys.readouterr().out


def test_a_redis_journal_waits_out_its_server_s_outage(redis_url, capsys):
    """Before, the first call after the server went away stopped the run (exit 1). A call that finds its
    pooled connection closed by the outage reconnects, and the connection waits; a never-reached server
    still fails at once."""
    import optuna
    import redis

    from study.outages import PatientRedisBackend

    cable = Cable(("127.0.0.1", 6379), ready=REPLIED)
    try:
        url = redis_url.replace("127.0.0.1:6379", f"127.0.0.1:{cable.port}")
        storage = open_storage(url, heartbeat_s=1, reached=True)
        assert isinstance(storage._backend, PatientRedisBackend)
        study = optuna.create_study(storage=storage, study_name="journal")
        trial = study.ask()
        cable.down()  # every connection closed, none in flight, new ones refused
        _later(1.0, cable.up)
        study.tell(trial, 0.5)  # an append, on a connection made after the outage
        out = capsys.readouterr().out
        assert "the storage redis://" in out and "does not answer" in out and "waiting up to 3 s for it" in out
        assert "answers again, after" in out
        again = open_storage(redis_url)  # straight to the server: one trial, told once
        assert [(t.number, t.state, t.value) for t in optuna.load_study(study_name="journal", storage=again).trials] \
            == [(0, optuna.trial.TrialState.COMPLETE, 0.5)]

        # A read cut on its way (a restart resets the connections in use) is sent again; an append is not: it
        # may have landed, and the journal would replay it twice.
        second = study.ask()
        cable.cut_next(b"GET")
        assert len(optuna.load_study(study_name="journal", storage=storage).trials) == 2
        assert "does not answer (Connection closed by server.)" in capsys.readouterr().out
        cable.cut_next(b"EVAL")
        with pytest.raises(redis.exceptions.ConnectionError):
            study.tell(second, 0.25)
        assert optuna.load_study(study_name="journal", storage=again).trials[1].state == \
            optuna.trial.TrialState.RUNNING  # the cut kept it from the server

        cable.down()
        with pytest.raises(Exception, match="Connection refused"):
            open_storage(url).get_all_studies()  # a wrong host or port is the user's to see now, not in 30 s
        assert "waiting" not in capsys.readouterr().out
    finally:
        cable.close()
