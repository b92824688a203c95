"""The gRPC storage proxy: `study serve-storage` as a real process in front of the real PostgreSQL server,
workers on `--storage grpc://`, and the load simulation of many workers, directly and through it."""
import signal
import socket
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from benchmarks.bench_workers import free_port, proxy, simulate
from conftest import call_cli, cli_env, finished, run_cli, start, wait_for
from study.proxy import parse_url
from study.records import TrialRecord

pytestmark = pytest.mark.postgres


@pytest.fixture
def grpc_url(pg_url):
    with proxy(pg_url) as url:
        yield url


def _trials(pg_url: str, name: str = "synth") -> list:
    return optuna.load_study(study_name=name, storage=pg_url).get_trials()


@pytest.mark.parametrize("url", ["grpc://host", "grpc://host:0", "grpc://host:70000", "grpc://:13000",
                                 "grpc://host:13000/x"])
def test_a_grpc_url_needs_a_host_and_a_port(url):
    with pytest.raises(ValueError, match="grpc://HOST:PORT"):
        parse_url(url)


def test_a_study_runs_through_the_proxy_to_exactly_its_target_and_list_and_report_read_it(
        tmp_path, synth_space, pg_url, grpc_url):
    result = run_cli("run", str(synth_space), "--storage", grpc_url, "--jobs", "2", "--trials", "4", "--no-report",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"dashboard: python -m study dashboard --storage {grpc_url}" in result.stdout
    ts = _trials(pg_url)
    assert len(finished(ts)) == 4 and all(len(TrialRecord.of(t).history) == 3 for t in finished(ts))
    listed = call_cli("list", "--storage", grpc_url, cwd=tmp_path)
    assert listed.returncode == 0 and listed.stdout.startswith("synth ") and "4 complete" in listed.stdout
    report = call_cli("report", "--storage", grpc_url, "--out", str(tmp_path / "r"), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "r" / "synth" / "index.html").is_file()


def test_a_worker_killed_behind_the_proxy_has_its_trial_found_by_the_heartbeat_and_resumed(
        tmp_path, slow_space, pg_url, grpc_url):
    first = start(slow_space, tmp_path, "--trials", "2", "-q", storage=grpc_url)
    wait_for(tmp_path, "checkpoints/synth-*/trial-0/epoch-0002.pt", first)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert [t.state for t in _trials(pg_url)] == [TrialState.RUNNING]  # what the dead worker left

    second = call_cli("run", str(slow_space), "--storage", grpc_url, "--heartbeat", "1", "--no-report", "--trials", "2",
                      cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    ts = _trials(pg_url)
    assert ts[0].state == TrialState.FAIL and len(finished(ts)) == 2  # failed by the heartbeat, retried
    retry = next(t for t in ts if TrialRecord.of(t).resumed)
    assert TrialRecord.of(retry).resumed["from_trial"] == 0 and retry.params == ts[0].params


def test_a_proxy_that_goes_away_mid_run_stops_the_run_with_one_line(tmp_path, slow_space, pg_url):
    """gRPC's error is a repr many lines long; the one line names its status and details."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "study", "serve-storage", "--storage", pg_url, "--port",
                               str(port)], env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert "gRPC storage proxy" in server.stdout.readline()
        url = f"grpc://127.0.0.1:{port}"
        run = start(slow_space, tmp_path, "--trials", "2", "-q", storage=url)
        wait_for(tmp_path, "checkpoints/synth-*/trial-0/epoch-0001.pt", run)
    finally:
        server.kill()
        server.wait(timeout=30)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 1 and "Traceback" not in err, err
    assert err.startswith(f"error: the storage {url} failed: UNAVAILABLE: ") and len(err.splitlines()) == 1, err


def test_a_proxy_stopped_by_sigterm_exits_cleanly_and_leaves_its_sqlite_file_whole(tmp_path, synth_space):
    """SIGTERM's default ended the proxy without the interpreter's exit: the study's writes stayed in s.db-wal,
    and a copy of s.db alone held none of them."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "study", "serve-storage", "--storage", "sqlite:///s.db",
                               "--port", str(port)], cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        assert "gRPC storage proxy" in server.stdout.readline()
        assert call_cli("run", str(synth_space), "--storage", f"grpc://127.0.0.1:{port}", "--trials", "2", "-q",
                        "--no-report", cwd=tmp_path).returncode == 0
        assert (tmp_path / "s.db-wal").exists()  # SQLite's, while the proxy's connections are open
    finally:
        server.terminate()
        code = server.wait(timeout=30)
    assert code == 0 and "Traceback" not in server.stdout.read()
    assert not (tmp_path / "s.db-wal").exists()
    (tmp_path / "copy.db").write_bytes((tmp_path / "s.db").read_bytes())
    assert len(_trials(f"sqlite:///{tmp_path / 'copy.db'}")) == 2


def test_a_grpc_url_with_no_proxy_behind_it_is_one_line_and_exit_2(tmp_path, synth_space):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    result = call_cli("run", str(synth_space), "--storage", f"grpc://127.0.0.1:{port}", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "no gRPC storage proxy answers at 127.0.0.1:" in result.stderr
    assert list(tmp_path.iterdir()) == [synth_space]  # nothing written


@pytest.mark.parametrize("args, fragment", [
    (["--storage", "journal.log"], "the gRPC proxy serves a database storage"),
    (["--storage", "sqlite:///s.db", "--port", "70000"], "must be a port number in [1, 65535]"),
    (["--storage", "sqlite:///s.db", "--host", "203.0.113.9"], "cannot listen on 203.0.113.9:13000"),
])
def test_serve_storage_refuses_bad_input_in_one_line_with_exit_2(tmp_path, args, fragment):
    result = call_cli("serve-storage", *args, cwd=tmp_path)
    assert result.returncode == 2 and fragment in result.stderr and "Traceback" not in result.stderr


def test_serve_storage_refuses_a_port_in_use(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve-storage", "--storage", "sqlite:///s.db", "--port", str(port), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert not (tmp_path / "s.db").exists()  # nothing opened


@pytest.mark.parametrize("via", ["direct", "proxy"])
def test_twenty_simulated_workers_meet_the_exact_target(pg_url, via):
    """The load simulation's small variant: the runner's real bookkeeping in 20 processes without torch."""
    if via == "direct":
        row = simulate(pg_url, pg_url, workers=20, target=30, epochs=3, epoch_s=0.1, heartbeat_s=2)
    else:
        with proxy(pg_url) as url:
            row = simulate(url, pg_url, workers=20, target=30, epochs=3, epoch_s=0.1, heartbeat_s=2)
    assert row["worker_errors"] == 0, row["first_error"]
    assert row["finished"] == 30 and row["duplicates"] == 0 and row["failed"] == 0
    assert row["surplus"] >= 0 and not row["torch_imported"] and row["storage_calls"] > 0
